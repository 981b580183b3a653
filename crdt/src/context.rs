//! Version vectors and the causal context: the record of every dot seen.
//!
//! A [`CausalContext`] answers one question for merges: "has this replica
//! already seen dot d?" — whether the element is still present or has been
//! removed. Because each replica's sequence numbers are contiguous, the
//! context is one number per replica (a [`VersionVector`]) plus a "cloud" of
//! dots seen out of order. Dots reach the cloud when a delta arrives before its
//! predecessors, or when another replica's removal names a dot this replica has
//! not yet received; the cloud folds into the vector as soon as the gap fills.
//! Under the delivery the system provides (each origin's deltas in order) the
//! cloud holds only such third-party dots and stays small.

use std::collections::BTreeSet;

use smallvec::SmallVec;

use crate::dot::{Dot, ReplicaId};

/// For each replica, the highest sequence number up to which every dot has
/// been seen. Sorted by replica; a replica absent means 0.
///
/// Inline capacity 4: a shard usually hears from a handful of origins, and a
/// vector small enough to live inline keeps a context allocation-free.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: SmallVec<[(ReplicaId, u64); 4]>,
}

impl VersionVector {
    /// An empty vector (nothing seen).
    pub fn new() -> VersionVector {
        VersionVector::default()
    }

    /// The sequence number seen up to for `replica` (0 if none).
    #[inline]
    pub fn get(&self, replica: ReplicaId) -> u64 {
        match self.entries.binary_search_by_key(&replica, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Sets the entry for `replica` (0 removes it).
    pub fn set(&mut self, replica: ReplicaId, seq: u64) {
        match self.entries.binary_search_by_key(&replica, |e| e.0) {
            Ok(i) if seq == 0 => {
                self.entries.remove(i);
            }
            Ok(i) => self.entries[i].1 = seq,
            Err(_) if seq == 0 => {}
            Err(i) => self.entries.insert(i, (replica, seq)),
        }
    }

    /// True if `dot` is covered by this vector.
    #[inline]
    pub fn contains(&self, dot: Dot) -> bool {
        dot.seq() <= self.get(dot.replica())
    }

    /// Pointwise maximum.
    pub fn join(&mut self, other: &VersionVector) {
        for &(replica, seq) in &other.entries {
            if seq > self.get(replica) {
                self.set(replica, seq);
            }
        }
    }

    /// Pointwise minimum (absent entries count as 0).
    pub fn meet(&mut self, other: &VersionVector) {
        let mut kept: SmallVec<[(ReplicaId, u64); 4]> = SmallVec::new();
        for &(replica, seq) in &self.entries {
            let min = seq.min(other.get(replica));
            if min > 0 {
                kept.push((replica, min));
            }
        }
        self.entries = kept;
    }

    /// True if every entry of `other` is ≤ the matching entry here.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|&(replica, seq)| self.get(replica) >= seq)
    }

    /// Keeps only the entries of the replicas `keep` accepts (a projection:
    /// what a shard holding some granules needs of another's vector).
    pub fn retain(&mut self, mut keep: impl FnMut(ReplicaId) -> bool) {
        self.entries.retain(|e| keep(e.0));
    }

    /// The (replica, seq) entries in replica order.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaId, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Builds a vector from entries in any order (later duplicates win the max).
    pub fn from_entries(entries: impl IntoIterator<Item = (ReplicaId, u64)>) -> VersionVector {
        let mut vv = VersionVector::new();
        for (replica, seq) in entries {
            if seq > vv.get(replica) {
                vv.set(replica, seq);
            }
        }
        vv
    }

    /// Number of replicas with a non-zero entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl core::fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(r, s)| (r, s))).finish()
    }
}

