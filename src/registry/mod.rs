//! Who is connected to this node: user -> sessions and session id ->
//! handle. A handle holds the session's metadata and its [`Outbox`], the
//! delivery handle pushers use; writing to sockets is the transport's job.
//!
//! Callers above the gateway never use the registry directly: they go
//! through [`crate::router::Router`], which the registry implements for a
//! single node (`router.rs` here).

mod replay;
mod router;

pub use replay::{Held, MAX_HELD, MAX_HELD_BYTES, Written, WrittenSink};

use crate::router::SessionId;
use crate::transport::Outbox;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One live session as the rest of the gateway sees it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique within this process; the full id adds the node and incarnation.
    pub id: u64,
    pub user: Arc<str>,
    pub device: Option<Box<str>>,
    /// Unix milliseconds.
    pub connected_at_ms: u64,
    /// The socket peer.
    pub remote: SocketAddr,
    /// The real client behind a trusted proxy, when one said so.
    pub forwarded_for: Option<std::net::IpAddr>,
    pub user_agent: Option<Box<str>>,
    pub outbox: Outbox,
}

impl AsRef<Outbox> for SessionHandle {
    fn as_ref(&self) -> &Outbox {
        &self.outbox
    }
}

impl SessionHandle {
    /// The client's address as users and logs should see it.
    pub fn client_addr(&self) -> String {
        match self.forwarded_for {
            Some(ip) => ip.to_string(),
            None => self.remote.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct Registry {
    node: Box<str>,
    incarnation: u64,
    sessions: DashMap<u64, Arc<SessionHandle>>,
    users: DashMap<Arc<str>, Vec<Arc<SessionHandle>>>,
    next_id: AtomicU64,
    /// Unregistrations so far; every [`COMPACT_EVERY`]th checks whether the
    /// maps are sparse (see [`Registry::compact_if_sparse`]).
    removals: AtomicU64,
    closing: AtomicBool,
    /// Told the user of every registration and unregistration, once a
    /// cluster router asked ([`Registry::watch_users`]).
    watcher: OnceLock<UnboundedSender<Arc<str>>>,
    /// Sessions replaying their inbox, with the live durable frames held
    /// for them meanwhile (replay.rs).
    replaying: DashMap<u64, Held>,
    /// Where marks of durable messages handed to sessions go (replay.rs).
    written: OnceLock<replay::WrittenSink>,
}

/// How many unregistrations pass between two checks of the maps' fill.
const COMPACT_EVERY: u64 = 1024;
/// Maps with less capacity than this are left alone.
const COMPACT_MIN_CAPACITY: usize = 1024;

/// Refused registration: the node is shutting down or draining.
#[derive(Debug)]
pub struct Closing;

/// A registered session; dropping it unregisters the session, so a session
/// is registered and unregistered in exactly one place (the session task).
#[must_use = "dropping the registration unregisters the session"]
pub struct Registration<'a> {
    registry: &'a Registry,
    handle: Arc<SessionHandle>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.unregister(&self.handle);
    }
}

impl Registry {
    /// `node` is `server.node_id`; the incarnation is the start time in
    /// milliseconds, so session ids of an earlier run never match.
    pub fn new(node: &str) -> Registry {
        Registry::with_incarnation(node, crate::clock::unix_ms())
    }

    pub fn with_incarnation(node: &str, incarnation: u64) -> Registry {
        Registry {
            node: node.into(),
            incarnation,
            sessions: DashMap::new(),
            users: DashMap::new(),
            next_id: AtomicU64::new(1),
            removals: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            watcher: OnceLock::new(),
            replaying: DashMap::new(),
            written: OnceLock::new(),
        }
    }

    /// Process-local ids are never reused within a process, so a stale id
    /// cannot name a newer session.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The full id of a local session.
    pub fn session_id(&self, local: u64) -> SessionId {
        SessionId { node: self.node.clone(), incarnation: self.incarnation, local }
    }

    /// The local session `id` names, if it is of this node and run.
    fn local_id(&self, id: &SessionId) -> Option<u64> {
        (*id.node == *self.node && id.incarnation == self.incarnation).then_some(id.local)
    }

