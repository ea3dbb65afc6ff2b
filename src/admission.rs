//! Admission control. For reconnect storms: a token bucket over new
//! upgrades. After a node restart, every client of that node reconnects
//! within seconds; admitting them at a bounded rate keeps the node serving
//! the sessions it already has, and the 503 + Retry-After spreads the rest.
//! For strangers: [`PerAddress`] caps what one client address may hold
//! (handshakes in progress, established sessions), so one address cannot
//! take every slot.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// How many connections of one kind each client address holds, capped.
/// Only addresses holding at least one are in the map.
#[derive(Debug)]
pub struct PerAddress {
    counts: DashMap<IpAddr, u32>,
    cap: u32,
}

/// One connection counted for its address; uncounted when dropped.
#[derive(Debug)]
pub struct AddressSlot<'a> {
    owner: &'a PerAddress,
    key: IpAddr,
}

impl PerAddress {
    pub fn new(cap: u32) -> PerAddress {
        PerAddress { counts: DashMap::new(), cap }
    }

    /// The counting key of an address: IPv4-mapped IPv6 as IPv4, and IPv6
    /// by its /64 (what one subscriber gets; a single host may use the
    /// whole prefix).
    pub fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        }
    }

    /// Counts one more connection for `ip`, or None when it holds `cap`.
    /// The map's shard lock is held only inside this call.
    pub fn try_take(&self, ip: IpAddr) -> Option<AddressSlot<'_>> {
        let key = PerAddress::key(ip);
        let mut count = self.counts.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot { owner: self, key })
    }

    /// Connections counted for `ip` right now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        self.counts.get(&PerAddress::key(ip)).map_or(0, |c| *c)
    }

    /// Addresses holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.counts.len()
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        // Decrement and remove at zero under one shard lock: a concurrent
        // try_take either sees the entry before or inserts a fresh one.
        if let Entry::Occupied(mut entry) = self.owner.counts.entry(self.key) {
            if *entry.get() <= 1 {
                entry.remove();
            } else {
                *entry.get_mut() -= 1;
            }
        }
    }
}

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

    #[test]
    fn per_address_caps_count_down_on_drop_and_forget_idle_addresses() {
        let caps = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = caps.try_take(a).unwrap();
        let second = caps.try_take(a).unwrap();
        assert!(caps.try_take(a).is_none(), "third from one address is refused");
        let other = caps.try_take(b).unwrap();
        drop(first);
        let third = caps.try_take(a).expect("a slot freed");
        drop((second, third, other));
        assert_eq!(caps.addresses(), 0, "no entry left for addresses holding nothing");
        // One IPv6 /64 is one address; IPv4-mapped is IPv4.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let _x = caps.try_take(v6).unwrap();
        let _y = caps.try_take(same_prefix).unwrap();
        assert!(caps.try_take("2001:db8::2".parse().unwrap()).is_none());
        assert_eq!(PerAddress::key("::ffff:192.0.2.1".parse().unwrap()), a);
    }
}
