//! The failover drill behind `deploy/drills/failover.sh`.
//!
//! Starts a three-node cluster of real `meridian` processes, each on its own
//! loopback address, with a database of three replicated shards; runs
//! writers through every node (pipelines of SETs, each batch acknowledged
//! with `WAIT 1`); then, round after round, SIGKILLs the node holding one
//! shard's master and measures the time from the kill to the first
//! successful write to that shard through a surviving node, restarts the
//! killed node and waits for it to rejoin. At the end every write
//! acknowledged with `WAIT 1` is read back. Optionally it measures the
//! throughput of `redis-benchmark` through the cluster against a single
//! `redis-server` in the same run. The last line is
//! `failover_ms=<p99> lost_acked=<count>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use meridian_cluster::ctl::{Method, StatusCode, request};
use meridian_replication::slot::{key_slot, split_slots};
use meridian_tests::{admin_get, free_port, until};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(about = "Kill-the-master drill of a three-node Meridian cluster")]
struct Args {
    /// The `meridian` binary.
    #[arg(long)]
    binary: PathBuf,
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The nodes' addresses are 127.0.0.<base>, +1, +2.
    #[arg(long, default_value_t = 71)]
    base: u8,
    /// The nodes' failover timeout.
    #[arg(long, default_value_t = 600)]
    failover_timeout_ms: u64,
    /// Writer connections during the drill.
    #[arg(long, default_value_t = 6)]
    writers: usize,
    /// redis-benchmark requests per throughput row (0: no throughput phase).
    #[arg(long, default_value_t = 0)]
    throughput_requests: u64,
    /// Where the nodes keep their data and logs.
    #[arg(long)]
    dir: PathBuf,
}

/// One running node.
struct Node {
    id: u64,
    host: IpAddr,
    cluster_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

impl Node {
    fn admin(&self) -> String {
        format!("http://{}:{}", self.host, self.admin_port)
    }

