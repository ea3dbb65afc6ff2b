//! The cluster [`Router`]: the local registry's answer, plus what Redis
//! says of the other nodes, within `cluster.timeout_ms`.
//!
//! When Redis does not answer, the remote part is reported as one
//! unreachable node: which nodes hold the user is itself unknown then.

use super::channels::{BROADCAST, Body, Envelope, encode_frame, node_channel, reason_name};
use super::{ClusterRouter, Reply, presence};
use crate::protocol::CloseReason;
use crate::router::{Delivery, Fanout, Kick, Listing, Presence, Router, SessionId};
use async_trait::async_trait;
use bytes::Bytes;

impl ClusterRouter {
    /// Publishes `body` to every other live node holding `user`:
    /// (nodes reached, unreachable: 1 when Redis failed).
    async fn to_holders(&self, user: &str, body: Body) -> (usize, usize) {
        let message = Envelope::new(&self.node, body).to_json();
        let mut conn = self.redis.clone();
        let call = presence::fanout(&mut conn, &self.fanout, &self.node, user, &message);
        match self.bounded("fanout", call).await {
            // A node with no subscriber is gone: its sessions are too.
            Some(reached) => (reached.iter().filter(|(_, receivers)| *receivers >= 1).count(), 0),
            None => (0, 1),
        }
    }

    /// Completes `out` (the local deliveries) with one grouped publish to
    /// the other nodes holding each user (presence.rs `GROUPED_PUBLISH`).
    async fn to_holders_of(
        &self,
        mut out: Vec<Delivery>,
        users: &[&str],
        fragments: &[String],
        head: &str,
    ) -> Vec<Delivery> {
        let mut conn = self.redis.clone();
        let call = presence::grouped_publish(&mut conn, &self.grouped_publish, &self.node, users, fragments, head);
        match self.bounded("grouped publish", call).await {
            Some(reached) => {
                for (d, forwarded) in out.iter_mut().zip(reached) {
                    d.forwarded_nodes = forwarded;
                    d.online |= forwarded > 0;
                }
            }
            None => out.iter_mut().for_each(|d| d.unreachable_nodes = 1),
        }
        out
    }

    /// The other live nodes holding `user` with their session counts.
    async fn holders(&self, user: &str) -> Option<Vec<(String, usize)>> {
        let mut conn = self.redis.clone();
        let nodes = self.bounded("presence", presence::read(&mut conn, user)).await?;
        Some(nodes.into_iter().filter(|(node, _)| *node != self.node).collect())
    }
}

#[async_trait]
impl Router for ClusterRouter {
    async fn deliver(&self, user: &str, frame: &Bytes) -> Delivery {
        let mut out = self.registry.deliver_local(user, frame);
        let (forwarded, unreachable) =
            self.to_holders(user, Body::Deliver { user: user.to_string(), frame: encode_frame(frame) }).await;
        out.forwarded_nodes = forwarded;
        out.unreachable_nodes = unreachable;
        out.online |= forwarded > 0;
        out
    }

    async fn deliver_each(&self, users: &[&str], frame: &Bytes) -> Vec<Delivery> {
        let out = users.iter().map(|user| self.registry.deliver_local(user, frame)).collect();
        // A user id is a plain string: JSON-encoding it cannot fail.
        let fragments: Vec<String> = users.iter().map(|u| serde_json::to_string(u).unwrap_or_default()).collect();
        let head = Envelope::deliver_many_head(&self.node, frame);
        self.to_holders_of(out, users, &fragments, &head).await
    }

    async fn deliver_pairs(&self, pairs: &[(&str, &Bytes)]) -> Vec<Delivery> {
        let out = pairs.iter().map(|(user, frame)| self.registry.deliver_local(user, frame)).collect();
        let users: Vec<&str> = pairs.iter().map(|(user, _)| *user).collect();
        let fragments: Vec<String> = pairs.iter().map(|(user, frame)| Envelope::delivery(user, frame)).collect();
        self.to_holders_of(out, &users, &fragments, &Envelope::deliver_batch_head(&self.node)).await
    }

