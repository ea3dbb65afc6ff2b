use super::{Ctx, RunClock, histogram};
use crate::bench::Report;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

const MAX_IN_FLIGHT: usize = 64;

/// GET /healthz at a fixed rate: the internal API's per-request floor (HTTP
/// parsing, routing, syscalls, wakeups) that every push request pays before
/// any push work. No WebSocket connections are opened.
pub async fn http_floor(ctx: &Ctx, rate: f64, duration: f64) -> Result<Report, String> {
    let url = format!("{}/healthz", ctx.api());
    ctx.progress(format!("http-floor: GET {url} at {rate}/s for {duration} s"));
    let latency = Arc::new(Mutex::new(histogram()));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let clock = RunClock::start(ctx).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(duration);
    let mut sent = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (http, url, latency) = (ctx.http.clone(), url.clone(), latency.clone());
        sent += 1;
        tokio::spawn(async move {
            let started = Instant::now();
            if let Ok(response) = http.get(&url).send().await
                && response.bytes().await.is_ok()
                && let Ok(mut h) = latency.lock()
            {
                let _ = h.record((started.elapsed().as_micros() as u64).max(1));
            }
            drop(permit);
        });
    }
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let latency = latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram());
    let mut report = Report {
        scenario: "http-floor".into(),
        nodes: 1,
        op: "request".into(),
        gateway: Some(Default::default()),
        ..Default::default()
    };
    if ctx.args.pid.is_empty() {
        report.gateway = None;
    }
    let answered = latency.len();
    clock.finish(ctx, &mut report, answered, &latency).await?;
    report.sent = sent;
    report.missing = sent.saturating_sub(answered);
    Ok(report)
}
