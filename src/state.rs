//! What the gateway's tasks and the internal API share.

use crate::admission::{PerAddress, TokenBucket};
use crate::auth::Authenticator;
use crate::config::Cidr;
use crate::config::Config;
use crate::handlers::{Ctx, HandlerTable};
use crate::listener::Slots;
use crate::registry::Registry;
use crate::router::Router;
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub struct AppState {
    pub config: Config,
    pub auth: Authenticator,
    /// This node's sessions. Only the gateway (registration) and the
    /// node's own lifecycle (shutdown) use it directly; everything else
    /// reaches sessions through `ctx.router`.
    pub registry: Arc<Registry>,
    pub handlers: HandlerTable,
    /// The store and the router: what handlers and the API may touch.
    pub ctx: Ctx,
    pub ws_config: WebSocketConfig,
    /// Public sockets before their upgrade: one slot per connection, taken
    /// before accept and held until the upgrade or its refusal
    /// (`server.max_handshakes`), plus `server.refusal_slots` for 503
    /// answers beyond it.
    pub handshakes: Slots,
    /// Established sessions (`server.max_connections`): a connection takes
    /// one before its 101 and only then gives back its handshake slot, so
    /// the process holds at most handshakes + sessions + refusal sockets.
    pub sessions: Arc<Semaphore>,
    /// Handshakes in progress per client address (socket peer; trusted
    /// proxies are not counted).
    pub handshakes_per_ip: PerAddress,
    /// Established sessions per client address (the forwarded address
    /// behind a trusted proxy).
    pub sessions_per_ip: PerAddress,
    pub admission: TokenBucket,
    pub trusted_proxies: Vec<Cidr>,
    /// Revoked users, checked at every handshake and token refresh.
    pub revocations: Arc<crate::revocation::Revocations>,
    /// The cluster link's health, in cluster mode (`/readyz` shows it).
    pub cluster: Option<Arc<crate::cluster::ClusterHealth>>,
    draining: AtomicBool,
}

impl AppState {
    /// `router` wraps `registry` (a cluster router) or is it.
    pub fn with_router(
        config: Config,
        auth: Authenticator,
        store: Arc<dyn Store>,
        inbox: Arc<crate::inbox::Inbox>,
        revocations: Arc<crate::revocation::Revocations>,
        registry: Arc<Registry>,
        router: Arc<dyn Router>,
    ) -> AppState {
        let ctx =
            Ctx { store, router, inbox, max_message_bytes: config.session.max_message_bytes, social: config.social };
        let ws_config = ws_config(&config);
        let handshakes = Slots::new(config.server.max_handshakes, config.server.refusal_slots);
        let sessions = Arc::new(Semaphore::new(config.server.max_connections));
        let handshakes_per_ip = PerAddress::new(config.server.max_handshakes_per_ip);
        let sessions_per_ip = PerAddress::new(config.server.max_connections_per_ip);
        let admission = TokenBucket::new(config.server.upgrade_rate_per_sec, config.server.upgrade_burst);
        // Validated with the config; an unparsable entry cannot reach here.
        let trusted_proxies = config.server.trusted_proxies.iter().filter_map(|p| Cidr::parse(p).ok()).collect();
        AppState {
            config,
            auth,
            registry,
            handlers: HandlerTable::with_builtins(),
            ctx,
            ws_config,
            handshakes,
            sessions,
            handshakes_per_ip,
            sessions_per_ip,
            admission,
            trusted_proxies,
            revocations,
            cluster: None,
            draining: AtomicBool::new(false),
        }
    }

    /// The peer is one of `server.trusted_proxies`.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// Readiness: false from the moment shutdown or a drain begins.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// tungstenite's defaults cost ~133 KiB per idle connection (an eagerly
/// zeroed 128 KiB read buffer). Every size here comes from our config.
fn ws_config(config: &Config) -> WebSocketConfig {
    let s = &config.session;
    WebSocketConfig::default()
        .read_buffer_size(s.read_buffer_bytes)
        .write_buffer_size(s.write_buffer_bytes)
        // Room for one full batch beyond the buffer before writes error out;
        // the write timeout catches peers that stop reading.
        .max_write_buffer_size(s.write_buffer_bytes + 2 * s.max_message_bytes + 1024)
        .max_message_size(Some(s.max_message_bytes))
        .max_frame_size(Some(s.max_message_bytes))
}
