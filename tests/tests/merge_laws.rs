//! The merge laws of the keyspace, stated as properties.
//!
//! The keyspace merges deltas into state (`s·d` below is `apply(s, d)`). For
//! random workloads of every type, with `s` any replica's state mid-run and
//! `a`, `b`, `c` any deltas of the run:
//!
//! - commutative: `s·a·b = s·b·a`;
//! - idempotent: `s·a·a = s·a`, and a late duplicate changes nothing either:
//!   `s·a·b·a = s·a·b`;
//! - associative: deltas of one key that name disjoint dots compose by
//!   concatenation (`a∘b`), and grouping does not matter:
//!   `s·(a∘b)·c = s·a·(b∘c) = s·a·b·c`.
//!
//! Together they make the result of any delivery order, with any duplicates,
//! the same state — which `convergence.rs` checks over whole runs.

use meridian_crdt::keyspace::Keyspace;
use meridian_crdt::{Delta, KeyDelta};
use meridian_proto::{decode_snapshot, encode_snapshot};
use meridian_tests::sim::{Op, Sim, Step};
use proptest::prelude::*;

fn step() -> impl Strategy<Value = Step> {
    let k = 0u8..2;
    let i = 0u8..3;
    let op = prop_oneof![
        (k.clone(), i.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        (k.clone(), -3i8..4).prop_map(|(k, by)| Op::IncrBy(k, by)),
        k.clone().prop_map(Op::Del),
        (k.clone(), 0u16..300).prop_map(|(k, ms)| Op::Expire(k, ms)),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SAdd(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SRem(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 0..3)).prop_map(|(k, m)| Op::SStore(k, m)),
        (k.clone(), i.clone(), i.clone()).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        (k.clone(), i.clone()).prop_map(|(k, f)| Op::HDel(k, f)),
        (k.clone(), i.clone(), -3i8..4).prop_map(|(k, f, by)| Op::HIncrByFloat(k, f, by)),
        (k.clone(), -3i8..4, i.clone()).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (k.clone(), -3i8..4, i.clone()).prop_map(|(k, s, m)| Op::ZIncrBy(k, s, m)),
        (k.clone(), i.clone()).prop_map(|(k, m)| Op::ZRem(k, m)),
        (k.clone(), any::<bool>(), i.clone()).prop_map(|(k, f, v)| Op::Push(k, f, v)),
        (k.clone(), any::<bool>()).prop_map(|(k, f)| Op::Pop(k, f)),
        (k.clone(), -2i8..3, i.clone()).prop_map(|(k, c, v)| Op::LRem(k, c, v)),
        Just(Op::Flush),
    ];
    prop_oneof![
        3 => (0u8..3, op).prop_map(|(r, op)| Step::Local(r, op)),
        2 => (0u8..3, any::<u16>()).prop_map(|(r, p)| Step::Deliver(r, p)),
    ]
}

/// A copy of a keyspace (through its snapshot, which the wire suite shows is exact).
fn copy(keyspace: &Keyspace) -> Keyspace {
    decode_snapshot(keyspace.replica(), &encode_snapshot(keyspace)).expect("snapshot decodes")
}

fn applied(base: &Keyspace, deltas: &[&Delta]) -> Keyspace {
    let mut state = copy(base);
    for delta in deltas {
        state.apply(delta);
    }
    state
}

/// `a∘b` for two writes to one key that name disjoint dots: the parts of
/// both, in order. (Concatenation is not a join when one delta removes what
/// the other adds — applied at once, the add would come after the removal —
/// and one write never names a dot twice; such pairs are not composed.)
fn compose(a: &KeyDelta, b: &KeyDelta) -> Option<KeyDelta> {
    if a.key != b.key || (a.expiry.is_some() && b.expiry.is_some()) {
        return None;
    }
    let mut dots_a = Vec::new();
    a.for_each_dot(|d| dots_a.push(d));
    let mut shared = false;
    b.for_each_dot(|d| shared |= dots_a.contains(&d));
    if shared {
        return None;
    }
    let mut composed = a.clone();
    composed.parts.extend(b.parts.iter().cloned());
    composed.expiry = a.expiry.clone().or_else(|| b.expiry.clone());
    Some(composed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn merging_is_commutative_idempotent_and_associative(
        steps in proptest::collection::vec(step(), 4..50),
        base in 0usize..3,
        picks in proptest::collection::vec(any::<u16>(), 3),
    ) {
        let mut sim = Sim::new(3);
        for step in &steps {
            sim.step(step);
        }
        prop_assume!(!sim.log.is_empty());
        let s = &sim.regions[base].keyspace;
        let pick = |i: usize| &sim.log[picks[i] as usize % sim.log.len()].1;
        let (a, b, c) = (pick(0), pick(1), pick(2));

        prop_assert!(applied(s, &[a, b]) == applied(s, &[b, a]), "not commutative");
        prop_assert!(applied(s, &[a, a]) == applied(s, &[a]), "not idempotent");
        prop_assert!(applied(s, &[a, b, a]) == applied(s, &[a, b]), "a late duplicate changed the state");

        let sequential = applied(s, &[a, b, c]);
        if let (Delta::Key(ka), Delta::Key(kb), Delta::Key(kc)) = (a, b, c) {
            if let Some(ab) = compose(ka, kb) {
                prop_assert!(applied(s, &[&Delta::Key(ab), c]) == sequential, "(a∘b)·c differs from a·b·c\na={:?}\nb={:?}\nc={:?}", a, b, c);
            }
            if let Some(bc) = compose(kb, kc) {
                prop_assert!(applied(s, &[a, &Delta::Key(bc)]) == sequential, "a·(b∘c) differs from a·b·c\na={:?}\nb={:?}\nc={:?}", a, b, c);
            }
        }
        for state in [&sequential, &applied(s, &[c, b, a])] {
            state.validate().map_err(TestCaseError::fail)?;
        }
        prop_assert!(applied(s, &[c, b, a]) == sequential, "the order of three deltas mattered");
    }
}
