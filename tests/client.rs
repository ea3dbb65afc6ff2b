//! `pushgate client` as a user runs it: a real process against a real server.

mod common;

use common::*;
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

#[tokio::test]
async fn send_flags_get_matched_replies_and_exit_zero() {
    let server = TestServer::start().await;
    let child = client(&server, "alice").args(["--send", "111", "{}", "--send", "2", "{}"]).spawn().unwrap();
    let (ok, out) = finish(child).await;
    assert!(ok, "{out}");
    assert!(out.contains("<- 1 HELLO {"), "{out}");
    assert!(out.contains("-> 111 {\"seq\":1}"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("<- 111 FETCH_INFO")
            && l.contains("\"user\":\"alice\"")
            && l.contains("(reply to seq 1,")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("<- 3 PONG") && l.contains("(reply to seq 2,")), "{out}");
    assert!(out.contains("<- close 1000"), "closes normally: {out}");
}

#[tokio::test]
async fn an_error_reply_makes_the_exit_code_fail() {
    let server = TestServer::start().await;
    let child = client(&server, "alice").args(["--send", "777", "{}"]).spawn().unwrap();
    let (ok, out) = finish(child).await;
    assert!(!ok, "ERROR reply must fail the run: {out}");
    assert!(out.contains("<- 4 ERROR") && out.contains("unknown_action"), "{out}");
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
    assert!(out.contains("<- 200 PUSH {\"hi\":1}"), "{out}");
}

#[tokio::test]
async fn interactive_lines_from_stdin() {
    let server = TestServer::start().await;
    let mut child = client(&server, "alice").stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"111 {\"user\":\"bob\"}\nnot a frame\n110 {\"friend\":\"bob\"}\n").await.unwrap();
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
    assert!(out.contains("<- close 1000"), "server answered the normal close: {out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, listing) = server.get("/v1/users/alice/sessions").await;
    assert_eq!(listing["sessions"], json!([]), "session gone");
}
