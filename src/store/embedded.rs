//! The single-node store on redb: a pure-Rust, ACID, copy-on-write B-tree in
//! one file. Chosen over SQLite because our data is a handful of key ranges
//! (no queries that need SQL), it needs no C toolchain, and every commit is
//! crash-safe with fsync by default.
//!
//! Failures heal or say so:
//! - An I/O error (disk full, EIO) latches a redb handle ("previous I/O
//!   error"): every later call fails until the file is reopened. The store
//!   turns unhealthy (readiness false, `pushgate_store_healthy` 0), drops the
//!   failed handle and reopens the file with bounded exponential backoff;
//!   healthy again once a reopened handle commits a probe transaction.
//! - Corruption is refused at startup by an integrity check; a damaged record
//!   met at run time makes redb panic, which is caught here and becomes a
//!   [`StoreError`] (500 / ERROR internal), never an unwinding request.
//!
//! The handle lives in a `RwLock<Option<Arc<Database>>>`: each call clones
//! the `Arc` out under the read lock (held for no more than that clone, never
//! across an await) and works on its clone, so a reopen can swap the handle
//! while requests run; the old file lock is released when the last in-flight
//! call drops its clone (until then a reopen attempt fails and retries).

use super::{
    FriendOutcome, IncomingRequest, List, ListQuery, Page, Refusal, Relationships, Store, StoreError, StoreHealth,
    UserView,
};
use crate::config::SocialConfig;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// user -> profile JSON.
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// (user, friend) -> since (unix seconds); stored in both directions.
const FRIENDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("friends");
/// (from, to) -> requested at (unix seconds).
const REQUESTS_OUT: TableDefinition<(&str, &str), u64> = TableDefinition::new("requests_out");
/// (to, from) -> message ("" when none).
const REQUESTS_IN: TableDefinition<(&str, &str), &str> = TableDefinition::new("requests_in");

/// The file inside `server.data_dir`.
pub const FILE_NAME: &str = "pushgate.redb";

/// First delay before reopening after a fault; doubles up to the maximum.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// What kind of failure a call met: decides whether the handle is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The handle is latched failed (I/O error, poisoned lock): reopen.
    Io,
    /// A damaged record (checksum failure, or a panic inside redb).
    Corrupt,
    Other,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Io => "io",
            Kind::Corrupt => "corrupt",
            Kind::Other => "other",
        }
    }
}

/// A failed call before it is counted and reported.
struct Fail {
    kind: Kind,
    message: String,
}

/// A redb error, classified.
fn err(e: impl Into<redb::Error>) -> Fail {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::LockPoisoned(_) | redb::Error::DatabaseClosed => {
            Kind::Io
        }
        redb::Error::Corrupted(_) => Kind::Corrupt,
        _ => Kind::Other,
    };
    Fail { kind, message: e.to_string() }
}

fn other(e: impl std::fmt::Display) -> Fail {
    Fail { kind: Kind::Other, message: e.to_string() }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Runs synchronous redb work, turning a panic inside it (redb panics on
/// some damaged pages) into a `Corrupt` failure.
fn guarded<T>(f: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            Err(Fail { kind: Kind::Corrupt, message: format!("panic in the store: {}", panic_message(&*payload)) })
        }
    }
}

/// How the store opens and heals (`[store]` in the config).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Verify every page's checksum at startup and refuse a corrupt file.
    pub check_integrity: bool,
    /// Longest wait between reopen attempts after an I/O fault.
    pub reopen_backoff_max: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { check_integrity: true, reopen_backoff_max: Duration::from_secs(30) }
    }
}

struct Inner {
    path: PathBuf,
    options: StoreOptions,
    /// None while a reopen is under way.
    db: RwLock<Option<Arc<Database>>>,
    healthy: AtomicBool,
    reason: Mutex<Option<String>>,
    reopening: AtomicBool,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// What an operator must do with a corrupt file.
fn recovery_steps(path: &Path) -> String {
    format!(
        "to recover, stop pushgate and either restore {p} from a backup, or move it aside \
         (mv {p} {p}.corrupt) to start with an empty store; see deploy/README.md \"Store recovery\"",
        p = path.display()
    )
}

/// Opens the file and makes sure every table exists (so readers never meet
/// a missing table); this commit also proves the handle can write.
fn open_db(path: &Path, check_integrity: bool) -> Result<Database, Fail> {
    guarded(|| {
        let mut db = Database::create(path).map_err(err)?;
        if check_integrity {
            match db.check_integrity().map_err(err)? {
                true => {}
                false => tracing::warn!(file = %path.display(), "store: integrity check repaired the file"),
            }
        }
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(PROFILES).map_err(err)?;
        txn.open_table(FRIENDS).map_err(err)?;
        txn.open_table(REQUESTS_OUT).map_err(err)?;
        txn.open_table(REQUESTS_IN).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(db)
    })
}

impl EmbeddedStore {
    /// Opens (or creates) `pushgate.redb` under `data_dir` with the default
    /// options (integrity check on).
    ///
    /// # Errors
    /// See [`EmbeddedStore::open_with`].
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with(data_dir, StoreOptions::default())
    }

