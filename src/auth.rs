//! JWT validation for the upgrade request, and minting for development.

use crate::config::{Algorithm, AuthConfig, ConfigError};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Who a connection belongs to, from a verified token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Arc<str>,
    pub device: Option<Box<str>>,
    /// The unix second at which the session must end (closed with
    /// TOKEN_EXPIRED once `now >= expires_at`): the token's `exp` rounded up,
    /// plus `auth.leeway_secs`, saturating. The handshake refuses a token by
    /// the same rule, so a token accepted at the upgrade is not closed as
    /// expired at the first heartbeat.
    pub expires_at: u64,
    /// The token's `iat` (unix seconds, rounded down), if it has one:
    /// revocation refuses tokens issued before the user was revoked.
    pub issued_at: Option<u64>,
}

/// Why a token was refused. Each maps to a 401 with a distinct reason code
/// (see `errors.rs`), so client developers can tell "refresh" from "bug".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    AlgorithmNotAllowed,
    WrongIssuer,
    WrongAudience,
    InvalidSubject,
    /// Issued (`iat`) before the user's tokens were revoked, or without an
    /// `iat` for a revoked user.
    Revoked,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::AlgorithmNotAllowed => "token_algorithm_not_allowed",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::InvalidSubject => "token_invalid_subject",
            AuthError::Revoked => "token_revoked",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "no token in Authorization header, query parameter or cookie",
            AuthError::Malformed => {
                "token is not a well-formed JWT (bad encoding, a claim of the wrong type, or a crit header)"
            }
            AuthError::BadSignature => "token signature does not verify",
            AuthError::Expired => "token has expired",
            AuthError::NotYetValid => "token is not valid yet (nbf)",
            AuthError::AlgorithmNotAllowed => "token algorithm is not the configured one",
            AuthError::WrongIssuer => "token issuer is not accepted",
            AuthError::WrongAudience => "token audience is not accepted",
            AuthError::InvalidSubject => "token sub is missing or not a valid user id",
            AuthError::Revoked => "token was issued before the user's tokens were revoked; get a new one",
        }
    }
}

/// User ids: 1-128 bytes of ASCII letters, digits and `_ - . @ :`. Narrow on
/// purpose: ids appear in store keys, logs, metrics and Redis keys later.
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b':'))
}

/// Longest lifetime [`Authenticator::mint`] signs (seconds): one year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

