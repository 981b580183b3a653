//! Black-box tests of the sorted-set commands over the Redis protocol.
//!
//! Every test starts its own in-process node and talks to it with the raw
//! RESP client of `common`, so replies are checked exactly as Redis 7.2 sends
//! them: the error texts, RESP2 scores as bulk strings in Redis's `d2string`
//! format, RESP3 doubles and nested [member, score] pairs, and null arrays
//! (`*-1`) where Redis sends one. The expectations were checked against a
//! real `redis-server` (7.0; the 7.2 additions — ZRANK WITHSCORE and the
//! shortest score format — follow the 7.2 source). The suite covers, per
//! command, the normal case, the edges (missing key, wrong type, negative and
//! out-of-range indexes, huge counts, infinite and exclusive bounds, empty
//! ranges) and the errors, plus one test through the `redis` crate.

use std::collections::{HashMap, HashSet};

mod common;
use common::*;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SCORE_RANGE: &str = "ERR min or max is not a float";
const LEX_RANGE: &str = "ERR min or max not valid string range item";

fn arr(items: Vec<Resp>) -> Resp {
    Resp::Array(items)
}

/// An array of bulk strings.
fn bulks(items: &[&str]) -> Resp {
    arr(items.iter().map(bulk).collect())
}

/// A RESP3 double.
fn dbl(text: &str) -> Resp {
    Resp::Double(text.to_string())
}

/// RESP3's WITHSCORES shape: an array of [member, double] pairs.
fn pairs(items: &[(&str, &str)]) -> Resp {
    arr(items.iter().map(|(m, s)| arr(vec![bulk(m), dbl(s)])).collect())
}

async fn resp3(c: &mut Client) {
    let Resp::Map(_) = c.cmd(&["HELLO", "3"]).await else { panic!("HELLO 3 did not answer a map") };
}

/// Sends a command and returns its raw reply bytes (exactly `len` of them).
async fn raw(c: &mut Client, args: &[&str], len: usize) -> Vec<u8> {
    c.send(&encode(args)).await;
    c.read_raw(len, REPLY_TIMEOUT).await
}

