//! Revoked users (`POST /v1/users/{id}/revoke`): tokens issued before the
//! moment of revocation are refused at the handshake and at TOKEN_REFRESH,
//! until the revocation is `auth.revocation_ttl_secs` old.
//!
//! The handshake must not wait on storage, so every node keeps all live
//! revocations in memory (an empty map costs one lookup). Storage is the
//! truth and survives restarts: the embedded store's file on one node, a
//! Redis hash in a cluster, loaded at startup. In a cluster a revocation is
//! also published to every node ([`Revocations::subscribe`] hands them to
//! the cluster router) and each node reloads the hash whenever its
//! subscription (re)starts, so one that missed the message still learns.
//!
//! Granularity is the second, as `iat` is: a token issued in the same
//! second as the revocation stays valid (so a backend can revoke and hand
//! out a new token at once).

mod embedded;
mod redis;

pub use redis::RedisRevocations;

use crate::auth::{AuthError, Identity};
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct RevocationError(pub String);

impl std::fmt::Display for RevocationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revocations: {}", self.0)
    }
}

impl std::error::Error for RevocationError {}

/// One user's revocation: tokens with `iat` before `before` are refused
/// until `until` (unix seconds both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub before: u64,
    pub until: u64,
}

/// Where revocations are kept. Calls are bounded by the implementation.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    async fn save(&self, user: &str, revocation: Revocation) -> Result<(), RevocationError>;
    /// Every revocation not yet past its `until` at `now`.
    async fn load(&self, now: u64) -> Result<Vec<(String, Revocation)>, RevocationError>;
}

pub struct Revocations {
    live: DashMap<Box<str>, Revocation>,
    store: Arc<dyn RevocationStore>,
    ttl_secs: u64,
    /// The cluster router's feed of new revocations to publish.
    published: OnceLock<mpsc::UnboundedSender<(String, Revocation)>>,
}

impl Revocations {
    /// Loads what `store` holds.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn load(store: Arc<dyn RevocationStore>, ttl_secs: u64) -> Result<Revocations, RevocationError> {
        let revocations = Revocations { live: DashMap::new(), store, ttl_secs, published: OnceLock::new() };
        revocations.reload().await?;
        Ok(revocations)
    }

    /// [`Self::load`], or none known when the store does not answer (it
    /// is read again later with [`Self::reload`]).
    pub async fn load_or_empty(store: Arc<dyn RevocationStore>, ttl_secs: u64) -> Revocations {
        let revocations = Revocations { live: DashMap::new(), store, ttl_secs, published: OnceLock::new() };
        if let Err(e) = revocations.reload().await {
            tracing::warn!(error = %e, "starting without the revocations; loading them once the storage answers");
        }
        revocations
    }

    /// Reads the store again (a node that missed published revocations).
    ///
    /// # Errors
    /// The store could not be read (what is known stays).
    pub async fn reload(&self) -> Result<usize, RevocationError> {
        let all = self.store.load(crate::clock::unix_secs()).await?;
        let n = all.len();
        for (user, revocation) in all {
            self.apply(&user, revocation);
        }
        Ok(n)
    }

    /// Refuses a token issued before its user's revocation (or without an
    /// `iat` while the user is revoked).
    ///
    /// # Errors
    /// [`AuthError::Revoked`].
    pub fn check(&self, identity: &Identity) -> Result<(), AuthError> {
        if self.live.is_empty() {
            return Ok(());
        }
        let Some(revocation) = self.live.get(&*identity.user).map(|r| *r) else {
            return Ok(());
        };
        let now = crate::clock::unix_secs();
        if now >= revocation.until {
            self.live.remove_if(&*identity.user, |_, r| now >= r.until);
            return Ok(());
        }
        match identity.issued_at {
            Some(iat) if iat >= revocation.before => Ok(()),
            _ => Err(AuthError::Revoked),
        }
    }

    /// Records a revocation learnt from storage or another node (the later
    /// one wins).
    pub fn apply(&self, user: &str, revocation: Revocation) {
        let mut entry = self.live.entry(user.into()).or_insert(revocation);
        if revocation.before > entry.before {
            *entry = revocation;
        }
    }

    /// Revokes `user` now: stored, applied here, published to the cluster.
    ///
    /// # Errors
    /// The store failed: nothing was revoked.
    pub async fn revoke(&self, user: &str) -> Result<Revocation, RevocationError> {
        let now = crate::clock::unix_secs();
        let revocation = Revocation { before: now, until: now.saturating_add(self.ttl_secs) };
        self.store.save(user, revocation).await?;
        self.apply(user, revocation);
        if let Some(tx) = self.published.get() {
            let _ = tx.send((user.to_string(), revocation));
        }
        Ok(revocation)
    }

    /// The feed of revocations made on this node, for the cluster router to
    /// publish; None if already taken.
    pub fn subscribe(&self) -> Option<mpsc::UnboundedReceiver<(String, Revocation)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.published.set(tx).ok().map(|()| rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Memory(Mutex<Vec<(String, Revocation)>>);

    #[async_trait]
    impl RevocationStore for Memory {
        async fn save(&self, user: &str, revocation: Revocation) -> Result<(), RevocationError> {
            self.0.lock().unwrap().push((user.into(), revocation));
            Ok(())
        }
        async fn load(&self, now: u64) -> Result<Vec<(String, Revocation)>, RevocationError> {
            Ok(self.0.lock().unwrap().iter().filter(|(_, r)| r.until > now).cloned().collect())
        }
    }

    fn identity(user: &str, issued_at: Option<u64>) -> Identity {
        Identity { user: user.into(), device: None, expires_at: u64::MAX, issued_at }
    }

    #[tokio::test]
    async fn tokens_issued_before_the_revocation_are_refused_later_ones_pass() {
        let revocations = Revocations::load(Arc::new(Memory::default()), 3600).await.unwrap();
        assert_eq!(revocations.check(&identity("a", None)), Ok(()), "nobody revoked");
        let r = revocations.revoke("a").await.unwrap();
        assert_eq!(revocations.check(&identity("a", Some(r.before - 1))), Err(AuthError::Revoked));
        assert_eq!(revocations.check(&identity("a", None)), Err(AuthError::Revoked), "no iat, no proof");
        assert_eq!(revocations.check(&identity("a", Some(r.before))), Ok(()), "same second: new token");
        assert_eq!(revocations.check(&identity("b", Some(0))), Ok(()), "another user");
    }

    #[tokio::test]
    async fn revocations_survive_in_the_store_and_expire() {
        let store = Arc::new(Memory::default());
        let first = Revocations::load(store.clone(), 3600).await.unwrap();
        first.revoke("a").await.unwrap();
        let second = Revocations::load(store.clone(), 3600).await.unwrap();
        assert_eq!(second.check(&identity("a", Some(1))), Err(AuthError::Revoked), "loaded after a restart");
        let old = Revocations::load(Arc::new(Memory::default()), 3600).await.unwrap();
        old.apply("a", Revocation { before: 100, until: 200 });
        assert_eq!(old.check(&identity("a", Some(1))), Ok(()), "past its ttl");
    }
}
