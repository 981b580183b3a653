//! What the hash and set commands do across regions, played at the keyspace
//! level between two regions that write concurrently and then exchange
//! deltas. Each test composes the keyspace calls a command makes (SPOP is a
//! random pick then `srem`; SMOVE is `srem` at the source then `sadd` at the
//! destination; the STORE commands are `replace_with_set`) and checks the
//! merged state against DESIGN.md §3: add wins for sets, per-field
//! update-wins and adding counters for hashes, observed-remove deletes.

use hlc_gen::source::ManualClock;
use meridian_crdt::keyspace::{Keyspace, Moment};
use meridian_crdt::{Clock, Delta, ReplicaId, number};

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
        Moment { hlc: self.clock.now().expect("clock"), wall_ms: self.clock.wall_ms() }
    }

    fn advance(&self, ms: u64) {
        self.clock.set_wall_ms(self.clock.wall_ms() + ms);
    }

    fn send(&mut self, delta: Option<meridian_crdt::delta::KeyDelta>) {
        if let Some(delta) = delta {
            self.outbox.push(Delta::Key(delta));
        }
    }

    fn sadd(&mut self, key: &str, members: &[&str]) {
        let members: Vec<&[u8]> = members.iter().map(|m| m.as_bytes()).collect();
        let (_, delta) = self.keyspace.sadd(key.as_bytes(), &members, self.at()).expect("sadd");
        self.send(delta);
    }

    fn srem(&mut self, key: &str, members: &[&str]) -> usize {
        let members: Vec<&[u8]> = members.iter().map(|m| m.as_bytes()).collect();
        let (removed, delta) = self.keyspace.srem(key.as_bytes(), &members, self.at()).expect("srem");
        self.send(delta);
        removed
    }

    /// SMOVE as the proxy runs it: removal at the source, add at the destination.
    fn smove(&mut self, source: &str, destination: &str, member: &str) -> bool {
        if self.srem(source, &[member]) == 0 {
            return false;
        }
        self.sadd(destination, &[member]);
        true
    }

    fn hset(&mut self, key: &str, field: &str, value: &str) {
        let (_, delta) =
            self.keyspace.hset(key.as_bytes(), &[(field.as_bytes(), value.as_bytes())], self.at()).expect("hset");
        self.send(delta);
    }

    fn hdel(&mut self, key: &str, field: &str) -> usize {
        let (removed, delta) = self.keyspace.hdel(key.as_bytes(), &[field.as_bytes()], self.at()).expect("hdel");
        self.send(delta);
        removed
    }

    fn hincrby(&mut self, key: &str, field: &str, by: i64) -> i64 {
        let (value, delta) = self.keyspace.hincr_by(key.as_bytes(), field.as_bytes(), by, self.at()).expect("hincrby");
        self.send(Some(delta));
        value
    }

    fn hincrbyfloat(&mut self, key: &str, field: &str, by: f64) -> String {
        let (value, delta) =
            self.keyspace.hincr_by_float(key.as_bytes(), field.as_bytes(), by, self.at()).expect("hincrbyfloat");
        self.send(Some(delta));
        String::from_utf8(value).expect("UTF-8")
    }

    fn store(&mut self, destination: &str, members: &[&str]) {
        let members: Vec<&[u8]> = members.iter().map(|m| m.as_bytes()).collect();
        let delta = self.keyspace.replace_with_set(destination.as_bytes(), &members, self.at());
        self.send(delta);
    }

    fn delete(&mut self, key: &str) {
        let (_, delta) = self.keyspace.delete(key.as_bytes(), self.at());
        self.send(delta);
    }

    fn members(&self, key: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .keyspace
            .set_value(key.as_bytes(), self.clock.wall_ms())
            .expect("a set")
            .map(|s| s.members().map(|m| String::from_utf8(m.to_vec()).expect("UTF-8")).collect())
            .unwrap_or_default();
        members.sort();
        members
    }

    fn field(&self, key: &str, field: &str) -> Option<String> {
        let hash = self.keyspace.hash_value(key.as_bytes(), self.clock.wall_ms()).expect("a hash")?;
        let register = hash.field(field.as_bytes())?;
        number::render(register).map(|v| String::from_utf8(v.into_owned()).expect("UTF-8"))
    }
}

