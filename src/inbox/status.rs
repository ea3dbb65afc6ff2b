//! What the backend sees of durable messages: one message per device
//! (`GET /v1/users/{id}/messages/{message_id}`) and an inbox summary
//! (`GET /v1/users/{id}/inbox`).

use super::model::{State, UserInbox};
use serde_json::{Value, json};

/// A message's status per known device; None when the id is unknown (never
/// given out, or its tombstone was dropped by the bound).
pub fn message(inbox: &UserInbox, user: &str, id: u64, now: u64) -> Option<Value> {
    let m = inbox.messages.get(&id)?;
    let expired_now = m.state == State::Held && m.expires <= now;
    let state = match m.state {
        State::Held if expired_now => json!({ "state": "expired", "at": m.expires }),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    };
    let retired_by_user = m.retired_by_user();
    let devices: serde_json::Map<String, Value> = inbox
        .devices
        .keys()
        .map(|device| {
            let acked = m.acks.iter().find(|(d, _)| d == device).map(|(_, at)| *at);
            let written = m.written.iter().find(|(d, _)| d == device).map(|(_, at)| *at);
            let status = match (acked, m.state) {
                (Some(at), _) => json!({ "state": "acked", "acked_at": at }),
                (None, _) if retired_by_user => json!({ "state": "retired", "reason": "acked by another device" }),
                (None, State::Held) if expired_now => json!({ "state": "expired" }),
                (None, State::Held) => json!({ "state": "pending" }),
                (None, State::Retired { .. }) => json!({ "state": "retired" }),
                (None, State::Collapsed { by, .. }) => json!({ "state": "collapsed", "by": by }),
                (None, State::Evicted { .. }) => json!({ "state": "evicted" }),
                (None, State::Expired { .. }) => json!({ "state": "expired" }),
            };
            let mut status = status;
            if let (Some(at), Some(status)) = (written, status.as_object_mut()) {
                status.insert("written_at".into(), at.into());
            }
            (device.clone(), status)
        })
        .collect();
    let mut out = json!({
        "user": user,
        "message_id": id,
        "action": m.action,
        "bytes": m.bytes,
        "created_at": m.created,
        "expires_at": m.expires,
        "ack": m.ack,
        "collapse_key": m.collapse_key,
        "devices": devices,
    });
    if let (Some(webhook), Some(out)) = (&m.webhook, out.as_object_mut()) {
        out.insert("webhook".into(), serde_json::to_value(webhook).unwrap_or(Value::Null));
    }
    if let (Some(out), Value::Object(state)) = (out.as_object_mut(), state) {
        out.extend(state);
    }
    Some(out)
}

/// Per device: pending count, oldest pending id, position, last seen.
pub fn summary(inbox: Option<&UserInbox>, user: &str, now: u64) -> Value {
    let Some(inbox) = inbox else {
        return json!({ "user": user, "last_id": 0, "held": 0, "devices": {} });
    };
    let held = inbox.messages.values().filter(|m| m.state == State::Held && m.expires > now).count();
    let devices: serde_json::Map<String, Value> = inbox
        .devices
        .iter()
        .map(|(device, cursor)| {
            let (pending, oldest) = inbox.pending_summary(device, now);
            let status = json!({
                "pending": pending,
                "oldest_unacked": oldest,
                "acked_upto": cursor.upto,
                "last_seen_at": cursor.seen,
            });
            (device.clone(), status)
        })
        .collect();
    json!({ "user": user, "last_id": inbox.last_id, "held": held, "devices": devices })
}
