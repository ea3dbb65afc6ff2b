//! Durable delivery: per-user inboxes of messages with ids, per-device
//! positions, and replay (proto-spec/README.md section 8).
//!
//! - `model.rs`: one user's inbox as data and every rule (ids, acks,
//!   collapse, ttl, bounds, gaps, idempotency), shared by all backends.
//! - [`InboxStore`]: the seam to storage. A store only loads and saves a
//!   user's record (compare-and-set on a version) and keeps payloads beside
//!   it: `log/` (an append-only log with group commits) for one node,
//!   `redis_inbox.rs` for a cluster.
//! - [`Inbox`]: runs the rules against a store. Operations on one user are
//!   serialized in-process by a striped lock (so they rarely conflict), and
//!   retried on a version conflict (another node wrote meanwhile).

mod cache;
mod log;
mod marks;
pub mod model;
mod redis_inbox;
pub mod status;
mod sweep;

pub use log::{Closed, EmbeddedInbox, LogOptions};
pub use marks::flush_marks_forever;
pub use model::{AckMode, Appended, NewMessage, Position, Resumed};
pub use redis_inbox::RedisInbox;
pub use sweep::sweep_forever;

use crate::config::InboxConfig;
use async_trait::async_trait;
use bytes::Bytes;
use model::{BadAck, Effects, Limits, UserInbox};
use std::sync::Arc;

/// The device of a session whose token names none (proto-spec section 8).
pub const DEFAULT_DEVICE: &str = "default";

/// Why an inbox operation failed (the storage failed or timed out).
#[derive(Debug, Clone)]
pub struct InboxError(pub String);

impl std::fmt::Display for InboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inbox: {}", self.0)
    }
}

impl std::error::Error for InboxError {}

/// Why an ack was not applied.
#[derive(Debug)]
pub enum AckError {
    /// The ack itself is wrong (ERROR `bad_payload`); nothing changed.
    Bad(String),
    /// Storage failed (ERROR `internal`); ack again later.
    Failed(InboxError),
}

impl From<InboxError> for AckError {
    fn from(e: InboxError) -> Self {
        AckError::Failed(e)
    }
}

/// One saved version of a user's record: `version` 0 means none yet.
pub struct Loaded {
    pub version: u64,
    pub record: Option<Vec<u8>>,
}

/// What [`InboxStore::save`] writes, all at once.
pub struct Save<'a> {
    /// The version loaded; the save fails (Ok(false)) if it changed.
    pub expected: u64,
    /// The new record. Records are never deleted: a version that went
    /// back to 0 could let a stale save through.
    pub record: &'a [u8],
    /// New messages' payloads.
    pub put: Vec<(u64, &'a [u8])>,
    /// Payloads no longer needed.
    pub drop: &'a [u64],
    /// Schedule the undelivered-message check of each new message at this
    /// unix ms (with the record, so a saved message always has it).
    pub due: Option<u64>,
    /// Finished (retired, collapsed) messages leaving the record: (id,
    /// metadata JSON), kept apart for the status endpoint and the webhook.
    pub finished: Vec<(u64, Vec<u8>)>,
    /// How many finished messages the user keeps apart (the oldest go).
    pub keep_finished: usize,
}

/// Resolves once a save is on disk (bounded in time by the store). A new
/// message is delivered live as soon as it is written and answered as
/// stored only once this resolves (proto-spec section 8 "Durability").
pub type Durability = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), InboxError>> + Send>>;

/// A [`Durability`] with nothing to wait for.
pub fn on_disk() -> Durability {
    Box::pin(std::future::ready(Ok(())))
}

/// A message whose undelivered-message check is due: (user, id).
pub type Due = (String, u64);

