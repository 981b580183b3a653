//! A snapshot merge in steps (`Keyspace::merge_begin` / `merge_step` /
//! `merge_finish`), with the keyspace's own writes between the steps (the
//! shard's lock released), ends in the state a merge at once gives when
//! those writes' deltas are applied before it: the same join.

mod common;

use common::{Op, local, op};
use meridian_crdt::keyspace::Moment;
use meridian_crdt::{Delta, Keyspace, ReplicaId};
use proptest::prelude::*;

/// Enough keys that both tables span several steps.
const KEY_COUNT: u8 = 24;

/// What happens in the history before the merge.
#[derive(Clone, Debug)]
enum Before {
    /// A write in region `0`, `1` or `2`.
    Write(u8, Op),
    /// Region `0` or `2` receives a random delta written so far.
    Deliver(u8, u16),
}

/// What happens while the merge runs.
#[derive(Clone, Debug)]
enum During {
    /// A write in the merging region.
    Write(Op),
    /// A step over this many slots.
    Step(u32),
}

fn before() -> impl Strategy<Value = Before> {
    prop_oneof![
        6 => (0u8..3, op(KEY_COUNT)).prop_map(|(r, op)| Before::Write(r, op)),
        4 => (prop_oneof![Just(0u8), Just(2u8)], any::<u16>()).prop_map(|(r, pick)| Before::Deliver(r, pick)),
    ]
}

fn during() -> impl Strategy<Value = During> {
    prop_oneof![
        3 => op(KEY_COUNT).prop_map(During::Write),
        2 => (1u32..9).prop_map(During::Step),
    ]
}

fn moment(time: usize) -> Moment {
    Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(1_790_000_000_000 + time as u64, 0), wall_ms: 1_000 }
}

fn copy(keyspace: &Keyspace) -> Keyspace {
    Keyspace::restore(keyspace.replica(), keyspace.context().clone(), &keyspace.snapshot()).expect("restore")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Region 0 merges region 1's whole state in steps (region 1 holds some
    /// of region 0's and region 2's writes, region 0 some of region 1's
    /// and 2's), writing between the steps. With `restarted`, region 0 lost
    /// its state first (a node without data): region 1 holds dots of region
    /// 0 that region 0 no longer knows, and its writes during the merge must
    /// not reuse them.
    #[test]
    fn a_merge_in_steps_is_the_join(
        history in proptest::collection::vec(before(), 0..80),
        events in proptest::collection::vec(during(), 0..60),
        restarted in any::<bool>(),
    ) {
        let names: Vec<Vec<u8>> = (0..KEY_COUNT).map(|k| format!("key:{k}").into_bytes()).collect();
        let keys: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut regions: Vec<Keyspace> = (1..=3).map(|r| Keyspace::new(ReplicaId(r))).collect();
        let mut log: Vec<Delta> = Vec::new();
        let mut time = 0;
        for step in &history {
            time += 1;
            match step {
                Before::Write(r, write) => {
                    let written = local(&mut regions[usize::from(*r)], write, moment(time), &keys);
                    // Region 1 (the snapshot's source) hears of every write.
                    if *r != 1 {
                        for delta in &written {
                            regions[1].apply(delta);
                        }
                    }
                    log.extend(written);
                }
                Before::Deliver(r, pick) if !log.is_empty() => {
                    regions[usize::from(*r)].apply(&log[usize::from(*pick) % log.len()]);
                }
                Before::Deliver(..) => {}
            }
        }
        let theirs = copy(&regions[1]);
        let mut merging_region = if restarted { Keyspace::new(ReplicaId(1)) } else { copy(&regions[0]) };
        let base = copy(&merging_region);

        let mut merging = merging_region.merge_begin(&theirs);
        let mut written: Vec<Delta> = Vec::new();
        let mut done = false;
        for event in &events {
            time += 1;
            match event {
                During::Write(write) => written.extend(local(&mut merging_region, write, moment(time), &keys)),
                During::Step(slots) => {
                    if !done {
                        done = merging_region.merge_step(&theirs, &mut merging, *slots);
                    }
                }
            }
        }
        let stepped = merging_region.merge_finish(&theirs, merging);
        merging_region.validate().map_err(TestCaseError::fail)?;

        // The same writes applied first, then the whole merge at once.
        let mut expected = base;
        for delta in &written {
            expected.apply(delta);
        }
        let at_once = expected.merge_snapshot(&theirs);
        prop_assert_eq!(stepped.lists_kept, at_once.lists_kept);
        prop_assert!(
            merging_region == expected,
            "stepped:\n{:?}\nat once:\n{:?}",
            merging_region,
            expected
        );
    }
}

/// A merge of many keys in small steps visits every key once: the outcome
/// counts each, and the steps end.
#[test]
fn steps_visit_every_key() {
    let mut theirs = Keyspace::new(ReplicaId(2));
    let mut ours = Keyspace::new(ReplicaId(1));
    let at = moment(1);
    for k in 0..5_000u32 {
        theirs.set(format!("k{k}").as_bytes(), b"v", meridian_crdt::keyspace::ExpiryChange::Keep, at);
    }
    let mut merging = ours.merge_begin(&theirs);
    let mut steps = 1;
    while !ours.merge_step(&theirs, &mut merging, 64) {
        steps += 1;
    }
    let outcome = ours.merge_finish(&theirs, merging);
    assert_eq!(outcome.keys_merged, 5_000);
    // Their 5,000 slots, then ours (as many, now).
    assert_eq!(steps, 10_000usize.div_ceil(64));
    let expected = Keyspace::restore(ReplicaId(1), theirs.context().clone(), &theirs.snapshot()).expect("restore");
    assert!(ours == expected);
}

/// A region that lost its state (a node without data) merges a peer's
/// snapshot holding its old writes: a write between the steps takes a
/// sequence past every dot of its own the snapshot holds, never one of
/// them again.
#[test]
fn a_write_during_the_merge_takes_a_fresh_dot() {
    let at = moment(1);
    let mut before = Keyspace::new(ReplicaId(1));
    let mut theirs = Keyspace::new(ReplicaId(2));
    for k in 0..10u32 {
        let delta = before.set(format!("k{k}").as_bytes(), b"old", meridian_crdt::keyspace::ExpiryChange::Keep, at);
        theirs.apply(&Delta::Key(delta));
    }
    let mut restarted = Keyspace::new(ReplicaId(1));
    let mut merging = restarted.merge_begin(&theirs);
    restarted.merge_step(&theirs, &mut merging, 1);
    let delta = restarted.set(b"fresh", b"new", meridian_crdt::keyspace::ExpiryChange::Keep, moment(2));
    let mut dots = Vec::new();
    delta.for_each_dot(|dot| dots.push(dot));
    assert_eq!(dots.len(), 1, "a new key's SET adds one dot and removes none");
    assert!(!theirs.context().contains(dots[0]), "{:?} was already written before the restart", dots[0]);
    restarted.merge_finish(&theirs, merging);
    restarted.validate().expect("valid");
    assert_eq!(restarted.len(), 11);
}
