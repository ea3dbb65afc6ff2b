use super::{Ctx, Receivers, connect};
use crate::bench::Report;
use std::time::Duration;

/// N idle authenticated connections: handshake rate and CPU per handshake,
/// then RSS per connection after they settle.
pub async fn hold(ctx: &Ctx, hold_secs: f64) -> Result<Report, String> {
    let mut connected = connect(ctx, "hold", "handshake").await?;
    let conns = std::mem::take(&mut connected.conns);
    // Keep reading so pings are answered, exactly like idle mobile clients.
    let receivers = Receivers::spawn(conns);
    ctx.progress(format!("hold: holding for {hold_secs} s"));
    tokio::time::sleep(Duration::from_secs_f64(hold_secs)).await;
    connected.measure_memory(ctx)?;
    receivers.stop();
    Ok(connected.report)
}
