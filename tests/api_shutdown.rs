//! The internal API's connections have a bounded life in every phase, and
//! shutdown never waits on a stuck API client past its deadline.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A POST whose head promises more body than is ever sent.
async fn half_sent_body(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.api_addr).await.unwrap();
    let head = format!(
        "POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"users\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Many pipelined requests whose answers are never read: once the socket
/// buffers fill, the server's response writes stall.
async fn never_reads_answers(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.api_addr).await.unwrap();
    let one = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-api-key-0123456789abcdef\r\n\r\n";
    let mut all = Vec::new();
    for _ in 0..4000 {
        all.extend_from_slice(one);
    }
    // The server stops reading once its writes stall; do not wait on it.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&all)).await;
    stream
}

#[tokio::test]
async fn a_half_sent_body_is_timed_out_by_the_idle_timeout() {
    let server = TestServer::start_with(|c| c.api.idle_timeout_ms = 1000).await;
    let mut stream = half_sent_body(&server).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is still open 10 s after the body stopped");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "a 408 answer, then the close: {text}");
}

#[tokio::test]
async fn shutdown_returns_within_its_deadline_despite_stuck_api_clients() {
    let mut server = TestServer::start_with(|c| {
        c.server.shutdown_timeout_ms = 1000;
        // Long enough that only the shutdown deadline can end these clients.
        c.api.idle_timeout_ms = 120_000;
    })
    .await;
    let _half = half_sent_body(&server).await;
    let _greedy = never_reads_answers(&server).await;
    let mut half_head = TcpStream::connect(server.api_addr).await.unwrap();
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), server.stop(pushgate::Shutdown::Immediate))
        .await
        .expect("run() returned within the shutdown deadline");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}
