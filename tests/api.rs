//! The internal API with a real HTTP client against a real server, and real
//! WebSocket clients on the receiving end.

mod common;

use base64::Engine;
use common::*;
use futures_util::{StreamExt, stream};
use pushgate::protocol::{action, close};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn push_reaches_both_devices_exactly_once_with_exact_bytes() {
    let server = TestServer::start().await;
    let (mut phone, _) = server.connect_device("bob", Some("phone")).await;
    let (mut laptop, _) = server.connect_device("bob", Some("laptop")).await;
    let (mut alice, _) = server.connect("alice").await;

    let (status, body) =
        server.post("/v1/push", json!({ "users": ["bob", "bob"], "payload": { "text": "hi", "n": 1 } })).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "delivered": 2, "online_users": 1, "offline_users": [], "dropped": 0,
            "forwarded_users": 0, "unknown_users": []
        })
    );
    for ws in [&mut phone, &mut laptop] {
        let (code, payload) = recv_raw(ws).await;
        assert_eq!(code, action::PUSH);
        assert_eq!(payload, br#"{"n":1,"text":"hi"}"#.to_vec());
        expect_silence(ws, Duration::from_millis(200)).await;
    }
    expect_silence(&mut alice, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn binary_payload_b64_arrives_byte_exact() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("bob").await;
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, body) = server.post("/v1/push", json!({ "users": ["bob"], "action": 1234, "payload_b64": b64 })).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    let (action, payload) = recv_raw(&mut ws).await;
    assert_eq!(action, 1234);
    assert_eq!(payload, bytes);
}

#[tokio::test]
async fn offline_users_are_reported_in_mixed_pushes() {
    let server = TestServer::start().await;
    let (mut bob, _) = server.connect("bob").await;
    let (status, body) = server.post("/v1/push", json!({ "users": ["ghost", "bob", "nobody"], "payload": 1 })).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "delivered": 1, "online_users": 1, "offline_users": ["ghost", "nobody"], "dropped": 0,
            "forwarded_users": 0, "unknown_users": []
        })
    );
    assert_eq!(recv_raw(&mut bob).await, (action::PUSH, b"1".to_vec()));
}

