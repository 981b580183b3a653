//! Black-box tests of the region control plane: the Raft-replicated cluster
//! configuration, membership (`--join`, restart from the data directory), the
//! admin REST API and `meridian ctl`.
//!
//! Most tests run in-process nodes on loopback, each with its own ports and
//! temporary data directory, and talk to them over HTTP exactly as an
//! operator would. One test runs real `meridian` processes and drives them
//! with `meridian ctl`. Every wait is bounded: a poll gives up after
//! [`common::CONVERGE_TIMEOUT`] and fails the test, and nothing asserts how fast
//! anything happened.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_cluster::config::{BdbUpdate, Command as ConfigCommand};
use meridian_cluster::ctl::{Method, StatusCode, request};
use serde_json::{Value, json};
use tokio::time::timeout;

mod common;
use common::{ChildGuard, Node, NodeConfig, converges, free_port, meridian_binary, now_ms, start_with, stop};

/// How long one HTTP exchange may take (a write may wait out an election).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// A temporary data directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("meridian-cluster-{name}-{}-{}", std::process::id(), now_ms()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn member_config(node_id: u64, data_dir: &Path, join: Option<SocketAddr>, cluster_port: u16) -> NodeConfig {
    NodeConfig {
        port: 0,
        node_id,
        region: "test".into(),
        data_dir: Some(data_dir.to_path_buf()),
        join: join.map(|addr| addr.to_string()),
        cluster_port: Some(cluster_port),
        admin_port: Some(0),
        ..NodeConfig::default()
    }
}

