//! Revocations in Redis: hash `pg:revoked`, user -> `"<before>:<until>"`
//! (unix seconds). Entries past `until` are skipped when loading and
//! removed by the next save. One hash for every node (no per-user keys):
//! a node loads it whole at startup and whenever its subscription
//! restarts, so its size is the number of live revocations.

use super::{Revocation, RevocationError, RevocationStore};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

pub const KEY: &str = "pg:revoked";

/// KEYS[1] the hash; ARGV: user, value, user, value...: deletes each
/// field still holding the value read.
const PRUNE: &str = r"
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
";

pub struct RedisRevocations {
    conn: ConnectionManager,
    timeout: Duration,
    prune: redis::Script,
}

impl RedisRevocations {
    /// Connects lazily (a Redis that is down fails calls, not startup).
    ///
    /// # Errors
    /// A malformed URL.
    pub fn open(url: &str, timeout: Duration) -> Result<RedisRevocations, RevocationError> {
        let conn = crate::redis_link::lazy(url, timeout).map_err(RevocationError)?;
        Ok(RedisRevocations { conn, timeout, prune: redis::Script::new(PRUNE) })
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RevocationError> {
        crate::redis_link::bounded(self.timeout, "revocations", call).await.map_err(RevocationError)
    }
}

fn parse(value: &str) -> Option<Revocation> {
    let (before, until) = value.split_once(':')?;
    Some(Revocation { before: before.parse().ok()?, until: until.parse().ok()? })
}

#[async_trait]
impl RevocationStore for RedisRevocations {
    async fn save(&self, user: &str, revocation: Revocation) -> Result<(), RevocationError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HSET");
        cmd.arg(KEY).arg(user).arg(format!("{}:{}", revocation.before, revocation.until));
        self.bounded(cmd.query_async::<()>(&mut conn)).await
    }

    async fn load(&self, now: u64) -> Result<Vec<(String, Revocation)>, RevocationError> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(KEY);
        let all: HashMap<String, String> = self.bounded(cmd.query_async(&mut conn)).await?;
        let (live, dead): (Vec<_>, Vec<_>) =
            all.into_iter().filter_map(|(user, value)| Some((user, parse(&value)?))).partition(|(_, r)| r.until > now);
        if !dead.is_empty() {
            // Best effort (expired entries only cost a little room), and
            // only if unchanged: another node may have revoked the user
            // again since the read.
            let mut invocation = self.prune.prepare_invoke();
            invocation.key(KEY);
            for (user, r) in &dead {
                invocation.arg(user).arg(format!("{}:{}", r.before, r.until));
            }
            let _ = self.bounded(invocation.invoke_async::<()>(&mut conn)).await;
        }
        Ok(live)
    }
}
