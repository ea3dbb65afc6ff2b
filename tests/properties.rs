//! Property tests and the fuzz harness for everything that parses client or
//! backend bytes: the frame codec (`Frame::decode`, `encode`, `encode_json`),
//! every built-in payload parser through the public `HandlerTable::dispatch`
//! (real `EmbeddedStore` in a tempdir, real `Registry` as router), and the
//! push API's body parser through a real server (`/v1/push`,
//! `/v1/push/batch`, `/v1/broadcast`), and the same frames over a real
//! session socket.
//!
//! Runs on stable. `PROPTEST_CASES` sets the cases per property (default
//! 256); `PROPTEST_CASES=1000000 cargo test --test properties` fuzzes for
//! longer. A failure is shrunk to a minimal input and its seed saved in
//! `tests/fuzz-corpus/regressions.txt` (replayed first on every run: commit
//! it); inputs worth keeping for good go in `tests/fuzz-corpus/frames/` (a
//! raw binary frame: 4-byte action + payload) or `tests/fuzz-corpus/push/`
//! (a raw API body), which `corpus_*` tests replay on every run.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use pushgate::handlers::{Caller, Ctx, HandlerTable};
use pushgate::inbox::{EmbeddedInbox, Inbox};
use pushgate::protocol::{Frame, FrameError, HEADER_LEN, action, encode, encode_json, error_code};
use pushgate::registry::Registry;
use pushgate::store::EmbeddedStore;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// Actions with a built-in handler; PING is answered by PONG, the others
/// under their own code.
const BUILTIN: [u32; 6] = [
    action::PING,
    action::ACK,
    action::ADD_FRIEND,
    action::FETCH_INFO,
    action::DECLINE_FRIEND,
    action::CANCEL_FRIEND_REQUEST,
];

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/fuzz-corpus/regressions.txt"))),
        ..ProptestConfig::default()
    }
}

/// Runs `property` over `strategy` and panics with the shrunk input on failure.
fn check<S: Strategy>(name: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    // The regressions file holds RNG seeds, shared by all properties: each
    // replays every saved seed through its own strategy first.
    if let Err(e) = TestRunner::new(config()).run(&strategy, property) {
        panic!("{name}: {e}");
    }
}

// ---------- strategies ----------

/// Any JSON value without floats (they do not round-trip bit-exactly through
/// text without serde_json's float_roundtrip; integers at both extremes do).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[a-z\"\\\\ \t\n/]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_ \"\\\\]{0,6}|seq|friend|user|message", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a request field: the right type, the wrong type, edge values.
fn field() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        "[a-z0-9_.@:-]{1,12}".prop_map(|s| Some(Value::from(s))),
        Just(Some(json!("alice"))),
        Just(Some(json!(""))),
        Just(Some(Value::from("x".repeat(129)))),
        Just(Some(Value::from("m".repeat(513)))),
        any::<u64>().prop_map(|n| Some(Value::from(n))),
        any::<i64>().prop_map(|n| Some(Value::from(n))),
        Just(Some(json!(u64::MAX))),
        Just(Some(json!(18_446_744_073_709_551_616.0))),
        Just(Some(json!(-0.5))),
        json_value().prop_map(Some),
    ]
}

/// A request payload as clients send it: a JSON object with the fields the
/// built-in handlers read, each of any type, plus unknown fields.
fn request_object() -> impl Strategy<Value = Vec<u8>> {
    let fields = (field(), field(), field(), field(), field(), field(), field());
    (fields, prop::collection::btree_map("[a-z]{1,4}", json_value(), 0..3)).prop_map(
        |((seq, friend, user, message, from, upto, ids), extra)| {
            let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
            let named = [
                ("seq", seq),
                ("friend", friend),
                ("user", user),
                ("message", message),
                ("from", from),
                ("upto", upto),
                ("ids", ids),
            ];
            for (key, value) in named {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object).to_string().into_bytes()
        },
    )
}

