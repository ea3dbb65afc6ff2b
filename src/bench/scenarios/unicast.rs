use super::{Ctx, Receivers, RunClock, connect, stamped_content};
use crate::bench::{Report, user};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;

/// Requests in flight against the API at once.
const MAX_IN_FLIGHT: usize = 64;

/// Pushes to random users at a fixed rate through the internal API, one
/// message per request (`/v1/push`) or `batch` per request (`/v1/push/batch`).
pub async fn unicast(
    ctx: &Ctx,
    rate: f64,
    duration: f64,
    batch: usize,
    payload_bytes: usize,
) -> Result<Report, String> {
    let batch = batch.max(1);
    let mut connected = connect(ctx, "unicast", "push").await?;
    let users = connected.report.connections;
    let receivers = Receivers::spawn(std::mem::take(&mut connected.conns));
    ctx.progress(format!("unicast: {rate} pushes/s to {users} users for {duration} s, {batch} per request"));
    let ctx_http = Arc::new((ctx.http.clone(), ctx.args.api.clone(), ctx.api_key.clone()));
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let clock = RunClock::start(ctx)?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate.max(1e-3)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        ticker.tick().await;
        let body = message_body(users, batch, payload_bytes);
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (http, sent, delivered, errors) = (ctx_http.clone(), sent.clone(), delivered.clone(), errors.clone());
        tokio::spawn(async move {
            let path = if batch == 1 { "/v1/push" } else { "/v1/push/batch" };
            let result = http.0.post(format!("{}{path}", http.1)).bearer_auth(&http.2).json(&body).send().await;
            match result {
                Ok(r) if r.status().is_success() => {
                    let answer: serde_json::Value = r.json().await.unwrap_or_default();
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                    delivered.fetch_add(answer["delivered"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
    // Let in-flight requests finish, then the frames arrive.
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let expected = delivered.load(Ordering::Relaxed);
    receivers.wait_for(expected, Duration::from_secs(10)).await;
    let pushes = sent.load(Ordering::Relaxed);
    let report = &mut connected.report;
    clock.finish(ctx, report, pushes, &receivers.histogram())?;
    report.sent = pushes;
    report.missing = expected.saturating_sub(receivers.count());
    receivers.stop();
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} push requests failed"));
    }
    Ok(connected.report)
}

fn message_body(users: usize, batch: usize, payload_bytes: usize) -> serde_json::Value {
    let message = || {
        let mut m = stamped_content(payload_bytes);
        m["users"] = serde_json::json!([user(rand::random_range(0..users.max(1)))]);
        m
    };
    if batch == 1 {
        message()
    } else {
        serde_json::json!({ "messages": (0..batch).map(|_| message()).collect::<Vec<_>>() })
    }
}
