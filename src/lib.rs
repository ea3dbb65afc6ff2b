//! pushgate: a WebSocket push gateway.
//!
//! Data flows one way: socket -> frame -> handler -> router -> session
//! outbox -> socket. A push to an idle session is written straight to its
//! socket by the pusher; the session task claims the writer back before it
//! writes anything itself (see [`transport`]). README.md "Architecture" is
//! the map in prose. The crate map:
//!
//! - [`protocol`]: the `[u32 action][payload]` codec, the code tables and
//!   [`protocol::CloseReason`], why a session closed. Depends on nothing.
//! - [`config`]: every bound and setting, with defaults. A leaf.
//! - [`clock`]: Unix time and the monotonic process clock. A leaf.
//! - [`auth`]: JWT validation -> [`auth::Identity`].
//! - [`listener`]: binding, and the slots that bound sockets per listener.
//! - [`http_wire`]: raw HTTP answers and the one Retry-After policy.
//! - [`gateway`]: public listener: HTTP head, handshake decisions, refusals,
//!   the session task.
//! - [`transport`]: a session's outbox and the socket writes (direct too).
//! - [`registry`]: who is connected to this node; the local [`router::Router`].
//! - [`router`]: THE seam handlers, the API and the drain reach sessions by.
//! - [`handlers`]: the action table (PING, ACK, ADD_FRIEND, FETCH_INFO, ...).
//! - [`store`]: the `Store` trait, the embedded redb store and the Redis store.
//! - [`inbox`]: durable delivery: per-user inboxes (the rules in
//!   `inbox/model.rs`), the `InboxStore` seam (embedded, Redis), replay
//!   pages, acks, status.
//! - [`webhook`]: the undelivered-message webhook (scheduling, signing,
//!   retries).
//! - [`revocation`]: revoked users, checked at the handshake and at
//!   TOKEN_REFRESH.
//! - [`cluster`]: cluster mode: the Redis-backed router around the registry.
//! - [`api`]: the internal HTTP API (push, broadcast, sessions, inboxes,
//!   revocation, profiles).
//! - [`drain`], [`admission`]: SIGTERM drain; the upgrade token bucket.
//! - [`metrics`]: Prometheus metrics.
//!
//! `pushgate client` and `pushgate bench` live in the binary (`src/main.rs`,
//! `src/client/`, `src/bench/`), not here: the library uses neither clap,
//! reqwest nor hdrhistogram.

pub mod admission;
pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod gateway;
pub mod handlers;
pub mod http_wire;
pub mod inbox;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod redis_link;
pub mod registry;
pub mod revocation;
pub mod router;
pub mod state;
pub mod store;
pub mod transport;
pub mod webhook;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::handlers::Handler;
use crate::protocol::CloseReason;
use crate::state::AppState;
use crate::store::{EmbeddedStore, StoreOptions};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Already-bound listeners, so tests can bind `127.0.0.1:0`.
pub struct Listeners {
    pub public: TcpListener,
    pub api: TcpListener,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Close every session now with 1001 (GOING_AWAY). SIGINT.
    Immediate,
    /// Readiness false, new upgrades refused (503), sessions closed with 1012
    /// after a RECONNECT hint, spread over `server.drain_window_ms`. SIGTERM.
    Drain,
}

/// What an embedder adds to the gateway: application actions (>= 1000) and
/// extra internal API routes (served behind the API key).
#[derive(Default)]
pub struct Extensions {
    handlers: Vec<(u32, u32, Box<dyn Handler>)>,
    api_routes: Option<axum::Router<Arc<AppState>>>,
}

/// Lowest action code an embedder may serve; lower codes are the protocol's.
pub const FIRST_APP_ACTION: u32 = 1000;

impl Extensions {
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Serves client frames of `action` with `handler`; replies go out as
    /// `reply_action`. Both must be >= [`FIRST_APP_ACTION`] (checked when
    /// the gateway starts). A panicking handler answers that one request
    /// with ERROR `internal`; the session stays.
    pub fn handler(mut self, action: u32, reply_action: u32, handler: impl Handler + 'static) -> Extensions {
        self.handlers.push((action, reply_action, Box::new(handler)));
        self
    }

    /// Adds routes to the internal API, behind its key and its guards (a
    /// panic answers 500 with the JSON error body).
    pub fn api_routes(mut self, routes: axum::Router<Arc<AppState>>) -> Extensions {
        self.api_routes = Some(match self.api_routes.take() {
            Some(existing) => existing.merge(routes),
            None => routes,
        });
        self
    }
}

/// Serves until `shutdown` resolves, then closes every session (at once, or
/// spread over `server.drain_window_ms` for [`Shutdown::Drain`]) and returns
/// at most `server.shutdown_timeout_ms` after that.
///
/// # Errors
/// Invalid configuration, an unreadable key file, or a store that cannot be
/// opened. Nothing after startup returns an error: connections fail alone.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = Shutdown>) -> Result<(), Error> {
    run_with(config, listeners, shutdown, Extensions::default()).await
}

