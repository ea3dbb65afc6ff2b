//! ADD_FRIEND and FETCH_INFO across users, devices and restarts.

mod common;

use common::*;
use pushgate::Shutdown;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn friend_request_reaches_every_device_of_the_target() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob_phone, _) = server.connect_device("bob", Some("phone")).await;
    let (mut bob_laptop, _) = server.connect_device("bob", Some("laptop")).await;

    send_json(&mut alice, 110, json!({ "friend": "bob", "message": "hi bob", "seq": 7 })).await;
    let (action, reply) = recv(&mut alice).await;
    assert_eq!(action, 110);
    assert_eq!(reply["status"], "pending");
    assert_eq!(reply["seq"], 7);

    for bob in [&mut bob_phone, &mut bob_laptop] {
        let (action, push) = recv(bob).await;
        assert_eq!(action, 210);
        assert_eq!(push, json!({ "from": "alice", "message": "hi bob" }));
        expect_silence(bob, Duration::from_millis(200)).await;
    }

    // A repeat is idempotent and does not notify again.
    send_json(&mut alice, 110, json!({ "friend": "bob" })).await;
    assert_eq!(recv(&mut alice).await.1["status"], "pending");
    expect_silence(&mut bob_phone, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn mutual_requests_make_friends() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;

    send_json(&mut alice, 110, json!({ "friend": "bob" })).await;
    assert_eq!(recv(&mut alice).await.1["status"], "pending");
    assert_eq!(recv(&mut bob).await.0, 210);

    send_json(&mut bob, 111, json!({})).await;
    let (_, info) = recv(&mut bob).await;
    assert_eq!(info["requests_in"], json!([{ "from": "alice", "message": null }]));

    send_json(&mut bob, 110, json!({ "friend": "alice" })).await;
    assert_eq!(recv(&mut bob).await.1["status"], "friends");
    let (action, accepted) = recv(&mut alice).await;
    assert_eq!(action, 211);
    assert_eq!(accepted["friend"], "bob");

    for (ws, friend) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        send_json(ws, 111, json!({ "seq": 1 })).await;
        let (_, info) = recv(ws).await;
        assert_eq!(info["friends"], json!([friend]));
        assert_eq!(info["requests_in"], json!([]));
        assert_eq!(info["requests_out"], json!([]));
    }

    // Friends see each other's presence.
    send_json(&mut alice, 111, json!({ "user": "bob" })).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!((info["online"].as_bool(), info["sessions"].as_u64()), (Some(true), Some(1)));
    assert_eq!(info["friend"], true);
}

#[tokio::test]
async fn strangers_see_profile_but_not_presence() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (_carol, _) = server.connect("carol").await;
    send_json(&mut alice, 111, json!({ "user": "carol" })).await;
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
    send_json(&mut alice, 110, json!({ "friend": "alice", "seq": 1 })).await;
    let (action, error) = recv(&mut alice).await;
    assert_eq!((action, error["code"].as_str()), (4, Some("self_friend")));
    send_json(&mut alice, 110, json!({ "friend": "bad id with spaces", "seq": 2 })).await;
    let (action, error) = recv(&mut alice).await;
    assert_eq!((action, error["code"].as_str(), error["seq"].as_u64()), (4, Some("invalid_user"), Some(2)));
    send_json(&mut alice, 110, json!({ "seq": 3 })).await;
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
        send_json(&mut alice, 110, json!({ "friend": "bob" })).await;
        recv(&mut alice).await;
        assert_eq!(recv(&mut bob).await.0, 210);
        send_json(&mut bob, 110, json!({ "friend": "alice" })).await;
        assert_eq!(recv(&mut bob).await.1["status"], "friends");
        assert_eq!(recv(&mut alice).await.0, 211);
        send_json(&mut alice, 110, json!({ "friend": "carol" })).await;
        assert_eq!(recv(&mut alice).await.1["status"], "pending");
    }
    server.stop(Shutdown::Immediate).await;

    let server = TestServer::start_config(config).await;
    let (mut alice, _) = server.connect("alice").await;
    send_json(&mut alice, 111, json!({})).await;
    let (_, info) = recv(&mut alice).await;
    assert_eq!(info["friends"], json!(["bob"]));
    assert_eq!(info["requests_out"], json!(["carol"]));
}
