//! Durability: a node with `--data-dir` keeps every acknowledged write across
//! a clean restart, a SIGKILL (under `appendfsync always` and `everysec`),
//! a journal rewrite, and a torn journal tail; when the journal cannot be
//! written (a full disk), writes are refused with `MISCONF` and nothing is
//! acknowledged that is not in the journal.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meridian_crdt::ReplicaId;
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_replication::durability::Fsync;
use tokio::net::TcpListener;
use tokio::time::sleep;

/// A fresh, empty directory for one test.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-persistence-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the data dir");
    dir
}

fn config(dir: &Path, fsync: &str) -> NodeConfig {
    NodeConfig { port: 0, data_dir: Some(dir.to_path_buf()), appendfsync: fsync.to_string(), ..NodeConfig::default() }
}

/// Writes one of each kind of value.
async fn write_everything(c: &mut Client) {
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, ok());
    assert_eq!(c.cmd(&["SET", "gone", "v"]).await, ok());
    assert_eq!(c.cmd(&["DEL", "gone"]).await, int(1));
    assert_eq!(c.cmd(&["INCRBY", "n", "41"]).await, int(41));
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(42));
    assert_eq!(c.cmd(&["RPUSH", "l", "a", "b", "c"]).await, int(3));
    assert_eq!(c.cmd(&["LPOP", "l"]).await, bulk("a"));
    assert_eq!(c.cmd(&["SET", "ttl", "v", "EX", "1000"]).await, ok());
    assert_eq!(c.cmd(&["SET", "short", "v", "PX", "1"]).await, ok());
}

/// Checks what `write_everything` wrote.
async fn check_everything(c: &mut Client) {
    assert_eq!(c.cmd(&["GET", "s"]).await, bulk("v"));
    assert_eq!(c.cmd(&["EXISTS", "gone"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "n"]).await, bulk("42"));
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(43), "the counter goes on from its recovered value");
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, Resp::Array(vec![bulk("b"), bulk("c")]));
    let ttl = c.cmd(&["TTL", "ttl"]).await.int();
    assert!((1..=1000).contains(&ttl), "the TTL survives: {ttl}");
    assert_eq!(c.cmd(&["EXISTS", "short"]).await, int(0), "an expired key stays expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_everything_it_acknowledged() {
    let dir = data_dir("restart");
    for fsync in ["always", "everysec", "no"] {
        let _ = std::fs::remove_dir_all(&dir);
        let node = start_with(config(&dir, fsync)).await;
        let mut c = Client::connect(node.addr).await;
        assert_eq!(
            c.cmd(&["CONFIG", "GET", "append*"]).await,
            Resp::Array(vec![bulk("appendfsync"), bulk(fsync), bulk("appendonly"), bulk("yes")])
        );
        write_everything(&mut c).await;
        stop(node).await;

        let node = start_with(config(&dir, fsync)).await;
        let mut c = Client::connect(node.addr).await;
        check_everything(&mut c).await;
        // A second generation of writes after recovery recovers too.
        assert_eq!(c.cmd(&["SET", "second", "life"]).await, ok());
        stop(node).await;
        let node = start_with(config(&dir, fsync)).await;
        let mut c = Client::connect(node.addr).await;
        assert_eq!(c.cmd(&["GET", "second"]).await, bulk("life"), "{fsync}");
        assert_eq!(c.cmd(&["GET", "n"]).await, bulk("43"));
        stop(node).await;
    }
    // The policy changes at run time.
    let node = start_with(config(&dir, "everysec")).await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["CONFIG", "SET", "appendfsync", "always"]).await, ok());
    assert_eq!(c.cmd(&["CONFIG", "GET", "appendfsync"]).await, Resp::Array(vec![bulk("appendfsync"), bulk("always")]));
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "appendfsync", "sometimes"]).await,
        error(
            "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - argument(s) must be one of the following: always, everysec, no"
        )
    );
    stop(node).await;

    // Without a data directory nothing is kept, and CONFIG says so.
    let node = start().await;
    let mut c = Client::connect(node.addr).await;
    assert_eq!(c.cmd(&["CONFIG", "GET", "appendonly"]).await, Resp::Array(vec![bulk("appendonly"), bulk("no")]));
    assert!(
        matches!(c.cmd(&["CONFIG", "SET", "appendfsync", "no"]).await, Resp::Error(e) if e.contains("no data directory"))
    );
    assert!(matches!(
        c.cmd(&["CONFIG", "SET", "auto-aof-rewrite-min-size", "1mb"]).await,
        Resp::Error(e) if e.contains("no data directory")
    ));
    stop(node).await;
}

