//! Sorted-set commands: ZADD and friends, the range queries (ZRANGE and its
//! legacy forms), the pops, ZRANDMEMBER, the set algebra (ZUNION, ZINTER,
//! ZDIFF and their STORE forms, ZINTERCARD) and ZSCAN, with Redis 7.2's
//! replies, errors and argument checks in Redis's order.
//!
//! Reads borrow the shard's [`OrZSet`] and reply straight from its ordered
//! index (O(log n + m) for score and lex ranges). Writes go through the
//! keyspace's sorted-set mutators; the store commands compute their result
//! first and then replace the destination with [`Keyspace::zstore`], one delta
//! that removes everything observed there (so a concurrent write at the
//! destination in another region survives, observed-remove).
//!
//! [`Keyspace::zstore`]: meridian_crdt::keyspace::Keyspace::zstore

use std::collections::HashMap;

use meridian_crdt::CommandError;
use meridian_crdt::keyspace::{View, ZAddFlags, ZRemoveRange};
use meridian_crdt::set::OrSet;
use meridian_crdt::value::TypedValue;
use meridian_crdt::zset::{LexBound, Limit, OrZSet, ScoreBound, ZSetIter};
use rand::Rng;
use smallvec::SmallVec;

use super::docs::{Arg, Doc, KEY, arg, doc, key};
use super::{ARGS_INLINE, CommandSpec, SYNTAX_ERROR, glob_match, numkeys_at, parse_float, parse_int, rng};
use crate::blocking::{Attempt, NullReply, TryServe, block_on, parse_timeout};
use crate::context::{Context, ServerState};
use crate::reply::{Protocol, Reply};

/// The sorted-set commands, with Redis 7.2's arity, flags and key positions.
/// The commands whose keys follow a `numkeys` argument report, as Redis does,
/// `movablekeys` and only their fixed destination key (if any).
pub fn commands() -> Vec<CommandSpec> {
    const WF: &[&str] = &["write", "fast"];
    const WDF: &[&str] = &["write", "denyoom", "fast"];
    const RF: &[&str] = &["readonly", "fast"];
    const R: &[&str] = &["readonly"];
    const W: &[&str] = &["write"];
    const RM: &[&str] = &["readonly", "movablekeys"];
    const WDM: &[&str] = &["write", "denyoom", "movablekeys"];
    vec![
        CommandSpec::new("zadd", -4, WDF, (1, 1, 1), zadd),
        CommandSpec::new("zincrby", 4, WDF, (1, 1, 1), zincrby),
        CommandSpec::new("zrem", -3, WF, (1, 1, 1), zrem),
        CommandSpec::new("zscore", 3, RF, (1, 1, 1), zscore),
        CommandSpec::new("zmscore", -3, RF, (1, 1, 1), zmscore),
        CommandSpec::new("zcard", 2, RF, (1, 1, 1), zcard),
        CommandSpec::new("zcount", 4, RF, (1, 1, 1), zcount),
        CommandSpec::new("zlexcount", 4, RF, (1, 1, 1), zlexcount),
        CommandSpec::new("zrange", -4, R, (1, 1, 1), zrange),
        CommandSpec::new("zrangestore", -5, &["write", "denyoom"], (1, 2, 1), zrangestore),
        CommandSpec::new("zrangebyscore", -4, R, (1, 1, 1), zrangebyscore),
        CommandSpec::new("zrevrangebyscore", -4, R, (1, 1, 1), zrevrangebyscore),
        CommandSpec::new("zrangebylex", -4, R, (1, 1, 1), zrangebylex),
        CommandSpec::new("zrevrangebylex", -4, R, (1, 1, 1), zrevrangebylex),
        CommandSpec::new("zrevrange", -4, R, (1, 1, 1), zrevrange),
        CommandSpec::new("zrank", -3, RF, (1, 1, 1), zrank),
        CommandSpec::new("zrevrank", -3, RF, (1, 1, 1), zrevrank),
        CommandSpec::new("zpopmin", -2, WF, (1, 1, 1), zpopmin),
        CommandSpec::new("zpopmax", -2, WF, (1, 1, 1), zpopmax),
        CommandSpec::new("zmpop", -4, &["write", "movablekeys"], (0, 0, 0), zmpop)
            .with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("bzpopmin", -3, &["write", "noscript", "blocking", "fast"], (1, -2, 1), bzpopmin),
        CommandSpec::new("bzpopmax", -3, &["write", "noscript", "blocking", "fast"], (1, -2, 1), bzpopmax),
        CommandSpec::new("bzmpop", -5, &["write", "blocking", "movablekeys"], (0, 0, 0), bzmpop)
            .with_movable_keys(|args| numkeys_at(args, 2)),
        CommandSpec::new("zrandmember", -2, R, (1, 1, 1), zrandmember),
        CommandSpec::new("zremrangebyrank", 4, W, (1, 1, 1), zremrangebyrank),
        CommandSpec::new("zremrangebyscore", 4, W, (1, 1, 1), zremrangebyscore),
        CommandSpec::new("zremrangebylex", 4, W, (1, 1, 1), zremrangebylex),
        CommandSpec::new("zunion", -3, RM, (0, 0, 0), zunion).with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("zunionstore", -4, WDM, (1, 1, 1), zunionstore).with_movable_keys(|args| numkeys_at(args, 2)),
        CommandSpec::new("zinter", -3, RM, (0, 0, 0), zinter).with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("zinterstore", -4, WDM, (1, 1, 1), zinterstore).with_movable_keys(|args| numkeys_at(args, 2)),
        CommandSpec::new("zintercard", -3, RM, (0, 0, 0), zintercard).with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("zdiff", -3, RM, (0, 0, 0), zdiff).with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("zdiffstore", -4, WDM, (1, 1, 1), zdiffstore).with_movable_keys(|args| numkeys_at(args, 2)),
        CommandSpec::new("zscan", -3, R, (1, 1, 1), zscan),
    ]
}

// ---------------------------------------------------------------------------
// Shared helpers.
// ---------------------------------------------------------------------------

/// Redis's reply when a score range bound does not parse.
const SCORE_RANGE_ERROR: &str = "ERR min or max is not a float";
/// Redis's reply when a lex range bound does not parse.
const LEX_RANGE_ERROR: &str = "ERR min or max not valid string range item";
/// Redis's reply for a count that must be positive (ZPOPMIN, ZPOPMAX).
const POSITIVE_ERROR: &str = "ERR value is out of range, must be positive";

/// The most elements ZRANDMEMBER with a negative count (repetitions allowed)
/// returns. Redis has no bound and would try to build a reply of up to 2^63
/// elements; Meridian refuses counts above this with "value is out of range"
/// so a single command cannot exhaust the node's memory (a million short
/// members is a reply of some tens of megabytes).
pub const RANDMEMBER_REPEAT_MAX: u64 = 1_000_000;

/// A full ZSCAN of a large sorted set takes at most about this many calls
/// whatever COUNT says: each call costs O(n) (see [`zscan`]), so each call
/// returns at least 1/`SCAN_CALLS_MAX` of the set.
pub const SCAN_CALLS_MAX: usize = 64;

/// Sorted sets at most this large are returned by ZSCAN in one call with
/// cursor 0, as Redis does for its small (listpack) encoding.
pub const SCAN_SMALL_MAX: usize = 128;

/// Parses a score to store (ZADD, ZINCRBY). A `-0` is stored as 0, as Redis
/// does for small sorted sets (its listpack keeps an integral score as an
/// integer), so ZSCORE shows `0`.
fn parse_score(arg: &[u8]) -> Result<f64, CommandError> {
    parse_float(arg).map(|score| if score == 0.0 { 0.0 } else { score })
}

