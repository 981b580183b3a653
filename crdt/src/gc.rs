//! Causal stability: when deleted state may be forgotten.
//!
//! Tombstones (list elements kept as anchors), losing register entries, spent
//! persist entries and per-increment counter elements may be dropped or merged
//! only when no delta still in flight could need them. "Every region has
//! applied dot d" is not enough: a region may have issued, *before* it applied
//! d, a write concurrent with d that is still travelling. The tracker waits one
//! more round: it remembers, for a past minimum `S_k` of the regions' applied
//! vectors, each region's own position `O_k` at that time; once the current
//! minimum covers `O_k`, every write issued before any region applied the dots
//! of `S_k` has been applied everywhere, so `S_k` is causally stable.
//!
//! Regions report their applied vectors over the WAN (issue 5); a region with
//! no peers reports to itself and everything it applied is stable at once.
//! In a database cut into granules (D102) the reports come from shards, each
//! holding some granules: a shard's vector speaks only for the replica ids of
//! its granules, so each replica id's minimum is taken over the reporters
//! that hold its granule.

use std::collections::{BTreeMap, VecDeque};

use std::collections::BTreeSet;
use std::ops::Range;

use crate::context::VersionVector;
use crate::dot::ReplicaId;
use crate::slot::Granules;

/// How many past rounds are remembered. A round is added per
/// [`StabilityTracker::advance`]; if regions lag by more rounds than this, the
/// newest candidates are not recorded until older ones settle (collection
/// slows, nothing unsafe happens).
pub const ROUNDS_MAX: usize = 64;

/// Who reports: one shard of a region, by the granules it holds (the whole
/// database with one granule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reporter {
    /// The region.
    pub region: u16,
    /// The first granule the shard holds.
    pub first: u16,
    /// One past the last granule it holds.
    pub end: u16,
}

impl Reporter {
    /// A shard of `region` holding `granules`.
    pub fn new(region: u16, granules: Range<u16>) -> Reporter {
        Reporter { region, first: granules.start, end: granules.end }
    }

    /// The only shard of `region` in a database of one granule.
    pub fn region(region: u16) -> Reporter {
        Reporter::new(region, 0..1)
    }

    /// The granules it holds.
    pub fn granules(&self) -> Range<u16> {
        self.first..self.end
    }

    /// True if its reports speak for `replica` (its granule is held).
    pub fn holds(&self, granules: Granules, replica: ReplicaId) -> bool {
        self.granules().contains(&granules.of_replica(replica))
    }

    /// The replica ids it writes with.
    pub fn own(&self, granules: Granules) -> Vec<ReplicaId> {
        self.granules().map(|g| granules.replica(self.region, g)).collect()
    }
}

/// One shard's report: what it has applied, and which replica ids are its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every dot the region has applied, as a version vector.
    pub applied: VersionVector,
    /// The replica ids the region originates writes from (its shard streams).
    pub own: Vec<ReplicaId>,
}

/// Computes the causally stable vector from the regions' reports.
#[derive(Clone, Debug, Default)]
pub struct StabilityTracker {
    granules: Granules,
    reports: BTreeMap<Reporter, Report>,
    rounds: VecDeque<(VersionVector, VersionVector)>,
    stable: VersionVector,
}

impl StabilityTracker {
    /// A tracker with no regions, for a database of one granule.
    pub fn new() -> StabilityTracker {
        StabilityTracker::default()
    }

    /// A tracker with no regions, for a database cut into `granules`.
    pub fn with_granules(granules: Granules) -> StabilityTracker {
        StabilityTracker { granules, ..StabilityTracker::default() }
    }

    /// Records the latest report of `reporter` (reports only ever grow).
    pub fn report(&mut self, reporter: Reporter, report: Report) {
        let entry = self.reports.entry(reporter).or_default();
        entry.applied.join(&report.applied);
        entry.own = report.own;
    }

    /// Forgets a reporter (a region removed from the database, a shard
    /// that no longer reads this one). Its dots no longer hold collection
    /// back.
    pub fn remove(&mut self, reporter: Reporter) {
        self.reports.remove(&reporter);
        self.rounds.clear();
    }

    /// The minimum of all applied vectors: each replica id's entry is the
    /// least over the reporters holding its granule.
    pub fn applied_everywhere(&self) -> VersionVector {
        let mut reports = self.reports.iter();
        let Some((_, first)) = reports.next() else {
            return VersionVector::new();
        };
        if self.granules == Granules::ONE {
            let mut min = first.applied.clone();
            for (_, report) in reports {
                min.meet(&report.applied);
            }
            return min;
        }
        let replicas: BTreeSet<ReplicaId> =
            self.reports.values().flat_map(|r| r.applied.iter().map(|(replica, _)| replica)).collect();
        VersionVector::from_entries(replicas.into_iter().map(|replica| {
            let holders = self.reports.iter().filter(|(who, _)| who.holds(self.granules, replica));
            (replica, holders.map(|(_, report)| report.applied.get(replica)).min().unwrap_or(0))
        }))
    }

