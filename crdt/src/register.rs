//! The register: a multi-value last-writer-wins register with counter
//! increments, the CRDT behind strings, hash fields and sorted-set scores.
//!
//! A register holds the value entries no later write has observed (usually
//! one; several only after concurrent writes) and the counter increments no
//! reset has observed. A write (SET, HSET, ZADD) removes every entry and
//! increment it observed and adds its own entry; an increment (INCRBY,
//! HINCRBY, ZINCRBY) adds one increment element. The value read is the winning
//! entry — greatest [`Tag`], i.e. (HLC, replica) — plus the sum of the live
//! increments. This gives the design's counter rules exactly: increments from
//! all regions add up, and a SET concurrent with increments keeps the ones it
//! did not observe (observed reset). Integer sums are widened to `i128`, so
//! concurrent increments never overflow; a local INCR whose result leaves the
//! `i64` range is refused, as in Redis.
//!
//! Increments of one replica are merged into one element once they are
//! causally stable (see [`Register::collect`]), so a hot counter costs one
//! element per region at rest.

use smallvec::SmallVec;

/// Dots a write removes: inline for the common one-or-two (a SET replacing
/// one value), so the hot path allocates nothing for them.
pub type Dots = SmallVec<[Dot; 2]>;

use crate::context::{CausalContext, VersionVector};
use crate::dot::{Dot, ReplicaId, Tag};

/// An increment's amount. Integer increments stay exact; any float makes the
/// sum a float (as Redis's INCRBYFLOAT result is).
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// From INCR, INCRBY, DECRBY, HINCRBY (and merged integer increments).
    Int(i128),
    /// From INCRBYFLOAT, HINCRBYFLOAT, ZINCRBY.
    Float(f64),
}

impl PartialEq for Amount {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Amount::Int(a), Amount::Int(b)) => a == b,
            // Bitwise, so that states compare equal exactly when they are the same.
            (Amount::Float(a), Amount::Float(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

impl Eq for Amount {}

/// The sum of a set of amounts, computed in a fixed order (by dot) so every
/// replica gets the same bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sum {
    /// Only integer amounts.
    Int(i128),
    /// At least one float amount.
    Float(f64),
}

impl Sum {
    /// Adds one amount.
    pub fn plus(self, amount: Amount) -> Sum {
        match (self, amount) {
            (Sum::Int(a), Amount::Int(b)) => Sum::Int(a.saturating_add(b)),
            (Sum::Int(a), Amount::Float(b)) => Sum::Float(a as f64 + b),
            (Sum::Float(a), Amount::Int(b)) => Sum::Float(a + b as f64),
            (Sum::Float(a), Amount::Float(b)) => Sum::Float(a + b),
        }
    }

    /// True if nothing was added (or the integer amounts cancel out).
    pub fn is_zero_int(self) -> bool {
        matches!(self, Sum::Int(0))
    }

    fn into_amount(self) -> Amount {
        match self {
            Sum::Int(v) => Amount::Int(v),
            Sum::Float(v) => Amount::Float(v),
        }
    }
}

/// One value entry: the write's tag and the value it wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<V> {
    /// Identity and time of the write.
    pub tag: Tag,
    /// The value written.
    pub value: V,
}

/// One counter increment element: a single increment, or the sum of a
/// replica's stable increments merged by garbage collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment {
    /// Identity and time of the increment (of the last one merged).
    pub tag: Tag,
    /// How much was added.
    pub amount: Amount,
    /// The sequence number of the first increment the element sums, of the
    /// replica of `tag`: `tag.dot.seq()` for a single increment, lower for
    /// a merged one. A removal that observes a merged element removes every
    /// increment of that range (see [`RegisterDelta::removed_runs`]).
    pub first: u64,
}

impl Increment {
    /// A single increment.
    pub fn new(tag: Tag, amount: Amount) -> Increment {
        Increment { tag, amount, first: tag.dot.seq() }
    }

