//! Convergence of the CRDT keyspace under arbitrary delivery.
//!
//! Three regions run random concurrent operations over every value type and
//! the key-level rules (DEL, expiry, FLUSH, type conflicts) on a few shared
//! keys, while deltas are delivered in random order, duplicated and delayed.
//! After everything is delivered everywhere, every region must hold the same
//! state (structurally equal, and equal reads), pass `validate()`, and stay
//! equal after garbage collection with the full vector.

use meridian_tests::sim::{Op, Sim, Step};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..3;
    let i = 0u8..4;
    prop_oneof![
        (k.clone(), i.clone()).prop_map(|(k, v)| Op::Set(k, v)),
        (k.clone(), i.clone(), 0u16..500).prop_map(|(k, v, ms)| Op::SetPx(k, v, ms)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrBy(k, by)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrByFloat(k, by)),
        k.clone().prop_map(Op::Del),
        (k.clone(), 0u16..500).prop_map(|(k, ms)| Op::Expire(k, ms)),
        k.clone().prop_map(Op::Persist),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SAdd(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 1..3)).prop_map(|(k, m)| Op::SRem(k, m)),
        (k.clone(), proptest::collection::vec(i.clone(), 0..3)).prop_map(|(k, m)| Op::SStore(k, m)),
        (k.clone(), i.clone(), i.clone()).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        (k.clone(), i.clone()).prop_map(|(k, f)| Op::HDel(k, f)),
        (k.clone(), i.clone(), -5i8..6).prop_map(|(k, f, by)| Op::HIncrBy(k, f, by)),
        (k.clone(), i.clone(), -5i8..6).prop_map(|(k, f, by)| Op::HIncrByFloat(k, f, by)),
        (k.clone(), -5i8..6, i.clone()).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (k.clone(), -5i8..6, i.clone()).prop_map(|(k, s, m)| Op::ZIncrBy(k, s, m)),
        (k.clone(), i.clone()).prop_map(|(k, m)| Op::ZRem(k, m)),
        (k.clone(), any::<bool>(), i.clone()).prop_map(|(k, f, v)| Op::Push(k, f, v)),
        (k.clone(), any::<bool>(), i.clone()).prop_map(|(k, f, v)| Op::Push(k, f, v)),
        (k.clone(), any::<bool>()).prop_map(|(k, f)| Op::Pop(k, f)),
        (k.clone(), any::<bool>(), i.clone(), i.clone()).prop_map(|(k, b, p, v)| Op::LInsert(k, b, p, v)),
        (k.clone(), -3i8..3, i.clone()).prop_map(|(k, x, v)| Op::LSet(k, x, v)),
        (k.clone(), -2i8..3, i.clone()).prop_map(|(k, c, v)| Op::LRem(k, c, v)),
        (k.clone(), -3i8..3, -3i8..3).prop_map(|(k, a, b)| Op::LTrim(k, a, b)),
        Just(Op::ExpireDue),
    ]
}

/// Operations on strings and counters only.
fn string_op() -> impl Strategy<Value = Op> {
    let k = 0u8..3;
    prop_oneof![
        (k.clone(), 0u8..4).prop_map(|(k, v)| Op::Set(k, v)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrBy(k, by)),
        (k.clone(), -5i8..6).prop_map(|(k, by)| Op::IncrByFloat(k, by)),
        k.prop_map(Op::Del),
    ]
}

/// Operations on sets only.
fn set_op() -> impl Strategy<Value = Op> {
    let k = 0u8..2;
    let items = proptest::collection::vec(0u8..4, 1..4);
    prop_oneof![
        (k.clone(), items.clone()).prop_map(|(k, m)| Op::SAdd(k, m)),
        (k.clone(), items.clone()).prop_map(|(k, m)| Op::SRem(k, m)),
        (k.clone(), items).prop_map(|(k, m)| Op::SStore(k, m)),
        k.prop_map(Op::Del),
    ]
}

/// Operations on hashes only.
fn hash_op() -> impl Strategy<Value = Op> {
    let k = 0u8..2;
    prop_oneof![
        (k.clone(), 0u8..4, 0u8..4).prop_map(|(k, f, v)| Op::HSet(k, f, v)),
        (k.clone(), 0u8..4).prop_map(|(k, f)| Op::HDel(k, f)),
        (k.clone(), 0u8..4, -5i8..6).prop_map(|(k, f, by)| Op::HIncrBy(k, f, by)),
        (k.clone(), 0u8..4, -5i8..6).prop_map(|(k, f, by)| Op::HIncrByFloat(k, f, by)),
        k.prop_map(Op::Del),
    ]
}

