//! A seeded simulation of regions exchanging deltas.
//!
//! Each region is a [`Keyspace`] with a manual clock. A run is a list of
//! [`Step`]s: a local operation at one region (its delta goes to a shared log),
//! a delivery of some logged delta to a region (which may be a duplicate, or
//! arrive before deltas it depends on), or a clock tick. [`Sim::finish`] then
//! delivers everything every region has not applied, in a shuffled order with
//! extra duplicates, so convergence can be asserted. Every random choice comes
//! from the steps and one seed, so a failure reproduces from its printed case.

use std::collections::BTreeMap;

use hlc_gen::source::ManualClock;
use meridian_crdt::expiry::Deadline;
use meridian_crdt::keyspace::{End, ExpiryChange, Keyspace, Moment, View, ZAddFlags};
use meridian_crdt::value::TypedValue;
use meridian_crdt::{Clock, Delta, ReplicaId, number};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Wall clock at the start of every simulation (Unix ms).
pub const T0: u64 = 1_790_000_000_000;

/// Keys the operations draw from: few, so that writes collide.
pub const KEYS: [&[u8]; 3] = [b"k0", b"k1", b"k2"];
/// Members, fields and list values the operations draw from.
pub const ITEMS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

/// One local operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// SET key item.
    Set(u8, u8),
    /// SET key item PX ms.
    SetPx(u8, u8, u16),
    /// INCRBY key by.
    IncrBy(u8, i8),
    /// INCRBYFLOAT key by/4.
    IncrByFloat(u8, i8),
    /// DEL key.
    Del(u8),
    /// PEXPIRE key ms.
    Expire(u8, u16),
    /// PERSIST key.
    Persist(u8),
    /// SADD key items.
    SAdd(u8, Vec<u8>),
    /// SREM key items.
    SRem(u8, Vec<u8>),
    /// SINTERSTORE/SUNIONSTORE/SDIFFSTORE's write: key := the set of items
    /// (deleted when there are none).
    SStore(u8, Vec<u8>),
    /// HSET key field value.
    HSet(u8, u8, u8),
    /// HDEL key field.
    HDel(u8, u8),
    /// HINCRBY key field by.
    HIncrBy(u8, u8, i8),
    /// HINCRBYFLOAT key field by/4.
    HIncrByFloat(u8, u8, i8),
    /// ZADD key score member.
    ZAdd(u8, i8, u8),
    /// ZINCRBY key by member.
    ZIncrBy(u8, i8, u8),
    /// ZREM key member.
    ZRem(u8, u8),
    /// LPUSH/RPUSH key item.
    Push(u8, bool, u8),
    /// LPOP/RPOP key.
    Pop(u8, bool),
    /// LINSERT key BEFORE|AFTER pivot item.
    LInsert(u8, bool, u8, u8),
    /// LSET key index item.
    LSet(u8, i8, u8),
    /// LREM key count item.
    LRem(u8, i8, u8),
    /// LTRIM key start stop.
    LTrim(u8, i8, i8),
    /// Active expiry at this region.
    ExpireDue,
    /// FLUSHALL.
    Flush,
}

/// One step of a simulation.
#[derive(Clone, Debug)]
pub enum Step {
    /// A local operation at a region.
    Local(u8, Op),
    /// Deliver the logged delta chosen by the number (modulo the log) to a region.
    Deliver(u8, u16),
    /// Advance a region's wall clock.
    Tick(u8, u16),
}

/// One region of the simulation.
pub struct SimRegion {
    /// The region's keyspace.
    pub keyspace: Keyspace,
    /// Its clock.
    pub clock: Clock<ManualClock>,
}

/// A simulation of several regions.
pub struct Sim {
    /// The regions.
    pub regions: Vec<SimRegion>,
    /// Every delta produced, with its origin.
    pub log: Vec<(usize, Delta)>,
    applied: Vec<Vec<bool>>,
}

fn key(k: u8) -> &'static [u8] {
    KEYS[k as usize % KEYS.len()]
}

fn item(i: u8) -> &'static [u8] {
    ITEMS[i as usize % ITEMS.len()]
}

