//! One set of inbox checks against both storages: the embedded store (a
//! tempdir) and Redis (a real redis-server on a free port), so a device
//! resumes on a cluster exactly as on one node. Then what only a cluster
//! does: two nodes (two `Inbox` engines, each with its own in-process
//! locks) writing one user's inbox at once, and a Redis that is down.

mod common;

use common::redis_server::RedisServer;
use pushgate::config::InboxConfig;
use pushgate::inbox::model::{State, UserInbox};
use pushgate::inbox::{AckMode, EmbeddedInbox, Inbox, InboxStore, LogOptions, NewMessage, RedisInbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(500);

/// Storage under test and what keeps its backing alive.
struct Subject {
    store: Arc<dyn InboxStore>,
    _dir: Option<tempfile::TempDir>,
    redis: Option<RedisServer>,
}

async fn embedded() -> Subject {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = pushgate::store::EmbeddedStore::open(dir.path()).expect("store");
    let inbox = EmbeddedInbox::open(&store, dir.path(), LogOptions::default()).await.expect("inbox");
    Subject { store: Arc::new(inbox), _dir: Some(dir), redis: None }
}

fn redis() -> Subject {
    let server = RedisServer::start();
    let store = RedisInbox::open(&server.url(), TIMEOUT, 3600).expect("redis inbox");
    Subject { store: Arc::new(store), _dir: None, redis: Some(server) }
}

fn message() -> NewMessage {
    NewMessage { action: 200, bytes: 0, ttl_ms: None, collapse_key: None, idempotency_key: None, ack: AckMode::Device }
}

fn engine(subject: &Subject) -> Inbox {
    Inbox::new(subject.store.clone(), &InboxConfig::default())
}

async fn replay_ids(inbox: &Inbox, user: &str, device: &str) -> Vec<u64> {
    let mut after = inbox.resume(user, device, None).await.expect("resume").upto;
    let mut ids = Vec::new();
    loop {
        let page = inbox.page(user, device, after).await.expect("page");
        let Some(next) = page.next_after else { return ids };
        after = next;
        ids.extend(page.messages.iter().map(|m| m.id));
    }
}

async fn round_trip(subject: Subject) {
    let inbox = engine(&subject);
    inbox.resume("u", "phone", None).await.expect("resume");
    for n in 1..=250u64 {
        let payload = format!("{{\"n\":{n}}}");
        let appended = inbox.append("u", &message(), payload.as_bytes()).await.expect("append");
        assert_eq!(appended.id, n);
    }
    // Pages of 100: the whole replay, payloads intact, in order.
    let page = inbox.page("u", "phone", 0).await.expect("page");
    assert_eq!((page.messages.len(), page.next_after, page.last_id), (100, Some(100), 250));
    assert_eq!(&page.messages[6].payload[..], b"{\"n\":7}");
    assert_eq!(replay_ids(&inbox, "u", "phone").await, (1..=250).collect::<Vec<_>>());
    let position = inbox.ack("u", "phone", Some(200), &[250]).await.expect("ack");
    assert_eq!((position.upto, position.pending), (200, 49));
    assert_eq!(replay_ids(&inbox, "u", "phone").await, (201..=249).collect::<Vec<_>>());
    // Acked payloads are gone from storage (the only device acked them).
    assert_eq!(subject.store.payloads("u", &[1, 201]).await.expect("payloads")[0], None);
    assert!(subject.store.payloads("u", &[201]).await.expect("payloads")[0].is_some());
    // A fresh engine (a restart, another node) sees the same.
    let again = engine(&subject);
    assert_eq!(replay_ids(&again, "u", "phone").await, (201..=249).collect::<Vec<_>>());
    // Finished messages leave the record; the newest max_tombstones (64)
    // keep their final status apart, older ones are forgotten.
    let record = inbox.read("u").await.expect("read").expect("a record");
    assert_eq!(record.messages.len(), 49, "only the held messages stay in the record");
    let retired = |inbox: Option<UserInbox>, id: u64| inbox.and_then(|i| i.meta(id).map(|m| m.state));
    let status = inbox.read_message("u", 250).await.expect("read");
    assert!(matches!(retired(status, 250), Some(State::Retired { .. })), "250 was acked by its only device");
    // 138..=200 and 250: the newest 64 of the 201 acked at once.
    assert!(matches!(retired(inbox.read_message("u", 138).await.expect("read"), 138), Some(State::Retired { .. })));
    assert_eq!(retired(inbox.read_message("u", 137).await.expect("read"), 137), None, "beyond the newest 64");
}

#[tokio::test]
async fn embedded_round_trip() {
    round_trip(embedded().await).await;
}

#[tokio::test]
async fn redis_round_trip() {
    round_trip(redis()).await;
}

/// Two nodes append to one user at once: every append gets its own id and
/// none is lost (their saves conflict and are retried).
async fn concurrent_writers(subject: Subject) {
    let (a, b) = (Arc::new(engine(&subject)), Arc::new(engine(&subject)));
    let mut tasks = Vec::new();
    for i in 0..100 {
        for inbox in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                inbox.append("shared", &message(), format!("{i}").as_bytes()).await.expect("append").id
            }));
        }
    }
    let mut ids: Vec<u64> = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>(), "200 appends, 200 distinct ids");
    assert_eq!(replay_ids(&a, "shared", "d").await.len(), 200, "every one stored");
}

