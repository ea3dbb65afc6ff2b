//! An internal API failure: `{"error": {"code", "message"}}` with a status,
//! the one place API handlers' failures become HTTP answers.

use crate::http_wire::Unavailable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Set on 503s: decides Retry-After.
    pub unavailable: Option<Unavailable>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), unavailable: None }
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
    pub fn unavailable(kind: Unavailable, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { unavailable: Some(kind), ..ApiError::new(503, code, message) }
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
        let body = crate::http_wire::error_body(self.code, &self.message);
        let mut response = (status, [(http::header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(kind) = self.unavailable {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(kind.retry_after_secs()));
        }
        response
    }
}
