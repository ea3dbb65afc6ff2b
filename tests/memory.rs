//! Memory per session stays bounded after large traffic: one large frame
//! each way must not pin tungstenite's grown buffers for the session's life
//! (the README's sizing figure must hold after traffic, not only fresh).
//! The gateway runs as its own process so its RSS is its own.

mod common;

use common::process::GatewayProcess;
use common::*;
use futures_util::{SinkExt, StreamExt};
use pushgate::protocol::action;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SESSIONS: usize = 300;
const LARGE: usize = 60_000;

async fn start_gateway(dir: &std::path::Path) -> GatewayProcess {
    let gateway = GatewayProcess::spawn(dir, "[session]\nheartbeat_secs = 25\n", None);
    gateway.wait_listening().await;
    gateway
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn one_large_frame_each_way_does_not_pin_memory_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(dir.path()).await;
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        let mut request = format!("ws://{}/ws", gateway.ws).into_client_request().unwrap();
        let token = mint(&format!("mem{i}"), None, 3600);
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
        assert_eq!(recv(&mut ws).await.0, action::HELLO);
        clients.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = rss_kib(gateway.child.id());

    // One large broadcast to everyone, one large request from everyone.
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(vec![7u8; LARGE])
    };
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/broadcast", gateway.api))
        .bearer_auth(API_KEY)
        .json(&json!({ "action": 1000, "payload_b64": b64 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let pad = "x".repeat(LARGE);
    for ws in &mut clients {
        let (got, payload) = recv_raw(ws).await;
        assert_eq!((got, payload.len()), (1000, LARGE));
        ws.send(frame(action::FETCH_INFO, json!({ "seq": 1, "pad": pad }).to_string().as_bytes())).await.unwrap();
    }
    for ws in &mut clients {
        let (got, reply) = recv(ws).await;
        assert_eq!((got, reply["seq"].as_u64()), (action::FETCH_INFO, Some(1)));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_kib(gateway.child.id());
    let per_session = (after.saturating_sub(fresh) * 1024) / SESSIONS as u64;
    eprintln!("RSS fresh {fresh} KiB, after large frames {after} KiB: +{per_session} B per session");
    // Before compaction this was ~119 KiB per session; allow allocator slack.
    assert!(per_session < 16 * 1024, "each session kept {per_session} B after one large frame each way");

    // And every session still works.
    for ws in &mut clients {
        ws.send(frame(action::PING, b"{}")).await.unwrap();
        assert_eq!(recv(ws).await.0, action::PONG);
    }
    for mut ws in clients {
        let _ = ws.close(None).await;
        let _ = ws.next().await;
    }
}
