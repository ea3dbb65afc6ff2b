//! `unicast --persist --alternate SECS`: plain and durable pushes in one
//! run, to the same resuming, acking connections, in alternating phases of
//! SECS each (plain first), so that both kinds see the same machine. Runs
//! apart move by 10-25% on a VM between minutes, more than the difference
//! to measure; phases seconds apart share most of that drift.
//!
//! Each phase's gateway CPU runs from its first request until every frame
//! it sent arrived and, for durable pushes, every message was acked: the
//! acks are part of what a durable push costs.

use super::acking::Acking;
use super::histogram;
use super::unicast::{Answers, Driver, latency};
use super::{Ctx, RunClock, snapshot};
use crate::bench::Report;
use crate::bench::report::{Compare, per_push, ratio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait for one phase's frames (and acks) after its last answer.
const SETTLE: Duration = Duration::from_secs(10);
/// Every phase's clock keeps running this long after its last frame (and
/// ack) arrived, so that work a phase leaves behind is charged to it, not
/// to the next: the embedded inbox syncs acks within `sync_interval_ms`
/// (1 s by default), "written" marks are flushed every second. Both kinds
/// get the same quiet time, so what an idle gateway costs is charged
/// alike.
const QUIET: Duration = Duration::from_millis(1200);

/// Runs `duration` seconds of phases (at least one of each kind, after an
/// unmeasured pair that warms the connections, the HTTP pool and the
/// inbox records up) at `rate` and fills `report`: its `compare` section,
/// and the rest for the durable phases alone, like a `--persist` run.
pub async fn run(
    ctx: &Ctx,
    driver: &Driver,
    acking: &Acking,
    rate: f64,
    duration: f64,
    phase_secs: f64,
    report: &mut Report,
) -> Result<(), String> {
    if ctx.args.pid.is_empty() {
        return Err("--alternate measures the gateway's CPU: give its --pid".into());
    }
    let pairs = ((duration / (2.0 * phase_secs)).floor() as usize).max(1);
    ctx.progress(format!("alternating plain and durable pushes: 1 + {pairs} pairs of {phase_secs} s phases"));
    let durable_answers: Answers = Arc::new(Mutex::new(histogram()));
    let plain_answers: Answers = Arc::new(Mutex::new(histogram()));
    let warm_up: Answers = Arc::new(Mutex::new(histogram()));
    let mut compare = Compare { phase_secs, ..Compare::default() };
    // Frames promised so far, per kind.
    let (mut plain_expected, mut durable_expected) = (0, 0);
    let mut durable_secs = 0.0;
    for round in 0..=pairs {
        let mut pair = [None; 2];
        for (k, persist) in [false, true].into_iter().enumerate() {
            let clock = RunClock::start(ctx).await?;
            let (sent, delivered) = (driver.sent.load(Ordering::Relaxed), driver.delivered.load(Ordering::Relaxed));
            let answers = match (round, persist) {
                (0, _) => &warm_up,
                (_, true) => &durable_answers,
                (_, false) => &plain_answers,
            };
            driver.run(rate, phase_secs, persist, answers).await;
            let pushes = driver.sent.load(Ordering::Relaxed) - sent;
            let promised = driver.delivered.load(Ordering::Relaxed) - delivered;
            if persist {
                durable_expected += promised;
                acking.wait_for(durable_expected, SETTLE).await;
            } else {
                plain_expected += promised;
                acking.wait_plain(plain_expected, SETTLE).await;
            }
            tokio::time::sleep(QUIET).await;
            let cpu = clock.gateway_cpu(ctx).await?.unwrap_or_default().as_secs_f64();
            if round == 0 {
                continue; // the warm-up pair
            }
            if persist {
                compare.durable_pushes += pushes;
                compare.durable_cpu_secs += cpu;
                durable_secs += clock.elapsed().as_secs_f64();
            } else {
                compare.plain_pushes += pushes;
                compare.plain_cpu_secs += cpu;
            }
            pair[k] = per_push(cpu, pushes);
        }
        if round > 0 {
            compare.pair_ratios.push(ratio(pair[1], pair[0]));
        }
    }
    compare.plain_answer_latency = Some(latency(&plain_answers));
    compare.finish();
    // The durable phases alone, like a `--persist` run (no Redis figures:
    // its counters are not split by phase).
    report.ops = compare.durable_pushes;
    report.run_secs = durable_secs;
    report.ops_per_sec = compare.durable_pushes as f64 / durable_secs.max(1e-9);
    report.latency = crate::bench::Latency::from(&acking.histogram());
    report.sent = compare.durable_pushes;
    report.missing =
        durable_expected.saturating_sub(acking.count()) + plain_expected.saturating_sub(acking.plain_count());
    report.answer_latency = Some(latency(&durable_answers));
    report.durable = Some(acking.figures());
    let end = snapshot(ctx).await?;
    if let Some(g) = report.gateway.as_mut() {
        g.cpu_run_secs = compare.durable_cpu_secs;
        g.cpu_us_per_op = compare.durable_cpu_us_per_push;
        g.rss_after_bytes = end.gateway().map_or(0, |a| a.rss_bytes);
    }
    report.compare = Some(compare);
    driver.check()
}
