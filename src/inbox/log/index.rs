//! Where everything live in the log is: rebuilt from the log at startup,
//! kept current by the writer after each write. Records and payloads stay
//! on disk (read back with one `pread`, usually from the page cache); only
//! their locations and the webhook schedule are in memory (about 150 bytes
//! per user plus 24 per held payload and per kept finished status).
//!
//! Users are found by hash (several lookups per push and per ack: a
//! B-tree of names spent its time comparing their common prefixes); the
//! sorted set of names is kept beside it only for the sweep's paging, and
//! changes only when a user first appears.

use super::entry::{Entry, Kind};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::sync::Arc;

/// An entry's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub seg: u32,
    pub off: u64,
    pub len: u32,
}

#[derive(Debug, Default)]
pub struct UserEntry {
    /// The record's version (0: none yet).
    pub version: u64,
    pub record: Option<Loc>,
    /// Held payloads by message id, ascending.
    pub payloads: Vec<(u64, Loc)>,
    /// Finished messages' statuses by id, ascending.
    pub finished: Vec<(u64, Loc)>,
}

pub struct Segment {
    pub file: Arc<File>,
    /// Bytes written (the next entry's offset).
    pub len: u64,
    /// Bytes of entries still live (the rest is garbage for compaction).
    pub live: u64,
}

#[derive(Default)]
pub struct Index {
    pub users: HashMap<Arc<str>, UserEntry>,
    /// The names of `users`, in order (the sweep pages through them).
    pub names: BTreeSet<Arc<str>>,
    /// (due unix ms, user, id), in due order.
    pub due: BTreeSet<(u64, Box<str>, u64)>,
    /// (user, id) -> (due unix ms, the entry that set it).
    pub due_by: HashMap<(Box<str>, u64), (u64, Loc)>,
    pub segments: BTreeMap<u32, Segment>,
}

impl Index {
    pub fn version(&self, user: &str) -> u64 {
        self.users.get(user).map_or(0, |u| u.version)
    }

    /// Bytes in the log, and bytes of them still live.
    pub fn sizes(&self) -> (u64, u64) {
        self.segments.values().fold((0, 0), |(len, live), s| (len + s.len, live + s.live))
    }

    /// Takes a written entry into account (in log order).
    pub fn apply(&mut self, entry: &Entry<'_>, loc: Loc) {
        match entry.kind {
            Kind::Record => {
                let user = self.user_mut(entry.user);
                let old = user.record.replace(loc);
                user.version = entry.key;
                self.dead(old);
                self.live(loc);
            }
            Kind::Payload | Kind::Finished => {
                let user = self.user_mut(entry.user);
                let old = put(user.list(entry.kind), entry.key, loc);
                self.dead(old);
                self.live(loc);
            }
            Kind::Drop | Kind::Forget => {
                let old = self.users.get_mut(entry.user).and_then(|user| {
                    let list = user.list(entry.kind);
                    let i = list.binary_search_by_key(&entry.key, |(id, _)| *id).ok()?;
                    Some(list.remove(i).1)
                });
                self.dead(old);
            }
            Kind::Due | Kind::Undue => {
                let key: (Box<str>, u64) = (entry.user.into(), entry.key);
                if let Some((at, old)) = self.due_by.remove(&key) {
                    self.due.remove(&(at, key.0.clone(), key.1));
                    self.dead(Some(old));
                }
                if entry.kind == Kind::Due {
                    let at = entry.due_at();
                    self.due.insert((at, key.0.clone(), key.1));
                    self.due_by.insert(key, (at, loc));
                    self.live(loc);
                }
            }
        }
    }

    /// Whether the entry at `loc` is still what the index points to (so
    /// compaction must keep it).
    pub fn is_live(&self, entry: &Entry<'_>, loc: Loc) -> bool {
        match entry.kind {
            Kind::Record => self.users.get(entry.user).is_some_and(|u| u.record == Some(loc)),
            Kind::Payload => self.payload(entry.user, entry.key) == Some(loc),
            Kind::Finished => self.finished(entry.user, entry.key) == Some(loc),
            Kind::Due => self.due_by.get(&(entry.user.into(), entry.key)).is_some_and(|(_, l)| *l == loc),
            // Markers of removal: everything they removed is older, and
            // compaction frees segments oldest first.
            Kind::Drop | Kind::Undue | Kind::Forget => false,
        }
    }