/// Storage of inbox records and payloads. Every call is bounded in time
/// by the implementation (an error, never a hang).
#[async_trait]
pub trait InboxStore: Send + Sync {
    async fn load(&self, user: &str) -> Result<Loaded, InboxError>;
    /// Writes the save (not waiting for a disk sync: [`Self::written`]);
    /// Ok(false) when the record's version is no longer `save.expected`.
    async fn save(&self, user: &str, save: Save<'_>) -> Result<bool, InboxError>;
    /// Resolves once everything written for `user` so far is on disk: new
    /// messages are answered as stored only then (an idempotent repeat
    /// too: its original may still be on its way).
    fn written(&self, _user: &str) -> Durability {
        on_disk()
    }
    /// New ids must be at least this (the embedded log raises it after an
    /// unclean stop, so an id a device may have seen is never reused).
    fn id_floor(&self) -> u64 {
        0
    }
    /// A finished message kept apart (its metadata JSON), if still kept.
    async fn finished(&self, user: &str, id: u64) -> Result<Option<Vec<u8>>, InboxError>;
    /// The payloads of `ids` (None for one that is gone).
    async fn payloads(&self, user: &str, ids: &[u64]) -> Result<Vec<Option<Bytes>>, InboxError>;
    /// Takes up to `limit` due checks (due at or before `now`) and pushes
    /// each to `now + lease_ms`: exactly one caller gets each, and one
    /// whose taker died comes back once the lease passes.
    async fn claim_due(&self, now: u64, lease_ms: u64, limit: usize) -> Result<Vec<Due>, InboxError>;
    /// Moves a due check to `at` (a retry) or, with None, removes it.
    async fn reschedule(&self, user: &str, id: u64, at: Option<u64>) -> Result<(), InboxError>;
    /// The version of the user's record when the store knows it without
    /// reading (None: it cannot tell, e.g. other nodes write it too).
    fn version_now(&self, _user: &str) -> Option<u64> {
        None
    }
    /// Up to `limit` users with a record, in order, after `after`: for the
    /// sweep of expired messages. A storage whose records expire by
    /// themselves (Redis) has nothing to sweep and lists none.
    async fn users_after(&self, _after: Option<&str>, _limit: usize) -> Result<Vec<String>, InboxError> {
        Ok(Vec::new())
    }
}

/// One replay page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Stored>,
    /// Where the next page starts; None: nothing was pending after `after`.
    pub next_after: Option<u64>,
    /// The user's last id when the page was read: every id up to it was
    /// either pending (and in this or an earlier page) or not for this
    /// device any more.
    pub last_id: u64,
}

/// One message to send: id, inner action, inner payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: u64,
    pub action: u32,
    pub payload: Bytes,
}

/// Conflicting saves retried before giving up (another node kept writing
/// the same user's record).
const MAX_ATTEMPTS: u32 = 32;
/// The longest random pause between two attempts: contenders that retried
/// in step would conflict again.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);
/// In-process locks, by hash of the user id.
const STRIPES: usize = 256;

pub struct Inbox {
    store: Arc<dyn InboxStore>,
    limits: Limits,
    replay_page: usize,
    locks: Box<[tokio::sync::Mutex<()>]>,
    /// `webhook.delay_ms` when the undelivered webhook is on: each new
    /// message gets its check scheduled this long after it is stored.
    webhook_delay_ms: Option<u64>,
    /// "Written" marks waiting for the user's next write.
    marks: Arc<marks::Waiting>,
    /// Recently written users' records, decoded (cache.rs).
    records: cache::Records,
}

impl Inbox {
    pub fn new(store: Arc<dyn InboxStore>, config: &InboxConfig) -> Inbox {
        Inbox {
            store,
            limits: Limits {
                max_messages: config.max_messages,
                max_tombstones: config.max_tombstones,
                max_age_ms: config.max_age_secs.saturating_mul(1000),
                idempotency_window_ms: config.idempotency_window_secs.saturating_mul(1000),
                max_devices: config.max_devices,
                id_floor: 0,
            },
            replay_page: config.replay_page,
            locks: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            webhook_delay_ms: None,
            marks: Arc::default(),
            records: cache::Records::new(config.record_cache_users),
        }
    }

    /// Schedules the undelivered-message check of every new message
    /// `delay_ms` after it is stored.
    #[must_use]
    pub fn with_webhook_delay(mut self, delay_ms: u64) -> Inbox {
        self.webhook_delay_ms = Some(delay_ms);
        self
    }

    /// The storage, for the webhook sender's scheduling calls.
    pub fn store(&self) -> &Arc<dyn InboxStore> {
        &self.store
    }

    pub fn replay_page(&self) -> usize {
        self.replay_page
    }

    /// The configured bounds, with the store's id floor.
    fn limits(&self) -> Limits {
        Limits { id_floor: self.store.id_floor(), ..self.limits }
    }

