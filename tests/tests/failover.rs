//! Shard replication and automatic failover inside one region, with real
//! `meridian` processes: three nodes, each on its own loopback address
//! (127.0.0.41–49) so every node can serve a database on the same port, as
//! separate hosts would.
//!
//! - A master's node is killed (SIGKILL): its replica is promoted, the
//!   database is served on the replica's node, every write acknowledged with
//!   `WAIT 1` before the kill is there, and the killed node, restarted,
//!   rejoins as a replica of the new master and catches up (a full sync).
//! - A manual failover: the old master continues as a replica of the new one
//!   and resumes its history (a partial resync).
//! - A master's node is isolated (SIGSTOP): its shard fails over; a write
//!   sent to it meanwhile is refused when it resumes — never accepted and
//!   then lost — and it rejoins as a replica.
//!
//! - Clients connected to the other nodes go through those nodes' proxies
//!   and keep their connections across the failover.
//!
//! Every wait is bounded by [`common::CONVERGE_TIMEOUT`]; failover times are
//! printed, not asserted.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_cluster::ctl::{Method, StatusCode, request};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod common;
use common::{ChildGuard, Client, Resp, converges, free_port, meridian_binary, now_ms};

/// Milliseconds a node may stop answering before its masters fail over.
const FAILOVER_TIMEOUT_MS: u64 = 600;

struct Member {
    id: u64,
    host: IpAddr,
    cluster_port: u16,
    admin_port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
    /// More flags for `meridian node`.
    extra: Vec<String>,
}

impl Member {
    fn admin(&self) -> String {
        format!("http://{}:{}", self.host, self.admin_port)
    }

    fn spawn(&mut self, join: Option<String>) {
        let binary = meridian_binary();
        let mut args = vec![
            "node".to_string(),
            "--bind".into(),
            self.host.to_string(),
            "--port".into(),
            free_port().to_string(),
            "--node-id".into(),
            self.id.to_string(),
            "--region".into(),
            "eu".into(),
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--cluster-port".into(),
            self.cluster_port.to_string(),
            "--admin-port".into(),
            self.admin_port.to_string(),
            "--sync-port".into(),
            "0".into(),
            "--failover-timeout-ms".into(),
            FAILOVER_TIMEOUT_MS.to_string(),
            "--log-level".into(),
            "info".into(),
        ];
        if let Some(join) = join {
            args.extend(["--join".to_string(), join]);
        }
        args.extend(self.extra.iter().cloned());
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("create the node's log");
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone the log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start meridian node");
        self.child = Some(ChildGuard(child));
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").0.id()
    }
}

/// Three members on 127.0.0.`base`+0..2, with data directories removed when
/// the test ends.
struct Cluster {
    members: Vec<Member>,
    root: PathBuf,
    /// Held while the cluster runs (see [`CLUSTERS_AT_ONCE`]).
    _running: tokio::sync::SemaphorePermit<'static>,
}

/// Clusters of this suite running at once: two cores run six debug-built
/// nodes with their leases comfortably, not the whole suite's at once.
static CLUSTERS_AT_ONCE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.child.take();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("node logs kept in {}", self.root.display());
        }
    }
}

async fn api(base: &str, method: Method, path: &str, body: Option<Value>) -> Option<(StatusCode, Value)> {
    timeout(Duration::from_secs(20), request(method, &format!("{base}{path}"), body)).await.ok()?.ok()
}

async fn get(base: &str, path: &str) -> Option<Value> {
    match api(base, Method::GET, path, None).await? {
        (StatusCode::OK, body) => Some(body),
        _ => None,
    }
}

impl Cluster {
    async fn start(name: &str, base: u8) -> Cluster {
        Cluster::start_with(name, base, &[]).await
    }

