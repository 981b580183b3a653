//! Identity of writes: replica ids, dots and tags.
//!
//! Every element a write creates (a string value, a set member, a counter
//! increment, a list element, an expiry) is named by a [`Dot`]: the replica
//! that originated it and that replica's sequence number. Dots are what
//! observed-remove semantics remove, and what the causal context records as
//! seen. A [`Tag`] is a dot plus the hybrid-logical-clock time of the write; tags
//! order concurrent writes for last-writer-wins.

use core::fmt;
use core::num::NonZeroU64;

/// The origin of deltas: one stream of writes with its own contiguous sequence.
///
/// A region's database may have several shards, each writing independently, so
/// the origin of a dot is a (region, shard stream) pair packed into 16 bits by
/// the cluster (see `docs/ARCHITECTURE.md`, "Replica ids"). Inside this crate it
/// is opaque, except that its numeric order breaks ties between writes with the
/// same HLC time, so the cluster allocates ids in region order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u16);

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Number of bits of a dot's sequence number.
pub const DOT_SEQ_BITS: u32 = 48;
/// The largest sequence number a replica may allocate (2^48 - 1, about 2.8e14:
/// nine years of one million writes per second from one shard stream).
pub const DOT_SEQ_MAX: u64 = (1 << DOT_SEQ_BITS) - 1;

/// One write event's identity: (replica, sequence), packed into 8 bytes.
///
/// Sequence numbers start at 1 and are contiguous per replica, which is what
/// lets a [`crate::CausalContext`] summarise every dot seen as one number per
/// replica. The packing puts the replica in the high bits, so the derived order
/// is (replica, sequence).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot(NonZeroU64);

impl Dot {
    /// Makes a dot. Panics if `seq` is 0 or above [`DOT_SEQ_MAX`]: both are
    /// programming errors (sequences start at 1 and the clock refuses to wrap).
    #[inline]
    pub fn new(replica: ReplicaId, seq: u64) -> Dot {
        assert!((1..=DOT_SEQ_MAX).contains(&seq), "dot sequence {seq} out of range");
        // The sequence is at least 1, so the packed value is never zero; the
        // niche lets `Option<Dot>` and enums holding dots stay 8 bytes smaller.
        Dot(NonZeroU64::new(((replica.0 as u64) << DOT_SEQ_BITS) | seq).expect("sequence is non-zero"))
    }

    /// Rebuilds a dot from its packed form, checking it (used by decoders of
    /// untrusted input).
    pub fn from_packed(packed: u64) -> Option<Dot> {
        let seq = packed & DOT_SEQ_MAX;
        if seq == 0 { None } else { NonZeroU64::new(packed).map(Dot) }
    }

    /// The packed 64-bit form, as stored and sent on the wire.
    #[inline]
    pub fn packed(self) -> u64 {
        self.0.get()
    }

    /// The replica that originated the write.
    #[inline]
    pub fn replica(self) -> ReplicaId {
        ReplicaId((self.0.get() >> DOT_SEQ_BITS) as u16)
    }

    /// The write's sequence number at its replica (≥ 1).
    #[inline]
    pub fn seq(self) -> u64 {
        self.0.get() & DOT_SEQ_MAX
    }
}

impl fmt::Debug for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.replica(), self.seq())
    }
}

/// A dot that no write ever gets (replica 0, the largest sequence), used to
/// fill a slot for the instant its state is taken out to be merged.
pub(crate) const PLACEHOLDER_DOT: Dot = Dot(NonZeroU64::new(DOT_SEQ_MAX).unwrap());

/// A dot with the HLC time of the write that made it.
///
/// Tags order concurrent writes: the greater `(hlc, replica)` wins, which is
/// the (HLC timestamp, region) rule of the design once replica ids are
/// allocated in region order. Two different writes never have equal tags,
/// because their dots differ and a replica's HLC never repeats.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// Identity of the element.
    pub dot: Dot,
    /// Hybrid logical clock time of the write (hlc-gen's 64-bit layout).
    pub hlc: u64,
}

impl Tag {
    /// Makes a tag.
    #[inline]
    pub fn new(dot: Dot, hlc: u64) -> Tag {
        Tag { dot, hlc }
    }

    /// The last-writer-wins order key: HLC first, then replica, then sequence
    /// (the last only matters for two elements of one write, which never compete).
    #[inline]
    pub fn order_key(self) -> (u64, u16, u64) {
        (self.hlc, self.dot.replica().0, self.dot.seq())
    }
}

impl PartialOrd for Tag {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tag {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.dot, self.hlc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_packs_replica_and_sequence() {
        let dot = Dot::new(ReplicaId(513), 77);
        assert_eq!(dot.replica(), ReplicaId(513));
        assert_eq!(dot.seq(), 77);
        assert_eq!(Dot::from_packed(dot.packed()), Some(dot));
        assert_eq!(Dot::from_packed(5 << DOT_SEQ_BITS), None);
        assert!(Dot::new(ReplicaId(1), DOT_SEQ_MAX) < Dot::new(ReplicaId(2), 1));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn dot_sequence_zero_is_refused() {
        let _ = Dot::new(ReplicaId(1), 0);
    }

    #[test]
    fn tags_order_by_hlc_then_replica() {
        let a = Tag::new(Dot::new(ReplicaId(2), 1), 10);
        let b = Tag::new(Dot::new(ReplicaId(1), 9), 10);
        let c = Tag::new(Dot::new(ReplicaId(1), 1), 11);
        assert!(b < a && a < c);
    }
}
