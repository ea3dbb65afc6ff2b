//! Durable delivery (proto-spec section 8) against a real server: pushes
//! stored while a device is away, replayed in order on a resuming connect,
//! acked per device, and what the backend sees of them.

mod common;

use common::process::GatewayProcess;
use common::*;
use futures_util::SinkExt;
use pushgate::protocol::{action, decode_message, error_code};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A server frame as the tests look at it.
#[derive(Debug, PartialEq)]
enum In {
    /// MESSAGE: id, inner action, inner JSON payload.
    Message(u64, u32, Value),
    Synced(Value),
    Other(u32, Value),
}

async fn next(ws: &mut Ws) -> In {
    let (code, payload) = recv_raw(ws).await;
    match code {
        action::MESSAGE => {
            let (id, inner, body) = decode_message(&payload).expect("MESSAGE payload");
            In::Message(id, inner, serde_json::from_slice(body).unwrap_or(Value::Null))
        }
        action::SYNCED => In::Synced(serde_json::from_slice(&payload).expect("SYNCED json")),
        other => In::Other(other, serde_json::from_slice(&payload).unwrap_or(Value::Null)),
    }
}

/// Connects `user` on `device` with `query` (e.g. "resume=1") at `addr`;
/// returns the socket after HELLO.
async fn connect_at(addr: std::net::SocketAddr, user: &str, device: Option<&str>, query: &str) -> Ws {
    let mut request = format!("ws://{addr}/ws?{query}").into_client_request().unwrap();
    let token = mint(user, device, 3600);
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    ws
}

async fn resume(server: &TestServer, user: &str, device: Option<&str>) -> Ws {
    connect_at(server.ws_addr, user, device, "resume=1").await
}

/// Reads the replay: MESSAGE ids and payloads until SYNCED.
async fn replay(ws: &mut Ws) -> (Vec<(u64, Value)>, Value) {
    let mut messages = Vec::new();
    loop {
        match next(ws).await {
            In::Message(id, _, payload) => messages.push((id, payload)),
            In::Synced(synced) => return (messages, synced),
            other => panic!("during the replay: {other:?}"),
        }
    }
}

fn ids(messages: &[(u64, Value)]) -> Vec<u64> {
    messages.iter().map(|(id, _)| *id).collect()
}

