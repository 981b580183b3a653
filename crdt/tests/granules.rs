//! Regions whose databases have different shard counts converge (D102).
//!
//! Every region cuts the slot space into the same granules and writes a key
//! with the replica id of its granule, so a shard holding some granules sees
//! every dot of each replica id it holds: it reads every shard of another
//! region whose granules meet its own, applies the deltas of its granules in
//! stream order, and its context stays a plain version vector (no cloud)
//! whatever the other regions' shard counts. Full syncs join a snapshot
//! restricted to the granules both shards hold.

mod common;

use std::ops::Range;

use common::{Op, local, op};
use meridian_crdt::keyspace::Moment;
use meridian_crdt::slot::Granules;
use meridian_crdt::value::KeyState;
use meridian_crdt::{Delta, Keyspace, ReplicaId, ShortBytes, VersionVector};
use proptest::prelude::*;

/// Granules of the suite's database.
const GRANULES: u16 = 4;
/// Keys spread over every granule (checked by `the_keys_cover_every_granule`).
const KEYS: [&[u8]; 8] = [b"k0", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6", b"k7"];
/// Shards per region: one, two and three.
const SHARDS: [u16; 3] = [1, 2, 3];

fn granules() -> Granules {
    Granules::new(GRANULES).expect("granules")
}

/// One shard of one region: its keyspace, the granules it holds, the deltas
/// it originated (its outbound stream) and its cursor into every shard of
/// every other region.
struct Shard {
    keyspace: Keyspace,
    held: Range<u16>,
    log: Vec<Delta>,
    cursors: Vec<Vec<usize>>,
}

fn regions() -> Vec<Vec<Shard>> {
    SHARDS
        .iter()
        .enumerate()
        .map(|(r, &count)| {
            granules()
                .split(count)
                .expect("split")
                .into_iter()
                .map(|held| {
                    let mut keyspace = Keyspace::new(ReplicaId(r as u16 + 1));
                    keyspace.set_granules(granules());
                    let cursors = SHARDS.iter().map(|&n| vec![0; usize::from(n)]).collect();
                    Shard { keyspace, held, log: Vec::new(), cursors }
                })
                .collect()
        })
        .collect()
}

fn overlap(a: &Range<u16>, b: &Range<u16>) -> Range<u16> {
    a.start.max(b.start)..a.end.min(b.end).max(a.start.max(b.start))
}

/// What a source shard ships to a destination holding `held`: the deltas of
/// keys in `held`, and flushes with their context cut to `held`.
fn for_destination(delta: &Delta, held: &Range<u16>) -> Option<Delta> {
    match delta {
        Delta::Key(key) => held.contains(&granules().of_key(&key.key)).then(|| delta.clone()),
        Delta::Flush(context) => {
            let mut context = context.clone();
            context.retain(|r| held.contains(&granules().of_replica(r)));
            Some(Delta::Flush(context))
        }
    }
}

/// A snapshot of `source` restricted to the granules in `slice`.
fn slice_of(source: &Keyspace, slice: &Range<u16>) -> Keyspace {
    let mut context = source.context().clone();
    context.retain(|r| slice.contains(&granules().of_replica(r)));
    let keys: Vec<_> = source.snapshot().into_iter().filter(|k| slice.contains(&granules().of_key(&k.key))).collect();
    Keyspace::restore(source.replica(), context, &keys).expect("restore a slice")
}

#[derive(Clone, Debug)]
enum Step {
    /// A write in a region, on the shard holding the key (a flush on all).
    Local(u8, Op),
    /// A destination shard reads up to `n` deltas of a source shard.
    Deliver { dst: (u8, u8), src: (u8, u8), n: u8 },
    /// A destination shard takes a full sync from a source shard.
    FullSync { dst: (u8, u8), src: (u8, u8) },
}

fn step() -> impl Strategy<Value = Step> {
    let shard = || (0u8..3, any::<u8>());
    prop_oneof![
        4 => (0u8..3, op(KEYS.len() as u8)).prop_map(|(r, op)| Step::Local(r, op)),
        3 => (shard(), shard(), 1u8..6).prop_map(|(dst, src, n)| Step::Deliver { dst, src, n }),
        1 => (shard(), shard()).prop_map(|(dst, src)| Step::FullSync { dst, src }),
    ]
}

/// Resolves a (region, pick) to a shard index of that region.
fn pick(regions: &[Vec<Shard>], (region, pick): (u8, u8)) -> (usize, usize) {
    let region = usize::from(region);
    (region, usize::from(pick) % regions[region].len())
}

fn moment(time: usize) -> Moment {
    let ms = 1_790_000_000_000 + time as u64;
    Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(ms, 0), wall_ms: 1_000 }
}

