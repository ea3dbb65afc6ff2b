use super::*;
use crate::protocol::CloseReason;
use crate::router::{Kick, Router};
use crate::transport::{Enqueue, QueueLimits};
use bytes::Bytes;

use super::test_session as handle;

#[tokio::test]
async fn a_registration_lives_exactly_as_long_as_its_guard() {
    let registry = Registry::with_incarnation("n1", 7);
    let a = handle(&registry, "alice");
    let guard = registry.register(a.clone()).expect("open");
    assert_eq!(registry.presence("alice").await.sessions, 1);
    assert_eq!(registry.deliver("alice", &Bytes::from_static(b"x")).await.delivered, 1);
    drop(guard);
    assert_eq!(registry.session_count(), 0);
    assert_eq!(registry.presence("alice").await.sessions, 0);
    let d = registry.deliver("alice", &Bytes::from_static(b"x")).await;
    assert!(!d.online && d.delivered == 0);
    assert!(registry.users.is_empty(), "no empty user entries are left behind");
}

#[tokio::test]
async fn a_stale_handle_never_removes_a_newer_session_in_its_slot() {
    let registry = Registry::with_incarnation("n1", 7);
    let old = handle(&registry, "alice");
    let guard = registry.register(old.clone()).expect("open");
    // A newer session under the same process-local id (as a restarted
    // registry reusing ids would do): the old guard must not remove it.
    let newer =
        Arc::new(SessionHandle { outbox: Outbox::new(QueueLimits { frames: 8, bytes: 1024 }), ..clone_meta(&old) });
    registry.sessions.insert(newer.id, newer.clone());
    registry.users.entry(newer.user.clone()).or_default().push(newer.clone());
    drop(guard);
    let id = registry.session_id(old.id);
    assert_eq!(registry.kick_session(&id, CloseReason::Kicked, None).await, Kick::Closed, "the newer one stays");
    assert_eq!(registry.presence("alice").await.sessions, 1);
}

fn clone_meta(h: &SessionHandle) -> SessionHandle {
    SessionHandle {
        id: h.id,
        user: h.user.clone(),
        device: None,
        connected_at_ms: 0,
        remote: h.remote,
        forwarded_for: None,
        user_agent: None,
        outbox: Outbox::new(QueueLimits { frames: 1, bytes: 1 }),
    }
}

#[tokio::test]
async fn concurrent_registers_and_unregisters_of_one_user_leave_an_exact_count() {
    let registry = Arc::new(Registry::with_incarnation("n1", 7));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                let h = handle(&registry, "alice");
                let guard = registry.register(h).expect("open");
                tokio::task::yield_now().await;
                drop(guard);
            }
            // One session per task stays.
            let h = handle(&registry, "alice");
            std::mem::forget(registry.register(h).expect("open"));
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(registry.presence("alice").await.sessions, 8);
    assert_eq!(registry.session_count(), 8);
}

#[tokio::test]
async fn closing_refuses_new_sessions_and_closes_live_ones() {
    let registry = Registry::with_incarnation("n1", 7);
    let a = handle(&registry, "alice");
    let _guard = registry.register(a.clone()).expect("open");
    assert_eq!(registry.close_all(CloseReason::Shutdown), 1);
    assert!(registry.register(handle(&registry, "bob")).is_err());
    assert_eq!(registry.session_count(), 1, "a refused registration leaves nothing behind");
    assert_eq!(a.outbox.push(Bytes::from_static(b"late")), Enqueue::Closed);
    assert_eq!(a.outbox.next_batch(8).await.close, Some(CloseReason::Shutdown));
}

#[tokio::test]
async fn ids_of_other_nodes_or_runs_name_no_local_session() {
    let registry = Registry::with_incarnation("n1", 7);
    let a = handle(&registry, "alice");
    let _guard = registry.register(a.clone()).expect("open");
    let mine = registry.session_id(a.id);
    assert_eq!(registry.local_session_ids(), vec![mine.clone()]);
    let earlier_run = SessionId { incarnation: 6, ..mine.clone() };
    let other_node = SessionId { node: "n2".into(), ..mine.clone() };
    for id in [&earlier_run, &other_node] {
        assert_eq!(registry.kick_session(id, CloseReason::Kicked, None).await, Kick::NotFound);
    }
    let hint = Bytes::from_static(b"bye");
    assert_eq!(registry.kick_session(&mine, CloseReason::Drained, Some(hint.clone())).await, Kick::Closed);
    let batch = a.outbox.next_batch(8).await;
    assert_eq!((batch.frames, batch.close), (vec![hint], Some(CloseReason::Drained)), "last words, then the close");
    assert_eq!(registry.kick_session(&mine, CloseReason::Kicked, None).await, Kick::NotFound, "already closing");
}

