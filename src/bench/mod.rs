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
    /// Connections to open (0 to 1000000).
    #[arg(long, global = true, default_value_t = 1000, value_parser = count(0, MAX_CONNECTIONS))]
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
        /// Seconds to hold the connections before measuring memory (0 to 86400).
        #[arg(long, default_value_t = 2.0, value_parser = duration_secs)]
        hold_secs: f64,
        /// Then send one request of this many bytes from every connection and
        /// broadcast one push of this size to all, and measure RSS per
        /// connection again (0 = skip; 0 to 16777216).
        #[arg(long, default_value_t = 0, value_parser = count(0, MAX_PAYLOAD_BYTES))]
        large_frame: usize,
    },
    /// C connections each keeping D FETCH_INFO (111) requests in flight.
    Rpc {
        /// Requests in flight per connection (1 to 65536).
        #[arg(long, default_value_t = 16, value_parser = count(1, MAX_IN_FLIGHT))]
        in_flight: usize,
        /// Seconds (0 to 86400).
        #[arg(long, default_value_t = 10.0, value_parser = duration_secs)]
        duration: f64,
    },
    /// K broadcasts through the internal API to N connections.
    Fanout {
        /// Broadcasts (0 to 1000000).
        #[arg(long, default_value_t = 20, value_parser = count(0, MAX_BROADCASTS))]
        broadcasts: usize,
        /// Payload size in bytes (0 to 16777216; below 8 is padded to the
        /// 8-byte timestamp).
        #[arg(long, default_value_t = 64, value_parser = count(0, MAX_PAYLOAD_BYTES))]
        payload_bytes: usize,
    },
    /// Pushes to random users at a fixed rate through the internal API.
    Unicast {
        /// Pushes (messages) per second (0.001 to 1000000).
        #[arg(long, default_value_t = 2000.0, value_parser = rate_per_sec)]
        rate: f64,
        /// Seconds (0 to 86400).
        #[arg(long, default_value_t = 10.0, value_parser = duration_secs)]
        duration: f64,
        /// Messages per request: 1 uses /v1/push, more uses /v1/push/batch
        /// (1 to 100000).
        #[arg(long, default_value_t = 1, value_parser = count(1, MAX_BATCH))]
        batch: usize,
        /// Payload size in bytes (0 to 16777216; below 8 is padded).
        #[arg(long, default_value_t = 64, value_parser = count(0, MAX_PAYLOAD_BYTES))]
        payload_bytes: usize,
    },
    /// GET /healthz at a fixed rate: the API's per-request floor (no sockets).
    HttpFloor {
        /// Requests per second (0.001 to 1000000).
        #[arg(long, default_value_t = 2000.0, value_parser = rate_per_sec)]
        rate: f64,
        /// Seconds (0 to 86400).
        #[arg(long, default_value_t = 10.0, value_parser = duration_secs)]
        duration: f64,
    },
    /// R rounds of N connects (HELLO read) and disconnects (client close,
    /// until the gateway counts 0 connections): gateway RSS after each
    /// round, growth per 100,000 cycles after the first round.
    Churn {
        /// Rounds (1 to 100000; the growth figure needs 2 or more).
        #[arg(long, default_value_t = 10, value_parser = count(1, MAX_ROUNDS))]
        rounds: usize,
        /// Seconds to wait after a round's last disconnect before sampling
        /// RSS (0 to 86400).
        #[arg(long, default_value_t = 1.0, value_parser = duration_secs)]
        settle_secs: f64,
    },
    /// PING -> PONG at a fixed rate on one WebSocket: the per-request floor
    /// of a persistent connection, beside `http-floor`.
    WsFloor {
        /// PINGs per second (0.001 to 1000000).
        #[arg(long, default_value_t = 2000.0, value_parser = rate_per_sec)]
        rate: f64,
        /// Seconds (0 to 86400).
        #[arg(long, default_value_t = 10.0, value_parser = duration_secs)]
        duration: f64,
    },
}

// Bounds checked while parsing the command line, so that no run panics on
// a duration or interval that overflows (NaN, infinities, negatives, 1e300)
// or an allocation sized by an absurd count.
const MAX_DURATION_SECS: f64 = 86_400.0;
const MIN_RATE_PER_SEC: f64 = 0.001;
const MAX_RATE_PER_SEC: f64 = 1_000_000.0;
const MAX_CONNECTIONS: u64 = 1_000_000;
const MAX_IN_FLIGHT: u64 = 65_536;
const MAX_BROADCASTS: u64 = 1_000_000;
const MAX_BATCH: u64 = 100_000;
const MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;
const MAX_ROUNDS: u64 = 100_000;

fn number(text: &str) -> Result<f64, String> {
    text.trim().parse().map_err(|_| format!("{text:?} is not a number"))
}

/// Seconds, finite, 0 to a day.
fn duration_secs(text: &str) -> Result<f64, String> {
    let secs = number(text)?;
    if (0.0..=MAX_DURATION_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("must be from 0 to {MAX_DURATION_SECS} seconds"))
    }
}

/// A rate per second, finite, 0.001 to a million.
fn rate_per_sec(text: &str) -> Result<f64, String> {
    let rate = number(text)?;
    if (MIN_RATE_PER_SEC..=MAX_RATE_PER_SEC).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("must be from {MIN_RATE_PER_SEC} to {MAX_RATE_PER_SEC} per second"))
    }
}

/// A count within `min..=max`.
fn count(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=max)
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
        Scenario::Hold { hold_secs, large_frame } => scenarios::hold(&ctx, hold_secs, large_frame).await?,
        Scenario::Rpc { in_flight, duration } => scenarios::rpc(&ctx, in_flight, duration).await?,
        Scenario::Fanout { broadcasts, payload_bytes } => scenarios::fanout(&ctx, broadcasts, payload_bytes).await?,
        Scenario::Unicast { rate, duration, batch, payload_bytes } => {
            scenarios::unicast(&ctx, rate, duration, batch, payload_bytes).await?
        }
        Scenario::HttpFloor { rate, duration } => scenarios::http_floor(&ctx, rate, duration).await?,
        Scenario::Churn { rounds, settle_secs } => scenarios::churn(&ctx, rounds, settle_secs).await?,
        Scenario::WsFloor { rate, duration } => scenarios::ws_floor(&ctx, rate, duration).await?,
    };
    if ctx.args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        println!("{report}");
    }
    Ok(report)
}
