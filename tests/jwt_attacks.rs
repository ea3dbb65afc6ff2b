//! JWT attacks on the real handshake: algorithm confusion against
//! asymmetric setups, RS256 issuer/audience checks, and tokens broken in
//! every part. Each refusal must be a 401 with the documented code
//! (proto-spec/README.md, "Handshake refusals"), never a 5xx or a dropped
//! connection, and a well-behaved client keeps being served throughout.

mod common;

use base64::Engine;
use common::*;
use pushgate::config::Algorithm;
use pushgate::protocol::action;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn exp() -> u64 {
    jsonwebtoken::get_current_timestamp() + 600
}

/// A gateway verifying `algorithm` with the fixture public key `public`.
async fn asymmetric_server(algorithm: Algorithm, public: &str, claims_checked: bool) -> TestServer {
    let public = fixture(public);
    TestServer::start_with(move |c| {
        c.auth.algorithm = algorithm;
        c.auth.public_key_file = Some(public);
        if claims_checked {
            c.auth.issuer = Some("https://id.example".into());
            c.auth.audience = Some("pushgate".into());
        }
    })
    .await
}

/// A token with the given header and claims, HMAC-SHA256-signed with
/// `secret` whatever the header says: the forger's tool.
fn hmac_token(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("hmac sign");
    format!("{signing_input}.{signature}")
}

/// Status and refusal code of an upgrade with `Authorization: Bearer token`.
async fn attempt(server: &TestServer, token: &str) -> (u16, Option<String>) {
    let extra = format!("Authorization: Bearer {token}\r\n");
    let (_stream, head) = raw_exchange(server.ws_addr, upgrade_request(server.ws_addr, "/ws", &extra).as_bytes()).await;
    let status = status_of(&head);
    if status == 101 {
        return (101, None);
    }
    let response = raw_http(server.ws_addr, &upgrade_request(server.ws_addr, "/ws", &extra)).await;
    assert_eq!(response.status, status, "same answer twice");
    let length: usize = response.header("content-length").expect("Content-Length").parse().expect("length");
    assert_eq!(length, response.body.len(), "complete body");
    (status, response.json()["error"]["code"].as_str().map(str::to_string))
}

/// A client that connected before the attack: still answered.
async fn still_served(ws: &mut Ws, seq: u64) {
    send_json(ws, action::PING, json!({ "seq": seq })).await;
    let (code, pong) = recv(ws).await;
    assert_eq!((code, pong["seq"].as_u64()), (action::PONG, Some(seq)), "the bystander is still served");
}

/// After the attacks: health answers, and new clients still connect.
async fn server_is_healthy(server: &TestServer, good_token: &str) {
    let health = server.http().get(server.api("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    let url = format!("{}?token={good_token}", server.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("a fresh client connects");
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    still_served(&mut ws, 99).await;
}

fn rs256_key() -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pk8.pem")).expect("fixture"))
        .expect("RSA key")
}

fn es256_key() -> jsonwebtoken::EncodingKey {
    jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pk8.pem")).expect("fixture"))
        .expect("EC key")
}

fn sign(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).expect("sign")
}