pub struct Authenticator {
    decoding: DecodingKey,
    /// Only HS256 can mint (the `token` subcommand); asymmetric setups sign
    /// tokens in the identity provider, which holds the private key.
    encoding: Option<EncodingKey>,
    /// Signature and algorithm only: the claims are checked by
    /// [`Authenticator::check_claims`], which accepts every RFC 7519
    /// NumericDate and never overflows.
    validation: Validation,
    device_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl Authenticator {
    /// # Errors
    /// The public key file is unreadable or not a PEM key of the configured type.
    pub fn from_config(cfg: &AuthConfig) -> Result<Authenticator, ConfigError> {
        let (alg, decoding, encoding) = match cfg.algorithm {
            Algorithm::HS256 => (
                jsonwebtoken::Algorithm::HS256,
                DecodingKey::from_secret(cfg.secret.as_bytes()),
                Some(EncodingKey::from_secret(cfg.secret.as_bytes())),
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let path = cfg
                    .public_key_file
                    .as_ref()
                    .ok_or_else(|| ConfigError("auth.public_key_file is required for RS256/ES256".into()))?;
                let pem = std::fs::read(path).map_err(|e| ConfigError(format!("reading {}: {e}", path.display())))?;
                let (alg, key) = if cfg.algorithm == Algorithm::RS256 {
                    (jsonwebtoken::Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
                } else {
                    (jsonwebtoken::Algorithm::ES256, DecodingKey::from_ec_pem(&pem))
                };
                let key = key.map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
                (alg, key, None)
            }
        };
        // jsonwebtoken checks the signature and the algorithm; every claim
        // is checked in `check_claims` (its exp arithmetic wraps on a large
        // leeway, and it only checks iss/aud when present).
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.set_required_spec_claims::<&str>(&[]);
        Ok(Authenticator {
            decoding,
            encoding,
            validation,
            device_claim: cfg.device_claim.clone(),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_secs: cfg.leeway_secs,
        })
    }

    /// Verifies the signature, refuses `crit` headers, then checks the
    /// claims (see [`Authenticator::check_claims`]) against the current time.
    ///
    /// # Errors
    /// The precise [`AuthError`] for the 401 body.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Authenticator::verify`] at `now` (unix seconds).
    ///
    /// # Errors
    /// The precise [`AuthError`] for the 401 body.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        // RFC 7515 section 4.1.11: a recipient that does not understand a
        // listed critical extension must reject the JWS. We understand none.
        if data.header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        self.check_claims(&data.claims, now)
    }

    /// The claim rules, in order:
    /// - `exp` must be present; `exp`, `nbf` and `iat` must be RFC 7519
    ///   NumericDates (any JSON number, fractions allowed) when present, else
    ///   [`AuthError::Malformed`];
    /// - expired when `now >= ceil(exp) + leeway` (the same instant the
    ///   session ends, [`Identity::expires_at`]); not yet valid when
    ///   `now + leeway < nbf`;
    /// - with `auth.issuer` set, `iss` must be that string: missing or
    ///   another string is [`AuthError::WrongIssuer`], a non-string
    ///   (number, null, ...) is [`AuthError::Malformed`];
    /// - with `auth.audience` set, `aud` must be that string or an array of
    ///   strings holding it: missing, another string or an array without it
    ///   is [`AuthError::WrongAudience`]; null, a number, or an array with a
    ///   non-string member is [`AuthError::Malformed`];
    /// - `sub` must be a valid user id ([`AuthError::InvalidSubject`]).
    ///
    /// # Errors
    /// The first rule broken.
    pub fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<Identity, AuthError> {
        let exp = numeric_date(claims.get("exp"))?.ok_or(AuthError::Malformed)?;
        let nbf = numeric_date(claims.get("nbf"))?;
        let issued_at = numeric_date(claims.get("iat"))?.map(|iat| iat.floor() as u64);
        // `as` saturates: negative -> 0, beyond u64 -> u64::MAX.
        let expires_at = (exp.ceil() as u64).saturating_add(self.leeway_secs);
        if now >= expires_at {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = nbf
            && (now.saturating_add(self.leeway_secs) as f64) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::WrongIssuer),
                Some(Value::String(iss)) if iss == want => {}
                Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
                Some(_) => return Err(AuthError::Malformed),
            }
        }
        if let Some(want) = &self.audience {
            let found = match claims.get("aud") {
                None => false,
                Some(Value::String(aud)) => aud == want,
                Some(Value::Array(auds)) => {
                    let mut found = false;
                    for aud in auds {
                        found |= aud.as_str().ok_or(AuthError::Malformed)? == want;
                    }
                    found
                }
                Some(_) => return Err(AuthError::Malformed),
            };
            if !found {
                return Err(AuthError::WrongAudience);
            }
        }
        let user = claims.get("sub").and_then(Value::as_str).filter(|s| is_valid_user_id(s));
        let user = user.ok_or(AuthError::InvalidSubject)?;
        let device = claims
            .get(&self.device_claim)
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty() && d.len() <= 128)
            .map(Box::from);
        Ok(Identity { user: Arc::from(user), device, expires_at, issued_at })
    }

    /// Signs a development token for `user`.
    ///
    /// # Errors
    /// The configured algorithm is asymmetric (no private key here), the
    /// user id is invalid, or `ttl_secs` is outside 1..=[`MAX_TOKEN_TTL_SECS`].
    pub fn mint(&self, user: &str, device: Option<&str>, ttl_secs: u64) -> Result<String, String> {
        if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl_secs) {
            return Err(format!(
                "ttl {ttl_secs} s is out of range 1..={MAX_TOKEN_TTL_SECS} (one year); \
                 development tokens should be short-lived"
            ));
        }
        let key = self
            .encoding
            .as_ref()
            .ok_or("minting needs auth.algorithm = \"HS256\"; sign RS256/ES256 tokens in your identity provider")?;
        if !is_valid_user_id(user) {
            return Err(format!("{user:?} is not a valid user id"));
        }
        let now = jsonwebtoken::get_current_timestamp();
        let exp = now.saturating_add(ttl_secs);
        let mut claims = serde_json::json!({ "sub": user, "exp": exp, "iat": now });
        if let Some(device) = device {
            claims[&self.device_claim] = Value::from(device);
        }
        jsonwebtoken::encode(&Header::default(), &claims, key).map_err(|e| e.to_string())
    }
}