    fn spawn(&mut self, args: &Args, join: Option<String>) -> anyhow::Result<()> {
        let dir = args.dir.join(format!("n{}", self.id));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log"))?;
        let mut command = Command::new(&args.binary);
        command.args(["node", "--bind", &self.host.to_string(), "--port", &free_port().to_string()]);
        command.args(["--node-id", &self.id.to_string(), "--region", "drill", "--data-dir"]);
        command.arg(&dir);
        command.args(["--cluster-port", &self.cluster_port.to_string(), "--admin-port", &self.admin_port.to_string()]);
        command.args(["--sync-port", "0", "--log-level", "warn"]);
        command.args(["--failover-timeout-ms", &args.failover_timeout_ms.to_string()]);
        if let Some(join) = join {
            command.args(["--join", &join]);
        }
        let child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key whose slot is in shard `shard` of 3.
fn key_in_shard(prefix: &str, shard: usize) -> String {
    let ranges = split_slots(3);
    (0..).map(|i| format!("{prefix}{i}")).find(|k| ranges[shard].contains(&key_slot(k.as_bytes()))).expect("a key")
}

/// The node mastering each shard (slot order), as `admin` sees it.
async fn masters(admin: &str, uid: u64) -> Option<Vec<(u64, u64)>> {
    let shards = admin_get(admin, "/v1/shards").await?;
    let mut found: Vec<(u64, u64, u64)> = shards
        .as_array()?
        .iter()
        .filter(|s| s["bdb_uid"] == uid && s["role"] == "master")
        .filter_map(|s| {
            Some((s["assigned_slots"][0]["start"].as_u64()?, s["node_uid"].as_u64()?, s["epoch"].as_u64()?))
        })
        .collect();
    found.sort_unstable();
    (found.len() == 3).then(|| found.into_iter().map(|(_, node, epoch)| (node, epoch)).collect())
}

/// A connection whose commands may take up to 10 s (a WAIT 1 with a 2 s
/// timeout, a batch on a loaded machine): a slow acknowledgement is still
/// an acknowledgement the drill checks.
async fn connect(addr: SocketAddr) -> Option<redis::aio::MultiplexedConnection> {
    meridian_tests::redis_connection(addr, Duration::from_millis(500), Duration::from_secs(10)).await
}

/// One SET on a fresh connection: true if it answered OK within a second.
async fn set_once(addr: SocketAddr, key: &str) -> bool {
    let Some(mut connection) = connect(addr).await else { return false };
    let mut command = redis::cmd("SET");
    command.arg(key).arg("probe");
    let set = command.query_async::<String>(&mut connection);
    matches!(tokio::time::timeout(Duration::from_secs(1), set).await, Ok(Ok(ok)) if ok == "OK")
}

/// Writes batches of 100 SETs through `endpoints` (moving to the next on an
/// error) until `stop`; returns the keys and values acknowledged by
/// `WAIT 1`.
async fn writer(id: usize, endpoints: Arc<Mutex<Vec<SocketAddr>>>, stop: Arc<AtomicBool>) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    let mut seq = 0u64;
    let mut at = id;
    let mut connection = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(conn) = connection.as_mut() else {
            let addr = endpoints.lock().await[at % 3];
            connection = connect(addr).await;
            if connection.is_none() {
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        };
        let mut pipe = redis::pipe();
        let batch: Vec<(String, u64)> = (0..100)
            .map(|_| {
                seq += 1;
                (format!("w{id}:{seq}"), seq)
            })
            .collect();
        for (key, value) in &batch {
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        pipe.cmd("WAIT").arg(1).arg(2000);
        let sent = tokio::time::timeout(Duration::from_secs(5), pipe.query_async::<(i64,)>(conn)).await;
        match sent {
            Ok(Ok((replicas,))) if replicas >= 1 => acked.extend(batch),
            Ok(Ok(_)) => {}
            _ => {
                // TRYAGAIN, CLUSTERDOWN, a closed connection: this batch is
                // not acknowledged; go on through the next node.
                connection = None;
                at += 1;
            }
        }
    }
    acked
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let mut nodes: Vec<Node> = (0..3u8)
        .map(|i| Node {
            id: u64::from(i) + 1,
            host: IpAddr::from([127, 0, 0, args.base + i]),
            cluster_port: free_port(),
            admin_port: free_port(),
            child: None,
        })
        .collect();
    let first = format!("{}:{}", nodes[0].host, nodes[0].cluster_port);
    nodes[0].spawn(&args, None)?;
    let admin = nodes[0].admin();
    until("the first node", Duration::from_secs(30), || admin_get(&admin, "/v1/cluster")).await?;
    for node in &mut nodes[1..] {
        node.spawn(&args, Some(first.clone()))?;
    }
    for node in &nodes {
        let admin = node.admin();
        until("three voters", Duration::from_secs(60), || async {
            let state = admin_get(&admin, "/v1/cluster").await?;
            let voters = state["raft"]["voters"].as_array()?.len();
            (voters == 3 && state["raft"]["leader_id"].as_u64().is_some()).then_some(())
        })
        .await?;
    }
    let port = free_port();
    let spec = json!({"name": "drill", "port": port, "shards_count": 3, "replication": true});
    let (status, created) = request(Method::POST, &format!("{admin}/v1/bdbs"), Some(spec)).await?;
    if status != StatusCode::CREATED {
        bail!("cannot create the drill database: {created}");
    }
    let uid = created["uid"].as_u64().context("a uid")?;
    let endpoints: Vec<SocketAddr> = nodes.iter().map(|n| SocketAddr::new(n.host, port)).collect();
    let probes: Vec<String> = (0..3).map(|s| key_in_shard("probe", s)).collect();
    for addr in &endpoints {
        for key in &probes {
            until("every node to route every shard", Duration::from_secs(60), || async {
                set_once(*addr, key).await.then_some(())
            })
            .await?;
        }
    }
    println!(
        "cluster up: 3 nodes on 127.0.0.{}-{}, database port {port}, 3 shards with replicas",
        args.base,
        args.base + 2
    );

    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Mutex::new(endpoints.clone()));
    let writers: Vec<_> = (0..args.writers).map(|w| tokio::spawn(writer(w, live.clone(), stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut times = Vec::new();
    for round in 0..args.rounds {
        let shard = round % 3;
        let asker = nodes.iter().find(|n| n.child.is_some()).map(Node::admin).context("a running node")?;
        let before = until("the shard map", Duration::from_secs(30), || masters(&asker, uid)).await?;
        let (victim, epoch) = before[shard];
        let survivor = nodes.iter().find(|n| n.id != victim).map(|n| n.id).expect("two survivors");
        let via = endpoints[(survivor - 1) as usize];
        let killed = Instant::now();
        let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        nodes[(victim - 1) as usize].kill();
        let key = &probes[shard];
        // Polled every 5 ms (a fresh connection each time, as a client
        // that lost its own would).
        while !set_once(via, key).await {
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("no write to shard {} succeeded within 30 s of the kill", shard + 1);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = killed.elapsed().as_millis() as u64;
        let after = masters(&admin_of(&nodes, survivor), uid).await.unwrap_or_default();
        println!(
            "round {}: killed node {victim} at {}.{:03} (master of shard {} at epoch {epoch}); first write after {elapsed} ms, new master node {:?}",
            round + 1,
            killed_at.as_secs() % 86_400,
            killed_at.subsec_millis(),
            shard + 1,
            after.get(shard).map(|m| m.0)
        );
        times.push(elapsed);
        // Restart it and let it rejoin as a replica before the next round.
        nodes[(victim - 1) as usize].spawn(&args, None)?;
        let asker = admin_of(&nodes, survivor);
        until("the killed node to rejoin", Duration::from_secs(60), || async {
            let node = admin_get(&asker, &format!("/v1/nodes/{victim}")).await?;
            (node["status"] == "active").then_some(())
        })
        .await?;
        let restarted = admin_of(&nodes, victim);
        until("its replicas to catch up", Duration::from_secs(60), || async {
            let bdb = admin_get(&restarted, &format!("/v1/bdbs/{uid}")).await?;
            let held = bdb["endpoint_status"]["local_shards"].as_array()?.clone();
            held.iter().all(|s| s["role"] != "replica" || s["link"] == "up").then_some(())
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for writer in writers {
        acked.extend(writer.await?);
    }
    let mut reader = until("a connection to read back", Duration::from_secs(10), || connect(endpoints[0])).await?;
    let mut lost = 0usize;
    let keys: Vec<(&String, &u64)> = acked.iter().collect();
    for chunk in keys.chunks(500) {
        let names: Vec<&String> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&names).query_async(&mut reader).await?;
        lost += chunk.iter().zip(values).filter(|((_, v), got)| *got != Some(**v)).count();
    }
    times.sort_unstable();
    let p99 = times[((times.len() * 99).div_ceil(100)).saturating_sub(1)];
    println!(
        "{} rounds: failover ms min {} median {} max {}; {} writes acknowledged with WAIT 1, {lost} lost",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        acked.len()
    );

    if args.throughput_requests > 0 {
        throughput(&args, endpoints[0]).await?;
    }
    println!("failover_ms={p99} lost_acked={lost}");
    if lost > 0 {
        bail!("{lost} acknowledged writes were lost");
    }
    Ok(())
}

fn admin_of(nodes: &[Node], id: u64) -> String {
    nodes[(id - 1) as usize].admin()
}

/// redis-benchmark's SET and GET through the cluster (node 1's endpoint)
/// and against one redis-server, in the same run; prints the ratios.
async fn throughput(args: &Args, cluster: SocketAddr) -> anyhow::Result<()> {
    let redis_port = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis_port));
    until("redis-server", Duration::from_secs(10), || connect(redis_addr)).await?;
    println!("throughput (redis-benchmark -c 50 -n {}, ops/s):", args.throughput_requests);
    println!("{:<6} {:>3} {:>14} {:>14} {:>7}", "test", "-P", "cluster", "redis-server", "ratio");
    for pipeline in [1, 16] {
        let ours = benchmark(cluster, args.throughput_requests, pipeline)?;
        let theirs = benchmark(redis_addr, args.throughput_requests, pipeline)?;
        for (test, rps) in &ours {
            let base = theirs.get(test).copied().unwrap_or(f64::NAN);
            println!("{test:<6} {pipeline:>3} {rps:>14.0} {base:>14.0} {:>7.2}", rps / base);
        }
    }
    let _ = redis.kill();
    let _ = redis.wait();
    Ok(())
}

/// Requests per second of SET and GET from `redis-benchmark --csv`.
fn benchmark(addr: SocketAddr, requests: u64, pipeline: u32) -> anyhow::Result<BTreeMap<String, f64>> {
    let output = Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-c", "50", "-n", &requests.to_string(), "-P", &pipeline.to_string()])
        .args(["-t", "set,get", "-r", "100000", "--csv"])
        .output()
        .context("run redis-benchmark (apt-get install redis-tools)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
        if let [test, rps, ..] = fields.as_slice()
            && let Ok(rps) = rps.parse::<f64>()
        {
            rows.insert(test.to_string(), rps);
        }
    }
    if rows.is_empty() {
        bail!("redis-benchmark printed no rows for {addr}: {text}");
    }
    Ok(rows)
}
