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

/// Revokes the user: tokens issued before now are refused from here on (at
/// the handshake and at TOKEN_REFRESH, on every node, across restarts),
/// and every session of the user is closed with 4006 REVOKED. Stored
/// before anything is closed: if storage fails, nothing happened (503).
pub async fn revoke(State(state): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = user_id(&id)?;
    let revocation = state.revocations.revoke(user).await.map_err(|e| {
        tracing::error!(error = %e, user, "revocation not stored");
        ApiError::unavailable(
            crate::http_wire::Unavailable::Dependency,
            "revocation_unavailable",
            "the revocation could not be stored; nothing was revoked, retry",
        )
    })?;
    let kicked = state.ctx.router.kick_user(user, CloseReason::Revoked).await;
    Ok(Json(json!({
        "user": user,
        "revoked_before": revocation.before,
        "until": revocation.until,
        "closed": kicked.local,
        "forwarded_nodes": kicked.forwarded_nodes,
        "unreachable_nodes": kicked.unreachable_nodes,
    })))
}
