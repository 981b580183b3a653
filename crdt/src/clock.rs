//! The hybrid logical clock: timestamps for local writes, updated by every
//! remote timestamp, with protection against peers whose clocks run ahead.
//!
//! Built on `hlc-gen` (42 bits of milliseconds since 2024-01-01 and a 22-bit
//! logical counter in one `u64`). hlc-gen's own drift check rejects an update
//! outright; Meridian cannot reject a delta it must apply to converge, so the
//! generator runs with its check off and [`Clock::observe`] applies ours: a
//! remote time more than `max_skew_ms` ahead of the local wall clock advances
//! the local clock only to `wall + max_skew_ms` (clamped) and is counted. The
//! delta itself keeps its timestamp — every region must see the same one — and
//! causality is still respected because removals name the dots they observed
//! instead of comparing timestamps (see `docs/semantics.md`).

use std::sync::atomic::{AtomicU64, Ordering};

use hlc_gen::source::{ClockSource, ManualClock, UtcClock};

// `S` only chooses where the wall time comes from: the system clock
// (`UtcClock`) or a hand-set one (`ManualClock`).
use hlc_gen::{HlcGenerator, HlcTimestamp};

use crate::error::ClockError;

/// Default bound on how far ahead of our wall clock a peer's timestamp may
/// move our clock. DEPENDENCIES.md: beyond a few seconds, a fast writer burns
/// the 22-bit logical counter before the wall clock catches up.
pub const MAX_SKEW_MS_DEFAULT: u64 = 1_000;

/// What [`Clock::observe`] did with a remote timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The clock now follows the remote timestamp (or was already ahead).
    Applied,
    /// The remote timestamp was too far ahead; the clock advanced only to
    /// `wall + max_skew_ms`.
    Clamped {
        /// How far ahead of the local wall clock the remote time was.
        ahead_ms: u64,
    },
}

/// Counters a clock keeps for monitoring.
#[derive(Debug, Default)]
pub struct ClockStats {
    /// Remote timestamps that were ahead by more than the allowed skew.
    pub clamped_total: AtomicU64,
    /// Largest lead of a remote timestamp over the local wall clock seen.
    pub max_ahead_ms: AtomicU64,
    /// Local timestamps refused because the logical counter was exhausted.
    pub exhausted_total: AtomicU64,
}

/// A hybrid logical clock for one replica.
pub struct Clock<S: ClockSource = UtcClock> {
    /// Always driven by hand: [`Clock::now`] reads the wall clock once and
    /// hands it to the generator, so a write costs one clock read (hlc-gen's
    /// own UTC source would read it again, through chrono).
    generator: HlcGenerator<ManualClock>,
    source: core::marker::PhantomData<S>,
    max_skew_ms: u64,
    stats: ClockStats,
    /// The simulated wall clock of a manual clock (hlc-gen keeps its source
    /// private, so the value set there is mirrored here); `None` reads the
    /// system clock.
    manual_wall_ms: Option<AtomicU64>,
}

impl Clock<UtcClock> {
    /// A clock on the system's UTC wall clock.
    pub fn new(max_skew_ms: u64) -> Self {
        assert!(max_skew_ms > 0, "a zero skew bound would refuse every peer");
        Clock {
            generator: HlcGenerator::manual(0),
            source: core::marker::PhantomData,
            max_skew_ms,
            stats: ClockStats::default(),
            manual_wall_ms: None,
        }
    }
}

impl Clock<ManualClock> {
    /// A clock whose wall time is set by hand (simulation and tests).
    pub fn manual(max_skew_ms: u64, wall_ms: u64) -> Self {
        assert!(max_skew_ms > 0, "a zero skew bound would refuse every peer");
        let clock = Clock {
            generator: HlcGenerator::manual(0),
            source: core::marker::PhantomData,
            max_skew_ms,
            stats: ClockStats::default(),
            manual_wall_ms: Some(AtomicU64::new(wall_ms)),
        };
        clock.set_wall_ms(wall_ms);
        clock
    }

    /// Sets the simulated wall clock (Unix milliseconds).
    pub fn set_wall_ms(&self, wall_ms: u64) {
        if let Some(mirror) = &self.manual_wall_ms {
            mirror.store(wall_ms, Ordering::SeqCst);
        }
    }
}

impl<S: ClockSource> Clock<S> {
    /// A timestamp for a local write, strictly greater than every timestamp
    /// this clock produced or observed.
    pub fn now(&self) -> Result<u64, ClockError> {
        self.now_with_wall().map(|(hlc, _)| hlc)
    }

    /// A timestamp for a local write and the wall clock it was taken at, from
    /// one read of the clock.
    pub fn now_with_wall(&self) -> Result<(u64, u64), ClockError> {
        self.now_at(self.wall_ms())
    }

    /// A timestamp for a local write taken with `wall` as the wall clock's
    /// reading (an earlier reading of [`Clock::wall_ms`], shared by the writes
    /// of one batch of commands): strictly greater than every timestamp this
    /// clock produced or observed, like [`Clock::now`]. Returns it with `wall`.
    pub fn now_at(&self, wall: u64) -> Result<(u64, u64), ClockError> {
        self.generator.set_current_timestamp(wall as i64);
        match self.generator.next_timestamp() {
            Some(ts) => Ok((ts.as_u64(), wall)),
            None => {
                self.stats.exhausted_total.fetch_add(1, Ordering::Relaxed);
                Err(ClockError::LogicalCounterExhausted)
            }
        }
    }

