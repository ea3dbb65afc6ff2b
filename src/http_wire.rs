//! Complete HTTP/1.1 responses written on a raw socket, for the moments
//! before a connection is handed to tungstenite or hyper (public listener
//! refusals, the internal API's over-capacity refusal), and the Retry-After
//! policy for every 503 (and per-address 429) pushgate sends, public or
//! internal.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Why a request is refused for now (a 503, or a 429 for the per-address
/// caps), which decides how long a client should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The node holds as many connections as it may.
    AtCapacity,
    /// The node drains for a restart: another node can serve at once.
    Draining,
    /// The upgrade rate limit: the token bucket says when a slot frees.
    RateLimited { retry_after_secs: u64 },
    /// 429: the client's address has `server.max_handshakes_per_ip`
    /// handshakes in progress.
    HandshakesPerAddress,
    /// 429: the client's address holds `server.max_connections_per_ip`
    /// sessions.
    ConnectionsPerAddress,
    /// A dependency the answer needs is failing (the inbox's storage).
    Dependency,
}

impl Unavailable {
    /// Seconds for the Retry-After header.
    pub fn retry_after_secs(self) -> u64 {
        match self {
            // Slots free as sessions end; a few seconds spreads the retries.
            Unavailable::AtCapacity => 5,
            // The proxy or client should go to another node right away.
            Unavailable::Draining => 1,
            Unavailable::RateLimited { retry_after_secs } => retry_after_secs.max(1),
            // Handshakes finish (or time out) within seconds.
            Unavailable::HandshakesPerAddress => 5,
            // Sessions from one address end slowly; do not hammer.
            Unavailable::ConnectionsPerAddress => 30,
            // Storage reconnects within seconds.
            Unavailable::Dependency => 2,
        }
    }

    /// 429 for what one client address holds (the node serves others),
    /// 503 for the node's own state.
    pub fn status(self) -> u16 {
        match self {
            Unavailable::HandshakesPerAddress | Unavailable::ConnectionsPerAddress => 429,
            Unavailable::AtCapacity
            | Unavailable::Draining
            | Unavailable::RateLimited { .. }
            | Unavailable::Dependency => 503,
        }
    }
}

/// `{"error": {"code", "message"}}`, the one error body of every HTTP answer.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } })).unwrap_or_default()
}

/// Writes a complete response and half-closes. Every response carries
/// Content-Length (tungstenite-style error responses would not add one).
///
/// # Errors
/// The peer is gone or the socket failed.
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

/// A JSON error response; 503s and 429s carry Retry-After from [`Unavailable`].
///
/// # Errors
/// The peer is gone or the socket failed.
pub async fn respond_error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    code: &str,
    message: &str,
    unavailable: Option<Unavailable>,
    extra_headers: &[(&str, &str)],
) -> std::io::Result<()> {
    let retry = unavailable.map(|u| u.retry_after_secs().to_string());
    let mut headers: Vec<(&str, &str)> = extra_headers.to_vec();
    if let Some(retry) = retry.as_deref() {
        headers.push(("Retry-After", retry));
    }
    respond(stream, status, &headers, "application/json", &error_body(code, message)).await
}
