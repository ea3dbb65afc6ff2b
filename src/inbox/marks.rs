//! "Written" marks (registry/replay.rs) saved into the inbox: whatever is
//! waiting is grouped by user, one save per user, all users at once (so
//! the embedded store writes them in one group commit). Best effort by
//! design: a mark that cannot be saved is counted and dropped; the status
//! then lacks that `written_at`, nothing else changes.

use super::{DEFAULT_DEVICE, Inbox};
use crate::registry::Written;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Marks taken from the channel per round.
const BATCH: usize = 4096;

/// Runs until the registry (the sender) is gone.
pub async fn record_marks(inbox: Arc<Inbox>, mut marks: mpsc::Receiver<Written>) {
    let mut batch = Vec::with_capacity(BATCH);
    while marks.recv_many(&mut batch, BATCH).await > 0 {
        let mut by_user: HashMap<Arc<str>, Vec<(String, u64)>> = HashMap::new();
        for mark in batch.drain(..) {
            let device = mark.device.as_deref().unwrap_or(DEFAULT_DEVICE).to_string();
            by_user.entry(mark.user).or_default().push((device, mark.id));
        }
        let saves = by_user.iter().map(|(user, marks)| inbox.mark_written(user, marks));
        let failed = futures_util::future::join_all(saves).await.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            crate::metrics::get().inbox_marks_dropped.increment(failed as u64);
        }
    }
}
