//! The handler table: action code -> handler, filled at startup.
//!
//! Handlers see the store and the [`Router`] through [`Ctx`], never a socket;
//! the session task owns the socket and writes whatever frame comes back.

mod add_friend;
mod fetch_info;
mod ping;

use crate::protocol::{Frame, action, encode_json, error_code};
use crate::registry::Router;
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
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

pub type Reply = Map<String, Value>;

/// A built-in action served with a JSON object request and reply.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, request: Map<String, Value>) -> Result<Reply, HandlerError>;
}

/// Deserializes a request object into a handler's typed request.
pub(crate) fn parse<T: DeserializeOwned>(request: Map<String, Value>) -> Result<T, HandlerError> {
    serde_json::from_value(Value::Object(request))
        .map_err(|e| HandlerError::new(error_code::BAD_PAYLOAD, format!("invalid request: {e}")))
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
            let seq = parse_object(&frame.payload).ok().and_then(|m| m.get("seq").and_then(Value::as_u64));
            return Some(error_frame(
                error_code::UNKNOWN_ACTION,
                &format!("no handler for action {}", frame.action),
                frame.action,
                seq,
            ));
        };
        let request = match parse_object(&frame.payload) {
            Ok(request) => request,
            Err(message) => return Some(error_frame(error_code::BAD_PAYLOAD, &message, frame.action, None)),
        };
        let seq = match request.get("seq") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(seq) => Some(seq),
                None => {
                    let message = "seq must be an unsigned 64-bit integer";
                    return Some(error_frame(error_code::BAD_PAYLOAD, message, frame.action, None));
                }
            },
        };
        match entry.handler.handle(ctx, caller, request).await {
            Ok(mut reply) => {
                if let Some(seq) = seq {
                    reply.insert("seq".into(), seq.into());
                }
                Some(encode_json(entry.reply_action, &reply))
            }
            Err(e) => Some(error_frame(e.code, &e.message, frame.action, seq)),
        }
    }
}

/// Built-in payloads are JSON objects; an empty payload means `{}`.
fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    if payload.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("payload must be a JSON object".into()),
        Err(e) => Err(format!("payload is not valid JSON: {e}")),
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
