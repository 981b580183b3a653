//! The syncer over real `replication::Shard`s (system clocks, durable
//! cursors): two regions' shards converge through `ShardDatabase`, and a
//! restarted link resumes from the cursor on disk.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_crdt::ReplicaId;
use meridian_crdt::clock::system_wall_ms;
use meridian_crdt::gc::Reporter;
use meridian_crdt::keyspace::ExpiryChange;
use meridian_replication::Shard;
use meridian_wan::outbox::OUTBOX_BYTES_DEFAULT;
use meridian_wan::{CursorStore, Inbound, Link, LinkConfig, Outbound, Outbox, ShardDatabase, SyncSource};
use tokio::net::TcpListener;

const DB: &str = "orders";

struct Node {
    region: u16,
    shard: Arc<Mutex<Shard>>,
    database: Arc<ShardDatabase>,
    addr: std::net::SocketAddr,
}

async fn node(region: u16, dir: &std::path::Path) -> Node {
    let shard = Arc::new(Mutex::new(Shard::new(ReplicaId(region), 1_000)));
    let cursors = CursorStore::open(&dir.join(format!("region-{region}"))).unwrap();
    let database =
        Arc::new(ShardDatabase::new(DB, shard.clone(), Outbox::for_new_database(OUTBOX_BYTES_DEFAULT), Some(cursors)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source = SyncSource::new(region);
    source.add_database(DB, database.clone());
    tokio::spawn(meridian_wan::serve(listener, source, std::future::pending()));
    Node { region, shard, database, addr }
}

impl Node {
    fn write(&self, key: &str, value: &str) {
        {
            let mut shard = self.shard.lock().unwrap();
            let at = shard.moment().unwrap();
            shard.keyspace_mut().set(key.as_bytes(), value.as_bytes(), ExpiryChange::Keep, at);
            shard.keyspace_mut().incr_by(b"writes", 1, at).unwrap();
        }
        // The node's journal reader: durability would take every entry
        // (merged ones too); the outbox got the two local ones.
        let (entries, _, _) = self.database.drain_journal();
        assert_eq!(entries.iter().filter(|e| e.local).count(), 2);
    }

    fn link_from(&self, other: &Node) -> Link {
        let mut config = LinkConfig::new(DB, self.region, other.region, format!("http://{}", other.addr));
        config.backoff_ms = (10, 100);
        Link::spawn(config, self.database.clone())
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn same(a: &Node, b: &Node) -> bool {
    *a.shard.lock().unwrap().keyspace() == *b.shard.lock().unwrap().keyspace()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_converge_and_a_link_resumes_from_its_durable_cursor() {
    let dir = std::env::temp_dir().join(format!("meridian-wan-shard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (node(1, &dir).await, node(2, &dir).await);
    let (a_from_b, b_from_a) = (a.link_from(&b), b.link_from(&a));
    for i in 0..50 {
        a.write(&format!("k{}", i % 5), "from a");
        b.write(&format!("k{}", i % 7), "from b");
    }
    eventually("a and b converge", || same(&a, &b)).await;
    let writes = a.shard.lock().unwrap().keyspace().get(b"writes", system_wall_ms()).unwrap().map(|v| v.to_vec());
    assert_eq!(writes, Some(b"100".to_vec()));
    // Merged deltas never went back out: each outbox holds its own 100 deltas.
    assert_eq!(a.database.outbox().next_offset(), 100);
    assert_eq!(b.database.outbox().next_offset(), 100);
    eventually("peers report applied vectors", || a.database.peer_reports().contains_key(&Reporter::region(2))).await;

    // B's link restarts (a process restart of the link): the cursor on disk
    // makes it a partial sync of only what it missed.
    b_from_a.stop().await;
    let cursor = b.database.load_cursor(meridian_wan::Source::region(1)).expect("a durable cursor");
    assert_eq!(cursor.offset, 100);
    for i in 0..10 {
        a.write(&format!("late{i}"), "x");
    }
    let b_from_a = b.link_from(&a);
    eventually("b catches up", || same(&a, &b)).await;
    eventually("counted", || b_from_a.stats().read(0).deltas >= 20).await;
    let stats = b_from_a.stats().read(system_wall_ms());
    assert_eq!((stats.partial_syncs, stats.full_syncs, stats.deltas), (1, 0, 20), "{stats:?}");
    a_from_b.stop().await;
    b_from_a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
