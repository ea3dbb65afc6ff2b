//! Admission control for reconnect storms: a token bucket over new
//! upgrades. After a node restart, every client of that node reconnects
//! within seconds; admitting them at a bounded rate keeps the node serving
//! the sessions it already has, and the 503 + Retry-After spreads the rest.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    // A std Mutex: one short critical section per upgrade, never awaited.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate_per_sec` <= 0 means unlimited.
    pub fn new(rate_per_sec: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate_per_sec, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes a token, or says how many whole seconds until one is available.
    ///
    /// # Errors
    /// `Err(retry_after_secs)` when the bucket is empty.
    pub fn try_acquire(&self) -> Result<(), u64> {
        if self.rate_per_sec <= 0.0 {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate_per_sec).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(((1.0 - tokens) / self.rate_per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let bucket = TokenBucket::new(0.5, 3);
        for _ in 0..3 {
            assert!(bucket.try_acquire().is_ok());
        }
        assert_eq!(bucket.try_acquire(), Err(2), "one token every 2 s");
        assert!(TokenBucket::new(0.0, 1).try_acquire().is_ok(), "0 = unlimited");
    }
}
