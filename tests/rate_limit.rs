//! Per-session inbound frame rate: a client flooding requests meets ERROR
//! `rate_limited` and then close 4004, while other users keep getting their
//! pushes and the node keeps answering.

mod common;

use common::*;
use futures_util::SinkExt;
use pushgate::protocol::{action, close, error_code};
use serde_json::json;

/// 600 PINGs sent at once (defaults: 100 frames/s, bursts of 200, closed
/// past 100 refused): the burst is answered, then ERROR `rate_limited`
/// carrying the request's action and seq, then close 4004; alice, on
/// another connection, receives every push sent meanwhile; /healthz answers.
#[tokio::test]
async fn a_request_flood_is_refused_then_closed_while_others_keep_their_pushes() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut mallory, _) = server.connect("mallory").await;

    let push = |n: u64| {
        let server = &server;
        async move {
            let (status, body) = server.post("/v1/push", json!({ "users": ["alice"], "payload": { "n": n } })).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    push(0).await;
    assert_eq!(recv(&mut alice).await, (action::PUSH, json!({ "n": 0 })));

    for seq in 0..600u64 {
        // The node may close mid-flood; what it answered is read below.
        if mallory.feed(frame(action::PING, json!({ "seq": seq }).to_string().as_bytes())).await.is_err() {
            break;
        }
    }
    let _ = mallory.flush().await;
    push(1).await;
    assert_eq!(recv(&mut alice).await, (action::PUSH, json!({ "n": 1 })), "pushes flow during the flood");

    let (mut pongs, mut refused) = (0, 0);
    let code = loop {
        use futures_util::StreamExt;
        let message = tokio::time::timeout(WAIT, mallory.next()).await.expect("an answer or the close in time");
        match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) => {
                let action = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let body: serde_json::Value = serde_json::from_slice(&bytes[4..]).unwrap();
                match action {
                    action::PONG => {
                        assert_eq!(body["seq"], pongs + refused, "answers in order: {body}");
                        pongs += 1;
                    }
                    action::ERROR => {
                        assert_eq!(body["code"], error_code::RATE_LIMITED, "{body}");
                        assert_eq!(body["action"], action::PING, "{body}");
                        assert_eq!(body["seq"], pongs + refused, "the refused request's seq: {body}");
                        refused += 1;
                    }
                    other => panic!("unexpected frame {other}: {body}"),
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("expected frames then a close, got {other:?}"),
        }
    };
    eprintln!("{pongs} PONGs, {refused} ERROR rate_limited, then close {code}");
    assert!(pongs >= 200, "the burst is served: {pongs}");
    assert!(refused >= 1, "the flood was told to slow down before being closed");
    assert_eq!(code, close::RATE_LIMITED, "then closed with 4004");
    assert_eq!(close::RATE_LIMITED, 4004);

    push(2).await;
    assert_eq!(recv(&mut alice).await, (action::PUSH, json!({ "n": 2 })), "pushes flow after the flood");
    let health = server.http().get(server.api("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // A client that slows down is served again on a new connection.
    let (mut again, _) = server.connect("mallory").await;
    send_json(&mut again, action::PING, json!({ "seq": 1 })).await;
    assert_eq!(recv(&mut again).await.0, action::PONG);
}