impl Sim {
    /// `regions` regions with replica ids 1, 2, ...
    pub fn new(regions: usize) -> Sim {
        let regions = (0..regions)
            .map(|i| SimRegion { keyspace: Keyspace::new(ReplicaId(i as u16 + 1)), clock: Clock::manual(1_000, T0) })
            .collect();
        Sim { regions, log: Vec::new(), applied: Vec::new() }
    }

    /// Runs one step.
    pub fn step(&mut self, step: &Step) {
        let count = self.regions.len();
        match step {
            Step::Local(region, op) => {
                let region = *region as usize % count;
                for delta in self.local(region, op) {
                    let mut applied = vec![false; count];
                    applied[region] = true;
                    self.log.push((region, delta));
                    self.applied.push(applied);
                }
            }
            Step::Deliver(region, pick) => {
                if self.log.is_empty() {
                    return;
                }
                let region = *region as usize % count;
                let index = *pick as usize % self.log.len();
                self.regions[region].keyspace.apply(&self.log[index].1);
                self.applied[index][region] = true;
            }
            Step::Tick(region, ms) => {
                let clock = &self.regions[*region as usize % count].clock;
                clock.set_wall_ms(clock.wall_ms() + *ms as u64);
            }
        }
    }

    /// Delivers everything not yet applied anywhere, shuffled, with duplicates.
    pub fn finish(&mut self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        for region in 0..self.regions.len() {
            let mut pending: Vec<usize> = (0..self.log.len()).filter(|&i| !self.applied[i][region]).collect();
            let duplicates: Vec<usize> =
                (0..self.log.len() / 4).map(|_| rng.random_range(0..self.log.len().max(1))).collect();
            pending.extend(duplicates.into_iter().filter(|_| !self.log.is_empty()));
            pending.shuffle(&mut rng);
            for index in pending {
                self.regions[region].keyspace.apply(&self.log[index].1);
                self.applied[index][region] = true;
            }
        }
    }

