//! Session listing and kicking, through the router: cluster-wide once the
//! router is, with each session's node in the listing.

use super::error::ApiError;
use super::{Shared, user_id};
use crate::protocol::CloseReason;
use crate::router::{Kick, SessionId};
use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

pub async fn list(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let listing = state.ctx.router.sessions(user).await;
    Ok(Json(json!({
        "user": user,
        "sessions": listing.sessions,
        "unreachable_nodes": listing.unreachable_nodes,
    })))
}

/// Closes every session of the user with KICKED (4002), which tells clients
/// not to reconnect blindly (e.g. a banned or logged-out account).
pub async fn kick_user(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let kicked = state.ctx.router.kick_user(user, CloseReason::Kicked).await;
    Ok(Json(json!({
        "closed": kicked.local,
        "forwarded_nodes": kicked.forwarded_nodes,
        "unreachable_nodes": kicked.unreachable_nodes,
    })))
}

/// Closes one session by its node-qualified id (proto-spec: "Session ids").
pub async fn kick_session(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = SessionId::parse(&id)
        .map_err(|_| ApiError::bad_request("not a session id (expected <node>.<incarnation>.<n>)"))?;
    match state.ctx.router.kick_session(&id, CloseReason::Kicked, None).await {
        Kick::Closed => Ok(Json(json!({ "closed": 1 }))),
        Kick::NotFound => Err(ApiError::not_found("no such session")),
        Kick::Unreachable => Err(ApiError::new(
            504,
            "node_unreachable",
            format!("node {} did not answer; the session may still be open", id.node),
        )),
    }
}