    async fn announce(&self, _user: &str) {
        // During an outage, greeting sessions must not wait on Redis: the
        // presence task writes their entries once it answers again.
        if !self.health.redis_ok() {
            return;
        }
        let (done, written) = tokio::sync::oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = tokio::time::timeout(self.timeout, written).await;
        }
    }

    async fn broadcast(&self, frame: &Bytes) -> Fanout {
        let mut out = Router::broadcast(self.registry.as_ref(), frame).await;
        let message = Envelope::new(&self.node, Body::Broadcast { frame: encode_frame(frame) }).to_json();
        match self.publish(BROADCAST, &message).await {
            // This node is one of the subscribers while its subscription
            // works (it ignores its own message): not counted as forwarded.
            Some(receivers) => {
                let own = u64::from(self.health.subscription_ok());
                out.forwarded_nodes = receivers.saturating_sub(own) as usize;
            }
            None => out.unreachable_nodes = 1,
        }
        out
    }

    async fn kick_user(&self, user: &str, reason: CloseReason) -> Fanout {
        let mut out = Router::kick_user(self.registry.as_ref(), user, reason).await;
        let body = Body::KickUser { user: user.to_string(), reason: reason_name(reason) };
        (out.forwarded_nodes, out.unreachable_nodes) = self.to_holders(user, body).await;
        out
    }

    async fn kick_session(&self, id: &SessionId, reason: CloseReason, last_words: Option<Bytes>) -> Kick {
        if *id.node == *self.node {
            return Router::kick_session(self.registry.as_ref(), id, reason, last_words).await;
        }
        let (request, mut answers) = self.open_request();
        let body = Body::KickSession {
            id: request,
            session: id.to_string(),
            reason: reason_name(reason),
            last_words: last_words.as_ref().map(encode_frame),
        };
        let message = Envelope::new(&self.node, body).to_json();
        let started = tokio::time::Instant::now();
        let outcome = match self.publish(&node_channel(&id.node), &message).await {
            Some(receivers) if receivers >= 1 => {
                match tokio::time::timeout_at(started + self.timeout, answers.recv()).await {
                    Ok(Some(Reply::Kicked(true))) => Kick::Closed,
                    Ok(Some(Reply::Kicked(false))) => Kick::NotFound,
                    _ => Kick::Unreachable,
                }
            }
            _ => Kick::Unreachable,
        };
        self.close_request(request);
        outcome
    }

    async fn sessions(&self, user: &str) -> Listing {
        let mut listing = Router::sessions(self.registry.as_ref(), user).await;
        let started = tokio::time::Instant::now();
        let Some(holders) = self.holders(user).await else {
            listing.unreachable_nodes = 1;
            return listing;
        };
        if holders.is_empty() {
            return listing;
        }
        let (request, mut answers) = self.open_request();
        let message = Envelope::new(&self.node, Body::List { id: request, user: user.to_string() }).to_json();
        let mut pipe = redis::pipe();
        for (node, _) in &holders {
            pipe.cmd("PUBLISH").arg(node_channel(node)).arg(&message);
        }
        let mut conn = self.redis.clone();
        let expected = match self.bounded("list", pipe.query_async::<Vec<u64>>(&mut conn)).await {
            // Nodes without a subscriber are gone, with their sessions.
            Some(receivers) => receivers.iter().filter(|&&r| r >= 1).count(),
            None => {
                self.close_request(request);
                listing.unreachable_nodes = holders.len();
                return listing;
            }
        };
        let deadline = started + self.timeout;
        let mut answered = 0;
        while answered < expected {
            match tokio::time::timeout_at(deadline, answers.recv()).await {
                Ok(Some(Reply::Listed(sessions))) => {
                    listing.sessions.extend(sessions);
                    answered += 1;
                }
                Ok(Some(Reply::Kicked(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.close_request(request);
        listing.unreachable_nodes = expected - answered;
        listing
    }

    async fn presence(&self, user: &str) -> Presence {
        let local = self.registry.user_session_count(user);
        match self.holders(user).await {
            Some(holders) => {
                Presence { sessions: local + holders.iter().map(|(_, c)| c).sum::<usize>(), unreachable_nodes: 0 }
            }
            None => Presence { sessions: local, unreachable_nodes: 1 },
        }
    }

    fn local_session_count(&self) -> usize {
        self.registry.session_count()
    }

    fn local_session_ids(&self) -> Vec<SessionId> {
        Router::local_session_ids(self.registry.as_ref())
    }
}
