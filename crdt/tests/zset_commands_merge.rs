//! Two-region merge tests for the sorted-set write paths the command layer
//! adds on top of ZADD/ZINCRBY/ZREM: removal by range
//! ([`Keyspace::zrem_range`], ZREMRANGEBYRANK/SCORE/LEX), the store commands'
//! replace-the-destination write ([`Keyspace::zstore`], ZUNIONSTORE and
//! friends) and pops racing with adds.
//!
//! Each region is a keyspace with a manual clock; writes are made locally,
//! their deltas collected in an outbox, and `sync` delivers every outbox to
//! the other region and to an observer that receives everything in reverse
//! order and twice, then checks that all three hold equal, valid state. The
//! rule every test illustrates is observed-remove: a range removal or a store
//! removes exactly what its region had seen, so a concurrent add survives.

use hlc_gen::source::ManualClock;
use meridian_crdt::keyspace::{ExpiryChange, Keyspace, Moment, ZAddFlags, ZRemoveRange};
use meridian_crdt::zset::{LexBound, ScoreBound};
use meridian_crdt::{Clock, Delta, KeyDelta, ReplicaId};

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

    fn send(&mut self, delta: Option<KeyDelta>) {
        if let Some(delta) = delta {
            self.outbox.push(Delta::Key(delta));
        }
    }

    fn zadd(&mut self, key: &str, items: &[(f64, &str)]) {
        let items: Vec<(f64, &[u8])> = items.iter().map(|(s, m)| (*s, m.as_bytes())).collect();
        let at = self.at();
        let (_, delta) = self.keyspace.zadd(key.as_bytes(), &items, ZAddFlags::default(), at).unwrap();
        self.send(delta);
    }

    fn zrem_range(&mut self, key: &str, range: ZRemoveRange<'_>) -> usize {
        let at = self.at();
        let (removed, delta) = self.keyspace.zrem_range(key.as_bytes(), range, at).unwrap();
        self.send(delta);
        removed
    }

    /// ZUNIONSTORE-like: reads `sources` here and stores their union (sum of
    /// scores) at `dst`.
    fn union_store(&mut self, dst: &str, sources: &[&str]) -> usize {
        let mut union: Vec<(Vec<u8>, f64)> = Vec::new();
        for source in sources {
            for (member, score) in self.members(source) {
                match union.iter_mut().find(|(m, _)| *m == member.as_bytes()) {
                    Some(entry) => entry.1 += score,
                    None => union.push((member.into_bytes(), score)),
                }
            }
        }
        let items: Vec<(f64, &[u8])> = union.iter().map(|(m, s)| (*s, m.as_slice())).collect();
        let at = self.at();
        let (len, delta) = self.keyspace.zstore(dst.as_bytes(), &items, at).unwrap();
        self.send(delta);
        len
    }

    /// The sorted set at `key` in Redis order.
    fn members(&self, key: &str) -> Vec<(String, f64)> {
        self.keyspace
            .zset_value(key.as_bytes(), self.clock.wall_ms())
            .unwrap()
            .map(|z| z.iter().map(|(m, s)| (String::from_utf8(m.to_vec()).unwrap(), s)).collect())
            .unwrap_or_default()
    }
}

/// Delivers each region's outbox to the other, and everything (reversed,
/// twice) to a fresh observer; asserts all three converged.
fn sync(a: &mut Region, b: &mut Region) {
    let from_a = std::mem::take(&mut a.outbox);
    let from_b = std::mem::take(&mut b.outbox);
    for delta in &from_a {
        b.keyspace.apply(delta);
    }
    for delta in &from_b {
        a.keyspace.apply(delta);
    }
    assert_eq!(a.keyspace, b.keyspace, "regions diverged");
    a.keyspace.validate().unwrap();
    b.keyspace.validate().unwrap();
}

/// Checks that the whole history, delivered to a third replica in reverse
/// order and with duplicates, gives the same state (the merge does not
/// depend on delivery order).
fn replay_reversed(history: &[Delta], expected: &Keyspace) {
    let mut observer = Keyspace::new(ReplicaId(9));
    for delta in history.iter().rev().chain(history.iter()) {
        observer.apply(delta);
    }
    observer.validate().unwrap();
    let mut in_order = Keyspace::new(ReplicaId(9));
    for delta in history {
        in_order.apply(delta);
    }
    assert_eq!(observer, in_order, "delivery order changed the merge");
    // The observer sees what the regions see (compare visible contents: the
    // observer's own replica id differs, so whole keyspaces differ).
    let entries = |k: &Keyspace| -> Vec<_> {
        let mut entries = k.entries();
        entries.sort_by(|x, y| x.0.cmp(&y.0));
        entries
    };
    assert_eq!(entries(&observer), entries(expected));
}

