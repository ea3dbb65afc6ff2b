//! Records of the users written most recently, decoded and as stored, so
//! the next operation on them (the ack that follows a push, within
//! milliseconds) skips reading and decoding the record, and sees whether
//! it changed anything by comparing encodings. Only for a store that can
//! tell a record's current version without reading it (the embedded log
//! keeps versions in memory): an entry is used only while its version is
//! still the stored one, so another writer of the same store (a second
//! engine) only costs a miss. Redis has other writers (other nodes): no cache.
//!
//! Bounded by `inbox.record_cache_users`: two generations of at most half
//! each; when the young one is full the old one is dropped and the young
//! one becomes old, so a user written in either stays (O(1), no LRU list).

use super::model::UserInbox;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

pub struct Records {
    half: usize,
    gens: Mutex<Gens>,
}

/// A user's record at a version: decoded, and its stored bytes.
type Entry = (u64, (UserInbox, Vec<u8>));

#[derive(Default)]
struct Gens {
    young: HashMap<String, Entry>,
    old: HashMap<String, Entry>,
}

impl Records {
    pub fn new(users: usize) -> Records {
        Records { half: users / 2, gens: Mutex::new(Gens::default()) }
    }

    /// Takes the user's record out if it is cached at `version`.
    pub fn take(&self, user: &str, version: u64) -> Option<(UserInbox, Vec<u8>)> {
        if self.half == 0 {
            return None;
        }
        let mut gens = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, inbox) = gens.young.remove(user).or_else(|| gens.old.remove(user))?;
        (at == version).then_some(inbox)
    }

    /// Keeps the user's record as saved at `version` (`stored`: its bytes).
    pub fn put(&self, user: &str, version: u64, inbox: UserInbox, stored: Vec<u8>) {
        if self.half == 0 {
            return;
        }
        let mut gens = self.gens.lock().unwrap_or_else(PoisonError::into_inner);
        if gens.young.len() >= self.half {
            gens.old = std::mem::take(&mut gens.young);
        }
        gens.young.insert(user.to_string(), (version, (inbox, stored)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(last_id: u64) -> UserInbox {
        UserInbox { last_id, ..UserInbox::default() }
    }

    #[test]
    fn an_entry_serves_only_its_version_and_once() {
        let records = Records::new(4);
        records.put("alice", 3, inbox(7), b"7".to_vec());
        assert!(records.take("alice", 2).is_none(), "another version: a miss, and dropped");
        assert!(records.take("alice", 3).is_none());
        records.put("alice", 3, inbox(7), b"7".to_vec());
        assert_eq!(records.take("alice", 3).map(|(i, b)| (i.last_id, b)), Some((7, b"7".to_vec())));
        assert!(records.take("alice", 3).is_none(), "taken out");
    }

    #[test]
    fn it_holds_at_most_its_bound_and_keeps_the_recent() {
        let records = Records::new(4);
        for i in 0..10u64 {
            records.put(&format!("u{i}"), 1, inbox(i), Vec::new());
        }
        let kept: Vec<u64> = (0..10u64).filter(|i| records.take(&format!("u{i}"), 1).is_some()).collect();
        assert!(kept.len() <= 4, "{kept:?}");
        assert!(kept.contains(&9) && kept.contains(&8), "the newest stay: {kept:?}");
        let off = Records::new(0);
        off.put("a", 1, inbox(1), Vec::new());
        assert!(off.take("a", 1).is_none());
    }
}
