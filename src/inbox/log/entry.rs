//! The log's entry format (the bytes on disk; README "Embedded inbox").
//!
//! ```text
//! [u32 LE body length][u32 LE crc32 of the body][body]
//! body: [u64 LE seq][u8 kind][u16 LE user length][user UTF-8][kind's fields]
//!   1 record   [u64 version][record bytes]
//!   2 payload  [u64 id][payload bytes]
//!   3 drop     [u64 id]              the payload of id is gone
//!   4 due      [u64 id][u64 unix ms] the webhook check of id is due then
//!   5 undue    [u64 id]              the webhook check of id is gone
//!   6 finished [u64 id][metadata]    a finished message's final status
//!   7 forget   [u64 id]              that status is no longer kept
//! ```
//!
//! `seq` counts every entry ever written, across segments, one by one:
//! recovery stops at the first entry that is torn, damaged or out of
//! sequence, so nothing after a crash's torn write is ever read back.
//!
//! The entries of one save (a record, its payloads, drops, statuses) are
//! written together, and the kind byte of the last one has [`LAST`] set:
//! recovery applies a group only once it has read its last entry, so a
//! crash that tore a save keeps none of it (never a record without the
//! payload it lists).

/// Header bytes before the body.
pub const HEADER: usize = 8;
/// Set on the kind byte of the last entry of a group written together.
pub const LAST: u8 = 0x80;
/// Where an entry's kind byte is, from the entry's start.
const KIND_AT: usize = HEADER + 8;
/// Body bytes before the user id.
const BODY_PREFIX: usize = 8 + 1 + 2;
/// Largest body accepted when reading (a length beyond it is damage, not an
/// entry): a record is bounded by `inbox.max_messages`, a payload by the
/// frame size.
pub const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Record = 1,
    Payload = 2,
    Drop = 3,
    Due = 4,
    Undue = 5,
    Finished = 6,
    Forget = 7,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Record,
            2 => Kind::Payload,
            3 => Kind::Drop,
            4 => Kind::Due,
            5 => Kind::Undue,
            6 => Kind::Finished,
            7 => Kind::Forget,
            _ => return None,
        })
    }
}

/// One decoded entry, borrowing its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    pub kind: Kind,
    pub user: &'a str,
    /// Version (record) or message id (the others).
    pub key: u64,
    /// Record or payload bytes; the due time as 8 LE bytes for `Due`.
    pub value: &'a [u8],
    /// The last entry of its group (the group is complete).
    pub last: bool,
}

impl Entry<'_> {
    /// The due time of a `Due` entry.
    pub fn due_at(&self) -> u64 {
        self.value.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b))
    }
}

/// Bytes an entry of `user` takes besides its value (8 more for a due
/// time's value).
pub fn overhead(user: &str) -> usize {
    HEADER + BODY_PREFIX + user.len() + 8 + 8
}

/// Appends one entry to `out`; returns its length in bytes.
pub fn encode(out: &mut Vec<u8>, seq: u64, kind: Kind, user: &str, key: u64, value: &[u8]) -> usize {
    let start = out.len();
    let user = &user.as_bytes()[..user.len().min(u16::MAX as usize)];
    let body_len = BODY_PREFIX + user.len() + 8 + value.len();
    out.reserve(HEADER + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(user.len() as u16).to_le_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Marks the entry starting at `at` in `buf` as its group's last.
pub fn mark_last(buf: &mut [u8], at: usize) {
    let Ok(total) = declared_len(&buf[at..]) else { return };
    buf[at + KIND_AT] |= LAST;
    let crc = crc32fast::hash(&buf[at + HEADER..at + total]);
    buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes are not an entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than the entry needs: a torn write at the end.
    Short,
    /// The checksum, the length or a field is wrong.
    Damaged,
}

/// The body length an entry at the start of `bytes` declares (with its
/// header), when the header is there.
pub fn declared_len(bytes: &[u8]) -> Result<usize, Bad> {
    let len = bytes.first_chunk::<4>().ok_or(Bad::Short)?;
    let len = u32::from_le_bytes(*len) as usize;
    if !(BODY_PREFIX + 8..=MAX_BODY).contains(&len) {
        return Err(Bad::Damaged);
    }
    Ok(HEADER + len)
}

/// Decodes the entry at the start of `bytes`; returns it and its length.
pub fn decode(bytes: &[u8]) -> Result<(Entry<'_>, usize), Bad> {
    let total = declared_len(bytes)?;
    let whole = bytes.get(..total).ok_or(Bad::Short)?;
    let crc = u32::from_le_bytes(*whole[4..].first_chunk::<4>().ok_or(Bad::Short)?);
    let body = &whole[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err(Bad::Damaged);
    }
    let seq = u64::from_le_bytes(*body.first_chunk::<8>().ok_or(Bad::Damaged)?);
    let kind = Kind::from_u8(body[8] & !LAST).ok_or(Bad::Damaged)?;
    let last = body[8] & LAST != 0;
    let user_len = u16::from_le_bytes([body[9], body[10]]) as usize;
    let rest = &body[BODY_PREFIX..];
    let user = rest.get(..user_len).ok_or(Bad::Damaged)?;
    let user = std::str::from_utf8(user).map_err(|_| Bad::Damaged)?;
    let rest = &rest[user_len..];
    let key = u64::from_le_bytes(*rest.first_chunk::<8>().ok_or(Bad::Damaged)?);
    let value = &rest[8..];
    Ok((Entry { seq, kind, user, key, value, last }, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let mut out = Vec::new();
        let n = encode(&mut out, 7, Kind::Record, "alice", 3, b"{\"last_id\":1}");
        encode(&mut out, 8, Kind::Due, "bob", 12, &99u64.to_le_bytes());
        let (first, len) = decode(&out).expect("first");
        assert_eq!(len, n);
        let value = b"{\"last_id\":1}";
        assert_eq!(first, Entry { seq: 7, kind: Kind::Record, user: "alice", key: 3, value, last: false });
        mark_last(&mut out, n);
        let (second, _) = decode(&out[n..]).expect("second, marked last");
        assert_eq!((second.kind, second.user, second.key, second.due_at()), (Kind::Due, "bob", 12, 99));
        assert!(second.last && !decode(&out).expect("first").0.last);
    }

    #[test]
    fn a_torn_or_flipped_entry_is_refused() {
        let mut out = Vec::new();
        encode(&mut out, 1, Kind::Payload, "alice", 1, b"hello");
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]).map(|_| ()), Err(Bad::Short), "cut at {cut}");
        }
        for at in HEADER..out.len() {
            let mut flipped = out.clone();
            flipped[at] ^= 0x40;
            assert_eq!(decode(&flipped).map(|_| ()), Err(Bad::Damaged), "flip at {at}");
        }
        assert_eq!(decode(&[0; 32]).map(|_| ()), Err(Bad::Damaged), "zeros are not an entry");
    }
}
