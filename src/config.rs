//! Configuration. Every field has a default, a unit in its name, a valid
//! range enforced by [`Config::validate`], and a reason in
//! config/pushgate.toml, which is the documented copy of these defaults.
//!
//! A leaf module: it imports nothing from the rest of the crate, so every
//! other module can depend on it without cycles.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The development secret the shipped config uses. It is announced loudly at
/// startup and refused on any non-loopback listen address.
pub const DEV_JWT_SECRET: &str = "pushgate-dev-secret-do-not-deploy";

/// The development API key of the shipped config, refused off loopback.
pub const DEV_API_KEY: &str = "pushgate-dev-api-key-do-not-deploy";

/// Bytes of the `[u32 action]` header every frame starts with. Mirrors
/// `protocol::HEADER_LEN` (kept local so this module stays a leaf; a test in
/// tests/config.rs keeps the two equal).
pub const ACTION_HEADER_BYTES: usize = 4;

/// Longest accepted `server.node_id` (characters).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Deepest chain of `include`s [`Config::load`] follows (and so the bound on
/// include cycles).
const MAX_INCLUDE_DEPTH: usize = 8;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub social: SocialConfig,
    pub cluster: ClusterConfig,
    pub inbox: InboxConfig,
    pub webhook: WebhookConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub accept_backlog: u32,
    /// Established sessions (upgraded connections) at once.
    pub max_connections: usize,
    /// Connections between accept and upgrade at once: a slot is taken
    /// before accept, apart from the sessions' budget.
    pub max_handshakes: usize,
    /// Handshakes in progress from one client address (not counted for
    /// trusted proxies: see config/pushgate.toml).
    pub max_handshakes_per_ip: u32,
    /// Established sessions from one client address (the forwarded
    /// address behind a trusted proxy).
    pub max_connections_per_ip: u32,
    /// Sockets per listener beyond its connection bound, used at once to
    /// answer 503 `at_capacity`; past them connections wait in the backlog.
    pub refusal_slots: usize,
    pub handshake_timeout_ms: u64,
    pub max_request_head_bytes: usize,
    pub shutdown_timeout_ms: u64,
    /// Serve the browser console (`/`, `/pushgate.js`) on the public listener.
    pub console: bool,
    /// Serve the RFC 6455 echo endpoint `/echo` (for conformance suites).
    pub echo: bool,
    /// Runtime worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// Peers (IPs or CIDRs) whose X-Forwarded-For / X-Real-IP are believed.
    pub trusted_proxies: Vec<String>,
    /// SIGTERM closes sessions spread over this window (ms).
    pub drain_window_ms: u64,
    /// Upper bound of the randomized `after_ms` in RECONNECT hints (ms).
    pub reconnect_hint_max_ms: u64,
    /// New upgrades admitted per second (token bucket); 0 = unlimited.
    pub upgrade_rate_per_sec: f64,
    /// Upgrades admitted at once before the rate applies.
    pub upgrade_burst: u32,
    /// Names this node (session ids, logs): 1-64 characters of
    /// `[A-Za-z0-9_-]`. Defaults to the sanitized host name.
    pub node_id: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub enum Algorithm {
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub algorithm: Algorithm,
    /// HS256 shared secret; `PUSHGATE_JWT_SECRET` overrides it.
    pub secret: String,
    /// PEM public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    /// When set, tokens must carry exactly this `iss`.
    pub issuer: Option<String>,
    /// When set, tokens must carry this value in `aud` (a string, or an array
    /// of strings holding it).
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (seconds, 0-3600).
    pub leeway_secs: u64,
    pub query_param: String,
    pub cookie_name: String,
    pub device_claim: String,
    /// Origins allowed to open a socket besides same-origin pages and clients
    /// that send no Origin (native apps). `["*"]` allows every origin.
    pub allowed_origins: Vec<String>,
    /// TOKEN_EXPIRING is sent this long before a session's token expires
    /// (s); 0: never.
    pub expiry_warning_secs: u64,
    /// How long a revocation refuses the user's older tokens (s): longer
    /// than any token you issue lives.
    pub revocation_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub max_message_bytes: usize,
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub heartbeat_secs: u64,
    pub idle_timeout_secs: u64,
    pub write_timeout_ms: u64,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub max_batch_frames: usize,
    /// Inbound data frames a session may send per second (token bucket).
    pub max_frames_per_sec: u32,
    /// Frames a session may send at once before the rate applies.
    pub frame_burst: u32,
    /// Frames refused for the rate before the bucket refilled completely;
    /// one more closes the session with 4004.
    pub max_rate_limited_frames: u32,
    /// Sessions one user may hold at once, across the cluster; a newer one
    /// closes the oldest with 4005 SESSION_REPLACED.
    pub max_per_user: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer key for the internal API; `PUSHGATE_API_KEY` overrides it.
    pub key: String,
    pub max_body_bytes: usize,
    pub max_users_per_push: usize,
    pub max_messages_per_batch: usize,
    pub max_profile_bytes: usize,
    /// Open connections to the internal API; beyond it, 503 and close.
    pub max_connections: usize,
    /// An API connection waiting this long for a request head is closed.
    pub idle_timeout_ms: u64,
}

/// `[store]`: how the embedded store opens and heals.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Verify every page of the store file at startup; refuse a corrupt one.
    pub check_integrity: bool,
    /// Longest wait between attempts to reopen the store after an I/O error
    /// (ms); attempts start at 250 ms and double up to this.
    pub reopen_backoff_max_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { check_integrity: true, reopen_backoff_max_ms: 30_000 }
    }
}

/// `[social]`: bounds on what one user's relationships may hold, so no
/// stranger (or flood of strangers) can grow another user's state without
/// limit.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SocialConfig {
    /// Friends per user.
    pub max_friends: usize,
    /// Pending requests addressed to one user; past it ADD_FRIEND to them
    /// answers `inbox_full` (nothing of theirs is evicted).
    pub max_requests_in: usize,
    /// Pending requests one user has sent; past it `too_many_requests_out`.
    pub max_requests_out: usize,
}

impl Default for SocialConfig {
    fn default() -> Self {
        SocialConfig { max_friends: 1000, max_requests_in: 200, max_requests_out: 100 }
    }
}