/// Parses one end of a score range as Redis's `zslParseRange` does: an
/// optional `(` for an exclusive bound, then what `strtod` reads — leading
/// spaces allowed, nothing after the number, not NaN; `inf`, `+inf`, `-inf`
/// accepted. As with `strtod`, nothing at all after the `(` reads as 0.
pub fn parse_score_bound(arg: &[u8]) -> Option<ScoreBound> {
    let (exclusive, rest) = match arg {
        [b'(', rest @ ..] => (true, rest),
        _ => (false, arg),
    };
    let value = if rest.is_empty() {
        0.0
    } else {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        meridian_crdt::number::parse_f64(&rest[start..])?
    };
    Some(ScoreBound { value, exclusive })
}

/// Parses a score range (min, max).
fn parse_score_range(min: &[u8], max: &[u8]) -> Result<(ScoreBound, ScoreBound), &'static str> {
    match (parse_score_bound(min), parse_score_bound(max)) {
        (Some(min), Some(max)) => Ok((min, max)),
        _ => Err(SCORE_RANGE_ERROR),
    }
}

/// Parses a lex range (min, max).
fn parse_lex_range<'a>(min: &'a [u8], max: &'a [u8]) -> Result<(LexBound<'a>, LexBound<'a>), &'static str> {
    match (LexBound::parse(min), LexBound::parse(max)) {
        (Some(min), Some(max)) => Ok((min, max)),
        _ => Err(LEX_RANGE_ERROR),
    }
}

/// Writes members, with their scores if asked, the way Redis replies to
/// ZRANGE WITHSCORES and its kin: RESP2 a flat array (member, score, ...),
/// RESP3 an array of [member, score] pairs with double scores.
fn reply_members<M: AsRef<[u8]>>(reply: &mut Reply<'_>, items: &[(M, f64)], withscores: bool) {
    let nested = withscores && reply.protocol() == Protocol::Resp3;
    reply.array(if withscores && !nested { items.len() * 2 } else { items.len() });
    for (member, score) in items {
        if nested {
            reply.array(2);
        }
        reply.bulk(member.as_ref());
        if withscores {
            reply.double(*score);
        }
    }
}

/// The members an iterator yields, borrowed, in its order.
fn collect(iter: ZSetIter<'_>) -> Vec<(&[u8], f64)> {
    iter.map(|(member, score)| (member.as_slice(), score)).collect()
}

/// Parses a `long` the way Redis's `getRangeLongFromObjectOrReply` does
/// with a custom message: any failure (not an integer, or outside
/// `min..=max`) answers `ERR <message>`.
fn parse_ranged(arg: &[u8], min: i64, max: i64, message: &str) -> Result<i64, String> {
    match parse_int(arg) {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(format!("ERR {message}")),
    }
}

// ---------------------------------------------------------------------------
// ZADD, ZINCRBY, ZREM.
// ---------------------------------------------------------------------------

fn zadd(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let key = &args[0];
    let mut flags = ZAddFlags::default();
    let mut at = 1;
    while at < args.len() {
        match args[at].to_ascii_uppercase().as_slice() {
            b"NX" => flags.nx = true,
            b"XX" => flags.xx = true,
            b"CH" => flags.ch = true,
            b"INCR" => flags.incr = true,
            b"GT" => flags.gt = true,
            b"LT" => flags.lt = true,
            _ => break,
        }
        at += 1;
    }
    let pairs = &args[at..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return ctx.reply.error(SYNTAX_ERROR);
    }
    if flags.nx && flags.xx {
        return ctx.reply.error("ERR XX and NX options at the same time are not compatible");
    }
    if (flags.nx && (flags.gt || flags.lt)) || (flags.gt && flags.lt) {
        return ctx.reply.error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if flags.incr && pairs.len() > 2 {
        return ctx.reply.error("ERR INCR option supports a single increment-element pair");
    }
    let mut items: SmallVec<[(f64, &[u8]); ARGS_INLINE]> = SmallVec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        match parse_score(pair[0]) {
            Ok(score) => items.push((score, pair[1])),
            Err(e) => return ctx.reply.error(&e.to_string()),
        }
    }
    let mut shard = ctx.server.shard();
    let result = ctx
        .moment(&mut shard)
        .map_err(CommandError::from)
        .and_then(|at| shard.keyspace_mut().zadd(key, &items, flags, at));
    drop(shard);
    match result {
        Ok((totals, _)) if flags.incr => match totals.score {
            Some(score) => ctx.reply.double(score),
            None => ctx.reply.null(),
        },
        Ok((totals, _)) => ctx.reply.integer(totals.count(flags.ch) as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn zincrby(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let by = match parse_score(args[1]) {
        Ok(by) => by,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let mut shard = ctx.server.shard();
    let result = shard
        .moment()
        .map_err(CommandError::from)
        .and_then(|at| shard.keyspace_mut().zincr_by(args[0], args[2], by, at));
    drop(shard);
    match result {
        Ok((score, _)) => ctx.reply.double(score),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn zrem(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let members: Vec<&[u8]> = args[1..].iter().map(|m| m.as_ref()).collect();
    let mut shard = ctx.server.shard();
    let result = ctx
        .moment(&mut shard)
        .map_err(CommandError::from)
        .and_then(|at| shard.keyspace_mut().zrem(args[0], &members, at));
    drop(shard);
    match result {
        Ok((removed, _)) => ctx.reply.integer(removed as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Point reads: ZSCORE, ZMSCORE, ZCARD, ZCOUNT, ZLEXCOUNT, ZRANK.
// ---------------------------------------------------------------------------

/// Runs `read` on the sorted set at `key` (None if missing) and writes its
/// reply, or replies `WRONGTYPE`.
fn with_zset(ctx: &mut Context<'_, '_>, key: &[u8], read: impl FnOnce(Option<&OrZSet>, &mut Reply<'_>)) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().zset_value(key, now) {
        Ok(zset) => read(zset, &mut ctx.reply),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn zscore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    with_zset(ctx, args[0], |zset, reply| match zset.and_then(|z| z.score(args[1])) {
        Some(score) => reply.double(score),
        None => reply.null(),
    });
}

fn zmscore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let members = &args[1..];
    with_zset(ctx, args[0], |zset, reply| {
        reply.array(members.len());
        for member in members {
            match zset.and_then(|z| z.score(member)) {
                Some(score) => reply.double(score),
                None => reply.null(),
            }
        }
    });
}

fn zcard(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    with_zset(ctx, args[0], |zset, reply| reply.integer(zset.map_or(0, OrZSet::len) as i64));
}

fn zcount(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (min, max) = match parse_score_range(args[1], args[2]) {
        Ok(range) => range,
        Err(e) => return ctx.reply.error(e),
    };
    with_zset(ctx, args[0], |zset, reply| {
        reply.integer(zset.map_or(0, |z| z.count_in_score_range(min, max)) as i64);
    });
}

fn zlexcount(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (min, max) = match parse_lex_range(args[1], args[2]) {
        Ok(range) => range,
        Err(e) => return ctx.reply.error(e),
    };
    with_zset(ctx, args[0], |zset, reply| {
        reply.integer(zset.map_or(0, |z| z.count_in_lex_range(min, max)) as i64);
    });
}

/// ZRANK / ZREVRANK key member [WITHSCORE] (Redis 7.2).
fn rank(ctx: &mut Context<'_, '_>, args: &[&[u8]], rev: bool, command: &str) {
    if args.len() > 3 {
        return ctx.reply.error(&format!("ERR wrong number of arguments for '{command}' command"));
    }
    let withscore = match args.get(2) {
        None => false,
        Some(option) if option.eq_ignore_ascii_case(b"WITHSCORE") => true,
        Some(_) => return ctx.reply.error(SYNTAX_ERROR),
    };
    with_zset(ctx, args[0], |zset, reply| match zset.and_then(|z| z.rank(args[1], rev)) {
        Some((rank, score)) => {
            if withscore {
                reply.array(2);
            }
            reply.integer(rank as i64);
            if withscore {
                reply.double(score);
            }
        }
        // Redis answers a null array when WITHSCORE asked for an array.
        None if withscore => reply.null_array(),
        None => reply.null(),
    });
}

fn zrank(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    rank(ctx, args, false, "zrank");
}

fn zrevrank(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    rank(ctx, args, true, "zrevrank");
}

// ---------------------------------------------------------------------------
// Ranges: ZRANGE, ZRANGESTORE and the legacy forms.
// ---------------------------------------------------------------------------

/// What a range command selects by, before its options are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    /// ZRANGE / ZRANGESTORE: ranks unless BYSCORE or BYLEX says otherwise.
    Auto,
    Rank,
    Score,
    Lex,
}

/// The direction of a range command, before its options are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// ZRANGE / ZRANGESTORE: forward unless REV.
    Auto,
    Forward,
    Reverse,
}

/// A parsed range query.
enum Range<'a> {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound, Limit),
    Lex(LexBound<'a>, LexBound<'a>, Limit),
}

impl Range<'_> {
    /// The members selected, in reply order.
    fn select<'z>(&self, zset: &'z OrZSet, rev: bool) -> ZSetIter<'z> {
        match *self {
            Range::Rank(start, stop) => zset.range_by_rank(start, stop, rev),
            Range::Score(min, max, limit) => zset.range_by_score(min, max, rev, limit),
            Range::Lex(min, max, limit) => zset.range_by_lex(min, max, rev, limit),
        }
    }
}

/// A range command's parsed arguments.
struct RangeQuery<'a> {
    range: Range<'a>,
    rev: bool,
    withscores: bool,
}

/// Parses `src min max [options]` exactly as Redis's `zrangeGenericCommand`
/// does, errors in the same order. `store` refuses WITHSCORES.
fn parse_range<'a>(
    args: &'a [&'a [u8]],
    store: bool,
    kind: RangeKind,
    direction: Direction,
) -> Result<RangeQuery<'a>, String> {
    let (mut kind, mut direction) = (kind, direction);
    let mut withscores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut at = 3;
    while at < args.len() {
        let left = args.len() - at - 1;
        let option = args[at].to_ascii_uppercase();
        match option.as_slice() {
            b"WITHSCORES" if !store => withscores = true,
            b"LIMIT" if left >= 2 => {
                offset = parse_int(args[at + 1]).map_err(|e| e.to_string())?;
                limit = parse_int(args[at + 2]).map_err(|e| e.to_string())?;
                at += 2;
            }
            b"REV" if direction == Direction::Auto => direction = Direction::Reverse,
            b"BYLEX" if kind == RangeKind::Auto => kind = RangeKind::Lex,
            b"BYSCORE" if kind == RangeKind::Auto => kind = RangeKind::Score,
            _ => return Err(SYNTAX_ERROR.into()),
        }
        at += 1;
    }
    let rev = direction == Direction::Reverse;
    if kind == RangeKind::Auto {
        kind = RangeKind::Rank;
    }
    // Redis tests the count alone: `LIMIT 5 -1` passes with ranks.
    if limit != -1 && kind == RangeKind::Rank {
        return Err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX".into());
    }
    if withscores && kind == RangeKind::Lex {
        return Err("ERR syntax error, WITHSCORES not supported in combination with BYLEX".into());
    }
    // Reversed score and lex ranges are given as max, min.
    let (min, max) = if rev && kind != RangeKind::Rank { (&args[2], &args[1]) } else { (&args[1], &args[2]) };
    let limit = Limit { offset, count: limit };
    let range = match kind {
        RangeKind::Score => {
            let (min, max) = parse_score_range(min, max)?;
            Range::Score(min, max, limit)
        }
        RangeKind::Lex => {
            let (min, max) = parse_lex_range(min, max)?;
            Range::Lex(min, max, limit)
        }
        _ => {
            let start = parse_int(min).map_err(|e| e.to_string())?;
            let stop = parse_int(max).map_err(|e| e.to_string())?;
            Range::Rank(start, stop)
        }
    };
    Ok(RangeQuery { range, rev, withscores })
}

