use super::*;

const LIMITS: Limits = Limits {
    max_messages: 1000,
    max_tombstones: 1000,
    max_age_ms: 1_000_000,
    idempotency_window_ms: 10_000,
    max_devices: 4,
    id_floor: 0,
};

fn msg() -> NewMessage {
    NewMessage { action: 200, bytes: 2, ttl_ms: None, collapse_key: None, idempotency_key: None, ack: AckMode::Device }
}

fn append(inbox: &mut UserInbox, new: NewMessage, now: u64) -> (Appended, Effects) {
    append_with(inbox, new, now, &LIMITS)
}

fn append_with(inbox: &mut UserInbox, new: NewMessage, now: u64, limits: &Limits) -> (Appended, Effects) {
    let mut fx = Effects::default();
    let a = inbox.append(&new, now, limits, &mut fx);
    (a, fx)
}

fn resume(inbox: &mut UserInbox, device: &str, now: u64) -> Resumed {
    inbox.resume(device, None, now, &LIMITS, &mut Effects::default()).unwrap()
}

fn ack(inbox: &mut UserInbox, device: &str, upto: Option<u64>, ids: &[u64], now: u64) -> Position {
    inbox.ack(device, upto, ids, now, &LIMITS, &mut Effects::default()).unwrap()
}

#[test]
fn ids_increase_and_acks_move_the_position() {
    let mut inbox = UserInbox::default();
    assert_eq!(resume(&mut inbox, "phone", 1), Resumed { upto: 0, acked_max: 0, gap: None });
    for expected in 1..=3 {
        assert_eq!(append(&mut inbox, msg(), 10).0, Appended { id: expected, duplicate: false });
    }
    assert_eq!(inbox.pending("phone", 0, 10, 11), [1, 2, 3]);
    assert_eq!(inbox.pending("phone", 1, 10, 11), [2, 3], "after a replayed id");
    assert_eq!(inbox.pending("phone", 0, 2, 11), [1, 2], "a page");
    // Acking 2 alone leaves 1 pending: the position stays at 0.
    assert_eq!(ack(&mut inbox, "phone", None, &[2], 12), Position { upto: 0, pending: 2 });
    assert_eq!(inbox.pending("phone", 0, 10, 12), [1, 3]);
    assert_eq!(ack(&mut inbox, "phone", Some(1), &[], 13), Position { upto: 2, pending: 1 });
    assert_eq!(ack(&mut inbox, "phone", Some(3), &[], 14), Position { upto: 3, pending: 0 });
    assert!(inbox.pending("phone", 0, 10, 15).is_empty());
    // The only device acked everything: all are retired tombstones.
    assert!(inbox.messages.values().all(|m| matches!(m.state, State::Retired { .. })));
}

#[test]
fn devices_keep_their_own_positions() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    resume(&mut inbox, "laptop", 1);
    append(&mut inbox, msg(), 2);
    append(&mut inbox, msg(), 3);
    ack(&mut inbox, "laptop", Some(2), &[], 4);
    assert!(inbox.pending("laptop", 0, 10, 5).is_empty());
    assert_eq!(inbox.pending("phone", 0, 10, 5), [1, 2], "the phone was away while the laptop acked");
    assert_eq!(inbox.messages[&1].state, State::Held, "held until the phone acks too");
    let mut fx = Effects::default();
    inbox.ack("phone", Some(2), &[], 6, &LIMITS, &mut fx).unwrap();
    assert_eq!(fx.dropped, [1, 2], "payloads go once every device acked");
}

#[test]
fn ack_user_retires_for_every_device() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    resume(&mut inbox, "laptop", 1);
    append(&mut inbox, NewMessage { ack: AckMode::User, ..msg() }, 2);
    append(&mut inbox, msg(), 3);
    ack(&mut inbox, "laptop", None, &[1], 4);
    assert_eq!(inbox.pending("phone", 0, 10, 5), [2], "answered on the laptop: the phone stops getting it");
    assert_eq!(inbox.messages[&1].state, State::Retired { at: 4 });
}

#[test]
fn a_collapse_key_keeps_only_the_latest_unacked() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    let score = |n| NewMessage { collapse_key: Some("score".into()), bytes: n, ..msg() };
    append(&mut inbox, score(1), 2);
    append(&mut inbox, msg(), 3);
    let (a, fx) = append(&mut inbox, score(2), 4);
    assert_eq!(a.id, 3);
    assert_eq!((fx.dropped.as_slice(), fx.collapsed), (&[1u64][..], 1));
    assert_eq!(inbox.messages[&1].state, State::Collapsed { by: 3, at: 4 });
    assert_eq!(inbox.pending("phone", 0, 10, 5), [2, 3]);
    assert_eq!(resume(&mut inbox, "phone", 6).gap, None, "collapsing is not a gap");
}