    /// The user's entry, made when they first appear (the only time the
    /// name is copied; after that the key is shared).
    fn user_mut(&mut self, user: &str) -> &mut UserEntry {
        let name = match self.users.get_key_value(user) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Arc<str> = user.into();
                self.names.insert(name.clone());
                name
            }
        };
        self.users.entry(name).or_default()
    }

    /// Up to `limit` user names after `after`, in order.
    pub fn users_after(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        let range = match after {
            Some(after) => self.names.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.names.range::<str, _>(..),
        };
        range.take(limit).map(|user| user.to_string()).collect()
    }

    pub fn payload(&self, user: &str, id: u64) -> Option<Loc> {
        find(&self.users.get(user)?.payloads, id)
    }

    pub fn finished(&self, user: &str, id: u64) -> Option<Loc> {
        find(&self.users.get(user)?.finished, id)
    }

    pub fn file(&self, seg: u32) -> Option<Arc<File>> {
        self.segments.get(&seg).map(|s| s.file.clone())
    }

    fn live(&mut self, loc: Loc) {
        if let Some(s) = self.segments.get_mut(&loc.seg) {
            s.live += u64::from(loc.len);
        }
    }

    fn dead(&mut self, loc: Option<Loc>) {
        if let Some(loc) = loc
            && let Some(s) = self.segments.get_mut(&loc.seg)
        {
            s.live = s.live.saturating_sub(u64::from(loc.len));
        }
    }
}

impl UserEntry {
    /// The list a payload or finished-status entry belongs to.
    fn list(&mut self, kind: Kind) -> &mut Vec<(u64, Loc)> {
        match kind {
            Kind::Finished | Kind::Forget => &mut self.finished,
            _ => &mut self.payloads,
        }
    }
}

fn find(list: &[(u64, Loc)], id: u64) -> Option<Loc> {
    list.binary_search_by_key(&id, |(i, _)| *i).ok().map(|i| list[i].1)
}

/// Sets `id` in a sorted list; returns the location it replaced.
fn put(list: &mut Vec<(u64, Loc)>, id: u64, loc: Loc) -> Option<Loc> {
    match list.binary_search_by_key(&id, |(i, _)| *i) {
        Ok(i) => Some(std::mem::replace(&mut list[i].1, loc)),
        Err(i) => {
            list.insert(i, (id, loc));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::log::entry;

    fn index() -> Index {
        let mut index = Index::default();
        let file = Arc::new(tempfile::tempfile().expect("tempfile"));
        index.segments.insert(1, Segment { file, len: 1000, live: 0 });
        index
    }

    fn apply(index: &mut Index, kind: Kind, user: &str, key: u64, value: &[u8], off: u64) -> Loc {
        let mut buf = Vec::new();
        let len = entry::encode(&mut buf, off, kind, user, key, value) as u32;
        let (e, _) = entry::decode(&buf).expect("decode");
        let loc = Loc { seg: 1, off, len };
        index.apply(&e, loc);
        loc
    }

    #[test]
    fn a_newer_entry_supersedes_and_live_bytes_follow() {
        let mut index = index();
        let r1 = apply(&mut index, Kind::Record, "alice", 1, b"one", 0);
        let p1 = apply(&mut index, Kind::Payload, "alice", 1, b"hello", 100);
        let r2 = apply(&mut index, Kind::Record, "alice", 2, b"two", 200);
        assert_eq!(index.version("alice"), 2);
        assert_eq!(index.users["alice"].record, Some(r2));
        assert_eq!(index.payload("alice", 1), Some(p1));
        assert_eq!(index.sizes().1, u64::from(p1.len + r2.len), "the first record is garbage");
        apply(&mut index, Kind::Drop, "alice", 1, b"", 300);
        assert_eq!(index.payload("alice", 1), None);
        assert_eq!(index.sizes().1, u64::from(r2.len));
        let _ = r1;
    }

    #[test]
    fn due_checks_move_and_go() {
        let mut index = index();
        apply(&mut index, Kind::Due, "alice", 5, &10u64.to_le_bytes(), 0);
        apply(&mut index, Kind::Due, "alice", 5, &20u64.to_le_bytes(), 100);
        assert_eq!(index.due.iter().map(|(at, u, id)| (*at, &**u, *id)).collect::<Vec<_>>(), [(20, "alice", 5)]);
        apply(&mut index, Kind::Undue, "alice", 5, b"", 200);
        assert!(index.due.is_empty() && index.due_by.is_empty());
        assert_eq!(index.sizes().1, 0);
    }
}
