//! Faults that must heal or say so: a corrupt store file, and panics in a
//! handler or an API route, with real sockets and the real binary.

mod common;

use async_trait::async_trait;
use common::*;
use pushgate::Shutdown;
use pushgate::handlers::{Caller, Ctx, Handler, HandlerError, Reply};
use pushgate::protocol::action;
use serde_json::{Value, json};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes a store with data through a real server, stops it, and overwrites
/// 4 KiB in the middle of the redb file. Returns the file.
async fn corrupted_store(dir: &Path) -> std::path::PathBuf {
    let mut server = TestServer::start_config(test_config(dir.to_path_buf())).await;
    let profile = json!({ "bio": "x".repeat(8000) });
    for i in 0..200 {
        let response = server
            .http()
            .put(server.api(&format!("/v1/users/u{i}/profile")))
            .bearer_auth(API_KEY)
            .json(&profile)
            .send()
            .await
            .expect("put");
        assert!(response.status().is_success());
    }
    server.stop(Shutdown::Immediate).await;
    let path = dir.join("pushgate.redb");
    let len = std::fs::metadata(&path).expect("store file").len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).expect("open store");
    file.seek(SeekFrom::Start(len / 2 / 4096 * 4096)).expect("seek");
    file.write_all(&[0xa5; 4096]).expect("overwrite");
    file.sync_all().expect("sync");
    path
}

#[tokio::test]
async fn a_corrupt_store_file_is_refused_at_startup_naming_the_file_and_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = corrupted_store(dir.path()).await;
    let config = dir.path().join("pushgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [auth]\nsecret = {SECRET:?}\n[api]\nkey = {API_KEY:?}\n",
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushgate");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("pushgate started on a corrupt store");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success(), "exit status: {status}; stderr: {stderr}");
    assert!(stderr.contains(&path.display().to_string()), "names the file: {stderr}");
    assert!(stderr.contains("corrupt"), "says what is wrong: {stderr}");
    assert!(stderr.contains("backup") && stderr.contains("deploy/README.md"), "says how to recover: {stderr}");
}

/// Without the startup check, a damaged record found at run time is an
/// error answer (500 / ERROR internal), never a dropped connection.
#[tokio::test]
async fn a_damaged_record_read_at_run_time_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    corrupted_store(dir.path()).await;
    let mut config = test_config(dir.path().to_path_buf());
    config.store.check_integrity = false;
    let server = TestServer::start_config(config).await;
    let (mut ws, _) = server.connect("reader").await;
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..200 {
        let (status, body) = server.get(&format!("/v1/users/u{i}/profile")).await;
        assert!(status == 200 || status == 404 || status == 500, "u{i}: {status} {body}");
        if status == 500 {
            assert_eq!(body["error"]["code"], "internal", "{body}");
        }
        *statuses.entry(status).or_insert(0) += 1;
        send_json(&mut ws, action::FETCH_INFO, json!({ "user": format!("u{i}") })).await;
        let (code, reply) = recv(&mut ws).await;
        if code == action::ERROR {
            assert_eq!(reply["code"], "internal", "{reply}");
        } else {
            assert_eq!(code, action::FETCH_INFO, "{reply}");
        }
    }
    assert!(statuses.contains_key(&500), "the damage was met: {statuses:?}");
    // The session survived every failed read.
    send_json(&mut ws, action::PING, json!({})).await;
    assert_eq!(recv(&mut ws).await.0, action::PONG);
}

struct Panics;

#[async_trait]
impl Handler for Panics {
    async fn handle(&self, _: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        if payload.windows(5).any(|w| w == b"panic") {
            panic!("handler bug for {}", caller.user);
        }
        Ok(Reply::json(&json!({ "ok": true })))
    }
}

async fn sessions_of(server: &TestServer, user: &str) -> usize {
    let (status, body) = server.get(&format!("/v1/users/{user}/sessions")).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_panicking_handler_fails_its_request_and_leaves_no_ghost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extensions = pushgate::Extensions::new().handler(1000, 1001, Panics);
    let server = TestServer::start_extended(test_config(dir.path().to_path_buf()), extensions).await;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;

    for seq in 1..=3 {
        send_json(&mut alice, 1000, json!({ "seq": seq, "x": "panic" })).await;
        let (code, body) = recv(&mut alice).await;
        assert_eq!(code, action::ERROR, "{body}");
        assert_eq!((body["code"].as_str(), body["seq"].as_u64()), (Some("internal"), Some(seq)), "{body}");
    }
    // The same session goes on: served, listed once, reachable by pushes.
    send_json(&mut alice, 1000, json!({ "seq": 9 })).await;
    assert_eq!(recv(&mut alice).await, (1001, json!({ "ok": true, "seq": 9 })));
    assert_eq!(sessions_of(&server, "alice").await, 1, "no ghost entries");
    let (_, body) = server.post("/v1/push", json!({ "users": ["alice", "bob"], "payload": 1 })).await;
    assert_eq!(body["delivered"], 2, "{body}");
    assert_eq!(recv_raw(&mut alice).await, (action::PUSH, b"1".to_vec()));
    assert_eq!(recv_raw(&mut bob).await, (action::PUSH, b"1".to_vec()));

    // When the session ends, it is gone: no entry, pushes report offline.
    alice.close(None).await.expect("close");
    let deadline = Instant::now() + WAIT;
    while sessions_of(&server, "alice").await != 0 {
        assert!(Instant::now() < deadline, "alice's session is still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = server.post("/v1/push", json!({ "users": ["alice"], "payload": 2 })).await;
    assert_eq!((body["delivered"].as_u64(), &body["offline_users"]), (Some(0), &json!(["alice"])), "{body}");
    send_json(&mut bob, action::PING, json!({})).await;
    assert_eq!(recv(&mut bob).await.0, action::PONG);
}

#[tokio::test]
async fn extension_actions_below_1000_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path().to_path_buf());
    let public = pushgate::listener::bind("127.0.0.1:0".parse().unwrap(), 16).expect("bind");
    let api = pushgate::listener::bind("127.0.0.1:0".parse().unwrap(), 16).expect("bind");
    let extensions = pushgate::Extensions::new().handler(action::PING, 1001, Panics);
    let listeners = pushgate::Listeners { public, api };
    let result = pushgate::run_with(config, listeners, async { Shutdown::Immediate }, extensions).await;
    assert!(result.unwrap_err().to_string().contains("1000"));
}

#[tokio::test]
async fn a_panicking_api_handler_answers_500_with_the_json_error_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = axum::Router::new().route(
        "/test/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("API handler bug");
            }
            "unreachable"
        }),
    );
    let extensions = pushgate::Extensions::new().api_routes(routes);
    let server = TestServer::start_extended(test_config(dir.path().to_path_buf()), extensions).await;
    for _ in 0..2 {
        let response = server.http().get(server.api("/test/panic")).bearer_auth(API_KEY).send().await.expect("answer");
        assert_eq!(response.status().as_u16(), 500);
        let body: Value = response.json().await.expect("json body");
        assert_eq!(body["error"]["code"], "internal", "{body}");
    }
    // Extra routes sit behind the API key like the rest.
    let response = server.http().get(server.api("/test/panic")).send().await.expect("answer");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(server.get("/healthz").await.0, 200);
}
