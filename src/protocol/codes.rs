//! Code tables. Every constant here mirrors a row in proto-spec/README.md and
//! proto-spec/vectors.json; tests load the spec so the two cannot drift.

/// Action codes. Ranges: 0-99 system, 100-199 client requests with built-in
/// handlers, 200-299 server pushes, >= 1000 application-defined.
pub mod action {
    pub const HELLO: u32 = 1;
    pub const PING: u32 = 2;
    pub const PONG: u32 = 3;
    pub const ERROR: u32 = 4;
    /// Server -> client before a drain close: reconnect after `after_ms`.
    pub const RECONNECT: u32 = 5;
    /// Server -> client: a durable message `[u64 id][u32 inner action][inner payload]`.
    pub const MESSAGE: u32 = 6;
    /// Client -> server (and the reply): acks of durable messages, per device.
    pub const ACK: u32 = 7;
    /// Server -> client: the replay on a resuming connection is over.
    pub const SYNCED: u32 = 8;
    /// Client -> server (and the reply): a fresh JWT for the same user.
    pub const TOKEN_REFRESH: u32 = 9;
    /// Server -> client: the session's token expires soon; refresh it.
    pub const TOKEN_EXPIRING: u32 = 10;
    pub const ADD_FRIEND: u32 = 110;
    pub const FETCH_INFO: u32 = 111;
    /// Refuse a pending request addressed to you: `{"from": id}`.
    pub const DECLINE_FRIEND: u32 = 112;
    /// Withdraw your own pending request: `{"friend": id}`.
    pub const CANCEL_FRIEND_REQUEST: u32 = 113;
    pub const PUSH: u32 = 200;
    pub const FRIEND_REQUEST: u32 = 210;
    pub const FRIEND_ACCEPTED: u32 = 211;

    /// Every built-in action with its spec name (proto-spec/vectors.json).
    pub const ALL: &[(u32, &str)] = &[
        (HELLO, "HELLO"),
        (PING, "PING"),
        (PONG, "PONG"),
        (ERROR, "ERROR"),
        (RECONNECT, "RECONNECT"),
        (MESSAGE, "MESSAGE"),
        (ACK, "ACK"),
        (SYNCED, "SYNCED"),
        (TOKEN_REFRESH, "TOKEN_REFRESH"),
        (TOKEN_EXPIRING, "TOKEN_EXPIRING"),
        (ADD_FRIEND, "ADD_FRIEND"),
        (FETCH_INFO, "FETCH_INFO"),
        (DECLINE_FRIEND, "DECLINE_FRIEND"),
        (CANCEL_FRIEND_REQUEST, "CANCEL_FRIEND_REQUEST"),
        (PUSH, "PUSH"),
        (FRIEND_REQUEST, "FRIEND_REQUEST"),
        (FRIEND_ACCEPTED, "FRIEND_ACCEPTED"),
    ];

    pub const PUSH_RANGE: std::ops::RangeInclusive<u32> = 200..=299;
    pub const APPLICATION_MIN: u32 = 1000;

    /// Actions a backend may push through the internal API.
    pub fn is_pushable(action: u32) -> bool {
        PUSH_RANGE.contains(&action) || action >= APPLICATION_MIN
    }
}

/// Human name of an action, for logs, metrics labels and the clients.
pub fn action_name(code: u32) -> &'static str {
    if let Some((_, name)) = action::ALL.iter().find(|(c, _)| *c == code) {
        return name;
    }
    match code {
        c if c >= action::APPLICATION_MIN => "APPLICATION",
        c if action::PUSH_RANGE.contains(&c) => "PUSH_RANGE",
        _ => "UNKNOWN",
    }
}

