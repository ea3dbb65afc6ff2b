//! The single-node store on redb: a pure-Rust, ACID, copy-on-write B-tree in
//! one file. Chosen over SQLite because our data is a handful of key ranges
//! (no queries that need SQL), it needs no C toolchain, and every commit is
//! crash-safe with fsync by default.

use super::{FriendOutcome, IncomingRequest, Relationships, Store, StoreError, UserView};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// user -> profile JSON.
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// (user, friend) -> since (unix seconds); stored in both directions.
const FRIENDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("friends");
/// (from, to) -> requested at (unix seconds).
const REQUESTS_OUT: TableDefinition<(&str, &str), u64> = TableDefinition::new("requests_out");
/// (to, from) -> message ("" when none).
const REQUESTS_IN: TableDefinition<(&str, &str), &str> = TableDefinition::new("requests_in");

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) `pushgate.redb` under `data_dir`.
    ///
    /// # Errors
    /// The directory cannot be created, or the file is locked by another
    /// process or corrupt.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join("pushgate.redb");
        let db = Database::create(&path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        // Create every table once so readers never meet a missing table.
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(PROFILES).map_err(err)?;
        txn.open_table(FRIENDS).map_err(err)?;
        txn.open_table(REQUESTS_OUT).map_err(err)?;
        txn.open_table(REQUESTS_IN).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Runs a write transaction off the async runtime: commits fsync, which
    /// must not stall the sessions sharing this worker thread.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(err)?;
            let out = f(&txn)?;
            txn.commit().map_err(err)?;
            Ok(out)
        })
        .await
        .map_err(err)?
    }
}

/// Second elements of every `(user, x)` key, in key order.
fn seconds_of<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    user: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for entry in table.range((user, "")..).map_err(err)? {
        let (key, _) = entry.map_err(err)?;
        let (first, second) = key.value();
        if first != user {
            break;
        }
        out.push(second.to_string());
    }
    Ok(out)
}

fn read_profile(txn: &redb::ReadTransaction, user: &str) -> Result<Option<Value>, StoreError> {
    let profiles = txn.open_table(PROFILES).map_err(err)?;
    match profiles.get(user).map_err(err)? {
        Some(bytes) => serde_json::from_slice(bytes.value()).map(Some).map_err(err),
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
    ) -> Result<FriendOutcome, StoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        let message = message.unwrap_or_default().to_string();
        self.write(move |txn| {
            let mut friends = txn.open_table(FRIENDS).map_err(err)?;
            if friends.get((from.as_str(), to.as_str())).map_err(err)?.is_some() {
                return Ok(FriendOutcome::AlreadyFriends);
            }
            let mut out = txn.open_table(REQUESTS_OUT).map_err(err)?;
            let mut inbox = txn.open_table(REQUESTS_IN).map_err(err)?;
            let now = now_secs();
            if out.remove((to.as_str(), from.as_str())).map_err(err)?.is_some() {
                inbox.remove((from.as_str(), to.as_str())).map_err(err)?;
                friends.insert((from.as_str(), to.as_str()), now).map_err(err)?;
                friends.insert((to.as_str(), from.as_str()), now).map_err(err)?;
                return Ok(FriendOutcome::BecameFriends);
            }
            if out.get((from.as_str(), to.as_str())).map_err(err)?.is_some() {
                return Ok(FriendOutcome::AlreadyRequested);
            }
            out.insert((from.as_str(), to.as_str()), now).map_err(err)?;
            inbox.insert((to.as_str(), from.as_str()), message.as_str()).map_err(err)?;
            Ok(FriendOutcome::Requested)
        })
        .await
    }

    // Reads run inline: a redb read transaction over cached pages takes
    // microseconds and never waits for writers (MVCC), so a blocking-pool
    // hop would cost more than it saves.
    async fn user_view(&self, viewer: &str, target: &str) -> Result<UserView, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let profile = read_profile(&txn, target)?;
        if viewer != target {
            let friends = txn.open_table(FRIENDS).map_err(err)?.get((viewer, target)).map_err(err)?.is_some();
            return Ok(UserView { profile, friends, relationships: None });
        }
        let friends = seconds_of(&txn.open_table(FRIENDS).map_err(err)?, target)?;
        let outgoing = seconds_of(&txn.open_table(REQUESTS_OUT).map_err(err)?, target)?;
        let inbox = txn.open_table(REQUESTS_IN).map_err(err)?;
        let mut incoming = Vec::new();
        for entry in inbox.range((target, "")..).map_err(err)? {
            let (key, message) = entry.map_err(err)?;
            let (to, from) = key.value();
            if to != target {
                break;
            }
            let message = message.value();
            incoming.push(IncomingRequest {
                from: from.to_string(),
                message: (!message.is_empty()).then(|| message.to_string()),
            });
        }
        let relationships = Some(Relationships { friends, incoming, outgoing });
        Ok(UserView { profile, friends: false, relationships })
    }

    async fn profile(&self, user: &str) -> Result<Option<Value>, StoreError> {
        read_profile(&self.db.begin_read().map_err(err)?, user)
    }

    async fn set_profile(&self, user: &str, profile: &Value) -> Result<(), StoreError> {
        let user = user.to_string();
        let bytes = serde_json::to_vec(profile).map_err(err)?;
        self.write(move |txn| {
            let mut profiles = txn.open_table(PROFILES).map_err(err)?;
            profiles.insert(user.as_str(), bytes.as_slice()).map_err(err)?;
            Ok(())
        })
        .await
    }
}
