use super::{Shared, user_id};
use crate::errors::{ApiError, requests};
use crate::registry::SessionHandle;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

fn describe(h: &SessionHandle) -> Value {
    json!({
        "session_id": h.id.to_string(),
        "user": &*h.user,
        "device": h.device.as_deref(),
        "connected_at": h.connected_at_ms,
        "remote_addr": h.client_addr(),
        "peer_addr": h.remote.to_string(),
        "user_agent": h.user_agent.as_deref(),
        "queued": h.queue.len(),
    })
}

pub async fn list(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let sessions: Vec<Value> = state.registry.user_sessions(user).iter().map(|h| describe(h)).collect();
    Ok(Json(json!({ "user": user, "sessions": sessions })))
}

/// Closes every session of the user with KICKED (4002), which tells clients
/// not to reconnect blindly (e.g. a banned or logged-out account).
pub async fn kick_user(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let closed = state.registry.user_sessions(user).iter().filter(|h| h.queue.close(requests::KICKED)).count();
    Ok(Json(json!({ "closed": closed })))
}

pub async fn kick_session(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let handle = id.parse::<u64>().ok().and_then(|id| state.registry.session(id));
    let handle = handle.ok_or_else(|| ApiError::not_found("no such session"))?;
    let closed = usize::from(handle.queue.close(requests::KICKED));
    Ok(Json(json!({ "closed": closed })))
}
