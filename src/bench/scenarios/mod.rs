//! The scenarios and what they share: the measured connect phase and
//! latency recording.

mod acking;
mod alternate;
mod churn;
mod fanout;
mod hold;
mod http_floor;
mod replay;
mod rpc;
mod unicast;
mod ws_floor;

pub use acking::Acks;
pub use churn::churn;
pub use fanout::fanout;
pub use hold::hold;
pub use http_floor::http_floor;
pub use replay::replay;
pub use rpc::rpc;
pub use unicast::{Persist, unicast};
pub use ws_floor::ws_floor;

use super::Ctx;
use super::conn::{self, Conn};
use super::proc::{self, Sample};
use super::redis_info;
use super::report::{Gateway, Latency, Redis, Report};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub fn histogram() -> Histogram<u64> {
    // 1 us .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("default histogram"))
}

/// What /proc and Redis say at one moment (each part present when its
/// flag was given).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Each `--pid`, in order.
    pub nodes: Vec<Sample>,
    pub redis: Option<Sample>,
    /// Redis `total_commands_processed`.
    pub commands: Option<u64>,
}

impl Snapshot {
    /// The gateway: every node summed.
    pub fn gateway(&self) -> Option<Sample> {
        proc::total(&self.nodes)
    }
}

pub async fn snapshot(ctx: &Ctx) -> Result<Snapshot, String> {
    let nodes = ctx
        .args
        .pid
        .iter()
        .map(|&pid| proc::sample(pid).map_err(|e| format!("reading /proc for gateway pid {pid}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let redis = ctx
        .args
        .redis_pid
        .map(proc::sample)
        .transpose()
        .map_err(|e| format!("reading /proc for the redis pid: {e}"))?;
    let commands = match &ctx.redis {
        Some(info) => Some(info.commands().await?),
        None => None,
    };
    Ok(Snapshot { nodes, redis, commands })
}

/// Redis's part of a phase between two snapshots: (CPU seconds, commands).
fn redis_phase(before: &Snapshot, after: &Snapshot) -> (Option<f64>, Option<u64>) {
    let cpu = before.redis.zip(after.redis).map(|(b, a)| proc::cpu_between(b, a).as_secs_f64());
    let commands = before.commands.zip(after.commands).map(|(b, a)| redis_info::commands_between(b, a));
    (cpu, commands)
}

/// `value` per op, or None without ops.
fn per(value: f64, ops: u64) -> Option<f64> {
    (ops > 0).then(|| value / ops as f64)
}

fn redis_report(ctx: &Ctx) -> Option<Redis> {
    (ctx.args.redis_pid.is_some() || ctx.redis.is_some()).then(Redis::default)
}

/// Connections opened with the connect phase measured.
pub struct Connected {
    pub conns: Vec<Conn>,
    pub report: Report,
    before: Snapshot,
}

pub async fn connect(ctx: &Ctx, scenario: &str, op: &str) -> Result<Connected, String> {
    connect_to(ctx, scenario, op, &ctx.args.url).await
}

/// As [`connect`], each connection resuming (`resume=1`): it gets SYNCED
/// after HELLO and durable messages as MESSAGE frames.
pub async fn connect_resuming(ctx: &Ctx, scenario: &str, op: &str) -> Result<Connected, String> {
    let urls: Vec<String> = ctx.args.url.iter().map(|url| conn::with_resume(url)).collect();
    connect_to(ctx, scenario, op, &urls).await
}

async fn connect_to(ctx: &Ctx, scenario: &str, op: &str, urls: &[String]) -> Result<Connected, String> {
    let n = ctx.args.connections;
    let tokens = ctx.tokens(n)?;
    let before = snapshot(ctx).await?;
    ctx.progress(format!("{scenario}: opening {n} connections to {}", urls.join(", ")));
    let opened = conn::open_all(urls, tokens, ctx.args.source_addrs, ctx.args.connect_concurrency, ctx.quiet()).await?;
    let after = snapshot(ctx).await?;
    let secs = opened.elapsed.as_secs_f64();
    let mut report = Report {
        scenario: scenario.into(),
        connections: n,
        nodes: ctx.nodes(),
        connect_secs: secs,
        handshakes_per_sec: n as f64 / secs.max(1e-9),
        op: op.into(),
        redis: redis_report(ctx),
        ..Report::default()
    };
    if let (Some(b), Some(a)) = (before.gateway(), after.gateway()) {
        let cpu = proc::cpu_between(b, a).as_secs_f64();
        report.gateway = Some(Gateway {
            rss_before_bytes: b.rss_bytes,
            rss_after_bytes: a.rss_bytes,
            cpu_connect_secs: cpu,
            cpu_us_per_handshake: per(cpu * 1e6, n as u64),
            ..Gateway::default()
        });
    }
    if let Some(r) = report.redis.as_mut() {
        let (cpu, commands) = redis_phase(&before, &after);
        r.cpu_connect_secs = cpu;
        r.cpu_us_per_handshake = cpu.and_then(|cpu| per(cpu * 1e6, n as u64));
        r.commands_connect = commands;
        r.commands_per_handshake = commands.and_then(|c| per(c as f64, n as u64));
    }
    Ok(Connected { conns: opened.conns, report, before })
}

/// Marks the start of the measured run.
pub struct RunClock {
    started: Instant,
    before: Snapshot,
}

impl RunClock {
    pub async fn start(ctx: &Ctx) -> Result<RunClock, String> {
        Ok(RunClock { started: Instant::now(), before: snapshot(ctx).await? })
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Gateway CPU since the start (every `--pid`), None without a pid.
    pub async fn gateway_cpu(&self, ctx: &Ctx) -> Result<Option<Duration>, String> {
        let now = snapshot(ctx).await?;
        Ok(self.before.gateway().zip(now.gateway()).map(|(b, a)| proc::cpu_between(b, a)))
    }

    /// Fills the run figures of `report` for `ops` operations.
    pub async fn finish(
        self,
        ctx: &Ctx,
        report: &mut Report,
        ops: u64,
        latency: &Histogram<u64>,
    ) -> Result<(), String> {
        let end = snapshot(ctx).await?;
        report.ops = ops;
        report.run_secs = self.started.elapsed().as_secs_f64();
        report.ops_per_sec = ops as f64 / report.run_secs.max(1e-9);
        report.latency = Latency::from(latency);
        let mut gateway_cpu = None;
        if let (Some(g), Some(b), Some(a)) = (report.gateway.as_mut(), self.before.gateway(), end.gateway()) {
            let cpu = proc::cpu_between(b, a).as_secs_f64();
            g.cpu_run_secs = cpu;
            g.cpu_us_per_op = per(cpu * 1e6, ops);
            g.rss_after_bytes = a.rss_bytes;
            if end.nodes.len() > 1 {
                g.cpu_run_secs_by_node = (self.before.nodes.iter().zip(&end.nodes))
                    .map(|(b, a)| proc::cpu_between(*b, *a).as_secs_f64())
                    .collect();
            }
            gateway_cpu = Some(cpu);
        }
        if let Some(r) = report.redis.as_mut() {
            let (cpu, commands) = redis_phase(&self.before, &end);
            r.cpu_run_secs = cpu;
            r.cpu_us_per_op = cpu.and_then(|cpu| per(cpu * 1e6, ops));
            r.gateway_and_redis_cpu_us_per_op = gateway_cpu.zip(cpu).and_then(|(g, r)| per((g + r) * 1e6, ops));
            r.commands_run = commands;
            r.commands_per_op = commands.and_then(|c| per(c as f64, ops));
        }
        Ok(())
    }
}

impl Connected {
    /// RSS growth per connection since before the connect phase (and per
    /// node, when there is one `--pid` per `--url`).
    pub async fn measure_memory(&mut self, ctx: &Ctx) -> Result<(), String> {
        let now = snapshot(ctx).await?;
        if let (Some(g), Some(b), Some(a)) = (self.report.gateway.as_mut(), self.before.gateway(), now.gateway()) {
            g.rss_after_bytes = a.rss_bytes;
            g.rss_per_connection_bytes =
                Some((a.rss_bytes as f64 - b.rss_bytes as f64) / self.report.connections.max(1) as f64);
            if ctx.args.pid.len() == ctx.nodes() && ctx.nodes() > 1 {
                g.rss_per_connection_by_node_bytes = (self.before.nodes.iter().zip(&now.nodes))
                    .enumerate()
                    .map(|(node, (b, a))| {
                        (a.rss_bytes as f64 - b.rss_bytes as f64) / ctx.connections_on(node).max(1) as f64
                    })
                    .collect();
            }
        }
        Ok(())
    }
}

/// Counts and times stamped pushes arriving on every connection.
#[derive(Clone)]
pub struct Receivers {
    pub received: Arc<AtomicU64>,
    pub latency: Arc<Mutex<Histogram<u64>>>,
    tasks: Arc<Vec<tokio::task::JoinHandle<()>>>,
}

impl Receivers {
    pub fn spawn(conns: Vec<Conn>) -> Receivers {
        let received = Arc::new(AtomicU64::new(0));
        let latency = Arc::new(Mutex::new(histogram()));
        let tasks = conns
            .into_iter()
            .map(|mut ws| {
                let (received, latency) = (received.clone(), latency.clone());
                tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        if let Message::Binary(frame) = message
                            && let Some(us) = conn::latency_micros(&frame)
                        {
                            received.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut h) = latency.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                    }
                })
            })
            .collect();
        Receivers { received, latency, tasks: Arc::new(tasks) }
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` frames arrived or `limit` passed.
    pub async fn wait_for(&self, expected: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn histogram(&self) -> Histogram<u64> {
        self.latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram())
    }

    pub fn stop(&self) {
        for t in self.tasks.iter() {
            t.abort();
        }
    }
}

/// `{"action": 1000, "payload_b64": <stamped payload>}` fields.
pub fn stamped_content(payload_bytes: usize) -> serde_json::Value {
    use base64::Engine;
    let payload = conn::stamped_payload(payload_bytes);
    serde_json::json!({ "action": 1000, "payload_b64": base64::engine::general_purpose::STANDARD.encode(payload) })
}

/// POSTs JSON to the internal API; returns the JSON answer.
pub async fn post(ctx: &Ctx, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    let response = ctx
        .http
        .post(format!("{}{path}", ctx.api()))
        .bearer_auth(&ctx.api_key)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = response.status();
    let value: serde_json::Value = response.json().await.map_err(|e| format!("POST {path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("POST {path}: {status} {value}"));
    }
    Ok(value)
}
