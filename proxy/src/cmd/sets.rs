//! Set commands: SADD and friends, random picks (SPOP, SRANDMEMBER), SMOVE,
//! the algebra (SINTER, SUNION, SDIFF, their STORE forms, SINTERCARD), SSCAN.
//!
//! A set is an add-wins [`OrSet`]: SREM, SPOP and the source side of SMOVE
//! remove only the members they observed, so a concurrent SADD of the same
//! member in another region survives. The STORE commands replace their
//! destination in one delta ([`Keyspace::replace_with_set`]) and delete it
//! when the result is empty, as Redis does. Replies and errors are Redis 7's,
//! checked in Redis's order; under RESP3 the commands that reply a set in
//! Redis (SMEMBERS, SINTER, SUNION, SDIFF, SPOP with a count) reply `~`.
//! SSCAN's cursor is described in [`super::scan`]; random picks in
//! [`super::random`].

use meridian_crdt::keyspace::Keyspace;
use meridian_crdt::set::OrSet;
use meridian_crdt::short_bytes::ShortBytes;
use meridian_crdt::{CommandError, Moment};
use rand::Rng;

use super::docs::{Arg, Doc, KEYS, O1, arg, doc, key};
use super::random::{self, parse_count};
use super::scan::{self, ScanOptions, Window};
use super::{CommandSpec, SYNTAX_ERROR, parse_int};
use crate::context::Context;

/// The set commands, with Redis 7.2's arity, flags and key positions.
pub fn commands() -> Vec<CommandSpec> {
    const WF: &[&str] = &["write", "denyoom", "fast"];
    const RF: &[&str] = &["readonly", "fast"];
    const R: &[&str] = &["readonly"];
    const W: &[&str] = &["write", "denyoom"];
    const KEY: (i32, i32, i32) = (1, 1, 1);
    const ALL: (i32, i32, i32) = (1, -1, 1);
    vec![
        CommandSpec::new("sadd", -3, WF, KEY, sadd),
        CommandSpec::new("scard", 2, RF, KEY, scard),
        CommandSpec::new("sdiff", -2, R, ALL, sdiff),
        CommandSpec::new("sdiffstore", -3, W, ALL, sdiffstore),
        CommandSpec::new("sinter", -2, R, ALL, sinter),
        CommandSpec::new("sintercard", -3, &["readonly", "movablekeys"], (0, 0, 0), sintercard)
            .with_movable_keys(|args| super::numkeys_at(args, 1)),
        CommandSpec::new("sinterstore", -3, W, ALL, sinterstore),
        CommandSpec::new("sismember", 3, RF, KEY, sismember),
        CommandSpec::new("smembers", 2, R, KEY, smembers),
        CommandSpec::new("smismember", -3, RF, KEY, smismember),
        CommandSpec::new("smove", 4, &["write", "fast"], (1, 2, 1), smove),
        CommandSpec::new("spop", -2, &["write", "fast"], KEY, spop),
        CommandSpec::new("srandmember", -2, R, KEY, srandmember),
        CommandSpec::new("srem", -3, &["write", "fast"], KEY, srem),
        CommandSpec::new("sscan", -3, R, KEY, sscan),
        CommandSpec::new("sunion", -2, R, ALL, sunion),
        CommandSpec::new("sunionstore", -3, W, ALL, sunionstore),
    ]
}

fn reply_error(ctx: &mut Context<'_, '_>, error: CommandError) {
    ctx.reply.error(&error.to_string());
}

/// Runs a write on the shard's keyspace with a fresh timestamp.
fn write<R>(
    ctx: &Context<'_, '_>,
    work: impl FnOnce(&mut Keyspace, Moment) -> Result<R, CommandError>,
) -> Result<R, CommandError> {
    let mut shard = ctx.server.shard();
    let at = ctx.moment(&mut shard)?;
    work(shard.keyspace_mut(), at)
}

