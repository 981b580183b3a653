//! Memory per key and mutator/merge throughput of the keyspace.
//!
//! `cargo run --release -p meridian-crdt --example memory [keys]`
//!
//! Loads `keys` (default 1,000,000) string keys of 16 bytes with 16-byte
//! values, as one region would write them, and prints `bytes_per_key=N`:
//! the bytes held by the allocator for the keyspace divided by the keys,
//! measured by a counting global allocator that adds up `malloc_usable_size`
//! of every live block (the same accounting as Redis's `used_memory`). RSS
//! growth is printed alongside. Then it times each mutator (the local write,
//! which builds its delta and applies it) and the merge of those deltas into a
//! second region's keyspace, for SET, INCR, SADD, HSET, ZADD and LPUSH. The
//! INCR run collects garbage every 10,000 increments, as a node does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::time::Instant;

use meridian_crdt::keyspace::{ExpiryChange, Keyspace, Moment};
use meridian_crdt::{Clock, Delta, ReplicaId};

unsafe extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
/// Allocations made (calls to `alloc` and `realloc`).
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// False while writes are timed: the bookkeeping above would be timed too.
static COUNTING: AtomicBool = AtomicBool::new(true);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED.fetch_add(unsafe { malloc_usable_size(ptr.cast()) } as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_sub(unsafe { malloc_usable_size(ptr.cast()) } as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !COUNTING.load(Ordering::Relaxed) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let old = unsafe { malloc_usable_size(ptr.cast()) } as isize;
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED.fetch_add(unsafe { malloc_usable_size(new.cast()) } as isize - old, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key.copy_from_slice(format!("key:{i:012}").as_bytes());
    key
}

fn value(i: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value.copy_from_slice(format!("val:{i:012}").as_bytes());
    value
}

struct Region {
    keyspace: Keyspace,
    clock: Clock,
}

impl Region {
    fn new(id: u16) -> Region {
        Region { keyspace: Keyspace::new(ReplicaId(id)), clock: Clock::new(1_000) }
    }

    /// A moment from one clock read, as the node takes one per write.
    fn at(&self) -> Moment {
        let (hlc, wall_ms) = self.clock.now_with_wall().expect("clock");
        Moment { hlc, wall_ms }
    }
}

/// Runs one throughput measurement: (mutations/s, merges/s).
type Measure<'a> = dyn Fn() -> (f64, f64) + 'a;

/// Keys and values prepared before timing, so formatting them is not measured.
struct Names {
    keys: Vec<[u8; 16]>,
    values: Vec<[u8; 16]>,
}

impl Names {
    fn new(count: u64) -> Names {
        Names { keys: (0..count).map(key).collect(), values: (0..count).map(value).collect() }
    }
    fn key(&self, i: u64) -> &[u8; 16] {
        &self.keys[i as usize % self.keys.len()]
    }
    fn value(&self, i: u64) -> &[u8; 16] {
        &self.values[i as usize % self.values.len()]
    }
}

/// Times `ops` mutations at a fresh region, then the merge of their deltas at
/// another; returns (mutations/s, merges/s).
fn throughput(ops: u64, mut mutate: impl FnMut(&mut Region, u64) -> Delta) -> (f64, f64) {
    let mut origin = Region::new(1);
    let mut deltas = Vec::with_capacity(ops as usize);
    let start = Instant::now();
    for i in 0..ops {
        deltas.push(mutate(&mut origin, i));
    }
    let mutate_rate = ops as f64 / start.elapsed().as_secs_f64();
    let mut peer = Region::new(2);
    let start = Instant::now();
    for delta in &deltas {
        peer.keyspace.apply(delta);
    }
    let merge_rate = ops as f64 / start.elapsed().as_secs_f64();
    // Both sides collect with the same stable vector before comparing, since the
    // origin may have collected along the way (INCR).
    let stable = origin.keyspace.context().vector().clone();
    for keyspace in [&mut origin.keyspace, &mut peer.keyspace] {
        let mut cursor = 0;
        while let (next @ 1.., _) = keyspace.collect(&stable, cursor, 1_000) {
            cursor = next;
        }
    }
    assert!(peer.keyspace == origin.keyspace, "merged state differs from the origin");
    (mutate_rate, merge_rate)
}

fn main() {
    let keys: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);

    let before_bytes = ALLOCATED.load(Ordering::Relaxed);
    let before_rss = rss_bytes();
    let mut region = Region::new(1);
    for i in 0..keys {
        let at = region.at();
        region.keyspace.set(&key(i), &value(i), ExpiryChange::Clear, at);
    }
    let bytes = ALLOCATED.load(Ordering::Relaxed) - before_bytes;
    let rss = rss_bytes().saturating_sub(before_rss);
    assert_eq!(region.keyspace.len() as u64, keys);
    println!("keys={keys} key_bytes=16 value_bytes=16");
    println!("allocated_bytes={bytes} rss_growth_bytes={rss}");
    println!("bytes_per_key={}", bytes / keys as isize);
    println!("rss_bytes_per_key={}", rss / keys);
    drop(region);

    let ops = (keys / 2).max(10_000);
    let names = Names::new(ops);
    println!();
    println!("{:<8} {:>16} {:>16}", "op", "mutate ops/s", "merge ops/s");
    let rows: [(&str, &Measure); 6] = [
        ("SET", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                Delta::Key(r.keyspace.set(names.key(i % 100_000), names.value(i), ExpiryChange::Clear, at))
            })
        }),
        ("INCR", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                // A lone region's writes are causally stable one round after
                // they are applied; collecting every 10,000 increments keeps each
                // counter at a handful of elements, as the node's GC will.
                if i % 10_000 == 9_999 {
                    let stable = r.keyspace.context().vector().clone();
                    let mut cursor = 0;
                    while let (next @ 1.., _) = r.keyspace.collect(&stable, cursor, 1_000) {
                        cursor = next;
                    }
                }
                Delta::Key(r.keyspace.incr_by(names.key(i % 1_000), 1, at).expect("incr").1)
            })
        }),
        ("SADD", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                let member = names.value(i);
                Delta::Key(r.keyspace.sadd(names.key(i % 1_000), &[member], at).expect("sadd").1.expect("new member"))
            })
        }),
        ("HSET", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                let field = names.value(i % 10_000);
                Delta::Key(r.keyspace.hset(names.key(i % 1_000), &[(field, b"v")], at).expect("hset").1.expect("delta"))
            })
        }),
        ("ZADD", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                let member = names.value(i % 10_000);
                Delta::Key(
                    r.keyspace
                        .zadd(names.key(i % 1_000), &[(i as f64, member)], Default::default(), at)
                        .expect("zadd")
                        .1
                        .expect("delta"),
                )
            })
        }),
        ("LPUSH", &|| {
            throughput(ops, |r, i| {
                let at = r.at();
                let element = names.value(i);
                Delta::Key(
                    r.keyspace
                        .push(names.key(i % 1_000), &[element], meridian_crdt::keyspace::End::Front, at)
                        .expect("lpush")
                        .1,
                )
            })
        }),
    ];
    for (name, measure) in rows {
        let (mutate, merge) = measure();
        println!("{name:<8} {mutate:>16.0} {merge:>16.0}");
    }
    hot_key(ops.max(1_000_000));
}

