//! The browser console and pushgate.js in a real headless Chromium against
//! the real gateway (and, for misbehaving servers, a scripted WebSocket
//! server in Node): the console connects, requests and shows pushes;
//! pushgate.js matches replies, survives close/connect sequences, honours
//! hints, backs off and handles expired tokens.
//! Needs Debian's chromium and `npm install` in tests/browser (.ci/run does
//! both); a missing piece fails the test, it never skips.

mod common;

use common::*;
use std::path::Path;

/// Chromium is heavy and the machine small: one browser test at a time.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists() && dir.join("node_modules/ws").exists(),
        "playwright-core or ws missing: run `npm install` in tests/browser (.ci/run does)"
    );
    dir
}

fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} missing: apt-get install chromium (.ci/run does)");
    chromium
}

/// Runs `node SCRIPT ARGS` in tests/browser against `server` (console on);
/// fails with the script's output unless it exits 0.
async fn run_node(server: &TestServer, script: &str, args: &[&str], extra: &[(&str, String)]) {
    let dir = browser_dir();
    let chromium = chromium();
    let _one_at_a_time = BROWSER.lock().await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .env("PG_PAGE", format!("http://{}/", server.ws_addr))
        .env("PG_API", server.api(""))
        .env("PG_API_KEY", API_KEY)
        .env("PG_SECRET", SECRET)
        .env("CHROMIUM", &chromium);
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .expect("browser test finished within 120 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{stdout}");
}

async fn console_server() -> TestServer {
    TestServer::start_with(|c| c.server.console = true).await
}

/// A gateway that checks token expiry every second, with no leeway.
async fn strict_expiry_server() -> TestServer {
    TestServer::start_with(|c| {
        c.server.console = true;
        c.auth.leeway_secs = 0;
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 5;
    })
    .await
}

#[tokio::test]
async fn console_page_connects_requests_and_shows_pushes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = console_server().await;
    let artifacts = root.join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let extra = [
        ("PG_TOKEN", server.token("carol")),
        ("PG_USER", "carol".into()),
        ("PG_SCREENSHOT", screenshot.display().to_string()),
    ];
    run_node(&server, "console.test.mjs", &[], &extra).await;
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 1000).unwrap_or(false), "screenshot saved");
}

/// pushgate.js against the real gateway: FETCH_INFO, PING -> PONG, an ERROR
/// rejects, a push with its own `seq` is a push.
#[tokio::test]
async fn js_requests_get_their_replies_from_the_gateway() {
    run_node(&console_server().await, "client.test.mjs", &["gateway-replies"], &[]).await;
}

/// A push carrying `"seq": N` while request N is in flight stays a push.
#[tokio::test]
async fn js_push_carrying_a_seq_does_not_answer_a_request() {
    run_node(&console_server().await, "client.test.mjs", &["reply-matching"], &[]).await;
}

/// `close(); connect();` leaves one working session; close() then ends it.
#[tokio::test]
async fn js_close_then_connect_keeps_one_working_session() {
    run_node(&console_server().await, "client.test.mjs", &["close-then-connect"], &[]).await;
}

/// close() while getToken is pending: no connection, no session.
#[tokio::test]
async fn js_close_while_token_pending_does_not_connect() {
    run_node(&console_server().await, "client.test.mjs", &["close-while-token-pending"], &[]).await;
}

/// A RECONNECT hint of 0 ms reconnects at once (and 300 ms waits 300 ms).
#[tokio::test]
async fn js_reconnect_hint_of_zero_is_honoured() {
    run_node(&console_server().await, "client.test.mjs", &["reconnect-hint-zero"], &[]).await;
}

/// A server that closes right after HELLO sees the reconnects back off.
#[tokio::test]
async fn js_backoff_grows_when_the_server_closes_after_hello() {
    run_node(&console_server().await, "client.test.mjs", &["backoff-after-hello-then-close"], &[]).await;
}

/// A connection that stayed up `healthyAfterMs` starts the backoff over.
#[tokio::test]
async fn js_backoff_starts_over_after_a_healthy_connection() {
    run_node(&console_server().await, "client.test.mjs", &["backoff-resets-after-a-healthy-connection"], &[]).await;
}

