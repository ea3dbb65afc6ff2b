//! One user's inbox as plain data, and every rule of durable delivery as
//! functions on it. Backends only load and store a [`UserInbox`] (and the
//! payloads beside it): the embedded store and Redis share these rules, so
//! they cannot drift apart.
//!
//! A message is *held* while some device may still need it; once every
//! known device acked it (or one did, for `ack: user`), or a bound or its
//! ttl removed it, or a newer message collapsed it, it becomes a
//! *tombstone*: its payload is deleted and only what the status endpoint
//! reports is kept. Retired and collapsed tombstones leave the record at
//! once ([`UserInbox::take_finished`]): no rule reads them again, and a
//! record that carried them would be rewritten whole at every save; the
//! backends keep them apart (the newest `max_tombstones` per user) for the
//! status endpoint and the webhook. Evicted and expired ones stay in the
//! record (up to `max_tombstones`): they decide the gaps devices are told.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Not;

/// The bounds the rules apply (from `[inbox]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    /// Finished messages (retired, collapsed, evicted, expired) whose
    /// status is kept; the record is rewritten whole at every save, so
    /// this bounds what a save costs.
    pub max_tombstones: usize,
    pub max_age_ms: u64,
    pub idempotency_window_ms: u64,
    pub max_devices: usize,
    /// New ids start at least here (`InboxStore::id_floor`).
    pub id_floor: u64,
}

/// Who must ack a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// Every device acks on its own.
    #[default]
    Device,
    /// The first ack by any device retires it for all.
    User,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Held,
    /// Every device that had to ack it did.
    Retired {
        at: u64,
    },
    /// Replaced by a newer message with the same collapse key.
    Collapsed {
        by: u64,
        at: u64,
    },
    /// Removed by `max_messages` before every device acked it.
    Evicted {
        at: u64,
    },
    /// Its ttl (or `max_age_secs`) ran out before every device acked it.
    Expired {
        at: u64,
    },
}

impl State {
    /// Gone before every device had it: a device that missed it has a gap.
    fn lost(self) -> bool {
        matches!(self, State::Evicted { .. } | State::Expired { .. })
    }
}

/// One message's record (its payload is stored beside it while held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub action: u32,
    pub bytes: u32,
    pub created: u64,
    pub expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(default)]
    pub ack: AckMode,
    #[serde(flatten)]
    pub state: State,
    /// Devices that acked it, with the time (unix ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<(String, u64)>,
    /// Devices a session handed it to (written or queued), first time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<(String, u64)>,
    /// The undelivered-message webhook for it, once one was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
}

/// Where a message's undelivered webhook stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub event_id: String,
    pub state: WebhookState,
    pub attempts: u32,
    /// Unix ms of the last attempt.
    pub last_attempt_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Failed so far; another attempt is scheduled.
    Retrying,
    /// The endpoint answered 2xx.
    Delivered,
    /// `webhook.max_attempts` failed: given up (counted in metrics).
    GivenUp,
    /// Attempts had failed, then every device that had to acked it (or
    /// it was collapsed) before the next one: nothing more to send.
    Settled,
}

/// Why a device did not get (or ack) a message by its webhook's due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// No session of the device was ever handed it.
    NoLiveSession,
    /// A session was handed it, but the device did not ack in time.
    NotAcked,
    /// Removed by `inbox.max_messages` before the device acked it.
    Evicted,
    /// Its ttl ran out before the device acked it.
    Expired,
}

/// What the undelivered webhook reports: the devices that missed the
/// message, each with why and when it was handed to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub devices: Vec<(String, Missed, Option<u64>)>,
}

impl Meta {
    fn acked_by(&self, device: &str) -> bool {
        self.acks.iter().any(|(d, _)| d == device)
    }

    /// An `ack: user` message some device acked: done for every device.
    pub fn retired_by_user(&self) -> bool {
        self.ack == AckMode::User && !self.acks.is_empty()
    }

    /// Still to be sent to `device` (held, not acked by it, not retired by
    /// another device's ack, not expired at `now`).
    fn pending_for(&self, device: &str, now: u64) -> bool {
        self.state == State::Held && self.expires > now && !self.acked_by(device) && !self.retired_by_user()
    }
}

/// A device's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every message up to here is acked or retired for the device.
    pub upto: u64,
    /// Last connect or ack (unix ms): the least recent is forgotten first.
    pub seen: u64,
    /// Lost messages up to here were reported in a SYNCED gap already.
    #[serde(default)]
    pub gap_reported: u64,
    /// The highest id the device acked (SYNCED's `last_id` counts it).
    #[serde(default)]
    pub acked_max: u64,
}