    /// Stores a durable message for `user` (before anyone is sent it).
    ///
    /// # Errors
    /// Storage failed: nothing was stored.
    pub async fn append(&self, user: &str, new: &NewMessage, payload: &[u8]) -> Result<Appended, InboxError> {
        let appended = self.append_many(user, &[(new, payload)]).await?;
        appended.into_iter().next().ok_or_else(|| InboxError("no message appended".into()))
    }

    /// Stores several durable messages for `user`, in order, with one save
    /// (one disk sync): a burst to one user costs one write, not one each.
    /// Returns once they are on disk.
    ///
    /// # Errors
    /// Storage failed: none was stored.
    pub async fn append_many(
        &self,
        user: &str,
        messages: &[(&NewMessage, &[u8])],
    ) -> Result<Vec<Appended>, InboxError> {
        let (appended, durability) = self.write_many(user, messages).await?;
        durability.await?;
        Ok(appended)
    }

    /// [`Self::append_many`], returning as soon as the messages are
    /// written (readable, and kept by a crash of the process) with what
    /// resolves once they are on disk: they may be delivered live
    /// meanwhile, and answered as stored only after (an id a device saw
    /// that a power cut took back is never given again: `id_floor`).
    ///
    /// # Errors
    /// Storage failed: none was stored.
    pub async fn write_many(
        &self,
        user: &str,
        messages: &[(&NewMessage, &[u8])],
    ) -> Result<(Vec<Appended>, Durability), InboxError> {
        let now = crate::clock::unix_ms();
        let limits = self.limits();
        let append = |inbox: &mut UserInbox, fx: &mut Effects| {
            Ok::<_, InboxError>(messages.iter().map(|(new, _)| inbox.append(new, now, &limits, fx)).collect::<Vec<_>>())
        };
        let payloads = |appended: &Vec<Appended>| {
            let fresh = appended.iter().zip(messages).filter(|(a, _)| !a.duplicate);
            fresh.map(|(a, (_, payload))| (a.id, *payload)).collect()
        };
        let appended = self.mutate(user, append, payloads, None).await?;
        Ok((appended, self.store.written(user)))
    }

    /// A device connects with `resume` (and maybe `since`).
    ///
    /// # Errors
    /// `since` above the last id, or storage failed.
    pub async fn resume(&self, user: &str, device: &str, since: Option<u64>) -> Result<Resumed, AckError> {
        let now = crate::clock::unix_ms();
        let limits = self.limits();
        let resume =
            |inbox: &mut UserInbox, fx: &mut Effects| inbox.resume(device, since, now, &limits, fx).map_err(bad);
        self.mutate(user, resume, none, None).await
    }

    /// Records a device's acks.
    ///
    /// # Errors
    /// An id above the last one, or storage failed.
    pub async fn ack(&self, user: &str, device: &str, upto: Option<u64>, ids: &[u64]) -> Result<Position, AckError> {
        let now = crate::clock::unix_ms();
        let limits = self.limits();
        let ack = |inbox: &mut UserInbox, fx: &mut Effects| inbox.ack(device, upto, ids, now, &limits, fx).map_err(bad);
        let position = self.mutate(user, ack, none, None).await?;
        crate::metrics::get().inbox_acks.increment(1);
        Ok(position)
    }

    /// The "written" marks waiting to ride on the next write (marks.rs).
    pub fn waiting_marks(&self) -> &Arc<marks::Waiting> {
        &self.marks
    }

    /// Writes `user`'s waiting marks now (when no other write came).
    ///
    /// # Errors
    /// Storage failed (the marks are lost; nothing else is).
    pub async fn flush_marks(&self, user: &str) -> Result<(), InboxError> {
        self.mutate(user, |_: &mut UserInbox, _: &mut Effects| Ok::<_, InboxError>(()), none, None).await
    }

    /// Records the outcome of a webhook attempt on message `id`.
    ///
    /// # Errors
    /// Storage failed.
    pub async fn record_webhook(&self, user: &str, id: u64, webhook: model::Webhook) -> Result<(), InboxError> {
        let record = |inbox: &mut UserInbox, _: &mut Effects| {
            inbox.record_webhook(id, webhook.clone());
            Ok::<_, InboxError>(())
        };
        // A message acked meanwhile is kept apart: brought back to update.
        self.mutate(user, record, none, Some(id)).await
    }

