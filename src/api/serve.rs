//! The internal API's accept loop: the axum router on HTTP/1.1 connections
//! we drive ourselves, so that each connection is polled through
//! [`SelfWake`] (see there for the measured reason).

use super::self_wake::SelfWake;
use crate::config::ApiConfig;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause after a failed accept (out of file descriptors, usually) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves until `stop` is cancelled, then lets every connection finish its
/// in-flight request and returns once all are closed. At most
/// `api.max_connections` are open at once; one more gets a 503 and is closed.
/// HTTP/1.1 only, as before (axum's default build served no HTTP/2 either).
pub async fn serve(listener: TcpListener, router: Router, config: &ApiConfig, stop: CancellationToken) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "internal API accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // Responses are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(slot) => connections.spawn(connection(stream, router.clone(), idle_timeout, slot, stop.clone())),
            Err(_) => connections.spawn(refuse(stream)),
        };
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn refuse(stream: TcpStream) {
    crate::metrics::get().api_refused.increment(1);
    crate::listener::refuse(stream, "at_capacity", "internal API is at its connection limit, retry later").await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    // hyper's header read timeout runs whenever the connection waits for a
    // request head, so it also ends idle keep-alive connections.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    let mut conn = std::pin::pin!(conn);
    let self_wake = SelfWake::default();
    let mut stopping = false;
    loop {
        tokio::select! {
            result = std::future::poll_fn(|cx| self_wake.poll(conn.as_mut(), cx)) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "internal API connection failed");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
