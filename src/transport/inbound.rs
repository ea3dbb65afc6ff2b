//! Follows the client's frame boundaries in the bytes handed to
//! tungstenite, so the session can tell when tungstenite holds no part of
//! a frame or message: only then may its buffers be dropped and rebuilt
//! small (see `gateway/session.rs`, "compaction").
//!
//! Why: tungstenite grows its input buffer to the largest frame read and
//! its output buffer to the largest burst written, and keeps both for the
//! connection's life. One 60 KB message each way pinned ~120 KiB per
//! session for good; a client could bloat every session it opens.

/// The parse state of the inbound byte stream (RFC 6455 section 5.2).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameTracker {
    /// Header bytes seen of the current frame (0 at a frame boundary).
    header: [u8; 14],
    have: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data message was begun without FIN: tungstenite holds its parts.
    fragmented: bool,
}

impl FrameTracker {
    /// Accounts for `bytes`, the next bytes of the stream.
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len());
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.header[usize::from(self.have)] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.header_complete() {
                let opcode = self.header[0] & 0x0f;
                let fin = self.header[0] & 0x80 != 0;
                // Data (1, 2) and continuation (0) frames shape messages;
                // control frames (8-15) may interleave and change nothing.
                if opcode < 8 {
                    self.fragmented = !fin;
                }
                self.have = 0;
                self.payload_left = payload;
            }
        }
    }

    /// The payload length once the header is whole.
    fn header_complete(&self) -> Option<u64> {
        let have = usize::from(self.have);
        if have < 2 {
            return None;
        }
        let masked = self.header[1] & 0x80 != 0;
        let len7 = self.header[1] & 0x7f;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if have < need {
            return None;
        }
        Some(match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or([0xff; 8])),
        })
    }

    /// Every byte seen so far belongs to complete frames, and no message is
    /// half-assembled.
    pub fn at_message_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0 && !self.fragmented
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
