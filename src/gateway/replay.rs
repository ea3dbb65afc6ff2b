//! The replay on a resuming connection (proto-spec section 8), part of a
//! session's start: the device's unacked messages in pages, SYNCED, then
//! the live durable frames held back meanwhile (registry/replay.rs).

use super::session::Session;
use crate::inbox::{AckError, DEFAULT_DEVICE};
use crate::metrics;
use crate::protocol::{CloseReason, action, encode_json, encode_message, error_code, message_id};
use bytes::Bytes;
use std::collections::HashSet;

/// Where a replay stands.
struct Cursor {
    /// The next page starts after this id.
    after: u64,
    replayed: u64,
    /// The last id of the user's inbox at the last read: every id up to it
    /// was pending (and sent) or not for this device.
    floor: u64,
    /// Ids sent on this connection during the replay (pages and held
    /// frames), so a re-read after an overflow sends none twice.
    sent: HashSet<u64>,
}

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
        let mut cursor = Cursor { after: resumed.upto, replayed: 0, floor: 0, sent: HashSet::new() };
        if self.replay_pages(&mut cursor).await?.is_err() {
            return self.replay_failed().await;
        }
        let last_id = cursor.after.max(resumed.acked_max);
        let mut synced =
            serde_json::json!({ "last_id": last_id, "replayed": cursor.replayed, "gap": resumed.gap.is_some() });
        if let Some(first_id) = resumed.gap {
            synced["first_id"] = first_id.into();
        }
        self.feed(encode_json(action::SYNCED, &synced)).await?;
        metrics::get().inbox_replayed.increment(cursor.replayed);
        // Live frames held meanwhile: those the replay did not cover go out
        // now, in id order. If some were dropped at the bound, the inbox is
        // read again instead (it holds every one of them).
        while let Some(held) = state.registry.take_held(h.id, cursor.floor) {
            if held.overflowed {
                if self.replay_pages(&mut cursor).await?.is_err() {
                    return self.replay_failed().await;
                }
                continue;
            }
            let mut frames: Vec<(u64, Bytes)> = held
                .frames
                .into_iter()
                .filter_map(|f| Some((message_id(&f)?, f)))
                .filter(|(id, _)| *id > cursor.floor)
                .collect();
            frames.sort_unstable_by_key(|(id, _)| *id);
            for (id, frame) in frames {
                if cursor.sent.insert(id) {
                    self.feed(frame).await?;
                    state.registry.mark_written(h, id);
                }
            }
        }
        self.flush().await
    }

    /// Sends the pending messages after `cursor.after`, page by page, until
    /// none is left (skipping ids already sent); the last read's
    /// `last_id` becomes the floor. The outer error ends the session (the
    /// socket failed); the inner one is the inbox failing.
    async fn replay_pages(&mut self, cursor: &mut Cursor) -> Result<Result<(), ()>, CloseReason> {
        let (state, h) = (self.state, self.handle);
        let device = h.device.as_deref().unwrap_or(DEFAULT_DEVICE);
        loop {
            let page = match state.ctx.inbox.page(&h.user, device, cursor.after).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, user = %h.user, "inbox unavailable during replay");
                    return Ok(Err(()));
                }
            };
            cursor.floor = cursor.floor.max(page.last_id);
            let Some(next_after) = page.next_after else {
                return Ok(Ok(()));
            };
            for message in page.messages {
                if cursor.sent.insert(message.id) {
                    cursor.replayed += 1;
                    self.feed(encode_message(message.id, message.action, &message.payload)).await?;
                    state.registry.mark_written(h, message.id);
                }
            }
            cursor.after = next_after;
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
