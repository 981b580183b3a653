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
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use meridian_crdt::keyspace::{ExpiryChange, Keyspace, Moment};
use meridian_crdt::{Clock, Delta, ReplicaId};

unsafe extern "C" {
    fn malloc_usable_size(ptr: *mut c_void) -> usize;
}

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(unsafe { malloc_usable_size(ptr.cast()) } as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(unsafe { malloc_usable_size(ptr.cast()) } as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = unsafe { malloc_usable_size(ptr.cast()) } as isize;
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
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

    fn at(&self) -> Moment {
        Moment { hlc: self.clock.now().expect("clock"), wall_ms: self.clock.wall_ms() }
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
}