/// The range commands that reply: `args` is `key min max [options]`.
fn range_reply(ctx: &mut Context<'_, '_>, args: &[&[u8]], kind: RangeKind, direction: Direction) {
    let query = match parse_range(args, false, kind, direction) {
        Ok(query) => query,
        Err(e) => return ctx.reply.error(&e),
    };
    with_zset(ctx, args[0], |zset, reply| match zset {
        None => reply.array(0),
        Some(zset) => reply_members(reply, &collect(query.range.select(zset, query.rev)), query.withscores),
    });
}

fn zrange(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Auto, Direction::Auto);
}

fn zrangebyscore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Score, Direction::Forward);
}

fn zrevrangebyscore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Score, Direction::Reverse);
}

fn zrangebylex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Lex, Direction::Forward);
}

fn zrevrangebylex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Lex, Direction::Reverse);
}

fn zrevrange(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    range_reply(ctx, args, RangeKind::Rank, Direction::Reverse);
}

/// Replaces `dst` by `items` (deleting it when empty) and replies with the
/// new cardinality: the tail of every store command.
fn store_reply(ctx: &mut Context<'_, '_>, dst: &[u8], items: &[(f64, &[u8])]) {
    let mut shard = ctx.server.shard();
    let result =
        ctx.moment(&mut shard).map_err(CommandError::from).and_then(|at| shard.keyspace_mut().zstore(dst, items, at));
    drop(shard);
    match result {
        Ok((len, _)) => ctx.reply.integer(len as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn zrangestore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (dst, args) = (&args[0], &args[1..]);
    let query = match parse_range(args, true, RangeKind::Auto, Direction::Auto) {
        Ok(query) => query,
        Err(e) => return ctx.reply.error(&e),
    };
    let selected: Vec<(Vec<u8>, f64)> = {
        let shard = ctx.server.shard();
        let now = shard.wall_ms();
        match shard.keyspace().zset_value(args[0], now) {
            Ok(None) => Vec::new(),
            Ok(Some(zset)) => query.range.select(zset, query.rev).map(|(m, s)| (m.to_vec(), s)).collect(),
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&e.to_string());
            }
        }
    };
    let items: Vec<(f64, &[u8])> = selected.iter().map(|(m, s)| (*s, m.as_slice())).collect();
    store_reply(ctx, dst, &items);
}

// ---------------------------------------------------------------------------
// Removal by range.
// ---------------------------------------------------------------------------