/// After 4003 the client calls getToken again; with a static token it stops.
#[tokio::test]
async fn js_token_expired_refetches_the_token_or_stops() {
    run_node(&strict_expiry_server().await, "client.test.mjs", &["token-expired"], &[]).await;
}

/// Durable delivery against a scripted server: replay, SYNCED, live; each id
/// once, in order; batched acks with the right ids; ERROR internal retried.
#[tokio::test]
async fn js_durable_replay_then_live_is_acked_in_batches() {
    run_node(&console_server().await, "durable.test.mjs", &["replay-then-live"], &[]).await;
}

/// 2500 replayed messages: ACK frames of at most 1024 ids (64 by default).
#[tokio::test]
async fn js_durable_ack_frames_are_bounded() {
    run_node(&console_server().await, "durable.test.mjs", &["big-replay-batches"], &[]).await;
}

/// `autoAck: false` sends no ACK until `ack()` / `ackUpTo()`.
#[tokio::test]
async fn js_durable_manual_ack_sends_nothing_by_itself() {
    run_node(&console_server().await, "durable.test.mjs", &["manual-ack"], &[]).await;
}

/// The ack waits for the handler's promise; a throwing handler's message is
/// not acked and is delivered again by the next replay.
#[tokio::test]
async fn js_durable_acks_after_the_handler_resolved() {
    run_node(&console_server().await, "durable.test.mjs", &["ack-after-handler"], &[]).await;
}

/// A replay after a lost ack is acked again, not handed to the app again.
#[tokio::test]
async fn js_durable_reconnect_does_not_redeliver_handled_ids() {
    run_node(&console_server().await, "durable.test.mjs", &["reconnect-dedupe"], &[]).await;
}

/// A gateway that forgot the inbox (SYNCED below the remembered id) is a
/// gap, and new small ids reach the app.
#[tokio::test]
async fn js_durable_inbox_reset_is_a_gap() {
    run_node(&console_server().await, "durable.test.mjs", &["inbox-reset"], &[]).await;
}

/// Ids beyond 2^53 survive both ways; a gap surfaces once.
#[tokio::test]
async fn js_durable_u64_ids_and_gap() {
    run_node(&console_server().await, "durable.test.mjs", &["gap-and-bigint"], &[]).await;
}

/// `resume=1` / `since=ID` on the upgrade URL; `resume: false` sends neither.
#[tokio::test]
async fn js_durable_resume_and_since_on_the_upgrade_url() {
    run_node(&console_server().await, "durable.test.mjs", &["since-and-resume-url"], &[]).await;
}

/// The real gateway: pushed with persist while away, replayed and acked on
/// connect, a live one too; a new connection of the device replays nothing.
#[tokio::test]
async fn js_durable_against_the_real_gateway() {
    run_node(&console_server().await, "durable.test.mjs", &["real-gateway"], &[]).await;
}

/// The console shows ids, replayed vs live, acks, SYNCED and the gap.
#[tokio::test]
async fn console_shows_durable_messages_acks_synced_and_gap() {
    run_node(&console_server().await, "durable.test.mjs", &["console"], &[]).await;
}

/// The console says the token expired (4003) and stops.
#[tokio::test]
async fn console_stops_and_says_so_when_the_token_expires() {
    run_node(&strict_expiry_server().await, "console-token.test.mjs", &["expired-in-session"], &[]).await;
}

/// The console stops and says so when every upgrade is refused (401 is
/// invisible to a browser: it sees 1006 before any HELLO).
#[tokio::test]
async fn console_stops_and_says_so_when_the_token_is_refused() {
    run_node(&strict_expiry_server().await, "console-token.test.mjs", &["refused"], &[]).await;
}

/// TOKEN_EXPIRING -> getToken -> TOKEN_REFRESH with the new token and a
/// seq -> "tokenrefreshed"; an ERROR -> "tokenrefreshfailed" with its code;
/// getToken returning nothing -> "error", no frame; refreshToken() by hand.
#[tokio::test]
async fn js_token_expiring_refreshes_through_get_token() {
    run_node(&console_server().await, "refresh.test.mjs", &["scripted-refresh"], &[]).await;
}

