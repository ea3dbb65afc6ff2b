//! The handler table: action code -> handler, filled at startup.
//!
//! Handlers see the store and the [`Router`] through [`Ctx`], never a socket;
//! the session task owns the socket and writes whatever frame comes back.

mod add_friend;
mod fetch_info;
mod ping;

use crate::protocol::{Frame, HEADER_LEN, action, encode_json, error_code};
use crate::router::Router;
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// What handlers may touch.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub router: Arc<dyn Router>,
}

/// The authenticated sender of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub session_id: u64,
}

/// A request that could not be served; becomes an ERROR (4) frame and the
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub code: &'static str,
    pub message: String,
}

impl HandlerError {
    pub fn new(code: &'static str, message: impl Into<String>) -> HandlerError {
        HandlerError { code, message: message.into() }
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> HandlerError {
        tracing::error!(error = %e, "store failure in handler");
        HandlerError::new(error_code::INTERNAL, "internal error, retry later")
    }
}

/// A reply payload: a JSON object serialized straight into the frame buffer
/// behind room for the action header, so a reply costs one allocation and
/// the dispatcher can add `seq` without re-parsing.
pub struct Reply(Vec<u8>);

impl Reply {
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&[0; HEADER_LEN]);
        // Serializing our own derive types cannot fail (string keys only,
        // infallible writer); fall back to `{}` rather than panic.
        if serde_json::to_writer(&mut buf, value).is_err() {
            buf.truncate(HEADER_LEN);
            buf.extend_from_slice(b"{}");
        }
        Reply(buf)
    }

    fn into_frame(mut self, action: u32, seq: Option<u64>) -> Bytes {
        self.0[..HEADER_LEN].copy_from_slice(&action.to_be_bytes());
        // Replies are JSON objects: splice `"seq":N` in before the last brace.
        if let Some(seq) = seq
            && self.0.last() == Some(&b'}')
        {
            self.0.pop();
            if self.0.len() > HEADER_LEN + 1 {
                self.0.push(b',');
            }
            self.0.extend_from_slice(format!("\"seq\":{seq}}}").as_bytes());
        }
        Bytes::from(self.0)
    }
}

/// A built-in action served with a JSON object request and reply.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError>;
}

/// Deserializes a request payload (already checked to be a JSON object by
/// the dispatcher; empty means `{}`) into a handler's typed request.
pub(crate) fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HandlerError> {
    let payload = if payload.is_empty() { b"{}".as_slice() } else { payload };
    serde_json::from_slice(payload)
        .map_err(|e| HandlerError::new(error_code::BAD_PAYLOAD, format!("invalid request: {e}")))
}

/// The fields every request may carry. Unknown fields are skipped without
/// allocating; each handler then parses its own typed request.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    seq: Option<Value>,
}

/// Checks that a built-in payload is a JSON object and extracts `seq`.
fn envelope(payload: &[u8]) -> Result<Option<u64>, &'static str> {
    if payload.is_empty() {
        return Ok(None);
    }
    // A derive struct would also accept a JSON array; requests are objects.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("payload must be a JSON object");
    }
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| "payload is not valid JSON")?;
    match envelope.seq {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or("seq must be an unsigned 64-bit integer"),
    }
}

struct Entry {
    reply_action: u32,
    handler: Box<dyn Handler>,
}

pub struct HandlerTable {
    entries: HashMap<u32, Entry>,
}

impl Default for HandlerTable {
    fn default() -> Self {
        Self::with_builtins()
    }
}

impl HandlerTable {
    pub fn empty() -> HandlerTable {
        HandlerTable { entries: HashMap::new() }
    }

    /// The table the gateway serves: PING, ADD_FRIEND, FETCH_INFO.
    pub fn with_builtins() -> HandlerTable {
        let mut table = HandlerTable::empty();
        table.register(action::PING, action::PONG, ping::Ping);
        table.register(action::ADD_FRIEND, action::ADD_FRIEND, add_friend::AddFriend);
        table.register(action::FETCH_INFO, action::FETCH_INFO, fetch_info::FetchInfo);
        table
    }

    /// Adds (or replaces) the handler for `action`; replies go out as
    /// `reply_action` (the same code, except PING -> PONG).
    pub fn register(&mut self, action: u32, reply_action: u32, handler: impl Handler + 'static) {
        self.entries.insert(action, Entry { reply_action, handler: Box::new(handler) });
    }

    /// Serves one client frame and returns the frame to send back, if any.
    /// Every failure is an ERROR frame; nothing here closes the connection.
    pub async fn dispatch(&self, ctx: &Ctx, caller: Caller<'_>, frame: Frame) -> Option<Bytes> {
        let Some(entry) = self.entries.get(&frame.action) else {
            // A PONG answering nothing is harmless; do not make noise about it.
            if frame.action == action::PONG {
                return None;
            }
            let seq = envelope(&frame.payload).ok().flatten();
            let message = format!("no handler for action {}", frame.action);
            return Some(error_frame(error_code::UNKNOWN_ACTION, &message, frame.action, seq));
        };
        let seq = match envelope(&frame.payload) {
            Ok(seq) => seq,
            Err(message) => return Some(error_frame(error_code::BAD_PAYLOAD, message, frame.action, None)),
        };
        match entry.handler.handle(ctx, caller, &frame.payload).await {
            Ok(reply) => Some(reply.into_frame(entry.reply_action, seq)),
            Err(e) => Some(error_frame(e.code, &e.message, frame.action, seq)),
        }
    }
}

/// An ERROR (4) frame: `{"code", "message", "action", "seq"}`.
pub fn error_frame(code: &str, message: &str, action: u32, seq: Option<u64>) -> Bytes {
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        code: &'a str,
        message: &'a str,
        action: u32,
        seq: Option<u64>,
    }
    encode_json(action::ERROR, &ErrorBody { code, message, action, seq })
}
