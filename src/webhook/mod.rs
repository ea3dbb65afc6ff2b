//! The undelivered-message webhook: when a durable message is not acked in
//! time, one signed JSON event goes to `webhook.url`, so a backend can fall
//! back to APNs or FCM (README "Undelivered webhook").
//!
//! - Scheduling is storage, not memory: every new durable message's check
//!   is written with the message (`inbox::Save::due`), so a restart (or a
//!   crash) loses none.
//! - Every node runs this sender. A due check is *claimed* (moved to the
//!   end of a lease) atomically, so one node at a time owns it; if that
//!   node dies, the check comes due again when the lease ends and another
//!   node takes it. Delivery is therefore at least once: receivers
//!   deduplicate on the event id, which is the same on every attempt.
//! - At due time the user's inbox decides: acked as its mode asks (or
//!   collapsed) means no webhook; otherwise the devices that missed it and
//!   why. Attempts are bounded (`timeout_ms`), retried with exponential
//!   backoff and jitter up to `max_attempts`, at most `max_in_flight` at a
//!   time: a slow or dead endpoint never slows pushes or sessions. Each
//!   outcome is recorded in the message (its status shows it).

mod http;
pub mod sign;

use crate::config::WebhookConfig;
use crate::inbox::Inbox;
use crate::inbox::model::{Missed, Undelivered, UserInbox, Webhook, WebhookState};
use serde_json::{Value, json};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Retry soon when the inbox itself could not be read or written.
const STORAGE_RETRY_MS: u64 = 1_000;

pub struct Sender {
    config: WebhookConfig,
    url: http::Uri,
    inbox: Arc<Inbox>,
    http: http::Client,
    in_flight: Arc<Semaphore>,
}

