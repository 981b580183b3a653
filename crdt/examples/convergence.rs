//! Three regions write the same keys concurrently and converge.
//!
//! `cargo run --release -p meridian-crdt --example convergence [seed]`
//!
//! Each region is an in-memory keyspace with its own clock. Every scenario
//! below has the regions write concurrently (none has seen the others'
//! writes), then delivers all deltas to all regions in a shuffled order with
//! duplicates, and prints what each region reads — the same in all three, and
//! what docs/semantics.md says it must be.

use std::time::{SystemTime, UNIX_EPOCH};

use meridian_crdt::delta::KeyDelta;
use meridian_crdt::expiry::Deadline;
use meridian_crdt::keyspace::{End, ExpiryChange, Keyspace, Moment, View, ZAddFlags};
use meridian_crdt::value::TypedValue;
use meridian_crdt::{Clock, Delta, ReplicaId, number};

const NAMES: [&str; 3] = ["us-east", "eu-west", "ap-south"];

struct Region {
    name: &'static str,
    keyspace: Keyspace,
    clock: Clock,
    outbox: Vec<Delta>,
}

impl Region {
    fn at(&self) -> Moment {
        Moment { hlc: self.clock.now().expect("clock"), wall_ms: self.clock.wall_ms() }
    }

    fn send(&mut self, delta: Option<KeyDelta>) {
        self.outbox.extend(delta.map(Delta::Key));
    }

    fn show(&self, key: &[u8]) -> String {
        let now = self.clock.wall_ms();
        match self.keyspace.view(key, now) {
            None => "(nil)".to_string(),
            Some(View::SmallString(v)) => format!("\"{}\"", v.escape_ascii()),
            Some(View::Value(TypedValue::Str(r))) => {
                format!("\"{}\"", number::render(r).map(|v| v.escape_ascii().to_string()).unwrap_or_default())
            }
            Some(View::Value(TypedValue::Set(s))) => {
                let mut m: Vec<String> = s.members().map(|m| m.escape_ascii().to_string()).collect();
                m.sort();
                format!("set {{{}}}", m.join(", "))
            }
            Some(View::Value(TypedValue::Hash(h))) => {
                let mut f: Vec<String> = h
                    .iter()
                    .map(|(f, r)| {
                        let v = number::render(r).map(|v| v.escape_ascii().to_string()).unwrap_or_default();
                        format!("{}: {v}", f.escape_ascii())
                    })
                    .collect();
                f.sort();
                format!("hash {{{}}}", f.join(", "))
            }
            Some(View::Value(TypedValue::ZSet(z))) => {
                let m: Vec<String> =
                    z.iter().map(|(m, s)| format!("{}={}", m.escape_ascii(), number::format_score(s))).collect();
                format!("zset [{}]", m.join(", "))
            }
            Some(View::Value(TypedValue::List(l))) => {
                let v: Vec<String> = l.iter().map(|v| v.escape_ascii().to_string()).collect();
                format!("list [{}]", v.join(", "))
            }
        }
    }
}

/// A tiny seeded generator for the delivery order (xorshift64*).
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
    }
}

fn exchange(regions: &mut [Region], shuffle: &mut Shuffle) {
    let all: Vec<(usize, Delta)> = regions
        .iter_mut()
        .enumerate()
        .flat_map(|(i, r)| std::mem::take(&mut r.outbox).into_iter().map(move |d| (i, d)))
        .collect();
    for (to, region) in regions.iter_mut().enumerate() {
        let mut incoming: Vec<&Delta> = all.iter().filter(|(from, _)| *from != to).map(|(_, d)| d).collect();
        // Duplicate a few, then shuffle: delivery order must not matter.
        for _ in 0..incoming.len() / 2 {
            let pick = incoming[shuffle.next(incoming.len())];
            incoming.push(pick);
        }
        for i in (1..incoming.len()).rev() {
            incoming.swap(i, shuffle.next(i + 1));
        }
        for delta in incoming {
            region.keyspace.apply(delta);
        }
    }
    for pair in regions.windows(2) {
        assert!(pair[0].keyspace == pair[1].keyspace, "regions diverged");
    }
}

