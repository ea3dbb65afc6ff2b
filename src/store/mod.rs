//! Persistent state: friendships, friend requests and profiles.
//!
//! Behind a trait so a Redis implementation can serve a cluster; the embedded
//! redb store is the single-node default.

mod embedded;

pub use embedded::{EmbeddedStore, StoreOptions};

use async_trait::async_trait;
use serde_json::Value;

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Whether the store can serve, and if not, why (shown by /readyz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    pub healthy: bool,
    /// Set while unhealthy: the fault and what the node is doing about it.
    pub reason: Option<String>,
}

impl StoreHealth {
    pub fn ok() -> StoreHealth {
        StoreHealth { healthy: true, reason: None }
    }
}

/// What a friend request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendOutcome {
    /// A new pending request was recorded.
    Requested,
    /// The same request was already pending (idempotent repeat).
    AlreadyRequested,
    /// The other side had asked first: the pair are now friends.
    BecameFriends,
    /// They were friends already.
    AlreadyFriends,
}

/// A pending request addressed to the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncomingRequest {
    pub from: String,
    pub message: Option<String>,
}

/// Everything FETCH_INFO shows a user about their own relationships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relationships {
    pub friends: Vec<String>,
    pub incoming: Vec<IncomingRequest>,
    pub outgoing: Vec<String>,
}

/// What `viewer` may read about `target`, read in one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserView {
    pub profile: Option<Value>,
    /// Whether viewer and target are friends (false when they are the same).
    pub friends: bool,
    /// Only when viewer == target.
    pub relationships: Option<Relationships>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Records `from` asking `to`; completes the pair when `to` asked first.
    async fn add_friend_request(
        &self,
        from: &str,
        to: &str,
        message: Option<&str>,
    ) -> Result<FriendOutcome, StoreError>;
    /// The FETCH_INFO read: profile, friendship and (for yourself) your
    /// relationships, from one snapshot.
    async fn user_view(&self, viewer: &str, target: &str) -> Result<UserView, StoreError>;
    async fn profile(&self, user: &str) -> Result<Option<Value>, StoreError>;
    async fn set_profile(&self, user: &str, profile: &Value) -> Result<(), StoreError>;
    /// Readiness: false while the store is failing (and healing).
    fn health(&self) -> StoreHealth {
        StoreHealth::ok()
    }
}