#[tokio::test]
async fn listings_carry_the_full_session_id_and_node() {
    let registry = Registry::with_incarnation("n1", 36);
    let a = handle(&registry, "alice");
    let _guard = registry.register(a).expect("open");
    let listing = registry.sessions("alice").await;
    assert_eq!(listing.sessions.len(), 1);
    assert_eq!(listing.sessions[0].session_id, "n1.10.1");
    assert_eq!(listing.sessions[0].node, "n1");
}

/// Phones reconnect all day: rounds of the same burst must not leave the
/// maps bigger each round. Removals leave hashbrown tombstones that count
/// against the room for inserts; without compaction a later burst finds no
/// room while more than half full and doubles the table, beyond what the
/// peak ever needed, and an empty registry keeps the peak's tables.
#[test]
fn churn_leaves_no_map_capacity_behind() {
    let registry = Registry::with_incarnation("n1", 7);
    let burst = 10_000;
    for round in 0..6 {
        let handles: Vec<_> = (0..burst).map(|i| handle(&registry, &format!("u{round}-{i}"))).collect();
        // Sessions come and go interleaved, as they do on a live node.
        let mut guards = std::collections::VecDeque::new();
        for h in &handles {
            guards.push_back(registry.register(h.clone()).expect("open"));
            if guards.len() > burst / 2 && guards.len() % 3 == 0 {
                guards.pop_front();
            }
        }
        let peak = (registry.sessions.capacity(), registry.users.capacity());
        assert!(peak.0 >= guards.len() && peak.1 >= guards.len());
        drop(guards);
        assert_eq!(registry.session_count(), 0);
        // At most COMPACT_EVERY removals since the last check, so the
        // tables fit about that many entries: far below the burst's.
        let left = (registry.sessions.capacity(), registry.users.capacity());
        assert!(left.0 <= 4096 && left.1 <= 4096, "round {round}: capacity {left:?} left after a burst of {peak:?}");
    }
}

#[tokio::test]
async fn a_watcher_hears_of_every_registration_and_unregistration_after_the_change() {
    let registry = Registry::with_incarnation("n1", 7);
    let mut events = registry.watch_users().expect("first watcher");
    assert!(registry.watch_users().is_none(), "one watcher only");
    let guard = registry.register(handle(&registry, "alice")).expect("open");
    assert_eq!(events.try_recv().as_deref(), Ok("alice"));
    assert_eq!(registry.user_session_count("alice"), 1);
    let second = registry.register(handle(&registry, "alice")).expect("open");
    assert_eq!(events.try_recv().as_deref(), Ok("alice"));
    assert_eq!(registry.user_counts(), vec![(std::sync::Arc::from("alice"), 2)]);
    drop(guard);
    drop(second);
    // Sent after the maps changed: the watcher reads the final state.
    assert_eq!(events.try_recv().as_deref(), Ok("alice"));
    assert_eq!(events.try_recv().as_deref(), Ok("alice"));
    assert_eq!(registry.user_session_count("alice"), 0);
    assert!(registry.user_counts().is_empty());
    assert!(events.try_recv().is_err());
}

/// The replay gate: held while replaying, then ids up to the floor the
/// replay covered are dropped (a live delivery that raced the replay is
/// not sent twice) and later ids pass.
#[tokio::test]
async fn the_replay_gate_holds_then_drops_what_the_replay_covered() {
    let registry = Registry::with_incarnation("n1", 7);
    let a = handle(&registry, "alice");
    registry.begin_replay(a.id);
    let _guard = registry.register(a.clone()).expect("open");
    let message = |id| crate::protocol::encode_message(id, 200, b"{}");
    let plain = Bytes::from_static(b"\0\0\0\xc8{}");
    assert_eq!(registry.deliver_local("alice", &message(12)).delivered, 1, "held, counted");
    assert_eq!(registry.deliver_local("alice", &plain).delivered, 1, "plain frames are never held");
    let held = registry.take_held(a.id, 11).expect("one held frame");
    assert_eq!(held.frames, [message(12)]);
    assert!(registry.take_held(a.id, 11).is_none(), "nothing held: the gate opens at floor 11");
    registry.deliver_local("alice", &message(11));
    registry.deliver_local("alice", &message(13));
    let batch = a.outbox.next_batch(16).await;
    let ids: Vec<_> = batch.frames.iter().filter_map(|f| crate::protocol::message_id(f)).collect();
    assert_eq!(ids, [13], "11 was covered by the replay; 13 passes");
    assert_eq!(batch.frames.len(), 2, "and the plain frame");
}

#[tokio::test]
async fn the_replay_gate_overflows_by_count_and_by_bytes() {
    let registry = Registry::with_incarnation("n1", 7);
    let a = handle(&registry, "alice");
    registry.begin_replay(a.id);
    let _guard = registry.register(a.clone()).expect("open");
    let big = crate::protocol::encode_message(1, 1000, &vec![0; MAX_HELD_BYTES / 2]);
    for _ in 0..3 {
        registry.deliver_local("alice", &big);
    }
    let held = registry.take_held(a.id, 0).expect("held");
    assert!(held.overflowed && held.frames.len() == 1, "the second 512 KiB frame passes the byte bound");
}