/// `[cluster]`: several nodes sharing one Redis. Without `redis_url` the
/// node runs alone on its embedded store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`; `--redis-url` overrides it. None: one node.
    pub redis_url: Option<String>,
    /// Bound on every Redis call and every answer awaited from another
    /// node (ms): past it the caller gets an honest partial answer.
    pub timeout_ms: u64,
    /// How long a node's presence entries live without a refresh (s): a
    /// crashed node's users are reported offline after at most this.
    pub presence_ttl_secs: u64,
    /// How often the holder refreshes its presence entries (s).
    pub presence_refresh_secs: u64,
    /// How often each node checks its own subscription end to end (s).
    pub subscription_check_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            timeout_ms: 500,
            presence_ttl_secs: 30,
            presence_refresh_secs: 10,
            subscription_check_secs: 10,
        }
    }
}

/// What a MESSAGE frame adds around a durable payload: the header, the id
/// and the inner action (config is a leaf: `protocol::MESSAGE_OVERHEAD`
/// is the same number, and a test holds them equal).
pub const MESSAGE_FRAME_OVERHEAD: usize = 16;

/// `[inbox]`: durable delivery (proto-spec/README.md section 8).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Held messages per user; past it the oldest is evicted (loudly).
    pub max_messages: usize,
    /// Finished messages per user whose status is kept.
    pub max_tombstones: usize,
    /// The longest a message is held (s); also the default and maximum ttl.
    pub max_age_secs: u64,
    /// Bytes of one durable message's payload; None: as much as a MESSAGE
    /// frame can carry (`session.max_message_bytes` - 16).
    pub max_payload_bytes: Option<usize>,
    /// How long an idempotency key returns the original id (s).
    pub idempotency_window_secs: u64,
    /// Devices whose positions a user keeps; the least recently seen goes.
    pub max_devices: usize,
    /// Messages read and sent per replay step on connect.
    pub replay_page: usize,
    /// Actions stored durable even without `"persist": true`.
    pub persist_actions: Vec<u32>,
    /// Embedded inbox: bytes per log segment (a full one is closed and the
    /// next begun; compaction frees closed ones).
    pub segment_bytes: u64,
    /// Embedded inbox: users whose record is kept in memory after a write,
    /// decoded and as stored (the ack that follows a push skips reading it
    /// again).
    pub record_cache_users: usize,
    /// Embedded inbox: when a new message must be on disk.
    pub sync: InboxSync,
    /// Embedded inbox: shortest time between the starts of two disk syncs
    /// (µs), unless `sync_batch` saves wait: under load, new messages
    /// arriving meanwhile share one sync.
    pub min_sync_interval_us: u64,
    /// Embedded inbox: saves waiting for a sync (a request's messages to
    /// one user are one) that end the pause early: under load the pause
    /// spaces syncs, this keeps it from capping a burst's throughput.
    pub sync_batch: usize,
    /// Embedded inbox: bytes of writes the sync thread writes out just
    /// before its next sync instead of each write making its own `pwrite`
    /// (0: every write makes its own; with `interval` new messages always
    /// do).
    pub write_behind_bytes: usize,
    /// Embedded inbox: the longest a write waits for a disk sync when none
    /// is asked for (acks, positions; every write with `sync = "interval"`).
    pub sync_interval_ms: u64,
    /// Embedded inbox: how often every user's expired messages are removed
    /// (s), for users nobody touches any more.
    pub sweep_interval_secs: u64,
    /// Embedded inbox: bound on one write waiting for its disk commit (ms);
    /// past it the caller gets an error (Redis uses `cluster.timeout_ms`).
    pub write_timeout_ms: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            max_messages: 1000,
            max_tombstones: 64,
            max_age_secs: 7 * 24 * 3600,
            max_payload_bytes: None,
            idempotency_window_secs: 24 * 3600,
            max_devices: 16,
            replay_page: 100,
            persist_actions: Vec::new(),
            segment_bytes: 64 << 20,
            record_cache_users: 10_000,
            sync: InboxSync::Always,
            min_sync_interval_us: 5000,
            sync_batch: 32,
            write_behind_bytes: 1 << 20,
            sync_interval_ms: 1000,
            sweep_interval_secs: 3600,
            write_timeout_ms: 5000,
        }
    }
}

/// `[webhook]`: the undelivered-message webhook (README "Undelivered
/// webhook"). Without `url`, none is sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint; None: no webhooks.
    pub url: Option<String>,
    /// HMAC-SHA256 key of the signature; `PUSHGATE_WEBHOOK_SECRET` overrides it.
    pub secret: String,
    /// PEM file of the only CA trusted for an `https://` url (a private
    /// PKI); None: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A durable message not acked this long after it was stored (ms)
    /// causes the webhook.
    pub delay_ms: u64,
    /// Bound on one delivery attempt (ms).
    pub timeout_ms: u64,
    /// Attempts before giving up on one event.
    pub max_attempts: u32,
    /// Pause before the first retry (ms); doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest pause between retries (ms).
    pub backoff_max_ms: u64,
    /// Attempts in flight at once, per node.
    pub max_in_flight: usize,
    /// How often due events are looked for (ms).
    pub scan_interval_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: String::new(),
            ca_file: None,
            delay_ms: 30_000,
            timeout_ms: 5_000,
            max_attempts: 8,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            max_in_flight: 32,
            scan_interval_ms: 250,
        }
    }
}

impl WebhookConfig {
    /// How long a node that took a due event owns it: past this, another
    /// node (or this one after a restart) takes it again. Longer than an
    /// attempt can last.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(2).saturating_add(5_000)
    }
}

/// `[log]`: how the process logs to stderr.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub ansi: LogAnsi,
}

/// When the embedded inbox answers a new message as stored.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InboxSync {
    /// After a disk sync covers it (shared by everything written meanwhile):
    /// nothing answered is lost, even to a power cut.
    #[default]
    Always,
    /// Once it is in the OS page cache; synced within `sync_interval_ms`.
    /// A crash of the process loses nothing; a power cut or kernel crash
    /// can lose what was answered in the last interval.
    Interval,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `message`, fields).
    Json,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogAnsi {
    /// Colours only when stderr is a terminal and `NO_COLOR` is unset.
    #[default]
    Auto,
    Always,
    Never,
}

