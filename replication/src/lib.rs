//! Meridian's shard replication.
//!
//! A shard is a CRDT keyspace plus the log of the deltas applied to it. This
//! crate grows into master/replica roles with epochs, full and partial
//! resynchronisation, WAIT acknowledgements and on-disk durability (issue 4);
//! it starts with the [`backlog::Backlog`] every reader of the log shares and
//! the hash-slot rule ([`slot`]) that decides which shard owns a key.
//! Replication to in-memory replicas is [`stream`] (the master's log and the
//! replica's state machine, no I/O), served over gRPC by [`master_service`]
//! and followed by [`replica_link`] on the replica's node.

#![deny(missing_docs)]

pub mod backlog;
pub mod backoff;
pub mod durability;
pub mod master_service;
pub mod replica_link;
pub mod shard;
/// Hash slots (they live in `meridian-crdt`, whose keyspace stamps writes by
/// slot granule).
pub use meridian_crdt::slot;
pub mod stream;

pub use backlog::{Backlog, ReadFrom};
pub use shard::{Shard, WallSnapshot};
pub use slot::{SLOT_COUNT, key_slot, split_slots};
pub use stream::{ReplicaHandshake, ReplicaStream, ReplicationId, ReplicationLog, StreamError, SyncDecision};