/// Delivers every region's outbox to every other region (twice, to show
/// redelivery changes nothing), then checks that all regions hold equal,
/// valid state.
fn sync(regions: &mut [&mut Region]) {
    let outboxes: Vec<Vec<Delta>> = regions.iter_mut().map(|r| std::mem::take(&mut r.outbox)).collect();
    for (from, outbox) in outboxes.iter().enumerate() {
        for (to, region) in regions.iter_mut().enumerate() {
            if from != to {
                for delta in outbox.iter().chain(outbox) {
                    region.keyspace.apply(delta);
                }
            }
        }
    }
    for pair in regions.windows(2) {
        assert_eq!(pair[0].keyspace, pair[1].keyspace, "regions diverged");
    }
    for region in regions.iter() {
        region.keyspace.validate().expect("valid keyspace");
    }
}

#[test]
fn concurrent_smove_of_one_member_lands_in_both_destinations() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("src", &["m", "other"]);
    sync(&mut [&mut a, &mut b]);
    assert!(a.smove("src", "dst-a", "m"));
    assert!(b.smove("src", "dst-b", "m"));
    sync(&mut [&mut a, &mut b]);
    // Both removals observed the same add, so the member leaves the source;
    // each destination's add is new, so both survive: SMOVE across regions
    // can duplicate a member (it is never lost).
    assert_eq!(a.members("src"), ["other"]);
    assert_eq!(a.members("dst-a"), ["m"]);
    assert_eq!(a.members("dst-b"), ["m"]);
}

#[test]
fn concurrent_smove_and_sadd_to_the_source_keep_the_member_there() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("src", &["m"]);
    sync(&mut [&mut a, &mut b]);
    assert!(a.smove("src", "dst", "m"));
    b.sadd("src", &["m"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("src"), ["m"], "the re-add the move did not observe wins");
    assert_eq!(a.members("dst"), ["m"]);
}

#[test]
fn spop_concurrent_with_sadd_of_the_same_member_add_wins() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("s", &["m", "n"]);
    sync(&mut [&mut a, &mut b]);
    // SPOP in region 1 happens to pick m; region 2 adds m again meanwhile.
    assert_eq!(a.srem("s", &["m"]), 1);
    b.sadd("s", &["m"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), ["m", "n"]);
    // Without the concurrent add the pop sticks.
    assert_eq!(a.srem("s", &["n"]), 1);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(b.members("s"), ["m"]);
}

#[test]
fn spop_of_the_last_member_concurrent_with_sadd_keeps_the_key() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("s", &["only"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.srem("s", &["only"]), 1);
    assert!(!a.keyspace.exists(b"s", a.clock.wall_ms()), "locally the key is gone");
    b.sadd("s", &["new"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), ["new"]);
}

#[test]
fn concurrent_spops_of_the_same_member_remove_it_once() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("s", &["m", "n"]);
    sync(&mut [&mut a, &mut b]);
    // Both regions pop m: both replies carry m (at-least-once), the set loses it.
    assert_eq!(a.srem("s", &["m"]), 1);
    assert_eq!(b.srem("s", &["m"]), 1);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), ["n"]);
}

#[test]
fn hincrby_in_two_regions_adds_up() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    assert_eq!(a.hincrby("h", "visits", 7), 7);
    assert_eq!(b.hincrby("h", "visits", 3), 3);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "visits").as_deref(), Some("10"));
    assert_eq!(a.hincrby("h", "visits", -4), 6);
    assert_eq!(b.hincrby("h", "visits", 100), 110);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(b.field("h", "visits").as_deref(), Some("106"));
}

