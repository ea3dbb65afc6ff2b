//! The public listener: accept, negotiate (HTTP head -> decision -> 101 or a
//! refusal), then hand the socket to a session task.

mod console;
mod echo;
mod forwarded;
mod handshake;
mod http;
mod refresh;
mod rejection;
mod replay;
mod session;

/// A header map from pairs, for the unit tests of this module's parts.
#[cfg(test)]
fn test_headers(pairs: &[(&'static str, &str)]) -> ::http::HeaderMap {
    let mut map = ::http::HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, v.parse().expect("test header value"));
    }
    map
}
pub use handshake::{Decision, Inputs, decide};

/// The client address of an upgrade request (forwarded, from a trusted
/// proxy), for the per-address caps of endpoints `decide` does not record
/// it for.
fn client_ip(request: &::http::Request<()>, peer: SocketAddr, trusted: &[crate::config::Cidr]) -> Option<IpAddr> {
    forwarded::client_ip(request.headers(), peer.ip(), trusted)
}
pub use rejection::Rejection;

use crate::admission::AddressSlot;
use crate::listener::Slot;
use crate::metrics;
use crate::registry::SessionHandle;
use crate::state::AppState;
use crate::transport::{Outbox, QueueLimits, SessionSocket};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::task::TaskTracker;

/// Accepts until the future is dropped (which closes the listener).
/// Connection tasks are spawned on `tracker` so shutdown can wait for them.
/// A handshake slot is taken before each accept (`server.max_handshakes`
/// to serve, `server.refusal_slots` to answer 503): past both, connections
/// wait in the backlog. An upgraded connection moves to a session slot
/// (`server.max_connections`) before its 101 and gives back its handshake
/// slot, so the process holds no more sockets than configured, and
/// unauthenticated sockets never hold a session's place.
pub async fn accept_loop(listener: TcpListener, state: Arc<AppState>, tracker: TaskTracker) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let slot = state.handshakes.next().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // Small frames must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                match state.handshakes.promote(slot) {
                    // Spawned as the function's own future, not wrapped in an
                    // async block: a block keeps its captures' slots next to
                    // the inner future for the connection's whole life.
                    Slot::Serve(permit) => tracker.spawn(connection(stream, peer, state.clone(), permit)),
                    Slot::Refuse(permit) => tracker.spawn(async move {
                        metrics::handshake("at_capacity");
                        let rejection = Rejection::Unavailable(crate::http_wire::Unavailable::AtCapacity);
                        crate::listener::refuse_at_capacity(stream, rejection.message()).await;
                        drop(permit);
                    }),
                };
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning,
                // and keep serving the connections we have (mini-redis).
                tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// What a connection holds: a slot (handshake, then session) and, for a
/// counted address, its place in the per-address count (likewise).
struct Admitted<'a> {
    _permit: OwnedSemaphorePermit,
    address: Option<AddressSlot<'a>>,
}

/// Serves one public connection. `permit` is its handshake slot; once
/// upgraded, it holds a session slot instead until the connection ends, and
/// likewise its per-address count moves from handshakes to sessions.
async fn connection(mut stream: TcpStream, peer: SocketAddr, state: Arc<AppState>, permit: OwnedSemaphorePermit) {
    // Trusted proxies are not counted: their clients' addresses are only
    // known from the request head (see config/pushgate.toml).
    let mut held = Admitted { _permit: permit, address: None };
    if !state.is_trusted_proxy(peer.ip()) {
        match state.handshakes_per_ip.try_take(peer.ip()) {
            Some(slot) => held.address = Some(slot),
            None => {
                let rejection = Rejection::Unavailable(crate::http_wire::Unavailable::HandshakesPerAddress);
                metrics::handshake(rejection.outcome());
                // Answered at once without reading or lingering: a flood
                // from one address must not hold slots with its refusals.
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIME, http::reject(&mut stream, &rejection)).await;
                return;
            }
        }
    }
    let deadline = state.config.handshake_timeout();
    let (decision, leftover, admitted) =
        match tokio::time::timeout(deadline, negotiate(&mut stream, peer, &state)).await {
            Ok(Some(negotiated)) => negotiated,
            Ok(None) => return,
            Err(_) => {
                // Slowloris and half-open clients: just drop the socket.
                metrics::handshake("timeout");
                return;
            }
        };
    // Replaced in place (one set of slots in the connection's future): the
    // handshake slot and its per-address count are given back here.
    drop(std::mem::replace(&mut held, admitted));
    let config = Some(state.ws_config);
    match decision {
        Decision::Session { identity, user_agent, remote, forwarded_for, resume, .. } => {
            let registry = &state.registry;
            let handle = Arc::new(SessionHandle {
                id: registry.next_session_id(),
                user: identity.user,
                device: identity.device,
                connected_at_ms: crate::clock::unix_ms(),
                remote,
                forwarded_for,
                user_agent,
                outbox: Outbox::new(QueueLimits {
                    frames: state.config.session.queue_capacity,
                    bytes: state.config.session.queue_max_bytes,
                }),
            });
            let socket = SessionSocket::new(stream, handle.clone());
            let ws = WebSocketStream::from_partially_read(socket, leftover, Role::Server, config).await;
            session::run(ws, handle, identity.expires_at, resume, &state).await;
        }
        Decision::Echo { .. } => {
            echo::run(WebSocketStream::from_partially_read(stream, leftover, Role::Server, config).await).await;
        }
        Decision::Page(_) | Decision::DevToken(_) => {}
    }
}