    /// The next messages pending for `device` after id `after`, in order,
    /// at most one replay page.
    ///
    /// # Errors
    /// Storage failed.
    pub async fn page(&self, user: &str, device: &str, after: u64) -> Result<Page, InboxError> {
        let Some(inbox) = self.read(user).await? else {
            return Ok(Page { messages: Vec::new(), next_after: None, last_id: 0 });
        };
        let ids = inbox.pending(device, after, self.replay_page, crate::clock::unix_ms());
        let next_after = ids.last().copied();
        let payloads = match ids.is_empty() {
            true => Vec::new(),
            false => self.store.payloads(user, &ids).await?,
        };
        let messages = ids
            .into_iter()
            .zip(payloads)
            .filter_map(|(id, payload)| {
                // Gone since the record was read (collapsed, acked elsewhere).
                Some(Stored { id, action: inbox.messages.get(&id)?.action, payload: payload? })
            })
            .collect();
        Ok(Page { messages, next_after, last_id: inbox.last_id })
    }

    /// Expires what is due in the inboxes of up to `limit` users after
    /// `after`; returns the last user looked at (None: the sweep is done).
    /// Users nobody connects to or pushes to would otherwise keep expired
    /// payloads in storage forever.
    ///
    /// # Errors
    /// Storage failed.
    pub async fn sweep(&self, after: Option<&str>, limit: usize) -> Result<Option<String>, InboxError> {
        let users = self.store.users_after(after, limit).await?;
        let now = crate::clock::unix_ms();
        for user in &users {
            let expire = |inbox: &mut UserInbox, fx: &mut Effects| {
                inbox.expire(now, fx);
                Ok::<_, InboxError>(())
            };
            self.mutate(user, expire, none, None).await?;
        }
        Ok(if users.len() < limit { None } else { users.last().cloned() })
    }

    /// The user's record as it is (None: nothing stored): held messages,
    /// evicted and expired ones, positions.
    ///
    /// # Errors
    /// Storage failed, or the record does not parse.
    pub async fn read(&self, user: &str) -> Result<Option<UserInbox>, InboxError> {
        self.store.load(user).await?.record.as_deref().map(decode).transpose()
    }

    /// [`Self::read`], with message `id` brought back if it finished and is
    /// kept apart: everything about that one message.
    ///
    /// # Errors
    /// Storage failed, or a record does not parse.
    pub async fn read_message(&self, user: &str, id: u64) -> Result<Option<UserInbox>, InboxError> {
        let Some(mut inbox) = self.read(user).await? else {
            return Ok(None);
        };
        self.pull(user, id, &mut inbox).await?;
        Ok(Some(inbox))
    }

    /// Brings finished message `id` back into `inbox` (if kept apart).
    /// Returns the status brought back, encoded (None: nothing was).
    async fn pull(&self, user: &str, id: u64, inbox: &mut UserInbox) -> Result<Option<Vec<u8>>, InboxError> {
        if !inbox.messages.contains_key(&id)
            && let Some(meta) = self.store.finished(user, id).await?
        {
            let meta: model::Meta =
                serde_json::from_slice(&meta).map_err(|e| InboxError(format!("a damaged message status: {e}")))?;
            let encoded = encode_meta(&meta);
            inbox.restore(id, meta);
            return Ok(Some(encoded));
        }
        Ok(None)
    }