/// Revocations from the node's storage. One node: its store file was just
/// opened, so a failure is a real fault. A cluster: a Redis that is down
/// must not stop the node; it starts with none known and loads them as
/// soon as its subscription to the other nodes works (cluster/subscriber.rs).
async fn load_revocations(config: &Config, embedded: Option<&EmbeddedStore>) -> Result<revocation::Revocations, Error> {
    let ttl = config.auth.revocation_ttl_secs;
    match (embedded, &config.cluster.redis_url) {
        (Some(store), _) => Ok(revocation::Revocations::load(Arc::new(store.clone()), ttl).await?),
        (None, Some(url)) => {
            let timeout = std::time::Duration::from_millis(config.cluster.timeout_ms);
            let store = Arc::new(revocation::RedisRevocations::open(url, timeout)?);
            Ok(revocation::Revocations::load_or_empty(store, ttl).await)
        }
        (None, None) => Err("no storage for revocations".into()),
    }
}

/// [`run`] with the embedder's [`Extensions`].
///
/// # Errors
/// As [`run`], and an extension handler for an action below
/// [`FIRST_APP_ACTION`].
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = Shutdown>,
    extensions: Extensions,
) -> Result<(), Error> {
    config.validate()?;
    check_file_limit(&config)?;
    let auth = Authenticator::from_config(&config.auth)?;
    if let Some((action, reply, _)) =
        extensions.handlers.iter().find(|(a, r, _)| *a < FIRST_APP_ACTION || *r < FIRST_APP_ACTION)
    {
        return Err(
            format!("extension handler {action} -> {reply}: application actions start at {FIRST_APP_ACTION}").into()
        );
    }
    let options = StoreOptions {
        check_integrity: config.store.check_integrity,
        reopen_backoff_max: std::time::Duration::from_millis(config.store.reopen_backoff_max_ms),
    };
    // Cluster mode keeps friends, profiles and inboxes in Redis, so every
    // node sees the same data (and a device resumes on any node); a single
    // node keeps them in its embedded store's file.
    let mut inbox_closed = None;
    let (store, inbox_store, embedded): (Arc<dyn store::Store>, Arc<dyn inbox::InboxStore>, _) =
        match &config.cluster.redis_url {
            Some(url) => {
                let timeout = std::time::Duration::from_millis(config.cluster.timeout_ms);
                let keep = config.inbox.max_age_secs.max(config.inbox.idempotency_window_secs);
                let inbox = inbox::RedisInbox::open(url, timeout, keep)?;
                (Arc::new(store::RedisStore::open(url, timeout).await?), Arc::new(inbox), None)
            }
            None => {
                let store = EmbeddedStore::open_with(&config.server.data_dir, options)?;
                let log = inbox::LogOptions::from_config(&config.inbox);
                let inbox = inbox::EmbeddedInbox::open(&store, &config.server.data_dir, log).await?;
                inbox_closed = Some(inbox.closed());
                (Arc::new(store.clone()), Arc::new(inbox), Some(store))
            }
        };
    let mut inbox = inbox::Inbox::new(inbox_store, &config.inbox);
    if config.webhook.url.is_some() {
        inbox = inbox.with_webhook_delay(config.webhook.delay_ms);
    }
    let inbox = Arc::new(inbox);
    let mut background = Background::default();
    if let Some(sender) = webhook::Sender::new(&config.webhook, inbox.clone())? {
        background.spawn(Arc::new(sender).run());
    }
    let revocations = Arc::new(load_revocations(&config, embedded.as_ref()).await?);
    announce(&config, &listeners);
    // Cluster mode: the cluster router wraps this node's registry. Its
    // tasks are aborted if this future is dropped (as in a crash).
    let registry = Arc::new(registry::Registry::new(&config.server.node_id));
    // The sweep of expired messages (Redis expires its keys by itself);
    // background tasks end with this future.
    if config.cluster.redis_url.is_none() {
        let every = std::time::Duration::from_secs(config.inbox.sweep_interval_secs);
        background.spawn(inbox::sweep_forever(inbox.clone(), every));
    }
    // "Written" marks for the durable message status wait in memory for
    // the user's next inbox write (the registry holds only them, not the
    // inbox and its log); the rest are saved in the background.
    let marks = inbox.waiting_marks().clone();
    if registry.watch_written(registry::WrittenSink(Box::new(move |mark| marks.add(mark)))) {
        background.spawn(inbox::flush_marks_forever(inbox.clone()));
    }
    let (router, cluster): (Arc<dyn router::Router>, _) = if config.cluster.redis_url.is_some() {
        let (router, tasks) = cluster::ClusterRouter::start(&config, registry.clone(), revocations.clone())?;
        let health = router.health();
        (router, Some((tasks, health)))
    } else {
        (registry.clone(), None)
    };
    let mut state = AppState::with_router(config, auth, store, inbox, revocations, registry, router);
    state.cluster = cluster.as_ref().map(|(_, health)| health.clone());
    for (action, reply, handler) in extensions.handlers {
        state.handlers.register_boxed(action, reply, handler);
    }
    let state = Arc::new(state);

    let api_stop = CancellationToken::new();
    let api = {
        let router = api::router_with(state.clone(), extensions.api_routes);
        let (state, stop) = (state.clone(), api_stop.clone());
        tokio::spawn(async move {
            let (config, grace) = (&state.config, state.config.shutdown_timeout());
            api::serve(listeners.api, router, &config.api, config.server.refusal_slots, stop, grace).await;
        })
    };

    let tracker = TaskTracker::new();
    let mut accept = tokio::spawn(gateway::accept_loop(listeners.public, state.clone(), tracker.clone()));
    let mode = tokio::select! {
        mode = shutdown => mode,
        _ = &mut accept => Shutdown::Immediate,
    };
    // Readiness turns false and upgrades get 503 from here on.
    state.set_draining();
    tracing::info!(sessions = state.registry.session_count(), ?mode, "shutting down");
    if mode == Shutdown::Drain {
        // Keep answering (503 draining) during the drain so proxies retry
        // another node instead of seeing refused connections.
        state.registry.stop_admitting();
        let window = state.config.drain_window();
        let hint_max = std::time::Duration::from_millis(state.config.server.reconnect_hint_max_ms);
        drain::drain(state.ctx.router.as_ref(), window, hint_max).await;
    }
    accept.abort();
    let _ = accept.await;
    // Whatever is left (and any session that raced the drain) closes now.
    // The API stops with the sessions (it served pushes during the drain);
    // both get `shutdown_timeout_ms` from here, then what is left is
    // abandoned: the process exits within its deadline.
    state.registry.close_all(CloseReason::Shutdown);
    api_stop.cancel();
    tracker.close();
    if tokio::time::timeout(state.config.shutdown_timeout(), tracker.wait()).await.is_err() {
        tracing::warn!(left = tracker.len(), "shutdown timeout reached; abandoning remaining connections");
    }
    let _ = api.await;
    if let Some((tasks, _)) = cluster {
        // Removes this node's presence entries (bounded by the timeout).
        let bound = std::time::Duration::from_millis(state.config.cluster.timeout_ms) * 3;
        tasks.shutdown(bound).await;
    }
    // The store file is released before `run` returns, so the same data
    // dir can be opened again at once (an embedder restarting the node in
    // the same process).
    let grace = state.config.shutdown_timeout();
    background.stop().await;
    drop(state);
    if let Some(store) = embedded {
        store.released(grace).await;
    }
    if let Some(closed) = inbox_closed {
        closed.wait(grace).await;
    }
    Ok(())
}