    /// Opens (or creates) `pushgate.redb` under `data_dir`.
    ///
    /// # Errors
    /// The directory cannot be created, the file is locked by another
    /// process, or it is corrupt (the message names the file and the
    /// recovery steps).
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(FILE_NAME);
        let db = open_db(&path, options.check_integrity).map_err(|f| match f.kind {
            Kind::Corrupt => StoreError(format!(
                "the store file {} is corrupt ({}); refusing to start: {}",
                path.display(),
                f.message,
                recovery_steps(&path)
            )),
            _ => StoreError(format!("{}: {}", path.display(), f.message)),
        })?;
        crate::metrics::get().store_healthy.set(1.0);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                path,
                options,
                db: RwLock::new(Some(Arc::new(db))),
                healthy: AtomicBool::new(true),
                reason: Mutex::new(None),
                reopening: AtomicBool::new(false),
            }),
        })
    }

    /// Waits (up to `bound`) until this is the last handle on the store,
    /// then drops it, closing the file: tasks that held a clone (the
    /// inbox's committer) end on their own once their work is gone.
    pub async fn released(self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(file = %self.inner.path.display(), "store still in use at shutdown; left open");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The current handle, cloned out; the lock is held only for the clone.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.inner.db.read().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(db) => Ok(db.clone()),
            None => Err(StoreError("unavailable: reopening after an I/O error".into())),
        }
    }

    /// Counts and reports a failure; an I/O failure starts the reopen.
    fn failed(&self, fail: Fail) -> StoreError {
        crate::metrics::store_error(fail.kind.label());
        match fail.kind {
            Kind::Io => self.fault(&fail.message),
            Kind::Corrupt => tracing::error!(
                file = %self.inner.path.display(),
                error = %fail.message,
                "store: damaged record; {}",
                recovery_steps(&self.inner.path)
            ),
            Kind::Other => {}
        }
        StoreError(fail.message)
    }

    /// Runs a read inline: a redb read transaction over cached pages takes
    /// microseconds and never waits for writers (MVCC), so a blocking-pool
    /// hop would cost more than it saves.
    fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T, Fail>) -> Result<T, StoreError> {
        let db = self.db()?;
        guarded(|| f(&db)).map_err(|fail| self.failed(fail))
    }

    /// Runs a write transaction off the async runtime: commits fsync, which
    /// must not stall the sessions sharing this worker thread.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, Fail> + Send + 'static,
    {
        let db = self.db()?;
        let result = tokio::task::spawn_blocking(move || {
            guarded(|| {
                let txn = db.begin_write().map_err(err)?;
                let out = f(&txn)?;
                txn.commit().map_err(err)?;
                Ok(out)
            })
        })
        .await;
        match result {
            Ok(result) => result.map_err(|fail| self.failed(fail)),
            // The closure catches its own panics; a JoinError is a
            // cancelled blocking task (runtime shutting down).
            Err(e) => Err(self.failed(Fail { kind: Kind::Other, message: format!("store task: {e}") })),
        }
    }

    /// A read on the store's file for another owner of tables in it (the
    /// embedded inbox), with the store's failure handling.
    ///
    /// # Errors
    /// As the store's own reads.
    pub(crate) fn read_tables<T>(&self, f: impl FnOnce(&Database) -> Result<T, redb::Error>) -> Result<T, StoreError> {
        self.read(|db| f(db).map_err(err))
    }

    /// A write transaction on the store's file for another owner of tables
    /// in it (the embedded inbox's group commits): one commit, one sync.
    ///
    /// # Errors
    /// As the store's own writes.
    pub(crate) async fn write_tables<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        self.write(|txn| f(txn).map_err(err)).await
    }

    /// Marks the store unhealthy and starts one reopen loop.
    fn fault(&self, message: &str) {
        let reason = format!("store I/O error: {message}; reopening {}", self.inner.path.display());
        if self.inner.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(file = %self.inner.path.display(), error = %message, "store failed; reopening it");
        }
        crate::metrics::get().store_healthy.set(0.0);
        *self.inner.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        if self.inner.reopening.swap(true, Ordering::AcqRel) {
            return;
        }
        // Drop our handle now: the file lock goes with the last clone.
        let old = self.inner.db.write().unwrap_or_else(PoisonError::into_inner).take();
        drop(old);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(reopen(self.inner.clone()));
            }
            Err(_) => self.inner.reopening.store(false, Ordering::Release),
        }
    }
}

