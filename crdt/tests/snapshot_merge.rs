//! `Keyspace::merge_snapshot` is the state join: for any history of writes at
//! three replicas and any partial delivery of their deltas, joining the
//! replicas' whole states gives what delivering every delta gives — the full
//! sync of the WAN syncer reaches the same state as its delta stream.

mod common;

use common::{Op, local, op};
use meridian_crdt::keyspace::Moment;
use meridian_crdt::{Delta, Keyspace, ReplicaId, VersionVector};
use proptest::prelude::*;

const KEYS: [&[u8]; 3] = [b"a", b"b", b"c"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Garbage collection at different moments in different regions — a
    /// counter's increments merged in one and still one by one in another,
    /// losing values kept — changes nothing a join gives. Once every region
    /// applied every delta, each collects with its own stable vector; full
    /// syncs then give what the regions hold (compared once all are
    /// collected with the same vector, which makes equal states identical).
    #[test]
    fn joining_unevenly_collected_states_equals_delivering_every_delta(
        before in proptest::collection::vec(step(), 1..40),
        cuts in proptest::collection::vec(proptest::collection::vec(0u64..=100, 3), 3),
        forget_floors in any::<bool>(),
    ) {
        uneven_collection_converges(&before, &cuts, &[], forget_floors)?;
    }

    /// Writes after garbage collection at different moments in different
    /// regions reach every region as they would without it: after a
    /// removal written where a counter's increments were already merged,
    /// delivering every delta and full syncs agree (D96).
    #[test]
    fn writes_after_uneven_collection_converge(
        before in proptest::collection::vec(step(), 1..40),
        cuts in proptest::collection::vec(proptest::collection::vec(0u64..=100, 3), 3),
        after in proptest::collection::vec(step(), 1..30),
        forget_floors in any::<bool>(),
    ) {
        uneven_collection_converges(&before, &cuts, &after, forget_floors)?;
    }
}

/// Runs `before`, delivers everything everywhere, collects each region at
/// its cut ([`collect_at`]), runs `after`, then checks that full syncs and
/// delivering every delta give one state. With `forget_floors`, each region
/// joins as if restored from a snapshot without its lists' floors (written
/// before snapshots carried them): it learns what the senders collected
/// only from theirs.
fn uneven_collection_converges(
    before: &[Step],
    cuts: &[Vec<u64>],
    after: &[Step],
    forget_floors: bool,
) -> Result<(), TestCaseError> {
    let mut regions: Vec<Keyspace> = (1..=3).map(|r| Keyspace::new(ReplicaId(r))).collect();
    let mut log: Vec<Delta> = Vec::new();
    run(&mut regions, &mut log, before, 0);
    deliver_all(&mut regions, &log);
    collect_at(&mut regions, cuts);
    run(&mut regions, &mut log, after, before.len());
    let (mut joined, _, lists_kept) = full_syncs(&regions, forget_floors);
    prop_assert_eq!(lists_kept, 0, "a list was not joined");
    deliver_all(&mut regions, &log);
    let stable = regions[0].context().vector().clone();
    for region in regions.iter_mut().chain(joined.iter_mut()) {
        region.validate().map_err(TestCaseError::fail)?;
        region.collect(&stable, 0, usize::MAX);
    }
    for (i, region) in regions.iter().chain(&joined).enumerate() {
        prop_assert!(*region == regions[0], "region {} differs:\n{:?}\nexpected:\n{:?}", i, region, regions[0]);
    }
    Ok(())
}

/// Every region collects with its own stable vector: each replica's
/// component cut to `cuts[region][replica]` percent of what all hold (all
/// must hold everything: any vector below that is then stable).
fn collect_at(regions: &mut [Keyspace], cuts: &[Vec<u64>]) {
    let everything = regions[0].context().vector().clone();
    for (region, cut) in regions.iter_mut().zip(cuts) {
        let stable =
            VersionVector::from_entries(everything.iter().map(|(r, seq)| (r, seq * cut[usize::from(r.0) - 1] / 100)));
        region.collect(&stable, 0, usize::MAX);
    }
}

/// Runs `steps` (local writes and deliveries of random logged deltas); the
/// step index from `start` is the writes' time.
fn run(regions: &mut [Keyspace], log: &mut Vec<Delta>, steps: &[Step], start: usize) {
    for (time, step) in steps.iter().enumerate() {
        match step {
            Step::Local(r, op) => {
                let ms = 1_790_000_000_000 + (start + time) as u64;
                let at = Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(ms, 0), wall_ms: 1_000 };
                log.extend(local(&mut regions[*r as usize], op, at, &KEYS));
            }
            Step::Deliver(r, pick) if !log.is_empty() => {
                let delta = &log[*pick as usize % log.len()];
                regions[*r as usize].apply(delta);
            }
            Step::Deliver(..) => {}
        }
    }
}

