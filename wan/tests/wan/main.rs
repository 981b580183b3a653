//! The WAN syncer's integration suite, one binary (linking tonic once):
//! [`sync`] runs regions as in-process keyspaces behind the syncer's traits,
//! [`shard`] runs it over real `replication::Shard`s with durable cursors.

mod shard;
mod sync;
