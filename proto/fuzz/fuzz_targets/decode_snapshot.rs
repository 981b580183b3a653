//! Arbitrary bytes as a shard snapshot (a full sync from a peer, a snapshot
//! file): decoding is total — a snapshot that breaks an invariant is refused
//! with an error, never a panic — and one that decodes is a valid keyspace
//! that re-encodes to bytes decoding to an equal keyspace. The decoder over
//! shared bytes (full syncs) agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_crdt::ReplicaId;
use meridian_proto::convert::{decode_snapshot, decode_snapshot_shared, encode_snapshot};

fuzz_target!(|data: &[u8]| {
    let shared = decode_snapshot_shared(ReplicaId(1), data.to_vec().into());
    let Ok(keyspace) = decode_snapshot(ReplicaId(1), data) else {
        assert!(shared.is_err(), "both decoders refuse the same input");
        return;
    };
    assert!(shared.expect("both decoders accept the same input") == keyspace);
    keyspace.validate().expect("a decoded snapshot is valid");
    let again = decode_snapshot(ReplicaId(1), &encode_snapshot(&keyspace)).expect("a re-encoded snapshot decodes");
    assert!(keyspace == again);
});