#[test]
fn hincrby_near_the_limit_in_two_regions_does_not_wrap() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hincrby("h", "n", i64::MAX - 1);
    sync(&mut [&mut a, &mut b]);
    // Each region alone stays within i64; together they pass it.
    assert_eq!(a.hincrby("h", "n", 1), i64::MAX);
    assert_eq!(b.hincrby("h", "n", 1), i64::MAX);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "n").as_deref(), Some("9223372036854775808"), "the exact sum is shown");
    let refused = a.keyspace.hincr_by(b"h", b"n", 1, a.at());
    assert_eq!(refused.map(|(v, _)| v), Err(meridian_crdt::CommandError::HashNotInteger));
}

#[test]
fn hincrbyfloat_and_hincrby_in_two_regions_add_up() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    assert_eq!(a.hincrbyfloat("h", "x", 1.5), "1.5");
    assert_eq!(b.hincrby("h", "x", 2), 2);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "x").as_deref(), Some("3.5"));
    assert_eq!(b.field("h", "x").as_deref(), Some("3.5"));
}

#[test]
fn hdel_concurrent_with_hset_keeps_the_update() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hset("h", "f", "old");
    a.hset("h", "g", "kept");
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.hdel("h", "f"), 1);
    b.hset("h", "f", "new");
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "f").as_deref(), Some("new"), "update wins over delete");
    // An HDEL with nothing concurrent removes the field everywhere.
    assert_eq!(b.hdel("h", "g"), 1);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "g"), None);
}

#[test]
fn hdel_concurrent_with_hincrby_keeps_the_unobserved_increment() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hincrby("h", "n", 5);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.hdel("h", "n"), 1);
    b.hincrby("h", "n", 3);
    sync(&mut [&mut a, &mut b]);
    // The delete removed the +5 it saw; the +3 it did not see survives.
    assert_eq!(a.field("h", "n").as_deref(), Some("3"));
}

#[test]
fn concurrent_hset_of_one_field_last_writer_wins() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hset("h", "f", "from-a");
    b.advance(5);
    b.hset("h", "f", "from-b");
    a.hset("h", "other", "x");
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "f").as_deref(), Some("from-b"), "the later HLC wins");
    assert_eq!(b.field("h", "other").as_deref(), Some("x"), "other fields merge");
}

#[test]
fn hset_concurrent_with_hincrby_keeps_the_unobserved_increment() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hincrby("h", "n", 10);
    sync(&mut [&mut a, &mut b]);
    b.advance(5);
    a.hset("h", "n", "100");
    b.hincrby("h", "n", 1);
    sync(&mut [&mut a, &mut b]);
    // The HSET observed (and reset) the +10 but not the +1.
    assert_eq!(a.field("h", "n").as_deref(), Some("101"));
}

#[test]
fn a_store_concurrent_with_sadd_to_its_destination_keeps_the_add() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("dst", &["old"]);
    sync(&mut [&mut a, &mut b]);
    // Region 1 runs SUNIONSTORE dst ... → {x, y}; region 2 adds to dst.
    a.store("dst", &["x", "y"]);
    b.sadd("dst", &["late"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("dst"), ["late", "x", "y"]);
    // An empty result deletes what it observed: only later adds survive.
    a.store("dst", &[]);
    b.sadd("dst", &["later"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(b.members("dst"), ["later"]);
}

#[test]
fn del_of_a_hash_concurrent_with_hset_keeps_only_the_new_field() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.hset("h", "f", "1");
    a.hset("h", "g", "2");
    sync(&mut [&mut a, &mut b]);
    a.delete("h");
    b.hset("h", "new", "3");
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.field("h", "new").as_deref(), Some("3"));
    assert_eq!(a.field("h", "f"), None);
    assert_eq!(a.field("h", "g"), None);
}

#[test]
fn concurrent_srem_and_sadd_of_different_members_both_apply() {
    let (mut a, mut b) = (Region::new(1), Region::new(2));
    a.sadd("s", &["a", "b"]);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.srem("s", &["a"]), 1);
    b.sadd("s", &["c"]);
    assert_eq!(b.srem("s", &["b"]), 1);
    sync(&mut [&mut a, &mut b]);
    assert_eq!(a.members("s"), ["c"]);
}