fn sadd(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let members = &args[1..];
    match write(ctx, |keyspace, at| keyspace.sadd(args[0], members, at)) {
        Ok((added, _)) => ctx.reply.integer(added as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn srem(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let members = &args[1..];
    match write(ctx, |keyspace, at| keyspace.srem(args[0], members, at)) {
        Ok((removed, _)) => ctx.reply.integer(removed as i64),
        Err(e) => reply_error(ctx, e),
    }
}

/// Replies the members as a set (RESP3 `~`).
fn reply_members<'m>(ctx: &mut Context<'_, '_>, members: impl ExactSizeIterator<Item = &'m ShortBytes>) {
    ctx.reply.set(members.len());
    for member in members {
        ctx.reply.bulk(member);
    }
}

fn smembers(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().set_value(args[0], now) {
        Ok(None) => ctx.reply.set(0),
        Ok(Some(set)) => {
            ctx.reply.set(set.len());
            for member in set.members() {
                ctx.reply.bulk(member);
            }
        }
        Err(e) => reply_error(ctx, e),
    }
}

fn sismember(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().set_value(args[0], now) {
        Ok(set) => ctx.reply.integer(i64::from(set.is_some_and(|s| s.contains(args[1])))),
        Err(e) => reply_error(ctx, e),
    }
}

fn smismember(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().set_value(args[0], now) {
        Ok(set) => {
            ctx.reply.array(args.len() - 1);
            for member in &args[1..] {
                ctx.reply.integer(i64::from(set.is_some_and(|s| s.contains(member))));
            }
        }
        Err(e) => reply_error(ctx, e),
    }
}

fn scard(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().set_value(args[0], now) {
        Ok(set) => ctx.reply.integer(set.map_or(0, |s| s.len()) as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn spop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let count = match args {
        [_] => None,
        [_, count] => match parse_int(count) {
            Ok(count) if count >= 0 => Some(count),
            _ => return ctx.reply.error("ERR value is out of range, must be positive"),
        },
        _ => return ctx.reply.error(SYNTAX_ERROR),
    };
    let mut rng = super::rng();
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let set = match shard.keyspace().set_value(args[0], now) {
        Ok(Some(set)) => set,
        Ok(None) => {
            drop(shard);
            return if count.is_some() { ctx.reply.set(0) } else { ctx.reply.null() };
        }
        Err(e) => {
            drop(shard);
            return reply_error(ctx, e);
        }
    };
    let picked: Vec<ShortBytes> = match count {
        None => {
            let index = rng.random_range(0..set.len().max(1));
            set.members().nth(index).cloned().into_iter().collect()
        }
        Some(count) => match random::indices(set.len(), count, &mut rng) {
            Ok(indices) => random::resolve(set.members(), &indices).into_iter().cloned().collect(),
            Err(e) => {
                drop(shard);
                return ctx.reply.error(e);
            }
        },
    };
    if !picked.is_empty() {
        let members: Vec<&[u8]> = picked.iter().map(|m| m.as_slice()).collect();
        let result = ctx
            .moment(&mut shard)
            .map_err(CommandError::from)
            .and_then(|at| shard.keyspace_mut().srem(args[0], &members, at));
        if let Err(e) = result {
            drop(shard);
            return reply_error(ctx, e);
        }
    }
    drop(shard);
    match count {
        None => ctx.reply.bulk_or_null(picked.first().map(|m| m.as_slice())),
        Some(_) => reply_members(ctx, picked.iter()),
    }
}

fn srandmember(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let count = match args {
        [_] => None,
        [_, count] => match parse_count(count) {
            Ok(count) => Some(count),
            Err(e) => return ctx.reply.error(&e),
        },
        _ => return ctx.reply.error(SYNTAX_ERROR),
    };
    let mut rng = super::rng();
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let set = match shard.keyspace().set_value(args[0], now) {
        Ok(Some(set)) => set,
        Ok(None) => return if count.is_some() { ctx.reply.array(0) } else { ctx.reply.null() },
        Err(e) => return reply_error(ctx, e),
    };
    let Some(count) = count else {
        let index = rng.random_range(0..set.len().max(1));
        return ctx.reply.bulk_or_null(set.members().nth(index).map(|m| m.as_slice()));
    };
    match random::indices(set.len(), count, &mut rng) {
        Ok(indices) => {
            // Redis 7 replies an array here in every case (repeats included).
            let picked = random::resolve(set.members(), &indices);
            ctx.reply.array(picked.len());
            for member in picked {
                ctx.reply.bulk(member);
            }
        }
        Err(e) => ctx.reply.error(e),
    }
}

fn smove(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (source, destination, member) = (&args[0], &args[1], &args[2]);
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let keyspace = shard.keyspace();
    // Redis's order: a missing source answers 0 before any type check.
    let present = match keyspace.set_value(source, now) {
        Ok(None) => {
            drop(shard);
            return ctx.reply.integer(0);
        }
        Ok(Some(set)) => set.contains(member),
        Err(e) => {
            drop(shard);
            return reply_error(ctx, e);
        }
    };
    if let Err(e) = keyspace.set_value(destination, now) {
        drop(shard);
        return reply_error(ctx, e);
    }
    if source == destination || !present {
        drop(shard);
        return ctx.reply.integer(i64::from(present));
    }
    // Two deltas: the removal from the source (of the tags observed, so a
    // concurrent SADD there survives) and a fresh add at the destination.
    let moved = (|| -> Result<(), CommandError> {
        let at = ctx.moment(&mut shard)?;
        shard.keyspace_mut().srem(source, &[member], at)?;
        let at = ctx.moment(&mut shard)?;
        shard.keyspace_mut().sadd(destination, &[member], at)?;
        Ok(())
    })();
    drop(shard);
    match moved {
        Ok(()) => ctx.reply.integer(1),
        Err(e) => reply_error(ctx, e),
    }
}

// ----- the algebra -----

/// The sets at `keys` (None for a missing key). Every key is checked: one of
/// another type is WRONGTYPE even after a missing one, as in Redis.
fn sets_at<'k>(keyspace: &'k Keyspace, keys: &[&[u8]], now: u64) -> Result<Vec<Option<&'k OrSet>>, CommandError> {
    keys.iter().map(|key| keyspace.set_value(key, now)).collect()
}

/// The members in every set, up to `limit` of them (0: no limit). Walks the
/// smallest set and probes the others.
fn intersection<'k>(sets: &[Option<&'k OrSet>], limit: usize) -> Vec<&'k ShortBytes> {
    let Some(mut sets) = sets.iter().copied().collect::<Option<Vec<&OrSet>>>() else {
        return Vec::new();
    };
    sets.sort_by_key(|s| s.len());
    let Some((smallest, others)) = sets.split_first() else {
        return Vec::new();
    };
    let found = smallest.members().filter(|m| others.iter().all(|s| s.contains(m)));
    if limit == 0 { found.collect() } else { found.take(limit).collect() }
}

