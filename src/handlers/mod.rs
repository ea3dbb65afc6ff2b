//! The handler table: action code -> handler, filled at startup.
//!
//! Handlers see the store and the [`Router`] through [`Ctx`], never a socket;
//! the session task owns the socket and writes whatever frame comes back.

mod ack;
mod add_friend;
mod fetch_info;
mod ping;
mod remove_request;

use crate::config::SocialConfig;
use crate::protocol::{Frame, HEADER_LEN, action, encode_json, error_code};
use crate::router::Router;
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What handlers may touch.
#[derive(Clone)]
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub router: Arc<dyn Router>,
    /// Durable messages: acks and replays.
    pub inbox: Arc<crate::inbox::Inbox>,
    /// `session.max_message_bytes`, announced in HELLO: no frame the
    /// gateway sends (reply, ERROR, push) may be larger.
    pub max_message_bytes: usize,
    /// Bounds on friends and pending requests.
    pub social: SocialConfig,
}

/// The authenticated sender of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a str,
    /// The token's device, or [`crate::inbox::DEFAULT_DEVICE`].
    pub device: &'a str,
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

    /// No answer at all (an ACK without `seq`).
    pub fn silent() -> Reply {
        Reply(Vec::new())
    }

    /// Bytes of the payload serialized so far (header excluded).
    pub fn payload_len(&self) -> usize {
        self.0.len() - HEADER_LEN
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

/// The `seq` of a request that is answered without being dispatched (an
/// ERROR that must still match its request); None for application actions,
/// whose payload is opaque.
pub fn request_seq(action: u32, payload: &[u8]) -> Option<u64> {
    if action >= action::APPLICATION_MIN {
        return None;
    }
    envelope(payload).ok().flatten()
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

    /// The table the gateway serves: PING, ACK, ADD_FRIEND, FETCH_INFO,
    /// DECLINE_FRIEND, CANCEL_FRIEND_REQUEST.
    pub fn with_builtins() -> HandlerTable {
        let mut table = HandlerTable::empty();
        table.register(action::PING, action::PONG, ping::Ping);
        table.register(action::ACK, action::ACK, ack::Ack);
        table.register(action::ADD_FRIEND, action::ADD_FRIEND, add_friend::AddFriend);
        table.register(action::FETCH_INFO, action::FETCH_INFO, fetch_info::FetchInfo);
        table.register(action::DECLINE_FRIEND, action::DECLINE_FRIEND, remove_request::Decline);
        table.register(action::CANCEL_FRIEND_REQUEST, action::CANCEL_FRIEND_REQUEST, remove_request::Cancel);
        table
    }

    /// Adds (or replaces) the handler for `action`; replies go out as
    /// `reply_action` (the same code, except PING -> PONG).
    pub fn register(&mut self, action: u32, reply_action: u32, handler: impl Handler + 'static) {
        self.register_boxed(action, reply_action, Box::new(handler));
    }

    pub fn register_boxed(&mut self, action: u32, reply_action: u32, handler: Box<dyn Handler>) {
        self.entries.insert(action, Entry { reply_action, handler });
    }

    /// Serves one client frame and returns the frame to send back, if any.
    /// Every failure is an ERROR frame; nothing here closes the connection.
    /// A panicking handler fails its request alone (ERROR `internal`): it
    /// sees only the store and the router, whose state a panic cannot leave
    /// half-changed (each store call is one transaction), so the session
    /// may go on.
    ///
    /// No frame returned is larger than `ctx.max_message_bytes`: a reply
    /// that would be becomes a `reply_too_large` ERROR.
    pub async fn dispatch(&self, ctx: &Ctx, caller: Caller<'_>, frame: Frame) -> Option<Bytes> {
        let action = frame.action;
        let reply = self.serve(ctx, caller, frame).await?;
        if reply.len() <= ctx.max_message_bytes {
            return Some(reply);
        }
        let seq = seq_of(&reply);
        let message =
            format!("the reply would be {} bytes; max_message_bytes is {}", reply.len(), ctx.max_message_bytes);
        let error = error_frame(error_code::REPLY_TOO_LARGE, &message, action, seq);
        if error.len() <= ctx.max_message_bytes {
            return Some(error);
        }
        // Only with a max_message_bytes too small for any ERROR (< ~150).
        tracing::warn!(action, max = ctx.max_message_bytes, "reply and its ERROR exceed max_message_bytes; dropped");
        None
    }

    async fn serve(&self, ctx: &Ctx, caller: Caller<'_>, frame: Frame) -> Option<Bytes> {
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
        let handled =
            AssertUnwindSafe(async { entry.handler.handle(ctx, caller, &frame.payload).await }).catch_unwind().await;
        match handled {
            Ok(Ok(reply)) if reply.0.is_empty() => None,
            Ok(Ok(reply)) => Some(reply.into_frame(entry.reply_action, seq)),
            Ok(Err(e)) => Some(error_frame(e.code, &e.message, frame.action, seq)),
            Err(_) => {
                crate::metrics::get().panics.increment(1);
                tracing::error!(action = frame.action, user = caller.user, "handler panicked; answered ERROR internal");
                Some(error_frame(error_code::INTERNAL, "internal error, retry later", frame.action, seq))
            }
        }
    }
}

/// The `seq` a reply frame ends with (`..."seq":N}`, as `into_frame` or
/// `error_frame` wrote it), or None.
fn seq_of(frame: &[u8]) -> Option<u64> {
    let body = frame.strip_suffix(b"}")?;
    let start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    if !body[..start].ends_with(b"\"seq\":") {
        return None;
    }
    std::str::from_utf8(&body[start..]).ok()?.parse().ok()
}

/// Longest `message` in an ERROR frame (bytes): messages may quote what the
/// client sent (serde names the offending value), and an ERROR must fit in
/// `max_message_bytes` like every frame.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 160;

/// An ERROR (4) frame: `{"code", "message", "action", "seq"}`; `message` is
/// cut to [`MAX_ERROR_MESSAGE_BYTES`] (at a character boundary, ending in
/// "...").
pub fn error_frame(code: &str, message: &str, action: u32, seq: Option<u64>) -> Bytes {
    let cut;
    let message = if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        cut = format!("{}...", &message[..end]);
        cut.as_str()
    } else {
        message
    };
    #[derive(serde::Serialize)]
    struct ErrorBody<'a> {
        code: &'a str,
        message: &'a str,
        action: u32,
        seq: Option<u64>,
    }
    encode_json(action::ERROR, &ErrorBody { code, message, action, seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use crate::store::EmbeddedStore;

    struct Echo;

    #[async_trait]
    impl Handler for Echo {
        async fn handle(&self, _: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
            if payload.windows(4).any(|w| w == b"fail") {
                return Err(HandlerError::new(error_code::BAD_PAYLOAD, "asked to fail"));
            }
            Ok(Reply::json(&serde_json::json!({ "user": caller.user })))
        }
    }

    async fn ctx(dir: &std::path::Path) -> Ctx {
        let store = EmbeddedStore::open(dir).expect("store");
        let options = crate::inbox::LogOptions::default();
        let inbox = crate::inbox::EmbeddedInbox::open(&store, dir, options).await.expect("inbox");
        Ctx {
            store: Arc::new(store),
            router: Arc::new(Registry::new("n1")),
            inbox: Arc::new(crate::inbox::Inbox::new(Arc::new(inbox), &crate::config::InboxConfig::default())),
            max_message_bytes: 65_536,
            social: crate::config::SocialConfig::default(),
        }
    }

    async fn run(table: &HandlerTable, ctx: &Ctx, action: u32, payload: &[u8]) -> Option<(u32, Value)> {
        let caller = Caller { user: "alice", device: "default", session_id: 1 };
        let frame = Frame { action, payload: Bytes::copy_from_slice(payload) };
        let reply = table.dispatch(ctx, caller, frame).await?;
        let reply = Frame::decode(reply).expect("a frame");
        Some((reply.action, serde_json::from_slice(&reply.payload).expect("json")))
    }

    #[tokio::test]
    async fn dispatch_answers_every_frame_with_its_reply_or_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = ctx(dir.path()).await;
        let mut table = HandlerTable::empty();
        table.register(500, 501, Echo);

        // A reply under the registered reply action, seq echoed.
        let (action, body) = run(&table, &ctx, 500, br#"{"seq":7}"#).await.expect("reply");
        assert_eq!((action, body), (501, serde_json::json!({ "user": "alice", "seq": 7 })));
        // An empty payload means {} and gets no seq.
        assert_eq!(run(&table, &ctx, 500, b"").await, Some((501, serde_json::json!({ "user": "alice" }))));
        // A handler's error keeps the request's action and seq.
        let (action, body) = run(&table, &ctx, 500, br#"{"seq":8,"x":"fail"}"#).await.expect("error");
        assert_eq!(action, action::ERROR);
        assert_eq!(
            (body["code"].as_str(), body["action"].as_u64(), body["seq"].as_u64()),
            (Some("bad_payload"), Some(500), Some(8))
        );
        // Payloads that are not JSON objects, or a seq that is not a u64.
        for bad in [&b"[1]"[..], b"\"x\"", b"{", br#"{"seq":-1}"#, br#"{"seq":"1"}"#] {
            let (action, body) = run(&table, &ctx, 500, bad).await.expect("error");
            assert_eq!((action, body["code"].as_str()), (action::ERROR, Some("bad_payload")), "{bad:?}");
        }
        // No handler: unknown_action, seq kept when readable.
        let (action, body) = run(&table, &ctx, 999, br#"{"seq":3}"#).await.expect("error");
        assert_eq!(
            (action, body["code"].as_str(), body["seq"].as_u64()),
            (action::ERROR, Some("unknown_action"), Some(3))
        );
        // A stray PONG is ignored.
        assert_eq!(run(&table, &ctx, action::PONG, b"").await, None);
    }

    #[test]
    fn the_builtin_table_serves_every_builtin_request() {
        let table = HandlerTable::with_builtins();
        let builtins = [
            action::PING,
            action::ADD_FRIEND,
            action::FETCH_INFO,
            action::DECLINE_FRIEND,
            action::CANCEL_FRIEND_REQUEST,
        ];
        for action in builtins {
            assert!(table.entries.contains_key(&action), "{action}");
        }
        assert_eq!(table.entries.get(&action::PING).map(|e| e.reply_action), Some(action::PONG));
    }
}