fn deliver_all(regions: &mut [Keyspace], log: &[Delta]) {
    for region in regions.iter_mut() {
        for delta in log {
            region.apply(delta);
        }
    }
}

/// Full syncs: region 0 joins the others' states, then they join its.
/// Returns the joined regions, region 0's joined state, and the count of
/// lists kept rather than joined. With `forget_floors` the joining regions
/// have lost their lists' floors (the states they receive keep theirs).
fn full_syncs(regions: &[Keyspace], forget_floors: bool) -> (Vec<Keyspace>, Keyspace, usize) {
    let receiver = |keyspace: &Keyspace| if forget_floors { copy_forgetting_floors(keyspace) } else { copy(keyspace) };
    let mut joined: Vec<Keyspace> = regions.iter().map(receiver).collect();
    let mut lists_kept = 0;
    for region in &regions[1..] {
        lists_kept += joined[0].merge_snapshot(region).lists_kept;
    }
    let hub = copy(&joined[0]);
    for region in joined.iter_mut().skip(1) {
        lists_kept += region.merge_snapshot(&hub).lists_kept;
    }
    (joined, hub, lists_kept)
}

#[derive(Clone, Debug)]
enum Step {
    Local(u8, Op),
    Deliver(u8, u16),
}

fn step() -> impl Strategy<Value = Step> {
    steps_of(op(KEYS.len() as u8))
}

fn steps_of(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3, op).prop_map(|(r, op)| Step::Local(r, op)),
        2 => (0u8..3, any::<u16>()).prop_map(|(r, pick)| Step::Deliver(r, pick)),
    ]
}

fn copy(keyspace: &Keyspace) -> Keyspace {
    Keyspace::restore(keyspace.replica(), keyspace.context().clone(), &keyspace.snapshot()).expect("restore")
}

/// A copy whose lists have lost their floors.
fn copy_forgetting_floors(keyspace: &Keyspace) -> Keyspace {
    let mut keys = keyspace.snapshot();
    for list in keys.iter_mut().filter_map(|key| key.list.as_mut()) {
        list.floor = VersionVector::new();
    }
    Keyspace::restore(keyspace.replica(), keyspace.context().clone(), &keys).expect("restore")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn joining_whole_states_equals_delivering_every_delta(steps in proptest::collection::vec(step(), 1..60)) {
        let mut regions: Vec<Keyspace> = (1..=3).map(|r| Keyspace::new(ReplicaId(r))).collect();
        let mut log: Vec<Delta> = Vec::new();
        run(&mut regions, &mut log, &steps, 0);
        let (mut joined, hub, lists_kept) = full_syncs(&regions, false);
        for region in &joined {
            region.validate().map_err(TestCaseError::fail)?;
        }
        // The reference: every delta delivered everywhere.
        deliver_all(&mut regions, &log);
        prop_assert!(regions[1] == regions[0] && regions[2] == regions[0]);
        prop_assert_eq!(lists_kept, 0, "a list was not joined");
        for (i, region) in joined.iter().enumerate() {
            prop_assert!(*region == regions[0], "region {} joined:\n{:?}\nexpected:\n{:?}", i, region, regions[0]);
        }
        // Joining again changes nothing (idempotence).
        let again = copy(&joined[1]);
        joined[1].merge_snapshot(&hub);
        prop_assert!(joined[1] == again);
    }
}

/// The case that kept lists out of the uneven-collection suites: region 2
/// pushed two elements to `b`, the second after the first; the first was
/// popped in region 3 and both flushed in 2. Region 1 then collected the
/// second only, region 2 the first only (its run folded into the second's
/// `run_min`). A join that placed the second by their list alone put it
/// before the first, and the later joins found the two in different orders
/// and kept lists (D97): the other side's floor says what it collected.
#[test]
fn a_list_joined_with_one_that_collected_an_anchor_keeps_one_order() {
    use Op::*;
    use Step::*;
    let before = vec![
        Local(2, Set(1, 0)),
        Local(0, Set(0, 0)),
        Local(1, Push(1, 0, false)),
        Local(1, Push(0, 0, false)),
        Deliver(2, 17102),
        Local(2, Pop(1, false)),
        Local(1, Push(1, 0, false)),
        Local(2, Set(0, 0)),
        Local(1, Expire(0)),
        Local(1, Flush),
    ];
    let cuts = vec![vec![0, 75, 0], vec![0, 25, 67], vec![0, 0, 0]];
    for forget_floors in [false, true] {
        uneven_collection_converges(&before, &cuts, &[], forget_floors).expect("converges");
    }
}