/// The members in any set, each once.
fn union<'k>(sets: &[Option<&'k OrSet>]) -> Vec<&'k ShortBytes> {
    let total: usize = sets.iter().flatten().map(|s| s.len()).sum();
    let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::with_capacity(total);
    let mut members = Vec::with_capacity(total);
    for member in sets.iter().flatten().flat_map(|s| s.members()) {
        if seen.insert(member.as_slice()) {
            members.push(member);
        }
    }
    members
}

/// The members of the first set in none of the others.
fn difference<'k>(sets: &[Option<&'k OrSet>]) -> Vec<&'k ShortBytes> {
    let Some((Some(first), others)) = sets.split_first() else {
        return Vec::new();
    };
    first.members().filter(|m| others.iter().flatten().all(|s| !s.contains(m))).collect()
}

/// Which set operation.
#[derive(Clone, Copy)]
enum Operation {
    Inter,
    Union,
    Diff,
}

fn compute<'k>(operation: Operation, sets: &[Option<&'k OrSet>]) -> Vec<&'k ShortBytes> {
    match operation {
        Operation::Inter => intersection(sets, 0),
        Operation::Union => union(sets),
        Operation::Diff => difference(sets),
    }
}

/// SINTER, SUNION, SDIFF: the result as a set reply.
fn algebra(ctx: &mut Context<'_, '_>, keys: &[&[u8]], operation: Operation) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match sets_at(shard.keyspace(), keys, now) {
        Ok(sets) => {
            let members = compute(operation, &sets);
            reply_members(ctx, members.into_iter());
        }
        Err(e) => reply_error(ctx, e),
    }
}

