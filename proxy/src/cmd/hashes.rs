//! Hash commands: HSET and friends, the HINCRBY counters, HRANDFIELD, HSCAN.
//!
//! A hash is an [`OrHash`](meridian_crdt::hash::OrHash): every field is a
//! register, so HSET is last-writer-wins per field, HINCRBY/HINCRBYFLOAT add up
//! across regions, and HSET/HINCRBY win over a concurrent HDEL. Replies and
//! errors are Redis 7's, checked in the order Redis checks them (argument
//! errors first, then the key's type, then options where Redis reads them
//! late). HSCAN's cursor is described in [`super::scan`]; HRANDFIELD's picks
//! in [`super::random`].

use meridian_crdt::keyspace::Keyspace;
use meridian_crdt::number;
use meridian_crdt::register::Register;
use meridian_crdt::short_bytes::ShortBytes;
use meridian_crdt::{CommandError, Moment};
use rand::Rng;

use super::docs::{Arg, Doc, O1, arg, doc, key};
use super::random::{self, parse_count};
use super::scan::{self, ScanOptions, Window};
use super::{CommandSpec, SYNTAX_ERROR, parse_float, parse_int};
use crate::context::Context;
use crate::reply::Protocol;

/// The hash commands, with Redis 7.2's arity, flags and key positions.
pub fn commands() -> Vec<CommandSpec> {
    const WF: &[&str] = &["write", "denyoom", "fast"];
    const RF: &[&str] = &["readonly", "fast"];
    const R: &[&str] = &["readonly"];
    const KEY: (i32, i32, i32) = (1, 1, 1);
    vec![
        CommandSpec::new("hdel", -3, &["write", "fast"], KEY, hdel),
        CommandSpec::new("hexists", 3, RF, KEY, hexists),
        CommandSpec::new("hget", 3, RF, KEY, hget),
        CommandSpec::new("hgetall", 2, R, KEY, hgetall),
        CommandSpec::new("hincrby", 4, WF, KEY, hincrby),
        CommandSpec::new("hincrbyfloat", 4, WF, KEY, hincrbyfloat),
        CommandSpec::new("hkeys", 2, R, KEY, hkeys),
        CommandSpec::new("hlen", 2, RF, KEY, hlen),
        CommandSpec::new("hmget", -3, RF, KEY, hmget),
        CommandSpec::new("hmset", -4, WF, KEY, hmset),
        CommandSpec::new("hrandfield", -2, R, KEY, hrandfield),
        CommandSpec::new("hscan", -3, R, KEY, hscan),
        CommandSpec::new("hset", -4, WF, KEY, hset),
        CommandSpec::new("hsetnx", 4, WF, KEY, hsetnx),
        CommandSpec::new("hstrlen", 3, RF, KEY, hstrlen),
        CommandSpec::new("hvals", 2, R, KEY, hvals),
    ]
}

/// The value a field shows (its register rendered: a counter's sum, or the
/// string written).
fn render(register: &Register<ShortBytes>) -> std::borrow::Cow<'_, [u8]> {
    // A field is kept only while its register holds something, and a
    // register holding something always renders.
    number::render(register).unwrap_or_default()
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

fn reply_error(ctx: &mut Context<'_, '_>, error: CommandError) {
    ctx.reply.error(&error.to_string());
}

/// HSET's field-value arguments as pairs, in place (an even count).
fn hset_pairs<'a>(args: &'a [&'a [u8]]) -> &'a [[&'a [u8]; 2]] {
    args.as_chunks::<2>().0
}

fn hset(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'hset' command");
    }
    let pairs = hset_pairs(&args[1..]);
    match write(ctx, |keyspace, at| keyspace.hset(args[0], pairs, at)) {
        Ok((created, _)) => ctx.reply.integer(created as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn hmset(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'hmset' command");
    }
    let pairs = hset_pairs(&args[1..]);
    match write(ctx, |keyspace, at| keyspace.hset(args[0], pairs, at)) {
        Ok(_) => ctx.reply.ok(),
        Err(e) => reply_error(ctx, e),
    }
}

fn hsetnx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (key, field, value) = (&args[0], &args[1], &args[2]);
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let exists = match shard.keyspace().hash_value(key, now) {
        Ok(hash) => hash.is_some_and(|h| h.field(field).is_some()),
        Err(e) => {
            drop(shard);
            return reply_error(ctx, e);
        }
    };
    if exists {
        drop(shard);
        return ctx.reply.integer(0);
    }
    let result =
        shard.moment().map_err(CommandError::from).and_then(|at| shard.keyspace_mut().hset(key, &[(field, value)], at));
    drop(shard);
    match result {
        Ok(_) => ctx.reply.integer(1),
        Err(e) => reply_error(ctx, e),
    }
}

fn hget(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(hash) => ctx.reply.bulk_or_null(hash.and_then(|h| h.field(args[1])).map(render).as_deref()),
        Err(e) => reply_error(ctx, e),
    }
}

fn hmget(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(hash) => {
            ctx.reply.array(args.len() - 1);
            for field in &args[1..] {
                ctx.reply.bulk_or_null(hash.and_then(|h| h.field(field)).map(render).as_deref());
            }
        }
        Err(e) => reply_error(ctx, e),
    }
}

