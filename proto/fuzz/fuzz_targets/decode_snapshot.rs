//! Arbitrary bytes as a shard snapshot (a full sync from a peer, a snapshot
//! file): decoding is total — a snapshot that breaks an invariant is refused
//! with an error, never a panic — and one that decodes is a valid keyspace
//! that re-encodes to bytes decoding to an equal keyspace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_crdt::ReplicaId;
use meridian_proto::convert::{decode_snapshot, encode_snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(keyspace) = decode_snapshot(ReplicaId(1), data) else {
        return;
    };
    keyspace.validate().expect("a decoded snapshot is valid");
    let again = decode_snapshot(ReplicaId(1), &encode_snapshot(&keyspace)).expect("a re-encoded snapshot decodes");
    assert!(keyspace == again);
});