// ---------------------------------------------------------------------------
// ZADD, ZINCRBY, ZREM, ZCARD, ZSCORE, ZMSCORE.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zadd_adds_updates_and_counts_like_redis() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await, int(3));
    assert_eq!(c.cmd(&["ZADD", "z", "1", "a"]).await, int(0), "same score: not counted");
    assert_eq!(c.cmd(&["ZADD", "z", "5", "a", "6", "b", "7", "new"]).await, int(1), "updates are not counted");
    assert_eq!(c.cmd(&["ZADD", "z", "CH", "8", "a", "6", "b", "9", "new2"]).await, int(2), "CH counts changes");
    assert_eq!(c.cmd(&["ZADD", "z", "NX", "100", "a", "11", "x"]).await, int(1), "NX only adds");
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]).await, bulk("8"));
    assert_eq!(c.cmd(&["ZADD", "z", "XX", "20", "a", "21", "y"]).await, int(0), "XX never adds");
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]).await, bulk("20"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "y"]).await, nil());
    assert_eq!(c.cmd(&["ZADD", "z", "XX", "CH", "21", "a", "6", "b"]).await, int(1));
    assert_eq!(c.cmd(&["ZADD", "z", "GT", "CH", "1", "a"]).await, int(0), "GT refuses a lower score");
    assert_eq!(c.cmd(&["ZADD", "z", "GT", "CH", "100", "a"]).await, int(1));
    assert_eq!(c.cmd(&["ZADD", "z", "LT", "CH", "200", "a"]).await, int(0), "LT refuses a higher score");
    assert_eq!(c.cmd(&["ZADD", "z", "LT", "CH", "0", "a"]).await, int(1));
    assert_eq!(c.cmd(&["ZADD", "z", "GT", "1", "fresh"]).await, int(1), "GT and LT never stop an add");
    assert_eq!(c.cmd(&["ZADD", "z", "xx", "gt", "ch", "50", "a"]).await, int(1), "options are case-insensitive");
    // A member named twice: the later pair wins, counted once.
    assert_eq!(c.cmd(&["ZADD", "d", "1", "m", "2", "m"]).await, int(1));
    assert_eq!(c.cmd(&["ZSCORE", "d", "m"]).await, bulk("2"));
    assert_eq!(c.cmd(&["ZADD", "d", "CH", "3", "m", "3", "m"]).await, int(1));
    assert_eq!(c.cmd(&["ZADD", "d", "XX", "5", "nope"]).await, int(0));
    assert_eq!(c.cmd(&["ZADD", "missing", "XX", "5", "m"]).await, int(0), "XX on a missing key creates nothing");
    assert_eq!(c.cmd(&["EXISTS", "missing"]).await, int(0));
    // Scores: infinities, exponents, binary-safe members.
    assert_eq!(c.cmd(&["ZADD", "s", "inf", "top", "-inf", "bottom", "+inf", "top2", "1e3", "k"]).await, int(4));
    assert_eq!(c.cmd(&["ZSCORE", "s", "top"]).await, bulk("inf"));
    assert_eq!(c.cmd(&["ZSCORE", "s", "bottom"]).await, bulk("-inf"));
    assert_eq!(c.cmd(&["ZSCORE", "s", "k"]).await, bulk("1000"));
    let member: &[u8] = b"a\r\n\0\xffb";
    assert_eq!(c.cmd(&[b"ZADD" as &[u8], b"s", b"0", member]).await, int(1));
    assert_eq!(c.cmd(&[b"ZSCORE" as &[u8], b"s", member]).await, bulk("0"));
    assert_eq!(c.cmd(&["TYPE", "s"]).await, simple("zset"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zadd_refuses_what_redis_refuses() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a"]).await;
    assert_eq!(
        c.cmd(&["ZADD", "z", "NX", "XX", "1", "a"]).await,
        error("ERR XX and NX options at the same time are not compatible")
    );
    let gt_lt_nx = error("ERR GT, LT, and/or NX options at the same time are not compatible");
    assert_eq!(c.cmd(&["ZADD", "z", "NX", "GT", "1", "a"]).await, gt_lt_nx);
    assert_eq!(c.cmd(&["ZADD", "z", "LT", "NX", "1", "a"]).await, gt_lt_nx);
    assert_eq!(c.cmd(&["ZADD", "z", "GT", "LT", "1", "a"]).await, gt_lt_nx);
    assert_eq!(
        c.cmd(&["ZADD", "z", "INCR", "1", "a", "2", "b"]).await,
        error("ERR INCR option supports a single increment-element pair")
    );
    assert_eq!(c.cmd(&["ZADD", "z", "1", "a", "2"]).await, error(SYNTAX), "an odd number of score/member arguments");
    assert_eq!(c.cmd(&["ZADD", "z", "NX", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZADD", "z", "abc", "a"]).await, error(NOT_FLOAT));
    assert_eq!(c.cmd(&["ZADD", "z", "nan", "a"]).await, error(NOT_FLOAT));
    assert_eq!(c.cmd(&["ZADD", "z", "1", "a", "x", "b"]).await, error(NOT_FLOAT), "all scores parse before any write");
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]).await, bulk("1"));
    assert_eq!(c.cmd(&["ZADD", "z", "1"]).await, arity_error("zadd"));
    assert_eq!(c.cmd(&["ZADD", "z", "XX"]).await, arity_error("zadd"));
    assert_eq!(c.cmd(&["ZADD", "z"]).await, arity_error("zadd"));
    // Option conflicts are found before the key's type.
    c.cmd(&["SET", "str", "x"]).await;
    assert_eq!(
        c.cmd(&["ZADD", "str", "NX", "XX", "1", "a"]).await,
        error("ERR XX and NX options at the same time are not compatible")
    );
    assert_eq!(c.cmd(&["ZADD", "str", "1", "a"]).await, error(WRONGTYPE));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zadd_incr_and_zincrby_add_and_refuse_nan() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["ZINCRBY", "z", "2", "m"]).await, bulk("2"), "a missing member starts at the increment");
    assert_eq!(c.cmd(&["ZINCRBY", "z", "0.5", "m"]).await, bulk("2.5"));
    assert_eq!(c.cmd(&["ZINCRBY", "z", "-10", "m"]).await, bulk("-7.5"));
    assert_eq!(c.cmd(&["ZINCRBY", "z", "0.1", "f"]).await, bulk("0.1"));
    assert_eq!(c.cmd(&["ZINCRBY", "z", "0.2", "f"]).await, bulk("0.30000000000000004"));
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "1", "m"]).await, bulk("-6.5"));
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "NX", "1", "m"]).await, nil(), "NX on an existing member");
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "XX", "1", "nope"]).await, nil(), "XX on a missing member");
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "GT", "-1", "m"]).await, nil(), "GT refuses a decrease");
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "LT", "-1", "m"]).await, bulk("-7.5"));
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "NX", "3", "new"]).await, bulk("3"));
    // Infinities add; +inf plus -inf is refused and changes nothing.
    assert_eq!(c.cmd(&["ZADD", "i", "inf", "a"]).await, int(1));
    assert_eq!(c.cmd(&["ZINCRBY", "i", "inf", "a"]).await, bulk("inf"));
    assert_eq!(c.cmd(&["ZINCRBY", "i", "-inf", "a"]).await, error("ERR resulting score is not a number (NaN)"));
    assert_eq!(c.cmd(&["ZADD", "i", "INCR", "-inf", "a"]).await, error("ERR resulting score is not a number (NaN)"));
    assert_eq!(c.cmd(&["ZSCORE", "i", "a"]).await, bulk("inf"));
    assert_eq!(c.cmd(&["ZADD", "i", "INCR", "1e308", "b"]).await, bulk("1e+308"));
    assert_eq!(c.cmd(&["ZADD", "i", "INCR", "1e308", "b"]).await, bulk("inf"), "overflow is +inf, as in C");
    assert_eq!(c.cmd(&["ZINCRBY", "i", "nan", "a"]).await, error(NOT_FLOAT));
    assert_eq!(c.cmd(&["ZINCRBY", "i", "one", "a"]).await, error(NOT_FLOAT));
    assert_eq!(c.cmd(&["ZINCRBY", "i", "1"]).await, arity_error("zincrby"));
    c.cmd(&["SET", "str", "x"]).await;
    assert_eq!(c.cmd(&["ZINCRBY", "str", "1", "a"]).await, error(WRONGTYPE));
    assert_eq!(c.cmd(&["ZADD", "str", "INCR", "1", "a"]).await, error(WRONGTYPE));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrem_zcard_zscore_and_zmscore() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await;
    assert_eq!(c.cmd(&["ZCARD", "z"]).await, int(3));
    assert_eq!(c.cmd(&["ZCARD", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["ZSCORE", "z", "b"]).await, bulk("2"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "nope"]).await, nil());
    assert_eq!(c.cmd(&["ZSCORE", "missing", "a"]).await, nil());
    assert_eq!(c.cmd(&["ZMSCORE", "z", "a", "nope", "c"]).await, arr(vec![bulk("1"), nil(), bulk("3")]));
    assert_eq!(c.cmd(&["ZMSCORE", "missing", "a", "b"]).await, arr(vec![nil(), nil()]));
    assert_eq!(c.cmd(&["ZREM", "z", "a", "nope", "a"]).await, int(1), "each member counts once");
    assert_eq!(c.cmd(&["ZREM", "missing", "a"]).await, int(0));
    assert_eq!(c.cmd(&["ZCARD", "z"]).await, int(2));
    assert_eq!(c.cmd(&["ZREM", "z", "b", "c"]).await, int(2));
    assert_eq!(c.cmd(&["EXISTS", "z"]).await, int(0), "removing the last member deletes the key");
    assert_eq!(c.cmd(&["ZREM", "z"]).await, arity_error("zrem"));
    assert_eq!(c.cmd(&["ZMSCORE", "z"]).await, arity_error("zmscore"));
    assert_eq!(c.cmd(&["ZSCORE", "z"]).await, arity_error("zscore"));
    assert_eq!(c.cmd(&["ZCARD"]).await, arity_error("zcard"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sorted_set_command_refuses_another_type() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["SET", "str", "x"]).await;
    c.cmd(&["ZADD", "z", "1", "a"]).await;
    let commands: &[&[&str]] = &[
        &["ZADD", "str", "1", "a"],
        &["ZINCRBY", "str", "1", "a"],
        &["ZREM", "str", "a"],
        &["ZSCORE", "str", "a"],
        &["ZMSCORE", "str", "a"],
        &["ZCARD", "str"],
        &["ZCOUNT", "str", "0", "1"],
        &["ZLEXCOUNT", "str", "-", "+"],
        &["ZRANGE", "str", "0", "-1"],
        &["ZRANGEBYSCORE", "str", "0", "1"],
        &["ZREVRANGEBYSCORE", "str", "1", "0"],
        &["ZRANGEBYLEX", "str", "-", "+"],
        &["ZREVRANGEBYLEX", "str", "+", "-"],
        &["ZREVRANGE", "str", "0", "-1"],
        &["ZRANGESTORE", "dst", "str", "0", "-1"],
        &["ZRANK", "str", "a"],
        &["ZREVRANK", "str", "a"],
        &["ZPOPMIN", "str"],
        &["ZPOPMAX", "str", "0"],
        &["ZMPOP", "2", "missing", "str", "MIN"],
        &["ZRANDMEMBER", "str"],
        &["ZRANDMEMBER", "str", "2"],
        &["ZREMRANGEBYRANK", "str", "0", "-1"],
        &["ZREMRANGEBYSCORE", "str", "0", "1"],
        &["ZREMRANGEBYLEX", "str", "-", "+"],
        &["ZUNION", "2", "z", "str"],
        &["ZINTER", "2", "z", "str"],
        &["ZDIFF", "2", "z", "str"],
        &["ZINTERCARD", "2", "z", "str"],
        &["ZUNIONSTORE", "dst", "2", "z", "str"],
        &["ZINTERSTORE", "dst", "1", "str"],
        &["ZDIFFSTORE", "dst", "1", "str"],
        &["ZSCAN", "str", "0"],
    ];
    for command in commands {
        assert_eq!(c.cmd(command).await, error(WRONGTYPE), "{command:?}");
    }
    assert_eq!(c.cmd(&["GET", "str"]).await, bulk("x"), "nothing touched the string");
    // The set algebra checks types before its options (Redis's order).
    assert_eq!(c.cmd(&["ZUNION", "1", "str", "WEIGHTS", "x"]).await, error(WRONGTYPE));
    // Range parsing comes first for the range commands.
    assert_eq!(c.cmd(&["ZRANGE", "str", "x", "1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "str", "x", "1"]).await, error(SCORE_RANGE));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZCOUNT, ZLEXCOUNT and range bounds.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zcount_parses_score_bounds_like_redis() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"]).await;
    assert_eq!(c.cmd(&["ZCOUNT", "z", "-inf", "+inf"]).await, int(5));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "-inf", "inf"]).await, int(5));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "2", "4"]).await, int(3));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "(2", "4"]).await, int(2));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "(2", "(4"]).await, int(1));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "(1", "(1"]).await, int(0));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "5", "1"]).await, int(0), "min above max is empty");
    assert_eq!(c.cmd(&["ZCOUNT", "z", "(inf", "+inf"]).await, int(0));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "-inf", "(-inf"]).await, int(0));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "1.5", "2.5"]).await, int(1));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "1e0", "2E0"]).await, int(2));
    // What strtod reads: nothing is 0, leading spaces are skipped.
    assert_eq!(c.cmd(&["ZCOUNT", "z", "", "3"]).await, int(3));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "(", "("]).await, int(0));
    assert_eq!(c.cmd(&["ZCOUNT", "z", " 1", "3"]).await, int(3));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "1 ", "3"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "x", "3"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "1", "nan"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "[1", "3"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZCOUNT", "missing", "0", "1"]).await, int(0));
    assert_eq!(c.cmd(&["ZCOUNT", "z", "0"]).await, arity_error("zcount"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zlexcount_parses_lex_bounds_like_redis() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e"]).await;
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "-", "+"]).await, int(5));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "[b", "[d"]).await, int(3));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "(b", "(d"]).await, int(1));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "(b", "(b"]).await, int(0));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "[d", "[b"]).await, int(0));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "+", "-"]).await, int(0));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "-", "-"]).await, int(0));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "[", "+"]).await, int(5), "`[` alone is the empty string");
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "b", "d"]).await, error(LEX_RANGE));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "l", "", "+"]).await, error(LEX_RANGE));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "missing", "-", "+"]).await, int(0));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZRANGE and the legacy range commands.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrange_by_rank() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"]).await;
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1"]).await, bulks(&["a", "b", "c", "d", "e"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "1", "WITHSCORES"]).await, bulks(&["a", "1", "b", "2"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-2", "-1"]).await, bulks(&["d", "e"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-100", "100"]).await, bulks(&["a", "b", "c", "d", "e"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "3", "1"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "5", "10"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-1", "-2"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "9223372036854775807", "-9223372036854775808"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-9223372036854775808", "9223372036854775807"]).await.items().len(), 5);
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "0", "REV"]).await, bulks(&["e"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "1", "REV", "WITHSCORES"]).await, bulks(&["e", "5", "d", "4"]));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "0", "-1"]).await, bulks(&["e", "d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "1", "2", "WITHSCORES"]).await, bulks(&["d", "4", "c", "3"]));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "-1", "-1"]).await, bulks(&["a"]));
    assert_eq!(c.cmd(&["ZRANGE", "missing", "0", "-1"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZREVRANGE", "missing", "0", "-1"]).await, bulks(&[]));
    // Ties are ordered by member bytes.
    c.cmd(&["ZADD", "t", "1", "b", "1", "a", "1", "c", "0", "z"]).await;
    assert_eq!(c.cmd(&["ZRANGE", "t", "0", "-1"]).await, bulks(&["z", "a", "b", "c"]));
    // Errors.
    let limit_error = error("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX");
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "LIMIT", "0", "1"]).await, limit_error);
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "0", "-1", "LIMIT", "0", "1"]).await, limit_error);
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "-1", "LIMIT", "5", "-1"]).await,
        bulks(&["a", "b", "c", "d", "e"]),
        "Redis only looks at the count: LIMIT x -1 passes with ranks"
    );
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "LIMIT", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "REV", "REV"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "BYSCORE", "BYLEX"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "FOO"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "0", "-1", "REV"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "0", "-1", "BYSCORE"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGE", "z", "x", "1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "1.5"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0"]).await, arity_error("zrange"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrange_by_score_and_its_legacy_forms() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"]).await;
    assert_eq!(c.cmd(&["ZRANGE", "z", "(1", "3", "BYSCORE"]).await, bulks(&["b", "c"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "(1", "(3", "BYSCORE", "WITHSCORES"]).await, bulks(&["b", "2"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "2"]).await, bulks(&["b", "c"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "-1", "2"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "3", "-1"]).await, bulks(&["d", "e"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "0"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "100", "10"]).await, bulks(&[]));
    // REV takes max first.
    assert_eq!(c.cmd(&["ZRANGE", "z", "5", "1", "BYSCORE", "REV"]).await, bulks(&["e", "d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["ZRANGE", "z", "1", "5", "BYSCORE", "REV"]).await, bulks(&[]));
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "5", "1", "BYSCORE", "REV", "LIMIT", "1", "2", "WITHSCORES"]).await,
        bulks(&["d", "4", "c", "3"])
    );
    assert_eq!(c.cmd(&["ZRANGE", "z", "1", "0", "BYSCORE"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "-inf", "+inf"]).await, bulks(&["a", "b", "c", "d", "e"]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "(2", "+inf", "LIMIT", "0", "2"]).await, bulks(&["c", "d"]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "2", "4", "LIMIT", "1", "1", "WITHSCORES"]).await, bulks(&["c", "3"]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "4", "2"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZREVRANGEBYSCORE", "z", "+inf", "-inf"]).await, bulks(&["e", "d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYSCORE", "z", "4", "(2", "WITHSCORES"]).await, bulks(&["d", "4", "c", "3"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYSCORE", "z", "+inf", "-inf", "LIMIT", "1", "2"]).await, bulks(&["d", "c"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYSCORE", "z", "2", "4"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "missing", "-inf", "+inf"]).await, bulks(&[]));
    // Infinite scores at the ends.
    c.cmd(&["ZADD", "i", "inf", "top", "-inf", "bottom", "0", "zero"]).await;
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "i", "(-inf", "(inf"]).await, bulks(&["zero"]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "i", "-inf", "-inf"]).await, bulks(&["bottom"]));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "i", "+inf", "inf", "WITHSCORES"]).await, bulks(&["top", "inf"]));
    // Errors.
    assert_eq!(c.cmd(&["ZRANGE", "z", "x", "5", "BYSCORE"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "a", "4"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "2", "4", "REV"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "2", "4", "BYSCORE"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "2", "4", "LIMIT", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "2", "4", "LIMIT", "a", "b"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "x", "1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZREVRANGEBYSCORE", "z", "5"]).await, arity_error("zrevrangebyscore"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrange_by_lex_and_its_legacy_forms() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e", "0", "f"]).await;
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "+"]).await, bulks(&["a", "b", "c", "d", "e", "f"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "[b", "(e"]).await, bulks(&["b", "c", "d"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "(b", "[e"]).await, bulks(&["c", "d", "e"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "[b", "[b"]).await, bulks(&["b"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "(b", "(b"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "[e", "[b"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "+", "-"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "-"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "+", "+"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "+", "LIMIT", "1", "2"]).await, bulks(&["b", "c"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "+", "LIMIT", "-1", "2"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "[aa", "(c"]).await, bulks(&["b"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "l", "+", "-"]).await, bulks(&["f", "e", "d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "l", "(e", "[b"]).await, bulks(&["d", "c", "b"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "l", "[b", "(e"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "l", "+", "-", "LIMIT", "1", "3"]).await, bulks(&["e", "d", "c"]));
    assert_eq!(c.cmd(&["ZRANGE", "l", "+", "-", "BYLEX", "REV"]).await, bulks(&["f", "e", "d", "c", "b", "a"]));
    assert_eq!(c.cmd(&["ZRANGE", "l", "[e", "(a", "BYLEX", "REV", "LIMIT", "0", "2"]).await, bulks(&["e", "d"]));
    assert_eq!(c.cmd(&["ZRANGE", "l", "-", "+", "BYLEX", "REV"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "missing", "-", "+"]).await, bulks(&[]));
    // Members of several scores: Redis's small-set walk (unspecified in the
    // docs, checked against redis-server).
    c.cmd(&["ZADD", "m", "1", "b", "2", "z", "3", "c", "4", "a"]).await;
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "m", "[a", "[c"]).await, bulks(&["b"]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "m", "[c", "+"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "m", "[a", "+"]).await, bulks(&["b", "z", "c", "a"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "m", "[c", "-"]).await, bulks(&["a", "c", "z", "b"]));
    assert_eq!(c.cmd(&["ZLEXCOUNT", "m", "-", "+"]).await, int(4));
    // LIMIT's offset steps over members without checking the range.
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "m", "[a", "(c", "LIMIT", "3", "-1"]).await, bulks(&["a"]));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "m", "(c", "[a", "LIMIT", "1", "-1"]).await, bulks(&["c", "z", "b"]));
    // Errors.
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "b", "c"]).await, error(LEX_RANGE));
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "[a", "c"]).await, error(LEX_RANGE));
    assert_eq!(c.cmd(&["ZRANGE", "l", "0", "-1", "BYLEX"]).await, error(LEX_RANGE));
    let withscores = error("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "+", "WITHSCORES"]).await, withscores);
    assert_eq!(c.cmd(&["ZRANGE", "l", "-", "+", "BYLEX", "WITHSCORES"]).await, withscores);
    assert_eq!(c.cmd(&["ZRANGEBYLEX", "l", "-", "+", "LIMIT", "0"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZREVRANGEBYLEX", "l", "+"]).await, arity_error("zrevrangebylex"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrangestore_replaces_the_destination() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "src", "10", "y", "20", "z", "30", "w"]).await;
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "0", "1"]).await, int(2));
    assert_eq!(c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await, bulks(&["y", "10", "z", "20"]));
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "(10", "+inf", "BYSCORE", "LIMIT", "0", "1"]).await, int(1));
    assert_eq!(c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await, bulks(&["z", "20"]), "the old members are gone");
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "0", "-1", "REV"]).await, int(3));
    assert_eq!(c.cmd(&["ZRANGE", "d", "0", "-1"]).await, bulks(&["y", "z", "w"]), "stored sets are ordered by score");
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "5", "10"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0), "an empty result deletes the destination");
    c.cmd(&["ZADD", "d", "1", "x"]).await;
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "missing", "0", "-1"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0));
    // Any type, and its TTL, is replaced.
    c.cmd(&["SET", "d", "string", "EX", "100"]).await;
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "0", "0"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", "d"]).await, simple("zset"));
    assert_eq!(c.cmd(&["TTL", "d"]).await, int(-1));
    // The source may be the destination.
    assert_eq!(c.cmd(&["ZRANGESTORE", "src", "src", "0", "0"]).await, int(1));
    assert_eq!(c.cmd(&["ZRANGE", "src", "0", "-1"]).await, bulks(&["y"]));
    // Errors.
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "0", "-1", "WITHSCORES"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["ZRANGESTORE", "d", "src", "0", "-1", "LIMIT", "0", "1"]).await,
        error("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")
    );
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "x", "-1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZRANGESTORE", "d", "src", "0"]).await, arity_error("zrangestore"));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZRANK, ZREVRANK.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrank_and_zrevrank_with_and_without_score() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3.5", "c"]).await;
    assert_eq!(c.cmd(&["ZRANK", "z", "a"]).await, int(0));
    assert_eq!(c.cmd(&["ZRANK", "z", "c"]).await, int(2));
    assert_eq!(c.cmd(&["ZREVRANK", "z", "a"]).await, int(2));
    assert_eq!(c.cmd(&["ZREVRANK", "z", "c"]).await, int(0));
    assert_eq!(c.cmd(&["ZRANK", "z", "c", "WITHSCORE"]).await, arr(vec![int(2), bulk("3.5")]));
    assert_eq!(c.cmd(&["ZREVRANK", "z", "c", "withscore"]).await, arr(vec![int(0), bulk("3.5")]));
    assert_eq!(raw(&mut c, &["ZRANK", "z", "nope"], 5).await, b"$-1\r\n");
    assert_eq!(raw(&mut c, &["ZRANK", "missing", "a"], 5).await, b"$-1\r\n");
    assert_eq!(raw(&mut c, &["ZRANK", "z", "nope", "WITHSCORE"], 5).await, b"*-1\r\n", "a null array with WITHSCORE");
    assert_eq!(raw(&mut c, &["ZREVRANK", "missing", "a", "WITHSCORE"], 5).await, b"*-1\r\n");
    assert_eq!(c.cmd(&["ZRANK", "z", "a", "WITHSCORES"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANK", "z", "a", "WITHSCORE", "x"]).await, arity_error("zrank"));
    assert_eq!(c.cmd(&["ZREVRANK", "z"]).await, arity_error("zrevrank"));
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["ZRANK", "z", "b", "WITHSCORE"]).await, arr(vec![int(1), dbl("2")]));
    assert_eq!(raw(&mut c, &["ZRANK", "z", "nope", "WITHSCORE"], 3).await, b"_\r\n");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// Pops.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zpopmin_and_zpopmax() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e"]).await;
    assert_eq!(c.cmd(&["ZPOPMIN", "z"]).await, bulks(&["a", "1"]));
    assert_eq!(c.cmd(&["ZPOPMAX", "z"]).await, bulks(&["e", "5"]));
    assert_eq!(c.cmd(&["ZPOPMIN", "z", "2"]).await, bulks(&["b", "2", "c", "3"]));
    assert_eq!(c.cmd(&["ZPOPMAX", "z", "0"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZPOPMAX", "z", "9223372036854775807"]).await, bulks(&["d", "4"]), "a huge count pops all");
    assert_eq!(c.cmd(&["EXISTS", "z"]).await, int(0), "popping the last member deletes the key");
    assert_eq!(c.cmd(&["ZPOPMIN", "z"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZPOPMIN", "z", "5"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZPOPMIN", "missing", "0"]).await, bulks(&[]));
    let positive = error("ERR value is out of range, must be positive");
    assert_eq!(c.cmd(&["ZPOPMIN", "z", "-1"]).await, positive);
    assert_eq!(c.cmd(&["ZPOPMIN", "z", "x"]).await, positive);
    assert_eq!(c.cmd(&["ZPOPMAX", "z", "1", "2"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZPOPMAX"]).await, arity_error("zpopmax"));
    // Ties pop in member order from the bottom, reverse order from the top.
    c.cmd(&["ZADD", "t", "1", "b", "1", "a", "1", "c"]).await;
    assert_eq!(c.cmd(&["ZPOPMIN", "t"]).await, bulks(&["a", "1"]));
    assert_eq!(c.cmd(&["ZPOPMAX", "t"]).await, bulks(&["c", "1"]));
    // RESP3: flat without a count, pairs with one.
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await;
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["ZPOPMIN", "z"]).await, arr(vec![bulk("a"), dbl("1")]));
    assert_eq!(c.cmd(&["ZPOPMIN", "z", "1"]).await, pairs(&[("b", "2")]));
    assert_eq!(c.cmd(&["ZPOPMAX", "z", "5"]).await, pairs(&[("c", "3")]));
    assert_eq!(c.cmd(&["ZPOPMAX", "z"]).await, arr(vec![]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmpop_pops_from_the_first_non_empty_key() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await;
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN"]).await, arr(vec![bulk("z"), arr(vec![bulks(&["a", "1"])])]));
    assert_eq!(
        c.cmd(&["ZMPOP", "2", "missing", "z", "max", "COUNT", "10"]).await,
        arr(vec![bulk("z"), arr(vec![bulks(&["c", "3"]), bulks(&["b", "2"])])])
    );
    assert_eq!(c.cmd(&["EXISTS", "z"]).await, int(0));
    assert_eq!(raw(&mut c, &["ZMPOP", "2", "z", "missing", "MIN"], 5).await, b"*-1\r\n", "nothing to pop: null array");
    let numkeys = error("ERR numkeys should be greater than 0");
    assert_eq!(c.cmd(&["ZMPOP", "0", "z", "MIN"]).await, numkeys);
    assert_eq!(c.cmd(&["ZMPOP", "-1", "z", "MIN"]).await, numkeys);
    assert_eq!(c.cmd(&["ZMPOP", "x", "z", "MIN"]).await, numkeys);
    let count = error("ERR count should be greater than 0");
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN", "COUNT", "0"]).await, count);
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN", "COUNT", "x"]).await, count);
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MID"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZMPOP", "2", "z", "MIN"]).await, error(SYNTAX), "numkeys beyond the arguments");
    assert_eq!(c.cmd(&["ZMPOP", "9223372036854775807", "z", "MIN"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN", "COUNT"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN", "COUNT", "1", "COUNT", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN", "FOO"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZMPOP", "1", "z"]).await, arity_error("zmpop"));
    // RESP3: the same nesting, doubles, and a null.
    c.cmd(&["ZADD", "z", "1", "a"]).await;
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["ZMPOP", "1", "z", "MIN"]).await, arr(vec![bulk("z"), pairs(&[("a", "1")])]));
    assert_eq!(raw(&mut c, &["ZMPOP", "1", "z", "MIN"], 3).await, b"_\r\n");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZRANDMEMBER.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrandmember_counts_and_shapes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await;
    let one = c.cmd(&["ZRANDMEMBER", "z"]).await.text();
    assert!(["a", "b", "c"].contains(&one.as_str()), "{one}");
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "0"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "3"]).await, bulks(&["c", "b", "a"]), "the whole set, greatest first");
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "5", "WITHSCORES"]).await, bulks(&["c", "3", "b", "2", "a", "1"]));
    let two = c.cmd(&["ZRANDMEMBER", "z", "2"]).await;
    let two = sorted_texts(&two);
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1], "a positive count picks distinct members");
    let repeated = c.cmd(&["ZRANDMEMBER", "z", "-20"]).await;
    assert_eq!(repeated.items().len(), 20, "a negative count may repeat");
    assert!(repeated.items().iter().all(|m| ["a", "b", "c"].contains(&m.text().as_str())));
    let scored = c.cmd(&["ZRANDMEMBER", "z", "-4", "WITHSCORES"]).await;
    for pair in scored.items().chunks(2) {
        let expected = match pair[0].text().as_str() {
            "a" => "1",
            "b" => "2",
            _ => "3",
        };
        assert_eq!(pair[1], bulk(expected));
    }
    assert_eq!(c.cmd(&["ZRANDMEMBER", "missing"]).await, nil());
    assert_eq!(c.cmd(&["ZRANDMEMBER", "missing", "5"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "missing", "-5", "WITHSCORES"]).await, bulks(&[]));
    // Errors.
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "1", "WITHSCORE"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "1", "WITHSCORES", "x"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["ZRANDMEMBER", "z", "-9223372036854775808"]).await,
        error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    );
    assert_eq!(
        c.cmd(&["ZRANDMEMBER", "z", "-9223372036854775807", "WITHSCORES"]).await,
        error("ERR value is out of range")
    );
    assert_eq!(
        c.cmd(&["ZRANDMEMBER", "z", "9223372036854775807", "WITHSCORES"]).await,
        error("ERR value is out of range")
    );
    // Meridian's bound on repetitions (Redis would try to build the reply).
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "-9223372036854775807"]).await, error("ERR value is out of range"));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "-1000001"]).await, error("ERR value is out of range"));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "-1000"]).await.items().len(), 1000);
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "9223372036854775807"]).await.items().len(), 3, "a huge positive count");
    // A larger set: distinct picks cover it over a few calls.
    let mut args: Vec<String> = vec!["ZADD".into(), "big".into()];
    for i in 0..200 {
        args.push(i.to_string());
        args.push(format!("m{i}"));
    }
    assert_eq!(c.cmd(&args).await, int(200));
    let picked = c.cmd(&["ZRANDMEMBER", "big", "150"]).await;
    let distinct: HashSet<String> = picked.items().iter().map(Resp::text).collect();
    assert_eq!(distinct.len(), 150);
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "5", "WITHSCORES"]).await, pairs(&[("c", "3"), ("b", "2"), ("a", "1")]));
    assert_eq!(c.cmd(&["ZRANDMEMBER", "z", "3"]).await, bulks(&["c", "b", "a"]));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZREMRANGEBY*.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zremrangeby_rank_score_and_lex() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c", "4", "d", "5", "e", "6", "f"]).await;
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "0", "0"]).await, int(1));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "-1", "-1"]).await, int(1));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "5", "10"]).await, int(0));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "2", "1"]).await, int(0));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1"]).await, bulks(&["b", "c", "d", "e"]));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "z", "(2", "3"]).await, int(1));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "z", "10", "20"]).await, int(0));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "z", "(4", "+inf"]).await, int(1));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]).await, bulks(&["b", "2", "d", "4"]));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "-100", "100"]).await, int(2));
    assert_eq!(c.cmd(&["EXISTS", "z"]).await, int(0), "removing every member deletes the key");
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "missing", "0", "-1"]).await, int(0));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "missing", "-inf", "+inf"]).await, int(0));
    assert_eq!(c.cmd(&["ZREMRANGEBYLEX", "missing", "-", "+"]).await, int(0));
    c.cmd(&["ZADD", "l", "0", "a", "0", "b", "0", "c", "0", "d", "0", "e"]).await;
    assert_eq!(c.cmd(&["ZREMRANGEBYLEX", "l", "[b", "(d"]).await, int(2));
    assert_eq!(c.cmd(&["ZRANGE", "l", "0", "-1"]).await, bulks(&["a", "d", "e"]));
    assert_eq!(c.cmd(&["ZREMRANGEBYLEX", "l", "(e", "+"]).await, int(0));
    assert_eq!(c.cmd(&["ZREMRANGEBYLEX", "l", "-", "+"]).await, int(3));
    assert_eq!(c.cmd(&["EXISTS", "l"]).await, int(0));
    // Errors.
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "a", "1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "z", "a", "1"]).await, error(SCORE_RANGE));
    assert_eq!(c.cmd(&["ZREMRANGEBYLEX", "z", "a", "b"]).await, error(LEX_RANGE));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "z", "0"]).await, arity_error("zremrangebyrank"));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "z", "0", "1", "2"]).await, arity_error("zremrangebyscore"));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// Set algebra.
