//! One set of store checks run against both implementations: the embedded
//! redb store (a tempdir) and the Redis store (a real redis-server on a free
//! port), so a cluster behaves exactly like a single node. Then the Redis
//! store's failures: a killed, restarted or paused redis-server gives errors
//! within the timeout (never a hang), and health says so until it heals.

mod common;

use common::redis_server::RedisServer;
use pushgate::config::SocialConfig;
use pushgate::store::{
    EmbeddedStore, FriendOutcome, IncomingRequest, List, ListQuery, Page, RedisStore, Refusal, Store, UserView,
};
use serde_json::json;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(300);
/// A failing call must answer within the timeout plus this much.
const FAIL_BOUND: Duration = Duration::from_secs(2);
/// How long a restarted or resumed Redis may take to serve again.
const HEAL_BOUND: Duration = Duration::from_secs(10);

const ALL: &[List] = &[List::Friends, List::RequestsIn, List::RequestsOut];

/// A store under test and what keeps its backing alive.
struct Subject {
    store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

fn embedded() -> Subject {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
    Subject { store: Box::new(store), _dir: Some(dir), _redis: None }
}

async fn redis() -> Subject {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), TIMEOUT).await.expect("connect redis store");
    Subject { store: Box::new(store), _dir: None, _redis: Some(server) }
}

fn limits(max_friends: usize, max_requests_in: usize, max_requests_out: usize) -> SocialConfig {
    SocialConfig { max_friends, max_requests_in, max_requests_out }
}

async fn ask(store: &dyn Store, from: &str, to: &str, message: Option<&str>, bounds: SocialConfig) -> FriendOutcome {
    store.add_friend_request(from, to, message, bounds).await.expect("add_friend_request")
}

async fn own(store: &dyn Store, user: &str) -> UserView {
    let query = ListQuery { lists: ALL, after: None, limit: 100 };
    store.user_view(user, user, query).await.expect("user_view")
}

fn friends_of(view: &UserView) -> Vec<String> {
    view.relationships.as_ref().and_then(|r| r.friends.clone()).expect("friends page").items
}

fn outgoing_of(view: &UserView) -> Vec<String> {
    view.relationships.as_ref().and_then(|r| r.outgoing.clone()).expect("outgoing page").items
}

