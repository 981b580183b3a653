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

use common::{Client, Node, NodeConfig, Resp, bulk, free_port, ok, start_with, stop};
use meridian_cluster::ctl::{Method, StatusCode, request};
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};

/// How long anything may take to converge (a link connecting, a delta
/// crossing, a configuration change applied).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// One region: a one-node cluster of its own, on its own loopback address
/// (127.0.0.`host`), so every region can serve the crdb on the same port.
async fn region(name: &str, host: u8) -> Node {
    start_with(NodeConfig {
        bind: IpAddr::from([127, 0, 0, host]),
        port: 0,
        region: name.into(),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        ..NodeConfig::default()
    })
    .await
}

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

/// Polls `check` until it returns `Some` (bounded).
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

async fn connect_when_served(ip: IpAddr, port: u16) -> Client {
    let addr = SocketAddr::new(ip, port);
    eventually(&format!("port {port} served"), || async {
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
    let regions = [region("us-east", 1).await, region("eu-west", 2).await, region("ap-south", 3).await];
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
        eventually("the crdb's port closed", || async { tokio::net::TcpStream::connect(addr).await.err() }).await;
        let (_, list) = api(node, Method::GET, "/v1/crdbs", None).await;
        assert_eq!(list, json!([]), "no instance left");
    }
    for node in regions {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crdb_with_an_unreachable_instance_is_not_created_anywhere() {
    let a = region("here", 1).await;
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
