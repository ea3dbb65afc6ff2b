use super::{Ctx, Receivers, RunClock, connect, post, stamped_content};
use crate::bench::Report;
use std::time::Duration;

/// K broadcasts back to back through the internal API to N connections;
/// deliveries per second, delivery latency, CPU per delivered message.
///
/// Several nodes: through the first node's API; every connection on every
/// node must receive each broadcast (the other nodes' deliveries are
/// counted as they arrive, as their API answers are not seen).
pub async fn fanout(ctx: &Ctx, broadcasts: usize, payload_bytes: usize) -> Result<Report, String> {
    let mut connected = connect(ctx, "fanout", "delivery").await?;
    let receivers = Receivers::spawn(std::mem::take(&mut connected.conns));
    let remote = (1..ctx.nodes()).map(|node| ctx.connections_on(node) as u64).sum::<u64>();
    ctx.progress(format!("fanout: {broadcasts} broadcasts to {} connections", connected.report.connections));
    let clock = RunClock::start(ctx).await?;
    let mut expected = 0;
    for _ in 0..broadcasts {
        let answer = post(ctx, "/v1/broadcast", &stamped_content(payload_bytes)).await?;
        expected += answer["delivered"].as_u64().unwrap_or(0) + remote;
    }
    receivers.wait_for(expected, Duration::from_secs(30)).await;
    let received = receivers.count();
    let report = &mut connected.report;
    clock.finish(ctx, report, received, &receivers.histogram()).await?;
    report.sent = broadcasts as u64;
    report.missing = expected.saturating_sub(received);
    receivers.stop();
    Ok(connected.report)
}