async fn durable(server: &TestServer, user: &str, extra: Value) -> Value {
    let mut body = json!({ "users": [user], "persist": true, "payload": { "n": extra["n"].clone() } });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k != "n" {
                body.insert(k.clone(), v.clone());
            }
        }
    }
    let (status, answer) = server.post("/v1/push", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn ack(ws: &mut Ws, body: Value) -> Value {
    send_json(ws, action::ACK, body).await;
    match next(ws).await {
        In::Other(code, reply) if code == action::ACK || code == action::ERROR => reply,
        other => panic!("ACK reply: {other:?}"),
    }
}

#[tokio::test]
async fn messages_sent_while_away_are_replayed_in_order_until_acked() {
    let server = TestServer::start().await;
    for n in 1..=3 {
        let answer = durable(&server, "alice", json!({ "n": n })).await;
        assert_eq!(answer["message_ids"], json!({ "alice": n }), "{answer}");
        assert_eq!(answer["offline_users"], json!(["alice"]), "{answer}");
    }
    let mut ws = resume(&server, "alice", Some("phone")).await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(messages, [(1, json!({ "n": 1 })), (2, json!({ "n": 2 })), (3, json!({ "n": 3 }))]);
    assert_eq!(synced, json!({ "last_id": 3, "replayed": 3, "gap": false }));

    // Live after SYNCED, with the next id.
    let answer = durable(&server, "alice", json!({ "n": 4 })).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    assert_eq!(next(&mut ws).await, In::Message(4, action::PUSH, json!({ "n": 4 })));

    // Ack 1-2 (and 4 alone); 3 stays pending.
    assert_eq!(
        ack(&mut ws, json!({ "upto": 2, "ids": [4], "seq": 7 })).await,
        json!({ "upto": 2, "pending": 1, "seq": 7 })
    );
    drop(ws);
    let mut ws = resume(&server, "alice", Some("phone")).await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(ids(&messages), [3], "only the unacked one again");
    assert_eq!(synced["last_id"], 4, "{synced}");
    // Fire and forget: no answer without seq.
    send_json(&mut ws, action::ACK, json!({ "upto": 4 })).await;
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    drop(ws);
    let mut ws = resume(&server, "alice", Some("phone")).await;
    let (messages, synced) = replay(&mut ws).await;
    assert!(messages.is_empty(), "{messages:?}");
    assert_eq!(synced, json!({ "last_id": 4, "replayed": 0, "gap": false }));
}

#[tokio::test]
async fn devices_have_their_own_positions_and_ack_user_retires_for_all() {
    let server = TestServer::start().await;
    let mut laptop = resume(&server, "bob", Some("laptop")).await;
    assert_eq!(replay(&mut laptop).await.1["replayed"], 0);
    // The phone was seen once, then went away.
    drop(resume(&server, "bob", Some("phone")).await);
    durable(&server, "bob", json!({ "n": 1 })).await;
    durable(&server, "bob", json!({ "n": 2, "ack": "user" })).await;
    for id in [1, 2] {
        assert!(matches!(next(&mut laptop).await, In::Message(got, ..) if got == id));
    }
    assert_eq!(ack(&mut laptop, json!({ "ids": [1, 2], "seq": 1 })).await["pending"], 0);

    let mut phone = resume(&server, "bob", Some("phone")).await;
    let (messages, _) = replay(&mut phone).await;
    assert_eq!(ids(&messages), [1], "the laptop's ack is its own; the user-acked call stopped ringing");

    // Handed to a socket of each device: live to the laptop, replayed to
    // the phone (marks are saved in the background, within moments).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        let (_, status) = server.get("/v1/users/bob/messages/1").await;
        let devices = &status["devices"];
        if devices["laptop"]["written_at"].is_u64() && devices["phone"]["written_at"].is_u64() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no written_at per device: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["state"], "held", "{status}");
    assert_eq!(status["devices"]["laptop"]["state"], "acked", "{status}");
    assert!(status["devices"]["laptop"]["acked_at"].as_u64().is_some(), "{status}");
    assert_eq!(status["devices"]["phone"]["state"], "pending", "{status}");
    let (_, status) = server.get("/v1/users/bob/messages/2").await;
    assert_eq!(status["state"], "retired", "{status}");
    assert_eq!(status["devices"]["phone"]["state"], "retired", "{status}");
    let (_, inbox) = server.get("/v1/users/bob/inbox").await;
    assert_eq!(inbox["devices"]["phone"]["pending"], 1, "{inbox}");
    assert_eq!(inbox["devices"]["phone"]["oldest_unacked"], 1, "{inbox}");
    assert_eq!(inbox["devices"]["laptop"]["pending"], 0, "{inbox}");
    assert_eq!(server.get("/v1/users/bob/messages/99").await.0, 404);
}

#[tokio::test]
async fn idempotency_collapse_ttl_and_the_bound() {
    let server = TestServer::start_with(|c| c.inbox.max_messages = 3).await;
    drop(resume(&server, "carol", None).await);
    let first = durable(&server, "carol", json!({ "n": 1, "idempotency_key": "order-9" })).await;
    let again = durable(&server, "carol", json!({ "n": 1, "idempotency_key": "order-9" })).await;
    assert_eq!(again["message_ids"], first["message_ids"], "{again}");
    assert_eq!(again["duplicate_users"], json!(["carol"]), "{again}");
    durable(&server, "carol", json!({ "n": 2, "collapse_key": "score" })).await;
    durable(&server, "carol", json!({ "n": 3, "collapse_key": "score" })).await;
    durable(&server, "carol", json!({ "n": 4, "ttl_secs": 1 })).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut ws = resume(&server, "carol", None).await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(messages, [(1, json!({ "n": 1 })), (3, json!({ "n": 3 }))], "collapsed and expired are not replayed");
    assert_eq!(synced["gap"], true, "the expired one was never acked: {synced}");
    let (_, status) = server.get("/v1/users/carol/messages/2").await;
    assert_eq!((status["state"].clone(), status["by"].clone()), (json!("collapsed"), json!(3)), "{status}");
    let (_, status) = server.get("/v1/users/carol/messages/4").await;
    assert_eq!(status["devices"]["default"]["state"], "expired", "{status}");
    drop(ws);

    // The bound: 3 held; the oldest unacked ones are evicted loudly.
    for n in 5..=8 {
        durable(&server, "carol", json!({ "n": n })).await;
    }
    let mut ws = resume(&server, "carol", None).await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(ids(&messages), [6, 7, 8]);
    assert_eq!((synced["gap"].clone(), synced["first_id"].clone()), (json!(true), json!(6)), "{synced}");
    let (_, status) = server.get("/v1/users/carol/messages/5").await;
    assert_eq!(status["state"], "evicted", "{status}");
    assert_eq!(status["devices"]["default"]["state"], "evicted", "{status}");
    let metrics = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("pushgate_inbox_evicted_total"), "{metrics}");
    // Every durable push above waited for a disk sync, each one timed.
    let syncs = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pushgate_inbox_sync_seconds_count "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(syncs.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(metrics.lines().any(|l| l == "pushgate_inbox_healthy 1"), "{metrics}");
}

