//! Meridian's wire schema: deltas and shard snapshots as protobuf messages.
//!
//! The messages are generated from `proto/meridian/v1/*.proto` at build time
//! (protox, so no `protoc` is needed). [`convert`] maps them to and from the
//! `meridian-crdt` types. Decoding is total: malformed or hostile input gives a
//! [`DecodeError`], never a panic. `sync.proto` holds the WAN sync service
//! (`v1::wan_sync_server`, `v1::wan_sync_client`, generated without tonic's
//! transport; the `meridian-wan` crate serves and dials it). The
//! `ClusterRaft` service (`cluster.proto`) carries the region control plane's
//! Raft RPCs, joins and forwarded configuration writes. `replica.proto` holds
//! the `ReplicaSync` service that streams a master shard's deltas to its
//! in-memory replicas (`meridian-replication` serves and dials it);
//! `monitor.proto` holds
//! the `SyncMonitor` service (per database and peer region figures of the WAN
//! sync; served by `meridian-wan` beside `WanSync`).

#![deny(missing_docs)]

/// Generated protobuf types, package `meridian.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/meridian.v1.rs"));
}

pub mod convert;
pub mod direct;

pub use convert::{
    DecodeError, decode_delta, decode_snapshot, decode_snapshot_shared, delta_from_wire, delta_to_wire, encode_delta,
    encode_snapshot, snapshot_from_wire, snapshot_to_wire,
};