fn remove_range(ctx: &mut Context<'_, '_>, key: &[u8], range: ZRemoveRange<'_>) {
    let mut shard = ctx.server.shard();
    let result = ctx
        .moment(&mut shard)
        .map_err(CommandError::from)
        .and_then(|at| shard.keyspace_mut().zrem_range(key, range, at));
    drop(shard);
    match result {
        Ok((removed, _)) => ctx.reply.integer(removed as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn zremrangebyrank(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match (parse_int(args[1]), parse_int(args[2])) {
        (Ok(start), Ok(stop)) => remove_range(ctx, args[0], ZRemoveRange::Rank(start, stop)),
        (Err(e), _) | (_, Err(e)) => ctx.reply.error(&e.to_string()),
    }
}

fn zremrangebyscore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match parse_score_range(args[1], args[2]) {
        Ok((min, max)) => remove_range(ctx, args[0], ZRemoveRange::Score(min, max)),
        Err(e) => ctx.reply.error(e),
    }
}

fn zremrangebylex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match parse_lex_range(args[1], args[2]) {
        Ok((min, max)) => remove_range(ctx, args[0], ZRemoveRange::Lex(min, max)),
        Err(e) => ctx.reply.error(e),
    }
}

// ---------------------------------------------------------------------------
// Pops: ZPOPMIN, ZPOPMAX, ZMPOP, and the shared logic for blocking pops.
// ---------------------------------------------------------------------------

/// How a pop's reply is shaped; each command has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopShape {
    /// ZPOPMIN/ZPOPMAX: a flat array (member, score, ...); in RESP3 with a
    /// count, an array of [member, score] pairs.
    Plain {
        /// A COUNT argument was given.
        counted: bool,
    },
    /// BZPOPMIN/BZPOPMAX: a flat array (key, member, score) in both
    /// protocols.
    KeyFlat,
    /// ZMPOP/BZMPOP: [key, [[member, score], ...]] in both protocols.
    KeyNested,
}

/// Pops up to `count` members from the lowest (or, with `max`, the highest)
/// end of the sorted set at `key` and replies in `shape`. Returns true if a
/// reply was written: the popped members, `WRONGTYPE`, or a clock error.
/// Returns false, writing nothing, when `key` holds no sorted set, so that a
/// multi-key or blocking caller can try the next key or wait.
pub(crate) fn pop_reply(ctx: &mut Context<'_, '_>, key: &[u8], max: bool, count: usize, shape: PopShape) -> bool {
    pop_into(ctx.server, &mut ctx.reply, key, max, count, shape, true)
}

/// [`pop_reply`] on a server and a reply: what the blocking pops try, also
/// for a blocked client being served (`first` false: a key of another type
/// is then passed over, as Redis does, instead of answering `WRONGTYPE`).
fn pop_into(
    server: &ServerState,
    reply: &mut Reply<'_>,
    key: &[u8],
    max: bool,
    count: usize,
    shape: PopShape,
    first: bool,
) -> bool {
    let mut shard = server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().zset_value(key, now) {
        Ok(Some(_)) => {}
        Ok(None) => return false,
        Err(_) if !first => return false,
        Err(e) => {
            drop(shard);
            reply.error(&e.to_string());
            return true;
        }
    }
    let result =
        shard.moment().map_err(CommandError::from).and_then(|at| shard.keyspace_mut().zpop(key, max, count, at));
    drop(shard);
    let popped = match result {
        Ok((popped, _)) => popped,
        Err(e) => {
            reply.error(&e.to_string());
            return true;
        }
    };
    match shape {
        PopShape::Plain { counted } => {
            let nested = counted && reply.protocol() == Protocol::Resp3;
            reply.array(if nested { popped.len() } else { popped.len() * 2 });
            for (member, score) in &popped {
                if nested {
                    reply.array(2);
                }
                reply.bulk(member);
                reply.double(*score);
            }
        }
        PopShape::KeyFlat => {
            reply.array(popped.len() * 2 + 1);
            reply.bulk(key);
            for (member, score) in &popped {
                reply.bulk(member);
                reply.double(*score);
            }
        }
        PopShape::KeyNested => {
            reply.array(2);
            reply.bulk(key);
            reply.array(popped.len());
            for (member, score) in &popped {
                reply.array(2);
                reply.bulk(member);
                reply.double(*score);
            }
        }
    }
    true
}

/// ZPOPMIN / ZPOPMAX key [count].
fn pop(ctx: &mut Context<'_, '_>, args: &[&[u8]], max: bool) {
    if args.len() > 2 {
        return ctx.reply.error(SYNTAX_ERROR);
    }
    let count = match args.get(1) {
        None => None,
        Some(arg) => match parse_int(arg) {
            Ok(count) if count >= 0 => Some(count as usize),
            _ => return ctx.reply.error(POSITIVE_ERROR),
        },
    };
    if count == Some(0) {
        // Redis checks the type first, then answers an empty array.
        let wrong_type = {
            let shard = ctx.server.shard();
            let now = shard.wall_ms();
            shard.keyspace().zset_value(args[0], now).err()
        };
        return match wrong_type {
            Some(e) => ctx.reply.error(&e.to_string()),
            None => ctx.reply.array(0),
        };
    }
    let shape = PopShape::Plain { counted: count.is_some() };
    if !pop_reply(ctx, args[0], max, count.unwrap_or(1), shape) {
        ctx.reply.array(0);
    }
}

fn zpopmin(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    pop(ctx, args, false);
}

fn zpopmax(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    pop(ctx, args, true);
}

/// Parses ZMPOP's (and BZMPOP's) `numkeys key... MIN|MAX [COUNT count]`:
/// the keys, `max`, and the count.
pub(crate) fn parse_mpop<'a>(args: &'a [&'a [u8]]) -> Result<(&'a [&'a [u8]], bool, usize), String> {
    let numkeys = parse_ranged(args[0], 1, i64::MAX, "numkeys should be greater than 0")? as usize;
    let where_at = numkeys.checked_add(1).filter(|&at| at < args.len()).ok_or(SYNTAX_ERROR)?;
    let max = match args[where_at].to_ascii_uppercase().as_slice() {
        b"MIN" => false,
        b"MAX" => true,
        _ => return Err(SYNTAX_ERROR.into()),
    };
    let mut count = None;
    let mut at = where_at + 1;
    while at < args.len() {
        if count.is_none() && args[at].eq_ignore_ascii_case(b"COUNT") && at + 1 < args.len() {
            count = Some(parse_ranged(args[at + 1], 1, i64::MAX, "count should be greater than 0")? as usize);
            at += 2;
        } else {
            return Err(SYNTAX_ERROR.into());
        }
    }
    Ok((&args[1..where_at], max, count.unwrap_or(1)))
}

fn zmpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (keys, max, count) = match parse_mpop(args) {
        Ok(parsed) => parsed,
        Err(e) => return ctx.reply.error(&e),
    };
    for key in keys {
        if pop_reply(ctx, key, max, count, PopShape::KeyNested) {
            return;
        }
    }
    ctx.reply.null_array();
}

/// BZPOPMIN/BZPOPMAX's try: `[key, member, score]` from the first key
/// holding a sorted set.
fn bzpop_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool, max: bool) -> Attempt {
    for key in &args[..args.len() - 1] {
        if pop_into(server, reply, key, max, 1, PopShape::KeyFlat, first) {
            return Attempt::Served { pushed: None };
        }
    }
    Attempt::Waiting
}

fn bzpopmin_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    bzpop_try(server, args, reply, first, false)
}

fn bzpopmax_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    bzpop_try(server, args, reply, first, true)
}

fn bzpop(ctx: &mut Context<'_, '_>, args: &[&[u8]], try_serve: TryServe) {
    let timeout = match parse_timeout(args[args.len() - 1]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    block_on(ctx, args, &args[..args.len() - 1], timeout, try_serve, NullReply::Array);
}

fn bzpopmin(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    bzpop(ctx, args, bzpopmin_try);
}

fn bzpopmax(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    bzpop(ctx, args, bzpopmax_try);
}

/// BZMPOP's try (timeout numkeys key ... MIN|MAX [COUNT n]; checked when it
/// arrived).
fn bzmpop_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    let (keys, max, count) = match parse_mpop(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => {
            reply.error(&e);
            return Attempt::Served { pushed: None };
        }
    };
    for key in keys {
        if pop_into(server, reply, key, max, count, PopShape::KeyNested, first) {
            return Attempt::Served { pushed: None };
        }
    }
    Attempt::Waiting
}