#[test]
fn expired_messages_are_never_pending_and_make_a_gap_once() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    append(&mut inbox, NewMessage { ttl_ms: Some(100), ..msg() }, 10);
    append(&mut inbox, msg(), 10);
    assert_eq!(inbox.pending("phone", 0, 10, 50), [1, 2]);
    assert_eq!(inbox.pending("phone", 0, 10, 110), [2], "expired at 110 even before anyone looks");
    assert_eq!(
        resume(&mut inbox, "phone", 120),
        Resumed { upto: 1, acked_max: 0, gap: Some(2) },
        "past the expired one"
    );
    assert_eq!(inbox.messages[&1].state, State::Expired { at: 120 });
    assert_eq!(resume(&mut inbox, "phone", 130).gap, None, "reported once");
    // A device seen for the first time has nothing lost.
    assert_eq!(resume(&mut inbox, "tablet", 140).gap, None);
    assert_eq!(inbox.pending("tablet", 0, 10, 140), [2]);
}

#[test]
fn ttl_is_capped_by_max_age() {
    let mut inbox = UserInbox::default();
    append(&mut inbox, NewMessage { ttl_ms: Some(u64::MAX), ..msg() }, 5);
    assert_eq!(inbox.messages[&1].expires, 5 + LIMITS.max_age_ms);
}

#[test]
fn the_bound_evicts_the_oldest_loudly() {
    let limits = Limits { max_messages: 3, max_tombstones: 3, ..LIMITS };
    let mut inbox = UserInbox::default();
    inbox.resume("phone", None, 1, &limits, &mut Effects::default()).unwrap();
    let mut evicted = 0;
    for _ in 0..5 {
        evicted += append_with(&mut inbox, msg(), 2, &limits).1.evicted;
    }
    assert_eq!(evicted, 2);
    assert_eq!(inbox.pending("phone", 0, 10, 3), [3, 4, 5]);
    let r = inbox.resume("phone", None, 4, &limits, &mut Effects::default()).unwrap();
    assert_eq!(r.gap, Some(3), "gap, with the oldest id still held");
    // Tombstones are bounded too; a dropped lost tombstone still counts.
    for _ in 0..10 {
        append_with(&mut inbox, msg(), 5, &limits);
    }
    assert!(inbox.messages.len() <= limits.max_messages + limits.max_tombstones);
    assert!(inbox.lost_upto > 0);
    assert!(inbox.resume("phone", None, 6, &limits, &mut Effects::default()).unwrap().gap.is_some());
}

#[test]
fn acked_messages_are_not_evicted_loudly() {
    let limits = Limits { max_messages: 2, ..LIMITS };
    let mut inbox = UserInbox::default();
    inbox.resume("phone", None, 1, &limits, &mut Effects::default()).unwrap();
    for _ in 0..2 {
        append_with(&mut inbox, msg(), 2, &limits);
    }
    inbox.ack("phone", Some(2), &[], 3, &limits, &mut Effects::default()).unwrap();
    let evicted: u64 = (0..2).map(|_| append_with(&mut inbox, msg(), 4, &limits).1.evicted).sum();
    assert_eq!(evicted, 0, "retired messages do not count against the bound");
}

#[test]
fn an_idempotency_key_returns_the_original_within_its_window() {
    let mut inbox = UserInbox::default();
    let keyed = || NewMessage { idempotency_key: Some("order-7".into()), ..msg() };
    assert_eq!(append(&mut inbox, keyed(), 10).0, Appended { id: 1, duplicate: false });
    assert_eq!(append(&mut inbox, keyed(), 20).0, Appended { id: 1, duplicate: true });
    assert_eq!(inbox.last_id, 1, "nothing new");
    let later = 10 + LIMITS.idempotency_window_ms;
    assert_eq!(append(&mut inbox, keyed(), later).0, Appended { id: 2, duplicate: false });
}

#[test]
fn an_ack_above_the_last_id_changes_nothing() {
    let mut inbox = UserInbox::default();
    append(&mut inbox, msg(), 1);
    let before = inbox.clone();
    assert!(inbox.ack("phone", Some(5), &[], 2, &LIMITS, &mut Effects::default()).is_err());
    assert!(inbox.ack("phone", None, &[1, 9], 2, &LIMITS, &mut Effects::default()).is_err());
    assert_eq!(inbox, before);
}