fn incoming_of(view: &UserView) -> Vec<IncomingRequest> {
    view.relationships.as_ref().and_then(|r| r.incoming.clone()).expect("incoming page").items
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn request(from: &str, message: Option<&str>) -> IncomingRequest {
    IncomingRequest { from: from.to_string(), message: message.map(str::to_string) }
}

/// Every outcome, and every bound refusing with its own variant while
/// writing nothing.
async fn outcomes(store: &dyn Store) {
    let small = limits(2, 2, 2);
    use FriendOutcome::*;
    assert_eq!(ask(store, "a", "b", Some("hi"), small).await, Requested);
    assert_eq!(ask(store, "a", "b", Some("again"), small).await, AlreadyRequested);
    assert_eq!(incoming_of(&own(store, "b").await), vec![request("a", Some("hi"))]);
    assert_eq!(outgoing_of(&own(store, "a").await), strings(&["b"]));
    assert_eq!(ask(store, "b", "a", None, small).await, BecameFriends);
    assert_eq!(ask(store, "a", "b", None, small).await, AlreadyFriends);
    assert_eq!(ask(store, "b", "a", None, small).await, AlreadyFriends);
    for user in ["a", "b"] {
        let view = own(store, user).await;
        assert!(incoming_of(&view).is_empty(), "{user}: requests gone once friends");
        assert!(outgoing_of(&view).is_empty(), "{user}: requests gone once friends");
    }
    assert_eq!(friends_of(&own(store, "a").await), strings(&["b"]));
    assert_eq!(friends_of(&own(store, "b").await), strings(&["a"]));

    // The sender's pending requests.
    assert_eq!(ask(store, "c", "d", None, small).await, Requested);
    assert_eq!(ask(store, "c", "e", None, small).await, Requested);
    assert_eq!(ask(store, "c", "f", None, small).await, Refused(Refusal::TooManyRequestsOut));
    assert!(incoming_of(&own(store, "f").await).is_empty(), "a refusal writes nothing");
    assert_eq!(outgoing_of(&own(store, "c").await), strings(&["d", "e"]));

    // The target's inbox.
    assert_eq!(ask(store, "g", "h", None, small).await, Requested);
    assert_eq!(ask(store, "i", "h", Some("me too"), small).await, Requested);
    assert_eq!(ask(store, "j", "h", None, small).await, Refused(Refusal::InboxFull));
    assert!(outgoing_of(&own(store, "j").await).is_empty(), "a refusal writes nothing");
    assert_eq!(incoming_of(&own(store, "h").await), vec![request("g", None), request("i", Some("me too"))]);

    // Friends on either side: a asks x, then fills up with k.
    assert_eq!(ask(store, "a", "x", None, small).await, Requested);
    assert_eq!(ask(store, "k", "a", None, small).await, Requested);
    assert_eq!(ask(store, "a", "k", None, small).await, BecameFriends);
    assert_eq!(ask(store, "x", "a", None, small).await, Refused(Refusal::TheirFriendsFull));
    assert_eq!(outgoing_of(&own(store, "a").await), strings(&["x"]), "the refused pair left the request pending");
    assert_eq!(ask(store, "a", "m", None, small).await, Refused(Refusal::TooManyFriends));
    assert_eq!(ask(store, "m", "a", None, small).await, Requested);
    assert_eq!(ask(store, "a", "m", None, small).await, Refused(Refusal::TooManyFriends));
    assert_eq!(friends_of(&own(store, "a").await), strings(&["b", "k"]));
    assert_eq!(incoming_of(&own(store, "a").await), vec![request("m", None)]);

    // A zero bound refuses everything of its kind.
    assert_eq!(ask(store, "y", "z", None, limits(10, 10, 0)).await, Refused(Refusal::TooManyRequestsOut));
    assert_eq!(ask(store, "y", "z", None, limits(10, 0, 10)).await, Refused(Refusal::InboxFull));
    assert_eq!(ask(store, "y", "z", None, limits(0, 10, 10)).await, Refused(Refusal::TooManyFriends));
}

/// A decline (by the target) and a cancel (by the sender) remove the
/// pending request on both sides, message included.
async fn decline_and_cancel(store: &dyn Store) {
    let bounds = SocialConfig::default();
    assert_eq!(ask(store, "a", "b", Some("hello"), bounds).await, FriendOutcome::Requested);
    assert!(store.remove_friend_request("a", "b").await.expect("decline"));
    assert!(!store.remove_friend_request("a", "b").await.expect("decline again"), "nothing left to remove");
    assert!(incoming_of(&own(store, "b").await).is_empty());
    assert!(outgoing_of(&own(store, "a").await).is_empty());
    // Asked again without a message: the old message is gone.
    assert_eq!(ask(store, "a", "b", None, bounds).await, FriendOutcome::Requested);
    assert_eq!(incoming_of(&own(store, "b").await), vec![request("a", None)]);

    assert_eq!(ask(store, "c", "d", None, bounds).await, FriendOutcome::Requested);
    assert!(store.remove_friend_request("c", "d").await.expect("cancel"));
    assert!(outgoing_of(&own(store, "c").await).is_empty());
    assert!(incoming_of(&own(store, "d").await).is_empty());
    assert!(!store.remove_friend_request("d", "c").await.expect("wrong direction"), "only from -> to is removed");
    assert!(!store.remove_friend_request("nobody", "c").await.expect("none"));

    // Friends are not a pending request.
    assert_eq!(ask(store, "d", "c", None, bounds).await, FriendOutcome::Requested);
    assert_eq!(ask(store, "c", "d", None, bounds).await, FriendOutcome::BecameFriends);
    assert!(!store.remove_friend_request("c", "d").await.expect("remove between friends"));
    assert_eq!(friends_of(&own(store, "c").await), strings(&["d"]));
}

/// Ids chosen so byte order differs from case-insensitive and numeric order.
const NAMES: &[&str] = &["bob", "Zed", "al", "alice", "b0b", "émile", "x", "_", "a-1", "A"];

/// Walks one list of `user` `limit` at a time, checking each page's `more`.
async fn walk(store: &dyn Store, user: &str, list: List, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let query = ListQuery { lists: &[list], after: after.as_deref(), limit };
        let view = store.user_view(user, user, query).await.expect("page");
        let rel = view.relationships.expect("own relationships");
        let page: Page<String> = match list {
            List::Friends => rel.friends.expect("friends"),
            List::RequestsOut => rel.outgoing.expect("outgoing"),
            List::RequestsIn => {
                let page = rel.incoming.expect("incoming");
                Page { items: page.items.into_iter().map(|r| r.from).collect(), more: page.more }
            }
        };
        assert!(page.items.len() <= limit);
        let done = !page.more;
        if page.more {
            assert_eq!(page.items.len(), limit, "a page with more after it is full");
        }
        after = page.items.last().cloned();
        seen.extend(page.items);
        if done {
            return seen;
        }
    }
    panic!("{list:?} of {user}: paging did not end");
}

