//! Rolling restarts without reconnect storms: SIGTERM's drain, and
//! admission control for the reconnect burst that follows.

mod common;

use common::*;
use futures_util::StreamExt;
use pushgate::Shutdown;
use pushgate::protocol::{action, close};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(Debug)]
struct Seen {
    hint_after_ms: Option<u64>,
    hint_at: Option<Duration>,
    close_code: Option<u16>,
    close_at: Option<Duration>,
}

#[tokio::test]
async fn drain_spreads_reconnect_hints_and_1012_closes_over_the_window() {
    const N: usize = 30;
    let mut server = TestServer::start_with(|c| {
        c.server.drain_window_ms = 2000;
        c.server.reconnect_hint_max_ms = 5000;
        c.server.shutdown_timeout_ms = 3000;
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(server.connect(&format!("d{i}")).await.0);
    }
    let t0 = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seen = Seen { hint_after_ms: None, hint_at: None, close_code: None, close_at: None };
                while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    match message {
                        Message::Binary(b) if b.starts_with(&action::RECONNECT.to_be_bytes()) => {
                            let hint: serde_json::Value = serde_json::from_slice(&b[4..]).unwrap();
                            seen.hint_after_ms = hint["after_ms"].as_u64();
                            seen.hint_at = Some(t0.elapsed());
                        }
                        Message::Close(frame) => {
                            seen.close_code = frame.map(|f| u16::from(f.code));
                            seen.close_at = Some(t0.elapsed());
                        }
                        _ => {}
                    }
                }
                seen
            })
        })
        .collect();

    let (ws_addr, readyz, token) = (server.ws_addr, server.api("/readyz"), server.token("late"));
    let stopper = tokio::spawn(async move {
        server.stop(Shutdown::Drain).await;
        t0.elapsed()
    });

    // Readiness turns false and new upgrades are refused during the drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = reqwest::get(&readyz).await.unwrap();
    assert_eq!(ready.status(), 503, "readiness is false while draining");
    let extra = format!("Authorization: Bearer {token}\r\n");
    let refused = raw_http(ws_addr, &upgrade_request(ws_addr, "/ws", &extra)).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "draining");
    assert!(refused.header("retry-after").is_some());

    let exited_after = stopper.await.unwrap();
    assert!(exited_after < Duration::from_secs(6), "process ended within the deadline: {exited_after:?}");

    let mut close_times = Vec::new();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert_eq!(seen.close_code, Some(close::SERVICE_RESTART), "{seen:?}");
        let after_ms = seen.hint_after_ms.expect("RECONNECT hint before the close");
        assert!(after_ms <= 5000, "{seen:?}");
        assert!(seen.hint_at.unwrap() <= seen.close_at.unwrap());
        close_times.push(seen.close_at.unwrap());
    }
    close_times.sort();
    let first = close_times[0];
    let last = close_times[N - 1];
    assert!(last - first >= Duration::from_millis(1200), "closes spread over the window: {first:?}..{last:?}");
    let late = close_times.iter().filter(|t| **t >= Duration::from_millis(1000)).count();
    assert!(late >= N / 4, "not all in the first instant: {late} of {N} after 1 s");
}

#[tokio::test]
async fn upgrade_bursts_beyond_the_rate_get_503_while_admitted_clients_work() {
    let server = TestServer::start_with(|c| {
        c.server.upgrade_rate_per_sec = 1.0;
        c.server.upgrade_burst = 3;
    })
    .await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let url = format!("{}?token={}", server.ws_url(), server.token(&format!("r{i}")));
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => admitted.push(ws),
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 503);
                let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry >= 1);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!((3..=4).contains(&admitted.len()), "the burst is admitted: {}", admitted.len());
    assert_eq!(refused, 10 - admitted.len());
    for ws in &mut admitted {
        assert_eq!(recv(ws).await.0, action::HELLO);
        send_json(ws, action::PING, json!({ "seq": 1 })).await;
        let (code, pong) = recv(ws).await;
        assert_eq!((code, pong["seq"].as_u64()), (action::PONG, Some(1)), "admitted clients keep working");
    }
}
