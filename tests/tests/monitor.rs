//! Monitoring of the WAN sync: two regions (one-node clusters on their own
//! loopback addresses) share an active-active database; the `SyncMonitor`
//! gRPC service on each node's sync port and `GET /metrics` on its admin port
//! show the link to the peer, and a stopped peer shows as a failing link.
//! Every wait is bounded; nothing asserts how fast anything happened.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{CONVERGE_TIMEOUT, Client, Node, converges, free_port, ok, start_region, stop};
use meridian_cluster::ctl::{Method, StatusCode, request};
use meridian_proto::v1::sync_monitor_client::SyncMonitorClient;
use meridian_proto::v1::{PeerStatus, StatusRequest, WatchRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tonic::transport::Channel;

async fn monitor(node: &Node) -> SyncMonitorClient<Channel> {
    let url = format!("http://{}", node.sync_addr);
    let channel = timeout(CONVERGE_TIMEOUT, Channel::from_shared(url).expect("a URL").connect())
        .await
        .expect("dial timed out")
        .expect("the sync port answers");
    SyncMonitorClient::new(channel)
}

/// The peers `client` reports for database `bdb`.
async fn peers(client: &mut SyncMonitorClient<Channel>, bdb: u64) -> Vec<PeerStatus> {
    let reply = timeout(CONVERGE_TIMEOUT, client.status(StatusRequest { bdb: Some(bdb) }))
        .await
        .expect("Status timed out")
        .expect("Status answers");
    reply.into_inner().peers
}

/// `GET path` on `addr` over plain HTTP/1.1: the status line and body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin port answers");
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer read");
        answer
    };
    timeout(CONVERGE_TIMEOUT, exchange).await.expect("GET timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_monitor_and_metrics_show_each_peer() {
    let east = start_region("mon-east", 6).await;
    let west = start_region("mon-west", 7).await;
    let port = free_port();
    let body = json!({
        "name": "watched", "port": port,
        "instances": [format!("http://{}", east.admin_addr), format!("http://{}", west.admin_addr)],
    });
    let url = format!("http://{}/v1/crdbs", east.admin_addr);
    let (status, created): (StatusCode, Value) =
        timeout(Duration::from_secs(90), request(Method::POST, &url, Some(body))).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();
    let bdb = created["instances"][0]["bdb_uid"].as_u64().expect("east's bdb uid");

    let addr = SocketAddr::new(east.addr.ip(), port);
    let mut client = converges("the crdb served in east", || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|stream| Client { stream, input: Vec::new() })
    })
    .await;
    let west_monitor = monitor(&west).await;
    let west_bdb = converges("west serves the crdb", || async {
        let (_, list) = request(Method::GET, &format!("http://{}/v1/crdbs", west.admin_addr), None).await.ok()?;
        list[0]["bdb_uid"].as_u64()
    })
    .await;
    // The link begins with a full sync; the writes after it come as deltas.
    converges("west's link from east streaming", || {
        let mut client = west_monitor.clone();
        async move {
            let peers = peers(&mut client, west_bdb).await;
            peers.into_iter().find(|p| p.peer_region == 1 && p.state == "streaming")
        }
    })
    .await;
    for n in 0..20 {
        assert_eq!(client.cmd(&["SET", &format!("key:{n}"), "a value long enough to count"]).await, ok());
    }

    // West's link from east streams, has caught up and counted bytes; east
    // counts what it sent to west.
    let seen = converges("west's link from east streaming and caught up", || {
        let mut client = west_monitor.clone();
        async move {
            let peers = peers(&mut client, west_bdb).await;
            let peer = peers.into_iter().find(|p| p.peer_region == 1)?;
            (peer.state == "streaming" && peer.lag_ops == 0 && peer.deltas_in >= 20).then_some(peer)
        }
    })
    .await;
    assert_eq!(seen.crdb_guid, guid);
    assert_eq!((seen.bdb, seen.local_region), (west_bdb, 2));
    assert!(seen.ingress_bytes_wire > 0 && seen.ingress_bytes_raw > 0, "{seen:?}");
    assert_eq!(seen.lag_ms, 0, "{seen:?}");
    assert!(seen.full_syncs + seen.partial_syncs >= 1, "{seen:?}");
    let mut east_monitor = monitor(&east).await;
    let sent = converges("east counts the bytes it sent west", || {
        let mut client = east_monitor.clone();
        async move {
            let peer = peers(&mut client, bdb).await.into_iter().find(|p| p.peer_region == 2)?;
            (peer.egress_bytes_wire > 0 && peer.egress_bytes_raw > 0 && peer.deltas_out >= 20).then_some(peer)
        }
    })
    .await;
    assert_eq!(sent.crdb_guid, guid);
    let other = east_monitor.status(StatusRequest { bdb: Some(bdb + 1000) }).await.expect("Status answers");
    assert!(other.into_inner().peers.is_empty(), "the filter keeps other databases out");

    // Watch: a reply at once and then one per interval.
    let mut stream =
        east_monitor.watch(WatchRequest { interval_ms: 100, bdb: None }).await.expect("Watch accepted").into_inner();
    for _ in 0..2 {
        let reply = timeout(CONVERGE_TIMEOUT, stream.message()).await.expect("a reply in time");
        let reply = reply.expect("no error").expect("the stream goes on");
        assert!(reply.peers.iter().any(|p| p.peer_region == 2 && p.crdb_guid == guid), "{reply:?}");
        assert!(reply.at_ms > 0);
    }
    drop(stream);
    for interval_ms in [0, 10 * 3_600_000] {
        let refused = east_monitor.watch(WatchRequest { interval_ms, bdb: None }).await.expect_err("out of range");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("interval_ms"), "{refused:?}");
    }

    // /metrics on the admin port, labelled by the peer.
    let metrics = http_get(east.admin_addr, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let labels = format!(
        r#"{{bdb="{bdb}",crdb_guid="{guid}",local_region="1",peer_region="2",local_shard="0",peer_shard="0"}}"#
    );
    for name in [
        "database_syncer_lag_ms",
        "database_syncer_state",
        "database_syncer_ingress_bytes_total",
        "database_syncer_egress_bytes_total",
        "database_syncer_full_syncs_total",
    ] {
        assert!(metrics.contains(&format!("{name}{labels} ")), "{name} with the peer's labels:\n{metrics}");
    }
    assert!(metrics.contains(&format!("database_syncer_state{labels} 3")), "streaming:\n{metrics}");
    // The database endpoint's own figures: the client above is connected,
    // its commands counted, its key there.
    let bdb_labels = format!(r#"{{bdb="{bdb}"}}"#);
    for name in ["bdb_conns", "bdb_no_of_keys", "bdb_total_req_total"] {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name}{bdb_labels} ")));
        let value: u64 = line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0);
        assert!(value >= 1, "{name} of the database:\n{metrics}");
    }

    // The peer region goes away: east's link from it fails and says why.
    stop(west).await;
    let failed = converges("east's link from the stopped west failing", || {
        let mut client = east_monitor.clone();
        async move {
            let peer = peers(&mut client, bdb).await.into_iter().find(|p| p.peer_region == 2)?;
            (peer.state != "streaming" && !peer.last_error.is_empty() && peer.errors > 0).then_some(peer)
        }
    })
    .await;
    assert!(failed.endpoint.contains(&west_sync_port(&created)), "{failed:?}");
    let metrics = http_get(east.admin_addr, "/metrics").await;
    assert!(!metrics.contains(&format!("database_syncer_state{labels} 3")), "no longer streaming:\n{metrics}");
    assert!(metrics.contains(&format!("database_syncer_errors_total{labels} ")), "{metrics}");
    stop(east).await;
}

/// The port of west's sync endpoint, as the crdb's creation listed it.
fn west_sync_port(created: &Value) -> String {
    let endpoint = created["instances"][1]["sync_endpoint"].as_str().expect("west's sync endpoint");
    endpoint.rsplit(':').next().expect("a port").to_string()
}
