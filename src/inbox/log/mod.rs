//! The single-node inbox: an append-only log in `<data_dir>/inbox/`
//! (README "Embedded inbox").
//!
//! Why a log and not the redb file: every inbox operation rewrites one
//! user's record, and a copy-on-write B-tree turns each of those into
//! several dirty pages, a page-cache walk and a two-level commit; the
//! durable push cost five plain pushes. Appending the new record to the end
//! of a file is one sequential write (of many operations at once: writer.rs
//! writes behind), and one `fdatasync` shared by every new message written
//! meanwhile.
//!
//! - `entry.rs`: the bytes on disk (checksummed, sequence-numbered).
//! - `index.rs`: where each user's record, each payload, each kept status
//!   and each webhook check lives; rebuilt by reading the log at startup.
//! - `writer.rs`: appending (in line, under one lock), the sync thread
//!   (group commits), segments and compaction.
//! - `import.rs`: the one-time move of an inbox from the redb file.
//!
//! Reads take the index's read lock only to find a location, then read the
//! entry with one `pread` (usually from the page cache), or from the bytes
//! not written yet, and verify it.

mod entry;
mod floor;
mod import;
mod index;
#[cfg(test)]
mod tests;
mod writer;

use super::{Due, Durability, InboxError, InboxStore, Loaded, Save, on_disk};
use crate::config::{InboxConfig, InboxSync};
use crate::store::EmbeddedStore;
use async_trait::async_trait;
use bytes::Bytes;
use index::{Index, Loc, Segment};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use writer::{Pos, Synced, Tail, Unwritten, Want, Writer};

/// The directory inside `server.data_dir`.
pub const DIR_NAME: &str = "inbox";

/// How the log is kept (`[inbox]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// A segment is closed and the next begun past this many bytes.
    pub segment_bytes: u64,
    /// Bound on one operation waiting for its disk sync.
    pub timeout: Duration,
    /// Shortest time between the starts of two disk syncs, unless
    /// `sync_batch` saves wait.
    pub min_sync_interval: Duration,
    /// Saves waiting for a sync that end that pause early.
    pub sync_batch: usize,
    /// Longest a write waits for a sync nobody asked for.
    pub sync_interval: Duration,
    /// New messages are answered only once synced (`inbox.sync`).
    pub sync_before_answer: bool,
    /// Bytes written behind (writer.rs).
    pub write_behind_bytes: usize,
}

impl LogOptions {
    pub fn from_config(config: &InboxConfig) -> LogOptions {
        LogOptions {
            segment_bytes: config.segment_bytes,
            timeout: Duration::from_millis(config.write_timeout_ms),
            min_sync_interval: Duration::from_micros(config.min_sync_interval_us),
            sync_batch: config.sync_batch,
            sync_interval: Duration::from_millis(config.sync_interval_ms),
            sync_before_answer: config.sync == InboxSync::Always,
            write_behind_bytes: config.write_behind_bytes,
        }
    }
}

/// The config's defaults: one place decides them.
impl Default for LogOptions {
    fn default() -> Self {
        LogOptions::from_config(&InboxConfig::default())
    }
}

/// What the readers and the writer share.
pub struct Shared {
    dir: PathBuf,
    index: RwLock<Index>,
    /// A failed write could not be undone, or a sync failed: no more writes.
    broken: AtomicBool,
    /// The end of the active segment the sync thread has not written to
    /// its file yet (writer.rs); reads find those entries here.
    unwritten: Mutex<Unwritten>,
    /// Everything before this is in the files: most reads go there
    /// without the lock above (held while the buffer is being written).
    in_file: InFile,
}

/// A position everything before which is in the files.
#[derive(Default)]
pub struct InFile {
    seg: std::sync::atomic::AtomicU32,
    end: std::sync::atomic::AtomicU64,
}

impl InFile {
    /// Moves to `pos`. Into a new segment, the end goes to 0 before the
    /// segment changes, so a reader never pairs the new segment with the
    /// old one's end (older segments are whole in their files).
    fn advance(&self, (seg, end): Pos) {
        use std::sync::atomic::Ordering::Release;
        if self.seg.load(std::sync::atomic::Ordering::Relaxed) != seg {
            self.end.store(0, Release);
            self.seg.store(seg, Release);
        }
        self.end.store(end, Release);
    }

