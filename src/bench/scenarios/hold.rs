use super::proc;
use super::{Ctx, Receivers, connect, sample};
use crate::bench::Report;
use std::time::Duration;

/// N idle authenticated connections: handshake rate and CPU per handshake,
/// then RSS per connection after they settle, and the CPU that merely
/// holding them costs (heartbeats and timers) while they are held.
pub async fn hold(ctx: &Ctx, hold_secs: f64) -> Result<Report, String> {
    let mut connected = connect(ctx, "hold", "handshake").await?;
    let conns = std::mem::take(&mut connected.conns);
    // Keep reading so pings are answered, exactly like idle mobile clients.
    let receivers = Receivers::spawn(conns);
    ctx.progress(format!("hold: holding for {hold_secs} s"));
    let before = sample(ctx)?;
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    let after = sample(ctx)?;
    if let (Some(g), Some(b), Some(a)) = (connected.report.gateway.as_mut(), before, after) {
        g.cpu_idle_ms_per_sec = Some(proc::cpu_between(b, a).as_secs_f64() * 1e3 / hold_secs.max(1e-9));
    }
    connected.measure_memory(ctx)?;
    receivers.stop();
    Ok(connected.report)
}
