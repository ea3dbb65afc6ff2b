use super::{Ctx, post, snapshot, stamped_content};
use crate::bench::Report;
use crate::bench::conn::{self, Conn};
use crate::bench::report::{Gateway, Replay};
use futures_util::{SinkExt, StreamExt};
use pushgate::protocol::action;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The longest a replay may take before the round fails.
const REPLAY_LIMIT: Duration = Duration::from_secs(120);
/// How long after SYNCED the CPU is read again, for the "written" marks
/// of the replayed messages that the gateway saves after sending them.
const SETTLE: Duration = Duration::from_millis(500);

/// R rounds: `messages` durable messages stored through `/v1/push/batch`
/// (`batch` per request) for a fresh user who is offline, then that user
/// connects with `resume=1`; time from the start of the upgrade to SYNCED,
/// checking that exactly `messages` MESSAGE frames came, in id order,
/// then SYNCED with `replayed` = `messages`. Gateway CPU per stored and
/// per replayed message over all rounds (/proc counts 10 ms ticks: a
/// round's own figure is coarse, the total is not).
pub async fn replay(
    ctx: &Ctx,
    rounds: usize,
    messages: usize,
    batch: usize,
    payload_bytes: usize,
) -> Result<Report, String> {
    let mut figures = Replay { rounds, messages, ..Replay::default() };
    let (mut store_cpu, mut replay_cpu, mut marks_cpu) = (0.0, 0.0, 0.0);
    let mut measured_cpu = !ctx.args.pid.is_empty();
    let rss_before = snapshot(ctx).await?.gateway().map_or(0, |s| s.rss_bytes);
    for round in 1..=rounds {
        let user = format!("bench{}-replay-{round}", std::process::id());
        ctx.progress(format!("replay: round {round}/{rounds}: storing {messages} durable messages for {user}"));
        let before = snapshot(ctx).await?.gateway();
        let started = Instant::now();
        store(ctx, &user, messages, batch, payload_bytes).await?;
        figures.store_secs.push(started.elapsed().as_secs_f64());
        let after = snapshot(ctx).await?.gateway();
        let url = conn::with_resume(&ctx.args.url[(round - 1) % ctx.nodes()]);
        let token = ctx.auth.mint(&user, None, 3600)?;
        let started = Instant::now();
        let mut ws = conn::connect(&url, conn::resolve(&url)?, Ipv4Addr::LOCALHOST, &token).await?;
        let last = read_replay(&mut ws, messages).await.map_err(|e| format!("round {round}: {e}"))?;
        let synced = started.elapsed();
        let at_synced = snapshot(ctx).await?.gateway();
        tokio::time::sleep(SETTLE).await;
        let settled = snapshot(ctx).await?.gateway();
        figures.synced_ms.push(synced.as_secs_f64() * 1e3);
        match (before, after, at_synced, settled) {
            (Some(b), Some(a), Some(s), Some(t)) => {
                let secs = |x, y| super::proc::cpu_between(x, y).as_secs_f64();
                store_cpu += secs(b, a);
                replay_cpu += secs(a, s);
                marks_cpu += secs(a, t);
                figures.cpu_replay_ms.push(secs(a, s) * 1e3);
            }
            _ => measured_cpu = false,
        }
        ctx.progress(format!(
            "  round {round}: {messages} replayed, SYNCED after {:.1} ms",
            synced.as_secs_f64() * 1e3
        ));
        // Not measured: ack them all and leave.
        let ack = serde_json::json!({ "upto": last }).to_string();
        let mut frame = action::ACK.to_be_bytes().to_vec();
        frame.extend_from_slice(ack.as_bytes());
        let _ = ws.send(Message::Binary(frame.into())).await;
        let _ = ws.close(None).await;
    }
    let mut sorted = figures.synced_ms.clone();
    sorted.sort_by(f64::total_cmp);
    figures.synced_p50_ms = sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
    figures.synced_max_ms = sorted.last().copied().unwrap_or(0.0);
    let total = (rounds * messages) as f64;
    let mut report = Report {
        scenario: "replay".into(),
        connections: 1,
        nodes: ctx.nodes(),
        op: "replayed message".into(),
        ops: (rounds * messages) as u64,
        run_secs: figures.synced_ms.iter().sum::<f64>() / 1e3,
        ..Report::default()
    };
    report.ops_per_sec = report.ops as f64 / report.run_secs.max(1e-9);
    if measured_cpu && total > 0.0 {
        figures.store_cpu_us_per_message = Some(store_cpu * 1e6 / total);
        figures.cpu_us_per_replayed_message = Some(replay_cpu * 1e6 / total);
        figures.cpu_us_per_replayed_message_with_marks = Some(marks_cpu * 1e6 / total);
        let rss = snapshot(ctx).await?.gateway().map_or(0, |s| s.rss_bytes);
        report.gateway = Some(Gateway {
            rss_before_bytes: rss_before,
            rss_after_bytes: rss,
            cpu_run_secs: replay_cpu,
            cpu_us_per_op: Some(replay_cpu * 1e6 / total),
            ..Gateway::default()
        });
    }
    report.replay = Some(figures);
    Ok(report)
}

/// Stores `messages` durable messages for `user`, `batch` per request;
/// every one must get an id.
async fn store(ctx: &Ctx, user: &str, messages: usize, batch: usize, payload_bytes: usize) -> Result<(), String> {
    let mut left = messages;
    while left > 0 {
        let n = left.min(batch.max(1));
        let message = || {
            let mut m = stamped_content(payload_bytes);
            m["users"] = serde_json::json!([user]);
            m["persist"] = true.into();
            m
        };
        let body = serde_json::json!({ "messages": (0..n).map(|_| message()).collect::<Vec<_>>() });
        let answer = post(ctx, "/v1/push/batch", &body).await?;
        let stored =
            answer["results"].as_array().map_or(0, |r| r.iter().filter(|r| r["message_ids"][user].is_u64()).count());
        if stored != n {
            return Err(format!("{stored} of {n} durable messages stored for {user}: {answer}"));
        }
        left -= n;
    }
    Ok(())
}

/// Reads the replay: exactly `expected` MESSAGE frames in increasing id
/// order, then SYNCED with `replayed` = `expected`. Returns the last id.
async fn read_replay(ws: &mut Conn, expected: usize) -> Result<u64, String> {
    let read = async {
        let (mut count, mut last) = (0usize, 0u64);
        while let Some(message) = ws.next().await {
            let Message::Binary(frame) = message.map_err(|e| format!("socket: {e}"))? else { continue };
            match conn::action_of(&frame) {
                Some(action::MESSAGE) => {
                    let (id, _, _) = conn::durable_message(&frame).ok_or("a short MESSAGE frame")?;
                    if id <= last {
                        return Err(format!("MESSAGE {id} after {last}: not in id order"));
                    }
                    (count, last) = (count + 1, id);
                }
                Some(action::SYNCED) => {
                    let synced: serde_json::Value =
                        serde_json::from_slice(&frame[4..]).map_err(|e| format!("SYNCED is not JSON: {e}"))?;
                    if count != expected || synced["replayed"].as_u64() != Some(expected as u64) {
                        return Err(format!(
                            "{count} MESSAGE frames then SYNCED {synced}; expected {expected} \
                             (more than inbox.max_messages are evicted)"
                        ));
                    }
                    return Ok(last);
                }
                other => return Err(format!("unexpected frame {other:?} during the replay")),
            }
        }
        Err("the connection ended before SYNCED".into())
    };
    tokio::time::timeout(REPLAY_LIMIT, read).await.map_err(|_| format!("no SYNCED within {REPLAY_LIMIT:?}"))?
}
