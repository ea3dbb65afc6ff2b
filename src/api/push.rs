//! Backend pushes: to users, in batches, and to everyone.

use super::Shared;
use super::body::Json;
use super::durable::{DurableMessage, deliver_durable, deliver_durable_one, durable, inbox_unavailable};
use super::error::ApiError;
use crate::auth::is_valid_user_id;
use crate::inbox::{AckMode, NewMessage};
use crate::metrics;
use crate::protocol::{action, encode};
use crate::router::{Delivery, Router};
use crate::state::AppState;
use axum::extract::State;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

fn default_action() -> u32 {
    action::PUSH
}

/// One message as backends send it, in every push form. `users` is
/// required by pushes (`check_users`) and ignored by broadcasts, like any
/// unknown field (forward compatibility for newer backends).
///
/// One flat struct rather than `#[serde(flatten)]`, which buffers every
/// field before deserializing it; and the payload is kept as the raw JSON
/// text (validated by the parser) instead of a `Value` tree that would be
/// built only to be serialized again.
#[derive(Deserialize)]
pub struct Message {
    #[serde(default)]
    pub(super) users: Vec<String>,
    #[serde(default = "default_action")]
    pub(super) action: u32,
    /// Present whenever the key is, `null` included (a plain `Option`
    /// would read `"payload": null` as no payload and send an empty frame).
    #[serde(default, deserialize_with = "present")]
    pub(super) payload: Option<Box<RawValue>>,
    #[serde(default)]
    pub(super) payload_b64: Option<String>,
    /// Durable delivery (proto-spec section 8); the options below need it.
    #[serde(default)]
    pub(super) persist: Option<bool>,
    #[serde(default)]
    pub(super) ttl_secs: Option<u64>,
    #[serde(default)]
    pub(super) collapse_key: Option<String>,
    #[serde(default)]
    pub(super) idempotency_key: Option<String>,
    #[serde(default)]
    pub(super) ack: Option<AckMode>,
}

#[derive(Serialize, Default)]
pub struct PushResult {
    pub(super) delivered: usize,
    pub(super) online_users: usize,
    pub(super) offline_users: Vec<String>,
    pub(super) dropped: usize,
    /// Users whose frame went to another node that holds them (cluster).
    pub(super) forwarded_users: usize,
    /// Users held by a node that did not answer in time: unknown outcome.
    pub(super) unknown_users: Vec<String>,
    /// Durable messages: each user's message id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) message_ids: BTreeMap<String, u64>,
    /// Durable messages whose idempotency key was seen: the original id,
    /// nothing delivered again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) duplicate_users: Vec<String>,
    /// Durable messages the inbox did not confirm storing: not stored and
    /// not sent when the write failed; possibly stored and sent live when
    /// the write succeeded but its disk sync failed or timed out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) failed_users: Vec<String>,
}

#[derive(Deserialize)]
pub struct BatchRequest {
    messages: Vec<Message>,
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
    /// Other nodes that took the broadcast (cluster).
    forwarded_nodes: usize,
    /// Other nodes that did not answer in time: unknown outcome there.
    unreachable_nodes: usize,
}

/// Deserializes a field that is there, whatever its JSON value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Validates a message's content and builds the one frame every session will share.
fn build_frame(message: &Message, state: &AppState) -> Result<Bytes, ApiError> {
    if durable(message, state)?.is_some() {
        return Err(ApiError::bad_request("broadcasts are not durable: send persist to users"));
    }
    Ok(encode(message.action, &payload(message, state)?))
}

