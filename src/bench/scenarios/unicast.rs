use super::acking::{Acking, Acks};
use super::{Ctx, Receivers, RunClock, connect, connect_resuming, histogram, stamped_content};
use crate::bench::{Latency, Report, user};
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

/// Requests in flight against the API at once.
const MAX_IN_FLIGHT: usize = 64;

/// Pushes to random users at a fixed rate through the internal API, one
/// message per request (`/v1/push`) or `batch` per request (`/v1/push/batch`).
///
/// With `persist`, every push is durable (`"persist": true`) and the
/// connections resume and ack like the official clients (`acking.rs`).
/// A rate above what the gateway takes measures its saturation: at most
/// `MAX_IN_FLIGHT` requests are outstanding, and `sent_per_sec` is the
/// rate it answered.
///
/// Several nodes: each request goes to a random node's API and pushes to
/// users held by that node (connection i is on node i % n), or with
/// `cross_node` to users of one other node, so every push crosses Redis.
pub async fn unicast(
    ctx: &Ctx,
    rate: f64,
    duration: f64,
    batch: usize,
    payload_bytes: usize,
    cross_node: bool,
    durable: Option<Persist>,
) -> Result<Report, String> {
    let alternate = durable.as_ref().and_then(|d| d.alternate);
    let batch = batch.max(1);
    let persist = durable.is_some();
    let (mut connected, receivers) = if let Some(Persist { acks, .. }) = durable {
        let mut connected = connect_resuming(ctx, "unicast", "durable push").await?;
        let acking = Acking::spawn(std::mem::take(&mut connected.conns), acks);
        let n = connected.report.connections as u64;
        let synced = acking.wait_synced(n, Duration::from_secs(60)).await;
        if synced < n {
            acking.stop();
            return Err(format!("only {synced} of {n} resuming connections got SYNCED"));
        }
        (connected, Receiving::Acking(acking))
    } else {
        let mut connected = connect(ctx, "unicast", "push").await?;
        let receivers = Receivers::spawn(std::mem::take(&mut connected.conns));
        (connected, Receiving::Plain(receivers))
    };
    let users = connected.report.connections;
    let held: Vec<usize> = (0..ctx.nodes()).map(|node| ctx.connections_on(node)).collect();
    let routing = if ctx.nodes() == 1 {
        ""
    } else if cross_node {
        ", each through another node's API"
    } else {
        ", each through the holding node's API"
    };
    let kind = match (persist, alternate) {
        (true, Some(_)) => "plain and durable pushes",
        (true, None) => "durable pushes",
        (false, _) => "pushes",
    };
    ctx.progress(format!("unicast: {rate} {kind}/s to {users} users for {duration} s, {batch} per request{routing}"));
    let driver = Driver::new(ctx, held, cross_node, batch, payload_bytes);
    if let Some(phase_secs) = alternate {
        let Receiving::Acking(acking) = &receivers else {
            return Err("--alternate needs --persist".into());
        };
        let result =
            super::alternate::run(ctx, &driver, acking, rate, duration, phase_secs, &mut connected.report).await;
        receivers.stop();
        return result.map(|()| connected.report);
    }
    let clock = RunClock::start(ctx).await?;
    let answers: Answers = Arc::new(std::sync::Mutex::new(histogram()));
    driver.run(rate, duration, persist, &answers).await;
    let send_secs = clock.elapsed().as_secs_f64();
    // The frames arrive (and, durable, are acked).
    let expected = driver.delivered.load(Ordering::Relaxed);
    receivers.wait_for(expected, Duration::from_secs(10)).await;
    let pushes = driver.sent.load(Ordering::Relaxed);
    let report = &mut connected.report;
    clock.finish(ctx, report, pushes, &receivers.histogram()).await?;
    report.sent = pushes;
    report.missing = expected.saturating_sub(receivers.count());
    report.send_secs = Some(send_secs);
    report.sent_per_sec = Some(pushes as f64 / send_secs.max(1e-9));
    report.answer_latency = Some(latency(&answers));
    if let Receiving::Acking(acking) = &receivers {
        report.durable = Some(acking.figures());
    }
    receivers.stop();
    driver.check()?;
    Ok(connected.report)
}

/// Durable pushes (`--persist`): how the clients ack, and the phase length
/// when plain pushes alternate with them (`--alternate`, alternate.rs).
pub struct Persist {
    pub acks: Acks,
    pub alternate: Option<f64>,
}

/// Sends pushes at a fixed rate through the API and counts the answers.
pub(super) struct Driver {
    http: Arc<(reqwest::Client, Vec<String>, String)>,
    /// Users held per node (connection i on node i % n).
    held: Vec<usize>,
    cross_node: bool,
    batch: usize,
    payload_bytes: usize,
    /// Pushes answered as sent, and frames their answers promised.
    pub(super) sent: Arc<AtomicU64>,
    pub(super) delivered: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    permits: Arc<Semaphore>,
}

/// Request -> answer times (us).
pub(super) type Answers = Arc<std::sync::Mutex<Histogram<u64>>>;

