//! Strangers cannot lock users out: handshakes in progress have their own
//! budget apart from established sessions, and one client address (the
//! forwarded one behind a trusted proxy) may hold only so many of either.
//! Clients bind distinct loopback source addresses (127.0.0.0/8 all answers
//! on loopback) to act as different machines.

mod common;

use common::*;
use pushgate::protocol::action;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    let source: IpAddr = source.parse().unwrap();
    socket.bind(SocketAddr::new(source, 0)).expect("bind a loopback source address");
    socket.connect(server).await.unwrap_or_else(|e| panic!("connect from {source}: {e}"))
}

/// Upgrades as `user` from `source` with extra headers; returns the
/// socket and HELLO, or panics with what the server answered.
async fn session_from(
    source: &str,
    server: &TestServer,
    user: &str,
    headers: &[(&'static str, &str)],
) -> (Ws, serde_json::Value) {
    let stream = connect_from(source, server.ws_addr).await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", server.token(user)).parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap_or_else(|e| panic!("upgrade of {user} from {source}: {e}"));
    let (first, hello) = recv(&mut ws).await;
    assert_eq!(first, action::HELLO);
    assert_eq!(hello["user"], user);
    (ws, hello)
}

/// Sends an upgrade request as `user` from `source` and reads the whole
/// answer of a refusal: (status, Retry-After, error code).
async fn refused_from(
    source: &str,
    server: &TestServer,
    user: &str,
    extra: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let mut stream = connect_from(source, server.ws_addr).await;
    let extra = format!("Authorization: Bearer {}\r\n{extra}", server.token(user));
    stream.write_all(upgrade_request(server.ws_addr, "/ws", &extra).as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await.expect("refusal in time").unwrap();
    parse_refusal(&buf)
}

fn parse_refusal(buf: &[u8]) -> (u16, Option<String>, serde_json::Value) {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("a complete HTTP answer: {text:?}"));
    let retry_after = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.trim().to_string());
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {text:?}"));
    (status_of(head), retry_after, json["error"]["code"].clone())
}

/// 300 sockets from one address that never send a byte, against a node
/// with room for 100 sessions: a user from another address still gets
/// HELLO at once. Before handshakes had their own budget the silent
/// sockets held every slot and the user got 503 until they timed out.
#[tokio::test]
async fn silent_flood_from_one_address_does_not_lock_out_another() {
    let server = TestServer::start_with(|c| c.server.max_connections = 100).await;
    // A user connected before the attack.
    let (mut bystander, _) = server.connect("bystander").await;
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(connect_from("127.0.0.2", server.ws_addr).await);
    }
    // Let the node accept what it will.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = tokio::time::Instant::now();
    let (ws, _) = tokio::time::timeout(Duration::from_secs(2), session_from("127.0.0.3", &server, "alice", &[]))
        .await
        .expect("a user from another address gets HELLO within 2 s of a silent flood");
    eprintln!("HELLO after {:?} behind 300 silent sockets", started.elapsed());

    // The flood's sockets beyond the per-address handshake cap were told
    // why, at once (429 with Retry-After), without a byte from them.
    let last = flood.pop().unwrap();
    let mut buf = Vec::new();
    let mut last = last;
    tokio::time::timeout(WAIT, last.read_to_end(&mut buf)).await.expect("refused at once").unwrap();
    let (status, retry_after, code) = parse_refusal(&buf);
    assert_eq!((status, code.as_str()), (429, Some("too_many_handshakes")));
    assert_eq!(retry_after.as_deref(), Some("5"));

    // The user connected before the flood still gets pushes, and the node
    // answers its probes.
    let (status, body) = server.post("/v1/push", json!({ "users": ["bystander"], "payload": "still here" })).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(recv(&mut bystander).await, (action::PUSH, json!("still here")));
    assert_eq!(server.get("/healthz").await.0, 200);
    drop(ws);
}

/// The (N+1)th session from one address is refused with 429
/// `too_many_connections`; another address still connects, and a slot
/// frees when one of the first N leaves.
#[tokio::test]
async fn established_sessions_per_address_are_capped() {
    let server = TestServer::start_with(|c| c.server.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(session_from("127.0.0.2", &server, &format!("u{i}"), &[]).await.0);
    }
    let (status, retry_after, code) = refused_from("127.0.0.2", &server, "u3", "").await;
    assert_eq!((status, code.as_str()), (429, Some("too_many_connections")));
    assert_eq!(retry_after.as_deref(), Some("30"));

    // Another address is not affected.
    let (_other, _) = session_from("127.0.0.3", &server, "bob", &[]).await;

    // One of the three leaves: its address may connect again.
    let mut leaving = held.pop().unwrap();
    leaving.close(None).await.unwrap();
    let _ = tokio::time::timeout(WAIT, async { while futures_util::StreamExt::next(&mut leaving).await.is_some() {} })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stream = connect_from("127.0.0.2", server.ws_addr).await;
        let mut request = server.ws_url().into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {}", server.token("u4")).parse().unwrap());
        if tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the address's count never went down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Behind a trusted proxy the caps apply to the forwarded client address:
/// one client is capped while others through the same proxy connect, and
/// the proxy's own address is never capped.
#[tokio::test]
async fn behind_a_trusted_proxy_caps_apply_to_the_forwarded_address() {
    let server = TestServer::start_with(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1/32".into()];
        c.server.max_connections_per_ip = 2;
    })
    .await;
    let mut held = Vec::new();
    for i in 0..2 {
        let xff = [("x-forwarded-for", "203.0.113.7")];
        held.push(session_from("127.0.0.1", &server, &format!("c{i}"), &xff).await.0);
    }
    let (status, _, code) = refused_from("127.0.0.1", &server, "c2", "X-Forwarded-For: 203.0.113.7\r\n").await;
    assert_eq!((status, code.as_str()), (429, Some("too_many_connections")), "the forwarded client is capped");

    // Other clients through the same proxy: the proxy's address (which now
    // carries 4 sessions, over the cap of 2) is not what is counted.
    for (i, client) in ["203.0.113.8", "203.0.113.9"].iter().enumerate() {
        held.push(session_from("127.0.0.1", &server, &format!("d{i}"), &[("x-forwarded-for", client)]).await.0);
    }
    held.push(session_from("127.0.0.1", &server, "e", &[("x-real-ip", "198.51.100.1")]).await.0);

    // An untrusted peer cannot claim another address to escape its cap.
    let spoof = [("x-forwarded-for", "192.0.2.50")];
    let (_s1, _) = session_from("127.0.0.4", &server, "m0", &spoof).await;
    let (_s2, _) = session_from("127.0.0.4", &server, "m1", &[("x-forwarded-for", "192.0.2.51")]).await;
    let (status, _, code) = refused_from("127.0.0.4", &server, "m2", "X-Forwarded-For: 192.0.2.52\r\n").await;
    assert_eq!((status, code.as_str()), (429, Some("too_many_connections")), "counted by its socket address");
}
