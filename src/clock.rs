//! The clocks the gateway reads: wall-clock Unix time (what crosses the
//! process: HELLO, listings, token expiry, presence expiry in Redis) and a
//! monotonic process clock (what only measures intervals inside it: frame
//! rates, API stall detection). A leaf: depends on nothing of ours.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Unix time in seconds.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// The instant of the first call in this process: the epoch of
/// [`process_ms`] and of the heartbeat grid.
pub fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`process_epoch`]; monotonic, unaffected by clock
/// changes.
pub fn process_ms() -> u64 {
    process_epoch().elapsed().as_millis() as u64
}
