//! Example tests for every conflict rule of DESIGN.md §3, including Redis
//! Enterprise's documented cases, played between two or three regions.
//!
//! Each region is a keyspace with a manual clock; `Region::outbox` holds the
//! deltas it produced, and `sync` delivers them so tests can interleave
//! concurrent writes precisely.

use hlc_gen::source::ManualClock;
use meridian_crdt::expiry::Deadline;
use meridian_crdt::keyspace::{End, ExpiryChange, Keyspace, Moment, ZAddFlags};
use meridian_crdt::{Clock, Delta, ReplicaId};

const T0: u64 = 1_790_000_000_000;

struct Region {
    keyspace: Keyspace,
    clock: Clock<ManualClock>,
    outbox: Vec<Delta>,
}

impl Region {
    fn new(id: u16) -> Region {
        Region { keyspace: Keyspace::new(ReplicaId(id)), clock: Clock::manual(1_000, T0), outbox: Vec::new() }
    }

    fn at(&self) -> Moment {
        Moment { hlc: self.clock.now().unwrap(), wall_ms: self.clock.wall_ms() }
    }

    fn advance(&self, ms: u64) {
        self.clock.set_wall_ms(self.clock.wall_ms() + ms);
    }

    fn send(&mut self, delta: impl Into<Option<meridian_crdt::delta::KeyDelta>>) {
        if let Some(delta) = delta.into() {
            self.outbox.push(Delta::Key(delta));
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.keyspace
            .get(key.as_bytes(), self.clock.wall_ms())
            .unwrap()
            .map(|v| String::from_utf8(v.into_owned()).unwrap())
    }

    fn members(&self, key: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .keyspace
            .set_value(key.as_bytes(), self.clock.wall_ms())
            .unwrap()
            .map(|s| s.members().map(|m| String::from_utf8(m.to_vec()).unwrap()).collect())
            .unwrap_or_default();
        members.sort();
        members
    }
}

/// Delivers every region's outbox to every other region, then checks that all
/// regions hold equal state.
fn sync(regions: &mut [&mut Region]) {
    let outboxes: Vec<Vec<Delta>> = regions.iter_mut().map(|r| std::mem::take(&mut r.outbox)).collect();
    for (from, outbox) in outboxes.iter().enumerate() {
        for (to, region) in regions.iter_mut().enumerate() {
            if from != to {
                for delta in outbox {
                    region.keyspace.apply(delta);
                }
            }
        }
    }
    for pair in regions.windows(2) {
        assert_eq!(pair[0].keyspace, pair[1].keyspace, "regions diverged");
    }
    for region in regions.iter() {
        region.keyspace.validate().unwrap();
    }
}

#[test]
fn strings_last_writer_wins_by_hlc_then_region() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"from-a", ExpiryChange::Clear, a.at());
    a.send(d);
    b.advance(5);
    let d = b.keyspace.set(b"k", b"from-b", ExpiryChange::Clear, b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.get("k").as_deref(), Some("from-b"));
    // Same HLC on both sides: the higher region id wins.
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"from-a", ExpiryChange::Clear, a.at());
    a.send(d);
    let d = b.keyspace.set(b"k", b"from-b", ExpiryChange::Clear, b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(b.get("k").as_deref(), Some("from-b"));
}

#[test]
fn counters_from_two_regions_add_up() {
    // Redis Enterprise's example: +7 in one region, +3 in the other, read 10.
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (value, d) = a.keyspace.incr_by(b"counter", 7, a.at()).unwrap();
    assert_eq!(value, 7);
    a.send(d);
    let (value, d) = b.keyspace.incr_by(b"counter", 3, b.at()).unwrap();
    assert_eq!(value, 3);
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.get("counter").as_deref(), Some("10"));
    assert_eq!(b.get("counter").as_deref(), Some("10"));
}

#[test]
fn a_set_concurrent_with_increments_keeps_the_ones_it_did_not_observe() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.incr_by(b"c", 10, a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    // A resets to 100 having seen +10; B concurrently adds 5.
    let d = a.keyspace.set(b"c", b"100", ExpiryChange::Clear, a.at());
    a.send(d);
    let (value, d) = b.keyspace.incr_by(b"c", 5, b.at()).unwrap();
    assert_eq!(value, 15);
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.get("c").as_deref(), Some("105"));
}