#[tokio::test]
async fn a_device_resuming_while_pushes_flow_gets_each_message_once_in_order() {
    let server = TestServer::start().await;
    const TOTAL: u64 = 1000;
    let pusher = {
        let api = server.api("/v1/push");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 1..=TOTAL {
                let body = json!({ "users": ["dave"], "persist": true, "payload": { "n": n } });
                let r = http.post(&api).bearer_auth(API_KEY).json(&body).send().await.expect("push");
                assert_eq!(r.status(), 200);
            }
        })
    };
    // Connect while the pushes flow.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = resume(&server, "dave", Some("phone")).await;
    let mut seen = Vec::new();
    let mut synced = false;
    while seen.last() != Some(&TOTAL) {
        match next(&mut ws).await {
            In::Message(id, _, payload) => {
                assert_eq!(payload["n"], id, "payload of {id}");
                seen.push(id);
            }
            In::Synced(s) => {
                assert!(!synced, "one SYNCED");
                synced = true;
                assert_eq!(s["last_id"].as_u64(), seen.last().copied(), "{s}");
                // The race is real: some replayed, more still to come live.
                assert!(s["replayed"].as_u64() >= Some(1) && s["last_id"].as_u64() < Some(TOTAL), "{s}");
            }
            other => panic!("{other:?}"),
        }
    }
    pusher.await.expect("pusher");
    assert!(synced);
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>(), "every message exactly once, in id order");
    expect_silence(&mut ws, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn since_skips_what_the_client_processed_and_plain_sessions_get_no_replay() {
    let server = TestServer::start().await;
    for n in 1..=3 {
        durable(&server, "erin", json!({ "n": n })).await;
    }
    let mut ws = connect_at(server.ws_addr, "erin", None, "since=2").await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(ids(&messages), [3]);
    assert_eq!(synced["last_id"], 3);
    drop(ws);
    let (_, status) = server.get("/v1/users/erin/messages/2").await;
    assert_eq!(status["devices"]["default"]["state"], "acked", "since acks: {status}");

    // Without resume: live MESSAGE frames, no replay, no SYNCED.
    let (mut plain, _) = server.connect("erin").await;
    expect_silence(&mut plain, Duration::from_millis(200)).await;
    durable(&server, "erin", json!({ "n": 4 })).await;
    assert_eq!(next(&mut plain).await, In::Message(4, action::PUSH, json!({ "n": 4 })));

    // A since that is not an id is refused before the upgrade.
    let path = format!("/ws?since=abc&token={}", mint("erin", None, 60));
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, &path, "")).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["code"], "bad_request", "{:?}", response.json());
}

