//! What the gateway's tasks and the internal API share.

use crate::admission::TokenBucket;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::gateway::Cidr;
use crate::handlers::{Ctx, HandlerTable};
use crate::registry::Registry;
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub struct AppState {
    pub config: Config,
    pub auth: Authenticator,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub handlers: HandlerTable,
    pub ctx: Ctx,
    pub ws_config: WebSocketConfig,
    /// One permit per connection, taken at accept and held for the session's
    /// life: `server.max_connections` is a hard bound.
    pub connections: Arc<Semaphore>,
    pub admission: TokenBucket,
    pub trusted_proxies: Vec<Cidr>,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(config: Config, auth: Authenticator, store: Arc<dyn Store>) -> AppState {
        let registry = Arc::new(Registry::new());
        let ctx = Ctx { store: store.clone(), router: registry.clone() };
        let ws_config = ws_config(&config);
        let connections = Arc::new(Semaphore::new(config.server.max_connections));
        let admission = TokenBucket::new(config.server.upgrade_rate_per_sec, config.server.upgrade_burst);
        // Validated with the config; an unparsable entry cannot reach here.
        let trusted_proxies = config.server.trusted_proxies.iter().filter_map(|p| Cidr::parse(p).ok()).collect();
        AppState {
            config,
            auth,
            registry,
            store,
            handlers: HandlerTable::with_builtins(),
            ctx,
            ws_config,
            connections,
            admission,
            trusted_proxies,
            draining: AtomicBool::new(false),
        }
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