/// One HTTP exchange with a node's admin API.
async fn api(node: &Node, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let url = format!("http://{}{path}", node.admin_addr);
    timeout(REQUEST_TIMEOUT, request(method.clone(), &url, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {url} timed out"))
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

async fn get(node: &Node, path: &str) -> Value {
    let (status, body) = api(node, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

fn raft(cluster: &Value) -> &Value {
    &cluster["raft"]
}

/// Waits until every node in `nodes` sees the same leader, one of them, with
/// `voters` as the voting members; returns the leader's id.
async fn agreed_leader(nodes: &[&Node], voters: &[u64]) -> u64 {
    converges("one leader that every node knows", || async {
        let mut leaders = Vec::new();
        for node in nodes {
            let cluster = get(node, "/v1/cluster").await;
            let state = raft(&cluster);
            let known: Vec<u64> = state["voters"].as_array()?.iter().filter_map(Value::as_u64).collect();
            if known != voters {
                return None;
            }
            leaders.push(state["leader_id"].as_u64()?);
        }
        let leader = leaders[0];
        let leads = nodes.iter().any(|n| n.control().node_id() == leader);
        (leaders.iter().all(|&l| l == leader) && leads).then_some(leader)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_replicate_survive_the_leader_and_catch_up() {
    let dirs = [TempDir::new("n1"), TempDir::new("n2"), TempDir::new("n3")];
    let n1 = start_with(member_config(1, &dirs[0].0, None, 0)).await;
    let n2 = start_with(member_config(2, &dirs[1].0, Some(n1.cluster_addr), 0)).await;
    // The third joins through a follower, which passes the join to the leader.
    let n3 = start_with(member_config(3, &dirs[2].0, Some(n2.cluster_addr), 0)).await;
    let mut nodes = vec![Some(n1), Some(n2), Some(n3)];
    let all: Vec<&Node> = nodes.iter().flatten().collect();
    let leader = agreed_leader(&all, &[1, 2, 3]).await;
    for node in &all {
        let listed = converges("three node records", || async {
            let nodes = get(node, "/v1/nodes").await;
            (nodes.as_array()?.len() == 3).then_some(nodes)
        })
        .await;
        assert!(listed.as_array().unwrap().iter().all(|n| n["status"] == "active"), "{listed}");
    }

    // A database created through a follower is visible on all three.
    let follower = all.iter().find(|n| n.control().node_id() != leader).expect("two followers");
    let spec = json!({"name": "orders", "port": 14000, "shards_count": 3, "replication": true, "password": "pw"});
    let (status, created) = api(follower, Method::POST, "/v1/bdbs", Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "orders");
    assert_eq!(created["authentication"], true);
    assert!(created.get("password").is_none(), "the password is echoed back: {created}");
    let uid = created["uid"].as_u64().expect("a uid");
    for node in &all {
        let path = format!("/v1/bdbs/{uid}");
        let bdb = converges("the database on every node", || async {
            let (status, bdb) = api(node, Method::GET, &path, None).await;
            (status == StatusCode::OK).then_some(bdb)
        })
        .await;
        assert_eq!((bdb["port"].as_u64(), bdb["shards_count"].as_u64()), (Some(14000), Some(3)));
    }

    // Placement: every master has its replica on another node, and the six
    // copies spread over the three nodes.
    let shards = get(all[0], "/v1/shards").await;
    let ours: Vec<&Value> = shards.as_array().unwrap().iter().filter(|s| s["bdb_uid"] == uid).collect();
    assert_eq!(ours.len(), 6, "{shards}");
    for master in ours.iter().filter(|s| s["role"] == "master") {
        let replicas: Vec<&&Value> =
            ours.iter().filter(|s| s["role"] == "replica" && s["assigned_slots"] == master["assigned_slots"]).collect();
        assert_eq!(replicas.len(), 1, "one replica per master: {shards}");
        assert_ne!(replicas[0]["node_uid"], master["node_uid"], "a replica shares its master's node: {shards}");
    }
    for id in 1..=3u64 {
        assert_eq!(ours.iter().filter(|s| s["node_uid"] == id).count(), 2, "node {id}'s share: {shards}");
    }

    // Manual failover through the API swaps the roles and bumps the epoch.
    let master = ours.iter().find(|s| s["role"] == "master").unwrap();
    let master_uid = master["uid"].as_u64().unwrap();
    let (status, answer) =
        api(all[2], Method::POST, &format!("/v1/bdbs/{uid}/actions/failover"), Some(json!({"shard_uid": master_uid})))
            .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["epoch"], 2);
    let promoted = answer["master_shard_uid"].as_u64().unwrap();
    assert_ne!(promoted, master_uid);
    for node in &all {
        converges("the failover on every node", || async {
            let shards = get(node, "/v1/shards").await;
            let roles: Vec<(u64, String, u64)> = shards
                .as_array()?
                .iter()
                .filter(|s| s["uid"] == master_uid || s["uid"] == promoted)
                .map(|s| {
                    (s["uid"].as_u64().unwrap(), s["role"].as_str().unwrap().to_string(), s["epoch"].as_u64().unwrap())
                })
                .collect();
            roles
                .iter()
                .all(|(shard, role, epoch)| *epoch == 2 && (role == "master") == (*shard == promoted))
                .then_some(())
        })
        .await;
    }

    // Stop the leader: the other two elect a new one and take writes.
    let leader_index = (leader - 1) as usize;
    let stopped = nodes[leader_index].take().expect("the leader runs");
    let stopped_cluster_port = stopped.cluster_addr.port();
    stop(stopped).await;
    let rest: Vec<&Node> = nodes.iter().flatten().collect();
    let new_leader = agreed_leader(&rest, &[1, 2, 3]).await;
    assert_ne!(new_leader, leader);
    let (status, after) = api(rest[0], Method::POST, "/v1/bdbs", Some(json!({"name": "after", "port": 14001}))).await;
    assert_eq!(status, StatusCode::CREATED, "{after}");
    let (status, body) = api(rest[1], Method::PUT, &format!("/v1/bdbs/{uid}"), Some(json!({"name": "orders2"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Restart the stopped node from its data directory, without --join: it
    // comes back as a member and catches up what it missed.
    let restarted = start_with(member_config(leader, &dirs[leader_index].0, None, stopped_cluster_port)).await;
    converges("the restarted node catches up", || async {
        let bdbs = get(&restarted, "/v1/bdbs").await;
        let names: Vec<&str> = bdbs.as_array()?.iter().filter_map(|b| b["name"].as_str()).collect();
        (names.contains(&"after") && names.contains(&"orders2")).then_some(())
    })
    .await;
    nodes[leader_index] = Some(restarted);
    let all: Vec<&Node> = nodes.iter().flatten().collect();
    agreed_leader(&all, &[1, 2, 3]).await;

    for node in nodes.into_iter().flatten() {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_too_far_behind_catches_up_from_a_snapshot() {
    let dirs = [TempDir::new("s1"), TempDir::new("s2"), TempDir::new("s3")];
    let config = |id: u64, dir: &TempDir, join: Option<SocketAddr>, port: u16| NodeConfig {
        raft_snapshot_logs: 10,
        ..member_config(id, &dir.0, join, port)
    };
    let n1 = start_with(config(1, &dirs[0], None, 0)).await;
    let n2 = start_with(config(2, &dirs[1], Some(n1.cluster_addr), 0)).await;
    let n3 = start_with(config(3, &dirs[2], Some(n1.cluster_addr), 0)).await;
    let leader = agreed_leader(&[&n1, &n2, &n3], &[1, 2, 3]).await;
    let mut nodes = vec![Some(n1), Some(n2), Some(n3)];

    // Stop a follower, then write enough for the others to snapshot and
    // purge the entries it would need.
    let follower_index = nodes.iter().position(|n| n.as_ref().unwrap().control().node_id() != leader).unwrap();
    let follower = nodes[follower_index].take().unwrap();
    let (follower_id, follower_port) = (follower.control().node_id(), follower.cluster_addr.port());
    stop(follower).await;
    let writer = nodes.iter().flatten().next().unwrap();
    for round in 0..60 {
        let update = BdbUpdate { name: Some(format!("v{round}")), ..BdbUpdate::default() };
        let outcome = timeout(REQUEST_TIMEOUT, writer.control().write(ConfigCommand::UpdateBdb { uid: 1, update }))
            .await
            .expect("a write timed out");
        outcome.unwrap_or_else(|e| panic!("write {round}: {e}"));
    }
    let rest: Vec<&Node> = nodes.iter().flatten().collect();
    for node in &rest {
        converges("the others purge their log", || async {
            let cluster = get(node, "/v1/cluster").await;
            (raft(&cluster)["purged_index"].as_u64()? > 20).then_some(())
        })
        .await;
    }

    let restarted = start_with(config(follower_id, &dirs[follower_index], None, follower_port)).await;
    converges("the restarted member installs the snapshot", || async {
        let bdb = get(&restarted, "/v1/bdbs/1").await;
        let cluster = get(&restarted, "/v1/cluster").await;
        (bdb["name"] == "v59" && raft(&cluster)["snapshot_index"].as_u64()? > 20).then_some(())
    })
    .await;
    nodes[follower_index] = Some(restarted);
    for node in nodes.into_iter().flatten() {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_no_cluster_flags_is_a_one_node_cluster_and_bad_requests_get_4xx() {
    let node =
        start_with(NodeConfig { port: 0, admin_port: Some(0), cluster_port: Some(0), ..NodeConfig::default() }).await;
    let cluster = get(&node, "/v1/cluster").await;
    assert_eq!(raft(&cluster)["role"], "leader", "{cluster}");
    assert_eq!(cluster["region"], "local");
    let bdbs = get(&node, "/v1/bdbs").await;
    assert_eq!(bdbs[0]["name"], "default", "{bdbs}");
    assert_eq!(bdbs[0]["port"].as_u64(), Some(u64::from(node.addr.port())), "the default database is the node's port");

    let (status, created) =
        api(&node, Method::POST, "/v1/bdbs", Some(json!({"name": "a", "port": 15000, "shards_count": 2}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let uid = created["uid"].as_u64().unwrap();
    let shard = created["shard_list"][0].as_u64().unwrap();

    let cases: Vec<(Method, String, Option<Value>, StatusCode, &str)> = vec![
        (Method::POST, "/v1/bdbs".into(), Some(json!({"name": "a", "port": 15001})), StatusCode::CONFLICT, "named"),
        (Method::POST, "/v1/bdbs".into(), Some(json!({"name": "b", "port": 15000})), StatusCode::CONFLICT, "port"),
        (
            Method::POST,
            "/v1/bdbs".into(),
            Some(json!({"name": "b", "port": 15001, "shards_count": 0})),
            StatusCode::BAD_REQUEST,
            "shards_count",
        ),
        (
            Method::POST,
            "/v1/bdbs".into(),
            Some(json!({"name": "b", "port": 15001, "shards_count": 16385})),
            StatusCode::BAD_REQUEST,
            "shards_count",
        ),
        (
            Method::POST,
            "/v1/bdbs".into(),
            Some(json!({"name": "b", "port": 15001, "replication": true})),
            StatusCode::CONFLICT,
            "nodes",
        ),
        (Method::POST, "/v1/bdbs".into(), Some(json!({"name": "b", "prot": 15001})), StatusCode::BAD_REQUEST, "prot"),
        (
            Method::POST,
            "/v1/bdbs".into(),
            Some(json!({"name": "bad name", "port": 15001})),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (Method::POST, "/v1/bdbs".into(), None, StatusCode::BAD_REQUEST, "malformed JSON"),
        (Method::GET, "/v1/bdbs/999".into(), None, StatusCode::NOT_FOUND, "no database 999"),
        (Method::GET, "/v1/bdbs/abc".into(), None, StatusCode::BAD_REQUEST, "not a number"),
        (Method::PUT, "/v1/bdbs/999".into(), Some(json!({"name": "x"})), StatusCode::NOT_FOUND, "no database"),
        (
            Method::PUT,
            format!("/v1/bdbs/{uid}"),
            Some(json!({"shards_count": 4})),
            StatusCode::BAD_REQUEST,
            "resharding",
        ),
        (Method::DELETE, "/v1/bdbs/999".into(), None, StatusCode::NOT_FOUND, "no database"),
        (Method::GET, "/v1/nodes/7".into(), None, StatusCode::NOT_FOUND, "no node 7"),
        (
            Method::POST,
            format!("/v1/bdbs/{uid}/actions/failover"),
            Some(json!({"shard_uid": 999})),
            StatusCode::NOT_FOUND,
            "no shard",
        ),
        (
            Method::POST,
            "/v1/bdbs/1/actions/failover".into(),
            Some(json!({"shard_uid": shard})),
            StatusCode::BAD_REQUEST,
            "belongs to database",
        ),
        (
            Method::POST,
            format!("/v1/bdbs/{uid}/actions/failover"),
            Some(json!({"shard_uid": shard})),
            StatusCode::CONFLICT,
            "no replica",
        ),
        (
            Method::POST,
            format!("/v1/bdbs/{uid}/actions/failover"),
            Some(json!({"shard": shard})),
            StatusCode::BAD_REQUEST,
            "shard",
        ),
        (Method::GET, "/v1/nothing".into(), None, StatusCode::NOT_FOUND, "no such endpoint"),
    ];
    for (method, path, body, expected, text) in cases {
        let (status, answer) = api(&node, method.clone(), &path, body.clone()).await;
        assert_eq!(status, expected, "{method} {path} {body:?}: {answer}");
        let description = answer["description"].as_str().unwrap_or_default();
        assert!(description.contains(text), "{method} {path}: {description:?} does not say {text:?}");
        assert!(answer["error_code"].is_string(), "{answer}");
    }
    // A body over the bound is refused before it is read whole.
    let huge = json!({"name": "x".repeat(100_000), "port": 1});
    let (status, _) = api(&node, Method::POST, "/v1/bdbs", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of the refused requests was applied.
    assert_eq!(get(&node, "/v1/bdbs").await.as_array().unwrap().len(), 2);

    // A node in maintenance gets no new shards; back to active, it does.
    let (status, answer) = api(&node, Method::PUT, "/v1/nodes/1", Some(json!({"status": "maintenance"}))).await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("maintenance")), "{answer}");
    let (status, answer) = api(&node, Method::POST, "/v1/bdbs", Some(json!({"name": "m", "port": 15002}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = api(&node, Method::PUT, "/v1/nodes/1", Some(json!({"status": "sleeping"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = api(&node, Method::PUT, "/v1/nodes/9", Some(json!({"status": "down"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _) = api(&node, Method::PUT, "/v1/nodes/1", Some(json!({"status": "active"}))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, answer) = api(&node, Method::DELETE, &format!("/v1/bdbs/{uid}"), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(get(&node, "/v1/bdbs").await.as_array().unwrap().len(), 1);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_log_vote_and_configuration() {
    let dir = TempDir::new("restart");
    let node = start_with(member_config(5, &dir.0, None, 0)).await;
    let (status, body) = api(&node, Method::POST, "/v1/bdbs", Some(json!({"name": "kept", "port": 15100}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let term = raft(&get(&node, "/v1/cluster").await)["term"].as_u64().unwrap();
    stop(node).await;

    let node = start_with(member_config(5, &dir.0, None, 0)).await;
    // A second node on the same directory is refused while the first runs.
    let second = timeout(REQUEST_TIMEOUT, Node::start(&member_config(6, &dir.0, None, 0))).await.expect("start");
    let error = second.err().expect("a second node started on a data directory in use").to_string();
    assert!(error.contains("in use by another meridian node"), "{error}");
    let bdbs = get(&node, "/v1/bdbs").await;
    let names: Vec<&str> = bdbs.as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, vec!["default", "kept"], "the configuration came back without a new initialisation");
    let cluster = converges("the node leads again", || async {
        let cluster = get(&node, "/v1/cluster").await;
        (raft(&cluster)["role"] == "leader").then_some(cluster)
    })
    .await;
    // The vote came back: the term never goes backwards (a lone voter whose
    // own vote was committed may lead again in the same term).
    assert!(raft(&cluster)["term"].as_u64().unwrap() >= term, "the term went backwards: {cluster}");
    let (status, body) = api(&node, Method::POST, "/v1/bdbs", Some(json!({"name": "new", "port": 15101}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    stop(node).await;
}

// ---------------------------------------------------------------------------
// The real binary, driven by `meridian ctl`.
// ---------------------------------------------------------------------------

/// Runs `meridian ctl` against the admin API on `admin_port` (at most 60 s);
/// returns success, stdout and stderr.
async fn ctl(admin_port: u16, args: &[&str]) -> (bool, String, String) {
    common::ctl_output(&format!("http://127.0.0.1:{admin_port}"), args, Duration::from_secs(60)).await
}

/// Retries a `ctl` command until it succeeds and `accept` holds its output.
async fn ctl_until(admin_port: u16, args: &[&str], accept: impl Fn(&str) -> bool) -> String {
    let what = format!("meridian ctl {}", args.join(" "));
    converges(&what, || async {
        let (ok, out, _) = ctl(admin_port, args).await;
        (ok && accept(&out)).then_some(out)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_nodes_join_with_flags_and_ctl_drives_them() {
    let binary = tokio::task::spawn_blocking(meridian_binary).await.expect("locate the binary");
    let dirs = [TempDir::new("p1"), TempDir::new("p2"), TempDir::new("p3")];
    let cluster_ports = [free_port(), free_port(), free_port()];
    let admin_ports = [free_port(), free_port(), free_port()];
    let mut guards = Vec::new();
    for i in 0..3 {
        let mut args = vec![
            "node".to_string(),
            "--port".into(),
            free_port().to_string(),
            "--node-id".into(),
            (i + 1).to_string(),
            "--region".into(),
            "us".into(),
            "--data-dir".into(),
            dirs[i].0.display().to_string(),
            "--cluster-port".into(),
            cluster_ports[i].to_string(),
            "--admin-port".into(),
            admin_ports[i].to_string(),
            "--rack".into(),
            format!("rack{i}"),
            "--log-level".into(),
            "warn".into(),
        ];
        if i > 0 {
            args.extend(["--join".to_string(), format!("127.0.0.1:{}", cluster_ports[0])]);
        }
        let child =
            Command::new(binary).args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        guards.push(ChildGuard(child.expect("start meridian node")));
        // Each joiner needs the first node up; ctl_until below bounds the wait.
        if i == 0 {
            ctl_until(admin_ports[0], &["cluster", "info"], |out| out.contains("leader:  1")).await;
        }
    }
    let nodes = ctl_until(admin_ports[2], &["node", "list"], |out| out.lines().count() == 4).await;
    assert!(nodes.starts_with("ID  ADDRESS"), "a table with a header: {nodes}");
    assert!(nodes.contains("rack2"), "{nodes}");
    let info = ctl_until(admin_ports[1], &["cluster", "info"], |out| out.contains("voters:  1,2,3")).await;
    assert!(info.contains("region:  us"), "{info}");

    let (ok, out, err) =
        ctl(admin_ports[2], &["bdb", "create", "--name", "web", "--port", "16000", "--shards", "2", "--replication"])
            .await;
    assert!(ok, "bdb create failed: {err}");
    assert!(out.contains("web") && out.contains("16000"), "{out}");
    let (ok, out, _) = ctl(admin_ports[0], &["--json", "bdb", "get", "2"]).await;
    assert!(ok);
    let bdb: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(bdb["name"], "web");
    let shards = ctl_until(admin_ports[1], &["shard", "list", "--bdb", "2"], |out| out.lines().count() == 5).await;
    assert!(shards.contains("master") && shards.contains("replica"), "{shards}");

    let (ok, out, err) = ctl(admin_ports[1], &["bdb", "failover", "2", "--shard", "2"]).await;
    assert!(ok, "failover failed: {err}");
    assert!(out.contains("epoch: 2"), "{out}");
    let (ok, _, err) = ctl(admin_ports[0], &["bdb", "update", "2", "--port", "16001"]).await;
    assert!(ok, "update failed: {err}");
    let (ok, _, err) = ctl(admin_ports[0], &["bdb", "create", "--name", "web", "--port", "16002"]).await;
    assert!(!ok, "a duplicate name was accepted");
    assert!(err.contains("409") && err.contains("already named"), "{err}");
    let (ok, _, err) = ctl(admin_ports[0], &["bdb", "get", "42"]).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, err) = ctl(admin_ports[2], &["node", "update", "3", "--status", "maintenance"]).await;
    assert!(ok && out.contains("maintenance"), "node update: {out} {err}");
    let (ok, _, err) = ctl(admin_ports[2], &["bdb", "delete", "2"]).await;
    assert!(ok, "delete failed: {err}");
    ctl_until(admin_ports[1], &["bdb", "list"], |out| !out.contains("web")).await;
    drop(guards);
}

/// Connects to `port` on loopback, waiting (bounded) for it to be served.
async fn connect_when_served(port: u16) -> common::Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    converges(&format!("a database served on port {port}"), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|stream| common::Client { stream, input: Vec::new() })
    })
    .await
}

/// Creates a database from `spec` through `node`'s admin API; its uid.
async fn create_bdb(node: &Node, spec: Value) -> u64 {
    let (status, created) = api(node, Method::POST, "/v1/bdbs", Some(spec)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["uid"].as_u64().expect("a uid")
}

/// A one-node cluster keeping its data in `dir`, every port free.
fn persistent_node(dir: &Path) -> NodeConfig {
    NodeConfig {
        port: 0,
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        data_dir: Some(dir.to_path_buf()),
        ..NodeConfig::default()
    }
}

/// Waits (bounded) until nothing listens on `port` any more.
async fn wait_port_closed(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    converges(&format!("port {port} closed"), || async { tokio::net::TcpStream::connect(addr).await.err() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_database_is_served_on_its_port_until_deleted() {
    let dir = TempDir::new("bdb-ports");
    let config = persistent_node(&dir.0);
    let node = start_with(config.clone()).await;
    let port = free_port();
    let uid = create_bdb(&node, json!({"name": "cache", "port": port, "password": "first"})).await;

    // Served on its own port, with its password; its data in its own directory.
    let mut client = connect_when_served(port).await;
    assert!(matches!(client.cmd(&["SET", "k", "v"]).await, common::Resp::Error(e) if e.starts_with("NOAUTH")));
    assert_eq!(client.cmd(&["AUTH", "first"]).await, common::ok());
    assert_eq!(client.cmd(&["SET", "k", "v"]).await, common::ok());
    let mut default = common::Client::connect(node.addr).await;
    assert_eq!(default.cmd(&["GET", "k"]).await, common::nil(), "the default database is another keyspace");
    assert!(dir.0.join(format!("bdb-{uid}")).join("shard-1").is_dir(), "the database's own data directory");
    let bdb = get(&node, &format!("/v1/bdbs/{uid}")).await;
    assert_eq!(bdb["endpoint_status"]["status"], "active", "{bdb}");

    // A new password applies to new connections; the connected client stays in.
    let (status, _) = api(&node, Method::PUT, &format!("/v1/bdbs/{uid}"), Some(json!({"password": "second"}))).await;
    assert_eq!(status, StatusCode::OK);
    converges("the new password", || async {
        let mut fresh = connect_when_served(port).await;
        (fresh.cmd(&["AUTH", "second"]).await == common::ok()).then_some(())
    })
    .await;
    assert_eq!(client.cmd(&["GET", "k"]).await, common::bulk("v"));

    // A restarted node serves it again, with its data and its password.
    drop(default);
    stop(node).await;
    client.expect_closed().await;
    let node = start_with(config).await;
    let mut client = connect_when_served(port).await;
    assert_eq!(client.cmd(&["AUTH", "second"]).await, common::ok());
    assert_eq!(client.cmd(&["GET", "k"]).await, common::bulk("v"), "recovered from bdb-{uid}/shard-1");
    let mut default = common::Client::connect(node.addr).await;

    // A port that cannot be bound is reported, not fatal.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let blocked_uid = create_bdb(&node, json!({"name": "blocked", "port": taken_port})).await;
    let failed = converges("the bind error in the database's status", || async {
        let bdb = get(&node, &format!("/v1/bdbs/{blocked_uid}")).await;
        (bdb["endpoint_status"]["status"] == "error").then_some(bdb)
    })
    .await;
    assert!(failed["endpoint_status"]["error"].as_str().unwrap().contains("in use"), "{failed}");

    // Deleted: its clients are closed, its port too, its data removed.
    let (status, _) = api(&node, Method::DELETE, &format!("/v1/bdbs/{uid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    client.expect_closed().await;
    wait_port_closed(port).await;
    converges("the data directory removed", || async { (!dir.0.join(format!("bdb-{uid}")).exists()).then_some(()) })
        .await;
    assert_eq!(default.cmd(&["PING"]).await, common::simple("PONG"), "the default database is untouched");
    drop(taken);
    stop(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_three_node_cluster_the_master_node_serves_a_database() {
    let dirs = [TempDir::new("m1"), TempDir::new("m2"), TempDir::new("m3")];
    let n1 = start_with(member_config(1, &dirs[0].0, None, 0)).await;
    let n2 = start_with(member_config(2, &dirs[1].0, Some(n1.cluster_addr), 0)).await;
    let n3 = start_with(member_config(3, &dirs[2].0, Some(n1.cluster_addr), 0)).await;
    let all = [&n1, &n2, &n3];
    agreed_leader(&all, &[1, 2, 3]).await;

    let port = free_port();
    let uid = create_bdb(&n3, json!({"name": "sessions", "port": port, "replication": true})).await;
    let shards = get(&n1, "/v1/shards").await;
    let master = shards
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bdb_uid"] == uid && s["role"] == "master")
        .and_then(|s| s["node_uid"].as_u64())
        .expect("a master");

    let mut client = connect_when_served(port).await;
    assert_eq!(client.cmd(&["INCRBY", "n", "5"]).await, common::int(5));
    for node in all {
        let serves = node.database_addr(uid).is_some();
        assert_eq!(serves, node.control().node_id() == master, "only the master's node serves it");
    }

    let (status, _) = api(&n2, Method::DELETE, &format!("/v1/bdbs/{uid}"), None).await;
    assert_eq!(status, StatusCode::OK);
    client.expect_closed().await;
    wait_port_closed(port).await;
    for node in [n1, n2, n3] {
        stop(node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_database_routes_pipelines_resp3_pubsub_and_blocking_pops_and_recovers_per_shard() {
    use common::{Resp, bulk, encode, int, ok};
    let dir = TempDir::new("sharded");
    let config = persistent_node(&dir.0);
    let node = start_with(config.clone()).await;
    let port = free_port();
    let uid = create_bdb(&node, json!({"name": "sharded", "port": port, "shards_count": 3, "password": "pw"})).await;
    let authenticated = || async {
        let mut client = connect_when_served(port).await;
        assert_eq!(client.cmd(&["AUTH", "pw"]).await, ok());
        client
    };

    let mut client = connect_when_served(port).await;
    assert!(matches!(client.cmd(&["GET", "k"]).await, Resp::Error(e) if e.starts_with("NOAUTH")));
    assert_eq!(client.cmd(&["AUTH", "pw"]).await, ok());
    // A pipeline of 10,000 commands over three shards: replies in order.
    let mut pipeline = Vec::new();
    for i in 0..10_000 {
        pipeline.extend(encode(&["SET", &format!("p{i}"), &i.to_string()]));
    }
    client.send(&pipeline).await;
    for i in 0..10_000 {
        assert_eq!(client.read().await, ok(), "reply {i}");
    }
    let mut pipeline = Vec::new();
    for i in (0..10_000).step_by(7) {
        pipeline.extend(encode(&["GET", &format!("p{i}")]));
    }
    client.send(&pipeline).await;
    for i in (0..10_000).step_by(7) {
        assert_eq!(client.read().await, bulk(i.to_string()));
    }
    assert_eq!(client.cmd(&["DBSIZE"]).await, int(10_000));
    for shard in 1..=3 {
        let held = dir.0.join(format!("bdb-{uid}")).join(format!("shard-{shard}"));
        assert!(held.is_dir(), "each shard keeps its own data: {}", held.display());
    }
    // RESP3 through the router, on every shard.
    assert!(matches!(client.cmd(&["HELLO", "3"]).await, Resp::Map(_)));
    assert_eq!(client.cmd(&["GET", "p1"]).await, bulk("1"));
    assert_eq!(client.cmd(&["MGET", "p1", "p2", "p3"]).await, Resp::Array(vec![bulk("1"), bulk("2"), bulk("3")]));
    assert_eq!(client.cmd(&["HSET", "h", "f", "1.5"]).await, int(1));
    assert_eq!(client.cmd(&["HINCRBYFLOAT", "h", "f", "1"]).await, bulk("2.5"));
    assert_eq!(client.cmd(&["EXISTS", "p1", "p2", "nope"]).await, int(2));
    assert_eq!(client.cmd(&["HELLO", "2"]).await.items().len(), 14, "back to RESP2");

    // Pub/sub reaches subscribers whichever node or shard publishes.
    let mut subscriber = authenticated().await;
    let subscribed = subscriber.cmd(&["SUBSCRIBE", "news"]).await;
    assert_eq!(subscribed, Resp::Array(vec![bulk("subscribe"), bulk("news"), int(1)]));
    assert_eq!(client.cmd(&["PUBLISH", "news", "hello"]).await, int(1));
    assert_eq!(subscriber.read().await, Resp::Array(vec![bulk("message"), bulk("news"), bulk("hello")]));
    // A blocked pop is woken by a push through another connection.
    let mut blocked = authenticated().await;
    blocked.send(&encode(&["BLPOP", "queue", "10"])).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.cmd(&["RPUSH", "queue", "job"]).await, int(1));
    assert_eq!(blocked.read().await, Resp::Array(vec![bulk("queue"), bulk("job")]));
    // CLUSTER in proxy mode: this endpoint owns every slot.
    let shards = client.cmd(&["CLUSTER", "SHARDS"]).await;
    assert_eq!(shards.items().len(), 1, "{shards:?}");
    assert!(client.cmd(&["CLUSTER", "NODES"]).await.text().contains("myself,master"));
    assert!(matches!(client.cmd(&["CLUSTER", "BOGUS"]).await, Resp::Error(e) if e.contains("CLUSTER HELP")));
    // A malformed frame: Redis's protocol error, then the close.
    client.send(b"*1\r\n$abc\r\n").await;
    assert!(matches!(client.read().await, Resp::Error(e) if e.starts_with("ERR Protocol error")));
    client.expect_closed().await;

    // Restarted, the node recovers each shard from its own directory.
    drop((subscriber, blocked));
    stop(node).await;
    let _node = start_with(config).await;
    let mut client = connect_when_served(port).await;
    assert_eq!(client.cmd(&["AUTH", "pw"]).await, ok());
    assert_eq!(client.cmd(&["DBSIZE"]).await, int(10_001), "10,000 strings and the hash");
    assert_eq!(client.cmd(&["GET", "p9999"]).await, bulk("9999"));
}

/// Nodes listening on every address (`--bind 0.0.0.0`) tell others the
/// address given with `announce`: their own records hold it, a second node
/// joins through it, and an unspecified announce address is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_bound_to_every_address_announce_a_dialable_one() {
    let any = std::net::IpAddr::from([0, 0, 0, 0]);
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let dirs = [TempDir::new("announce1"), TempDir::new("announce2")];
    let config = |node_id: u64, dir: &TempDir, join: Option<SocketAddr>| NodeConfig {
        bind: any,
        announce: Some(loopback),
        sync_port: Some(0),
        ..member_config(node_id, &dir.0, join, 0)
    };
    let n1 = start_with(config(1, &dirs[0], None)).await;
    assert_eq!(n1.cluster_addr.ip(), loopback);
    assert_eq!(n1.admin_addr.ip(), loopback);
    assert_eq!(n1.sync_addr.ip(), loopback);
    let n2 = start_with(config(2, &dirs[1], Some(n1.cluster_addr))).await;
    // A joining node records its sync address itself once it has joined.
    let listed = converges("two node records with their sync addresses", || async {
        let nodes = get(&n1, "/v1/nodes").await;
        let records = nodes.as_array()?;
        (records.len() == 2 && records.iter().all(|n| n["sync_addr"].is_string())).then_some(nodes)
    })
    .await;
    for node in listed.as_array().unwrap() {
        for field in ["addr", "admin_addr", "sync_addr"] {
            let addr: SocketAddr = node[field].as_str().unwrap_or_else(|| panic!("{field} of {node}")).parse().unwrap();
            assert_eq!(addr.ip(), loopback, "{field} of {node}");
        }
    }
    let refused = TempDir::new("announce3");
    let error = meridian_cluster::node::Node::start(&NodeConfig { announce: Some(any), ..config(3, &refused, None) })
        .await
        .err()
        .expect("an unspecified announce address is refused");
    assert!(error.to_string().contains("announce must be an address other nodes can reach"), "{error}");
    stop(n2).await;
    stop(n1).await;
}
