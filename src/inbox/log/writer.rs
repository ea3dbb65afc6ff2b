//! Writing the log. A save appends its entries on the caller's thread,
//! under one lock, and updates the index at once; whoever must know it is
//! on disk (a new message's API answer) then waits until the sync thread's
//! next `fdatasync` covers its end (`EmbeddedInbox::written`). Everything
//! written while one sync runs is covered by the next one: the group
//! commit needs no queue and no thread hop for writes that need no sync
//! (acks, positions, marks). Under load the sync thread pauses between
//! syncs so that more saves share one, and ends the pause early once
//! `batch` saves wait (they share one already).
//!
//! Write-behind: a save's bytes go into [`Unwritten`] and the sync thread
//! writes them all with one `pwrite` just before its `fdatasync`, instead
//! of each save making a system call of its own (two per durable push: the
//! message, then its ack). A new message is never answered before that
//! sync with `sync = "always"`; with `interval` it is written at once
//! (answered from the page cache). So a crash of the process loses only
//! what a power cut would: what was not answered as stored yet (the id
//! floor keeps ids that went out live from being given again), and acks,
//! positions, marks and statuses of the last moments (acked messages are
//! replayed again, same ids). Beyond `write_behind_bytes` waiting, a save
//! writes everything itself.
//!
//! Between syncs the sync thread also frees garbage: the oldest closed
//! segment's live entries are copied to the end a slice at a time, and the
//! segment is deleted once the copies are synced.

use super::entry::{self, Entry, Kind};
use super::index::{Loc, Segment};
use super::{Shared, segment_path};
use crate::inbox::{Due, InboxError, Save};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::watch;

/// Bytes of the oldest segment looked at per compaction step, so a step
/// holds the write lock only briefly.
const COMPACT_SLICE: u64 = 256 << 10;

/// Bytes of zeros the sync thread keeps written ahead of the log's end.
/// A sync then finds the blocks it writes already in the file: no block
/// allocation and no new file size to write and wait for with the data
/// (the sync thread's CPU fell 10-20% on this VM's ext4). Recovery reads
/// zeros after the last entry of the last segment as the end; a closed
/// segment is cut to its entries.
const PREPARE_AHEAD: u64 = 1 << 20;

/// A place in the log: (segment, offset). Later places compare greater.
pub type Pos = (u32, u64);

/// What the sync thread has made durable: everything before `upto`, or
/// the error that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub upto: Pos,
    pub failed: Option<String>,
}

/// The end of the log and how to write there.
pub struct Tail {
    pub active: u32,
    pub file: Arc<File>,
    pub end: u64,
    pub seq: u64,
    /// The active segment's file holds zeros up to here ([`PREPARE_AHEAD`]).
    pub prepared: u64,
}

pub struct Writer {
    pub shared: Arc<Shared>,
    /// Async, so a writer stuck in the kernel holds up the others only
    /// up to their timeout (`EmbeddedInbox`), never their threads.
    pub tail: AsyncMutex<Tail>,
    pub segment_bytes: u64,
    /// Shortest time between the starts of two syncs, unless `batch`
    /// saves wait.
    pub min_interval: Duration,
    /// Saves waiting for a sync that end that pause early.
    pub batch: usize,
    /// Longest a write waits for a sync nobody asked for.
    pub lazy_interval: Duration,
    /// The furthest position a waiting save needs synced, and whether
    /// anything was written since the last sync; the sync thread sleeps on
    /// `wake` until one of them asks for work.
    pub want: Mutex<Want>,
    pub wake: Condvar,
    pub synced: watch::Sender<Synced>,
    /// Most bytes waiting in `Shared::unwritten` (0: every save writes).
    pub write_behind: usize,
    /// New messages may wait behind too (`sync = "always"`: they are
    /// answered only after the sync that writes them).
    pub new_messages_behind: bool,
}

/// Bytes at the end of the active segment not written to its file yet:
/// `buf` belongs at `start` in segment `seg`.
#[derive(Default)]
pub struct Unwritten {
    seg: u32,
    start: u64,
    buf: Vec<u8>,
}