/// The classic confusion: the verifier holds a public key, the attacker
/// signs HS256 with that public key's PEM bytes as the HMAC secret (and
/// its DER bytes, for verifiers that keep the key decoded). A library that
/// picks the algorithm from the token would accept it.
#[tokio::test]
async fn public_key_as_hmac_secret_is_refused() {
    for (algorithm, public, key, alg) in [
        (Algorithm::RS256, "rs256-public.pem", rs256_key(), jsonwebtoken::Algorithm::RS256),
        (Algorithm::ES256, "es256-public.pem", es256_key(), jsonwebtoken::Algorithm::ES256),
    ] {
        let server = asymmetric_server(algorithm.clone(), public, false).await;
        let claims = json!({ "sub": "mallory", "exp": exp() });
        let good = sign(alg, &key, &json!({ "sub": "bystander", "exp": exp() }));
        let url = format!("{}?token={good}", server.ws_url());
        let (mut bystander, _) = tokio_tungstenite::connect_async(url).await.expect("the real key is accepted");
        assert_eq!(recv(&mut bystander).await.0, action::HELLO);

        let pem = std::fs::read(fixture(public)).expect("public key");
        let der = {
            let text = String::from_utf8(pem.clone()).expect("PEM is text");
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            base64::engine::general_purpose::STANDARD.decode(body).expect("PEM body")
        };
        let trimmed = String::from_utf8(pem.clone()).expect("PEM is text").trim_end().as_bytes().to_vec();
        let mut seq = 0;
        for secret in [pem.clone(), trimmed, der] {
            for header in [json!({ "alg": "HS256", "typ": "JWT" }), json!({ "alg": "HS256" })] {
                let token = hmac_token(&header, &claims, &secret);
                assert_eq!(
                    attempt(&server, &token).await,
                    (401, Some("token_algorithm_not_allowed".into())),
                    "{algorithm:?} gateway, {header}"
                );
                seq += 1;
                still_served(&mut bystander, seq).await;
            }
            // The same HMAC under the configured algorithm's name: the
            // signature is checked with the public key and does not verify.
            let header = json!({ "alg": format!("{algorithm:?}"), "typ": "JWT" });
            let token = hmac_token(&header, &claims, &secret);
            let (status, code) = attempt(&server, &token).await;
            assert_eq!(status, 401, "{algorithm:?} name over an HMAC signature");
            assert!(
                matches!(code.as_deref(), Some("token_bad_signature" | "token_malformed")),
                "{algorithm:?} name over an HMAC signature: {code:?}"
            );
            seq += 1;
            still_served(&mut bystander, seq).await;
        }
        // Other algorithms the gateway was not configured for, and none.
        for alg in ["HS384", "HS512", "RS384", "PS256", "ES384", "EdDSA"] {
            let token = hmac_token(&json!({ "alg": alg }), &claims, &pem);
            assert_eq!(
                attempt(&server, &token).await,
                (401, Some("token_algorithm_not_allowed".into())),
                "{algorithm:?} gateway, alg {alg}"
            );
        }
        for alg in ["none", "None", "NONE", ""] {
            let token =
                format!("{}.{}.", B64.encode(json!({ "alg": alg }).to_string()), B64.encode(claims.to_string()));
            let (status, code) = attempt(&server, &token).await;
            assert_eq!(status, 401, "alg {alg:?}");
            assert!(
                matches!(code.as_deref(), Some("token_malformed" | "token_algorithm_not_allowed")),
                "alg {alg:?}: {code:?}"
            );
        }
        // The other asymmetric family's real signature is refused too.
        let (other_alg, other_key) = match algorithm {
            Algorithm::RS256 => (jsonwebtoken::Algorithm::ES256, es256_key()),
            _ => (jsonwebtoken::Algorithm::RS256, rs256_key()),
        };
        let token = sign(other_alg, &other_key, &claims);
        assert_eq!(attempt(&server, &token).await, (401, Some("token_algorithm_not_allowed".into())));
        still_served(&mut bystander, 1000).await;
        server_is_healthy(&server, &good).await;
    }
}