#[test]
fn concurrent_increments_widen_instead_of_overflowing() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.incr_by(b"big", i64::MAX, a.at()).unwrap();
    a.send(d);
    let (_, d) = b.keyspace.incr_by(b"big", i64::MAX, b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    let expected = (i64::MAX as i128 * 2).to_string();
    assert_eq!(a.get("big").as_deref(), Some(expected.as_str()));
    // A local INCR on a value outside i64 is refused, as Redis refuses it.
    assert!(a.keyspace.incr_by(b"big", 1, a.at()).is_err());
}

#[test]
fn srem_removes_only_observed_members() {
    // Redis Enterprise's example: {a, b, c}; SREM a c in one region while the
    // other adds c again: the result is {b, c}.
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.sadd(b"s", &[b"a", b"b", b"c"], a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let (removed, d) = a.keyspace.srem(b"s", &[b"a", b"c"], a.at()).unwrap();
    assert_eq!(removed, 2);
    a.send(d);
    let (added, d) = b.keyspace.sadd(b"s", &[b"c"], b.at()).unwrap();
    assert_eq!(added, 0, "c was already a member at B");
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), vec!["b", "c"]);
}

#[test]
fn hash_field_update_wins_over_concurrent_hdel() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.hset(b"h", &[(b"f", b"1"), (b"g", b"2")], a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let (_, d) = a.keyspace.hdel(b"h", &[b"f", b"g"], a.at()).unwrap();
    a.send(d);
    let (_, d) = b.keyspace.hset(b"h", &[(b"f", b"new")], b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    let hash = a.keyspace.hash_value(b"h", a.clock.wall_ms()).unwrap().unwrap();
    assert_eq!(hash.len(), 1);
    assert_eq!(hash.field(b"f").unwrap().winner().unwrap().value.as_slice(), b"new");
}

#[test]
fn hincrby_from_two_regions_adds_up() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.hincr_by(b"h", b"n", 4, a.at()).unwrap();
    a.send(d);
    let (_, d) = b.keyspace.hincr_by(b"h", b"n", 6, b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    let (value, d) = a.keyspace.hincr_by(b"h", b"n", 1, a.at()).unwrap();
    a.send(d);
    assert_eq!(value, 11);
    sync(&mut [&mut a, &mut b]);
}

#[test]
fn del_is_observed_remove_and_an_unobserved_write_survives() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.sadd(b"s", &[b"x"], a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let (deleted, d) = a.keyspace.delete(b"s", a.at());
    assert!(deleted);
    a.send(d);
    let (_, d) = b.keyspace.sadd(b"s", &[b"y"], b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), vec!["y"]);
    // Same for a counter: DEL concurrent with INCR keeps the unobserved INCR.
    let (_, d) = a.keyspace.incr_by(b"n", 5, a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let (_, d) = a.keyspace.delete(b"n", a.at());
    a.send(d);
    let (_, d) = b.keyspace.incr_by(b"n", 2, b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(b.get("n").as_deref(), Some("2"));
}

#[test]
fn type_conflict_resolves_to_the_later_write_and_the_loser_is_dropped_by_the_next_write() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"text", ExpiryChange::Clear, a.at());
    a.send(d);
    b.advance(10);
    let (_, d) = b.keyspace.sadd(b"k", &[b"m"], b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.value_type(b"k", a.clock.wall_ms()).unwrap().name(), "set");
    assert_eq!(a.keyspace.stats().type_conflicts, 1);
    assert_eq!(b.keyspace.stats().type_conflicts, 1);
    assert!(a.keyspace.get(b"k", a.clock.wall_ms()).is_err(), "GET on the set is WRONGTYPE");
    // The next write removes the hidden string everywhere.
    let (_, d) = a.keyspace.sadd(b"k", &[b"n"], a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.state(b"k").unwrap().values().len(), 1);
    assert_eq!(a.members("k"), vec!["m", "n"]);
}

