//! The one place that maps failures to what a client sees: HTTP statuses
//! before the upgrade and on the internal API, close codes after it.
//! proto-spec/README.md documents every row.

use crate::auth::AuthError;
use crate::protocol::close;
use crate::registry::CloseRequest;

/// Why an HTTP request on the public listener gets no WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthError),
    OriginNotAllowed,
    AtCapacity,
    RateLimited {
        retry_after_secs: u64,
    },
    Draining,
    NotFound,
    MethodNotAllowed,
    /// A plain GET on an upgrade-only path.
    UpgradeRequired,
    BadRequest(&'static str),
    HeadTooLarge,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Auth(_) => 401,
            Rejection::OriginNotAllowed => 403,
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::BadRequest(_) => 400,
            Rejection::UpgradeRequired => 426,
            Rejection::HeadTooLarge => 431,
            Rejection::AtCapacity | Rejection::RateLimited { .. } | Rejection::Draining => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.code(),
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::AtCapacity => "at_capacity",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::Draining => "draining",
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::UpgradeRequired => "upgrade_required",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::HeadTooLarge => "request_head_too_large",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.message(),
            Rejection::OriginNotAllowed => "Origin is not in the allowed list",
            Rejection::AtCapacity => "server is at its connection limit, retry later",
            Rejection::RateLimited { .. } => "too many new connections, retry later",
            Rejection::Draining => "server is restarting, reconnect to another node",
            Rejection::NotFound => "no such path",
            Rejection::MethodNotAllowed => "only GET is served here",
            Rejection::UpgradeRequired => "this path only serves WebSocket upgrades",
            Rejection::BadRequest(m) => m,
            Rejection::HeadTooLarge => "request head exceeds the configured limit",
        }
    }

    /// Seconds for Retry-After on 503s, so well-behaved clients back off.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Rejection::AtCapacity => Some(5),
            Rejection::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Rejection::Draining => Some(1),
            _ => None,
        }
    }

    /// Label for the handshake metric.
    pub fn outcome(&self) -> &'static str {
        self.code()
    }
}

/// Why a session ended, and therefore which close frame (if any) we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent a close; tungstenite answers it for us.
    ClientClosed,
    /// The TCP connection broke or the peer vanished; nobody to tell.
    ConnectionLost,
    TextFrame,
    MessageTooBig,
    ProtocolError,
    IdleTimeout,
    TokenExpired,
    WriteTimeout,
    /// A close asked for through the session queue (kick, shutdown, drain,
    /// slow consumer).
    Requested(CloseRequest),
}

impl SessionEnd {
    /// The close frame to send, or None when the socket is already done.
    pub fn close_frame(&self) -> Option<(u16, &'static str)> {
        match self {
            SessionEnd::ClientClosed | SessionEnd::ConnectionLost => None,
            SessionEnd::TextFrame => Some((close::UNSUPPORTED_DATA, "text frames are not accepted; send binary")),
            SessionEnd::MessageTooBig => Some((close::MESSAGE_TOO_BIG, "message exceeds the size limit")),
            SessionEnd::ProtocolError => Some((close::PROTOCOL_ERROR, "websocket protocol violation")),
            SessionEnd::IdleTimeout => Some((close::IDLE_TIMEOUT, "no traffic within the idle timeout")),
            SessionEnd::TokenExpired => Some((close::TOKEN_EXPIRED, "token expired; reconnect with a fresh one")),
            // The socket is not taking writes; a close frame would not get through.
            SessionEnd::WriteTimeout => None,
            SessionEnd::Requested(r) => Some((r.code, r.reason)),
        }
    }

    /// Short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            SessionEnd::ClientClosed => "client_closed",
            SessionEnd::ConnectionLost => "connection_lost",
            SessionEnd::TextFrame => "text_frame",
            SessionEnd::MessageTooBig => "message_too_big",
            SessionEnd::ProtocolError => "protocol_error",
            SessionEnd::IdleTimeout => "idle_timeout",
            SessionEnd::TokenExpired => "token_expired",
            SessionEnd::WriteTimeout => "write_timeout",
            SessionEnd::Requested(r) => match r.code {
                close::SLOW_CONSUMER => "slow_consumer",
                close::KICKED => "kicked",
                close::GOING_AWAY => "shutdown",
                close::SERVICE_RESTART => "drained",
                _ => "requested",
            },
        }
    }
}

/// Close requests other modules send through a session queue.
pub mod requests {
    use super::{CloseRequest, close};

    pub const KICKED: CloseRequest =
        CloseRequest { code: close::KICKED, reason: "session closed by the service; do not reconnect blindly" };
    pub const SHUTDOWN: CloseRequest = CloseRequest { code: close::GOING_AWAY, reason: "server shutting down" };
    pub const DRAINED: CloseRequest = CloseRequest { code: close::SERVICE_RESTART, reason: "server restarting" };
}

/// An internal API failure: `{"error": {"code", "message"}}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)")
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }
    pub fn too_large(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(413, code, message)
    }
    pub fn invalid_action(action: u32) -> ApiError {
        ApiError::new(422, "invalid_action", format!("action {action} is not pushable: use 200-299 or >= 1000"))
    }
    pub fn draining() -> ApiError {
        ApiError::new(503, "draining", "this node is draining; retry on another node")
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "internal", message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %e, "store failure in API");
        ApiError::internal("store failure")
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (status, axum::Json(body)).into_response();
        if self.status == 503 {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        response
    }
}
