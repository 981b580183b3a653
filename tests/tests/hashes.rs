//! Black-box tests of the hash commands over the Redis protocol.
//!
//! Every test starts its own in-process node on a free port and talks to it
//! with the raw RESP client of `common`, asserting Redis 7's exact replies and
//! error texts (checked against `redis-server` 7.0): HSET, HSETNX, HGET,
//! HMGET, HMSET, HGETALL, HDEL, HEXISTS, HLEN, HKEYS, HVALS, HSTRLEN, HINCRBY,
//! HINCRBYFLOAT, HRANDFIELD and HSCAN, each with its normal, edge
//! (missing key, empty values, duplicates, huge and negative counts) and
//! error cases, in RESP2 and, where the shape differs, RESP3. One test drives
//! the commands through the `redis` crate. Every wait is bounded.

use std::collections::{BTreeMap, HashSet};

use tokio::time::timeout;

mod common;
use common::*;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// A connection that has switched to RESP3.
async fn resp3(c: &mut Client) {
    match c.cmd(&["HELLO", "3"]).await {
        Resp::Map(_) => {}
        other => panic!("HELLO 3 replied {other:?}"),
    }
}

/// The field → value pairs of a flat RESP2 array.
fn pairs(reply: &Resp) -> BTreeMap<String, String> {
    let items = reply.items();
    assert!(items.len().is_multiple_of(2), "odd number of elements in {reply:?}");
    items.chunks(2).map(|pair| (pair[0].text(), pair[1].text())).collect()
}