#[tokio::test]
async fn batch_push_delivers_distinct_messages() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;
    let (status, body) = server
        .post(
            "/v1/push/batch",
            json!({ "messages": [
                { "users": ["alice"], "payload": { "to": "alice" } },
                { "users": ["bob", "ghost"], "action": 1001, "payload": { "to": "bob" } },
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"], 2);
    assert_eq!(body["results"][1]["offline_users"], json!(["ghost"]));
    assert_eq!(recv(&mut alice).await, (action::PUSH, json!({ "to": "alice" })));
    assert_eq!(recv(&mut bob).await, (1001, json!({ "to": "bob" })));

    // One bad message fails the batch before anything is sent.
    let (status, _) = server
        .post(
            "/v1/push/batch",
            json!({ "messages": [{ "users": ["alice"] }, { "users": ["bob"], "action": action::RECONNECT }] }),
        )
        .await;
    assert_eq!(status, 422);
    expect_silence(&mut alice, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn broadcast_reaches_everyone_while_unicast_still_completes() {
    const N: usize = 2000;
    let server = TestServer::start_with(|c| {
        c.server.max_connections = N + 10;
        // Every client is on 127.0.0.1, 64 handshakes at a time.
        c.server.max_connections_per_ip = N as u32 + 10;
        c.server.max_handshakes_per_ip = 64;
    })
    .await;
    let server = &server;
    let mut clients: Vec<Ws> = stream::iter(0..N)
        .map(|i| async move { server.connect(&format!("u{i}")).await.0 })
        .buffer_unordered(64)
        .collect()
        .await;
    let (mut target, _) = server.connect("target").await;

    let broadcast = server.post("/v1/broadcast", json!({ "action": 201, "payload": { "all": true } }));
    let unicast = async {
        let (status, body) = server.post("/v1/push", json!({ "users": ["target"], "payload": "just you" })).await;
        assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    };
    let ((status, body), ()) = tokio::join!(broadcast, unicast);
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "delivered": N + 1, "dropped": 0, "forwarded_nodes": 0, "unreachable_nodes": 0 }));

    // The target gets both, in whichever order they were queued.
    let mut got = vec![recv(&mut target).await, recv(&mut target).await];
    got.sort_by_key(|(a, _)| *a);
    assert_eq!(got, vec![(action::PUSH, json!("just you")), (201, json!({ "all": true }))]);
    let received: usize = stream::iter(clients.iter_mut())
        .map(|ws| async move { usize::from(recv(ws).await == (201, json!({ "all": true }))) })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(received, N, "every session got the broadcast exactly");
}

#[tokio::test]
async fn slow_consumer_is_dropped_and_closed_without_harming_others() {
    let server = TestServer::start_with(|c| c.session.queue_capacity = 4).await;
    let (mut slow, _) = server.connect("slow").await;
    let (mut fine, _) = server.connect("fine").await;
    let big = "x".repeat(60_000);
    // The slow client never reads: the kernel buffers fill, the session's
    // write stalls, its queue fills, and further pushes are dropped.
    let mut dropped = 0;
    for _ in 0..2000 {
        let (status, body) = server.post("/v1/push", json!({ "users": ["slow"], "payload": big })).await;
        assert_eq!(status, 200);
        dropped += body["dropped"].as_u64().unwrap();
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0, "queue overflow reported as dropped");
    // Others are unaffected.
    let (status, body) = server.post("/v1/push", json!({ "users": ["fine"], "payload": "ok" })).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(recv(&mut fine).await, (action::PUSH, json!("ok")));
    // Once the slow client reads, it gets what was queued and then 4001.
    assert_eq!(expect_close(&mut slow).await, close::SLOW_CONSUMER);
    let metrics = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let value = metric(&text, "pushgate_slow_consumer_disconnects_total", &[]);
    assert!(value >= 1.0, "slow-consumer disconnect counted");
}

/// Large pushes to a client that stops reading are bounded by bytes, not
/// only by frame count: with room for 10,000 frames, 64 MB of pushes would
/// pile up in memory without `queue_max_bytes`. With it, the session is
/// closed as a slow consumer once its backlog passes 256 KiB beyond what
/// the kernel buffers hold, and other users are unaffected.
#[tokio::test]
async fn a_slow_client_backlog_is_bounded_in_bytes() {
    let server = TestServer::start_with(|c| {
        c.session.queue_capacity = 10_000;
        c.session.queue_max_bytes = 256 * 1024;
    })
    .await;
    let (mut slow, _) = server.connect("slow").await;
    let (mut fine, _) = server.connect("fine").await;
    let big = "x".repeat(60_000);
    let mut pushed = 0;
    let mut dropped = 0;
    while dropped == 0 && pushed < 1000 {
        let (status, body) = server.post("/v1/push", json!({ "users": ["slow"], "payload": big })).await;
        assert_eq!(status, 200);
        dropped += body["dropped"].as_u64().unwrap();
        pushed += 1;
    }
    assert!(dropped > 0, "{pushed} pushes of 60 KB (60 MB) were all queued: no byte bound");
    let (status, body) = server.post("/v1/push", json!({ "users": ["fine"], "payload": "ok" })).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(recv(&mut fine).await, (action::PUSH, json!("ok")));
    // What was accepted before the bound still arrives whole, then 4001.
    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next()).await.expect("frames in time") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(frame))) => {
                assert_eq!(frame.len(), 4 + big.len() + 2, "a whole JSON string payload");
                received += 1;
            }
            Some(Ok(Message::Close(Some(close)))) => break u16::from(close.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, close::SLOW_CONSUMER);
    // The overflow closes the session at once (4001 tells the client to
    // resync): what was written arrives whole, what still waited in its
    // queue is dropped with the session.
    assert!(received > 0 && received < pushed, "{received} of {pushed} arrived");
}

