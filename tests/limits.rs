//! Resource limits of the real binary: the process file limit, the
//! connection cap and the sockets it may hold beyond it.

mod common;

use common::process::GatewayProcess;
use common::*;
use pushgate::protocol::action;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Runs the gateway under a file limit of `nofile`.
fn spawn_gateway(dir: &std::path::Path, config: &str, nofile: u64) -> (GatewayProcess, SocketAddr, SocketAddr) {
    let gateway = GatewayProcess::spawn(dir, config, Some(nofile));
    let (ws, api) = (gateway.ws, gateway.api);
    (gateway, ws, api)
}

/// Reads whatever `stream` sends until it closes or `deadline` passes.
async fn read_until(mut stream: TcpStream, deadline: Instant) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// Over the cap, a node keeps answering: 150 silent clients against a cap
/// of 20 and a file limit of 128 must not use up the process's file
/// descriptors (which would stall the internal API and every later client).
/// Connections beyond the cap that the node takes are answered 503
/// `at_capacity` with Retry-After; the rest wait in the kernel's backlog.
#[tokio::test]
async fn connection_cap_bounds_sockets_under_a_low_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nmax_connections = 10\nmax_handshakes = 20\nrefusal_slots = 8\nhandshake_timeout_ms = 10000\n\
                  [api]\nmax_connections = 16\n";
    let (gateway, ws_addr, api_addr) = spawn_gateway(dir.path(), config, 128);
    let http = reqwest::Client::new();
    let healthz = format!("http://{api_addr}/healthz");

    // Up: the API answers.
    let started = Instant::now();
    loop {
        let attempt = http.get(&healthz).timeout(Duration::from_millis(500)).send().await;
        if attempt.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "gateway did not start:\n{}", gateway.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 150 clients connect and send nothing.
    let mut silent = Vec::new();
    for i in 0..150 {
        silent.push(TcpStream::connect(ws_addr).await.unwrap_or_else(|e| panic!("connect {i}: {e}")));
    }
    // Let the accept loop take what it will.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The internal API still answers at once.
    let response = tokio::time::timeout(Duration::from_secs(2), http.get(&healthz).send())
        .await
        .unwrap_or_else(|_| panic!("GET /healthz answers within 2 s with 150 silent clients:\n{}", gateway.log()))
        .expect("GET /healthz");
    assert_eq!(response.status(), 200);

    // Connections the node took beyond the cap were answered 503.
    let deadline = Instant::now() + Duration::from_millis(2500);
    let readers: Vec<_> = silent.into_iter().map(|s| tokio::spawn(read_until(s, deadline))).collect();
    let mut refusals = 0;
    for reader in readers {
        let bytes = reader.await.unwrap();
        if bytes.is_empty() {
            continue; // served (waiting for its head) or still in the backlog
        }
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("complete response: {text:?}"));
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("\r\nretry-after: "), "503 carries Retry-After: {head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert_eq!(json["error"]["code"], "at_capacity");
        refusals += 1;
    }
    assert!(refusals >= 3, "a few connections over the cap were answered 503 (got {refusals})");

    // The silent clients are gone (dropped with their readers): a real
    // client upgrades and gets HELLO.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        let mut request = format!("ws://{ws_addr}/ws").into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {}", mint("late", None, 600)).parse().unwrap());
        match tokio::time::timeout(Duration::from_secs(2), tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => break ws,
            // Refused while the node works through its backlog of dead sockets.
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no upgrade after the silent clients left: {other:?}\n{}",
                    gateway.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (first, hello) = recv(&mut ws).await;
    assert_eq!(first, action::HELLO);
    assert_eq!(hello["user"], "late");
    drop(gateway);
}

/// Bounds the file limit cannot honour are refused at startup, with the
/// numbers, instead of failing later with "Too many open files".
#[tokio::test]
async fn bounds_above_the_file_limit_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    // The default api.max_connections (1024) alone is above 128.
    let (mut gateway, _, _) = spawn_gateway(dir.path(), "[server]\nmax_connections = 20\n", 128);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway kept running with bounds above its file limit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = gateway.log();
    assert!(log.contains("RLIMIT_NOFILE 128") && log.contains("api.max_connections"), "{log}");
}
