//! The single-node inbox, in the embedded store's file (one file to back
//! up, one recovery path: an I/O fault reopens it for both).
//!
//! Tables: `inbox_records` user -> `[u64 BE version][record JSON]`, and
//! `inbox_payloads` (user, id) -> payload bytes.
//!
//! Group commits: saves go through one channel to a committer task that
//! writes everything waiting (up to `inbox.max_commit_batch` operations)
//! in one write transaction, so a burst of durable pushes costs one disk
//! sync, not one per message. Only new messages need the sync before the
//! API answers; a transaction of acks, marks and positions alone commits
//! without one and reaches the disk with the next synced commit, or within
//! `LAZY_SYNC` (a crash before that replays the messages those acks were
//! for: at least once). Loads read committed data inline (MVCC).

use super::{InboxError, InboxStore, Loaded, Save};
use crate::store::EmbeddedStore;
use async_trait::async_trait;
use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use tokio::sync::{mpsc, oneshot};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("inbox_records");
const PAYLOADS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox_payloads");
/// (due unix ms, user, id): undelivered-message checks in due order.
const DUE: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("inbox_webhook_due");
/// (user, id) -> due unix ms: finds a check to move or remove it.
const DUE_BY_MESSAGE: TableDefinition<(&str, u64), u64> = TableDefinition::new("inbox_webhook_due_by_message");

/// Longest an ack or mark waits for a disk sync when no new message comes
/// to carry it there.
const LAZY_SYNC: std::time::Duration = std::time::Duration::from_secs(1);

/// Saves waiting for the committer beyond this wait for room (backpressure
/// on the API instead of unbounded memory).
const QUEUE_PER_BATCH: usize = 4;

/// One save, as the committer writes it.
struct Write {
    user: String,
    expected: u64,
    record: Vec<u8>,
    put: Option<(u64, Vec<u8>)>,
    drop: Vec<u64>,
    due: Option<u64>,
    durable: bool,
}

struct Op {
    write: Write,
    done: oneshot::Sender<Result<bool, InboxError>>,
}

pub struct EmbeddedInbox {
    store: EmbeddedStore,
    ops: mpsc::Sender<Op>,
    /// Bound on a write waiting for its commit (`inbox.write_timeout_ms`).
    timeout: std::time::Duration,
}

impl EmbeddedInbox {
    /// Starts the committer (a task on the current runtime; it ends when
    /// the inbox is dropped).
    pub fn start(store: EmbeddedStore, max_batch: usize, timeout: std::time::Duration) -> EmbeddedInbox {
        let max_batch = max_batch.max(1);
        let (ops, rx) = mpsc::channel(max_batch.saturating_mul(QUEUE_PER_BATCH));
        tokio::spawn(commit_loop(store.clone(), rx, max_batch));
        EmbeddedInbox { store, ops, timeout }
    }