fn bzmpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let timeout = match parse_timeout(args[0]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    let keys = match parse_mpop(&args[1..]) {
        Ok((keys, _, _)) => keys.to_vec(),
        Err(e) => return ctx.reply.error(&e),
    };
    block_on(ctx, args, &keys, timeout, bzmpop_try, NullReply::Array);
}

// ---------------------------------------------------------------------------
// ZRANDMEMBER.
// ---------------------------------------------------------------------------

fn zrandmember(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let Some(count_arg) = args.get(1) else {
        return with_zset(ctx, args[0], |zset, reply| {
            let Some(zset) = zset.filter(|z| !z.is_empty()) else {
                return reply.null();
            };
            // The index has no random access: walk to a random rank.
            let rank = rng().random_range(0..zset.len());
            match zset.iter().nth(rank) {
                Some((member, _)) => reply.bulk(member),
                None => reply.null(),
            }
        });
    };
    let count = match parse_int(count_arg) {
        Ok(i64::MIN) => {
            return ctx
                .reply
                .error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807");
        }
        Ok(count) => count,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let withscores = match args.get(2) {
        None => false,
        Some(option) if args.len() == 3 && option.eq_ignore_ascii_case(b"WITHSCORES") => true,
        Some(_) => return ctx.reply.error(SYNTAX_ERROR),
    };
    if (withscores && !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count))
        || (count < 0 && count.unsigned_abs() > RANDMEMBER_REPEAT_MAX)
    {
        return ctx.reply.error("ERR value is out of range");
    }
    with_zset(ctx, args[0], |zset, reply| {
        let Some(zset) = zset.filter(|z| !z.is_empty()) else {
            return reply.array(0);
        };
        let all: Vec<(&[u8], f64)> = collect(zset.iter());
        let mut rng = rng();
        if count < 0 {
            // Repetitions allowed: `-count` independent picks, written as
            // they are drawn.
            let picks = count.unsigned_abs() as usize;
            let nested = withscores && reply.protocol() == Protocol::Resp3;
            reply.array(if withscores && !nested { picks * 2 } else { picks });
            for _ in 0..picks {
                let (member, score) = all[rng.random_range(0..all.len())];
                if nested {
                    reply.array(2);
                }
                reply.bulk(member);
                if withscores {
                    reply.double(score);
                }
            }
            return;
        }
        let count = count as usize;
        if count >= all.len() {
            // The whole set, greatest first, as Redis does (it replies with
            // the reversed rank range).
            let mut all = all;
            all.reverse();
            return reply_members(reply, &all, withscores);
        }
        // Distinct members: a partial Fisher-Yates shuffle.
        let mut all = all;
        for i in 0..count {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        reply_members(reply, &all[..count], withscores);
    });
}

// ---------------------------------------------------------------------------
// Set algebra: ZUNION, ZINTER, ZDIFF, their STORE forms, ZINTERCARD.
// ---------------------------------------------------------------------------

/// One input of the set algebra: a sorted set, or a plain set whose members
/// all count as score 1 (as in Redis), or nothing.
#[derive(Clone, Copy)]
enum Source<'a> {
    Missing,
    ZSet(&'a OrZSet),
    Set(&'a OrSet),
}

impl<'a> Source<'a> {
    fn len(&self) -> usize {
        match self {
            Source::Missing => 0,
            Source::ZSet(z) => z.len(),
            Source::Set(s) => s.len(),
        }
    }

    fn score(&self, member: &[u8]) -> Option<f64> {
        match self {
            Source::Missing => None,
            Source::ZSet(z) => z.score(member),
            Source::Set(s) => s.contains(member).then_some(1.0),
        }
    }

    /// Every (member, score).
    fn for_each(&self, mut f: impl FnMut(&'a [u8], f64)) {
        match *self {
            Source::Missing => {}
            Source::ZSet(z) => z.iter().for_each(|(m, s)| f(m.as_slice(), s)),
            Source::Set(s) => s.members().for_each(|m| f(m.as_slice(), 1.0)),
        }
    }
}

/// Which operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// AGGREGATE SUM|MIN|MAX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

impl Aggregate {
    /// Redis's `zunionInterAggregate`: +inf plus -inf is 0, not NaN.
    fn fold(self, target: &mut f64, value: f64) {
        match self {
            Aggregate::Sum => {
                *target += value;
                if target.is_nan() {
                    *target = 0.0;
                }
            }
            Aggregate::Min => {
                if value < *target {
                    *target = value;
                }
            }
            Aggregate::Max => {
                if value > *target {
                    *target = value;
                }
            }
        }
    }
}

/// A score times its weight; inf × 0 is 0, as in Redis.
fn weighted(score: f64, weight: f64) -> f64 {
    let value = score * weight;
    if value.is_nan() { 0.0 } else { value }
}

/// The options of a set-algebra command.
struct AlgebraOptions {
    weights: Vec<f64>,
    aggregate: Aggregate,
    withscores: bool,
    /// ZINTERCARD's LIMIT (0: none).
    limit: usize,
}

/// Parses the options after the keys, as Redis's
/// `zunionInterDiffGenericCommand` does (after the key types were checked).
fn parse_algebra_options(
    options: &[&[u8]],
    numkeys: usize,
    op: SetOp,
    store: bool,
    cardinality_only: bool,
) -> Result<AlgebraOptions, String> {
    let mut parsed =
        AlgebraOptions { weights: vec![1.0; numkeys], aggregate: Aggregate::Sum, withscores: false, limit: 0 };
    let mut at = 0;
    while at < options.len() {
        let remaining = options.len() - at;
        let option = options[at].to_ascii_uppercase();
        let algebra = op != SetOp::Diff && !cardinality_only;
        match option.as_slice() {
            b"WEIGHTS" if algebra && remaining > numkeys => {
                for (i, weight) in options[at + 1..=at + numkeys].iter().enumerate() {
                    parsed.weights[i] =
                        parse_float(weight).map_err(|_| "ERR weight value is not a float".to_string())?;
                }
                at += 1 + numkeys;
            }
            b"AGGREGATE" if algebra && remaining >= 2 => {
                parsed.aggregate = match options[at + 1].to_ascii_uppercase().as_slice() {
                    b"SUM" => Aggregate::Sum,
                    b"MIN" => Aggregate::Min,
                    b"MAX" => Aggregate::Max,
                    _ => return Err(SYNTAX_ERROR.into()),
                };
                at += 2;
            }
            b"WITHSCORES" if !store && !cardinality_only => {
                parsed.withscores = true;
                at += 1;
            }
            b"LIMIT" if cardinality_only && remaining >= 2 => {
                parsed.limit = parse_ranged(options[at + 1], 0, i64::MAX, "LIMIT can't be negative")? as usize;
                at += 2;
            }
            _ => return Err(SYNTAX_ERROR.into()),
        }
    }
    Ok(parsed)
}

/// Runs `op` over `sources`: the result in Redis order (score, then member).
fn compute<'a>(sources: &[Source<'a>], op: SetOp, options: &AlgebraOptions) -> Vec<(&'a [u8], f64)> {
    let mut result: Vec<(&'a [u8], f64)> = Vec::new();
    // Like Redis, union and intersection visit the inputs from the smallest
    // to the largest (a stable sort, as glibc's qsort is): with infinite
    // scores the order decides where a NaN sum turns into 0.
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| sources[i].len());
    match op {
        SetOp::Union => {
            let mut scores: HashMap<&'a [u8], f64> = HashMap::new();
            for &i in &order {
                let weight = options.weights[i];
                sources[i].for_each(|member, score| {
                    let value = weighted(score, weight);
                    scores.entry(member).and_modify(|target| options.aggregate.fold(target, value)).or_insert(value);
                });
            }
            result.extend(scores);
        }
        SetOp::Inter => {
            // Walk the smallest input and look the others up, like Redis.
            let Some((first, rest)) = order.split_first() else {
                return result;
            };
            sources[*first].for_each(|member, score| {
                let mut total = weighted(score, options.weights[*first]);
                for &i in rest {
                    // Redis fixes a NaN product (inf × 0) only for the first
                    // input; here it reaches the aggregate, where a sum turns
                    // it into 0 and MIN/MAX ignore it.
                    match sources[i].score(member) {
                        Some(score) => options.aggregate.fold(&mut total, score * options.weights[i]),
                        None => return,
                    }
                }
                result.push((member, total));
            });
        }
        SetOp::Diff => {
            let Some((first, rest)) = sources.split_first() else {
                return result;
            };
            first.for_each(|member, score| {
                if rest.iter().all(|source| source.score(member).is_none()) {
                    result.push((member, score));
                }
            });
        }
    }
    result.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal).then_with(|| a.0.cmp(b.0)));
    result
}