/// A client that stops reading is closed as a slow consumer as soon as its
/// queue overflows, even while the session is blocked writing to it: the
/// session leaves the listing and the metric counts it right away, not
/// `write_timeout_ms` later as a write timeout.
#[tokio::test]
async fn an_overflow_closes_a_stalled_session_at_once_and_is_counted() {
    let server = TestServer::start_with(|c| {
        c.session.queue_capacity = 4;
        c.session.write_timeout_ms = 30_000;
    })
    .await;
    let (_stalled, _) = server.connect("stalled").await;
    let before = {
        let text = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
        metric(&text.text().await.unwrap(), "pushgate_slow_consumer_disconnects_total", &[])
    };
    let big = "x".repeat(60_000);
    let mut dropped = 0;
    for _ in 0..2000 {
        let (_, body) = server.post("/v1/push", json!({ "users": ["stalled"], "payload": big })).await;
        dropped += body["dropped"].as_u64().unwrap();
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0);
    let mut gone = false;
    for _ in 0..60 {
        let (_, listing) = server.get("/v1/users/stalled/sessions").await;
        if listing["sessions"].as_array().is_some_and(|s| s.is_empty()) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the overflowed session is still listed 3 s later (write timeout is 30 s)");
    let text = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
    let after = metric(&text.text().await.unwrap(), "pushgate_slow_consumer_disconnects_total", &[]);
    assert!(after > before, "counted as a slow consumer: {before} -> {after}");
}

/// Pushes to an idle session are written straight to its socket; once the
/// client stops reading, a write is taken in part, the rest is carried by
/// the session and later pushes queue behind it. Whatever path each frame
/// took, the client must get every one whole and in push order.
#[tokio::test]
async fn pushes_to_a_backed_up_client_arrive_whole_and_in_order() {
    const N: usize = 300;
    const SIZE: usize = 40_000;
    let server = TestServer::start_with(|c| {
        c.session.queue_capacity = N;
        c.session.queue_max_bytes = N * SIZE * 2;
    })
    .await;
    let (mut ws, _) = server.connect("reader").await;
    let body = |i: usize| -> Vec<u8> { (0..SIZE).map(|j| ((i * 31 + j) % 251) as u8).collect() };
    // 12 MB, more than the loopback socket buffers hold: the client reads
    // nothing until every push has been accepted.
    for i in 0..N {
        let b64 = base64::engine::general_purpose::STANDARD.encode(body(i));
        let (status, answer) = server.post("/v1/push", json!({ "users": ["reader"], "payload_b64": b64 })).await;
        assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "push {i}: {answer}");
    }
    for i in 0..N {
        let (code, payload) = recv_raw(&mut ws).await;
        assert_eq!(code, action::PUSH);
        assert!(payload == body(i), "frame {i} arrived torn or out of order");
    }
    send_json(&mut ws, action::PING, json!({})).await;
    assert_eq!(recv(&mut ws).await.0, action::PONG, "the session still answers requests afterwards");
}

/// The internal API holds at most `api.max_connections` connections: one
/// more gets a JSON 503 at once, and a connection that never sends a request
/// head is closed after `api.idle_timeout_ms`, freeing its slot.
#[tokio::test]
async fn api_connections_are_bounded_and_silent_ones_time_out() {
    let server = TestServer::start_with(|c| {
        c.api.max_connections = 2;
        c.api.idle_timeout_ms = 500;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(server.api_addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = raw_http(server.api_addr, "GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "at_capacity");
    assert!(refused.header("Retry-After").is_some());

    // The silent connections are closed by the server...
    for stream in &mut silent {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "silent API connection closed: {read:?}");
    }
    // ...and their slots serve requests again (a slot frees as its task
    // ends, a moment after the close the client saw).
    let mut status = 0;
    for _ in 0..20 {
        let ok = raw_http(server.api_addr, "GET /healthz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n").await;
        status = ok.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn kick_closes_with_4002_and_listing_shows_real_client() {
    let server = TestServer::start().await;
    let (mut phone, hello) = server.connect_device("bob", Some("phone")).await;
    let (mut laptop, _) = server.connect_device("bob", Some("laptop")).await;
    let local = match phone.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => unreachable!(),
    };

    let (status, listing) = server.get("/v1/users/bob/sessions").await;
    assert_eq!(status, 200);
    let sessions = listing["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let phone_entry = sessions.iter().find(|s| s["device"] == "phone").expect("phone listed");
    assert_eq!(phone_entry["remote_addr"], local.to_string());
    assert_eq!(phone_entry["user_agent"], "pushgate-tests/1.0");
    assert_eq!(phone_entry["session_id"], hello["session_id"]);
    assert!(phone_entry["connected_at"].as_u64().unwrap() > 1_700_000_000_000);

    let session_id = hello["session_id"].as_str().unwrap();
    let response = server.http().delete(server.api(&format!("/v1/sessions/{session_id}"))).bearer_auth(API_KEY);
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "closed": 1 }));
    assert_eq!(expect_close(&mut phone).await, close::KICKED);

    let response =
        server.http().delete(server.api("/v1/users/bob/sessions")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "closed": 1, "forwarded_nodes": 0, "unreachable_nodes": 0 })
    );
    assert_eq!(expect_close(&mut laptop).await, close::KICKED);

    // Ids name their node and run: the same number under another node, or
    // an id of an earlier run of this node, names nothing here.
    let (node, rest) = session_id.split_once('.').unwrap();
    let (incarnation, n) = rest.split_once('.').unwrap();
    for other in
        [format!("elsewhere.{incarnation}.{n}"), format!("{node}.0.{n}"), format!("{node}.{incarnation}.999999")]
    {
        let response = server.http().delete(server.api(&format!("/v1/sessions/{other}"))).bearer_auth(API_KEY);
        assert_eq!(response.send().await.unwrap().status(), 404, "{other}");
    }
    for garbage in ["999999", "a.b", "node.z.-1"] {
        let response = server.http().delete(server.api(&format!("/v1/sessions/{garbage}"))).bearer_auth(API_KEY);
        assert_eq!(response.send().await.unwrap().status(), 400, "{garbage}");
    }
}

