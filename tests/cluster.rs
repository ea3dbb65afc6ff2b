//! Cluster mode: two or three in-process nodes sharing one real
//! redis-server (tests/common/redis_server.rs), each with its own store.

mod common;

use common::redis_server::RedisServer;
use common::*;
use pushgate::protocol::{action, close};
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};

/// Generous for a loaded machine: a self-check that misses it resubscribes.
const TIMEOUT_MS: u64 = 1000;
/// What an API call may take with Redis down or paused: its Redis calls
/// are bounded by the timeout (a listing makes two in sequence).
const BOUND: Duration = Duration::from_millis(2 * TIMEOUT_MS + 1500);

async fn node(redis: &RedisServer, id: &str) -> TestServer {
    node_with(redis, id, |_| {}).await
}

async fn node_with(redis: &RedisServer, id: &str, tweak: impl FnOnce(&mut pushgate::config::Config)) -> TestServer {
    let (url, id) = (redis.url(), id.to_string());
    let server = TestServer::start_with(move |c| {
        tweak(c);
        c.cluster.redis_url = Some(url);
        c.server.node_id = id;
        c.cluster.timeout_ms = TIMEOUT_MS;
        c.cluster.presence_ttl_secs = 4;
        c.cluster.presence_refresh_secs = 1;
        c.cluster.subscription_check_secs = 1;
    })
    .await;
    wait_for("subscription ok", Duration::from_secs(10), || async {
        server.get("/readyz").await.1["cluster"]["subscription"] == "ok"
    })
    .await;
    server
}

/// Polls `check` every 50 ms until it holds; panics after `limit`.
async fn wait_for<F: Future<Output = bool>>(what: &str, limit: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many sessions of `user` `server` sees cluster-wide.
async fn listed(server: &TestServer, user: &str) -> usize {
    server.get(&format!("/v1/users/{user}/sessions")).await.1["sessions"].as_array().map_or(0, Vec::len)
}

async fn wait_listed(server: &TestServer, user: &str, n: usize) {
    wait_for(&format!("{user} listed with {n} sessions"), Duration::from_secs(10), || async {
        listed(server, user).await == n
    })
    .await;
}

async fn push(server: &TestServer, user: &str, payload: Value) -> Value {
    let (status, body) = server.post("/v1/push", json!({ "users": [user], "payload": payload })).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn pushes_batches_and_broadcasts_cross_nodes() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, "a").await, node(&redis, "b").await, node(&redis, "c").await);
    let (mut alice, _) = a.connect("alice").await;
    let (mut bob, _) = b.connect("bob").await;
    let (mut carol, _) = c.connect("carol").await;
    wait_listed(&b, "alice", 1).await;

    // alice is on A; B's API forwards to A and counts it.
    let body = push(&b, "alice", json!({ "n": 1 })).await;
    assert_eq!(body["delivered"], 0, "{body}");
    assert_eq!(body["forwarded_users"], 1, "{body}");
    assert_eq!(body["online_users"], 1, "{body}");
    assert_eq!(body["offline_users"], json!([]), "{body}");
    assert_eq!(recv(&mut alice).await, (action::PUSH, json!({ "n": 1 })));

    // A user nowhere is offline, not forwarded.
    let body = push(&b, "nobody", json!({})).await;
    assert_eq!((body["forwarded_users"].clone(), body["offline_users"].clone()), (json!(0), json!(["nobody"])));

    // A batch from A: one message to each.
    let batch = json!({ "messages": [
        { "users": ["bob"], "payload": { "to": "bob" } },
        { "users": ["alice", "bob"], "payload": { "to": "both" } },
    ]});
    let (status, body) = a.post("/v1/push/batch", batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["forwarded_users"], 1, "{body}");
    assert_eq!(body["results"][1]["delivered"], 1, "{body}");
    assert_eq!(body["results"][1]["forwarded_users"], 1, "{body}");
    assert_eq!(recv(&mut bob).await.1, json!({ "to": "bob" }));
    assert_eq!(recv(&mut bob).await.1, json!({ "to": "both" }));
    assert_eq!(recv(&mut alice).await.1, json!({ "to": "both" }));

    // A broadcast from B reaches each session exactly once.
    let (status, body) = b.post("/v1/broadcast", json!({ "payload": { "all": true } })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["delivered"].clone(), body["forwarded_nodes"].clone()), (json!(1), json!(2)), "{body}");
    for ws in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(recv(ws).await.1, json!({ "all": true }));
        expect_silence(ws, Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn listing_presence_and_kicks_are_cluster_wide() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (mut on_a, _) = a.connect_device("alice", Some("phone")).await;
    let (mut on_b, hello_b) = b.connect_device("alice", Some("laptop")).await;
    wait_listed(&a, "alice", 2).await;
    wait_listed(&b, "alice", 2).await;

    let (_, body) = a.get("/v1/users/alice/sessions").await;
    let mut nodes: Vec<&str> = body["sessions"].as_array().unwrap().iter().filter_map(|s| s["node"].as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "b"], "{body}");
    assert_eq!(body["unreachable_nodes"], 0);

    // 111 FETCH_INFO about oneself counts the sessions on both nodes.
    send_json(&mut on_a, action::FETCH_INFO, json!({ "seq": 1 })).await;
    let (code, info) = recv(&mut on_a).await;
    assert_eq!(code, action::FETCH_INFO, "{info}");
    assert_eq!((info["online"].clone(), info["sessions"].clone()), (json!(true), json!(2)), "{info}");

    // Kick B's session by its node-qualified id, from A.
    let id = hello_b["session_id"].as_str().unwrap();
    assert!(id.starts_with("b."), "{id}");
    let (status, body) = a.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!((status, body["closed"].clone()), (200, json!(1)), "{body}");
    assert_eq!(expect_close(&mut on_b).await, 4002);
    // The same id again: the owner says it is gone.
    let (status, _) = a.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 404);
    wait_listed(&a, "alice", 1).await;

    // Kick every session of the user from B: A's session closes.
    let (status, body) = b.delete("/v1/users/alice/sessions").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["closed"].clone(), body["forwarded_nodes"].clone()), (json!(0), json!(1)), "{body}");
    assert_eq!(expect_close(&mut on_a).await, 4002);
    wait_listed(&b, "alice", 0).await;
}

