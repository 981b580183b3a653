//! Meridian's shard replication.
//!
//! A shard is a CRDT keyspace plus the log of the deltas applied to it. This
//! crate grows into master/replica roles with epochs, full and partial
//! resynchronisation, WAIT acknowledgements and on-disk durability (issue 4);
//! it starts with the [`backlog::Backlog`] every reader of the log shares and
//! the hash-slot rule ([`slot`]) that decides which shard owns a key.

#![deny(missing_docs)]

pub mod backlog;
pub mod durability;
pub mod shard;
pub mod slot;
pub mod stream;

pub use backlog::{Backlog, ReadFrom};
pub use shard::Shard;
pub use slot::{SLOT_COUNT, key_slot, split_slots};
pub use stream::{ReplicaHandshake, ReplicaStream, ReplicationId, ReplicationLog, StreamError, SyncDecision};