/// Every set-algebra command: `args` starts at `numkeys`; `dst` for the STORE
/// forms.
fn algebra(
    ctx: &mut Context<'_, '_>,
    args: &[&[u8]],
    op: SetOp,
    dst: Option<&[u8]>,
    cardinality_only: bool,
    command: &str,
) {
    let numkeys = match parse_int(args[0]) {
        Ok(n) => n,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    if numkeys < 1 {
        return ctx.reply.error(&format!("ERR at least 1 input key is needed for '{command}' command"));
    }
    if numkeys as u64 > (args.len() - 1) as u64 {
        return ctx.reply.error(SYNTAX_ERROR);
    }
    let numkeys = numkeys as usize;
    let (keys, options) = args[1..].split_at(numkeys);
    let stored: Vec<(Vec<u8>, f64)> = {
        let shard = ctx.server.shard();
        let now = shard.wall_ms();
        let mut sources = Vec::with_capacity(numkeys);
        for key in keys {
            sources.push(match shard.keyspace().view(key, now) {
                None => Source::Missing,
                Some(View::Value(TypedValue::ZSet(z))) => Source::ZSet(z),
                Some(View::Value(TypedValue::Set(s))) => Source::Set(s),
                Some(_) => {
                    drop(shard);
                    return ctx.reply.error(&CommandError::WrongType.to_string());
                }
            });
        }
        let options = match parse_algebra_options(options, numkeys, op, dst.is_some(), cardinality_only) {
            Ok(options) => options,
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&e);
            }
        };
        if cardinality_only {
            let count = intersection_cardinality(&sources, options.limit);
            drop(shard);
            return ctx.reply.integer(count as i64);
        }
        let result = compute(&sources, op, &options);
        if dst.is_none() {
            return reply_members(&mut ctx.reply, &result, options.withscores);
        }
        result.into_iter().map(|(m, s)| (m.to_vec(), s)).collect()
    };
    let Some(dst) = dst else {
        return;
    };
    let items: Vec<(f64, &[u8])> = stored.iter().map(|(m, s)| (*s, m.as_slice())).collect();
    store_reply(ctx, dst, &items);
}

/// ZINTERCARD: members in every source, counting stopped at `limit` (0: no
/// limit).
fn intersection_cardinality(sources: &[Source<'_>], limit: usize) -> usize {
    let Some(smallest) = sources.iter().min_by_key(|s| s.len()) else {
        return 0;
    };
    let mut count = 0;
    smallest.for_each(|member, _| {
        if (limit == 0 || count < limit) && sources.iter().all(|s| s.score(member).is_some()) {
            count += 1;
        }
    });
    count
}

fn zunion(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, SetOp::Union, None, false, "zunion");
}

fn zunionstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, &args[1..], SetOp::Union, Some(args[0]), false, "zunionstore");
}

fn zinter(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, SetOp::Inter, None, false, "zinter");
}

fn zinterstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, &args[1..], SetOp::Inter, Some(args[0]), false, "zinterstore");
}

fn zintercard(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, SetOp::Inter, None, true, "zintercard");
}

fn zdiff(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, args, SetOp::Diff, None, false, "zdiff");
}

fn zdiffstore(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    algebra(ctx, &args[1..], SetOp::Diff, Some(args[0]), false, "zdiffstore");
}

// ---------------------------------------------------------------------------
// ZSCAN.
// ---------------------------------------------------------------------------

/// A member's scan position: the fixed 64-bit hash HSCAN and SSCAN use
/// ([`super::scan::position`]), the same in every process and release, so a
/// cursor stays valid across calls and failovers.
fn scan_position(member: &[u8]) -> u64 {
    super::scan::position(member)
}

/// One ZSCAN call over the members at or after the cursor (`ahead`, with
/// their positions, in any order): the batch to return, in position order,
/// and the next cursor (0 when nothing is left). At most `take` members are
/// returned, except that members sharing a position are never split: when
/// the `take`-th and later members share the lowest position, all of them
/// are returned and the cursor moves past it, so every call makes progress.
fn scan_batch<T>(mut ahead: Vec<(u64, T)>, take: usize) -> (u64, Vec<(u64, T)>) {
    let take = take.max(1);
    let mut next = 0;
    if ahead.len() > take {
        // The first member not returned decides the next cursor; every member
        // before it in position order is returned now.
        ahead.select_nth_unstable_by_key(take, |(position, _)| *position);
        let boundary = ahead[take].0;
        if ahead[..take].iter().any(|(position, _)| *position < boundary) {
            ahead.truncate(take);
            ahead.retain(|(position, _)| *position < boundary);
            next = boundary;
        } else {
            // Every member up to the boundary shares its position: return
            // them all and move past it (past u64::MAX is the end, 0).
            ahead.retain(|(position, _)| *position == boundary);
            next = boundary.wrapping_add(1);
        }
    }
    ahead.sort_unstable_by_key(|(position, _)| *position);
    (next, ahead)
}

