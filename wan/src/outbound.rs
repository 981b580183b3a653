//! What the source side of a link reads: the database's outbound log and its
//! snapshots. The node implements [`Outbound`] for each (database, shard
//! stream) over its shard; tests implement it over an in-process keyspace.

use meridian_crdt::gc::Reporter;
use meridian_crdt::{CausalContext, FrozenKeys, VersionVector};

use crate::outbox::Outbox;

/// A snapshot for a full sync, with the log offset it covers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The snapshot holds every delta of the outbox below this offset:
    /// the stream resumes from it. Take the offset *before* the state (a
    /// delta appended in between is shipped twice, harmlessly).
    pub resume_offset: u64,
    /// The causal context of the state.
    pub context: CausalContext,
    /// The keys' states, as copied out of the shard (sorted and converted
    /// off the shard's lock, while the snapshot is sent).
    pub keys: FrozenKeys,
}

/// The source side of one database (one shard stream) in this region.
pub trait Outbound: Send + Sync + 'static {
    /// The outbound log of locally originated deltas.
    fn outbox(&self) -> &Outbox;
    /// A snapshot of the local state for a destination whose cursor the
    /// outbox no longer covers; an error (the destination retries later) if
    /// the state cannot be shipped yet. Called on a blocking thread.
    fn snapshot(&self) -> Result<Snapshot, String>;
    /// A destination shard reports what it has applied (garbage collection
    /// by causal stability: `meridian_crdt::gc::StabilityTracker::report`).
    fn peer_applied(&self, reader: Reporter, applied: VersionVector);
}
