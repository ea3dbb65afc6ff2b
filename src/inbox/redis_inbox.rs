//! The cluster inbox in Redis, so a device resumes on any node.
//!
//! Keys (`{user}` is a Redis Cluster hash tag: one user's keys share a slot):
//! - `pg:{user}:inbox`: hash, `v` = record version, `r` = record JSON
//!   (positions, message metadata, idempotency keys: model.rs);
//! - `pg:{user}:inbox:p`: hash, message id -> payload bytes (held
//!   messages only);
//! - `pg:{user}:inbox:f`: hash, message id -> final status JSON of the
//!   newest `inbox.max_tombstones` retired or collapsed messages.
//!
//! All expire one day after the later of `inbox.max_age_secs` and the
//! idempotency window has passed since the user's last inbox write: by
//! then every message has expired and every idempotency key lapsed.
//!
//! Why not Streams: a stream gives ids and ranges, but durable delivery
//! also needs replacing an unacked message in place (collapse keys),
//! per-device positions with acks of single ids, and "retire for every
//! device on the first ack"; consumer groups hand each entry to one
//! consumer of a group and track no per-device "up to" position. A
//! versioned record beside a payload hash does all of it with the same
//! rules as the embedded store (model.rs), bounded by `inbox.max_messages`.
//!
//! Writes are compare-and-set: one Lua script checks the version and
//! applies the record, the new payload and the dropped payloads at once;
//! a conflict (another node wrote the same user meanwhile) reloads and
//! retries. Every call is bounded by `cluster.timeout_ms`.

use super::{InboxError, InboxStore, Loaded, Save};
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use std::future::Future;
use std::time::Duration;

/// KEYS: 1 record hash, 2 payload hash, 3 the due set, 4 finished hash.
/// ARGV: 1 expected version, 2 record, 3 key expiry (ms), 4 the user, 5
/// the new messages' due check (unix ms, "" = none; members "<user> <id>"),
/// 6 finished statuses kept, 7 the number P of new payloads, 8 the number
/// D of payload ids to drop, then P (id, payload) pairs, D ids, and (id,
/// status) pairs of finished messages. Returns 1 when saved, 0 on a
/// version conflict.
const SAVE: &str = r"
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', version + 1, 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local puts, drops = tonumber(ARGV[7]), tonumber(ARGV[8])
local at = 9
for i = 1, puts do
  redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1])
  if ARGV[5] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4] .. ' ' .. ARGV[at])
  end
  at = at + 2
end
for i = 1, drops do
  redis.call('HDEL', KEYS[2], ARGV[at])
  at = at + 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local keep = tonumber(ARGV[6])
if keep > 0 and at < #ARGV then
  for i = at, #ARGV, 2 do
    redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  end
  local over = redis.call('HLEN', KEYS[4]) - keep
  if over > 0 then
    local ids = redis.call('HKEYS', KEYS[4])
    table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
    for i = 1, over do
      redis.call('HDEL', KEYS[4], ids[i])
    end
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
return 1
";

/// KEYS: 1 the due set. ARGV: 1 now, 2 lease until, 3 limit. Takes the due
/// members and moves them to the lease's end, atomically: one node each.
const CLAIM: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
";

/// Undelivered-message checks of every user: member "<user> <id>" (user
/// ids hold no space), score = due unix ms.
pub const DUE_KEY: &str = "pg:webhook:due";

/// Keys outlive the oldest message they can hold by this much.
const KEY_SLACK_MS: u64 = 24 * 3600 * 1000;

pub struct RedisInbox {
    conn: ConnectionManager,
    timeout: Duration,
    save: redis::Script,
    claim: redis::Script,
    key_ttl_ms: u64,
}

fn record_key(user: &str) -> String {
    format!("pg:{{{user}}}:inbox")
}

fn payload_key(user: &str) -> String {
    format!("pg:{{{user}}}:inbox:p")
}

fn finished_key(user: &str) -> String {
    format!("pg:{{{user}}}:inbox:f")
}