    /// `write` within the timeout: a stalled disk is an error, not a hang
    /// (the write may still land later).
    async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, InboxError>>,
    ) -> Result<T, InboxError> {
        match tokio::time::timeout(self.timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(InboxError(format!("no commit within {} ms", self.timeout.as_millis()))),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> InboxError {
    InboxError(e.to_string())
}

fn version_of(value: &[u8]) -> u64 {
    value.first_chunk::<8>().map_or(0, |v| u64::from_be_bytes(*v))
}

/// Writes every waiting save in one transaction; answers each.
async fn commit_loop(store: EmbeddedStore, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let mut batch: Vec<Op> = Vec::with_capacity(max_batch);
    // Commits that skipped the disk sync since the last one that did not.
    let mut unsynced = false;
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, max_batch) => n,
            () = tokio::time::sleep(LAZY_SYNC), if unsynced => {
                // Acks and marks alone reach the disk within LAZY_SYNC.
                let synced = store.write_tables_with(true, |_| Ok(())).await;
                unsynced = synced.is_err();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let (writes, answers): (Vec<Write>, Vec<_>) = batch.drain(..).map(|op| (op.write, op.done)).unzip();
        let durable = writes.iter().any(|w| w.durable);
        let result = store
            .write_tables_with(durable, move |txn| {
                let mut records = txn.open_table(RECORDS)?;
                let mut payloads = txn.open_table(PAYLOADS)?;
                let mut due_at = txn.open_table(DUE)?;
                let mut due_by_message = txn.open_table(DUE_BY_MESSAGE)?;
                let mut saved = Vec::with_capacity(writes.len());
                for Write { user, expected, record, put, drop, due, .. } in writes {
                    let current = records.get(user.as_str())?.map_or(0, |v| version_of(v.value()));
                    if current != expected {
                        saved.push(false);
                        continue;
                    }
                    let mut value = Vec::with_capacity(8 + record.len());
                    value.extend_from_slice(&(expected + 1).to_be_bytes());
                    value.extend_from_slice(&record);
                    records.insert(user.as_str(), value.as_slice())?;
                    if let Some((id, payload)) = put {
                        payloads.insert((user.as_str(), id), payload.as_slice())?;
                        if let Some(due) = due {
                            due_at.insert((due, user.as_str(), id), ())?;
                            due_by_message.insert((user.as_str(), id), due)?;
                        }
                    }
                    for id in drop {
                        payloads.remove((user.as_str(), id))?;
                    }
                    saved.push(true);
                }
                Ok(saved)
            })
            .await;
        match (durable, result.is_ok()) {
            (true, true) => unsynced = false,
            (false, true) => unsynced = true,
            _ => {}
        }
        crate::metrics::get().inbox_healthy.set(if result.is_ok() { 1.0 } else { 0.0 });
        match result {
            Ok(saved) => {
                for (done, ok) in answers.into_iter().zip(saved) {
                    let _ = done.send(Ok(ok));
                }
            }
            Err(e) => {
                for done in answers {
                    let _ = done.send(Err(failed(&e)));
                }
            }
        }
    }
}

#[async_trait]
impl InboxStore for EmbeddedInbox {
    async fn load(&self, user: &str) -> Result<Loaded, InboxError> {
        self.store
            .read_tables(|db| {
                let txn = db.begin_read()?;
                let records = match txn.open_table(RECORDS) {
                    Ok(table) => table,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(Loaded { version: 0, record: None }),
                    Err(e) => return Err(e.into()),
                };
                Ok(match records.get(user)? {
                    Some(v) => {
                        let value = v.value();
                        Loaded { version: version_of(value), record: Some(value.get(8..).unwrap_or_default().to_vec()) }
                    }
                    None => Loaded { version: 0, record: None },
                })
            })
            .map_err(failed)
    }

    async fn save(&self, user: &str, save: Save<'_>) -> Result<bool, InboxError> {
        let (done, answer) = oneshot::channel();
        let write = Write {
            user: user.to_string(),
            expected: save.expected,
            record: save.record,
            put: save.put.map(|(id, p)| (id, p.to_vec())),
            drop: save.drop.to_vec(),
            due: save.due,
            durable: save.durable,
        };
        let op = Op { write, done };
        self.bounded(async {
            self.ops.send(op).await.map_err(|_| InboxError("the inbox committer stopped".into()))?;
            answer.await.map_err(|_| InboxError("the inbox committer stopped".into()))?
        })
        .await
    }

    async fn claim_due(&self, now: u64, lease_ms: u64, limit: usize) -> Result<Vec<super::Due>, InboxError> {
        // A read first: a write transaction (a disk sync) only when
        // something is due, not at every scan.
        let any_due = self
            .store
            .read_tables(|db| {
                let txn = db.begin_read()?;
                match txn.open_table(DUE) {
                    Ok(table) => Ok(table.first()?.is_some_and(|(key, _)| key.value().0 <= now)),
                    Err(TableError::TableDoesNotExist(_)) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .map_err(failed)?;
        if !any_due {
            return Ok(Vec::new());
        }
        let claim = self.store.write_tables(move |txn| {
            let mut due_at = txn.open_table(DUE)?;
            let mut due_by_message = txn.open_table(DUE_BY_MESSAGE)?;
            let claimed: Vec<(u64, String, u64)> = due_at
                .range::<(u64, &str, u64)>(..=(now, "\u{10FFFF}", u64::MAX))?
                .take(limit)
                .map(|entry| {
                    let (key, _) = entry?;
                    let (due, user, id) = key.value();
                    Ok((due, user.to_string(), id))
                })
                .collect::<Result<_, redb::Error>>()?;
            let until = now.saturating_add(lease_ms);
            for (due, user, id) in &claimed {
                due_at.remove((*due, user.as_str(), *id))?;
                due_at.insert((until, user.as_str(), *id), ())?;
                due_by_message.insert((user.as_str(), *id), until)?;
            }
            Ok(claimed.into_iter().map(|(_, user, id)| (user, id)).collect())
        });
        self.bounded(async { claim.await.map_err(failed) }).await
    }

    async fn reschedule(&self, user: &str, id: u64, at: Option<u64>) -> Result<(), InboxError> {
        let user = user.to_string();
        let write = self.store.write_tables(move |txn| {
            let mut due_at = txn.open_table(DUE)?;
            let mut due_by_message = txn.open_table(DUE_BY_MESSAGE)?;
            let old = due_by_message.remove((user.as_str(), id))?.map(|v| v.value());
            if let Some(old) = old {
                due_at.remove((old, user.as_str(), id))?;
            }
            if let Some(at) = at {
                due_at.insert((at, user.as_str(), id), ())?;
                due_by_message.insert((user.as_str(), id), at)?;
            }
            Ok(())
        });
        self.bounded(async { write.await.map_err(failed) }).await
    }

    async fn users_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, InboxError> {
        self.store
            .read_tables(|db| {
                let txn = db.begin_read()?;
                let records = match txn.open_table(RECORDS) {
                    Ok(table) => table,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let range = match after {
                    Some(after) => {
                        records.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))?
                    }
                    None => records.range::<&str>(..)?,
                };
                range.take(limit).map(|entry| Ok(entry?.0.value().to_string())).collect()
            })
            .map_err(failed)
    }

    async fn payloads(&self, user: &str, ids: &[u64]) -> Result<Vec<Option<Bytes>>, InboxError> {
        self.store
            .read_tables(|db| {
                let txn = db.begin_read()?;
                let table = match txn.open_table(PAYLOADS) {
                    Ok(table) => table,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; ids.len()]),
                    Err(e) => return Err(e.into()),
                };
                ids.iter().map(|id| Ok(table.get((user, *id))?.map(|v| Bytes::copy_from_slice(v.value())))).collect()
            })
            .map_err(failed)
    }
}
