//! Tokens during a long session (TOKEN_REFRESH 9, TOKEN_EXPIRING 10) and
//! revocation (`POST /v1/users/{id}/revoke`, close 4006), against a real
//! server with real clients.

mod common;

use common::*;
use pushgate::protocol::{action, close, error_code};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A token with chosen `iat` and lifetime (seconds from now).
fn token(user: &str, device: Option<&str>, iat_ago: i64, ttl: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut claims = json!({ "sub": user, "exp": now + ttl, "iat": now - iat_ago });
    if let Some(device) = device {
        claims["device"] = device.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// Connects with `token`; the HELLO, or the HTTP refusal's status and body.
async fn connect_with(server: &TestServer, token: &str) -> Result<Ws, (u16, Value)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut ws, _)) => {
            assert_eq!(recv(&mut ws).await.0, action::HELLO);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// Short tokens are closed quickly: no leeway, a heartbeat every second.
async fn short_lived_server(warning_secs: u64) -> TestServer {
    TestServer::start_with(move |c| {
        c.auth.leeway_secs = 0;
        c.auth.expiry_warning_secs = warning_secs;
        c.session.heartbeat_secs = 1;
        c.session.idle_timeout_secs = 30;
    })
    .await
}

/// Next frame that is not a PONG.
async fn next(ws: &mut Ws) -> (u32, Value) {
    loop {
        let frame = recv(ws).await;
        if frame.0 != action::PONG {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_refreshed_session_outlives_its_first_token() {
    let server = short_lived_server(0).await;
    let mut ws = connect_with(&server, &token("alice", None, 0, 3)).await.expect("connect");
    send_json(&mut ws, action::TOKEN_REFRESH, json!({ "token": token("alice", None, 0, 60), "seq": 4 })).await;
    let (code, reply) = next(&mut ws).await;
    assert_eq!(code, action::TOKEN_REFRESH, "{reply}");
    assert_eq!(reply["seq"], 4);
    let now = jsonwebtoken::get_current_timestamp();
    assert!(reply["expires_at"].as_u64().is_some_and(|at| at >= now + 55), "{reply}");
    // Past the first token's expiry (3 s) plus heartbeats: still served.
    tokio::time::sleep(Duration::from_secs(5)).await;
    send_json(&mut ws, action::PING, json!({ "seq": 1 })).await;
    assert_eq!(recv(&mut ws).await.0, action::PONG);

    // Without a refresh the same token closes the session with 4003.
    let started = Instant::now();
    let mut ws = connect_with(&server, &token("alice", None, 0, 2)).await.expect("connect");
    assert_eq!(expect_close(&mut ws).await, close::TOKEN_EXPIRED);
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn the_gateway_warns_before_the_token_expires() {
    let server = short_lived_server(3).await;
    let mut ws = connect_with(&server, &token("bob", None, 0, 4)).await.expect("connect");
    let (code, warning) = next(&mut ws).await;
    assert_eq!(code, action::TOKEN_EXPIRING, "{warning}");
    let now = jsonwebtoken::get_current_timestamp();
    assert!(warning["expires_in_secs"].as_u64().is_some_and(|s| s <= 3), "{warning}");
    assert!(warning["expires_at"].as_u64().is_some_and(|at| at > now && at <= now + 4), "{warning}");
    // Refreshing answers and the session lives on; a new warning comes for
    // the new token only near its own end.
    send_json(&mut ws, action::TOKEN_REFRESH, json!({ "token": token("bob", None, 0, 60) })).await;
    assert_eq!(next(&mut ws).await.0, action::TOKEN_REFRESH);
    expect_silence(&mut ws, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_bad_refresh_is_an_error_and_the_old_expiry_stays() {
    let server = short_lived_server(0).await;
    let mut ws = connect_with(&server, &token("carol", Some("phone"), 0, 3)).await.expect("connect");
    let cases = [
        (json!({ "token": token("mallory", Some("phone"), 0, 60), "seq": 1 }), error_code::TOKEN_WRONG_USER),
        (json!({ "token": token("carol", Some("laptop"), 0, 60), "seq": 2 }), error_code::TOKEN_WRONG_DEVICE),
        (json!({ "token": token("carol", Some("phone"), 120, -60), "seq": 3 }), "token_expired"),
        (json!({ "token": "not.a.jwt", "seq": 4 }), "token_malformed"),
        (json!({ "seq": 5 }), error_code::BAD_PAYLOAD),
    ];
    for (request, code) in cases {
        send_json(&mut ws, action::TOKEN_REFRESH, request.clone()).await;
        let (action_code, error) = next(&mut ws).await;
        assert_eq!(action_code, action::ERROR, "{request}: {error}");
        assert_eq!(error["code"], code, "{request}: {error}");
        assert_eq!(error["action"], action::TOKEN_REFRESH, "{error}");
        assert_eq!(error["seq"], request["seq"], "{error}");
    }
    // A signature by another key is refused like at the handshake.
    let forged = {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({ "sub": "carol", "device": "phone", "exp": now + 60, "iat": now });
        let key = jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-some-length");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    send_json(&mut ws, action::TOKEN_REFRESH, json!({ "token": forged })).await;
    assert_eq!(next(&mut ws).await.1["code"], "token_bad_signature");
    // None of them extended the session.
    assert_eq!(expect_close(&mut ws).await, close::TOKEN_EXPIRED);
}

#[tokio::test]
async fn revoking_closes_sessions_and_refuses_older_tokens_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path().to_path_buf());
    let mut server = TestServer::start_config(config.clone()).await;
    let old = token("dan", None, 5, 3600);
    let mut first = connect_with(&server, &old).await.expect("connect");
    let mut second = connect_with(&server, &old).await.expect("connect");
    let (status, answer) = server.post("/v1/users/dan/revoke", json!({})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["closed"], 2, "{answer}");
    for ws in [&mut first, &mut second] {
        assert_eq!(expect_close(ws).await, close::REVOKED);
    }
    let refused = connect_with(&server, &old).await.expect_err("old token refused");
    assert_eq!(refused.0, 401, "{:?}", refused.1);
    assert_eq!(refused.1["error"]["code"], "token_revoked", "{:?}", refused.1);
    // A token issued from now on works; refreshing it with the old one does not.
    let mut ws = connect_with(&server, &token("dan", None, 0, 3600)).await.expect("a new token connects");
    send_json(&mut ws, action::TOKEN_REFRESH, json!({ "token": old, "seq": 1 })).await;
    assert_eq!(next(&mut ws).await.1["code"], error_code::TOKEN_REVOKED);
    // Other users are untouched.
    connect_with(&server, &token("erin", None, 5, 3600)).await.expect("another user");
    drop(ws);

    server.stop(pushgate::Shutdown::Immediate).await;
    let server = TestServer::start_config(config).await;
    let refused = connect_with(&server, &old).await.expect_err("still refused after a restart");
    assert_eq!(refused.1["error"]["code"], "token_revoked");
    assert_eq!(server.post("/v1/users/bad%20id/revoke", json!({})).await.0, 400);
}
