//! End to end through a real nginx (Debian's) running the shipped
//! deploy/nginx/pushgate.conf, TLS included: HELLO, 111, a push from the
//! internal API, and the real client address from X-Forwarded-For.
//! .ci/run installs nginx; a missing nginx fails the test, never skips it.

mod common;

use common::*;
use pushgate::protocol::action;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The client's own loopback address: distinct from nginx's (127.0.0.1) so
/// the test can tell the forwarded address from the proxy's.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx not found: apt-get install nginx (.ci/run does)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "shipped nginx config no longer contains {from:?}; update tests/nginx.rs");
    text.replacen(from, to, 1)
}

struct Nginx {
    child: tokio::process::Child,
    tls: SocketAddr,
    http: SocketAddr,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(gateway: SocketAddr) -> Nginx {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = common::tls::self_signed(dir.path());

        let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let shipped = std::fs::read_to_string(root.join("deploy/nginx/pushgate.conf")).unwrap();
        let mut site = replace_once(
            &shipped,
            "    server 127.0.0.1:8080 max_fails=3 fail_timeout=10s;",
            &format!("    server {gateway} max_fails=3 fail_timeout=10s;"),
        );
        site = replace_once(&site, "    listen 443 ssl;", &format!("    listen {tls} ssl;"));
        site = replace_once(&site, "    listen [::]:443 ssl;\n", "");
        site = replace_once(&site, "    listen 80;", &format!("    listen {http};"));
        site = replace_once(&site, "    listen [::]:80;\n", "");
        site = replace_once(&site, "/etc/ssl/certs/push.example.com.pem", cert.to_str().unwrap());
        site = replace_once(&site, "/etc/ssl/private/push.example.com.key", key.to_str().unwrap());
        site = replace_once(
            &site,
            "include /etc/nginx/snippets/pushgate-proxy.conf;",
            &format!("include {};", root.join("deploy/nginx/pushgate-proxy.conf").display()),
        );
        std::fs::write(dir.path().join("pushgate.conf"), site).unwrap();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
        let d = dir.path().display();
        let main = format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {d}/pushgate.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let check = std::process::Command::new(nginx_binary())
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .output()
            .unwrap();
        assert!(check.status.success(), "nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        let child = tokio::process::Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            // nginx logs to its own files; inheriting our pipes would let an
            // orphaned worker hold the test harness's output open.
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx starts");
        for _ in 0..100 {
            if TcpStream::connect(tls).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx { child, tls, http, cert, _dir: dir }
    }

    fn tls_connector(&self) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_file(&self.cert).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connector::Rustls(Arc::new(config))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too (SIGKILL would orphan them).
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}

async fn socket_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn websocket_through_nginx_with_real_client_address() {
    let server = TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let nginx = Nginx::start(server.ws_addr).await;

    let mut request = format!("wss://localhost:{}/ws", nginx.tls.port()).into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {}", server.token("alice")).parse().unwrap());
    // A client-supplied X-Forwarded-For must not win over what nginx saw.
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let stream = socket_from(CLIENT_IP, nginx.tls).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(nginx.tls_connector()))
            .await
            .expect("upgrade through nginx");
    let (code, hello) = recv(&mut ws).await;
    assert_eq!((code, hello["user"].as_str()), (action::HELLO, Some("alice")));

    send_json(&mut ws, action::FETCH_INFO, json!({ "seq": 5 })).await;
    let (code, reply) = recv(&mut ws).await;
    assert_eq!((code, reply["seq"].as_u64(), reply["user"].as_str()), (action::FETCH_INFO, Some(5), Some("alice")));

    let (status, body) = server.post("/v1/push", json!({ "users": ["alice"], "payload": { "via": "nginx" } })).await;
    assert_eq!((status, body["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(recv(&mut ws).await, (action::PUSH, json!({ "via": "nginx" })));

    let (_, listing) = server.get("/v1/users/alice/sessions").await;
    let session = &listing["sessions"][0];
    assert_eq!(session["remote_addr"], CLIENT_IP.to_string(), "client address from X-Forwarded-For: {listing}");
    assert!(session["peer_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "the direct peer is nginx");

    // Plain HTTP redirects to HTTPS; the internal API is not reachable via nginx.
    let redirect = raw_http(nginx.http, "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(redirect.status, 301);
    let stream = socket_from(CLIENT_IP, nginx.tls).await;
    let connector = match nginx.tls_connector() {
        Connector::Rustls(config) => tokio_rustls_connector(config),
        _ => unreachable!(),
    };
    let mut tls = connector.connect("localhost".try_into().unwrap(), stream).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await
        .unwrap();
    let mut response = vec![0u8; 12];
    tokio::time::timeout(WAIT, tls.read_exact(&mut response)).await.expect("answer in time").unwrap();
    assert!(response.starts_with(b"HTTP/1.1 404"), "API not proxied: {}", String::from_utf8_lossy(&response));
}

fn tokio_rustls_connector(config: Arc<rustls::ClientConfig>) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(config)
}

#[tokio::test]
async fn forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = TestServer::start_with(|c| c.server.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", server.token("mallory")).parse().unwrap());
    request.headers_mut().insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    request.headers_mut().insert("x-real-ip", "203.0.113.10".parse().unwrap());
    let stream = socket_from(CLIENT_IP, server.ws_addr).await;
    let local = stream.local_addr().unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(recv(&mut ws).await.0, action::HELLO);
    let (_, listing) = server.get("/v1/users/mallory/sessions").await;
    assert_eq!(listing["sessions"][0]["remote_addr"], local.to_string(), "the socket peer, not the header");
}