/// A static token sends no TOKEN_REFRESH and says it cannot refresh;
/// refreshToken(token) by hand sends the given one.
#[tokio::test]
async fn js_static_token_cannot_refresh_and_says_so() {
    run_node(&console_server().await, "refresh.test.mjs", &["scripted-static"], &[]).await;
}

/// 4006: no reconnect with the revoked token (static, or getToken giving the
/// same one or failing: stopped with "revoked"); a new token reconnects.
#[tokio::test]
async fn js_revoked_never_reconnects_with_the_same_token() {
    run_node(&console_server().await, "refresh.test.mjs", &["scripted-revoked"], &[]).await;
}

/// A gateway that checks every second, with no leeway, and warns 3 s before
/// a token expires.
async fn refresh_server() -> TestServer {
    TestServer::start_with(|c| {
        c.server.console = true;
        c.auth.leeway_secs = 0;
        c.auth.expiry_warning_secs = 3;
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 5;
    })
    .await
}

/// The real gateway: with 5 s tokens the session outlives its first token
/// (refreshed automatically), then a revocation (4006) brings it back with
/// a newly minted token.
#[tokio::test]
async fn js_session_outlives_its_first_token_on_the_real_gateway() {
    run_node(&refresh_server().await, "refresh.test.mjs", &["real-gateway"], &[]).await;
}

/// The console with the development secret: TOKEN_EXPIRING (dev tokens live
/// an hour; the warning comes 3598 s before) shown and refreshed with a
/// fresh dev token, the TOKEN_REFRESH reply logged; 4006 logged and the
/// console back with a fresh dev token.
#[tokio::test]
async fn console_refreshes_dev_tokens_and_logs_revocation() {
    let server = TestServer::start_with(|c| {
        c.server.console = true;
        c.auth.secret = pushgate::config::DEV_JWT_SECRET.into();
        c.auth.leeway_secs = 0;
        c.auth.expiry_warning_secs = 3598;
        c.session.heartbeat_secs = 1;
    })
    .await;
    run_node(&server, "console-refresh.test.mjs", &["dev-token"], &[]).await;
}

/// The console with a pasted token: says it cannot refresh it, "Refresh
/// token" sends a newly pasted one and the session outlives the first; 4006
/// stops it.
#[tokio::test]
async fn console_pasted_token_refreshes_by_hand_and_stops_on_revocation() {
    run_node(&refresh_server().await, "console-refresh.test.mjs", &["pasted"], &[]).await;
}

async fn get(addr: std::net::SocketAddr, path: &str) -> RawResponse {
    raw_http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await
}

#[tokio::test]
async fn console_is_served_only_when_enabled_and_dev_tokens_only_with_dev_secret() {
    let off = TestServer::start().await;
    assert_eq!(get(off.ws_addr, "/").await.status, 404);
    assert_eq!(get(off.ws_addr, "/pushgate.js").await.status, 404);

    let on = TestServer::start_with(|c| c.server.console = true).await;
    let page = get(on.ws_addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("pushgate console"));
    let js = get(on.ws_addr, "/pushgate.js").await;
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(String::from_utf8_lossy(&js.body).contains("export class PushgateClient"));
    assert_eq!(get(on.ws_addr, "/dev/token?user=x").await.status, 404, "no dev tokens without the dev secret");

    let dev = TestServer::start_with(|c| {
        c.server.console = true;
        c.auth.secret = pushgate::config::DEV_JWT_SECRET.into();
    })
    .await;
    let minted = get(dev.ws_addr, "/dev/token?user=dana").await;
    assert_eq!(minted.status, 200);
    let token = minted.json()["token"].as_str().unwrap().to_string();
    let url = format!("{}?token={token}", dev.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("dev token works");
    assert_eq!(recv(&mut ws).await.1["user"], "dana");
    assert_eq!(get(dev.ws_addr, "/dev/token?user=bad%20id").await.status, 400);
}
