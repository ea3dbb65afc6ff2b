//! The internal API's accept loop: the axum router on HTTP/1.1 connections
//! we drive ourselves, so that each connection is polled through
//! [`SelfWake`] (see there for the measured reason).

use super::self_wake::SelfWake;
use super::watchdog::{Progress, Watched};
use crate::config::ApiConfig;
use crate::listener::{Slot, Slots};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause after a failed accept (out of file descriptors, usually) so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves until `stop` is cancelled, then lets every connection finish its
/// in-flight request for up to `grace`, abandons what is left, and returns.
/// At most `api.max_connections` are open at once; up to `refusal_slots`
/// more get a 503 and are closed; past that, connections wait in the
/// backlog. HTTP/1.1 only.
///
/// Every phase of a connection is bounded: a request head must arrive
/// within `api.idle_timeout_ms` (hyper's header timer, which also ends idle
/// keep-alive connections), a body within the same time (the extractor),
/// and no read or write may stall longer than that either (a client that
/// sends half a body, or pipelines requests and never reads the answers).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ApiConfig,
    refusal_slots: usize,
    stop: CancellationToken,
    grace: Duration,
) {
    let connections = TaskTracker::new();
    let slots = Slots::new(config.max_connections, refusal_slots);
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let abandon = CancellationToken::new();
    loop {
        let slot = tokio::select! {
            slot = slots.next() => slot,
            () = stop.cancelled() => break,
        };
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
        match slot {
            Slot::Serve(slot) => {
                connections.spawn(connection(stream, router.clone(), idle_timeout, slot, stop.clone(), abandon.clone()))
            }
            Slot::Refuse(slot) => connections.spawn(async move {
                refuse(stream).await;
                drop(slot);
            }),
        };
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(left = connections.len(), "internal API shutdown timeout; abandoning connections");
        abandon.cancel();
        connections.wait().await;
    }
}

async fn refuse(stream: TcpStream) {
    crate::metrics::get().api_refused.increment(1);
    crate::listener::refuse_at_capacity(stream, "internal API is at its connection limit, retry later").await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
    abandon: CancellationToken,
) {
    // A read or write that makes no progress for the idle timeout fails the
    // connection: half-sent bodies and clients that never read answers.
    let progress = Progress::new();
    let stream = Watched::new(stream, progress.clone());
    let period = idle_timeout / 4;
    let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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
            // Shutdown's grace is over: drop the connection where it stands.
            () = abandon.cancelled() => return,
            // A stalled connection fails its next read or write; polling it
            // again (the loop) lets hyper answer 408 or close.
            _ = watchdog.tick() => {
                progress.check(idle_timeout);
            }
        }
    }
}
