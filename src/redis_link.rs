//! How every part that keeps state in Redis (the store, the inbox, the
//! revocations) reaches it: a connection made on first use, so a Redis
//! that is down fails calls rather than startup, and every call bounded by
//! the same timeout with an error naming the call. (The cluster router
//! keeps its own settings: it also needs the client for pub/sub.)

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::Duration;

/// Longest wait between reconnect attempts.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// A lazily connecting, self-reconnecting connection to `url`.
///
/// # Errors
/// A malformed URL (the message names the URL without credentials).
pub fn lazy(url: &str, timeout: Duration) -> Result<ConnectionManager, String> {
    let target = redact(url);
    let client = redis::Client::open(url).map_err(|e| format!("redis URL {target}: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_max_delay(RECONNECT_DELAY_MAX);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("redis {target}: {e}"))
}

/// `call` within `timeout`: its value, or why not (`redis <what>: ...`).
///
/// # Errors
/// Redis answered an error, or nothing within `timeout`.
pub async fn bounded<T>(
    timeout: Duration,
    what: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("redis {what}: {e}")),
        Err(_) => Err(format!("redis {what}: no answer within {} ms", timeout.as_millis())),
    }
}

/// `redis://user:pass@host:port/db` without the credentials.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &url[..scheme + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(redact("redis://user:s3cr@t@host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("redis://:pw@10.0.0.1/"), "redis://10.0.0.1/");
        assert_eq!(redact("redis://host:6379/"), "redis://host:6379/");
        assert_eq!(redact("no scheme@host"), "no scheme@host");
    }
}