/// The `code` field of an ERROR (4) frame. The connection stays open after
/// every one of these.
pub mod error_code {
    pub const FRAME_TOO_SHORT: &str = "frame_too_short";
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    pub const BAD_PAYLOAD: &str = "bad_payload";
    pub const INVALID_USER: &str = "invalid_user";
    pub const SELF_FRIEND: &str = "self_friend";
    pub const INTERNAL: &str = "internal";
    /// The session sent frames faster than `session.max_frames_per_sec`:
    /// this one was not dispatched.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// ADD_FRIEND: you already have `social.max_requests_out` pending
    /// requests; cancel some (113) or wait for answers.
    pub const TOO_MANY_REQUESTS_OUT: &str = "too_many_requests_out";
    /// ADD_FRIEND: the target already holds `social.max_requests_in` pending
    /// requests; nothing of theirs was evicted, try again later.
    pub const INBOX_FULL: &str = "inbox_full";
    /// ADD_FRIEND: you or the other side already has `social.max_friends`.
    pub const TOO_MANY_FRIENDS: &str = "too_many_friends";
    /// The reply would exceed `max_message_bytes`; ask for less (a smaller
    /// FETCH_INFO `limit`, one list at a time).
    pub const REPLY_TOO_LARGE: &str = "reply_too_large";
    /// TOKEN_REFRESH: the token names another user (the session keeps its
    /// old expiry).
    pub const TOKEN_WRONG_USER: &str = "token_wrong_user";
    /// TOKEN_REFRESH: the token names another device than the session's.
    pub const TOKEN_WRONG_DEVICE: &str = "token_wrong_device";
    /// TOKEN_REFRESH: the token was issued before the user was revoked.
    pub const TOKEN_REVOKED: &str = "token_revoked";

    pub const ALL: &[&str] = &[
        FRAME_TOO_SHORT,
        UNKNOWN_ACTION,
        BAD_PAYLOAD,
        INVALID_USER,
        SELF_FRIEND,
        INTERNAL,
        RATE_LIMITED,
        TOO_MANY_REQUESTS_OUT,
        INBOX_FULL,
        TOO_MANY_FRIENDS,
        REPLY_TOO_LARGE,
        TOKEN_WRONG_USER,
        TOKEN_WRONG_DEVICE,
        TOKEN_REVOKED,
        // The handshake's token refusals (crate::auth::AuthError::code),
        // which TOKEN_REFRESH answers with the same codes.
        "token_missing",
        "token_malformed",
        "token_bad_signature",
        "token_expired",
        "token_not_yet_valid",
        "token_algorithm_not_allowed",
        "token_wrong_issuer",
        "token_wrong_audience",
        "token_invalid_subject",
    ];
}

/// WebSocket close codes pushgate sends. `reconnect` in the spec says whether
/// a client should reconnect (with backoff) after seeing the code.
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Server shutting down; reconnect with backoff (to another node).
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Text frame on the gateway endpoint; a client bug, do not retry blindly.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Data that is not what its type says (a close reason that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Planned restart (drain); reconnect after the RECONNECT hint's delay.
    pub const SERVICE_RESTART: u16 = 1012;
    /// No frame (not even a pong) within the idle timeout; reconnect.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The session queue overflowed and pushes were lost; reconnect.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// An operator or backend closed the session; do not reconnect blindly.
    pub const KICKED: u16 = 4002;
    /// The JWT's `exp` passed; reconnect with a fresh token.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The client kept sending past its frame rate after ERROR
    /// `rate_limited`; reconnect with backoff.
    pub const RATE_LIMITED: u16 = 4004;
    /// The user opened more than `session.max_per_user` sessions: the
    /// oldest is closed for the newest. Do not reconnect blindly (it would
    /// close another of the user's sessions in turn).
    pub const SESSION_REPLACED: u16 = 4005;
    /// The user's sessions and older tokens were revoked
    /// (`POST /v1/users/{id}/revoke`): do not reconnect with the same token.
    pub const REVOKED: u16 = 4006;

    /// Every close code pushgate sends: (code, name, should the client reconnect).
    pub const ALL: &[(u16, &str, bool)] = &[
        (NORMAL, "NORMAL", false),
        (GOING_AWAY, "GOING_AWAY", true),
        (PROTOCOL_ERROR, "PROTOCOL_ERROR", false),
        (UNSUPPORTED_DATA, "UNSUPPORTED_DATA", false),
        (INVALID_PAYLOAD, "INVALID_PAYLOAD", false),
        (MESSAGE_TOO_BIG, "MESSAGE_TOO_BIG", false),
        (INTERNAL_ERROR, "INTERNAL_ERROR", true),
        (SERVICE_RESTART, "SERVICE_RESTART", true),
        (IDLE_TIMEOUT, "IDLE_TIMEOUT", true),
        (SLOW_CONSUMER, "SLOW_CONSUMER", true),
        (KICKED, "KICKED", false),
        (TOKEN_EXPIRED, "TOKEN_EXPIRED", true),
        (RATE_LIMITED, "RATE_LIMITED", true),
        (SESSION_REPLACED, "SESSION_REPLACED", false),
        (REVOKED, "REVOKED", false),
    ];
}
