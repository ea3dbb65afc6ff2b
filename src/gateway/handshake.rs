//! Deciding what to do with a request on the public listener. Pure functions
//! over the parsed head: no I/O here, so every refusal is unit-testable and
//! the order of checks is visible in one place.

use super::console;
use super::forwarded::client_ip;
use super::rejection::Rejection;
use crate::admission::TokenBucket;
use crate::auth::{AuthError, Authenticator, Identity};
use crate::config::Cidr;
use crate::config::{AuthConfig, ServerConfig};
use crate::http_wire::Unavailable;
use http::{HeaderMap, Method, Request, header};
use std::net::{IpAddr, SocketAddr};

/// What the request gets.
pub enum Decision {
    /// Upgrade to an authenticated gateway session.
    Session {
        accept_key: String,
        identity: Identity,
        user_agent: Option<Box<str>>,
        /// The socket peer (nginx, when proxied).
        remote: SocketAddr,
        /// The client behind a trusted proxy, from forwarding headers.
        forwarded_for: Option<IpAddr>,
        /// `resume=1` or `since=ID`: replay the inbox after HELLO.
        resume: Option<Resume>,
    },
    /// Upgrade to the echo endpoint (no auth: it touches no user data).
    Echo { accept_key: String },
    /// A static page of the browser console.
    Page(&'static console::Asset),
    /// `/dev/token`: mint a token (only with the development secret and
    /// the console on). None: the probe without `user`.
    DevToken(Option<String>),
}

/// Everything `decide` needs besides the request.
pub struct Inputs<'a> {
    pub server: &'a ServerConfig,
    pub auth_config: &'a AuthConfig,
    pub auth: &'a Authenticator,
    pub peer: SocketAddr,
    pub draining: bool,
    /// The console is on and the gateway runs on the development secret.
    pub dev_tokens: bool,
    pub admission: &'a TokenBucket,
    pub trusted_proxies: &'a [Cidr],
    pub revocations: &'a crate::revocation::Revocations,
}

pub fn decide(req: &Request<()>, inputs: &Inputs<'_>) -> Result<Decision, Rejection> {
    let path = req.uri().path();
    match path {
        "/ws" => {
            let accept_key = check_upgrade(req)?;
            // Cheapest refusals first: no signature check for a node that
            // cannot take the connection anyway.
            if inputs.draining {
                return Err(Rejection::Unavailable(Unavailable::Draining));
            }
            inputs
                .admission
                .try_acquire()
                .map_err(|retry_after_secs| Rejection::Unavailable(Unavailable::RateLimited { retry_after_secs }))?;
            check_origin(req.headers(), inputs.auth_config)?;
            let token = extract_token(req, inputs.auth_config).ok_or(Rejection::Auth(AuthError::Missing))?;
            let identity = inputs.auth.verify(&token).map_err(Rejection::Auth)?;
            inputs.revocations.check(&identity).map_err(Rejection::Auth)?;
            let user_agent = header_str(req.headers(), header::USER_AGENT.as_str())
                .map(|ua| ua.chars().take(256).collect::<String>().into_boxed_str());
            let forwarded_for = client_ip(req.headers(), inputs.peer.ip(), inputs.trusted_proxies);
            let resume = resume(req)?;
            Ok(Decision::Session { accept_key, identity, user_agent, remote: inputs.peer, forwarded_for, resume })
        }
        "/echo" if inputs.server.echo => Ok(Decision::Echo { accept_key: check_upgrade(req)? }),
        "/dev/token" if inputs.dev_tokens => {
            let user = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "user").map(|(_, v)| v.into_owned())
            });
            Ok(Decision::DevToken(user))
        }
        _ if inputs.server.console => match console::asset(path) {
            Some(asset) if req.method() == Method::GET => Ok(Decision::Page(asset)),
            Some(_) => Err(Rejection::MethodNotAllowed),
            None => Err(Rejection::NotFound),
        },
        _ => Err(Rejection::NotFound),
    }
}

/// A resuming connection (proto-spec section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Everything up to this id is processed: acked before the replay.
    pub since: Option<u64>,
}

