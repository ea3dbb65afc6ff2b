//! Draining without a reconnect storm. A restart of one node must not send
//! all its clients back in the same second: sessions are closed one by one
//! across the drain window, in random order, each told with a RECONNECT
//! hint (action 5) to wait a random `after_ms` before reconnecting.

use crate::protocol::{CloseReason, action, encode_json};
use crate::router::Router;
use rand::seq::SliceRandom;
use std::time::Duration;
use tokio::time::Instant;

/// Closes every session of this node with RECONNECT + 1012, spread evenly
/// over `window`. The caller stops admitting new sessions first. Returns
/// how many sessions were asked to close.
pub async fn drain(router: &dyn Router, window: Duration, hint_max: Duration) -> usize {
    let mut sessions = router.local_session_ids();
    // Random order: no user or device class is always drained first.
    sessions.shuffle(&mut rand::rng());
    let count = sessions.len();
    let start = Instant::now();
    let hint_max_ms = hint_max.as_millis() as u64;
    let mut closed = 0;
    for (i, id) in sessions.iter().enumerate() {
        let due = start + window.mul_f64(i as f64 / count as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let hint = serde_json::json!({
            "after_ms": rand::random_range(0..=hint_max_ms),
            "reason": "server restarting",
        });
        let hint = encode_json(action::RECONNECT, &hint);
        if router.kick_session(id, CloseReason::Drained, Some(hint)).await == crate::router::Kick::Closed {
            closed += 1;
        }
    }
    closed
}