/// RS256 with issuer and audience configured (tests/handshake.rs covers
/// HS256 and ES256): the right token passes, every wrong claim gets its code.
#[tokio::test]
async fn rs256_issuer_and_audience_are_enforced() {
    let server = asymmetric_server(Algorithm::RS256, "rs256-public.pem", true).await;
    let key = rs256_key();
    let iss = "https://id.example";
    let exp = exp();
    let good = sign(
        jsonwebtoken::Algorithm::RS256,
        &key,
        &json!({ "sub": "ruth", "exp": exp, "iss": iss, "aud": "pushgate" }),
    );
    assert_eq!(attempt(&server, &good).await, (101, None));
    let url = format!("{}?token={good}", server.ws_url());
    let (mut bystander, _) = tokio_tungstenite::connect_async(url).await.expect("RS256 token accepted");
    assert_eq!(recv(&mut bystander).await.1["user"], "ruth");

    let cases = [
        (json!({ "sub": "m", "exp": exp, "iss": "https://evil.example", "aud": "pushgate" }), "token_wrong_issuer"),
        (json!({ "sub": "m", "exp": exp, "iss": "https://id.example/", "aud": "pushgate" }), "token_wrong_issuer"),
        (json!({ "sub": "m", "exp": exp, "iss": "HTTPS://ID.EXAMPLE", "aud": "pushgate" }), "token_wrong_issuer"),
        (json!({ "sub": "m", "exp": exp, "aud": "pushgate" }), "token_wrong_issuer"),
        (json!({ "sub": "m", "exp": exp, "iss": [iss], "aud": "pushgate" }), "token_malformed"),
        (json!({ "sub": "m", "exp": exp, "iss": iss, "aud": "pushgate-evil" }), "token_wrong_audience"),
        (json!({ "sub": "m", "exp": exp, "iss": iss, "aud": "Pushgate" }), "token_wrong_audience"),
        (json!({ "sub": "m", "exp": exp, "iss": iss }), "token_wrong_audience"),
        (json!({ "sub": "m", "exp": exp, "iss": iss, "aud": [] }), "token_wrong_audience"),
        (json!({ "sub": "m", "exp": exp, "iss": iss, "aud": [["pushgate"]] }), "token_malformed"),
        (json!({ "sub": "m", "exp": exp, "iss": iss, "aud": { "pushgate": true } }), "token_malformed"),
    ];
    for (i, (claims, code)) in cases.into_iter().enumerate() {
        let token = sign(jsonwebtoken::Algorithm::RS256, &key, &claims);
        assert_eq!(attempt(&server, &token).await, (401, Some(code.into())), "{claims}");
        still_served(&mut bystander, i as u64).await;
    }
    server_is_healthy(&server, &good).await;
}

