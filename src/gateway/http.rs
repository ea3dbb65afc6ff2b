//! Just enough HTTP/1.1 for the public listener: read one request head,
//! answer with a complete response. The listener serves only upgrades and a
//! few GETs, so a full HTTP stack per connection would cost memory and CPU
//! for nothing; and owning the head lets every refusal be a proper response.

use super::rejection::Rejection;
use crate::http_wire;
use bytes::BytesMut;
use http::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_HEADERS: usize = 48;

/// A parsed request head and any bytes the client sent after it (a client
/// may pipeline its first WebSocket frame right behind the upgrade request).
pub struct Head {
    pub request: Request<()>,
    pub leftover: Vec<u8>,
}

#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or reset before sending a full head; nobody to answer.
    Closed,
    /// Answerable with this refusal.
    Reject(Rejection),
}

/// Reads until the end of the request head, at most `max_bytes` in all:
/// each read asks for no more than the room left, so the limit is exact
/// (a head of `max_bytes` is served, one byte more is refused with 431).
/// Bytes the client pipelined behind the head within that room are kept
/// as `leftover`; the rest stays in the socket for tungstenite.
///
/// Line endings may be CRLF or bare LF, as the HTTP parser (and RFC 9112
/// section 2.2, for robustness) allows; either ends the head promptly.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, max_bytes: usize) -> Result<Head, HeadError> {
    const CHUNK: usize = 1024;
    let mut buf = BytesMut::with_capacity(max_bytes.min(CHUNK));
    loop {
        let room = max_bytes - buf.len();
        if room == 0 {
            return Err(HeadError::Reject(Rejection::HeadTooLarge));
        }
        let want = room.min(CHUNK);
        buf.reserve(want);
        let mut limited = (&mut *stream).take(want as u64);
        let n = match limited.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => n,
        };
        // Only rescan where the terminator may have arrived.
        let scan_from = buf.len().saturating_sub(n + 3);
        if !has_head_end(&buf[scan_from..]) {
            continue;
        }
        return parse(&buf).map_err(HeadError::Reject);
    }
}

/// An empty line: CRLF CRLF, or bare LF line endings (LF LF, LF CRLF).
fn has_head_end(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

fn parse(buf: &[u8]) -> Result<Head, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(Rejection::BadRequest("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::HeadTooLarge),
        Err(_) => return Err(Rejection::BadRequest("malformed HTTP request")),
    };
    let mut builder = Request::builder().method(req.method.unwrap_or("GET")).uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let request = builder.body(()).map_err(|_| Rejection::BadRequest("malformed HTTP request"))?;
    Ok(Head { request, leftover: buf[len..].to_vec() })
}

/// Answers with the refusal's status, JSON reason and (on 503) Retry-After.
pub async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, rejection: &Rejection) {
    let upgrade: &[(&str, &str)] = if *rejection == Rejection::UpgradeRequired {
        &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    } else {
        &[]
    };
    let (status, code, message) = (rejection.status(), rejection.code(), rejection.message());
    // The peer may already be gone; there is nothing more to do then.
    let _ = http_wire::respond_error(stream, status, code, message, rejection.unavailable(), upgrade).await;
}

/// The 101 answer completing a WebSocket handshake.
pub async fn switching_protocols<S: AsyncWrite + Unpin>(stream: &mut S, accept_key: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}
