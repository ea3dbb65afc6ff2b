//! Backend pushes: to users, in batches, and to everyone.

use super::Shared;
use super::body::Json;
use crate::auth::is_valid_user_id;
use crate::errors::ApiError;
use crate::metrics;
use crate::protocol::{action, encode};
use crate::registry::{Enqueue, Router};
use crate::state::AppState;
use axum::extract::State;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Instant;

fn default_action() -> u32 {
    action::PUSH
}

/// The frame body shared by every push form.
/// Unknown fields are ignored (forward compatibility for newer backends).
#[derive(Deserialize)]
pub struct Content {
    #[serde(default = "default_action")]
    action: u32,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    payload_b64: Option<String>,
}

#[derive(Deserialize)]
pub struct PushRequest {
    users: Vec<String>,
    #[serde(flatten)]
    content: Content,
}

#[derive(Serialize, Default)]
pub struct PushResult {
    delivered: usize,
    online_users: usize,
    offline_users: Vec<String>,
    dropped: usize,
}

#[derive(Deserialize)]
pub struct BatchRequest {
    messages: Vec<PushRequest>,
}

#[derive(Serialize)]
pub struct BatchResult {
    results: Vec<PushResult>,
    delivered: usize,
    dropped: usize,
}

#[derive(Serialize)]
pub struct BroadcastResult {
    delivered: usize,
    dropped: usize,
}

/// Validates the content and builds the one frame every session will share.
fn build_frame(content: &Content, state: &AppState) -> Result<Bytes, ApiError> {
    if !action::is_pushable(content.action) {
        return Err(ApiError::invalid_action(content.action));
    }
    let payload = match (&content.payload, &content.payload_b64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give payload or payload_b64, not both")),
        (Some(value), None) => serde_json::to_vec(value).map_err(|e| ApiError::bad_request(e.to_string()))?,
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ApiError::bad_request(format!("payload_b64 is not base64: {e}")))?,
        (None, None) => Vec::new(),
    };
    let max = state.config.session.max_message_bytes;
    if payload.len() + crate::protocol::HEADER_LEN > max {
        return Err(ApiError::too_large(
            "payload_too_large",
            format!("frame would be {} bytes; clients accept at most {max}", payload.len() + 4),
        ));
    }
    Ok(encode(content.action, &payload))
}

fn check_users(users: &[String], state: &AppState) -> Result<(), ApiError> {
    let max = state.config.api.max_users_per_push;
    if users.is_empty() {
        return Err(ApiError::bad_request("users must list at least one user"));
    }
    if users.len() > max {
        return Err(ApiError::too_large("too_many_users", format!("{} users; the limit is {max}", users.len())));
    }
    match users.iter().find(|u| !is_valid_user_id(u)) {
        Some(bad) => Err(ApiError::bad_request(format!("{bad:?} is not a valid user id"))),
        None => Ok(()),
    }
}

/// Queues `frame` to every session of each user (each user once).
fn deliver(users: Vec<String>, frame: &Bytes, router: &dyn Router) -> PushResult {
    let mut result = PushResult::default();
    let mut seen = HashSet::with_capacity(users.len());
    for user in users {
        if !seen.insert(user.clone()) {
            continue;
        }
        let d = router.deliver(&user, frame);
        result.delivered += d.delivered;
        result.dropped += d.dropped;
        if d.online {
            result.online_users += 1;
        } else {
            result.offline_users.push(user);
        }
    }
    result
}

fn record(started: Instant, messages: usize, delivered: usize, dropped: usize) {
    let m = metrics::get();
    m.pushes.increment(messages as u64);
    m.deliveries.increment(delivered as u64);
    m.queue_full_drops.increment(dropped as u64);
    m.push_enqueue_seconds.record(started.elapsed().as_secs_f64());
}

fn refuse_when_draining(state: &AppState) -> Result<(), ApiError> {
    if state.is_draining() { Err(ApiError::draining()) } else { Ok(()) }
}

pub async fn push(
    State(state): State<Shared>,
    Json(req): Json<PushRequest>,
) -> Result<axum::Json<PushResult>, ApiError> {
    let started = Instant::now();
    refuse_when_draining(&state)?;
    check_users(&req.users, &state)?;
    let frame = build_frame(&req.content, &state)?;
    let result = deliver(req.users, &frame, state.registry.as_ref());
    record(started, 1, result.delivered, result.dropped);
    Ok(axum::Json(result))
}

/// Many distinct messages in one request: per-request HTTP cost dominates
/// unicast pushes at high rates. All messages are validated before any is
/// delivered, so a bad one fails the batch without a partial send.
pub async fn push_batch(
    State(state): State<Shared>,
    Json(req): Json<BatchRequest>,
) -> Result<axum::Json<BatchResult>, ApiError> {
    let started = Instant::now();
    refuse_when_draining(&state)?;
    let max = state.config.api.max_messages_per_batch;
    if req.messages.is_empty() || req.messages.len() > max {
        return Err(ApiError::too_large("batch_size", format!("a batch holds 1 to {max} messages")));
    }
    let mut frames = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        check_users(&message.users, &state)?;
        frames.push(build_frame(&message.content, &state)?);
    }
    let count = req.messages.len();
    let results: Vec<PushResult> = req
        .messages
        .into_iter()
        .zip(frames.iter())
        .map(|(message, frame)| deliver(message.users, frame, state.registry.as_ref()))
        .collect();
    let delivered = results.iter().map(|r| r.delivered).sum();
    let dropped = results.iter().map(|r| r.dropped).sum();
    record(started, count, delivered, dropped);
    Ok(axum::Json(BatchResult { results, delivered, dropped }))
}

/// Fan-out to every live session. Runs over a snapshot of handles (no map
/// lock held) and yields between chunks so a broadcast to many thousands of
/// sessions never monopolizes a worker thread.
pub async fn broadcast(
    State(state): State<Shared>,
    Json(content): Json<Content>,
) -> Result<axum::Json<BroadcastResult>, ApiError> {
    const CHUNK: usize = 1024;
    let started = Instant::now();
    refuse_when_draining(&state)?;
    let frame = build_frame(&content, &state)?;
    let sessions = state.registry.snapshot();
    let (mut delivered, mut dropped) = (0, 0);
    for chunk in sessions.chunks(CHUNK) {
        for handle in chunk {
            match handle.queue.push_queued(frame.clone()) {
                Enqueue::Queued => delivered += 1,
                Enqueue::Full => dropped += 1,
                Enqueue::Closed => {}
            }
        }
        tokio::task::yield_now().await;
    }
    record(started, 1, delivered, dropped);
    Ok(axum::Json(BroadcastResult { delivered, dropped }))
}
