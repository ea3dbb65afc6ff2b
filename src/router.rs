//! The one seam to every session: handlers, the internal API and the drain
//! reach sessions only through [`Router`]. The local [`crate::registry`]
//! implements it for one node; a cluster router wraps it and adds the other
//! nodes without changing any caller.
//!
//! The results say what a cluster can know, not only exact local counts: a
//! frame handed to another node that holds the user (its session count is
//! that node's business), and nodes that could not be reached in time (the
//! outcome there is unknown). On a single node those fields are zero.

use crate::protocol::CloseReason;
use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a frame sent to one user went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Sessions on this node that took the frame (written or queued).
    pub delivered: usize,
    /// Sessions on this node whose queue overflowed: closed as slow
    /// consumers (4001) instead.
    pub dropped: usize,
    /// Whether the user had a session anywhere the router could see.
    pub online: bool,
    /// Other nodes that accepted the frame for their sessions of the user.
    pub forwarded_nodes: usize,
    /// Nodes believed to hold the user that did not answer in time: the
    /// outcome there is unknown (the frame may or may not arrive).
    pub unreachable_nodes: usize,
}

/// How a broadcast, or a kick of every session of a user, went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Sessions on this node that took the frame, or that were asked to close.
    pub local: usize,
    /// Sessions on this node dropped as slow consumers (broadcasts only).
    pub dropped: usize,
    /// Other nodes that accepted the request.
    pub forwarded_nodes: usize,
    /// Other nodes that did not answer in time.
    pub unreachable_nodes: usize,
}

/// What closing one session by id achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// The session was asked to close (it says goodbye with the reason's code).
    Closed,
    /// No such session is live (gone already, or an id of another run).
    NotFound,
    /// The session's node could not be reached: the outcome is unknown.
    Unreachable,
}

/// Where a user is connected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// Live sessions the router could count.
    pub sessions: usize,
    /// Nodes believed to hold the user that did not answer: `sessions` may
    /// be an undercount.
    pub unreachable_nodes: usize,
}

/// A user's sessions, as far as the router could see.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub sessions: Vec<SessionInfo>,
    pub unreachable_nodes: usize,
}

/// One session as the API shows it (and as nodes will exchange it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub node: String,
    pub user: String,
    pub device: Option<String>,
    /// Unix milliseconds.
    pub connected_at: u64,
    /// The client: the forwarded address behind a trusted proxy, else the peer.
    pub remote_addr: String,
    /// The socket peer (the proxy, when proxied).
    pub peer_addr: String,
    pub user_agent: Option<String>,
    /// Frames waiting in the session's queue.
    pub queued: usize,
}

/// The seam. Every method answers within a bounded time: a router that
/// talks to other nodes reports the ones that did not answer instead of
/// waiting for them.
#[async_trait]
pub trait Router: Send + Sync {
    /// Hands `frame` to every session of `user`.
    async fn deliver(&self, user: &str, frame: &Bytes) -> Delivery;

