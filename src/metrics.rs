//! Metric names and the Prometheus recorder.
//!
//! Hot paths hold pre-registered handles (an atomic add each) instead of
//! looking metrics up by name and labels on every frame. The recorder is
//! process-global, so several servers in one test process share it; counters
//! are asserted as deltas.

use crate::protocol::action;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub struct ByAction {
    known: Vec<(u32, Counter)>,
    other: Counter,
}

impl ByAction {
    fn new(name: &'static str) -> ByAction {
        // Built-in actions get their own label; the rest share "other", which
        // keeps label cardinality bounded whatever codes clients send.
        let known = action::ALL.iter().map(|&(a, label)| (a, metrics::counter!(name, "action" => label))).collect();
        ByAction { known, other: metrics::counter!(name, "action" => "other") }
    }

    pub fn inc(&self, action: u32) {
        match self.known.iter().find(|(a, _)| *a == action) {
            Some((_, counter)) => counter.increment(1),
            None => self.other.increment(1),
        }
    }
}

pub struct Metrics {
    pub connections: Gauge,
    pub frames_in: ByAction,
    pub frames_out: ByAction,
    /// Messages accepted by /v1/push, /v1/push/batch and /v1/broadcast.
    pub pushes: Counter,
    /// Frames queued to sessions by pushes.
    pub deliveries: Counter,
    pub queue_full_drops: Counter,
    pub slow_consumer_disconnects: Counter,
    /// Sessions whose WebSocket buffers were rebuilt small after large traffic.
    pub compactions: Counter,
    /// Seconds from a push request being parsed to its frames being queued.
    pub push_enqueue_seconds: Histogram,
    /// Internal API connections refused at `api.max_connections`.
    pub api_refused: Counter,
    /// 1 while the store serves, 0 while it is failing and being reopened.
    pub store_healthy: Gauge,
    /// Panics caught in handlers, API requests and session tasks.
    pub panics: Counter,
    /// Durable messages answered as stored, one per user of a persisted
    /// push (not an idempotent repeat, nor one whose disk sync failed).
    pub durable_pushes: Counter,
    /// Durable messages sent in replays on connect.
    pub inbox_replayed: Counter,
    /// ACK frames applied.
    pub inbox_acks: Counter,
    /// Held messages evicted by `inbox.max_messages` before every device acked them.
    pub inbox_evicted: Counter,
    /// Held messages whose ttl ran out before every device acked them.
    pub inbox_expired: Counter,
    /// Held messages replaced by a newer one with the same collapse key.
    pub inbox_collapsed: Counter,
    /// 1 while the inbox storage answers, 0 after a failed operation.
    pub inbox_healthy: Gauge,
    /// "Written" marks for the message status dropped (more than
    /// `marks::MAX_WAITING` waiting, or their save failed): the status
    /// then lacks `written_at`.
    pub inbox_marks_dropped: Counter,
    /// Embedded inbox log segments freed by compaction.
    pub inbox_log_compactions: Counter,
    /// Embedded inbox: how long each disk sync (`fdatasync`) took.
    pub inbox_sync_seconds: Histogram,
    /// Undelivered-message webhooks the endpoint accepted (2xx).
    pub webhooks_delivered: Counter,
    /// Webhook attempts that failed (error, timeout, non-2xx).
    pub webhook_attempts_failed: Counter,
    /// Webhook events given up after `webhook.max_attempts`.
    pub webhooks_given_up: Counter,
}

struct Global {
    handle: Option<PrometheusHandle>,
    metrics: Metrics,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();

fn global() -> &'static Global {
    GLOBAL.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("pushgate_push_enqueue_seconds".into()),
                &[0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("pushgate_inbox_sync_seconds".into()),
                    &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5],
                )
            })
            .map(|b| b.build_recorder());
        // Installing fails only if another recorder owns the process; then we
        // still run, just without an exposition.
        let handle = match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).ok().map(|()| handle)
            }
            Err(_) => None,
        };
        let metrics = Metrics {
            connections: metrics::gauge!("pushgate_connections"),
            frames_in: ByAction::new("pushgate_frames_in_total"),
            frames_out: ByAction::new("pushgate_frames_out_total"),
            pushes: metrics::counter!("pushgate_pushes_total"),
            deliveries: metrics::counter!("pushgate_deliveries_total"),
            queue_full_drops: metrics::counter!("pushgate_queue_full_drops_total"),
            slow_consumer_disconnects: metrics::counter!("pushgate_slow_consumer_disconnects_total"),
            compactions: metrics::counter!("pushgate_session_compactions_total"),
            push_enqueue_seconds: metrics::histogram!("pushgate_push_enqueue_seconds"),
            api_refused: metrics::counter!("pushgate_api_connections_refused_total"),
            store_healthy: metrics::gauge!("pushgate_store_healthy"),
            panics: metrics::counter!("pushgate_panics_total"),
            durable_pushes: metrics::counter!("pushgate_durable_pushes_total"),
            inbox_replayed: metrics::counter!("pushgate_inbox_replayed_total"),
            inbox_acks: metrics::counter!("pushgate_inbox_acks_total"),
            inbox_evicted: metrics::counter!("pushgate_inbox_evicted_total"),
            inbox_expired: metrics::counter!("pushgate_inbox_expired_total"),
            inbox_collapsed: metrics::counter!("pushgate_inbox_collapsed_total"),
            inbox_healthy: metrics::gauge!("pushgate_inbox_healthy"),
            inbox_marks_dropped: metrics::counter!("pushgate_inbox_marks_dropped_total"),
            inbox_log_compactions: metrics::counter!("pushgate_inbox_log_compactions_total"),
            inbox_sync_seconds: metrics::histogram!("pushgate_inbox_sync_seconds"),
            webhooks_delivered: metrics::counter!("pushgate_webhooks_delivered_total"),
            webhook_attempts_failed: metrics::counter!("pushgate_webhook_attempts_failed_total"),
            webhooks_given_up: metrics::counter!("pushgate_webhooks_given_up_total"),
        };
        Global { handle, metrics }
    })
}

pub fn get() -> &'static Metrics {
    &global().metrics
}

/// A frame refused by a session's frame rate (`session.max_frames_per_sec`).
pub fn rate_limited_frame() {
    metrics::counter!("pushgate_frames_rate_limited_total").increment(1);
}

/// Counts a finished handshake by outcome (`accepted`, `token_expired`, ...).
/// Rare enough per connection that a by-name lookup is fine.
pub fn handshake(outcome: &'static str) {
    metrics::counter!("pushgate_handshakes_total", "outcome" => outcome).increment(1);
}

/// Counts a failed store call by kind (`io`, `corrupt`, `other`).
pub fn store_error(kind: &'static str) {
    metrics::counter!("pushgate_store_errors_total", "kind" => kind).increment(1);
}

/// Holds one unit of the `pushgate_connections` gauge: taken when a session
/// starts, given back when it drops, so even a panicking session task (whose
/// future is dropped during unwinding) cannot make the gauge drift.
#[must_use = "dropping the guard decrements the gauge"]
pub struct ConnectionGauge(());

impl ConnectionGauge {
    pub fn acquire() -> ConnectionGauge {
        get().connections.increment(1.0);
        ConnectionGauge(())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        get().connections.decrement(1.0);
    }
}

/// The Prometheus text exposition.
pub fn render() -> String {
    match &global().handle {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}
