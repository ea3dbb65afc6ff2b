//! The undelivered-message webhook against a real HTTP endpoint served by
//! the test: what fires and what does not, the signature, retries, giving
//! up, a restart before the due time, two cluster nodes, and an endpoint
//! that hangs while pushes go on.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::redis_server::RedisServer;
use common::*;
use pushgate::protocol::action;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    event_id: String,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("event JSON")
    }
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once it runs out.
    answers: VecDeque<u16>,
    /// Hold every answer this long.
    hang: Option<Duration>,
}

/// A real HTTP endpoint on a free port.
struct Endpoint {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _task: tokio::task::JoinHandle<()>,
    tls: bool,
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Endpoint {
    async fn start(answers: &[u16], hang: Option<Duration>) -> Endpoint {
        Endpoint::start_with(answers, hang, None).await
    }

    /// With `tls` (certificate and key PEM files): HTTPS.
    async fn start_with(
        answers: &[u16],
        hang: Option<Duration>,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Endpoint {
        let script =
            Arc::new(Mutex::new(Script { answers: answers.iter().copied().collect(), hang, ..Script::default() }));
        async fn hook(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let (status, hang) = {
                let mut s = script.lock().unwrap();
                let status = s.answers.pop_front().unwrap_or(200);
                let received = Received {
                    signature: header("pushgate-signature"),
                    event_id: header("pushgate-event-id"),
                    body: body.to_vec(),
                    status,
                };
                s.received.push(received);
                (status, s.hang)
            };
            if let Some(hang) = hang {
                tokio::time::sleep(hang).await;
            }
            StatusCode::from_u16(status).unwrap()
        }
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some((cert, key)) => {
                let acceptor = tls_acceptor(cert, key);
                tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let service = hyper_util::service::TowerToHyperService::new(app);
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                        });
                    }
                })
            }
        };
        Endpoint { addr, script, _task: task, tls: tls.is_some() }
    }

    fn url(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}/hook", self.addr.port()),
            false => format!("http://{}/hook", self.addr),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

fn configure(c: &mut pushgate::config::Config, url: String, delay_ms: u64) {
    c.webhook.url = Some(url);
    c.webhook.secret = WEBHOOK_SECRET.into();
    c.webhook.delay_ms = delay_ms;
    c.webhook.scan_interval_ms = 50;
    c.webhook.backoff_initial_ms = 50;
    c.webhook.backoff_max_ms = 200;
    c.webhook.timeout_ms = 1000;
}

async fn durable(server: &TestServer, user: &str, n: u64) -> u64 {
    let body = json!({ "users": [user], "persist": true, "action": 200, "payload": { "n": n } });
    let (status, answer) = server.post("/v1/push", body).await;
    assert_eq!(status, 200, "{answer}");
    answer["message_ids"][user].as_u64().expect("message id")
}

async fn resume(server: &TestServer, user: &str, device: &str) -> Ws {
    let mut request = format!("ws://{}/ws?resume=1", server.ws_addr).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", mint(user, Some(device), 3600)).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    ws
}

/// Waits until `check` holds on what the endpoint received.
async fn wait_received(endpoint: &Endpoint, what: &str, limit: Duration, check: impl Fn(&[Received]) -> bool) {
    let deadline = Instant::now() + limit;
    while !check(&endpoint.received()) {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}: {:?}", endpoint.received());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn message_status(server: &TestServer, user: &str, id: u64) -> Value {
    server.get(&format!("/v1/users/{user}/messages/{id}")).await.1
}