    /// True if the element sums more than one increment.
    pub fn is_merged(&self) -> bool {
        self.first < self.tag.dot.seq()
    }

    /// True if the element lies in the run of `last`'s replica from sequence
    /// `first` to `last`.
    fn in_run(&self, last: Dot, first: u64) -> bool {
        let dot = self.tag.dot;
        dot.replica() == last.replica() && dot.seq() >= first && dot.seq() <= last.seq()
    }
}

/// A register's state. `entries` is sorted by tag and `increments` by dot, so
/// equal states are equal structurally.
#[derive(Clone, Debug, PartialEq)]
pub struct Register<V> {
    entries: SmallVec<[Entry<V>; 1]>,
    increments: Vec<Increment>,
    /// Sum of the integer increments, kept up to date so that reading a hot
    /// counter costs O(1) however many increments are live. (A function of
    /// `increments`: equal states have equal sums.)
    int_sum: i128,
    /// How many increments are floats (their sum is order-dependent and is
    /// computed on demand, in dot order).
    float_count: u32,
}

/// The change one write makes to a register.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterDelta<V> {
    /// Dots of entries and increments the write observed and removes.
    pub removed: Dots,
    /// The entry the write adds, if it writes a value.
    pub entry: Option<Entry<V>>,
    /// The increment the write adds, if it increments.
    pub increment: Option<Increment>,
    /// For each merged increment the write observed (its dot is also in
    /// `removed`): that dot and the sequence number of the first increment
    /// it sums. A receiver removes every increment of that replica in the
    /// run, one by one or merged at other points: a region that merged
    /// names one dot for what another still holds as many. Everything in a
    /// run is causally stable, so nothing of it can arrive later, and every
    /// removal concurrent with it was applied before anyone merged it
    /// ([`crate::gc::StabilityTracker`]).
    pub removed_runs: Box<[(Dot, u64)]>,
}

impl<V> Default for RegisterDelta<V> {
    fn default() -> Self {
        RegisterDelta { removed: Dots::new(), entry: None, increment: None, removed_runs: Box::default() }
    }
}

impl<V> RegisterDelta<V> {
    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.removed.iter().copied().for_each(&mut f);
        if let Some(entry) = &self.entry {
            f(entry.tag.dot);
        }
        if let Some(increment) = &self.increment {
            f(increment.tag.dot);
        }
    }
}

impl<V> Default for Register<V> {
    fn default() -> Self {
        Register { entries: SmallVec::new(), increments: Vec::new(), int_sum: 0, float_count: 0 }
    }
}

impl<V: Clone + PartialEq> Register<V> {
    /// A register holding one entry (the common case, built without a delta).
    pub fn with_entry(tag: Tag, value: V) -> Self {
        let mut entries = SmallVec::new();
        entries.push(Entry { tag, value });
        Register { entries, increments: Vec::new(), int_sum: 0, float_count: 0 }
    }

