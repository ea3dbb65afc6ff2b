//! What happened to durable messages (proto-spec section 8): one message
//! per device, and a user's inbox per device.

use super::error::ApiError;
use super::{Shared, user_id};
use crate::http_wire::Unavailable;
use crate::inbox::status;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

fn unavailable(e: &crate::inbox::InboxError) -> ApiError {
    tracing::error!(error = %e, "inbox read failed");
    ApiError::unavailable(Unavailable::Dependency, "inbox_unavailable", "the inbox could not be read, retry")
}

pub async fn message(
    State(state): State<Shared>,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let message_id: u64 = message_id.parse().map_err(|_| ApiError::bad_request("message_id must be a message id"))?;
    let inbox = state.ctx.inbox.read_message(user, message_id).await.map_err(|e| unavailable(&e))?;
    inbox
        .and_then(|inbox| status::message(&inbox, user, message_id, crate::clock::unix_ms()))
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("{user:?} has no message {message_id} (never sent, or long gone)")))
}

pub async fn summary(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let inbox = state.ctx.inbox.read(user).await.map_err(|e| unavailable(&e))?;
    Ok(Json(status::summary(inbox.as_ref(), user, crate::clock::unix_ms())))
}