/// Starts the binary with a data directory; waits until it answers PING.
async fn spawn_node(dir: &Path, port: u16, fsync: &str) -> (ChildGuard, Client) {
    let dir = dir.to_str().expect("a UTF-8 temp path");
    spawn_meridian(
        &["node", "--port", &port.to_string(), "--log-level", "warn", "--appendfsync", fsync, "--data-dir", dir],
        port,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write() {
    for fsync in ["always", "everysec"] {
        let dir = data_dir(&format!("sigkill-{fsync}"));
        let port = free_port();
        let (mut guard, mut c) = spawn_node(&dir, port, fsync).await;
        // Pipelined batches: every reply read is an acknowledgement.
        let mut acknowledged = 0;
        for batch in 0..20 {
            let mut bytes = Vec::new();
            for i in 0..100 {
                let n = batch * 100 + i;
                bytes.extend(encode(&["SET", &format!("key:{n}"), &format!("value:{n}")]));
                bytes.extend(encode(&["RPUSH", "log", &n.to_string()]));
            }
            c.send(&bytes).await;
            for _ in 0..100 {
                assert_eq!(c.read().await, ok());
                assert!(c.read().await.int() > 0);
                acknowledged += 1;
            }
        }
        guard.0.kill().expect("SIGKILL");
        let _ = guard.0.wait();

        let (_guard, mut c) = spawn_node(&dir, port, fsync).await;
        assert_eq!(c.cmd(&["LLEN", "log"]).await, int(acknowledged), "{fsync}");
        for n in [0, 999, acknowledged - 1] {
            assert_eq!(c.cmd(&["GET", &format!("key:{n}")]).await, bulk(format!("value:{n}")), "{fsync}");
        }
        assert_eq!(c.cmd(&["DBSIZE"]).await, int(acknowledged + 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_is_cut_and_the_node_starts() {
    let dir = data_dir("torn");
    let node = start_with(config(&dir, "always")).await;
    let mut c = Client::connect(node.addr).await;
    write_everything(&mut c).await;
    stop(node).await;
    // A crash in the middle of an append leaves half a frame.
    let journal = std::fs::read_dir(dir.join("shard-1"))
        .expect("shard dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a journal file");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&journal, &bytes).expect("tear the journal");

    let node = start_with(config(&dir, "always")).await;
    let mut c = Client::connect(node.addr).await;
    check_everything(&mut c).await;
    stop(node).await;
    // The torn bytes were cut; the frames after them are new, whole ones.
    let good = bytes.len() - 10;
    let now = std::fs::read(&journal).expect("read journal");
    assert_eq!(&now[..good], &bytes[..good]);
    assert_ne!(&now[good..], &bytes[good..], "the torn tail is gone");
}

/// A node on a `ServerState` the test holds (so it can trigger a rewrite).
async fn start_server(dir: &Path) -> (Arc<ServerState>, SocketAddr, tokio::sync::watch::Sender<bool>) {
    let (shard, journal, _) = Shard::recover(ReplicaId(1), 1_000, dir, Fsync::Always).expect("recover");
    let server = Arc::new(ServerState::new(shard, Settings::default()).with_journal(journal));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(meridian_proxy::server::run(listener, server.clone(), shutdown));
    (server, addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_keeps_everything_and_replaces_the_journal() {
    let dir = data_dir("rewrite");
    let (server, addr, stop) = start_server(&dir).await;
    let mut c = Client::connect(addr).await;
    write_everything(&mut c).await;
    server.rewrite().expect("rewrite");
    assert_eq!(c.cmd(&["SET", "after", "rewrite"]).await, ok());
    let files: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.starts_with("snapshot-")), "{files:?}");
    assert_eq!(files.iter().filter(|f| f.starts_with("journal-")).count(), 1, "{files:?}");
    let _ = stop.send(true);
    drop(c);
    sleep(Duration::from_millis(200)).await;
    drop(server);

    let (_server, addr, stop) = start_server(&dir).await;
    let mut c = Client::connect(addr).await;
    check_everything(&mut c).await;
    assert_eq!(c.cmd(&["GET", "after"]).await, bulk("rewrite"));
    let _ = stop.send(true);
}

/// The journal's files, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// Past `auto-aof-rewrite-min-size`, once overwrites weigh as much as the
/// live data (`auto-aof-rewrite-percentage`, D110), the maintenance cycle
/// rewrites the journal on its own thread while commands go on (D98); the
/// result recovers everything, writes made during the rewrite included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grown_journal_is_rewritten_in_the_background() {
    let dir = data_dir("background");
    let (_server, addr, stop) = start_server(&dir).await;
    let mut c = Client::connect(addr).await;
    let sixty_four_mb = Resp::Array(vec![bulk("auto-aof-rewrite-min-size"), bulk("67108864")]);
    assert_eq!(c.cmd(&["CONFIG", "GET", "auto-aof-rewrite-min-size"]).await, sixty_four_mb);
    for (given, refused) in [("64xb", "memory value"), ("", "memory value"), ("-1", "memory value")] {
        assert!(
            matches!(c.cmd(&["CONFIG", "SET", "auto-aof-rewrite-min-size", given]).await, Resp::Error(e) if e.contains(refused)),
            "{given:?}"
        );
    }
    assert_eq!(c.cmd(&["CONFIG", "SET", "auto-aof-rewrite-min-size", "8kb"]).await, ok());
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "auto-aof-rewrite-min-size"]).await,
        Resp::Array(vec![bulk("auto-aof-rewrite-min-size"), bulk("8192")])
    );
    let percentage = |p: &str| Resp::Array(vec![bulk("auto-aof-rewrite-percentage"), bulk(p)]);
    assert_eq!(c.cmd(&["CONFIG", "GET", "auto-aof-rewrite-percentage"]).await, percentage("100"));
    for (given, refused) in [("x", "parsed into an integer"), ("-1", "between 0 and")] {
        assert!(
            matches!(c.cmd(&["CONFIG", "SET", "auto-aof-rewrite-percentage", given]).await, Resp::Error(e) if e.contains(refused)),
            "{given:?}"
        );
    }
    assert_eq!(c.cmd(&["CONFIG", "SET", "auto-aof-rewrite-percentage", "50"]).await, ok());
    assert_eq!(c.cmd(&["CONFIG", "GET", "auto-aof-rewrite-percentage"]).await, percentage("50"));
    let first_journal = files_in(&dir).into_iter().filter(|f| f.starts_with("journal-")).max().expect("a journal");
    // Overwrites of 100 keys past 8 KiB of journal, and on while the
    // rewrite runs.
    let mut written = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let key = format!("key-{}", written % 100);
        assert_eq!(c.cmd(&["SET", &key, "some value of a few dozen bytes, journaled"]).await, ok());
        written += 1;
        let files = files_in(&dir);
        let rewritten =
            files.iter().any(|f| f.starts_with("snapshot-") && f.ends_with(".bin")) && !files.contains(&first_journal);
        if rewritten && written >= 400 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no background rewrite after {written} writes: {files:?}");
    }
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(100));
    let _ = stop.send(true);
    drop(c);
    sleep(Duration::from_millis(300)).await;

    let (_server, addr, stop) = start_server(&dir).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(100));
    assert_eq!(
        c.cmd(&["GET", &format!("key-{}", (written - 1) % 100)]).await,
        bulk("some value of a few dozen bytes, journaled")
    );
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_acknowledges_nothing_unjournaled() {
    let dir = data_dir("full");
    let (server, addr, stop) = start_server(&dir).await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&["SET", "before", "1"]).await, ok());
    // The next journal generation is a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.join("journal-0000000002.log")).expect("symlink /dev/full");
    server.rewrite().expect("rotate onto the full disk");

    // The write is applied in memory but cannot be journaled: its reply is
    // never sent, the connection closes.
    c.send(&encode(&["SET", "lost", "1"])).await;
    c.expect_closed().await;
    // Every later write is refused; reads work.
    let mut c = Client::connect(addr).await;
    let refused = c.cmd(&["SET", "k", "v"]).await;
    assert!(
        matches!(&refused, Resp::Error(e) if e.starts_with("MISCONF Errors writing to the AOF file:") && e.contains("No space left")),
        "{refused:?}"
    );
    assert_eq!(c.cmd(&["GET", "before"]).await, bulk("1"));
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    let _ = stop.send(true);
}