// ---------------------------------------------------------------------------

/// Loads the two inputs of the algebra tests.
async fn load_algebra_inputs(c: &mut Client) {
    assert_eq!(c.cmd(&["ZADD", "a", "1", "x", "2", "y", "3", "z"]).await, int(3));
    assert_eq!(c.cmd(&["ZADD", "b", "10", "y", "20", "z", "30", "w"]).await, int(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zunion_weights_and_aggregates() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    load_algebra_inputs(&mut c).await;
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b"]).await, bulks(&["x", "y", "z", "w"]));
    assert_eq!(
        c.cmd(&["ZUNION", "2", "a", "b", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "12", "z", "23", "w", "30"])
    );
    assert_eq!(
        c.cmd(&["ZUNION", "2", "a", "b", "WEIGHTS", "2", "3", "WITHSCORES"]).await,
        bulks(&["x", "2", "y", "34", "z", "66", "w", "90"])
    );
    assert_eq!(
        c.cmd(&["ZUNION", "2", "a", "b", "AGGREGATE", "MIN", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "2", "z", "3", "w", "30"])
    );
    assert_eq!(
        c.cmd(&["ZUNION", "2", "a", "b", "aggregate", "max", "withscores"]).await,
        bulks(&["x", "1", "y", "10", "z", "20", "w", "30"])
    );
    assert_eq!(
        c.cmd(&["ZUNION", "3", "a", "b", "missing", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "12", "z", "23", "w", "30"])
    );
    // inf × 0 is 0 and inf + -inf is 0, as in Redis.
    assert_eq!(
        c.cmd(&["ZUNION", "2", "a", "b", "WEIGHTS", "inf", "-inf", "WITHSCORES"]).await,
        bulks(&["w", "-inf", "y", "0", "z", "0", "x", "inf"])
    );
    assert_eq!(
        c.cmd(&["ZUNION", "1", "a", "WEIGHTS", "0", "WITHSCORES"]).await,
        bulks(&["x", "0", "y", "0", "z", "0"])
    );
    assert_eq!(c.cmd(&["ZUNION", "1", "missing"]).await, bulks(&[]));
    // Errors.
    assert_eq!(c.cmd(&["ZUNION", "0", "a"]).await, error("ERR at least 1 input key is needed for 'zunion' command"));
    assert_eq!(c.cmd(&["ZUNION", "-1", "a"]).await, error("ERR at least 1 input key is needed for 'zunion' command"));
    assert_eq!(c.cmd(&["ZUNION", "x", "a"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZUNION", "3", "a", "b"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b", "WEIGHTS", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b", "WEIGHTS", "1", "x"]).await, error("ERR weight value is not a float"));
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b", "AGGREGATE"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b", "AGGREGATE", "AVG"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZUNION", "2", "a", "b", "FOO"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZUNION", "1"]).await, arity_error("zunion"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zinter_zintercard_and_zdiff() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    load_algebra_inputs(&mut c).await;
    assert_eq!(c.cmd(&["ZINTER", "2", "a", "b"]).await, bulks(&["y", "z"]));
    assert_eq!(c.cmd(&["ZINTER", "2", "a", "b", "WITHSCORES"]).await, bulks(&["y", "12", "z", "23"]));
    assert_eq!(
        c.cmd(&["ZINTER", "2", "a", "b", "WEIGHTS", "1", "-1", "AGGREGATE", "MAX", "WITHSCORES"]).await,
        bulks(&["y", "2", "z", "3"])
    );
    assert_eq!(c.cmd(&["ZINTER", "2", "a", "b", "AGGREGATE", "MIN", "WITHSCORES"]).await, bulks(&["y", "2", "z", "3"]));
    assert_eq!(c.cmd(&["ZINTER", "2", "a", "missing", "WITHSCORES"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZINTER", "1", "a", "WITHSCORES"]).await, bulks(&["x", "1", "y", "2", "z", "3"]));
    assert_eq!(c.cmd(&["ZINTER", "0", "a"]).await, error("ERR at least 1 input key is needed for 'zinter' command"));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b"]).await, int(2));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "LIMIT", "1"]).await, int(1));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "LIMIT", "0"]).await, int(2), "LIMIT 0 is no limit");
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "LIMIT", "-1"]).await, error("ERR LIMIT can't be negative"));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "LIMIT", "x"]).await, error("ERR LIMIT can't be negative"));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "WITHSCORES"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZINTERCARD", "2", "a", "b", "WEIGHTS", "1", "1"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["ZINTERCARD", "0", "a"]).await,
        error("ERR at least 1 input key is needed for 'zintercard' command")
    );
    assert_eq!(c.cmd(&["ZINTERCARD", "3", "a", "b"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZDIFF", "2", "a", "b"]).await, bulks(&["x"]));
    assert_eq!(c.cmd(&["ZDIFF", "2", "b", "a", "WITHSCORES"]).await, bulks(&["w", "30"]));
    assert_eq!(c.cmd(&["ZDIFF", "1", "a", "WITHSCORES"]).await, bulks(&["x", "1", "y", "2", "z", "3"]));
    assert_eq!(c.cmd(&["ZDIFF", "2", "missing", "a"]).await, bulks(&[]));
    assert_eq!(c.cmd(&["ZDIFF", "2", "a", "missing"]).await, bulks(&["x", "y", "z"]));
    assert_eq!(c.cmd(&["ZDIFF", "2", "a", "b", "WEIGHTS", "1", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZDIFF", "2", "a", "b", "AGGREGATE", "SUM"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZDIFF", "0", "a"]).await, error("ERR at least 1 input key is needed for 'zdiff' command"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_forms_replace_or_delete_the_destination() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    load_algebra_inputs(&mut c).await;
    assert_eq!(c.cmd(&["ZUNIONSTORE", "d", "2", "a", "b"]).await, int(4));
    assert_eq!(
        c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "12", "z", "23", "w", "30"])
    );
    assert_eq!(c.cmd(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2", "AGGREGATE", "MAX"]).await, int(4));
    assert_eq!(
        c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "20", "z", "40", "w", "60"])
    );
    assert_eq!(c.cmd(&["ZINTERSTORE", "d", "2", "a", "b"]).await, int(2));
    assert_eq!(c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await, bulks(&["y", "12", "z", "23"]));
    assert_eq!(c.cmd(&["ZDIFFSTORE", "d", "2", "a", "b"]).await, int(1));
    assert_eq!(c.cmd(&["ZRANGE", "d", "0", "-1", "WITHSCORES"]).await, bulks(&["x", "1"]));
    // Empty results delete the destination.
    assert_eq!(c.cmd(&["ZINTERSTORE", "d", "2", "a", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0));
    c.cmd(&["ZADD", "d", "1", "old"]).await;
    assert_eq!(c.cmd(&["ZDIFFSTORE", "d", "1", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0));
    // The destination may hold any type, with a TTL: both are replaced.
    c.cmd(&["SET", "d", "string", "EX", "100"]).await;
    assert_eq!(c.cmd(&["ZUNIONSTORE", "d", "1", "a"]).await, int(3));
    assert_eq!(c.cmd(&["TYPE", "d"]).await, simple("zset"));
    assert_eq!(c.cmd(&["TTL", "d"]).await, int(-1));
    // The destination may be one of the inputs.
    assert_eq!(c.cmd(&["ZUNIONSTORE", "a", "2", "a", "b"]).await, int(4));
    assert_eq!(
        c.cmd(&["ZRANGE", "a", "0", "-1", "WITHSCORES"]).await,
        bulks(&["x", "1", "y", "12", "z", "23", "w", "30"])
    );
    // Errors.
    assert_eq!(c.cmd(&["ZUNIONSTORE", "d", "1", "a", "WITHSCORES"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["ZINTERSTORE", "d", "0", "a"]).await,
        error("ERR at least 1 input key is needed for 'zinterstore' command")
    );
    assert_eq!(c.cmd(&["ZDIFFSTORE", "d", "3", "a"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZINTERSTORE", "d", "x", "a"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZUNIONSTORE", "d", "1"]).await, arity_error("zunionstore"));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(1), "a refused store leaves the destination alone");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// ZSCAN.
// ---------------------------------------------------------------------------

/// Runs a full ZSCAN (with `options`) and returns every (member, score)
/// seen, with how many times each was returned, and the number of calls.
async fn full_scan(c: &mut Client, key: &str, options: &[&str]) -> (HashMap<String, (String, usize)>, usize) {
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let mut args = vec!["ZSCAN", key, cursor.as_str()];
        args.extend_from_slice(options);
        let reply = c.cmd(&args).await;
        calls += 1;
        assert!(calls < 10_000, "the scan does not end");
        let [next, items] = reply.items() else { panic!("ZSCAN reply {reply:?}") };
        for pair in items.items().chunks(2) {
            let entry = seen.entry(pair[0].text()).or_insert((String::new(), 0));
            entry.0 = pair[1].text();
            entry.1 += 1;
        }
        cursor = next.text();
        if cursor == "0" {
            return (seen, calls);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zscan_small_sets_in_one_call() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3.5", "c"]).await;
    assert_eq!(c.cmd(&["ZSCAN", "z", "0"]).await, arr(vec![bulk("0"), bulks(&["a", "1", "b", "2", "c", "3.5"])]));
    assert_eq!(
        c.cmd(&["ZSCAN", "z", "0", "COUNT", "1"]).await,
        arr(vec![bulk("0"), bulks(&["a", "1", "b", "2", "c", "3.5"])])
    );
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "MATCH", "b*"]).await, arr(vec![bulk("0"), bulks(&["b", "2"])]));
    assert_eq!(c.cmd(&["ZSCAN", "z", "-1"]).await.items()[0], bulk("0"), "strtoul accepts -1");
    assert_eq!(c.cmd(&["ZSCAN", "missing", "0"]).await, arr(vec![bulk("0"), bulks(&[])]));
    assert_eq!(
        c.cmd(&["ZSCAN", "missing", "0", "COUNT", "0"]).await,
        arr(vec![bulk("0"), bulks(&[])]),
        "options of a missing key are not read"
    );
    // Errors.
    assert_eq!(c.cmd(&["ZSCAN", "z", "x"]).await, error("ERR invalid cursor"));
    assert_eq!(c.cmd(&["ZSCAN", "missing", "x"]).await, error("ERR invalid cursor"));
    // An empty cursor is 0, as Redis's strtoul reads it.
    assert!(matches!(c.cmd(&["ZSCAN", "missing", ""]).await, Resp::Array(_)));
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "COUNT", "0"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "COUNT", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "MATCH"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "FOO", "bar"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["ZSCAN", "z"]).await, arity_error("zscan"));
    // RESP3: the scores stay strings, as Redis sends them.
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["ZSCAN", "z", "0", "MATCH", "c"]).await, arr(vec![bulk("0"), bulks(&["c", "3.5"])]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zscan_returns_every_member_present_throughout_a_scan() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut args: Vec<String> = vec!["ZADD".into(), "big".into()];
    for i in 0..1000 {
        args.push(i.to_string());
        args.push(format!("m{i}"));
    }
    assert_eq!(c.cmd(&args).await, int(1000));
    let (seen, calls) = full_scan(&mut c, "big", &["COUNT", "10"]).await;
    assert_eq!(seen.len(), 1000);
    assert!(seen.iter().all(|(m, (score, times))| *times == 1 && m[1..] == *score), "each member once, with its score");
    assert!((2..=70).contains(&calls), "a full scan takes a bounded number of calls, not {calls}");
    let (matched, _) = full_scan(&mut c, "big", &["MATCH", "m1*", "COUNT", "500"]).await;
    assert_eq!(matched.len(), 111, "m1, m10..m19, m100..m199");

    // Writes between the calls: members moved by ZINCRBY and present all
    // along are still returned; removed and added members may or may not be.
    let mut seen: HashSet<String> = HashSet::new();
    let mut cursor = "0".to_string();
    let mut round = 0;
    loop {
        let reply = c.cmd(&["ZSCAN", "big", cursor.as_str(), "COUNT", "20"]).await;
        let [next, items] = reply.items() else { panic!("ZSCAN reply {reply:?}") };
        seen.extend(items.items().chunks(2).map(|pair| pair[0].text()));
        for i in 0..25 {
            let member = format!("m{}", (round * 25 + i) % 1000);
            c.cmd(&["ZINCRBY", "big", "-5000", member.as_str()]).await;
        }
        c.cmd(&["ZREM", "big", format!("m{}", 999 - round).as_str()]).await;
        c.cmd(&["ZADD", "big", "1", format!("new{round}").as_str()]).await;
        round += 1;
        cursor = next.text();
        if cursor == "0" {
            break;
        }
    }
    for i in 0..(1000 - round) {
        assert!(seen.contains(&format!("m{i}")), "m{i} was present throughout but never returned");
    }
    stop(node).await;
}

// ---------------------------------------------------------------------------
// Reply shapes and score formats.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_doubles_and_pairs() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    resp3(&mut c).await;
    c.cmd(&["ZADD", "z", "1", "a", "2.5", "b", "inf", "c"]).await;
    assert_eq!(c.cmd(&["ZSCORE", "z", "b"]).await, dbl("2.5"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "c"]).await, dbl("inf"));
    assert_eq!(raw(&mut c, &["ZSCORE", "z", "nope"], 3).await, b"_\r\n");
    assert_eq!(c.cmd(&["ZMSCORE", "z", "a", "nope"]).await, arr(vec![dbl("1"), nil()]));
    assert_eq!(c.cmd(&["ZINCRBY", "z", "1", "a"]).await, dbl("2"));
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "1", "a"]).await, dbl("3"));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1"]).await, bulks(&["b", "a", "c"]), "no scores: a plain array");
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]).await,
        pairs(&[("b", "2.5"), ("a", "3"), ("c", "inf")])
    );
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "z", "-inf", "3", "WITHSCORES"]).await, pairs(&[("b", "2.5"), ("a", "3")]));
    assert_eq!(c.cmd(&["ZREVRANGE", "z", "0", "0", "WITHSCORES"]).await, pairs(&[("c", "inf")]));
    assert_eq!(c.cmd(&["ZUNION", "1", "z", "WITHSCORES"]).await, pairs(&[("b", "2.5"), ("a", "3"), ("c", "inf")]));
    assert_eq!(c.cmd(&["ZINTER", "1", "z", "WITHSCORES"]).await, pairs(&[("b", "2.5"), ("a", "3"), ("c", "inf")]));
    assert_eq!(c.cmd(&["ZDIFF", "1", "z", "WITHSCORES"]).await, pairs(&[("b", "2.5"), ("a", "3"), ("c", "inf")]));
    assert_eq!(c.cmd(&["ZRANGE", "missing", "0", "-1", "WITHSCORES"]).await, arr(vec![]));
    // The bytes of one reply.
    assert_eq!(raw(&mut c, &["ZRANGE", "z", "0", "0", "WITHSCORES"], 21).await, b"*1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_formatted_like_redis_7_2() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    for (score, text) in [
        ("1.1", "1.1"),
        ("-0", "0"),
        ("100000000", "100000000"),
        ("1e21", "1e+21"),
        ("1e300", "1e+300"),
        ("-1.5e300", "-1.5e+300"),
        ("1.5e-7", "1.5e-7"),
        ("0.000001", "0.000001"),
        ("123.456", "123.456"),
        ("123456789012345678901", "123456789012345680000"),
        ("+inf", "inf"),
        ("-inf", "-inf"),
    ] {
        c.cmd(&["ZADD", "f", score, "m"]).await;
        assert_eq!(c.cmd(&["ZSCORE", "f", "m"]).await, bulk(text), "ZADD {score}");
    }
    // A stored -0 reads as 0 (Redis keeps small sets' integral scores as
    // integers); a computed -0 prints as `-0`, as Redis's d2string does.
    assert_eq!(c.cmd(&["ZADD", "zero", "0", "a", "-0", "b"]).await, int(2));
    assert_eq!(c.cmd(&["ZINCRBY", "zero", "-0", "c"]).await, bulk("0"));
    assert_eq!(
        c.cmd(&["ZUNION", "1", "zero", "WEIGHTS", "-1", "WITHSCORES"]).await,
        bulks(&["a", "-0", "b", "-0", "c", "-0"])
    );
    assert_eq!(c.cmd(&["ZRANGE", "zero", "0", "-1", "WITHSCORES"]).await, bulks(&["a", "0", "b", "0", "c", "0"]));
    resp3(&mut c).await;
    c.cmd(&["ZADD", "f", "1e21", "m"]).await;
    assert_eq!(c.cmd(&["ZSCORE", "f", "m"]).await, dbl("1e+21"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_info_reports_redis_key_positions() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let names = ["zadd", "zrangestore", "zunionstore", "zunion", "zmpop", "zrank", "zscan"];
    let info =
        c.cmd(&["COMMAND", "INFO", "zadd", "zrangestore", "zunionstore", "zunion", "zmpop", "zrank", "zscan"]).await;
    let expected: [(i64, [i64; 3]); 7] = [
        (-4, [1, 1, 1]),
        (-5, [1, 2, 1]),
        (-4, [1, 1, 1]),
        (-3, [0, 0, 0]),
        (-4, [0, 0, 0]),
        (-3, [1, 1, 1]),
        (-3, [1, 1, 1]),
    ];
    for ((entry, name), (arity, keys)) in info.items().iter().zip(names).zip(expected) {
        let entry = entry.items();
        assert_eq!(entry[0], bulk(name));
        assert_eq!(entry[1], int(arity), "{name}'s arity");
        assert_eq!(entry[3..6], keys.map(int), "{name}'s key positions");
        assert!(entry[6].items().contains(&simple("@sortedset")), "{name}'s categories {:?}", entry[6]);
    }
    let zunion_flags = info.items()[3].items()[2].items().to_vec();
    assert!(zunion_flags.contains(&simple("movablekeys")), "{zunion_flags:?}");
    let docs = c.cmd(&["COMMAND", "DOCS", "zadd"]).await;
    assert!(docs.items()[1].items().contains(&bulk("sorted-set")), "{docs:?}");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sets_answer_ranges_from_the_index() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut args: Vec<String> = vec!["ZADD".into(), "big".into()];
    for i in 0..5000 {
        args.push(i.to_string());
        args.push(format!("m{i:05}"));
    }
    assert_eq!(c.cmd(&args).await, int(5000));
    assert_eq!(c.cmd(&["ZCOUNT", "big", "(100", "200"]).await, int(100));
    assert_eq!(c.cmd(&["ZRANGEBYSCORE", "big", "4998", "+inf"]).await, bulks(&["m04998", "m04999"]));
    assert_eq!(c.cmd(&["ZRANGE", "big", "-1", "-1", "WITHSCORES"]).await, bulks(&["m04999", "4999"]));
    assert_eq!(c.cmd(&["ZRANGE", "big", "2500", "2501"]).await, bulks(&["m02500", "m02501"]));
    assert_eq!(c.cmd(&["ZRANK", "big", "m03000"]).await, int(3000));
    assert_eq!(c.cmd(&["ZREVRANK", "big", "m03000"]).await, int(1999));
    assert_eq!(c.cmd(&["ZREMRANGEBYSCORE", "big", "1000", "(4000"]).await, int(3000));
    assert_eq!(c.cmd(&["ZCARD", "big"]).await, int(2000));
    assert_eq!(c.cmd(&["ZREMRANGEBYRANK", "big", "0", "999"]).await, int(1000));
    assert_eq!(c.cmd(&["ZRANGE", "big", "0", "0"]).await, bulks(&["m04000"]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_watch_see_sorted_set_writes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["WATCH", "z"]).await, ok());
    assert_eq!(other.cmd(&["ZADD", "z", "1", "a"]).await, int(1));
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["ZADD", "z", "2", "b"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, nil(), "a ZADD touches a watched key");
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    c.cmd(&["ZADD", "z", "2", "b"]).await;
    c.cmd(&["ZINCRBY", "z", "1", "b"]).await;
    c.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]).await;
    assert_eq!(c.cmd(&["EXEC"]).await, arr(vec![int(1), bulk("3"), bulks(&["a", "1", "b", "3"])]));
    // ZMPOP touches the key it pops from (its keys follow numkeys).
    assert_eq!(c.cmd(&["WATCH", "z"]).await, ok());
    assert_eq!(
        other.cmd(&["ZMPOP", "2", "missing", "z", "MAX"]).await,
        arr(vec![bulk("z"), arr(vec![bulks(&["b", "3"])])])
    );
    c.cmd(&["MULTI"]).await;
    c.cmd(&["ZCARD", "z"]).await;
    assert_eq!(c.cmd(&["EXEC"]).await, nil());
    // A store touches its destination.
    assert_eq!(c.cmd(&["WATCH", "d"]).await, ok());
    other.cmd(&["ZUNIONSTORE", "d", "1", "z"]).await;
    c.cmd(&["MULTI"]).await;
    c.cmd(&["ZCARD", "d"]).await;
    assert_eq!(c.cmd(&["EXEC"]).await, nil());
    stop(node).await;
}