impl RedisInbox {
    /// Connects lazily (a Redis that is down fails calls, not startup).
    /// Keys live `keep_secs` (+ 1 day) after the user's last inbox write:
    /// the longer of `inbox.max_age_secs` and the idempotency window.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn open(url: &str, timeout: Duration, keep_secs: u64) -> Result<RedisInbox, InboxError> {
        let conn = crate::redis_link::lazy(url, timeout).map_err(InboxError)?;
        Ok(RedisInbox {
            conn,
            timeout,
            save: redis::Script::new(SAVE),
            claim: redis::Script::new(CLAIM),
            key_ttl_ms: keep_secs.saturating_mul(1000).saturating_add(KEY_SLACK_MS),
        })
    }

    async fn bounded<T>(&self, what: &str, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, InboxError> {
        let outcome = crate::redis_link::bounded(self.timeout, what, call).await;
        crate::metrics::get().inbox_healthy.set(if outcome.is_ok() { 1.0 } else { 0.0 });
        outcome.map_err(InboxError)
    }
}

#[async_trait]
impl InboxStore for RedisInbox {
    async fn load(&self, user: &str) -> Result<Loaded, InboxError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(record_key(user)).arg("v").arg("r");
        let (version, record): (Option<u64>, Option<Vec<u8>>) =
            self.bounded("load", cmd.query_async(&mut conn)).await?;
        Ok(Loaded { version: version.unwrap_or(0), record })
    }

    async fn save(&self, user: &str, save: Save<'_>) -> Result<bool, InboxError> {
        let mut invocation = self.save.prepare_invoke();
        invocation.key(record_key(user)).key(payload_key(user)).key(DUE_KEY).key(finished_key(user));
        invocation.arg(save.expected).arg(save.record).arg(self.key_ttl_ms).arg(user);
        match save.due {
            Some(due) => invocation.arg(due),
            None => invocation.arg(""),
        };
        invocation.arg(save.keep_finished).arg(save.put.len()).arg(save.drop.len());
        for (id, payload) in &save.put {
            invocation.arg(*id).arg(*payload);
        }
        for id in save.drop {
            invocation.arg(*id);
        }
        for (id, status) in &save.finished {
            invocation.arg(*id).arg(status.as_slice());
        }
        let mut conn = self.conn.clone();
        let saved: i64 = self.bounded("save", invocation.invoke_async(&mut conn)).await?;
        Ok(saved == 1)
    }

    async fn claim_due(&self, now: u64, lease_ms: u64, limit: usize) -> Result<Vec<super::Due>, InboxError> {
        let mut invocation = self.claim.prepare_invoke();
        invocation.key(DUE_KEY).arg(now).arg(now.saturating_add(lease_ms)).arg(limit);
        let mut conn = self.conn.clone();
        let members: Vec<String> = self.bounded("claim", invocation.invoke_async(&mut conn)).await?;
        Ok(members
            .into_iter()
            .filter_map(|m| {
                let (user, id) = m.rsplit_once(' ')?;
                Some((user.to_string(), id.parse().ok()?))
            })
            .collect())
    }

    async fn reschedule(&self, user: &str, id: u64, at: Option<u64>) -> Result<(), InboxError> {
        let member = format!("{user} {id}");
        let cmd = match at {
            Some(at) => {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(DUE_KEY).arg(at).arg(member);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(DUE_KEY).arg(member);
                cmd
            }
        };
        let mut conn = self.conn.clone();
        self.bounded("reschedule", cmd.query_async::<()>(&mut conn)).await
    }

    async fn finished(&self, user: &str, id: u64) -> Result<Option<Vec<u8>>, InboxError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(finished_key(user)).arg(id);
        self.bounded("finished", cmd.query_async(&mut conn)).await
    }

    async fn payloads(&self, user: &str, ids: &[u64]) -> Result<Vec<Option<Bytes>>, InboxError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(payload_key(user)).arg(ids);
        let payloads: Vec<Option<Vec<u8>>> = self.bounded("payloads", cmd.query_async(&mut conn)).await?;
        Ok(payloads.into_iter().map(|p| p.map(Bytes::from)).collect())
    }
}