/// Bound on writing a refusal that is not lingered over.
const REFUSAL_WRITE_TIME: Duration = Duration::from_millis(100);

/// A session slot and the client address's count for an upgrade, or why
/// not. The client address is the forwarded one behind a trusted proxy; a
/// trusted proxy's own address is never counted.
fn admit<'a>(state: &'a AppState, peer: SocketAddr, forwarded_for: Option<IpAddr>) -> Result<Admitted<'a>, Rejection> {
    use crate::http_wire::Unavailable;
    let client = forwarded_for.or_else(|| (!state.is_trusted_proxy(peer.ip())).then_some(peer.ip()));
    let address = match client {
        Some(ip) => {
            Some(state.sessions_per_ip.try_take(ip).ok_or(Rejection::Unavailable(Unavailable::ConnectionsPerAddress))?)
        }
        None => None,
    };
    let permit =
        state.sessions.clone().try_acquire_owned().map_err(|_| Rejection::Unavailable(Unavailable::AtCapacity))?;
    Ok(Admitted { _permit: permit, address })
}

/// Reads the request head and answers it. Returns the decision when the
/// connection was upgraded, with the bytes read past the head and the slots
/// the upgrade took.
async fn negotiate<'a>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    state: &'a AppState,
) -> Option<(Decision, Vec<u8>, Admitted<'a>)> {
    let head = match http::read_head(stream, state.config.server.max_request_head_bytes).await {
        Ok(head) => head,
        Err(http::HeadError::Closed) => return None,
        Err(http::HeadError::Reject(rejection)) => {
            metrics::handshake(rejection.outcome());
            http::reject(stream, &rejection).await;
            return None;
        }
    };
    let inputs = Inputs {
        server: &state.config.server,
        auth_config: &state.config.auth,
        auth: &state.auth,
        peer,
        draining: state.is_draining(),
        dev_tokens: state.config.server.console && state.config.uses_dev_secret(),
        admission: &state.admission,
        trusted_proxies: &state.trusted_proxies,
        revocations: &state.revocations,
    };
    match decide(&head.request, &inputs) {
        Err(rejection) => {
            metrics::handshake(rejection.outcome());
            tracing::debug!(%peer, code = rejection.code(), "handshake refused");
            http::reject(stream, &rejection).await;
            None
        }
        Ok(Decision::Page(asset)) => {
            let _ = crate::http_wire::respond(
                stream,
                200,
                &[("Cache-Control", "no-cache")],
                asset.content_type,
                asset.body,
            )
            .await;
            None
        }
        Ok(Decision::DevToken(user)) => {
            dev_token(stream, user.as_deref(), state).await;
            None
        }
        Ok(decision) => {
            let (key, forwarded_for) = match &decision {
                Decision::Session { accept_key, forwarded_for, .. } => (accept_key, *forwarded_for),
                Decision::Echo { accept_key } => (accept_key, client_ip(&head.request, peer, &state.trusted_proxies)),
                Decision::Page(_) | Decision::DevToken(_) => return None,
            };
            // A session slot (and the address's count) before the 101.
            let admitted = match admit(state, peer, forwarded_for) {
                Ok(admitted) => admitted,
                Err(rejection) => {
                    metrics::handshake(rejection.outcome());
                    tracing::debug!(%peer, code = rejection.code(), "upgrade refused");
                    http::reject(stream, &rejection).await;
                    return None;
                }
            };
            http::switching_protocols(stream, key).await.ok()?;
            metrics::handshake("accepted");
            Some((decision, head.leftover, admitted))
        }
    }
}

/// Answers `/dev/token`: a probe (no user) says dev tokens are available; with
/// `user` it returns a one-hour token. Only reachable with the development
/// secret, which lets anyone mint tokens anyway.
async fn dev_token(stream: &mut TcpStream, user: Option<&str>, state: &AppState) {
    let (status, body) = match user {
        None => (200, serde_json::json!({ "dev_tokens": true, "usage": "/dev/token?user=ID" })),
        Some(user) => match state.auth.mint(user, None, 3600) {
            Ok(token) => (200, serde_json::json!({ "user": user, "token": token })),
            Err(message) => (400, serde_json::json!({ "error": { "code": "invalid_user", "message": message } })),
        },
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let _ =
        crate::http_wire::respond(stream, status, &[("Cache-Control", "no-store")], "application/json", &body).await;
}
