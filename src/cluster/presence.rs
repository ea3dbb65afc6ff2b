//! Which nodes hold a user's sessions, in Redis:
//!
//! - `pg:{user}:nodes`: sorted set, member = node id, score = the unix ms
//!   until which the entry holds. Readers take members scored from now on;
//!   an expired member is a node that stopped refreshing (crashed).
//! - `pg:{user}:counts`: hash, node id -> that node's session count of the
//!   user (read only for nodes live in the set).
//!
//! Both keys get a Redis expiry of ttl + [`KEY_SLACK_MS`] at every write,
//! so a user's keys vanish once no node refreshes them. The holder writes
//! on every change of its sessions of a user and refreshes all its users
//! every `presence_refresh_secs` (pipelined, [`REFRESH_BATCH`] users per
//! round trip).

use redis::aio::ConnectionManager;
use redis::{Pipeline, Script};
use std::sync::Arc;

/// Users per pipelined refresh round trip.
pub const REFRESH_BATCH: usize = 500;
/// Keys outlive their newest member by this much.
pub const KEY_SLACK_MS: u64 = 2000;

pub fn nodes_key(user: &str) -> String {
    format!("pg:{{{user}}}:nodes")
}

pub fn counts_key(user: &str) -> String {
    format!("pg:{{{user}}}:counts")
}

pub use crate::clock::unix_ms as now_ms;

/// Appends to `pipe` what makes `user`'s entry for `node` say `count`
/// sessions (none: the entry is removed).
pub fn write_entry(pipe: &mut Pipeline, node: &str, user: &str, count: usize, ttl_ms: u64) {
    let (nodes, counts) = (nodes_key(user), counts_key(user));
    if count > 0 {
        pipe.cmd("ZADD").arg(&nodes).arg(now_ms() + ttl_ms).arg(node).ignore();
        pipe.cmd("HSET").arg(&counts).arg(node).arg(count).ignore();
        pipe.cmd("PEXPIRE").arg(&nodes).arg(ttl_ms + KEY_SLACK_MS).ignore();
        pipe.cmd("PEXPIRE").arg(&counts).arg(ttl_ms + KEY_SLACK_MS).ignore();
    } else {
        pipe.cmd("ZREM").arg(&nodes).arg(node).ignore();
        pipe.cmd("HDEL").arg(&counts).arg(node).ignore();
    }
}

/// One atomic pipeline writing `entries`.
pub fn entries_pipeline(node: &str, entries: &[(Arc<str>, usize)], ttl_ms: u64) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (user, count) in entries {
        write_entry(&mut pipe, node, user, *count, ttl_ms);
    }
    pipe
}

/// Live nodes holding `user` and their session counts (a node live in the
/// set without a count reads as 1 session).
pub async fn read(conn: &mut ConnectionManager, user: &str) -> redis::RedisResult<Vec<(String, usize)>> {
    let (nodes, counts): (Vec<String>, std::collections::HashMap<String, usize>) = redis::pipe()
        .cmd("ZRANGEBYSCORE")
        .arg(nodes_key(user))
        .arg(now_ms())
        .arg("+inf")
        .cmd("HGETALL")
        .arg(counts_key(user))
        .query_async(conn)
        .await?;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let count = counts.get(&n).copied().unwrap_or(1);
            (n, count)
        })
        .collect())
}

/// Publishes ARGV[3] to the channel of every live node holding the user
/// except ARGV[2] (this node), in one round trip; returns node, receivers,
/// node, receivers... (receivers as text).
const FANOUT: &str = r"
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for _, n in ipairs(nodes) do
  if n ~= ARGV[2] then
    out[#out + 1] = n
    out[#out + 1] = tostring(redis.call('PUBLISH', 'pg:node:' .. n, ARGV[3]))
  end
end
return out
";

pub fn fanout_script() -> Script {
    Script::new(FANOUT)
}

/// Runs the fanout script: (node, subscribers that received the message)
/// for every other live node holding `user`.
pub async fn fanout(
    conn: &mut ConnectionManager,
    script: &Script,
    node: &str,
    user: &str,
    message: &str,
) -> redis::RedisResult<Vec<(String, u64)>> {
    let flat: Vec<String> = script.key(nodes_key(user)).arg(now_ms()).arg(node).arg(message).invoke_async(conn).await?;
    Ok(flat.chunks(2).filter_map(|c| Some((c.first()?.clone(), c.get(1)?.parse().ok()?))).collect())
}

/// Pushes to many users in one round trip. KEYS[i] is the nodes set of
/// entry i's user; ARGV[3 + i] is entry i as a JSON fragment. The script
/// finds the live nodes holding each user, then publishes ONE message per
/// node: ARGV[3] (an envelope cut just inside its list), the fragments of
/// the entries that node holds joined by commas, then `]}`. ARGV[1] = now,
/// ARGV[2] = this node (skipped). Returns, per entry, the nodes that
/// received it (a node without a subscriber is gone).
///
/// Two messages use it: `deliver_many` (one frame, a list of user ids:
/// the fragments are the users' JSON strings) and `deliver_batch` (one
/// frame per user: the fragments are `{"user", "frame"}` objects).
const GROUPED_PUBLISH: &str = r"
local by_node, order = {}, {}
for i, key in ipairs(KEYS) do
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', key, ARGV[1], '+inf')) do
    if n ~= ARGV[2] then
      local held = by_node[n]
      if not held then
        held = {}
        by_node[n] = held
        order[#order + 1] = n
      end
      held[#held + 1] = i
    end
  end
end
local reached = {}
for i = 1, #KEYS do
  reached[i] = 0
end
for _, n in ipairs(order) do
  local parts = {}
  for j, i in ipairs(by_node[n]) do
    parts[j] = ARGV[3 + i]
  end
  if redis.call('PUBLISH', 'pg:node:' .. n, ARGV[3] .. table.concat(parts, ',') .. ']}') >= 1 then
    for _, i in ipairs(by_node[n]) do
      reached[i] = reached[i] + 1
    end
  end
end
return reached
";

pub fn grouped_publish_script() -> Script {
    Script::new(GROUPED_PUBLISH)
}

/// Runs the grouped-publish script for `users[i]` with `fragments[i]`:
/// per entry (in order), the other live nodes that took it.
pub async fn grouped_publish(
    conn: &mut ConnectionManager,
    script: &Script,
    node: &str,
    users: &[&str],
    fragments: &[String],
    head: &str,
) -> redis::RedisResult<Vec<usize>> {
    let mut invocation = script.prepare_invoke();
    invocation.arg(now_ms()).arg(node).arg(head);
    for (user, fragment) in users.iter().zip(fragments) {
        invocation.key(nodes_key(user));
        invocation.arg(fragment);
    }
    invocation.invoke_async(conn).await
}
