//! A JSON body extractor whose failures use our error shape: 400 for a body
//! that is not the expected JSON, 413 past `api.max_body_bytes`.

use super::error::ApiError;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("body_too_large", "request body exceeds api.max_body_bytes")
            } else {
                ApiError::bad_request(rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(Json).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}
