//! A served database as the master of an in-region replica, in one process:
//! what reaches the replica besides the deltas of the replication log.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use meridian_crdt::clock::hlc_from_unix_ms;
use meridian_crdt::keyspace::ExpiryChange;
use meridian_crdt::{Keyspace, Moment, ReplicaId};
use meridian_proxy::context::{ServerState, Settings};
use meridian_proxy::replication::ServerSource;
use meridian_replication::master_service::ReplicaSyncService;
use meridian_replication::replica_link::{ReplicaLink, ReplicaLinkConfig};
use meridian_replication::{ReplicaStream, ReplicationId, ReplicationLog, Shard};
use tokio::net::TcpListener;
use tokio::time::sleep;

/// Polls `check` every 10 ms for up to 20 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

/// A peer region's snapshot merged into the master (a WAN full sync) is not
/// a delta of the replication log: the master sends its replicas to a full
/// sync, so that a replica promoted later holds what the merge brought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_snapshot_merged_on_the_master_reaches_its_replica() {
    let mut shard = Shard::new(ReplicaId(1), 1_000);
    shard.keyspace_mut().set_solo(true);
    let server = Arc::new(
        ServerState::new(shard, Settings::default()).with_replication(ReplicationLog::new(ReplicationId(7), 1 << 20)),
    );
    // No cluster renews the write lease here: one long lease, not fenced.
    server.set_write_lease(Instant::now() + Duration::from_secs(3_600));
    server.set_fenced(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(meridian_proxy::server::run(listener, server.clone(), shutdown));
    let sync_port = free_port();
    let service = ReplicaSyncService::new(Arc::new(ServerSource(server.clone())));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_service())
            .serve(format!("127.0.0.1:{sync_port}").parse().expect("address")),
    );

    let replica = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(1), true)));
    let config =
        ReplicaLinkConfig { backoff_ms: (5, 50), ..ReplicaLinkConfig::new(format!("http://127.0.0.1:{sync_port}"), 2) };
    let link = ReplicaLink::spawn(config, replica.clone());
    let holds = |key: &str, value: &str| {
        let replica = replica.lock().expect("replica");
        replica.keyspace().get(key.as_bytes(), now_ms()).ok().flatten().is_some_and(|v| v.as_ref() == value.as_bytes())
    };

    let mut c = Client::connect(addr).await;
    assert_eq!(c.cmd(&["SET", "local", "1"]).await, ok());
    eventually("the local write on the replica", || holds("local", "1")).await;
    assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 1);

    // Region 2's state arrives whole and is merged in steps.
    let mut remote = Keyspace::new(ReplicaId(2));
    let now = now_ms();
    let at = Moment { hlc: hlc_from_unix_ms(now, 0), wall_ms: now };
    for i in 0..5_000 {
        remote.set(format!("merged-{i}").as_bytes(), b"from region 2", ExpiryChange::Clear, at);
    }
    let merging = server.clone();
    tokio::task::spawn_blocking(move || merging.merge_snapshot(&remote)).await.expect("merge");
    assert_eq!(c.cmd(&["GET", "merged-4999"]).await, bulk("from region 2"));

    eventually("the merged keys on the replica", || {
        holds("merged-0", "from region 2") && holds("merged-4999", "from region 2")
    })
    .await;
    assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 2, "a second full sync brought them");
    // The stream goes on after it.
    assert_eq!(c.cmd(&["SET", "local", "2"]).await, ok());
    eventually("a write after the merge on the replica", || holds("local", "2")).await;
    link.stop().await;
    let _ = stop.send(true);
}