impl Driver {
    fn new(ctx: &Ctx, held: Vec<usize>, cross_node: bool, batch: usize, payload_bytes: usize) -> Driver {
        Driver {
            http: Arc::new((ctx.http.clone(), ctx.args.api.clone(), ctx.api_key.clone())),
            held,
            cross_node,
            batch,
            payload_bytes,
            sent: Arc::default(),
            delivered: Arc::default(),
            errors: Arc::default(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Pushes at `rate` for `secs` (durable with `persist`), recording
    /// answer times in `answers`; returns once every request is answered.
    pub(super) async fn run(&self, rate: f64, secs: f64, persist: bool, answers: &Answers) {
        let batch = self.batch;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate.max(1e-3)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            ticker.tick().await;
            let (api, holder) = pick_nodes(self.held.len(), self.cross_node);
            let body = message_body(&self.held, holder, batch, self.payload_bytes, persist);
            let Ok(permit) = self.permits.clone().acquire_owned().await else { break };
            let (http, sent, delivered, errors) =
                (self.http.clone(), self.sent.clone(), self.delivered.clone(), self.errors.clone());
            let answers = answers.clone();
            tokio::spawn(async move {
                let asked = Instant::now();
                let path = if batch == 1 { "/v1/push" } else { "/v1/push/batch" };
                let base = http.1.get(api).map_or("", String::as_str);
                let result = http.0.post(format!("{base}{path}")).bearer_auth(&http.2).json(&body).send().await;
                match result {
                    Ok(r) if r.status().is_success() => {
                        let answer: serde_json::Value = r.json().await.unwrap_or_default();
                        let took = asked.elapsed().as_micros() as u64;
                        answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).saturating_record(took);
                        sent.fetch_add(batch as u64, Ordering::Relaxed);
                        delivered.fetch_add(arriving(&answer), Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
        }
        // Every request in flight answered (the permits come back at once).
        let _ = self.permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    /// An error when any push request failed.
    pub(super) fn check(&self) -> Result<(), String> {
        match self.errors.load(Ordering::Relaxed) {
            0 => Ok(()),
            failed => Err(format!("{failed} push requests failed")),
        }
    }
}

/// The answer times recorded in `answers`.
pub(super) fn latency(answers: &Answers) -> Latency {
    Latency::from(&answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Plain receivers, or resuming clients that ack.
enum Receiving {
    Plain(Receivers),
    Acking(Acking),
}

impl Receiving {
    async fn wait_for(&self, expected: u64, limit: Duration) {
        match self {
            Receiving::Plain(r) => r.wait_for(expected, limit).await,
            Receiving::Acking(a) => a.wait_for(expected, limit).await,
        }
    }

    fn count(&self) -> u64 {
        match self {
            Receiving::Plain(r) => r.count(),
            Receiving::Acking(a) => a.count(),
        }
    }

    fn histogram(&self) -> Histogram<u64> {
        match self {
            Receiving::Plain(r) => r.histogram(),
            Receiving::Acking(a) => a.histogram(),
        }
    }

    fn stop(&self) {
        match self {
            Receiving::Plain(r) => r.stop(),
            Receiving::Acking(a) => a.stop(),
        }
    }
}

/// (node whose API takes the request, node holding its users): the same
/// node, or with `cross_node` another one. One node: always node 0.
fn pick_nodes(nodes: usize, cross_node: bool) -> (usize, usize) {
    if nodes <= 1 {
        return (0, 0);
    }
    let api = rand::random_range(0..nodes);
    let holder = if cross_node { (api + 1 + rand::random_range(0..nodes - 1)) % nodes } else { api };
    (api, holder)
}

/// Frames the answer promises: delivered here, plus one per user forwarded
/// to the node holding it (each bench user has one connection).
fn arriving(answer: &serde_json::Value) -> u64 {
    let forwarded = |r: &serde_json::Value| r["forwarded_users"].as_u64().unwrap_or(0);
    let remote = match answer["results"].as_array() {
        Some(results) => results.iter().map(forwarded).sum(),
        None => forwarded(answer),
    };
    answer["delivered"].as_u64().unwrap_or(0) + remote
}

/// `batch` messages, each to a random user held by node `holder` (of
/// `held.len()` nodes holding `held[k]` users each, user i on node i % n);
/// durable with `persist`.
fn message_body(held: &[usize], holder: usize, batch: usize, payload_bytes: usize, persist: bool) -> serde_json::Value {
    let nodes = held.len().max(1);
    let on_node = held.get(holder).copied().unwrap_or(0).max(1);
    let message = || {
        let mut m = stamped_content(payload_bytes);
        m["users"] = serde_json::json!([user(holder + nodes * rand::random_range(0..on_node))]);
        if persist {
            m["persist"] = true.into();
        }
        m
    };
    if batch == 1 {
        message()
    } else {
        serde_json::json!({ "messages": (0..batch).map(|_| message()).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use super::{arriving, message_body, pick_nodes};

    #[test]
    fn cross_node_requests_never_go_to_the_holder() {
        for _ in 0..1000 {
            let (api, holder) = pick_nodes(3, true);
            assert!(api < 3 && holder < 3 && api != holder);
            let (api, holder) = pick_nodes(3, false);
            assert_eq!(api, holder);
        }
        assert_eq!(pick_nodes(1, false), (0, 0));
    }

    #[test]
    fn forwarded_users_count_as_arriving() {
        let single = serde_json::json!({"delivered": 0, "forwarded_users": 1});
        assert_eq!(arriving(&single), 1);
        let batch = serde_json::json!({"delivered": 2, "results": [{"forwarded_users": 1}, {"forwarded_users": 0}]});
        assert_eq!(arriving(&batch), 3);
    }

    #[test]
    fn persist_marks_every_message_durable() {
        let single = message_body(&[10], 0, 1, 8, true);
        assert_eq!(single["persist"], true);
        let batch = message_body(&[10], 0, 3, 8, true);
        let messages = batch["messages"].as_array().expect("a batch");
        assert!(messages.len() == 3 && messages.iter().all(|m| m["persist"] == true));
        assert!(message_body(&[10], 0, 1, 8, false).get("persist").is_none());
    }
}