/// Tokens broken in every part. Each is refused with 401 and a precise
/// code; nothing answers 5xx, drops the connection or panics the server.
#[tokio::test]
async fn malformed_tokens_are_401_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let (mut bystander, _) = server.connect("bystander").await;
    let claims = json!({ "sub": "mallory", "exp": exp() });
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let valid = hmac_token(&header, &claims, SECRET.as_bytes());
    assert_eq!(attempt(&server, &valid).await, (101, None), "the unbroken token upgrades");
    let parts: Vec<&str> = valid.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    let b64 = |bytes: &[u8]| B64.encode(bytes);
    let signed = |h: &str, p: &str| {
        let input = format!("{h}.{p}");
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("sign");
        format!("{input}.{sig}")
    };

    let malformed: Vec<(&str, String)> = vec![
        // Garbage base64 in each part (characters outside the URL-safe
        // alphabet, standard-alphabet characters, padding, impossible length).
        ("header: not base64", format!("!!!$$.{p}.{s}")),
        ("header: standard alphabet", format!("{}.{p}.{s}", h.replacen('e', "+", 1) + "/")),
        ("header: padded", format!("{h}==.{p}.{s}")),
        ("header: impossible length", format!("{}.{p}.{s}", "A".repeat(4 * 10 + 1))),
        // Payload garbage signed with the real key, so that the signature
        // verifies and the payload's decoding is what fails (unsigned, it
        // is a bad signature: see below).
        ("payload: not base64", signed(h, "%%%***")),
        ("payload: standard alphabet", signed(h, &(p.replacen('e', "+", 1) + "/"))),
        ("payload: padded", signed(h, &format!("{p}=="))),
        ("payload: impossible length", signed(h, &"A".repeat(4 * 10 + 1))),
        ("signature: not base64", format!("{h}.{p}.@@@@")),
        ("signature: impossible length", format!("{h}.{p}.{}", "A".repeat(4 * 10 + 1))),
        // Well-encoded but not JSON objects (signed, so only parsing can fail).
        ("header: not JSON", signed(&b64(b"not json"), p)),
        ("header: JSON array", signed(&b64(b"[\"HS256\"]"), p)),
        ("header: JSON string", signed(&b64(b"\"HS256\""), p)),
        ("header: truncated JSON", signed(&b64(br#"{"alg":"HS256""#), p)),
        ("header: no alg", signed(&b64(br#"{"typ":"JWT"}"#), p)),
        ("header: alg not a string", signed(&b64(br#"{"alg":256}"#), p)),
        ("header: invalid UTF-8", signed(&b64(b"{\"alg\":\"HS256\",\"x\":\"\xff\xfe\"}"), p)),
        ("payload: not JSON", signed(h, &b64(b"not json"))),
        ("payload: JSON array", signed(h, &b64(b"[1,2,3]"))),
        ("payload: JSON number", signed(h, &b64(b"42"))),
        ("payload: empty", signed(h, "")),
        ("payload: truncated JSON", signed(h, &b64(br#"{"sub":"mallory","exp":"#))),
        ("payload: invalid UTF-8", signed(h, &b64(b"{\"sub\":\"\xc3\x28\",\"exp\":9999999999}"))),
        ("payload: deep nesting", signed(h, &b64(format!("{}{}", "[".repeat(1500), "]".repeat(1500)).as_bytes()))),
        // Wrong number of segments, empty segments.
        ("extra segment", format!("{valid}.{s}")),
        ("two extra segments", format!("{valid}.a.b")),
        ("trailing dot", format!("{valid}.")),
        ("two segments", format!("{h}.{p}")),
        ("one segment", h.to_string()),
        ("only dots", "..".into()),
        ("four dots", "....".into()),
        ("empty header", format!(".{p}.{s}")),
        ("empty header and payload", format!("..{s}")),
        ("single character", "x".into()),
        ("JWE-shaped (five parts)", format!("{h}.{p}.{s}.{s}.{s}")),
    ];
    let mut wrong = Vec::new();
    for (i, (what, token)) in malformed.iter().enumerate() {
        let got = attempt(&server, token).await;
        if got != (401, Some("token_malformed".into())) {
            wrong.push(format!("{what}: {got:?} for {}", &token[..token.len().min(120)]));
        }
        still_served(&mut bystander, i as u64).await;
    }
    assert!(wrong.is_empty(), "not 401 token_malformed:\n{}", wrong.join("\n"));

    // Broken signatures on a well-formed token: refused as such.
    let bad_signatures = [
        ("signature: empty", format!("{h}.{p}.")),
        ("signature: flipped", format!("{h}.{p}.{}", flip_first(s))),
        ("signature: truncated", format!("{h}.{p}.{}", b64(&B64.decode(s).expect("signature")[..29]))),
        ("signature: other key", hmac_token(&header, &claims, b"not-the-secret")),
        ("signature: another token's", format!("{h}.{}.{s}", b64(br#"{"sub":"admin","exp":9999999999}"#))),
        // Garbage in the payload without the key: the signature is checked
        // before the payload is decoded, so a forger only learns this.
        ("unsigned payload: not base64", format!("{h}.%%%***.{s}")),
        ("unsigned payload: not JSON", format!("{h}.{}.{s}", b64(b"not json"))),
    ];
    for (what, token) in &bad_signatures {
        assert_eq!(attempt(&server, token).await, (401, Some("token_bad_signature".into())), "{what}: {token}");
    }
    still_served(&mut bystander, 500).await;
    server_is_healthy(&server, &server.token("after")).await;
}

fn flip_first(s: &str) -> String {
    let first = if s.starts_with('A') { 'B' } else { 'A' };
    format!("{first}{}", &s[1..])
}
