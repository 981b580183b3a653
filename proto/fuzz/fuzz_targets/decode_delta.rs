//! Arbitrary bytes as a wire delta (what a peer region, a replica stream or
//! the journal hands over): decoding is total — an error, never a panic —
//! and a delta that decodes merges into a keyspace without breaking its
//! invariants, idempotently, and re-encodes to bytes that decode to the same
//! delta.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_crdt::{Keyspace, ReplicaId};
use meridian_proto::convert::{decode_delta, encode_delta};

fuzz_target!(|data: &[u8]| {
    let Ok(delta) = decode_delta(data) else {
        return;
    };
    assert_eq!(decode_delta(&encode_delta(&delta)).expect("a re-encoded delta decodes"), delta);
    let mut keyspace = Keyspace::new(ReplicaId(1));
    keyspace.apply(&delta);
    keyspace.validate().expect("a merged delta leaves the keyspace valid");
    let mut twice = Keyspace::new(ReplicaId(1));
    twice.apply(&delta);
    twice.apply(&delta);
    assert!(keyspace == twice, "merging is idempotent");
});