/// Everything about one user's durable messages except the payloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInbox {
    /// The last id given out.
    pub last_id: u64,
    pub messages: BTreeMap<u64, Meta>,
    pub devices: BTreeMap<String, Cursor>,
    /// Idempotency key -> (id, valid until unix ms).
    #[serde(default)]
    pub idempotency: BTreeMap<String, (u64, u64)>,
    /// The highest lost id whose tombstone was dropped (gaps stay
    /// reportable after the tombstone is gone).
    #[serde(default)]
    pub lost_upto: u64,
}

/// A new durable message, as the API accepted it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub action: u32,
    pub bytes: u32,
    pub ttl_ms: Option<u64>,
    pub collapse_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub ack: AckMode,
}

/// What happened to payloads (the backend applies it beside the record).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Payloads no longer needed.
    pub dropped: Vec<u64>,
    pub evicted: u64,
    pub expired: u64,
    pub collapsed: u64,
}

impl Effects {
    fn removed(&mut self, id: u64, state: State) {
        self.dropped.push(id);
        match state {
            State::Evicted { .. } => self.evicted += 1,
            State::Expired { .. } => self.expired += 1,
            State::Collapsed { .. } => self.collapsed += 1,
            State::Held | State::Retired { .. } => {}
        }
    }
}

/// The outcome of an append for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: u64,
    /// The idempotency key was seen: `id` is the original, nothing new.
    pub duplicate: bool,
}

/// What a resuming device learns before its replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// The device's position: replay starts after it.
    pub upto: u64,
    /// The highest id the device acked.
    pub acked_max: u64,
    /// Messages it had not acked were lost: the oldest held id (0: none).
    pub gap: Option<u64>,
}

/// A device's position after an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub upto: u64,
    pub pending: usize,
}

/// Why an ack was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAck(pub String);

