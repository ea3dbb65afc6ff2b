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
    /// Unix seconds; the session is closed with TOKEN_EXPIRED after it.
    pub expires_at: u64,
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
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "no token in Authorization header, query parameter or cookie",
            AuthError::Malformed => "token is not a well-formed JWT",
            AuthError::BadSignature => "token signature does not verify",
            AuthError::Expired => "token has expired",
            AuthError::NotYetValid => "token is not valid yet (nbf)",
            AuthError::AlgorithmNotAllowed => "token algorithm is not the configured one",
            AuthError::WrongIssuer => "token issuer is not accepted",
            AuthError::WrongAudience => "token audience is not accepted",
            AuthError::InvalidSubject => "token sub is missing or not a valid user id",
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

pub struct Authenticator {
    decoding: DecodingKey,
    /// Only HS256 can mint (the `token` subcommand); asymmetric setups sign
    /// tokens in the identity provider, which holds the private key.
    encoding: Option<EncodingKey>,
    validation: Validation,
    device_claim: String,
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
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        match &cfg.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Authenticator { decoding, encoding, validation, device_claim: cfg.device_claim.clone() })
    }

    /// Verifies signature, `exp` (always), `nbf`, `iss`, `aud` (when configured).
    ///
    /// # Errors
    /// The precise [`AuthError`] for the 401 body.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        let user = claims.get("sub").and_then(Value::as_str).filter(|s| is_valid_user_id(s));
        let user = user.ok_or(AuthError::InvalidSubject)?;
        let device = claims
            .get(&self.device_claim)
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty() && d.len() <= 128)
            .map(Box::from);
        let expires_at = claims.get("exp").and_then(Value::as_u64).ok_or(AuthError::Malformed)?;
        Ok(Identity { user: Arc::from(user), device, expires_at })
    }

    /// Signs a development token for `user`.
    ///
    /// # Errors
    /// The configured algorithm is asymmetric (no private key here), or the
    /// user id is invalid.
    pub fn mint(&self, user: &str, device: Option<&str>, ttl_secs: u64) -> Result<String, String> {
        let key = self
            .encoding
            .as_ref()
            .ok_or("minting needs auth.algorithm = \"HS256\"; sign RS256/ES256 tokens in your identity provider")?;
        if !is_valid_user_id(user) {
            return Err(format!("{user:?} is not a valid user id"));
        }
        let exp = jsonwebtoken::get_current_timestamp() + ttl_secs;
        let mut claims = serde_json::json!({ "sub": user, "exp": exp, "iat": jsonwebtoken::get_current_timestamp() });
        if let Some(device) = device {
            claims[&self.device_claim] = Value::from(device);
        }
        jsonwebtoken::encode(&Header::default(), &claims, key).map_err(|e| e.to_string())
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
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => AuthError::InvalidSubject,
        _ => AuthError::Malformed,
    }
}