    /// Moves the clock past a timestamp received from a peer, within the
    /// allowed skew. Returns what was done; a timestamp that is not a valid
    /// HLC value is an error.
    pub fn observe(&self, remote: u64) -> Result<Observation, ClockError> {
        let remote_ts = HlcTimestamp::try_from(remote).map_err(|_| ClockError::InvalidTimestamp(remote))?;
        let wall = self.wall_ms();
        self.generator.set_current_timestamp(wall as i64);
        let remote_ms = remote_ts.timestamp().max(0) as u64;
        if remote_ms > wall + self.max_skew_ms {
            let ahead_ms = remote_ms - wall;
            self.stats.clamped_total.fetch_add(1, Ordering::Relaxed);
            self.stats.max_ahead_ms.fetch_max(ahead_ms, Ordering::Relaxed);
            let bound = HlcTimestamp::from_parts((wall + self.max_skew_ms) as i64, 0)
                .map_err(|_| ClockError::InvalidTimestamp(remote))?;
            self.generator.update(&bound).map_err(|_| ClockError::InvalidTimestamp(remote))?;
            return Ok(Observation::Clamped { ahead_ms });
        }
        if remote_ms > wall {
            self.stats.max_ahead_ms.fetch_max(remote_ms - wall, Ordering::Relaxed);
        }
        self.generator.update(&remote_ts).map_err(|_| ClockError::InvalidTimestamp(remote))?;
        Ok(Observation::Applied)
    }

    /// Restores monotonicity after a restart from a persisted high-water mark
    /// (the largest timestamp this replica ever issued or observed).
    pub fn seed(&self, high_water: u64) -> Result<(), ClockError> {
        self.generator.set_current_timestamp(self.wall_ms() as i64);
        let ts = HlcTimestamp::try_from(high_water).map_err(|_| ClockError::InvalidTimestamp(high_water))?;
        self.generator.update(&ts).map_err(|_| ClockError::InvalidTimestamp(high_water))?;
        Ok(())
    }

    /// The latest timestamp issued or observed (a high-water mark to persist).
    pub fn high_water(&self) -> u64 {
        self.generator.timestamp().as_u64()
    }

    /// The wall clock in Unix milliseconds (what expiry deadlines compare to).
    pub fn wall_ms(&self) -> u64 {
        match &self.manual_wall_ms {
            Some(mirror) => mirror.load(Ordering::SeqCst),
            None => system_wall_ms(),
        }
    }

    /// The configured skew bound.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// Monitoring counters.
    pub fn stats(&self) -> &ClockStats {
        &self.stats
    }
}

/// The system's wall clock in Unix milliseconds.
pub fn system_wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// True if `hlc` is a valid hybrid-clock value ([`Clock::observe`] refuses
/// the others with [`ClockError::InvalidTimestamp`]).
pub fn is_valid_hlc(hlc: u64) -> bool {
    HlcTimestamp::try_from(hlc).is_ok()
}

/// Unix milliseconds of an HLC value.
pub fn hlc_to_unix_ms(hlc: u64) -> u64 {
    HlcTimestamp::try_from(hlc).map(|ts| ts.timestamp().max(0) as u64).unwrap_or(0)
}

/// An HLC value for a Unix time in milliseconds and a logical count (tests and
/// simulations that need hand-made timestamps).
pub fn hlc_from_unix_ms(unix_ms: u64, logical: u64) -> u64 {
    HlcTimestamp::from_parts(unix_ms as i64, logical).map(|ts| ts.as_u64()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_790_000_000_000;

    #[test]
    fn local_timestamps_increase_and_follow_remote_ones() {
        let clock = Clock::manual(1_000, T0);
        let a = clock.now().unwrap();
        let b = clock.now().unwrap();
        assert!(b > a);
        let remote = hlc_from_unix_ms(T0 + 500, 7);
        assert_eq!(clock.observe(remote).unwrap(), Observation::Applied);
        assert!(clock.now().unwrap() > remote);
    }

    #[test]
    fn remote_timestamps_beyond_the_skew_bound_are_clamped_and_counted() {
        let clock = Clock::manual(1_000, T0);
        let remote = hlc_from_unix_ms(T0 + 60_000, 0);
        assert_eq!(clock.observe(remote).unwrap(), Observation::Clamped { ahead_ms: 60_000 });
        let local = clock.now().unwrap();
        assert!(local < remote, "the clock must not follow a clock a minute ahead");
        assert!(hlc_to_unix_ms(local) <= T0 + 1_000);
        assert_eq!(clock.stats().clamped_total.load(Ordering::Relaxed), 1);
        assert_eq!(clock.stats().max_ahead_ms.load(Ordering::Relaxed), 60_000);
    }

    #[test]
    fn seeding_keeps_timestamps_monotonic_across_restarts() {
        let before = Clock::manual(1_000, T0 + 5_000);
        let issued = before.now().unwrap();
        // The restarted process's wall clock went backwards.
        let after = Clock::manual(1_000, T0);
        after.seed(before.high_water()).unwrap();
        assert!(after.now().unwrap() > issued);
    }

    #[test]
    fn system_clock_produces_current_time() {
        let clock = Clock::new(MAX_SKEW_MS_DEFAULT);
        let ts = clock.now().unwrap();
        let wall = system_wall_ms();
        assert!(hlc_to_unix_ms(ts).abs_diff(wall) < 60_000);
    }
}
