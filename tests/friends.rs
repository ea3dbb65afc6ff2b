//! ADD_FRIEND and FETCH_INFO across users, devices and restarts.

mod common;

use common::*;
use pushgate::Shutdown;
use pushgate::protocol::action;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn friend_request_reaches_every_device_of_the_target() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob_phone, _) = server.connect_device("bob", Some("phone")).await;
    let (mut bob_laptop, _) = server.connect_device("bob", Some("laptop")).await;

    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bob", "message": "hi bob", "seq": 7 })).await;
    let (code, reply) = recv(&mut alice).await;
    assert_eq!(code, action::ADD_FRIEND);
    assert_eq!(reply["status"], "pending");
    assert_eq!(reply["seq"], 7);

    for bob in [&mut bob_phone, &mut bob_laptop] {
        let (code, push) = recv(bob).await;
        assert_eq!(code, action::FRIEND_REQUEST);
        assert_eq!(push, json!({ "from": "alice", "message": "hi bob" }));
        expect_silence(bob, Duration::from_millis(200)).await;
    }

    // A repeat is idempotent and does not notify again.
    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bob" })).await;
    assert_eq!(recv(&mut alice).await.1["status"], "pending");
    expect_silence(&mut bob_phone, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn mutual_requests_make_friends() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;

    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bob" })).await;
    assert_eq!(recv(&mut alice).await.1["status"], "pending");
    assert_eq!(recv(&mut bob).await.0, action::FRIEND_REQUEST);

    send_json(&mut bob, action::FETCH_INFO, json!({})).await;
    let (_, info) = recv(&mut bob).await;
    assert_eq!(info["requests_in"], json!([{ "from": "alice", "message": null }]));

    send_json(&mut bob, action::ADD_FRIEND, json!({ "friend": "alice" })).await;
    assert_eq!(recv(&mut bob).await.1["status"], "friends");
    let (code, accepted) = recv(&mut alice).await;
    assert_eq!(code, action::FRIEND_ACCEPTED);
    assert_eq!(accepted["friend"], "bob");

    for (ws, friend) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        send_json(ws, action::FETCH_INFO, json!({ "seq": 1 })).await;
        let (_, info) = recv(ws).await;
        assert_eq!(info["friends"], json!([friend]));
        assert_eq!(info["requests_in"], json!([]));
        assert_eq!(info["requests_out"], json!([]));
    }

    // Friends see each other's presence.
    send_json(&mut alice, action::FETCH_INFO, json!({ "user": "bob" })).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!((info["online"].as_bool(), info["sessions"].as_u64()), (Some(true), Some(1)));
    assert_eq!(info["friend"], true);
}

#[tokio::test]
async fn strangers_see_profile_but_not_presence() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (_carol, _) = server.connect("carol").await;
    send_json(&mut alice, action::FETCH_INFO, json!({ "user": "carol" })).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!(info["user"], "carol");
    assert_eq!(info["online"], serde_json::Value::Null);
    assert_eq!(info["sessions"], serde_json::Value::Null);
    assert_eq!(info["friend"], false);
    assert!(info.get("friends").is_none(), "relationships are private");
}

#[tokio::test]
async fn adding_yourself_or_an_invalid_id_is_an_error() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "alice", "seq": 1 })).await;
    let (code, error) = recv(&mut alice).await;
    assert_eq!((code, error["code"].as_str()), (action::ERROR, Some("self_friend")));
    send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bad id with spaces", "seq": 2 })).await;
    let (code, error) = recv(&mut alice).await;
    assert_eq!((code, error["code"].as_str(), error["seq"].as_u64()), (action::ERROR, Some("invalid_user"), Some(2)));
    send_json(&mut alice, action::ADD_FRIEND, json!({ "seq": 3 })).await;
    assert_eq!(recv(&mut alice).await.1["code"], "bad_payload");
}

