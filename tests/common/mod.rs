//! Test harness: a real pushgate on ephemeral loopback ports, real WebSocket
//! clients (tokio-tungstenite) and a real HTTP client (reqwest).
#![allow(dead_code)]

pub mod disk;
pub mod process;
pub mod redis_server;
pub mod tls;

use futures_util::{SinkExt, StreamExt};
use pushgate::config::Config;
use pushgate::protocol::action;
use pushgate::{Listeners, Shutdown};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key-0123456789abcdef";
pub const WAIT: Duration = Duration::from_secs(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub ws_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub config: Config,
    stop: Option<oneshot::Sender<Shutdown>>,
    task: Option<JoinHandle<Result<(), pushgate::Error>>>,
    _dir: Option<tempfile::TempDir>,
}

pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config::default();
    config.auth.secret = SECRET.into();
    config.api.key = API_KEY.into();
    config.server.data_dir = data_dir;
    config.server.shutdown_timeout_ms = 5000;
    config
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path().to_path_buf());
        tweak(&mut config);
        let mut server = TestServer::start_config(config).await;
        server._dir = Some(dir);
        server
    }

    /// Starts on a given config (its data_dir is kept as is).
    pub async fn start_config(config: Config) -> TestServer {
        TestServer::start_extended(config, pushgate::Extensions::default()).await
    }

    /// Starts on a given config with an embedder's extensions.
    pub async fn start_extended(config: Config, extensions: pushgate::Extensions) -> TestServer {
        let public = pushgate::listener::bind("127.0.0.1:0".parse().unwrap(), 1024).expect("bind ws");
        let api = pushgate::listener::bind("127.0.0.1:0".parse().unwrap(), 1024).expect("bind api");
        let ws_addr = public.local_addr().unwrap();
        let api_addr = api.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let shutdown = async move { rx.await.unwrap_or(Shutdown::Immediate) };
        let task = tokio::spawn(pushgate::run_with(config.clone(), Listeners { public, api }, shutdown, extensions));
        TestServer { ws_addr, api_addr, config, stop: Some(tx), task: Some(task), _dir: None }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(&mut self, mode: Shutdown) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(mode);
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("run returned in time")
                .expect("run task")
                .expect("run ok");
        }
    }

    /// Aborts the node's `run` without a shutdown, as close to a crash as
    /// one process allows: its cluster tasks die with it (no cleanup).
    pub fn abort(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.http().delete(self.api(path)).bearer_auth(API_KEY).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn token(&self, user: &str) -> String {
        mint(user, None, 3600)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws_addr)
    }

    /// Connects as `user` with a Bearer token and returns the socket and HELLO.
    pub async fn connect(&self, user: &str) -> (Ws, Value) {
        self.connect_device(user, None).await
    }

    pub async fn connect_device(&self, user: &str, device: Option<&str>) -> (Ws, Value) {
        let mut request = self.ws_url().into_client_request().unwrap();
        let token = mint(user, device, 3600);
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request.headers_mut().insert("user-agent", "pushgate-tests/1.0".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
        let (first, hello) = recv(&mut ws).await;
        assert_eq!(first, action::HELLO, "first frame must be HELLO");
        (ws, hello)
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.api_addr)
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// POST with the API key; returns status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.http().post(self.api(path)).bearer_auth(API_KEY).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http().get(self.api(path)).bearer_auth(API_KEY).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Shutdown::Immediate);
        }
    }
}

/// Signs an HS256 token with the test secret.
pub fn mint(user: &str, device: Option<&str>, ttl: i64) -> String {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut claims = serde_json::json!({ "sub": user, "exp": now + ttl, "iat": now });
    if let Some(device) = device {
        claims["device"] = device.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn frame(action: u32, payload: &[u8]) -> Message {
    let mut bytes = action.to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    Message::Binary(bytes.into())
}

pub async fn send_json(ws: &mut Ws, action: u32, value: Value) {
    ws.send(frame(action, value.to_string().as_bytes())).await.expect("send");
}

/// Next binary frame as (action, JSON payload); skips control frames.
pub async fn recv(ws: &mut Ws) -> (u32, Value) {
    let (action, payload) = recv_raw(ws).await;
    let value = if payload.is_empty() { Value::Null } else { serde_json::from_slice(&payload).expect("json payload") };
    (action, value)
}

pub async fn recv_raw(ws: &mut Ws) -> (u32, Vec<u8>) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("frame in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                assert!(bytes.len() >= 4, "frame shorter than header");
                let action = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                return (action, bytes[4..].to_vec());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code.
pub async fn expect_close(ws: &mut Ws) -> u16 {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next()).await.expect("close in time");
        match message {
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return code.into(),
            Some(Ok(Message::Close(None))) => panic!("close without a code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Asserts no binary frame arrives within `wait`.
pub async fn expect_silence(ws: &mut Ws, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }
}

/// A raw HTTP exchange: sends `request` verbatim, reads to EOF.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

pub async fn raw_http(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await.expect("response in time").unwrap();
    let text_end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("complete head");
    let head = String::from_utf8_lossy(&buf[..text_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    RawResponse { status, headers, body: buf[text_end + 4..].to_vec() }
}

/// An upgrade request for `path` with extra header lines (each ending \r\n).
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// Sends `request` verbatim on a fresh connection and reads the response
/// head up to its blank line, not a byte further (what follows belongs to
/// the WebSocket). Write errors are ignored: a server refusing an oversized
/// head may stop reading before the client has written it all.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("response head in time");
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// The status code of a response head ("HTTP/1.1 101 ..." -> 101).
pub fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {head:?}"))
}

/// Upgrades with a hand-written request: asserts 101, then HELLO, and
/// returns the client WebSocket and the HELLO payload.
pub async fn upgrade_raw(addr: SocketAddr, request: &[u8]) -> (Ws, Value) {
    let (stream, head) = raw_exchange(addr, request).await;
    assert_eq!(status_of(&head), 101, "upgraded: {head}");
    let mut ws = WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    let (first, hello) = recv(&mut ws).await;
    assert_eq!(first, action::HELLO, "first frame must be HELLO");
    (ws, hello)
}

/// The sum of the node's metric lines that start with `name` (every label
/// set of it; 0 when there is none).
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