    /// Runs a local operation; returns the deltas it produced (none for a
    /// no-op or a refused command).
    fn local(&mut self, region: usize, op: &Op) -> Vec<Delta> {
        let r = &mut self.regions[region];
        let at = Moment { hlc: r.clock.now().expect("clock"), wall_ms: r.clock.wall_ms() };
        let ks = &mut r.keyspace;
        let one = |d: Option<meridian_crdt::delta::KeyDelta>| d.into_iter().map(Delta::Key).collect::<Vec<_>>();
        match op {
            Op::Set(k, v) => one(Some(ks.set(key(*k), item(*v), ExpiryChange::Clear, at))),
            Op::SetPx(k, v, ms) => {
                one(Some(ks.set(key(*k), item(*v), ExpiryChange::At(at.wall_ms + 1 + *ms as u64), at)))
            }
            Op::IncrBy(k, by) => one(ks.incr_by(key(*k), *by as i64, at).ok().map(|r| r.1)),
            Op::IncrByFloat(k, by) => one(ks.incr_by_float(key(*k), *by as f64 / 4.0, at).ok().map(|r| r.1)),
            Op::Del(k) => one(ks.delete(key(*k), at).1),
            Op::Expire(k, ms) => one(ks.set_expiry(key(*k), Deadline::At(at.wall_ms + 1 + *ms as u64), at)),
            Op::Persist(k) => one(ks.set_expiry(key(*k), Deadline::Persist, at)),
            Op::SAdd(k, items) => {
                let members: Vec<&[u8]> = items.iter().map(|i| item(*i)).collect();
                one(ks.sadd(key(*k), &members, at).ok().and_then(|r| r.1))
            }
            Op::SRem(k, items) => {
                let members: Vec<&[u8]> = items.iter().map(|i| item(*i)).collect();
                one(ks.srem(key(*k), &members, at).ok().and_then(|r| r.1))
            }
            Op::SStore(k, items) => {
                let members: Vec<&[u8]> = items.iter().map(|i| item(*i)).collect();
                one(ks.replace_with_set(key(*k), &members, at))
            }
            Op::HSet(k, f, v) => one(ks.hset(key(*k), &[(item(*f), item(*v))], at).ok().and_then(|r| r.1)),
            Op::HDel(k, f) => one(ks.hdel(key(*k), &[item(*f)], at).ok().and_then(|r| r.1)),
            Op::HIncrBy(k, f, by) => one(ks.hincr_by(key(*k), item(*f), *by as i64, at).ok().map(|r| r.1)),
            Op::HIncrByFloat(k, f, by) => {
                one(ks.hincr_by_float(key(*k), item(*f), *by as f64 / 4.0, at).ok().map(|r| r.1))
            }
            Op::ZAdd(k, score, m) => {
                one(ks.zadd(key(*k), &[(*score as f64, item(*m))], ZAddFlags::default(), at).ok().and_then(|r| r.1))
            }
            Op::ZIncrBy(k, by, m) => one(ks.zincr_by(key(*k), item(*m), *by as f64, at).ok().and_then(|r| r.1)),
            Op::ZRem(k, m) => one(ks.zrem(key(*k), &[item(*m)], at).ok().and_then(|r| r.1)),
            Op::Push(k, front, v) => {
                let end = if *front { End::Front } else { End::Back };
                one(ks.push(key(*k), &[item(*v)], end, at).ok().map(|r| r.1))
            }
            Op::Pop(k, front) => {
                let end = if *front { End::Front } else { End::Back };
                one(ks.pop(key(*k), end, 1, at).ok().and_then(|r| r.1))
            }
            Op::LInsert(k, before, pivot, v) => {
                one(ks.list_insert(key(*k), *before, item(*pivot), item(*v), at).ok().and_then(|r| r.1))
            }
            Op::LSet(k, index, v) => one(ks.list_set(key(*k), *index as i64, item(*v), at).ok()),
            Op::LRem(k, count, v) => one(ks.list_remove(key(*k), *count as i64, item(*v), at).ok().and_then(|r| r.1)),
            Op::LTrim(k, start, stop) => one(ks.list_trim(key(*k), *start as i64, *stop as i64, at).ok().flatten()),
            Op::ExpireDue => ks.expire_due(at, 16).into_iter().map(Delta::Key).collect(),
            Op::Flush => vec![ks.flush()],
        }
    }

    /// What every key reads as at `now_ms`, in a comparable form.
    pub fn reads(&self, region: usize, now_ms: u64) -> BTreeMap<Vec<u8>, String> {
        let keyspace = &self.regions[region].keyspace;
        let mut reads = BTreeMap::new();
        for key in keyspace.keys(now_ms) {
            let shown = match keyspace.view(&key, now_ms) {
                None => continue,
                Some(View::SmallString(value)) => format!("string {value:?}"),
                Some(View::Value(TypedValue::Str(register))) => {
                    format!("string {:?}", number::render(register).map(|v| v.into_owned()))
                }
                Some(View::Value(TypedValue::Set(set))) => {
                    let mut members: Vec<_> = set.members().cloned().collect();
                    members.sort();
                    format!("set {members:?}")
                }
                Some(View::Value(TypedValue::Hash(hash))) => {
                    let mut fields: Vec<_> =
                        hash.iter().map(|(f, r)| (f.clone(), number::render(r).map(|v| v.into_owned()))).collect();
                    fields.sort();
                    format!("hash {fields:?}")
                }
                Some(View::Value(TypedValue::ZSet(zset))) => {
                    let members: Vec<_> = zset.iter().map(|(m, s)| (m.clone(), s.to_bits())).collect();
                    format!("zset {members:?}")
                }
                Some(View::Value(TypedValue::List(list))) => {
                    let values: Vec<_> = list.iter().cloned().collect();
                    format!("list {values:?}")
                }
            };
            let deadline = keyspace.deadline(&key, now_ms).flatten();
            reads.insert(key.to_vec(), format!("{shown} ttl={deadline:?}"));
        }
        reads
    }

    /// The latest wall clock of any region.
    pub fn latest_wall_ms(&self) -> u64 {
        self.regions.iter().map(|r| r.clock.wall_ms()).max().unwrap_or(T0)
    }
}