#[tokio::test]
async fn a_friend_request_on_one_node_reaches_the_target_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (mut alice, _) = a.connect("alice").await;
    let (mut bob, _) = b.connect("bob").await;
    wait_listed(&a, "bob", 1).await;

    // Stored in the shared Redis store; the 210 push goes through the
    // cluster router to B.
    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bob", "message": "hi", "seq": 3 })).await;
    let (code, reply) = recv(&mut alice).await;
    assert_eq!((code, reply["status"].clone()), (action::ADD_FRIEND, json!("pending")), "{reply}");
    let (code, push) = recv(&mut bob).await;
    assert_eq!(code, action::FRIEND_REQUEST);
    assert_eq!(push, json!({ "from": "alice", "message": "hi" }));

    // Both nodes see the same data: bob, on B, finds the request made on A
    // and accepts it there; alice, on A, hears 211 and lists bob as a friend.
    send_json(&mut bob, action::FETCH_INFO, json!({ "seq": 4 })).await;
    let (_, info) = recv(&mut bob).await;
    assert_eq!(info["requests_in"], json!([{ "from": "alice", "message": "hi" }]), "{info}");
    send_json(&mut bob, action::ADD_FRIEND, json!({ "friend": "alice", "seq": 5 })).await;
    let (_, reply) = recv(&mut bob).await;
    assert_eq!(reply["status"], "friends", "{reply}");
    let (code, accepted) = recv(&mut alice).await;
    assert_eq!((code, accepted), (action::FRIEND_ACCEPTED, json!({ "friend": "bob" })));
    send_json(&mut alice, action::FETCH_INFO, json!({ "seq": 6 })).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!(info["friends"], json!(["bob"]), "{info}");
}

