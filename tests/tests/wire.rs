//! The wire encoding of deltas and snapshots.
//!
//! - Every delta a random workload produces survives encode → decode unchanged.
//! - A keyspace survives snapshot encode → decode unchanged, and decoding the
//!   snapshot yields a keyspace that keeps converging with the others.
//! - Converged regions encode to byte-for-byte equal snapshots.
//! - Hostile bytes never panic the decoders; malformed content is refused.

use meridian_crdt::{Delta, ReplicaId};
use meridian_proto::convert::encode_snapshot_each;
use meridian_proto::{
    DecodeError, decode_delta, decode_snapshot, decode_snapshot_shared, delta_to_wire, encode_delta, encode_snapshot,
};
use meridian_tests::sim::{Op, Sim, Step};
use proptest::prelude::*;
use prost::Message;

fn step() -> impl Strategy<Value = Step> {
    let k = 0u8..3;
    let i = 0u8..4;
    let op = prop_oneof![
        (k.clone(), i.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrBy(k, by)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrByFloat(k, by)),
        (k.clone(), 0u16..500).prop_map(|(k, ms)| Op::Expire(k, ms)),
        k.clone().prop_map(Op::Persist),
        k.clone().prop_map(Op::Del),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SAdd(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SRem(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 0..3)).prop_map(|(k, m)| Op::SStore(k, m)),
        (k.clone(), i.clone(), i.clone()).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        (k.clone(), i.clone(), -5i8..6).prop_map(|(k, f, by)| Op::HIncrBy(k, f, by)),
        (k.clone(), i.clone(), -5i8..6).prop_map(|(k, f, by)| Op::HIncrByFloat(k, f, by)),
        (k.clone(), -5i8..6, i.clone()).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (k.clone(), -5i8..6, i.clone()).prop_map(|(k, s, m)| Op::ZIncrBy(k, s, m)),
        (k.clone(), i.clone()).prop_map(|(k, m)| Op::ZRem(k, m)),
        (k.clone(), any::<bool>(), i.clone()).prop_map(|(k, f, v)| Op::Push(k, f, v)),
        (k.clone(), any::<bool>()).prop_map(|(k, f)| Op::Pop(k, f)),
        (k.clone(), -3i8..3, i.clone()).prop_map(|(k, x, v)| Op::LSet(k, x, v)),
        Just(Op::Flush),
    ];
    prop_oneof![
        3 => (0u8..2, op).prop_map(|(r, op)| Step::Local(r, op)),
        2 => (0u8..2, any::<u16>()).prop_map(|(r, p)| Step::Deliver(r, p)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn deltas_and_snapshots_round_trip(steps in proptest::collection::vec(step(), 1..60), seed: u64) {
        let mut sim = Sim::new(2);
        for step in &steps {
            sim.step(step);
        }
        for (_, delta) in &sim.log {
            let bytes = encode_delta(delta);
            // The direct encoder writes exactly what prost makes of the
            // wire messages.
            prop_assert_eq!(&bytes, &delta_to_wire(delta).encode_to_vec());
            prop_assert_eq!(&decode_delta(&bytes).unwrap(), delta);
        }
        // A snapshot taken mid-run decodes to an equal keyspace.
        let keyspace = &sim.regions[0].keyspace;
        let restored = decode_snapshot(ReplicaId(1), &encode_snapshot(keyspace)).unwrap();
        prop_assert!(restored == *keyspace, "restored:\n{:?}\noriginal:\n{:?}", restored, keyspace);
        restored.validate().unwrap();
        // The key-by-key encoder over a frozen copy gives the same bytes, and
        // the decoder over shared bytes the same keyspace.
        let streamed = encode_snapshot_each(keyspace.context(), keyspace.freeze().into_sorted());
        prop_assert_eq!(&streamed, &encode_snapshot(keyspace));
        let shared = decode_snapshot_shared(ReplicaId(1), streamed.into()).unwrap();
        prop_assert!(shared == *keyspace);
        // After full delivery, both regions encode to the same bytes.
        sim.finish(seed);
        let a = encode_snapshot(&sim.regions[0].keyspace);
        let b = encode_snapshot(&sim.regions[1].keyspace);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn restored_keyspaces_keep_converging(steps in proptest::collection::vec(step(), 1..40), more in proptest::collection::vec(step(), 1..40), seed: u64) {
        let mut sim = Sim::new(2);
        for step in &steps {
            sim.step(step);
        }
        // Region 0 restarts from its snapshot and carries on writing.
        let snapshot = encode_snapshot(&sim.regions[0].keyspace);
        sim.regions[0].keyspace = decode_snapshot(ReplicaId(1), &snapshot).unwrap();
        for step in &more {
            sim.step(step);
        }
        sim.finish(seed);
        prop_assert!(sim.regions[0].keyspace == sim.regions[1].keyspace);
    }

    #[test]
    fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_delta(&bytes);
        let _ = decode_snapshot(ReplicaId(1), &bytes);
        let _ = decode_snapshot_shared(ReplicaId(1), bytes.into());
    }
}

#[test]
fn malformed_content_is_refused_with_a_reason() {
    use meridian_proto::v1;
    // A dot with sequence 0.
    let wire = v1::Delta {
        kind: Some(v1::delta::Kind::Key(v1::KeyDelta {
            key: "k".into(),
            parts: vec![v1::TypedDelta {
                value: Some(v1::typed_delta::Value::Set(v1::SetDelta {
                    adds: vec![v1::SetAdd { member: "m".into(), tag: Some(v1::Tag { dot: 7 << 48, hlc: 1 }) }],
                    removes: vec![],
                })),
            }],
            expiry: None,
        })),
    };
    assert_eq!(decode_delta(&wire.encode_to_vec()), Err(DecodeError::InvalidDot(7 << 48)));
    // A NaN score.
    let nan = v1::Delta {
        kind: Some(v1::delta::Kind::Key(v1::KeyDelta {
            key: "z".into(),
            parts: vec![v1::TypedDelta {
                value: Some(v1::typed_delta::Value::Zset(v1::ZSetDelta {
                    changes: vec![v1::MemberDelta {
                        member: "m".into(),
                        change: Some(v1::ScoreDelta {
                            removed: vec![],
                            entry_tag: Some(v1::Tag { dot: (1 << 48) | 1, hlc: 1 }),
                            entry_score: f64::NAN,
                            ..v1::ScoreDelta::default()
                        }),
                    }],
                })),
            }],
            expiry: None,
        })),
    };
    assert_eq!(decode_delta(&nan.encode_to_vec()), Err(DecodeError::NanScore));
    // An empty message has no kind.
    assert_eq!(decode_delta(&[]), Err(DecodeError::Missing("delta kind")));
    // Truncated bytes.
    let good = encode_delta(&Delta::Flush(meridian_crdt::CausalContext::new()));
    assert!(matches!(decode_delta(&[0x0a, 0x05, 0x01]), Err(DecodeError::Malformed(_))));
    assert!(decode_delta(&good).is_ok());
}
