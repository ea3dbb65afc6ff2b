use super::body::Json;
use super::error::ApiError;
use super::{Shared, user_id};
use axum::extract::{Path, State};
use serde_json::{Value, json};

pub async fn get(State(state): State<Shared>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let user = user_id(&id)?;
    match state.ctx.store.profile(user).await? {
        Some(profile) => Ok(axum::Json(json!({ "user": user, "profile": profile }))),
        None => Err(ApiError::not_found("no profile set for this user")),
    }
}

/// Replaces the profile FETCH_INFO (111) shows. The size bound keeps one
/// profile from bloating every FETCH_INFO reply.
pub async fn put(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(profile): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let user = user_id(&id)?;
    if !profile.is_object() {
        return Err(ApiError::bad_request("profile must be a JSON object"));
    }
    let size = serde_json::to_vec(&profile).map_or(usize::MAX, |v| v.len());
    let max = state.config.api.max_profile_bytes;
    if size > max {
        return Err(ApiError::too_large("profile_too_large", format!("profile is {size} bytes; the limit is {max}")));
    }
    state.ctx.store.set_profile(user, &profile).await?;
    Ok(axum::Json(json!({ "user": user, "profile": profile })))
}