#[test]
fn concurrent_expire_keeps_the_longer_ttl() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"v", ExpiryChange::Clear, a.at());
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let d = a.keyspace.set_expiry(b"k", Deadline::At(T0 + 100_000), a.at());
    a.send(d);
    let d = b.keyspace.set_expiry(b"k", Deadline::At(T0 + 50_000), b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.deadline(b"k", T0), Some(Some(T0 + 100_000)));
    // Past 50 s the key is alive in both regions; past 100 s it is hidden in
    // both, and only A (whose TTL won) deletes it and ships the delete.
    a.advance(60_000);
    b.advance(60_000);
    assert!(a.get("k").is_some() && b.get("k").is_some());
    a.advance(50_000);
    b.advance(50_000);
    assert_eq!((a.get("k"), b.get("k")), (None, None));
    assert!(b.keyspace.expire_due(b.at(), 100).is_empty(), "B does not own the deadline");
    let deletes = a.keyspace.expire_due(a.at(), 100);
    assert_eq!(deletes.len(), 1);
    a.outbox.extend(deletes.into_iter().map(Delta::Key));
    sync(&mut [&mut a, &mut b]);
    assert!(b.keyspace.is_empty());
}

#[test]
fn persist_beats_a_concurrent_expire_and_causal_order_comes_first() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"v", ExpiryChange::At(T0 + 10_000), a.at());
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    let d = a.keyspace.set_expiry(b"k", Deadline::Persist, a.at());
    a.send(d);
    let d = b.keyspace.set_expiry(b"k", Deadline::At(T0 + 500_000), b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.deadline(b"k", T0), Some(None));
    // In causal order, a later EXPIRE replaces the PERSIST.
    let d = b.keyspace.set_expiry(b"k", Deadline::At(T0 + 20_000), b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.deadline(b"k", T0), Some(Some(T0 + 20_000)));
}

#[test]
fn flush_removes_what_it_observed_and_keeps_concurrent_writes() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    for key in [b"x", b"y"] {
        let d = a.keyspace.set(key, b"old", ExpiryChange::Clear, a.at());
        a.send(d);
    }
    sync(&mut [&mut a, &mut b]);
    let flush = a.keyspace.flush();
    a.outbox.push(flush);
    let d = b.keyspace.set(b"z", b"new", ExpiryChange::Clear, b.at());
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.keyspace.len(), 1);
    assert_eq!(a.get("z").as_deref(), Some("new"));
}

#[test]
fn a_write_to_an_expired_key_starts_a_new_key() {
    let mut a = Region::new(1);
    let (_, d) = a.keyspace.sadd(b"s", &[b"old"], a.at()).unwrap();
    a.send(d);
    let d = a.keyspace.set_expiry(b"s", Deadline::At(T0 + 1_000), a.at());
    a.send(d);
    a.advance(2_000);
    let (added, _) = a.keyspace.sadd(b"s", &[b"new"], a.at()).unwrap();
    assert_eq!(added, 1);
    assert_eq!(a.members("s"), vec!["new"]);
    assert_eq!(a.keyspace.deadline(b"s", a.clock.wall_ms()), Some(None), "the new key has no TTL");
    a.keyspace.validate().unwrap();
}

