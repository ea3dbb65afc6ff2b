//! The wire protocol: `[action: u32 big-endian][payload]` in one binary
//! WebSocket message, plus the code tables that proto-spec/README.md documents.
//!
//! This module depends on nothing else in the crate, so clients, the bench
//! tool and the gateway all share one codec.

mod close_reason;
mod codes;
mod frame;

pub use close_reason::{CloseReason, Reconnect};
pub use codes::{action, action_name, close, error_code};
pub use frame::{
    Frame, FrameError, HEADER_LEN, MESSAGE_OVERHEAD, decode_message, encode, encode_json, encode_message, message_id,
};