#[tokio::test]
async fn embedded_concurrent_writers() {
    concurrent_writers(embedded().await).await;
}

#[tokio::test]
async fn redis_concurrent_writers() {
    concurrent_writers(redis()).await;
}

#[tokio::test]
async fn a_redis_outage_fails_inbox_calls_in_time_and_heals() {
    let mut subject = redis();
    let inbox = engine(&subject);
    inbox.append("u", &message(), b"1").await.expect("works before");
    let Some(server) = subject.redis.as_mut() else { unreachable!() };
    server.pause();
    let started = Instant::now();
    assert!(inbox.append("u", &message(), b"2").await.is_err(), "nothing stored while paused");
    assert!(inbox.page("u", "d", 0).await.is_err());
    assert!(started.elapsed() < TIMEOUT * 4, "bounded: {:?}", started.elapsed());
    server.resume();
    server.kill();
    let started = Instant::now();
    assert!(inbox.append("u", &message(), b"3").await.is_err());
    assert!(started.elapsed() < TIMEOUT * 4, "bounded: {:?}", started.elapsed());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while inbox.append("u", &message(), b"4").await.is_err() {
        assert!(Instant::now() < deadline, "the inbox did not heal after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The embedded sweep removes expired payloads of users nobody touches.
#[tokio::test]
async fn the_sweep_drops_expired_payloads_of_idle_users() {
    let subject = embedded().await;
    let inbox = engine(&subject);
    let short = NewMessage { ttl_ms: Some(1), ..message() };
    for user in ["idle-a", "idle-b"] {
        inbox.append(user, &short, b"gone soon").await.expect("append");
    }
    inbox.append("kept", &message(), b"kept").await.expect("append");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // One user per step: the sweep pages through every user.
    let mut after = None;
    let mut steps = 0;
    while let Some(last) = inbox.sweep(after.as_deref(), 1).await.expect("sweep") {
        after = Some(last);
        steps += 1;
    }
    assert_eq!(steps, 3, "three users, one per step");
    for user in ["idle-a", "idle-b"] {
        assert_eq!(subject.store.payloads(user, &[1]).await.expect("payloads"), [None], "{user}");
    }
    assert!(subject.store.payloads("kept", &[1]).await.expect("payloads")[0].is_some());
}

/// Several messages for one user in one save (a batch): ids in order, each
/// payload kept, one record version for all of them.
async fn many_at_once(subject: Subject) {
    let inbox = engine(&subject);
    inbox.resume("m", "phone", None).await.expect("resume");
    let new = message();
    let version = subject.store.load("m").await.expect("load").version;
    let batch: Vec<(&NewMessage, &[u8])> = vec![(&new, b"one"), (&new, b"two"), (&new, b"three")];
    let appended = inbox.append_many("m", &batch).await.expect("append");
    assert_eq!(appended.iter().map(|a| a.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(subject.store.load("m").await.expect("load").version, version + 1, "one save");
    let page = inbox.page("m", "phone", 0).await.expect("page");
    let payloads: Vec<&[u8]> = page.messages.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"one"[..], b"two", b"three"]);
}

#[tokio::test]
async fn embedded_many_at_once() {
    many_at_once(embedded().await).await;
}

#[tokio::test]
async fn redis_many_at_once() {
    many_at_once(redis()).await;
}