/// Runs `scenario` on two regions while recording every delta shipped.
fn recorded(
    scenario: impl FnOnce(&mut Region, &mut Region, &mut dyn FnMut(&mut Region, &mut Region)),
) -> (Region, Region) {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    let mut history: Vec<Delta> = Vec::new();
    let mut step = |a: &mut Region, b: &mut Region| {
        history.extend(a.outbox.iter().cloned());
        history.extend(b.outbox.iter().cloned());
        sync(a, b);
    };
    scenario(&mut a, &mut b, &mut step);
    replay_reversed(&history, &a.keyspace);
    (a, b)
}

#[test]
fn zremrangebyscore_concurrent_with_zadd_of_a_new_member_keeps_the_new_member() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("z", &[(1.0, "a"), (2.0, "b"), (3.0, "c"), (10.0, "keep")]);
        sync(a, b);
        // A: ZREMRANGEBYSCORE z 0 5  ∥  B: ZADD z 2.5 new (inside the range).
        assert_eq!(a.zrem_range("z", ZRemoveRange::Score(ScoreBound::inclusive(0.0), ScoreBound::inclusive(5.0))), 3);
        b.zadd("z", &[(2.5, "new")]);
        sync(a, b);
    });
    assert_eq!(a.members("z"), vec![("new".to_string(), 2.5), ("keep".to_string(), 10.0)]);
}

#[test]
fn zremrangebyscore_concurrent_with_a_re_add_keeps_the_re_added_member() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("z", &[(1.0, "a"), (2.0, "b")]);
        sync(a, b);
        // A removes both; B re-adds b with a new score at the same time.
        a.zrem_range("z", ZRemoveRange::Score(ScoreBound::NEG_INF, ScoreBound::POS_INF));
        b.advance(1);
        b.zadd("z", &[(7.0, "b")]);
        sync(a, b);
    });
    assert_eq!(a.members("z"), vec![("b".to_string(), 7.0)], "add wins over the range removal");
}

#[test]
fn zremrangebyrank_concurrent_with_zincrby_keeps_the_unobserved_increment() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("z", &[(5.0, "m"), (6.0, "n")]);
        sync(a, b);
        assert_eq!(a.zrem_range("z", ZRemoveRange::Rank(0, -1)), 2);
        let at = b.at();
        let (score, delta) = b.keyspace.zincr_by(b"z", b"m", 1.0, at).unwrap();
        assert_eq!(score, 6.0);
        b.send(delta);
        sync(a, b);
    });
    // The removal took m's ZADD entry; the increment it never saw survives,
    // and with it the member (Redis Enterprise's documented behaviour).
    assert_eq!(a.members("z"), vec![("m".to_string(), 1.0)]);
}

#[test]
fn zremrangebylex_concurrent_with_zadd_in_the_range_keeps_the_new_member() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("l", &[(0.0, "a"), (0.0, "b"), (0.0, "c"), (0.0, "d")]);
        sync(a, b);
        let removed = a.zrem_range("l", ZRemoveRange::Lex(LexBound::Inclusive(b"b"), LexBound::Inclusive(b"d")));
        assert_eq!(removed, 3);
        b.zadd("l", &[(0.0, "bb")]);
        sync(a, b);
    });
    assert_eq!(a.members("l"), vec![("a".to_string(), 0.0), ("bb".to_string(), 0.0)]);
}

#[test]
fn removing_every_member_concurrently_with_an_add_leaves_the_key() {
    let (a, b) = recorded(|a, b, sync| {
        a.zadd("z", &[(1.0, "a")]);
        sync(a, b);
        a.zrem_range("z", ZRemoveRange::Rank(0, -1));
        assert!(!a.keyspace.exists(b"z", a.clock.wall_ms()), "locally the key is gone");
        b.zadd("z", &[(2.0, "b")]);
        sync(a, b);
    });
    assert_eq!(a.members("z"), vec![("b".to_string(), 2.0)]);
    assert!(b.keyspace.exists(b"z", b.clock.wall_ms()));
}