fn run(regions: &mut [Vec<Shard>], steps: &[Step]) {
    for (time, step) in steps.iter().enumerate() {
        match step {
            Step::Local(r, op) => {
                let region = &mut regions[usize::from(*r)];
                let key_granule = op_key(op).map(|k| granules().of_key(KEYS[usize::from(k)]));
                for shard in region.iter_mut().filter(|s| key_granule.is_none_or(|g| s.held.contains(&g))) {
                    let deltas = local(&mut shard.keyspace, op, moment(time), &KEYS);
                    shard.log.extend(deltas);
                }
            }
            Step::Deliver { dst, src, n } => {
                let (dst, src) = (pick(regions, *dst), pick(regions, *src));
                if dst.0 != src.0 {
                    deliver(regions, dst, src, usize::from(*n));
                }
            }
            Step::FullSync { dst, src } => {
                let (dst, src) = (pick(regions, *dst), pick(regions, *src));
                if dst.0 != src.0 {
                    full_sync(regions, dst, src);
                }
            }
        }
    }
}

/// The key an op writes, or None for a flush (every shard of the region).
fn op_key(op: &Op) -> Option<u8> {
    use Op::*;
    match op {
        Set(k, _) | Incr(k) | HIncr(k, _) | SAdd(k, _) | SRem(k, _) | HSet(k, _) | HDel(k, _) => Some(*k),
        Push(k, ..) | Pop(k, _) | Insert(k, ..) | LSet(k, ..) | LRem(k, _) | Del(k) | Expire(k) => Some(*k),
        Flush => None,
    }
}

fn deliver(regions: &mut [Vec<Shard>], dst: (usize, usize), src: (usize, usize), n: usize) {
    let held = regions[dst.0][dst.1].held.clone();
    if overlap(&held, &regions[src.0][src.1].held).is_empty() {
        return;
    }
    let from = regions[dst.0][dst.1].cursors[src.0][src.1];
    let upto = (from + n).min(regions[src.0][src.1].log.len());
    let shipped: Vec<Delta> =
        regions[src.0][src.1].log[from..upto].iter().filter_map(|d| for_destination(d, &held)).collect();
    let shard = &mut regions[dst.0][dst.1];
    for delta in &shipped {
        shard.keyspace.apply(delta);
    }
    shard.cursors[src.0][src.1] = upto;
}

fn full_sync(regions: &mut [Vec<Shard>], dst: (usize, usize), src: (usize, usize)) {
    let slice = overlap(&regions[dst.0][dst.1].held, &regions[src.0][src.1].held);
    if slice.is_empty() {
        return;
    }
    let snapshot = slice_of(&regions[src.0][src.1].keyspace, &slice);
    let resume = regions[src.0][src.1].log.len();
    let shard = &mut regions[dst.0][dst.1];
    shard.keyspace.merge_snapshot(&snapshot);
    shard.cursors[src.0][src.1] = resume;
}

fn deliver_everything(regions: &mut [Vec<Shard>]) {
    let shards: Vec<(usize, usize)> =
        regions.iter().enumerate().flat_map(|(r, s)| (0..s.len()).map(move |i| (r, i))).collect();
    for &dst in &shards {
        for &src in shards.iter().filter(|s| s.0 != dst.0) {
            deliver(regions, dst, src, usize::MAX / 2);
        }
    }
}

