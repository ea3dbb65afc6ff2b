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
) -> Result<Report, String> {
    let batch = batch.max(1);
    let mut connected = connect(ctx, "unicast", "push").await?;
    let users = connected.report.connections;
    let receivers = Receivers::spawn(std::mem::take(&mut connected.conns));
    let held: Vec<usize> = (0..ctx.nodes()).map(|node| ctx.connections_on(node)).collect();
    let routing = if ctx.nodes() == 1 {
        ""
    } else if cross_node {
        ", each through another node's API"
    } else {
        ", each through the holding node's API"
    };
    ctx.progress(format!("unicast: {rate} pushes/s to {users} users for {duration} s, {batch} per request{routing}"));
    let ctx_http = Arc::new((ctx.http.clone(), ctx.args.api.clone(), ctx.api_key.clone()));
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let clock = RunClock::start(ctx).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate.max(1e-3)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        ticker.tick().await;
        let (api, holder) = pick_nodes(held.len(), cross_node);
        let body = message_body(&held, holder, batch, payload_bytes);
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (http, sent, delivered, errors) = (ctx_http.clone(), sent.clone(), delivered.clone(), errors.clone());
        tokio::spawn(async move {
            let path = if batch == 1 { "/v1/push" } else { "/v1/push/batch" };
            let base = http.1.get(api).map_or("", String::as_str);
            let result = http.0.post(format!("{base}{path}")).bearer_auth(&http.2).json(&body).send().await;
            match result {
                Ok(r) if r.status().is_success() => {
                    let answer: serde_json::Value = r.json().await.unwrap_or_default();
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
    // Let in-flight requests finish, then the frames arrive.
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let expected = delivered.load(Ordering::Relaxed);
    receivers.wait_for(expected, Duration::from_secs(10)).await;
    let pushes = sent.load(Ordering::Relaxed);
    let report = &mut connected.report;
    clock.finish(ctx, report, pushes, &receivers.histogram()).await?;
    report.sent = pushes;
    report.missing = expected.saturating_sub(receivers.count());
    receivers.stop();
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} push requests failed"));
    }
    Ok(connected.report)
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
/// `held.len()` nodes holding `held[k]` users each, user i on node i % n).
fn message_body(held: &[usize], holder: usize, batch: usize, payload_bytes: usize) -> serde_json::Value {
    let nodes = held.len().max(1);
    let on_node = held.get(holder).copied().unwrap_or(0).max(1);
    let message = || {
        let mut m = stamped_content(payload_bytes);
        m["users"] = serde_json::json!([user(holder + nodes * rand::random_range(0..on_node))]);
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
    use super::{arriving, pick_nodes};

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
}