impl Unwritten {
    /// Nothing waits any more: everything before `end` is in the files,
    /// and readers learn it through `in_file` (the one place both move).
    pub fn all_written(&mut self, end: Pos, in_file: &super::InFile) {
        self.buf.clear();
        (self.seg, self.start) = end;
        in_file.advance(end);
    }

    /// Copies the entry at `loc` into `out` if it is still here.
    pub fn copy(&self, loc: Loc, out: &mut [u8]) -> bool {
        if loc.seg != self.seg || loc.off < self.start {
            return false;
        }
        let from = (loc.off - self.start) as usize;
        match self.buf.get(from..from + out.len()) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

#[derive(Default)]
pub struct Want {
    pub upto: Pos,
    pub dirty: bool,
    pub closing: bool,
    /// The sync thread waits on `wake` for work (notified by a save that
    /// needs a sync).
    pub sleeping: bool,
    /// The sync thread waits out its pause on `wake` (notified only when
    /// `waiting` reaches the batch bound).
    pub pausing: bool,
    /// Saves that asked for a sync the running or last one does not cover.
    pub waiting: usize,
    /// Where the running or last sync ends: a save up to here asks for
    /// nothing more.
    pub cut: Pos,
    /// Since when something written waits for a sync (None: nothing).
    pub unsynced_since: Option<std::time::Instant>,
}

/// Entries being written together, and the index changes they make.
#[derive(Default)]
struct Batch<'u> {
    buf: Vec<u8>,
    /// (kind, user, key, due, offset in buf, length)
    staged: Vec<(Kind, &'u str, u64, u64, usize, usize)>,
    /// Written to the file at once, never behind.
    at_once: bool,
}

impl<'u> Batch<'u> {
    fn stage(&mut self, seq: &mut u64, kind: Kind, user: &'u str, key: u64, value: &[u8], due: u64) {
        let off = self.buf.len();
        *seq += 1;
        let len = entry::encode(&mut self.buf, *seq, kind, user, key, value);
        self.staged.push((kind, user, key, due, off, len));
    }
}

impl Writer {
    /// Appends one save if the user's record is still at `expected`;
    /// returns the position the save must be synced up to (None: the
    /// version changed, nothing was written).
    pub fn save(&self, tail: &mut Tail, user: &str, save: &Save<'_>) -> Result<Option<Pos>, InboxError> {
        let forget = {
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            if index.version(user) != save.expected {
                return Ok(None);
            }
            forget(&index, user, save)
        };
        // Sized once: growing it entry by entry reallocated several times
        // per save, through malloc's slow path past 1 KiB.
        let entries = save.put.len() * 2 + save.drop.len() + save.finished.len() + forget.len() + 1;
        let values: usize = save.put.iter().map(|(_, p)| p.len()).sum::<usize>()
            + save.finished.iter().map(|(_, m)| m.len()).sum::<usize>()
            + save.record.len();
        let buf = Vec::with_capacity(entries * entry::overhead(user) + values);
        // With `interval` a new message is answered once written: it must
        // be in the page cache then (a crash of the process keeps it).
        let at_once = !save.put.is_empty() && !self.new_messages_behind;
        let mut batch = Batch { buf, staged: Vec::with_capacity(entries), at_once };
        let seq = &mut tail.seq;
        for (id, payload) in &save.put {
            batch.stage(seq, Kind::Payload, user, *id, payload, 0);
            if let Some(at) = save.due {
                batch.stage(seq, Kind::Due, user, *id, &at.to_le_bytes(), at);
            }
        }
        for id in save.drop {
            batch.stage(seq, Kind::Drop, user, *id, &[], 0);
        }
        for (id, meta) in &save.finished {
            if !forget.contains(id) {
                batch.stage(seq, Kind::Finished, user, *id, meta, 0);
            }
        }
        for id in forget.iter().filter(|id| !save.finished.iter().any(|(new, _)| new == *id)) {
            batch.stage(seq, Kind::Forget, user, *id, &[], 0);
        }
        // Last, so the end of a user's newest record is the end of
        // everything written for them (`EmbeddedInbox::written`).
        batch.stage(seq, Kind::Record, user, save.expected + 1, save.record, 0);
        self.append(tail, &mut batch, true).map(Some)
    }

    /// Takes up to `limit` webhook checks due by `now` and moves each to
    /// `now + lease_ms`; returns them and the position to sync up to.
    pub fn claim(&self, tail: &mut Tail, now: u64, lease_ms: u64, limit: usize) -> Result<(Vec<Due>, Pos), InboxError> {
        let claimed: Vec<Due> = {
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            let due = index.due.iter().take_while(|(at, _, _)| *at <= now).take(limit);
            due.map(|(_, user, id)| (user.to_string(), *id)).collect()
        };
        let until = now.saturating_add(lease_ms);
        let mut batch = Batch::default();
        for (user, id) in &claimed {
            batch.stage(&mut tail.seq, Kind::Due, user, *id, &until.to_le_bytes(), until);
        }
        let pos = self.append(tail, &mut batch, true)?;
        Ok((claimed, pos))
    }

    /// Moves a webhook check to `at`, or removes it (None).
    pub fn reschedule(&self, tail: &mut Tail, user: &str, id: u64, at: Option<u64>) -> Result<Pos, InboxError> {
        let mut batch = Batch::default();
        match at {
            Some(at) => batch.stage(&mut tail.seq, Kind::Due, user, id, &at.to_le_bytes(), at),
            None => batch.stage(&mut tail.seq, Kind::Undue, user, id, &[], 0),
        }
        self.append(tail, &mut batch, true)
    }

    /// Writes entries read from elsewhere (the import), in chunks, all in
    /// the first segment (no roll while it is not named yet); the caller
    /// syncs.
    pub fn write_entries(&self, tail: &mut Tail, entries: &[(Kind, &str, u64, &[u8])]) -> Result<Pos, InboxError> {
        const CHUNK: usize = 4 << 20;
        let mut batch = Batch { at_once: true, ..Batch::default() };
        let mut pos = (tail.active, tail.end);
        for (i, (kind, user, key, value)) in entries.iter().enumerate() {
            let due = value.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
            batch.stage(&mut tail.seq, *kind, user, *key, value, due);
            if batch.buf.len() >= CHUNK || i + 1 == entries.len() {
                pos = self.append(tail, &mut batch, false)?;
                batch = Batch { at_once: true, ..Batch::default() };
            }
        }
        Ok(pos)
    }

    /// Asks the sync thread to make everything up to `upto` durable. It is
    /// woken only if it waits for work, or pauses and this save makes the
    /// batch: a system call per save saved.
    pub fn request_sync(&self, upto: Pos) {
        let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
        // Every save past the cut counts, also one whose end another one's
        // request already covers (requests arrive out of write order).
        if upto > want.cut {
            want.waiting = want.waiting.saturating_add(1);
        }
        let raised = upto > want.upto;
        want.upto = want.upto.max(upto);
        if (raised && want.sleeping) || (want.pausing && want.waiting == self.batch) {
            self.wake.notify_one();
        }
    }

    /// Writes the batch at the end of the active segment and takes it into
    /// the index; returns the end it reached. On failure nothing of it is
    /// in the index and the file is cut back to where it was.
    fn append(&self, tail: &mut Tail, batch: &mut Batch, may_roll: bool) -> Result<Pos, InboxError> {
        if batch.buf.is_empty() {
            return Ok((tail.active, tail.end));
        }
        if let Some((.., off, _)) = batch.staged.last() {
            entry::mark_last(&mut batch.buf, *off);
        }
        let first_seq = tail.seq - batch.staged.len() as u64;
        if self.shared.broken.load(Ordering::Relaxed) {
            tail.seq = first_seq;
            healthy(false);
            return Err(InboxError("inbox log: stopped after a failed disk write; restart the node".into()));
        }
        let start = tail.end;
        if batch.at_once || !self.keep_behind(&batch.buf) {
            if let Err(e) = self.flush(tail) {
                tail.seq = first_seq;
                return Err(e);
            }
            if let Err(e) = tail.file.write_all_at(&batch.buf, start) {
                tail.seq = first_seq;
                healthy(false);
                // A cut that fails too leaves bytes recovery would read as
                // written: stop writing until restarted.
                if let Err(cut) = tail.file.set_len(start) {
                    tracing::error!(error = %cut, "inbox log: cannot cut back a failed write; restart the node");
                    self.shared.broken.store(true, Ordering::Relaxed);
                }
                // The cut took the zeros prepared past the end too.
                tail.prepared = start;
                return Err(io("write", &e));
            }
            let end = start + batch.buf.len() as u64;
            self.unwritten().all_written((tail.active, end), &self.shared.in_file);
        }
        tail.end = start + batch.buf.len() as u64;
        healthy(true);
        {
            let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
            for (kind, user, key, due, off, len) in &batch.staged {
                let due = due.to_le_bytes();
                let e = Entry { seq: 0, kind: *kind, user, key: *key, value: &due, last: false };
                index.apply(&e, Loc { seg: tail.active, off: start + *off as u64, len: *len as u32 });
            }
            if let Some(segment) = index.segments.get_mut(&tail.active) {
                segment.len = tail.end;
            }
        }
        let end = (tail.active, tail.end);
        let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
        want.dirty = true;
        want.unsynced_since.get_or_insert_with(std::time::Instant::now);
        drop(want);
        if may_roll && tail.end >= self.segment_bytes {
            // The batch is written either way: a failed roll is retried by
            // the next write; a failed sync in it fails the waiting saves.
            if let Err(e) = self.roll(tail) {
                tracing::error!(error = %e, "inbox log: could not start a new segment");
            }
        }
        Ok(end)
    }

    /// Keeps `bytes` to be written behind, if there is room.
    fn keep_behind(&self, bytes: &[u8]) -> bool {
        let mut unwritten = self.unwritten();
        let room = unwritten.buf.len() + bytes.len() <= self.write_behind;
        if room {
            unwritten.buf.extend_from_slice(bytes);
        }
        room
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, Unwritten> {
        self.shared.unwritten.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what waits behind to the file (the caller holds the tail).
    /// A failure cannot be undone (acks and positions were taken from
    /// those bytes): the log stops like after a failed sync.
    fn flush(&self, tail: &Tail) -> Result<(), InboxError> {
        let mut unwritten = self.unwritten();
        if unwritten.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = tail.file.write_all_at(&unwritten.buf, unwritten.start) {
            return Err(self.stop("write", &e));
        }
        let end = unwritten.start + unwritten.buf.len() as u64;
        unwritten.all_written((tail.active, end), &self.shared.in_file);
        Ok(())
    }

    /// Syncs the full segment and starts the next one (rare: one per
    /// `segment_bytes`, so done in line). Recovery may then trust every
    /// closed segment to its end.
    fn roll(&self, tail: &mut Tail) -> Result<(), InboxError> {
        let upto = (tail.active, tail.end);
        self.flush(tail)?;
        // Without the zeros prepared past its end (also those of a prepare
        // that failed halfway), and the size synced with it: a closed
        // segment is its entries, and recovery takes zeros after the last
        // entry for the end only in the last segment.
        if let Err(e) = tail.file.set_len(tail.end) {
            return Err(self.stop("cut", &e));
        }
        if let Err(e) = tail.file.sync_all() {
            return Err(self.stop("sync", &e));
        }
        self.synced.send_if_modified(|s| advance(s, upto));
        let next = tail.active + 1;
        let path = segment_path(&self.shared.dir, next);
        // Truncating: a file of that number can only be left empty by a
        // roll that failed after creating it.
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path);
        let file = file.map_err(|e| io("create", &e))?;
        sync_dir(&self.shared.dir)?;
        let file = Arc::new(file);
        let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
        index.segments.insert(next, Segment { file: file.clone(), len: 0, live: 0 });
        (tail.active, tail.file, tail.end, tail.prepared) = (next, file, 0, 0);
        self.unwritten().all_written((next, 0), &self.shared.in_file);
        Ok(())
    }

    /// A failed disk sync (the kernel may have dropped the unsynced pages,
    /// so nothing after it can be trusted to reach the disk) or a failed
    /// write-behind that cannot be undone: the log stops taking writes
    /// until the node restarts (and recovery reads back what really is
    /// there), and everyone waiting for a sync fails.
    fn stop(&self, what: &str, e: &std::io::Error) -> InboxError {
        tracing::error!(error = %e, "inbox log: disk {what} failed; no more inbox writes until restart");
        healthy(false);
        self.shared.broken.store(true, Ordering::Relaxed);
        let failed = io(what, e);
        self.synced.send_modify(|s| s.failed = Some(failed.0.clone()));
        failed
    }

    /// The sync thread: syncs whenever a save waits for it (everything
    /// written meanwhile rides along), at most `lazy_interval` after a write
    /// nobody waits for, and compacts a slice after each sync while the
    /// log holds more garbage than allowed. Runs until `close`.
    /// Returns whether the last sync (at close) succeeded.
    pub fn sync_loop(&self) -> bool {
        let mut compacting: Option<(u32, u64)> = None;
        let mut last_sync = std::time::Instant::now();
        loop {
            if let Some(pause) = self.min_interval.checked_sub(last_sync.elapsed()) {
                // Group commit under load: saves arriving during this pause
                // share the next sync instead of each paying for one. The
                // pause comes first, so under load the thread finds work
                // when it wakes and nobody has to wake it.
                self.pause(pause);
            }
            let closing = {
                let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
                while !want.closing && !self.behind(&want) && compacting.is_none() {
                    want.sleeping = true;
                    let (guard, waited) =
                        self.wake.wait_timeout(want, self.lazy_interval).unwrap_or_else(PoisonError::into_inner);
                    want = guard;
                    want.sleeping = false;
                    if waited.timed_out() && want.dirty {
                        break;
                    }
                }
                want.closing
            };
            last_sync = std::time::Instant::now();
            let synced = self.sync();
            if closing {
                return synced.is_ok() && !self.shared.broken.load(Ordering::Relaxed);
            }
            compacting = self.compact_step(compacting);
        }
    }

    /// Waits out the pause, or less: until `batch` saves wait (a burst
    /// then is not held to one sync per pause; what the pause saves is a
    /// sync's cost per save, which `batch` saves already share) or the log
    /// closes.
    fn pause(&self, pause: Duration) {
        let end = std::time::Instant::now() + pause;
        let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
        while !want.closing && want.waiting < self.batch {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            want.pausing = true;
            want = self.wake.wait_timeout(want, left).unwrap_or_else(PoisonError::into_inner).0;
            want.pausing = false;
        }
    }

    /// Whether a save waits for a sync that has not happened (and can).
    fn behind(&self, want: &Want) -> bool {
        let synced = self.synced.borrow();
        synced.failed.is_none() && want.upto > synced.upto
    }

    /// Syncs everything written so far (when anything was) and tells the
    /// waiting saves.
    pub fn sync(&self) -> Result<(), InboxError> {
        if let Some(failed) = &self.synced.borrow().failed {
            return Err(InboxError(failed.clone()));
        }
        // Only the sync thread calls this (never a runtime thread). The
        // flag is taken with the end, under the log's lock that writers
        // set it under: a write is either before both (and synced now) or
        // after both (and sets it again for the next sync).
        let (file, upto, dirty) = {
            let mut tail = self.tail.blocking_lock();
            let dirty = {
                let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
                // Saves written from now on wait for the next sync.
                want.waiting = 0;
                want.cut = (tail.active, tail.end);
                std::mem::take(&mut want.dirty)
            };
            self.flush(&tail)?;
            if dirty {
                self.prepare(&mut tail);
            }
            (tail.file.clone(), (tail.active, tail.end), dirty)
        };
        if !dirty {
            // Nothing written since the last sync: the end is durable (a
            // new segment's start, after a roll).
            self.synced.send_if_modified(|s| advance(s, upto));
            return Ok(());
        }
        let started = std::time::Instant::now();
        if let Err(e) = file.sync_data() {
            return Err(self.stop("sync", &e));
        }
        crate::metrics::get().inbox_sync_seconds.record(started.elapsed().as_secs_f64());
        {
            // What was written during this sync waits for the next one
            // (from no earlier than when this one started).
            let mut want = self.want.lock().unwrap_or_else(PoisonError::into_inner);
            want.unsynced_since = want.dirty.then_some(started);
        }
        self.synced.send_if_modified(|s| advance(s, upto));
        Ok(())
    }

    /// Writes zeros ahead of the end when less than half of
    /// [`PREPARE_AHEAD`] is left (the sync that follows covers them), up to
    /// the segment's size. Under the tail: no write lands there meanwhile.
    fn prepare(&self, tail: &mut Tail) {
        let target = (tail.end + PREPARE_AHEAD).min(self.segment_bytes);
        let from = tail.prepared.max(tail.end);
        if tail.prepared >= tail.end + PREPARE_AHEAD / 2 || target <= from {
            return;
        }
        match tail.file.write_all_at(&vec![0; (target - from) as usize], from) {
            Ok(()) => tail.prepared = target,
            // The log works without (a full disk fails the writes anyway);
            // zeros written past the end are cut at the next start.
            Err(e) => tracing::warn!(error = %e, "inbox log: could not prepare space ahead"),
        }
    }

    /// Syncs the log up to `tail` for a caller that holds it (the import,
    /// before the sync thread runs).
    pub fn sync_tail(&self, tail: &Tail) -> Result<(), InboxError> {
        self.flush(tail)?;
        tail.file.sync_data().map_err(|e| self.stop("sync", &e))?;
        self.synced.send_if_modified(|s| advance(s, (tail.active, tail.end)));
        Ok(())
    }

    /// Stops the sync thread after one last sync.
    pub fn close(&self) {
        self.want.lock().unwrap_or_else(PoisonError::into_inner).closing = true;
        self.wake.notify_one();
    }

    /// One slice of compaction; returns where the next one starts. Starts
    /// when garbage outweighs live data by more than a segment.
    fn compact_step(&self, at: Option<(u32, u64)>) -> Option<(u32, u64)> {
        let (seg, from) = match at {
            Some(at) => at,
            None => {
                let active = self.tail.blocking_lock().active;
                let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
                let (len, live) = index.sizes();
                let garbage = len.saturating_sub(live);
                let oldest = index.segments.keys().next().copied()?;
                if oldest == active || garbage <= live || garbage <= self.segment_bytes {
                    return None;
                }
                (oldest, 0)
            }
        };
        let step = self.copy_live(seg, from).and_then(|next| match next {
            Some(next) => Ok(Some((seg, next))),
            None => self.free(seg).map(|()| None),
        });
        step.unwrap_or_else(|e| {
            // Left as it is (still readable); a later step starts over.
            tracing::error!(error = %e, segment = seg, "inbox log: compaction step failed");
            None
        })
    }

    /// Copies the live entries of one slice of `seg` from `from` to the
    /// end; returns where the next slice starts (None: the segment is done).
    fn copy_live(&self, seg: u32, from: u64) -> Result<Option<u64>, InboxError> {
        let (file, len) = {
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            let segment = index.segments.get(&seg).ok_or_else(|| InboxError("segment gone".into()))?;
            (segment.file.clone(), segment.len)
        };
        if from >= len {
            return Ok(None);
        }
        let mut bytes = vec![0; COMPACT_SLICE.min(len - from) as usize];
        file.read_exact_at(&mut bytes, from).map_err(|e| io("read", &e))?;
        if let Err(entry::Bad::Short) = entry::decode(&bytes) {
            // An entry longer than the slice: read it whole.
            let need = entry::declared_len(&bytes).map_err(|_| damaged(seg, from))?;
            bytes.resize(need, 0);
            file.read_exact_at(&mut bytes, from).map_err(|e| io("read", &e))?;
        }
        // Liveness is decided under the write lock, so no save can
        // supersede an entry between the check and its copy.
        let mut tail = self.tail.blocking_lock();
        let mut batch = Batch::default();
        let mut at = 0usize;
        {
            let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            while at < bytes.len() {
                let (e, n) = match entry::decode(&bytes[at..]) {
                    Ok(decoded) => decoded,
                    Err(entry::Bad::Short) => break,
                    Err(entry::Bad::Damaged) => return Err(damaged(seg, from + at as u64)),
                };
                if index.is_live(&e, Loc { seg, off: from + at as u64, len: n as u32 }) {
                    batch.stage(&mut tail.seq, e.kind, e.user, e.key, e.value, e.due_at());
                }
                at += n;
            }
        }
        self.append(&mut tail, &mut batch, true)?;
        Ok(Some(from + at as u64))
    }

    /// Deletes a segment whose live entries were all copied, once the
    /// copies are on disk.
    fn free(&self, seg: u32) -> Result<(), InboxError> {
        // A sync of its own (not one a write asked for): the copies must be
        // on disk, and an earlier failed sync fails this one.
        self.want.lock().unwrap_or_else(PoisonError::into_inner).dirty = true;
        self.sync()?;
        // The file first: one that stays keeps its place in the index (and
        // the next compaction tries again), never a hole in the sequence.
        std::fs::remove_file(segment_path(&self.shared.dir, seg)).map_err(|e| io("remove", &e))?;
        self.shared.index.write().unwrap_or_else(PoisonError::into_inner).segments.remove(&seg);
        sync_dir(&self.shared.dir)?;
        crate::metrics::get().inbox_log_compactions.increment(1);
        Ok(())
    }
}

/// The finished statuses beyond the user's newest `keep_finished` once
/// this save's are added: the oldest ids, kept or new. Both lists are in
/// id order, so only the ids that go are looked at (usually one per ack:
/// no copy and sort of every kept id).
pub(super) fn forget(index: &super::index::Index, user: &str, save: &Save<'_>) -> Vec<u64> {
    let kept = index.users.get(user).map(|u| u.finished.as_slice()).unwrap_or_default();
    let is_kept = |id: &u64| kept.binary_search_by_key(id, |(k, _)| *k).is_ok();
    let mut new: Vec<u64> = save.finished.iter().map(|(id, _)| *id).filter(|id| !is_kept(id)).collect();
    new.sort_unstable();
    new.dedup();
    let excess = (kept.len() + new.len()).saturating_sub(save.keep_finished);
    if excess == 0 {
        return Vec::new();
    }
    let (mut old, mut fresh) = (kept.iter().map(|(id, _)| *id).peekable(), new.into_iter().peekable());
    let mut oldest = Vec::with_capacity(excess);
    while oldest.len() < excess {
        let next = match (old.peek(), fresh.peek()) {
            (Some(a), Some(b)) if a < b => old.next(),
            (Some(_), None) => old.next(),
            _ => fresh.next(),
        };
        let Some(id) = next else { break };
        oldest.push(id);
    }
    oldest
}

/// `pushgate_inbox_healthy`: 1 while the log takes writes.
pub fn healthy(ok: bool) {
    crate::metrics::get().inbox_healthy.set(if ok { 1.0 } else { 0.0 });
}

fn advance(synced: &mut Synced, upto: Pos) -> bool {
    if upto > synced.upto {
        synced.upto = upto;
        return true;
    }
    false
}

pub fn sync_dir(dir: &std::path::Path) -> Result<(), InboxError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync the directory", &e))
}

fn io(what: &str, e: &std::io::Error) -> InboxError {
    InboxError(format!("inbox log {what}: {e}"))
}

pub fn damaged(seg: u32, off: u64) -> InboxError {
    InboxError(format!("inbox log segment {seg} is damaged at byte {off}"))
}