    /// True if the register holds nothing (the key or field does not exist).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.increments.is_empty()
    }

    /// The winning entry: the greatest tag.
    pub fn winner(&self) -> Option<&Entry<V>> {
        self.entries.last()
    }

    /// All live value entries (sorted by tag; the last wins).
    pub fn entries(&self) -> &[Entry<V>] {
        &self.entries
    }

    /// All live increments (sorted by dot).
    pub fn increments(&self) -> &[Increment] {
        &self.increments
    }

    /// The sum of the live increments, in dot order (O(1) when all are integers).
    pub fn increment_sum(&self) -> Sum {
        if self.float_count == 0 {
            return Sum::Int(self.int_sum);
        }
        self.increments.iter().fold(Sum::Int(0), |sum, inc| sum.plus(inc.amount))
    }

    /// The sum of the integer increments alone, if there is no float one.
    pub fn int_sum(&self) -> Option<i128> {
        (self.float_count == 0).then_some(self.int_sum)
    }

    fn count(&mut self, increment: &Increment, sign: i128) {
        match increment.amount {
            Amount::Int(v) => self.int_sum = self.int_sum.wrapping_add(sign.wrapping_mul(v)),
            Amount::Float(_) if sign > 0 => self.float_count += 1,
            Amount::Float(_) => self.float_count -= 1,
        }
    }

    fn recount(&mut self) {
        self.int_sum = 0;
        self.float_count = 0;
        let increments = core::mem::take(&mut self.increments);
        for increment in &increments {
            self.count(increment, 1);
        }
        self.increments = increments;
    }

    /// The greatest tag of any live element (the register's last write).
    pub fn max_tag(&self) -> Option<Tag> {
        let entry = self.entries.last().map(|e| e.tag);
        let increment = self.increments.iter().map(|i| i.tag).max();
        entry.max(increment)
    }

    /// Every live dot.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.entries.iter().for_each(|e| f(e.tag.dot));
        self.increments.iter().for_each(|i| f(i.tag.dot));
    }

    /// The delta of a write that replaces everything observed with `value`.
    pub fn assign(&self, tag: Tag, value: V) -> RegisterDelta<V> {
        RegisterDelta { entry: Some(Entry { tag, value }), ..self.clear() }
    }

    /// The delta of a removal of everything observed (DEL, HDEL, ZREM).
    pub fn clear(&self) -> RegisterDelta<V> {
        let removed_runs = self.increments.iter().filter(|i| i.is_merged()).map(|i| (i.tag.dot, i.first)).collect();
        RegisterDelta { removed: self.live_dots(), entry: None, increment: None, removed_runs }
    }

    /// The delta of an increment.
    pub fn increment(tag: Tag, amount: Amount) -> RegisterDelta<V> {
        RegisterDelta { increment: Some(Increment::new(tag, amount)), ..RegisterDelta::default() }
    }

    fn live_dots(&self) -> Dots {
        let mut dots = Dots::with_capacity(self.entries.len() + self.increments.len());
        self.for_each_dot(|d| dots.push(d));
        dots
    }

    /// The state as deltas that rebuild it from nothing: one per entry (in tag
    /// order), then one per increment (in dot order). Used by snapshots.
    pub fn as_deltas(&self) -> Vec<RegisterDelta<V>> {
        let entries = self.entries.iter().map(|e| RegisterDelta { entry: Some(e.clone()), ..RegisterDelta::default() });
        let increments =
            self.increments.iter().map(|i| RegisterDelta { increment: Some(*i), ..RegisterDelta::default() });
        entries.chain(increments).collect()
    }

    /// Merges a delta. `seen` is the receiver's context before this delta:
    /// an added element whose dot was already seen is either here already or
    /// was removed by a write that observed it, and is skipped either way.
    pub fn apply(&mut self, delta: &RegisterDelta<V>, seen: &CausalContext) {
        if !delta.removed.is_empty() {
            self.entries.retain(|e| !delta.removed.contains(&e.tag.dot));
            let before = self.increments.len();
            self.increments.retain(|i| {
                !delta.removed.contains(&i.tag.dot)
                    && !delta.removed_runs.iter().any(|&(last, first)| i.in_run(last, first))
            });
            if self.increments.len() != before {
                self.recount();
            }
        }
        if let Some(entry) = &delta.entry
            && !seen.contains(entry.tag.dot)
        {
            let at = self.entries.partition_point(|e| e.tag < entry.tag);
            if self.entries.get(at).is_none_or(|e| e.tag != entry.tag) {
                self.entries.insert(at, entry.clone());
            }
        }
        if let Some(increment) = &delta.increment
            && !seen.contains(increment.tag.dot)
        {
            // Increments almost always arrive in dot order (a replica's own
            // counter, or one origin's stream): check the end first rather than
            // binary-searching a long vector of them.
            let at = match self.increments.last() {
                None => 0,
                Some(last) if last.tag.dot < increment.tag.dot => self.increments.len(),
                Some(_) => self.increments.partition_point(|i| i.tag.dot < increment.tag.dot),
            };
            if self.increments.get(at).is_none_or(|i| i.tag.dot != increment.tag.dot) {
                self.increments.insert(at, *increment);
                self.count(increment, 1);
            }
        }
    }

    /// Removes every element whose dot is in `context` (a flush that observed
    /// them). Returns true if anything was removed.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let before = self.entries.len() + self.increments.len();
        self.entries.retain(|e| !context.contains(e.tag.dot));
        self.increments.retain(|i| !context.contains(i.tag.dot));
        self.recount();
        before != self.entries.len() + self.increments.len()
    }

    /// For a full-sync join with `theirs`: the dots of increments here that
    /// must give way to a merged increment of theirs with the same dot.
    ///
    /// Garbage collection merges a replica's stable increments into one
    /// element carrying the greatest of their dots ([`Register::collect`]),
    /// so two replicas that collected at different moments can hold the same
    /// dot as a single increment here and as the sum of a longer run there
    /// (an earlier `first`). The longer run is the one to keep: the
    /// increments it absorbed are dropped from this side by the join as seen
    /// and gone on the other, and keeping the single increment would lose
    /// them all.
    pub fn yielding_to_merged(&self, theirs: &Register<V>) -> Dots {
        let mut yielding = Dots::new();
        for merged in theirs.increments.iter().filter(|i| i.is_merged()) {
            let dot = merged.tag.dot;
            if let Ok(at) = self.increments.binary_search_by(|i| i.tag.dot.cmp(&dot))
                && self.increments[at].first > merged.first
            {
                yielding.push(dot);
            }
        }
        yielding
    }

    /// Merges the last increment into the one before it when both come from
    /// the same replica. Valid only where nothing is concurrent with them — a
    /// keyspace with no peer region ([`crate::Keyspace::set_solo`]) — where it
    /// keeps a hot counter at one element instead of one per INCR.
    pub fn merge_last_increments(&mut self) {
        let len = self.increments.len();
        if len < 2 {
            return;
        }
        let (previous, last) = (self.increments[len - 2], self.increments[len - 1]);
        if previous.tag.dot.replica() != last.tag.dot.replica() {
            return;
        }
        let amount = Sum::Int(0).plus(previous.amount).plus(last.amount).into_amount();
        self.increments[len - 1] = Increment { tag: previous.tag.max(last.tag), amount, first: previous.first };
        self.increments.remove(len - 2);
    }

    /// Garbage collection with a causally stable vector: every dot it covers
    /// has been applied everywhere, and so has everything concurrent with it.
    ///
    /// - Stable increments of one replica are merged into one element carrying
    ///   the greatest of their tags: no future removal can observe some of them
    ///   and not the others.
    /// - Losing entries are kept, stable or not: a removal names the dots it
    ///   observed, and a region that had dropped a loser would name only the
    ///   winner, leaving the loser alive — and visible — wherever it had not
    ///   been dropped yet (docs/ARCHITECTURE.md D96). The next write to the
    ///   register removes them with the winner.
    ///
    /// Every replica that collects with the same vector reaches the same state.
    /// Returns the number of elements collected.
    pub fn collect(&mut self, stable: &VersionVector) -> usize {
        let mut collected = 0;
        if self.increments.len() > 1 {
            collected += merge_stable_increments(&mut self.increments, stable);
            self.recount();
        }
        collected
    }
}