impl UserInbox {
    /// Applies expiry at `now` (lazily: on every operation that changes the
    /// inbox).
    pub fn expire(&mut self, now: u64, fx: &mut Effects) {
        let due: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| m.state == State::Held && m.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.tombstone(id, State::Expired { at: now }, fx);
        }
        self.idempotency.retain(|_, (_, until)| *until > now);
    }

    /// Adds a message (or finds the original of a repeated idempotency key).
    pub fn append(&mut self, new: &NewMessage, now: u64, limits: &Limits, fx: &mut Effects) -> Appended {
        self.expire(now, fx);
        if let Some(key) = &new.idempotency_key
            && let Some((id, _)) = self.idempotency.get(key)
        {
            return Appended { id: *id, duplicate: true };
        }
        self.last_id = self.last_id.max(limits.id_floor.saturating_sub(1)) + 1;
        let id = self.last_id;
        if let Some(key) = &new.collapse_key {
            let older: Vec<u64> = self
                .messages
                .iter()
                .filter(|(_, m)| m.state == State::Held && m.collapse_key.as_deref() == Some(key))
                .map(|(id, _)| *id)
                .collect();
            for old in older {
                self.tombstone(old, State::Collapsed { by: id, at: now }, fx);
            }
        }
        let ttl = new.ttl_ms.unwrap_or(limits.max_age_ms).min(limits.max_age_ms);
        self.messages.insert(
            id,
            Meta {
                action: new.action,
                bytes: new.bytes,
                created: now,
                expires: now.saturating_add(ttl),
                collapse_key: new.collapse_key.clone(),
                ack: new.ack,
                state: State::Held,
                acks: Vec::new(),
                written: Vec::new(),
                webhook: None,
            },
        );
        if let Some(key) = &new.idempotency_key {
            self.idempotency.insert(key.clone(), (id, now.saturating_add(limits.idempotency_window_ms)));
            // Bounded like the messages: the oldest keys go first.
            while self.idempotency.len() > limits.max_messages.saturating_mul(4).max(1) {
                let oldest = self.idempotency.iter().min_by_key(|(_, (id, _))| *id).map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => self.idempotency.remove(&k),
                    None => break,
                };
            }
        }
        // The bound: the oldest held messages give way.
        let held: Vec<u64> = self.held_ids();
        for old in held.iter().take(held.len().saturating_sub(limits.max_messages)) {
            self.tombstone(*old, State::Evicted { at: now }, fx);
        }
        self.trim_tombstones(limits);
        Appended { id, duplicate: false }
    }

    /// A device (re)connects: its cursor is created or touched, `since`
    /// acks up to it, and a gap is reported once.
    pub fn resume(
        &mut self,
        device: &str,
        since: Option<u64>,
        now: u64,
        limits: &Limits,
        fx: &mut Effects,
    ) -> Result<Resumed, BadAck> {
        self.expire(now, fx);
        self.touch(device, now, limits, fx);
        if let Some(since) = since {
            self.ack(device, Some(since), &[], now, limits, fx)?;
        }
        let cursor = self.devices.get(device).cloned().unwrap_or_default();
        let missed = |id: u64, m: &Meta| {
            m.state.lost()
                && id > cursor.upto
                && id > cursor.gap_reported
                && !m.acked_by(device)
                && !m.retired_by_user()
        };
        let lost = self.messages.iter().filter(|(id, m)| missed(**id, m)).map(|(id, _)| *id).max();
        let lost = lost.or((self.lost_upto > cursor.upto.max(cursor.gap_reported)).then_some(self.lost_upto));
        let gap = lost.map(|lost| {
            if let Some(c) = self.devices.get_mut(device) {
                c.gap_reported = c.gap_reported.max(lost);
            }
            self.held_ids().first().copied().unwrap_or(0)
        });
        // Past what is no longer pending for it (retired by another
        // device's ack meanwhile): SYNCED's last_id never goes back. After
        // the gap is known, which looks at what lies beyond the position.
        let upto = self.advance(device, now).upto;
        Ok(Resumed { upto, acked_max: cursor.acked_max, gap })
    }

    /// Records acks by `device`: everything up to `upto`, and `ids`.
    pub fn ack(
        &mut self,
        device: &str,
        upto: Option<u64>,
        ids: &[u64],
        now: u64,
        limits: &Limits,
        fx: &mut Effects,
    ) -> Result<Position, BadAck> {
        let highest = upto.into_iter().chain(ids.iter().copied()).max();
        // Ids below the floor but above the last id were handed out before
        // an unclean stop took them back (InboxStore::id_floor): gone,
        // so acking them is harmless like acking any gone id.
        let given = self.last_id.max(limits.id_floor.saturating_sub(1));
        if let Some(highest) = highest
            && highest > given
        {
            return Err(BadAck(format!("id {highest} is above the last id given, {given}")));
        }
        let (upto, highest) = (upto.map(|u| u.min(self.last_id)), highest.map(|h| h.min(self.last_id)));
        self.expire(now, fx);
        self.touch(device, now, limits, fx);
        let from = self.devices.get(device).map_or(0, |c| c.upto);
        let chosen: Vec<u64> = match upto {
            Some(upto) if upto > from => self.messages.range(from + 1..=upto).map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        };
        for id in chosen.into_iter().chain(ids.iter().copied()) {
            if let Some(m) = self.messages.get_mut(&id)
                && m.state == State::Held
                && !m.acked_by(device)
            {
                m.acks.push((device.to_string(), now));
                self.retire_if_done(id, now, fx);
            }
        }
        if let Some(c) = self.devices.get_mut(device) {
            c.upto = c.upto.max(upto.unwrap_or(0));
            c.acked_max = c.acked_max.max(highest.unwrap_or(0));
        }
        self.trim_tombstones(limits);
        Ok(self.advance(device, now))
    }

    /// Records that `id` was handed to a session of `device` (the first
    /// time counts; tombstones and unknown ids are left alone).
    pub fn mark_written(&mut self, device: &str, id: u64, now: u64) {
        if let Some(m) = self.messages.get_mut(&id)
            && m.state == State::Held
            && !m.written.iter().any(|(d, _)| d == device)
        {
            m.written.push((device.to_string(), now));
        }
    }

    /// Who missed message `id` by its webhook's due time, if anyone: None
    /// when it is done (acked as its mode asks, retired, collapsed) or
    /// unknown. A user with no known device at all missed it too (empty
    /// list): nobody can have it.
    pub fn undelivered(&self, id: u64, now: u64) -> Option<Undelivered> {
        let m = self.messages.get(&id)?;
        let gone = match m.state {
            State::Held if m.expires <= now => Some(Missed::Expired),
            State::Held => None,
            State::Evicted { .. } => Some(Missed::Evicted),
            State::Expired { .. } => Some(Missed::Expired),
            State::Retired { .. } | State::Collapsed { .. } => return None,
        };
        if m.retired_by_user() {
            return None;
        }
        let devices: Vec<(String, Missed, Option<u64>)> = self
            .devices
            .keys()
            .filter(|device| !m.acked_by(device))
            .map(|device| {
                let written = m.written.iter().find(|(d, _)| d == device).map(|(_, at)| *at);
                let why = gone.unwrap_or(if written.is_some() { Missed::NotAcked } else { Missed::NoLiveSession });
                (device.clone(), why, written)
            })
            .collect();
        let someone_acked = !m.acks.is_empty();
        (devices.is_empty() && someone_acked).not().then_some(Undelivered { devices })
    }

    /// Records a webhook attempt's outcome on message `id` (if it is known).
    pub fn record_webhook(&mut self, id: u64, webhook: Webhook) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.webhook = Some(webhook);
        }
    }

    /// The webhook state of message `id`.
    pub fn webhook(&self, id: u64) -> Option<&Webhook> {
        self.messages.get(&id)?.webhook.as_ref()
    }

    /// The metadata of message `id`.
    pub fn meta(&self, id: u64) -> Option<&Meta> {
        self.messages.get(&id)
    }

    /// Pending ids for `device` after `after`, in order, at most `limit`.
    pub fn pending(&self, device: &str, after: u64, limit: usize, now: u64) -> Vec<u64> {
        let from = self.devices.get(device).map_or(0, |c| c.upto).max(after);
        self.messages
            .range(from.saturating_add(1)..)
            .filter(|(_, m)| m.pending_for(device, now))
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }

    /// How many messages are pending for `device`, and the oldest.
    pub fn pending_summary(&self, device: &str, now: u64) -> (usize, Option<u64>) {
        let from = self.devices.get(device).map_or(0, |c| c.upto);
        let mut ids = self.messages.range(from.saturating_add(1)..).filter(|(_, m)| m.pending_for(device, now));
        let first = ids.next().map(|(id, _)| *id);
        (first.map_or(0, |_| 1 + ids.count()), first)
    }

    fn held_ids(&self) -> Vec<u64> {
        self.messages.iter().filter(|(_, m)| m.state == State::Held).map(|(id, _)| *id).collect()
    }

    /// Creates or touches a device; beyond `max_devices` the least recently
    /// seen is forgotten (and no longer holds messages back).
    fn touch(&mut self, device: &str, now: u64, limits: &Limits, fx: &mut Effects) {
        match self.devices.get_mut(device) {
            Some(c) => c.seen = now,
            None => {
                // A new device starts before the oldest held message, with
                // nothing lost to report from before it existed.
                let lost = self.messages.iter().filter(|(_, m)| m.state.lost()).map(|(id, _)| *id).max();
                let reported = lost.unwrap_or(0).max(self.lost_upto);
                let cursor = Cursor { seen: now, gap_reported: reported, ..Cursor::default() };
                self.devices.insert(device.to_string(), cursor);
                let mut forgot = false;
                while self.devices.len() > limits.max_devices.max(1) {
                    let stale = self.devices.iter().filter(|(d, _)| *d != device).min_by_key(|(_, c)| c.seen);
                    match stale.map(|(d, _)| d.clone()) {
                        Some(d) => forgot |= self.devices.remove(&d).is_some(),
                        None => break,
                    };
                }
                if forgot {
                    // A forgotten device holds nothing back any more.
                    let held: Vec<u64> = self.held_ids();
                    for id in held {
                        self.retire_if_done(id, now, fx);
                    }
                }
            }
        }
    }

    /// Moves `device`'s position over everything no longer pending for it.
    fn advance(&mut self, device: &str, now: u64) -> Position {
        let from = self.devices.get(device).map_or(0, |c| c.upto);
        let (pending, first) = self.pending_summary(device, now);
        let upto = first.map_or(self.last_id, |f| f - 1).max(from);
        if let Some(c) = self.devices.get_mut(device) {
            c.upto = upto;
        }
        Position { upto, pending }
    }

    /// A held message every device is done with becomes a tombstone.
    fn retire_if_done(&mut self, id: u64, now: u64, fx: &mut Effects) {
        let Some(m) = self.messages.get(&id) else { return };
        let done = match m.ack {
            AckMode::User => !m.acks.is_empty(),
            AckMode::Device => self.devices.keys().all(|d| m.acked_by(d)),
        };
        if done {
            self.tombstone(id, State::Retired { at: now }, fx);
        }
    }

    fn tombstone(&mut self, id: u64, state: State, fx: &mut Effects) {
        if let Some(m) = self.messages.get_mut(&id)
            && m.state == State::Held
        {
            m.state = state;
            fx.removed(id, state);
        }
    }

    /// Takes the retired and collapsed messages out of the record (their
    /// final status, for the backend to keep apart).
    pub fn take_finished(&mut self) -> Vec<(u64, Meta)> {
        let done = |m: &Meta| matches!(m.state, State::Retired { .. } | State::Collapsed { .. });
        let ids: Vec<u64> = self.messages.iter().filter(|(_, m)| done(m)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| Some((id, self.messages.remove(&id)?))).collect()
    }

    /// Puts a finished message kept apart back, to read or update it.
    pub fn restore(&mut self, id: u64, meta: Meta) {
        self.messages.entry(id).or_insert(meta);
    }

    /// Keeps at most `max_tombstones` tombstones (the oldest go).
    fn trim_tombstones(&mut self, limits: &Limits) {
        let stones: Vec<u64> =
            self.messages.iter().filter(|(_, m)| m.state != State::Held).map(|(id, _)| *id).collect();
        for id in stones.iter().take(stones.len().saturating_sub(limits.max_tombstones)) {
            if let Some(m) = self.messages.remove(id)
                && m.state.lost()
            {
                self.lost_upto = self.lost_upto.max(*id);
            }
        }
    }
}

#[cfg(test)]
mod tests;