/// ZSCAN key cursor [MATCH pattern] [COUNT count].
///
/// The guarantee Redis gives — a member present for the whole scan is
/// returned at least once, cursor 0 ends it — needs an order that writes do
/// not disturb, and the score order is not one (ZINCRBY moves members). So
/// the cursor is a position in the order of [`scan_position`], a fixed hash of
/// the member bytes: a call returns the members whose position is at or after
/// the cursor, lowest positions first, and the next cursor is the position of
/// the first member not returned. A member's position never changes, so a
/// member present throughout is at or after every cursor until it is
/// returned. Members sharing a position are returned together, so the cursor
/// always advances. A set of at most [`SCAN_SMALL_MAX`] members is returned
/// whole, cursor 0, as Redis does for small sets; a larger one costs O(n) per
/// call, so each call returns at least 1/[`SCAN_CALLS_MAX`] of it (COUNT is a
/// hint in Redis too).
fn zscan(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let cursor = match super::scan::parse_cursor(args[1]) {
        Ok(cursor) => cursor,
        Err(error) => return ctx.reply.error(error),
    };
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let zset = match shard.keyspace().zset_value(args[0], now) {
        Ok(Some(zset)) => zset,
        Ok(None) => {
            drop(shard);
            ctx.reply.array(2);
            ctx.reply.bulk(b"0");
            return ctx.reply.array(0);
        }
        Err(e) => {
            drop(shard);
            return ctx.reply.error(&e.to_string());
        }
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count: usize = 10;
    let mut at = 2;
    while at < args.len() {
        let Some(value) = args.get(at + 1) else {
            drop(shard);
            return ctx.reply.error(SYNTAX_ERROR);
        };
        match args[at].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value),
            b"COUNT" => match parse_int(value) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => {
                    drop(shard);
                    return ctx.reply.error(SYNTAX_ERROR);
                }
                Err(e) => {
                    drop(shard);
                    return ctx.reply.error(&e.to_string());
                }
            },
            _ => {
                drop(shard);
                return ctx.reply.error(SYNTAX_ERROR);
            }
        }
        at += 2;
    }
    let (next, batch): (u64, Vec<(&[u8], f64)>) = if zset.len() <= SCAN_SMALL_MAX {
        (0, collect(zset.iter()))
    } else {
        let ahead: Vec<(u64, (&[u8], f64))> = zset
            .iter()
            .map(|(m, s)| (scan_position(m), (m.as_slice(), s)))
            .filter(|(position, _)| *position >= cursor)
            .collect();
        let (next, batch) = scan_batch(ahead, count.max(zset.len().div_ceil(SCAN_CALLS_MAX)));
        (next, batch.into_iter().map(|(_, item)| item).collect())
    };
    let batch: Vec<(&[u8], f64)> =
        batch.into_iter().filter(|(m, _)| pattern.is_none_or(|p| glob_match(p, m, false))).collect();
    ctx.reply.array(2);
    ctx.reply.bulk(next.to_string().as_bytes());
    // Scores are strings in both protocols, as Redis replies them.
    ctx.reply.array(batch.len() * 2);
    for (member, score) in batch {
        ctx.reply.bulk(member);
        ctx.reply.bulk(meridian_crdt::number::format_score(score).as_bytes());
    }
    drop(shard);
}

// ---------------------------------------------------------------------------
// COMMAND DOCS.
// ---------------------------------------------------------------------------

/// The arguments of BZPOPMIN and BZPOPMAX.
const BLOCKING_KEYS: &[Arg] =
    &[Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] }, arg("timeout", "double")];

/// COMMAND DOCS for the sorted-set commands, sorted by name: Redis 7.2's
/// summaries, Redis's complexities, and the arguments where they are a plain
/// list (commands with options leave them undescribed, as the other families do).
pub static DOCS: &[(&str, Doc)] = &[
    (
        "bzmpop",
        doc(
            "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
            "7.0.0",
            "sorted-set",
            "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped.",
            &[],
        ),
    ),
    (
        "bzpopmax",
        doc(
            "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise.  Deletes the sorted set if the last element was popped.",
            "5.0.0",
            "sorted-set",
            "O(log(N)) with N being the number of elements in the sorted set.",
            BLOCKING_KEYS,
        ),
    ),
    (
        "bzpopmin",
        doc(
            "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise. Deletes the sorted set if the last element was popped.",
            "5.0.0",
            "sorted-set",
            "O(log(N)) with N being the number of elements in the sorted set.",
            BLOCKING_KEYS,
        ),
    ),
    (
        "zadd",
        doc(
            "Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.",
            "1.2.0",
            "sorted-set",
            "O(log(N)) for each item added, where N is the number of elements in the sorted set.",
            &[],
        ),
    ),
    ("zcard", doc("Returns the number of members in a sorted set.", "1.2.0", "sorted-set", "O(1)", KEY)),
    (
        "zcount",
        doc(
            "Returns the count of members in a sorted set that have scores within a range.",
            "2.0.0",
            "sorted-set",
            "O(log(N)) with N being the number of elements in the sorted set.",
            &[key(0), arg("min", "double"), arg("max", "double")],
        ),
    ),
    (
        "zdiff",
        doc(
            "Returns the difference between multiple sorted sets.",
            "6.2.0",
            "sorted-set",
            "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set.",
            &[],
        ),
    ),
    (
        "zdiffstore",
        doc(
            "Stores the difference of multiple sorted sets in a key.",
            "6.2.0",
            "sorted-set",
            "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set.",
            &[
                Arg { name: "destination", kind: "key", key_spec: Some(0), flags: &[] },
                arg("numkeys", "integer"),
                Arg { name: "key", kind: "key", key_spec: Some(1), flags: &["multiple"] },
            ],
        ),
    ),
    (
        "zincrby",
        doc(
            "Increments the score of a member in a sorted set.",
            "1.2.0",
            "sorted-set",
            "O(log(N)) where N is the number of elements in the sorted set.",
            &[key(0), arg("increment", "integer"), arg("member", "string")],
        ),
    ),
    (
        "zinter",
        doc(
            "Returns the intersect of multiple sorted sets.",
            "6.2.0",
            "sorted-set",
            "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set.",
            &[],
        ),
    ),
    (
        "zintercard",
        doc(
            "Returns the number of members of the intersect of multiple sorted sets.",
            "7.0.0",
            "sorted-set",
            "O(N*K) worst case with N being the smallest input sorted set, K being the number of input sorted sets.",
            &[],
        ),
    ),
    (
        "zinterstore",
        doc(
            "Stores the intersect of multiple sorted sets in a key.",
            "2.0.0",
            "sorted-set",
            "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set.",
            &[],
        ),
    ),
    (
        "zlexcount",
        doc(
            "Returns the number of members in a sorted set within a lexicographical range.",
            "2.8.9",
            "sorted-set",
            "O(log(N)) with N being the number of elements in the sorted set.",
            &[key(0), arg("min", "string"), arg("max", "string")],
        ),
    ),
    (
        "zmpop",
        doc(
            "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them. Deletes the sorted set if the last member was popped.",
            "7.0.0",
            "sorted-set",
            "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped.",
            &[],
        ),
    ),
    (
        "zmscore",
        doc(
            "Returns the score of one or more members in a sorted set.",
            "6.2.0",
            "sorted-set",
            "O(N) where N is the number of members being requested.",
            &[key(0), Arg { name: "member", kind: "string", key_spec: None, flags: &["multiple"] }],
        ),
    ),
    (
        "zpopmax",
        doc(
            "Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
            "5.0.0",
            "sorted-set",
            "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped.",
            &[key(0), Arg { name: "count", kind: "integer", key_spec: None, flags: &["optional"] }],
        ),
    ),
    (
        "zpopmin",
        doc(
            "Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
            "5.0.0",
            "sorted-set",
            "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped.",
            &[key(0), Arg { name: "count", kind: "integer", key_spec: None, flags: &["optional"] }],
        ),
    ),
    (
        "zrandmember",
        doc(
            "Returns one or more random members from a sorted set.",
            "6.2.0",
            "sorted-set",
            "O(N) where N is the number of elements returned",
            &[],
        ),
    ),
    (
        "zrange",
        doc(
            "Returns members in a sorted set within a range of indexes.",
            "1.2.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.",
            &[],
        ),
    ),
    (
        "zrangebylex",
        doc(
            "Returns members in a sorted set within a lexicographical range.",
            "2.8.9",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
            &[],
        ),
    ),
    (
        "zrangebyscore",
        doc(
            "Returns members in a sorted set within a range of scores.",
            "1.0.5",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
            &[],
        ),
    ),
    (
        "zrangestore",
        doc(
            "Stores a range of members from sorted set in a key.",
            "6.2.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements stored into the destination key.",
            &[],
        ),
    ),
    (
        "zrank",
        doc(
            "Returns the index of a member in a sorted set ordered by ascending scores.",
            "2.0.0",
            "sorted-set",
            "O(log(N))",
            &[],
        ),
    ),
    (
        "zrem",
        doc(
            "Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.",
            "1.2.0",
            "sorted-set",
            "O(M*log(N)) with N being the number of elements in the sorted set and M the number of elements to be removed.",
            &[key(0), Arg { name: "member", kind: "string", key_spec: None, flags: &["multiple"] }],
        ),
    ),
    (
        "zremrangebylex",
        doc(
            "Removes members in a sorted set within a lexicographical range. Deletes the sorted set if all members were removed.",
            "2.8.9",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
            &[key(0), arg("min", "string"), arg("max", "string")],
        ),
    ),
    (
        "zremrangebyrank",
        doc(
            "Removes members in a sorted set within a range of indexes. Deletes the sorted set if all members were removed.",
            "2.0.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
            &[key(0), arg("start", "integer"), arg("stop", "integer")],
        ),
    ),
    (
        "zremrangebyscore",
        doc(
            "Removes members in a sorted set within a range of scores. Deletes the sorted set if all members were removed.",
            "1.2.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation.",
            &[key(0), arg("min", "double"), arg("max", "double")],
        ),
    ),
    (
        "zrevrange",
        doc(
            "Returns members in a sorted set within a range of indexes in reverse order.",
            "1.2.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.",
            &[],
        ),
    ),
    (
        "zrevrangebylex",
        doc(
            "Returns members in a sorted set within a lexicographical range in reverse order.",
            "2.8.9",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
            &[],
        ),
    ),
    (
        "zrevrangebyscore",
        doc(
            "Returns members in a sorted set within a range of scores in reverse order.",
            "2.2.0",
            "sorted-set",
            "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).",
            &[],
        ),
    ),
    (
        "zrevrank",
        doc(
            "Returns the index of a member in a sorted set ordered by descending scores.",
            "2.0.0",
            "sorted-set",
            "O(log(N))",
            &[],
        ),
    ),
    (
        "zscan",
        doc(
            "Iterates over members and scores of a sorted set.",
            "2.8.0",
            "sorted-set",
            "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection..",
            &[],
        ),
    ),
    (
        "zscore",
        doc(
            "Returns the score of a member in a sorted set.",
            "1.2.0",
            "sorted-set",
            "O(1)",
            &[key(0), arg("member", "string")],
        ),
    ),
    (
        "zunion",
        doc(
            "Returns the union of multiple sorted sets.",
            "6.2.0",
            "sorted-set",
            "O(N)+O(M*log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set.",
            &[],
        ),
    ),
    (
        "zunionstore",
        doc(
            "Stores the union of multiple sorted sets in a key.",
            "2.0.0",
            "sorted-set",
            "O(N)+O(M log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set.",
            &[],
        ),
    ),
];