#[tokio::test]
async fn a_redis_outage_bounds_answers_and_heals_without_restarts() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (mut alice, _) = a.connect("alice").await;
    let (mut bob, _) = b.connect("bob").await;
    wait_listed(&b, "alice", 1).await;

    redis.kill();
    // Local pushes still work; the remote part is reported unknown, in time.
    let started = Instant::now();
    let body = push(&a, "alice", json!({ "local": true })).await;
    assert_eq!((body["delivered"].clone(), body["online_users"].clone()), (json!(1), json!(1)), "{body}");
    assert!(started.elapsed() < BOUND, "local push: {:?}", started.elapsed());
    assert_eq!(recv(&mut alice).await.1, json!({ "local": true }));
    let started = Instant::now();
    let body = push(&b, "alice", json!({ "remote": true })).await;
    assert_eq!(body["unknown_users"], json!(["alice"]), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "remote push: {:?}", started.elapsed());
    let started = Instant::now();
    let (_, listing) = b.get("/v1/users/alice/sessions").await;
    assert!(listing["unreachable_nodes"].as_u64() >= Some(1), "{listing}");
    assert!(started.elapsed() < BOUND, "listing: {:?}", started.elapsed());
    wait_for("subscription reported failed", Duration::from_secs(10), || async {
        let (status, body) = a.get("/readyz").await;
        // Not unready: the node still serves its own sessions.
        status == 200 && body["cluster"]["subscription"] == "failed"
    })
    .await;
    let metrics = a.http().get(a.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pushgate_cluster_subscription_ok"), "{metrics}");

    // An empty Redis comes back: presence is refreshed and the
    // subscriptions reconnect by themselves.
    redis.restart();
    wait_for("cross-node delivery again", Duration::from_secs(15), || async {
        push(&b, "alice", json!({ "back": true })).await["forwarded_users"] == 1
    })
    .await;
    assert_eq!(recv(&mut alice).await.1, json!({ "back": true }));
    wait_for("a sees bob again", Duration::from_secs(15), || async {
        push(&a, "bob", json!({ "again": true })).await["forwarded_users"] == 1
    })
    .await;
    assert_eq!(recv(&mut bob).await.1, json!({ "again": true }));
    let readyz = a.get("/readyz").await.1;
    assert!(readyz["cluster"]["reconnects"].as_u64() >= Some(1), "{readyz}");
}

#[tokio::test]
async fn a_paused_redis_never_holds_an_api_call_past_its_timeout() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (_alice, hello) = a.connect("alice").await;
    wait_listed(&b, "alice", 1).await;

    redis.pause();
    let bound = BOUND;
    let id = hello["session_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let body = push(&b, "alice", json!({})).await;
    assert_eq!(body["unknown_users"], json!(["alice"]), "{body}");
    assert!(started.elapsed() < bound, "push: {:?}", started.elapsed());

    let started = Instant::now();
    let (status, body) = b.post("/v1/broadcast", json!({ "payload": {} })).await;
    assert_eq!((status, body["unreachable_nodes"].clone()), (200, json!(1)), "{body}");
    assert!(started.elapsed() < bound, "broadcast: {:?}", started.elapsed());
    // (What B published may still arrive once Redis resumes: unknown outcome.)

    let started = Instant::now();
    let (status, body) = b.get("/v1/users/alice/sessions").await;
    assert_eq!((status, body["unreachable_nodes"].clone()), (200, json!(1)), "{body}");
    assert!(started.elapsed() < bound, "listing: {:?}", started.elapsed());
    let started = Instant::now();
    let (status, _) = b.get("/readyz").await;
    assert_eq!(status, 200, "a paused Redis does not make the node unready");
    assert!(started.elapsed() < bound, "readyz: {:?}", started.elapsed());
    let started = Instant::now();
    let (status, _) = b.delete(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 504);
    assert!(started.elapsed() < bound, "kick: {:?}", started.elapsed());
    let started = Instant::now();
    let (status, _) = b.delete("/v1/users/alice/sessions").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < bound, "kick user: {:?}", started.elapsed());
    redis.resume();
}

