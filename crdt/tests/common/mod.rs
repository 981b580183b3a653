//! What the property suites share: random writes of every type to a few keys,
//! and running one on a keyspace.

#![allow(dead_code)]

use meridian_crdt::keyspace::{End, ExpiryChange, Moment};
use meridian_crdt::{Delta, Keyspace};
use proptest::prelude::*;

/// The members, fields and list items writes use.
pub const ITEMS: [&[u8]; 3] = [b"x", b"y", b"z"];

/// One write, to a key named by its index in the suite's keys.
#[derive(Clone, Debug)]
pub enum Op {
    Set(u8, u8),
    Incr(u8),
    HIncr(u8, u8),
    SAdd(u8, u8),
    SRem(u8, u8),
    HSet(u8, u8),
    HDel(u8, u8),
    Push(u8, u8, bool),
    Pop(u8, bool),
    Insert(u8, u8, u8, bool),
    LSet(u8, i8, u8),
    LRem(u8, u8),
    Del(u8),
    Expire(u8),
    Flush,
}

/// A write to one of `keys` keys.
pub fn op(keys: u8) -> impl Strategy<Value = Op> {
    prop_oneof![10 => op_on_other_types(keys), 5 => list_op(keys)]
}

/// Writes to every type but lists.
pub fn op_on_other_types(keys: u8) -> impl Strategy<Value = Op> {
    let k = 0u8..keys;
    let i = 0u8..3;
    prop_oneof![
        (k.clone(), i.clone()).prop_map(|(k, i)| Op::Set(k, i)),
        k.clone().prop_map(Op::Incr),
        (k.clone(), i.clone()).prop_map(|(k, i)| Op::HIncr(k, i)),
        (k.clone(), i.clone()).prop_map(|(k, i)| Op::SAdd(k, i)),
        (k.clone(), i.clone()).prop_map(|(k, i)| Op::SRem(k, i)),
        (k.clone(), i.clone()).prop_map(|(k, i)| Op::HSet(k, i)),
        (k.clone(), i).prop_map(|(k, i)| Op::HDel(k, i)),
        k.clone().prop_map(Op::Del),
        k.prop_map(Op::Expire),
        Just(Op::Flush),
    ]
}

/// Writes to lists.
pub fn list_op(keys: u8) -> impl Strategy<Value = Op> {
    let k = 0u8..keys;
    let i = 0u8..3;
    prop_oneof![
        (k.clone(), i.clone(), any::<bool>()).prop_map(|(k, i, front)| Op::Push(k, i, front)),
        (k.clone(), any::<bool>()).prop_map(|(k, front)| Op::Pop(k, front)),
        (k.clone(), i.clone(), i.clone(), any::<bool>()).prop_map(|(k, p, i, before)| Op::Insert(k, p, i, before)),
        (k.clone(), -3i8..3, i.clone()).prop_map(|(k, at, i)| Op::LSet(k, at, i)),
        (k, i).prop_map(|(k, i)| Op::LRem(k, i)),
    ]
}

/// Runs `op` on `keyspace` at `at`, with `keys` for the key indexes; returns
/// the deltas it made.
pub fn local(keyspace: &mut Keyspace, op: &Op, at: Moment, keys: &[&[u8]]) -> Vec<Delta> {
    let key = |k: &u8| keys[*k as usize];
    let item = |i: &u8| ITEMS[*i as usize];
    let one = |d: Option<meridian_crdt::KeyDelta>| d.map(Delta::Key).into_iter().collect::<Vec<_>>();
    match op {
        Op::Set(k, i) => vec![Delta::Key(keyspace.set(key(k), item(i), ExpiryChange::Keep, at))],
        Op::Incr(k) => keyspace.incr_by(key(k), 1, at).map(|(_, d)| vec![Delta::Key(d)]).unwrap_or_default(),
        Op::HIncr(k, i) => {
            keyspace.hincr_by(key(k), item(i), 2, at).map(|(_, d)| vec![Delta::Key(d)]).unwrap_or_default()
        }
        Op::SAdd(k, i) => keyspace.sadd(key(k), &[item(i)], at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::SRem(k, i) => keyspace.srem(key(k), &[item(i)], at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::HSet(k, i) => keyspace.hset(key(k), &[(item(i), b"v")], at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::HDel(k, i) => keyspace.hdel(key(k), &[item(i)], at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::Push(k, i, front) => {
            keyspace.push(key(k), &[item(i)], end(*front), at).map(|(_, d)| vec![Delta::Key(d)]).unwrap_or_default()
        }
        Op::Pop(k, front) => keyspace.pop(key(k), end(*front), 1, at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::Insert(k, p, i, before) => {
            keyspace.list_insert(key(k), *before, item(p), item(i), at).map(|(_, d)| one(d)).unwrap_or_default()
        }
        Op::LSet(k, index, i) => {
            keyspace.list_set(key(k), i64::from(*index), item(i), at).map(Delta::Key).into_iter().collect()
        }
        Op::LRem(k, i) => keyspace.list_remove(key(k), 0, item(i), at).map(|(_, d)| one(d)).unwrap_or_default(),
        Op::Del(k) => one(keyspace.delete(key(k), at).1),
        Op::Expire(k) => one(keyspace.set_expiry(key(k), meridian_crdt::expiry::Deadline::At(at.wall_ms + 60_000), at)),
        Op::Flush => vec![keyspace.flush()],
    }
}

pub fn end(front: bool) -> End {
    if front { End::Front } else { End::Back }
}