/// `resume=1` and/or `since=ID` in the upgrade URL; a `since` that is not
/// an id is refused (400) rather than ignored.
fn resume(req: &Request<()>) -> Result<Option<Resume>, Rejection> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    let (mut resume, mut since) = (false, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "resume" => resume = value != "0",
            "since" => {
                since = Some(value.parse::<u64>().map_err(|_| Rejection::BadRequest("since must be a message id"))?);
            }
            _ => {}
        }
    }
    Ok((resume || since.is_some()).then_some(Resume { since }))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// RFC 6455 section 4.2.1 checks; returns the Sec-WebSocket-Accept value.
fn check_upgrade(req: &Request<()>) -> Result<String, Rejection> {
    if req.method() != Method::GET {
        return Err(Rejection::MethodNotAllowed);
    }
    let headers = req.headers();
    if !has_token(headers, header::UPGRADE, "websocket") || !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Rejection::UpgradeRequired);
    }
    if header_str(headers, "sec-websocket-version") != Some("13") {
        return Err(Rejection::UpgradeRequired);
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or(Rejection::BadRequest("missing Sec-WebSocket-Key"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Browsers always send Origin; native apps usually send none and are not
/// subject to cross-site attacks, so a missing Origin is allowed. A page
/// served by this same host is allowed (the console). Anything else must be
/// listed, or the list must say `*` explicitly.
fn check_origin(headers: &HeaderMap, cfg: &AuthConfig) -> Result<(), Rejection> {
    let Some(origin) = header_str(headers, header::ORIGIN.as_str()) else {
        return Ok(());
    };
    if cfg.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if origin_host.is_some() && origin_host == header_str(headers, header::HOST.as_str()) {
        return Ok(());
    }
    Err(Rejection::OriginNotAllowed)
}

/// Token from `Authorization: Bearer`, then the query parameter (browsers
/// cannot set headers on `new WebSocket`), then the cookie. An Authorization
/// header of another scheme (browsers resend cached Basic credentials on
/// WebSocket handshakes) or a Bearer with no token is not ours and does not
/// hide the later sources.
fn extract_token(req: &Request<()>, cfg: &AuthConfig) -> Option<String> {
    if let Some(auth) = header_str(req.headers(), header::AUTHORIZATION.as_str())
        && let Some((scheme, token)) = auth.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    if let Some(query) = req.uri().query()
        && let Some((_, token)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k.as_ref() == cfg.query_param.as_str())
    {
        return Some(token.into_owned());
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cfg.cookie_name)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::test_headers as headers;

    fn cfg(origins: &[&str]) -> AuthConfig {
        AuthConfig { allowed_origins: origins.iter().map(|s| s.to_string()).collect(), ..AuthConfig::default() }
    }

    #[test]
    fn origin_rules() {
        let none = headers(&[]);
        assert!(check_origin(&none, &cfg(&[])).is_ok(), "native apps send no Origin");
        let same = headers(&[("origin", "http://gw.example:8080"), ("host", "gw.example:8080")]);
        assert!(check_origin(&same, &cfg(&[])).is_ok());
        let other = headers(&[("origin", "https://evil.example"), ("host", "gw.example")]);
        assert_eq!(check_origin(&other, &cfg(&[])), Err(Rejection::OriginNotAllowed));
        assert!(check_origin(&other, &cfg(&["https://evil.example"])).is_ok());
        assert!(check_origin(&other, &cfg(&["*"])).is_ok());
    }

    #[test]
    fn token_sources_in_order() {
        let c = cfg(&[]);
        let req = Request::get("/ws?token=q").header("cookie", "a=b; pushgate_token=c").body(()).unwrap();
        assert_eq!(extract_token(&req, &c).as_deref(), Some("q"));
        let req = Request::get("/ws").header("cookie", "a=b; pushgate_token=c").body(()).unwrap();
        assert_eq!(extract_token(&req, &c).as_deref(), Some("c"));
        let req = Request::get("/ws?token=q").header("authorization", "Bearer h").body(()).unwrap();
        assert_eq!(extract_token(&req, &c).as_deref(), Some("h"));
        let req = Request::get("/ws").header("authorization", "Basic h").body(()).unwrap();
        assert_eq!(extract_token(&req, &c), None);
        // Another scheme, or a Bearer without a token, does not hide the rest.
        for auth in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Negotiate"] {
            let req = Request::get("/ws?token=q").header("authorization", auth).body(()).unwrap();
            assert_eq!(extract_token(&req, &c).as_deref(), Some("q"), "{auth:?}");
        }
    }
}
