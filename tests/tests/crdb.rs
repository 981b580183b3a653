//! Active-active databases across regions ("crdbs"): separate one-node
//! clusters on loopback, each with its own admin, cluster and sync ports,
//! and a crdb created through the admin API of one of them. Writes in each
//! region reach the others over the WAN syncer, concurrent increments add
//! up, `ctl crdb status`'s figures are there, and deleting the crdb stops
//! every instance. Every wait is bounded; nothing asserts how fast anything
//! happened.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{
    CONVERGE_TIMEOUT, Client, Node, NodeConfig, Resp, bulk, converges, ctl, free_port, ok, start_region, start_with,
    stop,
};
use meridian_cluster::ctl::{Method, StatusCode, request};
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};

fn admin_url(node: &Node) -> String {
    format!("http://{}", node.admin_addr)
}

async fn api(node: &Node, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = format!("{}{path}", admin_url(node));
    timeout(Duration::from_secs(90), request(method.clone(), &url, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

async fn connect_when_served(ip: IpAddr, port: u16) -> Client {
    let addr = SocketAddr::new(ip, port);
    converges(&format!("port {port} served"), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|stream| Client { stream, input: Vec::new() })
    })
    .await
}

/// Polls `command` on `client` until it answers `expected` (bounded).
async fn until_reply(client: &mut Client, command: &[&str], expected: Resp) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let got = client.cmd(command).await;
        if got == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{command:?}: still {got:?}, expected {expected:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_regions_share_an_active_active_database() {
    let regions =
        [start_region("us-east", 1).await, start_region("eu-west", 2).await, start_region("ap-south", 3).await];
    let port = free_port();
    let instances: Vec<String> = regions.iter().map(admin_url).collect();
    let body = json!({ "name": "shared", "port": port, "instances": instances });
    let (status, created) = api(&regions[0], Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();
    let listed = created["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for (index, instance) in listed.iter().enumerate() {
        assert_eq!(instance["region_id"].as_u64(), Some(index as u64 + 1), "{created}");
        let endpoint = regions[index].sync_addr.to_string();
        assert_eq!(instance["sync_endpoint"].as_str(), Some(endpoint.as_str()), "{created}");
    }
    // Every region records its own instance (its region id, every peer).
    for (index, node) in regions.iter().enumerate() {
        let (status, list) = api(node, Method::GET, "/v1/crdbs", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list[0]["guid"].as_str(), Some(guid.as_str()), "{list}");
        assert_eq!(list[0]["region_id"].as_u64(), Some(index as u64 + 1), "{list}");
        assert_eq!(list[0]["instances"].as_array().map(Vec::len), Some(3), "{list}");
    }

    let mut clients = Vec::new();
    for node in &regions {
        clients.push(connect_when_served(node.addr.ip(), port).await);
    }
    // A write in one region reaches the others.
    assert_eq!(clients[0].cmd(&["SET", "greeting", "hello"]).await, ok());
    for client in &mut clients[1..] {
        until_reply(client, &["GET", "greeting"], bulk("hello")).await;
    }
    // Concurrent increments in every region add up everywhere.
    for (client, by) in clients.iter_mut().zip(["5", "7", "30"]) {
        assert!(matches!(client.cmd(&["INCRBY", "visits", by]).await, Resp::Int(_)));
    }
    for client in &mut clients {
        until_reply(client, &["GET", "visits"], bulk("42")).await;
    }
    // The default databases are not part of it.
    let mut default = Client::connect(regions[1].addr).await;
    assert_eq!(default.cmd(&["GET", "greeting"]).await, common::nil());

    // Status: every instance, served, with a link from each peer.
    let (status, report) = api(&regions[2], Method::GET, &format!("/v1/crdbs/{guid}"), None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let instances = report["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 3, "{report}");
    for instance in instances {
        let local = &instance["instance"]["endpoint_status"];
        assert_eq!(local["status"], "active", "{report}");
        let links = local["links"].as_array().expect("links");
        assert_eq!(links.len(), 2, "{report}");
        assert!(links.iter().all(|l| l["state"].is_string() && l["lag_ops"].is_u64()), "{report}");
        let deltas: u64 = links.iter().filter_map(|l| l["deltas"].as_u64()).sum();
        assert!(deltas > 0, "deltas came in: {report}");
    }

    // Deleted through another region: every instance stops serving.
    let (status, deleted) = api(&regions[1], Method::DELETE, &format!("/v1/crdbs/{guid}"), None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    for client in &mut clients {
        client.expect_closed().await;
    }
    for node in &regions {
        let addr = SocketAddr::new(node.addr.ip(), port);
        converges("the crdb's port closed", || async { tokio::net::TcpStream::connect(addr).await.err() }).await;
        let (_, list) = api(node, Method::GET, "/v1/crdbs", None).await;
        assert_eq!(list, json!([]), "no instance left");
    }
    for node in regions {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crdb_with_an_unreachable_instance_is_not_created_anywhere() {
    let a = start_region("here", 1).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let body = json!({ "name": "half", "port": free_port(), "instances": [admin_url(&a), dead] });
    let (status, answer) = api(&a, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    let (_, list) = api(&a, Method::GET, "/v1/crdbs", None).await;
    assert_eq!(list, json!([]), "the instance created first was rolled back");
    let (status, _) = api(&a, Method::POST, "/v1/crdbs", Some(json!({"name": "x", "port": 1, "instances": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    stop(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_creates_inspects_and_deletes_a_crdb() {
    let regions = [start_region("north", 4).await, start_region("south", 5).await];
    let port = free_port();
    let port_text = port.to_string();
    let (a, b) = (admin_url(&regions[0]), admin_url(&regions[1]));
    let (ok_create, out) =
        ctl(&a, &["crdb", "create", "--name", "pair", "--port", &port_text, "--instance", &a, "--instance", &b]).await;
    assert!(ok_create, "{out}");
    let guid = out
        .lines()
        .find_map(|l| l.strip_prefix("guid: "))
        .unwrap_or_else(|| panic!("a guid line in {out}"))
        .trim()
        .to_string();
    let (ok_list, listed) = ctl(&b, &["crdb", "list"]).await;
    assert!(ok_list && listed.contains(&guid), "{listed}");

    let mut north = connect_when_served(regions[0].addr.ip(), port).await;
    let mut south = connect_when_served(regions[1].addr.ip(), port).await;
    assert_eq!(north.cmd(&["SADD", "s", "a"]).await, common::int(1));
    until_reply(&mut south, &["SISMEMBER", "s", "a"], common::int(1)).await;

    let (ok_status, status) = ctl(&a, &["crdb", "status", &guid]).await;
    assert!(ok_status, "{status}");
    for expected in ["region 1", "region 2", "PEER", "LAG_OPS", "IN_WIRE", "OUT_WIRE", "PARTIAL", "status active"] {
        assert!(status.contains(expected), "{expected:?} in:\n{status}");
    }

    let (ok_delete, deleted) = ctl(&b, &["crdb", "delete", &guid]).await;
    assert!(ok_delete, "{deleted}");
    north.expect_closed().await;
    south.expect_closed().await;
    let (ok_missing, _) = ctl(&a, &["crdb", "status", &guid]).await;
    assert!(!ok_missing, "the crdb is gone");
    for node in regions {
        stop(node).await;
    }
}

/// A temporary data directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("meridian-crdb-{name}-{}-{}", std::process::id(), common::now_ms()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_region_keeps_its_instance_and_catches_up() {
    let dirs = [TempDir::new("r1"), TempDir::new("r2")];
    // Fixed ports: a peer's instance list holds this region's admin URL and
    // sync endpoint, which must survive the restart.
    let configs: Vec<NodeConfig> = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| NodeConfig {
            bind: IpAddr::from([127, 0, 0, 6 + index as u8]),
            port: 0,
            region: format!("r{index}"),
            data_dir: Some(dir.0.clone()),
            admin_port: Some(free_port()),
            cluster_port: Some(free_port()),
            sync_port: Some(free_port()),
            ..NodeConfig::default()
        })
        .collect();
    let first = start_with(configs[0].clone()).await;
    let second = start_with(configs[1].clone()).await;
    let port = free_port();
    let body = json!({ "name": "durable", "port": port, "instances": [admin_url(&first), admin_url(&second)] });
    let (status, created) = api(&first, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let mut one = connect_when_served(first.addr.ip(), port).await;
    let mut two = connect_when_served(second.addr.ip(), port).await;
    assert_eq!(one.cmd(&["INCRBY", "n", "1"]).await, common::int(1));
    assert!(matches!(two.cmd(&["INCRBY", "n", "10"]).await, Resp::Int(_)));
    until_reply(&mut one, &["GET", "n"], bulk("11")).await;
    until_reply(&mut two, &["GET", "n"], bulk("11")).await;

    // Once its link from the first region has finished the initial full
    // sync (the cursor into the first region's log is on disk), the second
    // region goes away; the first keeps taking writes.
    let guid = created["guid"].as_str().expect("a guid");
    let url = format!("{}/v1/crdbs/{guid}/instance", admin_url(&second));
    converges("the second region's link streams", || async {
        let (_, instance): (StatusCode, Value) = request(Method::GET, &url, None).await.ok()?;
        (instance["endpoint_status"]["links"][0]["state"] == "streaming").then_some(())
    })
    .await;
    stop(second).await;
    assert_eq!(one.cmd(&["INCRBY", "n", "100"]).await, common::int(111));
    let second = start_with(configs[1].clone()).await;
    let mut two = connect_when_served(second.addr.ip(), port).await;
    // Its own data came back from its directory, the first region's writes
    // meanwhile arrive, and its new writes reach the first region.
    until_reply(&mut two, &["GET", "n"], bulk("111")).await;
    // It resumed the first region's stream from its persisted cursor (a
    // partial sync), not by snapshot: the first region kept its log.
    let (status, instance) = api(&second, Method::GET, &format!("/v1/crdbs/{guid}/instance"), None).await;
    assert_eq!(status, StatusCode::OK, "{instance}");
    let link = &instance["endpoint_status"]["links"][0];
    assert_eq!(link["full_syncs"], 0, "{instance}");
    assert!(link["partial_syncs"].as_u64() >= Some(1), "{instance}");
    assert!(matches!(two.cmd(&["INCRBY", "n", "1000"]).await, Resp::Int(_)));
    until_reply(&mut one, &["GET", "n"], bulk("1111")).await;
    for node in [first, second] {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_region_serves_its_replicated_instance_from_the_master_node() {
    let dirs = [TempDir::new("m1"), TempDir::new("m2"), TempDir::new("m3")];
    let member = |index: usize, join: Option<SocketAddr>| NodeConfig {
        bind: IpAddr::from([127, 0, 0, 8]),
        port: 0,
        node_id: index as u64 + 1,
        region: "big".into(),
        data_dir: Some(dirs[index].0.clone()),
        join: join.map(|addr| addr.to_string()),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        ..NodeConfig::default()
    };
    let n1 = start_with(member(0, None)).await;
    let n2 = start_with(member(1, Some(n1.cluster_addr))).await;
    let n3 = start_with(member(2, Some(n1.cluster_addr))).await;
    let big = [n1, n2, n3];
    // Every member has recorded its sync address (a joiner does it itself).
    converges("three nodes with sync addresses", || async {
        let (_, nodes) = api(&big[0], Method::GET, "/v1/nodes", None).await;
        let with_sync = nodes.as_array()?.iter().filter(|n| n["sync_addr"].is_string()).count();
        (with_sync == 3).then_some(())
    })
    .await;
    // The small region: two nodes (a replica needs a second node).
    let small = start_region("small", 9).await;
    let small_dir = TempDir::new("s2");
    let small_second = start_with(NodeConfig {
        bind: IpAddr::from([127, 0, 0, 9]),
        port: 0,
        node_id: 2,
        region: "small".into(),
        data_dir: Some(small_dir.0.clone()),
        join: Some(small.cluster_addr.to_string()),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        ..NodeConfig::default()
    })
    .await;

    let port = free_port();
    // Replicated: the big region's instance has a replica on another of its
    // nodes, and its writes leave for the small region once that replica
    // holds them.
    let instances = [admin_url(&big[0]), admin_url(&small)];
    let body = json!({ "name": "spread", "port": port, "instances": instances, "replication": true });
    let (status, created) = api(&small, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().unwrap().to_string();
    let uid = created["instances"][0]["bdb_uid"].as_u64().expect("the big region's bdb");
    let master = converges("the master's node serving the instance", || async {
        big.iter().position(|n| n.database_addr(uid).is_some())
    })
    .await;
    let endpoint = big[master].sync_addr.to_string();
    assert_eq!(created["instances"][0]["sync_endpoint"].as_str(), Some(endpoint.as_str()), "{created}");

    let mut in_big = connect_when_served(big[master].addr.ip(), port).await;
    let mut in_small = connect_when_served(small.addr.ip(), port).await;
    assert_eq!(in_big.cmd(&["HSET", "h", "a", "1"]).await, common::int(1));
    assert_eq!(in_small.cmd(&["HSET", "h", "b", "2"]).await, common::int(1));
    until_reply(&mut in_big, &["HLEN", "h"], common::int(2)).await;
    until_reply(&mut in_small, &["HLEN", "h"], common::int(2)).await;
    let info = in_big.cmd(&["INFO", "replication"]).await.text();
    assert!(info.contains("role:master") && info.contains("connected_slaves:1"), "{info}");
    // A region of one node cannot hold a replica: refused, nothing left.
    let lone = start_region("lone", 10).await;
    let instances = [admin_url(&big[0]), admin_url(&lone)];
    let body = json!({ "name": "nowhere", "port": free_port(), "instances": instances, "replication": true });
    let (status, refused) = api(&small, Method::POST, "/v1/crdbs", Some(body)).await;
    assert!(!status.is_success() && refused.to_string().contains("cannot place"), "{refused}");
    let (_, list) = api(&big[0], Method::GET, "/v1/crdbs", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "the refused crdb left nothing behind: {list}");
    stop(lone).await;

    // Any node of the big region answers for its instance (asking the
    // master's node for the live figures).
    let other = (master + 1) % 3;
    let (status, report) = api(&big[other], Method::GET, &format!("/v1/crdbs/{guid}"), None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    for instance in report["instances"].as_array().unwrap() {
        assert_eq!(instance["instance"]["endpoint_status"]["status"], "active", "{report}");
    }

    // A failover inside the big region moves its master to another node:
    // that node announces its sync endpoint to the small region, whose link
    // follows, and the regions keep converging both ways.
    let (_, shards) = api(&big[0], Method::GET, "/v1/shards", None).await;
    let master_shard = shards
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bdb_uid"] == uid && s["role"] == "master")
        .expect("the master shard")["uid"]
        .clone();
    let failover = format!("/v1/bdbs/{uid}/actions/failover");
    let (status, answer) = api(&big[0], Method::POST, &failover, Some(json!({ "shard_uid": master_shard }))).await;
    assert!(status.is_success(), "{answer}");
    let promoted = converges("another node serving the instance", || async {
        big.iter().position(|n| n.database_addr(uid).is_some()).filter(|&p| p != master)
    })
    .await;
    let moved = big[promoted].sync_addr.to_string();
    converges("the small region records the new endpoint", || async {
        let (_, list) = request(Method::GET, &format!("{}/v1/crdbs", admin_url(&small)), None).await.ok()?;
        (list[0]["instances"][0]["sync_endpoint"].as_str() == Some(moved.as_str())).then_some(())
    })
    .await;
    let mut in_big = connect_when_served(big[promoted].addr.ip(), port).await;
    until_reply(&mut in_big, &["HLEN", "h"], common::int(2)).await;
    until_reply(&mut in_big, &["HSET", "h", "c", "3"], common::int(1)).await;
    assert_eq!(in_small.cmd(&["HSET", "h", "d", "4"]).await, common::int(1));
    until_reply(&mut in_small, &["HLEN", "h"], common::int(4)).await;
    until_reply(&mut in_big, &["HLEN", "h"], common::int(4)).await;

    let (status, _) = api(&big[other], Method::DELETE, &format!("/v1/crdbs/{guid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    in_big.expect_closed().await;
    in_small.expect_closed().await;
    stop(small_second).await;
    stop(small).await;
    for node in big {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_sends_uncompressed_syncs_with_one_that_compresses() {
    // `--sync-compression none` on one region: what it sends arrives as is;
    // the other sends gzip; both converge.
    let plain = start_with(NodeConfig {
        bind: IpAddr::from([127, 0, 0, 12]),
        port: 0,
        region: "plain".into(),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        sync_compression: "none".into(),
        ..NodeConfig::default()
    })
    .await;
    let packed = start_with(NodeConfig {
        bind: IpAddr::from([127, 0, 0, 13]),
        port: 0,
        region: "packed".into(),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        sync_compression: "gzip".into(),
        ..NodeConfig::default()
    })
    .await;
    let port = free_port();
    let body = json!({ "name": "codecs", "port": port, "instances": [admin_url(&plain), admin_url(&packed)] });
    let (status, created) = api(&plain, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();

    let big = "compressible ".repeat(8 * 1024);
    let mut on_plain = connect_when_served(plain.addr.ip(), port).await;
    let mut on_packed = connect_when_served(packed.addr.ip(), port).await;
    assert_eq!(on_plain.cmd(&["SET", "from-plain", &big]).await, ok());
    assert_eq!(on_packed.cmd(&["SET", "from-packed", &big]).await, ok());
    until_reply(&mut on_packed, &["GET", "from-plain"], bulk(&big)).await;
    until_reply(&mut on_plain, &["GET", "from-packed"], bulk(&big)).await;

    let link_from_peer = |node: &Node| {
        let (node_url, guid) = (admin_url(node), guid.clone());
        async move {
            let url = format!("{node_url}/v1/crdbs/{guid}/instance");
            let (_, instance): (StatusCode, Value) = request(Method::GET, &url, None).await.expect("instance status");
            instance["endpoint_status"]["links"][0].clone()
        }
    };
    let from_plain = link_from_peer(&packed).await;
    let (wire, raw) = (from_plain["bytes_in_wire"].as_u64(), from_plain["bytes_in_raw"].as_u64());
    assert!(raw > Some(big.len() as u64) && wire == raw, "sent uncompressed: {from_plain}");
    let from_packed = link_from_peer(&plain).await;
    let (wire, raw) = (from_packed["bytes_in_wire"].as_u64(), from_packed["bytes_in_raw"].as_u64());
    assert!(raw > Some(big.len() as u64) && wire < raw, "sent compressed: {from_packed}");
    for node in [plain, packed] {
        stop(node).await;
    }
}

#[test]
fn the_binary_refuses_an_unknown_sync_compression() {
    let (status, stderr) = common::run_expecting_exit(&["node", "--port", "0", "--sync-compression", "lz4"]);
    assert!(!status.success());
    assert!(stderr.contains("sync-compression must be zstd, gzip or none"), "{stderr}");
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls").join(name)
}

/// A one-node region on 127.0.0.`host`; with `identity` (certificate, key,
/// authority), its WAN links use mutual TLS.
async fn start_tls_region(name: &str, host: u8, identity: Option<(&str, &str, &str)>) -> Node {
    let (cert, key, ca) = match identity {
        Some((cert, key, ca)) => (Some(tls_fixture(cert)), Some(tls_fixture(key)), Some(tls_fixture(ca))),
        None => (None, None, None),
    };
    start_with(NodeConfig {
        bind: IpAddr::from([127, 0, 0, host]),
        port: 0,
        region: name.into(),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        sync_tls_cert: cert,
        sync_tls_key: key,
        sync_tls_ca: ca,
        ..NodeConfig::default()
    })
    .await
}

/// The links of `node`'s instance of `guid`, once each reports an error
/// containing one of `reasons` (bounded).
async fn until_links_fail(node: &Node, guid: &str, reasons: &[&str]) -> Vec<Value> {
    let url = format!("{}/v1/crdbs/{guid}/instance", admin_url(node));
    converges("the links report the refusal", || async {
        let (_, instance): (StatusCode, Value) = request(Method::GET, &url, None).await.ok()?;
        let links = instance["endpoint_status"]["links"].as_array()?.clone();
        let failed = |link: &Value| {
            let error = link["last_error"].as_str().unwrap_or_default();
            reasons.iter().any(|reason| error.contains(reason))
        };
        (!links.is_empty() && links.iter().all(failed)).then_some(links)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_sync_over_mutual_tls_and_refuse_peers_without_the_authority() {
    let good = Some(("node.pem", "node.key", "ca.pem"));
    let east = start_tls_region("tls-east", 91, good).await;
    let west = start_tls_region("tls-west", 92, good).await;
    // Two regions holding certificates of one authority sync over TLS.
    let port = free_port();
    let body = json!({ "name": "secure", "port": port, "instances": [admin_url(&east), admin_url(&west)] });
    let (status, created) = api(&east, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let mut on_east = connect_when_served(east.addr.ip(), port).await;
    let mut on_west = connect_when_served(west.addr.ip(), port).await;
    assert_eq!(on_east.cmd(&["SET", "sealed", "east"]).await, ok());
    assert_eq!(on_west.cmd(&["INCRBY", "n", "2"]).await, Resp::Int(2));
    until_reply(&mut on_west, &["GET", "sealed"], bulk("east")).await;
    until_reply(&mut on_east, &["GET", "n"], bulk("2")).await;
    // The sync port speaks TLS only: a plaintext gRPC client is refused.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", east.sync_addr)).unwrap();
    let refused = async {
        let channel = plain.connect().await?;
        let mut client = meridian_proto::v1::sync_monitor_client::SyncMonitorClient::new(channel);
        client.status(meridian_proto::v1::StatusRequest::default()).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    };
    assert!(timeout(Duration::from_secs(30), refused).await.expect("bounded").is_err());

    // A region whose certificate comes from another authority: each side
    // refuses the other, nothing crosses, and the links say why.
    let rogue = start_tls_region("tls-rogue", 93, Some(("rogue.pem", "rogue.key", "rogue-ca.pem"))).await;
    let port = free_port();
    let body = json!({ "name": "rogue", "port": port, "instances": [admin_url(&east), admin_url(&rogue)] });
    let (status, created) = api(&east, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();
    let mut on_rogue = connect_when_served(rogue.addr.ip(), port).await;
    assert_eq!(on_rogue.cmd(&["SET", "smuggled", "x"]).await, ok());
    let reasons = ["certificate", "UnknownIssuer", "UnknownCA", "alert"];
    let east_links = until_links_fail(&east, &guid, &reasons).await;
    let rogue_links = until_links_fail(&rogue, &guid, &reasons).await;
    assert!(east_links.iter().chain(&rogue_links).all(|l| l["deltas"].as_u64() == Some(0)), "{east_links:?}");
    let mut on_east_rogue = connect_when_served(east.addr.ip(), port).await;
    assert_eq!(on_east_rogue.cmd(&["GET", "smuggled"]).await, common::nil());

    // A region without TLS cannot dial a TLS region, nor be dialled by it.
    let open = start_tls_region("tls-open", 94, None).await;
    let port = free_port();
    let body = json!({ "name": "mixed", "port": port, "instances": [admin_url(&west), admin_url(&open)] });
    let (status, created) = api(&west, Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();
    until_links_fail(&west, &guid, &["cannot connect"]).await;
    until_links_fail(&open, &guid, &["cannot connect", "rpc failed", "stream closed"]).await;
    for node in [east, west, rogue, open] {
        stop(node).await;
    }
}

#[test]
fn the_binary_refuses_an_incomplete_or_unreadable_tls_setup() {
    let cert = tls_fixture("node.pem");
    let cert = cert.to_str().unwrap();
    let (status, stderr) = common::run_expecting_exit(&["node", "--port", "0", "--sync-tls-cert", cert]);
    assert!(!status.success());
    assert!(stderr.contains("go together"), "{stderr}");
    let args = ["node", "--port", "0", "--sync-tls-cert", cert, "--sync-tls-key", "/nonexistent/node.key"];
    let (status, stderr) = common::run_expecting_exit(&[&args[..], &["--sync-tls-ca", cert]].concat());
    assert!(!status.success());
    assert!(stderr.contains("cannot read the sync TLS key /nonexistent/node.key"), "{stderr}");
}

/// Each link of `node`'s instance of `guid`, once every one has taken at
/// least `full_syncs` full syncs (bounded).
async fn until_full_syncs(node: &Node, guid: &str, full_syncs: u64) -> Vec<Value> {
    let url = format!("{}/v1/crdbs/{guid}/instance", admin_url(node));
    converges("the links resynced", || async {
        let (_, instance): (StatusCode, Value) = request(Method::GET, &url, None).await.ok()?;
        let links = instance["endpoint_status"]["links"].as_array()?.clone();
        let done = |link: &Value| link["full_syncs"].as_u64().is_some_and(|n| n >= full_syncs);
        (!links.is_empty() && links.iter().all(done)).then_some(links)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_removed_and_added_with_ctl() {
    let mut regions =
        vec![start_region("m-one", 14).await, start_region("m-two", 15).await, start_region("m-three", 16).await];
    let port = free_port();
    let instances: Vec<String> = regions.iter().map(admin_url).collect();
    let body = json!({ "name": "membership", "port": port, "instances": instances });
    let (status, created) = api(&regions[0], Method::POST, "/v1/crdbs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let guid = created["guid"].as_str().expect("a guid").to_string();
    let mut clients = Vec::new();
    for node in &regions {
        clients.push(connect_when_served(node.addr.ip(), port).await);
    }
    assert_eq!(clients[2].cmd(&["SET", "from-three", "x"]).await, ok());
    assert_eq!(clients[2].cmd(&["SADD", "members", "three"]).await, Resp::Int(1));
    for client in &mut clients[..2] {
        until_reply(client, &["GET", "from-three"], bulk("x")).await;
    }
    let url = admin_url(&regions[0]);

    // Refused: removing the coordinating region itself, an unknown region.
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "1"]).await;
    assert!(!done && out.contains("remove it through another region"), "{out}");
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "9"]).await;
    assert!(!done && out.contains("no instance in region 9"), "{out}");

    // Region 3 leaves: its instance is deleted there, the other two resync
    // from each other and keep syncing.
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "3"]).await;
    assert!(done, "{out}");
    clients.pop().expect("region 3's client").expect_closed().await;
    let (_, list) = api(&regions[2], Method::GET, "/v1/crdbs", None).await;
    assert_eq!(list, json!([]), "region 3 holds no instance");
    for node in &regions[..2] {
        let (_, list) = api(node, Method::GET, "/v1/crdbs", None).await;
        assert_eq!(list[0]["instances"].as_array().map(Vec::len), Some(2), "{list}");
        assert_eq!(list[0]["retired"], json!([3]), "{list}");
        until_full_syncs(node, &guid, 1).await;
    }
    assert_eq!(clients[0].cmd(&["SADD", "members", "one"]).await, Resp::Int(1));
    until_reply(&mut clients[1], &["SCARD", "members"], Resp::Int(2)).await;
    // Two instances is the least: removing one more is refused.
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "2"]).await;
    assert!(!done && out.contains("delete the crdb instead"), "{out}");

    // Region 3's cluster joins again: a fresh instance with a new region id
    // (3 is retired), filled by full syncs, then syncing both ways.
    let (done, out) = ctl(&url, &["crdb", "add-instance", &guid, "--instance", &admin_url(&regions[2])]).await;
    assert!(done && out.contains("region_id: 4"), "{out}");
    let (done, out) =
        ctl(&admin_url(&regions[1]), &["crdb", "add-instance", &guid, "--instance", &admin_url(&regions[2])]).await;
    assert!(!done && out.contains("already holds an instance"), "{out}");
    let mut rejoined = connect_when_served(regions[2].addr.ip(), port).await;
    until_reply(&mut rejoined, &["GET", "from-three"], bulk("x")).await;
    until_reply(&mut rejoined, &["SCARD", "members"], Resp::Int(2)).await;
    assert_eq!(rejoined.cmd(&["SADD", "members", "four"]).await, Resp::Int(1));
    for client in &mut clients {
        until_reply(client, &["SCARD", "members"], Resp::Int(3)).await;
    }

    // A region that is gone is removed only with --force.
    let gone = regions.pop().expect("region 3");
    stop(gone).await;
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "4"]).await;
    assert!(!done && out.contains("use force"), "{out}");
    let (done, out) = ctl(&url, &["crdb", "remove-instance", &guid, "--region", "4", "--force"]).await;
    assert!(done, "{out}");
    assert_eq!(clients[1].cmd(&["SET", "after", "forced"]).await, ok());
    until_reply(&mut clients[0], &["GET", "after"], bulk("forced")).await;
    for node in regions {
        stop(node).await;
    }
}

/// Regions whose instances have different shard counts (D102): one, two and
/// three shards, created with `ctl crdb create --shards`. Each region routes
/// a key to the shard of its slot, every shard streams its granules to the
/// peer shards holding them, and the regions converge key by key; a
/// FLUSHALL in the region of two shards empties every region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_of_different_shard_counts_share_a_crdb() {
    let regions = [start_region("g-one", 21).await, start_region("g-two", 22).await, start_region("g-three", 23).await];
    let port = free_port();
    let mut args = vec!["crdb", "create", "--name", "granular"];
    let port_text = port.to_string();
    args.extend(["--port", &port_text]);
    let urls: Vec<String> = regions.iter().map(admin_url).collect();
    for url in &urls {
        args.extend(["--instance", url]);
    }
    args.extend(["--shards", "1", "--shards", "2", "--shards", "3"]);
    let (done, out) = ctl(&urls[0], &args).await;
    assert!(done, "{out}");
    let guid = out.lines().find_map(|l| l.strip_prefix("guid: ")).expect("a guid").trim().to_string();
    // Each region's instance has its shards, holding whole granules.
    let (_, shards) = api(&regions[2], Method::GET, "/v1/shards", None).await;
    let mut ranges: Vec<(u64, u64)> = shards
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["role"] == "master" && s["bdb_uid"] != 1)
        .map(|s| (s["assigned_slots"][0]["start"].as_u64().unwrap(), s["assigned_slots"][0]["end"].as_u64().unwrap()))
        .collect();
    ranges.sort_unstable();
    assert_eq!(ranges, vec![(0, 5119), (5120, 10239), (10240, 16383)], "{shards}");

    let mut clients = Vec::new();
    for node in &regions {
        clients.push(connect_when_served(node.addr.ip(), port).await);
    }
    // Every region writes keys all over the slot space, and increments the
    // same counters.
    for (index, client) in clients.iter_mut().enumerate() {
        for key in 0..60 {
            let value = format!("r{index}");
            assert_eq!(client.cmd(&["SET", &format!("key:{index}:{key}"), &value]).await, ok());
            assert!(matches!(client.cmd(&["INCR", &format!("counter:{}", key % 12)]).await, Resp::Int(_)));
        }
        assert!(matches!(client.cmd(&["SADD", "members", &format!("r{index}")]).await, Resp::Int(1)));
    }
    for client in &mut clients {
        until_reply(client, &["DBSIZE"], Resp::Int(3 * 60 + 12 + 1)).await;
        for key in 0..12 {
            until_reply(client, &["GET", &format!("counter:{key}")], bulk("15")).await;
        }
        for (index, key) in [(0, 7), (1, 33), (2, 59)] {
            assert_eq!(client.cmd(&["GET", &format!("key:{index}:{key}")]).await, bulk(format!("r{index}")));
        }
        until_reply(client, &["SCARD", "members"], Resp::Int(3)).await;
    }
    // The status shows the links of each shard of the sharded instances.
    let (done, status) = ctl(&urls[1], &["crdb", "status", &guid]).await;
    assert!(done, "{status}");
    assert!(status.contains("shard 1") && status.contains("shard 2"), "{status}");

    // FLUSHALL in region 2 runs on both its shards, and each shard's flush
    // reaches the peer shards holding its granules.
    assert_eq!(clients[1].cmd(&["FLUSHALL"]).await, ok());
    for client in &mut clients {
        until_reply(client, &["DBSIZE"], Resp::Int(0)).await;
    }
    assert_eq!(clients[2].cmd(&["SET", "after", "flush"]).await, ok());
    until_reply(&mut clients[0], &["GET", "after"], bulk("flush")).await;
    until_reply(&mut clients[1], &["GET", "after"], bulk("flush")).await;

    // An instance of more shards than granules is refused.
    let (done, out) =
        ctl(&urls[0], &["crdb", "add-instance", &guid, "--instance", "http://127.0.0.1:1", "--shards", "17"]).await;
    assert!(!done && out.contains("does not fit 16 granules"), "{out}");
    let (done, out) = ctl(&urls[0], &["crdb", "delete", &guid]).await;
    assert!(done, "{out}");
    for node in regions {
        stop(node).await;
    }
}
