//! The replay on a resuming connection (proto-spec section 8), part of a
//! session's start: the device's unacked messages in pages, SYNCED, then
//! the live durable frames held back meanwhile (registry/replay.rs).

use super::session::Session;
use crate::inbox::{AckError, DEFAULT_DEVICE};
use crate::metrics;
use crate::protocol::{CloseReason, action, encode_json, encode_message, error_code, message_id};
use bytes::Bytes;

impl Session<'_> {
    /// The replay on a resuming connection (proto-spec section 8): every
    /// message the device has not acked, in id order and in pages, then
    /// SYNCED, then the live durable frames held meanwhile (those the
    /// replay did not already send), until none is held and the gate is
    /// gone. An inbox that cannot be read is an ERROR `internal` in place
    /// of SYNCED: the messages stay stored for the next connect, and the
    /// session goes on live.
    pub(super) async fn replay(&mut self, since: Option<u64>) -> Result<(), CloseReason> {
        let (state, h) = (self.state, self.handle);
        let inbox = &state.ctx.inbox;
        let device = h.device.as_deref().unwrap_or(DEFAULT_DEVICE);
        let resumed = match inbox.resume(&h.user, device, since).await {
            Ok(resumed) => resumed,
            Err(AckError::Bad(message)) => {
                // A `since` above the last id: say so, replay everything.
                self.feed(crate::handlers::error_frame(error_code::BAD_PAYLOAD, &message, action::SYNCED, None))
                    .await?;
                match inbox.resume(&h.user, device, None).await {
                    Ok(resumed) => resumed,
                    Err(_) => return self.replay_failed().await,
                }
            }
            Err(AckError::Failed(e)) => {
                tracing::warn!(error = %e, user = %h.user, "inbox unavailable at resume");
                return self.replay_failed().await;
            }
        };
        let mut last = resumed.upto;
        let mut replayed: u64 = 0;
        if self.replay_pages(&mut last, &mut replayed).await?.is_err() {
            return self.replay_failed().await;
        }
        let last_id = last.max(resumed.acked_max);
        let mut synced = serde_json::json!({ "last_id": last_id, "replayed": replayed, "gap": resumed.gap.is_some() });
        if let Some(first_id) = resumed.gap {
            synced["first_id"] = first_id.into();
        }
        self.feed(encode_json(action::SYNCED, &synced)).await?;
        metrics::get().inbox_replayed.increment(replayed);
        while let Some(held) = state.registry.take_held(h.id) {
            let mut frames: Vec<(u64, Bytes)> = held
                .frames
                .into_iter()
                .filter_map(|f| Some((message_id(&f)?, f)))
                .filter(|(id, _)| *id > last)
                .collect();
            frames.sort_unstable_by_key(|(id, _)| *id);
            for (id, frame) in frames {
                if id > last {
                    last = id;
                    self.feed(frame).await?;
                    state.registry.mark_written(h, id);
                }
            }
            if held.overflowed && self.replay_pages(&mut last, &mut 0).await?.is_err() {
                return self.replay_failed().await;
            }
        }
        self.flush().await
    }

    /// Sends the pending messages after `last`, page by page, until none
    /// is left. The outer error ends the session (the socket failed); the
    /// inner one is the inbox failing.
    async fn replay_pages(&mut self, last: &mut u64, sent: &mut u64) -> Result<Result<(), ()>, CloseReason> {
        let (state, h) = (self.state, self.handle);
        let device = h.device.as_deref().unwrap_or(DEFAULT_DEVICE);
        loop {
            let page = match state.ctx.inbox.page(&h.user, device, *last).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, user = %h.user, "inbox unavailable during replay");
                    return Ok(Err(()));
                }
            };
            if page.is_empty() {
                return Ok(Ok(()));
            }
            for message in page {
                *last = message.id;
                *sent += 1;
                self.feed(encode_message(message.id, message.action, &message.payload)).await?;
                state.registry.mark_written(h, message.id);
            }
            self.flush().await?;
        }
    }

    /// The replay could not be read: ERROR `internal` for SYNCED, and the
    /// gate is lifted (live durable frames flow; nothing stored is lost).
    async fn replay_failed(&mut self) -> Result<(), CloseReason> {
        let h = self.handle;
        let message = "the inbox could not be read; your messages stay stored: reconnect later to get them";
        self.feed(crate::handlers::error_frame(error_code::INTERNAL, message, action::SYNCED, None)).await?;
        self.state.registry.end_replay(h.id);
        self.flush().await
    }
}
