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

/// What the scripted durable gateway saw on one connection.
#[derive(Default, Debug)]
struct ScriptedConn {
    uri: String,
    acks: Vec<serde_json::Value>,
    closed: bool,
}

const BIG: u64 = (1 << 63) + 5;

/// A scripted gateway (tokio-tungstenite) playing proto-spec section 8:
/// HELLO, a replay of 17 and 2^63+5, SYNCED (with a gap when the client came
/// with `since`), then 2^63+6 live. Every ACK is recorded and, when it
/// carries a seq, answered `{"upto", "pending": 0, "seq"}`.
async fn scripted_durable_gateway()
-> (String, std::sync::Arc<std::sync::Mutex<Vec<ScriptedConn>>>, tokio::task::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    use pushgate::protocol::{encode, encode_message};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<ScriptedConn>::new()));
    let seen = log.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = seen.clone();
            tokio::spawn(async move {
                let mut uri = String::new();
                // The callback's signature (and its large Err) is tungstenite's.
                #[allow(clippy::result_large_err)]
                let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    uri = request.uri().to_string();
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(ScriptedConn { uri: uri.clone(), ..ScriptedConn::default() });
                    log.len() - 1
                };
                let hello = json!({ "session_id": "s.1.1", "user": "alice", "device": null, "heartbeat_secs": 25,
                    "idle_timeout_secs": 60, "max_message_bytes": 65536, "server_time_ms": 1 });
                let synced = if uri.contains("since=") {
                    json!({ "last_id": BIG, "replayed": 2, "gap": true, "first_id": 17 })
                } else {
                    json!({ "last_id": BIG, "replayed": 2, "gap": false })
                };
                let frames = [
                    encode(action::HELLO, hello.to_string().as_bytes()),
                    encode_message(17, action::PUSH, br#"{"title":"hi"}"#),
                    encode_message(BIG, 1001, &[0x00, 0xff]),
                    encode(action::SYNCED, synced.to_string().as_bytes()),
                    encode_message(BIG + 1, action::PUSH, br#"{"n":3}"#),
                ];
                for frame in frames {
                    if ws.send(Message::Binary(frame)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Binary(bytes) if bytes.len() >= 4 && bytes[..4] == action::ACK.to_be_bytes() => {
                            let ack: serde_json::Value = serde_json::from_slice(&bytes[4..]).unwrap();
                            log.lock().unwrap()[index].acks.push(ack.clone());
                            if let Some(seq) = ack["seq"].as_u64() {
                                let upto =
                                    ack["ids"].as_array().and_then(|ids| ids.iter().filter_map(|i| i.as_u64()).max());
                                let reply = json!({ "upto": upto.unwrap_or(0), "pending": 0, "seq": seq });
                                let _ =
                                    ws.send(Message::Binary(encode(action::ACK, reply.to_string().as_bytes()))).await;
                            }
                        }
                        Message::Close(_) => {
                            log.lock().unwrap()[index].closed = true;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (url, log, task)
}

fn durable_client(url: &str, extra: &[&str]) -> Command {
    let mut cmd = raw_client(url);
    cmd.args(["--count", "3"]).args(extra);
    cmd
}

#[tokio::test]
async fn durable_messages_are_printed_with_ids_and_acked() {
    let (url, log, server) = scripted_durable_gateway().await;
    let (code, out, err) = run_to_end(durable_client(&url, &[]).spawn().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    for line in [
        r#"<- 6 MESSAGE id=17 replayed 200 PUSH {"title":"hi"}"#,
        "<- 6 MESSAGE id=9223372036854775813 replayed 1001 APPLICATION hex:00ff",
        r#"<- 6 MESSAGE id=9223372036854775814 live 200 PUSH {"n":3}"#,
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    let synced = out.lines().find(|l| l.starts_with("<- 8 SYNCED")).unwrap_or_else(|| panic!("no SYNCED: {out}"));
    assert!(synced.contains(r#""last_id":9223372036854775813"#) && !synced.contains("gap:"), "{synced}");
    // The order on the wire is kept: replay, SYNCED, live.
    let position = |text: &str| out.find(text).unwrap_or_else(|| panic!("{text} missing: {out}"));
    assert!(position("id=9223372036854775813 replayed") < position("8 SYNCED"));
    assert!(position("8 SYNCED") < position("id=9223372036854775814 live"));
    assert!(out.lines().any(|l| l.starts_with("-> 7 {\"ids\":[")), "ACK printed: {out}");

    let conns = log.lock().unwrap();
    assert_eq!(conns.len(), 1);
    assert!(conns[0].uri.ends_with("/ws?resume=1"), "{}", conns[0].uri);
    let mut acked: Vec<u64> =
        conns[0].acks.iter().flat_map(|a| a["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap())).collect();
    acked.sort_unstable();
    assert_eq!(acked, vec![17, BIG, BIG + 1], "every message acked once: {:?}", conns[0].acks);
    assert!(conns[0].acks.iter().all(|a| a["seq"].is_u64() && a["ids"].as_array().unwrap().len() <= 64));
    assert!(conns[0].acks.len() <= 2, "batched: {:?}", conns[0].acks);
    assert!(conns[0].closed, "closed normally after the acks were answered");
    server.abort();
}

#[tokio::test]
async fn no_ack_sends_no_ack_and_since_or_no_resume_change_the_url() {
    let (url, log, server) = scripted_durable_gateway().await;
    let (code, out, err) =
        run_to_end(durable_client(&url, &["--no-ack"]).spawn().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("<- 6 MESSAGE id=")).count(), 3, "{out}");
    assert!(!out.contains("-> 7"), "--no-ack sent an ACK: {out}");

    let (code, out, err) =
        run_to_end(durable_client(&url, &["--since", "41"]).spawn().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let synced = out.lines().find(|l| l.starts_with("<- 8 SYNCED")).unwrap_or_else(|| panic!("no SYNCED: {out}"));
    assert!(synced.contains(r#""gap":true"#) && synced.contains("(gap:") && synced.contains("17"), "{synced}");

    let (code, out, err) =
        run_to_end(durable_client(&url, &["--no-resume"]).spawn().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("<- 6 MESSAGE id=17 live"), "no replay asked for: every MESSAGE is live: {out}");

    let conns = log.lock().unwrap();
    let uris: Vec<&str> = conns.iter().map(|c| c.uri.as_str()).collect();
    assert_eq!(uris, ["/ws?resume=1", "/ws?since=41", "/ws"]);
    assert!(conns[0].acks.is_empty(), "--no-ack: {:?}", conns[0].acks);
    assert_eq!(conns[1].acks.iter().map(|a| a["ids"].as_array().unwrap().len()).sum::<usize>(), 3);
    server.abort();
}

#[tokio::test]
async fn bad_since_is_a_usage_error() {
    for bad in [
        &["--since", "abc"][..],
        &["--since=-1"],
        &["--since", "18446744073709551616"],
        &["--since", "5", "--no-resume"],
    ] {
        let child = raw_client("ws://127.0.0.1:9/ws").args(bad).spawn().unwrap();
        let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
        assert_eq!(code, Some(2), "{bad:?}: {out}{err}");
        assert!(err.contains("--since"), "{bad:?}: {err}");
    }
}

/// Against the real gateway: what was pushed with persist while the user was
/// away is replayed, printed and acked; the next run replays nothing.
#[tokio::test]
async fn durable_messages_from_the_real_gateway_are_acked_once() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 1..=2 {
        let (status, answer) =
            server.post("/v1/push", json!({ "users": ["carl"], "persist": true, "payload": { "n": n } })).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["message_ids"]["carl"].as_u64().unwrap_or_else(|| panic!("no id: {answer}")));
    }
    let child = client(&server, "carl").args(["--count", "2"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    for (id, n) in ids.iter().zip(1..) {
        let line = format!("<- 6 MESSAGE id={id} replayed 200 PUSH {{\"n\":{n}}}");
        assert!(out.lines().any(|l| l == line), "missing {line:?}: {out}");
    }
    let acks: String = out.lines().filter(|l| l.starts_with("-> 7 {\"ids\":[")).collect();
    assert!(ids.iter().all(|id| acks.contains(&id.to_string())), "both acked: {out}");
    assert!(out.lines().any(|l| l.starts_with("<- 7 ACK") && l.contains("\"pending\":0")), "{out}");
    let (_, inbox) = server.get("/v1/users/carl/inbox").await;
    assert_eq!(inbox["devices"]["default"]["pending"], 0, "{inbox}");

    let child = client(&server, "carl").args(["--wait", "0.5"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains("6 MESSAGE"), "replayed again: {out}");
    assert!(out.lines().any(|l| l.starts_with("<- 8 SYNCED") && l.contains("\"replayed\":0")), "{out}");
}

// ---- tokens during a session (proto-spec section 9) ----

/// A config file holding the test secret, for `--user` (the client mints
/// its tokens from it).
fn secret_config() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.toml");
    std::fs::write(&path, format!("[auth]\nsecret = \"{SECRET}\"\n")).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

/// `pushgate client --user USER` minting from the test secret.
fn minting_client(url: &str, user: &str, config: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushgate"));
    cmd.args(["client", "--url", url, "--user", user, "--config", config])
        .env_remove("PUSHGATE_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A scripted gateway for section 9: HELLO, then TOKEN_EXPIRING. A
/// TOKEN_REFRESH is checked (signed with the test secret, user alice, not
/// expired) and answered `{"expires_at", "seq"}`, or with ERROR
/// token_expired when the URL says `refuse`; then a PUSH. Without a
/// TOKEN_REFRESH within 500 ms the PUSH comes anyway. Records every frame
/// (action, JSON) per connection.
async fn scripted_token_gateway() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<(u32, serde_json::Value)>>>>) {
    use futures_util::{SinkExt, StreamExt};
    use pushgate::protocol::encode;
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = seen.clone();
            tokio::spawn(async move {
                let mut uri = String::new();
                #[allow(clippy::result_large_err)]
                let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    uri = request.uri().to_string();
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(Vec::new());
                    log.len() - 1
                };
                let json = |action: u32, value: serde_json::Value| {
                    Message::Binary(encode(action, value.to_string().as_bytes()))
                };
                let hello = json!({ "session_id": "s.1.1", "user": "alice", "device": null, "heartbeat_secs": 25,
                    "idle_timeout_secs": 60, "max_message_bytes": 65536, "server_time_ms": 1 });
                let now = jsonwebtoken::get_current_timestamp();
                let _ = ws.send(json(action::HELLO, hello)).await;
                let _ = ws
                    .send(json(action::TOKEN_EXPIRING, json!({ "expires_at": now + 30, "expires_in_secs": 30 })))
                    .await;
                let push = json(action::PUSH, json!({ "after": "expiring" }));
                let mut pushed = false;
                loop {
                    let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
                    let message = match next {
                        Err(_) if !pushed => {
                            pushed = true;
                            let _ = ws.send(push.clone()).await;
                            continue;
                        }
                        Err(_) => continue,
                        Ok(Some(Ok(message))) => message,
                        Ok(_) => break,
                    };
                    let Message::Binary(bytes) = message else { continue };
                    let code = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                    let body: serde_json::Value = serde_json::from_slice(&bytes[4..]).unwrap_or_default();
                    log.lock().unwrap()[index].push((code, body.clone()));
                    if code != action::TOKEN_REFRESH {
                        continue;
                    }
                    let seq = body["seq"].clone();
                    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                    validation.leeway = 0;
                    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
                    let claims = jsonwebtoken::decode::<serde_json::Value>(
                        body["token"].as_str().unwrap_or(""),
                        &key,
                        &validation,
                    )
                    .map(|t| t.claims);
                    let reply = match claims {
                        Ok(c) if c["sub"] == "alice" && !uri.contains("refuse") => {
                            json(action::TOKEN_REFRESH, json!({ "expires_at": c["exp"], "seq": seq }))
                        }
                        _ => json(
                            action::ERROR,
                            json!({ "code": "token_expired", "message": "refused", "action": 9, "seq": seq }),
                        ),
                    };
                    let _ = ws.send(reply).await;
                    if !pushed {
                        pushed = true;
                        let _ = ws.send(push.clone()).await;
                    }
                }
            });
        }
    });
    (url, log)
}

#[tokio::test]
async fn token_expiring_mints_a_fresh_token_and_refreshes() {
    let (url, log) = scripted_token_gateway().await;
    let (_dir, config) = secret_config();
    let child = minting_client(&url, "alice", &config).args(["--count", "1", "--token-ttl", "600"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with(&received(action::TOKEN_EXPIRING))), "{out}");
    let sent = out.lines().find(|l| l.starts_with("-> 9 ")).unwrap_or_else(|| panic!("no TOKEN_REFRESH: {out}"));
    assert!(sent.contains("\"token\":\"eyJ") && sent.contains("...\"") && sent.len() < 60, "token shortened: {sent}");
    let reply =
        out.lines().find(|l| l.starts_with(&received(action::TOKEN_REFRESH))).unwrap_or_else(|| panic!("{out}"));
    assert!(
        reply.contains("\"expires_at\":") && reply.contains("(reply to seq 1,") && reply.ends_with("(token refreshed)")
    );
    assert!(out.contains(&format!("{} {{\"after\":\"expiring\"}}", received(action::PUSH))), "{out}");

    let frames = log.lock().unwrap();
    let refreshes: Vec<_> = frames[0].iter().filter(|(a, _)| *a == action::TOKEN_REFRESH).collect();
    assert_eq!(refreshes.len(), 1, "{frames:?}");
    assert_eq!(refreshes[0].1["seq"], 1);
    // The gateway checked the token (signature, user, expiry); its lifetime is --token-ttl.
    let token = refreshes[0].1["token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600, "{claims}");
}

#[tokio::test]
async fn a_refused_refresh_fails_the_run_and_a_fixed_token_only_warns() {
    let (url, log) = scripted_token_gateway().await;
    let (_dir, config) = secret_config();
    let refuse = format!("{url}?refuse");
    let child = minting_client(&refuse, "alice", &config).args(["--count", "1"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let error = out.lines().find(|l| l.starts_with(&received(action::ERROR))).unwrap_or_else(|| panic!("{out}"));
    assert!(
        error.contains("token_expired") && error.ends_with("(token refresh refused: the session keeps its old expiry)")
    );

    // A fixed --token: a warning, no TOKEN_REFRESH, the run succeeds.
    let child = raw_client(&url).args(["--count", "1"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("warning: the token expires in 30 s") && err.contains("cannot be refreshed"), "{err}");
    assert!(!out.contains("-> 9"), "{out}");
    let frames = log.lock().unwrap();
    assert!(frames[1].iter().all(|(a, _)| *a != action::TOKEN_REFRESH), "{frames:?}");
}

#[tokio::test]
async fn bad_token_ttl_is_a_usage_error() {
    let (_dir, config) = secret_config();
    for bad in [&["--token-ttl", "0"][..], &["--token-ttl", "abc"], &["--token-ttl=-1"], &["--token-ttl", "31536001"]] {
        let child = minting_client("ws://127.0.0.1:9/ws", "alice", &config).args(bad).spawn().unwrap();
        let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
        assert_eq!(code, Some(2), "{bad:?}: {out}{err}");
        assert!(err.contains("--token-ttl"), "{bad:?}: {err}");
    }
    // Only for minted tokens: with --token it is a usage error too.
    let child = raw_client("ws://127.0.0.1:9/ws").args(["--token-ttl", "60"]).spawn().unwrap();
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(2), "{out}{err}");
}

/// The real gateway (no leeway, heartbeats every second, TOKEN_EXPIRING 3 s
/// before the expiry) and 5 s tokens: the client refreshes and its session
/// is still there, and gets a push, well past the first token's expiry.
#[tokio::test]
async fn minted_short_tokens_outlive_their_expiry_on_the_real_gateway() {
    let server = TestServer::start_with(|c| {
        c.auth.leeway_secs = 0;
        c.auth.expiry_warning_secs = 3;
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 5;
    })
    .await;
    let (_dir, config) = secret_config();
    let started = std::time::Instant::now();
    let child =
        minting_client(&server.ws_url(), "rosa", &config).args(["--token-ttl", "5", "--wait", "11"]).spawn().unwrap();
    // Past the first token's expiry (5 s), push to the session.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, answer) = server.post("/v1/push", json!({ "users": ["rosa"], "payload": { "late": true } })).await;
    assert_eq!(answer["delivered"], 1, "session gone after {:?}: {answer}", started.elapsed());
    let (code, out, err) = run_to_end(child, Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let refreshed =
        out.lines().filter(|l| l.starts_with(&received(action::TOKEN_REFRESH)) && l.ends_with("(token refreshed)"));
    assert!(refreshed.count() >= 2, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with(&received(action::HELLO))).count(), 1, "{out}");
    assert!(out.contains(&format!("{} {{\"late\":true}}", received(action::PUSH))), "{out}");
    assert!(!out.contains("close 4003") && out.contains(&format!("<- close {}", close::NORMAL)), "{out}");
}

/// POST /v1/users/{id}/revoke: the client prints the 4006 close and exits 3.
#[tokio::test]
async fn revocation_exits_with_code_3() {
    let server = TestServer::start().await;
    let (_dir, config) = secret_config();
    let child = minting_client(&server.ws_url(), "vera", &config).args(["--wait", "30"]).spawn().unwrap();
    let mut connected = false;
    for _ in 0..100 {
        if server.get("/v1/users/vera/sessions").await.1["sessions"].as_array().is_some_and(|s| !s.is_empty()) {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "client connected");
    let (status, answer) = server.post("/v1/users/vera/revoke", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let (code, out, err) = run_to_end(child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(out.contains(&format!("<- close {}", close::REVOKED)), "{out}");
    assert!(err.contains("revoked (close 4006)") && err.contains("exit 3"), "{err}");
}
