//! The embedded inbox on a real full disk (a small tmpfs as data_dir): a
//! durable push whose write cannot reach the disk answers 503 and is not
//! counted as stored. Alone in its test binary because it asserts a
//! process-global counter exactly.

mod common;

use common::disk::{Tmpfs, fill};
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Bound on one push's answer on a failing disk (`inbox.write_timeout_ms`
/// is 5 s by default; a failed write answers well before).
const BOUND: Duration = Duration::from_secs(6);

async fn counted(server: &TestServer) -> f64 {
    metric(server, "pushgate_durable_pushes_total ").await
}

/// A durable push of ~48 KB to `user`: (status, answer).
async fn push(server: &TestServer, user: &str, n: usize) -> (u16, Value) {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.encode(vec![n as u8; 48 * 1024]);
    let body = json!({ "users": [user], "persist": true, "action": 1000, "payload_b64": payload });
    server.post("/v1/push", body).await
}

#[tokio::test]
async fn a_durable_push_the_disk_cannot_take_answers_503_and_is_not_counted() {
    let fs = Tmpfs::mount("8m");
    let server = TestServer::start_config(test_config(fs.path().join("data"))).await;
    let (status, body) = push(&server, "dora", 0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counted(&server).await, 1.0, "a stored durable push is counted");

    // Fill the disk; the log has zeros written ahead of its end, so a few
    // more pushes may still land before one needs space the disk lacks.
    assert!(fill(&fs.path().join("filler")) > 0);
    let mut stored = 1.0;
    let mut refused = None;
    for n in 1..200 {
        let started = Instant::now();
        let (status, body) = push(&server, "dora", n).await;
        assert!(started.elapsed() < BOUND, "answered after {:?}", started.elapsed());
        match status {
            200 => stored += 1.0,
            _ => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("a durable push fails once the disk is full");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "inbox_unavailable", "{body}");
    assert_eq!(counted(&server).await, stored, "only pushes answered as stored are counted");

    // The log stopped after the failed write: later pushes are refused
    // too, at once, and still not counted.
    let (status, body) = push(&server, "dora", 250).await;
    assert_eq!((status, body["error"]["code"].clone()), (503, json!("inbox_unavailable")), "{body}");
    assert_eq!(counted(&server).await, stored);
}