fn hgetall(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(None) => ctx.reply.map(0),
        Ok(Some(hash)) => {
            ctx.reply.map(hash.len());
            for (field, register) in hash.iter() {
                ctx.reply.bulk(field);
                ctx.reply.bulk(&render(register));
            }
        }
        Err(e) => reply_error(ctx, e),
    }
}

/// HKEYS (`values` false) and HVALS.
fn keys_or_values(ctx: &mut Context<'_, '_>, key: &[u8], values: bool) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(key, now) {
        Ok(None) => ctx.reply.array(0),
        Ok(Some(hash)) => {
            ctx.reply.array(hash.len());
            for (field, register) in hash.iter() {
                if values {
                    ctx.reply.bulk(&render(register));
                } else {
                    ctx.reply.bulk(field);
                }
            }
        }
        Err(e) => reply_error(ctx, e),
    }
}

fn hkeys(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    keys_or_values(ctx, args[0], false);
}

fn hvals(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    keys_or_values(ctx, args[0], true);
}

fn hdel(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let fields: Vec<&[u8]> = args[1..].iter().map(|f| f.as_ref()).collect();
    match write(ctx, |keyspace, at| keyspace.hdel(args[0], &fields, at)) {
        Ok((removed, _)) => ctx.reply.integer(removed as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn hexists(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(hash) => ctx.reply.integer(i64::from(hash.is_some_and(|h| h.field(args[1]).is_some()))),
        Err(e) => reply_error(ctx, e),
    }
}

fn hlen(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(hash) => ctx.reply.integer(hash.map_or(0, |h| h.len()) as i64),
        Err(e) => reply_error(ctx, e),
    }
}

fn hstrlen(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().hash_value(args[0], now) {
        Ok(hash) => {
            let len = hash.and_then(|h| h.field(args[1])).map_or(0, |r| render(r).len());
            ctx.reply.integer(len as i64);
        }
        Err(e) => reply_error(ctx, e),
    }
}

fn hincrby(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let by = match parse_int(args[2]) {
        Ok(by) => by,
        Err(e) => return reply_error(ctx, e),
    };
    match write(ctx, |keyspace, at| keyspace.hincr_by(args[0], args[1], by, at)) {
        Ok((value, _)) => ctx.reply.integer(value),
        Err(e) => reply_error(ctx, e),
    }
}

fn hincrbyfloat(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let by = match parse_float(args[2]) {
        Ok(by) => by,
        Err(e) => return reply_error(ctx, e),
    };
    // Redis refuses an infinite increment itself with this text; a finite one
    // that overflows the sum gets "increment would produce NaN or Infinity".
    if !by.is_finite() {
        return ctx.reply.error("ERR value is NaN or Infinity");
    }
    match write(ctx, |keyspace, at| keyspace.hincr_by_float(args[0], args[1], by, at)) {
        Ok((value, _)) => ctx.reply.bulk(&value),
        Err(e) => reply_error(ctx, e),
    }
}

fn hrandfield(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut rng = super::rng();
    if args.len() == 1 {
        let shard = ctx.server.shard();
        let now = shard.wall_ms();
        return match shard.keyspace().hash_value(args[0], now) {
            Ok(Some(hash)) if !hash.is_empty() => {
                let index = rng.random_range(0..hash.len());
                ctx.reply.bulk_or_null(hash.iter().nth(index).map(|(field, _)| field.as_slice()));
            }
            Ok(_) => ctx.reply.null(),
            Err(e) => reply_error(ctx, e),
        };
    }
    let count = match parse_count(args[1]) {
        Ok(count) => count,
        Err(e) => return ctx.reply.error(&e),
    };
    let with_values = match &args[2..] {
        [] => false,
        [option] if option.eq_ignore_ascii_case(b"WITHVALUES") => true,
        _ => return ctx.reply.error(SYNTAX_ERROR),
    };
    // Redis's own bound: a field-value pair per pick must fit a `long`.
    if with_values && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
        return ctx.reply.error("ERR value is out of range");
    }
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let hash = match shard.keyspace().hash_value(args[0], now) {
        Ok(Some(hash)) => hash,
        Ok(None) => return ctx.reply.array(0),
        Err(e) => return reply_error(ctx, e),
    };
    let indices = match random::indices(hash.len(), count, &mut rng) {
        Ok(indices) => indices,
        Err(e) => return ctx.reply.error(e),
    };
    let picked = random::resolve(hash.iter(), &indices);
    if !with_values {
        ctx.reply.array(picked.len());
        for (field, _) in picked {
            ctx.reply.bulk(field);
        }
    } else if ctx.reply.protocol() == Protocol::Resp3 {
        // Redis 7 answers RESP3 with an array of [field, value] pairs (a map
        // cannot hold the repeats of a negative count).
        ctx.reply.array(picked.len());
        for (field, register) in picked {
            ctx.reply.array(2);
            ctx.reply.bulk(field);
            ctx.reply.bulk(&render(register));
        }
    } else {
        ctx.reply.array(picked.len() * 2);
        for (field, register) in picked {
            ctx.reply.bulk(field);
            ctx.reply.bulk(&render(register));
        }
    }
}

