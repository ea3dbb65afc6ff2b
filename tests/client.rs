//! `pushgate client` as a user runs it: a real process against a real server.

mod common;

use common::*;
use pushgate::protocol::{action, close};
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn client(server: &TestServer, user: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(["client", "--url", &server.ws_url(), "--token", &server.token(user)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn finish(child: tokio::process::Child) -> (bool, String) {
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await.expect("exits").unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stdout).to_string())
}

/// How the client prints an incoming frame: `<- CODE NAME`.
fn received(code: u32) -> String {
    format!("<- {code} {}", pushgate::protocol::action_name(code))
}

#[tokio::test]
async fn send_flags_get_matched_replies_and_exit_zero() {
    let server = TestServer::start().await;
    let (fetch_info, ping) = (action::FETCH_INFO.to_string(), action::PING.to_string());
    let child = client(&server, "alice").args(["--send", &fetch_info, "{}", "--send", &ping, "{}"]).spawn().unwrap();
    let (ok, out) = finish(child).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{} {{", received(action::HELLO))), "{out}");
    assert!(out.contains(&format!("-> {fetch_info} {{\"seq\":1}}")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&received(action::FETCH_INFO))
            && l.contains("\"user\":\"alice\"")
            && l.contains("(reply to seq 1,")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with(&received(action::PONG)) && l.contains("(reply to seq 2,")), "{out}");
    assert!(out.contains(&format!("<- close {}", close::NORMAL)), "closes normally: {out}");
}

#[tokio::test]
async fn an_error_reply_makes_the_exit_code_fail() {
    let server = TestServer::start().await;
    let child = client(&server, "alice").args(["--send", "777", "{}"]).spawn().unwrap();
    let (ok, out) = finish(child).await;
    assert!(!ok, "ERROR reply must fail the run: {out}");
    assert!(out.contains(&received(action::ERROR)) && out.contains("unknown_action"), "{out}");
}

#[tokio::test]
async fn count_waits_for_pushes() {
    let server = TestServer::start().await;
    let child = client(&server, "bob").args(["--count", "1", "--wait", "10"]).spawn().unwrap();
    // Push once the client is connected.
    for _ in 0..100 {
        let (_, body) = server.post("/v1/push", json!({ "users": ["bob"], "payload": { "hi": 1 } })).await;
        if body["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out) = finish(child).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{} {{\"hi\":1}}", received(action::PUSH))), "{out}");
}

#[tokio::test]
async fn interactive_lines_from_stdin() {
    let server = TestServer::start().await;
    let mut child = client(&server, "alice").stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = format!(
        "{} {{\"user\":\"bob\"}}\nnot a frame\n{} {{\"friend\":\"bob\"}}\n",
        action::FETCH_INFO,
        action::ADD_FRIEND
    );
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let (ok, out) = finish(child).await;
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.contains("FETCH_INFO") && l.contains("\"user\":\"bob\"") && l.contains("reply to seq 1")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("ADD_FRIEND") && l.contains("pending") && l.contains("reply to seq 2")),
        "{out}"
    );
}

#[tokio::test]
async fn ctrl_c_closes_with_1000() {
    let server = TestServer::start().await;
    // Interactive with stdin held open: only Ctrl-C ends it.
    let mut child = client(&server, "alice").stdin(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    // Wait until the session is registered, then interrupt like Ctrl-C.
    let mut connected = false;
    for _ in 0..100 {
        if server.get("/v1/users/alice/sessions").await.1["sessions"].as_array().is_some_and(|s| !s.is_empty()) {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "client connected and stayed");
    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let (ok, out) = finish(child).await;
    drop(stdin);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("<- close {}", close::NORMAL)), "server answered the normal close: {out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, listing) = server.get("/v1/users/alice/sessions").await;
    assert_eq!(listing["sessions"], json!([]), "session gone");
}

/// Runs the client to completion; (exit code, stdout, stderr). `None` as the
/// code means killed by a signal.
async fn run_to_end(child: tokio::process::Child, limit: Duration) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("client still running after {limit:?}"))
        .expect("wait for the client");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// A listener that accepts connections and never answers, like a stuck
/// proxy. Resolves the returned receiver once a connection is accepted.
async fn silent_listener() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
    });
    (addr, rx, task)
}

fn raw_client(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(["client", "--url", url, "--token", &mint("alice", None, 3600)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn ctrl_c_while_connecting_exits_promptly() {
    let (addr, accepted, listener) = silent_listener().await;
    let child = raw_client(&format!("ws://{addr}/ws")).spawn().unwrap();
    let pid = child.id().unwrap() as i32;
    // The upgrade request is on its way and will never be answered.
    tokio::time::timeout(WAIT, accepted).await.expect("client connected").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let (code, _, err) = run_to_end(child, Duration::from_secs(3)).await;
    listener.abort();
    assert!(code.is_some_and(|c| c != 0), "exits non-zero by itself, not by the signal: {code:?} {err}");
    assert!(err.contains("interrupted while connecting"), "{err}");
}

#[tokio::test]
async fn connect_timeout_bounds_an_unanswered_upgrade() {
    let (addr, _accepted, listener) = silent_listener().await;
    let started = std::time::Instant::now();
    let child = raw_client(&format!("ws://{addr}/ws")).args(["--connect-timeout", "0.5"]).spawn().unwrap();
    let (code, _, err) = run_to_end(child, Duration::from_secs(5)).await;
    listener.abort();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer") && err.contains("--connect-timeout"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(500), "waited the timeout out");
}

#[tokio::test]
async fn error_replies_without_seq_fail_the_run() {
    let server = TestServer::start().await;
    let (app, ping, fetch_info) =
        (action::APPLICATION_MIN.to_string(), action::PING.to_string(), action::FETCH_INFO.to_string());
    let cases: &[&[&str]] = &[
        // An application action with no handler: ERROR unknown_action, seq null.
        &["--send", &app, "{}", "--wait", "1"],
        &["--send", &app, "{}"],
        // Built-in actions take a JSON object: ERROR bad_payload, seq null.
        &["--send", &ping, "[1]"],
        &["--send", &fetch_info, "\"x\""],
    ];
    for args in cases {
        let child = client(&server, "alice").args(*args).spawn().unwrap();
        let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
        assert_eq!(code, Some(1), "{args:?} must fail: {out}{err}");
        assert!(
            out.lines().any(|l| l.starts_with(&received(action::ERROR)) && l.contains("(reply to action ")),
            "{args:?}: {out}"
        );
        assert!(err.contains("1 ERROR replies"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn out_of_range_durations_are_usage_errors() {
    let server = TestServer::start().await;
    for bad in [
        "--wait=-1",
        "--wait=nan",
        "--wait=inf",
        "--wait=1e300",
        "--wait=31536001",
        "--connect-timeout=0",
        "--connect-timeout=-1",
        "--connect-timeout=nan",
        "--connect-timeout=1e300",
    ] {
        let child = client(&server, "alice").arg(bad).spawn().unwrap();
        let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
        assert_eq!(code, Some(2), "{bad}: {out}{err}");
        assert!(err.contains("invalid value") && err.contains("seconds"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
    // The documented bounds themselves are accepted.
    let child = client(&server, "alice").args(["--wait", "0", "--connect-timeout", "3600"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
}
