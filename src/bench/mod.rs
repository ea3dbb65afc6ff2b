//! `pushgate bench`: the project's load tool. It drives a running gateway
//! over loopback, mints its own tokens from the shared secret, and reports
//! throughput, latency percentiles (hdrhistogram) and, given `--pid`, the
//! gateway's RSS per connection and CPU time per operation from /proc.
//!
//! CPU per operation is the figure to compare between runs: it stays
//! meaningful on a shared 2-core machine where wall-clock rates are noisy.

mod conn;
mod proc;
mod report;
mod scenarios;

pub use report::Report;

use clap::{Args, Subcommand};
use pushgate::auth::Authenticator;
use pushgate::config::Config;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Gateway WebSocket URL (ws://IP:PORT/ws).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Internal API base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8081")]
    pub api: String,
    /// Config file to read the JWT secret and API key from (environment
    /// variables PUSHGATE_JWT_SECRET / PUSHGATE_API_KEY override it).
    #[arg(long, global = true, default_value = "config/pushgate.toml")]
    pub config: PathBuf,
    /// Gateway process id, for RSS and CPU figures from /proc.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// Connections to open.
    #[arg(long, global = true, default_value_t = 1000)]
    pub connections: usize,
    /// Source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, global = true, default_value_t = 4)]
    pub source_addrs: u8,
    /// Handshakes in flight while connecting.
    #[arg(long, global = true, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Print one JSON object instead of the human report.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// N idle authenticated connections: handshakes/s, RSS per connection.
    Hold {
        /// Seconds to hold the connections before measuring memory.
        #[arg(long, default_value_t = 2.0)]
        hold_secs: f64,
    },
    /// C connections each keeping D FETCH_INFO (111) requests in flight.
    Rpc {
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// K broadcasts through the internal API to N connections.
    Fanout {
        #[arg(long, default_value_t = 20)]
        broadcasts: usize,
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
    },
    /// Pushes to random users at a fixed rate through the internal API.
    Unicast {
        /// Pushes (messages) per second.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Messages per request: 1 uses /v1/push, more uses /v1/push/batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        payload_bytes: usize,
    },
    /// GET /healthz at a fixed rate: the API's per-request floor (no sockets).
    HttpFloor {
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// PING -> PONG at a fixed rate on one WebSocket: the per-request floor
    /// of a persistent connection, beside `http-floor`.
    WsFloor {
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
}

/// What every scenario needs.
pub struct Ctx {
    pub args: BenchArgs,
    pub auth: Authenticator,
    pub api_key: String,
    pub http: reqwest::Client,
}

impl Ctx {
    pub fn tokens(&self, n: usize) -> Result<Vec<String>, String> {
        (0..n).map(|i| self.auth.mint(&user(i), None, 24 * 3600)).collect()
    }

    pub fn quiet(&self) -> bool {
        self.args.json
    }

    pub fn progress(&self, line: impl AsRef<str>) {
        if !self.quiet() {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// User id of the i-th bench connection. The process id keeps runs apart:
/// sessions of a previous run that the gateway has not reaped yet must not
/// receive (and so skew) this run's pushes.
pub fn user(i: usize) -> String {
    format!("bench{}-{i}", std::process::id())
}

/// Runs the scenario and prints its report.
///
/// # Errors
/// Configuration problems or a failed run, as text.
pub async fn run(args: BenchArgs) -> Result<Report, String> {
    let mut config = Config::load(&args.config).map_err(|e| e.to_string())?;
    config.apply_env();
    let auth = Authenticator::from_config(&config.auth).map_err(|e| e.to_string())?;
    let ctx = Ctx {
        api_key: config.api.key.clone(),
        auth,
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?,
        args,
    };
    let report = match ctx.args.scenario.clone() {
        Scenario::Hold { hold_secs } => scenarios::hold(&ctx, hold_secs).await?,
        Scenario::Rpc { in_flight, duration } => scenarios::rpc(&ctx, in_flight, duration).await?,
        Scenario::Fanout { broadcasts, payload_bytes } => scenarios::fanout(&ctx, broadcasts, payload_bytes).await?,
        Scenario::Unicast { rate, duration, batch, payload_bytes } => {
            scenarios::unicast(&ctx, rate, duration, batch, payload_bytes).await?
        }
        Scenario::HttpFloor { rate, duration } => scenarios::http_floor(&ctx, rate, duration).await?,
        Scenario::WsFloor { rate, duration } => scenarios::ws_floor(&ctx, rate, duration).await?,
    };
    if ctx.args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        println!("{report}");
    }
    Ok(report)
}
