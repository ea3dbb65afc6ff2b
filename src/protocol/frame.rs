use byteorder::{BigEndian, ByteOrder};
use bytes::{BufMut, Bytes, BytesMut};

/// Length of the action header that starts every frame.
pub const HEADER_LEN: usize = 4;

/// One decoded frame. The payload shares the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub action: u32,
    pub payload: Bytes,
}

/// Why a binary message is not a frame. Only one case exists today, but the
/// enum keeps the error precise as the header grows (flags, versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 4 bytes: there is no action code to dispatch on.
    TooShort { len: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort { len } => {
                write!(f, "frame of {len} bytes is shorter than the 4-byte action header")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl Frame {
    /// Splits a binary message into action and payload without copying.
    ///
    /// # Errors
    /// [`FrameError::TooShort`] when the message cannot hold an action code.
    pub fn decode(mut message: Bytes) -> Result<Frame, FrameError> {
        if message.len() < HEADER_LEN {
            return Err(FrameError::TooShort { len: message.len() });
        }
        let action = BigEndian::read_u32(&message[..HEADER_LEN]);
        let payload = message.split_off(HEADER_LEN);
        Ok(Frame { action, payload })
    }

    pub fn encode(&self) -> Bytes {
        encode(self.action, &self.payload)
    }
}

/// Builds `[action][payload]` in one allocation.
pub fn encode(action: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_u32(action);
    buf.put_slice(payload);
    buf.freeze()
}

/// Bytes a MESSAGE (6) frame adds around the inner payload: the outer
/// header, the u64 id and the inner action.
pub const MESSAGE_OVERHEAD: usize = HEADER_LEN + 8 + HEADER_LEN;

/// A MESSAGE (6) frame: `[6][u64 id][u32 inner action][inner payload]`.
pub fn encode_message(id: u64, inner_action: u32, inner_payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(MESSAGE_OVERHEAD + inner_payload.len());
    buf.put_u32(super::action::MESSAGE);
    buf.put_u64(id);
    buf.put_u32(inner_action);
    buf.put_slice(inner_payload);
    buf.freeze()
}

/// The id of a MESSAGE (6) frame (whole frame, header included); None for
/// any other frame.
pub fn message_id(frame: &[u8]) -> Option<u64> {
    let (head, rest) = frame.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*head) != super::action::MESSAGE {
        return None;
    }
    rest.first_chunk::<8>().map(|id| u64::from_be_bytes(*id))
}

/// A MESSAGE payload split into (id, inner action, inner payload).
pub fn decode_message(payload: &[u8]) -> Option<(u64, u32, &[u8])> {
    let (id, rest) = payload.split_first_chunk::<8>()?;
    let (action, inner) = rest.split_first_chunk::<4>()?;
    Some((u64::from_be_bytes(*id), u32::from_be_bytes(*action), inner))
}

/// Builds a frame whose payload is the JSON serialization of `value`,
/// serializing straight into the frame buffer (no intermediate String).
pub fn encode_json<T: serde::Serialize + ?Sized>(action: u32, value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(64).writer();
    buf.get_mut().put_u32(action);
    // Serializing our own Value/derive types into memory cannot fail: there are
    // no non-string map keys and the writer is infallible.
    if serde_json::to_writer(&mut buf, value).is_err() {
        let inner = buf.get_mut();
        inner.truncate(HEADER_LEN);
        inner.put_slice(b"{}");
    }
    buf.into_inner().freeze()
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_config_knows_the_message_overhead() {
        assert_eq!(crate::config::MESSAGE_FRAME_OVERHEAD, MESSAGE_OVERHEAD);
    }

    use super::*;

    #[test]
    fn short_frames_are_rejected_not_panicking() {
        for len in 0..HEADER_LEN {
            let err = Frame::decode(Bytes::from(vec![0u8; len])).unwrap_err();
            assert_eq!(err, FrameError::TooShort { len });
        }
    }

    #[test]
    fn header_only_frame_has_empty_payload() {
        let frame = Frame::decode(Bytes::from_static(&[0, 0, 0, 2])).unwrap();
        assert_eq!(frame.action, 2);
        assert!(frame.payload.is_empty());
    }
}
