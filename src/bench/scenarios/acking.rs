//! Resuming clients that handle durable delivery like the official ones
//! (proto-spec section 8, "What the official clients do"): they count
//! SYNCED, time each MESSAGE by the stamp in its inner payload, and ack
//! what they received in batches, `{"ids": [...]}` at most every 50 ms or
//! at once when 64 ids wait (pushgate.js's defaults), so the gateway's ack
//! cost is part of what a run measures. With [`Acks::confirm`] each ACK
//! carries a `seq` and is answered (pushgate.js `confirmAcks: true`).

use super::histogram;
use crate::bench::conn::{self, Conn};
use crate::bench::report::Durable;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use pushgate::protocol::action;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// pushgate.js `ackBatchMs`.
const ACK_BATCH_WAIT: Duration = Duration::from_millis(50);
/// pushgate.js `ackBatchMax`.
const ACK_BATCH_MAX: usize = 64;

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    /// Plain pushes (stamped application frames) received.
    plain_received: AtomicU64,
    synced: AtomicU64,
    ack_frames: AtomicU64,
    acked_ids: AtomicU64,
    ack_answers: AtomicU64,
    errors: AtomicU64,
    out_of_order: AtomicU64,
}

pub struct Acking {
    counters: Arc<Counters>,
    latency: Arc<Mutex<Histogram<u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acks: Acks,
}

/// How the clients ack.
#[derive(Debug, Clone, Copy)]
pub struct Acks {
    /// Every ACK asks for an answer (`seq`).
    pub confirm: bool,
}

impl Acking {
    pub fn spawn(conns: Vec<Conn>, acks: Acks) -> Acking {
        let counters = Arc::new(Counters::default());
        let latency = Arc::new(Mutex::new(histogram()));
        let spawn = |ws| tokio::spawn(client(ws, acks, counters.clone(), latency.clone()));
        let tasks = conns.into_iter().map(spawn).collect();
        Acking { counters, latency, tasks, acks }
    }

    /// MESSAGE frames received (with a stamp).
    pub fn count(&self) -> u64 {
        self.counters.received.load(Ordering::Relaxed)
    }

    /// Plain pushes received (with a stamp), beside the durable ones.
    pub fn plain_count(&self) -> u64 {
        self.counters.plain_received.load(Ordering::Relaxed)
    }

    /// Waits until `expected` plain pushes arrived, or `limit` passed.
    pub async fn wait_plain(&self, expected: u64, limit: Duration) {
        wait_until(limit, || self.plain_count() >= expected).await;
    }

    /// Waits until every connection had its SYNCED, or `limit` passed;
    /// returns how many did.
    pub async fn wait_synced(&self, connections: u64, limit: Duration) -> u64 {
        let c = &self.counters;
        wait_until(limit, || c.synced.load(Ordering::Relaxed) >= connections).await;
        c.synced.load(Ordering::Relaxed)
    }

    /// Waits until `expected` messages arrived, then until every one is
    /// acked and (asked for) every ACK answered (or `limit` passed), so that the run's
    /// CPU includes the acks of all its pushes.
    pub async fn wait_for(&self, expected: u64, limit: Duration) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let started = Instant::now();
        wait_until(limit, || load(&c.received) >= expected).await;
        let left = limit.saturating_sub(started.elapsed()) + ACK_BATCH_WAIT * 4;
        let answered = || !self.acks.confirm || load(&c.ack_answers) >= load(&c.ack_frames);
        wait_until(left, || load(&c.acked_ids) >= load(&c.received) && answered()).await;
    }

    pub fn histogram(&self) -> Histogram<u64> {
        self.latency.lock().map(|h| h.clone()).unwrap_or_else(|_| histogram())
    }

    /// The clients' side of the durable figures.
    pub fn figures(&self) -> Durable {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        Durable {
            synced: load(&c.synced),
            ack_frames: load(&c.ack_frames),
            acked_ids: load(&c.acked_ids),
            ack_answers: load(&c.ack_answers),
            errors: load(&c.errors),
            out_of_order: load(&c.out_of_order),
        }
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One client: reads until the socket ends, acking in batches.
async fn client(mut ws: Conn, acks: Acks, c: Arc<Counters>, latency: Arc<Mutex<Histogram<u64>>>) {
    let mut pending: Vec<u64> = Vec::with_capacity(ACK_BATCH_MAX);
    let (mut seq, mut last) = (0u64, 0u64);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    loop {
        let flush = tokio::select! {
            message = ws.next() => {
                let Some(Ok(message)) = message else { break };
                let Message::Binary(frame) = message else { continue };
                match conn::action_of(&frame) {
                    Some(action::MESSAGE) => {
                        let Some((id, _, payload)) = conn::durable_message(&frame) else { continue };
                        if id <= last {
                            c.out_of_order.fetch_add(1, Ordering::Relaxed);
                        }
                        last = last.max(id);
                        if let Some(us) = conn::stamp_age_micros(payload) {
                            c.received.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut h) = latency.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                        if pending.is_empty() {
                            timer.as_mut().reset(tokio::time::Instant::now() + ACK_BATCH_WAIT);
                        }
                        pending.push(id);
                        pending.len() >= ACK_BATCH_MAX
                    }
                    Some(action::SYNCED) => {
                        c.synced.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Some(action::ACK) => {
                        c.ack_answers.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    Some(action::ERROR) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    // A plain push (`--alternate`): counted, not acked.
                    Some(a) if a >= action::APPLICATION_MIN && conn::latency_micros(&frame).is_some() => {
                        c.plain_received.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                    _ => false,
                }
            }
            () = &mut timer, if !pending.is_empty() => true,
        };
        if flush {
            seq += 1;
            let seq = acks.confirm.then_some(seq);
            if ws.send(Message::Binary(conn::ack_frame(&pending, seq))).await.is_err() {
                break;
            }
            c.ack_frames.fetch_add(1, Ordering::Relaxed);
            c.acked_ids.fetch_add(pending.len() as u64, Ordering::Relaxed);
            pending.clear();
        }
    }
}
