//! Black-box tests of one node over the Redis protocol.
//!
//! Every test starts its own in-process node on a free port (or, for the
//! process tests, the `meridian` binary as a child process) and talks to it
//! over TCP the way a Redis client does. Most tests use a small raw RESP
//! client defined here, so that they can assert the exact bytes and error
//! texts Redis 7 sends (`-ERR syntax error`, `%7` for a RESP3 HELLO, `_` for a
//! RESP3 null) and feed the server hostile input no client library would
//! produce; a few use the `redis` crate to check that a real client library
//! works against the node. The suite covers:
//!
//! - the string commands, with their edge and error cases;
//! - the key-space commands: counting, types, the EXPIRE options, TTLs,
//!   active expiry, KEYS globs, a full SCAN, FLUSHALL;
//! - the connection commands: PING, ECHO, SELECT, HELLO 2/3, QUIT, AUTH,
//!   CLIENT (incl. LIST, INFO, KILL), COMMAND, CONFIG GET/SET/RESETSTAT,
//!   INFO, TIME, FUNCTION, LASTSAVE, DEBUG SLEEP, RESET, and the `maxclients`
//!   bound;
//! - pipelining 10,000 commands in one write;
//! - transactions: MULTI/EXEC/DISCARD and their errors, WATCH/UNWATCH, EXEC
//!   not interleaved with other clients, the bounded queue;
//! - hostile input: inline commands, malformed and oversized frames, clients
//!   that vanish mid-frame or never read their replies;
//! - the binary: start, serve, stop on SIGTERM, and refuse a taken port or an
//!   invalid configuration file.
//!
//! Every network wait is bounded by a timeout, so a broken server fails a
//! test instead of hanging the suite.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_cluster::node::NodeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

mod common;
use common::*;

