//! The cluster store on Redis: every node reads and writes the same
//! friendships, requests and profiles, with the embedded store's semantics
//! (same outcomes, bounds, refusals and paging order).
//!
//! Keys (no expiry: persistent data; `{user}` is a Redis Cluster hash tag so
//! one user's keys share a slot):
//! - `pg:{user}:profile`: string, the profile JSON.
//! - `pg:{user}:friends`: sorted set, every score 0, members = friend ids.
//! - `pg:{user}:req_out`: sorted set (score 0), ids `user` asked.
//! - `pg:{user}:req_in`: sorted set (score 0), ids that asked `user`.
//! - `pg:{user}:req_in_msg`: hash, asker id -> message (only non-empty ones).
//!
//! With every score 0 a sorted set orders its members by bytes, so paging is
//! `ZRANGEBYLEX key (after + LIMIT 0 limit+1` (the extra entry tells `more`)
//! and counts are `ZCARD` (O(1)).
//!
//! Atomicity: a friend request's check-then-write is one Lua script (the
//! bounds passed as arguments); a removal is one MULTI/EXEC; the FETCH_INFO
//! read of your own lists is one read-only script, so it sees one snapshot.
//! A friend pair touches both users' keys, which is fine on the single Redis
//! we support; on Redis Cluster the two users' keys live in different slots
//! (CROSSSLOT), so the pair scripts would have to be split per user.
//!
//! Client: redis-rs's `ConnectionManager` (one multiplexed connection that
//! reconnects by itself). Every call is bounded by `[cluster] timeout_ms`: a
//! failure or timeout is a [`StoreError`] (never a hang) and turns the store
//! unhealthy with the reason; the next call that succeeds makes it healthy,
//! and so does a background PING every 250 ms while unhealthy (a node that
//! is not ready may get no calls at all).

use super::{
    FriendOutcome, IncomingRequest, List, ListQuery, Page, Refusal, Relationships, Store, StoreError, StoreHealth,
    UserView,
};
use crate::config::SocialConfig;
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// How often an unhealthy store PINGs Redis to learn it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The friend request, checked and written at once. Mirrors
/// `EmbeddedStore::add_friend_request` step by step.
///
/// KEYS: 1 from:friends, 2 from:req_out, 3 from:req_in, 4 from:req_in_msg,
///       5 to:friends, 6 to:req_out, 7 to:req_in, 8 to:req_in_msg
/// ARGV: 1 from, 2 to, 3 message ("" = none), 4 max_friends,
///       5 max_requests_out, 6 max_requests_in
/// Returns a code (see `outcome`).
const ADD_FRIEND_REQUEST: &str = r"
local from, to, message = ARGV[1], ARGV[2], ARGV[3]
local max_friends = tonumber(ARGV[4])
local max_out = tonumber(ARGV[5])
local max_in = tonumber(ARGV[6])
if redis.call('ZSCORE', KEYS[1], to) then
  return 3
end
if redis.call('ZSCORE', KEYS[6], from) then
  if redis.call('ZCARD', KEYS[1]) >= max_friends then
    return 6
  end
  if redis.call('ZCARD', KEYS[5]) >= max_friends then
    return 7
  end
  redis.call('ZREM', KEYS[6], from)
  redis.call('ZREM', KEYS[3], to)
  redis.call('HDEL', KEYS[4], to)
  redis.call('ZADD', KEYS[1], 0, to)
  redis.call('ZADD', KEYS[5], 0, from)
  return 2
end
if redis.call('ZSCORE', KEYS[2], to) then
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= max_friends then
  return 6
end
if redis.call('ZCARD', KEYS[2]) >= max_out then
  return 4
end
if redis.call('ZCARD', KEYS[7]) >= max_in then
  return 5
end
redis.call('ZADD', KEYS[2], 0, to)
redis.call('ZADD', KEYS[7], 0, from)
if message ~= '' then
  redis.call('HSET', KEYS[8], from, message)