    fn covers(&self, loc: Loc) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        let seg = self.seg.load(Acquire);
        let end = self.end.load(Acquire);
        loc.seg < seg || (loc.seg == seg && loc.off + u64::from(loc.len) <= end)
    }
}

impl Shared {
    /// The bytes of the entry at `loc`, checked: from the file, or from
    /// what is not written yet.
    fn read(&self, file: &File, loc: Loc) -> Result<Vec<u8>, InboxError> {
        let mut buf = vec![0; loc.len as usize];
        let behind = !self.in_file.covers(loc)
            && self.unwritten.lock().unwrap_or_else(PoisonError::into_inner).copy(loc, &mut buf);
        if !behind {
            file.read_exact_at(&mut buf, loc.off).map_err(|e| InboxError(format!("inbox log read: {e}")))?;
        }
        let (value_at, value_len) = {
            let (e, _) = entry::decode(&buf).map_err(|_| writer::damaged(loc.seg, loc.off))?;
            (e.value.as_ptr() as usize - buf.as_ptr() as usize, e.value.len())
        };
        buf.drain(..value_at);
        buf.truncate(value_len);
        Ok(buf)
    }
}

pub struct EmbeddedInbox {
    writer: Arc<Writer>,
    timeout: Duration,
    sync_before_answer: bool,
    /// New message ids start at least here (floor.rs).
    floor: u64,
    closed: watch::Receiver<bool>,
}

impl Drop for EmbeddedInbox {
    fn drop(&mut self) {
        self.writer.close();
    }
}

/// Resolves once the sync thread has synced, closed the log and released
/// its lock (so the same data dir can be opened again).
pub struct Closed(watch::Receiver<bool>);

impl Closed {
    pub async fn wait(mut self, bound: Duration) {
        let closed = self.0.wait_for(|closed| *closed);
        if tokio::time::timeout(bound, closed).await.is_err() {
            tracing::warn!("inbox log still in use at shutdown; left open");
        }
    }
}

fn segment_path(dir: &Path, seg: u32) -> PathBuf {
    dir.join(format!("{seg:010}.log"))
}

/// The first segment until it is complete (`open`).
fn first_path(dir: &Path) -> PathBuf {
    dir.join("first.log.new")
}