    /// Three members given `extra` flags.
    async fn start_with(name: &str, base: u8, extra: &[&str]) -> Cluster {
        tokio::task::spawn_blocking(meridian_binary).await.expect("locate the binary");
        let running = CLUSTERS_AT_ONCE.acquire().await.expect("the semaphore is never closed");
        let root = std::env::temp_dir().join(format!("meridian-failover-{name}-{}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&root).expect("create the test directory");
        let mut members: Vec<Member> = (0..3u8)
            .map(|i| Member {
                id: u64::from(i) + 1,
                host: IpAddr::from([127, 0, 0, base + i]),
                cluster_port: free_port(),
                admin_port: free_port(),
                dir: root.join(format!("n{}", i + 1)),
                child: None,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            })
            .collect();
        let first = format!("{}:{}", members[0].host, members[0].cluster_port);
        members[0].spawn(None);
        let admin = members[0].admin();
        converges("the first node leads", || async { get(&admin, "/v1/cluster").await }).await;
        for member in &mut members[1..] {
            member.spawn(Some(first.clone()));
        }
        let cluster = Cluster { members, root, _running: running };
        for member in &cluster.members {
            let admin = member.admin();
            converges("every node sees three voters", || async {
                let state = get(&admin, "/v1/cluster").await?;
                let voters: Vec<u64> = state["raft"]["voters"].as_array()?.iter().filter_map(Value::as_u64).collect();
                (voters == [1, 2, 3] && state["raft"]["leader_id"].as_u64().is_some()).then_some(())
            })
            .await;
        }
        cluster
    }

    fn member(&self, id: u64) -> &Member {
        &self.members[(id - 1) as usize]
    }

    fn member_mut(&mut self, id: u64) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    /// Creates a replicated database on `port`; its uid.
    async fn create_db(&self, name: &str, port: u16) -> u64 {
        self.create_db_with(json!({"name": name, "port": port, "replication": true})).await
    }

    /// Creates a database from `body`; its uid.
    async fn create_db_with(&self, body: Value) -> u64 {
        let admin = self.members[0].admin();
        let (status, created) = api(&admin, Method::POST, "/v1/bdbs", Some(body)).await.expect("POST /v1/bdbs");
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["uid"].as_u64().expect("uid")
    }

    /// The node holding the database's master and the one holding its
    /// replica, as `asker` sees the configuration.
    async fn roles(&self, asker: u64, uid: u64) -> Option<(u64, u64, u64)> {
        let shards = get(&self.member(asker).admin(), "/v1/shards").await?;
        let copies: Vec<&Value> = shards.as_array()?.iter().filter(|s| s["bdb_uid"] == uid).collect();
        let node = |role: &str| copies.iter().find(|s| s["role"] == role).and_then(|s| s["node_uid"].as_u64());
        let epoch = copies.first()?["epoch"].as_u64()?;
        Some((node("master")?, node("replica")?, epoch))
    }

    /// Fails the master shard of database `uid` over to its replica through
    /// node `via`'s admin API (`POST .../actions/failover`).
    async fn manual_failover(&self, via: u64, uid: u64) {
        let admin = self.member(via).admin();
        let shards = get(&admin, "/v1/shards").await.expect("shards");
        let copy =
            shards.as_array().unwrap().iter().find(|s| s["bdb_uid"] == uid && s["role"] == "master").unwrap()["uid"]
                .clone();
        let path = format!("/v1/bdbs/{uid}/actions/failover");
        let (status, body) =
            api(&admin, Method::POST, &path, Some(json!({"shard_uid": copy}))).await.expect("failover");
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// Waits until node `id` serves database `uid` as its master, unfenced.
    async fn serves_unfenced(&self, what: &str, id: u64, uid: u64) {
        converges(what, || async {
            let local = self.local(id, uid).await?;
            (local["role"] == "master" && local["fenced"] == false).then_some(())
        })
        .await;
    }

    /// The local status of database `uid` on node `id` (`endpoint_status`).
    async fn local(&self, id: u64, uid: u64) -> Option<Value> {
        let bdb = get(&self.member(id).admin(), &format!("/v1/bdbs/{uid}")).await?;
        let status = bdb.get("endpoint_status")?;
        (!status.is_null()).then(|| status.clone())
    }
}

async fn connect(addr: SocketAddr) -> Option<Client> {
    let stream = timeout(Duration::from_secs(1), TcpStream::connect(addr)).await.ok()?.ok()?;
    Some(Client { stream, input: Vec::new() })
}

/// One command on a fresh connection, `None` if it could not be sent or
/// answered within a second.
async fn try_cmd(addr: SocketAddr, args: &[&str]) -> Option<Resp> {
    let mut client = connect(addr).await?;
    client.send(&common::encode(args)).await;
    timeout(Duration::from_secs(1), client.read()).await.ok()
}

/// Waits until `id`'s node holds a replica of `uid` whose link is up and
/// whose offset reached the master's; its local status.
async fn caught_up_replica(cluster: &Cluster, id: u64, master: u64, uid: u64) -> Value {
    converges("the replica is linked and caught up", || async {
        let replica = cluster.local(id, uid).await?;
        let primary = cluster.local(master, uid).await?;
        let caught_up = replica["role"] == "replica"
            && replica["link"] == "up"
            && replica["offset"].as_u64()? == primary["repl_offset"].as_u64()?;
        caught_up.then_some(replica)
    })
    .await
}

/// A connection to the master at `at`, once it accepts writes.
async fn writable_master(at: SocketAddr) -> Client {
    converges("the master accepts writes", || async {
        (try_cmd(at, &["SET", "probe", "1"]).await? == common::ok()).then_some(())
    })
    .await;
    connect(at).await.expect("connect to the master")
}

fn addr(member: &Member, port: u16) -> SocketAddr {
    SocketAddr::new(member.host, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_its_node_rejoins_as_a_replica() {
    let mut cluster = Cluster::start("kill", 41).await;
    let port = free_port();
    let uid = cluster.create_db("orders", port).await;
    let (master, replica, epoch) = converges("the shard is placed", || cluster.roles(1, uid)).await;
    assert_ne!(master, replica, "copies on distinct nodes");

    let at = addr(cluster.member(master), port);
    let mut client = converges("the master serves", || connect(at)).await;
    converges("the master accepts writes", || async {
        let mut c = connect(at).await?;
        (c.cmd(&["SET", "probe", "1"]).await == common::ok()).then_some(())
    })
    .await;
    for i in 0..200 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), &format!("v{i}")]).await, common::ok());
        client.cmd(&["INCR", "counter"]).await;
    }
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1), "the replica acknowledged");
    let info = client.cmd(&["INFO", "replication"]).await.text();
    assert!(info.contains("role:master") && info.contains("connected_slaves:1"), "{info}");
    // Clients of the other two nodes go through their proxies.
    let other = 6 - master - replica;
    let mut via_replica =
        converges("the replica's node proxies", || connect(addr(cluster.member(replica), port))).await;
    let mut via_other = converges("the third node proxies", || connect(addr(cluster.member(other), port))).await;
    assert_eq!(via_other.cmd(&["SET", "proxied", "yes"]).await, common::ok());
    assert_eq!(via_replica.cmd(&["GET", "proxied"]).await, common::bulk("yes"), "both reach the one master");
    assert_eq!(via_other.cmd(&["WAIT", "1", "10000"]).await, common::int(1));
    let before = caught_up_replica(&cluster, replica, master, uid).await;
    assert_eq!(before["keys"], 203, "{before}");
    assert!(before["full_syncs"].as_u64() >= Some(1), "a new replica starts with a full sync: {before}");

    // SIGKILL the master's node.
    let killed = Instant::now();
    cluster.member_mut(master).child.take();
    let survivor = replica;
    let (promoted, _, new_epoch) = converges("the replica is promoted", || async {
        let (m, r, e) = cluster.roles(survivor, uid).await?;
        (m == replica && e > epoch).then_some((m, r, e))
    })
    .await;
    let new_at = addr(cluster.member(promoted), port);
    converges("the new master takes writes", || async {
        (try_cmd(new_at, &["SET", "after", "1"]).await? == common::ok()).then_some(())
    })
    .await;
    println!("failover after SIGKILL: {} ms (failover timeout {FAILOVER_TIMEOUT_MS} ms)", killed.elapsed().as_millis());

    let mut client = connect(new_at).await.expect("connect to the new master");
    for i in 0..200 {
        assert_eq!(client.cmd(&["GET", &format!("k{i}")]).await, common::bulk(format!("v{i}")), "k{i} survived");
    }
    assert_eq!(client.cmd(&["GET", "counter"]).await, common::bulk("200"));
    assert_eq!(client.cmd(&["INCR", "counter"]).await, common::int(201), "the counter continues");
    // The clients of the surviving nodes kept their connections: their
    // proxies follow the new master.
    for (name, via) in [("the third node's", &mut via_other), ("the promoted node's", &mut via_replica)] {
        let mut tries = 0;
        loop {
            match via.cmd(&["INCR", "counter"]).await {
                Resp::Int(_) => break,
                Resp::Error(e) if e.starts_with("TRYAGAIN") && tries < 5 => tries += 1,
                other => panic!("{name} client after the failover: {other:?}"),
            }
        }
        assert_eq!(via.cmd(&["GET", "proxied"]).await, common::bulk("yes"), "{name} client reads the new master");
    }
    let nodes = get(&cluster.member(survivor).admin(), &format!("/v1/nodes/{master}")).await.expect("node");
    assert_eq!(nodes["status"], "failed", "{nodes}");

    // Restart the killed node: it rejoins as a replica of the new master.
    cluster.member_mut(master).spawn(None);
    let rejoined = caught_up_replica(&cluster, master, promoted, uid).await;
    assert_eq!(rejoined["epoch"], new_epoch, "{rejoined}");
    assert_eq!(rejoined["keys"], 204, "{rejoined}");
    assert!(rejoined["full_syncs"].as_u64() >= Some(1), "a restarted node has no history: {rejoined}");
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1), "the rejoined replica acknowledges");
    let admin = cluster.member(survivor).admin();
    converges("the node is active again", || async {
        (get(&admin, &format!("/v1/nodes/{master}")).await?["status"] == "active").then_some(())
    })
    .await;
    let proxied = try_cmd(addr(cluster.member(master), port), &["GET", "after"]).await;
    assert_eq!(proxied, Some(common::bulk("1")), "the rejoined node proxies to the new master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_resumes_the_old_master_partially() {
    let cluster = Cluster::start("manual", 44).await;
    let port = free_port();
    let uid = cluster.create_db("carts", port).await;
    let (master, replica, _) = converges("the shard is placed", || cluster.roles(2, uid)).await;
    let at = addr(cluster.member(master), port);
    let mut client = writable_master(at).await;
    for i in 0..50 {
        client.cmd(&["SADD", "members", &format!("m{i}")]).await;
    }
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1));
    caught_up_replica(&cluster, replica, master, uid).await;

    // A writer without WAIT runs through the failover: the old master hands
    // over (fenced, its log acknowledged by the replica) before the replica
    // takes over, so every write it acknowledged survives.
    let mut writer = connect(at).await.expect("connect the writer");
    let writing = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Raw reads: the connection may end (reset) when the old master
        // stops, which simply ends the writes.
        let mut acked = 0usize;
        'writes: for i in 0..20_000 {
            if writer.stream.write_all(&common::encode(&["SET", &format!("w{i}"), "1"])).await.is_err() {
                break;
            }
            let reply = loop {
                if let Some((reply, used)) = common::decode(&writer.input, 0) {
                    writer.input.drain(..used);
                    break reply;
                }
                match timeout(Duration::from_secs(3), writer.stream.read_buf(&mut writer.input)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break 'writes,
                }
            };
            match reply {
                Resp::Simple(ok) if ok == "OK" => acked = i + 1,
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.manual_failover(3, uid).await;
    let acked = writing.await.expect("the writer");
    assert!(acked > 0, "the writer wrote before the failover");
    let new_at = addr(cluster.member(replica), port);
    // Until the promoted node serves the port itself, its proxy forwards to
    // the old master: wait for the promotion to be served there.
    cluster.serves_unfenced("the promoted replica serves, unfenced", replica, uid).await;
    assert_eq!(try_cmd(new_at, &["SET", "after", "1"]).await, Some(common::ok()));
    let mut client = connect(new_at).await.expect("connect");
    assert_eq!(client.cmd(&["SADD", "members", "m50"]).await, common::int(1));
    let old = caught_up_replica(&cluster, master, replica, uid).await;
    assert_eq!(old["partial_syncs"], 1, "the old master resumed its history: {old}");
    assert_eq!(old["full_syncs"], 0, "{old}");
    for i in 0..acked {
        assert_eq!(client.cmd(&["GET", &format!("w{i}")]).await, common::bulk("1"), "w{i} was acknowledged");
    }
    println!("manual failover: {acked} writes acknowledged without WAIT by the old master, all on the new one");
    assert!(old["keys"].as_u64() >= Some(3 + acked as u64), "{old}");
    assert_eq!(client.cmd(&["SCARD", "members"]).await, common::int(51));
    let info = client.cmd(&["INFO", "replication"]).await.text();
    assert!(info.contains("connected_slaves:1") && !info.contains("second_repl_offset:-1"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_master_refuses_writes_once_its_shard_failed_over() {
    let cluster = Cluster::start("isolate", 47).await;
    let port = free_port();
    let uid = cluster.create_db("ledger", port).await;
    let (master, replica, epoch) = converges("the shard is placed", || cluster.roles(1, uid)).await;
    let at = addr(cluster.member(master), port);
    let mut client = writable_master(at).await;
    assert_eq!(client.cmd(&["SET", "balance", "100"]).await, common::ok());
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1));

    // Isolate the master's node: it stops answering (and stops everything
    // else) until resumed.
    let pid = cluster.member(master).pid().to_string();
    let stopped = Command::new("kill").args(["-STOP", &pid]).status().expect("kill -STOP");
    assert!(stopped.success());
    let isolated = Instant::now();
    // SIGSTOP takes effect asynchronously: a write sent before every thread
    // stopped may be answered before the isolation (and, sent without WAIT,
    // is then in the documented loss window, not this test's subject).
    converges("every thread of the master's node stopped", || async {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let all_stopped = tasks.filter_map(Result::ok).all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        });
        all_stopped.then_some(())
    })
    .await;
    // A write sent to the isolated master while its shard fails over.
    client.send(&common::encode(&["SET", "balance", "0"])).await;
    let new_at = addr(cluster.member(replica), port);
    converges("the replica is promoted and takes writes", || async {
        let (m, _, e) = cluster.roles(replica, uid).await?;
        (m == replica && e > epoch).then_some(())?;
        (try_cmd(new_at, &["SET", "balance", "150"]).await? == common::ok()).then_some(())
    })
    .await;
    println!("failover of an isolated master: {} ms", isolated.elapsed().as_millis());
    let resumed = Command::new("kill").args(["-CONT", &pid]).status().expect("kill -CONT");
    assert!(resumed.success());

    // The write waiting for the old master is refused (or its connection
    // closed when the node steps down): never acknowledged.
    let mut reply = Vec::new();
    let answered = timeout(Duration::from_secs(20), client.stream.readable()).await;
    if answered.is_ok() {
        use tokio::io::AsyncReadExt;
        let _ = timeout(Duration::from_secs(5), client.stream.read_buf(&mut reply)).await;
    }
    let reply = String::from_utf8_lossy(&reply).to_string();
    assert!(
        reply.is_empty() || reply.starts_with("-CLUSTERDOWN"),
        "the isolated master acknowledged a write: {reply:?}"
    );
    let rejoined = caught_up_replica(&cluster, master, replica, uid).await;
    assert_eq!(rejoined["role"], "replica", "{rejoined}");
    assert_eq!(try_cmd(new_at, &["GET", "balance"]).await, Some(common::bulk("150")), "nothing lost or resurrected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_proxies_what_it_does_not_master_and_follows_a_manual_failover() {
    let cluster = Cluster::start("proxy", 50).await;
    let port = free_port();
    let body = json!({"name": "accounts", "port": port, "replication": true, "password": "s3cret"});
    let uid = cluster.create_db_with(body).await;
    let (master, replica, _) = converges("the shard is placed", || cluster.roles(1, uid)).await;
    let other = 6 - master - replica;
    cluster.serves_unfenced("the master serves, unfenced", master, uid).await;
    let proxy_at = addr(cluster.member(other), port);
    let mut client = converges("the third node proxies", || connect(proxy_at)).await;

    // Authentication, RESP3, pipelining, transactions and pub/sub all pass
    // through the proxy as on the master.
    assert!(matches!(client.cmd(&["GET", "k"]).await, Resp::Error(e) if e.starts_with("NOAUTH")));
    assert!(matches!(client.cmd(&["AUTH", "wrong"]).await, Resp::Error(e) if e.starts_with("WRONGPASS")));
    let hello = client.cmd(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "app"]).await;
    assert!(matches!(hello, Resp::Map(_)), "{hello:?}");
    let mut pipeline = Vec::new();
    for _ in 0..1000 {
        pipeline.extend_from_slice(&common::encode(&["INCR", "hits"]));
    }
    client.send(&pipeline).await;
    for n in 1..=1000 {
        assert_eq!(client.read().await, common::int(n));
    }
    assert_eq!(client.cmd(&["MULTI"]).await, common::ok());
    assert_eq!(client.cmd(&["INCRBY", "hits", "10"]).await, Resp::Simple("QUEUED".into()));
    assert_eq!(client.cmd(&["EXEC"]).await, Resp::Array(vec![common::int(1010)]));
    let name = client.cmd(&["CLIENT", "GETNAME"]).await;
    assert_eq!(name, common::bulk("app"));
    let mut subscriber = connect(proxy_at).await.expect("connect");
    subscriber.cmd(&["AUTH", "s3cret"]).await;
    assert!(matches!(subscriber.cmd(&["SUBSCRIBE", "news"]).await, Resp::Array(_)));
    assert_eq!(client.cmd(&["PUBLISH", "news", "hello"]).await, common::int(1));
    let message = subscriber.read().await;
    assert_eq!(
        message,
        Resp::Array(vec![common::bulk("message"), common::bulk("news"), common::bulk("hello")]),
        "a published message reaches the proxied subscriber"
    );
    let status = cluster.local(other, uid).await.expect("the proxy's status");
    assert_eq!(status["role"], "proxy", "{status}");
    assert_eq!(status["clients"], 2, "{status}");

    // A manual failover: the authenticated RESP3 client of the proxy keeps
    // its connection, its name and its protocol.
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1));
    cluster.manual_failover(1, uid).await;
    cluster.serves_unfenced("the promoted replica serves, unfenced", replica, uid).await;
    let mut tries = 0;
    let hits = loop {
        match client.cmd(&["INCR", "hits"]).await {
            Resp::Int(n) => break n,
            Resp::Error(e) if (e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN")) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the proxied client after the failover: {other:?}"),
        }
    };
    assert_eq!(hits, 1011, "the new master has every acknowledged increment");
    assert_eq!(client.cmd(&["CLIENT", "GETNAME"]).await, common::bulk("app"), "the name was replayed");
    let info = client.cmd(&["INFO", "replication"]).await;
    assert!(info.text().contains("role:master"), "served by the new master");
    let status = cluster.local(other, uid).await.expect("the proxy's status");
    assert_eq!(status["master"], addr(cluster.member(replica), port).to_string(), "{status}");
}

