use super::proc;
use super::{Ctx, Receivers, connect, post, redis_info, snapshot, stamped_content};
use crate::bench::Report;
use futures_util::SinkExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// N idle authenticated connections: handshake rate and CPU per handshake,
/// then RSS per connection after they settle, and the CPU that merely
/// holding them costs (heartbeats and timers) while they are held.
///
/// With `large_frame` > 0, every connection then sends one FETCH_INFO
/// request padded to that size and receives one broadcast of that size,
/// and RSS per connection is measured again: the sizing figure must hold
/// after traffic, not only for fresh connections.
pub async fn hold(ctx: &Ctx, hold_secs: f64, large_frame: usize) -> Result<Report, String> {
    let mut connected = connect(ctx, "hold", "handshake").await?;
    let mut conns = std::mem::take(&mut connected.conns);
    ctx.progress(format!("hold: holding for {hold_secs} s"));
    // Keep reading so pings are answered, exactly like idle mobile clients.
    let receivers = if large_frame == 0 { Some(Receivers::spawn(std::mem::take(&mut conns))) } else { None };
    let before = snapshot(ctx).await?;
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    let after = snapshot(ctx).await?;
    let secs = hold_secs.max(1e-9);
    if let (Some(g), Some(b), Some(a)) = (connected.report.gateway.as_mut(), before.gateway(), after.gateway()) {
        g.cpu_idle_ms_per_sec = Some(proc::cpu_between(b, a).as_secs_f64() * 1e3 / secs);
    }
    if let Some(r) = connected.report.redis.as_mut() {
        r.cpu_idle_ms_per_sec =
            before.redis.zip(after.redis).map(|(b, a)| proc::cpu_between(b, a).as_secs_f64() * 1e3 / secs);
        r.commands_idle_per_sec =
            before.commands.zip(after.commands).map(|(b, a)| redis_info::commands_between(b, a) as f64 / secs);
    }
    connected.measure_memory(ctx).await?;
    let receivers = match receivers {
        Some(receivers) => receivers,
        None => large_frames(ctx, &mut connected, conns, large_frame).await?,
    };
    receivers.stop();
    Ok(connected.report)
}

async fn large_frames(
    ctx: &Ctx,
    connected: &mut super::Connected,
    mut conns: Vec<super::Conn>,
    bytes: usize,
) -> Result<Receivers, String> {
    ctx.progress(format!("hold: one {bytes}-byte frame each way on every connection"));
    let pad = "x".repeat(bytes);
    let request = serde_json::json!({ "pad": pad }).to_string();
    let mut frame = Vec::with_capacity(4 + request.len());
    frame.extend_from_slice(&pushgate::protocol::action::FETCH_INFO.to_be_bytes());
    frame.extend_from_slice(request.as_bytes());
    let frame = bytes::Bytes::from(frame);
    for ws in &mut conns {
        ws.send(Message::Binary(frame.clone())).await.map_err(|e| format!("sending the large request: {e}"))?;
    }
    let n = conns.len() as u64;
    let receivers = Receivers::spawn(conns);
    post(ctx, "/v1/broadcast", &stamped_content(bytes)).await?;
    receivers.wait_for(n, Duration::from_secs(120)).await;
    if receivers.count() < n {
        return Err(format!("only {} of {n} connections got the large broadcast", receivers.count()));
    }
    // Sessions compact when at rest; give them a moment, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let (Some(g), Some(a)) = (connected.report.gateway.as_mut(), snapshot(ctx).await?.gateway()) {
        g.rss_per_connection_after_large_bytes =
            Some((a.rss_bytes as f64 - g.rss_before_bytes as f64) / connected.report.connections.max(1) as f64);
    }
    Ok(receivers)
}