/// The message's payload bytes, validated (action, encoding, size).
fn payload(message: &Message, state: &AppState) -> Result<Vec<u8>, ApiError> {
    if !action::is_pushable(message.action) {
        return Err(ApiError::invalid_action(message.action));
    }
    let payload = match (&message.payload, &message.payload_b64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give payload or payload_b64, not both")),
        (Some(json), None) => compact(json.get()),
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
    Ok(payload)
}

/// A message ready to go: a plain frame shared by every session, or a
/// durable message that gets its id per user.
enum Prepared {
    Plain(Bytes),
    Durable(NewMessage, Vec<u8>),
}

fn prepare(message: &Message, state: &AppState) -> Result<Prepared, ApiError> {
    let bytes = payload(message, state)?;
    match durable(message, state)? {
        None => Ok(Prepared::Plain(encode(message.action, &bytes))),
        Some(mut new) => {
            let max = state.config.max_durable_payload_bytes();
            if bytes.len() > max {
                let message = format!("a durable payload is at most {max} bytes (inbox.max_payload_bytes)");
                return Err(ApiError::too_large("payload_too_large", message));
            }
            new.bytes = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            Ok(Prepared::Durable(new, bytes))
        }
    }
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

/// `json` without the whitespace between its tokens ("sent compact", as
/// the API promises), keeping the backend's key order. `json` is valid
/// JSON (the parser checked it), so tracking strings and their escapes is
/// all it takes to know which whitespace is insignificant.
fn compact(json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Lists up to this long are checked for repeated users by a scan, which
/// beats hashing for the one or few users of a typical push.
const SCAN_DEDUP_MAX: usize = 16;

/// Each user once, in order.
pub(super) fn unique(users: &[String]) -> Vec<&str> {
    let mut seen: HashSet<&str> = HashSet::new();
    users
        .iter()
        .enumerate()
        .filter(
            |&(i, user)| {
                if users.len() <= SCAN_DEDUP_MAX { !users[..i].contains(user) } else { seen.insert(user.as_str()) }
            },
        )
        .map(|(_, user)| user.as_str())
        .collect()
}

async fn send(users: &[String], prepared: &Prepared, state: &AppState) -> PushResult {
    match prepared {
        Prepared::Plain(frame) => deliver(users, frame, state.ctx.router.as_ref()).await,
        Prepared::Durable(new, payload) if users.len() == 1 => {
            deliver_durable_one(&users[0], new, payload, state).await
        }
        Prepared::Durable(new, payload) => {
            let (mut results, unconfirmed) = deliver_durable(&[(users, new, payload)], state).await;
            unconfirmed.confirm(&mut results, 0).await;
            results.pop().unwrap_or_default()
        }
    }
}

/// Hands `frame` to every session of each user (each user once).
async fn deliver(users: &[String], frame: &Bytes, router: &dyn Router) -> PushResult {
    let mut result = PushResult::default();
    if let [user] = users {
        // The common push: one user, no list to build.
        result.add(user, router.deliver(user, frame).await);
        return result;
    }
    let unique = unique(users);
    for (user, d) in unique.iter().zip(router.deliver_each(&unique, frame).await) {
        result.add(user, d);
    }
    result
}

impl PushResult {
    pub(super) fn add(&mut self, user: &str, d: Delivery) {
        self.delivered += d.delivered;
        self.dropped += d.dropped;
        if d.forwarded_nodes > 0 {
            self.forwarded_users += 1;
        }
        if d.online {
            self.online_users += 1;
        } else if d.unreachable_nodes > 0 {
            self.unknown_users.push(user.to_string());
        } else {
            self.offline_users.push(user.to_string());
        }
    }
}

fn record(started: Instant, messages: usize, delivered: usize, dropped: usize) {
    let m = metrics::get();
    m.pushes.increment(messages as u64);
    m.deliveries.increment(delivered as u64);
    m.queue_full_drops.increment(dropped as u64);
    m.push_enqueue_seconds.record(started.elapsed().as_secs_f64());
}

pub async fn push(State(state): State<Shared>, Json(req): Json<Message>) -> Result<axum::Json<PushResult>, ApiError> {
    let started = Instant::now();
    check_users(&req.users, &state)?;
    let prepared = prepare(&req, &state)?;
    let result = send(&req.users, &prepared, &state).await;
    record(started, 1, result.delivered, result.dropped);
    if result.message_ids.is_empty() && !result.failed_users.is_empty() {
        // Nothing was stored: the backend must retry the whole push.
        return Err(inbox_unavailable());
    }
    Ok(axum::Json(result))
}

/// Many distinct messages in one request: per-request HTTP cost dominates
/// unicast pushes at high rates. All messages are validated before any is
/// delivered, so a bad one fails the batch without a partial send.
///
/// Pushes are served during a drain too: sessions still on this node take
/// them until they are closed, and users already drained show as offline
/// here (their clients are reconnecting elsewhere).
pub async fn push_batch(
    State(state): State<Shared>,
    Json(req): Json<BatchRequest>,
) -> Result<axum::Json<BatchResult>, ApiError> {
    let started = Instant::now();
    let max = state.config.api.max_messages_per_batch;
    if req.messages.is_empty() || req.messages.len() > max {
        return Err(ApiError::too_large("batch_size", format!("a batch holds 1 to {max} messages")));
    }
    let mut prepared = Vec::with_capacity(req.messages.len());
    for message in &req.messages {
        check_users(&message.users, &state)?;
        prepared.push(prepare(message, &state)?);
    }
    let count = req.messages.len();
    // Runs of consecutive plain one-user messages go out together (a
    // cluster reaches the other nodes for a run in one exchange); anything
    // else goes alone, so the batch keeps its order.
    let single_user = |i: usize| match &prepared[i] {
        Prepared::Plain(frame) if req.messages[i].users.len() == 1 => Some((req.messages[i].users[0].as_str(), frame)),
        _ => None,
    };
    // Runs of consecutive durable messages are stored together (sharing
    // disk syncs), then delivered in order.
    let durable_message = |i: usize| match &prepared[i] {
        Prepared::Durable(new, payload) => Some((req.messages[i].users.as_slice(), new, payload.as_slice())),
        Prepared::Plain(_) => None,
    };
    let mut results = Vec::with_capacity(count);
    // Durable runs delivered, waiting for their disk syncs (all at once at
    // the end: a plain message after a durable run does not wait for it).
    let mut unconfirmed = Vec::new();
    let mut i = 0;
    while i < count {
        let stored: Vec<DurableMessage<'_>> = (i..count).map_while(durable_message).collect();
        if !stored.is_empty() {
            let (run, syncing) = deliver_durable(&stored, &state).await;
            unconfirmed.push((results.len(), syncing));
            results.extend(run);
            i += stored.len();
            continue;
        }
        let run: Vec<(&str, &Bytes)> = (i..count).map_while(single_user).collect();
        if run.is_empty() {
            results.push(send(&req.messages[i].users, &prepared[i], &state).await);
            i += 1;
            continue;
        }
        for ((user, _), delivery) in run.iter().zip(state.ctx.router.deliver_pairs(&run).await) {
            let mut result = PushResult::default();
            result.add(user, delivery);
            results.push(result);
        }
        i += run.len();
    }
    for (offset, syncing) in unconfirmed {
        syncing.confirm(&mut results, offset).await;
    }
    let delivered = results.iter().map(|r| r.delivered).sum();
    let dropped = results.iter().map(|r| r.dropped).sum();
    record(started, count, delivered, dropped);
    Ok(axum::Json(BatchResult { results, delivered, dropped }))
}

/// Fan-out to every live session (the router yields between chunks so a
/// broadcast to many thousands never monopolizes a worker thread).
pub async fn broadcast(
    State(state): State<Shared>,
    Json(content): Json<Message>,
) -> Result<axum::Json<BroadcastResult>, ApiError> {
    let started = Instant::now();
    let frame = build_frame(&content, &state)?;
    let out = state.ctx.router.broadcast(&frame).await;
    record(started, 1, out.local, out.dropped);
    Ok(axum::Json(BroadcastResult {
        delivered: out.local,
        dropped: out.dropped,
        forwarded_nodes: out.forwarded_nodes,
        unreachable_nodes: out.unreachable_nodes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let pretty = "{ \"a\" : \"x \\\" y \\\\\" ,\n\t\"b\": [1, 2, {\"c d\": \" \\n \"}] }";
        assert_eq!(compact(pretty), br#"{"a":"x \" y \\","b":[1,2,{"c d":" \n "}]}"#);
        let value: serde_json::Value = serde_json::from_str(pretty).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&compact(pretty)).unwrap(), value);
    }

    #[test]
    fn compact_keeps_the_backends_key_order() {
        assert_eq!(compact(r#"{"z": 1, "a": 2}"#), br#"{"z":1,"a":2}"#);
    }
}
