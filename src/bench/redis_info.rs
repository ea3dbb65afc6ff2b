//! Redis as the bench sees it (cluster runs): `INFO stats`
//! total_commands_processed, read before and after a measured phase.

use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// How long one INFO may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Commands a reading adds to the count the next reading sees: Redis counts
/// a command once it has run, so an INFO is not in its own answer but is in
/// the next one. (Checked on an idle redis-server 7.0: readings in a row
/// differ by exactly this.)
pub const SELF_COMMANDS: u64 = 1;

#[derive(Clone)]
pub struct RedisInfo {
    conn: MultiplexedConnection,
}

impl RedisInfo {
    /// Connects once, before any reading: the handshake's own commands
    /// (CLIENT SETINFO) fall outside every measured phase.
    ///
    /// # Errors
    /// An unparsable URL or an unreachable Redis, as text.
    pub async fn connect(url: &str) -> Result<RedisInfo, String> {
        let client = redis::Client::open(url).map_err(|e| format!("--redis-url {url}: {e}"))?;
        let conn = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("--redis-url {url}: no connection within {TIMEOUT:?}"))?
            .map_err(|e| format!("--redis-url {url}: {e}"))?;
        Ok(RedisInfo { conn })
    }

    /// `total_commands_processed` now.
    ///
    /// # Errors
    /// Redis failed or answered without the field, as text.
    pub async fn commands(&self) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let info: String = tokio::time::timeout(TIMEOUT, redis::cmd("INFO").arg("stats").query_async(&mut conn))
            .await
            .map_err(|_| format!("redis INFO: no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("redis INFO: {e}"))?;
        field(&info, "total_commands_processed").ok_or_else(|| "redis INFO: no total_commands_processed".into())
    }
}

/// Commands others ran between two readings (the first reading excluded).
pub fn commands_between(before: u64, after: u64) -> u64 {
    after.saturating_sub(before).saturating_sub(SELF_COMMANDS)
}

/// A numeric `name:value` line of an INFO answer.
fn field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{commands_between, field};

    #[test]
    fn reads_a_counter_and_leaves_out_its_own_calls() {
        let info =
            "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:42\r\ninstantaneous_ops_per_sec:0\r\n";
        assert_eq!(field(info, "total_commands_processed"), Some(42));
        assert_eq!(field(info, "total_commands"), None);
        assert_eq!(commands_between(42, 43), 0);
        assert_eq!(commands_between(42, 50), 7);
        assert_eq!(commands_between(42, 40), 0);
    }
}
