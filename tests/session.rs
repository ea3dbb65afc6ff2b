//! Life of a session: requests and replies, errors that keep the connection,
//! violations that close it with the documented code, liveness, shutdown.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pushgate::Shutdown;
use pushgate::protocol::{action, close};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn fetch_info_round_trip_echoes_seq() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;
    send_json(&mut ws, action::FETCH_INFO, json!({ "seq": 42 })).await;
    let (code, reply) = recv(&mut ws).await;
    assert_eq!(code, action::FETCH_INFO);
    assert_eq!(reply["seq"], 42);
    assert_eq!(reply["user"], "alice");
    assert_eq!(reply["online"], true);
    assert_eq!(reply["sessions"], 1);
    assert_eq!(reply["profile"], serde_json::Value::Null);
    assert_eq!(reply["friends"], json!([]));
}

#[tokio::test]
async fn errors_keep_the_connection_working() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;

    send_json(&mut ws, 777, json!({ "seq": 1 })).await;
    let (code, error) = recv(&mut ws).await;
    assert_eq!(code, action::ERROR);
    assert_eq!(error["code"], "unknown_action");
    assert_eq!(error["action"], 777);
    assert_eq!(error["seq"], 1);

    ws.send(frame(action::FETCH_INFO, b"{not json")).await.unwrap();
    let (code, error) = recv(&mut ws).await;
    assert_eq!(code, action::ERROR);
    assert_eq!(error["code"], "bad_payload");
    assert_eq!(error["action"], action::FETCH_INFO);

    send_json(&mut ws, action::FETCH_INFO, json!({ "user": 5, "seq": 2 })).await;
    let (_, error) = recv(&mut ws).await;
    assert_eq!((error["code"].as_str(), error["seq"].as_u64()), (Some("bad_payload"), Some(2)));

    ws.send(Message::Binary(vec![0, 0].into())).await.unwrap();
    let (code, error) = recv(&mut ws).await;
    assert_eq!(code, action::ERROR);
    assert_eq!(error["code"], "frame_too_short");

    // Still serving.
    send_json(&mut ws, action::FETCH_INFO, json!({ "seq": 3 })).await;
    let (code, reply) = recv(&mut ws).await;
    assert_eq!((code, reply["seq"].as_u64()), (action::FETCH_INFO, Some(3)));
}

#[tokio::test]
async fn app_ping_gets_pong() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;
    send_json(&mut ws, action::PING, json!({ "seq": 9 })).await;
    let (code, pong) = recv(&mut ws).await;
    assert_eq!(code, action::PONG);
    assert_eq!(pong["seq"], 9);
    // An empty payload means {}.
    ws.send(frame(action::PING, b"")).await.unwrap();
    assert_eq!(recv(&mut ws).await.0, action::PONG);
}

#[tokio::test]
async fn text_frame_closes_with_1003() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, close::UNSUPPORTED_DATA);
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let server = TestServer::start_with(|c| c.session.max_message_bytes = 1024).await;
    let (mut ws, _) = server.connect("alice").await;
    ws.send(frame(action::FETCH_INFO, &vec![b' '; 4096])).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, close::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn silent_client_is_dropped_after_idle_timeout() {
    let server = TestServer::start_with(|c| {
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 2;
    })
    .await;
    let (mut silent, _) = server.connect("silent").await;
    let (mut lively, _) = server.connect("lively").await;
    // `lively` keeps reading, so its client answers the server's pings;
    // `silent` is not polled at all, so its pings go unanswered.
    let lively_task = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, lively.next()).await {}
        lively
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(expect_close(&mut silent).await, close::IDLE_TIMEOUT);
    let mut lively = lively_task.await.unwrap();
    send_json(&mut lively, action::PING, json!({})).await;
    assert_eq!(recv(&mut lively).await.0, action::PONG, "an answering client stays connected");
}

#[tokio::test]
async fn expired_token_closes_live_session() {
    let server = TestServer::start_with(|c| {
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 30;
        c.auth.leeway_secs = 0;
    })
    .await;
    let url = format!("{}?token={}", server.ws_url(), mint("alice", None, 2));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(6), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, close::TOKEN_EXPIRED);
}

#[tokio::test]
async fn shutdown_sends_1001_to_every_session() {
    let mut server = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(server.connect(&format!("user{i}")).await.0);
    }
    let readers: Vec<_> =
        clients.into_iter().map(|mut ws| tokio::spawn(async move { expect_close(&mut ws).await })).collect();
    server.stop(Shutdown::Immediate).await;
    for reader in readers {
        assert_eq!(reader.await.unwrap(), close::GOING_AWAY);
    }
    assert!(tokio::net::TcpStream::connect(server.ws_addr).await.is_err(), "listener closed");
}

