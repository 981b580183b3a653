//! What the destination side of a link writes to: the local database. The
//! node implements [`Inbound`] over its shards (routing each delta to the
//! shard owning its slot) and its durable cursor store; tests implement it
//! over an in-process keyspace.

use std::sync::RwLock;

use meridian_crdt::clock::Observation;
use meridian_crdt::{ClockError, Delta, Keyspace, SnapshotMerge, VersionVector};

use crate::protocol::{Cursor, Source};

/// The destination side of one database in this region.
pub trait Inbound: Send + Sync + 'static {
    /// Shows the local clock a timestamp from the peer: beyond the allowed
    /// skew it is clamped and counted (`meridian_crdt::Clock::observe`).
    fn observe(&self, hlc: u64) -> Result<Observation, ClockError>;
    /// Merges a batch of the peer's deltas (idempotent: a redelivered delta
    /// changes nothing). Merged deltas are journaled as remote, so they are
    /// never shipped on to another region.
    fn apply(&self, deltas: &[Delta]) -> Result<(), String>;
    /// Joins a peer's snapshot into the local state (a full sync). Called
    /// on a blocking thread.
    fn apply_snapshot(&self, snapshot: &Keyspace) -> Result<SnapshotMerge, String>;
    /// The gate of a snapshot merge in steps, if `apply_snapshot` merges in
    /// steps (`Keyspace::merge_begin`) holding it exclusively: the sink then
    /// calls [`Inbound::apply`] only holding it shared, and waits for it
    /// without blocking an async worker (a merge takes seconds at millions
    /// of keys). `None`: `apply_snapshot` merges under one lock hold.
    fn merge_gate(&self) -> Option<&RwLock<()>> {
        None
    }
    /// The persisted cursor into `source`'s log, if any.
    fn load_cursor(&self, source: Source) -> Option<Cursor>;
    /// Persists the cursor into `source`'s log. Called after the deltas
    /// below it are applied; losing the last write only redelivers.
    fn store_cursor(&self, source: Source, cursor: Cursor) -> Result<(), String>;
    /// The local applied version vector (reported to the source for GC).
    fn applied_vector(&self) -> VersionVector;
}