/// A key of each shard of a database split into `shards` even slot ranges:
/// `{prefix}` keys whose slots fall in shard 0, 1, 2...
fn key_in_shard(prefix: &str, shard: usize, shards: usize) -> String {
    let ranges = meridian_replication::slot::split_slots(shards as u16);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| ranges[shard].contains(&meridian_replication::slot::key_slot(k.as_bytes())))
        .expect("some key lands in every shard")
}

/// The node mastering shard `index` (slot order) of database `uid`.
async fn shard_master(cluster: &Cluster, asker: u64, uid: u64, index: usize) -> Option<(u64, u64)> {
    let shards = get(&cluster.member(asker).admin(), "/v1/shards").await?;
    let mut masters: Vec<(u64, u64, u64)> = shards
        .as_array()?
        .iter()
        .filter(|s| s["bdb_uid"] == uid && s["role"] == "master")
        .map(|s| {
            (
                s["assigned_slots"][0]["start"].as_u64().unwrap(),
                s["node_uid"].as_u64().unwrap(),
                s["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    masters.sort_unstable();
    masters.get(index).map(|&(_, node, epoch)| (node, epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_database_is_routed_by_slot_from_every_node_and_survives_a_killed_master() {
    let mut cluster = Cluster::start("sharded", 53).await;
    let port = free_port();
    let uid =
        cluster.create_db_with(json!({"name": "wide", "port": port, "shards_count": 3, "replication": true})).await;
    let keys: Vec<String> = (0..3).map(|s| key_in_shard("key", s, 3)).collect();
    let mut masters = Vec::new();
    for index in 0..3 {
        masters.push(converges("every shard is placed", || shard_master(&cluster, 1, uid, index)).await.0);
    }
    let mut sorted = masters.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![1, 2, 3], "one master shard per node");

    // Every node routes every key.
    for member in &cluster.members {
        let at = addr(member, port);
        for key in &keys {
            converges("the node routes the key's shard", || async {
                (try_cmd(at, &["SET", key, "x"]).await? == common::ok()).then_some(())
            })
            .await;
        }
    }
    let at = addr(cluster.member(1), port);
    let mut client = connect(at).await.expect("connect to node 1");
    for i in 0..300 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), &format!("v{i}")]).await, common::ok());
    }
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1), "every shard's replica acknowledged");
    assert_eq!(client.cmd(&["DBSIZE"]).await, common::int(303), "DBSIZE adds the shards up");
    let info = client.cmd(&["INFO", "keyspace"]).await.text();
    assert!(info.contains("db0:keys=303,"), "{info}");

    // Multi-key commands split over shards and merge in the client's order.
    let mget = client.cmd(&["MGET", &keys[2], "k1", &keys[0], "missing", &keys[1]]).await;
    assert_eq!(
        mget,
        Resp::Array(vec![common::bulk("x"), common::bulk("v1"), common::bulk("x"), common::nil(), common::bulk("x")])
    );
    let (a, b, c) = (key_in_shard("m", 0, 3), key_in_shard("m", 1, 3), key_in_shard("m", 2, 3));
    assert_eq!(client.cmd(&["MSET", &a, "1", &b, "2", &c, "3"]).await, common::ok());
    assert_eq!(client.cmd(&["EXISTS", &a, &b, &c, "nope", &a]).await, common::int(4));
    assert_eq!(
        client.cmd(&["MGET", &c, &b, &a]).await,
        Resp::Array(vec![common::bulk("3"), common::bulk("2"), common::bulk("1")])
    );
    assert_eq!(client.cmd(&["DEL", &a, &b, &c]).await, common::int(3));
    let crossslot = common::error("CROSSSLOT Keys in request don't hash to the same slot");
    assert_eq!(client.cmd(&["RENAME", &keys[0], &keys[1]]).await, crossslot, "not splittable");
    assert_eq!(client.cmd(&["MSETNX", &keys[0], "1", &keys[1], "2"]).await, crossslot);
    assert_eq!(client.cmd(&["RENAME", "{t}a", "{t}b"]).await, common::error("ERR no such key"), "same slot: runs");
    // SCAN walks every shard; KEYS too.
    let mut cursor = "0".to_string();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let reply = client.cmd(&["SCAN", &cursor, "COUNT", "50"]).await;
        let items = reply.items();
        cursor = String::from_utf8(items[0].bytes().to_vec()).unwrap();
        seen.extend(items[1].items().iter().map(|k| k.text()));
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 303, "SCAN saw every key once");
    assert_eq!(client.cmd(&["KEYS", "k[0-9]*"]).await.items().len(), 300);
    // Transactions run on the shard of their keys.
    assert_eq!(client.cmd(&["MULTI"]).await, common::ok());
    assert_eq!(client.cmd(&["INCR", "{acct}n"]).await, common::simple("QUEUED"));
    assert_eq!(client.cmd(&["INCR", "{acct}m"]).await, common::simple("QUEUED"));
    assert_eq!(client.cmd(&["EXEC"]).await, Resp::Array(vec![common::int(1), common::int(1)]));
    assert_eq!(client.cmd(&["MULTI"]).await, common::ok());
    assert_eq!(client.cmd(&["SET", &keys[0], "t"]).await, common::simple("QUEUED"));
    assert_eq!(client.cmd(&["SET", &keys[1], "t"]).await, crossslot);
    assert_eq!(
        client.cmd(&["EXEC"]).await,
        common::error("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(client.cmd(&["GET", &keys[0]]).await, common::bulk("x"), "the aborted transaction did nothing");
    // The OSS Cluster API, proxy mode: this endpoint owns every slot.
    assert_eq!(client.cmd(&["CLUSTER", "KEYSLOT", "foo"]).await, common::int(12182));
    let slots = client.cmd(&["CLUSTER", "SLOTS"]).await;
    assert_eq!(slots.items().len(), 1, "{slots:?}");
    assert_eq!(slots.items()[0].items()[2].items()[1], common::int(i64::from(port)));
    assert!(client.cmd(&["CLUSTER", "INFO"]).await.text().contains("cluster_state:ok"));
    // Each node holds one shard's keys.
    for id in 1..=3 {
        let local = converges("the node's shards", || cluster.local(id, uid)).await;
        let held = local["local_shards"].as_array().cloned().unwrap_or_default();
        assert!(held.iter().any(|s| s["role"] == "master" && s["keys"].as_u64() > Some(50)), "node {id}: {local}");
    }

    // Pub/sub is region-wide: subscribed through one node, published
    // through another.
    let mut subscriber = connect(addr(cluster.member(2), port)).await.expect("connect to node 2");
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]).await,
        Resp::Array(vec![common::bulk("subscribe"), common::bulk("news"), common::int(1)])
    );
    let mut publisher = connect(addr(cluster.member(3), port)).await.expect("connect to node 3");
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hi"]).await, common::int(1));
    assert_eq!(
        subscriber.read().await,
        Resp::Array(vec![common::bulk("message"), common::bulk("news"), common::bulk("hi")])
    );
    drop((subscriber, publisher));

    // A client of another node, and SIGKILL of the master of the last shard.
    let victim = masters[2];
    let survivor = if victim == 1 { 2 } else { 1 };
    let at = addr(cluster.member(survivor), port);
    let mut client = connect(at).await.expect("connect to a surviving node");
    assert_eq!(client.cmd(&["GET", "k7"]).await, common::bulk("v7"));
    let (_, epoch) = shard_master(&cluster, survivor, uid, 2).await.unwrap();
    let killed = Instant::now();
    cluster.member_mut(victim).child.take();
    converges("the shard fails over", || async {
        let (node, e) = shard_master(&cluster, survivor, uid, 2).await?;
        (node != victim && e > epoch).then_some(())
    })
    .await;
    let mut tries = 0;
    loop {
        match client.cmd(&["SET", &keys[2], "after"]).await {
            Resp::Simple(ok) if ok == "OK" => break,
            Resp::Error(e) if (e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN")) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("a write to the failed-over shard: {other:?}"),
        }
    }
    println!(
        "sharded failover after SIGKILL: {} ms (failover timeout {FAILOVER_TIMEOUT_MS} ms)",
        killed.elapsed().as_millis()
    );
    for i in 0..300 {
        assert_eq!(client.cmd(&["GET", &format!("k{i}")]).await, common::bulk(format!("v{i}")), "k{i} survived");
    }
    assert_eq!(client.cmd(&["DBSIZE"]).await, common::int(305));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oss_cluster_database_redirects_to_each_shards_master() {
    let cluster = Cluster::start("oss", 56).await;
    let port = free_port();
    let uid =
        cluster.create_db_with(json!({"name": "oss", "port": port, "shards_count": 3, "oss_cluster": true})).await;
    let mut masters = Vec::new();
    for index in 0..3 {
        masters.push(converges("every shard is placed", || shard_master(&cluster, 1, uid, index)).await.0);
    }
    let at = addr(cluster.member(1), port);
    let slots = converges("node 1 routes", || async {
        let reply = try_cmd(at, &["CLUSTER", "SLOTS"]).await?;
        (reply.items().len() == 3).then_some(reply)
    })
    .await;
    for (index, range) in slots.items().iter().enumerate() {
        let host = cluster.member(masters[index]).host.to_string();
        assert_eq!(range.items()[2].items()[0], common::bulk(host), "{slots:?}");
    }
    let mut client = connect(at).await.expect("connect");
    for (index, &master) in masters.iter().enumerate() {
        let key = key_in_shard("o", index, 3);
        let slot = meridian_replication::slot::key_slot(key.as_bytes());
        let reply = converges("node 1 answers or redirects", || async {
            let reply = try_cmd(at, &["SET", &key, "v"]).await?;
            match &reply {
                Resp::Error(e) if !e.starts_with("MOVED") => None,
                _ => Some(reply),
            }
        })
        .await;
        if master == 1 {
            assert_eq!(reply, common::ok(), "node 1's own shard");
        } else {
            let target = addr(cluster.member(master), port);
            assert_eq!(reply, common::error(&format!("MOVED {slot} {target}")));
            converges("the redirect's target serves it", || async {
                (try_cmd(target, &["SET", &key, "v"]).await? == common::ok()).then_some(())
            })
            .await;
        }
        assert_eq!(
            client.cmd(&["MGET", &key, &format!("{key}-other")]).await,
            common::error("CROSSSLOT Keys in request don't hash to the same slot"),
            "keys of two slots, as Redis Cluster"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_nodes_replica_is_recreated_on_another_node_after_the_grace_period() {
    let mut cluster = Cluster::start_with("replica-ha", 59, &["--replica-ha-grace-ms", "1500"]).await;
    let port = free_port();
    let uid = cluster.create_db("ha", port).await;
    let (master, replica, _) = converges("the shard is placed", || cluster.roles(1, uid)).await;
    let spare = 6 - master - replica;
    let at = addr(cluster.member(master), port);
    let mut client = writable_master(at).await;
    for i in 0..100 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), "v"]).await, common::ok());
    }
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1));

    // The replica's node dies and stays away past the grace period: the
    // replica is re-created on the spare node, which catches up in full.
    let killed = Instant::now();
    cluster.member_mut(replica).child.take();
    let asker = master;
    converges("the replica moves to the spare node", || async {
        let (m, r, _) = cluster.roles(asker, uid).await?;
        (m == master && r == spare).then_some(())
    })
    .await;
    println!("replica re-created {} ms after the kill (grace 1500 ms)", killed.elapsed().as_millis());
    let moved = caught_up_replica(&cluster, spare, master, uid).await;
    assert_eq!(moved["keys"], 101, "{moved}");
    assert!(moved["full_syncs"].as_u64() >= Some(1), "{moved}");
    assert_eq!(client.cmd(&["SET", "after", "1"]).await, common::ok());
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1), "the new replica acknowledges");

    // The old node, restarted, holds no copy any more: it proxies.
    cluster.member_mut(replica).spawn(None);
    converges("the restarted node proxies", || async {
        (cluster.local(replica, uid).await?["role"] == "proxy").then_some(())
    })
    .await;
    let (m, r, _) = cluster.roles(replica, uid).await.expect("roles");
    assert_eq!((m, r), (master, spare));
}