end
return 0
";

/// The FETCH_INFO read of your own lists, from one snapshot.
///
/// KEYS: 1 profile, 2 friends, 3 req_out, 4 req_in, 5 req_in_msg
/// ARGV: 1 lex min ("-" or "(after"), 2 count (limit + 1),
///       3..5 "1"/"0": whether friends, outgoing, incoming are asked for
/// Returns {profile or false, friends, outgoing, incoming ids, messages}
/// (an empty list for a list not asked for; messages "" when none).
const SELF_VIEW: &str = r"
local profile = redis.call('GET', KEYS[1])
local function page(key, wanted)
  if wanted ~= '1' then
    return {}
  end
  return redis.call('ZRANGEBYLEX', key, ARGV[1], '+', 'LIMIT', 0, ARGV[2])
end
local friends = page(KEYS[2], ARGV[3])
local outgoing = page(KEYS[3], ARGV[4])
local incoming = page(KEYS[4], ARGV[5])
local messages = {}
for i = 1, #incoming do
  messages[i] = redis.call('HGET', KEYS[5], incoming[i]) or ''
end
return {profile, friends, outgoing, incoming, messages}
";

/// The Redis keys of one user.
fn key(user: &str, what: &str) -> String {
    format!("pg:{{{user}}}:{what}")
}

fn outcome(code: i64) -> Result<FriendOutcome, StoreError> {
    Ok(match code {
        0 => FriendOutcome::Requested,
        1 => FriendOutcome::AlreadyRequested,
        2 => FriendOutcome::BecameFriends,
        3 => FriendOutcome::AlreadyFriends,
        4 => FriendOutcome::Refused(Refusal::TooManyRequestsOut),
        5 => FriendOutcome::Refused(Refusal::InboxFull),
        6 => FriendOutcome::Refused(Refusal::TooManyFriends),
        7 => FriendOutcome::Refused(Refusal::TheirFriendsFull),
        other => return Err(StoreError(format!("redis: unexpected friend request result {other}"))),
    })
}

/// `limit` entries plus one (to learn `more`), as the decimal Redis reads;
/// capped so it stays a valid LIMIT count.
fn count_arg(limit: usize) -> String {
    (limit.min(i64::MAX as usize - 1) + 1).to_string()
}

/// The first `limit` of `ids` (read `limit + 1`), and whether more remain.
fn page_of<T>(mut items: Vec<T>, limit: usize) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    Page { items, more }
}

fn parse_profile(bytes: Option<Vec<u8>>) -> Result<Option<Value>, StoreError> {
    match bytes {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError(format!("redis: bad profile JSON: {e}")))
        }
        None => Ok(None),
    }
}

struct Health {
    healthy: AtomicBool,
    reason: Mutex<Option<String>>,
    /// A probe task is running (at most one).
    probing: AtomicBool,
    /// The URL without credentials, for messages.
    target: String,
}

impl Health {
    fn failed(&self, message: &str) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(error = %message, "store: redis failing");
        }
        crate::metrics::get().store_healthy.set(0.0);
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!("{message}; reconnecting"));
    }

    fn succeeded(&self) {
        if !self.healthy.load(Ordering::Acquire) {
            *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = None;
            if !self.healthy.swap(true, Ordering::AcqRel) {
                crate::metrics::get().store_healthy.set(1.0);
                tracing::info!(redis = %self.target, "store: redis answering again; healthy");
            }
        }
    }
}

