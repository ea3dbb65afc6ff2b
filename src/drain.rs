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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, test_session as session};
    use std::sync::Arc;

    /// Every session gets its RECONNECT hint as its last frame, then 1012;
    /// the closes are spread over the window, never all at once.
    #[tokio::test(start_paused = true)]
    async fn sessions_are_closed_one_by_one_across_the_window_after_a_hint() {
        let registry = Arc::new(Registry::with_incarnation("n1", 1));
        let handles: Vec<_> = (0..10).map(|i| session(&registry, &format!("u{i}"))).collect();
        let _guards: Vec<_> = handles.iter().map(|h| registry.register(h.clone()).expect("open")).collect();
        let window = Duration::from_secs(10);
        let drain = tokio::spawn({
            let registry = registry.clone();
            async move { drain(registry.as_ref(), window, Duration::from_millis(500)).await }
        });
        let start = Instant::now();
        let mut closed_at = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for h in &handles {
                let pending = h.outbox.len();
                if pending > 0 && !closed_at.iter().any(|(id, _)| *id == h.id) {
                    closed_at.push((h.id, start.elapsed()));
                }
            }
        }
        assert_eq!(drain.await.expect("drain"), 10);
        assert_eq!(closed_at.len(), 10, "every session was asked to close");
        let first = closed_at.iter().map(|(_, t)| *t).min().expect("some");
        let last = closed_at.iter().map(|(_, t)| *t).max().expect("some");
        assert!(first < Duration::from_secs(1), "the drain starts at once ({first:?})");
        assert!(last >= Duration::from_secs(8), "the last close comes late in the window ({last:?})");
        assert!(last <= window, "and within it ({last:?})");
        for h in &handles {
            let batch = h.outbox.next_batch(8).await;
            assert_eq!(batch.frames.len(), 1, "exactly one frame: the hint");
            assert_eq!(&batch.frames[0][..4], &action::RECONNECT.to_be_bytes());
            let hint: serde_json::Value = serde_json::from_slice(&batch.frames[0][4..]).expect("json");
            assert!(hint["after_ms"].as_u64().is_some_and(|ms| ms <= 500), "{hint}");
            assert_eq!(batch.close, Some(CloseReason::Drained), "then 1012");
        }
    }
}