impl LogAnsi {
    /// Whether to colour, given whether stderr is a terminal and whether
    /// `NO_COLOR` is set.
    pub fn enabled(self, stderr_is_terminal: bool, no_color: bool) -> bool {
        match self {
            LogAnsi::Auto => stderr_is_terminal && !no_color,
            LogAnsi::Always => true,
            LogAnsi::Never => false,
        }
    }
}

/// The machine's host name as a valid node id (see [`sanitize_node_id`]).
pub fn default_node_id() -> String {
    sanitize_node_id(&host_name().unwrap_or_default())
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we read only up to the first NUL within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        return Some(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string())
}

/// Maps any text to a valid node id: characters outside `[A-Za-z0-9_-]`
/// become `-`, the result is cut to 64 characters, and an empty result is
/// `"node"`.
pub fn sanitize_node_id(raw: &str) -> String {
    let id: String =
        raw.trim().chars().map(|c| if is_node_id_char(c) { c } else { '-' }).take(MAX_NODE_ID_LEN).collect();
    if id.is_empty() { "node".to_string() } else { id }
}

fn is_node_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// An address block: `10.0.0.0/8`, `127.0.0.1`, `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// # Errors
    /// Not an address or a prefix length out of range.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or(format!("{text:?}: bad prefix"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(ip)) => {
                mask_eq(u128::from(u32::from(n)), u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(ip)) => mask_eq(u128::from(n), u128::from(ip), 128, self.prefix),
            // An IPv4 peer seen as ::ffff:a.b.c.d.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip.to_ipv4_mapped().is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let shift = bits - u32::from(prefix);
    if shift >= bits {
        return true;
    }
    (a >> shift) == (b >> shift)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("data"),
            accept_backlog: 4096,
            max_connections: 10_000,
            max_handshakes: 1024,
            max_handshakes_per_ip: 32,
            max_connections_per_ip: 1000,
            refusal_slots: 64,
            handshake_timeout_ms: 10_000,
            max_request_head_bytes: 8192,
            shutdown_timeout_ms: 10_000,
            console: false,
            echo: false,
            worker_threads: 0,
            trusted_proxies: Vec::new(),
            drain_window_ms: 30_000,
            reconnect_hint_max_ms: 15_000,
            upgrade_rate_per_sec: 2000.0,
            upgrade_burst: 4000,
            node_id: default_node_id(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: Algorithm::HS256,
            secret: String::new(),
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            query_param: "token".into(),
            cookie_name: "pushgate_token".into(),
            device_claim: "device".into(),
            allowed_origins: Vec::new(),
            expiry_warning_secs: 60,
            revocation_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_message_bytes: 64 * 1024,
            queue_capacity: 256,
            queue_max_bytes: 1024 * 1024,
            heartbeat_secs: 25,
            idle_timeout_secs: 60,
            write_timeout_ms: 10_000,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 8192,
            max_batch_frames: 64,
            max_frames_per_sec: 100,
            frame_burst: 200,
            max_rate_limited_frames: 100,
            max_per_user: 10,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            key: String::new(),
            max_body_bytes: 1024 * 1024,
            max_users_per_push: 1000,
            max_messages_per_batch: 1000,
            max_profile_bytes: 16 * 1024,
            max_connections: 1024,
            idle_timeout_ms: 75_000,
        }
    }
}

