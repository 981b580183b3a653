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

use std::collections::{BTreeMap, VecDeque};

use crate::context::VersionVector;
use crate::dot::ReplicaId;

/// How many past rounds are remembered. A round is added per
/// [`StabilityTracker::advance`]; if regions lag by more rounds than this, the
/// newest candidates are not recorded until older ones settle (collection
/// slows, nothing unsafe happens).
pub const ROUNDS_MAX: usize = 64;

/// One region's report: what it has applied, and which replica ids are its own.
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
    reports: BTreeMap<u16, Report>,
    rounds: VecDeque<(VersionVector, VersionVector)>,
    stable: VersionVector,
}

impl StabilityTracker {
    /// A tracker with no regions.
    pub fn new() -> StabilityTracker {
        StabilityTracker::default()
    }

    /// Records the latest report of `region` (reports only ever grow).
    pub fn report(&mut self, region: u16, report: Report) {
        let entry = self.reports.entry(region).or_default();
        entry.applied.join(&report.applied);
        entry.own = report.own;
    }

    /// Forgets a region (removed from the database). Its dots no longer hold
    /// collection back.
    pub fn remove_region(&mut self, region: u16) {
        self.reports.remove(&region);
        self.rounds.clear();
    }

    /// The minimum of all applied vectors.
    pub fn applied_everywhere(&self) -> VersionVector {
        let mut reports = self.reports.values();
        let Some(first) = reports.next() else {
            return VersionVector::new();
        };
        let mut min = first.applied.clone();
        for report in reports {
            min.meet(&report.applied);
        }
        min
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
        tracker.report(1, Report { applied: vv(&[(1, 5), (2, 2)]), own: vec![ReplicaId(1)] });
        tracker.report(2, Report { applied: vv(&[(1, 5), (2, 3)]), own: vec![ReplicaId(2)] });
        // Round 1: applied everywhere = {1:5, 2:2}; nothing settled yet.
        assert_eq!(tracker.advance(), &VersionVector::new());
        // Region 2's write 3 may be concurrent with region 1's 1..=5: until
        // region 1 applies it, 1..=5 are not stable.
        assert_eq!(tracker.advance(), &VersionVector::new());
        tracker.report(1, Report { applied: vv(&[(1, 6), (2, 3)]), own: vec![ReplicaId(1)] });
        assert_eq!(tracker.advance(), &vv(&[(1, 5), (2, 2)]));
    }

    #[test]
    fn a_lone_region_settles_in_the_same_round() {
        let mut tracker = StabilityTracker::new();
        tracker.report(1, Report { applied: vv(&[(1, 10)]), own: vec![ReplicaId(1)] });
        assert_eq!(tracker.advance(), &vv(&[(1, 10)]));
    }
}