/// SINTERSTORE, SUNIONSTORE, SDIFFSTORE: replaces the destination with the
/// result (deleting it when empty) and replies the result's size. The
/// destination's old type does not matter, as in Redis.
fn algebra_store(ctx: &mut Context<'_, '_>, args: &[&[u8]], operation: Operation) {
    let (destination, keys) = (&args[0], &args[1..]);
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let result: Result<Vec<ShortBytes>, CommandError> =
        sets_at(shard.keyspace(), keys, now).map(|sets| compute(operation, &sets).into_iter().cloned().collect());
    let stored = result.and_then(|members| {
        let slices: Vec<&[u8]> = members.iter().map(|m| m.as_slice()).collect();
        let at = ctx.moment(&mut shard)?;
        shard.keyspace_mut().replace_with_set(destination, &slices, at);
        Ok(members.len())
    });
    drop(shard);
    match stored {
        Ok(len) => ctx.reply.integer(len as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn sinter(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, Operation::Inter);
}

fn sunion(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, Operation::Union);
}

fn sdiff(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, Operation::Diff);
}

fn sinterstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra_store(ctx, args, Operation::Inter);
}

fn sunionstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra_store(ctx, args, Operation::Union);
}

fn sdiffstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra_store(ctx, args, Operation::Diff);
}

