//! Opening many client connections: spread over several source addresses in
//! 127.0.0.0/8 with IP_BIND_ADDRESS_NO_PORT, so the ephemeral port range of a
//! single address is not the limit.

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Conn = WebSocketStream<TcpStream>;

/// Small client buffers: the bench holds as many sockets as the gateway.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_message_size(Some(1 << 20))
}

fn set_bind_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Connects one authenticated client from `source` and reads its HELLO.
///
/// # Errors
/// TCP, handshake or HELLO failure, as text.
pub async fn connect(url: &str, server: SocketAddr, source: Ipv4Addr, token: &str) -> Result<Conn, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    set_bind_no_port(&socket).map_err(|e| format!("IP_BIND_ADDRESS_NO_PORT: {e}"))?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0))).map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}").parse().map_err(|_| "token is not a header value".to_string())?;
    request.headers_mut().insert("authorization", auth);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(client_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    match ws.next().await {
        Some(Ok(Message::Binary(b))) if b.starts_with(&[0, 0, 0, 1]) => Ok(ws),
        other => Err(format!("expected HELLO, got {other:?}")),
    }
}

pub struct Opened {
    pub conns: Vec<Conn>,
    pub elapsed: Duration,
}

/// Opens `tokens.len()` connections, connection i to `urls[i % urls.len()]`
/// (the nodes of a cluster, round-robin), `concurrency` handshakes at a
/// time, printing progress every second unless `quiet`.
///
/// # Errors
/// The first connection failure (the run is not meaningful without all).
pub async fn open_all(
    urls: &[String],
    tokens: Vec<String>,
    source_addrs: u8,
    concurrency: usize,
    quiet: bool,
) -> Result<Opened, String> {
    let servers = urls.iter().map(|url| resolve(url)).collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("no gateway URL".into());
    }
    let total = tokens.len();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = (!quiet).then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!("  connected {n}/{total} ({:.0}/s)", n as f64 / started.elapsed().as_secs_f64());
            }
        })
    });
    let results: Vec<Result<Conn, String>> = stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let done = done.clone();
            // 127.0.0.1, 127.0.0.2, ...: loopback answers the whole /8.
            let source = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(source_addrs.max(1))) as u8);
            let (url, server) = (&urls[i % urls.len()], servers[i % servers.len()]);
            async move {
                let r = connect(url, server, source, &token).await;
                done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = started.elapsed();
    let conns = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Opened { conns, elapsed })
}

/// `ws://host:port/path` -> the socket address.
pub fn resolve(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("ws://").ok_or("the bench speaks ws:// only (run it next to the gateway)")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.parse().map_err(|e| format!("{authority}: {e} (use an IP:port)"))
}

/// A binary payload whose first 8 bytes are the send time in microseconds
/// since the Unix epoch, padded to `len` bytes.
pub fn stamped_payload(len: usize) -> Vec<u8> {
    let mut payload = now_micros().to_be_bytes().to_vec();
    payload.resize(len.max(8), b'.');
    payload
}

pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Latency of a stamped frame (`[action][stamp][...]`) received now.
pub fn latency_micros(frame: &Bytes) -> Option<u64> {
    stamp_age_micros(frame.get(4..)?)
}

/// Microseconds since the stamp that opens `payload` (a stamped payload).
pub fn stamp_age_micros(payload: &[u8]) -> Option<u64> {
    let stamp: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(now_micros().saturating_sub(u64::from_be_bytes(stamp)))
}

/// `url` asking for durable replay: `resume=1` added to its query (kept
/// when it has one).
pub fn with_resume(url: &str) -> String {
    match url.split_once('?') {
        None => format!("{url}?resume=1"),
        Some((_, "")) => format!("{url}resume=1"),
        Some(_) if url.ends_with('&') => format!("{url}resume=1"),
        Some(_) => format!("{url}&resume=1"),
    }
}

/// A MESSAGE (6) frame's parts: (message id, inner action, inner payload);
/// None for any other frame or a short one.
pub fn durable_message(frame: &[u8]) -> Option<(u64, u32, &[u8])> {
    let (action, rest) = frame.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*action) != pushgate::protocol::action::MESSAGE {
        return None;
    }
    let (id, rest) = rest.split_first_chunk::<8>()?;
    let (inner, payload) = rest.split_first_chunk::<4>()?;
    Some((u64::from_be_bytes(*id), u32::from_be_bytes(*inner), payload))
}

/// The action of a frame (its first 4 bytes).
pub fn action_of(frame: &[u8]) -> Option<u32> {
    frame.first_chunk::<4>().map(|a| u32::from_be_bytes(*a))
}

/// An ACK (7) frame acking `ids`, with `seq` as the official clients send.
pub fn ack_frame(ids: &[u64], seq: Option<u64>) -> Bytes {
    let body = match seq {
        Some(seq) => serde_json::json!({ "ids": ids, "seq": seq }),
        None => serde_json::json!({ "ids": ids }),
    }
    .to_string();
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&pushgate::protocol::action::ACK.to_be_bytes());
    frame.extend_from_slice(body.as_bytes());
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_is_added_to_the_query() {
        assert_eq!(with_resume("ws://127.0.0.1:8080/ws"), "ws://127.0.0.1:8080/ws?resume=1");
        assert_eq!(with_resume("ws://h:1/ws?x=1"), "ws://h:1/ws?x=1&resume=1");
        assert_eq!(with_resume("ws://h:1/ws?"), "ws://h:1/ws?resume=1");
        assert_eq!(with_resume("ws://h:1/ws?x=1&"), "ws://h:1/ws?x=1&resume=1");
        assert_eq!(resolve(&with_resume("ws://127.0.0.1:8080/ws")).unwrap().port(), 8080);
    }

    #[test]
    fn message_frames_decode_and_others_do_not() {
        let mut frame = 6u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&41u64.to_be_bytes());
        frame.extend_from_slice(&1000u32.to_be_bytes());
        frame.extend_from_slice(&stamped_payload(16));
        let (id, inner, payload) = durable_message(&frame).expect("a MESSAGE");
        assert_eq!((id, inner, payload.len()), (41, 1000, 16));
        assert!(stamp_age_micros(payload).is_some_and(|us| us < 60_000_000));
        assert!(durable_message(&frame[..15]).is_none(), "short");
        frame[3] = 1;
        assert!(durable_message(&frame).is_none(), "a HELLO is no MESSAGE");
        assert_eq!(action_of(&frame), Some(1));
        assert_eq!(action_of(&[0, 0]), None);
    }

    #[test]
    fn ack_frames_carry_ids_and_seq_when_asked() {
        let frame = ack_frame(&[3, 5], Some(9));
        assert_eq!(action_of(&frame), Some(7));
        let body: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        assert_eq!(body, serde_json::json!({"ids": [3, 5], "seq": 9}));
        let body: serde_json::Value = serde_json::from_slice(&ack_frame(&[3], None)[4..]).unwrap();
        assert_eq!(body, serde_json::json!({"ids": [3]}));
    }
}
