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
use super::{Ctx, RunClock};
use crate::bench::Report;
use crate::bench::report::Compare;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait for one phase's frames (and acks) after its last answer.
const SETTLE: Duration = Duration::from_secs(10);

/// Runs `duration` seconds of phases (at least one of each kind) at `rate`
/// and fills `report` (its `compare` section; the rest covers the durable
/// phases, like a `--persist` run).
pub async fn run(
    ctx: &Ctx,
    driver: &Driver,
    acking: &Acking,
    rate: f64,
    duration: f64,
    phase_secs: f64,
    report: &mut Report,
) -> Result<(), String> {
    let pairs = ((duration / (2.0 * phase_secs)).floor() as usize).max(1);
    ctx.progress(format!("alternating plain and durable pushes: {pairs} pairs of {phase_secs} s phases"));
    let durable_answers: Answers = Arc::new(Mutex::new(histogram()));
    let plain_answers: Answers = Arc::new(Mutex::new(histogram()));
    let mut compare = Compare { phase_secs, ..Compare::default() };
    let whole = RunClock::start(ctx).await?;
    // Frames promised so far, per kind.
    let (mut plain_expected, mut durable_expected) = (0, 0);
    for _ in 0..pairs {
        let mut pair = [0.0; 2];
        for (k, persist) in [false, true].into_iter().enumerate() {
            let clock = RunClock::start(ctx).await?;
            let (sent, delivered) = (driver.sent.load(Ordering::Relaxed), driver.delivered.load(Ordering::Relaxed));
            let answers = if persist { &durable_answers } else { &plain_answers };
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
            let cpu = clock.gateway_cpu(ctx).await?.ok_or("--alternate needs the gateway's --pid")?;
            let cpu_us = cpu.as_secs_f64() * 1e6;
            match persist {
                true => (compare.durable_pushes += pushes, compare.durable_cpu_secs += cpu.as_secs_f64()),
                false => (compare.plain_pushes += pushes, compare.plain_cpu_secs += cpu.as_secs_f64()),
            };
            pair[k] = cpu_us / pushes.max(1) as f64;
        }
        compare.pair_ratios.push(pair[1] / pair[0].max(1e-9));
    }
    compare.finish();
    whole.finish(ctx, report, compare.durable_pushes, &acking.histogram()).await?;
    report.sent = compare.durable_pushes;
    report.missing = (durable_expected + plain_expected).saturating_sub(acking.count() + acking.plain_count());
    report.answer_latency = Some(latency(&durable_answers));
    report.durable = Some(acking.figures());
    if let Some(g) = report.gateway.as_mut() {
        // Like a `--persist` run: the durable pushes' own CPU.
        g.cpu_run_secs = compare.durable_cpu_secs;
        g.cpu_us_per_op = compare.durable_cpu_us_per_push;
    }
    report.compare = Some(compare);
    driver.check()
}