async fn paging(store: &dyn Store) {
    let bounds = SocialConfig::default();
    let user = "u";
    for name in NAMES {
        let (friend, asked, asker) = (format!("{name}.f"), format!("{name}.o"), format!("{name}.i"));
        assert_eq!(ask(store, &friend, user, None, bounds).await, FriendOutcome::Requested);
        assert_eq!(ask(store, user, &friend, None, bounds).await, FriendOutcome::BecameFriends);
        assert_eq!(ask(store, user, &asked, None, bounds).await, FriendOutcome::Requested);
        assert_eq!(ask(store, &asker, user, Some(name), bounds).await, FriendOutcome::Requested);
    }
    for (list, suffix) in [(List::Friends, ".f"), (List::RequestsOut, ".o"), (List::RequestsIn, ".i")] {
        let mut expected: Vec<String> = NAMES.iter().map(|n| format!("{n}{suffix}")).collect();
        expected.sort(); // String order is byte order.
        for limit in [1, 3, 4, NAMES.len() - 1, NAMES.len(), NAMES.len() + 5] {
            assert_eq!(walk(store, user, list, limit).await, expected, "{list:?} walked {limit} at a time");
        }
    }

    // Messages travel with their page.
    let query = ListQuery { lists: &[List::RequestsIn], after: Some("al.i"), limit: 2 };
    let rel = store.user_view(user, user, query).await.expect("page").relationships.expect("own");
    assert_eq!(
        rel.incoming,
        Some(Page { items: vec![request("alice.i", Some("alice")), request("b0b.i", Some("b0b"))], more: true })
    );
    assert_eq!((rel.friends, rel.outgoing), (None, None), "lists not asked for are None");

    // A cursor need not be an id in the list; past the end is empty.
    let query = ListQuery { lists: &[List::Friends], after: Some("b"), limit: 2 };
    let friends = store.user_view(user, user, query).await.expect("page").relationships.and_then(|r| r.friends);
    assert_eq!(friends, Some(Page { items: strings(&["b0b.f", "bob.f"]), more: true }));
    let query = ListQuery { lists: &[List::Friends], after: Some("émile.f"), limit: 2 };
    let friends = store.user_view(user, user, query).await.expect("page").relationships.and_then(|r| r.friends);
    assert_eq!(friends, Some(Page::default()));
    // "" is the start; limit 0 reads nothing but says whether any remain.
    let query = ListQuery { lists: &[List::Friends], after: Some(""), limit: 1 };
    let friends = store.user_view(user, user, query).await.expect("page").relationships.and_then(|r| r.friends);
    assert_eq!(friends, Some(Page { items: strings(&["A.f"]), more: true }));
    let query = ListQuery { lists: ALL, after: None, limit: 0 };
    let rel = store.user_view(user, user, query).await.expect("page").relationships.expect("own");
    assert_eq!(rel.friends, Some(Page { items: vec![], more: true }));
    let query = ListQuery { lists: ALL, after: None, limit: 0 };
    let rel = store.user_view("nobody", "nobody", query).await.expect("page").relationships.expect("own");
    assert_eq!(
        (rel.friends, rel.incoming, rel.outgoing),
        (Some(Page::default()), Some(Page::default()), Some(Page::default()))
    );
}

async fn profiles(store: &dyn Store) {
    assert_eq!(store.profile("p").await.expect("profile"), None);
    let first = json!({"name": "Pé", "tags": ["a", 1, null], "nested": {"x": 1.5, "ok": true}});
    store.set_profile("p", &first).await.expect("set_profile");
    assert_eq!(store.profile("p").await.expect("profile"), Some(first));
    let second = json!({"name": "P2"});
    store.set_profile("p", &second).await.expect("overwrite");
    assert_eq!(store.profile("p").await.expect("profile"), Some(second.clone()));
    assert_eq!(store.profile("q").await.expect("profile"), None, "profiles are per user");
    let view = store.user_view("q", "p", ListQuery { lists: &[], after: None, limit: 10 }).await.expect("view");
    assert_eq!(view, UserView { profile: Some(second.clone()), friends: false, relationships: None });
    assert_eq!(own(store, "p").await.profile, Some(second));
}

