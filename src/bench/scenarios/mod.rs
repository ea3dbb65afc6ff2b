//! The scenarios and what they share: the measured connect phase and
//! latency recording.

mod churn;
mod fanout;
mod hold;
mod http_floor;
mod rpc;
mod unicast;
mod ws_floor;

pub use churn::churn;
pub use fanout::fanout;
pub use hold::hold;
pub use http_floor::http_floor;
pub use rpc::rpc;
pub use unicast::unicast;
pub use ws_floor::ws_floor;

use super::Ctx;
use super::conn::{self, Conn};
use super::proc::{self, Sample};
use super::report::{Gateway, Latency, Report};
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

fn sample(ctx: &Ctx) -> Result<Option<Sample>, String> {
    ctx.args.pid.map(proc::sample).transpose().map_err(|e| format!("reading /proc for the gateway pid: {e}"))
}

/// Connections opened with the connect phase measured.
pub struct Connected {
    pub conns: Vec<Conn>,
    pub report: Report,
    before: Option<Sample>,
}

pub async fn connect(ctx: &Ctx, scenario: &str, op: &str) -> Result<Connected, String> {
    let n = ctx.args.connections;
    let tokens = ctx.tokens(n)?;
    let before = sample(ctx)?;
    ctx.progress(format!("{scenario}: opening {n} connections to {}", ctx.args.url));
    let opened =
        conn::open_all(&ctx.args.url, tokens, ctx.args.source_addrs, ctx.args.connect_concurrency, ctx.quiet()).await?;
    let after = sample(ctx)?;
    let secs = opened.elapsed.as_secs_f64();
    let mut report = Report {
        scenario: scenario.into(),
        connections: n,
        connect_secs: secs,
        handshakes_per_sec: n as f64 / secs.max(1e-9),
        op: op.into(),
        ..Report::default()
    };
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = proc::cpu_between(b, a).as_secs_f64();
        report.gateway = Some(Gateway {
            rss_before_bytes: b.rss_bytes,
            rss_after_bytes: a.rss_bytes,
            cpu_connect_secs: cpu,
            cpu_us_per_handshake: (n > 0).then(|| cpu * 1e6 / n as f64),
            ..Gateway::default()
        });
    }
    Ok(Connected { conns: opened.conns, report, before })
}

/// Marks the start of the measured run.
pub struct RunClock {
    started: Instant,
    cpu: Option<Sample>,
}

impl RunClock {
    pub fn start(ctx: &Ctx) -> Result<RunClock, String> {
        Ok(RunClock { started: Instant::now(), cpu: sample(ctx)? })
    }

    /// Fills the run figures of `report` for `ops` operations.
    pub fn finish(self, ctx: &Ctx, report: &mut Report, ops: u64, latency: &Histogram<u64>) -> Result<(), String> {
        let end = sample(ctx)?;
        report.ops = ops;
        report.run_secs = self.started.elapsed().as_secs_f64();
        report.ops_per_sec = ops as f64 / report.run_secs.max(1e-9);
        report.latency = Latency::from(latency);
        if let (Some(g), Some(b), Some(a)) = (report.gateway.as_mut(), self.cpu, end) {
            let cpu = proc::cpu_between(b, a).as_secs_f64();
            g.cpu_run_secs = cpu;
            g.cpu_us_per_op = (ops > 0).then(|| cpu * 1e6 / ops as f64);
            g.rss_after_bytes = a.rss_bytes;
        }
        Ok(())
    }
}

impl Connected {
    /// RSS growth per connection since before the connect phase.
    pub fn measure_memory(&mut self, ctx: &Ctx) -> Result<(), String> {
        if let (Some(g), Some(b), Some(a)) = (self.report.gateway.as_mut(), self.before, sample(ctx)?) {
            g.rss_after_bytes = a.rss_bytes;
            g.rss_per_connection_bytes =
                Some((a.rss_bytes as f64 - b.rss_bytes as f64) / self.report.connections.max(1) as f64);
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
        .post(format!("{}{path}", ctx.args.api))
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
