//! The browser console in a real headless Chromium: connect with a token,
//! send 111 and see the reply, see a push sent through the internal API.
//! Needs Debian's chromium and `npm install` in tests/browser (.ci/run does
//! both); a missing piece fails the test, it never skips.

mod common;

use common::*;
use std::path::Path;

#[tokio::test]
async fn console_page_connects_requests_and_shows_pushes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm install` in tests/browser (.ci/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} missing: apt-get install chromium (.ci/run does)");

    let server = TestServer::start_with(|c| c.server.console = true).await;
    let artifacts = root.join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&screenshot);

    let output = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(&browser_dir)
        .env("PG_PAGE", format!("http://{}/", server.ws_addr))
        .env("PG_API", server.api(""))
        .env("PG_API_KEY", API_KEY)
        .env("PG_TOKEN", server.token("carol"))
        .env("PG_USER", "carol")
        .env("PG_SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 1000).unwrap_or(false), "screenshot saved");
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
