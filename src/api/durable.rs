//! Durable pushes (proto-spec section 8): the options a message may carry,
//! and storing it in each user's inbox before delivering it as MESSAGE.

use super::error::ApiError;
use super::push::{Message, PushResult, unique};
use crate::inbox::{Appended, Durability, InboxError, NewMessage};
use crate::protocol::encode_message;
use crate::state::AppState;

/// Longest idempotency or collapse key (bytes).
const MAX_KEY_BYTES: usize = 256;

/// The message's durable options when it is durable (`persist`, or its
/// action in `inbox.persist_actions`); options without it are refused
/// rather than silently ignored.
pub(super) fn durable(message: &Message, state: &AppState) -> Result<Option<NewMessage>, ApiError> {
    let cfg = &state.config.inbox;
    let persist = message.persist.unwrap_or_else(|| cfg.persist_actions.contains(&message.action));
    if !persist {
        let given = message.ttl_secs.is_some()
            || message.collapse_key.is_some()
            || message.idempotency_key.is_some()
            || message.ack.is_some();
        return match given {
            true => {
                Err(ApiError::bad_request("ttl_secs, collapse_key, idempotency_key and ack need \"persist\": true"))
            }
            false => Ok(None),
        };
    }
    if let Some(ttl) = message.ttl_secs
        && !(1..=cfg.max_age_secs).contains(&ttl)
    {
        return Err(ApiError::bad_request(format!(
            "ttl_secs must be from 1 to {} (inbox.max_age_secs)",
            cfg.max_age_secs
        )));
    }
    for (name, key) in [("collapse_key", &message.collapse_key), ("idempotency_key", &message.idempotency_key)] {
        if let Some(key) = key
            && (key.is_empty() || key.len() > MAX_KEY_BYTES)
        {
            return Err(ApiError::bad_request(format!("{name} must be 1 to {MAX_KEY_BYTES} bytes")));
        }
    }
    Ok(Some(NewMessage {
        action: message.action,
        bytes: 0,
        ttl_ms: message.ttl_secs.map(|t| t.saturating_mul(1000)),
        collapse_key: message.collapse_key.clone(),
        idempotency_key: message.idempotency_key.clone(),
        ack: message.ack.unwrap_or_default(),
    }))
}

/// One durable message of a push or batch: its users, options, payload.
pub(super) type DurableMessage<'a> = (&'a [String], &'a NewMessage, &'a [u8]);

/// Stores durable messages (one push, or a run of consecutive ones in a
/// batch) in their users' inboxes and delivers each stored one live as a
/// MESSAGE with that user's id. Each user's messages are appended in one
/// save, in their order (their ids follow it), and every user's save is in
/// flight at once, so the embedded store covers them with one disk sync.
///
/// A message goes out live as soon as it is written (a crash of the
/// process keeps it), while its disk sync runs; the answer waits for that
/// sync ([`Unconfirmed::confirm`]; proto-spec section 8 "Durability"). One
/// message (a push to its users) is delivered once written for all of
/// them, in one exchange (a cluster reaches each node once). A batch run's
/// messages are delivered as soon as their user's save is written, so they
/// reach the user in id order even while other requests for the same user
/// are in flight.
pub(super) async fn deliver_durable<'a>(
    messages: &[DurableMessage<'a>],
    state: &AppState,
) -> (Vec<PushResult>, Unconfirmed<'a>) {
    let (inbox, router) = (&state.ctx.inbox, &state.ctx.router);
    let deliver_each = messages.len() > 1;
    // Each user's messages, in order: (user, [message index]).
    let mut chains: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut chain_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, (users, _, _)) in messages.iter().enumerate() {
        for user in unique(users) {
            let at = *chain_of.entry(user).or_insert_with(|| {
                chains.push((user, Vec::new()));
                chains.len() - 1
            });
            chains[at].1.push(i);
        }
    }
    let written = futures_util::future::join_all(chains.iter().map(|(user, chain)| async move {
        // A user's messages of the run in one save (one sync).
        let batch: Vec<(&NewMessage, &[u8])> = chain.iter().map(|&i| (messages[i].1, messages[i].2)).collect();
        let (appended, durability) = match inbox.write_many(user, &batch).await {
            Ok((appended, durability)) => (Ok(appended), Some(durability)),
            Err(e) => (Err(e), None),
        };
        let mut out = Vec::with_capacity(chain.len());
        for (k, &i) in chain.iter().enumerate() {
            let (_, new, payload) = messages[i];
            let outcome = match &appended {
                Ok(appended) => appended.get(k).copied().ok_or_else(|| crate::inbox::InboxError("not appended".into())),
                Err(e) => Err(e.clone()),
            };
            let frame = match &outcome {
                Ok(appended) if !appended.duplicate => Some(encode_message(appended.id, new.action, payload)),
                _ => None,
            };
            let delivered = match (&frame, deliver_each) {
                (Some(frame), true) => Some(router.deliver(user, frame).await),
                _ => None,
            };
            out.push((i, outcome, frame, delivered));
        }
        (*user, out, durability)
    }))
    .await;
    let mut results: Vec<PushResult> = messages.iter().map(|_| PushResult::default()).collect();
    // Written, not delivered yet: (message index, user, frame).
    let mut fresh: Vec<(usize, &str, bytes::Bytes)> = Vec::new();
    // Written: (user, its messages, what says they are on disk).
    let mut syncing = Vec::new();
    for (user, outcomes, durability) in written {
        let (mut held, mut new) = (Vec::new(), 0);
        for (i, outcome, frame, delivered) in outcomes {
            let result = &mut results[i];
            match outcome {
                Ok(appended) => {
                    held.push(i);
                    if !result.record_stored(user, appended) {
                        continue;
                    }
                    new += 1;
                    match (delivered, frame) {
                        (Some(delivery), _) => result.add(user, delivery),
                        (None, Some(frame)) => fresh.push((i, user, frame)),
                        (None, None) => {}
                    }
                }
                Err(e) => result.not_stored(user, &e),
            }
        }
        if let Some(durability) = durability {
            syncing.push(Syncing { user, held, new, durability });
        }
    }
    // Each user's own frame (its id), all in one exchange in a cluster.
    let pairs: Vec<(&str, &bytes::Bytes)> = fresh.iter().map(|(_, user, frame)| (*user, frame)).collect();
    for ((i, user, _), delivery) in fresh.iter().zip(router.deliver_pairs(&pairs).await) {
        results[*i].add(user, delivery);
    }
    (results, Unconfirmed(syncing))
}