#[tokio::test]
async fn client_close_gets_a_clean_close_handshake() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;
    ws.close(None).await.unwrap();
    // The server echoes the close, then the stream ends.
    let mut saw_close = false;
    while let Ok(Some(message)) = tokio::time::timeout(WAIT, ws.next()).await {
        if let Ok(Message::Close(_)) = message {
            saw_close = true;
        }
    }
    assert!(saw_close, "server answered the close");
}

#[tokio::test]
async fn garbage_frames_get_errors_and_never_break_the_session() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("fuzzy").await;
    let (mut bystander, _) = server.connect("bystander").await;
    let actions = [
        0u32,
        action::HELLO,
        action::PING,
        action::PONG,
        action::ERROR,
        action::RECONNECT,
        action::ADD_FRIEND,
        action::FETCH_INFO,
        action::PUSH,
        999,
        action::APPLICATION_MIN,
        u32::MAX,
    ];
    let payloads: [&[u8]; 10] = [
        b"",
        b"{",
        b"[]",
        b"null",
        b"{\"seq\":-1}",
        b"{\"seq\":1e99}",
        b"{\"friend\":{\"nested\":[1,2,3]}}",
        b"{\"user\":\"\\u0000\"}",
        &[0xff, 0xfe, 0x00, 0x80],
        b"{\"friend\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
    ];
    let mut expected_replies = 0;
    for code in actions {
        for payload in payloads {
            ws.send(frame(code, payload)).await.unwrap();
            // Everything but a stray PONG is answered.
            if code != action::PONG {
                expected_replies += 1;
            }
        }
    }
    for _ in 0..expected_replies {
        let (code, _) = recv_raw(&mut ws).await;
        let replies = [action::PONG, action::ERROR, action::ADD_FRIEND, action::FETCH_INFO];
        assert!(replies.contains(&code), "reply or ERROR, got {code}");
    }
    send_json(&mut ws, action::PING, json!({ "seq": 77 })).await;
    let (code, pong) = recv(&mut ws).await;
    assert_eq!((code, pong["seq"].as_u64()), (action::PONG, Some(77)), "session still serves");
    send_json(&mut bystander, action::PING, json!({})).await;
    assert_eq!(recv(&mut bystander).await.0, action::PONG, "other sessions unaffected");
}

/// RFC 6455 section 8.1: a close frame whose reason is not UTF-8 is invalid
/// payload data, closed with 1007 (not 1003, which means "text frame" here).
#[tokio::test]
async fn close_reason_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("alice").await;
    let mut payload = close::NORMAL.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xff, 0xfe]);
    // A raw frame: tungstenite would not let us build a non-UTF-8 reason.
    let header = FrameHeader { opcode: OpCode::Control(Control::Close), ..FrameHeader::default() };
    let close_frame = Frame::from_payload(header, payload.into());
    ws.send(Message::Frame(close_frame)).await.unwrap();
    assert_eq!(expect_close(&mut ws).await, close::INVALID_PAYLOAD);
}

/// More than `session.max_per_user` sessions of one user: the oldest gives
/// way to the newest with 4005 SESSION_REPLACED; the others keep working.
#[tokio::test]
async fn the_oldest_session_gives_way_past_the_per_user_limit() {
    let server = TestServer::start_with(|c| c.session.max_per_user = 2).await;
    let (mut first, _) = server.connect_device("alice", Some("old-phone")).await;
    let (mut second, _) = server.connect_device("alice", Some("tablet")).await;
    let (mut bob, _) = server.connect("bob").await;
    // Within the limit nothing is closed.
    send_json(&mut first, action::PING, json!({ "seq": 1 })).await;
    assert_eq!(recv(&mut first).await.0, action::PONG);
    let (mut third, _) = server.connect_device("alice", Some("new-phone")).await;
    assert_eq!(expect_close(&mut first).await, close::SESSION_REPLACED);
    for ws in [&mut second, &mut third, &mut bob] {
        send_json(ws, action::PING, json!({ "seq": 2 })).await;
        assert_eq!(recv(ws).await.0, action::PONG, "the newer sessions and other users keep working");
    }
    let (_, listing) = server.get("/v1/users/alice/sessions").await;
    let devices: Vec<_> = listing["sessions"].as_array().unwrap().iter().map(|s| s["device"].clone()).collect();
    assert_eq!(devices.len(), 2, "{listing}");
    assert!(!devices.contains(&json!("old-phone")), "{listing}");
}
