//! The cluster router's background work: presence upkeep (on every change
//! of this node's sessions of a user, and a refresh of all of them every
//! `presence_refresh_secs`) and the subscriber; and, on a graceful stop,
//! removing this node's presence entries.

use super::channels::{BROADCAST, Body, Envelope};
use super::{ClusterRouter, presence, subscriber};
use crate::revocation::Revocation;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The running background tasks. Dropping this without [`Self::shutdown`]
/// aborts them at once, as a crash would (entries then expire by ttl).
pub struct ClusterTasks {
    stop: CancellationToken,
    tasks: Vec<AbortOnDropHandle<()>>,
}

impl ClusterTasks {
    pub(super) fn spawn(
        router: Arc<ClusterRouter>,
        events: UnboundedReceiver<Arc<str>>,
        flushes: UnboundedReceiver<Flush>,
        revoked: UnboundedReceiver<(String, Revocation)>,
    ) -> ClusterTasks {
        let stop = CancellationToken::new();
        let tasks = vec![
            AbortOnDropHandle::new(tokio::spawn(publish_revocations(router.clone(), revoked, stop.clone()))),
            AbortOnDropHandle::new(tokio::spawn(upkeep(router.clone(), events, flushes, stop.clone()))),
            AbortOnDropHandle::new(tokio::spawn(subscriber::run(router, stop.clone()))),
        ];
        ClusterTasks { stop, tasks }
    }

    /// Stops the tasks; the presence task removes this node's entries first
    /// (best effort, within `cluster.timeout_ms`). Returns within `bound`.
    pub async fn shutdown(self, bound: Duration) {
        self.stop.cancel();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("cluster tasks did not stop in time; abandoned");
        }
    }
}

/// Publishes of one revocation before leaving it to the periodic reload.
const PUBLISH_TRIES: u32 = 3;

/// Tells every node about revocations made here (they are stored already;
/// a node that misses this reloads the hash when it resubscribes).
async fn publish_revocations(
    router: Arc<ClusterRouter>,
    mut revoked: UnboundedReceiver<(String, Revocation)>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = revoked.recv() => next,
        };
        let Some((user, r)) = next else { return };
        let body = Body::Revoked { user, before: r.before, until: r.until };
        let message = Envelope::new(&router.node, body).to_json();
        // A few tries; past them the other nodes' periodic reload
        // (subscriber::REVOCATION_RELOAD) brings it to them.
        for attempt in 1..=PUBLISH_TRIES {
            if router.publish(BROADCAST, &message).await.is_some() {
                break;
            }
            if attempt == PUBLISH_TRIES {
                tracing::warn!("a revocation was not published; other nodes load it at their next reload (<= 60 s)");
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))) => {}
            }
        }
    }
}

/// A session waiting for its user's entry to be written (answered once
/// the write that includes it is done, or failed).
pub(super) type Flush = oneshot::Sender<()>;

/// Keeps this node's presence entries true: `announced` is every user this
/// node may have an entry for, so entries of users who left are removed
/// even when the write at their departure failed.
///
/// A flush request is sent by a session after its registration event, so
/// by the time the request is received the event is in `events`: the
/// batch written before answering includes it.
async fn upkeep(
    router: Arc<ClusterRouter>,
    mut events: UnboundedReceiver<Arc<str>>,
    mut flushes: UnboundedReceiver<Flush>,
    stop: CancellationToken,
) {
    let ttl_ms = router.ttl.as_millis() as u64;
    let mut announced: HashSet<Arc<str>> = HashSet::new();
    let mut refresh = tokio::time::interval(router.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting: Vec<Flush> = Vec::new();
    loop {
        let mut users = HashSet::new();
        tokio::select! {
            () = stop.cancelled() => break,
            event = events.recv() => {
                let Some(user) = event else { break };
                users.insert(user);
            }
            Some(flush) = flushes.recv() => waiting.push(flush),
            _ = refresh.tick() => {
                let mut entries = router.registry.user_counts();
                let live: HashSet<&Arc<str>> = entries.iter().map(|(u, _)| u).collect();
                let gone: Vec<Arc<str>> = announced.iter().filter(|u| !live.contains(u)).cloned().collect();
                entries.extend(gone.into_iter().map(|u| (u, 0)));
                for batch in entries.chunks(presence::REFRESH_BATCH) {
                    write(&router, batch, ttl_ms, &mut announced).await;
                }
                continue;
            }
        }
        // Everything pending, each user once, in one round trip; then the
        // sessions that asked are answered.
        while let Ok(flush) = flushes.try_recv() {
            waiting.push(flush);
        }
        while let Ok(user) = events.try_recv() {
            users.insert(user);
        }
        let entries: Vec<(Arc<str>, usize)> = users
            .into_iter()
            .map(|u| {
                let n = router.registry.user_session_count(&u);
                (u, n)
            })
            .collect();
        if !entries.is_empty() {
            write(&router, &entries, ttl_ms, &mut announced).await;
        }
        for flush in waiting.drain(..) {
            let _ = flush.send(());
        }
    }
    // Graceful stop: this node holds nobody any more.
    let entries: Vec<(Arc<str>, usize)> = announced.iter().map(|u| (u.clone(), 0)).collect();
    for batch in entries.chunks(presence::REFRESH_BATCH) {
        let mut conn = router.redis.clone();
        let pipe = presence::entries_pipeline(&router.node, batch, ttl_ms);
        if router.bounded("presence cleanup", pipe.query_async::<()>(&mut conn)).await.is_none() {
            tracing::warn!(users = entries.len(), "presence cleanup failed; entries expire by ttl");
            break;
        }
    }
}

/// Writes `entries`; a user whose entry may exist stays in `announced`
/// until a removal succeeds.
async fn write(router: &ClusterRouter, entries: &[(Arc<str>, usize)], ttl_ms: u64, announced: &mut HashSet<Arc<str>>) {
    let mut conn = router.redis.clone();
    let pipe = presence::entries_pipeline(&router.node, entries, ttl_ms);
    let ok = router.bounded("presence", pipe.query_async::<()>(&mut conn)).await.is_some();
    for (user, count) in entries {
        if *count > 0 {
            announced.insert(user.clone());
        } else if ok {
            announced.remove(user);
        }
    }
}
