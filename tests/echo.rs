//! `/echo`: same type, same bytes, proper close; off unless configured.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pushgate::protocol::close;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[tokio::test]
async fn echo_answers_text_and_binary_with_the_same_type_and_bytes() {
    let server = TestServer::start_with(|c| c.server.echo = true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/echo", server.ws_addr)).await.unwrap();
    let binary: Vec<u8> = (0..=255u8).collect();
    for message in [Message::Text("héllo, wörld".into()), Message::Binary(binary.into()), Message::Text("".into())] {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(b"p".to_vec().into()));
    ws.close(Some(CloseFrame { code: close::NORMAL.into(), reason: "done".into() })).await.unwrap();
    let close = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(close, Message::Close(Some(f)) if u16::from(f.code) == close::NORMAL), "close echoed");
}

#[tokio::test]
async fn echo_is_off_by_default() {
    let server = TestServer::start().await;
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/echo", "")).await;
    assert_eq!(response.status, 404);
}