/// A registered time claim: absent, or any JSON number (RFC 7519 section 2
/// NumericDate: seconds, fractions allowed).
fn numeric_date(value: Option<&Value>) -> Result<Option<f64>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|f| f.is_finite()).map(Some).ok_or(AuthError::Malformed),
        Some(_) => Err(AuthError::Malformed),
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed
        }
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {

    /// TOKEN_REFRESH answers a refused token with the handshake's code:
    /// each must be a documented ERROR code too.
    #[test]
    fn every_refusal_code_is_an_error_code() {
        use AuthError::*;
        for e in [
            Missing,
            Malformed,
            BadSignature,
            Expired,
            NotYetValid,
            AlgorithmNotAllowed,
            WrongIssuer,
            WrongAudience,
            InvalidSubject,
            Revoked,
        ] {
            assert!(crate::protocol::error_code::ALL.contains(&e.code()), "{e:?}");
        }
    }
    use super::*;
    use serde_json::json;

    const SECRET: &str = "unit-test-secret-0123456789";
    const NOW: u64 = 1_700_000_000;

    fn authenticator(tweak: impl FnOnce(&mut AuthConfig)) -> Authenticator {
        let mut cfg = AuthConfig { secret: SECRET.into(), ..AuthConfig::default() };
        tweak(&mut cfg);
        Authenticator::from_config(&cfg).expect("authenticator")
    }

    fn sign_with(header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
    }

    fn sign(claims: Value) -> String {
        sign_with(&Header::default(), &claims)
    }

    fn check(auth: &Authenticator, claims: Value) -> Result<Identity, AuthError> {
        auth.verify_at(&sign(claims), NOW)
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let auth = authenticator(|c| {
            c.issuer = Some("https://id.example".into());
            c.audience = Some("pushgate".into());
        });
        let exp = NOW + 600;
        let iss = "https://id.example";
        let cases = [
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": "pushgate" }), Ok(())),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": ["other", "pushgate"] }), Ok(())),
            (json!({ "sub": "a", "exp": exp, "aud": "pushgate" }), Err(AuthError::WrongIssuer)),
            (json!({ "sub": "a", "exp": exp, "iss": "https://evil", "aud": "pushgate" }), Err(AuthError::WrongIssuer)),
            (json!({ "sub": "a", "exp": exp, "iss": 5, "aud": "pushgate" }), Err(AuthError::Malformed)),
            (json!({ "sub": "a", "exp": exp, "iss": [iss], "aud": "pushgate" }), Err(AuthError::Malformed)),
            (json!({ "sub": "a", "exp": exp, "iss": iss }), Err(AuthError::WrongAudience)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": "other" }), Err(AuthError::WrongAudience)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": [] }), Err(AuthError::WrongAudience)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": ["other"] }), Err(AuthError::WrongAudience)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": null }), Err(AuthError::Malformed)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": 5 }), Err(AuthError::Malformed)),
            (json!({ "sub": "a", "exp": exp, "iss": iss, "aud": ["pushgate", 5] }), Err(AuthError::Malformed)),
        ];
        for (claims, want) in cases {
            assert_eq!(check(&auth, claims.clone()).map(|_| ()), want, "{claims}");
        }
        // Not configured: not checked.
        let open = authenticator(|_| {});
        assert!(check(&open, json!({ "sub": "a", "exp": exp, "aud": 5, "iss": null })).is_ok());
    }

    #[test]
    fn numeric_dates_may_be_fractional() {
        let auth = authenticator(|c| c.leeway_secs = 0);
        let id = check(&auth, json!({ "sub": "a", "exp": 1.8e9 })).expect("exp 1.8e9");
        assert_eq!(id.expires_at, 1_800_000_000);
        let id = check(&auth, json!({ "sub": "a", "exp": 1_800_000_000.5, "nbf": 1.6e9, "iat": 1.6e9 + 0.25 }))
            .expect("fractional exp, nbf, iat");
        assert_eq!(id.expires_at, 1_800_000_001, "valid through .5, so ended at the next whole second");
        let nbf = NOW as f64 + 0.5;
        assert_eq!(
            check(&auth, json!({ "sub": "a", "exp": 1.8e9, "nbf": nbf })).map(|_| ()),
            Err(AuthError::NotYetValid)
        );
        for bad in [json!("1800000000"), json!(null), json!([1])] {
            let claims = json!({ "sub": "a", "exp": bad });
            assert_eq!(check(&auth, claims).map(|_| ()), Err(AuthError::Malformed), "exp {bad}");
            let claims = json!({ "sub": "a", "exp": 1.8e9, "iat": bad });
            assert_eq!(check(&auth, claims).map(|_| ()), Err(AuthError::Malformed), "iat {bad}");
        }
        assert_eq!(check(&auth, json!({ "sub": "a" })).map(|_| ()), Err(AuthError::Malformed), "exp is required");
    }

    /// The handshake accepts a token exactly as long as the session keeps it:
    /// `expires_at` is exp + leeway and both refuse at `now >= expires_at`.
    #[test]
    fn handshake_and_session_share_the_deadline() {
        let auth = authenticator(|c| c.leeway_secs = 30);
        let exp = NOW - 10;
        let id = check(&auth, json!({ "sub": "a", "exp": exp })).expect("within leeway");
        assert_eq!(id.expires_at, exp + 30);
        let token = sign(json!({ "sub": "a", "exp": exp }));
        assert!(auth.verify_at(&token, id.expires_at - 1).is_ok());
        assert_eq!(auth.verify_at(&token, id.expires_at).map(|_| ()), Err(AuthError::Expired));
        // Not-yet-valid uses the same leeway.
        assert!(check(&auth, json!({ "sub": "a", "exp": NOW + 600, "nbf": NOW + 30 })).is_ok());
        let early = check(&auth, json!({ "sub": "a", "exp": NOW + 600, "nbf": NOW + 31 }));
        assert_eq!(early.map(|_| ()), Err(AuthError::NotYetValid));
    }

    #[test]
    fn time_arithmetic_saturates() {
        // An unvalidated huge leeway must not wrap into "everything expired".
        let auth = authenticator(|c| c.leeway_secs = 10_000_000_000);
        let id = check(&auth, json!({ "sub": "a", "exp": NOW + 600 })).expect("valid token");
        assert_eq!(id.expires_at, NOW + 600 + 10_000_000_000);
        let auth = authenticator(|c| c.leeway_secs = u64::MAX);
        assert_eq!(check(&auth, json!({ "sub": "a", "exp": NOW + 600 })).map(|i| i.expires_at), Ok(u64::MAX));
        let auth = authenticator(|c| c.leeway_secs = 30);
        assert_eq!(check(&auth, json!({ "sub": "a", "exp": 1e300 })).map(|i| i.expires_at), Ok(u64::MAX));
        assert_eq!(check(&auth, json!({ "sub": "a", "exp": -5 })).map(|_| ()), Err(AuthError::Expired));
        assert!(auth.verify_at(&sign(json!({ "sub": "a", "exp": 60 })), 0).is_ok(), "no underflow at now = 0");
    }

    #[test]
    fn critical_headers_are_refused() {
        let auth = authenticator(|_| {});
        let claims = json!({ "sub": "a", "exp": NOW + 600 });
        let mut header = Header::default();
        assert!(auth.verify_at(&sign_with(&header, &claims), NOW).is_ok());
        header.crit = Some(vec!["exp".into()]);
        assert_eq!(auth.verify_at(&sign_with(&header, &claims), NOW).map(|_| ()), Err(AuthError::Malformed));
    }

    #[test]
    fn minting_bounds_the_lifetime() {
        let auth = authenticator(|_| {});
        for ttl in [0, MAX_TOKEN_TTL_SECS + 1, u64::MAX] {
            let err = auth.mint("alice", None, ttl).expect_err("absurd ttl");
            assert!(err.contains("ttl"), "{err}");
        }
        let token = auth.mint("alice", Some("phone"), MAX_TOKEN_TTL_SECS).expect("a year");
        let id = auth.verify(&token).expect("valid");
        assert!(id.expires_at > jsonwebtoken::get_current_timestamp() + MAX_TOKEN_TTL_SECS - 60);
        assert_eq!(id.device.as_deref(), Some("phone"));
    }
}