/// Valid JSON broken in one place: truncated, a byte replaced, a byte inserted.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (base, any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(mut bytes, at, byte, how)| {
        if bytes.is_empty() {
            return vec![byte];
        }
        let i = at.index(bytes.len());
        match how {
            0 => bytes.truncate(i),
            1 => bytes[i] = byte,
            _ => bytes.insert(i, byte),
        }
        bytes
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        request_object(),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| serde_json::to_vec_pretty(&v).expect("json")),
        mutated(request_object()),
        prop::collection::vec(prop::sample::select(b" \t\r\n{}[]\",:0-9eE.+-tfnul\\".to_vec()), 0..24),
    ]
}

fn client_action() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            action::HELLO,
            action::PING,
            action::PONG,
            action::ERROR,
            action::RECONNECT,
            action::ADD_FRIEND,
            action::FETCH_INFO,
            action::PUSH,
            999,
            1000,
            u32::MAX
        ]),
        0..300u32,
        any::<u32>(),
    ]
}

// ---------- frame codec ----------

#[test]
fn decode_accepts_exactly_the_frames_with_a_header_and_reencodes_them() {
    check("decode", prop::collection::vec(any::<u8>(), 0..48), |bytes| {
        match Frame::decode(Bytes::from(bytes.clone())) {
            Ok(frame) => {
                prop_assert!(bytes.len() >= HEADER_LEN);
                prop_assert_eq!(frame.action, u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                prop_assert_eq!(&frame.payload[..], &bytes[HEADER_LEN..]);
                prop_assert_eq!(&frame.encode()[..], &bytes[..]);
            }
            Err(FrameError::TooShort { len }) => {
                prop_assert!(bytes.len() < HEADER_LEN);
                prop_assert_eq!(len, bytes.len());
            }
        }
        Ok(())
    });
}

#[test]
fn encode_then_decode_is_the_identity() {
    check("encode", (any::<u32>(), prop::collection::vec(any::<u8>(), 0..256)), |(action, payload)| {
        let bytes = encode(action, &payload);
        prop_assert_eq!(bytes.len(), HEADER_LEN + payload.len());
        let frame = Frame::decode(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(frame, Frame { action, payload: Bytes::from(payload) });
        Ok(())
    });
}

#[test]
fn encode_json_round_trips_every_value() {
    check("encode_json", (any::<u32>(), json_value()), |(action, value)| {
        let frame = Frame::decode(encode_json(action, &value)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(frame.action, action);
        prop_assert_eq!(&frame.payload[..], &serde_json::to_vec(&value).expect("json")[..], "compact JSON");
        let back: Value = serde_json::from_slice(&frame.payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, value);
        Ok(())
    });
}

// ---------- built-in payload parsers, through dispatch ----------

struct Dispatcher {
    rt: tokio::runtime::Runtime,
    table: HandlerTable,
    ctx: Ctx,
    _dir: tempfile::TempDir,
}

impl Dispatcher {
    fn new() -> Dispatcher {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let defaults = pushgate::config::Config::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let inbox = rt
            .block_on(EmbeddedInbox::open(&store, dir.path(), pushgate::inbox::LogOptions::default()))
            .expect("inbox");
        let ctx = Ctx {
            store: Arc::new(store),
            router: Arc::new(Registry::new("prop")),
            inbox: Arc::new(Inbox::new(Arc::new(inbox), &defaults.inbox)),
            max_message_bytes: defaults.session.max_message_bytes,
            social: defaults.social,
        };
        Dispatcher { rt, table: HandlerTable::with_builtins(), ctx, _dir: dir }
    }

    /// Dispatches one frame and checks the answer: PONG gets none, every
    /// other frame gets a valid frame; an ERROR names the request's action
    /// and carries code/message/action/seq; a reply is the action's reply
    /// code with a JSON object echoing the request's seq.
    /// Every action with a built-in handler (the table the gateway serves).
    fn check(&self, action: u32, payload: &[u8]) -> Result<(), TestCaseError> {
        let caller = Caller { user: "alice", device: "default", session_id: 1 };
        let frame = Frame { action, payload: Bytes::copy_from_slice(payload) };
        let reply = self.rt.block_on(self.table.dispatch(&self.ctx, caller, frame));
        if action == action::PONG {
            prop_assert!(reply.is_none(), "a stray PONG is not answered");
            return Ok(());
        }
        // The request's seq, as a reader of the request would find it.
        let request_seq = serde_json::from_slice::<Value>(payload).ok().and_then(|v| v.get("seq")?.as_u64());
        if action == action::ACK && reply.is_none() {
            // An accepted ACK is answered only when it asks (seq).
            prop_assert!(request_seq.is_none(), "an ACK with seq went unanswered");
            return Ok(());
        }
        let reply = reply.ok_or_else(|| TestCaseError::fail("no answer"))?;
        let reply = Frame::decode(reply).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| TestCaseError::fail(format!("answer is not JSON ({e}): {:?}", reply.payload)))?;
        let object = body.as_object().ok_or_else(|| TestCaseError::fail(format!("not an object: {body}")))?;
        if reply.action == action::ERROR {
            let code = object.get("code").and_then(Value::as_str).unwrap_or("<missing>");
            prop_assert!(error_code::ALL.contains(&code), "unknown error code {code:?}: {body}");
            prop_assert!(object.get("message").and_then(Value::as_str).is_some_and(|m| !m.is_empty()), "{}", body);
            prop_assert_eq!(object.get("action").and_then(Value::as_u64), Some(u64::from(action)), "{}", body);
            let seq = object.get("seq").ok_or_else(|| TestCaseError::fail(format!("no seq key: {body}")))?;
            prop_assert!(seq.is_null() || seq.is_u64(), "{}", body);
            if let (Some(seq), Some(want)) = (seq.as_u64(), request_seq) {
                prop_assert_eq!(seq, want, "{}", body);
            }
            let builtin = BUILTIN.contains(&action);
            let want = if builtin { code != error_code::UNKNOWN_ACTION } else { code == error_code::UNKNOWN_ACTION };
            prop_assert!(want, "{code} for action {action}");
        } else {
            let expected = match action {
                action::PING => action::PONG,
                other if BUILTIN.contains(&other) => action,
                other => return Err(TestCaseError::fail(format!("action {other} answered with {}", reply.action))),
            };
            prop_assert_eq!(reply.action, expected);
            if let Some(want) = request_seq {
                prop_assert_eq!(object.get("seq").and_then(Value::as_u64), Some(want), "{}", body);
            }
        }
        Ok(())
    }
}

#[test]
fn dispatch_answers_every_frame_with_a_valid_frame() {
    let d = Dispatcher::new();
    check("dispatch", (client_action(), payload()), |(action, payload)| d.check(action, &payload));
}

/// The built-in actions only, with structured requests: reaches the typed
/// parsers and the handlers behind them far more often.
#[test]
fn builtin_requests_of_any_shape_are_answered() {
    let d = Dispatcher::new();
    let actions = prop::sample::select(BUILTIN.to_vec());
    check("builtins", (actions, prop_oneof![request_object(), mutated(request_object())]), |(action, payload)| {
        d.check(action, &payload)
    });
}

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    let inputs: Vec<_> = files
        .into_iter()
        .map(|path| (path.display().to_string(), std::fs::read(&path).expect("corpus file")))
        .collect();
    assert!(inputs.len() >= 10, "the corpus in {} has {} inputs", dir.display(), inputs.len());
    inputs
}

#[test]
fn corpus_frames_are_answered() {
    let d = Dispatcher::new();
    for (name, bytes) in corpus("frames") {
        match Frame::decode(Bytes::from(bytes.clone())) {
            Ok(frame) => d.check(frame.action, &frame.payload).unwrap_or_else(|e| panic!("{name}: {e}")),
            Err(FrameError::TooShort { len }) => assert!(len < HEADER_LEN, "{name}"),
        }
    }
}

// ---------- push API bodies, through the real server ----------

const PUSH_PATHS: [&str; 3] = ["/v1/push", "/v1/push/batch", "/v1/broadcast"];

/// A message as a backend might send it: each field of any type.
fn push_message() -> impl Strategy<Value = Value> {
    let users = prop_oneof![
        prop::collection::vec("[a-z0-9_.@:-]{1,8}", 0..4).prop_map(Value::from),
        Just(json!(["", "ok"])),
        Just(json!([1, 2])),
        json_value(),
    ];
    let push_action = prop_oneof![
        Just(json!(200)),
        Just(json!(1000)),
        Just(json!(4)),
        any::<u32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        json_value()
    ];
    let b64 =
        prop_oneof![Just(json!("aGVsbG8=")), Just(json!("not base64!")), "[A-Za-z0-9+/=]{0,12}".prop_map(Value::from)];
    (prop::option::of(users), prop::option::of(push_action), prop::option::of(json_value()), prop::option::of(b64))
        .prop_map(|(users, action, payload, b64)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("users", users), ("action", action), ("payload", payload), ("payload_b64", b64)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

fn push_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        push_message().prop_map(|m| m.to_string().into_bytes()),
        prop::collection::vec(push_message(), 0..3).prop_map(|ms| json!({ "messages": ms }).to_string().into_bytes()),
        mutated(push_message().prop_map(|m| m.to_string().into_bytes())),
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

struct Api {
    rt: tokio::runtime::Runtime,
    server: TestServer,
    client: reqwest::Client,
}

impl Api {
    fn new() -> Api {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        // Thousands of frames on one session in a few seconds: well over the
        // per-session frame rate, which tests/rate_limit.rs covers on its own.
        let server = rt.block_on(TestServer::start_with(|c| {
            c.session.max_frames_per_sec = 1_000_000;
            c.session.frame_burst = 1_000_000;
        }));
        Api { rt, server, client: reqwest::Client::new() }
    }

    /// POSTs `body` to `path`: any answer but a 5xx, always a JSON body,
    /// and an error object with a code on every refusal.
    fn check(&self, path: &str, body: &[u8]) -> Result<(), TestCaseError> {
        let (status, text) = self.rt.block_on(async {
            let response = self
                .client
                .post(self.server.api(path))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .expect("the API answers");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("body"))
        });
        prop_assert!(matches!(status, 200 | 400 | 413 | 422), "{path}: status {status}: {:?}", text);
        let answer: Value = serde_json::from_slice(&text).map_err(|e| TestCaseError::fail(format!("{path}: {e}")))?;
        if status != 200 {
            prop_assert!(answer["error"]["code"].is_string(), "{path}: {answer}");
        }
        Ok(())
    }

    fn healthy(&self) {
        let status = self.rt.block_on(async {
            self.client.get(self.server.api("/healthz")).send().await.expect("healthz").status().as_u16()
        });
        assert_eq!(status, 200);
    }
}

#[test]
fn push_bodies_of_any_shape_are_answered_without_5xx() {
    let api = Api::new();
    check("push_bodies", (prop::sample::select(PUSH_PATHS.to_vec()), push_body()), |(path, body)| {
        api.check(path, &body)
    });
    api.healthy();
}

#[test]
fn corpus_push_bodies_are_answered_without_5xx() {
    let api = Api::new();
    for (name, body) in corpus("push") {
        for path in PUSH_PATHS {
            api.check(path, &body).unwrap_or_else(|e| panic!("{name} to {path}: {e}"));
        }
    }
    api.healthy();
}

/// A payload however formatted arrives compact (`compact()` in
/// `api/push.rs`), under the pushed action, with the value unchanged; a
/// `payload_b64` arrives as its bytes.
#[test]
fn pushed_payloads_arrive_compact_and_unchanged() {
    let api = Api::new();
    let (ws, _) = api.rt.block_on(api.server.connect("prop-target"));
    let ws = tokio::sync::Mutex::new(ws);
    let pushable = prop_oneof![200..300u32, 1000..u32::MAX];
    let content = prop_oneof![
        (json_value(), any::<bool>()).prop_map(|(v, pretty)| (Some((v, pretty)), None)),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| (None, Some(b))),
    ];
    check("push_delivery", (pushable, content), |(push_action, (json, raw))| {
        use base64::Engine;
        let (field, expected) = match (&json, &raw) {
            (Some((value, pretty)), _) => {
                let text = if *pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
                (format!("\"payload\":{}", text.expect("json")), serde_json::to_vec(value).expect("json"))
            }
            (None, Some(bytes)) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                (format!("\"payload_b64\":\"{b64}\""), bytes.clone())
            }
            (None, None) => unreachable!(),
        };
        // Written by hand so that the pretty text reaches the server as is.
        let body = format!("{{\"users\":[\"prop-target\"],\"action\":{push_action},{field}}}");
        let (status, answer, frame) = api.rt.block_on(async {
            let response = api
                .client
                .post(api.server.api("/v1/push"))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("push");
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let frame = if status == 200 { Some(recv_raw(&mut *ws.lock().await).await) } else { None };
            (status, answer, frame)
        });
        prop_assert_eq!(status, 200, "{}: {}", body, answer);
        prop_assert_eq!(answer["delivered"].as_u64(), Some(1), "{}", answer);
        let (got_action, got) = frame.ok_or_else(|| TestCaseError::fail("no frame"))?;
        prop_assert_eq!(got_action, push_action);
        prop_assert_eq!(got, expected, "{}", body);
        Ok(())
    });
}