/// PINGs every `PROBE_INTERVAL` while the store is unhealthy, so it turns
/// healthy again without traffic (a node that is not ready may get none).
/// Ends once healthy, or once the store is dropped.
async fn probe(mut conn: ConnectionManager, health: Weak<Health>, timeout: Duration) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        if health.healthy.load(Ordering::Acquire) {
            health.probing.store(false, Ordering::Release);
            return;
        }
        let ping = redis::cmd("PING");
        match tokio::time::timeout(timeout, ping.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                health.succeeded();
                health.probing.store(false, Ordering::Release);
                return;
            }
            Ok(Err(e)) => health.failed(&format!("redis {}: probe failed: {e}", health.target)),
            Err(_) => health.failed(&format!(
                "redis {}: probe got no answer within {} ms",
                health.target,
                timeout.as_millis()
            )),
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    /// The URL without credentials, for messages.
    target: String,
    add_script: Arc<redis::Script>,
    view_script: Arc<redis::Script>,
    health: Arc<Health>,
}

impl RedisStore {
    /// Opens the store on `url` (`redis://host:port/db`) without requiring
    /// Redis to answer: a node starts and serves its own sessions while
    /// Redis is down (an outage at startup is the same outage as later).
    /// It PINGs once, within `timeout`; without an answer the store starts
    /// unhealthy and heals by itself (`PROBE_INTERVAL`). Every later call
    /// is bounded by `timeout`.
    ///
    /// # Errors
    /// A malformed URL.
    pub async fn open(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let target = crate::redis_link::redact(url);
        let conn = crate::redis_link::lazy(url, timeout).map_err(StoreError)?;
        crate::metrics::get().store_healthy.set(1.0);
        let store = RedisStore {
            conn,
            timeout,
            target: target.clone(),
            add_script: Arc::new(redis::Script::new(ADD_FRIEND_REQUEST)),
            view_script: Arc::new(redis::Script::new(SELF_VIEW)),
            health: Arc::new(Health {
                healthy: AtomicBool::new(true),
                reason: Mutex::new(None),
                probing: AtomicBool::new(false),
                target,
            }),
        };
        if let Err(e) =
            store.call("connect", |mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await }).await
        {
            tracing::warn!(error = %e, "store: starting without redis; store calls fail until it answers");
        }
        Ok(store)
    }

    /// [`Self::open`], then fails unless Redis answered (tools and tests
    /// that have nothing to serve without it).
    ///
    /// # Errors
    /// A malformed URL, or Redis not answering within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let store = RedisStore::open(url, timeout).await?;
        let failure = store.health.reason.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match failure {
            Some(reason) => Err(StoreError(reason)),
            None => Ok(store),
        }
    }

    /// Runs one Redis exchange within the timeout, keeping health current.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (kind, message) = match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                return Ok(value);
            }
            Ok(Err(e)) => ("redis", format!("redis {}: {what} failed: {e}", self.target)),
            Err(_) => (
                "timeout",
                format!("redis {}: {what} got no answer within {} ms", self.target, self.timeout.as_millis()),
            ),
        };
        crate::metrics::store_error(kind);
        self.health.failed(&message);
        if !self.health.probing.swap(true, Ordering::AcqRel) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(probe(self.conn.clone(), Arc::downgrade(&self.health), self.timeout));
                }
                Err(_) => self.health.probing.store(false, Ordering::Release),
            }
        }
        Err(StoreError(message))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn add_friend_request(
        &self,
        from: &str,
        to: &str,
        message: Option<&str>,
        limits: SocialConfig,
    ) -> Result<FriendOutcome, StoreError> {
        let mut invocation = self.add_script.prepare_invoke();
        for user in [from, to] {
            for what in ["friends", "req_out", "req_in", "req_in_msg"] {
                invocation.key(key(user, what));
            }
        }
        invocation
            .arg(from)
            .arg(to)
            .arg(message.unwrap_or_default())
            .arg(limits.max_friends)
            .arg(limits.max_requests_out)
            .arg(limits.max_requests_in);
        let code: i64 =
            self.call("friend request", |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        outcome(code)
    }

    async fn remove_friend_request(&self, from: &str, to: &str) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(key(from, "req_out"), to)
            .zrem(key(to, "req_in"), from)
            .hdel(key(to, "req_in_msg"), from)
            .ignore();
        let (was_out, was_in): (i64, i64) =
            self.call("request removal", |mut conn| async move { pipe.query_async(&mut conn).await }).await?;
        Ok(was_out > 0 || was_in > 0)
    }

    async fn user_view(&self, viewer: &str, target: &str, query: ListQuery<'_>) -> Result<UserView, StoreError> {
        if viewer != target {
            let mut pipe = redis::pipe();
            pipe.atomic().get(key(target, "profile")).zscore(key(viewer, "friends"), target);
            let (profile, score): (Option<Vec<u8>>, Option<f64>) =
                self.call("user view", |mut conn| async move { pipe.query_async(&mut conn).await }).await?;
            return Ok(UserView { profile: parse_profile(profile)?, friends: score.is_some(), relationships: None });
        }
        let min = match query.after {
            Some(after) if !after.is_empty() => format!("({after}"),
            _ => "-".to_string(),
        };
        let wants = |list: List| if query.lists.contains(&list) { "1" } else { "0" };
        let mut invocation = self.view_script.prepare_invoke();
        for what in ["profile", "friends", "req_out", "req_in", "req_in_msg"] {
            invocation.key(key(target, what));
        }
        invocation
            .arg(min)
            .arg(count_arg(query.limit))
            .arg(wants(List::Friends))
            .arg(wants(List::RequestsOut))
            .arg(wants(List::RequestsIn));
        type View = (Option<Vec<u8>>, Vec<String>, Vec<String>, Vec<String>, Vec<String>);
        let (profile, friends, outgoing, incoming, messages): View =
            self.call("user view", |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        let limit = query.limit;
        let mut relationships = Relationships::default();
        for list in query.lists {
            match list {
                List::Friends => relationships.friends = Some(page_of(friends.clone(), limit)),
                List::RequestsOut => relationships.outgoing = Some(page_of(outgoing.clone(), limit)),
                List::RequestsIn => {
                    let items = incoming
                        .iter()
                        .zip(messages.iter().map(String::as_str).chain(std::iter::repeat("")))
                        .map(|(from, message)| IncomingRequest {
                            from: from.clone(),
                            message: (!message.is_empty()).then(|| message.to_string()),
                        })
                        .collect();
                    relationships.incoming = Some(page_of(items, limit));
                }
            }
        }
        Ok(UserView { profile: parse_profile(profile)?, friends: false, relationships: Some(relationships) })
    }

    async fn profile(&self, user: &str) -> Result<Option<Value>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key(user, "profile"));
        let bytes: Option<Vec<u8>> =
            self.call("profile read", |mut conn| async move { cmd.query_async(&mut conn).await }).await?;
        parse_profile(bytes)
    }

    async fn set_profile(&self, user: &str, profile: &Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(profile).map_err(|e| StoreError(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key(user, "profile")).arg(bytes);
        self.call("profile write", |mut conn| async move { cmd.query_async::<()>(&mut conn).await }).await
    }

    fn health(&self) -> StoreHealth {
        if self.health.healthy.load(Ordering::Acquire) {
            return StoreHealth::ok();
        }
        let reason = self.health.reason.lock().unwrap_or_else(PoisonError::into_inner).clone();
        StoreHealth { healthy: false, reason: reason.or_else(|| Some(format!("redis {} failing", self.target))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_users_keys_share_a_hash_tag() {
        assert_eq!(key("alice", "friends"), "pg:{alice}:friends");
        assert_eq!(key("a}b", "req_in"), "pg:{a}b}:req_in");
    }

    #[test]
    fn paging_reads_one_past_the_limit_without_overflow() {
        assert_eq!(count_arg(0), "1");
        assert_eq!(count_arg(10), "11");
        assert_eq!(count_arg(usize::MAX), i64::MAX.to_string());
        assert_eq!(page_of(vec![1, 2, 3], 2), Page { items: vec![1, 2], more: true });
        assert_eq!(page_of(vec![1, 2], 2), Page { items: vec![1, 2], more: false });
        assert!(outcome(8).is_err());
    }
}