impl EmbeddedInbox {
    /// Opens (or creates) `<data_dir>/inbox/`, reads the log back, and
    /// starts the sync thread (it ends when this is dropped). An inbox kept
    /// in the store's redb file by an earlier version is moved into the log
    /// the first time.
    ///
    /// # Errors
    /// The directory cannot be used (another process holds it, I/O), or a
    /// closed segment is damaged (refused rather than read past).
    pub async fn open(
        store: &EmbeddedStore,
        data_dir: &Path,
        options: LogOptions,
    ) -> Result<EmbeddedInbox, InboxError> {
        let dir = data_dir.join(DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|e| InboxError(format!("creating {}: {e}", dir.display())))?;
        let lock = File::create(dir.join("LOCK")).map_err(|e| InboxError(format!("{}: {e}", dir.display())))?;
        lock.try_lock().map_err(|_| InboxError(format!("{} is in use by another pushgate", dir.display())))?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            index: RwLock::new(Index::default()),
            broken: AtomicBool::new(false),
            unwritten: Mutex::new(Unwritten::default()),
            in_file: InFile::default(),
        });
        let (tail, fresh) = recover(&shared)?;
        let upto = (tail.active, tail.end);
        shared.unwritten.lock().unwrap_or_else(PoisonError::into_inner).all_written(upto, &shared.in_file);
        let writer = Arc::new(Writer {
            shared,
            tail: tokio::sync::Mutex::new(tail),
            segment_bytes: options.segment_bytes,
            min_interval: options.min_sync_interval,
            batch: options.sync_batch,
            lazy_interval: options.sync_interval,
            want: Mutex::new(Want { upto, cut: upto, ..Want::default() }),
            wake: Condvar::new(),
            synced: watch::channel(Synced { upto, failed: None }).0,
            write_behind: options.write_behind_bytes,
            new_messages_behind: options.sync_before_answer,
        });
        if fresh {
            import::from_store(store, &writer, &mut *writer.tail.lock().await)?;
            std::fs::rename(first_path(&dir), segment_path(&dir, 1))
                .map_err(|e| InboxError(format!("naming the first inbox log segment: {e}")))?;
            writer::sync_dir(&dir)?;
            if let Err(e) = import::drop_old_tables(store).await {
                // The log has them; the old tables are only unused pages.
                tracing::warn!(error = %e, "inbox log: the old redb inbox tables stay");
            }
        }
        let floor = {
            let index = writer.shared.index.read().unwrap_or_else(PoisonError::into_inner);
            floor::open(&writer.shared, &index, fresh)?
        };
        writer::healthy(true);
        let (closed_tx, closed) = watch::channel(false);
        let sync = writer.clone();
        std::thread::Builder::new()
            .name("pushgate-inbox".into())
            .spawn(move || {
                if sync.sync_loop()
                    && let Err(e) = floor::close(&sync.shared.dir)
                {
                    tracing::warn!(error = %e, "inbox log: closed, but not marked clean");
                }
                drop(lock);
                let _ = closed_tx.send(true);
            })
            .map_err(|e| InboxError(format!("starting the inbox sync thread: {e}")))?;
        Ok(EmbeddedInbox {
            writer,
            timeout: options.timeout,
            sync_before_answer: options.sync_before_answer,
            floor,
            closed,
        })
    }

    /// Waits for the sync thread to finish once this is dropped.
    pub fn closed(&self) -> Closed {
        Closed(self.closed.clone())
    }

    /// The end of the log, for one write (within the timeout: a writer
    /// stuck in the kernel holds up the others only that long).
    async fn tail(&self) -> Result<tokio::sync::MutexGuard<'_, Tail>, InboxError> {
        let locked = tokio::time::timeout(self.timeout, self.writer.tail.lock()).await;
        locked.map_err(|_| InboxError(format!("the inbox log took no write for {} ms", self.timeout.as_millis())))
    }

    /// Resolves (within the timeout) once everything up to `upto` is on
    /// disk: a stalled disk is an error, not a hang. The sync is asked for
    /// now, not when the caller starts waiting.
    fn durable(&self, upto: Pos) -> Durability {
        let mut synced = self.writer.synced.subscribe();
        if synced.borrow().upto >= upto {
            return on_disk();
        }
        self.writer.request_sync(upto);
        let timeout = self.timeout;
        // Bounded from now, not from when the caller starts waiting.
        let deadline = tokio::time::Instant::now() + timeout;
        Box::pin(async move {
            let reached = synced.wait_for(|s| s.upto >= upto || s.failed.is_some());
            match tokio::time::timeout_at(deadline, reached).await {
                Ok(Ok(s)) if s.upto >= upto => Ok(()),
                Ok(Ok(s)) => Err(InboxError(s.failed.clone().unwrap_or_default())),
                Ok(Err(_)) => Err(InboxError("the inbox sync thread stopped".into())),
                Err(_) => Err(InboxError(format!(
                    "no disk sync within {} ms (the write may still land)",
                    timeout.as_millis()
                ))),
            }
        })
    }

    /// New messages go out live before their sync: while something written
    /// has waited for a sync longer than a sync may take (the sync thread
    /// or the disk is stuck), none are taken (503), so what a stalled disk
    /// may lose stays bounded, well under the id floor's step.
    fn refuse_while_stalled(&self) -> Result<(), InboxError> {
        let since = self.writer.want.lock().unwrap_or_else(PoisonError::into_inner).unsynced_since;
        let waited = since.map(|at| at.elapsed()).unwrap_or_default();
        if waited > self.writer.lazy_interval + self.timeout {
            return Err(InboxError(format!(
                "nothing synced to disk for {} ms: no new messages until the disk answers",
                waited.as_millis()
            )));
        }
        Ok(())
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.writer.shared.index.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads every segment back into the index; returns the end of the log,
/// and whether the log was empty (nothing was ever written).
fn recover(shared: &Arc<Shared>) -> Result<(Tail, bool), InboxError> {
    let io = |what: &str, e: std::io::Error| InboxError(format!("inbox log {what} in {}: {e}", shared.dir.display()));
    let mut segments: Vec<u32> = std::fs::read_dir(&shared.dir)
        .map_err(|e| io("listing", e))?
        .filter_map(|f| f.ok()?.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    segments.sort_unstable();
    let mut index = Index::default();
    if segments.is_empty() {
        // The first segment is written under a temporary name (the import
        // of an older inbox goes there) and named a segment only once
        // that is synced: a crash before leaves no half-imported log.
        let file = File::options().read(true).write(true).create(true).truncate(true).open(first_path(&shared.dir));
        let file = Arc::new(file.map_err(|e| io("creating a segment", e))?);
        index.segments.insert(1, Segment { file: file.clone(), len: 0, live: 0 });
        *shared.index.write().unwrap_or_else(PoisonError::into_inner) = index;
        return Ok((Tail { active: 1, file, end: 0, seq: 0, prepared: 0 }, true));
    }
    let mut seq: Option<u64> = None;
    // Empty segments at the end (a roll that failed after creating its
    // file) do not count: the last one with entries is the log's end.
    let mut last = segments.first().copied().unwrap_or(1);
    for &seg in &segments {
        let path = segment_path(&shared.dir, seg);
        if std::fs::metadata(&path).map_err(|e| io("reading", e))?.len() > 0 {
            last = seg;
        }
    }
    if segments.iter().any(|s| *s > last) {
        for &seg in segments.iter().filter(|s| **s > last) {
            let path = segment_path(&shared.dir, seg);
            std::fs::remove_file(&path).map_err(|e| io("removing an empty segment", e))?;
        }
        writer::sync_dir(&shared.dir)?;
    }
    for &seg in segments.iter().filter(|s| **s <= last) {
        let path = segment_path(&shared.dir, seg);
        let mut file = File::options().read(true).write(true).open(&path).map_err(|e| io("opening", e))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| io("reading", e))?;
        index.segments.insert(seg, Segment { file: Arc::new(file), len: 0, live: 0 });
        // Entries are applied a whole group at a time (entry.rs): `at` is
        // where the first group not yet complete starts.
        let (mut at, mut read) = (0usize, 0usize);
        let mut group: Vec<(entry::Entry<'_>, Loc)> = Vec::new();
        let mut next_seq = seq;
        while read < bytes.len() {
            let (e, n) = match entry::decode(&bytes[read..]) {
                Ok((e, n)) if next_seq.is_none_or(|s| e.seq == s + 1) => (e, n),
                _ => break,
            };
            next_seq = Some(e.seq);
            let last_of_group = e.last;
            group.push((e, Loc { seg, off: read as u64, len: n as u32 }));
            read += n;
            if last_of_group {
                for (e, loc) in group.drain(..) {
                    index.apply(&e, loc);
                }
                (at, seq) = (read, next_seq);
            }
        }
        // Zeros after the last entry of the last segment: space prepared
        // ahead (writer.rs), cut quietly. A closed segment was cut to its
        // entries and synced before the next began: zeros there are damage.
        if at < bytes.len() {
            let prepared = seg == last && bytes[at..].iter().all(|b| *b == 0);
            if seg != last {
                return Err(InboxError(format!(
                    "inbox log {} is damaged at byte {at} (a closed segment): move it away to start without it",
                    path.display()
                )));
            }
            if !prepared {
                // The end of the last segment: a write torn by a crash,
                // never answered as stored.
                let bytes = bytes.len() - at;
                tracing::warn!(file = %path.display(), bytes, "inbox log: cut a torn write at the end");
            }
            let file = index.file(seg).ok_or_else(|| InboxError("segment vanished".into()))?;
            file.set_len(at as u64).map_err(|e| io("cutting the end", e))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
        }
        if let Some(s) = index.segments.get_mut(&seg) {
            s.len = at as u64;
        }
    }
    let (file, end) =
        index.segments.get(&last).map(|s| (s.file.clone(), s.len)).ok_or_else(|| InboxError("no segment".into()))?;
    // After a crash of the process the end may be in the page cache only,
    // and everything read back counts as synced from here on (closed
    // segments were synced when they closed).
    file.sync_data().map_err(|e| io("syncing the last segment", e))?;
    *shared.index.write().unwrap_or_else(PoisonError::into_inner) = index;
    Ok((Tail { active: last, file, end, seq: seq.unwrap_or(0), prepared: end }, false))
}

#[async_trait]
impl InboxStore for EmbeddedInbox {
    async fn load(&self, user: &str) -> Result<Loaded, InboxError> {
        let found = {
            let index = self.index();
            index.users.get(user).and_then(|u| Some((u.version, u.record?, index.file(u.record?.seg)?)))
        };
        let Some((version, loc, file)) = found else {
            return Ok(Loaded { version: 0, record: None });
        };
        Ok(Loaded { version, record: Some(self.writer.shared.read(&file, loc)?) })
    }

    async fn save(&self, user: &str, save: Save<'_>) -> Result<bool, InboxError> {
        if !save.put.is_empty() {
            self.refuse_while_stalled()?;
        }
        // New messages then wait for their sync through `written`, which
        // asks for it at once (before their live delivery).
        Ok(self.writer.save(&mut *self.tail().await?, user, &save)?.is_some())
    }

    fn written(&self, user: &str) -> Durability {
        // The user's newest record was written after everything else of
        // theirs (a save's entries end with it).
        let end =
            self.index().users.get(user).and_then(|u| u.record).map(|loc| (loc.seg, loc.off + u64::from(loc.len)));
        match end.filter(|_| self.sync_before_answer) {
            Some(end) => self.durable(end),
            None => on_disk(),
        }
    }

    fn id_floor(&self) -> u64 {
        self.floor
    }

    async fn finished(&self, user: &str, id: u64) -> Result<Option<Vec<u8>>, InboxError> {
        let found = {
            let index = self.index();
            index.finished(user, id).and_then(|loc| Some((loc, index.file(loc.seg)?)))
        };
        found.map(|(loc, file)| self.writer.shared.read(&file, loc)).transpose()
    }

    async fn payloads(&self, user: &str, ids: &[u64]) -> Result<Vec<Option<Bytes>>, InboxError> {
        let found: Vec<Option<(Loc, Arc<File>)>> = {
            let index = self.index();
            ids.iter().map(|id| index.payload(user, *id).and_then(|loc| Some((loc, index.file(loc.seg)?)))).collect()
        };
        // A message is replayed as soon as it is written, like its live
        // delivery: an id a power cut takes back is never given again
        // (floor.rs).
        found
            .into_iter()
            .map(|f| f.map(|(loc, file)| self.writer.shared.read(&file, loc).map(Bytes::from)).transpose())
            .collect()
    }

    async fn claim_due(&self, now: u64, lease_ms: u64, limit: usize) -> Result<Vec<Due>, InboxError> {
        // A look first: a write only when something is due.
        if self.index().due.first().is_none_or(|(at, _, _)| *at > now) {
            return Ok(Vec::new());
        }
        let (claimed, end) = self.writer.claim(&mut *self.tail().await?, now, lease_ms, limit)?;
        self.durable(end).await?;
        Ok(claimed)
    }

    async fn reschedule(&self, user: &str, id: u64, at: Option<u64>) -> Result<(), InboxError> {
        let end = self.writer.reschedule(&mut *self.tail().await?, user, id, at)?;
        self.durable(end).await
    }

    fn version_now(&self, user: &str) -> Option<u64> {
        Some(self.index().version(user))
    }

    async fn users_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, InboxError> {
        Ok(self.index().users_after(after, limit))
    }
}
