//! Every refusal before the upgrade is a real HTTP response with a JSON
//! reason and Content-Length; accepted upgrades start with HELLO.

mod common;

use base64::Engine;
use common::*;
use pushgate::protocol::action;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn assert_json_refusal(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "body: {}", String::from_utf8_lossy(&response.body));
    let length: usize = response.header("content-length").expect("Content-Length").parse().unwrap();
    assert_eq!(length, response.body.len());
    assert_eq!(response.json()["error"]["code"], code);
}

#[tokio::test]
async fn missing_token_is_401() {
    let server = TestServer::start().await;
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", "")).await;
    assert_json_refusal(&response, 401, "token_missing");
}

#[tokio::test]
async fn bad_signature_is_401() {
    let server = TestServer::start().await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-entirely"),
    )
    .unwrap();
    let extra = format!("Authorization: Bearer {forged}\r\n");
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &extra)).await;
    assert_json_refusal(&response, 401, "token_bad_signature");
}

#[tokio::test]
async fn expired_token_is_401() {
    let server = TestServer::start().await;
    // Well past the 30 s leeway.
    let expired = mint("alice", None, -3600);
    let extra = format!("Authorization: Bearer {expired}\r\n");
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &extra)).await;
    assert_json_refusal(&response, 401, "token_expired");
}

#[tokio::test]
async fn alg_none_is_401() {
    let server = TestServer::start().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let claims = b64.encode(format!(r#"{{"sub":"alice","exp":{exp}}}"#));
    let token = format!("{header}.{claims}.");
    let extra = format!("Authorization: Bearer {token}\r\n");
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &extra)).await;
    assert_eq!(response.status, 401);
    let code = response.json()["error"]["code"].as_str().unwrap().to_string();
    assert!(code.starts_with("token_"), "refused as a token problem: {code}");
}

#[tokio::test]
async fn garbage_token_is_401_malformed() {
    let server = TestServer::start().await;
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws?token=not.a.jwt", "")).await;
    assert_json_refusal(&response, 401, "token_malformed");
}

#[tokio::test]
async fn wrong_origin_is_403_and_listed_origin_passes() {
    let server = TestServer::start_with(|c| c.auth.allowed_origins = vec!["https://app.example".into()]).await;
    let token = server.token("alice");
    let evil = format!("Origin: https://evil.example\r\nAuthorization: Bearer {token}\r\n");
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &evil)).await;
    assert_json_refusal(&response, 403, "origin_not_allowed");

    let good = format!("Origin: https://app.example\r\nAuthorization: Bearer {token}\r\n");
    let mut stream = tokio::net::TcpStream::connect(server.ws_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, upgrade_request(server.ws_addr, "/ws", &good).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");
}

