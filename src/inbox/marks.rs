//! "Written" marks (registry/replay.rs): when a session was handed a
//! durable message. They wait in memory and ride along with the user's
//! next inbox write (usually the ack that follows within milliseconds), so
//! they cost no write of their own; those still waiting after
//! [`FLUSH_EVERY`] are written then, one save per user, all at once
//! (saves that wait for no disk sync). Best effort by design: beyond [`MAX_WAITING`] waiting
//! marks, or when a save fails, marks are counted and dropped; the status
//! then lacks that `written_at`, nothing else changes.

use super::Inbox;
use crate::registry::Written;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long a mark may wait for a write to ride on.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Marks waiting in memory at most (about 64 bytes each).
pub const MAX_WAITING: usize = 100_000;

/// (device, message id, unix ms) marks of one user (None: the default
/// device). The names are the registry's own, moved in: no copy per mark.
pub type Marks = Vec<(Option<Box<str>>, u64, u64)>;

/// Marks waiting per user.
#[derive(Default)]
pub struct Waiting {
    by_user: Mutex<HashMap<Arc<str>, Marks>>,
    count: std::sync::atomic::AtomicUsize,
}

impl Waiting {
    /// Keeps a mark until the user's next write (called in line by the
    /// registry as a durable message is handed to a session).
    pub fn add(&self, mark: Written) {
        use std::sync::atomic::Ordering;
        if self.count.load(Ordering::Relaxed) >= MAX_WAITING {
            crate::metrics::get().inbox_marks_dropped.increment(1);
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let at = crate::clock::unix_ms();
        let mut map = self.by_user.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(mark.user).or_default().push((mark.device, mark.id, at));
    }

    /// The marks waiting for `user`, taken out.
    pub fn take(&self, user: &str) -> Marks {
        let taken = self.by_user.lock().unwrap_or_else(PoisonError::into_inner).remove(user).unwrap_or_default();
        self.count.fetch_sub(taken.len(), std::sync::atomic::Ordering::Relaxed);
        taken
    }

    fn users(&self) -> Vec<String> {
        self.by_user.lock().unwrap_or_else(PoisonError::into_inner).keys().map(|user| user.to_string()).collect()
    }
}

/// Every [`FLUSH_EVERY`], writes the marks that found no write to ride
/// on; runs until dropped (with the node).
pub async fn flush_marks_forever(inbox: Arc<Inbox>) {
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        flush.tick().await;
        let users = inbox.waiting_marks().users();
        let saves = users.iter().map(|user| inbox.flush_marks(user));
        let failed = futures_util::future::join_all(saves).await.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            crate::metrics::get().inbox_marks_dropped.increment(failed as u64);
        }
    }
}

/// The device a mark names.
pub fn device(mark: &Option<Box<str>>) -> &str {
    mark.as_deref().unwrap_or(super::DEFAULT_DEVICE)
}
