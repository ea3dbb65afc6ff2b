//! A JSON body extractor whose failures use our error shape: 400 for a body
//! that is not the expected JSON, 413 past `api.max_body_bytes`, 408 for a
//! body that stops arriving for `api.idle_timeout_ms`.

use super::Shared;
use super::error::ApiError;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Self, Self::Rejection> {
        // The connection's watchdog fails a body that stops arriving
        // (`api/watchdog.rs`); no timer per request here, it would cost
        // every push.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if stalled(&rejection) {
                ApiError::new(408, "body_timeout", "request body stopped arriving")
            } else if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("body_too_large", "request body exceeds api.max_body_bytes")
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Whether reading the body failed because the connection's stall timeout
/// fired (an `io::ErrorKind::TimedOut` somewhere in the error's sources).
fn stalled(rejection: &axum::extract::rejection::BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
}
