//! Configuration. Every field has a default, a unit in its name, and a reason
//! in config/pushgate.toml, which is the documented copy of these defaults.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The development secret the shipped config uses. It is announced loudly at
/// startup and refused on any non-loopback listen address.
pub const DEV_JWT_SECRET: &str = "pushgate-dev-secret-do-not-deploy";

/// The development API key of the shipped config, refused off loopback.
pub const DEV_API_KEY: &str = "pushgate-dev-api-key-do-not-deploy";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub session: SessionConfig,
    pub api: ApiConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub accept_backlog: u32,
    pub max_connections: usize,
    /// Sockets beyond `max_connections` used at once to answer 503.
    pub refusal_slots: usize,
    /// Names this node in session ids.
    pub node_id: String,
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
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub enum Algorithm {
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub algorithm: Algorithm,
    /// HS256 shared secret; `PUSHGATE_JWT_SECRET` overrides it.
    pub secret: String,
    /// PEM public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub query_param: String,
    pub cookie_name: String,
    pub device_claim: String,
    /// Origins allowed to open a socket besides same-origin pages and clients
    /// that send no Origin (native apps). `["*"]` allows every origin.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("data"),
            accept_backlog: 4096,
            max_connections: 10_000,
            refusal_slots: 64,
            node_id: "node".into(),
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
    /// Reads a TOML file.
    ///
    /// # Errors
    /// The file is unreadable or not valid pushgate TOML (unknown keys too).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
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
    }

    pub fn uses_dev_secret(&self) -> bool {
        self.auth.algorithm == Algorithm::HS256 && self.auth.secret == DEV_JWT_SECRET
    }

    pub fn uses_dev_api_key(&self) -> bool {
        self.api.key == DEV_API_KEY
    }

    /// Refuses configurations that would be unsafe or cannot work.
    ///
    /// # Errors
    /// A human-readable reason naming the offending setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if self.auth.algorithm == Algorithm::HS256 && self.auth.secret.len() < 16 {
            return fail("auth.secret (or PUSHGATE_JWT_SECRET) must be at least 16 bytes for HS256");
        }
        if self.auth.algorithm != Algorithm::HS256 && self.auth.public_key_file.is_none() {
            return fail("auth.public_key_file is required for RS256/ES256");
        }
        if self.uses_dev_secret() && !self.server.listen.ip().is_loopback() {
            return fail(
                "refusing the development JWT secret on a non-loopback listen address; \
                 set PUSHGATE_JWT_SECRET",
            );
        }
        if self.api.key.len() < 16 {
            return fail("api.key (or PUSHGATE_API_KEY) must be at least 16 bytes; the internal API is never open");
        }
        if self.api.key == DEV_API_KEY && !self.server.api_listen.ip().is_loopback() {
            return fail(
                "refusing the development API key on a non-loopback api_listen address; \
                 set PUSHGATE_API_KEY",
            );
        }
        let s = &self.session;
        if s.queue_capacity == 0 || s.max_batch_frames == 0 || self.server.max_connections == 0 {
            return fail("session.queue_capacity, session.max_batch_frames and server.max_connections must be > 0");
        }
        if self.api.max_connections == 0 || self.api.idle_timeout_ms == 0 {
            return fail("api.max_connections and api.idle_timeout_ms must be > 0");
        }
        if s.max_message_bytes < crate::protocol::HEADER_LEN {
            return fail("session.max_message_bytes must hold at least the 4-byte action header");
        }
        if s.queue_max_bytes < s.max_message_bytes {
            return fail("session.queue_max_bytes must hold at least one message of session.max_message_bytes");
        }
        for proxy in &self.server.trusted_proxies {
            crate::gateway::Cidr::parse(proxy).map_err(|e| ConfigError(format!("server.trusted_proxies: {e}")))?;
        }
        let rate = self.server.upgrade_rate_per_sec;
        if rate.is_nan() || rate < 0.0 {
            return fail("server.upgrade_rate_per_sec must be >= 0 (0 = unlimited)");
        }
        if s.heartbeat_secs == 0 || s.idle_timeout_secs <= s.heartbeat_secs {
            return fail("session.idle_timeout_secs must be greater than session.heartbeat_secs (> 0)");
        }
        Ok(())
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
}
