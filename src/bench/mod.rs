//! `pushgate bench`: the project's load tool. It drives a running gateway
//! over loopback, mints its own tokens from the shared secret, and reports
//! throughput, latency percentiles (hdrhistogram) and, given `--pid`, the
//! gateway's RSS per connection and CPU time per operation from /proc.
//!
//! It drives a cluster as well: several `--url`/`--api`/`--pid` values are
//! the nodes (connection i goes to node i % n; /proc figures are summed
//! over the nodes), and `--redis-pid` / `--redis-url` add Redis's CPU and
//! commands per operation.
//!
//! CPU per operation is the figure to compare between runs: it stays
//! meaningful on a shared 2-core machine where wall-clock rates are noisy.

mod conn;
mod proc;
mod redis_info;
mod report;
mod scenarios;

pub use report::{Latency, Report};

use clap::{Args, Subcommand};
use pushgate::auth::Authenticator;
use pushgate::config::Config;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Gateway WebSocket URL (ws://IP:PORT/ws). Several nodes: repeat the
    /// flag or separate URLs with commas (1 to 64); connection i goes to
    /// URL i % n.
    #[arg(long, global = true, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,
    /// Internal API base URL. Several nodes: one per --url, in the same
    /// order (repeat the flag or separate with commas). Broadcasts, metrics
    /// and /healthz use the first.
    #[arg(long, global = true, value_delimiter = ',', default_value = "http://127.0.0.1:8081")]
    pub api: Vec<String>,
    /// Config file to read the JWT secret and API key from (environment
    /// variables PUSHGATE_JWT_SECRET / PUSHGATE_API_KEY override it).
    #[arg(long, global = true, default_value = "config/pushgate.toml")]
    pub config: PathBuf,
    /// Gateway process id, for RSS and CPU figures from /proc. Several
    /// nodes: repeat or separate with commas (up to 64); the figures are
    /// summed over them (and RSS given per node when there is one per --url).
    #[arg(long, global = true, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// redis-server process id (cluster): its CPU per operation, alone and
    /// added to the gateways'.
    #[arg(long, global = true)]
    pub redis_pid: Option<u32>,
    /// Redis URL (cluster, redis://IP:PORT): commands per operation from
    /// `INFO stats` total_commands_processed (the bench's own INFO calls
    /// excluded).
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
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
    /// K broadcasts through the internal API to N connections (several
    /// nodes: through the first node's API, received on every node).
    Fanout {
        /// Broadcasts (0 to 1000000).
        #[arg(long, default_value_t = 20, value_parser = count(0, MAX_BROADCASTS))]
        broadcasts: usize,
        /// Payload size in bytes (0 to 16777216; below 8 is padded to the
        /// 8-byte timestamp).
        #[arg(long, default_value_t = 64, value_parser = count(0, MAX_PAYLOAD_BYTES))]
        payload_bytes: usize,
    },
    /// Pushes to random users at a fixed rate through the internal API
    /// (several nodes: of the node holding the user, or with --cross-node
    /// of another node).
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
        /// Several nodes: send each request to the API of a node other than
        /// the one holding its users (without it: to the holding node's).
        #[arg(long)]
        cross_node: bool,
        /// Durable pushes (`"persist": true`): the connections resume
        /// (`resume=1`), take MESSAGE frames and ack them like pushgate.js
        /// (`{"ids": [...]}` every 50 ms or 64 ids).
        #[arg(long)]
        persist: bool,
        /// With --persist: every ACK carries a `seq` and is answered
        /// (pushgate.js `confirmAcks: true`).
        #[arg(long, requires = "persist")]
        confirm_acks: bool,
        /// With --persist: plain and durable pushes in alternating phases
        /// of this many seconds (plain first, 1 to 3600), to the same
        /// connections; reports both kinds' CPU per push and their ratio,
        /// each pair of phases on the same machine state.
        #[arg(long, requires = "persist", value_parser = phase_secs)]
        alternate: Option<f64>,
    },
    /// R rounds: N durable messages stored for a fresh offline user
    /// (`/v1/push/batch`), then one resuming connect: time from the upgrade
    /// to SYNCED, gateway CPU per replayed message.
    Replay {
        /// Rounds, one fresh user each (1 to 100000).
        #[arg(long, default_value_t = 5, value_parser = count(1, MAX_ROUNDS))]
        rounds: usize,
        /// Durable messages stored and replayed per round (1 to 100000;
        /// at most `inbox.max_messages` are kept).
        #[arg(long, default_value_t = 1000, value_parser = count(1, MAX_REPLAY_MESSAGES))]
        messages: usize,
        /// Messages per `/v1/push/batch` request while storing (1 to 100000).
        #[arg(long, default_value_t = 100, value_parser = count(1, MAX_BATCH))]
        batch: usize,
        /// Payload size in bytes (0 to 65520, the largest durable payload;
        /// below 8 is padded).
        #[arg(long, default_value_t = 64, value_parser = count(0, MAX_DURABLE_PAYLOAD_BYTES))]
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
const MAX_REPLAY_MESSAGES: u64 = 100_000;
const MAX_DURABLE_PAYLOAD_BYTES: u64 = 65_520;
const MAX_NODES: usize = 64;

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

/// One phase of `unicast --alternate`: 1 s (a phase's CPU is read in
/// /proc's 10 ms ticks) to an hour.
fn phase_secs(text: &str) -> Result<f64, String> {
    let secs = number(text)?;
    if (1.0..=3600.0).contains(&secs) { Ok(secs) } else { Err("must be from 1 to 3600 seconds".into()) }
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

impl BenchArgs {
    /// What clap cannot check alone: the node lists fit together. An error
    /// here is a usage error.
    ///
    /// # Errors
    /// The problem, as text.
    pub fn check(&self) -> Result<(), String> {
        let nodes = self.url.len();
        if !(1..=MAX_NODES).contains(&nodes) || self.api.len() > MAX_NODES || self.pid.len() > MAX_NODES {
            return Err(format!("--url, --api and --pid take 1 to {MAX_NODES} values (one per node)"));
        }
        if self.api.is_empty() {
            return Err("--api needs a value".into());
        }
        if let Scenario::Unicast { cross_node, .. } = self.scenario {
            if self.api.len() != nodes {
                return Err(format!(
                    "unicast pushes to the node that holds (or, with --cross-node, does not hold) each user: \
                     give one --api per --url ({nodes} --url, {} --api)",
                    self.api.len()
                ));
            }
            if cross_node && nodes < 2 {
                return Err("--cross-node needs two or more nodes (several --url and --api values)".into());
            }
            if nodes > 1 && self.connections < nodes {
                return Err(format!("unicast needs at least one connection per node ({nodes} nodes)"));
            }
        }
        Ok(())
    }
}

/// What every scenario needs.
pub struct Ctx {
    pub args: BenchArgs,
    pub auth: Authenticator,
    pub api_key: String,
    pub http: reqwest::Client,
    /// `INFO stats` on Redis (with --redis-url).
    pub redis: Option<redis_info::RedisInfo>,
}

impl Ctx {
    /// Nodes driven: one per --url.
    pub fn nodes(&self) -> usize {
        self.args.url.len()
    }

    /// The first node's API: broadcasts, metrics, /healthz.
    pub fn api(&self) -> &str {
        self.args.api.first().map_or("", String::as_str)
    }

    /// Connections that node `node` holds (connection i is on node i % n).
    pub fn connections_on(&self, node: usize) -> usize {
        let n = self.nodes().max(1);
        (self.args.connections + n - 1).saturating_sub(node) / n
    }

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
    args.check()?;
    let redis = match &args.redis_url {
        Some(url) => Some(redis_info::RedisInfo::connect(url).await?),
        None => None,
    };
    let ctx = Ctx {
        api_key: config.api.key.clone(),
        auth,
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build().map_err(|e| e.to_string())?,
        redis,
        args,
    };
    let report = match ctx.args.scenario.clone() {
        Scenario::Hold { hold_secs, large_frame } => scenarios::hold(&ctx, hold_secs, large_frame).await?,
        Scenario::Rpc { in_flight, duration } => scenarios::rpc(&ctx, in_flight, duration).await?,
        Scenario::Fanout { broadcasts, payload_bytes } => scenarios::fanout(&ctx, broadcasts, payload_bytes).await?,
        Scenario::Unicast { rate, duration, batch, payload_bytes, cross_node, persist, confirm_acks, alternate } => {
            let acks = scenarios::Acks { confirm: confirm_acks };
            let durable = persist.then_some(scenarios::Persist { acks, alternate });
            scenarios::unicast(&ctx, rate, duration, batch, payload_bytes, cross_node, durable).await?
        }
        Scenario::Replay { rounds, messages, batch, payload_bytes } => {
            scenarios::replay(&ctx, rounds, messages, batch, payload_bytes).await?
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

#[cfg(test)]
mod tests {
    use super::BenchArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn check(args: &[&str]) -> Result<BenchArgs, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.bench.check().map(|()| cli.bench)
    }

    #[test]
    fn one_node_by_default_several_by_repeating_or_commas() {
        let one = check(&["unicast"]).expect("defaults");
        assert_eq!((one.url.len(), one.api.len(), one.pid.len()), (1, 1, 0));
        let repeated =
            ["--url", "ws://a/ws,ws://b/ws", "--url", "ws://c/ws", "--api", "http://a,http://b,http://c", "fanout"];
        assert_eq!(check(&repeated).expect("repeated and comma-separated").url.len(), 3);
        let pids = ["--url", "ws://a/ws,ws://b/ws,ws://c/ws", "--pid", "1,2", "--pid", "3", "fanout"];
        assert_eq!(check(&pids).expect("three pids").pid, [1, 2, 3]);
    }

    #[test]
    fn unicast_needs_an_api_per_node_and_cross_node_needs_two() {
        assert!(check(&["unicast", "--cross-node"]).is_err());
        assert!(check(&["--url", "ws://a/ws,ws://b/ws", "unicast"]).is_err());
        assert!(
            check(&["--url", "ws://a/ws,ws://b/ws", "--api", "http://a,http://b", "unicast", "--cross-node"]).is_ok()
        );
        assert!(
            check(&["--url", "ws://a/ws,ws://b/ws", "--api", "http://a,http://b", "--connections", "1", "unicast"])
                .is_err()
        );
        assert!(check(&["--connections", "0", "unicast"]).is_ok(), "one node: as before");
        // Broadcasts use the first API: one is enough.
        assert!(check(&["--url", "ws://a/ws,ws://b/ws", "fanout"]).is_ok());
        let many = vec!["ws://a/ws"; 65].join(",");
        assert!(check(&["--url", &many, "hold"]).is_err());
    }

    #[test]
    fn durable_arguments_are_range_checked() {
        let persist = check(&["unicast", "--persist", "--rate", "1000000", "--batch", "10"]).expect("saturation");
        assert!(matches!(persist.scenario, super::Scenario::Unicast { persist: true, batch: 10, .. }));
        let replay = check(&["replay"]).expect("defaults");
        assert!(matches!(
            replay.scenario,
            super::Scenario::Replay { rounds: 5, messages: 1000, batch: 100, payload_bytes: 64 }
        ));
        for bad in [
            &["replay", "--rounds", "0"][..],
            &["replay", "--messages", "0"],
            &["replay", "--messages", "100001"],
            &["replay", "--batch", "0"],
            &["replay", "--payload-bytes", "65521"],
            &["unicast", "--persist", "--rate", "1000001"],
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
