//! The single-node store on redb: a pure-Rust, ACID, copy-on-write B-tree in
//! one file. Chosen over SQLite because our data is a handful of key ranges
//! (no queries that need SQL), it needs no C toolchain, and every commit is
//! crash-safe with fsync by default.

use super::{
    FriendOutcome, IncomingRequest, List, ListQuery, Page, Refusal, Relationships, Store, StoreError, UserView,
};
use crate::config::SocialConfig;
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::ops::Bound;
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

/// At most `limit` entries of `user`'s `(user, x)` keys after `after` (key
/// order), mapped by `map`: a range scan that starts at the cursor and reads
/// one entry past the page to learn whether more remain.
fn page_of<V: redb::Value + 'static, T>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    user: &str,
    after: Option<&str>,
    limit: usize,
    map: impl Fn(&str, V::SelfType<'_>) -> T,
) -> Result<Page<T>, StoreError> {
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
) -> Result<usize, StoreError> {
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
            let now = now_secs();
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

    // Reads run inline: a redb read transaction over cached pages takes
    // microseconds and never waits for writers (MVCC), so a blocking-pool
    // hop would cost more than it saves.
    async fn user_view(&self, viewer: &str, target: &str, query: ListQuery<'_>) -> Result<UserView, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
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