/// Reopens the file until it works, waiting `REOPEN_BACKOFF_MIN` doubling
/// up to `reopen_backoff_max` between attempts.
async fn reopen(inner: Arc<Inner>) {
    let max = inner.options.reopen_backoff_max.max(REOPEN_BACKOFF_MIN);
    let mut delay = REOPEN_BACKOFF_MIN;
    let mut attempt = 0u32;
    loop {
        tokio::time::sleep(delay).await;
        attempt += 1;
        let path = inner.path.clone();
        // No integrity check here: the file was good at startup and an
        // I/O fault does not damage committed pages (copy-on-write).
        let opened = tokio::task::spawn_blocking(move || open_db(&path, false)).await;
        match opened {
            Ok(Ok(db)) => {
                *inner.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
                *inner.reason.lock().unwrap_or_else(PoisonError::into_inner) = None;
                inner.healthy.store(true, Ordering::Release);
                inner.reopening.store(false, Ordering::Release);
                crate::metrics::get().store_healthy.set(1.0);
                tracing::info!(file = %inner.path.display(), attempt, "store reopened; healthy again");
                return;
            }
            Ok(Err(fail)) => {
                crate::metrics::store_error(fail.kind.label());
                let reason = format!(
                    "store I/O error; reopening {} failed (attempt {attempt}): {}",
                    inner.path.display(),
                    fail.message
                );
                tracing::warn!(%reason, retry_in_ms = (delay * 2).min(max).as_millis() as u64, "store still failing");
                *inner.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
            Err(e) => {
                tracing::warn!(error = %e, "store reopen task failed");
            }
        }
        delay = (delay * 2).min(max);
    }
}

/// At most `limit` entries of `user`'s `(user, x)` keys after `after` (key
/// order), mapped by `map`: a range scan that starts at the cursor and reads
/// one entry past the page to learn whether more remain.
fn page_of<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    user: &str,
    after: Option<&str>,
    limit: usize,
    map: impl Fn(&str, V::SelfType<'_>) -> T,
) -> Result<Page<T>, Fail> {
    let start = match after {
        Some(after) => Bound::Excluded((user, after)),
        None => Bound::Included((user, "")),
    };
    let mut page = Page { items: Vec::new(), more: false };
    for entry in table.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(err)? {
        let (key, value) = entry.map_err(err)?;
        let (first, second) = key.value();
        if first != user {
            break;
        }
        if page.items.len() == limit {
            page.more = true;
            break;
        }
        page.items.push(map(second, value.value()));
    }
    Ok(page)
}

/// How many `(user, x)` keys there are, counting no further than `bound`.
fn count_up_to<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    user: &str,
    bound: usize,
) -> Result<usize, Fail> {
    let mut n = 0;
    for entry in table.range((user, "")..).map_err(err)? {
        let (key, _) = entry.map_err(err)?;
        if key.value().0 != user || n == bound {
            break;
        }
        n += 1;
    }
    Ok(n)
}