/// Found by `pushed_payloads_arrive_compact_and_unchanged`: `"payload":
/// null` was read as no payload and pushed as an empty frame. It is JSON,
/// so it is sent as `null`, and with `payload_b64` it is "not both".
#[tokio::test]
async fn a_null_payload_is_pushed_as_null() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.connect("nil").await;
    let (status, answer) = server.post("/v1/push", json!({ "users": ["nil"], "payload": null })).await;
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)), "{answer}");
    assert_eq!(recv_raw(&mut ws).await, (action::PUSH, b"null".to_vec()));
    let (status, answer) =
        server.post("/v1/push", json!({ "users": ["nil"], "payload": null, "payload_b64": "" })).await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = server.post("/v1/push", json!({ "users": ["nil"] })).await;
    assert_eq!(status, 200);
    assert_eq!(recv_raw(&mut ws).await, (action::PUSH, Vec::new()), "no payload key: an empty payload");
}

/// The same frames over a real session socket, plus messages too short to
/// be frames: each is answered by exactly one frame (none for a PONG), an
/// ERROR with the request's action or `frame_too_short`, and the session
/// stays open (a PING with a fresh seq is answered after every input).
#[test]
fn frames_over_a_real_session_are_answered_and_it_stays_open() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let api = Api::new();
    let (ws, _) = api.rt.block_on(api.server.connect("prop-socket"));
    let ws = tokio::sync::Mutex::new(ws);
    let marker = std::sync::atomic::AtomicU64::new(1 << 60);
    let message = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..HEADER_LEN),
        (client_action(), payload()).prop_map(|(a, p)| encode(a, &p).to_vec()),
    ];
    check("session", message, |bytes| {
        let seq = marker.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answers = api.rt.block_on(async {
            let mut ws = ws.lock().await;
            ws.send(Message::Binary(bytes.clone().into())).await.expect("send");
            send_json(&mut ws, action::PING, json!({ "seq": seq })).await;
            let mut answers = Vec::new();
            loop {
                let (code, payload) = recv_raw(&mut ws).await;
                let body: Value = serde_json::from_slice(&payload).expect("every answer is JSON");
                if code == action::PONG && body["seq"].as_u64() == Some(seq) {
                    return answers;
                }
                answers.push((code, body));
            }
        });
        if bytes.len() < HEADER_LEN {
            prop_assert_eq!(answers.len(), 1, "{:?}", answers);
            prop_assert_eq!(answers[0].0, action::ERROR);
            prop_assert_eq!(answers[0].1["code"].as_str(), Some(error_code::FRAME_TOO_SHORT), "{:?}", answers);
            return Ok(());
        }
        let request = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        prop_assert_eq!(answers.len(), usize::from(request != action::PONG), "{:?}", answers);
        if let Some((code, body)) = answers.first()
            && *code == action::ERROR
        {
            prop_assert_eq!(body["action"].as_u64(), Some(u64::from(request)), "{}", body);
            prop_assert!(body["code"].as_str().is_some_and(|c| error_code::ALL.contains(&c)), "{}", body);
        }
        Ok(())
    });
    api.healthy();
}