/// Every dot seen: a version vector plus the dots seen beyond it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    vector: VersionVector,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    /// An empty context.
    pub fn new() -> CausalContext {
        CausalContext::default()
    }

    /// True if `dot` has been seen.
    #[inline]
    pub fn contains(&self, dot: Dot) -> bool {
        self.vector.contains(dot) || (!self.cloud.is_empty() && self.cloud.contains(&dot))
    }

    /// Records `dot` as seen, folding the cloud into the vector when the dot
    /// closes a gap.
    pub fn insert(&mut self, dot: Dot) {
        let replica = dot.replica();
        let top = self.vector.get(replica);
        if dot.seq() <= top {
            return;
        }
        if dot.seq() == top + 1 {
            let mut next = dot.seq();
            // Absorb the cloud's run of successors of this replica.
            while let Some(&following) = self.cloud.first_entry_after(replica, next) {
                self.cloud.remove(&following);
                next += 1;
            }
            self.vector.set(replica, next);
        } else {
            self.cloud.insert(dot);
        }
    }

    /// Records every dot of `other` as seen.
    pub fn join(&mut self, other: &CausalContext) {
        self.vector.join(&other.vector);
        // Dots of our cloud now covered by the vector are dropped, and a run may
        // now continue from the raised vector.
        let cloud = core::mem::take(&mut self.cloud);
        for dot in cloud.into_iter().chain(other.cloud.iter().copied()) {
            self.insert(dot);
        }
        self.compact();
    }

    /// Folds cloud dots that continue a vector entry (after the vector moved).
    fn compact(&mut self) {
        let cloud: Vec<Dot> = self.cloud.iter().copied().collect();
        for dot in cloud {
            if self.vector.contains(dot) {
                self.cloud.remove(&dot);
            } else if dot.seq() == self.vector.get(dot.replica()) + 1 {
                self.cloud.remove(&dot);
                self.insert(dot);
            }
        }
    }

    /// Keeps only the dots of the replicas `keep` accepts (see
    /// [`VersionVector::retain`]).
    pub fn retain(&mut self, mut keep: impl FnMut(ReplicaId) -> bool) {
        self.vector.retain(&mut keep);
        self.cloud.retain(|d| keep(d.replica()));
    }

    /// The contiguous part of the context.
    pub fn vector(&self) -> &VersionVector {
        &self.vector
    }

    /// Dots seen beyond the vector, in order.
    pub fn cloud(&self) -> impl Iterator<Item = Dot> + '_ {
        self.cloud.iter().copied()
    }

    /// Number of dots held in the cloud (a gauge for monitoring: it should stay
    /// near zero when each origin's deltas arrive in order).
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// Rebuilds a context from its parts (used by decoders).
    pub fn from_parts(vector: VersionVector, cloud: impl IntoIterator<Item = Dot>) -> CausalContext {
        let mut context = CausalContext { vector, cloud: BTreeSet::new() };
        for dot in cloud {
            context.insert(dot);
        }
        context
    }

    /// Checks the structural invariants: every cloud dot lies strictly above its
    /// replica's vector entry plus one (otherwise it would have been folded).
    pub fn validate(&self) -> Result<(), String> {
        for dot in &self.cloud {
            let top = self.vector.get(dot.replica());
            if dot.seq() <= top + 1 {
                return Err(format!("cloud dot {dot:?} not folded into vector entry {top}"));
            }
        }
        Ok(())
    }
}

impl core::fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.vector)?;
        if !self.cloud.is_empty() {
            write!(f, "+{:?}", self.cloud)?;
        }
        Ok(())
    }
}

/// Lookup of the cloud's dot `(replica, seq + 1)` if present.
trait CloudExt {
    fn first_entry_after(&self, replica: ReplicaId, seq: u64) -> Option<&Dot>;
}

impl CloudExt for BTreeSet<Dot> {
    fn first_entry_after(&self, replica: ReplicaId, seq: u64) -> Option<&Dot> {
        if self.is_empty() || seq >= crate::dot::DOT_SEQ_MAX {
            return None;
        }
        self.get(&Dot::new(replica, seq + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dot(r: u16, s: u64) -> Dot {
        Dot::new(ReplicaId(r), s)
    }

    #[test]
    fn out_of_order_dots_fold_when_the_gap_fills() {
        let mut context = CausalContext::new();
        context.insert(dot(1, 3));
        context.insert(dot(1, 2));
        assert!(context.contains(dot(1, 3)));
        assert!(!context.contains(dot(1, 1)));
        assert_eq!(context.cloud_len(), 2);
        context.insert(dot(1, 1));
        assert_eq!(context.cloud_len(), 0);
        assert_eq!(context.vector().get(ReplicaId(1)), 3);
        context.validate().unwrap();
    }

    #[test]
    fn vector_meet_and_dominate() {
        let a = VersionVector::from_entries([(ReplicaId(1), 5), (ReplicaId(2), 3)]);
        let b = VersionVector::from_entries([(ReplicaId(1), 2), (ReplicaId(3), 9)]);
        let mut m = a.clone();
        m.meet(&b);
        assert_eq!(m, VersionVector::from_entries([(ReplicaId(1), 2)]));
        assert!(a.dominates(&m));
        assert!(!a.dominates(&b));
    }

    proptest! {
        /// Inserting any set of dots in any order gives the same context, and
        /// joining contexts equals inserting their dots.
        #[test]
        fn context_is_order_independent(
            dots in proptest::collection::vec((0u16..3, 1u64..12), 0..40),
            split in 0usize..40,
        ) {
            let dots: Vec<Dot> = dots.into_iter().map(|(r, s)| dot(r, s)).collect();
            let mut forward = CausalContext::new();
            for &d in &dots { forward.insert(d); }
            let mut backward = CausalContext::new();
            for &d in dots.iter().rev() { backward.insert(d); }
            prop_assert_eq!(&forward, &backward);
            let split = split.min(dots.len());
            let mut left = CausalContext::new();
            for &d in &dots[..split] { left.insert(d); }
            let mut right = CausalContext::new();
            for &d in &dots[split..] { right.insert(d); }
            left.join(&right);
            prop_assert_eq!(&left, &forward);
            forward.validate().unwrap();
            for &d in &dots { prop_assert!(forward.contains(d)); }
        }
    }
}