#[test]
fn wrongtype_and_not_integer_errors_change_nothing() {
    let mut a = Region::new(1);
    let (_, _) = a.keyspace.sadd(b"s", &[b"m"], a.at()).unwrap();
    let before = a.keyspace.context().clone();
    assert_eq!(
        a.keyspace.incr_by(b"s", 1, a.at()).unwrap_err().to_string(),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    a.keyspace.set(b"t", b"abc", ExpiryChange::Clear, a.at());
    assert_eq!(
        a.keyspace.incr_by(b"t", 1, a.at()).unwrap_err().to_string(),
        "ERR value is not an integer or out of range"
    );
    let (_, _) = a.keyspace.incr_by(b"n", i64::MAX, a.at()).unwrap();
    assert_eq!(
        a.keyspace.incr_by(b"n", 1, a.at()).unwrap_err().to_string(),
        "ERR increment or decrement would overflow"
    );
    assert!(a.keyspace.context().vector().get(ReplicaId(1)) > before.vector().get(ReplicaId(1)));
    a.keyspace.validate().unwrap();
}

#[test]
fn incrbyfloat_formats_like_redis() {
    let mut a = Region::new(1);
    a.keyspace.set(b"f", b"10.50", ExpiryChange::Clear, a.at());
    let (value, _) = a.keyspace.incr_by_float(b"f", 0.1, a.at()).unwrap();
    assert_eq!(value, b"10.6");
    a.keyspace.set(b"e", b"5.0e3", ExpiryChange::Clear, a.at());
    let (value, _) = a.keyspace.incr_by_float(b"e", 200.0, a.at()).unwrap();
    assert_eq!(value, b"5200");
}

fn list(region: &Region, key: &str) -> Vec<String> {
    region
        .keyspace
        .list_value(key.as_bytes(), region.clock.wall_ms())
        .unwrap()
        .map(|l| l.iter().map(|v| String::from_utf8(v.to_vec()).unwrap()).collect())
        .unwrap_or_default()
}

fn score(region: &Region, key: &str, member: &str) -> Option<f64> {
    region.keyspace.zset_value(key.as_bytes(), region.clock.wall_ms()).unwrap().and_then(|z| z.score(member.as_bytes()))
}

#[test]
fn zincrby_concurrent_with_zrem_keeps_the_unobserved_increments() {
    // ZADD z 1.1 m synced; A: ZINCRBY z 1 m twice (reads 3.1); B: ZREM z m.
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.zadd(b"z", &[(1.1, b"m")], ZAddFlags::default(), a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    for _ in 0..2 {
        let (_, d) = a.keyspace.zincr_by(b"z", b"m", 1.0, a.at()).unwrap();
        a.send(d);
    }
    assert!((score(&a, "z", "m").unwrap() - 3.1).abs() < 1e-9);
    let (removed, d) = b.keyspace.zrem(b"z", &[b"m"], b.at()).unwrap();
    assert_eq!(removed, 1);
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(score(&a, "z", "m"), Some(2.0));
}

#[test]
fn zadd_scores_are_last_writer_wins_and_add_wins_over_zrem() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.zadd(b"z", &[(1.0, b"m")], ZAddFlags::default(), a.at()).unwrap();
    a.send(d);
    b.advance(5);
    let (_, d) = b.keyspace.zadd(b"z", &[(2.0, b"m")], ZAddFlags::default(), b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(score(&a, "z", "m"), Some(2.0));
    let (_, d) = a.keyspace.zadd(b"z", &[(1.0, b"m")], ZAddFlags::default(), a.at()).unwrap();
    a.send(d);
    let (_, d) = b.keyspace.zrem(b"z", &[b"m"], b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(score(&b, "z", "m"), Some(1.0));
}

#[test]
fn concurrent_pushes_both_survive_in_one_order() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.push(b"l", &[b"x"], End::Back, a.at()).unwrap();
    a.send(Some(d));
    let (_, d) = b.keyspace.push(b"l", &[b"y"], End::Back, b.at()).unwrap();
    b.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    let mut items = list(&a, "l");
    assert_eq!(items, list(&b, "l"));
    items.sort();
    assert_eq!(items, vec!["x", "y"]);
}

#[test]
fn concurrent_pops_may_both_return_the_same_element() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.push(b"l", &[b"a", b"b"], End::Back, a.at()).unwrap();
    a.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    let (popped_a, d) = a.keyspace.pop(b"l", End::Front, 1, a.at()).unwrap();
    a.send(d);
    let (popped_b, d) = b.keyspace.pop(b"l", End::Front, 1, b.at()).unwrap();
    b.send(d);
    assert_eq!(popped_a, popped_b, "both clients received a");
    sync(&mut [&mut a, &mut b]);
    assert_eq!(list(&a, "l"), vec!["b"], "a is removed once");
}

#[test]
fn lrem_removes_only_observed_elements() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.push(b"l", &[b"x", b"k"], End::Back, a.at()).unwrap();
    a.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    let (removed, d) = a.keyspace.list_remove(b"l", 0, b"x", a.at()).unwrap();
    assert_eq!(removed, 1);
    a.send(d);
    let (_, d) = b.keyspace.push(b"l", &[b"x"], End::Back, b.at()).unwrap();
    b.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    assert_eq!(list(&a, "l"), vec!["k", "x"]);
}

#[test]
fn a_flush_keeps_a_concurrent_push() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let (_, d) = a.keyspace.push(b"l", &[b"old"], End::Back, a.at()).unwrap();
    a.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    let flush = a.keyspace.flush();
    a.outbox.push(flush);
    let (_, d) = b.keyspace.push(b"l", &[b"x"], End::Back, b.at()).unwrap();
    b.send(Some(d));
    sync(&mut [&mut a, &mut b]);
    assert_eq!(list(&a, "l"), vec!["x"]);
}