#[tokio::test]
async fn profiles_round_trip_and_show_in_fetch_info() {
    let server = TestServer::start_with(|c| c.api.max_profile_bytes = 256).await;
    let put =
        |body: Value| server.http().put(server.api("/v1/users/alice/profile")).bearer_auth(API_KEY).json(&body).send();
    assert_eq!(server.get("/v1/users/alice/profile").await.0, 404);
    let response = put(json!({ "name": "Alice", "avatar": "a.png" })).await.unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = server.get("/v1/users/alice/profile").await;
    assert_eq!((status, &body["profile"]["name"]), (200, &json!("Alice")));
    assert_eq!(put(json!([1, 2])).await.unwrap().status(), 400);
    assert_eq!(put(json!({ "bio": "x".repeat(300) })).await.unwrap().status(), 413);

    let (mut bob, _) = server.connect("bob").await;
    send_json(&mut bob, action::FETCH_INFO, json!({ "user": "alice" })).await;
    let (_, info) = recv(&mut bob).await;
    assert_eq!(info["profile"], json!({ "name": "Alice", "avatar": "a.png" }));
}

#[tokio::test]
async fn every_error_status() {
    let server = TestServer::start_with(|c| {
        c.api.max_body_bytes = 4096;
        c.api.max_users_per_push = 3;
    })
    .await;
    let http = server.http();
    let expect = |status: u16, code: &'static str| {
        move |(s, body): (u16, Value)| {
            assert_eq!(s, status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    };
    // 401: no key, wrong key.
    let r = http.post(server.api("/v1/push")).json(&json!({ "users": ["a"] })).send().await.unwrap();
    expect(401, "unauthorized")((r.status().as_u16(), r.json().await.unwrap()));
    let r = http.get(server.api("/metrics")).bearer_auth("wrong-key-wrong-key-wrong").send().await.unwrap();
    expect(401, "unauthorized")((r.status().as_u16(), r.json().await.unwrap()));
    // 400: not JSON, wrong shape, bad user id, both payload forms.
    let r = http.post(server.api("/v1/push")).bearer_auth(API_KEY).body("{nope").send().await.unwrap();
    expect(400, "bad_request")((r.status().as_u16(), r.json().await.unwrap()));
    expect(400, "bad_request")(server.post("/v1/push", json!({ "users": "alice" })).await);
    expect(400, "bad_request")(server.post("/v1/push", json!({ "users": ["bad id"] })).await);
    expect(400, "bad_request")(server.post("/v1/push", json!({ "users": [] })).await);
    expect(400, "bad_request")(
        server.post("/v1/push", json!({ "users": ["a"], "payload": 1, "payload_b64": "AA==" })).await,
    );
    // 413: body, users, payload larger than clients accept.
    expect(413, "body_too_large")(
        server.post("/v1/push", json!({ "users": ["a"], "payload": "x".repeat(5000) })).await,
    );
    expect(413, "too_many_users")(server.post("/v1/push", json!({ "users": ["a", "b", "c", "d"] })).await);
    // 422: actions outside the push range.
    for code in [0, action::ERROR, action::ADD_FRIEND, 199, 300, 999] {
        expect(422, "invalid_action")(server.post("/v1/push", json!({ "users": ["a"], "action": code })).await);
        expect(422, "invalid_action")(server.post("/v1/broadcast", json!({ "action": code })).await);
    }
    // 404: unknown route.
    expect(404, "not_found")(server.get("/v1/nothing-here").await);
    // Health probes need no key.
    assert_eq!(http.get(server.api("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(server.api("/readyz")).send().await.unwrap().status(), 200);
}

/// During a drain, readiness is false, but users still connected here keep
/// getting their pushes until their session is drained: no other node can
/// reach them before they reconnect (proto-spec: "Drain").
#[tokio::test]
async fn a_draining_node_still_delivers_to_its_remaining_sessions() {
    let mut server = TestServer::start_with(|c| {
        c.server.drain_window_ms = 4000;
        c.server.reconnect_hint_max_ms = 0;
    })
    .await;
    let (mut first, _) = server.connect("first").await;
    let (mut second, _) = server.connect("second").await;
    let api = server.api("");
    let stopper = tokio::spawn(async move { server.stop(pushgate::Shutdown::Drain).await });
    let http = reqwest::Client::new();
    let mut ready = true;
    for _ in 0..100 {
        let r = http.get(format!("{api}/readyz")).send().await.unwrap();
        if r.status() == 503 {
            ready = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ready, "readiness turns false at the start of the drain");
    // Two sessions over 4 s: the first is drained at once, the second at
    // about 2 s. Whichever is still here takes the push.
    let r = http
        .post(format!("{api}/v1/push"))
        .bearer_auth(API_KEY)
        .json(&json!({ "users": ["first", "second"], "payload": "still here" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "pushes are served during a drain");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["delivered"], 1, "{body}");
    let mut got_push = 0;
    for ws in [&mut first, &mut second] {
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("frame or close in time") {
                Some(Ok(Message::Binary(b))) if b[..4] == action::PUSH.to_be_bytes() => got_push += 1,
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(u16::from(frame.code), close::SERVICE_RESTART);
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(got_push, 1, "the session still on the node got the push before its drain close");
    stopper.await.unwrap();
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let server = TestServer::start().await;
    let scrape = || async {
        let r = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
        text
    };
    let before = scrape().await;
    let (mut ws, _) = server.connect("alice").await;
    send_json(&mut ws, action::FETCH_INFO, json!({})).await;
    recv(&mut ws).await;
    server.post("/v1/push", json!({ "users": ["alice"], "payload": 1 })).await;
    recv(&mut ws).await;
    let after = scrape().await;
    for (name, labels) in [
        ("pushgate_pushes_total", &[][..]),
        ("pushgate_deliveries_total", &[][..]),
        ("pushgate_frames_in_total", &[("action", "FETCH_INFO")][..]),
        ("pushgate_frames_out_total", &[("action", "PUSH")][..]),
        ("pushgate_push_enqueue_seconds_count", &[][..]),
        ("pushgate_handshakes_total", &[("outcome", "accepted")][..]),
    ] {
        assert!(metric(&after, name, labels) > metric(&before, name, labels), "{name} {labels:?} moved");
    }
    assert!(after.contains("pushgate_push_enqueue_seconds_bucket"), "enqueue latency is a histogram");
    assert!(metric(&after, "pushgate_connections", &[]) >= 1.0);
}

/// The value of one sample (0 when absent), summed over other labels.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn openapi_document_and_router_agree() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> =
        pushgate::api::ROUTES.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    served.sort();
    assert_eq!(documented, served, "router table and openapi.json list the same routes");

    // And the live server really serves each one (not the 404 fallback).
    let server = TestServer::start().await;
    for (method, path) in &documented {
        let path = path.replace("{id}", "alice").replace("{session_id}", "1");
        let request = server
            .http()
            .request(method.parse().unwrap(), server.api(&path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body("{}");
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert!(!(status == 404 && body.contains("no such route")), "{method} {path} is routed");
        assert_ne!(status, 405, "{method} {path} is routed for its method");
    }
}
