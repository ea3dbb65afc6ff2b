//! TOKEN_REFRESH (9): a fresh JWT for the session's own user, checked by
//! the handshake's rules and error codes (plus revocation), extends the
//! session's expiry. Anything wrong is an ERROR and the session keeps its
//! old expiry. Served by the session itself, not the handler table: only
//! the session owns its expiry.

use crate::handlers::error_frame;
use crate::protocol::{action, encode_json, error_code};
use crate::registry::SessionHandle;
use crate::state::AppState;
use bytes::Bytes;
use serde::Deserialize;

#[derive(Deserialize)]
struct Request {
    token: String,
    #[serde(default)]
    seq: Option<u64>,
}

/// The new expiry (unix seconds) and the reply, or the ERROR to send.
pub fn refresh(state: &AppState, handle: &SessionHandle, payload: &[u8]) -> Result<(u64, Bytes), Bytes> {
    let seq = crate::handlers::request_seq(action::TOKEN_REFRESH, payload);
    let error = |code: &str, message: &str| error_frame(code, message, action::TOKEN_REFRESH, seq);
    let request: Request = serde_json::from_slice(payload)
        .map_err(|e| error(error_code::BAD_PAYLOAD, &format!("TOKEN_REFRESH wants {{\"token\": JWT}}: {e}")))?;
    let identity = state.auth.verify(&request.token).map_err(|e| error(e.code(), e.message()))?;
    state.revocations.check(&identity).map_err(|e| error(e.code(), e.message()))?;
    if identity.user != handle.user {
        return Err(error(error_code::TOKEN_WRONG_USER, "the token names another user; the session keeps its token"));
    }
    // No device claim is the device "default": the same inbox device.
    let device = |d: &Option<Box<str>>| d.as_deref().unwrap_or(crate::inbox::DEFAULT_DEVICE).to_string();
    if device(&identity.device) != device(&handle.device) {
        return Err(error(error_code::TOKEN_WRONG_DEVICE, "the token names another device than this session's"));
    }
    let mut reply = serde_json::json!({ "expires_at": identity.expires_at });
    if let Some(seq) = request.seq {
        reply["seq"] = seq.into();
    }
    Ok((identity.expires_at, encode_json(action::TOKEN_REFRESH, &reply)))
}

/// TOKEN_EXPIRING (10): the session's token expires at `expires_at` (unix
/// seconds, leeway included).
pub fn expiring(expires_at: u64) -> Bytes {
    let expires_in_secs = expires_at.saturating_sub(crate::clock::unix_secs());
    encode_json(
        action::TOKEN_EXPIRING,
        &serde_json::json!({ "expires_at": expires_at, "expires_in_secs": expires_in_secs }),
    )
}