/// The stable id of the event for `user`'s message `id` created at
/// `created` (unix ms): receivers deduplicate retries on it.
pub fn event_id(user: &str, id: u64, created: u64) -> String {
    let digest = sha2::Sha256::digest(format!("{user}\n{id}\n{created}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The pause before attempt `attempt + 1` (attempt >= 1): the initial
/// backoff doubled per attempt, capped, then jittered to 50-100%.
pub fn backoff_ms(config: &WebhookConfig, attempt: u32) -> u64 {
    let doubled = config.backoff_initial_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
    let capped = doubled.min(config.backoff_max_ms);
    capped / 2 + rand::random_range(0..=capped / 2)
}

impl Sender {
    /// None when no `webhook.url` is configured.
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(config: &WebhookConfig, inbox: Arc<Inbox>) -> Result<Option<Sender>, crate::Error> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let url = url.parse().map_err(|e| format!("webhook.url {url:?}: {e}"))?;
        let http = http::client(config.ca_file.as_deref())?;
        Ok(Some(Sender {
            config: config.clone(),
            url,
            inbox,
            http,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        }))
    }

    /// Looks for due checks every `scan_interval_ms`, forever.
    pub async fn run(self: Arc<Self>) {
        let mut attempts = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.scan_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let free = self.in_flight.available_permits();
            if free == 0 {
                continue;
            }
            let now = crate::clock::unix_ms();
            let claimed = match self.inbox.store().claim_due(now, self.config.lease_ms(), free).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook: due events could not be read; retrying");
                    continue;
                }
            };
            for (user, id) in claimed {
                let Ok(permit) = self.in_flight.clone().acquire_owned().await else { return };
                let sender = self.clone();
                attempts.spawn(async move {
                    sender.attempt(&user, id).await;
                    drop(permit);
                });
            }
            // Reap finished attempts (the set aborts the rest when `run` is
            // dropped, so a stopping node leaves none running).
            while attempts.try_join_next().is_some() {}
        }
    }

    /// One attempt for `user`'s message `id`, and its outcome recorded.
    async fn attempt(&self, user: &str, id: u64) {
        let store = self.inbox.store();
        let now = crate::clock::unix_ms();
        let inbox = match self.inbox.read_message(user, id).await {
            Ok(inbox) => inbox,
            Err(e) => {
                tracing::warn!(error = %e, user, id, "webhook: inbox unreadable; retrying");
                let _ = store.reschedule(user, id, Some(now + STORAGE_RETRY_MS)).await;
                return;
            }
        };
        let todo = inbox.as_ref().and_then(|inbox| {
            let done = inbox.webhook(id).is_some_and(|w| w.state != WebhookState::Retrying);
            let missed = inbox.undelivered(id, now)?;
            (!done).then_some((inbox, missed))
        });
        let Some((record, missed)) = todo else {
            // Acked in time, collapsed, already sent, or gone: nothing to
            // say. Retries that were under way are settled in the status.
            if let Some(previous) =
                inbox.as_ref().and_then(|i| i.webhook(id)).filter(|w| w.state == WebhookState::Retrying)
            {
                let settled = Webhook { state: WebhookState::Settled, ..previous.clone() };
                let _ = self.inbox.record_webhook(user, id, settled).await;
            }
            let _ = store.reschedule(user, id, None).await;
            return;
        };
        let attempt = record.webhook(id).map_or(0, |w| w.attempts) + 1;
        let Some(event) = event(record, user, id, &missed, attempt, now) else {
            let _ = store.reschedule(user, id, None).await;
            return;
        };
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let event_id = event["id"].as_str().unwrap_or_default().to_string();
        let outcome = self.post(&event_id, body).await;
        let m = crate::metrics::get();
        let (state, next) = match &outcome {
            Ok(()) => {
                m.webhooks_delivered.increment(1);
                (WebhookState::Delivered, None)
            }
            Err(_) if attempt >= self.config.max_attempts => {
                m.webhook_attempts_failed.increment(1);
                m.webhooks_given_up.increment(1);
                tracing::warn!(user, id, attempt, "webhook: given up after max_attempts");
                (WebhookState::GivenUp, None)
            }
            Err(_) => {
                m.webhook_attempts_failed.increment(1);
                (WebhookState::Retrying, Some(now + backoff_ms(&self.config, attempt)))
            }
        };
        let webhook = Webhook {
            event_id,
            state,
            attempts: attempt,
            last_attempt_at: now,
            delivered_at: outcome.is_ok().then(crate::clock::unix_ms),
            last_error: outcome.err(),
        };
        if let Err(e) = self.inbox.record_webhook(user, id, webhook).await {
            tracing::warn!(error = %e, user, id, "webhook: outcome not recorded");
        }
        if let Err(e) = store.reschedule(user, id, next).await {
            tracing::warn!(error = %e, user, id, "webhook: not rescheduled; it comes due again after its lease");
        }
    }

    /// One POST: Ok on a 2xx answer within `timeout_ms`, else why not.
    async fn post(&self, event_id: &str, body: Vec<u8>) -> Result<(), String> {
        let signature = sign::sign(self.config.secret.as_bytes(), crate::clock::unix_secs(), &body);
        let headers = [(sign::HEADER, signature.as_str()), ("pushgate-event-id", event_id)];
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match tokio::time::timeout(timeout, http::post(&self.http, &self.url, &headers, body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", self.config.timeout_ms)),
        }
    }
}

/// The event JSON (README "Undelivered webhook").
fn event(inbox: &UserInbox, user: &str, id: u64, missed: &Undelivered, attempt: u32, now: u64) -> Option<Value> {
    let m = inbox.meta(id)?;
    let devices: Vec<Value> = missed
        .devices
        .iter()
        .map(|(device, why, written_at)| {
            let mut d = json!({ "device": device, "reason": why });
            if let Some(at) = written_at {
                d["written_at"] = (*at).into();
            }
            d
        })
        .collect();
    let reason = match missed.devices.first() {
        None => json!("no_device"),
        Some(_) if missed.devices.iter().all(|(_, why, _)| *why == Missed::NoLiveSession) => json!("no_live_session"),
        Some((_, why, _)) if matches!(why, Missed::Evicted | Missed::Expired) => json!(why),
        Some(_) => json!("not_acked"),
    };
    Some(json!({
        "id": event_id(user, id, m.created),
        "type": "message.undelivered",
        "user": user,
        "message_id": id,
        "action": m.action,
        "collapse_key": m.collapse_key,
        "ack": m.ack,
        "reason": reason,
        "devices": devices,
        "created_at": m.created,
        "expires_at": m.expires,
        "attempt": attempt,
        "sent_at": now,
    }))
}