#[tokio::test]
async fn bad_durable_input_gets_a_clear_answer() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/v1/push", json!({ "users": ["f"], "payload": {}, "ttl_secs": 5 })).await;
    assert_eq!(status, 400, "an option without persist: {body}");
    let (status, body) =
        server.post("/v1/push", json!({ "users": ["f"], "payload": {}, "persist": true, "ttl_secs": 0 })).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        server.post("/v1/push", json!({ "users": ["f"], "payload": {}, "persist": true, "ack": "nobody" })).await;
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, _) = server.post("/v1/broadcast", json!({ "payload": {}, "persist": true })).await;
    assert_eq!(status, 400, "broadcasts are not durable");
    assert_eq!(server.get("/v1/users/f/messages/x").await.0, 400);

    durable(&server, "f", json!({ "n": 1 })).await;
    let mut ws = resume(&server, "f", None).await;
    replay(&mut ws).await;
    let error = ack(&mut ws, json!({ "seq": 1 })).await;
    assert_eq!(error["code"], error_code::BAD_PAYLOAD, "{error}");
    let error = ack(&mut ws, json!({ "upto": 5, "seq": 2 })).await;
    assert_eq!(error["code"], error_code::BAD_PAYLOAD, "above the last id: {error}");
    let too_many: Vec<u64> = (1..=1025).collect();
    let error = ack(&mut ws, json!({ "ids": too_many, "seq": 3 })).await;
    assert_eq!(error["code"], error_code::BAD_PAYLOAD, "{error}");
    // Nothing changed: still pending.
    assert_eq!(
        ack(&mut ws, json!({ "ids": [], "upto": 0, "seq": 4 })).await,
        json!({ "upto": 0, "pending": 1, "seq": 4 })
    );
    ws.send(frame(action::ACK, b"[1]")).await.unwrap();
    assert_eq!(
        next(&mut ws).await,
        In::Other(action::ERROR, {
            json!({ "code": "bad_payload", "message": "payload must be a JSON object", "action": action::ACK, "seq": null })
        })
    );
}

/// The inbox is on disk before the API answers: a graceful restart and a
/// SIGKILL right after the answers lose nothing.
#[tokio::test]
async fn nothing_is_lost_across_a_restart_or_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path().to_path_buf());
    let mut server = TestServer::start_config(config.clone()).await;
    for n in 1..=5 {
        durable(&server, "gus", json!({ "n": n })).await;
    }
    server.stop(pushgate::Shutdown::Immediate).await;
    let server = TestServer::start_config(config).await;
    let mut ws = resume(&server, "gus", None).await;
    assert_eq!(ids(&replay(&mut ws).await.0), [1, 2, 3, 4, 5], "after a restart");
    drop((ws, server));

    // The real binary, killed with SIGKILL right after its answers.
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::spawn(dir.path(), "", None);
    gateway.wait_listening().await;
    let http = reqwest::Client::new();
    let pushes = (1..=50).map(|n| {
        let body = json!({ "users": ["hal"], "persist": true, "payload": { "n": n } });
        http.post(format!("http://{}/v1/push", gateway.api)).bearer_auth(API_KEY).json(&body).send()
    });
    for answer in futures_util::future::join_all(pushes).await {
        assert_eq!(answer.expect("push").status(), 200);
    }
    let mut gateway = gateway;
    gateway.child.kill().expect("SIGKILL");
    gateway.child.wait().expect("reaped");
    let restarted = GatewayProcess::spawn(dir.path(), "", None);
    restarted.wait_listening().await;
    let mut ws = connect_at(restarted.ws, "hal", None, "resume=1").await;
    let (messages, synced) = replay(&mut ws).await;
    assert_eq!(ids(&messages), (1..=50).collect::<Vec<_>>(), "every answered push survived SIGKILL");
    assert_eq!(synced["replayed"], 50);
}