fn hscan(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let cursor = match scan::parse_cursor(args[1]) {
        Ok(cursor) => cursor,
        Err(e) => return ctx.reply.error(e),
    };
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    // As in Redis: a missing key answers an empty scan before the options
    // are even read; a key of another type is WRONGTYPE before them too.
    let hash = match shard.keyspace().hash_value(args[0], now) {
        Ok(Some(hash)) => hash,
        Ok(None) => return scan::reply_empty(&mut ctx.reply),
        Err(e) => return reply_error(ctx, e),
    };
    let options = match ScanOptions::parse(&args[2..]) {
        Ok(options) => options,
        Err(e) => return ctx.reply.error(&e),
    };
    let window = Window::new(cursor, options.count, hash.len());
    let found: Vec<_> = hash.iter().filter(|(field, _)| window.contains(field) && options.matches(field)).collect();
    ctx.reply.array(2);
    ctx.reply.bulk(window.next_cursor().to_string().as_bytes());
    ctx.reply.array(found.len() * 2);
    for (field, register) in found {
        ctx.reply.bulk(field);
        ctx.reply.bulk(&render(register));
    }
}

// ----- COMMAND DOCS -----

const fn many(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, key_spec: None, flags: &["multiple"] }
}

const fn optional(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, key_spec: None, flags: &["optional"] }
}

const FIELD: &[Arg] = &[key(0), arg("field", "string")];
const HASH_SIZE: &str = "O(N) where N is the size of the hash.";
const SCAN_COMPLEXITY: &str = "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.";

/// COMMAND DOCS for the hash commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[
    (
        "hdel",
        doc(
            "Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.",
            "2.0.0",
            "hash",
            "O(N) where N is the number of fields to be removed.",
            &[key(0), many("field", "string")],
        ),
    ),
    ("hexists", doc("Determines whether a field exists in a hash.", "2.0.0", "hash", O1, FIELD)),
    ("hget", doc("Returns the value of a field in a hash.", "2.0.0", "hash", O1, FIELD)),
    ("hgetall", doc("Returns all fields and values in a hash.", "2.0.0", "hash", HASH_SIZE, &[key(0)])),
    (
        "hincrby",
        doc(
            "Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.",
            "2.0.0",
            "hash",
            O1,
            &[key(0), arg("field", "string"), arg("increment", "integer")],
        ),
    ),
    (
        "hincrbyfloat",
        doc(
            "Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.",
            "2.6.0",
            "hash",
            O1,
            &[key(0), arg("field", "string"), arg("increment", "double")],
        ),
    ),
    ("hkeys", doc("Returns all fields in a hash.", "2.0.0", "hash", HASH_SIZE, &[key(0)])),
    ("hlen", doc("Returns the number of fields in a hash.", "2.0.0", "hash", O1, &[key(0)])),
    (
        "hmget",
        doc(
            "Returns the values of all fields in a hash.",
            "2.0.0",
            "hash",
            "O(N) where N is the number of fields being requested.",
            &[key(0), many("field", "string")],
        ),
    ),
    (
        "hmset",
        doc(
            "Sets the values of multiple fields.",
            "2.0.0",
            "hash",
            "O(N) where N is the number of fields being set.",
            &[],
        ),
    ),
    (
        "hrandfield",
        doc(
            "Returns one or more random fields from a hash.",
            "6.2.0",
            "hash",
            "O(N) where N is the number of fields returned",
            &[],
        ),
    ),
    (
        "hscan",
        doc(
            "Iterates over fields and values of a hash.",
            "2.8.0",
            "hash",
            SCAN_COMPLEXITY,
            &[key(0), arg("cursor", "integer"), optional("pattern", "pattern"), optional("count", "integer")],
        ),
    ),
    (
        "hset",
        doc(
            "Creates or modifies the value of a field in a hash.",
            "2.0.0",
            "hash",
            "O(1) for each field/value pair added, so O(N) to add N field/value pairs when the command is called with multiple field/value pairs.",
            &[],
        ),
    ),
    (
        "hsetnx",
        doc(
            "Sets the value of a field in a hash only when the field doesn't exist.",
            "2.0.0",
            "hash",
            O1,
            &[key(0), arg("field", "string"), arg("value", "string")],
        ),
    ),
    ("hstrlen", doc("Returns the length of the value of a field.", "3.2.0", "hash", O1, FIELD)),
    ("hvals", doc("Returns all values in a hash.", "2.0.0", "hash", HASH_SIZE, &[key(0)])),
];