/// Another user's view carries no relationships, whatever it asks for;
/// `friends` says whether viewer and target are friends.
async fn privacy(store: &dyn Store) {
    let bounds = SocialConfig::default();
    assert_eq!(ask(store, "v", "t", Some("psst"), bounds).await, FriendOutcome::Requested);
    assert_eq!(ask(store, "t", "w", None, bounds).await, FriendOutcome::Requested);
    let query = ListQuery { lists: ALL, after: None, limit: 10 };
    let view = store.user_view("v", "t", query).await.expect("view");
    assert_eq!(view, UserView { profile: None, friends: false, relationships: None });
    assert_eq!(ask(store, "t", "v", None, bounds).await, FriendOutcome::BecameFriends);
    for (viewer, target) in [("v", "t"), ("t", "v")] {
        let view = store.user_view(viewer, target, query).await.expect("view");
        assert_eq!(view, UserView { profile: None, friends: true, relationships: None }, "{viewer} viewing {target}");
    }
    let view = store.user_view("w", "t", query).await.expect("view");
    assert_eq!(view, UserView { profile: None, friends: false, relationships: None });
    let view = own(store, "t").await;
    assert!(!view.friends, "not your own friend");
    assert_eq!(friends_of(&view), strings(&["v"]));
    assert_eq!(outgoing_of(&view), strings(&["w"]));
}

/// The bounds hold when requests race (one script / one transaction per
/// request): exactly `max_requests_in` of many concurrent askers get in, and
/// a pair asking each other at once ends friends with one of each outcome.
async fn bounds_hold_when_racing(store: &dyn Store) {
    let bounds = limits(100, 5, 100);
    let askers: Vec<String> = (0..40).map(|i| format!("asker{i:02}")).collect();
    let outcomes =
        futures_util::future::join_all(askers.iter().map(|from| ask(store, from, "popular", None, bounds))).await;
    let admitted = outcomes.iter().filter(|o| **o == FriendOutcome::Requested).count();
    let refused = outcomes.iter().filter(|o| **o == FriendOutcome::Refused(Refusal::InboxFull)).count();
    assert_eq!((admitted, refused), (5, 35), "{outcomes:?}");
    assert_eq!(incoming_of(&own(store, "popular").await).len(), 5);

    let bounds = SocialConfig::default();
    let pairs: Vec<(String, String)> = (0..20).map(|i| (format!("left{i:02}"), format!("right{i:02}"))).collect();
    let racing = pairs.iter().flat_map(|(l, r)| [ask(store, l, r, None, bounds), ask(store, r, l, None, bounds)]);
    let outcomes = futures_util::future::join_all(racing).await;
    for pair in outcomes.chunks(2) {
        let mut pair = pair.to_vec();
        pair.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(pair, vec![FriendOutcome::BecameFriends, FriendOutcome::Requested]);
    }
    for (l, r) in &pairs {
        let view = own(store, l).await;
        assert_eq!(friends_of(&view), vec![r.clone()]);
        assert!(outgoing_of(&view).is_empty() && incoming_of(&view).is_empty());
    }
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $check() {
                    let subject = super::embedded();
                    super::$check(subject.store.as_ref()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $check() {
                    let subject = super::redis().await;
                    super::$check(subject.store.as_ref()).await;
                }
            )*
        }
    };
}

conformance!(outcomes, decline_and_cancel, paging, profiles, privacy, bounds_hold_when_racing);

/// One store call, reduced to whether it failed.
type Call<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;

/// Every kind of call fails, each within the bound.
async fn every_call_fails(store: &RedisStore, when: &str) {
    let query = ListQuery { lists: ALL, after: None, limit: 10 };
    let calls: Vec<(&str, Call<'_>)> = vec![
        (
            "add_friend_request",
            Box::pin(async { store.add_friend_request("a", "b", None, SocialConfig::default()).await.is_err() }),
        ),
        ("remove_friend_request", Box::pin(async { store.remove_friend_request("a", "b").await.is_err() })),
        ("user_view self", Box::pin(async { store.user_view("a", "a", query).await.is_err() })),
        ("user_view other", Box::pin(async { store.user_view("a", "b", query).await.is_err() })),
        ("profile", Box::pin(async { store.profile("a").await.is_err() })),
        ("set_profile", Box::pin(async { store.set_profile("a", &json!({"n": 1})).await.is_err() })),
    ];
    for (name, call) in calls {
        let started = Instant::now();
        // Bounded here too, so a hanging store fails the test instead of
        // hanging it.
        let failed =
            tokio::time::timeout(FAIL_BOUND, call).await.unwrap_or_else(|_| panic!("{name} hung with redis {when}"));
        let took = started.elapsed();
        assert!(failed, "{name} succeeded with redis {when}");
        assert!(took < FAIL_BOUND, "{name} took {took:?} with redis {when} (timeout {TIMEOUT:?})");
    }
    let health = store.health();
    assert!(!health.healthy, "unhealthy with redis {when}");
    let reason = health.reason.expect("a reason");
    assert!(reason.contains("redis"), "reason names redis: {reason}");
}

