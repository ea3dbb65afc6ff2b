//! The store on a real full disk: a small tmpfs mounted as data_dir. Alone in
//! its test binary because it asserts the process-global store gauge.

mod common;

use common::disk::{Tmpfs, fill};
use common::*;
use pushgate::protocol::action;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

async fn ready(server: &TestServer) -> (u16, Value) {
    let response = server.http().get(server.api("/readyz")).send().await.expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends ADD_FRIEND and returns the reply's action and body.
async fn add_friend(ws: &mut Ws, friend: &str) -> (u32, Value) {
    send_json(ws, action::ADD_FRIEND, json!({ "friend": friend, "message": "m".repeat(200) })).await;
    recv(ws).await
}

#[tokio::test]
async fn a_full_disk_fails_writes_turns_unready_and_heals_without_a_restart() {
    let fs = Tmpfs::mount("2m");
    let data: PathBuf = fs.path().join("data");
    let mut config = test_config(data.clone());
    config.store.reopen_backoff_max_ms = 500;
    let server = TestServer::start_config(config).await;
    let (mut alice, _) = server.connect("alice").await;
    assert_eq!(add_friend(&mut alice, "f0").await.0, action::ADD_FRIEND);
    assert_eq!(ready(&server).await.0, 200);
    let io_errors_before = metric(&server, "pushgate_store_errors_total{kind=\"io\"}").await;

    // Fill the disk, then write until the store needs a page it cannot get.
    let filler = fs.path().join("filler");
    assert!(fill(&filler) > 0);
    let mut failed = None;
    for i in 1..5000 {
        let (code, body) = add_friend(&mut alice, &format!("f{i}")).await;
        if code == action::ERROR {
            failed = Some(body);
            break;
        }
    }
    let failed = failed.expect("a write fails once the disk is full");
    assert_eq!(failed["code"], "internal", "{failed}");

    // Readiness says so at once, with the store's reason; the metrics too.
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["store"]["healthy"], false);
    let reason = body["store"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("I/O error") && reason.contains("pushgate.redb"), "{body}");
    assert_eq!(metric(&server, "pushgate_store_healthy").await, 0.0);
    assert!(metric(&server, "pushgate_store_errors_total{kind=\"io\"}").await > io_errors_before);

    // Space comes back: ready again and writes succeed, no restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = ready(&server).await;
        if status == 200 {
            assert_eq!(body["store"]["healthy"], true, "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still unready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = add_friend(&mut alice, "after-recovery").await;
    assert_eq!((code, body["status"].as_str()), (action::ADD_FRIEND, Some("pending")), "{body}");
    send_json(&mut alice, action::FETCH_INFO, json!({ "user": "alice" })).await;
    let (code, info) = recv(&mut alice).await;
    assert_eq!(code, action::FETCH_INFO, "{info}");
    assert!(info.to_string().contains("after-recovery"), "{info}");
    assert_eq!(metric(&server, "pushgate_store_healthy").await, 1.0);
    drop(alice);
    drop(server);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A large healthy store (100k friend edges, both directions, as the store
/// keeps them) passes `[store] check_integrity` and opens, with and without
/// the check. Run with `--nocapture` for what the check costs (the figure
/// in config/pushgate.toml came from a release build of this test);
/// timings are printed, never asserted.
#[test]
fn integrity_check_passes_a_large_healthy_store() {
    const FRIENDS: redb::TableDefinition<(&str, &str), u64> = redb::TableDefinition::new("friends");
    let dir = tempfile::tempdir().expect("tempdir");
    drop(pushgate::store::EmbeddedStore::open(dir.path()).expect("create"));
    let path = dir.path().join("pushgate.redb");
    {
        let db = redb::Database::create(&path).expect("db");
        let txn = redb::Database::begin_write(&db).expect("txn");
        {
            let mut table = txn.open_table(FRIENDS).expect("table");
            for i in 0..50_000u64 {
                let (a, b) = (format!("user-{i:06}"), format!("user-{:06}", (i * 7919) % 100_000));
                table.insert((a.as_str(), b.as_str()), i).expect("insert");
                table.insert((b.as_str(), a.as_str()), i).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
    let size = std::fs::metadata(&path).expect("size").len();
    for check_integrity in [false, true, false, true] {
        let options = pushgate::store::StoreOptions { check_integrity, ..Default::default() };
        let started = std::time::Instant::now();
        drop(pushgate::store::EmbeddedStore::open_with(dir.path(), options).expect("open"));
        println!("file {size} bytes, check_integrity={check_integrity}: open took {:?}", started.elapsed());
    }
}