#[test]
fn the_binary_refuses_a_bad_fsync_policy_and_an_unusable_data_dir() {
    let (status, stderr) = run_expecting_exit(&["node", "--port", "0", "--appendfsync", "sometimes"]);
    assert!(!status.success());
    assert!(stderr.contains("appendfsync must be always, everysec or no"), "{stderr}");
    // A data directory that is a file.
    let file = std::env::temp_dir().join(format!("meridian-not-a-dir-{}", std::process::id()));
    std::fs::write(&file, b"x").expect("write a file");
    let (status, stderr) = run_expecting_exit(&["node", "--port", "0", "--data-dir", file.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(stderr.contains("cannot create the data directory"), "{stderr}");
    let _ = std::fs::remove_file(file);
    // A damaged snapshot: the node refuses to start rather than serve
    // partial data.
    let dir = data_dir("damaged");
    std::fs::create_dir_all(dir.join("shard-1")).expect("shard dir");
    std::fs::write(dir.join("shard-1").join("snapshot-0000000001.bin"), b"MRDNSNAP and then garbage").expect("write");
    let (status, stderr) = run_expecting_exit(&["node", "--port", "0", "--data-dir", dir.to_str().expect("utf-8")]);
    assert!(!status.success());
    assert!(stderr.contains("cannot recover the data in") && stderr.contains("snapshot is corrupt"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