/// Retries a profile write until it works, then checks it reads back.
async fn heals(store: &RedisStore, when: &str) -> Duration {
    let profile = json!({"ok": true});
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        let write = store.set_profile("healed", &profile);
        let result =
            tokio::time::timeout(FAIL_BOUND, write).await.unwrap_or_else(|_| panic!("a call hung while redis {when}"));
        assert!(attempt.elapsed() < FAIL_BOUND, "a call took {:?} while redis {when}", attempt.elapsed());
        if result.is_ok() {
            break;
        }
        assert!(started.elapsed() < HEAL_BOUND, "still failing {HEAL_BOUND:?} after redis {when}: {result:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert_eq!(store.profile("healed").await.expect("read after healing"), Some(json!({"ok": true})));
    assert!(store.health().healthy, "healthy again after redis {when}: {:?}", store.health());
    assert_eq!(store.health().reason, None);
    took
}

#[tokio::test]
async fn redis_killed_then_restarted() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), TIMEOUT).await.expect("connect");
    store.set_profile("p", &json!({"before": true})).await.expect("works before");
    assert!(store.health().healthy);

    server.kill();
    every_call_fails(&store, "killed").await;
    // Still failing, still bounded, on a second round.
    every_call_fails(&store, "killed").await;

    server.restart();
    let took = heals(&store, "restarted").await;
    eprintln!("healed {took:?} after the restart");
    // The restarted server is empty (no persistence in the harness).
    assert_eq!(store.profile("p").await.expect("profile"), None);
}

#[tokio::test]
async fn redis_paused_then_resumed() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), TIMEOUT).await.expect("connect");
    store.set_profile("p", &json!({"before": true})).await.expect("works before");

    server.pause();
    every_call_fails(&store, "paused").await;

    server.resume();
    let took = heals(&store, "resumed").await;
    eprintln!("healed {took:?} after the resume");
    assert_eq!(store.profile("p").await.expect("profile"), Some(json!({"before": true})), "nothing lost");
}

#[tokio::test]
async fn redis_connect_is_bounded() {
    // Nothing listens there: refused at once.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let started = Instant::now();
    let result = RedisStore::connect(&format!("redis://{free}/"), TIMEOUT).await;
    assert!(result.is_err(), "connected to nothing");
    assert!(started.elapsed() < FAIL_BOUND, "connect took {:?}", started.elapsed());

    // A paused server accepts TCP but never answers.
    let server = RedisServer::start();
    server.pause();
    let started = Instant::now();
    let result = RedisStore::connect(&server.url(), TIMEOUT).await;
    assert!(result.is_err(), "connected to a paused server");
    assert!(started.elapsed() < FAIL_BOUND, "connect took {:?}", started.elapsed());
    server.resume();

    assert!(RedisStore::connect("not a url", TIMEOUT).await.is_err());
}

/// A node that is not ready may get no traffic: the store turns healthy
/// again by itself once Redis is back, without any call.
#[tokio::test]
async fn redis_health_heals_without_traffic() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), TIMEOUT).await.expect("connect");
    server.kill();
    assert!(store.profile("p").await.is_err());
    assert!(!store.health().healthy);
    // Still unhealthy while Redis stays down.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let health = store.health();
    assert!(!health.healthy && health.reason.is_some(), "{health:?}");

    server.restart();
    let started = Instant::now();
    while !store.health().healthy {
        assert!(started.elapsed() < HEAL_BOUND, "not healthy {HEAL_BOUND:?} after the restart: {:?}", store.health());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("healthy {:?} after the restart, no call made", started.elapsed());
    assert_eq!(store.health().reason, None);
    assert_eq!(store.profile("p").await.expect("works"), None);
}
