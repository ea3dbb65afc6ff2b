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
//! A session that resumed keeps its entry (then only a floor) until it
//! ends; one that did not costs nothing here, and plain frames never look
//! at the map.
//!
//! Here too: the marks of durable messages handed to a session (written to
//! its socket or queued behind what it is writing), for the message status
//! (`written_at` per device). Handed in line to whoever watches
//! ([`Registry::watch_written`]): no channel and no task to wake per
//! delivery; the watcher bounds what it keeps (a status detail must never
//! slow a push down).

use super::{Registry, SessionHandle};
use bytes::Bytes;
use std::sync::Arc;

/// Frames and bytes one replaying session may hold; past either, frames
/// are dropped and the session reads the inbox again (where every one of
/// them is stored).
pub const MAX_HELD: usize = 1024;
pub const MAX_HELD_BYTES: usize = 1024 * 1024;

/// Live durable frames held for one replaying session, then, once its
/// replay is over, the floor below which live frames are duplicates.
#[derive(Debug, Default)]
pub struct Held {
    pub frames: Vec<Bytes>,
    bytes: usize,
    /// Frames were dropped at a bound: read the inbox again.
    pub overflowed: bool,
    /// The replay is over: frames pass, except ids up to `floor`, which
    /// the replay covered (sent, or not pending for this device).
    open: bool,
    floor: u64,
}

impl Registry {
    /// Gates `session` before it registers: from now on its live durable
    /// frames are held.
    pub fn begin_replay(&self, session: u64) {
        self.replaying.insert(session, Held::default());
    }

    /// Holds `frame` (MESSAGE `id`) for a replaying `session`, or drops it
    /// as covered by its replay; false: deliver it normally.
    pub(super) fn hold(&self, session: u64, id: u64, frame: &Bytes) -> bool {
        let Some(mut held) = self.replaying.get_mut(&session) else {
            return false;
        };
        if held.open {
            return id <= held.floor;
        }
        if held.frames.len() < MAX_HELD && held.bytes + frame.len() <= MAX_HELD_BYTES {
            held.bytes += frame.len();
            held.frames.push(frame.clone());
        } else {
            held.overflowed = true;
        }
        true
    }

    /// What is held for `session`, taken out; None once nothing is: then
    /// the replay is over, and from here on live frames pass, except the
    /// ids up to `floor` its replay covered (a delivery that raced the
    /// replay: sent once, not twice).
    pub fn take_held(&self, session: u64, floor: u64) -> Option<Held> {
        let mut held = self.replaying.get_mut(&session)?;
        if held.open {
            return None;
        }
        if held.frames.is_empty() && !held.overflowed {
            held.open = true;
            held.floor = floor;
            return None;
        }
        Some(std::mem::take(&mut *held))
    }

    /// Drops the gate (the session ended or gave up replaying).
    pub fn end_replay(&self, session: u64) {
        self.replaying.remove(&session);
    }

    /// Whether any session replays or replayed (a cheap check before
    /// looking up each).
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

/// Takes every [`Written`] mark, on the delivering thread (so it must be
/// quick and never wait).
pub struct WrittenSink(pub Box<dyn Fn(Written) + Send + Sync>);

impl std::fmt::Debug for WrittenSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrittenSink")
    }
}

impl Registry {
    /// Hands every [`Written`] mark from now on to `sink`; false if one
    /// was set already.
    pub fn watch_written(&self, sink: WrittenSink) -> bool {
        self.written.set(sink).is_ok()
    }

    /// Marks message `id` handed to `handle`'s session.
    pub fn mark_written(&self, handle: &SessionHandle, id: u64) {
        if let Some(sink) = self.written.get() {
            (sink.0)(Written { user: handle.user.clone(), device: handle.device.clone(), id });
        }
    }
}