// ---------------------------------------------------------------------------
// A real client library.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_crate_reads_sorted_sets() {
    let node = start().await;
    let client = redis::Client::open(format!("redis://{}/", node.addr)).expect("redis URL");
    let mut con = tokio::time::timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect");
    let added: i64 = redis::cmd("ZADD")
        .arg("z")
        .arg(1.5)
        .arg("a")
        .arg(2)
        .arg("b")
        .arg(3)
        .arg("c")
        .query_async(&mut con)
        .await
        .expect("ZADD");
    assert_eq!(added, 3);
    let score: f64 = redis::cmd("ZINCRBY").arg("z").arg(0.25).arg("a").query_async(&mut con).await.expect("ZINCRBY");
    assert_eq!(score, 1.75);
    let range: Vec<(String, f64)> =
        redis::cmd("ZRANGE").arg("z").arg(0).arg(-1).arg("WITHSCORES").query_async(&mut con).await.expect("ZRANGE");
    assert_eq!(range, vec![("a".to_string(), 1.75), ("b".to_string(), 2.0), ("c".to_string(), 3.0)]);
    let missing: Option<f64> = redis::cmd("ZSCORE").arg("z").arg("nope").query_async(&mut con).await.expect("ZSCORE");
    assert_eq!(missing, None);
    let popped: Vec<(String, f64)> =
        redis::cmd("ZPOPMAX").arg("z").arg(2).query_async(&mut con).await.expect("ZPOPMAX");
    assert_eq!(popped, vec![("c".to_string(), 3.0), ("b".to_string(), 2.0)]);
    let card: i64 = redis::cmd("ZCARD").arg("z").query_async(&mut con).await.expect("ZCARD");
    assert_eq!(card, 1);
    let failure: redis::RedisResult<i64> =
        redis::cmd("ZADD").arg("z").arg("NX").arg("XX").arg(1).arg("a").query_async(&mut con).await;
    assert!(failure.is_err(), "ZADD NX XX is refused");
    stop(node).await;
}