/// A region's keys with their states, from whichever shard holds each.
fn region_entries(region: &mut [Shard], stable: &VersionVector) -> Vec<(ShortBytes, KeyState)> {
    let mut entries = Vec::new();
    for shard in region.iter_mut() {
        shard.keyspace.collect(stable, 0, usize::MAX);
        entries.extend(shard.keyspace.entries());
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Three regions of one, two and three shards, writing every type to the
    /// same keys, shipping and full-syncing in any interleaving: once every
    /// shard has read every stream it reads, the regions hold the same keys
    /// with the same states, and no shard's context has a gap.
    #[test]
    fn regions_of_different_shard_counts_converge(steps in proptest::collection::vec(step(), 1..80)) {
        let mut regions = regions();
        run(&mut regions, &steps);
        deliver_everything(&mut regions);
        let mut stable = VersionVector::new();
        for shard in regions.iter().flatten() {
            shard.keyspace.validate().map_err(TestCaseError::fail)?;
            prop_assert_eq!(shard.keyspace.context().cloud_len(), 0, "a gap in a shard's context");
            stable.join(shard.keyspace.context().vector());
        }
        let expected = region_entries(&mut regions[0], &stable);
        for (index, region) in regions.iter_mut().enumerate().skip(1) {
            let got = region_entries(region, &stable);
            prop_assert_eq!(&got, &expected, "region {} differs", index + 1);
        }
    }
}

#[test]
fn the_keys_cover_every_granule() {
    let held: std::collections::BTreeSet<u16> = KEYS.iter().map(|k| granules().of_key(k)).collect();
    assert_eq!(held.len(), usize::from(GRANULES), "the keys miss a granule: {held:?}");
}

#[test]
fn a_write_is_stamped_with_its_granules_replica_id() {
    let mut keyspace = Keyspace::new(ReplicaId(2));
    keyspace.set_granules(granules());
    for key in KEYS {
        let delta = keyspace.set(key, b"v", meridian_crdt::keyspace::ExpiryChange::Keep, moment(0));
        let mut replicas = Vec::new();
        delta.for_each_dot(|d| replicas.push(d.replica()));
        assert_eq!(replicas, vec![granules().replica(2, granules().of_key(key))]);
    }
    assert_eq!(keyspace.own_replicas().len(), usize::from(GRANULES));
}

/// A write that changes nothing gives back the dots it took (found by the
/// suite above): region 3 held a list and a hash at `k5` (a type conflict),
/// and HDEL of a missing field took a dot to clear the list, then found
/// nothing to delete. The dot was never shipped, and every peer's vector
/// stopped below it for good, the later dots piling up in the cloud.
#[test]
fn a_write_that_changes_nothing_leaves_no_hole_in_the_sequence() {
    use Op::*;
    let steps = vec![
        Step::Local(0, Push(5, 0, false)),
        Step::Local(2, HIncr(5, 0)),
        Step::Deliver { dst: (2, 2), src: (0, 0), n: 1 },
        Step::Local(2, HDel(5, 1)),
        Step::Local(2, HIncr(5, 0)),
    ];
    let mut regions = regions();
    run(&mut regions, &steps);
    deliver_everything(&mut regions);
    for shard in regions.iter().flatten() {
        assert_eq!(
            shard.keyspace.context().cloud_len(),
            0,
            "{:?}",
            shard.keyspace.context().cloud().collect::<Vec<_>>()
        );
    }
}

/// Equal HLCs still go to the higher region (docs/semantics.md): for one key
/// every region's replica id carries the same granule, so their order is
/// the regions' order.
#[test]
fn a_tie_goes_to_the_higher_region_whatever_the_granule() {
    for key in KEYS {
        let (mut one, mut two) = (Keyspace::new(ReplicaId(1)), Keyspace::new(ReplicaId(2)));
        one.set_granules(granules());
        two.set_granules(granules());
        let a = one.set(key, b"a", meridian_crdt::keyspace::ExpiryChange::Keep, moment(10));
        let b = two.set(key, b"b", meridian_crdt::keyspace::ExpiryChange::Keep, moment(10));
        one.apply(&Delta::Key(b));
        two.apply(&Delta::Key(a));
        for region in [&one, &two] {
            assert_eq!(region.get(key, 1_000).unwrap().map(|v| v.to_vec()), Some(b"b".to_vec()), "{key:?}");
        }
    }
}