    /// Load, apply `change`, save; retried on a version conflict.
    /// `payloads` picks from the result the new messages' payloads to
    /// store; finished message `pull` is brought back first (to update it).
    async fn mutate<'p, T, E>(
        &self,
        user: &str,
        change: impl Fn(&mut UserInbox, &mut Effects) -> Result<T, E>,
        payloads: impl Fn(&T) -> Vec<(u64, &'p [u8])>,
        pull: Option<u64>,
    ) -> Result<T, E>
    where
        E: From<InboxError>,
    {
        let _serial = self.locks[stripe(user)].lock().await;
        // Waiting "written" marks ride on this write (marks.rs).
        let marks = self.marks.take(user);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                let ceiling = (std::time::Duration::from_micros(100) * 2u32.pow(attempt.min(8))).min(MAX_BACKOFF);
                tokio::time::sleep(ceiling.mul_f64(rand::random::<f64>())).await;
            }
            let cached = self.store.version_now(user).and_then(|v| Some((v, self.records.take(user, v)?)));
            // The record as stored, decoded and encoded: a change is seen by
            // comparing the new encoding (needed to save anyway), not by a
            // deep copy kept for comparison.
            let (version, mut inbox, stored) = match cached {
                Some((version, (inbox, stored))) => (version, inbox, stored),
                None => {
                    let loaded = self.store.load(user).await?;
                    let inbox = loaded.record.as_deref().map(decode).transpose()?.unwrap_or_default();
                    // Encoded again, not the bytes read: a record written
                    // by an older version (fewer fields) is not a change.
                    let stored = encode(&inbox, loaded.record.as_deref().unwrap_or_default());
                    (loaded.version, inbox, stored)
                }
            };
            let pulled = match pull {
                Some(id) => self.pull(user, id, &mut inbox).await?.map(|meta| (id, meta)),
                None => None,
            };
            for (device, id, at) in &marks {
                inbox.mark_written(marks::device(device), *id, *at);
            }
            let mut fx = Effects::default();
            let out = change(&mut inbox, &mut fx)?;
            let put = payloads(&out);
            let mut finished: Vec<(u64, Vec<u8>)> =
                inbox.take_finished().into_iter().map(|(id, meta)| (id, encode_meta(&meta))).collect();
            // A status brought back and left as it was is not written again.
            finished.retain(|status| pulled.as_ref() != Some(status));
            let record = encode(&inbox, &stored);
            if record == stored && put.is_empty() && finished.is_empty() {
                if pull.is_none() {
                    // Unchanged: still the saved record (a pulled message
                    // is not part of it).
                    self.records.put(user, version, inbox, stored);
                }
                return Ok(out);
            }
            let due = self.webhook_delay_ms.filter(|_| !put.is_empty());
            let due = due.map(|delay| crate::clock::unix_ms().saturating_add(delay));
            let save = Save {
                expected: version,
                record: &record,
                put,
                drop: &fx.dropped,
                due,
                finished,
                keep_finished: self.limits.max_tombstones,
            };
            if self.store.save(user, save).await? {
                count(&fx);
                self.records.put(user, version + 1, inbox, record);
                return Ok(out);
            }
        }
        Err(InboxError(format!("the inbox of {user:?} kept changing under {MAX_ATTEMPTS} attempts")).into())
    }
}

/// No new messages (every operation but an append).
fn none<T>(_: &T) -> Vec<(u64, &'static [u8])> {
    Vec::new()
}

fn bad(e: BadAck) -> AckError {
    AckError::Bad(e.0)
}

fn stripe(user: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let hasher: BuildHasherDefault<std::collections::hash_map::DefaultHasher> = BuildHasherDefault::default();
    (hasher.hash_one(user) as usize) % STRIPES
}

fn decode(bytes: &[u8]) -> Result<UserInbox, InboxError> {
    serde_json::from_slice(bytes).map_err(|e| InboxError(format!("a damaged inbox record: {e}")))
}

/// The record's bytes, into a buffer the size of `like` (the record
/// before) with room for one more message's metadata (a push adds one):
/// one allocation instead of a growth step per doubling.
fn encode(inbox: &UserInbox, like: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(like.len() + like.len() / 4 + META_BYTES);
    // Plain data (maps of strings and numbers): serializing cannot fail.
    serde_json::to_writer(&mut out, inbox).map(|()| out).unwrap_or_default()
}

/// A finished message's status. Sized for a typical one (its fields, a
/// device or two acked and written): grown from empty it took five
/// reallocations, one per doubling, on every ack that retired a message.
fn encode_meta(meta: &model::Meta) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_BYTES);
    serde_json::to_writer(&mut out, meta).map(|()| out).unwrap_or_default()
}

/// One message's metadata as JSON, bytes, typically: a finished status
/// ([`encode_meta`]), or what a new message adds to a record ([`encode`]).
const META_BYTES: usize = 256;

fn count(fx: &Effects) {
    let m = crate::metrics::get();
    m.inbox_evicted.increment(fx.evicted);
    m.inbox_expired.increment(fx.expired);
    m.inbox_collapsed.increment(fx.collapsed);
}