#[tokio::test]
async fn a_crashed_nodes_users_go_offline_within_the_presence_ttl() {
    let redis = RedisServer::start();
    let (mut a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (_alice, _) = a.connect("alice").await;
    wait_listed(&b, "alice", 1).await;
    assert_eq!(push(&b, "alice", json!({})).await["forwarded_users"], 1);

    // No shutdown, no cleanup: A's presence entry is left to expire.
    a.abort();
    let started = Instant::now();
    wait_for("alice offline", Duration::from_secs(4 + 3), || async {
        let body = push(&b, "alice", json!({})).await;
        body["offline_users"] == json!(["alice"])
    })
    .await;
    // Offline once the entry expired or A's subscriber was gone.
    assert!(started.elapsed() < Duration::from_secs(4 + 3));
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    wait_for("presence entry expired", Duration::from_secs(4 + 3), || {
        let mut conn = conn.clone();
        async move {
            let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(pushgate::cluster::nodes_key("alice"))
                .arg(now_ms())
                .arg("+inf")
                .query_async(&mut conn)
                .await
                .unwrap();
            live.is_empty()
        }
    })
    .await;
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    let (_, listing) = b.get("/v1/users/alice/sessions").await;
    assert_eq!(listing["sessions"], json!([]), "{listing}");
}

#[tokio::test]
async fn a_graceful_stop_removes_the_nodes_presence_at_once() {
    let redis = RedisServer::start();
    let (mut a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let (_alice, _) = a.connect("alice").await;
    wait_listed(&b, "alice", 1).await;
    a.stop(pushgate::Shutdown::Immediate).await;
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(pushgate::cluster::nodes_key("alice"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(members.is_empty(), "{members:?}");
    let readyz = b.get("/readyz").await.1;
    assert_eq!(readyz["cluster"]["redis"], "ok", "{readyz}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `session.max_per_user` counts the user's sessions on every node: a third
/// session on B closes the oldest of two on A with 4005.
#[tokio::test]
async fn the_per_user_limit_holds_across_nodes() {
    let redis = RedisServer::start();
    let a = node_with(&redis, "a", |c| c.session.max_per_user = 2).await;
    let b = node_with(&redis, "b", |c| c.session.max_per_user = 2).await;
    let (mut oldest, _) = a.connect_device("alice", Some("old")).await;
    let (mut second, _) = a.connect_device("alice", Some("mid")).await;
    wait_listed(&b, "alice", 2).await;
    let (mut newest, _) = b.connect_device("alice", Some("new")).await;
    assert_eq!(expect_close(&mut oldest).await, close::SESSION_REPLACED);
    for ws in [&mut second, &mut newest] {
        send_json(ws, action::PING, json!({ "seq": 1 })).await;
        assert_eq!(recv(ws).await.0, action::PONG);
    }
    wait_listed(&b, "alice", 2).await;
}

/// `INFO commandstats` calls of `command` (lowercase), via a client of our own.
async fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect to redis");
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_push_to_many_users_takes_one_redis_round_trip_and_one_message_per_node() {
    let redis = RedisServer::start();
    let (a, b, c) = (node(&redis, "a").await, node(&redis, "b").await, node(&redis, "c").await);
    let (mut alice, _) = a.connect("alice").await;
    let (mut bob1, _) = b.connect("bob1").await;
    let (mut bob2, _) = b.connect("bob2").await;
    let (mut carol, _) = c.connect("carol").await;
    let users = json!(["alice", "bob1", "bob2", "carol", "dave", "bob1"]);
    // The first push loads the script into Redis; the second is measured.
    let (status, _) = a.post("/v1/push", json!({ "users": users, "payload": { "n": 0 } })).await;
    assert_eq!(status, 200);
    for ws in [&mut alice, &mut bob1, &mut bob2, &mut carol] {
        assert_eq!(recv(ws).await.1, json!({ "n": 0 }));
    }

    let scripts = command_calls(&redis, "evalsha").await;
    let (status, body) = a.post("/v1/push", json!({ "users": users, "payload": { "n": 1 } })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(command_calls(&redis, "evalsha").await - scripts, 1, "one script call for five users");
    assert_eq!(body["delivered"], 1, "{body}");
    assert_eq!(body["forwarded_users"], 3, "{body}");
    assert_eq!(body["online_users"], 4, "{body}");
    assert_eq!(body["offline_users"], json!(["dave"]), "{body}");
    // Each user once (bob1 is listed twice), nobody twice.
    for ws in [&mut alice, &mut bob1, &mut bob2, &mut carol] {
        assert_eq!(recv(ws).await.1, json!({ "n": 1 }));
        expect_silence(ws, Duration::from_millis(200)).await;
    }

    // A batch of one-user pushes: one script call too, each its own frame.
    let messages: Vec<Value> = ["alice", "bob1", "bob2", "carol", "dave"]
        .iter()
        .map(|u| json!({ "users": [u], "payload": { "to": u } }))
        .collect();
    // (A first batch of one loads the script into Redis.)
    let warm = json!({ "messages": [{ "users": ["nobody"], "payload": {} }, { "users": ["none"], "payload": {} }] });
    assert_eq!(a.post("/v1/push/batch", warm).await.0, 200);
    let scripts = command_calls(&redis, "evalsha").await;
    let (status, body) = a.post("/v1/push/batch", json!({ "messages": messages })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(command_calls(&redis, "evalsha").await - scripts, 1, "one script call for the batch");
    let results = body["results"].as_array().expect("results");
    let field = |k: &str| results.iter().map(|r| r[k].clone()).collect::<Vec<_>>();
    assert_eq!(field("delivered"), [json!(1), json!(0), json!(0), json!(0), json!(0)], "{body}");
    assert_eq!(field("forwarded_users"), [json!(0), json!(1), json!(1), json!(1), json!(0)], "{body}");
    assert_eq!(results[4]["offline_users"], json!(["dave"]), "{body}");
    for (ws, user) in [(&mut alice, "alice"), (&mut bob1, "bob1"), (&mut bob2, "bob2"), (&mut carol, "carol")] {
        assert_eq!(recv(ws).await.1, json!({ "to": user }));
        expect_silence(ws, Duration::from_millis(200)).await;
    }
}

/// HELLO comes only once the session's node is findable: a push sent from
/// another node right after it always arrives. Redis is paused while the
/// client connects, so the greeting must wait for the presence write.
#[tokio::test]
async fn a_greeted_session_is_reachable_from_every_node_at_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let hold = Duration::from_millis(400);
    redis.pause();
    let started = Instant::now();
    let connecting = async {
        let (ws, _) = b.connect("late").await;
        (ws, started.elapsed())
    };
    let resume = async {
        tokio::time::sleep(hold).await;
        redis.resume();
    };
    let ((mut ws, greeted_after), ()) = tokio::join!(connecting, resume);
    assert!(greeted_after >= hold, "HELLO after {greeted_after:?}, before its presence was written");
    assert!(greeted_after < BOUND, "HELLO only after {greeted_after:?}");
    let body = push(&a, "late", json!({ "at": "once" })).await;
    assert_eq!(body["forwarded_users"], 1, "push right after HELLO: {body}");
    assert_eq!(recv(&mut ws).await.1, json!({ "at": "once" }));
}

/// Redis down when a node starts: it starts anyway, serves its own
/// sessions and pushes, says so, and joins the cluster once Redis is back.
#[tokio::test]
async fn a_node_starts_while_redis_is_down_and_joins_when_it_returns() {
    let mut redis = RedisServer::start();
    redis.kill();
    let url = redis.url();
    let a = TestServer::start_with(move |c| {
        c.cluster.redis_url = Some(url);
        c.server.node_id = "a".into();
        c.cluster.timeout_ms = TIMEOUT_MS;
        c.cluster.subscription_check_secs = 1;
        c.cluster.presence_refresh_secs = 1;
    })
    .await;
    let started = Instant::now();
    let (mut alice, _) = a.connect("alice").await;
    assert!(started.elapsed() < BOUND, "handshake took {:?} with redis down", started.elapsed());
    let body = push(&a, "alice", json!({ "local": true })).await;
    assert_eq!((body["delivered"].clone(), body["unknown_users"].clone()), (json!(1), json!([])), "{body}");
    assert_eq!(recv(&mut alice).await.1, json!({ "local": true }));
    let (status, readyz) = a.get("/readyz").await;
    assert_eq!(status, 200, "serving its own sessions: {readyz}");
    assert_eq!(readyz["cluster"]["subscription"], "failed", "{readyz}");
    assert_eq!(readyz["store"]["healthy"], false, "{readyz}");
    // Store calls fail with a clear answer instead of hanging.
    send_json(&mut alice, action::FETCH_INFO, json!({ "user": "alice", "seq": 1 })).await;
    let (code, error) = recv(&mut alice).await;
    assert_eq!(code, action::ERROR, "{error}");

    redis.restart();
    let b = node(&redis, "b").await;
    wait_for("a joined the cluster", Duration::from_secs(15), || async {
        push(&b, "alice", json!({ "remote": true })).await["forwarded_users"] == 1
    })
    .await;
    assert_eq!(recv(&mut alice).await.1, json!({ "remote": true }));
    wait_for("a's store healthy", Duration::from_secs(10), || async {
        a.get("/readyz").await.1["store"]["healthy"] == true
    })
    .await;
}

/// Durable messages live in Redis in a cluster: pushed through one node
/// while the phone is away, replayed when it resumes on another, acked
/// there, and not replayed again anywhere; live ones cross nodes as
/// MESSAGE frames with their ids.
#[tokio::test]
async fn a_device_resumes_its_inbox_on_any_node() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let resume = |server: &TestServer| {
        let url = format!("ws://{}/ws?resume=1", server.ws_addr);
        async move {
            let mut request = url.into_client_request().unwrap();
            let token = mint("ivy", Some("phone"), 3600);
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
            assert_eq!(recv(&mut ws).await.0, action::HELLO);
            ws
        }
    };
    let durable = |n: u64| json!({ "users": ["ivy"], "persist": true, "payload": { "n": n } });
    for n in 1..=3 {
        let (status, body) = a.post("/v1/push", durable(n)).await;
        assert_eq!((status, body["message_ids"]["ivy"].clone()), (200, json!(n)), "{body}");
    }
    let mut ws = resume(&b).await;
    let mut replayed = Vec::new();
    loop {
        let (code, payload) = recv_raw(&mut ws).await;
        match code {
            action::MESSAGE => replayed.push(pushgate::protocol::decode_message(&payload).expect("MESSAGE").0),
            action::SYNCED => break,
            other => panic!("action {other} during the replay"),
        }
    }
    assert_eq!(replayed, [1, 2, 3], "replayed on the other node");
    // Live through A to the session on B.
    wait_listed(&a, "ivy", 1).await;
    let (_, body) = a.post("/v1/push", durable(4)).await;
    assert_eq!(body["forwarded_users"], 1, "{body}");
    let (code, payload) = recv_raw(&mut ws).await;
    assert_eq!((code, pushgate::protocol::decode_message(&payload).map(|m| m.0)), (action::MESSAGE, Some(4)));
    send_json(&mut ws, action::ACK, json!({ "upto": 4, "seq": 1 })).await;
    assert_eq!(recv(&mut ws).await, (action::ACK, json!({ "upto": 4, "pending": 0, "seq": 1 })));
    drop(ws);
    let mut ws = resume(&a).await;
    assert_eq!(recv(&mut ws).await, (action::SYNCED, json!({ "last_id": 4, "replayed": 0, "gap": false })));
    let (_, inbox) = b.get("/v1/users/ivy/inbox").await;
    assert_eq!(inbox["devices"]["phone"]["pending"], 0, "{inbox}");

    // Redis down: a durable push says so in time, and stores nothing.
    redis.kill();
    let started = Instant::now();
    let (status, body) = a.post("/v1/push", durable(5)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "inbox_unavailable", "{body}");
    assert!(started.elapsed() < BOUND, "answered after {:?}", started.elapsed());
}

/// A revocation made through one node closes the user's sessions on
/// every node, and every node (even one started later) refuses the older
/// tokens at the handshake.
#[tokio::test]
async fn a_revocation_holds_on_every_node() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a").await, node(&redis, "b").await);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": "jay", "exp": now + 3600, "iat": now - 5 });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let old = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let connect = |server: &TestServer, token: String| {
        let url = server.ws_url();
        async move {
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            tokio_tungstenite::connect_async(request).await.map(|(ws, _)| ws)
        }
    };
    let mut ws = connect(&b, old.clone()).await.expect("connect on b");
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    wait_listed(&a, "jay", 1).await;
    let (status, answer) = a.post("/v1/users/jay/revoke", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["forwarded_nodes"], 1, "{answer}");
    assert_eq!(expect_close(&mut ws).await, close::REVOKED);
    wait_for("b refuses the old token", Duration::from_secs(10), || async { connect(&b, old.clone()).await.is_err() })
        .await;
    let c = node(&redis, "c").await;
    assert!(connect(&c, old.clone()).await.is_err(), "a node started later loads the revocation");
    assert!(connect(&c, mint("jay", None, 3600)).await.is_ok(), "a new token works");
}
