//! Black-box tests of the list commands, the blocking pops and pub/sub, over
//! the Redis protocol against in-process nodes.
//!
//! Replies are compared with what Redis 7 sends, byte-shape for byte-shape
//! (null bulk vs null array, RESP3 nulls and pushes). The blocking tests use
//! several connections: a client blocks, another writes, and the first must
//! get its element — in FIFO order among blocked clients, after EXEC for a
//! transaction's writes, and also when the write arrives as a delta from
//! another region (applied through `ServerState::apply_deltas`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use meridian_crdt::clock::hlc_from_unix_ms;
use meridian_crdt::keyspace::End;
use meridian_crdt::{Delta, Keyspace, Moment, ReplicaId};
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use tokio::net::TcpListener;
use tokio::time::{sleep, timeout};

fn texts(items: &[&str]) -> Resp {
    Resp::Array(items.iter().map(bulk).collect())
}

fn ints(items: &[i64]) -> Resp {
    Resp::Array(items.iter().map(|&n| int(n)).collect())
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Waits until INFO reports `count` blocked clients (bounded).
async fn wait_blocked(c: &mut Client, count: usize) {
    for _ in 0..500 {
        let info = c.cmd(&["INFO", "clients"]).await.text();
        if info.contains(&format!("blocked_clients:{count}\r\n")) {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {count} blocked clients");
}

// ---------------------------------------------------------------------------
// Plain list commands.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pop_len_and_their_edges() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["LPUSH", "l", "a", "b"]).await, int(2));
    assert_eq!(c.cmd(&["RPUSH", "l", "c"]).await, int(3));
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, texts(&["b", "a", "c"]));
    assert_eq!(c.cmd(&["LLEN", "l"]).await, int(3));
    assert_eq!(c.cmd(&["LLEN", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["TYPE", "l"]).await, simple("list"));

    // LPUSHX/RPUSHX only push to an existing list.
    assert_eq!(c.cmd(&["LPUSHX", "missing", "x"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "missing"]).await, int(0));
    assert_eq!(c.cmd(&["RPUSHX", "l", "d", "e"]).await, int(5));

    assert_eq!(c.cmd(&["LPOP", "l"]).await, bulk("b"));
    assert_eq!(c.cmd(&["RPOP", "l"]).await, bulk("e"));
    assert_eq!(c.cmd(&["LPOP", "l", "2"]).await, texts(&["a", "c"]));
    assert_eq!(c.cmd(&["LPOP", "l", "0"]).await, Resp::Array(vec![]), "count 0 on a list: empty array");
    assert_eq!(c.cmd(&["RPOP", "l", "100"]).await, texts(&["d"]), "a huge count pops what there is");
    assert_eq!(c.cmd(&["EXISTS", "l"]).await, int(0), "the last pop deletes the key");

    // Missing keys: a null bulk without a count, a null array with one.
    c.send(&encode(&["LPOP", "missing"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"$-1\r\n");
    c.send(&encode(&["LPOP", "missing", "2"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    c.send(&encode(&["RPOP", "missing", "0"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");

    assert_eq!(c.cmd(&["LPOP", "l", "-1"]).await, error("ERR value is out of range, must be positive"));
    assert_eq!(c.cmd(&["LPOP", "l", "x"]).await, error(NOT_INTEGER));
    assert_eq!(c.cmd(&["LPOP", "l", "1", "2"]).await, arity_error("lpop"));

    // Wrong types.
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, ok());
    for command in [
        &["LPUSH", "s", "x"][..],
        &["RPUSHX", "s", "x"],
        &["LPOP", "s"],
        &["LLEN", "s"],
        &["LRANGE", "s", "0", "-1"],
        &["LINDEX", "s", "0"],
        &["LPOS", "s", "x"],
    ] {
        assert_eq!(c.cmd(command).await, error(WRONGTYPE), "{command:?}");
    }
    assert_eq!(c.cmd(&["LPUSH", "l"]).await, arity_error("lpush"));
    assert_eq!(c.cmd(&["LLEN"]).await, arity_error("llen"));

    // RESP3: a missing key's pop is `_` either way.
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Resp::Map(_)));
    c.send(&encode(&["LPOP", "missing", "3"])).await;
    assert_eq!(c.read_raw(3, Duration::from_secs(5)).await, b"_\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_indexes_and_positions() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RPUSH", "l", "a", "b", "c", "a", "b"]).await, int(5));
    assert_eq!(c.cmd(&["LRANGE", "l", "1", "2"]).await, texts(&["b", "c"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "-2", "-1"]).await, texts(&["a", "b"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "-100", "100"]).await, texts(&["a", "b", "c", "a", "b"]));
    assert_eq!(c.cmd(&["LRANGE", "l", "3", "1"]).await, texts(&[]));
    assert_eq!(c.cmd(&["LRANGE", "l", "10", "20"]).await, texts(&[]));
    assert_eq!(c.cmd(&["LRANGE", "missing", "0", "-1"]).await, texts(&[]));
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "x"]).await, error(NOT_INTEGER));

    assert_eq!(c.cmd(&["LINDEX", "l", "0"]).await, bulk("a"));
    assert_eq!(c.cmd(&["LINDEX", "l", "-1"]).await, bulk("b"));
    assert_eq!(c.cmd(&["LINDEX", "l", "100"]).await, nil());
    assert_eq!(c.cmd(&["LINDEX", "l", "-100"]).await, nil());
    assert_eq!(c.cmd(&["LINDEX", "missing", "0"]).await, nil());
    assert_eq!(c.cmd(&["LINDEX", "l", "x"]).await, error(NOT_INTEGER));

    assert_eq!(c.cmd(&["LPOS", "l", "b"]).await, int(1));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK", "2"]).await, int(4));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK", "-1"]).await, int(4));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK", "-2"]).await, int(1));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK", "3"]).await, nil());
    assert_eq!(c.cmd(&["LPOS", "l", "b", "COUNT", "0"]).await, ints(&[1, 4]));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "COUNT", "1"]).await, ints(&[1]));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "COUNT", "0", "RANK", "-1"]).await, ints(&[4, 1]));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "COUNT", "0", "MAXLEN", "3"]).await, ints(&[1]));
    assert_eq!(c.cmd(&["LPOS", "l", "z", "COUNT", "2"]).await, ints(&[]));
    assert_eq!(c.cmd(&["LPOS", "l", "z"]).await, nil());
    assert_eq!(c.cmd(&["LPOS", "missing", "z", "COUNT", "1"]).await, ints(&[]));
    assert_eq!(
        c.cmd(&["LPOS", "l", "b", "RANK", "0"]).await,
        error(
            "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"
        )
    );
    assert_eq!(c.cmd(&["LPOS", "l", "b", "COUNT", "-1"]).await, error("ERR COUNT can't be negative"));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "MAXLEN", "-1"]).await, error("ERR MAXLEN can't be negative"));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "BOGUS", "1"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LPOS", "l", "b", "RANK", "x"]).await, error(NOT_INTEGER));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_insert_remove_trim() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RPUSH", "l", "a", "b", "c", "a", "b", "a"]).await, int(6));
    assert_eq!(c.cmd(&["LSET", "l", "1", "B"]).await, ok());
    assert_eq!(c.cmd(&["LSET", "l", "-1", "Z"]).await, ok());
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, texts(&["a", "B", "c", "a", "b", "Z"]));
    assert_eq!(c.cmd(&["LSET", "l", "6", "x"]).await, error("ERR index out of range"));
    assert_eq!(c.cmd(&["LSET", "l", "-7", "x"]).await, error("ERR index out of range"));
    assert_eq!(c.cmd(&["LSET", "missing", "0", "x"]).await, error("ERR no such key"));
    assert_eq!(c.cmd(&["LSET", "l", "x", "x"]).await, error(NOT_INTEGER));

    assert_eq!(c.cmd(&["LINSERT", "l", "BEFORE", "c", "c0"]).await, int(7));
    assert_eq!(c.cmd(&["LINSERT", "l", "after", "c", "c1"]).await, int(8));
    assert_eq!(c.cmd(&["LINSERT", "l", "AFTER", "nothere", "x"]).await, int(-1));
    assert_eq!(c.cmd(&["LINSERT", "missing", "AFTER", "a", "x"]).await, int(0));
    assert_eq!(c.cmd(&["LINSERT", "l", "MIDDLE", "a", "x"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, texts(&["a", "B", "c0", "c", "c1", "a", "b", "Z"]));

    // LREM: count > 0 from the head, < 0 from the tail, 0 all.
    assert_eq!(c.cmd(&["RPUSH", "r", "x", "y", "x", "y", "x"]).await, int(5));
    assert_eq!(c.cmd(&["LREM", "r", "1", "x"]).await, int(1));
    assert_eq!(c.cmd(&["LRANGE", "r", "0", "-1"]).await, texts(&["y", "x", "y", "x"]));
    assert_eq!(c.cmd(&["LREM", "r", "-1", "y"]).await, int(1));
    assert_eq!(c.cmd(&["LRANGE", "r", "0", "-1"]).await, texts(&["y", "x", "x"]));
    assert_eq!(c.cmd(&["LREM", "r", "0", "x"]).await, int(2));
    assert_eq!(c.cmd(&["LREM", "r", "0", "nothere"]).await, int(0));
    assert_eq!(c.cmd(&["LREM", "missing", "0", "x"]).await, int(0));
    assert_eq!(c.cmd(&["LREM", "r", "x", "x"]).await, error(NOT_INTEGER));

    // LTRIM keeps a range; an empty range deletes the key.
    assert_eq!(c.cmd(&["LTRIM", "l", "1", "-2"]).await, ok());
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, texts(&["B", "c0", "c", "c1", "a", "b"]));
    assert_eq!(c.cmd(&["LTRIM", "l", "-2", "-1"]).await, ok());
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, texts(&["a", "b"]));
    assert_eq!(c.cmd(&["LTRIM", "l", "5", "1"]).await, ok());
    assert_eq!(c.cmd(&["EXISTS", "l"]).await, int(0));
    assert_eq!(c.cmd(&["LTRIM", "missing", "0", "1"]).await, ok());
    assert_eq!(c.cmd(&["LTRIM", "l", "a", "1"]).await, error(NOT_INTEGER));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_and_multi_pops() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RPUSH", "src", "a", "b", "c"]).await, int(3));
    assert_eq!(c.cmd(&["LMOVE", "src", "dst", "LEFT", "RIGHT"]).await, bulk("a"));
    assert_eq!(c.cmd(&["LMOVE", "src", "dst", "right", "left"]).await, bulk("c"));
    assert_eq!(c.cmd(&["LRANGE", "dst", "0", "-1"]).await, texts(&["c", "a"]));
    assert_eq!(c.cmd(&["RPOPLPUSH", "dst", "dst"]).await, bulk("a"), "a rotation");
    assert_eq!(c.cmd(&["LRANGE", "dst", "0", "-1"]).await, texts(&["a", "c"]));
    assert_eq!(c.cmd(&["RPOPLPUSH", "src", "dst"]).await, bulk("b"));
    assert_eq!(c.cmd(&["EXISTS", "src"]).await, int(0));
    assert_eq!(c.cmd(&["LMOVE", "src", "dst", "LEFT", "LEFT"]).await, nil());
    assert_eq!(c.cmd(&["LMOVE", "src", "dst", "UP", "LEFT"]).await, error(SYNTAX));

    // Types: a missing source is nil before the destination's type matters.
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, ok());
    assert_eq!(c.cmd(&["LMOVE", "missing", "s", "LEFT", "LEFT"]).await, nil());
    assert_eq!(c.cmd(&["LMOVE", "dst", "s", "LEFT", "LEFT"]).await, error(WRONGTYPE));
    assert_eq!(c.cmd(&["LMOVE", "s", "dst", "LEFT", "LEFT"]).await, error(WRONGTYPE));
    assert_eq!(c.cmd(&["LLEN", "dst"]).await, int(3), "a refused move changes nothing");

    // LMPOP.
    assert_eq!(c.cmd(&["LMPOP", "2", "missing", "dst", "LEFT"]).await, Resp::Array(vec![bulk("dst"), texts(&["b"])]));
    assert_eq!(
        c.cmd(&["LMPOP", "1", "dst", "RIGHT", "COUNT", "10"]).await,
        Resp::Array(vec![bulk("dst"), texts(&["c", "a"])])
    );
    c.send(&encode(&["LMPOP", "1", "dst", "LEFT"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    assert_eq!(c.cmd(&["LMPOP", "0", "dst", "LEFT"]).await, error("ERR numkeys should be greater than 0"));
    assert_eq!(c.cmd(&["LMPOP", "x", "dst", "LEFT"]).await, error("ERR numkeys should be greater than 0"));
    assert_eq!(c.cmd(&["LMPOP", "3", "a", "b", "LEFT"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LMPOP", "1", "dst", "MIDDLE"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LMPOP", "1", "dst", "LEFT", "COUNT", "0"]).await, error("ERR count should be greater than 0"));
    assert_eq!(c.cmd(&["LMPOP", "1", "dst", "LEFT", "COUNT"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["LMPOP", "1", "s", "LEFT"]).await, error(WRONGTYPE));
    assert_eq!(c.cmd(&["LMPOP", "1", "dst"]).await, arity_error("lmpop"));

    // COMMAND GETKEYS-style key positions: LMPOP is movablekeys.
    let info = c.cmd(&["COMMAND", "INFO", "lmpop", "blpop"]).await;
    let lmpop = info.items()[0].items();
    assert_eq!(lmpop[1], int(-4));
    assert!(lmpop[2].items().contains(&simple("movablekeys")));
    let blpop = info.items()[1].items();
    assert_eq!((blpop[1].clone(), blpop[3].clone(), blpop[4].clone()), (int(-3), int(1), int(-2)));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_work_with_the_redis_client_library() {
    let node = start().await;
    let client = redis::Client::open(format!("redis://{}/", node.addr)).expect("client");
    let mut conn = timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
        .await
        .expect("connect timed out")
        .expect("connects");
    let len: i64 = redis::cmd("RPUSH").arg("q").arg(&["1", "2", "3"]).query_async(&mut conn).await.expect("rpush");
    assert_eq!(len, 3);
    let all: Vec<String> = redis::cmd("LRANGE").arg("q").arg(0).arg(-1).query_async(&mut conn).await.expect("lrange");
    assert_eq!(all, ["1", "2", "3"]);
    let popped: Option<(String, String)> =
        redis::cmd("BLPOP").arg("q").arg(1).query_async(&mut conn).await.expect("blpop");
    assert_eq!(popped, Some(("q".to_string(), "1".to_string())));
    let none: Option<(String, String)> =
        redis::cmd("BRPOP").arg("nothing").arg(0.05).query_async(&mut conn).await.expect("brpop");
    assert_eq!(none, None);
    stop(node).await;
}

// ---------------------------------------------------------------------------
// Blocking pops.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pops_serve_at_once_time_out_and_check_arguments() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["RPUSH", "l", "a", "b"]).await, int(2));
    assert_eq!(c.cmd(&["BLPOP", "missing", "l", "0"]).await, texts(&["l", "a"]));
    assert_eq!(c.cmd(&["BRPOP", "l", "0"]).await, texts(&["l", "b"]));

    // Timeouts: a null array, in RESP2 and RESP3.
    c.send(&encode(&["BLPOP", "l", "0.05"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    c.send(&encode(&["BLMOVE", "l", "d", "LEFT", "LEFT", "0.05"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    c.send(&encode(&["BLMPOP", "0.05", "1", "l", "LEFT"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Resp::Map(_)));
    c.send(&encode(&["BRPOPLPUSH", "l", "d", "0.05"])).await;
    assert_eq!(c.read_raw(3, Duration::from_secs(5)).await, b"_\r\n");
    assert!(matches!(c.cmd(&["HELLO", "2"]).await, Resp::Map(_) | Resp::Array(_)));

    assert_eq!(c.cmd(&["BLPOP", "l", "-1"]).await, error("ERR timeout is negative"));
    assert_eq!(c.cmd(&["BLPOP", "l", "soon"]).await, error("ERR timeout is not a float or out of range"));
    assert_eq!(c.cmd(&["BLPOP", "l", "inf"]).await, error("ERR timeout is not a float or out of range"));
    assert_eq!(c.cmd(&["BLMOVE", "l", "d", "UP", "LEFT", "0"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["BLMPOP", "0", "0", "l", "LEFT"]).await, error("ERR numkeys should be greater than 0"));
    assert_eq!(c.cmd(&["BLPOP", "l"]).await, arity_error("blpop"));
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, ok());
    assert_eq!(c.cmd(&["BLPOP", "s", "0"]).await, error(WRONGTYPE), "a wrong type is an error, not a wait");

    // Inside MULTI a blocking command never blocks.
    assert_eq!(c.cmd(&["MULTI"]).await, ok());
    assert_eq!(c.cmd(&["BLPOP", "l", "0"]).await, simple("QUEUED"));
    assert_eq!(c.cmd(&["BLMOVE", "l", "d", "LEFT", "LEFT", "0"]).await, simple("QUEUED"));
    c.send(&encode(&["EXEC"])).await;
    assert_eq!(c.read_raw(14, Duration::from_secs(5)).await, b"*2\r\n*-1\r\n$-1\r\n");
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_clients_are_served_in_fifo_order() {
    let node = start().await;
    let mut first = Client::connect(node.addr).await;
    let mut second = Client::connect(node.addr).await;
    let mut third = Client::connect(node.addr).await;
    let mut writer = Client::connect(node.addr).await;
    first.send(&encode(&["BLPOP", "q", "0"])).await;
    wait_blocked(&mut writer, 1).await;
    second.send(&encode(&["BRPOP", "other", "q", "0"])).await;
    wait_blocked(&mut writer, 2).await;
    third.send(&encode(&["BLPOP", "q", "0"])).await;
    wait_blocked(&mut writer, 3).await;

    // Two elements: the first two blocked clients get one each, in order.
    assert_eq!(writer.cmd(&["RPUSH", "q", "x", "y"]).await, int(2));
    assert_eq!(first.read().await, texts(&["q", "x"]));
    assert_eq!(second.read().await, texts(&["q", "y"]));
    assert_eq!(writer.cmd(&["LLEN", "q"]).await, int(0), "served right after the push");
    wait_blocked(&mut writer, 1).await;
    assert_eq!(writer.cmd(&["LPUSH", "q", "z"]).await, int(1));
    assert_eq!(third.read().await, texts(&["q", "z"]));
    wait_blocked(&mut writer, 0).await;

    // The blocked client's connection keeps working afterwards.
    assert_eq!(first.cmd(&["PING"]).await, simple("PONG"));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blmove_chains_wake_ups_and_exec_serves_after_the_transaction() {
    let node = start().await;
    let mut mover = Client::connect(node.addr).await;
    let mut popper = Client::connect(node.addr).await;
    let mut writer = Client::connect(node.addr).await;
    mover.send(&encode(&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"])).await;
    wait_blocked(&mut writer, 1).await;
    popper.send(&encode(&["BLMPOP", "0", "1", "b", "LEFT", "COUNT", "5"])).await;
    wait_blocked(&mut writer, 2).await;
    // One push to `a` serves the mover, whose push to `b` serves the popper.
    assert_eq!(writer.cmd(&["RPUSH", "a", "v"]).await, int(1));
    assert_eq!(mover.read().await, bulk("v"));
    assert_eq!(popper.read().await, Resp::Array(vec![bulk("b"), texts(&["v"])]));
    assert_eq!(writer.cmd(&["EXISTS", "a", "b"]).await, int(0));

    // A transaction's pushes are visible to its own later commands; blocked
    // clients are served when it ends.
    popper.send(&encode(&["BLPOP", "t", "0"])).await;
    wait_blocked(&mut writer, 1).await;
    assert_eq!(writer.cmd(&["MULTI"]).await, ok());
    assert_eq!(writer.cmd(&["RPUSH", "t", "1", "2"]).await, simple("QUEUED"));
    assert_eq!(writer.cmd(&["LLEN", "t"]).await, simple("QUEUED"));
    assert_eq!(writer.cmd(&["EXEC"]).await, ints(&[2, 2]));
    assert_eq!(popper.read().await, texts(&["t", "1"]));
    assert_eq!(writer.cmd(&["LRANGE", "t", "0", "-1"]).await, texts(&["2"]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_clients_leave_on_disconnect_kill_and_unblock() {
    let node = start().await;
    let mut admin = Client::connect(node.addr).await;

    // A client that disconnects while blocked is not served afterwards: the
    // element stays for the next one.
    let mut gone = Client::connect(node.addr).await;
    gone.send(&encode(&["BLPOP", "q", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    drop(gone);
    wait_blocked(&mut admin, 0).await;
    assert_eq!(admin.cmd(&["RPUSH", "q", "kept"]).await, int(1));
    assert_eq!(admin.cmd(&["LRANGE", "q", "0", "-1"]).await, texts(&["kept"]));

    // CLIENT UNBLOCK: as a timeout, or with an error.
    let mut waiter = Client::connect(node.addr).await;
    let id = waiter.cmd(&["CLIENT", "ID"]).await.int().to_string();
    waiter.send(&encode(&["BLPOP", "empty", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", id.as_str()]).await, int(1));
    assert_eq!(waiter.read().await, nil());
    waiter.send(&encode(&["BLPOP", "empty", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", id.as_str(), "ERROR"]).await, int(1));
    assert_eq!(waiter.read().await, error("UNBLOCKED client unblocked via CLIENT UNBLOCK"));
    assert_eq!(admin.cmd(&["CLIENT", "UNBLOCK", id.as_str()]).await, int(0), "not blocked now");
    assert_eq!(
        admin.cmd(&["CLIENT", "UNBLOCK", id.as_str(), "LATER"]).await,
        error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    );

    // CLIENT KILL closes a blocked client.
    waiter.send(&encode(&["BLPOP", "empty", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "ID", id.as_str()]).await, int(1));
    waiter.expect_closed().await;
    wait_blocked(&mut admin, 0).await;

    // Commands pipelined after a blocking one wait for it, then run in order.
    let mut piped = Client::connect(node.addr).await;
    let mut batch = encode(&["BLPOP", "p", "0"]);
    batch.extend(encode(&["LLEN", "p"]));
    piped.send(&batch).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(admin.cmd(&["RPUSH", "p", "1", "2"]).await, int(2));
    assert_eq!(piped.read().await, texts(&["p", "1"]));
    assert_eq!(piped.read().await, int(1));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_set_blocking_pops() {
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["ZADD", "z", "1", "a", "2", "b", "3", "c"]).await, int(3));
    assert_eq!(c.cmd(&["BZPOPMIN", "missing", "z", "0"]).await, texts(&["z", "a", "1"]));
    assert_eq!(c.cmd(&["BZPOPMAX", "z", "0"]).await, texts(&["z", "c", "3"]));
    assert_eq!(
        c.cmd(&["BZMPOP", "0", "2", "missing", "z", "MIN", "COUNT", "5"]).await,
        Resp::Array(vec![bulk("z"), Resp::Array(vec![texts(&["b", "2"])])])
    );
    c.send(&encode(&["BZPOPMIN", "z", "0.05"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    c.send(&encode(&["BZMPOP", "0.05", "1", "z", "MAX"])).await;
    assert_eq!(c.read_raw(5, Duration::from_secs(5)).await, b"*-1\r\n");
    assert_eq!(c.cmd(&["BZPOPMIN", "z", "-1"]).await, error("ERR timeout is negative"));
    assert_eq!(c.cmd(&["BZMPOP", "0", "1", "z", "UP"]).await, error(SYNTAX));
    assert_eq!(c.cmd(&["BZMPOP", "0", "0", "z", "MIN"]).await, error("ERR numkeys should be greater than 0"));
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, ok());
    assert_eq!(c.cmd(&["BZPOPMIN", "s", "0"]).await, error(WRONGTYPE));

    // Blocked, then served by a ZADD from another client, in FIFO order.
    let mut first = Client::connect(node.addr).await;
    let mut second = Client::connect(node.addr).await;
    first.send(&encode(&["BZPOPMIN", "q", "0"])).await;
    wait_blocked(&mut c, 1).await;
    second.send(&encode(&["BZMPOP", "0", "1", "q", "MAX", "COUNT", "2"])).await;
    wait_blocked(&mut c, 2).await;
    assert_eq!(c.cmd(&["ZADD", "q", "5", "x", "6", "y", "7", "z"]).await, int(3));
    assert_eq!(first.read().await, texts(&["q", "x", "5"]));
    assert_eq!(
        second.read().await,
        Resp::Array(vec![bulk("q"), Resp::Array(vec![texts(&["z", "7"]), texts(&["y", "6"])])])
    );
    assert_eq!(c.cmd(&["EXISTS", "q"]).await, int(0));

    // RESP3: the score is a double.
    assert!(matches!(first.cmd(&["HELLO", "3"]).await, Resp::Map(_)));
    assert_eq!(c.cmd(&["ZADD", "r", "1.5", "m"]).await, int(1));
    assert_eq!(
        first.cmd(&["BZPOPMAX", "r", "0"]).await,
        Resp::Array(vec![bulk("r"), bulk("m"), Resp::Double("1.5".to_string())])
    );
    stop(node).await;
}

/// A node on a `ServerState` the test holds, so that it can apply deltas
/// "from another region" directly.
async fn start_server() -> (Arc<ServerState>, std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Arc::new(ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default()));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(meridian_proxy::server::run(listener, server.clone(), shutdown));
    (server, addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_another_region_wakes_a_blocked_client() {
    let (server, addr, stop) = start_server().await;
    let mut blocked = Client::connect(addr).await;
    let mut watcher = Client::connect(addr).await;
    let mut admin = Client::connect(addr).await;
    blocked.send(&encode(&["BRPOP", "jobs", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    assert_eq!(watcher.cmd(&["WATCH", "jobs"]).await, ok());

    // Region 2 pushes to `jobs`; its delta arrives here.
    let mut remote = Keyspace::new(ReplicaId(2));
    let now = now_ms();
    let at = Moment { hlc: hlc_from_unix_ms(now, 0), wall_ms: now };
    let (_, delta) = remote.push(b"jobs", &[b"from-region-2"], End::Back, at).expect("push");
    server.apply_deltas(&[Delta::Key(delta)]);

    assert_eq!(blocked.read().await, texts(&["jobs", "from-region-2"]));
    // The remote write also invalidates a WATCH on the key.
    assert_eq!(watcher.cmd(&["MULTI"]).await, ok());
    assert_eq!(watcher.cmd(&["LLEN", "jobs"]).await, simple("QUEUED"));
    assert_eq!(watcher.cmd(&["EXEC"]).await, nil());
    let _ = stop.send(true);
}

/// A peer region's snapshot (a WAN full sync, merged in steps) that fills
/// a key a client is blocked on serves that client, as a delta would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_another_region_wakes_a_blocked_client() {
    let (server, addr, stop) = start_server().await;
    let mut first = Client::connect(addr).await;
    let mut second = Client::connect(addr).await;
    let mut admin = Client::connect(addr).await;
    first.send(&encode(&["BLPOP", "jobs", "0"])).await;
    wait_blocked(&mut admin, 1).await;
    second.send(&encode(&["BLPOP", "other", "jobs", "0"])).await;
    wait_blocked(&mut admin, 2).await;

    // Region 2's state, with two jobs and other keys, arrives whole.
    let mut remote = Keyspace::new(ReplicaId(2));
    let now = now_ms();
    let at = Moment { hlc: hlc_from_unix_ms(now, 0), wall_ms: now };
    remote.push(b"jobs", &[b"job-1", b"job-2"], End::Back, at).expect("push");
    for i in 0..5_000 {
        remote.set(format!("key-{i}").as_bytes(), b"v", meridian_crdt::keyspace::ExpiryChange::Clear, at);
    }
    let merging = server.clone();
    tokio::task::spawn_blocking(move || merging.merge_snapshot(&remote)).await.expect("merge");

    // Served in the order they blocked.
    assert_eq!(first.read().await, texts(&["jobs", "job-1"]));
    assert_eq!(second.read().await, texts(&["jobs", "job-2"]));
    assert_eq!(admin.cmd(&["LLEN", "jobs"]).await, int(0));
    assert_eq!(admin.cmd(&["GET", "key-4999"]).await, bulk("v"));
    let _ = stop.send(true);
}

// ---------------------------------------------------------------------------
// Pub/sub.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_publish_and_unsubscribe_in_resp2() {
    let node = start().await;
    let mut sub = Client::connect(node.addr).await;
    let mut publisher = Client::connect(node.addr).await;
    sub.send(&encode(&["SUBSCRIBE", "news", "sport"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("subscribe"), bulk("news"), int(1)]));
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("subscribe"), bulk("sport"), int(2)]));
    sub.send(&encode(&["PSUBSCRIBE", "n*"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("psubscribe"), bulk("n*"), int(3)]));

    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]).await, int(2), "one channel + one pattern");
    let mut got = [sub.read().await, sub.read().await];
    got.sort_by_key(|m| m.items().len());
    assert_eq!(got[0], Resp::Array(vec![bulk("message"), bulk("news"), bulk("hello")]));
    assert_eq!(got[1], Resp::Array(vec![bulk("pmessage"), bulk("n*"), bulk("news"), bulk("hello")]));
    assert_eq!(publisher.cmd(&["PUBLISH", "other", "x"]).await, int(0));

    // Only pub/sub commands, PING, QUIT and RESET are allowed now.
    sub.send(&encode(&["GET", "k"])).await;
    assert_eq!(
        sub.read().await,
        error(
            "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        )
    );
    sub.send(&encode(&["PING"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("pong"), bulk("")]));

    // PUBSUB introspection.
    let mut channels = publisher.cmd(&["PUBSUB", "CHANNELS"]).await.items().to_vec();
    channels.sort_by_key(|c| c.text());
    assert_eq!(channels, vec![bulk("news"), bulk("sport")]);
    assert_eq!(publisher.cmd(&["PUBSUB", "CHANNELS", "s*"]).await, texts(&["sport"]));
    assert_eq!(
        publisher.cmd(&["PUBSUB", "NUMSUB", "news", "none"]).await,
        Resp::Array(vec![bulk("news"), int(1), bulk("none"), int(0)])
    );
    assert_eq!(publisher.cmd(&["PUBSUB", "NUMPAT"]).await, int(1));
    assert!(publisher.cmd(&["INFO", "stats"]).await.text().contains("pubsub_channels:2\r\npubsub_patterns:1\r\n"));

    // Unsubscribing: named, then all; with none left, a null channel.
    sub.send(&encode(&["UNSUBSCRIBE", "news"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("unsubscribe"), bulk("news"), int(2)]));
    sub.send(&encode(&["PUNSUBSCRIBE"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("punsubscribe"), bulk("n*"), int(1)]));
    sub.send(&encode(&["UNSUBSCRIBE"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("unsubscribe"), bulk("sport"), int(0)]));
    sub.send(&encode(&["UNSUBSCRIBE"])).await;
    assert_eq!(sub.read().await, Resp::Array(vec![bulk("unsubscribe"), nil(), int(0)]));
    assert_eq!(sub.cmd(&["GET", "k"]).await, nil(), "back to a normal client");
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "x"]).await, int(0));

    assert_eq!(publisher.cmd(&["SUBSCRIBE"]).await, arity_error("subscribe"));
    assert_eq!(publisher.cmd(&["PUBLISH", "c"]).await, arity_error("publish"));
    assert_eq!(publisher.cmd(&["PUBSUB", "BOGUS"]).await, error("ERR unknown subcommand 'BOGUS'. Try PUBSUB HELP."));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_subscribers_get_push_messages_and_may_run_commands() {
    let node = start().await;
    let mut sub = Client::connect(node.addr).await;
    let mut publisher = Client::connect(node.addr).await;
    assert!(matches!(sub.cmd(&["HELLO", "3"]).await, Resp::Map(_)));
    sub.send(&encode(&["SUBSCRIBE", "c"])).await;
    assert_eq!(sub.read_raw(4, Duration::from_secs(5)).await, b">3\r\n", "a RESP3 push");
    assert_eq!(sub.read().await, bulk("subscribe"));
    assert_eq!(sub.read().await, bulk("c"));
    assert_eq!(sub.read().await, int(1));
    assert_eq!(sub.cmd(&["SET", "k", "v"]).await, ok(), "RESP3 subscribers may run any command");
    assert_eq!(publisher.cmd(&["PUBLISH", "c", "m"]).await, int(1));
    assert_eq!(sub.read_raw(4, Duration::from_secs(5)).await, b">3\r\n");
    assert_eq!(sub.read().await, bulk("message"));
    assert_eq!(sub.read().await, bulk("c"));
    assert_eq!(sub.read().await, bulk("m"));

    // RESET drops the subscriptions.
    assert_eq!(sub.cmd(&["RESET"]).await, simple("RESET"));
    assert_eq!(publisher.cmd(&["PUBLISH", "c", "m"]).await, int(0));
    // A disconnect drops them too.
    let mut leaving = Client::connect(node.addr).await;
    leaving.send(&encode(&["SUBSCRIBE", "c"])).await;
    assert_eq!(leaving.read().await.items().len(), 3);
    assert_eq!(publisher.cmd(&["PUBSUB", "NUMSUB", "c"]).await, Resp::Array(vec![bulk("c"), int(1)]));
    drop(leaving);
    for _ in 0..500 {
        if publisher.cmd(&["PUBSUB", "NUMSUB", "c"]).await == Resp::Array(vec![bulk("c"), int(0)]) {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(publisher.cmd(&["PUBSUB", "NUMSUB", "c"]).await, Resp::Array(vec![bulk("c"), int(0)]));
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_disconnected_at_the_output_limit() {
    let (server, addr, stop) = start_server().await;
    server.pubsub_output_limit.store(1024 * 1024, std::sync::atomic::Ordering::Relaxed);
    let mut slow = Client::connect(addr).await;
    slow.send(&encode(&["SUBSCRIBE", "firehose"])).await;
    assert_eq!(slow.read().await.items().len(), 3);
    let mut publisher = Client::connect(addr).await;
    let payload = "x".repeat(64 * 1024);
    // Far more than the limit plus what the kernel's socket buffers absorb.
    let mut delivered = 0;
    for _ in 0..2_000 {
        delivered += publisher.cmd(&["PUBLISH", "firehose", payload.as_str()]).await.int();
        if publisher.cmd(&["PUBSUB", "NUMSUB", "firehose"]).await == Resp::Array(vec![bulk("firehose"), int(0)]) {
            break;
        }
    }
    assert_eq!(
        publisher.cmd(&["PUBSUB", "NUMSUB", "firehose"]).await,
        Resp::Array(vec![bulk("firehose"), int(0)]),
        "the slow subscriber was dropped after {delivered} messages"
    );
    assert!(delivered < 2_000);
    assert_eq!(publisher.cmd(&["PING"]).await, simple("PONG"), "the server is fine");
    let _ = stop.send(true);
}