// ---------------------------------------------------------------------------
// 1. String commands.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_basics_and_empty_values() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["GET", "missing"]).await, nil());
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["SET", "k", "v2"]).await, ok(), "SET overwrites");
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("v2"));

    // The empty string is a value, not a missing key.
    assert_eq!(c.cmd(&["SET", "empty", ""]).await, ok());
    c.send(&encode(&["GET", "empty"])).await;
    assert_eq!(c.read_raw(6, REPLY_TIMEOUT).await, b"$0\r\n\r\n");
    assert_eq!(c.cmd(&["EXISTS", "empty"]).await, int(1));
    assert_eq!(c.cmd(&["STRLEN", "empty"]).await, int(0));

    // Binary-safe keys and values.
    let binary: &[u8] = b"a\r\n\0\xffb";
    assert_eq!(c.cmd(&[b"SET" as &[u8], binary, binary]).await, ok());
    assert_eq!(c.cmd(&[b"GET" as &[u8], binary]).await, bulk(binary));

    // A large value round-trips.
    let large = "x".repeat(1024 * 1024);
    assert_eq!(c.cmd(&["SET", "large", large.as_str()]).await, ok());
    assert_eq!(c.cmd(&["GET", "large"]).await, bulk(&large));

    assert_eq!(c.cmd(&["GET"]).await, arity_error("get"));
    assert_eq!(c.cmd(&["GET", "a", "b"]).await, arity_error("get"));
    assert_eq!(c.cmd(&["SET", "k"]).await, arity_error("set"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_conditions_get_option_and_syntax_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "k", "1", "XX"]).await, nil(), "XX on a missing key does nothing");
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "k", "1", "NX"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "2", "NX"]).await, nil(), "NX on an existing key does nothing");
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("1"));
    assert_eq!(c.cmd(&["SET", "k", "3", "XX"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("3"));

    // GET returns the old value (nil if there was none).
    assert_eq!(c.cmd(&["SET", "k", "4", "GET"]).await, bulk("3"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("4"));
    assert_eq!(c.cmd(&["SET", "fresh", "a", "GET"]).await, nil());
    assert_eq!(c.cmd(&["GET", "fresh"]).await, bulk("a"));
    // Redis 7 allows NX with GET: the old value, and no write if it existed.
    assert_eq!(c.cmd(&["SET", "k", "5", "NX", "GET"]).await, bulk("4"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("4"));

    // Options are case-insensitive.
    assert_eq!(c.cmd(&["set", "k", "6", "xx", "get"]).await, bulk("4"));

    for bad in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "XX", "NX"],
        &["SET", "k", "v", "EX", "10", "PX", "100"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "KEEPTTL", "EX", "10"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "BOGUS"],
    ] {
        assert_eq!(c.cmd(bad).await, error(SYNTAX), "{bad:?}");
    }
    for bad in [
        &["SET", "k", "v", "EX", "0"][..],
        &["SET", "k", "v", "EX", "-5"],
        &["SET", "k", "v", "PX", "0"],
        &["SET", "k", "v", "EXAT", "0"],
        &["SET", "k", "v", "PX", "9223372036854775807"],
    ] {
        assert_eq!(c.cmd(bad).await, error("ERR invalid expire time in 'set' command"), "{bad:?}");
    }
    assert_eq!(c.cmd(&["SET", "k", "v", "EX", "ten"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("6"), "failed SETs leave the value alone");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_expiry_options_and_keepttl() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "k", "v", "EX", "100"]).await, ok());
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=100, "TTL after EX 100");
    assert_int_in(c.cmd(&["PTTL", "k"]).await, 1..=100_000, "PTTL after EX 100");

    assert_eq!(c.cmd(&["SET", "k", "w", "KEEPTTL"]).await, ok());
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=100, "KEEPTTL keeps the TTL");
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("w"));

    assert_eq!(c.cmd(&["SET", "k", "x"]).await, ok());
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1), "a plain SET clears the TTL");

    assert_eq!(c.cmd(&["SET", "k", "v", "PX", "50000"]).await, ok());
    assert_int_in(c.cmd(&["PTTL", "k"]).await, 1..=50_000, "PTTL after PX 50000");
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=50, "TTL after PX 50000");

    let at_s = now_ms() / 1000 + 200;
    assert_eq!(c.cmd(&["SET", "k", "v", "EXAT", &at_s.to_string()]).await, ok());
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(at_s as i64));
    let at_ms = now_ms() + 300_000;
    assert_eq!(c.cmd(&["SET", "k", "v", "PXAT", &at_ms.to_string()]).await, ok());
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]).await, int(at_ms as i64));

    // An absolute deadline already past: OK, and the key is gone (Redis
    // deletes it at once).
    assert_eq!(c.cmd(&["SET", "k", "v", "EXAT", "1"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, nil());
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setnx_setex_psetex() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SETNX", "k", "a"]).await, int(1));
    assert_eq!(c.cmd(&["SETNX", "k", "b"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("a"));
    assert_eq!(c.cmd(&["SETNX", "k"]).await, arity_error("setnx"));

    assert_eq!(c.cmd(&["SETEX", "k", "100", "b"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("b"));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=100, "TTL after SETEX 100");
    assert_eq!(c.cmd(&["SETEX", "k", "0", "c"]).await, error("ERR invalid expire time in 'setex' command"));
    assert_eq!(c.cmd(&["SETEX", "k", "-1", "c"]).await, error("ERR invalid expire time in 'setex' command"));
    assert_eq!(c.cmd(&["SETEX", "k", "x", "c"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["SETEX", "k", "10"]).await, arity_error("setex"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("b"));

    assert_eq!(c.cmd(&["PSETEX", "k", "100000", "d"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("d"));
    assert_int_in(c.cmd(&["PTTL", "k"]).await, 1..=100_000, "PTTL after PSETEX 100000");
    assert_eq!(c.cmd(&["PSETEX", "k", "0", "e"]).await, error("ERR invalid expire time in 'psetex' command"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getset_getdel_getex() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["GETSET", "k", "a"]).await, nil());
    assert_eq!(c.cmd(&["GETSET", "k", "b"]).await, bulk("a"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("b"));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100"]).await, int(1));
    assert_eq!(c.cmd(&["GETSET", "k", "c"]).await, bulk("b"));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1), "GETSET clears the TTL");

    assert_eq!(c.cmd(&["GETDEL", "k"]).await, bulk("c"));
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    assert_eq!(c.cmd(&["GETDEL", "k"]).await, nil());
    assert_eq!(c.cmd(&["GETDEL"]).await, arity_error("getdel"));

    assert_eq!(c.cmd(&["GETEX", "missing"]).await, nil());
    assert_eq!(c.cmd(&["GETEX", "missing", "EX", "100"]).await, nil());
    assert_eq!(c.cmd(&["EXISTS", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["GETEX", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["GETEX", "k", "EX", "100"]).await, bulk("v"));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=100, "TTL after GETEX EX 100");
    assert_eq!(c.cmd(&["GETEX", "k", "PX", "50000"]).await, bulk("v"));
    assert_int_in(c.cmd(&["PTTL", "k"]).await, 1..=50_000, "PTTL after GETEX PX");
    let at_s = now_ms() / 1000 + 500;
    assert_eq!(c.cmd(&["GETEX", "k", "EXAT", &at_s.to_string()]).await, bulk("v"));
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(at_s as i64));
    assert_eq!(c.cmd(&["GETEX", "k", "PERSIST"]).await, bulk("v"));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1), "GETEX PERSIST clears the TTL");
    assert_eq!(c.cmd(&["GETEX", "k", "EX", "0"]).await, error("ERR invalid expire time in 'getex' command"));
    assert_eq!(c.cmd(&["GETEX", "k", "BOGUS"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["GETEX", "k", "EX"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["GETEX", "k", "EX", "10", "PX", "10"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1), "failed GETEX leaves the TTL alone");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_mset_msetnx() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]).await, ok());
    assert_eq!(
        c.cmd(&["MGET", "a", "missing", "b", "a"]).await,
        Resp::Array(vec![bulk("1"), nil(), bulk("2"), bulk("1")])
    );
    assert_eq!(c.cmd(&["MSET", "a"]).await, arity_error("mset"));
    assert_eq!(c.cmd(&["MSET", "a", "1", "b"]).await, arity_error("mset"));
    assert_eq!(c.cmd(&["MGET"]).await, arity_error("mget"));

    // MSETNX writes all keys or none.
    assert_eq!(c.cmd(&["MSETNX", "b", "20", "c", "30"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "c"]).await, int(0), "MSETNX wrote nothing");
    assert_eq!(c.cmd(&["GET", "b"]).await, bulk("2"));
    assert_eq!(c.cmd(&["MSETNX", "c", "30", "d", "40"]).await, int(1));
    assert_eq!(c.cmd(&["MGET", "c", "d"]).await, Resp::Array(vec![bulk("30"), bulk("40")]));
    assert_eq!(c.cmd(&["MSETNX", "e", "1", "f"]).await, arity_error("msetnx"));

    // MSET clears TTLs like SET.
    assert_eq!(c.cmd(&["EXPIRE", "a", "100"]).await, int(1));
    assert_eq!(c.cmd(&["MSET", "a", "x"]).await, ok());
    assert_eq!(c.cmd(&["TTL", "a"]).await, int(-1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_strlen_getrange_setrange() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["APPEND", "k", "Hello"]).await, int(5), "APPEND creates the key");
    assert_eq!(c.cmd(&["APPEND", "k", " World"]).await, int(11));
    assert_eq!(c.cmd(&["APPEND", "k", ""]).await, int(11));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("Hello World"));
    assert_eq!(c.cmd(&["STRLEN", "k"]).await, int(11));
    assert_eq!(c.cmd(&["STRLEN", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100"]).await, int(1));
    assert_eq!(c.cmd(&["APPEND", "k", "!"]).await, int(12));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 1..=100, "APPEND keeps the TTL");
    assert_eq!(c.cmd(&["SET", "k", "Hello World"]).await, ok());

    for (start, end, expected) in [
        ("0", "3", "Hell"),
        ("0", "-1", "Hello World"),
        ("-3", "-1", "rld"),
        ("-100", "-1", "Hello World"),
        ("6", "100", "World"),
        ("10", "100", "d"),
        ("11", "100", ""),
        ("5", "3", ""),
        ("-1", "-5", ""),
        // Redis 7 clamps a negative end to 0 (so one byte), as its docs note.
        ("0", "-100", "H"),
    ] {
        assert_eq!(c.cmd(&["GETRANGE", "k", start, end]).await, bulk(expected), "GETRANGE {start} {end}");
    }
    assert_eq!(c.cmd(&["GETRANGE", "missing", "0", "-1"]).await, bulk(""));
    assert_eq!(c.cmd(&["GETRANGE", "k", "a", "1"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["GETRANGE", "k", "0"]).await, arity_error("getrange"));

    assert_eq!(c.cmd(&["SETRANGE", "k", "6", "Redis"]).await, int(11));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("Hello Redis"));
    assert_eq!(c.cmd(&["SETRANGE", "k", "11", "!!"]).await, int(13), "SETRANGE at the end extends");
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("Hello Redis!!"));
    // Past the end, the gap is padded with zero bytes; a missing key is created.
    assert_eq!(c.cmd(&["SETRANGE", "pad", "5", "hi"]).await, int(7));
    assert_eq!(c.cmd(&["GET", "pad"]).await, bulk(b"\0\0\0\0\0hi"));
    assert_eq!(c.cmd(&["SETRANGE", "pad", "9", "x"]).await, int(10));
    assert_eq!(c.cmd(&["GET", "pad"]).await, bulk(b"\0\0\0\0\0hi\0\0x"));
    // An empty patch changes nothing and creates no key.
    assert_eq!(c.cmd(&["SETRANGE", "none", "5", ""]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "none"]).await, int(0));
    assert_eq!(c.cmd(&["SETRANGE", "k", "100", ""]).await, int(13));
    assert_eq!(c.cmd(&["SETRANGE", "k", "-1", "x"]).await, error("ERR offset is out of range"));
    assert_eq!(c.cmd(&["SETRANGE", "k", "x", "x"]).await, error(NOT_INTEGER));
    assert_eq!(
        c.cmd(&["SETRANGE", "k", "536870911", "ab"]).await,
        error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("Hello Redis!!"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_counters() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(1), "INCR creates the key at 0");
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(2));
    assert_eq!(c.cmd(&["GET", "n"]).await, bulk("2"));
    assert_eq!(c.cmd(&["INCRBY", "n", "40"]).await, int(42));
    assert_eq!(c.cmd(&["DECR", "n"]).await, int(41));
    assert_eq!(c.cmd(&["DECRBY", "n", "50"]).await, int(-9));
    assert_eq!(c.cmd(&["INCRBY", "n", "-1"]).await, int(-10));
    assert_eq!(c.cmd(&["DECR", "fresh"]).await, int(-1));
    assert_eq!(c.cmd(&["DECRBY", "fresh2", "5"]).await, int(-5));
    assert_eq!(c.cmd(&["SET", "n", "10"]).await, ok());
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(11), "a SET string counts as an integer");

    // Counters keep the TTL.
    assert_eq!(c.cmd(&["EXPIRE", "n", "100"]).await, int(1));
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(12));
    assert_int_in(c.cmd(&["TTL", "n"]).await, 1..=100, "INCR keeps the TTL");

    for not_integer in ["abc", "", "1.5", " 1", "1 ", "+1", "01", "9223372036854775808"] {
        assert_eq!(c.cmd(&["SET", "bad", not_integer]).await, ok());
        assert_eq!(c.cmd(&["INCR", "bad"]).await, error(NOT_INTEGER), "INCR on {not_integer:?}");
        assert_eq!(c.cmd(&["GET", "bad"]).await, bulk(not_integer), "a failed INCR leaves {not_integer:?}");
    }
    assert_eq!(c.cmd(&["INCRBY", "n", "abc"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["INCRBY", "n", "1.0"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["DECRBY", "n", "x"]).await, error(NOT_INTEGER));

    assert_eq!(c.cmd(&["SET", "max", "9223372036854775806"]).await, ok());
    assert_eq!(c.cmd(&["INCR", "max"]).await, int(i64::MAX));
    assert_eq!(c.cmd(&["INCR", "max"]).await, error("ERR increment or decrement would overflow"));
    assert_eq!(c.cmd(&["INCRBY", "max", "1"]).await, error("ERR increment or decrement would overflow"));
    assert_eq!(c.cmd(&["GET", "max"]).await, bulk("9223372036854775807"));
    assert_eq!(c.cmd(&["SET", "min", "-9223372036854775808"]).await, ok());
    assert_eq!(c.cmd(&["DECR", "min"]).await, error("ERR increment or decrement would overflow"));
    assert_eq!(c.cmd(&["DECRBY", "min", "-9223372036854775808"]).await, error("ERR decrement would overflow"));
    assert_eq!(c.cmd(&["INCR"]).await, arity_error("incr"));
    assert_eq!(c.cmd(&["INCRBY", "n"]).await, arity_error("incrby"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_counters() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "f", "10.50"]).await, ok());
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f", "0.1"]).await, bulk("10.6"));
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f", "-5"]).await, bulk("5.6"));
    assert_eq!(c.cmd(&["GET", "f"]).await, bulk("5.6"));
    assert_eq!(c.cmd(&["SET", "g", "5.0e3"]).await, ok());
    assert_eq!(c.cmd(&["INCRBYFLOAT", "g", "2.0e2"]).await, bulk("5200"));
    assert_eq!(c.cmd(&["INCRBYFLOAT", "new", "3"]).await, bulk("3"), "INCRBYFLOAT creates the key");
    assert_eq!(c.cmd(&["INCRBYFLOAT", "new", "1.5"]).await, bulk("4.5"));
    assert_eq!(c.cmd(&["INCR", "new"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f", "abc"]).await, error("ERR value is not a valid float"));
    assert_eq!(c.cmd(&["SET", "s", "abc"]).await, ok());
    assert_eq!(c.cmd(&["INCRBYFLOAT", "s", "1"]).await, error("ERR value is not a valid float"));
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f", "inf"]).await, error("ERR increment would produce NaN or Infinity"));
    assert_eq!(c.cmd(&["GET", "f"]).await, bulk("5.6"));
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f"]).await, arity_error("incrbyfloat"));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 2. Key-space commands.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_exists_touch_type_count() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]).await, ok());
    assert_eq!(c.cmd(&["EXISTS", "a"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", "a", "a", "missing", "b"]).await, int(3), "EXISTS counts repeats");
    assert_eq!(c.cmd(&["TOUCH", "a", "b", "missing"]).await, int(2));
    assert_eq!(c.cmd(&["TYPE", "a"]).await, simple("string"));
    assert_eq!(c.cmd(&["TYPE", "missing"]).await, simple("none"));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(3));
    assert_eq!(c.cmd(&["DEL", "a", "missing", "a"]).await, int(1), "a key is deleted once");
    assert_eq!(c.cmd(&["UNLINK", "b", "c"]).await, int(2));
    assert_eq!(c.cmd(&["DEL", "b"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "a", "b", "c"]).await, int(0));
    assert_eq!(c.cmd(&["TYPE", "a"]).await, simple("none"));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0), "deleted keys are not counted");
    assert_eq!(c.cmd(&["DEL"]).await, arity_error("del"));
    assert_eq!(c.cmd(&["EXISTS"]).await, arity_error("exists"));
    assert_eq!(c.cmd(&["DBSIZE", "x"]).await, arity_error("dbsize"));
    // A deleted key can be written again.
    assert_eq!(c.cmd(&["SET", "a", "again"]).await, ok());
    assert_eq!(c.cmd(&["GET", "a"]).await, bulk("again"));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_options_persist_and_ttl_codes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["TTL", "missing"]).await, int(-2));
    assert_eq!(c.cmd(&["PTTL", "missing"]).await, int(-2));
    assert_eq!(c.cmd(&["EXPIRETIME", "missing"]).await, int(-2));
    assert_eq!(c.cmd(&["PEXPIRETIME", "missing"]).await, int(-2));
    assert_eq!(c.cmd(&["EXPIRE", "missing", "100"]).await, int(0));
    assert_eq!(c.cmd(&["PERSIST", "missing"]).await, int(0));

    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["PTTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["PERSIST", "k"]).await, int(0), "PERSIST without a TTL");

    // No TTL: XX and GT refuse (no TTL counts as infinite), NX sets.
    assert_eq!(c.cmd(&["EXPIRE", "k", "100", "XX"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100", "GT"]).await, int(0));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100", "NX"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 99..=100, "after EXPIRE 100 NX");
    assert_eq!(c.cmd(&["EXPIRE", "k", "200", "NX"]).await, int(0), "NX with a TTL");
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "GT"]).await, int(0));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 99..=100, "GT refused a smaller TTL");
    assert_eq!(c.cmd(&["EXPIRE", "k", "200", "GT"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 199..=200, "after EXPIRE 200 GT");
    assert_eq!(c.cmd(&["EXPIRE", "k", "300", "LT"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "150", "LT"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 149..=150, "after EXPIRE 150 LT");
    assert_eq!(c.cmd(&["EXPIRE", "k", "120", "XX"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 119..=120, "after EXPIRE 120 XX");
    assert_eq!(c.cmd(&["EXPIRE", "k", "110", "XX", "LT"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 109..=110, "after EXPIRE 110 XX LT");
    assert_eq!(c.cmd(&["PEXPIRE", "k", "90000"]).await, int(1));
    assert_int_in(c.cmd(&["PTTL", "k"]).await, 1..=90_000, "after PEXPIRE 90000");

    assert_eq!(c.cmd(&["PERSIST", "k"]).await, int(1));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["PERSIST", "k"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100", "LT"]).await, int(1), "LT with no TTL (infinite) sets");
    assert_int_in(c.cmd(&["TTL", "k"]).await, 99..=100, "after EXPIRE 100 LT");

    let options_error = "ERR NX and XX, GT or LT options at the same time are not compatible";
    assert_eq!(c.cmd(&["EXPIRE", "k", "10", "NX", "XX"]).await, error(options_error));
    assert_eq!(c.cmd(&["EXPIRE", "k", "10", "NX", "GT"]).await, error(options_error));
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "10", "GT", "LT"]).await,
        error("ERR GT and LT options at the same time are not compatible")
    );
    assert_eq!(c.cmd(&["EXPIRE", "k", "10", "BOGUS"]).await, error("ERR Unsupported option BOGUS"));
    assert_eq!(c.cmd(&["EXPIRE", "k", "ten"]).await, error(NOT_INTEGER));
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "9223372036854775807"]).await,
        error("ERR invalid expire time in 'expire' command")
    );
    assert_eq!(c.cmd(&["EXPIRE", "k"]).await, arity_error("expire"));
    assert_int_in(c.cmd(&["TTL", "k"]).await, 99..=100, "failed EXPIREs leave the TTL alone");

    // Absolute deadlines are reported back exactly.
    let at_s = now_ms() / 1000 + 1000;
    assert_eq!(c.cmd(&["EXPIREAT", "k", &at_s.to_string()]).await, int(1));
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(at_s as i64));
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]).await, int(at_s as i64 * 1000));
    let at_ms = now_ms() + 2_000_000;
    assert_eq!(c.cmd(&["PEXPIREAT", "k", &at_ms.to_string()]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]).await, int(at_ms as i64));
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(at_ms as i64 / 1000));

    // A deadline not in the future deletes the key, and counts as set.
    assert_eq!(c.cmd(&["EXPIRE", "k", "0"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["EXPIRE", "k", "-10"]).await, int(1));
    assert_eq!(c.cmd(&["GET", "k"]).await, nil());
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["EXPIREAT", "k", "1"]).await, int(1));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-2));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_disappear_lazily_and_actively() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["PEXPIRE", "k", "50"]).await, int(1));
    sleep(Duration::from_millis(200)).await;
    assert_eq!(c.cmd(&["GET", "k"]).await, nil());
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-2));
    assert_eq!(c.cmd(&["TYPE", "k"]).await, simple("none"));
    assert_eq!(c.cmd(&["KEYS", "*"]).await, Resp::Array(vec![]));

    // Keys nobody reads are removed by active expiry: DBSIZE (which counts
    // without checking deadlines) drops to 0 on its own.
    for i in 0..50 {
        assert_eq!(c.cmd(&["SET", &format!("unread:{i}"), "v", "PX", "50"]).await, ok());
    }
    assert_eq!(c.cmd(&["SET", "kept", "v"]).await, ok());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let size = c.cmd(&["DBSIZE"]).await.int();
        if size == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "DBSIZE still {size} 2 s after the keys expired");
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.cmd(&["GET", "kept"]).await, bulk("v"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_an_expired_key_start_fresh() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    // Many keys expire at once; active expiry removes a bounded number per
    // step, so the last ones stay stored (but invisible) for a while. A write
    // to such a key must see no old value and keep no old deadline.
    let total = 2000;
    let setup: Vec<u8> = (0..total).flat_map(|i| encode(&["SET", &format!("e:{i}"), "1", "PX", "50"])).collect();
    c.send(&setup).await;
    for _ in 0..total {
        assert_eq!(c.read().await, ok());
    }
    sleep(Duration::from_millis(100)).await;
    let key = |n: usize| format!("e:{}", total - 1 - n);
    let writes: Vec<(Vec<String>, Resp, Resp)> = vec![
        (vec!["SET".into(), key(0), "w".into(), "KEEPTTL".into()], ok(), bulk("w")),
        (vec!["APPEND".into(), key(1), "x".into()], int(1), bulk("x")),
        (vec!["INCR".into(), key(2)], int(1), bulk("1")),
        (vec!["SETRANGE".into(), key(3), "0".into(), "z".into()], int(1), bulk("z")),
        (vec!["INCRBYFLOAT".into(), key(4), "1.5".into()], bulk("1.5"), bulk("1.5")),
        (vec!["SETNX".into(), key(5), "n".into()], int(1), bulk("n")),
        (vec!["GETSET".into(), key(6), "g".into()], nil(), bulk("g")),
        (vec!["MSETNX".into(), key(7), "m".into()], int(1), bulk("m")),
        (vec!["SET".into(), key(8), "s".into(), "NX".into(), "GET".into()], nil(), bulk("s")),
    ];
    for (n, (write, reply, value)) in writes.into_iter().enumerate() {
        assert_eq!(c.cmd(&write).await, reply, "{write:?} on an expired key");
        assert_eq!(c.cmd(&["GET", &key(n)]).await, value, "after {write:?}");
        assert_eq!(c.cmd(&["TTL", &key(n)]).await, int(-1), "after {write:?}");
    }
    assert_eq!(c.cmd(&["EXPIRE", &key(20), "100"]).await, int(0), "EXPIRE on an expired key");
    assert_eq!(c.cmd(&["PERSIST", &key(21)]).await, int(0), "PERSIST on an expired key");
    assert_eq!(c.cmd(&["GETDEL", &key(22)]).await, nil());
    assert_eq!(c.cmd(&["DEL", &key(23)]).await, int(0), "DEL of an expired key counts nothing");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_increment_one_counter() {
    let node = start().await;
    let (clients, increments) = (8, 1000);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = node.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.send(&encode(&["INCR", "shared"]).repeat(increments)).await;
            let mut last = 0;
            for _ in 0..increments {
                let value = c.read().await.int();
                assert!(value > last, "one client's increments are not increasing: {value} after {last}");
                last = value;
            }
        }));
    }
    for task in tasks {
        timeout(PIPELINE_TIMEOUT, task).await.expect("clients finished in time").expect("client task");
    }
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["GET", "shared"]).await, bulk((clients * increments).to_string()));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_globs_and_randomkey() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RANDOMKEY"]).await, nil(), "RANDOMKEY on an empty database");
    assert_eq!(c.cmd(&["KEYS", "*"]).await, Resp::Array(vec![]));
    for key in ["user:1", "user:2", "user:10", "admin", "hello", "hallo", "hxllo", "a*b", "User:3"] {
        assert_eq!(c.cmd(&["SET", key, "v"]).await, ok());
    }
    let cases: &[(&str, &[&str])] = &[
        ("*", &["User:3", "a*b", "admin", "hallo", "hello", "hxllo", "user:1", "user:10", "user:2"]),
        ("user:?", &["user:1", "user:2"]),
        ("user:*", &["user:1", "user:10", "user:2"]),
        ("h?llo", &["hallo", "hello", "hxllo"]),
        ("h[ae]llo", &["hallo", "hello"]),
        ("h[^e]llo", &["hallo", "hxllo"]),
        ("h[a-b]llo", &["hallo"]),
        ("a\\*b", &["a*b"]),
        ("*1*", &["user:1", "user:10"]),
        ("nomatch*", &[]),
    ];
    for (pattern, expected) in cases {
        assert_eq!(sorted_texts(&c.cmd(&["KEYS", pattern]).await), *expected, "KEYS {pattern}");
    }
    assert_eq!(c.cmd(&["KEYS"]).await, arity_error("keys"));

    assert_eq!(c.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(c.cmd(&["SET", "only", "v"]).await, ok());
    assert_eq!(c.cmd(&["RANDOMKEY"]).await, bulk("only"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_visits_every_key_once() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let total = 1000;
    // One MSET per 100 keys keeps the setup fast.
    for batch in 0..total / 100 {
        let mut args = vec!["MSET".to_string()];
        for i in batch * 100..(batch + 1) * 100 {
            args.push(format!("key:{i}"));
            args.push(i.to_string());
        }
        assert_eq!(c.cmd(&args).await, ok());
    }
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(total as i64));
    let expected: HashSet<String> = (0..total).map(|i| format!("key:{i}")).collect();

    /// Runs SCAN to completion with `options`; returns every key returned
    /// (with repeats) and the number of calls.
    async fn scan_all(c: &mut Client, options: &[&str]) -> (Vec<String>, usize) {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        let mut calls = 0;
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(options);
            let reply = c.cmd(&args).await;
            let [next, batch] = reply.items() else { panic!("SCAN reply is not [cursor, keys]: {reply:?}") };
            keys.extend(batch.items().iter().map(Resp::text));
            cursor = next.text();
            calls += 1;
            assert!(calls <= 1000, "SCAN does not terminate");
            if cursor == "0" {
                return (keys, calls);
            }
        }
    }

    let (keys, calls) = scan_all(&mut c, &["COUNT", "100"]).await;
    let seen: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(seen, expected, "SCAN returns every key and nothing else");
    // Without writes during the scan the table does not move, so no key may
    // come back twice.
    assert_eq!(keys.len(), total, "SCAN returned some key more than once");
    assert!(calls <= 50, "SCAN COUNT 100 over {total} keys took {calls} calls");

    let (keys, _) = scan_all(&mut c, &["MATCH", "key:1?", "COUNT", "100"]).await;
    let seen: HashSet<String> = keys.into_iter().collect();
    let expected_match: HashSet<String> = (10..20).map(|i| format!("key:{i}")).collect();
    assert_eq!(seen, expected_match, "SCAN MATCH key:1?");

    let (keys, _) = scan_all(&mut c, &["TYPE", "string", "COUNT", "100"]).await;
    assert_eq!(keys.into_iter().collect::<HashSet<_>>(), expected, "SCAN TYPE string");
    let (keys, _) = scan_all(&mut c, &["TYPE", "hash", "COUNT", "100"]).await;
    assert!(keys.is_empty(), "SCAN TYPE hash on strings returned {keys:?}");

    // The default COUNT also gets there.
    let (keys, _) = scan_all(&mut c, &[]).await;
    assert_eq!(keys.into_iter().collect::<HashSet<_>>(), expected, "SCAN without COUNT");

    assert_eq!(c.cmd(&["SCAN", "abc"]).await, error("ERR invalid cursor"));
    assert_eq!(c.cmd(&["SCAN", "0", "COUNT", "0"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["SCAN", "0", "COUNT"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["SCAN", "0", "BOGUS", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["SCAN"]).await, arity_error("scan"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_and_flushdb() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]).await, ok());
    assert_eq!(c.cmd(&["SET", "t", "v", "EX", "100"]).await, ok());
    assert_eq!(c.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "a"]).await, nil());
    assert_eq!(c.cmd(&["TTL", "t"]).await, int(-2));
    assert_eq!(c.cmd(&["KEYS", "*"]).await, Resp::Array(vec![]));
    for flush in [&["FLUSHALL", "ASYNC"][..], &["FLUSHALL", "SYNC"], &["FLUSHDB"], &["flushdb", "async"]] {
        assert_eq!(c.cmd(&["SET", "a", "1"]).await, ok());
        assert_eq!(c.cmd(flush).await, ok(), "{flush:?}");
        assert_eq!(c.cmd(&["DBSIZE"]).await, int(0), "{flush:?}");
    }
    assert_eq!(c.cmd(&["FLUSHALL", "BOGUS"]).await, error(SYNTAX));
    // The database works normally after a flush.
    assert_eq!(c.cmd(&["SET", "a", "after"]).await, ok());
    assert_eq!(c.cmd(&["GET", "a"]).await, bulk("after"));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 3. Connection and server commands.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_echo_select() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.send(&encode(&["PING"])).await;
    assert_eq!(c.read_raw(7, REPLY_TIMEOUT).await, b"+PONG\r\n");
    assert_eq!(c.cmd(&["PING", "hello world"]).await, bulk("hello world"));
    assert_eq!(c.cmd(&["PING", "a", "b"]).await, arity_error("ping"));
    assert_eq!(c.cmd(&["ECHO", "hi"]).await, bulk("hi"));
    assert_eq!(c.cmd(&["ECHO", ""]).await, bulk(""));
    assert_eq!(c.cmd(&["ECHO"]).await, arity_error("echo"));
    assert_eq!(c.cmd(&["SELECT", "0"]).await, ok());
    assert_eq!(c.cmd(&["SELECT", "1"]).await, error("ERR DB index is out of range"));
    assert_eq!(c.cmd(&["SELECT", "x"]).await, error(NOT_INTEGER));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_switches_between_resp2_and_resp3() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.send(&encode(&["HELLO", "3"])).await;
    assert_eq!(c.read_raw(4, REPLY_TIMEOUT).await, b"%7\r\n", "HELLO 3 answers with a 7-entry map");
    // Put the header back and decode the rest of the map.
    c.input.splice(0..0, b"%7\r\n".iter().copied());
    let Resp::Map(pairs) = c.read().await else { panic!("HELLO 3 reply is not a map") };
    let field = |name: &str| {
        pairs.iter().find(|(k, _)| *k == bulk(name)).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(field("server"), bulk("redis"));
    assert_eq!(field("proto"), int(3));
    assert_eq!(field("mode"), bulk("standalone"));
    assert_eq!(field("role"), bulk("master"));
    assert!(field("version").text().starts_with("7."), "version {:?}", field("version"));
    assert!(field("id").int() > 0);

    c.send(&encode(&["GET", "missing"])).await;
    assert_eq!(c.read_raw(3, REPLY_TIMEOUT).await, b"_\r\n", "RESP3 null");
    c.send(&encode(&["CONFIG", "GET", "port"])).await;
    assert_eq!(c.read_line().await, b"%1\r\n", "CONFIG GET is a map in RESP3");
    let _ = c.read().await;
    let _ = c.read().await;

    c.send(&encode(&["HELLO", "2"])).await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"*14\r\n", "HELLO 2 answers with a flat array");
    c.input.splice(0..0, b"*14\r\n".iter().copied());
    let reply = c.read().await;
    assert_eq!(reply.items()[4..6], [bulk("proto"), int(2)]);
    c.send(&encode(&["GET", "missing"])).await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"$-1\r\n", "RESP2 null");

    assert_eq!(c.cmd(&["HELLO", "4"]).await, error("NOPROTO unsupported protocol version"));
    assert_eq!(c.cmd(&["HELLO", "x"]).await, error("ERR Protocol version is not an integer or out of range"));
    assert_eq!(c.cmd(&["HELLO", "3", "BOGUS"]).await, error("ERR Syntax error in HELLO option 'BOGUS'"));
    // Failed HELLOs do not switch protocol.
    c.send(&encode(&["GET", "missing"])).await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"$-1\r\n");

    // HELLO with no version reports the current protocol; SETNAME names the client.
    let reply = c.cmd(&["HELLO", "2", "SETNAME", "helloname"]).await;
    assert_eq!(reply.items().len(), 14);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, bulk("helloname"));
    let reply = c.cmd(&["HELLO"]).await;
    assert_eq!(reply.items()[4..6], [bulk("proto"), int(2)]);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_closes_the_connection() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    // QUIT answers OK and closes, even with more commands pipelined after it.
    c.send(&[encode(&["QUIT"]), encode(&["GET", "k"])].concat()).await;
    assert_eq!(c.read().await, ok());
    c.expect_closed().await;
    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["GET", "k"]).await, bulk("v"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_requirepass() {
    let node =
        start_with(NodeConfig { port: 0, requirepass: Some("s3cret".to_string()), ..NodeConfig::default() }).await;
    let noauth = error("NOAUTH Authentication required.");
    let wrongpass = error("WRONGPASS invalid username-password pair or user is disabled.");
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["PING"]).await, noauth);
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth);
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, noauth);
    assert_eq!(
        c.cmd(&["HELLO", "3"]).await,
        error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
             <user> <pass> option can be used to authenticate the client and select the RESP protocol version at \
             the same time"
        )
    );
    assert_eq!(c.cmd(&["AUTH", "wrong"]).await, wrongpass);
    assert_eq!(c.cmd(&["AUTH", "default", "wrong"]).await, wrongpass);
    assert_eq!(c.cmd(&["AUTH", "nobody", "s3cret"]).await, wrongpass);
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth, "a failed AUTH does not authenticate");
    assert_eq!(c.cmd(&["AUTH", "s3cret"]).await, ok());
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());

    // Authentication is per connection.
    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["GET", "k"]).await, noauth);
    assert_eq!(other.cmd(&["AUTH", "default", "s3cret"]).await, ok());
    assert_eq!(other.cmd(&["GET", "k"]).await, bulk("v"));

    // HELLO AUTH authenticates and switches protocol at once.
    let mut third = Client::connect(node.addr).await;
    assert_eq!(third.cmd(&["HELLO", "3", "AUTH", "default", "wrong"]).await, wrongpass);
    third.send(&encode(&["HELLO", "3", "AUTH", "default", "s3cret"])).await;
    assert_eq!(third.read_raw(4, REPLY_TIMEOUT).await, b"%7\r\n");
    third.input.splice(0..0, b"%7\r\n".iter().copied());
    let _ = third.read().await;
    assert_eq!(third.cmd(&["GET", "k"]).await, bulk("v"));
    stop(node).await;

    // Without requirepass, AUTH is an error, as in Redis.
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(
        c.cmd(&["AUTH", "x"]).await,
        error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your \
             configuration is correct?"
        )
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_and_names() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    let id = c.cmd(&["CLIENT", "ID"]).await.int();
    let other_id = other.cmd(&["CLIENT", "ID"]).await.int();
    assert!(id > 0 && other_id > 0);
    assert_ne!(id, other_id, "client ids are unique");
    assert_eq!(c.cmd(&["client", "id"]).await, int(id), "the id is stable and subcommands case-insensitive");

    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, nil());
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]).await, ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, bulk("worker-1"));
    assert_eq!(other.cmd(&["CLIENT", "GETNAME"]).await, nil(), "names are per connection");
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "has space"]).await,
        error("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, bulk("worker-1"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", ""]).await, ok(), "an empty name clears it");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, nil());
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "meridian-tests"]).await, ok());
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "LIB-VER", "1.0"]).await, ok());
    assert_eq!(c.cmd(&["CLIENT"]).await, arity_error("client"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_config_info_time() {
    let node = start_with(NodeConfig { port: 0, maxclients: 123, ..NodeConfig::default() }).await;
    let mut c = Client::connect(node.addr).await;
    let count = c.cmd(&["COMMAND", "COUNT"]).await.int();
    assert!(count > 40, "COMMAND COUNT is {count}");
    let list = c.cmd(&["COMMAND", "LIST"]).await;
    assert_eq!(list.items().len() as i64, count);
    let names: HashSet<String> = list.items().iter().map(Resp::text).collect();
    for name in ["get", "set", "incrbyfloat", "scan", "hello", "command"] {
        assert!(names.contains(name), "COMMAND LIST lacks {name}");
    }
    assert_eq!(c.cmd(&["COMMAND"]).await.items().len() as i64, count);

    let info = c.cmd(&["COMMAND", "INFO", "get", "MSET", "nosuchcommand"]).await;
    let [get, mset, missing] = info.items() else { panic!("COMMAND INFO gave {info:?}") };
    let get = get.items();
    assert_eq!(get[0], bulk("get"));
    assert_eq!(get[1], int(2), "GET's arity");
    assert!(get[2].items().contains(&simple("readonly")), "GET's flags {:?}", get[2]);
    assert_eq!(get[3..6], [int(1), int(1), int(1)], "GET's key positions");
    let mset = mset.items();
    assert_eq!(mset[0], bulk("mset"));
    assert_eq!(mset[1], int(-3));
    assert_eq!(mset[3..6], [int(1), int(-1), int(2)], "MSET's key positions");
    assert_eq!(*missing, nil());

    assert_eq!(c.cmd(&["CONFIG", "GET", "maxclients"]).await, Resp::Array(vec![bulk("maxclients"), bulk("123")]));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "port"]).await,
        Resp::Array(vec![bulk("port"), bulk(node.addr.port().to_string())])
    );
    assert_eq!(c.cmd(&["CONFIG", "GET", "nosuchsetting"]).await, Resp::Array(vec![]));
    let all = c.cmd(&["CONFIG", "GET", "*"]).await;
    assert!(all.items().len() >= 4 && all.items().len() % 2 == 0, "CONFIG GET * gave {all:?}");
    assert_eq!(c.cmd(&["CONFIG"]).await, arity_error("config"));

    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    let info = c.cmd(&["INFO"]).await.text();
    assert!(info.contains("redis_version:"), "INFO lacks redis_version: {info}");
    assert!(info.contains("# Keyspace"), "INFO lacks # Keyspace: {info}");
    assert!(info.contains("db0:keys=1"), "INFO keyspace does not count the key: {info}");
    assert!(info.contains("maxclients:123"), "INFO lacks maxclients: {info}");
    assert!(info.contains(&format!("tcp_port:{}", node.addr.port())), "INFO lacks tcp_port: {info}");
    assert!(info.lines().all(|line| !line.contains('\n')) && info.contains("\r\n"), "INFO uses CRLF lines");
    let server = c.cmd(&["INFO", "server"]).await.text();
    assert!(server.contains("redis_version:") && !server.contains("# Keyspace"), "INFO server: {server}");
    let memory = c.cmd(&["INFO", "memory"]).await.text();
    let used: u64 = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO memory lacks used_memory: {memory}"));
    assert!(used > 1024 * 1024, "a running node uses more than 1 MiB: {memory}");
    assert!(memory.contains("maxmemory_policy:noeviction") && memory.contains("used_memory_human:"), "{memory}");
    assert!(info.contains("# Memory"), "INFO (default) includes the memory section: {info}");

    let time = c.cmd(&["TIME"]).await;
    let [seconds, micros] = time.items() else { panic!("TIME gave {time:?}") };
    let seconds: u64 = seconds.text().parse().expect("TIME seconds is an integer");
    let micros: u64 = micros.text().parse().expect("TIME microseconds is an integer");
    assert!(seconds.abs_diff(now_ms() / 1000) <= 5, "TIME is {seconds}, far from now");
    assert!(micros < 1_000_000);
    assert_eq!(c.cmd(&["TIME", "x"]).await, arity_error("time"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxclients_refuses_extra_clients() {
    let node = start_with(NodeConfig { port: 0, maxclients: 2, ..NodeConfig::default() }).await;
    let mut first = Client::connect(node.addr).await;
    let mut second = Client::connect(node.addr).await;
    assert_eq!(first.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(second.cmd(&["PING"]).await, simple("PONG"));
    let mut third = Client::connect(node.addr).await;
    assert_eq!(third.read().await, error("ERR max number of clients reached"));
    third.expect_closed().await;
    // A freed slot is reused (the server notices the close asynchronously).
    drop(first);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let mut next = Client::connect(node.addr).await;
        next.send(&encode(&["PING"])).await;
        match next.read().await {
            Resp::Simple(pong) if pong == "PONG" => break,
            Resp::Error(e) if e == "ERR max number of clients reached" && Instant::now() < deadline => {
                sleep(Duration::from_millis(50)).await;
            }
            other => panic!("a freed client slot was not reused: {other:?}"),
        }
    }
    assert_eq!(second.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_refuses_connections() {
    let node = start().await;
    let addr = node.addr;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
    let refused = timeout(REPLY_TIMEOUT, TcpStream::connect(addr)).await.expect("connect timed out");
    assert!(refused.is_err(), "a stopped node still accepts connections");
}

/// A CONFIG GET reply as (name, value) pairs, in RESP2 or RESP3.
fn config_pairs(reply: &Resp) -> Vec<(String, String)> {
    match reply {
        Resp::Map(pairs) => pairs.iter().map(|(k, v)| (k.text(), v.text())).collect(),
        other => other.items().chunks(2).map(|pair| (pair[0].text(), pair[1].text())).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_set_get_aliases_and_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let defaults = [
        ("hash-max-listpack-entries", "128"),
        ("hash-max-listpack-value", "64"),
        ("hash-max-ziplist-entries", "128"),
        ("hash-max-ziplist-value", "64"),
        ("set-max-intset-entries", "512"),
        ("set-max-listpack-entries", "128"),
        ("set-max-listpack-value", "64"),
        ("list-max-listpack-size", "-2"),
        ("list-max-ziplist-size", "-2"),
        ("zset-max-listpack-entries", "128"),
        ("zset-max-listpack-value", "64"),
        ("zset-max-ziplist-entries", "128"),
        ("zset-max-ziplist-value", "64"),
        ("timeout", "0"),
    ];
    for (name, value) in defaults {
        assert_eq!(c.cmd(&["CONFIG", "GET", name]).await, Resp::Array(vec![bulk(name), bulk(value)]), "{name}");
    }
    // Setting the canonical name shows through the alias and back.
    assert_eq!(c.cmd(&["CONFIG", "SET", "hash-max-listpack-entries", "256", "timeout", "30"]).await, ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "hash-max-ziplist-entries"]).await,
        Resp::Array(vec![bulk("hash-max-ziplist-entries"), bulk("256")])
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "ZSET-MAX-ZIPLIST-VALUE", "32"]).await, ok(), "names are case-insensitive");
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "zset-max-listpack-value"]).await,
        Resp::Array(vec![bulk("zset-max-listpack-value"), bulk("32")])
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "list-max-ziplist-size", "-5"]).await, ok(), "negative sizes are valid");
    let mut matched = config_pairs(&c.cmd(&["CONFIG", "GET", "*max-*-entries", "timeout"]).await);
    matched.sort();
    let expect: Vec<(String, String)> = [
        ("hash-max-listpack-entries", "256"),
        ("hash-max-ziplist-entries", "256"),
        ("set-max-intset-entries", "512"),
        ("set-max-listpack-entries", "128"),
        ("timeout", "30"),
        ("zset-max-listpack-entries", "128"),
        ("zset-max-ziplist-entries", "128"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(matched, expect);

    // Errors, and atomicity: a failing call changes nothing.
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "nosuchoption", "1"]).await,
        error("ERR Unknown option or number of arguments for CONFIG SET - 'nosuchoption'")
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "set-max-intset-entries", "1000", "hash-max-listpack-value", "abc"]).await,
        error(
            "ERR CONFIG SET failed (possibly related to argument 'hash-max-listpack-value') - argument couldn't be \
             parsed into an integer"
        )
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "set-max-intset-entries"]).await,
        Resp::Array(vec![bulk("set-max-intset-entries"), bulk("512")]),
        "CONFIG SET is all or nothing"
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "timeout", "-1"]).await,
        error(
            "ERR CONFIG SET failed (possibly related to argument 'timeout') - argument must be between 0 and \
             2147483647 inclusive"
        )
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "hash-max-listpack-entries", "1", "hash-max-ziplist-entries", "2"]).await,
        error("ERR CONFIG SET failed (possibly related to argument 'hash-max-ziplist-entries') - duplicate parameter")
    );
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxclients", "5"]).await,
        error("ERR CONFIG SET failed (possibly related to argument 'maxclients') - can't set immutable config")
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "timeout"]).await, arity_error("config|set"));
    assert_eq!(c.cmd(&["CONFIG", "SET"]).await, arity_error("config|set"));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "hash-max-listpack-entries"]).await,
        Resp::Array(vec![bulk("hash-max-listpack-entries"), bulk("256")])
    );
    // Another connection sees the stored values.
    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["CONFIG", "GET", "timeout"]).await, Resp::Array(vec![bulk("timeout"), bulk("30")]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_resetstat_zeroes_the_counters() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    for _ in 0..5 {
        assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    }
    let before = c.cmd(&["INFO", "stats"]).await.text();
    assert!(!before.contains("total_commands_processed:1\r\n"), "INFO stats: {before}");
    assert_eq!(c.cmd(&["CONFIG", "RESETSTAT"]).await, ok());
    // RESETSTAT itself was counted before it ran; INFO counts itself.
    let after = c.cmd(&["INFO", "stats"]).await.text();
    assert!(after.contains("total_commands_processed:1\r\n"), "INFO stats after RESETSTAT: {after}");
    assert!(after.contains("total_connections_received:0\r\n"), "INFO stats after RESETSTAT: {after}");
    assert_eq!(c.cmd(&["CONFIG", "RESETSTAT", "x"]).await, arity_error("config|resetstat"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_answers_as_a_server_without_libraries() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let no_scripting = error("ERR scripting is not supported by Meridian yet");
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH"]).await, ok());
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH", "async"]).await, ok());
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH", "SYNC"]).await, ok());
    assert_eq!(
        c.cmd(&["FUNCTION", "FLUSH", "later"]).await,
        error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
    );
    assert_eq!(c.cmd(&["FUNCTION", "LIST"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "x*"]).await, Resp::Array(vec![]));
    let stats = Resp::Array(vec![
        bulk("running_script"),
        nil(),
        bulk("engines"),
        Resp::Array(vec![
            bulk("LUA"),
            Resp::Array(vec![bulk("libraries_count"), int(0), bulk("functions_count"), int(0)]),
        ]),
    ]);
    assert_eq!(c.cmd(&["FUNCTION", "STATS"]).await, stats);
    let code = "#!lua name=mylib\nredis.register_function('f', function() return 1 end)";
    assert_eq!(c.cmd(&["FUNCTION", "LOAD", code]).await, no_scripting);
    assert_eq!(c.cmd(&["FUNCTION", "DELETE", "mylib"]).await, no_scripting);
    assert_eq!(c.cmd(&["FUNCTION", "DUMP"]).await, no_scripting);
    assert_eq!(c.cmd(&["FUNCTION", "RESTORE", "payload"]).await, no_scripting);
    assert_eq!(c.cmd(&["FUNCTION", "STATS", "x"]).await, arity_error("function|stats"));
    assert_eq!(c.cmd(&["FUNCTION", "NOPE"]).await, error("ERR unknown subcommand 'NOPE'. Try FUNCTION HELP."));
    // Scripting commands themselves are not registered.
    assert_eq!(
        c.cmd(&["EVAL", "return 1", "0"]).await,
        error("ERR unknown command 'EVAL', with args beginning with: 'return 1' '0' ")
    );
    assert_eq!(
        c.cmd(&["FCALL", "f", "0"]).await,
        error("ERR unknown command 'FCALL', with args beginning with: 'f' '0' ")
    );
    // RESP3: the stats are maps and the running script a null.
    c.cmd(&["HELLO", "3"]).await;
    c.send(&encode(&["FUNCTION", "STATS"])).await;
    let raw = b"%2\r\n$14\r\nrunning_script\r\n_\r\n$7\r\nengines\r\n%1\r\n$3\r\nLUA\r\n%2\r\n$15\r\nlibraries_count\r\n:0\r\n$15\r\nfunctions_count\r\n:0\r\n";
    assert_eq!(c.read_raw(raw.len(), REPLY_TIMEOUT).await, raw.to_vec());
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lastsave_is_the_start_time() {
    let before = now_ms() / 1000;
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let lastsave = c.cmd(&["LASTSAVE"]).await.int();
    assert!(lastsave as u64 >= before && lastsave as u64 <= now_ms() / 1000, "LASTSAVE is {lastsave}");
    assert_eq!(c.cmd(&["LASTSAVE"]).await, int(lastsave), "LASTSAVE is stable without saves");
    assert_eq!(c.cmd(&["LASTSAVE", "x"]).await, arity_error("lastsave"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_blocks_only_its_own_client() {
    let node = start().await;
    let mut sleeper = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    assert_eq!(sleeper.cmd(&["DEBUG", "SLEEP", "0"]).await, ok());
    let sent = Instant::now();
    sleeper.send(&encode(&["DEBUG", "SLEEP", "1"])).await;
    // Give the sleeper's command time to start, then ping from elsewhere.
    sleep(Duration::from_millis(50)).await;
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(other.cmd(&["SET", "k", "v"]).await, ok());
    let mut probe = [0u8; 16];
    match sleeper.stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the sleeper replied before the other client's PING was served: {other:?}"),
    }
    assert_eq!(sleeper.read().await, ok());
    assert!(sent.elapsed() >= Duration::from_secs(1), "DEBUG SLEEP 1 returned after {:?}", sent.elapsed());
    assert_eq!(sleeper.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(sleeper.cmd(&["DEBUG", "SLEEP", "abc"]).await, error("ERR value is not a valid float"));
    assert_eq!(sleeper.cmd(&["DEBUG", "NOPE"]).await, error("ERR unknown subcommand 'NOPE'. Try DEBUG HELP."));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_restores_the_initial_connection_state() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert!(matches!(c.cmd(&["HELLO", "3", "SETNAME", "before"]).await, Resp::Map(_)));
    assert_eq!(c.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, nil());
    // Back on RESP2: a null is `$-1`, not `_`.
    c.send(&encode(&["GET", "missing"])).await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"$-1\r\n".to_vec());
    assert_eq!(c.cmd(&["RESET", "x"]).await, arity_error("reset"));
    stop(node).await;

    let node =
        start_with(NodeConfig { port: 0, requirepass: Some("s3cret".to_string()), ..NodeConfig::default() }).await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RESET"]).await, simple("RESET"), "RESET needs no authentication");
    assert_eq!(c.cmd(&["AUTH", "s3cret"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(c.cmd(&["GET", "k"]).await, error("NOAUTH Authentication required."), "RESET logs the client out");
    stop(node).await;
}

/// The `key=value` fields of one CLIENT LIST line.
fn client_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split(' ')
        .map(|field| {
            let (key, value) = field.split_once('=').unwrap_or_else(|| panic!("bad CLIENT LIST field {field:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_info_and_flags() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    let id = c.cmd(&["CLIENT", "ID"]).await.int();
    let other_id = other.cmd(&["CLIENT", "ID"]).await.int();
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "alpha"]).await, ok());
    assert_eq!(other.cmd(&["CLIENT", "SETNAME", "beta"]).await, ok());
    assert!(matches!(other.cmd(&["HELLO", "3"]).await, Resp::Map(_)));

    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(list.ends_with('\n'), "CLIENT LIST ends with a newline: {list:?}");
    let lines: Vec<_> = list.lines().map(client_fields).collect();
    assert_eq!(lines.len(), 2, "CLIENT LIST: {list}");
    let mine = lines.iter().find(|f| f["id"] == id.to_string()).expect("CLIENT LIST has the caller");
    let theirs = lines.iter().find(|f| f["id"] == other_id.to_string()).expect("CLIENT LIST has the other client");
    assert_eq!(mine["name"], "alpha");
    assert_eq!(mine["cmd"], "client|list");
    assert_eq!(mine["addr"], c.stream.local_addr().unwrap().to_string());
    assert_eq!(mine["laddr"], node.addr.to_string());
    assert_eq!(mine["resp"], "2");
    assert_eq!(theirs["name"], "beta");
    assert_eq!(theirs["cmd"], "hello");
    assert_eq!(theirs["resp"], "3");
    assert_eq!(theirs["addr"], other.stream.local_addr().unwrap().to_string());
    for key in ["fd", "age", "idle", "flags", "db", "multi", "user", "lib-name", "lib-ver"] {
        assert!(mine.contains_key(key), "CLIENT LIST lacks {key}: {list}");
    }
    assert_eq!(mine["flags"], "N");
    assert_eq!(mine["user"], "default");

    let only = c.cmd(&["CLIENT", "LIST", "ID", &other_id.to_string()]).await.text();
    assert_eq!(only.lines().count(), 1, "CLIENT LIST ID: {only}");
    assert!(only.starts_with(&format!("id={other_id} ")), "CLIENT LIST ID: {only}");
    assert_eq!(c.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]).await, bulk(""));
    assert_eq!(c.cmd(&["CLIENT", "LIST", "ID", "x"]).await, error("ERR Invalid client ID"));
    assert_eq!(c.cmd(&["CLIENT", "LIST", "BOGUS"]).await, error(SYNTAX));

    let info = c.cmd(&["CLIENT", "INFO"]).await.text();
    assert!(info.ends_with('\n') && info.lines().count() == 1, "CLIENT INFO: {info:?}");
    let fields = client_fields(info.trim_end());
    assert_eq!(fields["id"], id.to_string());
    assert_eq!(fields["name"], "alpha");
    assert_eq!(fields["cmd"], "client|info");
    assert_eq!(c.cmd(&["CLIENT", "INFO", "x"]).await, arity_error("client|info"));

    for flag in ["NO-EVICT", "no-touch"] {
        assert_eq!(c.cmd(&["CLIENT", flag, "on"]).await, ok());
        assert_eq!(c.cmd(&["CLIENT", flag, "OFF"]).await, ok());
        assert_eq!(c.cmd(&["CLIENT", flag, "maybe"]).await, error(SYNTAX));
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_closes_the_other_connection() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut victim = Client::connect(node.addr).await;
    let mut old_style_victim = Client::connect(node.addr).await;
    let victim_id = victim.cmd(&["CLIENT", "ID"]).await.int();
    assert_eq!(old_style_victim.cmd(&["PING"]).await, simple("PONG"));
    let my_id = c.cmd(&["CLIENT", "ID"]).await.int();

    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", "999999"]).await, int(0), "an unknown id kills nobody");
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", &my_id.to_string()]).await, int(0), "SKIPME is yes by default");
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", "0"]).await, error("ERR client-id should be greater than 0"));
    // One argument is the old form, an address (as in Redis).
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID"]).await, error("ERR No such client"));
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", "1", "SKIPME"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["CLIENT", "KILL", "BOGUS", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["CLIENT", "KILL"]).await, arity_error("client|kill"));
    // The victim is blocked reading: the kill interrupts it.
    assert_eq!(c.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()]).await, int(1));
    victim.expect_closed().await;
    let list = c.cmd(&["CLIENT", "LIST"]).await.text();
    assert!(!list.contains(&format!("id={victim_id} ")), "a killed client leaves CLIENT LIST: {list}");

    // The old form names the address and answers OK or an error.
    let addr = old_style_victim.stream.local_addr().unwrap().to_string();
    assert_eq!(c.cmd(&["CLIENT", "KILL", &addr]).await, ok());
    old_style_victim.expect_closed().await;
    assert_eq!(c.cmd(&["CLIENT", "KILL", &addr]).await, error("ERR No such client"));
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"), "the killer is unharmed");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 4. Pipelining.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pipeline_of_ten_thousand_incrs() {
    let node = start().await;
    let commands = 10_000;
    let stream = timeout(REPLY_TIMEOUT, TcpStream::connect(node.addr)).await.expect("connect").expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let request: Vec<u8> = encode(&["INCR", "counter"]).repeat(commands);
    // Write from another task: the server answers while we still write, and
    // the replies must be read for its writes (and so its reads) to go on.
    let write = tokio::spawn(async move {
        writer.write_all(&request).await.expect("write pipeline");
        writer
    });
    let expected: Vec<u8> = (1..=commands).flat_map(|i| format!(":{i}\r\n").into_bytes()).collect();
    let mut received = vec![0u8; expected.len()];
    timeout(PIPELINE_TIMEOUT, reader.read_exact(&mut received))
        .await
        .expect("10,000 replies did not arrive in time")
        .expect("read replies");
    assert!(received == expected, "replies are not :1 .. :10000 in order");
    let writer = timeout(REPLY_TIMEOUT, write).await.expect("writer finished").expect("writer task");
    let mut c = Client { stream: reader.reunite(writer).expect("same stream"), input: Vec::new() };
    assert_eq!(c.cmd(&["GET", "counter"]).await, bulk("10000"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_commands_and_pipeline() {
    let node = start().await;
    let client = redis::Client::open(format!("redis://{}/", node.addr)).expect("redis URL");
    let mut con = timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("redis crate connect timed out")
        .expect("redis crate connects");
    async fn query(con: &mut redis::aio::MultiplexedConnection, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        timeout(REPLY_TIMEOUT, cmd.query_async(con)).await.expect("reply in time")
    }
    assert_eq!(query(&mut con, redis::cmd("SET").arg("k").arg("v")).await.expect("SET"), redis::Value::Okay);
    let value: Option<String> =
        timeout(REPLY_TIMEOUT, redis::cmd("GET").arg("k").query_async(&mut con)).await.expect("in time").expect("GET");
    assert_eq!(value.as_deref(), Some("v"));
    let missing: Option<String> = timeout(REPLY_TIMEOUT, redis::cmd("GET").arg("missing").query_async(&mut con))
        .await
        .expect("in time")
        .expect("GET missing");
    assert_eq!(missing, None);
    let failure = query(&mut con, redis::cmd("INCR").arg("k")).await.expect_err("INCR on a non-integer");
    assert!(failure.to_string().contains("value is not an integer or out of range"), "{failure}");

    let mut pipe = redis::pipe();
    for _ in 0..10_000 {
        pipe.cmd("INCR").arg("counter");
    }
    let replies: Vec<i64> =
        timeout(PIPELINE_TIMEOUT, pipe.query_async(&mut con)).await.expect("pipeline in time").expect("pipeline");
    assert_eq!(replies, (1..=10_000).collect::<Vec<i64>>());

    let (a, b, gone): (String, i64, Option<String>) = timeout(
        REPLY_TIMEOUT,
        redis::pipe()
            .cmd("SET")
            .arg("p")
            .arg("1")
            .ignore()
            .cmd("GET")
            .arg("p")
            .cmd("INCRBY")
            .arg("p")
            .arg(41)
            .cmd("GETDEL")
            .arg("missing")
            .query_async(&mut con),
    )
    .await
    .expect("in time")
    .expect("mixed pipeline");
    assert_eq!((a.as_str(), b, gone), ("1", 42, None));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 5. Raw and hostile input.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    c.send(b"PING\r\n").await;
    assert_eq!(c.read_raw(7, REPLY_TIMEOUT).await, b"+PONG\r\n");
    c.send(b"SET a b\r\n").await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"+OK\r\n");
    c.send(b"GET a\r\n").await;
    assert_eq!(c.read().await, bulk("b"));
    // Quoted arguments, a bare LF, and empty lines (which Redis ignores).
    c.send(b"SET \"with space\" 'x y'\r\n\r\nGET \"with space\"\n").await;
    assert_eq!(c.read().await, ok());
    assert_eq!(c.read().await, bulk("x y"));
    // Inline and multibulk commands mix in one pipeline.
    c.send(&[b"ping\r\n".to_vec(), encode(&["ECHO", "m"]), b"EXISTS a missing\r\n".to_vec()].concat()).await;
    assert_eq!(c.read().await, simple("PONG"));
    assert_eq!(c.read().await, bulk("m"));
    assert_eq!(c.read().await, int(1));
    // An unbalanced quote is a protocol error that closes the connection.
    c.send(b"SET \"a b\r\n").await;
    assert_eq!(c.read().await, error("ERR Protocol error: unbalanced quotes in request"));
    c.expect_closed().await;
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_reply_and_close() {
    let node = start().await;
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$2147483648\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*99999999999\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n+GET\r\n", "ERR Protocol error: expected '$', got '+'"),
    ];
    for (input, expected) in cases {
        let mut c = Client::connect(node.addr).await;
        // A command before the bad frame is still answered.
        c.send(&[encode(&["PING"]), input.to_vec()].concat()).await;
        assert_eq!(c.read().await, simple("PONG"));
        let line = c.read_line().await;
        assert!(line.starts_with(b"-ERR Protocol error:"), "{:?}", String::from_utf8_lossy(&line));
        assert_eq!(line, format!("-{expected}\r\n").into_bytes(), "reply to {:?}", String::from_utf8_lossy(input));
        c.expect_closed().await;
    }
    // The server goes on serving others.
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_frame_then_hangup_does_not_hurt_the_server() {
    let node = start().await;
    let mut setup = Client::connect(node.addr).await;
    assert_eq!(setup.cmd(&["SET", "k", "v"]).await, ok());
    for partial in [
        &b"*2\r\n$3\r\nGET\r\n$10\r\nabc"[..],
        b"*3\r\n$3\r\nSET\r\n",
        b"*2\r\n$3\r\nGE",
        b"*1",
        b"PING",
        b"*1\r\n$1000000\r\n",
    ] {
        let mut c = Client::connect(node.addr).await;
        c.send(partial).await;
        timeout(REPLY_TIMEOUT, c.stream.shutdown()).await.expect("shutdown in time").expect("shutdown write side");
        // The server sees the end of input mid-frame and closes, answering nothing.
        c.expect_closed().await;
    }
    // The server is still usable by another client, and the data is intact.
    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(other.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(setup.cmd(&["GET", "k"]).await, bulk("v"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_does_not_block_others() {
    let node = start().await;
    let mut setup = Client::connect(node.addr).await;
    let value = "v".repeat(10 * 1024);
    assert_eq!(setup.cmd(&["SET", "big", value.as_str()]).await, ok());

    // 10,000 GETs of 10 KB: 100 MB of replies, far more than socket buffers
    // hold, so the server blocks writing to this client.
    let mut stalled = TcpStream::connect(node.addr).await.expect("connect");
    let request = encode(&["GET", "big"]).repeat(10_000);
    let writer = tokio::spawn(async move {
        // May never finish: the server stops reading once its writes block.
        let _ = stalled.write_all(&request).await;
        stalled
    });
    sleep(Duration::from_millis(500)).await;

    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"), "a stalled client blocked the server");
    assert_eq!(other.cmd(&["SET", "x", "1"]).await, ok());
    assert_eq!(other.cmd(&["GET", "big"]).await, bulk(&value));
    assert_eq!(setup.cmd(&["INCR", "x"]).await, int(2));

    // Dropping the stalled client frees its connection on the server.
    writer.abort();
    let _ = writer.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = other.cmd(&["INFO", "clients"]).await.text();
        if info.contains("connected_clients:2\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled connection was not released: {info}");
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(other.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 6. Command names.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_case_insensitivity() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["FOO", "a", "b"]).await, error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' "));
    assert_eq!(c.cmd(&["foo"]).await, error("ERR unknown command 'foo', with args beginning with: "));
    assert_eq!(
        c.cmd(&["averyveryveryveryverylongcommandname"]).await,
        error("ERR unknown command 'averyveryveryveryverylongcommandname', with args beginning with: ")
    );
    // The connection stays usable after an unknown command.
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["get", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["GeT", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["sEt", "k", "w", "nX"]).await, nil());
    assert_eq!(c.cmd(&["Incr", "n"]).await, int(1));
    assert_eq!(c.cmd(&["gEt"]).await, arity_error("get"), "the arity error names the command in lowercase");
    stop(node).await;
}

/// Redis 7 answers an unknown subcommand of a container command with
/// `ERR unknown subcommand '<sub>'. Try <COMMAND> HELP.` and a known
/// subcommand with the wrong argument count with the arity error naming
/// `<command>|<sub>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subcommands_use_redis_7_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["CLIENT", "FOO"]).await, error("ERR unknown subcommand 'FOO'. Try CLIENT HELP."));
    assert_eq!(c.cmd(&["CONFIG", "FOO"]).await, error("ERR unknown subcommand 'FOO'. Try CONFIG HELP."));
    assert_eq!(c.cmd(&["CLIENT", "ID", "extra"]).await, arity_error("client|id"));
    assert_eq!(c.cmd(&["CONFIG", "GET"]).await, arity_error("config|get"));
    stop(node).await;
}

/// Redis 7 (since 6.2.6, CVE-2021-32675) limits what a client may send
/// before it authenticates: more than 10 arguments, or a bulk string over
/// 16,384 bytes, is a protocol error and the connection is closed. Without
/// it, anyone who can reach the port makes the server buffer up to 512 MB per
/// connection without knowing the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_get_small_frame_limits() {
    let node = start_with(NodeConfig { port: 0, requirepass: Some("pw".to_string()), ..NodeConfig::default() }).await;
    let mut c = Client::connect(node.addr).await;
    c.send(b"*100\r\n").await;
    assert_eq!(c.read().await, error("ERR Protocol error: unauthenticated multibulk length"));
    c.expect_closed().await;
    let mut c = Client::connect(node.addr).await;
    c.send(b"*1\r\n$100000000\r\n").await;
    assert_eq!(c.read().await, error("ERR Protocol error: unauthenticated bulk length"));
    c.expect_closed().await;
    // The limits are lifted by AUTH.
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["AUTH", "pw"]).await, ok());
    let value = "v".repeat(20_000);
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4", "e", value.as_str()]).await, ok());
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_keyspace_counts_keys_with_a_ttl() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "plain", "v"]).await, ok());
    assert_eq!(c.cmd(&["SET", "timed", "v", "EX", "100"]).await, ok());
    let info = c.cmd(&["INFO", "keyspace"]).await.text();
    assert!(info.contains("db0:keys=2,expires=1,"), "INFO keyspace: {info}");
    stop(node).await;
}

/// Redis 7's COMMAND INFO entry has ten fields: name, arity, flags, first
/// key, last key, step, ACL categories, tips, key specifications and
/// subcommands. Clients that read key specifications (cluster-aware clients
/// routing commands) need the last ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_info_has_redis_7_fields() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let info = c.cmd(&["COMMAND", "INFO", "get"]).await;
    let entry = info.items()[0].items();
    assert_eq!(entry.len(), 10, "COMMAND INFO get: {entry:?}");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// 7. The binary.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    let port = free_port();
    let (mut guard, mut c) = spawn_meridian(&["node", "--port", &port.to_string(), "--log-level", "warn"], port).await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["CONFIG", "GET", "port"]).await, Resp::Array(vec![bulk("port"), bulk(port.to_string())]));

    let pid = guard.0.id().to_string();
    let kill = Command::new("kill").arg(&pid).status().expect("run kill");
    assert!(kill.success(), "kill {pid} failed");
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_until(&mut guard.0, Duration::from_secs(10));
        (status, guard)
    })
    .await
    .expect("wait task");
    let status = status.0.expect("meridian did not exit within 10 s of SIGTERM");
    assert!(status.success(), "meridian exited with {status} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (status, stderr) =
        tokio::task::spawn_blocking(move || run_expecting_exit(&["node", "--port", &port])).await.expect("run");
    drop(taken);
    assert!(!status.success(), "meridian started on a taken port");
    assert!(stderr.contains("already in use"), "stderr does not say the port is in use: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_refuses_an_invalid_config_file() {
    let path = std::env::temp_dir().join(format!("meridian-node-test-{}-{}.toml", std::process::id(), now_ms()));
    std::fs::write(&path, format!("port = {}\nprot = 7000\n", free_port())).expect("write config file");
    let arg = path.to_str().expect("UTF-8 temp path").to_string();
    let (status, stderr) =
        tokio::task::spawn_blocking(move || run_expecting_exit(&["node", "--config", &arg])).await.expect("run");
    let _ = std::fs::remove_file(&path);
    assert!(!status.success(), "meridian accepted a config file with an unknown key");
    assert!(stderr.contains("invalid config file"), "stderr does not mention the invalid config: {stderr}");
    assert!(stderr.contains("prot"), "stderr does not name the unknown key: {stderr}");
}

// ---------------------------------------------------------------------------
// 8. Transactions.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_discard_and_their_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["EXEC"]).await, error("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["DISCARD"]).await, error("ERR DISCARD without MULTI"));

    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "1"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "k"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["GET", "k"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![ok(), int(2), bulk("2")]));
    assert_eq!(c.cmd(&["EXEC"]).await, error("ERR EXEC without MULTI"), "EXEC ends the transaction");

    // A nested MULTI is refused but does not abort the transaction.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, error("ERR MULTI calls can not be nested"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![]));

    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "5"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["DISCARD"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("2"), "DISCARD ran nothing");

    // Errors while queueing abort the transaction at EXEC.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert!(matches!(c.cmd(&["NOSUCH", "x"]).await, Resp::Error(e) if e.starts_with("ERR unknown command 'NOSUCH'")));
    assert_eq!(c.cmd(&["SET", "k"]).await, arity_error("set"));
    assert_eq!(c.cmd(&["SET", "k", "9"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, error("EXECABORT Transaction discarded because of previous errors."));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("2"), "an aborted transaction ran nothing");

    // An error while running is one element of the reply; the rest still run.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "s", "abc"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "s"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "k"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![ok(), error(NOT_INTEGER), int(3)]));

    // RESET ends the transaction.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "7"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(c.cmd(&["EXEC"]).await, error("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("3"));

    // The commands are in the table.
    let info = c.cmd(&["COMMAND", "INFO", "multi", "exec", "discard", "watch", "unwatch"]).await;
    let names: Vec<Resp> = info.items().iter().map(|entry| entry.items()[0].clone()).collect();
    assert_eq!(names, ["multi", "exec", "discard", "watch", "unwatch"].map(bulk));
    assert_eq!(info.items()[3].items()[3..6], [int(1), int(-1), int(1)], "WATCH's key positions");

    // QUIT inside MULTI just quits.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["QUIT"]).await, ok());
    c.expect_closed().await;
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_aborts_exec_when_a_watched_key_changes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;

    // Another client's write: EXEC answers a RESP2 null array and runs nothing.
    assert_eq!(c.cmd(&["WATCH", "k", "k2"]).await, ok());
    assert_eq!(other.cmd(&["SET", "k", "theirs"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "mine"]).await, simple("QUEUED"));
    c.send(&encode(&["EXEC"])).await;
    assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"*-1\r\n".to_vec());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("theirs"));

    // EXEC unwatched everything: the same write no longer aborts.
    assert_eq!(other.cmd(&["SET", "k", "again"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![bulk("again")]));

    // No change: EXEC runs.
    assert_eq!(c.cmd(&["WATCH", "k"]).await, ok());
    assert_eq!(other.cmd(&["GET", "k"]).await, bulk("again"), "a read does not touch");
    assert_eq!(other.cmd(&["SET", "unrelated", "1"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "mine"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![ok()]));

    // UNWATCH before the change: EXEC runs.
    assert_eq!(c.cmd(&["WATCH", "k"]).await, ok());
    assert_eq!(c.cmd(&["UNWATCH"]).await, ok());
    assert_eq!(other.cmd(&["SET", "k", "theirs"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![bulk("theirs")]));

    // The client's own write outside the transaction counts too, and so does
    // a multi-key write naming the key.
    assert_eq!(c.cmd(&["WATCH", "k"]).await, ok());
    assert_eq!(c.cmd(&["SET", "k", "own"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["EXEC"]).await, nil());
    assert_eq!(c.cmd(&["WATCH", "b"]).await, ok());
    assert_eq!(other.cmd(&["MSET", "a", "1", "b", "2"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["EXEC"]).await, nil());

    // FLUSHALL touches every watched key, even one that did not exist.
    assert_eq!(c.cmd(&["WATCH", "never"]).await, ok());
    assert_eq!(other.cmd(&["FLUSHALL"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["EXEC"]).await, nil());

    // A watched key that expires counts as changed.
    assert_eq!(c.cmd(&["SET", "short", "v", "PX", "100"]).await, ok());
    assert_eq!(c.cmd(&["WATCH", "short"]).await, ok());
    sleep(Duration::from_millis(300)).await;
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["EXEC"]).await, nil());

    // WATCH is refused inside MULTI; DISCARD unwatches.
    assert_eq!(c.cmd(&["WATCH", "k"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["WATCH", "k"]).await, error("ERR WATCH inside MULTI is not allowed"));
    assert_eq!(c.cmd(&["DISCARD"]).await, ok());
    assert_eq!(other.cmd(&["SET", "k", "x"]).await, ok());
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["WATCH"]).await, arity_error("watch"));

    // A watcher that disconnects leaves nothing behind that breaks writes.
    let mut gone = Client::connect(node.addr).await;
    assert_eq!(gone.cmd(&["WATCH", "k"]).await, ok());
    drop(gone);
    assert_eq!(other.cmd(&["SET", "k", "y"]).await, ok());
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_is_not_interleaved_with_other_clients() {
    let node = start().await;
    let increments = 1000;
    let addr = node.addr;
    let other = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.send(&encode(&["INCR", "counter"]).repeat(increments)).await;
        for _ in 0..increments {
            c.read().await.int();
        }
    });
    let mut c = Client::connect(node.addr).await;
    let mut batch = encode(&["MULTI"]);
    batch.extend(encode(&["INCR", "counter"]).repeat(increments));
    batch.extend(encode(&["GET", "counter"]));
    batch.extend(encode(&["EXEC"]));
    c.send(&batch).await;
    assert_eq!(c.read().await, ok());
    for _ in 0..=increments {
        assert_eq!(c.read().await, simple("QUEUED"));
    }
    let exec = c.read().await;
    let replies = exec.items();
    assert_eq!(replies.len(), increments + 1);
    let first = replies[0].int();
    for (i, reply) in replies[..increments].iter().enumerate() {
        assert_eq!(reply.int(), first + i as i64, "another client's INCR ran inside EXEC");
    }
    assert_eq!(replies[increments], bulk(replies[increments - 1].int().to_string()));
    timeout(PIPELINE_TIMEOUT, other).await.expect("other client finished in time").expect("other client");
    assert_eq!(c.cmd(&["GET", "counter"]).await, bulk((2 * increments).to_string()));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_queue_is_bounded() {
    // Mirrors `meridian_proxy::cmd::transactions::QUEUED_COMMANDS_MAX`.
    const QUEUED_COMMANDS_MAX: usize = 100_000;
    const CHUNK: usize = 10_000;
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    // In chunks, reading each chunk's replies, so neither side's socket
    // buffer fills while the other waits.
    for _ in 0..QUEUED_COMMANDS_MAX / CHUNK {
        c.send(&encode(&["PING"]).repeat(CHUNK)).await;
        let queued = b"+QUEUED\r\n".repeat(CHUNK);
        assert_eq!(c.read_raw(queued.len(), PIPELINE_TIMEOUT).await, queued);
    }
    let full = c.cmd(&["PING"]).await;
    assert!(matches!(&full, Resp::Error(e) if e.starts_with("ERR transaction too large")), "got {full:?}");
    assert_eq!(c.cmd(&["EXEC"]).await, error("EXECABORT Transaction discarded because of previous errors."));
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
}

/// RENAME, RENAMENX and COPY: values, TTLs, errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_renamenx_and_copy() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RENAME", "missing", "x"]).await, error("ERR no such key"));
    assert_eq!(c.cmd(&["SET", "a", "1"]).await, ok());
    assert_eq!(c.cmd(&["PEXPIRE", "a", "100000"]).await, int(1));
    assert_eq!(c.cmd(&["RENAME", "a", "b"]).await, ok());
    assert_eq!(c.cmd(&["EXISTS", "a"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "b"]).await, bulk("1"));
    assert_int_in(c.cmd(&["PTTL", "b"]).await, 1..=100_000, "RENAME keeps the TTL");
    assert_eq!(c.cmd(&["SET", "c", "3"]).await, ok());
    assert_eq!(c.cmd(&["RENAMENX", "b", "c"]).await, int(0));
    assert_eq!(c.cmd(&["RENAMENX", "b", "d"]).await, int(1));
    assert_eq!(c.cmd(&["GET", "d"]).await, bulk("1"));
    assert_eq!(c.cmd(&["RENAME", "d", "c"]).await, ok(), "RENAME replaces the target");
    assert_eq!(c.cmd(&["GET", "c"]).await, bulk("1"));
    assert_eq!(c.cmd(&["INCRBY", "n", "5"]).await, int(5));
    assert_eq!(c.cmd(&["COPY", "n", "m"]).await, int(1));
    assert_eq!(c.cmd(&["GET", "m"]).await, bulk("5"));
    assert_eq!(c.cmd(&["COPY", "n", "c"]).await, int(0), "COPY keeps an existing target");
    assert_eq!(c.cmd(&["COPY", "n", "c", "REPLACE"]).await, int(1));
    assert_eq!(c.cmd(&["GET", "c"]).await, bulk("5"));
    assert_eq!(c.cmd(&["COPY", "n", "n"]).await, error("ERR source and destination objects are the same"));
    assert_eq!(c.cmd(&["COPY", "n", "x", "DB", "1"]).await, error("ERR DB index is out of range"));
    assert_eq!(c.cmd(&["COPY", "n", "x", "BOGUS"]).await, error("ERR syntax error"));
    assert_eq!(c.cmd(&["COPY", "missing", "x"]).await, int(0));
    stop(node).await;
}

/// The pairs of a map reply: a RESP3 map, or a RESP2 flat array of
/// alternating keys and values.
fn map_pairs(reply: &Resp) -> Vec<(Resp, Resp)> {
    match reply {
        Resp::Map(pairs) => pairs.clone(),
        Resp::Array(items) => {
            assert!(items.len() % 2 == 0, "odd-length flat map {reply:?}");
            items.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

/// The value under the bulk-string key `field` of a map reply.
fn map_field(reply: &Resp, field: &str) -> Option<Resp> {
    map_pairs(reply).into_iter().find(|(k, _)| *k == bulk(field)).map(|(_, v)| v)
}

/// COMMAND DOCS: GET's documentation as Redis 7 gives it, in RESP2 (a flat
/// array) and RESP3 (a map); every command documented; unknown names skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_docs() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    for protocol in ["2", "3"] {
        assert!(!matches!(c.cmd(&["HELLO", protocol]).await, Resp::Error(_)));
        let reply = c.cmd(&["COMMAND", "DOCS", "get"]).await;
        if protocol == "2" {
            assert_eq!(reply.items().len(), 2, "RESP2 COMMAND DOCS get gave {reply:?}");
        } else {
            assert!(matches!(reply, Resp::Map(_)), "RESP3 COMMAND DOCS get gave {reply:?}");
        }
        let pairs = map_pairs(&reply);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, bulk("get"));
        let doc = &pairs[0].1;
        assert_eq!(map_field(doc, "summary"), Some(bulk("Returns the string value of a key.")));
        assert_eq!(map_field(doc, "since"), Some(bulk("1.0.0")));
        assert_eq!(map_field(doc, "group"), Some(bulk("string")));
        assert_eq!(map_field(doc, "complexity"), Some(bulk("O(1)")));
        let arguments = map_field(doc, "arguments").expect("GET's arguments");
        let [key] = arguments.items() else { panic!("GET's arguments {arguments:?}") };
        assert_eq!(map_field(key, "name"), Some(bulk("key")));
        assert_eq!(map_field(key, "type"), Some(bulk("key")));
    }
    assert!(!matches!(c.cmd(&["HELLO", "2"]).await, Resp::Error(_)));

    let count = c.cmd(&["COMMAND", "COUNT"]).await.int();
    let all = map_pairs(&c.cmd(&["COMMAND", "DOCS"]).await);
    assert_eq!(all.len() as i64, count, "COMMAND DOCS covers every command");
    for (name, doc) in &all {
        for field in ["summary", "since", "group", "complexity"] {
            assert!(map_field(doc, field).is_some(), "{} lacks {field}", name.text());
        }
    }

    let some = map_pairs(&c.cmd(&["COMMAND", "DOCS", "MULTI", "nosuchcommand", "unlink"]).await);
    let names: Vec<String> = some.iter().map(|(name, _)| name.text()).collect();
    assert_eq!(names, ["multi", "unlink"], "unknown names are skipped");
    assert_eq!(map_field(&some[0].1, "group"), Some(bulk("transactions")));
    assert_eq!(map_field(&some[1].1, "since"), Some(bulk("4.0.0")));
    assert_eq!(c.cmd(&["COMMAND", "DOCS", "nosuchcommand"]).await, Resp::Array(vec![]));
    stop(node).await;
}
