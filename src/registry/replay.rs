//! The gate between a session's replay and live durable messages.
//!
//! While a session replays its inbox (proto-spec section 8), live MESSAGE
//! frames for it are held here instead of being written: they must not
//! overtake the replay, and one that the replay also read must not be sent
//! twice. The session sends the held frames after SYNCED, skipping ids it
//! replayed, and the gate is gone once nothing is held. Whether a session
//! is gated is the presence of its entry, read and changed under the map's
//! shard lock, so a frame is either held or delivered normally, never
//! lost between the two.
//!
//! A session that is not replaying costs nothing here, and plain frames
//! never look at the map.
//!
//! Here too: the marks of durable messages handed to a session (written to
//! its socket or queued behind what it is writing), for the message status
//! (`written_at` per device). Sent to whoever watches ([`Registry::watch_written`]),
//! dropped and counted when that channel is full: a status detail must
//! never slow a push down.

use super::{Registry, SessionHandle};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Frames one replaying session may hold; past it frames are dropped and
/// the session reads the inbox again (where every one of them is stored).
pub const MAX_HELD: usize = 1024;

/// Live durable frames held for one replaying session.
#[derive(Debug, Default)]
pub struct Held {
    pub frames: Vec<Bytes>,
    /// Frames were dropped at [`MAX_HELD`]: read the inbox again.
    pub overflowed: bool,
}

impl Registry {
    /// Gates `session` before it registers: from now on its live durable
    /// frames are held.
    pub fn begin_replay(&self, session: u64) {
        self.replaying.insert(session, Held::default());
    }

    /// Holds `frame` if `session` is replaying.
    pub(super) fn hold(&self, session: u64, frame: &Bytes) -> bool {
        match self.replaying.get_mut(&session) {
            Some(mut held) => {
                if held.frames.len() < MAX_HELD {
                    held.frames.push(frame.clone());
                } else {
                    held.overflowed = true;
                }
                true
            }
            None => false,
        }
    }

    /// What is held for `session`, taken out (the gate stays); None once
    /// nothing is held: then the gate is gone, and later frames are
    /// delivered normally.
    pub fn take_held(&self, session: u64) -> Option<Held> {
        if self.replaying.remove_if(&session, |_, held| held.frames.is_empty() && !held.overflowed).is_some() {
            return None;
        }
        self.replaying.get_mut(&session).map(|mut held| std::mem::take(&mut *held))
    }

    /// Drops the gate (the session ended or gave up replaying).
    pub fn end_replay(&self, session: u64) {
        self.replaying.remove(&session);
    }

    /// Whether any session replays (a cheap check before looking up each).
    pub(super) fn any_replaying(&self) -> bool {
        !self.replaying.is_empty()
    }
}

/// A durable message handed to a session of `device` (None: the token
/// named no device).
#[derive(Debug)]
pub struct Written {
    pub user: Arc<str>,
    pub device: Option<Box<str>>,
    pub id: u64,
}

impl Registry {
    /// A receiver of every [`Written`] mark from now on, through a channel
    /// of `capacity`; None if already taken.
    pub fn watch_written(&self, capacity: usize) -> Option<mpsc::Receiver<Written>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.written.set(tx).ok().map(|()| rx)
    }

    /// Marks message `id` handed to `handle`'s session.
    pub fn mark_written(&self, handle: &SessionHandle, id: u64) {
        if let Some(tx) = self.written.get() {
            let mark = Written { user: handle.user.clone(), device: handle.device.clone(), id };
            if tx.try_send(mark).is_err() {
                crate::metrics::get().inbox_marks_dropped.increment(1);
            }
        }
    }
}