    /// Adds a session; it stays until the returned [`Registration`] drops.
    ///
    /// # Errors
    /// [`Closing`] once [`Registry::close_all`] or
    /// [`Registry::stop_admitting`] has begun.
    pub fn register(&self, handle: Arc<SessionHandle>) -> Result<Registration<'_>, Closing> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Closing);
        }
        self.sessions.insert(handle.id, handle.clone());
        self.users.entry(handle.user.clone()).or_default().push(handle.clone());
        self.notify(&handle.user);
        let registration = Registration { registry: self, handle };
        // close_all may have swept the map between our check and insert;
        // dropping the registration takes the session out again.
        if self.closing.load(Ordering::Acquire) {
            return Err(Closing);
        }
        Ok(registration)
    }

    fn unregister(&self, handle: &Arc<SessionHandle>) {
        // `remove_if` + pointer equality: a stale handle never removes a
        // newer session that reuses the slot.
        self.sessions.remove_if(&handle.id, |_, h| Arc::ptr_eq(h, handle));
        if let Some(mut list) = self.users.get_mut(&*handle.user) {
            list.retain(|h| !Arc::ptr_eq(h, handle));
        }
        // Checked under the shard lock: a session registered meanwhile keeps
        // the entry alive.
        self.users.remove_if(&*handle.user, |_, list| list.is_empty());
        self.end_replay(handle.id);
        self.notify(&handle.user);
        if self.removals.fetch_add(1, Ordering::Relaxed) % COMPACT_EVERY == COMPACT_EVERY - 1 {
            self.compact_if_sparse();
        }
    }

    /// Rebuilds a map that holds less than a quarter of its capacity.
    ///
    /// Why: a reconnect burst grows the maps and nothing shrinks them, and
    /// worse, every removal may leave a tombstone that still counts against
    /// the room for inserts. The next burst then runs out of room while the
    /// table is more than half full of live entries and hashbrown doubles
    /// it: measured under `pushgate bench churn`, rounds of the same 10,000
    /// connections doubled both maps' tables within ten rounds (0.95 ->
    /// 1.86 MB), beyond anything the peak needed. A rebuild drops the
    /// tombstones and sizes the table to what is live. Each shard is locked
    /// only while it is rebuilt; no map guard is held by the caller.
    fn compact_if_sparse(&self) {
        fn compact<K: Eq + std::hash::Hash, V>(map: &DashMap<K, V>) {
            let capacity = map.capacity();
            if capacity >= COMPACT_MIN_CAPACITY && map.len() * 4 < capacity {
                map.shrink_to_fit();
            }
        }
        compact(&self.sessions);
        compact(&self.users);
    }

    fn session(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.sessions.get(&id).map(|h| h.clone())
    }

    /// A user's handles, cloned out so no map guard is held while acting on
    /// them (a push may be a syscall; DashMap guards must not be held across
    /// it or across an await).
    fn user_sessions(&self, user: &str) -> smallvec::SmallVec<[Arc<SessionHandle>; 4]> {
        match self.users.get(user) {
            Some(list) => list.iter().cloned().collect(),
            None => smallvec::SmallVec::new(),
        }
    }

    /// A receiver of the user of every registration and unregistration
    /// from now on (sent after the maps changed, no guard held), for a
    /// cluster router that announces presence; None if already taken.
    /// Events say "look at this user again", not what changed: a watcher
    /// reads [`Registry::user_session_count`] when it handles one.
    pub fn watch_users(&self) -> Option<UnboundedReceiver<Arc<str>>> {
        let (tx, rx) = unbounded_channel();
        self.watcher.set(tx).ok().map(|()| rx)
    }

    fn notify(&self, user: &Arc<str>) {
        if let Some(tx) = self.watcher.get() {
            let _ = tx.send(user.clone());
        }
    }

    /// Live sessions of `user` on this node.
    pub fn user_session_count(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |list| list.len())
    }

    /// Every user with sessions here and their session count (a copy: no
    /// guard is held once it returns).
    pub fn user_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.users.iter().map(|e| (e.key().clone(), e.value().len())).collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A point-in-time copy of every handle, so fan-out runs without any map
    /// lock held.
    fn snapshot(&self) -> Vec<Arc<SessionHandle>> {
        let mut all = Vec::with_capacity(self.sessions.len());
        all.extend(self.sessions.iter().map(|entry| entry.value().clone()));
        all
    }

    /// Refuses new sessions from now on and asks every live one to close.
    pub fn close_all(&self, reason: crate::protocol::CloseReason) -> usize {
        self.closing.store(true, Ordering::Release);
        self.snapshot().iter().filter(|h| h.outbox.close(reason)).count()
    }

    /// Stops admitting sessions without closing the live ones (drain start).
    pub fn stop_admitting(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

/// A session handle with no socket behind it, for unit tests of the
/// registry and of what acts through it (the drain).
#[cfg(test)]
pub(crate) fn test_session(registry: &Registry, user: &str) -> Arc<SessionHandle> {
    Arc::new(SessionHandle {
        id: registry.next_session_id(),
        user: user.into(),
        device: None,
        connected_at_ms: 0,
        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
        forwarded_for: None,
        user_agent: None,
        outbox: Outbox::new(crate::transport::QueueLimits { frames: 8, bytes: 1 << 20 }),
    })
}

#[cfg(test)]
mod tests;