/// A configuration that cannot be served, with the reason for the operator.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a TOML file. A top-level `include = "other.toml"` (resolved
    /// relative to the including file) loads that file first and lays this
    /// one over it: tables merge key by key, any other value (numbers,
    /// strings, arrays) replaces the included one. Includes may nest up to
    /// 8 deep. Without an include, keys left out take the built-in defaults.
    ///
    /// # Errors
    /// A file is unreadable or not valid pushgate TOML (unknown keys too),
    /// or the include chain is too deep (a cycle).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        if !table.contains_key("include") {
            // Parse the text itself: errors then point at a line.
            return toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())));
        }
        let merged = load_table(path, table, 0)?;
        merged.try_into().map_err(|e| ConfigError(format!("{} (merged with its includes): {e}", path.display())))
    }

    /// Applies `PUSHGATE_JWT_SECRET` and `PUSHGATE_API_KEY`: secrets belong in
    /// the environment (or a systemd EnvironmentFile), not in the config file.
    pub fn apply_env(&mut self) {
        if let Ok(secret) = std::env::var("PUSHGATE_JWT_SECRET")
            && !secret.is_empty()
        {
            self.auth.secret = secret;
        }
        if let Ok(key) = std::env::var("PUSHGATE_API_KEY")
            && !key.is_empty()
        {
            self.api.key = key;
        }
        if let Ok(secret) = std::env::var("PUSHGATE_WEBHOOK_SECRET")
            && !secret.is_empty()
        {
            self.webhook.secret = secret;
        }
    }

    pub fn uses_dev_secret(&self) -> bool {
        self.auth.algorithm == Algorithm::HS256 && self.auth.secret == DEV_JWT_SECRET
    }

    pub fn uses_dev_api_key(&self) -> bool {
        self.api.key == DEV_API_KEY
    }

    /// Refuses configurations that would be unsafe or cannot work. Every
    /// setting has a range, documented beside it in config/pushgate.toml.
    ///
    /// # Errors
    /// A human-readable reason naming the offending setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_auth()?;
        self.validate_session()?;
        self.validate_api()?;
        self.validate_store()?;
        self.validate_social()?;
        self.validate_cluster()?;
        self.validate_inbox()?;
        self.validate_webhook()
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let w = &self.webhook;
        if let Some(url) = &w.url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > 2048 || url.contains(char::is_whitespace) {
                return fail(&format!("webhook.url must be an http:// or https:// URL (got {url:?})"));
            }
            if w.secret.len() < 16 {
                return fail(
                    "webhook.secret must be at least 16 bytes when webhook.url is set (PUSHGATE_WEBHOOK_SECRET)",
                );
            }
        }
        range("webhook.delay_ms", w.delay_ms, 0, 7 * 24 * 3600 * 1000)?;
        range("webhook.timeout_ms", w.timeout_ms, 100, 120_000)?;
        range("webhook.max_attempts", w.max_attempts, 1, 100)?;
        range("webhook.backoff_initial_ms", w.backoff_initial_ms, 10, 3_600_000)?;
        range("webhook.backoff_max_ms", w.backoff_max_ms, w.backoff_initial_ms, 24 * 3_600_000)?;
        range("webhook.max_in_flight", w.max_in_flight, 1, 10_000)?;
        range("webhook.scan_interval_ms", w.scan_interval_ms, 10, 60_000)
    }

    /// The largest payload a MESSAGE frame can carry.
    fn durable_payload_room(&self) -> usize {
        self.session.max_message_bytes.saturating_sub(MESSAGE_FRAME_OVERHEAD)
    }

    /// The bound on one durable message's payload (bytes).
    pub fn max_durable_payload_bytes(&self) -> usize {
        self.inbox.max_payload_bytes.unwrap_or_else(|| self.durable_payload_room())
    }

    fn validate_inbox(&self) -> Result<(), ConfigError> {
        let c = &self.inbox;
        range("inbox.max_messages", c.max_messages, 1, 100_000)?;
        range("inbox.max_tombstones", c.max_tombstones, 0, 100_000)?;
        range("inbox.max_age_secs", c.max_age_secs, 1, 365 * 24 * 3600)?;
        if let Some(max) = c.max_payload_bytes {
            range("inbox.max_payload_bytes", max, 0, self.durable_payload_room())?;
        }
        range("inbox.idempotency_window_secs", c.idempotency_window_secs, 1, 30 * 24 * 3600)?;
        range("inbox.max_devices", c.max_devices, 1, 1000)?;
        range("inbox.replay_page", c.replay_page, 1, 10_000)?;
        range("inbox.segment_bytes", c.segment_bytes, 65_536, 1 << 30)?;
        range("inbox.min_sync_interval_us", c.min_sync_interval_us, 0, 100_000)?;
        range("inbox.sync_batch", c.sync_batch, 1, 1_000_000)?;
        range("inbox.write_behind_bytes", c.write_behind_bytes as u64, 0, 64 << 20)?;
        range("inbox.sync_interval_ms", c.sync_interval_ms, 1, 60_000)?;
        range("inbox.record_cache_users", c.record_cache_users, 0, 10_000_000)?;
        range("inbox.sweep_interval_secs", c.sweep_interval_secs, 1, 7 * 24 * 3600)?;
        range("inbox.write_timeout_ms", c.write_timeout_ms, 100, 600_000)?;
        match c.persist_actions.iter().find(|a| !(200..=299).contains(*a) && **a < 1000) {
            Some(bad) => {
                Err(ConfigError(format!("inbox.persist_actions: {bad} is not a pushable action (200-299 or >= 1000)")))
            }
            None => Ok(()),
        }
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if let Some(url) = &c.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://"))
        {
            return Err(ConfigError(format!(
                "cluster.redis_url must start with redis://, rediss:// or redis+unix:// (got {url:?})"
            )));
        }
        range("cluster.timeout_ms", c.timeout_ms, 10, 60_000)?;
        range("cluster.presence_ttl_secs", c.presence_ttl_secs, 2, 3600)?;
        range("cluster.presence_refresh_secs", c.presence_refresh_secs, 1, 1800)?;
        if c.presence_refresh_secs * 2 > c.presence_ttl_secs {
            return Err(ConfigError(
                "cluster.presence_refresh_secs must be at most half of cluster.presence_ttl_secs \
                 (a refresh may be late once without the entries expiring)"
                    .into(),
            ));
        }
        range("cluster.subscription_check_secs", c.subscription_check_secs, 1, 3600)
    }

    fn validate_social(&self) -> Result<(), ConfigError> {
        let s = &self.social;
        range("social.max_friends", s.max_friends, 1, 100_000)?;
        range("social.max_requests_in", s.max_requests_in, 1, 100_000)?;
        range("social.max_requests_out", s.max_requests_out, 1, 100_000)
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.listen == s.api_listen && s.listen.port() != 0 {
            return fail("server.api_listen must differ from server.listen");
        }
        if s.data_dir.as_os_str().is_empty() {
            return fail("server.data_dir must not be empty");
        }
        range("server.accept_backlog", s.accept_backlog, 1, 65_535)?;
        range("server.max_connections", s.max_connections, 1, 1_000_000)?;
        range("server.max_handshakes", s.max_handshakes, 1, 1_000_000)?;
        range("server.max_handshakes_per_ip", s.max_handshakes_per_ip, 1, 1_000_000)?;
        range("server.max_connections_per_ip", s.max_connections_per_ip, 1, 1_000_000)?;
        range("server.refusal_slots", s.refusal_slots, 1, 65_536)?;
        range("server.handshake_timeout_ms", s.handshake_timeout_ms, 100, 300_000)?;
        range("server.max_request_head_bytes", s.max_request_head_bytes, 1024, 1024 * 1024)?;
        range("server.shutdown_timeout_ms", s.shutdown_timeout_ms, 0, 600_000)?;
        range("server.worker_threads", s.worker_threads, 0, 1024)?;
        for proxy in &s.trusted_proxies {
            Cidr::parse(proxy).map_err(|e| ConfigError(format!("server.trusted_proxies: {e}")))?;
        }
        range("server.drain_window_ms", s.drain_window_ms, 0, 3_600_000)?;
        range("server.reconnect_hint_max_ms", s.reconnect_hint_max_ms, 0, 3_600_000)?;
        let rate = s.upgrade_rate_per_sec;
        if !(rate == 0.0 || (0.01..=1_000_000.0).contains(&rate)) {
            return fail(&format!(
                "server.upgrade_rate_per_sec = {rate} must be 0 (unlimited) or within 0.01..=1000000"
            ));
        }
        range("server.upgrade_burst", s.upgrade_burst, 1, 1_000_000)?;
        let id = &s.node_id;
        if id.is_empty() || id.chars().count() > MAX_NODE_ID_LEN || !id.chars().all(is_node_id_char) {
            return fail(&format!("server.node_id = {id:?} must be 1-64 characters of A-Z a-z 0-9 _ -"));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.algorithm == Algorithm::HS256 && a.secret.len() < 16 {
            return fail("auth.secret (or PUSHGATE_JWT_SECRET) must be at least 16 bytes for HS256");
        }
        if a.algorithm != Algorithm::HS256 && a.public_key_file.is_none() {
            return fail("auth.public_key_file is required for RS256/ES256");
        }
        if self.uses_dev_secret() && !self.server.listen.ip().is_loopback() {
            return fail(
                "refusing the development JWT secret on a non-loopback listen address; \
                 set PUSHGATE_JWT_SECRET",
            );
        }
        for (name, value) in [("auth.issuer", &a.issuer), ("auth.audience", &a.audience)] {
            if let Some(value) = value {
                range(&format!("{name} length"), value.len(), 1, 1024)?;
            }
        }
        range("auth.leeway_secs", a.leeway_secs, 0, 3600)?;
        for (name, value) in [("auth.query_param", &a.query_param), ("auth.cookie_name", &a.cookie_name)] {
            let ok = (1..=64).contains(&value.len())
                && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return fail(&format!("{name} = {value:?} must be 1-64 characters of A-Z a-z 0-9 _ - ."));
            }
        }
        range("auth.device_claim length", a.device_claim.len(), 1, 64)?;
        range("auth.expiry_warning_secs", a.expiry_warning_secs, 0, 86_400)?;
        range("auth.revocation_ttl_secs", a.revocation_ttl_secs, 60, 10 * 365 * 24 * 3600)?;
        for origin in &a.allowed_origins {
            let host = origin.split_once("://");
            let ok = origin == "*"
                || host.is_some_and(|(scheme, host)| !scheme.is_empty() && !host.is_empty() && !host.contains('/'));
            if !ok {
                return fail(&format!(
                    "auth.allowed_origins: {origin:?} is not \"*\" or an origin like \"https://app.example\" \
                     (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        Ok(())
    }

    fn validate_session(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        range("session.max_message_bytes", s.max_message_bytes, ACTION_HEADER_BYTES, 16 * 1024 * 1024)?;
        range("session.queue_capacity", s.queue_capacity, 1, 1_000_000)?;
        if s.queue_max_bytes < s.max_message_bytes {
            return fail("session.queue_max_bytes must hold at least one message of session.max_message_bytes");
        }
        range("session.queue_max_bytes", s.queue_max_bytes, 0, 1024 * 1024 * 1024)?;
        range("session.heartbeat_secs", s.heartbeat_secs, 1, 3600)?;
        if s.idle_timeout_secs <= s.heartbeat_secs {
            return fail("session.idle_timeout_secs must be greater than session.heartbeat_secs");
        }
        range("session.idle_timeout_secs", s.idle_timeout_secs, 2, 86_400)?;
        range("session.write_timeout_ms", s.write_timeout_ms, 100, 600_000)?;
        range("session.read_buffer_bytes", s.read_buffer_bytes, 256, 1024 * 1024)?;
        range("session.write_buffer_bytes", s.write_buffer_bytes, 0, 1024 * 1024)?;
        range("session.max_batch_frames", s.max_batch_frames, 1, 65_536)?;
        range("session.max_frames_per_sec", s.max_frames_per_sec, 1, 1_000_000)?;
        range("session.frame_burst", s.frame_burst, 1, 1_000_000)?;
        range("session.max_rate_limited_frames", s.max_rate_limited_frames, 1, 1_000_000)?;
        range("session.max_per_user", s.max_per_user, 1, 10_000)
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        let a = &self.api;
        if a.key.len() < 16 {
            return fail("api.key (or PUSHGATE_API_KEY) must be at least 16 bytes; the internal API is never open");
        }
        if a.key == DEV_API_KEY && !self.server.api_listen.ip().is_loopback() {
            return fail(
                "refusing the development API key on a non-loopback api_listen address; \
                 set PUSHGATE_API_KEY",
            );
        }
        range("api.max_body_bytes", a.max_body_bytes, 1024, 256 * 1024 * 1024)?;
        range("api.max_users_per_push", a.max_users_per_push, 1, 1_000_000)?;
        range("api.max_messages_per_batch", a.max_messages_per_batch, 1, 100_000)?;
        range("api.max_profile_bytes", a.max_profile_bytes, 2, 1024 * 1024)?;
        range("api.max_connections", a.max_connections, 1, 65_536)?;
        range("api.idle_timeout_ms", a.idle_timeout_ms, 100, 3_600_000)
    }

    fn validate_store(&self) -> Result<(), ConfigError> {
        range("store.reopen_backoff_max_ms", self.store.reopen_backoff_max_ms, 250, 600_000)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.server.handshake_timeout_ms)
    }

    pub fn drain_window(&self) -> Duration {
        Duration::from_millis(self.server.drain_window_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_timeout_ms)
    }
}

fn fail(message: &str) -> Result<(), ConfigError> {
    Err(ConfigError(message.to_string()))
}

/// `name = value` must lie within `lo..=hi`.
fn range<T: PartialOrd + std::fmt::Display>(name: &str, value: T, lo: T, hi: T) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(ConfigError(format!("{name} = {value} is out of range {lo}..={hi}")));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))
}

