//! Durable pushes (proto-spec section 8): the options a message may carry,
//! and storing it in each user's inbox before delivering it as MESSAGE.

use super::error::ApiError;
use super::push::{Message, PushResult, unique};
use crate::inbox::NewMessage;
use crate::protocol::encode_message;
use crate::state::AppState;

/// Longest idempotency or collapse key (bytes).
const MAX_KEY_BYTES: usize = 256;

/// The message's durable options when it is durable (`persist`, or its
/// action in `inbox.persist_actions`); options without it are refused
/// rather than silently ignored.
pub(super) fn durable(message: &Message, state: &AppState) -> Result<Option<NewMessage>, ApiError> {
    let cfg = &state.config.inbox;
    let persist = message.persist.unwrap_or_else(|| cfg.persist_actions.contains(&message.action));
    if !persist {
        let given = message.ttl_secs.is_some()
            || message.collapse_key.is_some()
            || message.idempotency_key.is_some()
            || message.ack.is_some();
        return match given {
            true => {
                Err(ApiError::bad_request("ttl_secs, collapse_key, idempotency_key and ack need \"persist\": true"))
            }
            false => Ok(None),
        };
    }
    if let Some(ttl) = message.ttl_secs
        && !(1..=cfg.max_age_secs).contains(&ttl)
    {
        return Err(ApiError::bad_request(format!(
            "ttl_secs must be from 1 to {} (inbox.max_age_secs)",
            cfg.max_age_secs
        )));
    }
    for (name, key) in [("collapse_key", &message.collapse_key), ("idempotency_key", &message.idempotency_key)] {
        if let Some(key) = key
            && (key.is_empty() || key.len() > MAX_KEY_BYTES)
        {
            return Err(ApiError::bad_request(format!("{name} must be 1 to {MAX_KEY_BYTES} bytes")));
        }
    }
    Ok(Some(NewMessage {
        action: message.action,
        bytes: 0,
        ttl_ms: message.ttl_secs.map(|t| t.saturating_mul(1000)),
        collapse_key: message.collapse_key.clone(),
        idempotency_key: message.idempotency_key.clone(),
        ack: message.ack.unwrap_or_default(),
    }))
}

/// Stores the message in each user's inbox (all users at once, so the
/// embedded store writes them in one group commit), then delivers each
/// stored one live as a MESSAGE with that user's id.
pub(super) async fn deliver_durable(
    users: &[String],
    new: &NewMessage,
    payload: &[u8],
    state: &AppState,
) -> PushResult {
    let mut result = PushResult::default();
    let unique = unique(users);
    let inbox = &state.ctx.inbox;
    let stored = futures_util::future::join_all(unique.iter().map(|user| inbox.append(user, new, payload))).await;
    let mut fresh: Vec<(&str, bytes::Bytes)> = Vec::new();
    for (user, outcome) in unique.iter().zip(stored) {
        match outcome {
            Ok(appended) => {
                result.message_ids.insert(user.to_string(), appended.id);
                if appended.duplicate {
                    result.duplicate_users.push(user.to_string());
                } else {
                    crate::metrics::get().durable_pushes.increment(1);
                    fresh.push((user, encode_message(appended.id, new.action, payload)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, user, "durable push not stored");
                result.failed_users.push(user.to_string());
            }
        }
    }
    // Each user's own frame (its id), all in one exchange in a cluster.
    let pairs: Vec<(&str, &bytes::Bytes)> = fresh.iter().map(|(user, frame)| (*user, frame)).collect();
    for ((user, _), delivery) in pairs.iter().zip(state.ctx.router.deliver_pairs(&pairs).await) {
        result.add(user, delivery);
    }
    result
}

pub(super) fn inbox_unavailable() -> ApiError {
    let message = "the inbox did not confirm storing the message (it may still have been stored); \
                   nothing was sent live: retry with an idempotency_key";
    ApiError::unavailable(crate::http_wire::Unavailable::Dependency, "inbox_unavailable", message)
}
