//! Who is connected: user -> sessions and session id -> handle.
//!
//! Everything above the gateway (handlers, the internal API, later the
//! cluster layer) reaches sessions only through this module, and handlers
//! only through the narrow [`Router`] trait.

mod queue;
mod socket;

pub use queue::{Batch, CloseRequest, Enqueue, QueueLimits, SessionQueue};
pub use socket::SessionSocket;

use bytes::Bytes;
use dashmap::DashMap;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One live session as the rest of the gateway sees it: metadata plus the
/// queue its socket task drains (which may write to the socket directly
/// while the session is idle, see [`SessionSocket`]).
#[derive(Debug)]
pub struct SessionHandle {
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
    pub queue: SessionQueue,
}

/// How a push to one user went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Sessions that queued the frame.
    pub delivered: usize,
    /// Sessions whose queue was full (they are being closed as slow).
    pub dropped: usize,
    /// Whether the user had any session at all.
    pub online: bool,
}

/// The narrow interface handlers and the API use to reach users. The local
/// [`Registry`] implements it; a cluster router (Redis) will wrap it.
pub trait Router: Send + Sync {
    fn deliver(&self, user: &str, frame: &Bytes) -> Delivery;
    fn live_sessions(&self, user: &str) -> usize;
}

#[derive(Debug, Default)]
pub struct Registry {
    sessions: DashMap<u64, Arc<SessionHandle>>,
    users: DashMap<Arc<str>, Vec<Arc<SessionHandle>>>,
    next_id: AtomicU64,
    closing: AtomicBool,
}

/// Refused registration: the gateway is shutting down.
#[derive(Debug)]
pub struct Closing;

impl SessionHandle {
    /// The client's address as users and logs should see it.
    pub fn client_addr(&self) -> String {
        match self.forwarded_for {
            Some(ip) => ip.to_string(),
            None => self.remote.to_string(),
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry { next_id: AtomicU64::new(1), ..Default::default() }
    }

    /// Session ids are never reused within a process, so a stale id cannot
    /// name a newer session.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// # Errors
    /// [`Closing`] once [`Registry::close_all`] has begun.
    pub fn register(&self, handle: Arc<SessionHandle>) -> Result<(), Closing> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Closing);
        }
        self.sessions.insert(handle.id, handle.clone());
        self.users.entry(handle.user.clone()).or_default().push(handle.clone());
        // close_all may have swept the map between our check and insert.
        if self.closing.load(Ordering::Acquire) {
            self.unregister(&handle);
            return Err(Closing);
        }
        Ok(())
    }

    pub fn unregister(&self, handle: &Arc<SessionHandle>) {
        self.sessions.remove_if(&handle.id, |_, h| Arc::ptr_eq(h, handle));
        if let Some(mut list) = self.users.get_mut(&*handle.user) {
            list.retain(|h| !Arc::ptr_eq(h, handle));
        }
        // Checked under the shard lock: a session registered meanwhile keeps
        // the entry alive.
        self.users.remove_if(&*handle.user, |_, list| list.is_empty());
    }

    pub fn session(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.sessions.get(&id).map(|h| h.clone())
    }

    pub fn user_sessions(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.users.get(user).map(|list| list.clone()).unwrap_or_default()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A point-in-time copy of every handle, so fan-out runs without any map
    /// lock held (DESIGN.md: no guard across the fan-out).
    pub fn snapshot(&self) -> Vec<Arc<SessionHandle>> {
        let mut all = Vec::with_capacity(self.sessions.len());
        all.extend(self.sessions.iter().map(|entry| entry.value().clone()));
        all
    }

    /// Refuses new sessions from now on and asks every live one to close.
    pub fn close_all(&self, request: CloseRequest) -> usize {
        self.closing.store(true, Ordering::Release);
        self.snapshot().iter().filter(|h| h.queue.close(request)).count()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stops admitting sessions without closing the live ones (drain start).
    pub fn stop_admitting(&self) {
        self.closing.store(true, Ordering::Release);
    }
}

impl Router for Registry {
    fn deliver(&self, user: &str, frame: &Bytes) -> Delivery {
        // Clone the handles out and drop the shard guard before pushing: a
        // push may write to the socket (a syscall that can be preempted),
        // and a guard held across it would stall every register, unregister
        // and push that hashes to the same shard (DESIGN.md: clone the
        // handle out, drop the guard, then act). Most users have a handful
        // of devices, so this stays on the stack.
        let sessions: SmallVec<[Arc<SessionHandle>; 4]> = match self.users.get(user) {
            Some(list) => list.iter().cloned().collect(),
            None => SmallVec::new(),
        };
        let mut out = Delivery { online: !sessions.is_empty(), ..Delivery::default() };
        for handle in &sessions {
            match handle.queue.push(frame.clone()) {
                Enqueue::Queued => out.delivered += 1,
                Enqueue::Full => out.dropped += 1,
                Enqueue::Closed => {}
            }
        }
        out
    }

    fn live_sessions(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |list| list.len())
    }
}