/// Times one `write` repeated `ops` times, then counts the allocations of
/// 1,000 more: (nanoseconds per write, allocations per write). The allocator's
/// bookkeeping is off while timing (the accounting would be timed too).
fn time_writes(ops: u64, region: &mut Region, mut write: impl FnMut(&mut Region, Moment)) -> (f64, f64) {
    COUNTING.store(false, Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..ops {
        let at = region.at();
        write(region, at);
    }
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    // The counters are only meaningful as differences from here on.
    COUNTING.store(true, Ordering::Relaxed);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..1_000 {
        let at = region.at();
        write(region, at);
    }
    (ns, (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 1_000.0)
}

/// The pattern of `redis-benchmark -t ...` without `-r`: every write goes to
/// the same key (and the same member or field), as the node's side-by-side
/// benchmark drives it. The deltas are dropped, as on a node that neither
/// journals nor replicates; the clock read is included, as a node takes one
/// per write.
fn hot_key(ops: u64) {
    println!();
    println!("{:<8} {:>16} {:>16}", "hot key", "ns/write", "allocs/write");
    let member: &[u8] = b"element:__rand_int__";
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    let mut r = Region::new(1);
    rows.push((
        "SET",
        time_writes(ops, &mut r, |r, at| drop(r.keyspace.set(b"key:__rand_int__", b"xxx", ExpiryChange::Clear, at))),
    ));
    rows.push(("INCR", time_writes(ops, &mut r, |r, at| drop(r.keyspace.incr_by(b"counter:__rand_int__", 1, at)))));
    rows.push(("SADD", time_writes(ops, &mut r, |r, at| drop(r.keyspace.sadd(b"myset", &[member], at)))));
    rows.push(("HSET", time_writes(ops, &mut r, |r, at| drop(r.keyspace.hset(b"myhash", &[(member, b"xxx")], at)))));
    rows.push((
        "ZADD",
        time_writes(ops, &mut r, |r, at| drop(r.keyspace.zadd(b"myzset", &[(0.0, member)], Default::default(), at))),
    ));
    rows.push((
        "LPUSH",
        time_writes(ops, &mut r, |r, at| {
            drop(r.keyspace.push(b"mylist", &[b"xxx"], meridian_crdt::keyspace::End::Front, at))
        }),
    ));
    rows.push((
        "LPOP",
        time_writes(ops, &mut r, |r, at| drop(r.keyspace.pop(b"mylist", meridian_crdt::keyspace::End::Front, 1, at))),
    ));
    for (name, (ns, allocs)) in rows {
        println!("{name:<8} {ns:>16.1} {allocs:>16.2}");
    }
}
