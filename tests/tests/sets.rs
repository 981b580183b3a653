//! Black-box tests of the set commands over the Redis protocol.
//!
//! Every test starts its own in-process node on a free port and talks to it
//! with the raw RESP client of `common`, asserting Redis 7's exact replies and
//! error texts (checked against `redis-server` 7.0): SADD, SREM, SMEMBERS,
//! SISMEMBER, SMISMEMBER, SCARD, SPOP, SRANDMEMBER, SMOVE, SINTER,
//! SINTERCARD, SINTERSTORE, SUNION, SUNIONSTORE, SDIFF, SDIFFSTORE and SSCAN,
//! each with its normal, edge (missing keys, duplicates, empty results,
//! negative and huge counts) and error cases, in RESP2 and — where Redis
//! answers a set (`~`) — RESP3. Every wait is bounded.

use std::collections::HashSet;

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

fn empty_array() -> Resp {
    Resp::Array(vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sadd_srem_smembers_sismember_smismember_scard() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SADD", "s", "a", "b", "c"]).await, int(3));
    assert_eq!(c.cmd(&["SADD", "s", "a", "a", "d", "d"]).await, int(1), "duplicates and members present count once");
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "s"]).await), ["a", "b", "c", "d"]);
    assert_eq!(c.cmd(&["SMEMBERS", "missing"]).await, empty_array());
    assert_eq!(c.cmd(&["SCARD", "s"]).await, int(4));
    assert_eq!(c.cmd(&["SCARD", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["SISMEMBER", "s", "b"]).await, int(1));
    assert_eq!(c.cmd(&["SISMEMBER", "s", "zz"]).await, int(0));
    assert_eq!(c.cmd(&["SISMEMBER", "missing", "a"]).await, int(0));
    assert_eq!(c.cmd(&["SMISMEMBER", "s", "b", "zz", "b"]).await, Resp::Array(vec![int(1), int(0), int(1)]));
    assert_eq!(c.cmd(&["SMISMEMBER", "missing", "a", "b"]).await, Resp::Array(vec![int(0), int(0)]));
    // The empty string and binary members are members.
    assert_eq!(c.cmd(&["SADD", "s", ""]).await, int(1));
    assert_eq!(c.cmd(&["SISMEMBER", "s", ""]).await, int(1));
    let binary: &[u8] = b"x\r\n\0\xff";
    assert_eq!(c.cmd(&[b"SADD" as &[u8], b"s", binary]).await, int(1));
    assert_eq!(c.cmd(&[b"SISMEMBER" as &[u8], b"s", binary]).await, int(1));

    assert_eq!(c.cmd(&["SREM", "s", "a", "zz", "a"]).await, int(1));
    assert_eq!(c.cmd(&["SREM", "missing", "a"]).await, int(0));
    assert_eq!(c.cmd(&["SREM", "s", "b", "c", "d", "", "x\r\n\0\u{ff}"]).await, int(4));
    assert_eq!(c.cmd(&[b"SREM" as &[u8], b"s", binary]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", "s"]).await, int(0), "removing the last member deletes the key");
    assert_eq!(c.cmd(&["TYPE", "missing"]).await, simple("none"));
    assert_eq!(c.cmd(&["SADD", "t", "m"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", "t"]).await, simple("set"));

    for (bad, name) in [
        (&["SADD", "s"][..], "sadd"),
        (&["SREM", "s"], "srem"),
        (&["SMEMBERS"], "smembers"),
        (&["SISMEMBER", "s"], "sismember"),
        (&["SISMEMBER", "s", "a", "b"], "sismember"),
        (&["SMISMEMBER", "s"], "smismember"),
        (&["SCARD", "s", "t"], "scard"),
        (&["SPOP"], "spop"),
        (&["SRANDMEMBER"], "srandmember"),
        (&["SMOVE", "a", "b"], "smove"),
        (&["SINTER"], "sinter"),
        (&["SINTERCARD", "1"], "sintercard"),
        (&["SINTERSTORE", "d"], "sinterstore"),
        (&["SUNION"], "sunion"),
        (&["SUNIONSTORE", "d"], "sunionstore"),
        (&["SDIFF"], "sdiff"),
        (&["SDIFFSTORE", "d"], "sdiffstore"),
        (&["SSCAN", "s"], "sscan"),
    ] {
        assert_eq!(c.cmd(bad).await, arity_error(name), "{bad:?}");
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_set_command_refuses_another_type() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SET", "str", "v"]).await, ok());
    assert_eq!(c.cmd(&["HSET", "hash", "f", "v"]).await, int(1));
    assert_eq!(c.cmd(&["SADD", "s", "a"]).await, int(1));
    for key in ["str", "hash"] {
        for command in [
            &["SADD", key, "a"][..],
            &["SREM", key, "a"],
            &["SMEMBERS", key],
            &["SISMEMBER", key, "a"],
            &["SMISMEMBER", key, "a"],
            &["SCARD", key],
            &["SPOP", key],
            &["SPOP", key, "1"],
            &["SPOP", key, "0"],
            &["SRANDMEMBER", key],
            &["SRANDMEMBER", key, "-1"],
            &["SMOVE", key, "d", "a"],
            &["SMOVE", "s", key, "a"],
            &["SMOVE", "s", key, "not-there"],
            &["SINTER", "s", key],
            &["SINTER", "missing", key],
            &["SINTERCARD", "2", "missing", key],
            &["SINTERSTORE", "d", "missing", key],
            &["SUNION", "missing", key],
            &["SUNIONSTORE", "d", "s", key],
            &["SDIFF", "missing", key],
            &["SDIFF", key, "missing"],
            &["SDIFFSTORE", "d", "s", key],
            &["SSCAN", key, "0"],
        ] {
            assert_eq!(c.cmd(command).await, error(WRONGTYPE), "{command:?}");
        }
    }
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0), "a failed STORE writes nothing");
    assert_eq!(c.cmd(&["SMEMBERS", "s"]).await, Resp::Array(vec![bulk("a")]), "a failed SMOVE moves nothing");
    // A missing source answers 0 before the destination's type is checked.
    assert_eq!(c.cmd(&["SMOVE", "missing", "str", "a"]).await, int(0));
    // Argument errors come before the type check.
    assert_eq!(c.cmd(&["SPOP", "str", "-1"]).await, error("ERR value is out of range, must be positive"));
    assert_eq!(c.cmd(&["SRANDMEMBER", "str", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["SSCAN", "str", "x"]).await, error("ERR invalid cursor"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spop_with_and_without_count() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SPOP", "missing"]).await, nil());
    assert_eq!(c.cmd(&["SPOP", "missing", "0"]).await, empty_array());
    assert_eq!(c.cmd(&["SPOP", "missing", "5"]).await, empty_array());
    let must_be_positive = error("ERR value is out of range, must be positive");
    for bad in ["-1", "x", "-9223372036854775808", "1.5"] {
        assert_eq!(c.cmd(&["SPOP", "missing", bad]).await, must_be_positive, "{bad}");
    }
    assert_eq!(c.cmd(&["SPOP", "s", "1", "2"]).await, error(SYNTAX));

    assert_eq!(c.cmd(&["SADD", "s", "a", "b", "c", "d", "e"]).await, int(5));
    assert_eq!(c.cmd(&["SPOP", "s", "0"]).await, empty_array());
    let one = c.cmd(&["SPOP", "s"]).await.text();
    assert_eq!(c.cmd(&["SISMEMBER", "s", &one]).await, int(0), "popped members leave the set");
    let two = sorted_texts(&c.cmd(&["SPOP", "s", "2"]).await);
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1]);
    assert_eq!(c.cmd(&["SCARD", "s"]).await, int(2));
    let rest = sorted_texts(&c.cmd(&["SPOP", "s", "9223372036854775807"]).await);
    assert_eq!(rest.len(), 2);
    let mut all: Vec<String> = [vec![one], two, rest].concat();
    all.sort();
    assert_eq!(all, ["a", "b", "c", "d", "e"], "every member popped exactly once");
    assert_eq!(c.cmd(&["EXISTS", "s"]).await, int(0), "popping the last member deletes the key");

    // RESP3: SPOP with a count is a set, without one a bulk string or null.
    resp3(&mut c).await;
    assert_eq!(c.cmd(&["SPOP", "missing", "3"]).await, Resp::Set(vec![]));
    c.send(&encode(&["SPOP", "missing", "3"])).await;
    assert_eq!(c.read_raw(4, REPLY_TIMEOUT).await, b"~0\r\n");
    assert_eq!(c.cmd(&["SADD", "p", "x", "y"]).await, int(2));
    assert_eq!(c.cmd(&["SPOP", "p", "0"]).await, Resp::Set(vec![]));
    let Resp::Set(popped) = c.cmd(&["SPOP", "p", "5"]).await else { panic!("SPOP count is a set in RESP3") };
    assert_eq!(popped.len(), 2);
    c.send(&encode(&["SPOP", "p"])).await;
    assert_eq!(c.read_raw(3, REPLY_TIMEOUT).await, b"_\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srandmember_counts_and_shapes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SRANDMEMBER", "missing"]).await, nil());
    for count in ["0", "3", "-3"] {
        assert_eq!(c.cmd(&["SRANDMEMBER", "missing", count]).await, empty_array(), "{count}");
    }
    assert_eq!(c.cmd(&["SADD", "s", "a", "b", "c"]).await, int(3));
    let members: HashSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    for _ in 0..10 {
        assert!(members.contains(&c.cmd(&["SRANDMEMBER", "s"]).await.text()));
    }
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "0"]).await, empty_array());
    let two = sorted_texts(&c.cmd(&["SRANDMEMBER", "s", "2"]).await);
    assert_eq!(two.len(), 2);
    assert_ne!(two[0], two[1], "a positive count picks distinct members");
    assert_eq!(sorted_texts(&c.cmd(&["SRANDMEMBER", "s", "100"]).await), ["a", "b", "c"]);
    assert_eq!(sorted_texts(&c.cmd(&["SRANDMEMBER", "s", "9223372036854775807"]).await), ["a", "b", "c"]);
    let many = c.cmd(&["SRANDMEMBER", "s", "-50"]).await;
    assert_eq!(many.items().len(), 50, "a negative count picks exactly |count|, with repeats");
    assert!(many.items().iter().all(|m| members.contains(&m.text())));
    assert_eq!(c.cmd(&["SCARD", "s"]).await, int(3), "SRANDMEMBER removes nothing");

    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "-1", "x"]).await, error(SYNTAX));
    assert_eq!(
        c.cmd(&["SRANDMEMBER", "s", "-9223372036854775808"]).await,
        error("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807")
    );
    // Meridian bounds a reply with repeats (Redis would try to build it).
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "-9223372036854775807"]).await, error("ERR value is out of range"));
    assert_eq!(c.cmd(&["SRANDMEMBER", "missing", "-9223372036854775807"]).await, empty_array());
    assert_eq!(c.cmd(&["SRANDMEMBER", "s", "-1000000"]).await.items().len(), 1_000_000, "the bound itself is served");

    // RESP3: SRANDMEMBER with a count stays an array, as in Redis 7.
    resp3(&mut c).await;
    assert!(matches!(c.cmd(&["SRANDMEMBER", "s", "2"]).await, Resp::Array(_)));
    assert!(matches!(c.cmd(&["SRANDMEMBER", "s", "10"]).await, Resp::Array(_)));
    assert!(matches!(c.cmd(&["SRANDMEMBER", "s", "-2"]).await, Resp::Array(_)));
    c.send(&encode(&["SRANDMEMBER", "missing", "2"])).await;
    assert_eq!(c.read_raw(4, REPLY_TIMEOUT).await, b"*0\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smove_between_sets() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SMOVE", "missing", "dst", "a"]).await, int(0));
    assert_eq!(c.cmd(&["SADD", "src", "m1", "m2"]).await, int(2));
    assert_eq!(c.cmd(&["SMOVE", "src", "dst", "zz"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "dst"]).await, int(0));
    assert_eq!(c.cmd(&["SMOVE", "src", "src", "m1"]).await, int(1), "same key: 1 if the member is there");
    assert_eq!(c.cmd(&["SMOVE", "src", "src", "zz"]).await, int(0));
    assert_eq!(c.cmd(&["SMOVE", "src", "dst", "m1"]).await, int(1));
    assert_eq!(c.cmd(&["SMEMBERS", "src"]).await, Resp::Array(vec![bulk("m2")]));
    assert_eq!(c.cmd(&["SMEMBERS", "dst"]).await, Resp::Array(vec![bulk("m1")]));
    // Moving a member the destination already has still removes it from the source.
    assert_eq!(c.cmd(&["SADD", "dst", "m2"]).await, int(1));
    assert_eq!(c.cmd(&["SMOVE", "src", "dst", "m2"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", "src"]).await, int(0), "the emptied source is deleted");
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "dst"]).await), ["m1", "m2"]);
    assert_eq!(c.cmd(&["SMOVE", "dst", "src", "m1", "extra"]).await, arity_error("smove"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinter_sunion_sdiff_and_their_resp3_sets() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SADD", "s1", "a", "b", "c", "d"]).await, int(4));
    assert_eq!(c.cmd(&["SADD", "s2", "c", "d", "e"]).await, int(3));
    assert_eq!(c.cmd(&["SADD", "s3", "d", "x"]).await, int(2));
    assert_eq!(sorted_texts(&c.cmd(&["SINTER", "s1", "s2"]).await), ["c", "d"]);
    assert_eq!(sorted_texts(&c.cmd(&["SINTER", "s1", "s2", "s3"]).await), ["d"]);
    assert_eq!(sorted_texts(&c.cmd(&["SINTER", "s1"]).await), ["a", "b", "c", "d"]);
    assert_eq!(sorted_texts(&c.cmd(&["SINTER", "s1", "s1"]).await), ["a", "b", "c", "d"]);
    assert_eq!(c.cmd(&["SINTER", "s1", "missing"]).await, empty_array());
    assert_eq!(c.cmd(&["SINTER", "missing"]).await, empty_array());
    assert_eq!(sorted_texts(&c.cmd(&["SUNION", "s1", "s2", "s3"]).await), ["a", "b", "c", "d", "e", "x"]);
    assert_eq!(sorted_texts(&c.cmd(&["SUNION", "missing", "s3"]).await), ["d", "x"]);
    assert_eq!(c.cmd(&["SUNION", "missing"]).await, empty_array());
    assert_eq!(sorted_texts(&c.cmd(&["SDIFF", "s1", "s2"]).await), ["a", "b"]);
    assert_eq!(sorted_texts(&c.cmd(&["SDIFF", "s1", "s2", "s3"]).await), ["a", "b"]);
    assert_eq!(sorted_texts(&c.cmd(&["SDIFF", "s1", "missing"]).await), ["a", "b", "c", "d"]);
    assert_eq!(c.cmd(&["SDIFF", "missing", "s1"]).await, empty_array());
    assert_eq!(c.cmd(&["SDIFF", "s1", "s1"]).await, empty_array());

    resp3(&mut c).await;
    for command in [&["SMEMBERS", "s3"][..], &["SINTER", "s1", "s3"], &["SUNION", "s3"], &["SDIFF", "s3", "s1"]] {
        let Resp::Set(members) = c.cmd(command).await else { panic!("{command:?} is a RESP3 set") };
        assert!(!members.is_empty(), "{command:?}");
    }
    for command in [&["SMEMBERS", "missing"][..], &["SINTER", "missing"], &["SUNION", "missing"], &["SDIFF", "missing"]]
    {
        c.send(&encode(command)).await;
        assert_eq!(c.read_raw(4, REPLY_TIMEOUT).await, b"~0\r\n", "{command:?}");
    }
    assert_eq!(
        c.cmd(&["SMISMEMBER", "s3", "d", "z"]).await,
        Resp::Array(vec![int(1), int(0)]),
        "integers, not booleans"
    );
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_commands_replace_or_delete_the_destination() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SADD", "s1", "a", "b", "c", "d"]).await, int(4));
    assert_eq!(c.cmd(&["SADD", "s2", "c", "d", "e"]).await, int(3));
    assert_eq!(c.cmd(&["SINTERSTORE", "d", "s1", "s2"]).await, int(2));
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "d"]).await), ["c", "d"]);
    assert_eq!(c.cmd(&["SUNIONSTORE", "d", "s1", "s2"]).await, int(5));
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "d"]).await), ["a", "b", "c", "d", "e"]);
    assert_eq!(c.cmd(&["SDIFFSTORE", "d", "s1", "s2"]).await, int(2));
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "d"]).await), ["a", "b"], "the old members are gone");
    // An empty result deletes the destination.
    assert_eq!(c.cmd(&["SINTERSTORE", "d", "s1", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0));
    assert_eq!(c.cmd(&["SUNIONSTORE", "d", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "d"]).await, int(0));
    // A destination of another type, with a TTL, is replaced by a plain set.
    assert_eq!(c.cmd(&["SET", "dstr", "x", "EX", "100"]).await, ok());
    assert_eq!(c.cmd(&["SUNIONSTORE", "dstr", "s2"]).await, int(3));
    assert_eq!(c.cmd(&["TYPE", "dstr"]).await, simple("set"));
    assert_eq!(c.cmd(&["TTL", "dstr"]).await, int(-1));
    assert_eq!(c.cmd(&["SET", "dstr2", "x"]).await, ok());
    assert_eq!(c.cmd(&["SDIFFSTORE", "dstr2", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "dstr2"]).await, int(0), "an empty result deletes a key of any type");
    // The destination may be a source.
    assert_eq!(c.cmd(&["SINTERSTORE", "s1", "s1", "s2"]).await, int(2));
    assert_eq!(sorted_texts(&c.cmd(&["SMEMBERS", "s1"]).await), ["c", "d"]);
    assert_eq!(c.cmd(&["SDIFFSTORE", "s1", "s1", "s1"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "s1"]).await, int(0));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sintercard_limit_and_its_errors() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SADD", "s1", "a", "b", "c", "d"]).await, int(4));
    assert_eq!(c.cmd(&["SADD", "s2", "b", "c", "d", "e"]).await, int(4));
    assert_eq!(c.cmd(&["SINTERCARD", "2", "s1", "s2"]).await, int(3));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1"]).await, int(4));
    assert_eq!(c.cmd(&["SINTERCARD", "2", "s1", "s2", "LIMIT", "2"]).await, int(2));
    assert_eq!(c.cmd(&["SINTERCARD", "2", "s1", "s2", "limit", "0"]).await, int(3), "LIMIT 0 is no limit");
    assert_eq!(c.cmd(&["SINTERCARD", "2", "s1", "s2", "LIMIT", "100"]).await, int(3));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "LIMIT", "1", "LIMIT", "3"]).await, int(3), "the last LIMIT wins");
    assert_eq!(c.cmd(&["SINTERCARD", "2", "s1", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "missing", "LIMIT", "0"]).await, int(0));

    let numkeys = error("ERR numkeys should be greater than 0");
    for bad in ["0", "-1", "x"] {
        assert_eq!(c.cmd(&["SINTERCARD", bad, "s1"]).await, numkeys, "{bad}");
    }
    assert_eq!(
        c.cmd(&["SINTERCARD", "3", "s1", "s2"]).await,
        error("ERR Number of keys can't be greater than number of args")
    );
    let negative = error("ERR LIMIT can't be negative");
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "LIMIT", "-1"]).await, negative);
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "LIMIT", "x"]).await, negative);
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "LIMIT"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "bogus"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "s1", "bogus", "1"]).await, error(SYNTAX));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sscan_small_and_large_sets_despite_writes() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let empty = Resp::Array(vec![bulk("0"), empty_array()]);
    assert_eq!(c.cmd(&["SSCAN", "missing", "0"]).await, empty);
    assert_eq!(c.cmd(&["SSCAN", "missing", "0", "COUNT", "0"]).await, empty, "options unread for a missing key");
    assert_eq!(c.cmd(&["SSCAN", "missing", "abc"]).await, error("ERR invalid cursor"));
    assert_eq!(c.cmd(&["SADD", "small", "a", "b", "ab"]).await, int(3));
    let reply = c.cmd(&["SSCAN", "small", "0", "COUNT", "1"]).await;
    assert_eq!(reply.items()[0], bulk("0"), "a small set comes whole");
    assert_eq!(sorted_texts(&reply.items()[1]), ["a", "ab", "b"]);
    assert_eq!(sorted_texts(&c.cmd(&["SSCAN", "small", "0", "MATCH", "a*"]).await.items()[1]), ["a", "ab"]);
    for bad in [
        &["SSCAN", "small", "0", "COUNT", "0"][..],
        &["SSCAN", "small", "0", "MATCH"],
        &["SSCAN", "small", "0", "TYPE", "string"],
        &["SSCAN", "small", "0", "NOVALUES"],
    ] {
        assert_eq!(c.cmd(bad).await, error(SYNTAX), "{bad:?}");
    }
    assert_eq!(c.cmd(&["SSCAN", "small", "0", "COUNT", "x"]).await, error(NOT_INTEGER));

    // A large set scanned while it grows and shrinks: every member present for
    // the whole scan comes back.
    let mut command = vec!["SADD".to_string(), "big".to_string()];
    command.extend((0..3_000).map(|i| format!("stay:{i}")));
    assert_eq!(c.cmd(&command).await, int(3_000));
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let reply = c.cmd(&["SSCAN", "big", cursor.as_str(), "COUNT", "25"]).await;
        let batch = reply.items()[1].items();
        assert!(batch.len() < 500, "a batch of about COUNT, got {}", batch.len());
        seen.extend(batch.iter().map(Resp::text));
        let mut add = vec!["SADD".to_string(), "big".to_string()];
        add.extend((0..40).map(|j| format!("extra:{calls}:{j}")));
        c.cmd(&add).await;
        c.cmd(&["SREM", "big", &format!("extra:{}:1", calls.max(1) - 1)]).await;
        calls += 1;
        assert!(calls < 10_000, "SSCAN does not terminate");
        cursor = reply.items()[0].text();
        if cursor == "0" {
            break;
        }
    }
    for i in 0..3_000 {
        assert!(seen.contains(&format!("stay:{i}")), "stay:{i} was never returned");
    }
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_commands_report_redis_command_info() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    for (name, arity, first, last, step) in [
        ("sadd", -3, 1, 1, 1),
        ("srem", -3, 1, 1, 1),
        ("smembers", 2, 1, 1, 1),
        ("sismember", 3, 1, 1, 1),
        ("smismember", -3, 1, 1, 1),
        ("scard", 2, 1, 1, 1),
        ("spop", -2, 1, 1, 1),
        ("srandmember", -2, 1, 1, 1),
        ("smove", 4, 1, 2, 1),
        ("sinter", -2, 1, -1, 1),
        ("sintercard", -3, 0, 0, 0),
        ("sinterstore", -3, 1, -1, 1),
        ("sunion", -2, 1, -1, 1),
        ("sunionstore", -3, 1, -1, 1),
        ("sdiff", -2, 1, -1, 1),
        ("sdiffstore", -3, 1, -1, 1),
        ("sscan", -3, 1, 1, 1),
    ] {
        let reply = c.cmd(&["COMMAND", "INFO", name]).await;
        let info = reply.items()[0].items();
        assert_eq!(info[0], bulk(name));
        assert_eq!(info[1], int(arity), "{name} arity");
        assert_eq!(
            (info[3].clone(), info[4].clone(), info[5].clone()),
            (int(first), int(last), int(step)),
            "{name} key positions"
        );
        let categories: Vec<Resp> = info[6].items().to_vec();
        assert!(categories.contains(&simple("@set")), "{name} is in @set: {categories:?}");
        assert_eq!(c.cmd(&["COMMAND", "DOCS", name]).await.items().len(), 2, "{name} has docs");
    }
    let reply = c.cmd(&["COMMAND", "INFO", "sintercard"]).await;
    assert_eq!(reply.items()[0].items()[2].items().to_vec(), vec![simple("readonly"), simple("movablekeys")]);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_writes_touch_watched_keys_and_expired_sets_read_as_missing() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    let mut other = Client::connect(node.addr).await;
    assert_eq!(other.cmd(&["SADD", "s", "a", "b", "c"]).await, int(3));
    // Each write by another client aborts a transaction watching the key it
    // writes: SMOVE both its keys, the STORE commands their destination.
    for (watched, write) in [
        ("s", &["SADD", "s", "z"][..]),
        ("s", &["SPOP", "s"]),
        ("s", &["SMOVE", "s", "moved", "z"]),
        ("moved", &["SMOVE", "s", "moved", "a"]),
        ("dst", &["SUNIONSTORE", "dst", "s"]),
        ("dst", &["SDIFFSTORE", "dst", "s", "s"]),
    ] {
        // Put the moved and popped members back for the next round.
        other.cmd(&["SADD", "s", "a", "z"]).await.int();
        assert_eq!(c.cmd(&["WATCH", watched]).await, ok());
        let reply = other.cmd(write).await;
        assert!(!matches!(reply, Resp::Error(_)), "{write:?}: {reply:?}");
        assert_eq!(c.cmd(&["MULTI"]).await, ok());
        assert_eq!(c.cmd(&["SCARD", watched]).await, simple("QUEUED"));
        c.send(&encode(&["EXEC"])).await;
        assert_eq!(c.read_raw(5, REPLY_TIMEOUT).await, b"*-1\r\n".to_vec(), "{write:?}");
    }
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["SADD", "tx", "a", "b"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["SMEMBERS", "nothing"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["SCARD", "tx"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["EXEC"]).await, Resp::Array(vec![int(2), empty_array(), int(2)]));

    // An expired set reads as missing; the next SADD starts a fresh one.
    assert_eq!(c.cmd(&["SADD", "e", "old"]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIRE", "e", "1"]).await, int(1));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(c.cmd(&["SCARD", "e"]).await, int(0));
    assert_eq!(c.cmd(&["SISMEMBER", "e", "old"]).await, int(0));
    assert_eq!(c.cmd(&["SPOP", "e"]).await, nil());
    assert_eq!(c.cmd(&["SMOVE", "e", "f", "old"]).await, int(0));
    assert_eq!(c.cmd(&["SUNION", "e"]).await, empty_array());
    assert_eq!(c.cmd(&["SADD", "e", "new"]).await, int(1));
    assert_eq!(c.cmd(&["SMEMBERS", "e"]).await, Resp::Array(vec![bulk("new")]));
    assert_eq!(c.cmd(&["TTL", "e"]).await, int(-1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_key_name_and_huge_counts() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["SADD", "", "m"]).await, int(1));
    assert_eq!(c.cmd(&["SISMEMBER", "", "m"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", ""]).await, simple("set"));
    assert_eq!(c.cmd(&["SUNIONSTORE", "copy", ""]).await, int(1));
    assert_eq!(c.cmd(&["SMOVE", "", "copy", "m"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", ""]).await, int(0));
    assert_eq!(c.cmd(&["SINTERSTORE", "", "copy"]).await, int(1));
    assert_eq!(c.cmd(&["SPOP", ""]).await, bulk("m"));

    let mut command = vec!["SADD".to_string(), "big".to_string()];
    command.extend((0..300).map(|i| i.to_string()));
    assert_eq!(c.cmd(&command).await, int(300));
    assert_eq!(c.cmd(&["SINTERCARD", "1", "big", "LIMIT", "9223372036854775807"]).await, int(300));
    assert_eq!(
        c.cmd(&["SINTERCARD", "1", "big", "LIMIT", "9223372036854775808"]).await,
        error("ERR LIMIT can't be negative")
    );
    assert_eq!(
        c.cmd(&["SINTERCARD", "9223372036854775807", "big"]).await,
        error("ERR Number of keys can't be greater than number of args")
    );
    let reply = c.cmd(&["SSCAN", "big", "0", "COUNT", "1000"]).await;
    assert_eq!((reply.items()[0].clone(), reply.items()[1].items().len()), (bulk("0"), 300));
    assert_eq!(c.cmd(&["SRANDMEMBER", "big", "-3"]).await.items().len(), 3);
    assert_eq!(c.cmd(&["SPOP", "big", "1000"]).await.items().len(), 300);
    assert_eq!(c.cmd(&["EXISTS", "big"]).await, int(0));
    stop(node).await;
}