    /// Starts a round and settles earlier ones; returns the stable vector.
    pub fn advance(&mut self) -> &VersionVector {
        let applied = self.applied_everywhere();
        let mut own = VersionVector::new();
        for report in self.reports.values() {
            for &replica in &report.own {
                let seq = report.applied.get(replica);
                if seq > own.get(replica) {
                    own.set(replica, seq);
                }
            }
        }
        while let Some((candidate, positions)) = self.rounds.front() {
            if !applied.dominates(positions) {
                break;
            }
            self.stable.join(candidate);
            self.rounds.pop_front();
        }
        if self.rounds.len() < ROUNDS_MAX && self.rounds.back().is_none_or(|(c, _)| *c != applied) {
            // The new candidate may settle at once: when every region's own
            // position is already applied everywhere (always, for a lone region).
            if applied.dominates(&own) {
                self.stable.join(&applied);
            } else {
                self.rounds.push_back((applied, own));
            }
        }
        &self.stable
    }

    /// The causally stable vector as of the last [`advance`](Self::advance).
    pub fn stable(&self) -> &VersionVector {
        &self.stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u16, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().map(|&(r, s)| (ReplicaId(r), s)))
    }

    #[test]
    fn a_dot_is_stable_only_after_concurrent_writes_are_applied_everywhere() {
        let mut tracker = StabilityTracker::new();
        // Region 1 wrote 1..=5; region 2 wrote 1..=3 and has applied 1's 1..=5.
        tracker.report(Reporter::region(1), Report { applied: vv(&[(1, 5), (2, 2)]), own: vec![ReplicaId(1)] });
        tracker.report(Reporter::region(2), Report { applied: vv(&[(1, 5), (2, 3)]), own: vec![ReplicaId(2)] });
        // Round 1: applied everywhere = {1:5, 2:2}; nothing settled yet.
        assert_eq!(tracker.advance(), &VersionVector::new());
        // Region 2's write 3 may be concurrent with region 1's 1..=5: until
        // region 1 applies it, 1..=5 are not stable.
        assert_eq!(tracker.advance(), &VersionVector::new());
        tracker.report(Reporter::region(1), Report { applied: vv(&[(1, 6), (2, 3)]), own: vec![ReplicaId(1)] });
        assert_eq!(tracker.advance(), &vv(&[(1, 5), (2, 2)]));
    }

    #[test]
    fn shards_speak_only_for_the_granules_they_hold() {
        let granules = Granules::new(4).unwrap();
        let r = |region, granule| granules.replica(region, granule).0;
        let mut tracker = StabilityTracker::with_granules(granules);
        // Region 1, one shard of every granule, wrote 5 to granule 0 and 7
        // to granule 3; region 2's two shards have applied what they hold.
        let all = vv(&[(r(1, 0), 5), (r(1, 3), 7)]);
        tracker
            .report(Reporter::new(1, 0..4), Report { applied: all.clone(), own: Reporter::new(1, 0..4).own(granules) });
        let low = Reporter::new(2, 0..2);
        tracker.report(low, Report { applied: vv(&[(r(1, 0), 5)]), own: low.own(granules) });
        // The shard of granule 0 speaks for it alone, not for granule 3
        // (whose reader has not reported: the shard waits for every
        // expected reporter before it advances).
        assert_eq!(tracker.applied_everywhere(), vv(&[(r(1, 0), 5), (r(1, 3), 7)]));
        let high = Reporter::new(2, 2..4);
        tracker.report(high, Report { applied: vv(&[(r(1, 3), 6)]), own: high.own(granules) });
        assert_eq!(tracker.applied_everywhere(), vv(&[(r(1, 0), 5), (r(1, 3), 6)]));
        // Removed, a reporter no longer holds anything back.
        tracker.remove(high);
        assert_eq!(tracker.applied_everywhere(), all);
    }

    #[test]
    fn a_lone_region_settles_in_the_same_round() {
        let mut tracker = StabilityTracker::new();
        tracker.report(Reporter::region(1), Report { applied: vv(&[(1, 10)]), own: vec![ReplicaId(1)] });
        assert_eq!(tracker.advance(), &vv(&[(1, 10)]));
    }
}