#[cfg(test)]
mod tests {
    use meridian_crdt::ReplicaId;
    use meridian_crdt::keyspace::{Keyspace, Moment};

    use super::*;

    const NOW: u64 = 1_790_000_000_000;

    #[test]
    fn score_bounds_parse_like_zsl_parse_range() {
        assert_eq!(parse_score_bound(b"1.5"), Some(ScoreBound::inclusive(1.5)));
        assert_eq!(parse_score_bound(b"(1.5"), Some(ScoreBound::exclusive(1.5)));
        assert_eq!(parse_score_bound(b"-inf"), Some(ScoreBound::NEG_INF));
        assert_eq!(parse_score_bound(b"(+inf"), Some(ScoreBound::exclusive(f64::INFINITY)));
        assert_eq!(parse_score_bound(b""), Some(ScoreBound::inclusive(0.0)));
        assert_eq!(parse_score_bound(b"("), Some(ScoreBound::exclusive(0.0)));
        assert_eq!(parse_score_bound(b"  7"), Some(ScoreBound::inclusive(7.0)));
        for bad in [&b"  "[..], b"7 ", b"nan", b"(nan", b"[1", b"abc", b"((1"] {
            assert_eq!(parse_score_bound(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn scan_batches_never_split_a_position_and_always_advance() {
        let batch = |positions: &[u64], take| {
            let (next, items) = scan_batch(positions.iter().map(|&p| (p, ())).collect(), take);
            (next, items.into_iter().map(|(p, ())| p).collect::<Vec<_>>())
        };
        assert_eq!(batch(&[4, 1, 3, 2], 10), (0, vec![1, 2, 3, 4]), "everything left: the scan ends");
        assert_eq!(batch(&[4, 1, 3, 2], 2), (3, vec![1, 2]));
        assert_eq!(batch(&[1, 3, 2, 3, 4], 3), (3, vec![1, 2]), "the 3s go together in the next call");
        assert_eq!(batch(&[5, 5, 7, 5], 2), (6, vec![5, 5, 5]), "a shared position is returned whole");
        assert_eq!(batch(&[u64::MAX, u64::MAX], 1), (0, vec![u64::MAX, u64::MAX]), "past the last position is 0");
        assert_eq!(batch(&[], 1), (0, vec![]));
    }

    #[test]
    fn scan_positions_are_a_fixed_hash() {
        assert_ne!(scan_position(b"a"), scan_position(b"b"));
        assert_eq!(scan_position(b"member"), scan_position(b"member"));
    }

    /// Plain sets are inputs whose members all score 1, as in Redis.
    #[test]
    fn set_algebra_reads_plain_sets_as_score_one() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        let at = Moment { hlc: 1, wall_ms: NOW };
        keyspace.zadd(b"z", &[(2.0, b"y"), (3.0, b"x")], ZAddFlags::default(), at).unwrap();
        let at = Moment { hlc: 2, wall_ms: NOW };
        keyspace.sadd(b"s", &[b"y", b"w"], at).unwrap();
        let zset = keyspace.zset_value(b"z", NOW).unwrap().unwrap();
        let set = keyspace.set_value(b"s", NOW).unwrap().unwrap();
        let sources = [Source::ZSet(zset), Source::Set(set)];
        let options = |weights: Vec<f64>, aggregate| AlgebraOptions { weights, aggregate, withscores: true, limit: 0 };
        let owned = |items: Vec<(&[u8], f64)>| -> Vec<(String, f64)> {
            items.into_iter().map(|(m, s)| (String::from_utf8(m.to_vec()).unwrap(), s)).collect()
        };
        let union = compute(&sources, SetOp::Union, &options(vec![1.0, 1.0], Aggregate::Sum));
        assert_eq!(owned(union), [("w".into(), 1.0), ("x".into(), 3.0), ("y".into(), 3.0)]);
        let inter = compute(&sources, SetOp::Inter, &options(vec![1.0, 10.0], Aggregate::Max));
        assert_eq!(owned(inter), [("y".into(), 10.0)]);
        let diff =
            compute(&[Source::Set(set), Source::ZSet(zset)], SetOp::Diff, &options(vec![1.0, 1.0], Aggregate::Sum));
        assert_eq!(owned(diff), [("w".into(), 1.0)]);
        assert_eq!(intersection_cardinality(&[Source::Set(set), Source::ZSet(zset), Source::Missing], 0), 0);
        assert_eq!(intersection_cardinality(&sources, 0), 1);
    }

    #[test]
    fn aggregates_follow_redis_for_infinities() {
        let mut total = f64::INFINITY;
        Aggregate::Sum.fold(&mut total, f64::NEG_INFINITY);
        assert_eq!(total, 0.0, "inf + -inf is 0");
        assert_eq!(weighted(f64::INFINITY, 0.0), 0.0, "inf × 0 is 0");
        let mut low = 3.0;
        Aggregate::Min.fold(&mut low, 1.0);
        Aggregate::Max.fold(&mut low, 0.5);
        assert_eq!(low, 1.0);
    }
}
