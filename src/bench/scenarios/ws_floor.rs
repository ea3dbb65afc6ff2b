use super::{Ctx, RunClock, connect, histogram};
use crate::bench::Report;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// How long replies may trail the last request.
const GRACE: Duration = Duration::from_secs(2);

/// PING (2) requests at a fixed rate on one WebSocket, each answered by a
/// PONG (3): the per-request floor of a persistent connection (a wake-up, a
/// read, a reply write), to set beside `http-floor`. The other connections
/// opened by `--connections` stay idle.
pub async fn ws_floor(ctx: &Ctx, rate: f64, duration: f64) -> Result<Report, String> {
    let mut connected = connect(ctx, "ws-floor", "request").await?;
    let mut conns = std::mem::take(&mut connected.conns);
    let ws = conns.first_mut().ok_or("ws-floor needs at least one connection")?;
    ctx.progress(format!("ws-floor: PING at {rate}/s on one connection for {duration} s"));
    let clock = RunClock::start(ctx).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs_f64(duration);
    let give_up = tokio::time::Instant::from_std(end + GRACE);
    let mut latency = histogram();
    let mut pending = VecDeque::new();
    let mut sent = 0u64;
    loop {
        let sending = Instant::now() < end;
        if !sending && pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if sending => {
                sent += 1;
                let mut frame = 2u32.to_be_bytes().to_vec();
                frame.extend_from_slice(format!("{{\"seq\":{sent}}}").as_bytes());
                ws.send(Message::Binary(frame.into())).await.map_err(|e| e.to_string())?;
                pending.push_back(Instant::now());
            }
            message = ws.next() => match message {
                Some(Ok(Message::Binary(frame))) if frame.starts_with(&3u32.to_be_bytes()) => {
                    if let Some(at) = pending.pop_front() {
                        let _ = latency.record((at.elapsed().as_micros() as u64).max(1));
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
    let report = &mut connected.report;
    let answered = latency.len();
    clock.finish(ctx, report, answered, &latency).await?;
    report.sent = sent;
    report.missing = sent.saturating_sub(answered);
    drop(conns);
    Ok(connected.report)
}