#[tokio::test]
async fn friendships_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path().to_path_buf());
    let mut server = TestServer::start_config(config.clone()).await;
    {
        let (mut alice, _) = server.connect("alice").await;
        let (mut bob, _) = server.connect("bob").await;
        send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "bob" })).await;
        recv(&mut alice).await;
        assert_eq!(recv(&mut bob).await.0, action::FRIEND_REQUEST);
        send_json(&mut bob, action::ADD_FRIEND, json!({ "friend": "alice" })).await;
        assert_eq!(recv(&mut bob).await.1["status"], "friends");
        assert_eq!(recv(&mut alice).await.0, action::FRIEND_ACCEPTED);
        send_json(&mut alice, action::ADD_FRIEND, json!({ "friend": "carol" })).await;
        assert_eq!(recv(&mut alice).await.1["status"], "pending");
    }
    server.stop(Shutdown::Immediate).await;

    let server = TestServer::start_config(config).await;
    let (mut alice, _) = server.connect("alice").await;
    send_json(&mut alice, action::FETCH_INFO, json!({})).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!(info["friends"], json!(["bob"]));
    assert_eq!(info["requests_out"], json!(["carol"]));
}

/// A push must never overtake a reply produced before it. Alice pipelines
/// 31 ADD_FRIENDs in one write; as soon as her first one (to bob) is stored,
/// bob asks her back, which pushes FRIEND_ACCEPTED to her while her session
/// is still answering the rest of the burst. She must read "pending" for
/// her request to bob before she reads that bob accepted it. The race is
/// run in many trials (fresh users each) because one trial may miss the
/// window in which the reply waits in the session's write buffer.
#[tokio::test]
async fn a_push_never_overtakes_a_reply_produced_before_it() {
    use futures_util::SinkExt;
    let server = TestServer::start().await;
    for trial in 0..16 {
        let (alice_id, bob_id) = (format!("alice-{trial}"), format!("bob-{trial}"));
        let (mut alice, _) = server.connect(&alice_id).await;
        let (mut bob, _) = server.connect(&bob_id).await;

        let request = |friend: &str, seq: u64| {
            frame(action::ADD_FRIEND, json!({ "friend": friend, "seq": seq }).to_string().as_bytes())
        };
        alice.feed(request(&bob_id, 1)).await.unwrap();
        for seq in 2..=31 {
            alice.feed(request(&format!("other-{trial}-{seq}"), seq)).await.unwrap();
        }
        alice.flush().await.unwrap(); // all 31 requests in one write

        // Bob asks back the moment alice's request shows up in his requests.
        loop {
            send_json(&mut bob, action::FETCH_INFO, json!({})).await;
            let info = loop {
                match recv(&mut bob).await {
                    (action::FETCH_INFO, info) => break info,
                    (action::FRIEND_REQUEST, _) => continue,
                    other => panic!("trial {trial}: bob got {other:?}"),
                }
            };
            if info["requests_in"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
        }
        send_json(&mut bob, action::ADD_FRIEND, json!({ "friend": alice_id, "seq": 1 })).await;
        let reply = loop {
            match recv(&mut bob).await {
                (action::ADD_FRIEND, reply) => break reply,
                (action::FRIEND_REQUEST, _) => continue,
                other => panic!("trial {trial}: bob got {other:?}"),
            }
        };
        assert_eq!(reply["status"], "friends", "trial {trial}");

        // Alice reads her 31 replies and the push, in the order they arrive.
        let mut order = Vec::new();
        for _ in 0..32 {
            let (code, payload) = recv(&mut alice).await;
            order.push((code, payload["seq"].as_u64()));
            if code == action::ADD_FRIEND && payload["seq"] == 1 {
                assert_eq!(payload["status"], "pending", "trial {trial}");
            }
        }
        let reply_1 = order.iter().position(|&e| e == (action::ADD_FRIEND, Some(1))).expect("reply to seq 1");
        let accepted = order.iter().position(|&(code, _)| code == action::FRIEND_ACCEPTED).expect("FRIEND_ACCEPTED");
        assert!(
            reply_1 < accepted,
            "trial {trial}: FRIEND_ACCEPTED (frame {accepted}) overtook the reply to seq 1 (frame {reply_1}): {order:?}"
        );
    }
}