/// `table` (parsed from `path`) laid over the file its `include` names.
fn load_table(path: &Path, mut table: toml::Table, depth: usize) -> Result<toml::Table, ConfigError> {
    let Some(include) = table.remove("include") else {
        return Ok(table);
    };
    let Some(include) = include.as_str() else {
        return Err(ConfigError(format!("{}: include must be a file name (a string)", path.display())));
    };
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError(format!(
            "{}: includes nest deeper than {MAX_INCLUDE_DEPTH} (a cycle?)",
            path.display()
        )));
    }
    let base_path = path.parent().unwrap_or_else(|| Path::new("")).join(include);
    let text = read(&base_path)?;
    let base: toml::Table = toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", base_path.display())))?;
    let mut base = load_table(&base_path, base, depth + 1)?;
    merge(&mut base, table);
    Ok(base)
}

/// Lays `over` onto `base`: tables merge recursively, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        let mut c = Config::default();
        c.auth.secret = DEV_JWT_SECRET.into();
        c.api.key = DEV_API_KEY.into();
        c
    }

    #[test]
    fn shipped_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pushgate.toml");
        let config = Config::load(&path).unwrap();
        config.validate().unwrap();
        assert!(config.uses_dev_secret() && config.uses_dev_api_key());
        assert!(config.server.listen.ip().is_loopback() && config.server.api_listen.ip().is_loopback());
    }

    #[test]
    fn dev_secrets_are_refused_off_loopback() {
        let mut c = valid();
        c.validate().unwrap();
        c.server.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.validate().unwrap_err().0.contains("development JWT secret"));
        c.auth.secret = "a-real-secret-from-the-environment".into();
        c.validate().unwrap();
        c.server.api_listen = "0.0.0.0:8081".parse().unwrap();
        assert!(c.validate().unwrap_err().0.contains("development API key"));
    }

    #[test]
    fn the_api_never_runs_without_a_key() {
        let mut c = valid();
        c.api.key = String::new();
        assert!(c.validate().unwrap_err().0.contains("api.key"));
        c.server.api_listen = "0.0.0.0:8081".parse().unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_session_queue_holds_at_least_one_message() {
        let mut c = valid();
        c.session.queue_max_bytes = c.session.max_message_bytes - 1;
        assert!(c.validate().unwrap_err().0.contains("session.queue_max_bytes"));
        c.session.queue_max_bytes = c.session.max_message_bytes;
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[server]\nlisten_typo = 1\n").is_err());
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    /// Each setting outside its documented range is refused at startup with
    /// a message naming it; the range ends themselves are accepted.
    #[test]
    fn every_setting_has_an_enforced_range() {
        type Tweak = fn(&mut Config);
        let refused: &[(&str, Tweak)] = &[
            ("session.heartbeat_secs", |c| {
                c.session.heartbeat_secs = 10_000_000_000_000_000_000;
                c.session.idle_timeout_secs = u64::MAX;
            }),
            ("session.heartbeat_secs", |c| c.session.heartbeat_secs = 0),
            ("session.idle_timeout_secs", |c| c.session.idle_timeout_secs = 86_401),
            ("session.idle_timeout_secs", |c| c.session.idle_timeout_secs = c.session.heartbeat_secs),
            ("auth.leeway_secs", |c| c.auth.leeway_secs = 10_000_000_000),
            ("auth.leeway_secs", |c| c.auth.leeway_secs = 3601),
            ("server.max_request_head_bytes", |c| c.server.max_request_head_bytes = 0),
            ("api.max_profile_bytes", |c| c.api.max_profile_bytes = 0),
            ("api.max_body_bytes", |c| c.api.max_body_bytes = 0),
            ("api.max_users_per_push", |c| c.api.max_users_per_push = 0),
            ("api.max_messages_per_batch", |c| c.api.max_messages_per_batch = 0),
            ("api.max_connections", |c| c.api.max_connections = 0),
            ("api.idle_timeout_ms", |c| c.api.idle_timeout_ms = 0),
            ("store.reopen_backoff_max_ms", |c| c.store.reopen_backoff_max_ms = 249),
            ("store.reopen_backoff_max_ms", |c| c.store.reopen_backoff_max_ms = 600_001),
            ("server.accept_backlog", |c| c.server.accept_backlog = 0),
            ("server.max_connections", |c| c.server.max_connections = 0),
            ("server.max_handshakes", |c| c.server.max_handshakes = 0),
            ("server.max_handshakes_per_ip", |c| c.server.max_handshakes_per_ip = 0),
            ("server.max_connections_per_ip", |c| c.server.max_connections_per_ip = 0),
            ("session.max_frames_per_sec", |c| c.session.max_frames_per_sec = 0),
            ("session.frame_burst", |c| c.session.frame_burst = 0),
            ("session.max_rate_limited_frames", |c| c.session.max_rate_limited_frames = 0),
            ("server.handshake_timeout_ms", |c| c.server.handshake_timeout_ms = u64::MAX),
            ("server.shutdown_timeout_ms", |c| c.server.shutdown_timeout_ms = u64::MAX),
            ("server.worker_threads", |c| c.server.worker_threads = 100_000),
            ("server.drain_window_ms", |c| c.server.drain_window_ms = u64::MAX),
            ("server.reconnect_hint_max_ms", |c| c.server.reconnect_hint_max_ms = u64::MAX),
            ("server.upgrade_rate_per_sec", |c| c.server.upgrade_rate_per_sec = f64::NAN),
            ("server.upgrade_rate_per_sec", |c| c.server.upgrade_rate_per_sec = f64::INFINITY),
            ("server.upgrade_rate_per_sec", |c| c.server.upgrade_rate_per_sec = -1.0),
            ("server.upgrade_rate_per_sec", |c| c.server.upgrade_rate_per_sec = 1e-300),
            ("server.upgrade_burst", |c| c.server.upgrade_burst = 0),
            ("server.trusted_proxies", |c| c.server.trusted_proxies = vec!["10.0.0.0/99".into()]),
            ("server.data_dir", |c| c.server.data_dir = PathBuf::new()),
            ("server.api_listen", |c| c.server.api_listen = c.server.listen),
            ("server.node_id", |c| c.server.node_id = String::new()),
            ("server.node_id", |c| c.server.node_id = "web 1".into()),
            ("server.node_id", |c| c.server.node_id = "n".repeat(65)),
            ("auth.issuer", |c| c.auth.issuer = Some(String::new())),
            ("auth.audience", |c| c.auth.audience = Some(String::new())),
            ("auth.query_param", |c| c.auth.query_param = String::new()),
            ("auth.cookie_name", |c| c.auth.cookie_name = "a;b".into()),
            ("auth.device_claim", |c| c.auth.device_claim = String::new()),
            ("auth.allowed_origins", |c| c.auth.allowed_origins = vec!["https://app.example/".into()]),
            ("auth.allowed_origins", |c| c.auth.allowed_origins = vec!["app.example".into()]),
            ("session.max_message_bytes", |c| c.session.max_message_bytes = 3),
            ("session.max_message_bytes", |c| c.session.max_message_bytes = usize::MAX),
            ("session.queue_capacity", |c| c.session.queue_capacity = 0),
            ("session.queue_max_bytes", |c| c.session.queue_max_bytes = usize::MAX),
            ("session.write_timeout_ms", |c| c.session.write_timeout_ms = 0),
            ("session.read_buffer_bytes", |c| c.session.read_buffer_bytes = 0),
            ("session.write_buffer_bytes", |c| c.session.write_buffer_bytes = usize::MAX),
            ("session.max_batch_frames", |c| c.session.max_batch_frames = 0),
            ("social.max_friends", |c| c.social.max_friends = 0),
            ("social.max_friends", |c| c.social.max_friends = 100_001),
            ("social.max_requests_in", |c| c.social.max_requests_in = 0),
            ("social.max_requests_out", |c| c.social.max_requests_out = usize::MAX),
            ("auth.expiry_warning_secs", |c| c.auth.expiry_warning_secs = 86_401),
            ("auth.revocation_ttl_secs", |c| c.auth.revocation_ttl_secs = 59),
            ("webhook.url", |c| c.webhook.url = Some("ftp://x".into())),
            ("webhook.secret", |c| {
                c.webhook.url = Some("http://127.0.0.1:9/hook".into());
                c.webhook.secret = "short".into();
            }),
            ("webhook.delay_ms", |c| c.webhook.delay_ms = u64::MAX),
            ("webhook.timeout_ms", |c| c.webhook.timeout_ms = 0),
            ("webhook.max_attempts", |c| c.webhook.max_attempts = 0),
            ("webhook.backoff_initial_ms", |c| c.webhook.backoff_initial_ms = 0),
            ("webhook.backoff_max_ms", |c| c.webhook.backoff_max_ms = 5),
            ("webhook.max_in_flight", |c| c.webhook.max_in_flight = 0),
            ("webhook.scan_interval_ms", |c| c.webhook.scan_interval_ms = 0),
            ("inbox.max_messages", |c| c.inbox.max_messages = 0),
            ("inbox.max_tombstones", |c| c.inbox.max_tombstones = 100_001),
            ("inbox.max_age_secs", |c| c.inbox.max_age_secs = 0),
            ("inbox.max_payload_bytes", |c| c.inbox.max_payload_bytes = Some(65_521)),
            ("inbox.max_payload_bytes", |c| {
                c.session.max_message_bytes = 1024;
                c.inbox.max_payload_bytes = Some(1009);
            }),
            ("inbox.idempotency_window_secs", |c| c.inbox.idempotency_window_secs = 0),
            ("inbox.max_devices", |c| c.inbox.max_devices = 0),
            ("inbox.replay_page", |c| c.inbox.replay_page = 0),
            ("inbox.segment_bytes", |c| c.inbox.segment_bytes = 0),
            ("inbox.sweep_interval_secs", |c| c.inbox.sweep_interval_secs = 0),
            ("inbox.write_timeout_ms", |c| c.inbox.write_timeout_ms = 0),
            ("inbox.persist_actions", |c| c.inbox.persist_actions = vec![110]),
        ];
        for (field, tweak) in refused {
            let mut c = valid();
            tweak(&mut c);
            let err = c.validate().expect_err(field).0;
            assert!(err.contains(field), "{field}: {err}");
        }
        let accepted: &[Tweak] = &[
            |c| c.auth.leeway_secs = 3600,
            |c| c.auth.leeway_secs = 0,
            |c| {
                c.session.heartbeat_secs = 1;
                c.session.idle_timeout_secs = 2;
            },
            |c| c.session.idle_timeout_secs = 86_400,
            |c| c.server.upgrade_rate_per_sec = 0.0,
            |c| c.server.upgrade_burst = 1,
            |c| c.server.node_id = "web-1_eu".into(),
            |c| c.server.node_id = "n".repeat(64),
            |c| c.server.shutdown_timeout_ms = 0,
            |c| c.server.drain_window_ms = 0,
            |c| {
                c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
                c.server.api_listen = c.server.listen;
            },
            |c| {
                c.auth.allowed_origins =
                    vec!["*".into(), "capacitor://localhost".into(), "http://a.example:8080".into()]
            },
            |c| c.api.max_users_per_push = 1,
            |c| c.api.max_body_bytes = 1024,
            |c| c.session.max_message_bytes = ACTION_HEADER_BYTES,
            |c| c.inbox.max_payload_bytes = Some(0),
            |c| c.inbox.persist_actions = vec![200, 299, 1000, u32::MAX],
            |c| c.social = SocialConfig { max_friends: 1, max_requests_in: 1, max_requests_out: 100_000 },
        ];
        for (i, tweak) in accepted.iter().enumerate() {
            let mut c = valid();
            tweak(&mut c);
            c.validate().unwrap_or_else(|e| panic!("accepted[{i}]: {e}"));
        }
    }

    #[test]
    fn node_ids_are_sanitized_host_names() {
        assert_eq!(sanitize_node_id("web-1.eu.example.com"), "web-1-eu-example-com");
        assert_eq!(sanitize_node_id("  caf\u{e9}_2 "), "caf-_2");
        assert_eq!(sanitize_node_id(""), "node");
        assert_eq!(sanitize_node_id(&"x".repeat(100)).len(), MAX_NODE_ID_LEN);
        let mut c = valid();
        c.server.node_id = default_node_id();
        c.validate().unwrap();
    }

    #[test]
    fn ansi_auto_colours_only_a_terminal() {
        assert!(LogAnsi::Auto.enabled(true, false));
        assert!(!LogAnsi::Auto.enabled(false, false), "a log file gets no escape sequences");
        assert!(!LogAnsi::Auto.enabled(true, true), "NO_COLOR");
        assert!(LogAnsi::Always.enabled(false, true));
        assert!(!LogAnsi::Never.enabled(true, false));
        let log: Config = toml::from_str("[log]\nformat = \"json\"\nansi = \"never\"\n").unwrap();
        assert_eq!((log.log.format, log.log.ansi), (LogFormat::Json, LogAnsi::Never));
        assert!(toml::from_str::<Config>("[log]\nansi = \"sometimes\"\n").is_err());
    }

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name)
    }

    fn as_json(config: &Config) -> serde_json::Value {
        serde_json::to_value(config).unwrap()
    }

    /// config/pushgate.toml documents every field: set to the default the
    /// code uses (or deliberately different, or commented out where the
    /// default is "unset" or computed), each with its default and range.
    #[test]
    fn shipped_config_states_the_code_defaults() {
        // Deliberately different in the development config.
        const DIFFERENT: &[&str] = &["auth.secret", "api.key", "server.console"];
        // Unset or computed defaults: shown as a commented-out example.
        const COMMENTED: &[&str] = &[
            "auth.public_key_file",
            "auth.issuer",
            "auth.audience",
            "server.node_id",
            "cluster.redis_url",
            "inbox.max_payload_bytes",
            "webhook.url",
            "webhook.ca_file",
        ];
        let text = std::fs::read_to_string(shipped("pushgate.toml")).unwrap();
        let file = serde_json::to_value(toml::from_str::<toml::Table>(&text).unwrap()).unwrap();
        let defaults = as_json(&Config::default());
        let (file, defaults) = (file.as_object().unwrap(), defaults.as_object().unwrap());
        assert_eq!(
            file.keys().collect::<Vec<_>>().len(),
            defaults.len(),
            "every section appears in the file: {:?}",
            defaults.keys().collect::<Vec<_>>()
        );
        // Comment lines above each field line, per section.
        let mut docs: std::collections::HashMap<String, String> = Default::default();
        let (mut section, mut comment) = (String::new(), String::new());
        for line in text.lines() {
            let field = line
                .trim_start_matches("# ")
                .split_once(" = ")
                .map(|(k, _)| k)
                .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                comment.clear();
            } else if let Some(key) = field {
                docs.insert(format!("{section}.{key}"), std::mem::take(&mut comment));
            } else if let Some(c) = line.strip_prefix('#') {
                comment.push_str(c);
                comment.push('\n');
            }
        }
        for (name, section) in defaults {
            let in_file = file.get(name).and_then(|v| v.as_object()).unwrap_or_else(|| panic!("[{name}] missing"));
            for key in in_file.keys() {
                assert!(section.get(key).is_some(), "{name}.{key} is not a Config field");
            }
            for (key, default) in section.as_object().unwrap() {
                let path = format!("{name}.{key}");
                let doc = docs.get(&path).unwrap_or_else(|| panic!("{path} is not in config/pushgate.toml"));
                assert!(
                    doc.to_lowercase().contains("default"),
                    "{path}: the comment above it states the default: {doc}"
                );
                assert!(doc.contains("Range"), "{path}: the comment above it states the valid range: {doc}");
                if COMMENTED.contains(&path.as_str()) {
                    assert!(in_file.get(key).is_none(), "{path} is shown commented out");
                } else if !DIFFERENT.contains(&path.as_str()) {
                    assert_eq!(in_file.get(key), Some(default), "{path}: file and Config::default() disagree");
                }
            }
        }
    }

    /// config/bench.toml is an overlay: only what the benchmark changes.
    #[test]
    fn bench_config_is_the_shipped_config_plus_its_changes() {
        let base = as_json(&Config::load(&shipped("pushgate.toml")).unwrap());
        let bench = Config::load(&shipped("bench.toml")).unwrap();
        bench.validate().unwrap();
        let mut expected = base.clone();
        expected["server"]["max_connections"] = 19_200.into();
        expected["server"]["max_handshakes"] = 256.into();
        expected["server"]["max_connections_per_ip"] = 1_000_000.into();
        expected["server"]["console"] = false.into();
        expected["server"]["upgrade_rate_per_sec"] = 0.0.into();
        expected["api"]["max_connections"] = 256.into();
        expected["session"]["max_frames_per_sec"] = 1_000_000.into();
        expected["session"]["frame_burst"] = 1_000_000.into();
        assert_eq!(as_json(&bench), expected);
        let raw: toml::Table = toml::from_str(&std::fs::read_to_string(shipped("bench.toml")).unwrap()).unwrap();
        let keys: usize = raw.values().map(|v| v.as_table().map_or(1, toml::Table::len)).sum();
        assert_eq!(keys, 9, "include + the eight benchmark settings, nothing copied: {raw:?}");
    }

    /// config/cluster-node.toml: the shipped config plus a cluster node's
    /// changes, valid as shipped.
    #[test]
    fn cluster_node_config_is_the_shipped_config_plus_its_changes() {
        let base = as_json(&Config::load(&shipped("pushgate.toml")).unwrap());
        let node = Config::load(&shipped("cluster-node.toml")).unwrap();
        // Valid once the secrets come from the environment, as the
        // development ones are refused off loopback.
        let mut deployed = node.clone();
        deployed.auth.secret = "a-real-secret-of-thirty-two-bytes".into();
        deployed.api.key = "a-real-api-key-of-thirty-two-bytes".into();
        deployed.validate().unwrap();
        let mut expected = base.clone();
        expected["server"]["node_id"] = "gw-1".into();
        expected["server"]["listen"] = "10.0.0.11:8080".into();
        expected["server"]["api_listen"] = "10.0.0.11:8081".into();
        expected["server"]["trusted_proxies"] = serde_json::json!(["10.0.0.10"]);
        expected["cluster"]["redis_url"] = "redis://10.0.0.20:6379/0".into();
        assert_eq!(as_json(&node), expected);
    }

    #[test]
    fn includes_merge_tables_relative_to_the_including_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("base.toml", "[server]\nmax_connections = 5\nworker_threads = 2\ntrusted_proxies = [\"10.0.0.1\"]\n");
        write(
            "sub/over.toml",
            "include = \"../base.toml\"\n[server]\nmax_connections = 7\ntrusted_proxies = []\n[api]\nkey = \"k\"\n",
        );
        let c = Config::load(&dir.path().join("sub/over.toml")).unwrap();
        assert_eq!((c.server.max_connections, c.server.worker_threads), (7, 2), "tables merge key by key");
        assert!(c.server.trusted_proxies.is_empty(), "arrays replace");
        assert_eq!((c.api.key.as_str(), c.api.max_body_bytes), ("k", ApiConfig::default().max_body_bytes));

        write("typo.toml", "include = \"base.toml\"\n[server]\nmax_conections = 1\n");
        let err = Config::load(&dir.path().join("typo.toml")).unwrap_err().0;
        assert!(err.contains("max_conections"), "unknown keys are still errors: {err}");
        write("missing.toml", "include = \"nope.toml\"\n");
        assert!(Config::load(&dir.path().join("missing.toml")).unwrap_err().0.contains("nope.toml"));
        write("a.toml", "include = \"b.toml\"\n");
        write("b.toml", "include = \"a.toml\"\n");
        assert!(Config::load(&dir.path().join("a.toml")).unwrap_err().0.contains("deeper"), "cycles end");
        write("num.toml", "include = 5\n");
        assert!(Config::load(&dir.path().join("num.toml")).unwrap_err().0.contains("include"));
    }
}
