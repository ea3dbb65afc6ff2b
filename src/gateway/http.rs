//! Just enough HTTP/1.1 for the public listener: read one request head,
//! answer with a complete response. The listener serves only upgrades and a
//! few GETs, so a full HTTP stack per connection would cost memory and CPU
//! for nothing; and owning the head lets every refusal be a proper response.

use crate::errors::Rejection;
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

/// Reads until the end of the request head, at most `max_bytes`.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, max_bytes: usize) -> Result<Head, HeadError> {
    let mut buf = BytesMut::with_capacity(max_bytes.min(1024));
    loop {
        if buf.len() >= max_bytes {
            return Err(HeadError::Reject(Rejection::HeadTooLarge));
        }
        buf.reserve((max_bytes - buf.len()).min(1024));
        let n = match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => n,
        };
        // Only rescan when the terminator may have arrived.
        let scan_from = buf.len().saturating_sub(n + 3);
        if !buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
            continue;
        }
        return parse(&buf).map_err(HeadError::Reject);
    }
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

/// Writes a complete response and half-closes. Every response carries
/// Content-Length (tungstenite-style error responses would not add one).
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

/// `{"error": {"code", "message"}}`, the same shape as the internal API.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } })).unwrap_or_default()
}

pub async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, rejection: &Rejection) {
    let body = error_body(rejection.code(), rejection.message());
    let retry = rejection.retry_after_secs().map(|s| s.to_string());
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(retry) = retry.as_deref() {
        headers.push(("Retry-After", retry));
    }
    if *rejection == Rejection::UpgradeRequired {
        headers.push(("Upgrade", "websocket"));
        headers.push(("Sec-WebSocket-Version", "13"));
    }
    // The peer may already be gone; there is nothing more to do then.
    let _ = respond(stream, rejection.status(), &headers, "application/json", &body).await;
}

/// The 101 answer completing a WebSocket handshake.
pub async fn switching_protocols<S: AsyncWrite + Unpin>(stream: &mut S, accept_key: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}