fn read_profile(txn: &redb::ReadTransaction, user: &str) -> Result<Option<Value>, Fail> {
    let profiles = txn.open_table(PROFILES).map_err(err)?;
    match profiles.get(user).map_err(err)? {
        Some(bytes) => serde_json::from_slice(bytes.value()).map(Some).map_err(other),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn add_friend_request(
        &self,
        from: &str,
        to: &str,
        message: Option<&str>,
        limits: SocialConfig,
    ) -> Result<FriendOutcome, StoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        let message = message.unwrap_or_default().to_string();
        self.write(move |txn| {
            let (from, to) = (from.as_str(), to.as_str());
            let mut friends = txn.open_table(FRIENDS).map_err(err)?;
            if friends.get((from, to)).map_err(err)?.is_some() {
                return Ok(FriendOutcome::AlreadyFriends);
            }
            let mut out = txn.open_table(REQUESTS_OUT).map_err(err)?;
            let mut inbox = txn.open_table(REQUESTS_IN).map_err(err)?;
            let now = crate::clock::unix_secs();
            // Counted by bounded range scans (at most `max_*` keys each),
            // only on the paths that would add an entry.
            if out.get((to, from)).map_err(err)?.is_some() {
                if count_up_to(&friends, from, limits.max_friends)? >= limits.max_friends {
                    return Ok(FriendOutcome::Refused(Refusal::TooManyFriends));
                }
                if count_up_to(&friends, to, limits.max_friends)? >= limits.max_friends {
                    return Ok(FriendOutcome::Refused(Refusal::TheirFriendsFull));
                }
                out.remove((to, from)).map_err(err)?;
                inbox.remove((from, to)).map_err(err)?;
                friends.insert((from, to), now).map_err(err)?;
                friends.insert((to, from), now).map_err(err)?;
                return Ok(FriendOutcome::BecameFriends);
            }
            if out.get((from, to)).map_err(err)?.is_some() {
                return Ok(FriendOutcome::AlreadyRequested);
            }
            if count_up_to(&friends, from, limits.max_friends)? >= limits.max_friends {
                return Ok(FriendOutcome::Refused(Refusal::TooManyFriends));
            }
            if count_up_to(&out, from, limits.max_requests_out)? >= limits.max_requests_out {
                return Ok(FriendOutcome::Refused(Refusal::TooManyRequestsOut));
            }
            if count_up_to(&inbox, to, limits.max_requests_in)? >= limits.max_requests_in {
                return Ok(FriendOutcome::Refused(Refusal::InboxFull));
            }
            out.insert((from, to), now).map_err(err)?;
            inbox.insert((to, from), message.as_str()).map_err(err)?;
            Ok(FriendOutcome::Requested)
        })
        .await
    }

    async fn remove_friend_request(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |txn| {
            let (from, to) = (from.as_str(), to.as_str());
            let mut out = txn.open_table(REQUESTS_OUT).map_err(err)?;
            let mut inbox = txn.open_table(REQUESTS_IN).map_err(err)?;
            let was_out = out.remove((from, to)).map_err(err)?.is_some();
            let was_in = inbox.remove((to, from)).map_err(err)?.is_some();
            Ok(was_out || was_in)
        })
        .await
    }

    async fn user_view(&self, viewer: &str, target: &str, query: ListQuery<'_>) -> Result<UserView, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(err)?;
            let profile = read_profile(&txn, target)?;
            if viewer != target {
                let friends = txn.open_table(FRIENDS).map_err(err)?.get((viewer, target)).map_err(err)?.is_some();
                return Ok(UserView { profile, friends, relationships: None });
            }
            let (after, limit) = (query.after, query.limit);
            let mut relationships = Relationships::default();
            for list in query.lists {
                match list {
                    List::Friends => {
                        let table = txn.open_table(FRIENDS).map_err(err)?;
                        relationships.friends = Some(page_of(&table, target, after, limit, |id, _| id.to_string())?);
                    }
                    List::RequestsOut => {
                        let table = txn.open_table(REQUESTS_OUT).map_err(err)?;
                        relationships.outgoing = Some(page_of(&table, target, after, limit, |id, _| id.to_string())?);
                    }
                    List::RequestsIn => {
                        let table = txn.open_table(REQUESTS_IN).map_err(err)?;
                        let page = page_of(&table, target, after, limit, |from, message: &str| IncomingRequest {
                            from: from.to_string(),
                            message: (!message.is_empty()).then(|| message.to_string()),
                        })?;
                        relationships.incoming = Some(page);
                    }
                }
            }
            Ok(UserView { profile, friends: false, relationships: Some(relationships) })
        })
    }

    async fn profile(&self, user: &str) -> Result<Option<Value>, StoreError> {
        self.read(|db| read_profile(&db.begin_read().map_err(err)?, user))
    }

    async fn set_profile(&self, user: &str, profile: &Value) -> Result<(), StoreError> {
        let user = user.to_string();
        let bytes = serde_json::to_vec(profile).map_err(|e| StoreError(e.to_string()))?;
        self.write(move |txn| {
            let mut profiles = txn.open_table(PROFILES).map_err(err)?;
            profiles.insert(user.as_str(), bytes.as_slice()).map_err(err)?;
            Ok(())
        })
        .await
    }

    fn health(&self) -> StoreHealth {
        if self.inner.healthy.load(Ordering::Acquire) {
            return StoreHealth::ok();
        }
        let reason = self.inner.reason.lock().unwrap_or_else(PoisonError::into_inner).clone();
        StoreHealth { healthy: false, reason: reason.or_else(|| Some("store I/O error".into())) }
    }
}
