//! Why an HTTP request on the public listener gets no WebSocket: the one
//! place that decides its status, reason code and Retry-After.

use crate::auth::AuthError;
use crate::http_wire::Unavailable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthError),
    OriginNotAllowed,
    Unavailable(Unavailable),
    NotFound,
    MethodNotAllowed,
    /// A plain GET on an upgrade-only path.
    UpgradeRequired,
    BadRequest(&'static str),
    HeadTooLarge,
}

impl Rejection {
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Auth(_) => 401,
            Rejection::OriginNotAllowed => 403,
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::BadRequest(_) => 400,
            Rejection::UpgradeRequired => 426,
            Rejection::HeadTooLarge => 431,
            Rejection::Unavailable(u) => u.status(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.code(),
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::Unavailable(Unavailable::AtCapacity) => "at_capacity",
            Rejection::Unavailable(Unavailable::RateLimited { .. }) => "rate_limited",
            Rejection::Unavailable(Unavailable::Draining) => "draining",
            Rejection::Unavailable(Unavailable::HandshakesPerAddress) => "too_many_handshakes",
            Rejection::Unavailable(Unavailable::ConnectionsPerAddress) => "too_many_connections",
            Rejection::Unavailable(Unavailable::Dependency) => "dependency_unavailable",
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::UpgradeRequired => "upgrade_required",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::HeadTooLarge => "request_head_too_large",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Rejection::Auth(e) => e.message(),
            Rejection::OriginNotAllowed => "Origin is not in the allowed list",
            Rejection::Unavailable(Unavailable::AtCapacity) => "server is at its connection limit, retry later",
            Rejection::Unavailable(Unavailable::RateLimited { .. }) => "too many new connections, retry later",
            Rejection::Unavailable(Unavailable::Draining) => "server is restarting, reconnect to another node",
            Rejection::Unavailable(Unavailable::HandshakesPerAddress) => {
                "too many connections being opened from your address, retry later"
            }
            Rejection::Unavailable(Unavailable::ConnectionsPerAddress) => {
                "too many connections from your address, retry later"
            }
            Rejection::Unavailable(Unavailable::Dependency) => "a dependency is failing, retry later",
            Rejection::NotFound => "no such path",
            Rejection::MethodNotAllowed => "only GET is served here",
            Rejection::UpgradeRequired => "this path only serves WebSocket upgrades",
            Rejection::BadRequest(m) => m,
            Rejection::HeadTooLarge => "request head exceeds the configured limit",
        }
    }

    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            Rejection::Unavailable(u) => Some(*u),
            _ => None,
        }
    }

    /// Label for the handshake metric.
    pub fn outcome(&self) -> &'static str {
        self.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_and_429_carries_retry_after_and_nothing_else_does() {
        let all = [
            Rejection::Auth(AuthError::Expired),
            Rejection::OriginNotAllowed,
            Rejection::Unavailable(Unavailable::AtCapacity),
            Rejection::Unavailable(Unavailable::Draining),
            Rejection::Unavailable(Unavailable::RateLimited { retry_after_secs: 0 }),
            Rejection::Unavailable(Unavailable::HandshakesPerAddress),
            Rejection::Unavailable(Unavailable::ConnectionsPerAddress),
            Rejection::NotFound,
            Rejection::MethodNotAllowed,
            Rejection::UpgradeRequired,
            Rejection::BadRequest("x"),
            Rejection::HeadTooLarge,
        ];
        for r in &all {
            assert_eq!(matches!(r.status(), 503 | 429), r.unavailable().is_some(), "{r:?}");
            if let Some(u) = r.unavailable() {
                assert!(u.retry_after_secs() >= 1, "{r:?}: Retry-After of at least a second");
            }
        }
    }
}