fn map_of(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hset_hget_hmget_hmset_and_duplicates() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HSET", "h", "f1", "v1", "f2", "v2"]).await, int(2));
    assert_eq!(c.cmd(&["HSET", "h", "f1", "new", "f3", "v3"]).await, int(1), "only new fields count");
    assert_eq!(c.cmd(&["HGET", "h", "f1"]).await, bulk("new"));
    assert_eq!(c.cmd(&["HGET", "h", "nope"]).await, nil());
    assert_eq!(c.cmd(&["HGET", "missing", "f"]).await, nil());
    // A field named twice: counted once, the last value kept.
    assert_eq!(c.cmd(&["HSET", "d", "f", "1", "f", "2"]).await, int(1));
    assert_eq!(c.cmd(&["HGET", "d", "f"]).await, bulk("2"));
    // Empty field names and values are values, binary-safe.
    assert_eq!(c.cmd(&["HSET", "h", "", ""]).await, int(1));
    assert_eq!(c.cmd(&["HGET", "h", ""]).await, bulk(""));
    let binary: &[u8] = b"a\r\n\0\xffb";
    assert_eq!(c.cmd(&[b"HSET" as &[u8], b"h", binary, binary]).await, int(1));
    assert_eq!(c.cmd(&[b"HGET" as &[u8], b"h", binary]).await, bulk(binary));

    assert_eq!(
        c.cmd(&["HMGET", "h", "f1", "nope", "f2", "f1"]).await,
        Resp::Array(vec![bulk("new"), nil(), bulk("v2"), bulk("new")])
    );
    assert_eq!(c.cmd(&["HMGET", "missing", "a", "b"]).await, Resp::Array(vec![nil(), nil()]));
    assert_eq!(c.cmd(&["HMSET", "m", "a", "1", "b", "2"]).await, ok());
    assert_eq!(c.cmd(&["HMSET", "m", "a", "3"]).await, ok());
    assert_eq!(c.cmd(&["HGET", "m", "a"]).await, bulk("3"));

    // Arity: HSET and HMSET need whole field/value pairs.
    for bad in [&["HSET", "h"][..], &["HSET", "h", "f"], &["HSET", "h", "f", "v", "g"]] {
        assert_eq!(c.cmd(bad).await, arity_error("hset"), "{bad:?}");
    }
    assert_eq!(c.cmd(&["HMSET", "h", "f"]).await, arity_error("hmset"));
    assert_eq!(c.cmd(&["HMSET", "h", "f", "v", "g"]).await, arity_error("hmset"));
    assert_eq!(c.cmd(&["HGET", "h"]).await, arity_error("hget"));
    assert_eq!(c.cmd(&["HMGET", "h"]).await, arity_error("hmget"));
    assert_eq!(c.cmd(&["HGET", "h", "f", "x"]).await, arity_error("hget"));
    assert_eq!(c.cmd(&["TYPE", "h"]).await, simple("hash"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hash_command_refuses_another_type() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "str", "v"]).await, ok());
    assert_eq!(c.cmd(&["SADD", "set", "m"]).await, int(1));
    for key in ["str", "set"] {
        for command in [
            &["HSET", key, "f", "v"][..],
            &["HSETNX", key, "f", "v"],
            &["HMSET", key, "f", "v"],
            &["HGET", key, "f"],
            &["HMGET", key, "f"],
            &["HGETALL", key],
            &["HDEL", key, "f"],
            &["HEXISTS", key, "f"],
            &["HLEN", key],
            &["HKEYS", key],
            &["HVALS", key],
            &["HSTRLEN", key, "f"],
            &["HINCRBY", key, "f", "1"],
            &["HINCRBYFLOAT", key, "f", "1"],
            &["HRANDFIELD", key],
            &["HRANDFIELD", key, "2"],
            &["HRANDFIELD", key, "-2", "WITHVALUES"],
            &["HSCAN", key, "0"],
            &["HSCAN", key, "0", "COUNT", "0"],
        ] {
            assert_eq!(c.cmd(command).await, error(WRONGTYPE), "{command:?}");
        }
    }
    // Argument errors come before the type check, as in Redis.
    assert_eq!(c.cmd(&["HINCRBY", "str", "f", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "str", "f", "x"]).await, error("ERR value is not a valid float"));
    assert_eq!(c.cmd(&["HRANDFIELD", "str", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["HSCAN", "str", "x"]).await, error("ERR invalid cursor"));
    // The values were not touched.
    assert_eq!(c.cmd(&["GET", "str"]).await, bulk("v"));
    assert_eq!(c.cmd(&["SCARD", "set"]).await, int(1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsetnx_hexists_hlen_hstrlen_and_hdel() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HSETNX", "h", "f", "1"]).await, int(1), "creates the hash");
    assert_eq!(c.cmd(&["HSETNX", "h", "f", "2"]).await, int(0));
    assert_eq!(c.cmd(&["HGET", "h", "f"]).await, bulk("1"));
    assert_eq!(c.cmd(&["HSETNX", "h", "g", "two"]).await, int(1));
    assert_eq!(c.cmd(&["HSETNX", "h", "f"]).await, arity_error("hsetnx"));

    assert_eq!(c.cmd(&["HEXISTS", "h", "f"]).await, int(1));
    assert_eq!(c.cmd(&["HEXISTS", "h", "zz"]).await, int(0));
    assert_eq!(c.cmd(&["HEXISTS", "missing", "f"]).await, int(0));
    assert_eq!(c.cmd(&["HLEN", "h"]).await, int(2));
    assert_eq!(c.cmd(&["HLEN", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["HSTRLEN", "h", "g"]).await, int(3));
    assert_eq!(c.cmd(&["HSTRLEN", "h", "zz"]).await, int(0));
    assert_eq!(c.cmd(&["HSTRLEN", "missing", "f"]).await, int(0));
    // HSTRLEN of a counter field is the length of the number it shows.
    assert_eq!(c.cmd(&["HINCRBY", "h", "n", "-1234"]).await, int(-1234));
    assert_eq!(c.cmd(&["HSTRLEN", "h", "n"]).await, int(5));

    assert_eq!(c.cmd(&["HDEL", "h", "f", "f", "zz"]).await, int(1), "duplicates and absent fields do not count");
    assert_eq!(c.cmd(&["HDEL", "missing", "f"]).await, int(0));
    assert_eq!(c.cmd(&["HDEL", "h", "g", "n"]).await, int(2));
    assert_eq!(c.cmd(&["EXISTS", "h"]).await, int(0), "the last HDEL deletes the key");
    assert_eq!(c.cmd(&["HDEL", "h"]).await, arity_error("hdel"));
    assert_eq!(c.cmd(&["HLEN"]).await, arity_error("hlen"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hgetall_hkeys_hvals_in_resp2_and_resp3() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HSET", "h", "a", "1", "b", "2", "c", "3"]).await, int(3));
    assert_eq!(pairs(&c.cmd(&["HGETALL", "h"]).await), map_of(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert_eq!(c.cmd(&["HGETALL", "missing"]).await, Resp::Array(vec![]));
    assert_eq!(sorted_texts(&c.cmd(&["HKEYS", "h"]).await), ["a", "b", "c"]);
    assert_eq!(sorted_texts(&c.cmd(&["HVALS", "h"]).await), ["1", "2", "3"]);
    assert_eq!(c.cmd(&["HKEYS", "missing"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["HVALS", "missing"]).await, Resp::Array(vec![]));
    // HKEYS and HVALS walk the hash in the same order.
    let keys = c.cmd(&["HKEYS", "h"]).await;
    let values = c.cmd(&["HVALS", "h"]).await;
    for (k, v) in keys.items().iter().zip(values.items()) {
        assert_eq!(c.cmd(&["HGET", "h", &k.text()]).await, v.clone());
    }

    resp3(&mut c).await;
    let Resp::Map(entries) = c.cmd(&["HGETALL", "h"]).await else { panic!("HGETALL is a map in RESP3") };
    let got: BTreeMap<String, String> = entries.iter().map(|(k, v)| (k.text(), v.text())).collect();
    assert_eq!(got, map_of(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert_eq!(c.cmd(&["HGETALL", "missing"]).await, Resp::Map(vec![]));
    c.send(&encode(&["HGETALL", "missing"])).await;
    assert_eq!(c.read_raw(4, REPLY_TIMEOUT).await, b"%0\r\n");
    assert!(matches!(c.cmd(&["HKEYS", "h"]).await, Resp::Array(_)), "HKEYS stays an array");
    assert_eq!(c.cmd(&["HMGET", "missing", "a"]).await, Resp::Array(vec![nil()]));
    c.send(&encode(&["HGET", "missing", "a"])).await;
    assert_eq!(c.read_raw(3, REPLY_TIMEOUT).await, b"_\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hincrby_and_hincrbyfloat_with_their_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HINCRBY", "h", "n", "5"]).await, int(5), "a missing field starts at 0");
    assert_eq!(c.cmd(&["HINCRBY", "h", "n", "-7"]).await, int(-2));
    assert_eq!(c.cmd(&["HGET", "h", "n"]).await, bulk("-2"));
    assert_eq!(
        c.cmd(&["HSET", "h", "big", "9223372036854775807", "small", "-9223372036854775808", "text", "abc"]).await,
        int(3)
    );
    assert_eq!(c.cmd(&["HSET", "h", "fl", "1.5", "spaced", " 1"]).await, int(2));
    let overflow = error("ERR increment or decrement would overflow");
    assert_eq!(c.cmd(&["HINCRBY", "h", "big", "1"]).await, overflow);
    assert_eq!(c.cmd(&["HINCRBY", "h", "small", "-1"]).await, overflow);
    assert_eq!(c.cmd(&["HINCRBY", "h", "big", "-1"]).await, int(9223372036854775806));
    let hash_not_integer = error("ERR hash value is not an integer");
    for field in ["text", "fl", "spaced"] {
        assert_eq!(c.cmd(&["HINCRBY", "h", field, "1"]).await, hash_not_integer, "{field}");
    }
    for bad in ["x", "1.5", "", "99999999999999999999", " 1"] {
        assert_eq!(c.cmd(&["HINCRBY", "h", "n", bad]).await, error(NOT_INTEGER), "{bad:?}");
    }
    assert_eq!(c.cmd(&["HINCRBY", "h", "n"]).await, arity_error("hincrby"));

    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "fl", "1"]).await, bulk("2.5"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "fl", "0.1"]).await, bulk("2.6"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "n", "2.5"]).await, bulk("0.5"), "an integer field takes a float");
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "new", "5.0e3"]).await, bulk("5000"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "new", "-5000"]).await, bulk("0"));
    assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "text", "1"]).await, error("ERR hash value is not a float"));
    for bad in ["abc", "nan", "", " 1"] {
        assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "x", bad]).await, error("ERR value is not a valid float"), "{bad:?}");
    }
    for infinite in ["inf", "-inf", "+inf"] {
        assert_eq!(c.cmd(&["HINCRBYFLOAT", "h", "x", infinite]).await, error("ERR value is NaN or Infinity"));
    }
    assert_eq!(c.cmd(&["HEXISTS", "h", "x"]).await, int(0), "failed increments create nothing");
    assert_eq!(c.cmd(&["HGET", "h", "fl"]).await, bulk("2.6"));
    // HINCRBY on a field HINCRBYFLOAT left fractional is refused.
    assert_eq!(c.cmd(&["HINCRBY", "h", "fl", "1"]).await, hash_not_integer);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hrandfield_counts_and_shapes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HRANDFIELD", "missing"]).await, nil());
    for count in ["0", "5", "-5"] {
        assert_eq!(c.cmd(&["HRANDFIELD", "missing", count]).await, Resp::Array(vec![]), "{count}");
        assert_eq!(c.cmd(&["HRANDFIELD", "missing", count, "WITHVALUES"]).await, Resp::Array(vec![]));
    }
    assert_eq!(c.cmd(&["HSET", "h", "a", "1", "b", "2", "c", "3"]).await, int(3));
    let fields: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    for _ in 0..10 {
        let field = c.cmd(&["HRANDFIELD", "h"]).await.text();
        assert!(fields.contains(&field), "{field}");
    }
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "0"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "0", "WITHVALUES"]).await, Resp::Array(vec![]));

    // A positive count: distinct fields, at most the whole hash.
    let two = sorted_texts(&c.cmd(&["HRANDFIELD", "h", "2"]).await);
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert_eq!(sorted_texts(&c.cmd(&["HRANDFIELD", "h", "100"]).await), ["a", "b", "c"]);
    assert_eq!(sorted_texts(&c.cmd(&["HRANDFIELD", "h", "9223372036854775807"]).await), ["a", "b", "c"]);
    let all = c.cmd(&["HRANDFIELD", "h", "100", "withvalues"]).await;
    assert_eq!(pairs(&all), map_of(&[("a", "1"), ("b", "2"), ("c", "3")]));

    // A negative count: exactly |count| picks, repeats allowed.
    let many = c.cmd(&["HRANDFIELD", "h", "-20"]).await;
    assert_eq!(many.items().len(), 20);
    assert!(many.items().iter().all(|f| fields.contains(&f.text())));
    let with_values = c.cmd(&["HRANDFIELD", "h", "-7", "WITHVALUES"]).await;
    assert_eq!(with_values.items().len(), 14);
    for pair in with_values.items().chunks(2) {
        assert_eq!(c.cmd(&["HGET", "h", &pair[0].text()]).await, pair[1].clone(), "values match their fields");
    }
    assert_eq!(c.cmd(&["HRANDFIELD", "single", "-3"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["HSET", "single", "only", "x"]).await, int(1));
    assert_eq!(c.cmd(&["HRANDFIELD", "single", "-3"]).await, Resp::Array(vec![bulk("only"); 3]));

    // Errors, in Redis's order.
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "1", "WITHVALUES", "x"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "1", "bogus"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["HRANDFIELD", "h", "-9223372036854775808"]).await,
        error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    );
    for huge in ["9223372036854775807", "-9223372036854775807", "-4611686018427387904", "4611686018427387904"] {
        assert_eq!(c.cmd(&["HRANDFIELD", "h", huge, "WITHVALUES"]).await, error("ERR value is out of range"), "{huge}");
    }
    assert_eq!(
        c.cmd(&["HRANDFIELD", "missing", "9223372036854775807", "WITHVALUES"]).await,
        error("ERR value is out of range"),
        "checked before the key is looked up"
    );
    // Meridian's bound on a reply with repeats (Redis would try to build it).
    assert_eq!(c.cmd(&["HRANDFIELD", "h", "-4611686018427387903"]).await, error("ERR value is out of range"));
    assert_eq!(c.cmd(&["HRANDFIELD", "missing", "-4611686018427387903"]).await, Resp::Array(vec![]));
    assert_eq!(c.cmd(&["HRANDFIELD"]).await, arity_error("hrandfield"));

    // RESP3: WITHVALUES is an array of [field, value] pairs, as in Redis 7.
    resp3(&mut c).await;
    let reply = c.cmd(&["HRANDFIELD", "h", "-4", "WITHVALUES"]).await;
    assert_eq!(reply.items().len(), 4);
    for pair in reply.items() {
        let pair = pair.items();
        assert_eq!(pair.len(), 2);
        assert!(fields.contains(&pair[0].text()));
    }
    let reply = c.cmd(&["HRANDFIELD", "h", "10", "WITHVALUES"]).await;
    let got: BTreeMap<String, String> =
        reply.items().iter().map(|p| (p.items()[0].text(), p.items()[1].text())).collect();
    assert_eq!(got, map_of(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert!(matches!(c.cmd(&["HRANDFIELD", "h", "2"]).await, Resp::Array(_)));
    assert_eq!(c.cmd(&["HRANDFIELD", "missing"]).await, nil());
    stop(node).await;
}

/// Runs a whole HSCAN with `options`; returns every field → value seen (and
/// checks no field came back with two values) and the number of calls.
async fn full_hscan(c: &mut Client, key: &str, options: &[&str]) -> (BTreeMap<String, String>, Vec<String>, usize) {
    let mut seen = BTreeMap::new();
    let mut order = Vec::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let mut command = vec!["HSCAN", key, cursor.as_str()];
        command.extend_from_slice(options);
        let reply = c.cmd(&command).await;
        let [next, batch] = reply.items() else { panic!("HSCAN replied {reply:?}") };
        for (field, value) in pairs(batch) {
            order.push(field.clone());
            seen.insert(field, value);
        }
        calls += 1;
        assert!(calls < 100_000, "HSCAN does not terminate");
        cursor = next.text();
        if cursor == "0" {
            return (seen, order, calls);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hscan_small_and_large_hashes_match_and_count() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let empty = Resp::Array(vec![bulk("0"), Resp::Array(vec![])]);
    assert_eq!(c.cmd(&["HSCAN", "missing", "0"]).await, empty);
    // A missing key answers before its options are read, as in Redis.
    assert_eq!(c.cmd(&["HSCAN", "missing", "0", "COUNT", "0"]).await, empty);
    assert_eq!(c.cmd(&["HSCAN", "missing", "0", "bogus"]).await, empty);
    assert_eq!(c.cmd(&["HSCAN", "missing", "-1"]).await, empty, "strtoul accepts a negative cursor");
    assert_eq!(c.cmd(&["HSCAN", "missing", "abc"]).await, error("ERR invalid cursor"));
    assert_eq!(c.cmd(&["HSCAN", "missing", "18446744073709551616"]).await, error("ERR invalid cursor"));

    // A small hash comes whole, cursor 0, whatever COUNT says.
    assert_eq!(c.cmd(&["HSET", "small", "a", "1", "b", "2", "ab", "3"]).await, int(3));
    let reply = c.cmd(&["HSCAN", "small", "0", "COUNT", "1"]).await;
    assert_eq!(reply.items()[0], bulk("0"));
    assert_eq!(pairs(&reply.items()[1]), map_of(&[("a", "1"), ("ab", "3"), ("b", "2")]));
    let reply = c.cmd(&["HSCAN", "small", "0", "MATCH", "a*"]).await;
    assert_eq!(pairs(&reply.items()[1]), map_of(&[("a", "1"), ("ab", "3")]));
    assert_eq!(c.cmd(&["HSCAN", "small", "18446744073709551615"]).await.items()[0], bulk("0"));

    for bad in [
        &["HSCAN", "small", "0", "COUNT", "0"][..],
        &["HSCAN", "small", "0", "COUNT", "-1"],
        &["HSCAN", "small", "0", "MATCH"],
        &["HSCAN", "small", "0", "NOVALUES"],
        &["HSCAN", "small", "0", "TYPE", "string"],
        &["HSCAN", "small", "0", "COUNT", "1", "bogus"],
    ] {
        assert_eq!(c.cmd(bad).await, error(SYNTAX), "{bad:?}");
    }
    assert_eq!(c.cmd(&["HSCAN", "small", "0", "COUNT", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["HSCAN", "small"]).await, arity_error("hscan"));

    // A large hash: every field exactly once, in several calls of about COUNT.
    let mut command = vec!["HSET".to_string(), "big".to_string()];
    for i in 0..1_000 {
        command.push(format!("field:{i}"));
        command.push(format!("value:{i}"));
    }
    assert_eq!(c.cmd(&command).await, int(1_000));
    let (seen, order, calls) = full_hscan(&mut c, "big", &["COUNT", "20"]).await;
    assert_eq!(seen.len(), 1_000);
    assert_eq!(order.len(), 1_000, "no field twice when nothing changes");
    assert!(seen.iter().all(|(f, v)| f.strip_prefix("field:") == v.strip_prefix("value:")));
    assert!((25..=80).contains(&calls), "about 1000/20 calls, got {calls}");
    // MATCH filters after the window: fewer fields, same termination.
    let (seen, _, _) = full_hscan(&mut c, "big", &["MATCH", "field:1*", "COUNT", "50"]).await;
    assert_eq!(seen.len(), 111);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hscan_returns_every_field_present_for_the_whole_scan_despite_writes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut command = vec!["HSET".to_string(), "h".to_string()];
    for i in 0..2_000 {
        command.push(format!("stay:{i}"));
        command.push("v".to_string());
    }
    assert_eq!(c.cmd(&command).await, int(2_000));
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut round = 0;
    loop {
        let reply = c.cmd(&["HSCAN", "h", cursor.as_str(), "COUNT", "10"]).await;
        for pair in reply.items()[1].items().chunks(2) {
            seen.insert(pair[0].text());
        }
        // Between calls the hash grows a lot (forcing its table to resize)
        // and loses other fields.
        for j in 0..50 {
            c.cmd(&["HSET", "h", &format!("extra:{round}:{j}"), "x"]).await;
        }
        c.cmd(&["HDEL", "h", &format!("extra:{}:0", round.max(1) - 1)]).await;
        round += 1;
        assert!(round < 10_000, "HSCAN does not terminate");
        cursor = reply.items()[0].text();
        if cursor == "0" {
            break;
        }
    }
    for i in 0..2_000 {
        assert!(seen.contains(&format!("stay:{i}")), "stay:{i} was never returned");
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_commands_report_redis_command_info() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    for (name, arity, first, last) in [
        ("hset", -4, 1, 1),
        ("hsetnx", 4, 1, 1),
        ("hget", 3, 1, 1),
        ("hmget", -3, 1, 1),
        ("hmset", -4, 1, 1),
        ("hgetall", 2, 1, 1),
        ("hdel", -3, 1, 1),
        ("hexists", 3, 1, 1),
        ("hlen", 2, 1, 1),
        ("hkeys", 2, 1, 1),
        ("hvals", 2, 1, 1),
        ("hstrlen", 3, 1, 1),
        ("hincrby", 4, 1, 1),
        ("hincrbyfloat", 4, 1, 1),
        ("hrandfield", -2, 1, 1),
        ("hscan", -3, 1, 1),
    ] {
        let reply = c.cmd(&["COMMAND", "INFO", name]).await;
        let info = reply.items()[0].items();
        assert_eq!(info[0], bulk(name));
        assert_eq!(info[1], int(arity), "{name} arity");
        assert_eq!((info[3].clone(), info[4].clone(), info[5].clone()), (int(first), int(last), int(1)), "{name}");
        let docs = c.cmd(&["COMMAND", "DOCS", name]).await;
        assert_eq!(docs.items().len(), 2, "{name} has docs");
    }
    let reply = c.cmd(&["COMMAND", "INFO", "hset"]).await;
    let flags: Vec<String> = reply.items()[0].items()[2]
        .items()
        .iter()
        .map(|f| match f {
            Resp::Simple(s) => s.clone(),
            other => other.text(),
        })
        .collect();
    assert_eq!(flags, ["write", "denyoom", "fast"]);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crate_hash_and_set_commands() {
    let node = start().await;
    let client = redis::Client::open(format!("redis://{}/", node.addr)).expect("redis URL");
    let mut con = timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("redis crate connect timed out")
        .expect("redis crate connects");
    async fn query<T: redis::FromRedisValue>(
        con: &mut redis::aio::MultiplexedConnection,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        timeout(REPLY_TIMEOUT, cmd.query_async(con)).await.expect("reply in time")
    }
    let created: i64 = query(&mut con, redis::cmd("HSET").arg("user:1").arg("name").arg("ada").arg("visits").arg(1))
        .await
        .expect("HSET");
    assert_eq!(created, 2);
    let visits: i64 =
        query(&mut con, redis::cmd("HINCRBY").arg("user:1").arg("visits").arg(41)).await.expect("HINCRBY");
    assert_eq!(visits, 42);
    let all: std::collections::HashMap<String, String> =
        query(&mut con, redis::cmd("HGETALL").arg("user:1")).await.expect("HGETALL");
    assert_eq!(all.get("name").map(String::as_str), Some("ada"));
    assert_eq!(all.get("visits").map(String::as_str), Some("42"));
    let missing: Option<String> = query(&mut con, redis::cmd("HGET").arg("user:1").arg("nope")).await.expect("HGET");
    assert_eq!(missing, None);

    let added: i64 = query(&mut con, redis::cmd("SADD").arg("tags").arg("a").arg("b").arg("c")).await.expect("SADD");
    assert_eq!(added, 3);
    let mut members: Vec<String> = query(&mut con, redis::cmd("SMEMBERS").arg("tags")).await.expect("SMEMBERS");
    members.sort();
    assert_eq!(members, ["a", "b", "c"]);
    let flags: Vec<bool> =
        query(&mut con, redis::cmd("SMISMEMBER").arg("tags").arg("a").arg("z")).await.expect("SMISMEMBER");
    assert_eq!(flags, [true, false]);
    let stored: i64 =
        query(&mut con, redis::cmd("SUNIONSTORE").arg("copy").arg("tags").arg("none")).await.expect("SUNIONSTORE");
    assert_eq!(stored, 3);
    let (cursor, scanned): (u64, Vec<String>) =
        query(&mut con, redis::cmd("SSCAN").arg("copy").arg(0)).await.expect("SSCAN");
    assert_eq!((cursor, scanned.len()), (0, 3));
    let failure = query::<i64>(&mut con, redis::cmd("SADD").arg("user:1").arg("x")).await.expect_err("WRONGTYPE");
    assert!(failure.to_string().contains("WRONGTYPE"), "{failure}");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_commands_in_transactions_with_watch_and_expiry() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["HSET", "h", "f", "1"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["HINCRBY", "h", "n", "2"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["HMGET", "h", "f", "n"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![int(1), int(2), Resp::Array(vec![bulk("1"), bulk("2")])]));

    // A hash write by another client aborts a transaction watching the key.
    for write in [&["HSET", "h", "f", "x"][..], &["HDEL", "h", "n"], &["HINCRBYFLOAT", "h", "f2", "1.5"]] {
        assert_eq!(c.cmd(&["WATCH", "h"]).await, ok());
        other.cmd(write).await;
        assert_eq!(c.cmd(&["MULTI"]).await, ok());
        assert_eq!(c.cmd(&["HLEN", "h"]).await, simple("QUEUED"));
        c.send(&encode(&["EXEC"])).await;
        assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"*-1\r\n".to_vec(), "{write:?}");
    }

    // A hash keeps its TTL across field writes, and reads as missing once it
    // has expired; the next write starts a fresh hash.
    assert_eq!(c.cmd(&["HSET", "t", "f", "v"]).await, int(1));
    assert_eq!(c.cmd(&["EXPIRE", "t", "100"]).await, int(1));
    assert_eq!(c.cmd(&["HSET", "t", "g", "v"]).await, int(1));
    assert_int_in(c.cmd(&["TTL", "t"]).await, 99..=100, "TTL after HSET");
    assert_eq!(c.cmd(&["PEXPIRE", "t", "1"]).await, int(1));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(c.cmd(&["HLEN", "t"]).await, int(0));
    assert_eq!(c.cmd(&["HGET", "t", "f"]).await, nil());
    assert_eq!(c.cmd(&["HSETNX", "t", "f", "new"]).await, int(1), "the expired field is gone");
    assert_eq!(pairs(&c.cmd(&["HGETALL", "t"]).await), map_of(&[("f", "new")]));
    assert_eq!(c.cmd(&["TTL", "t"]).await, int(-1));
    assert_eq!(c.cmd(&["HINCRBY", "t", "n", "1"]).await, int(1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_key_name_and_huge_counts() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["HSET", "", "f", "v"]).await, int(1));
    assert_eq!(c.cmd(&["HGET", "", "f"]).await, bulk("v"));
    assert_eq!(c.cmd(&["HLEN", ""]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", ""]).await, simple("hash"));
    assert_eq!(c.cmd(&["HRANDFIELD", "", "-2"]).await, Resp::Array(vec![bulk("f"), bulk("f")]));
    assert_eq!(c.cmd(&["HDEL", "", "f"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", ""]).await, int(0));

    let mut command = vec!["HSET".to_string(), "big".to_string()];
    for i in 0..300 {
        command.push(format!("f{i}"));
        command.push(i.to_string());
    }
    assert_eq!(c.cmd(&command).await, int(300));
    let reply = c.cmd(&["HSCAN", "big", "0", "COUNT", "9223372036854775807"]).await;
    assert_eq!(reply.items()[0], bulk("0"), "a COUNT above the size takes everything at once");
    assert_eq!(reply.items()[1].items().len(), 600);
    assert_eq!(c.cmd(&["HSCAN", "big", "0", "COUNT", "9223372036854775808"]).await, error(NOT_INTEGER));
    stop(node).await;
}
