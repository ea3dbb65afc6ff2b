//! Cluster mode: several nodes act as one through Redis.
//!
//! [`ClusterRouter`] implements [`crate::router::Router`] by wrapping this
//! node's [`Registry`] (it never changes it) and adding the other nodes:
//!
//! - `presence.rs`: which nodes hold a user (a sorted set with expiring
//!   members, refreshed by the holder) and the fan-out script;
//! - `channels.rs`: the messages nodes exchange over pub/sub;
//! - `router.rs`: the `Router` methods;
//! - `subscriber.rs`: the one pub/sub connection, its self-check and
//!   reconnects; and `tasks.rs`: presence upkeep and shutdown.
//!
//! Every Redis call is bounded by `cluster.timeout_ms`: past it the caller
//! gets an honest partial answer (unreachable nodes) instead of waiting.
//! deploy/README.md "Cluster mode" lists every key, channel and failure.

mod channels;
mod presence;
mod router;
mod subscriber;
mod tasks;

pub use channels::{BROADCAST, Body, Envelope, node_channel};
pub use presence::{counts_key, nodes_key};
pub use tasks::ClusterTasks;

use crate::config::Config;
use crate::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What `/readyz` and the metrics show of the cluster link.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    /// The last self-check of the subscription came back in time.
    subscription_ok: AtomicBool,
    /// The last Redis command answered (false after an error or timeout).
    redis_ok: AtomicBool,
    /// Times the subscriber connected again after losing its connection or
    /// failing its self-check.
    reconnects: AtomicU64,
}

impl ClusterHealth {
    pub fn subscription_ok(&self) -> bool {
        self.subscription_ok.load(Ordering::Acquire)
    }

    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Acquire)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn set_subscription(&self, ok: bool) {
        self.subscription_ok.store(ok, Ordering::Release);
        crate::metrics::get();
        metrics::gauge!("pushgate_cluster_subscription_ok").set(if ok { 1.0 } else { 0.0 });
    }

    fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        crate::metrics::get();
        metrics::counter!("pushgate_cluster_reconnects_total").increment(1);
    }

    /// The `cluster` object of `/readyz`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "subscription": if self.subscription_ok() { "ok" } else { "failed" },
            "redis": if self.redis_ok() { "ok" } else { "failed" },
            "reconnects": self.reconnects(),
        })
    }
}

/// An answer another node sends to one of this node's requests.
#[derive(Debug)]
enum Reply {
    Listed(Vec<crate::router::SessionInfo>),
    Kicked(bool),
}

pub struct ClusterRouter {
    registry: Arc<Registry>,
    node: String,
    client: redis::Client,
    /// Commands (and PUBLISH); reconnects by itself.
    redis: ConnectionManager,
    fanout: redis::Script,
    grouped_publish: redis::Script,
    /// Asks the presence task to write what is pending and answer
    /// ([`crate::router::Router::announce`]).
    flush: mpsc::UnboundedSender<tasks::Flush>,
    timeout: Duration,
    ttl: Duration,
    refresh: Duration,
    check_every: Duration,
    /// Requests awaiting answers from other nodes, by id.
    pending: Mutex<HashMap<u64, mpsc::UnboundedSender<Reply>>>,
    /// Revocations: applied when other nodes publish them, reloaded when
    /// the subscription (re)starts.
    revocations: Arc<crate::revocation::Revocations>,
    next_request: AtomicU64,
    health: Arc<ClusterHealth>,
}

impl ClusterRouter {
    /// Builds the router and starts its background work (presence upkeep,
    /// the subscriber). Connects lazily: a Redis that is down at startup
    /// delays only the cluster part.
    ///
    /// # Errors
    /// An unparsable `cluster.redis_url`, or no URL at all.
    pub fn start(
        config: &Config,
        registry: Arc<Registry>,
        revocations: Arc<crate::revocation::Revocations>,
    ) -> Result<(Arc<ClusterRouter>, ClusterTasks), crate::Error> {
        let c = &config.cluster;
        let url = c.redis_url.as_deref().ok_or("cluster.redis_url is not set")?;
        let client = redis::Client::open(url)?;
        let timeout = Duration::from_millis(c.timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        let events = registry.watch_users().ok_or("the registry is watched by another cluster router")?;
        let (flush, flushes) = mpsc::unbounded_channel();
        let revoked = revocations.subscribe().ok_or("the revocations are published by another cluster router")?;
        let router = Arc::new(ClusterRouter {
            registry,
            node: config.server.node_id.clone(),
            client,
            redis,
            fanout: presence::fanout_script(),
            grouped_publish: presence::grouped_publish_script(),
            flush,
            timeout,
            ttl: Duration::from_secs(c.presence_ttl_secs),
            refresh: Duration::from_secs(c.presence_refresh_secs),
            check_every: Duration::from_secs(c.subscription_check_secs),
            pending: Mutex::new(HashMap::new()),
            revocations,
            next_request: AtomicU64::new(1),
            health: Arc::new(ClusterHealth::default()),
        });
        router.health.set_subscription(false);
        let tasks = ClusterTasks::spawn(router.clone(), events, flushes, revoked);
        Ok((router, tasks))
    }

    pub fn health(&self) -> Arc<ClusterHealth> {
        self.health.clone()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// `call` bounded by `cluster.timeout_ms`; None on error or timeout.
    async fn bounded<T>(&self, what: &str, call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        let outcome = tokio::time::timeout(self.timeout, call).await;
        let ok = matches!(outcome, Ok(Ok(_)));
        self.health.redis_ok.store(ok, Ordering::Release);
        match outcome {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, what, "redis call failed");
                None
            }
            Err(_) => {
                tracing::debug!(what, timeout_ms = self.timeout.as_millis() as u64, "redis call timed out");
                None
            }
        }
    }

    /// PUBLISH, bounded: the subscribers reached, None when Redis failed.
    async fn publish(&self, channel: &str, message: &str) -> Option<u64> {
        let mut conn = self.redis.clone();
        self.bounded("publish", redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<u64>(&mut conn)).await
    }

    /// A request id and the channel its answers arrive on.
    fn open_request(&self) -> (u64, mpsc::UnboundedReceiver<Reply>) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        (id, rx)
    }

    fn close_request(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    /// Routes an answer to the request that awaits it (late answers are dropped).
    fn answer(&self, id: u64, reply: Reply) {
        let tx = self.pending.lock().ok().and_then(|pending| pending.get(&id).cloned());
        if let Some(tx) = tx {
            let _ = tx.send(reply);
        }
    }
}