#[test]
fn ids_lost_below_the_floor_are_never_given_again_and_acking_them_is_harmless() {
    let floor = Limits { id_floor: 100, ..LIMITS };
    let mut inbox = UserInbox::default();
    append(&mut inbox, msg(), 1);
    // An unclean stop took back ids 2..=40 (a device saw some of them).
    let mut fx = Effects::default();
    let position = inbox.ack("phone", Some(40), &[1, 37], 2, &floor, &mut fx).expect("lost ids are harmless");
    assert_eq!(position.upto, 1, "no position past the last id");
    assert_eq!(inbox.devices["phone"].acked_max, 1);
    assert!(inbox.resume("laptop", Some(40), 2, &floor, &mut fx).is_ok(), "a since among the lost ids connects");
    assert!(inbox.ack("phone", None, &[100], 2, &floor, &mut fx).is_err(), "the floor itself is not given yet");
    assert_eq!(inbox.append(&msg(), 3, &floor, &mut fx).id, 100, "new ids start at the floor");
    assert_eq!(inbox.pending("phone", 0, 10, 3), [100]);
}

#[test]
fn since_acks_what_the_client_processed() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    for _ in 0..4 {
        append(&mut inbox, msg(), 2);
    }
    let r = inbox.resume("phone", Some(2), 3, &LIMITS, &mut Effects::default()).unwrap();
    assert_eq!(r.upto, 2);
    assert_eq!(inbox.pending("phone", r.upto, 10, 3), [3, 4]);
    assert_eq!(inbox.messages[&1].acks, [("phone".to_string(), 3)]);
}

#[test]
fn the_least_recently_seen_device_is_forgotten_beyond_the_bound() {
    let limits = Limits { max_devices: 2, ..LIMITS };
    let mut inbox = UserInbox::default();
    for (device, now) in [("a", 1), ("b", 2), ("c", 3)] {
        inbox.resume(device, None, now, &limits, &mut Effects::default()).unwrap();
    }
    assert_eq!(inbox.devices.keys().collect::<Vec<_>>(), ["b", "c"]);
}

#[test]
fn the_record_round_trips_through_json() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    append(&mut inbox, NewMessage { collapse_key: Some("k".into()), idempotency_key: Some("i".into()), ..msg() }, 2);
    append(&mut inbox, NewMessage { collapse_key: Some("k".into()), ack: AckMode::User, ..msg() }, 3);
    ack(&mut inbox, "phone", None, &[2], 4);
    let json = serde_json::to_string(&inbox).unwrap();
    assert_eq!(serde_json::from_str::<UserInbox>(&json).unwrap(), inbox);
}

#[test]
fn a_resume_moves_past_what_another_device_retired() {
    let mut inbox = UserInbox::default();
    resume(&mut inbox, "phone", 1);
    resume(&mut inbox, "laptop", 1);
    append(&mut inbox, NewMessage { ack: AckMode::User, ..msg() }, 2);
    ack(&mut inbox, "laptop", None, &[1], 3);
    assert_eq!(resume(&mut inbox, "phone", 4).upto, 1, "SYNCED's last_id is not below a retired id");
}

#[test]
fn a_forgotten_device_holds_nothing_back() {
    let limits = Limits { max_devices: 1, ..LIMITS };
    let mut inbox = UserInbox::default();
    inbox.resume("old", None, 1, &limits, &mut Effects::default()).unwrap();
    append_with(&mut inbox, msg(), 2, &limits);
    let mut fx = Effects::default();
    inbox.resume("new", None, 3, &limits, &mut fx).unwrap();
    // Only "new" is known now and it never acked: still held for it.
    assert_eq!(inbox.pending("new", 0, 10, 4), [1]);
    inbox.ack("new", Some(1), &[], 5, &limits, &mut Effects::default()).unwrap();
    assert!(matches!(inbox.messages[&1].state, State::Retired { .. }), "retired once the remaining device acked");
}

#[test]
fn finished_messages_leave_the_record_and_lost_ones_stay() {
    let mut inbox = UserInbox::default();
    let mut fx = Effects::default();
    let limits = Limits { max_messages: 2, ..LIMITS };
    inbox.resume("phone", None, 0, &limits, &mut fx).expect("resume");
    for _ in 0..3 {
        inbox.append(&msg(), 1, &limits, &mut fx);
    }
    inbox.ack("phone", None, &[2], 2, &limits, &mut fx).expect("ack");
    let finished = inbox.take_finished();
    assert_eq!(finished.iter().map(|(id, m)| (*id, m.state)).collect::<Vec<_>>(), [(2, State::Retired { at: 2 })]);
    // 1 was evicted by the bound: it decides the phone's gap, so it stays.
    assert!(matches!(inbox.messages[&1].state, State::Evicted { .. }));
    assert_eq!(inbox.messages.keys().copied().collect::<Vec<_>>(), [1, 3]);
    assert!(inbox.take_finished().is_empty());
    let (id, meta) = finished.into_iter().next().expect("one");
    inbox.restore(id, meta);
    assert!(matches!(inbox.meta(2).map(|m| m.state), Some(State::Retired { .. })));
}