/// Operations on sorted sets only.
fn zset_op() -> impl Strategy<Value = Op> {
    let k = 0u8..2;
    prop_oneof![
        (k.clone(), -5i8..6, 0u8..4).prop_map(|(k, s, m)| Op::ZAdd(k, s, m)),
        (k.clone(), -5i8..6, 0u8..4).prop_map(|(k, s, m)| Op::ZIncrBy(k, s, m)),
        (k.clone(), 0u8..4).prop_map(|(k, m)| Op::ZRem(k, m)),
        k.prop_map(Op::Del),
    ]
}

/// Operations on lists only.
fn list_op() -> impl Strategy<Value = Op> {
    let k = 0u8..2;
    prop_oneof![
        (k.clone(), any::<bool>(), 0u8..4).prop_map(|(k, f, v)| Op::Push(k, f, v)),
        (k.clone(), any::<bool>()).prop_map(|(k, f)| Op::Pop(k, f)),
        (k.clone(), any::<bool>(), 0u8..4, 0u8..4).prop_map(|(k, b, p, v)| Op::LInsert(k, b, p, v)),
        (k.clone(), -3i8..3, 0u8..4).prop_map(|(k, x, v)| Op::LSet(k, x, v)),
        (k.clone(), -2i8..3, 0u8..4).prop_map(|(k, c, v)| Op::LRem(k, c, v)),
        (k.clone(), -3i8..3, -3i8..3).prop_map(|(k, a, b)| Op::LTrim(k, a, b)),
        k.prop_map(Op::Del),
    ]
}

/// Steps whose local operations come from `op`.
fn steps_of(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0u8..3, op).prop_map(|(r, op)| Step::Local(r, op)),
        2 => (0u8..3, any::<u16>()).prop_map(|(r, pick)| Step::Deliver(r, pick)),
    ];
    proptest::collection::vec(step, 1..60)
}

/// Runs the steps, delivers everything, and checks convergence before and
/// after garbage collection.
fn run_and_check(steps: &[Step], seed: u64) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(3);
    for step in steps {
        sim.step(step);
    }
    sim.finish(seed);
    check_converged(&sim)?;
    let stable = sim.regions[0].keyspace.context().vector().clone();
    for region in sim.regions.iter_mut() {
        let mut cursor = 0;
        loop {
            let (next, _) = region.keyspace.collect(&stable, cursor, 7);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    check_converged(&sim)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..3, op()).prop_map(|(r, op)| Step::Local(r, op)),
        4 => (0u8..3, any::<u16>()).prop_map(|(r, pick)| Step::Deliver(r, pick)),
        1 => (0u8..3, 0u16..300).prop_map(|(r, ms)| Step::Tick(r, ms)),
        1 => (0u8..3).prop_map(|r| Step::Local(r, Op::Flush)).prop_filter("flush is rare", |_| true),
    ]
}

fn check_converged(sim: &Sim) -> Result<(), TestCaseError> {
    let now = sim.latest_wall_ms();
    for (i, region) in sim.regions.iter().enumerate() {
        region.keyspace.validate().map_err(|e| TestCaseError::fail(format!("region {i}: {e}")))?;
    }
    let first = &sim.regions[0].keyspace;
    let first_reads = sim.reads(0, now);
    for i in 1..sim.regions.len() {
        prop_assert!(
            sim.regions[i].keyspace == *first,
            "region {} differs from region 0:\n{:?}\n{:?}",
            i,
            sim.regions[i].keyspace,
            first
        );
        prop_assert_eq!(sim.reads(i, now), first_reads.clone(), "reads of region {} differ", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every type and key-level rule at once. After full delivery nothing more
    /// is written, so the full vector is causally stable and every region may
    /// collect with it.
    #[test]
    fn three_regions_converge_under_any_delivery(steps in proptest::collection::vec(step(), 1..80), seed: u64) {
        run_and_check(&steps, seed)?;
    }

    /// Strings and counters alone (registers with increments).
    #[test]
    fn strings_and_counters_converge(steps in steps_of(string_op()), seed: u64) {
        run_and_check(&steps, seed)?;
    }

    /// Sets alone.
    #[test]
    fn sets_converge(steps in steps_of(set_op()), seed: u64) {
        run_and_check(&steps, seed)?;
    }

    /// Hashes alone.
    #[test]
    fn hashes_converge(steps in steps_of(hash_op()), seed: u64) {
        run_and_check(&steps, seed)?;
    }

    /// Sorted sets alone.
    #[test]
    fn sorted_sets_converge(steps in steps_of(zset_op()), seed: u64) {
        run_and_check(&steps, seed)?;
    }

    /// Lists alone.
    #[test]
    fn lists_converge(steps in steps_of(list_op()), seed: u64) {
        run_and_check(&steps, seed)?;
    }
}
