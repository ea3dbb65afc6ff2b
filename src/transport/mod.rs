//! Getting frames onto a session's socket: the bounded [`Outbox`] pushers
//! hand frames to, and the [`SessionSocket`] the session task and (while the
//! session is idle) pushers write through. Depends only on the protocol
//! (and the metrics it counts frames in).
//!
//! The ordering rule, kept under the outbox lock: pushers write directly
//! only while the session has *released* the writer; the session *claims*
//! it back before it buffers anything for the socket (a reply, a ping, a
//! queued batch, a close), so frames leave in the order they were produced.

mod direct;
mod inbound;
mod outbox;

pub use direct::{Overflowed, SessionSocket};
pub use outbox::{Batch, Enqueue, Outbox, QueueLimits};
