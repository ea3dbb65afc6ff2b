use super::{Ctx, snapshot};
use crate::bench::Report;
use crate::bench::conn::{self, Conn};
use crate::bench::report::Churn;
use futures_util::{StreamExt, stream};
use std::time::{Duration, Instant};

/// How long a round's disconnects may take to show as 0 connections.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How long a client waits for the gateway's half of the close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Connect/disconnect cycles the growth figure is expressed per.
const PER_CYCLES: f64 = 100_000.0;

/// R rounds of N authenticated connections (HELLO read) that all close
/// again (client close); after each round, once the gateway counts no
/// connection, its RSS is sampled. Growth that continues round after round
/// is memory kept per connection ever made (a leak or unbounded allocator
/// fragmentation); the first round warms allocator pools and map capacity,
/// so the growth figure is measured from its end.
pub async fn churn(ctx: &Ctx, rounds: usize, settle_secs: f64) -> Result<Report, String> {
    let n = ctx.args.connections;
    let tokens = ctx.tokens(n)?;
    let first = snapshot(ctx).await?.gateway();
    let mut report = Report {
        scenario: "churn".into(),
        connections: n,
        nodes: ctx.nodes(),
        op: "cycle".into(),
        ..Report::default()
    };
    let mut churn = Churn { rounds, rss_start_bytes: first.map(|s| s.rss_bytes), ..Churn::default() };
    let started = Instant::now();
    let mut connect_secs = 0.0;
    for round in 1..=rounds {
        ctx.progress(format!("churn: round {round}/{rounds}: opening {n} connections"));
        let opened =
            conn::open_all(&ctx.args.url, tokens.clone(), ctx.args.source_addrs, ctx.args.connect_concurrency, true)
                .await?;
        connect_secs += opened.elapsed.as_secs_f64();
        let peak = snapshot(ctx).await?.gateway();
        close_all(opened.conns, ctx.args.connect_concurrency).await;
        let left = wait_for_no_connections(ctx).await?;
        if left != 0 {
            return Err(format!("round {round}: {left} connections still open {DRAIN_LIMIT:?} after closing"));
        }
        tokio::time::sleep(Duration::from_secs_f64(settle_secs)).await;
        if let (Some(p), Some(a)) = (peak, snapshot(ctx).await?.gateway()) {
            churn.rss_peak_bytes.push(p.rss_bytes);
            churn.rss_after_round_bytes.push(a.rss_bytes);
            ctx.progress(format!(
                "  round {round}: RSS {:.1} MB with {n} connected, {:.1} MB after they left",
                p.rss_bytes as f64 / 1e6,
                a.rss_bytes as f64 / 1e6
            ));
        }
    }
    report.ops = (rounds * n) as u64;
    report.run_secs = started.elapsed().as_secs_f64();
    report.ops_per_sec = report.ops as f64 / report.run_secs.max(1e-9);
    report.connect_secs = connect_secs;
    report.handshakes_per_sec = report.ops as f64 / connect_secs.max(1e-9);
    let after = &churn.rss_after_round_bytes;
    if let (Some(&base), Some(&last)) = (after.first(), after.last())
        && after.len() > 1
        && n > 0
    {
        let cycles = ((after.len() - 1) * n) as f64;
        churn.rss_growth_per_100k_cycles_bytes = Some((last as f64 - base as f64) * PER_CYCLES / cycles);
    }
    report.churn = Some(churn);
    if let (Some(b), Some(a)) = (first, snapshot(ctx).await?.gateway()) {
        let cpu = super::proc::cpu_between(b, a).as_secs_f64();
        report.gateway = Some(crate::bench::report::Gateway {
            rss_before_bytes: b.rss_bytes,
            rss_after_bytes: a.rss_bytes,
            cpu_run_secs: cpu,
            cpu_us_per_op: (report.ops > 0).then(|| cpu * 1e6 / report.ops as f64),
            ..Default::default()
        });
    }
    Ok(report)
}

/// Client close on every connection, then read until the gateway's close
/// (or the socket ends), `concurrency` at a time.
async fn close_all(conns: Vec<Conn>, concurrency: usize) {
    stream::iter(conns)
        .for_each_concurrent(concurrency.max(1), |mut ws| async move {
            if ws.close(None).await.is_ok() {
                let _ = tokio::time::timeout(CLOSE_GRACE, async { while let Some(Ok(_)) = ws.next().await {} }).await;
            }
        })
        .await;
}

/// Polls the gateway's `/metrics` (every node's) until
/// `pushgate_connections` (it drops when a connection task ends, after the
/// session left the registry) is 0; returns the last total seen.
async fn wait_for_no_connections(ctx: &Ctx) -> Result<u64, String> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let mut open = 0;
        for api in &ctx.args.api {
            open += connections(ctx, api).await?;
        }
        if open == 0 || Instant::now() >= deadline {
            return Ok(open);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pushgate_connections` from GET /metrics of `api`.
async fn connections(ctx: &Ctx, api: &str) -> Result<u64, String> {
    let response = ctx
        .http
        .get(format!("{api}/metrics"))
        .bearer_auth(&ctx.api_key)
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("GET /metrics: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET /metrics: {status}"));
    }
    gauge(&text, "pushgate_connections").ok_or_else(|| "GET /metrics: no pushgate_connections gauge".into())
}

/// An unlabelled gauge's value from a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        let value: f64 = value.trim().parse().ok()?;
        Some(value.max(0.0).round() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::gauge;

    #[test]
    fn reads_an_unlabelled_gauge() {
        let text = "# TYPE pushgate_connections gauge\npushgate_connections 3\npushgate_connections_x 9\n";
        assert_eq!(gauge(text, "pushgate_connections"), Some(3));
        assert_eq!(gauge("pushgate_connections_x 9\n", "pushgate_connections"), None);
        assert_eq!(gauge("pushgate_connections -0\n", "pushgate_connections"), Some(0));
    }
}