#[tokio::test]
async fn a_batch_of_durable_messages_keeps_each_users_order_live_and_stored() {
    let server = TestServer::start().await;
    let mut live = resume(&server, "gina", None).await;
    assert_eq!(replay(&mut live).await.0, []);
    // gina three times (one save for her run), hank once, a plain message
    // between, then gina again: ids follow the batch order per user.
    let message = |user: &str, n: u64| json!({ "users": [user], "persist": true, "payload": { "n": n } });
    let batch = json!({ "messages": [
        message("gina", 1), message("hank", 2), message("gina", 3), message("gina", 4),
        { "users": ["gina"], "payload": { "n": 5 } },
        message("gina", 6),
    ]});
    let (status, answer) = server.post("/v1/push/batch", batch).await;
    assert_eq!(status, 200, "{answer}");
    let id = |i: usize, user: &str| answer["results"][i]["message_ids"][user].as_u64();
    assert_eq!([id(0, "gina"), id(2, "gina"), id(3, "gina"), id(5, "gina")], [Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(id(1, "hank"), Some(1));
    assert!(answer["results"][4].get("message_ids").is_none(), "the plain message has no id: {answer}");
    // Live, in batch order: MESSAGE 1, 2, 3, the plain PUSH, MESSAGE 4.
    for (id, n) in [(1, 1), (2, 3), (3, 4)] {
        assert_eq!(next(&mut live).await, In::Message(id, action::PUSH, json!({ "n": n })));
    }
    assert_eq!(next(&mut live).await, In::Other(action::PUSH, json!({ "n": 5 })));
    assert_eq!(next(&mut live).await, In::Message(4, action::PUSH, json!({ "n": 6 })));
    drop(live);
    // Stored: hank (away) gets his on connect; gina's are all there.
    let mut ws = resume(&server, "hank", None).await;
    assert_eq!(replay(&mut ws).await.0, [(1, json!({ "n": 2 }))]);
    let mut ws = resume(&server, "gina", Some("tablet")).await;
    assert_eq!(ids(&replay(&mut ws).await.0), [1, 2, 3, 4]);
}

/// A durable message goes out live as soon as it is written; its API
/// answer waits for the disk sync (here held back by a 100 ms group-commit
/// pause after the previous sync), and then carries the same id.
#[tokio::test]
async fn a_message_goes_out_live_before_its_answer_waits_for_the_disk_sync() {
    let server = TestServer::start_with(|c| c.inbox.min_sync_interval_us = 100_000).await;
    let mut ws = resume(&server, "lia", None).await;
    assert_eq!(replay(&mut ws).await.0, []);
    durable(&server, "lia", json!({ "n": 1 })).await;
    assert!(matches!(next(&mut ws).await, In::Message(1, _, _)));
    // The sync of message 1 just ran: message 2's waits for the pause.
    let push = server.post("/v1/push", json!({ "users": ["lia"], "persist": true, "payload": { "n": 2 } }));
    tokio::pin!(push);
    let live = tokio::select! {
        biased;
        frame = next(&mut ws) => frame,
        (status, answer) = &mut push => panic!("answered ({status} {answer}) before the live delivery"),
    };
    let In::Message(id, _, payload) = live else { panic!("not a MESSAGE: {live:?}") };
    assert_eq!((id, payload), (2, json!({ "n": 2 })));
    // Delivered without waiting for the sync: the answer is still ~100 ms
    // away (a delivery after the sync would be answered right after it).
    let early = tokio::time::timeout(Duration::from_millis(10), &mut push).await;
    assert!(early.is_err(), "answered together with the live delivery: {early:?}");
    let (status, answer) = push.await;
    assert_eq!((status, &answer["message_ids"]), (200, &json!({ "lia": 2 })), "{answer}");
}

/// The group-commit pause spaces syncs, but `inbox.sync_batch` waiting
/// messages end it early: a burst is not held to one sync per pause.
#[tokio::test]
async fn enough_messages_waiting_end_the_group_commit_pause_early() {
    const PAUSE: Duration = Duration::from_millis(100);
    let server = TestServer::start_with(|c| {
        c.inbox.min_sync_interval_us = PAUSE.as_micros() as u64;
        c.inbox.sync_batch = 4;
    })
    .await;
    // The second one's sync starts the pause (the first sync of a fresh
    // log also writes the zeros it keeps ahead: a dearer reference).
    durable(&server, "mia", json!({ "n": 0 })).await;
    durable(&server, "mia", json!({ "n": 0 })).await;
    let paused = std::time::Instant::now();
    let push = |user: &str| server.post("/v1/push", json!({ "users": [user], "persist": true, "payload": { "n": 1 } }));
    // Three wait: fewer than the batch, so the pause holds them.
    let mut three = Box::pin(futures_util::future::join3(push("mia"), push("noa"), push("oli")));
    let early = tokio::time::timeout(Duration::from_millis(30), &mut three).await;
    assert!(early.is_err(), "answered within the pause with 3 of 4 waiting: {early:?}");
    // The fourth makes the batch: all four are synced and answered now,
    // well before the pause would have ended.
    let ((a, b, c), d) = tokio::join!(three, push("pia"));
    for (status, answer) in [a, b, c, d] {
        assert_eq!(status, 200, "{answer}");
    }
    let answered = paused.elapsed();
    assert!(answered < PAUSE - Duration::from_millis(15), "answered after {answered:?}, not before the pause ended");
}