/// Merges, per replica, the stable increments into the greatest-tagged one.
fn merge_stable_increments(increments: &mut Vec<Increment>, stable: &VersionVector) -> usize {
    let mut merged: Vec<Increment> = Vec::with_capacity(increments.len());
    let mut collected = 0;
    // (replica, sum, greatest tag, first sequence, elements merged)
    type Run = Option<(ReplicaId, Sum, Tag, u64, usize)>;
    let mut run: Run = None;
    let flush = |run: &mut Run, merged: &mut Vec<Increment>, collected: &mut usize| {
        if let Some((_, sum, tag, first, count)) = run.take() {
            merged.push(Increment { tag, amount: sum.into_amount(), first });
            *collected += count - 1;
        }
    };
    for increment in increments.iter() {
        let dot = increment.tag.dot;
        if !stable.contains(dot) {
            flush(&mut run, &mut merged, &mut collected);
            merged.push(*increment);
            continue;
        }
        match &mut run {
            Some((replica, sum, tag, _, count)) if *replica == dot.replica() => {
                *sum = sum.plus(increment.amount);
                *tag = (*tag).max(increment.tag);
                *count += 1;
            }
            _ => {
                flush(&mut run, &mut merged, &mut collected);
                let first = increment.first;
                run = Some((dot.replica(), Sum::Int(0).plus(increment.amount), increment.tag, first, 1));
            }
        }
    }
    flush(&mut run, &mut merged, &mut collected);
    // Increments are sorted by dot, and a merged element takes the greatest dot
    // of its run, which precedes the next run's first dot: order is kept.
    *increments = merged;
    collected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(replica: u16, seq: u64, hlc: u64) -> Tag {
        Tag::new(Dot::new(ReplicaId(replica), seq), hlc)
    }

    fn seen(dots: &[Tag]) -> CausalContext {
        let mut context = CausalContext::new();
        dots.iter().for_each(|t| context.insert(t.dot));
        context
    }

    #[test]
    fn concurrent_assignments_keep_both_and_the_later_wins() {
        let base: Register<u32> = Register::default();
        let a = base.assign(tag(1, 1, 10), 1);
        let b = base.assign(tag(2, 1, 20), 2);
        let mut left = base.clone();
        left.apply(&a, &CausalContext::new());
        left.apply(&b, &seen(&[tag(1, 1, 10)]));
        let mut right = base.clone();
        right.apply(&b, &CausalContext::new());
        right.apply(&a, &seen(&[tag(2, 1, 20)]));
        assert_eq!(left, right);
        assert_eq!(left.winner().unwrap().value, 2);
        assert_eq!(left.entries().len(), 2);
    }

    #[test]
    fn observed_reset_keeps_unobserved_increments() {
        let mut r: Register<u32> = Register::default();
        let i1 = Register::<u32>::increment(tag(1, 1, 1), Amount::Int(7));
        r.apply(&i1, &CausalContext::new());
        let reset = r.assign(tag(2, 1, 5), 0);
        let i2 = Register::<u32>::increment(tag(1, 2, 3), Amount::Int(3));
        r.apply(&i2, &seen(&[tag(1, 1, 1)]));
        r.apply(&reset, &seen(&[tag(1, 1, 1), tag(1, 2, 3)]));
        assert_eq!(r.increment_sum(), Sum::Int(3));
        assert_eq!(r.winner().unwrap().value, 0);
    }

    #[test]
    fn collect_merges_stable_increments_per_replica() {
        let mut r: Register<u32> = Register::default();
        let mut context = CausalContext::new();
        for (seq, amount) in [(1, 5), (2, -2), (3, 10)] {
            let t = tag(1, seq, seq * 10);
            r.apply(&Register::<u32>::increment(t, Amount::Int(amount)), &context);
            context.insert(t.dot);
        }
        let t = tag(2, 1, 15);
        r.apply(&Register::<u32>::increment(t, Amount::Float(0.5)), &context);
        let stable = VersionVector::from_entries([(ReplicaId(1), 2), (ReplicaId(2), 1)]);
        assert_eq!(r.collect(&stable), 1);
        assert_eq!(r.increments().len(), 3);
        assert_eq!(r.increment_sum(), Sum::Float(13.5));
        assert_eq!(r.increments()[0].amount, Amount::Int(3));
    }
}