#[tokio::test]
async fn over_connection_limit_is_503_with_retry_after() {
    let server = TestServer::start_with(|c| c.server.max_connections = 2).await;
    let (_a, _) = server.connect("alice").await;
    let (_b, _) = server.connect("bob").await;
    let extra = format!("Authorization: Bearer {}\r\n", server.token("carol"));
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &extra)).await;
    assert_json_refusal(&response, 503, "at_capacity");
    assert!(response.header("retry-after").is_some(), "503 carries Retry-After");
    // Closing one session frees its slot for the next client.
    drop(_a);
    let mut c = None;
    for _ in 0..100 {
        let url = format!("{}?token={}", server.ws_url(), server.token("carol"));
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await {
            c = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("a slot frees up after a disconnect");
    assert_eq!(recv(&mut c).await.0, action::HELLO);
    send_json(&mut c, action::PING, serde_json::json!({})).await;
    assert_eq!(recv(&mut c).await.0, action::PONG);
}

#[tokio::test]
async fn handshake_timeout_drops_silent_connections() {
    let server = TestServer::start_with(|c| c.server.handshake_timeout_ms = 300).await;
    let mut stream = tokio::net::TcpStream::connect(server.ws_addr).await.unwrap();
    // Half a request head, then nothing (slowloris).
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n =
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("server acted").unwrap_or(0);
    assert_eq!(n, 0, "dropped without a response");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout");
}

#[tokio::test]
async fn non_upgrade_requests_get_http_answers() {
    let server = TestServer::start().await;
    let plain = format!("GET /ws HTTP/1.1\r\nHost: {}\r\n\r\n", server.ws_addr);
    let response = raw_http(server.ws_addr, &plain).await;
    assert_json_refusal(&response, 426, "upgrade_required");
    let missing = format!("GET /nope HTTP/1.1\r\nHost: {}\r\n\r\n", server.ws_addr);
    assert_json_refusal(&raw_http(server.ws_addr, &missing).await, 404, "not_found");
    let post = format!("POST /ws HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n", server.ws_addr);
    assert_json_refusal(&raw_http(server.ws_addr, &post).await, 405, "method_not_allowed");
    let huge = format!("GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(10_000));
    assert_json_refusal(&raw_http(server.ws_addr, &huge).await, 431, "request_head_too_large");
}

#[tokio::test]
async fn hello_describes_the_session() {
    let server = TestServer::start().await;
    let (_ws, hello) = server.connect_device("alice", Some("phone-1")).await;
    assert_eq!(hello["user"], "alice");
    assert_eq!(hello["device"], "phone-1");
    assert!(hello["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(hello["heartbeat_secs"], server.config.session.heartbeat_secs);
    assert_eq!(hello["max_message_bytes"], server.config.session.max_message_bytes);
}

#[tokio::test]
async fn token_from_query_and_cookie() {
    let server = TestServer::start().await;
    for (path, extra) in [
        (format!("/ws?token={}", server.token("q-user")), String::new()),
        ("/ws".to_string(), format!("Cookie: theme=dark; pushgate_token={}\r\n", server.token("c-user"))),
    ] {
        let mut stream = tokio::net::TcpStream::connect(server.ws_addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, upgrade_request(server.ws_addr, &path, &extra).as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 101", "upgrade via {path} {extra}");
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[tokio::test]
async fn es256_public_key_with_issuer_and_audience() {
    let server = TestServer::start_with(|c| {
        c.auth.algorithm = pushgate::config::Algorithm::ES256;
        c.auth.public_key_file = Some(fixture("es256-public.pem"));
        c.auth.issuer = Some("https://id.example".into());
        c.auth.audience = Some("pushgate".into());
    })
    .await;
    let key =
        jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pk8.pem")).unwrap()).unwrap();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key).unwrap()
    };
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let good = sign(serde_json::json!({ "sub": "erin", "exp": exp, "iss": "https://id.example", "aud": "pushgate" }));
    let url = format!("{}?token={good}", server.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ES256 token accepted");
    assert_eq!(recv(&mut ws).await.1["user"], "erin");

    for (claims, code) in [
        (
            serde_json::json!({ "sub": "erin", "exp": exp, "iss": "https://evil.example", "aud": "pushgate" }),
            "token_wrong_issuer",
        ),
        (
            serde_json::json!({ "sub": "erin", "exp": exp, "iss": "https://id.example", "aud": "other" }),
            "token_wrong_audience",
        ),
        (
            serde_json::json!({ "sub": "erin", "exp": exp, "iss": "https://id.example", "aud": "pushgate", "nbf": exp }),
            "token_not_yet_valid",
        ),
    ] {
        let path = format!("/ws?token={}", sign(claims));
        assert_json_refusal(&raw_http(server.ws_addr, &upgrade_request(server.ws_addr, &path, "")).await, 401, code);
    }
    // An HS256 token (even with the right claims) is not accepted by an ES256 gateway.
    let path = format!("/ws?token={}", mint("erin", None, 600));
    assert_eq!(raw_http(server.ws_addr, &upgrade_request(server.ws_addr, &path, "")).await.status, 401);
}

/// Browsers resend cached Basic credentials on WebSocket handshakes, and
/// some clients send a Bearer scheme with no token: neither is ours, so the
/// token in the query string or the cookie still upgrades the connection.
#[tokio::test]
async fn foreign_or_empty_authorization_does_not_hide_query_or_cookie_token() {
    let server = TestServer::start().await;
    let addr = server.ws_addr;
    let basic = "Authorization: Basic dXNlcjpwYXNz\r\n";
    let cases = [
        ("basic-query", format!("/ws?token={}", server.token("basic-query")), basic.to_string()),
        (
            "bare-bearer-query",
            format!("/ws?token={}", server.token("bare-bearer-query")),
            "Authorization: Bearer\r\n".into(),
        ),
        ("basic-cookie", "/ws".into(), format!("{basic}Cookie: pushgate_token={}\r\n", server.token("basic-cookie"))),
    ];
    for (user, path, extra) in cases {
        let (mut ws, hello) = upgrade_raw(addr, upgrade_request(addr, &path, &extra).as_bytes()).await;
        assert_eq!(hello["user"], user, "{extra:?} {path}");
        send_json(&mut ws, action::PING, serde_json::json!({ "seq": 1 })).await;
        assert_eq!(recv(&mut ws).await.0, action::PONG);
    }
}

/// `server.max_request_head_bytes` is exact: a head of that many bytes is
/// served, one byte more is refused with 431, however much more was sent.
#[tokio::test]
async fn request_head_limit_is_exact() {
    let server = TestServer::start_with(|c| c.server.max_request_head_bytes = 10_000).await;
    let addr = server.ws_addr;
    let token = server.token("big-head");
    let head_of = |size: usize| {
        let headers = |pad: &str| format!("Authorization: Bearer {token}\r\nX-Pad: {pad}\r\n");
        let pad = size - upgrade_request(addr, "/ws", &headers("")).len();
        let request = upgrade_request(addr, "/ws", &headers(&"a".repeat(pad)));
        assert_eq!(request.len(), size);
        request
    };
    let (mut ws, hello) = upgrade_raw(addr, head_of(10_000).as_bytes()).await;
    assert_eq!(hello["user"], "big-head", "a head of exactly the limit is served");
    send_json(&mut ws, action::PING, serde_json::json!({})).await;
    assert_eq!(recv(&mut ws).await.0, action::PONG);
    for size in [10_001, 10_100, 16_000] {
        let (_, head) = raw_exchange(addr, head_of(size).as_bytes()).await;
        assert_eq!(status_of(&head), 431, "a head of {size} bytes: {head}");
    }
}

/// Bare LF line endings end the head like CRLF does (RFC 9112 section 2.2):
/// the request is answered at once, not after the handshake timeout.
#[tokio::test]
async fn bare_lf_request_head_is_answered_promptly() {
    let server = TestServer::start_with(|c| c.server.handshake_timeout_ms = 5000).await;
    let addr = server.ws_addr;
    let prompt = Duration::from_secs(2);
    let extra = format!("Authorization: Bearer {}\r\n", server.token("lf-user"));
    let request = upgrade_request(addr, "/ws", &extra).replace("\r\n", "\n");
    let (mut ws, hello) = tokio::time::timeout(prompt, upgrade_raw(addr, request.as_bytes()))
        .await
        .expect("a bare-LF upgrade is answered well before the 5 s handshake timeout");
    assert_eq!(hello["user"], "lf-user");
    send_json(&mut ws, action::PING, serde_json::json!({ "seq": 5 })).await;
    let (code, pong) = recv(&mut ws).await;
    assert_eq!((code, pong["seq"].as_u64()), (action::PONG, Some(5)));

    // Refusals too: a plain GET with bare LFs gets its 426 at once.
    let plain = format!("GET /ws HTTP/1.1\nHost: {addr}\n\n");
    let (_, head) =
        tokio::time::timeout(prompt, raw_exchange(addr, plain.as_bytes())).await.expect("a bare-LF refusal is prompt");
    assert_eq!(status_of(&head), 426, "{head}");
}

/// Signs arbitrary claims (and header) with the test secret.
fn sign_claims(header: &jsonwebtoken::Header, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(header, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// The status line of an upgrade attempt with `token`, and the refusal code.
async fn try_upgrade(server: &TestServer, token: &str) -> (u16, Option<String>) {
    let path = format!("/ws?token={token}");
    let mut stream = tokio::net::TcpStream::connect(server.ws_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, upgrade_request(server.ws_addr, &path, "").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    let status: u16 = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    if status == 101 {
        return (101, None);
    }
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, &path, "")).await;
    (response.status, response.json()["error"]["code"].as_str().map(str::to_string))
}

#[tokio::test]
async fn configured_issuer_and_audience_are_required() {
    let server = TestServer::start_with(|c| {
        c.auth.issuer = Some("https://id.example".into());
        c.auth.audience = Some("pushgate".into());
    })
    .await;
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let iss = "https://id.example";
    let header = jsonwebtoken::Header::default();
    for (claims, code) in [
        (serde_json::json!({ "sub": "erin", "exp": exp, "aud": "pushgate" }), Some("token_wrong_issuer")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": 5, "aud": "pushgate" }), Some("token_malformed")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss }), Some("token_wrong_audience")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss, "aud": null }), Some("token_malformed")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss, "aud": 5 }), Some("token_malformed")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss, "aud": ["other"] }), Some("token_wrong_audience")),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss, "aud": ["other", "pushgate"] }), None),
        (serde_json::json!({ "sub": "erin", "exp": exp, "iss": iss, "aud": "pushgate" }), None),
    ] {
        let (status, got) = try_upgrade(&server, &sign_claims(&header, claims.clone())).await;
        match code {
            Some(code) => assert_eq!((status, got.as_deref()), (401, Some(code)), "{claims}"),
            None => assert_eq!(status, 101, "{claims}"),
        }
    }
}

#[tokio::test]
async fn fractional_exp_nbf_iat_are_accepted() {
    let server = TestServer::start().await;
    let now = jsonwebtoken::get_current_timestamp() as f64;
    let header = jsonwebtoken::Header::default();
    for claims in [
        serde_json::json!({ "sub": "fay", "exp": now + 600.0 }),
        serde_json::json!({ "sub": "fay", "exp": now + 600.5, "nbf": now - 0.5, "iat": now - 0.25 }),
    ] {
        assert_eq!(try_upgrade(&server, &sign_claims(&header, claims.clone())).await, (101, None), "{claims}");
    }
    // Still refused when not a number at all.
    let claims = serde_json::json!({ "sub": "fay", "exp": "tomorrow" });
    assert_eq!(try_upgrade(&server, &sign_claims(&header, claims)).await, (401, Some("token_malformed".into())));
}

#[tokio::test]
async fn critical_header_is_401_malformed() {
    let server = TestServer::start().await;
    let header = jsonwebtoken::Header { crit: Some(vec!["b64".into()]), ..Default::default() };
    let claims = serde_json::json!({ "sub": "gus", "exp": jsonwebtoken::get_current_timestamp() + 600 });
    assert_eq!(try_upgrade(&server, &sign_claims(&header, claims)).await, (401, Some("token_malformed".into())));
}

/// A token accepted at the handshake thanks to the leeway is not closed as
/// expired at the first heartbeat: the session lasts until exp + leeway.
#[tokio::test]
async fn leeway_is_the_same_at_handshake_and_in_session() {
    let server = TestServer::start_with(|c| {
        c.auth.leeway_secs = 30;
        // This test is about the leeway: no TOKEN_EXPIRING in its silence.
        c.auth.expiry_warning_secs = 0;
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 10;
    })
    .await;
    let header = jsonwebtoken::Header::default();
    let connect = |past_exp: u64| {
        let exp = jsonwebtoken::get_current_timestamp() - past_exp;
        let url = format!(
            "{}?token={}",
            server.ws_url(),
            sign_claims(&header, serde_json::json!({ "sub": "hal", "exp": exp }))
        );
        async move { tokio_tungstenite::connect_async(url).await.expect("accepted within the leeway").0 }
    };
    // 10 s past exp: accepted, and still open after several heartbeats.
    let mut ws = connect(10).await;
    assert_eq!(recv(&mut ws).await.0, 1, "HELLO");
    expect_silence(&mut ws, Duration::from_millis(3500)).await;
    send_json(&mut ws, 2, serde_json::json!({})).await;
    assert_eq!(recv(&mut ws).await.0, 3, "PONG: the session survived its heartbeats");
    // 28 s past exp: the session ends with TOKEN_EXPIRED once exp + leeway passes.
    let mut ws = connect(28).await;
    assert_eq!(recv(&mut ws).await.0, 1, "HELLO");
    assert_eq!(expect_close(&mut ws).await, 4003);
}