/// One durable message to one user, the common push: what
/// [`deliver_durable`] and [`Unconfirmed::confirm`] do together, without
/// the bookkeeping for many messages and users (5 of the ~14 allocations
/// a durable push made beyond a plain one).
pub(super) async fn deliver_durable_one(user: &str, new: &NewMessage, payload: &[u8], state: &AppState) -> PushResult {
    let mut result = PushResult::default();
    let written = state.ctx.inbox.write_many(user, &[(new, payload)]).await;
    let (appended, durability) = match written {
        Ok((appended, durability)) => match appended.first() {
            Some(appended) => (*appended, durability),
            None => {
                result.not_stored(user, &InboxError("not appended".into()));
                return result;
            }
        },
        Err(e) => {
            result.not_stored(user, &e);
            return result;
        }
    };
    let fresh = result.record_stored(user, appended);
    if fresh {
        let frame = encode_message(appended.id, new.action, payload);
        let delivery = state.ctx.router.deliver(user, &frame).await;
        result.add(user, delivery);
    }
    match durability.await {
        Ok(()) => confirmed(usize::from(fresh)),
        Err(e) => result.not_confirmed(user, &e),
    }
    result
}

impl PushResult {
    /// Records that `user`'s message was written as `appended`; true when
    /// it is new (to deliver), false for an idempotent repeat.
    fn record_stored(&mut self, user: &str, appended: Appended) -> bool {
        self.message_ids.insert(user.to_string(), appended.id);
        if appended.duplicate {
            self.duplicate_users.push(user.to_string());
            return false;
        }
        true
    }

    /// `user`'s message was not written: not stored, not sent.
    fn not_stored(&mut self, user: &str, e: &InboxError) {
        tracing::error!(error = %e, user, "durable push not stored");
        self.failed_users.push(user.to_string());
    }

    /// `user`'s message was written (and maybe sent) but its disk sync
    /// failed or timed out (proto-spec section 8 "Durability").
    fn not_confirmed(&mut self, user: &str, e: &InboxError) {
        tracing::error!(error = %e, user, "durable push not confirmed on disk");
        self.message_ids.remove(user);
        self.duplicate_users.retain(|u| u != user);
        self.failed_users.push(user.to_string());
    }
}

/// Counts new durable messages once they are answered as stored (not one
/// whose disk sync then failed: it is answered as failed).
fn confirmed(new: usize) {
    crate::metrics::get().durable_pushes.increment(new as u64);
}

/// One user's messages written and delivered, not yet known to be on disk.
struct Syncing<'a> {
    user: &'a str,
    /// Indexes of the results that hold them.
    held: Vec<usize>,
    /// How many are new (not idempotent repeats).
    new: usize,
    durability: Durability,
}

/// Durable messages written and delivered, not yet known to be on disk.
pub(super) struct Unconfirmed<'a>(Vec<Syncing<'a>>);

impl Unconfirmed<'_> {
    /// Waits for the disk syncs; a user whose sync failed or timed out
    /// moves to `failed_users` of `results[offset + i]` (the message may
    /// have been delivered; proto-spec section 8 "Durability").
    pub(super) async fn confirm(self, results: &mut [PushResult], offset: usize) {
        let synced = self.0.into_iter().map(|s| async move { (s.user, s.held, s.new, s.durability.await) });
        for (user, held, new, synced) in futures_util::future::join_all(synced).await {
            match synced {
                Ok(()) => confirmed(new),
                Err(e) => held.iter().for_each(|i| results[offset + i].not_confirmed(user, &e)),
            }
        }
    }
}

pub(super) fn inbox_unavailable() -> ApiError {
    let message = "the inbox did not confirm storing the message (it may still have been stored, \
                   and sent live if the write reached the log before its disk sync failed): \
                   retry with an idempotency_key";
    ApiError::unavailable(crate::http_wire::Unavailable::Dependency, "inbox_unavailable", message)
}