/// Polls the message's status until its webhook is in `state`; returns it.
async fn wait_webhook(server: &TestServer, user: &str, id: u64, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = message_status(server, user, id).await;
        if status["webhook"]["state"] == state {
            return status;
        }
        assert!(Instant::now() < deadline, "webhook not {state}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unacked_message_fires_a_signed_webhook_and_an_acked_one_does_not() {
    let endpoint = Endpoint::start(&[], None).await;
    let url = endpoint.url();
    let server = TestServer::start_with(move |c| configure(c, url, 600)).await;
    // The phone is known (it connected once) and then away; the laptop is online.
    drop(resume(&server, "amy", "phone").await);
    let mut laptop = resume(&server, "amy", "laptop").await;
    assert_eq!(recv(&mut laptop).await.0, action::SYNCED);
    let unacked = durable(&server, "amy", 1).await;
    let acked = {
        let body = json!({ "users": ["amy"], "persist": true, "ack": "user", "payload": { "n": 2 } });
        server.post("/v1/push", body).await.1["message_ids"]["amy"].as_u64().unwrap()
    };
    // The laptop gets both live and acks the second only (ack: user retires it).
    for _ in 0..2 {
        assert_eq!(recv_raw(&mut laptop).await.0, action::MESSAGE);
    }
    send_json(&mut laptop, action::ACK, json!({ "ids": [acked], "seq": 1 })).await;
    assert_eq!(recv(&mut laptop).await.0, action::ACK);

    wait_received(&endpoint, "the webhook", Duration::from_secs(10), |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = endpoint.received();
    assert_eq!(received.len(), 1, "only the unacked message: {received:?}");
    let hook = &received[0];
    let now = jsonwebtoken::get_current_timestamp();
    assert!(
        pushgate::webhook::sign::verify(WEBHOOK_SECRET.as_bytes(), &hook.signature, &hook.body, now, 300),
        "signature {} over {:?}",
        hook.signature,
        String::from_utf8_lossy(&hook.body)
    );
    let event = hook.json();
    assert_eq!(event["id"], hook.event_id.as_str(), "{event}");
    assert_eq!((event["type"].clone(), event["user"].clone()), (json!("message.undelivered"), json!("amy")));
    assert_eq!((event["message_id"].clone(), event["action"].clone()), (json!(unacked), json!(200)), "{event}");
    let devices = event["devices"].as_array().expect("devices");
    let reason = |d: &str| devices.iter().find(|x| x["device"] == d).map(|x| x["reason"].clone());
    assert_eq!(reason("phone"), Some(json!("no_live_session")), "{event}");
    assert_eq!(reason("laptop"), Some(json!("not_acked")), "{event}");
    assert_eq!(event["attempt"], 1);

    // A late ack after the webhook is recorded; the status shows both.
    send_json(&mut laptop, action::ACK, json!({ "ids": [unacked], "seq": 2 })).await;
    assert_eq!(recv(&mut laptop).await.0, action::ACK);
    let status = message_status(&server, "amy", unacked).await;
    assert_eq!(status["webhook"]["state"], "delivered", "{status}");
    assert_eq!(status["webhook"]["event_id"], hook.event_id.as_str(), "{status}");
    assert_eq!(status["devices"]["laptop"]["state"], "acked", "{status}");
    assert!(status["webhook"]["last_attempt_at"].as_u64() < status["devices"]["laptop"]["acked_at"].as_u64());
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_event_id_then_given_up() {
    let endpoint = Endpoint::start(&[500, 500, 200], None).await;
    let url = endpoint.url();
    let server = TestServer::start_with(move |c| configure(c, url, 0)).await;
    let id = durable(&server, "ben", 1).await;
    wait_received(&endpoint, "three attempts", Duration::from_secs(10), |r| r.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = endpoint.received();
    assert_eq!(received.iter().map(|r| r.status).collect::<Vec<_>>(), [500, 500, 200], "exactly one success");
    assert!(received.iter().all(|r| r.event_id == received[0].event_id), "one event id across retries");
    assert_eq!(
        received.iter().map(|r| r.json()["attempt"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)]
    );
    let status = message_status(&server, "ben", id).await;
    assert_eq!(
        (status["webhook"]["state"].clone(), status["webhook"]["attempts"].clone()),
        (json!("delivered"), json!(3))
    );

    // Nothing listens: the bound is reached, given up, counted, visible.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = TestServer::start_with(move |c| {
        configure(c, format!("http://{dead}/hook"), 0);
        c.webhook.max_attempts = 3;
    })
    .await;
    let id = durable(&server, "cal", 1).await;
    let status = wait_webhook(&server, "cal", id, "given_up").await;
    assert_eq!(status["webhook"]["attempts"], 3, "{status}");
    assert!(status["webhook"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{status}");
    let metrics = server.http().get(server.api("/metrics")).bearer_auth(API_KEY).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("pushgate_webhooks_given_up_total"), "{metrics}");
}

#[tokio::test]
async fn a_restart_before_the_due_time_still_fires_once() {
    let endpoint = Endpoint::start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_path_buf());
    configure(&mut config, endpoint.url(), 1500);
    let mut server = TestServer::start_config(config.clone()).await;
    let id = durable(&server, "dee", 1).await;
    server.stop(pushgate::Shutdown::Immediate).await;
    assert!(endpoint.received().is_empty(), "not due yet");
    let server = TestServer::start_config(config).await;
    assert_eq!(server.get("/readyz").await.0, 200, "restarted");
    wait_received(&endpoint, "the webhook after the restart", Duration::from_secs(10), |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let received = endpoint.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].json()["message_id"], id);
    assert_eq!(message_status(&server, "dee", id).await["webhook"]["state"], "delivered");
}

#[tokio::test]
async fn two_cluster_nodes_send_one_webhook_per_message() {
    let endpoint = Endpoint::start(&[], None).await;
    let redis = RedisServer::start();
    let start = |id: &'static str| {
        let (url, hook) = (redis.url(), endpoint.url());
        TestServer::start_with(move |c| {
            c.cluster.redis_url = Some(url);
            c.server.node_id = id.into();
            c.cluster.timeout_ms = 1000;
            configure(c, hook, 300);
        })
    };
    let (a, b) = (start("a").await, start("b").await);
    let mut ids = Vec::new();
    for n in 0..20 {
        let server = if n % 2 == 0 { &a } else { &b };
        ids.push(durable(server, "eve", n).await);
    }
    wait_received(&endpoint, "20 webhooks", Duration::from_secs(15), |r| r.len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut got: Vec<u64> = endpoint.received().iter().map(|r| r.json()["message_id"].as_u64().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, ids, "each message exactly once across both nodes");
}

#[tokio::test]
async fn an_endpoint_that_hangs_never_slows_pushes() {
    let endpoint = Endpoint::start(&[], Some(Duration::from_secs(30))).await;
    let url = endpoint.url();
    let server = TestServer::start_with(move |c| {
        configure(c, url, 0);
        c.webhook.max_in_flight = 2;
    })
    .await;
    let (mut ws, _) = server.connect("fay").await;
    for n in 0..100 {
        let started = Instant::now();
        durable(&server, "gil", n).await;
        let (status, _) = server.post("/v1/push", json!({ "users": ["fay"], "payload": { "n": n } })).await;
        assert_eq!(status, 200);
        assert_eq!(recv(&mut ws).await.1, json!({ "n": n }));
        assert!(started.elapsed() < Duration::from_secs(2), "push {n} took {:?}", started.elapsed());
    }
    // Two attempts hang at the endpoint; the rest wait their turn.
    assert!(endpoint.received().len() <= 2, "{}", endpoint.received().len());
}

/// HTTPS: an endpoint on a private CA is reached with `webhook.ca_file`;
/// without it (system roots) the certificate is refused, and the status
/// says why.
#[tokio::test]
async fn an_https_endpoint_is_reached_with_its_ca_and_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed(dir.path());
    let endpoint = Endpoint::start_with(&[], None, Some((&cert, &key))).await;
    let (url, ca) = (endpoint.url(), cert.clone());
    let server = TestServer::start_with(move |c| {
        configure(c, url, 0);
        c.webhook.ca_file = Some(ca);
    })
    .await;
    let id = durable(&server, "hal", 1).await;
    wait_received(&endpoint, "the webhook over TLS", Duration::from_secs(10), |r| !r.is_empty()).await;
    assert_eq!(endpoint.received()[0].json()["message_id"], id);

    let url = endpoint.url();
    let untrusted = TestServer::start_with(move |c| {
        configure(c, url, 0);
        c.webhook.max_attempts = 1;
    })
    .await;
    let id = durable(&untrusted, "ian", 1).await;
    let status = wait_webhook(&untrusted, "ian", id, "given_up").await;
    assert_eq!(endpoint.received().len(), 1, "nothing reached the endpoint without trusting its CA");
    assert!(status["webhook"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{status}");
}

/// Retries that were under way end when the device acks: the status says
/// settled, and no attempt follows.
#[tokio::test]
async fn an_ack_between_retries_settles_the_webhook() {
    let endpoint = Endpoint::start(&[500, 500, 500], None).await;
    let url = endpoint.url();
    let server = TestServer::start_with(move |c| {
        configure(c, url, 0);
        c.webhook.backoff_initial_ms = 1500;
        c.webhook.backoff_max_ms = 1500;
    })
    .await;
    drop(resume(&server, "joy", "phone").await);
    let id = durable(&server, "joy", 1).await;
    wait_received(&endpoint, "the first attempt", Duration::from_secs(10), |r| !r.is_empty()).await;
    let mut phone = resume(&server, "joy", "phone").await;
    assert_eq!(recv_raw(&mut phone).await.0, action::MESSAGE);
    assert_eq!(recv(&mut phone).await.0, action::SYNCED);
    send_json(&mut phone, action::ACK, json!({ "ids": [id], "seq": 1 })).await;
    assert_eq!(recv(&mut phone).await.0, action::ACK);
    wait_webhook(&server, "joy", id, "settled").await;
    assert_eq!(endpoint.received().len(), 1, "no attempt after the ack");
}
