//! Follows the client's frame boundaries in the bytes handed to
//! tungstenite, so the session can tell when tungstenite holds no part of
//! a frame or message: only then may its buffers be dropped and rebuilt
//! small (see `gateway/session.rs`, "compaction").
//!
//! Why: tungstenite grows its input buffer to the largest frame read and
//! its output buffer to the largest burst written, and keeps both for the
//! connection's life. One 60 KB message each way pinned ~120 KiB per
//! session for good; a client could bloat every session it opens.

/// The parse state of the inbound byte stream (RFC 6455 section 5.2),
/// kept in 16 bytes: it lives in every session.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameTracker {
    /// In the header: the payload length read so far; in the payload: the
    /// payload bytes still to come.
    count: u64,
    /// Header bytes of the current frame seen so far (0: not in a header).
    header_seen: u8,
    /// Header length once the second byte is known (0 before).
    header_len: u8,
    /// Length bytes of the extended payload length (0, 2 or 8).
    ext_len: u8,
    /// The current frame is a data frame without FIN, or a data message
    /// was begun without FIN: tungstenite holds its parts.
    fragmented: bool,
    /// The current frame is a data (or continuation) frame with FIN.
    pending_fin: Option<bool>,
}

impl FrameTracker {
    /// Accounts for `bytes`, the next bytes of the stream.
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.header_seen == 0 && self.count > 0 {
                // Inside a payload: skip as much of it as is here.
                let skip = usize::try_from(self.count).unwrap_or(usize::MAX).min(bytes.len());
                self.count -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            bytes = rest;
            self.header_byte(byte);
        }
    }

    fn header_byte(&mut self, byte: u8) {
        match self.header_seen {
            0 => {
                let opcode = byte & 0x0f;
                // Data (1, 2) and continuation (0) frames shape messages;
                // control frames (8-15) may interleave and change nothing.
                self.pending_fin = (opcode < 8).then_some(byte & 0x80 != 0);
                self.count = 0;
            }
            1 => {
                let len7 = byte & 0x7f;
                self.ext_len = match len7 {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                if self.ext_len == 0 {
                    self.count = u64::from(len7);
                }
                let mask = if byte & 0x80 != 0 { 4 } else { 0 };
                self.header_len = 2 + self.ext_len + mask;
            }
            n if n < 2 + self.ext_len => self.count = (self.count << 8) | u64::from(byte),
            _ => {} // masking key
        }
        self.header_seen += 1;
        if self.header_seen >= 2 && self.header_seen == self.header_len {
            // The header is whole; the payload (self.count bytes) follows.
            self.header_seen = 0;
            if let Some(fin) = self.pending_fin.take() {
                self.fragmented = !fin;
            }
        }
    }

    /// Every byte seen so far belongs to complete frames, and no message is
    /// half-assembled.
    pub fn at_message_boundary(&self) -> bool {
        self.header_seen == 0 && self.count == 0 && !self.fragmented
    }
}

#[cfg(test)]
mod tests {
    use super::FrameTracker;

    /// A masked client frame (mask key zero: the bytes are the payload).
    fn frame(fin: bool, opcode: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload_len {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend(std::iter::repeat_n(7u8, payload_len));
        f
    }

    #[test]
    fn boundaries_are_found_whatever_the_read_sizes() {
        let mut stream = frame(true, 2, 60_000);
        stream.extend(frame(true, 9, 0)); // a ping
        stream.extend(frame(true, 2, 5));
        stream.extend(frame(true, 2, 70_000));
        for chunk in [1usize, 3, 7, 1024, 100_000] {
            let mut t = FrameTracker::default();
            for (i, piece) in stream.chunks(chunk).enumerate() {
                t.observe(piece);
                let end = (i + 1) * chunk >= stream.len();
                if end {
                    assert!(t.at_message_boundary(), "chunk {chunk}: end of stream is a boundary");
                }
            }
            let mut t = FrameTracker::default();
            t.observe(&stream[..stream.len() - 1]);
            assert!(!t.at_message_boundary(), "one byte short is mid-frame");
            let mut t = FrameTracker::default();
            t.observe(&frame(true, 2, 300)[..3]);
            assert!(!t.at_message_boundary(), "a partial header is mid-frame");
        }
    }

    #[test]
    fn a_fragmented_message_is_not_a_boundary_until_its_final_frame() {
        let mut t = FrameTracker::default();
        t.observe(&frame(false, 2, 10));
        assert!(!t.at_message_boundary());
        t.observe(&frame(true, 9, 2)); // a ping between fragments
        assert!(!t.at_message_boundary());
        t.observe(&frame(true, 0, 10));
        assert!(t.at_message_boundary());
    }
}
