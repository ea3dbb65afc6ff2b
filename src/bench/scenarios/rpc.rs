use super::{Ctx, RunClock, connect, histogram};
use crate::bench::Report;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn request(seq: u64) -> Message {
    let mut frame = 111u32.to_be_bytes().to_vec();
    frame.extend_from_slice(format!("{{\"seq\":{seq}}}").as_bytes());
    Message::Binary(frame.into())
}

/// C connections each keeping D FETCH_INFO requests in flight for a while.
pub async fn rpc(ctx: &Ctx, in_flight: usize, duration: f64) -> Result<Report, String> {
    let mut connected = connect(ctx, "rpc", "reply").await?;
    let conns = std::mem::take(&mut connected.conns);
    ctx.progress(format!("rpc: {} connections x {in_flight} in flight for {duration} s", conns.len()));
    let clock = RunClock::start(ctx).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(duration);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut latency = histogram();
                // Replies on one connection come back in request order.
                let mut sent = VecDeque::with_capacity(in_flight);
                let mut seq = 0u64;
                for _ in 0..in_flight {
                    seq += 1;
                    if ws.feed(request(seq)).await.is_err() {
                        return latency;
                    }
                    sent.push_back(Instant::now());
                }
                if ws.flush().await.is_err() {
                    return latency;
                }
                loop {
                    let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
                    let Ok(Some(Ok(message))) = next else { return latency };
                    let Message::Binary(frame) = message else { continue };
                    if !frame.starts_with(&111u32.to_be_bytes()) {
                        continue;
                    }
                    if let Some(at) = sent.pop_front() {
                        let _ = latency.record((at.elapsed().as_micros() as u64).max(1));
                    }
                    seq += 1;
                    if ws.send(request(seq)).await.is_err() {
                        return latency;
                    }
                    sent.push_back(Instant::now());
                }
            })
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        let h = task.await.map_err(|e| e.to_string())?;
        let _ = latency.add(&h);
    }
    let replies = latency.len();
    clock.finish(ctx, &mut connected.report, replies, &latency).await?;
    Ok(connected.report)
}
