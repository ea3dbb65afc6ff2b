//! Why a session's socket closed: the one type every layer uses to end a
//! session (the session loop, kicks, drains, slow consumers, shutdown), and
//! the one place that decides its close code, reason text, reconnect advice
//! and metric label. proto-spec/README.md section 4 documents every row;
//! `tests` below keep this table and [`close::ALL`] in step.

use super::codes::close;

/// Why a session ended. Small and `Copy`: it travels through every session
/// queue as the pending close request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a close; tungstenite answers it with the same code.
    ClientClosed,
    /// The TCP connection broke or the peer vanished; nobody to tell.
    ConnectionLost,
    /// A text frame on the binary-only gateway endpoint.
    TextFrame,
    /// A close frame whose reason is not UTF-8 (RFC 6455 section 8.1).
    InvalidUtf8,
    MessageTooBig,
    ProtocolError,
    IdleTimeout,
    TokenExpired,
    /// A socket write stalled past `session.write_timeout_ms`: no close frame
    /// could get through, so none is sent.
    WriteTimeout,
    /// The session queue overflowed (frames or bytes).
    SlowConsumer,
    /// Closed through the internal API (kick a user or a session).
    Kicked,
    /// The node is stopping now (SIGINT, or what is left after a drain).
    Shutdown,
    /// The node drains (SIGTERM): a RECONNECT hint precedes this close.
    Drained,
    /// A server bug surfaced (a handler panicked): reconnect with backoff.
    InternalError,
    /// The client kept sending frames past `session.max_frames_per_sec`
    /// after being told (ERROR `rate_limited`).
    RateLimited,
    /// The user went past `session.max_per_user`: the oldest session gives
    /// way to the newest.
    Replaced,
    /// The user's sessions and older tokens were revoked.
    Revoked,
}

/// What a client should do after a close, as the spec's table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Do not reconnect (blindly): a client bug or an operator decision.
    No,
    /// Reconnect with jittered exponential backoff.
    Backoff,
    /// Reconnect after the RECONNECT hint's `after_ms`.
    AfterHint,
    /// Reconnect with a fresh token.
    NewToken,
    /// Reconnect, then refetch state: pushes were lost.
    Resync,
}

impl CloseReason {
    /// Every reason, for tests and documentation.
    pub const ALL: &'static [CloseReason] = &[
        CloseReason::ClientClosed,
        CloseReason::ConnectionLost,
        CloseReason::TextFrame,
        CloseReason::InvalidUtf8,
        CloseReason::MessageTooBig,
        CloseReason::ProtocolError,
        CloseReason::IdleTimeout,
        CloseReason::TokenExpired,
        CloseReason::WriteTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Kicked,
        CloseReason::Shutdown,
        CloseReason::Drained,
        CloseReason::InternalError,
        CloseReason::RateLimited,
        CloseReason::Replaced,
        CloseReason::Revoked,
    ];

    /// The close frame pushgate sends, or None when the socket is already
    /// done (or stalled) and no frame could be delivered.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        Some(match self {
            CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::WriteTimeout => return None,
            CloseReason::TextFrame => (close::UNSUPPORTED_DATA, "text frames are not accepted; send binary"),
            CloseReason::InvalidUtf8 => (close::INVALID_PAYLOAD, "close reason is not valid UTF-8"),
            CloseReason::MessageTooBig => (close::MESSAGE_TOO_BIG, "message exceeds the size limit"),
            CloseReason::ProtocolError => (close::PROTOCOL_ERROR, "websocket protocol violation"),
            CloseReason::IdleTimeout => (close::IDLE_TIMEOUT, "no traffic within the idle timeout"),
            CloseReason::TokenExpired => (close::TOKEN_EXPIRED, "token expired; reconnect with a fresh one"),
            CloseReason::SlowConsumer => (close::SLOW_CONSUMER, "slow consumer: push queue overflowed"),
            CloseReason::Kicked => (close::KICKED, "session closed by the service; do not reconnect blindly"),
            CloseReason::Shutdown => (close::GOING_AWAY, "server shutting down"),
            CloseReason::Drained => (close::SERVICE_RESTART, "server restarting"),
            CloseReason::InternalError => (close::INTERNAL_ERROR, "internal error; reconnect with backoff"),
            CloseReason::RateLimited => (close::RATE_LIMITED, "too many frames; reconnect with backoff"),
            CloseReason::Replaced => (close::SESSION_REPLACED, "replaced by a newer session of the same user"),
            CloseReason::Revoked => (close::REVOKED, "revoked; do not reconnect with the same token"),
        })
    }

    /// The close code sent, if any.
    pub fn code(self) -> Option<u16> {
        self.close_frame().map(|(code, _)| code)
    }

    /// What the client should do next (the spec's "reconnect?" column).
    pub fn reconnect(self) -> Reconnect {
        match self {
            CloseReason::ClientClosed
            | CloseReason::TextFrame
            | CloseReason::InvalidUtf8
            | CloseReason::MessageTooBig
            | CloseReason::ProtocolError
            | CloseReason::Kicked
            | CloseReason::Replaced
            | CloseReason::Revoked => Reconnect::No,
            CloseReason::ConnectionLost
            | CloseReason::WriteTimeout
            | CloseReason::IdleTimeout
            | CloseReason::Shutdown
            | CloseReason::InternalError
            | CloseReason::RateLimited => Reconnect::Backoff,
            CloseReason::TokenExpired => Reconnect::NewToken,
            CloseReason::SlowConsumer => Reconnect::Resync,
            CloseReason::Drained => Reconnect::AfterHint,
        }
    }

    /// Label for logs and the `pushgate_sessions_closed_total` metric.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::TextFrame => "text_frame",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Kicked => "kicked",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Drained => "drained",
            CloseReason::InternalError => "internal_error",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Replaced => "replaced",
            CloseReason::Revoked => "revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_sent_is_in_the_spec_table_with_matching_advice() {
        for &reason in CloseReason::ALL {
            let Some(code) = reason.code() else { continue };
            let row = close::ALL.iter().find(|(c, _, _)| *c == code);
            let (_, name, reconnect) = row.unwrap_or_else(|| panic!("{reason:?} sends {code}, not in close::ALL"));
            assert_eq!(*reconnect, reason.reconnect() != Reconnect::No, "{reason:?} ({name}): advice differs");
        }
    }

    #[test]
    fn each_reason_has_its_own_label_and_sessions_that_cannot_hear_get_no_frame() {
        let mut labels: Vec<_> = CloseReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), CloseReason::ALL.len());
        for reason in [CloseReason::ConnectionLost, CloseReason::WriteTimeout, CloseReason::ClientClosed] {
            assert_eq!(reason.close_frame(), None);
        }
        assert_eq!(CloseReason::SlowConsumer.code(), Some(close::SLOW_CONSUMER));
        assert_eq!(CloseReason::InvalidUtf8.code(), Some(1007));
    }
}
