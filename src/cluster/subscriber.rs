//! The one pub/sub connection: this node's channel and the broadcast
//! channel. Lost connections are resubscribed with backoff; every
//! `subscription_check_secs` the node publishes a ping to its own channel
//! and expects it back within `timeout_ms`, else it resubscribes (a
//! subscription can die silently, e.g. behind a proxy or after a Redis
//! failover). The outcome is `/readyz`'s `cluster.subscription`.

use super::channels::{BROADCAST, Body, Envelope, decode_frame, node_channel, reason_from_name};
use super::{ClusterRouter, Reply};
use crate::router::{Kick, Router, SessionId};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often a node reads every revocation again, besides at each
/// (re)subscription: the bound on how long a revocation whose publish
/// failed can go unknown to another node.
pub const REVOCATION_RELOAD: Duration = Duration::from_secs(60);

/// Why one subscription ended.
enum End {
    Stop,
    Lost,
}

pub async fn run(router: Arc<ClusterRouter>, stop: CancellationToken) {
    let own = node_channel(&router.node);
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    while !stop.is_cancelled() {
        if !first {
            router.health.count_reconnect();
        }
        first = false;
        let connect = async {
            let mut pubsub = router.client.get_async_pubsub().await?;
            pubsub.subscribe(&[own.as_str(), BROADCAST]).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let connected = tokio::select! {
            () = stop.cancelled() => break,
            connected = tokio::time::timeout(router.timeout, connect) => connected,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                tracing::info!(channel = %own, "cluster subscription established");
                backoff = BACKOFF_MIN;
                // Revocations published while this node was not listening
                // are in the hash: read it again now that Redis answers.
                let revocations = router.revocations.clone();
                tokio::spawn(async move {
                    if let Err(e) = revocations.reload().await {
                        tracing::warn!(error = %e, "reloading revocations failed; retried at the next subscription");
                    }
                });
                if let End::Stop = serve(&router, pubsub, &stop).await {
                    break;
                }
                tracing::warn!("cluster subscription lost; resubscribing");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster subscription failed"),
            Err(_) => tracing::warn!("cluster subscription timed out"),
        }
        router.health.set_subscription(false);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    router.health.set_subscription(false);
}

async fn serve(router: &Arc<ClusterRouter>, pubsub: redis::aio::PubSub, stop: &CancellationToken) -> End {
    let own = node_channel(&router.node);
    let mut messages = pubsub.into_on_message();
    let mut check = tokio::time::interval(router.check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The ping awaited: its id and the moment it is overdue.
    let mut awaited: Option<(u64, Instant)> = None;
    let mut next_ping = 0u64;
    // Revocations are published, but a publish can fail: every node also
    // reads them all again now and then, so none is missed for long.
    let mut reload = tokio::time::interval_at(Instant::now() + REVOCATION_RELOAD, REVOCATION_RELOAD);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let overdue = awaited.map(|(_, at)| at);
        tokio::select! {
            () = stop.cancelled() => return End::Stop,
            message = messages.next() => {
                let Some(message) = message else { return End::Lost };
                let Some(envelope) = Envelope::parse(message.get_payload_bytes()) else {
                    tracing::debug!("unreadable cluster message ignored");
                    continue;
                };
                if let (Body::Ping { id }, Some((expected, _))) = (&envelope.body, awaited)
                    && envelope.from == router.node
                    && *id == expected
                {
                    awaited = None;
                    router.health.set_subscription(true);
                    continue;
                }
                // Our own broadcast comes back to us: already applied locally.
                if envelope.from == router.node && message.get_channel_name() != own {
                    continue;
                }
                handle(router, envelope);
            }
            _ = check.tick(), if awaited.is_none() => {
                next_ping += 1;
                awaited = Some((next_ping, Instant::now() + router.timeout));
                let message = Envelope::new(&router.node, Body::Ping { id: next_ping }).to_json();
                let (router, own) = (router.clone(), own.clone());
                tokio::spawn(async move { router.publish(&own, &message).await });
            }
            _ = reload.tick() => {
                let revocations = router.revocations.clone();
                tokio::spawn(async move {
                    if let Err(e) = revocations.reload().await {
                        tracing::warn!(error = %e, "reloading revocations failed; retried at the next round");
                    }
                });
            }
            () = sleep_until_opt(overdue) => {
                tracing::warn!("cluster subscription self-check failed: own ping not received in time");
                return End::Lost;
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies a message from another node. Nothing here waits on Redis
/// inline: answers are published from their own tasks.
fn handle(router: &Arc<ClusterRouter>, envelope: Envelope) {
    let registry = router.registry.clone();
    match envelope.body {
        Body::Deliver { user, frame } => {
            if let Some(frame) = decode_frame(&frame) {
                registry.deliver_local(&user, &frame);
            }
        }
        Body::DeliverMany { frame, users } => {
            if let Some(frame) = decode_frame(&frame) {
                for user in &users {
                    registry.deliver_local(user, &frame);
                }
            }
        }
        Body::DeliverBatch { deliveries } => {
            for delivery in deliveries {
                if let Some(frame) = decode_frame(&delivery.frame) {
                    registry.deliver_local(&delivery.user, &frame);
                }
            }
        }
        Body::Broadcast { frame } => {
            if let Some(frame) = decode_frame(&frame) {
                tokio::spawn(async move { Router::broadcast(registry.as_ref(), &frame).await });
            }
        }
        Body::KickUser { user, reason } => {
            let reason = reason_from_name(&reason);
            tokio::spawn(async move { Router::kick_user(registry.as_ref(), &user, reason).await });
        }
        Body::KickSession { id, session, reason, last_words } => {
            let router = router.clone();
            tokio::spawn(async move {
                let closed = match SessionId::parse(&session) {
                    Ok(session) => {
                        let last_words = last_words.as_deref().and_then(decode_frame);
                        let kick =
                            Router::kick_session(registry.as_ref(), &session, reason_from_name(&reason), last_words);
                        kick.await == Kick::Closed
                    }
                    Err(_) => false,
                };
                let reply = Envelope::new(&router.node, Body::Kicked { id, closed }).to_json();
                router.publish(&node_channel(&envelope.from), &reply).await;
            });
        }
        Body::List { id, user } => {
            let router = router.clone();
            tokio::spawn(async move {
                let sessions = Router::sessions(registry.as_ref(), &user).await.sessions;
                let reply = Envelope::new(&router.node, Body::Listed { id, sessions }).to_json();
                router.publish(&node_channel(&envelope.from), &reply).await;
            });
        }
        Body::Listed { id, sessions } => router.answer(id, Reply::Listed(sessions)),
        Body::Kicked { id, closed } => router.answer(id, Reply::Kicked(closed)),
        // Another node's ping never reaches us (own channel only); a stale
        // ping of ours (answered late) is ignored.
        Body::Ping { .. } => {}
        Body::Revoked { user, before, until } => {
            router.revocations.apply(&user, crate::revocation::Revocation { before, until });
        }
    }
}