#[test]
fn zunionstore_concurrent_with_zadd_on_the_destination_keeps_the_unobserved_member() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("s1", &[(1.0, "x"), (2.0, "y")]);
        a.zadd("s2", &[(10.0, "y"), (20.0, "z")]);
        a.zadd("d", &[(100.0, "old")]);
        sync(a, b);
        // A: ZUNIONSTORE d 2 s1 s2  ∥  B: ZADD d 5 new.
        assert_eq!(a.union_store("d", &["s1", "s2"]), 3);
        b.zadd("d", &[(5.0, "new")]);
        sync(a, b);
    });
    assert_eq!(
        a.members("d"),
        vec![("x".to_string(), 1.0), ("new".to_string(), 5.0), ("y".to_string(), 12.0), ("z".to_string(), 20.0)],
        "the store replaced what it saw (old) and kept B's concurrent member"
    );
}

#[test]
fn zunionstore_and_a_concurrent_zadd_of_a_stored_member_resolve_by_last_writer() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("src", &[(1.0, "x")]);
        sync(a, b);
        a.union_store("d", &["src"]);
        // B writes x at d later (greater HLC): its score wins the register.
        b.advance(10);
        b.zadd("d", &[(9.0, "x")]);
        sync(a, b);
    });
    assert_eq!(a.members("d"), vec![("x".to_string(), 9.0)]);
}

#[test]
fn an_empty_store_deletes_only_what_it_observed() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("d", &[(1.0, "seen")]);
        sync(a, b);
        // A: ZINTERSTORE d 1 missing (empty: deletes d)  ∥  B: ZADD d 2 fresh.
        let at = a.at();
        let (len, delta) = a.keyspace.zstore(b"d", &[], at).unwrap();
        assert_eq!(len, 0);
        a.send(delta);
        b.zadd("d", &[(2.0, "fresh")]);
        sync(a, b);
    });
    assert_eq!(a.members("d"), vec![("fresh".to_string(), 2.0)]);
}

#[test]
fn a_store_concurrent_with_del_of_the_destination_survives() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("src", &[(1.0, "x")]);
        a.zadd("d", &[(5.0, "old")]);
        sync(a, b);
        a.union_store("d", &["src"]);
        let at = b.at();
        let (deleted, delta) = b.keyspace.delete(b"d", at);
        assert!(deleted);
        b.send(delta);
        sync(a, b);
    });
    assert_eq!(a.members("d"), vec![("x".to_string(), 1.0)], "the DEL removed only what B had seen");
}

#[test]
fn a_store_over_a_string_replaces_it_in_every_region() {
    let (a, b) = recorded(|a, b, sync| {
        let at = a.at();
        let delta = a.keyspace.set(b"d", b"text", ExpiryChange::At(T0 + 60_000), at);
        a.send(Some(delta));
        a.zadd("src", &[(3.0, "m")]);
        sync(a, b);
        b.union_store("d", &["src"]);
        sync(a, b);
    });
    assert_eq!(a.members("d"), vec![("m".to_string(), 3.0)]);
    assert_eq!(b.keyspace.deadline(b"d", b.clock.wall_ms()), Some(None), "the TTL went with the string");
}

#[test]
fn concurrent_pops_and_adds_converge() {
    let (a, _) = recorded(|a, b, sync| {
        a.zadd("z", &[(1.0, "a"), (2.0, "b"), (3.0, "c")]);
        sync(a, b);
        // A: ZPOPMIN z  ∥  B: ZPOPMIN z and ZADD z 0 low.
        let at = a.at();
        let (popped, delta) = a.keyspace.zpop(b"z", false, 1, at).unwrap();
        assert_eq!(popped[0].0.as_slice(), b"a");
        a.send(delta);
        let at = b.at();
        let (popped, delta) = b.keyspace.zpop(b"z", false, 1, at).unwrap();
        assert_eq!(popped[0].0.as_slice(), b"a", "both regions may pop the same member");
        b.send(delta);
        b.zadd("z", &[(0.0, "low")]);
        sync(a, b);
    });
    assert_eq!(a.members("z"), vec![("low".to_string(), 0.0), ("b".to_string(), 2.0), ("c".to_string(), 3.0)]);
}