fn scenario(regions: &mut [Region], shuffle: &mut Shuffle, title: &str, key: &[u8], rule: &str) {
    exchange(regions, shuffle);
    println!("{title}");
    for region in regions.iter() {
        println!("  {:<9} {} = {}", region.name, key.escape_ascii(), region.show(key));
    }
    println!("  rule: {rule}\n");
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let mut shuffle = Shuffle(seed | 1);
    let mut regions: Vec<Region> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| Region {
            name,
            keyspace: Keyspace::new(ReplicaId(i as u16 + 1)),
            clock: Clock::new(1_000),
            outbox: Vec::new(),
        })
        .collect();
    println!("Three regions, deltas delivered shuffled with duplicates (seed {seed}).\n");

    for (i, r) in regions.iter_mut().enumerate() {
        let at = r.at();
        let d = r.keyspace.set(b"greeting", format!("hello from {}", NAMES[i]).as_bytes(), ExpiryChange::Clear, at);
        r.send(Some(d));
    }
    scenario(
        &mut regions,
        &mut shuffle,
        "SET greeting in all three regions at once",
        b"greeting",
        "last writer wins by (HLC, region)",
    );

    for (i, r) in regions.iter_mut().enumerate() {
        let at = r.at();
        let (_, d) = r.keyspace.incr_by(b"visits", [7, 3, 5][i], at).expect("incr");
        r.send(Some(d));
    }
    scenario(&mut regions, &mut shuffle, "INCRBY visits 7 / 3 / 5", b"visits", "increments from all regions add up");

    let at = regions[0].at();
    let (_, d) = regions[0].keyspace.sadd(b"tags", &[b"a", b"b", b"c"], at).expect("sadd");
    regions[0].send(d);
    exchange(&mut regions, &mut shuffle);
    let at = regions[0].at();
    let (_, d) = regions[0].keyspace.srem(b"tags", &[b"a", b"c"], at).expect("srem");
    regions[0].send(d);
    let at = regions[1].at();
    let (_, d) = regions[1].keyspace.sadd(b"tags", &[b"c"], at).expect("sadd");
    regions[1].send(d);
    scenario(
        &mut regions,
        &mut shuffle,
        "{a,b,c}; SREM tags a c  while  SADD tags c",
        b"tags",
        "add wins: SREM removes only what it observed",
    );

    let at = regions[0].at();
    let (_, d) = regions[0].keyspace.zadd(b"board", &[(1.1, b"m")], ZAddFlags::default(), at).expect("zadd");
    regions[0].send(d);
    exchange(&mut regions, &mut shuffle);
    for _ in 0..2 {
        let at = regions[1].at();
        let (_, d) = regions[1].keyspace.zincr_by(b"board", b"m", 1.0, at).expect("zincrby");
        regions[1].send(d);
    }
    let at = regions[2].at();
    let (_, d) = regions[2].keyspace.zrem(b"board", &[b"m"], at).expect("zrem");
    regions[2].send(d);
    scenario(
        &mut regions,
        &mut shuffle,
        "ZADD board 1.1 m; ZINCRBY +1 twice  while  ZREM board m",
        b"board",
        "ZREM removes only the observed score; unobserved increments survive",
    );

    for (i, r) in regions.iter_mut().enumerate() {
        let at = r.at();
        let item = format!("job-{}", NAMES[i]);
        let (_, d) = r.keyspace.push(b"queue", &[item.as_bytes()], End::Back, at).expect("rpush");
        r.send(Some(d));
    }
    scenario(
        &mut regions,
        &mut shuffle,
        "RPUSH queue in all three regions",
        b"queue",
        "concurrent inserts all survive, in one agreed order",
    );

    let at = regions[0].at();
    let d = regions[0].keyspace.set(b"session", b"token", ExpiryChange::Clear, at);
    regions[0].send(Some(d));
    exchange(&mut regions, &mut shuffle);
    let wall = regions[0].clock.wall_ms();
    let at = regions[0].at();
    let d = regions[0].keyspace.set_expiry(b"session", Deadline::At(wall + 100_000), at);
    regions[0].send(d);
    let at = regions[1].at();
    let d = regions[1].keyspace.set_expiry(b"session", Deadline::At(wall + 50_000), at);
    regions[1].send(d);
    exchange(&mut regions, &mut shuffle);
    println!("EXPIRE session 100  while  EXPIRE session 50");
    for r in &regions {
        let ttl = r.keyspace.deadline(b"session", wall).flatten().map(|d| (d - wall) / 1000);
        println!("  {:<9} TTL session = {:?} s", r.name, ttl.unwrap_or(0));
    }
    println!("  rule: concurrent TTLs: the longer wins (PERSIST beats any)\n");

    let at = regions[0].at();
    let d = regions[0].keyspace.set(b"kind", b"a string", ExpiryChange::Clear, at);
    regions[0].send(Some(d));
    // A demo, not a server: sleeping makes the set's write visibly later.
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(std::time::Duration::from_millis(2));
    let at = regions[1].at();
    let (_, d) = regions[1].keyspace.sadd(b"kind", &[b"a set member"], at).expect("sadd");
    regions[1].send(d);
    scenario(
        &mut regions,
        &mut shuffle,
        "SET kind (string)  while, 2 ms later,  SADD kind (set)",
        b"kind",
        "type conflict: the later write's type wins",
    );

    println!("All three regions hold identical state after every scenario (checked after each exchange).");
}
