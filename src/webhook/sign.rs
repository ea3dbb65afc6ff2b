//! The signature of a webhook request (README "Undelivered webhook"):
//!
//! `Pushgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! over the exact bytes of the body. A receiver recomputes it, compares in
//! constant time, and refuses a `t` too far from its clock (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "pushgate-signature";

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// What a receiver does: parse the header, recompute, compare in constant
/// time, and refuse a timestamp more than `tolerance_secs` from `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance_secs || signature.len() != 64 {
        return false;
    }
    let bytes: Option<Vec<u8>> =
        (0..32).map(|i| u8::from_str_radix(signature.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    bytes.is_some_and(|bytes| mac(secret, timestamp, body).verify_slice(&bytes).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let header = sign(b"secret-of-16-bytes", 1_800_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1800000000,v1="));
        assert!(verify(b"secret-of-16-bytes", &header, b"{\"a\":1}", 1_800_000_010, 300));
        assert!(!verify(b"secret-of-16-bytes", &header, b"{\"a\":2}", 1_800_000_010, 300), "body");
        assert!(!verify(b"another-secret-xx", &header, b"{\"a\":1}", 1_800_000_010, 300), "key");
        assert!(!verify(b"secret-of-16-bytes", &header, b"{\"a\":1}", 1_800_001_000, 300), "stale");
        let forged = header.replace("t=1800000000", "t=1800000001");
        assert!(!verify(b"secret-of-16-bytes", &forged, b"{\"a\":1}", 1_800_000_010, 300), "timestamp");
    }

    /// A fixed vector, so receivers in other languages can check theirs
    /// (README "Undelivered webhook").
    #[test]
    fn the_documented_vector() {
        assert_eq!(
            sign(b"whsec-example-0123456789", 1_800_000_000, b"{\"id\":\"e1\"}"),
            "t=1800000000,v1=".to_string() + DOC_VECTOR
        );
    }

    pub const DOC_VECTOR: &str = "b8cf4d16c0402278ae6c139f15cb3974a077cf9933a3327f300e3f8acd46d272";
}
