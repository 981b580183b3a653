//! Meridian's conflict-free replicated data types.
//!
//! Pure and synchronous: no I/O, no threads, no async. The crate defines the
//! identity of writes ([`Dot`], [`Tag`], [`ReplicaId`]), the hybrid logical
//! [`Clock`], the causal bookkeeping ([`VersionVector`], [`CausalContext`]),
//! one delta-state CRDT per Redis value type, and the [`Keyspace`]: the CRDT
//! map from key to typed value that a shard holds.
//!
//! Every local mutator returns the [`Delta`] it applied; [`Keyspace::apply`]
//! merges a delta from anywhere, and merging is commutative, associative and
//! idempotent (the property suites in `tests/` check it). The conflict rules
//! are written out, with examples, in `docs/semantics.md`.

#![deny(missing_docs)]

pub mod clock;
pub mod context;
pub mod delta;
pub mod dot;
pub mod error;
pub mod expiry;
pub mod gc;
pub mod hash;
pub mod keyspace;
pub mod list;
pub mod number;
pub mod register;
pub mod set;
pub mod short_bytes;
pub mod slot;
pub mod table;
pub mod value;
pub mod zset;

pub use clock::Clock;
pub use context::{CausalContext, VersionVector};
pub use delta::{Delta, KeyDelta, TypedDelta};
pub use dot::{Dot, ReplicaId, Tag};
pub use error::{ClockError, CommandError};
pub use keyspace::{FrozenKeys, JournalEntry, Keyspace, Moment, SnapshotMerge, SnapshotMerging};
pub use short_bytes::ShortBytes;