    /// Hands `frame` to every session of each of `users` (distinct ids):
    /// one [`Delivery`] per user, in order. A router that reaches other
    /// nodes does it in one exchange rather than one per user.
    async fn deliver_each(&self, users: &[&str], frame: &Bytes) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            out.push(self.deliver(user, frame).await);
        }
        out
    }

    /// Hands each frame to every session of its user, for many (user,
    /// frame) pairs at once (a batch of one-user pushes): one Delivery per
    /// pair, in order. A router that reaches other nodes does it in one
    /// exchange rather than one per pair.
    async fn deliver_pairs(&self, pairs: &[(&str, &Bytes)]) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(pairs.len());
        for (user, frame) in pairs {
            out.push(self.deliver(user, frame).await);
        }
        out
    }

    /// Returns once other nodes can find this node's sessions of `user`
    /// (or within a bounded time when they cannot be told): a session is
    /// greeted only after this, so a push sent anywhere after its HELLO
    /// reaches it. Nothing to wait for on one node.
    async fn announce(&self, _user: &str) {}

    /// Hands `frame` to every session (each node once).
    async fn broadcast(&self, frame: &Bytes) -> Fanout;

    /// Asks every session of `user` to close with `reason`.
    async fn kick_user(&self, user: &str, reason: CloseReason) -> Fanout;

    /// Asks one session to close with `reason`, after `last_words` (a frame
    /// that must be its last, such as a RECONNECT hint) if given.
    async fn kick_session(&self, id: &SessionId, reason: CloseReason, last_words: Option<Bytes>) -> Kick;

    /// The sessions of `user`.
    async fn sessions(&self, user: &str) -> Listing;

    /// How many sessions `user` has.
    async fn presence(&self, user: &str) -> Presence;

    /// Closes the oldest sessions of `user` beyond `max` (with 4005
    /// SESSION_REPLACED), wherever they are; returns how many were asked
    /// to close. Checks the cheap presence count first, lists the sessions
    /// only when over the limit.
    async fn enforce_session_limit(&self, user: &str, max: usize) -> usize {
        if self.presence(user).await.sessions <= max {
            return 0;
        }
        let mut sessions = self.sessions(user).await.sessions;
        if sessions.len() <= max {
            return 0;
        }
        // Oldest first; ids break ties within a millisecond.
        sessions.sort_by(|a, b| (a.connected_at, &a.session_id).cmp(&(b.connected_at, &b.session_id)));
        let excess = sessions.len() - max;
        let mut closed = 0;
        for session in sessions.iter().take(excess) {
            if let Ok(id) = SessionId::parse(&session.session_id)
                && self.kick_session(&id, CloseReason::Replaced, None).await == Kick::Closed
            {
                closed += 1;
            }
        }
        closed
    }

    /// Sessions on this node: what readiness, metrics and the drain act on.
    fn local_session_count(&self) -> usize;

    /// The ids of this node's sessions (the drain closes exactly these).
    fn local_session_ids(&self) -> Vec<SessionId>;
}

/// A session id that names its node and survives restarts and clusters:
/// `<node>.<incarnation>.<n>` (proto-spec/README.md, "Session ids").
///
/// - `node` is `server.node_id`: 1-64 of `[A-Za-z0-9_-]`, so it holds no dot.
/// - `incarnation` is this process's start time in milliseconds, base 36,
///   so ids of an earlier run of the same node never name a live session.
/// - `n` counts sessions within the process, from 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub node: Box<str>,
    pub incarnation: u64,
    pub local: u64,
}

/// Why a string is not a session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSessionId;

impl SessionId {
    /// # Errors
    /// [`BadSessionId`] unless the text has the documented shape.
    pub fn parse(text: &str) -> Result<SessionId, BadSessionId> {
        let mut parts = text.split('.');
        let (Some(node), Some(incarnation), Some(local), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadSessionId);
        };
        if !is_valid_node_id(node) || incarnation.is_empty() || incarnation.len() > 13 {
            return Err(BadSessionId);
        }
        let incarnation = u64::from_str_radix(incarnation, 36).map_err(|_| BadSessionId)?;
        // Digits only: `+1` or ` 1` would parse but are not ids we issue.
        if local.is_empty() || !local.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadSessionId);
        }
        let local = local.parse().map_err(|_| BadSessionId)?;
        Ok(SessionId { node: node.into(), incarnation, local })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.node, Base36(self.incarnation), self.local)
    }
}

/// A node id as `server.node_id` allows it.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

struct Base36(u64);

impl fmt::Display for Base36 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut buf = [0u8; 13];
        let mut n = self.0;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = DIGITS[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        f.write_str(std::str::from_utf8(&buf[i..]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_name_their_node() {
        for (node, incarnation, local) in [("a", 0, 1), ("gw-eu_1", 1_763_800_000_000, 42), ("n", u64::MAX, u64::MAX)] {
            let id = SessionId { node: node.into(), incarnation, local };
            let text = id.to_string();
            assert_eq!(SessionId::parse(&text), Ok(id), "{text}");
            assert!(text.starts_with(&format!("{node}.")));
        }
        assert_eq!(SessionId { node: "gw".into(), incarnation: 35, local: 7 }.to_string(), "gw.z.7");
    }

    #[test]
    fn malformed_session_ids_are_refused() {
        for bad in [
            "",
            "7",
            "gw.7",
            "gw..7",
            "gw.z.",
            "gw.z.7.1",
            "g w.z.7",
            "gw.z.+7",
            "gw.z.-1",
            "gw.!.1",
            "gw.z.99999999999999999999",
        ] {
            assert_eq!(SessionId::parse(bad), Err(BadSessionId), "{bad:?}");
        }
    }
}