/// A failover never promotes a replica that has not synced: the master's
/// node stops (SIGSTOP) while its only replica's node restarts, so the
/// replica's copy is empty; the master is declared failed but keeps the
/// shard, and once it resumes it serves every write acknowledged before
/// and its replica catches up. (Promoting the empty copy replaced the
/// whole database: the old master, back, followed it and dropped its
/// data.) An operator's failover to it is refused as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_only_replica_never_synced_keeps_its_shard_through_a_failure() {
    let mut cluster = Cluster::start("unsynced", 62).await;
    let port = free_port();
    let uid = cluster.create_db("kept", port).await;
    let (master, replica, epoch) = converges("the shard is placed", || cluster.roles(1, uid)).await;
    let third = 6 - master - replica;
    let at = addr(cluster.member(master), port);
    let mut client = writable_master(at).await;
    for i in 0..100 {
        assert_eq!(client.cmd(&["SET", &format!("k{i}"), &i.to_string()]).await, common::ok());
    }
    assert_eq!(client.cmd(&["WAIT", "1", "10000"]).await, common::int(1));
    drop(client);

    let pid = cluster.member(master).pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill -STOP").success());
    // The replica's node restarts: its copy is empty and cannot sync while
    // the master is stopped.
    cluster.member_mut(replica).child.take();
    cluster.member_mut(replica).spawn(None);
    let third_admin = cluster.member(third).admin();
    converges("the stopped master's node is declared failed", || async {
        let node = get(&third_admin, &format!("/v1/nodes/{master}")).await?;
        (node["status"] == "failed").then_some(())
    })
    .await;
    converges("the restarted replica's node answers", || async {
        let node = get(&third_admin, &format!("/v1/nodes/{replica}")).await?;
        (node["status"] == "active").then_some(())?;
        get(&cluster.member(replica).admin(), "/v1/cluster").await
    })
    .await;
    // Failure detection runs every tenth of the timeout: a few timeouts give
    // it every chance to act on the failed node.
    tokio::time::sleep(Duration::from_millis(FAILOVER_TIMEOUT_MS * 4)).await;
    assert_eq!(
        cluster.roles(third, uid).await,
        Some((master, replica, epoch)),
        "the shard stays with its stopped master rather than an empty replica"
    );
    // Nor does an operator's failover promote it.
    let shards = get(&third_admin, "/v1/shards").await.expect("the shards");
    let copy = shards
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["bdb_uid"] == uid && s["role"] == "replica")
        .and_then(|s| s["uid"].as_u64())
        .expect("the replica copy");
    let path = format!("/v1/bdbs/{uid}/actions/failover");
    let (status, refused) = api(&third_admin, Method::POST, &path, Some(json!({ "shard_uid": copy })))
        .await
        .expect("the admin API answers");
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["description"].as_str().is_some_and(|d| d.contains("has not synced")), "{refused}");
    assert_eq!(cluster.roles(third, uid).await, Some((master, replica, epoch)));

    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill -CONT").success());
    converges("the master serves again", || async {
        (try_cmd(at, &["SET", "probe", "2"]).await? == common::ok()).then_some(())
    })
    .await;
    for i in 0..100 {
        assert_eq!(
            try_cmd(at, &["GET", &format!("k{i}")]).await,
            Some(common::bulk(i.to_string())),
            "an acknowledged write survived"
        );
    }
    let synced = caught_up_replica(&cluster, replica, master, uid).await;
    assert_eq!(synced["role"], "replica", "{synced}");
    assert_eq!(synced["keys"].as_u64(), Some(101), "{synced}");
}
