//! The shard: one keyspace and the clock that stamps its writes.
//!
//! Every command runs against a shard: reads see its keyspace at the wall
//! clock, writes take an HLC timestamp and return the deltas they applied.
//! Replication to in-memory replicas, the delta log readers and durability
//! join this type with issue 4; a single node needs only this much.

use meridian_crdt::gc::{Report, StabilityTracker};
use meridian_crdt::keyspace::Moment;
use meridian_crdt::{Clock, ClockError, Keyspace, ReplicaId};

use crate::durability::{Fsync, Journal, Recovered};

/// Keys one maintenance step deletes by expiry at most (Redis: bounded work
/// per active-expiry cycle).
pub const EXPIRE_KEYS_PER_STEP_MAX: usize = 200;
/// Marked keys one maintenance step collects at most.
pub const GC_MARKED_KEYS_PER_STEP_MAX: usize = 1_000;
/// Keys one maintenance step visits in the background full pass.
pub const GC_PASS_KEYS_PER_STEP_MAX: usize = 1_000;

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
    /// The peer regions of an active-active database (their region ids,
    /// which are also their replica ids).
    peers: Vec<u16>,
    /// The peers that have reported their applied vector at least once.
    reported: std::collections::BTreeSet<u16>,
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

    /// Declares the peer regions of this shard's database (active-active):
    /// with peers, counters are no longer merged as applied (solo mode off)
    /// and garbage collection waits for every peer's applied vector.
    pub fn set_peers(&mut self, peers: &[u16]) {
        for gone in self.peers.iter().filter(|p| !peers.contains(p)) {
            self.stability.remove_region(*gone);
            self.reported.remove(gone);
        }
        self.peers = peers.to_vec();
        self.keyspace.set_solo(peers.is_empty());
    }

    /// A peer region reports what it has applied (over the WAN).
    pub fn peer_applied(&mut self, region: u16, applied: meridian_crdt::VersionVector) {
        if self.peers.contains(&region) {
            self.stability.report(region, Report { applied, own: vec![ReplicaId(region)] });
            self.reported.insert(region);
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
        self.writes += 1;
        let (hlc, wall_ms) = self.clock.now_with_wall()?;
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
        let replica = self.keyspace.replica();
        self.stability
            .report(replica.0, Report { applied: self.keyspace.context().vector().clone(), own: vec![replica] });
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
