//! The shard: one keyspace and the clock that stamps its writes.
//!
//! Every command runs against a shard: reads see its keyspace at the wall
//! clock, writes take an HLC timestamp and return the deltas they applied.
//! Replication to in-memory replicas, the delta log readers and durability
//! join this type with issue 4; a single node needs only this much.

use std::collections::BTreeSet;
use std::ops::Range;

use meridian_crdt::gc::{Report, Reporter, StabilityTracker};
use meridian_crdt::keyspace::Moment;
use meridian_crdt::slot::Granules;
use meridian_crdt::{Clock, ClockError, Keyspace, ReplicaId};

use crate::durability::{Fsync, Journal, Recovered};

/// Keys one maintenance step deletes by expiry at most (Redis: bounded work
/// per active-expiry cycle).
pub const EXPIRE_KEYS_PER_STEP_MAX: usize = 200;
/// Marked keys one maintenance step collects at most.
pub const GC_MARKED_KEYS_PER_STEP_MAX: usize = 1_000;
/// Keys one maintenance step visits in the background full pass.
pub const GC_PASS_KEYS_PER_STEP_MAX: usize = 1_000;

/// Writes that may share one [`WallSnapshot`] reading at most: the HLC's
/// logical counter then orders them, and it must not run out (hlc-gen's has
/// 16 bits per millisecond).
pub const WALL_SNAPSHOT_WRITES_MAX: u32 = 1_024;

/// One reading of the wall clock shared by the writes of a batch of commands
/// (one connection's pipeline, read in one go), as Redis takes the time once
/// per event-loop iteration: the clock is read by the batch's first write and
/// reused by the next, up to [`WALL_SNAPSHOT_WRITES_MAX`] writes. The owner
/// clears it whenever time may have passed (before it waits for anything);
/// between two clears, writes are stamped as if issued at the same wall
/// millisecond, and the HLC keeps them strictly ordered. Measured on this
/// machine: a clock read is 80-110 ns, a tenth of a pipelined write's CPU.
#[derive(Debug, Default)]
pub struct WallSnapshot {
    /// The reading shifted left 16 bits, or'ed with the writes that used it;
    /// 0 when there is none. Atomic only so that the owner stays `Sync`: it
    /// is used by one connection at a time.
    reading: std::sync::atomic::AtomicU64,
}

impl WallSnapshot {
    /// Forgets the reading: the next write reads the clock again.
    pub fn clear(&self) {
        self.reading.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// The reading and the writes that used it, if any.
    fn get(&self) -> Option<(u64, u32)> {
        let packed = self.reading.load(std::sync::atomic::Ordering::Relaxed);
        (packed != 0).then_some((packed >> 16, (packed & 0xffff) as u32))
    }

    fn set(&self, wall: u64, uses: u32) {
        // Unix milliseconds fit 48 bits for the next eight thousand years.
        self.reading.store((wall << 16) | u64::from(uses), std::sync::atomic::Ordering::Relaxed);
    }
}

/// What one maintenance step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Keys deleted because their deadline passed.
    pub expired: usize,
    /// Elements garbage-collected.
    pub collected: usize,
}

/// A shard's state.
pub struct Shard {
    keyspace: Keyspace,
    clock: Clock,
    writes: u64,
    stability: StabilityTracker,
    gc_cursor: u64,
    /// The granules this shard holds (all of them, one, by default).
    held: Range<u16>,
    /// The shards of peer regions that read this one's stream (an
    /// active-active database): each reports what it has applied.
    peers: Vec<Reporter>,
    /// The peers that have reported their applied vector at least once.
    reported: BTreeSet<Reporter>,
}

impl Shard {
    /// A shard of `keyspace` and `clock`, with no writes counted, no peers
    /// and nothing collected yet.
    fn assemble(keyspace: Keyspace, clock: Clock) -> Shard {
        Shard {
            keyspace,
            clock,
            writes: 0,
            stability: StabilityTracker::new(),
            gc_cursor: 0,
            held: 0..1,
            peers: Vec::new(),
            reported: Default::default(),
        }
    }

    /// An empty shard whose writes originate at `replica`, with a clock that
    /// accepts peers at most `max_skew_ms` ahead.
    pub fn new(replica: ReplicaId, max_skew_ms: u64) -> Shard {
        // No peer region yet (active-active arrives with issue 5): the
        // keyspace may merge counter increments as they are applied.
        let mut keyspace = Keyspace::new(replica);
        keyspace.set_solo(true);
        Shard::assemble(keyspace, Clock::new(max_skew_ms))
    }