#[test]
fn copy_recreates_every_type_with_its_ttl() {
    use meridian_crdt::keyspace::CopyOutcome;
    let mut a = Region::new(1);
    let (_, _) = a.keyspace.incr_by(b"n", 41, a.at()).unwrap();
    let (_, _) = a.keyspace.incr_by(b"n", 1, a.at()).unwrap();
    a.keyspace.sadd(b"s", &[b"x", b"y"], a.at()).unwrap();
    a.keyspace.hset(b"h", &[(b"f", b"v")], a.at()).unwrap();
    a.keyspace.zadd(b"z", &[(1.5, b"m")], ZAddFlags::default(), a.at()).unwrap();
    a.keyspace.push(b"l", &[b"p", b"q"], End::Back, a.at()).unwrap();
    a.keyspace.set_expiry(b"l", Deadline::At(T0 + 60_000), a.at());
    for key in ["n", "s", "h", "z", "l"] {
        let copy = format!("{key}-copy");
        assert!(matches!(a.keyspace.copy(key.as_bytes(), copy.as_bytes(), false, a.at()), CopyOutcome::Copied(_)));
    }
    assert_eq!(a.get("n-copy").as_deref(), Some("42"));
    assert_eq!(a.members("s-copy"), vec!["x", "y"]);
    assert_eq!(score(&a, "z-copy", "m"), Some(1.5));
    assert_eq!(list(&a, "l-copy"), vec!["p", "q"]);
    assert_eq!(a.keyspace.deadline(b"l-copy", a.clock.wall_ms()), Some(Some(T0 + 60_000)));
    let hash = a.keyspace.hash_value(b"h-copy", a.clock.wall_ms()).unwrap().unwrap();
    assert_eq!(hash.field(b"f").unwrap().winner().unwrap().value.as_slice(), b"v");
    // An existing target is kept unless replacing is asked for; a missing source copies nothing.
    assert_eq!(a.keyspace.copy(b"s", b"n-copy", false, a.at()), CopyOutcome::TargetExists);
    assert!(matches!(a.keyspace.copy(b"s", b"n-copy", true, a.at()), CopyOutcome::Copied(_)));
    assert_eq!(a.members("n-copy"), vec!["x", "y"]);
    assert_eq!(a.keyspace.copy(b"missing", b"x", true, a.at()), CopyOutcome::NoSource);
    a.keyspace.validate().unwrap();
}

#[test]
fn a_solo_keyspace_keeps_a_hot_counter_at_one_element() {
    use meridian_crdt::value::TypedValue;
    let mut a = Region::new(1);
    a.keyspace.set_solo(true);
    for _ in 0..1_000 {
        a.keyspace.incr_by(b"hot", 1, a.at()).unwrap();
    }
    a.keyspace.incr_by(b"hot", -10, a.at()).unwrap();
    assert_eq!(a.get("hot").as_deref(), Some("990"));
    let state = a.keyspace.state(b"hot").unwrap();
    let TypedValue::Str(register) = &state.values()[0] else { panic!("a string") };
    assert_eq!(register.increments().len(), 1);
    a.keyspace.validate().unwrap();
}

#[test]
fn rename_moves_what_it_observed_and_a_concurrent_write_to_the_source_survives() {
    use meridian_crdt::keyspace::CopyOutcome;
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let d = a.keyspace.set(b"k", b"v", ExpiryChange::Clear, a.at());
    a.send(d);
    let (_, d) = a.keyspace.sadd(b"s", &[b"x"], a.at()).unwrap();
    a.send(d);
    sync(&mut [&mut a, &mut b]);
    // A renames k to n and s to t; B concurrently writes the sources.
    for (src, dst) in [(&b"k"[..], &b"n"[..]), (b"s", b"t")] {
        let CopyOutcome::Copied(copied) = a.keyspace.copy(src, dst, true, a.at()) else { panic!("copied") };
        a.send(*copied);
        let (_, d) = a.keyspace.delete(src, a.at());
        a.send(d);
    }
    let d = b.keyspace.set(b"k", b"w", ExpiryChange::Clear, b.at());
    b.send(d);
    let (_, d) = b.keyspace.sadd(b"s", &[b"y"], b.at()).unwrap();
    b.send(d);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.get("n").as_deref(), Some("v"));
    assert_eq!(a.get("k").as_deref(), Some("w"));
    assert_eq!(a.members("t"), vec!["x"]);
    assert_eq!(a.members("s"), vec!["y"]);
}
