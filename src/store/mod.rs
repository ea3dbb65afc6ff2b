//! Persistent state: friendships, friend requests and profiles.
//!
//! Behind a trait so a Redis implementation can serve a cluster; the embedded
//! redb store is the single-node default.

mod embedded;
mod redis_store;

pub use embedded::{EmbeddedStore, StoreOptions};
pub use redis_store::RedisStore;

use crate::config::SocialConfig;
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
    /// A bound in `[social]` refused it; nothing was written.
    Refused(Refusal),
}

/// Which bound refused a friend request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The sender already has `max_requests_out` pending requests.
    TooManyRequestsOut,
    /// The target already holds `max_requests_in` pending requests.
    InboxFull,
    /// The sender already has `max_friends` friends.
    TooManyFriends,
    /// Completing the pair would take the other side past `max_friends`.
    TheirFriendsFull,
}

/// One of a user's own relationship lists, as FETCH_INFO names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum List {
    Friends,
    RequestsIn,
    RequestsOut,
}

/// Which part of the user's own lists to read: each list in `lists` from
/// just after `after` (key order; `None` or `""` = from the start), at most
/// `limit` entries each.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub lists: &'a [List],
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// Entries of one list in key order; `more` when entries remain past them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page { items: Vec::new(), more: false }
    }
}

/// A pending request addressed to the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncomingRequest {
    pub from: String,
    pub message: Option<String>,
}

/// The pages of a user's own relationships FETCH_INFO asked for (`None`
/// for a list not asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relationships {
    pub friends: Option<Page<String>>,
    pub incoming: Option<Page<IncomingRequest>>,
    pub outgoing: Option<Page<String>>,
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
    /// Refuses (writing nothing) what would break a bound of `limits`.
    async fn add_friend_request(
        &self,
        from: &str,
        to: &str,
        message: Option<&str>,
        limits: SocialConfig,
    ) -> Result<FriendOutcome, StoreError>;
    /// Removes the pending request `from` -> `to` (a decline by `to`, a
    /// cancel by `from`); false when there was none.
    async fn remove_friend_request(&self, from: &str, to: &str) -> Result<bool, StoreError>;
    /// The FETCH_INFO read: profile, friendship and (for yourself) the pages
    /// of your relationships `lists` asks for, from one snapshot.
    async fn user_view(&self, viewer: &str, target: &str, lists: ListQuery<'_>) -> Result<UserView, StoreError>;
    async fn profile(&self, user: &str) -> Result<Option<Value>, StoreError>;
    async fn set_profile(&self, user: &str, profile: &Value) -> Result<(), StoreError>;
    /// Readiness: false while the store is failing (and healing).
    fn health(&self) -> StoreHealth {
        StoreHealth::ok()
    }
}