    /// A shard continuing a promoted replica's `keyspace`: its clock starts
    /// above `hlc_high_water` (the largest timestamp the replica knows of), so
    /// the new master's writes order after every write it holds. The
    /// keyspace keeps its replica id — the old master's — so its writes
    /// continue that origin's sequence.
    pub fn promoted(mut keyspace: Keyspace, max_skew_ms: u64, hlc_high_water: u64) -> Result<Shard, ClockError> {
        let clock = Clock::new(max_skew_ms);
        if hlc_high_water > 0 {
            clock.seed(hlc_high_water)?;
        }
        keyspace.take_journal();
        Ok(Shard::assemble(keyspace, clock))
    }

    /// A shard recovered from the data directory `dir` (created if absent),
    /// journaling every delta it applies from now on, with the journal that
    /// persists them. The clock starts above every recovered timestamp.
    pub fn recover(
        replica: ReplicaId,
        max_skew_ms: u64,
        dir: &std::path::Path,
        fsync: Fsync,
    ) -> std::io::Result<(Shard, Journal, Recovered)> {
        let (journal, mut recovered) = Journal::open(dir, fsync, replica, |keyspace| {
            keyspace.set_solo(true);
            keyspace.set_journal(true);
        })?;
        let mut keyspace = core::mem::replace(&mut recovered.keyspace, Keyspace::new(replica));
        // What was replayed is on disk already.
        keyspace.take_journal();
        let clock = Clock::new(max_skew_ms);
        if recovered.hlc_high_water > 0 {
            clock
                .seed(recovered.hlc_high_water)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        let shard = Shard::assemble(keyspace, clock);
        Ok((shard, journal, recovered))
    }

    /// The deltas applied since the last call (when journaling: see
    /// [`Shard::recover`]), the journal position after them, and the clock's
    /// high-water (a bound on every timestamp they carry).
    pub fn take_journal(&mut self) -> (Vec<meridian_crdt::Delta>, u64, u64) {
        let (deltas, upto) = self.keyspace.take_journal();
        (deltas, upto, self.clock.high_water())
    }

    /// Like [`Shard::take_journal`], each delta with its origin (local write or
    /// merged from elsewhere): the one journal reader of a node that feeds both
    /// durability (every entry) and the WAN outbox (local entries only).
    pub fn take_journal_entries(&mut self) -> (Vec<meridian_crdt::JournalEntry>, u64, u64) {
        let (entries, upto) = self.keyspace.take_journal_entries();
        (entries, upto, self.clock.high_water())
    }

    /// Declares that this shard's database is cut into `granules` of which
    /// it holds `held` (an active-active database whose regions have
    /// different shard counts, D102): its writes are stamped per granule,
    /// and garbage collection weighs each peer shard's report only for the
    /// granules that shard holds. Set when the shard is opened, before it
    /// writes and before [`Shard::set_peers`].
    pub fn set_granules(&mut self, granules: Granules, held: Range<u16>) {
        self.keyspace.set_granules(granules);
        self.stability = StabilityTracker::with_granules(granules);
        self.reported.clear();
        self.held = held;
    }

    /// Declares the shards of peer regions that read this shard's stream
    /// (active-active): with peers, counters are no longer merged as
    /// applied (solo mode off) and garbage collection waits for every
    /// peer's applied vector.
    pub fn set_peers(&mut self, peers: &[Reporter]) {
        for gone in self.peers.iter().filter(|p| !peers.contains(p)) {
            self.stability.remove(*gone);
            self.reported.remove(gone);
        }
        self.peers = peers.to_vec();
        self.keyspace.set_solo(peers.is_empty());
    }

    /// A peer shard reports what it has applied (over the WAN).
    pub fn peer_applied(&mut self, peer: Reporter, applied: meridian_crdt::VersionVector) {
        if self.peers.contains(&peer) {
            let own = peer.own(self.keyspace.granules());
            self.stability.report(peer, Report { applied, own });
            self.reported.insert(peer);
        }
    }

    /// The keyspace, for reads.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The keyspace, for writes that have their [`Moment`] already.
    pub fn keyspace_mut(&mut self) -> &mut Keyspace {
        &mut self.keyspace
    }

    /// The wall clock in Unix milliseconds (what reads compare deadlines with).
    pub fn wall_ms(&self) -> u64 {
        self.clock.wall_ms()
    }

    /// A timestamp for one write.
    pub fn moment(&mut self) -> Result<Moment, ClockError> {
        self.moment_in(&WallSnapshot::default())
    }

    /// A timestamp for one write of a batch: like [`Shard::moment`], with the
    /// wall clock read at most once per `snapshot` (see [`WallSnapshot`]).
    pub fn moment_in(&mut self, snapshot: &WallSnapshot) -> Result<Moment, ClockError> {
        self.writes += 1;
        let wall = match snapshot.get() {
            Some((wall, uses)) if uses < WALL_SNAPSHOT_WRITES_MAX => {
                snapshot.set(wall, uses + 1);
                wall
            }
            _ => {
                let wall = self.clock.wall_ms();
                snapshot.set(wall, 1);
                wall
            }
        };
        let (hlc, wall_ms) = self.clock.now_at(wall)?;
        Ok(Moment { hlc, wall_ms })
    }

    /// The clock (monitoring, HLC observation of replicated deltas).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Writes started since the shard was created (INFO stats).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// One step of background maintenance, run periodically: active expiry,
    /// then garbage collection of marked keys and a slice of the full pass.
    /// A shard with no peer region reports only to itself, so what it applied
    /// is causally stable at once; with peers ([`Shard::set_peers`]) the
    /// stable vector advances only once every peer has reported what it
    /// applied ([`Shard::peer_applied`], over the WAN).
    pub fn maintain(&mut self) -> Result<Maintenance, ClockError> {
        let at = self.moment()?;
        let expired = self.keyspace.expire_due(at, EXPIRE_KEYS_PER_STEP_MAX).len();
        let me = Reporter::new(self.keyspace.replica().0, self.held.clone());
        let own = me.own(self.keyspace.granules());
        self.stability.report(me, Report { applied: self.keyspace.context().vector().clone(), own });
        // Until every peer region has reported what it applied, nothing is
        // known to be causally stable beyond what already was: collect with
        // the last stable vector (nothing new).
        let stable = if self.peers.iter().all(|peer| self.reported.contains(peer)) {
            self.stability.advance().clone()
        } else {
            self.stability.stable().clone()
        };
        let mut collected = self.keyspace.collect_marked(&stable, GC_MARKED_KEYS_PER_STEP_MAX);
        let (next, pass) = self.keyspace.collect(&stable, self.gc_cursor, GC_PASS_KEYS_PER_STEP_MAX);
        self.gc_cursor = next;
        collected += pass;
        Ok(Maintenance { expired, collected })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Sleeps until the system clock shows a later millisecond than `wall`.
    // A plain test thread, not a tokio worker.
    #[allow(clippy::disallowed_methods)]
    fn after(wall: u64) {
        while meridian_crdt::clock::system_wall_ms() <= wall {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_batch_shares_one_clock_reading_until_it_is_cleared_or_used_up() {
        let mut shard = Shard::new(ReplicaId(1), 1_000);
        let snapshot = WallSnapshot::default();
        let first = shard.moment_in(&snapshot).expect("clock");
        after(first.wall_ms);
        let second = shard.moment_in(&snapshot).expect("clock");
        assert_eq!(second.wall_ms, first.wall_ms, "the batch's second write reuses the reading");
        assert!(second.hlc > first.hlc, "and is still ordered after the first");

        snapshot.clear();
        let third = shard.moment_in(&snapshot).expect("clock");
        assert!(third.wall_ms > first.wall_ms, "a cleared snapshot reads the clock again");
        assert!(third.hlc > second.hlc);

        // A reading serves at most WALL_SNAPSHOT_WRITES_MAX writes.
        let mut last = third;
        for _ in 1..WALL_SNAPSHOT_WRITES_MAX {
            let next = shard.moment_in(&snapshot).expect("clock");
            assert_eq!(next.wall_ms, third.wall_ms);
            assert!(next.hlc > last.hlc);
            last = next;
        }
        after(third.wall_ms);
        let fresh = shard.moment_in(&snapshot).expect("clock");
        assert!(fresh.wall_ms > third.wall_ms, "the reading was used up");
        assert!(fresh.hlc > last.hlc);
        assert_eq!(shard.writes(), 3 + WALL_SNAPSHOT_WRITES_MAX as u64);
    }

    #[test]
    fn a_write_without_a_batch_reads_the_clock_each_time() {
        let mut shard = Shard::new(ReplicaId(1), 1_000);
        let first = shard.moment().expect("clock");
        after(first.wall_ms);
        let second = shard.moment().expect("clock");
        assert!(second.wall_ms > first.wall_ms);
        assert!(second.hlc > first.hlc);
    }
}