/// The node's background tasks (webhook sender, marks, sweep): aborted if
/// `run` is dropped, stopped and awaited when it returns.
#[derive(Default)]
struct Background(Vec<tokio_util::task::AbortOnDropHandle<()>>);

impl Background {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(task)));
    }

    async fn stop(self) {
        for task in self.0 {
            task.abort();
            let _ = task.await;
        }
    }
}

/// File descriptors beyond the listeners' sockets: the listeners, the
/// store, the runtime, logging and some slack.
const FD_HEADROOM: u64 = 64;

/// The socket bounds are only a promise if the process may open that many
/// files: refuse to start when `RLIMIT_NOFILE` is lower than both
/// listeners' serve and refusal slots together, the public listener's
/// handshake and session budgets both counted (deploy/README: sizing).
fn check_file_limit(config: &Config) -> Result<(), Error> {
    let s = &config.server;
    let needed = [s.max_connections, s.max_handshakes, s.refusal_slots, config.api.max_connections, s.refusal_slots]
        .iter()
        .map(|&n| n as u64)
        .sum::<u64>()
        + FD_HEADROOM;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other effect.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < needed {
        return Err(format!(
            "the file limit (RLIMIT_NOFILE {}) is below what the configured bounds need ({needed}: \
             server.max_connections + server.max_handshakes + api.max_connections + \
             2 x server.refusal_slots + {FD_HEADROOM}); \
             raise LimitNOFILE or lower the bounds",
            limit.rlim_cur
        )
        .into());
    }
    Ok(())
}

fn announce(config: &Config, listeners: &Listeners) {
    let public = listeners.public.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let api = listeners.api.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%public, %api, data_dir = %config.server.data_dir.display(), "pushgate serving");
    if config.uses_dev_secret() {
        tracing::warn!("**********************************************************************");
        tracing::warn!("* DEVELOPMENT JWT SECRET IN USE: anyone can mint tokens for any user. *");
        tracing::warn!("* Set PUSHGATE_JWT_SECRET before exposing this gateway.              *");
        tracing::warn!("**********************************************************************");
    }
    if config.uses_dev_api_key() {
        tracing::warn!("DEVELOPMENT API KEY IN USE for the internal API; set PUSHGATE_API_KEY");
    }
}
