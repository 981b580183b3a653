//! Reconnect delays for links (a replica to its master, a region to a peer
//! region): exponential with full jitter.
//!
//! After a peer drops, every link reconnecting at the same instant would
//! hammer it in step; full jitter (a uniform delay in `[0, cap)`, the cap
//! doubling per failure up to a maximum) spreads them out. The random source
//! is a seeded generator so simulations reproduce exactly.

use std::time::Duration;

/// Smallest cap, after the first failure.
pub const BACKOFF_BASE_MS: u64 = 50;
/// Largest cap, however many failures.
pub const BACKOFF_MAX_MS: u64 = 5_000;

/// Backoff state for one link.
#[derive(Clone, Debug)]
pub struct Backoff {
    failures: u32,
    base_ms: u64,
    max_ms: u64,
    state: u64,
}

impl Backoff {
    /// A backoff with the default bounds, seeded by `seed`.
    pub fn new(seed: u64) -> Backoff {
        Backoff::with_bounds(seed, BACKOFF_BASE_MS, BACKOFF_MAX_MS)
    }

    /// A backoff with explicit bounds (`base_ms` ≤ `max_ms`, both positive).
    pub fn with_bounds(seed: u64, base_ms: u64, max_ms: u64) -> Backoff {
        assert!(base_ms > 0 && base_ms <= max_ms, "backoff bounds out of order");
        Backoff { failures: 0, base_ms, max_ms, state: seed | 1 }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.base_ms.saturating_mul(1u64 << self.failures.min(32)).min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(self.random() % cap.max(1))
    }

    /// The link works again: start over from the smallest cap.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// xorshift64*: small, fast and good enough to spread reconnects.
    fn random(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_cap_and_reset() {
        let mut backoff = Backoff::with_bounds(7, 10, 100);
        let caps = [10, 20, 40, 80, 100, 100];
        for cap in caps {
            assert!(backoff.next_delay() < Duration::from_millis(cap));
        }
        assert_eq!(backoff.failures(), 6);
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(10));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let mut a = Backoff::new(42);
        let mut b = Backoff::new(42);
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