fn sintercard(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let numkeys = match parse_int(args[0]) {
        Ok(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => return ctx.reply.error("ERR numkeys should be greater than 0"),
    };
    if numkeys > args.len() - 1 {
        return ctx.reply.error("ERR Number of keys can't be greater than number of args");
    }
    let (keys, options) = args[1..].split_at(numkeys);
    let mut limit = 0usize;
    let mut i = 0;
    while i < options.len() {
        match options.get(i + 1) {
            Some(value) if options[i].eq_ignore_ascii_case(b"LIMIT") => match parse_int(value) {
                Ok(n) if n >= 0 => limit = usize::try_from(n).unwrap_or(usize::MAX),
                _ => return ctx.reply.error("ERR LIMIT can't be negative"),
            },
            _ => return ctx.reply.error(SYNTAX_ERROR),
        }
        i += 2;
    }
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match sets_at(shard.keyspace(), keys, now) {
        Ok(sets) => ctx.reply.integer(intersection(&sets, limit).len() as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn sscan(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let cursor = match scan::parse_cursor(args[1]) {
        Ok(cursor) => cursor,
        Err(e) => return ctx.reply.error(e),
    };
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    // As in Redis: a missing key answers an empty scan before the options
    // are read, and WRONGTYPE comes before them too.
    let set = match shard.keyspace().set_value(args[0], now) {
        Ok(Some(set)) => set,
        Ok(None) => return scan::reply_empty(&mut ctx.reply),
        Err(e) => return reply_error(ctx, e),
    };
    let options = match ScanOptions::parse(&args[2..]) {
        Ok(options) => options,
        Err(e) => return ctx.reply.error(&e),
    };
    let window = Window::new(cursor, options.count, set.len());
    let found: Vec<&ShortBytes> = set.members().filter(|m| window.contains(m) && options.matches(m)).collect();
    ctx.reply.array(2);
    ctx.reply.bulk(window.next_cursor().to_string().as_bytes());
    ctx.reply.array(found.len());
    for member in found {
        ctx.reply.bulk(member);
    }
}

// ----- COMMAND DOCS -----

const fn many(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, key_spec: None, flags: &["multiple"] }
}

const fn optional(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, key_spec: None, flags: &["optional"] }
}

const KEY_MEMBER: &[Arg] = &[key(0), arg("member", "string")];
const KEY_MEMBERS: &[Arg] = &[key(0), many("member", "string")];
const STORE: &[Arg] = &[
    Arg { name: "destination", kind: "key", key_spec: Some(0), flags: &[] },
    Arg { name: "key", kind: "key", key_spec: Some(1), flags: &["multiple"] },
];
const ALL_SETS: &str = "O(N) where N is the total number of elements in all given sets.";
const INTER: &str = "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets.";
const SCAN_COMPLEXITY: &str = "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.";

/// COMMAND DOCS for the set commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[
    (
        "sadd",
        doc(
            "Adds one or more members to a set. Creates the key if it doesn't exist.",
            "1.0.0",
            "set",
            "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
            KEY_MEMBERS,
        ),
    ),
    ("scard", doc("Returns the number of members in a set.", "1.0.0", "set", O1, &[key(0)])),
    ("sdiff", doc("Returns the difference of multiple sets.", "1.0.0", "set", ALL_SETS, KEYS)),
    ("sdiffstore", doc("Stores the difference of multiple sets in a key.", "1.0.0", "set", ALL_SETS, STORE)),
    ("sinter", doc("Returns the intersect of multiple sets.", "1.0.0", "set", INTER, KEYS)),
    (
        "sintercard",
        doc(
            "Returns the number of members of the intersect of multiple sets.",
            "7.0.0",
            "set",
            INTER,
            &[
                arg("numkeys", "integer"),
                Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] },
                optional("limit", "integer"),
            ],
        ),
    ),
    ("sinterstore", doc("Stores the intersect of multiple sets in a key.", "1.0.0", "set", INTER, STORE)),
    ("sismember", doc("Determines whether a member belongs to a set.", "1.0.0", "set", O1, KEY_MEMBER)),
    (
        "smembers",
        doc("Returns all members of a set.", "1.0.0", "set", "O(N) where N is the set cardinality.", &[key(0)]),
    ),
    (
        "smismember",
        doc(
            "Determines whether multiple members belong to a set.",
            "6.2.0",
            "set",
            "O(N) where N is the number of elements being checked for membership",
            KEY_MEMBERS,
        ),
    ),
    (
        "smove",
        doc(
            "Moves a member from one set to another.",
            "1.0.0",
            "set",
            O1,
            &[
                Arg { name: "source", kind: "key", key_spec: Some(0), flags: &[] },
                Arg { name: "destination", kind: "key", key_spec: Some(1), flags: &[] },
                arg("member", "string"),
            ],
        ),
    ),
    (
        "spop",
        doc(
            "Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.",
            "1.0.0",
            "set",
            "Without the count argument O(1), otherwise O(N) where N is the value of the passed count.",
            &[key(0), optional("count", "integer")],
        ),
    ),
    (
        "srandmember",
        doc(
            "Get one or multiple random members from a set",
            "1.0.0",
            "set",
            "Without the count argument O(1), otherwise O(N) where N is the absolute value of the passed count.",
            &[key(0), optional("count", "integer")],
        ),
    ),
    (
        "srem",
        doc(
            "Removes one or more members from a set. Deletes the set if the last member was removed.",
            "1.0.0",
            "set",
            "O(N) where N is the number of members to be removed.",
            KEY_MEMBERS,
        ),
    ),
    (
        "sscan",
        doc(
            "Iterates over members of a set.",
            "2.8.0",
            "set",
            SCAN_COMPLEXITY,
            &[key(0), arg("cursor", "integer"), optional("pattern", "pattern"), optional("count", "integer")],
        ),
    ),
    ("sunion", doc("Returns the union of multiple sets.", "1.0.0", "set", ALL_SETS, KEYS)),
    ("sunionstore", doc("Stores the union of multiple sets in a key.", "1.0.0", "set", ALL_SETS, STORE)),
];
