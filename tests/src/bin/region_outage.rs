//! The regional failover drill behind `deploy/drills/region-outage.sh`.
//!
//! Region A is a three-node cluster of real `meridian` processes, region B
//! one node, each node on its own loopback address and with its own data
//! directory; an active-active database spans them. An application writes to
//! A (pipelines of SETs of unique keys through every node of A), every node
//! of A is SIGKILLed at once, the application notices, switches to B and
//! keeps writing there. A is restarted with the same directories and ports:
//! it recovers its data from disk, and the WAN links catch it up from B and B
//! up from A. The drill then checks that every write B acknowledged is
//! readable in A, and counts the writes A acknowledged that B never got (the
//! loss window of an asynchronous WAN: what A had not shipped and did not
//! bring back). The last line is
//! `region_outage_lost_b=<count> lost_a_window=<count> catchup_s=<seconds>`.
//!
//! With `--scenario master` the database is created with `--replication`
//! (an in-memory replica of each instance on another node of its region; B
//! gets a second node for it) and only the
//! node holding the instance's master is SIGKILLed: A fails the instance
//! over to its replica and tells B its new sync endpoint, the application
//! keeps writing to A through the surviving nodes, and the killed node is
//! restarted and rejoins as the replica. Every pipeline also increments a
//! counter of its writer and ends with `WAIT 1 2000`: a pipeline counts as
//! acknowledged only when the replica holds it. The drill checks that every
//! acknowledged write is readable in both regions (nothing a failover takes
//! back, DESIGN invariant 2) and that each counter, in both regions, is at
//! least the increments acknowledged and at most those sent (nothing applied
//! twice by the snapshot and stream that follow the failover). The last line
//! is `crdb_master_kill_lost=<count> failover_ms=<ms> counters_off=<count>`.
//! With `--shards N`, A's instance has N shards (masters spread over its
//! nodes, B reading one stream per shard) and the node of one master is
//! killed.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use meridian_cluster::ctl::{Method, StatusCode, request};
use meridian_tests::{admin_get, free_port, until};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Region outage drill: a three-node region A dies, the application moves to region B, A catches up")]
struct Args {
    /// The `meridian` binary.
    #[arg(long)]
    binary: PathBuf,
    /// Region A's nodes are on 127.0.0.<base>, +1, +2; region B's on +3.
    #[arg(long, default_value_t = 101)]
    base: u8,
    /// Writer connections of the application.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// SETs per pipeline (a pipeline is acknowledged when all answered OK).
    #[arg(long, default_value_t = 50)]
    batch: u64,
    /// Writes per second of the whole application (0: as fast as the
    /// regions answer).
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of writes to region A before it is killed.
    #[arg(long, default_value_t = 5.0)]
    write_s: f64,
    /// Seconds region A stays down (the application writes to B meanwhile).
    #[arg(long, default_value_t = 5.0)]
    outage_s: f64,
    /// Longest wait, in seconds, for A to serve again and hold every write B
    /// acknowledged during the outage.
    #[arg(long, default_value_t = 120)]
    catchup_timeout_s: u64,
    /// Longest wait, in seconds, for the final convergence checks.
    #[arg(long, default_value_t = 60)]
    settle_timeout_s: u64,
    /// The nodes' `--appendfsync`.
    #[arg(long, default_value = "everysec")]
    appendfsync: String,
    /// Where the nodes keep their data and logs.
    #[arg(long)]
    dir: PathBuf,
    /// `region`: every node of A dies; `master`: only the node holding A's
    /// master of a replicated instance dies (see the module doc).
    #[arg(long, default_value = "region", value_parser = ["region", "master"])]
    scenario: String,
    /// Shards of region A's instance (B's has one): with more than one, the
    /// master scenario kills the node of one of several masters, and B reads
    /// A through one stream per shard.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    shards: u16,
}

/// One `meridian node` process, restartable with the same ports and
/// directory.
struct Node {
    name: String,
    id: u64,
    region: &'static str,
    host: IpAddr,
    port: u16,
    cluster_port: u16,
    admin_port: u16,
    sync_port: u16,
    child: Option<Child>,
}

impl Node {
    fn new(name: &str, id: u64, region: &'static str, host: IpAddr) -> Node {
        Node {
            name: name.into(),
            id,
            region,
            host,
            port: free_port(),
            cluster_port: free_port(),
            admin_port: free_port(),
            sync_port: free_port(),
            child: None,
        }
    }

    fn admin(&self) -> String {
        format!("http://{}:{}", self.host, self.admin_port)
    }

    fn cluster_addr(&self) -> String {
        format!("{}:{}", self.host, self.cluster_port)
    }

    /// Starts the process (`join`: a member's cluster address, first start
    /// only; a restarted node rejoins from its data directory).
    fn spawn(&mut self, args: &Args, join: Option<&str>) -> anyhow::Result<()> {
        let dir = args.dir.join(&self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log"))?;
        let mut command = Command::new(&args.binary);
        command.args(["node", "--bind", &self.host.to_string(), "--port", &self.port.to_string()]);
        command.args(["--node-id", &self.id.to_string(), "--region", self.region, "--data-dir"]);
        command.arg(&dir);
        command.args(["--appendfsync", &args.appendfsync]);
        command.args(["--cluster-port", &self.cluster_port.to_string(), "--admin-port", &self.admin_port.to_string()]);
        command.args(["--sync-port", &self.sync_port.to_string(), "--log-level", "info"]);
        if let Some(join) = join {
            command.args(["--join", join]);
        }
        let child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends SIGKILL without waiting.
    fn signal_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
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

/// A connection whose commands may take up to 10 s (redis-rs' default is
/// 500 ms, too short for big MGETs on a loaded two-core machine).
async fn connect(addr: SocketAddr) -> Option<MultiplexedConnection> {
    meridian_tests::redis_connection(addr, Duration::from_secs(1), Duration::from_secs(10)).await
}

/// One command on a fresh connection, answered within 2 s.
async fn once<T: redis::FromRedisValue>(addr: SocketAddr, command: &redis::Cmd) -> Option<T> {
    let mut connection = connect(addr).await?;
    tokio::time::timeout(Duration::from_secs(2), command.query_async::<T>(&mut connection)).await.ok()?.ok()
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Region {
    A,
    B,
}

fn counter(writer: usize) -> String {
    format!("ro:count:{writer}")
}

fn key(writer: usize, seq: u64) -> String {
    format!("ro:{writer}:{seq}")
}

fn value(region: Region, seq: u64) -> String {
    format!("{}{seq}", if region == Region::A { 'a' } else { 'b' })
}

/// What the application saw acknowledged: (writer, first seq, last seq) per
/// acknowledged pipeline, by region.
#[derive(Default)]
struct Acks {
    a: Vec<(usize, u64, u64)>,
    b: Vec<(usize, u64, u64)>,
    /// When the first write acknowledged by B arrived.
    first_b: Option<Instant>,
    /// When the last write acknowledged by A arrived.
    last_a: Option<Instant>,
    /// Writers that gave up on A.
    switched: usize,
    /// The longest time an acknowledged pipeline took, by region.
    slowest_a: Duration,
    slowest_b: Duration,
    /// When B's slowest pipeline was acknowledged.
    slowest_b_at: Option<Instant>,
    /// Pipelines and connections to B that failed.
    b_errors: u64,
    /// Per writer, counter increments sent and acknowledged (master scenario).
    increments: Vec<(u64, u64)>,
}

impl Acks {
    fn pairs(batches: &[(usize, u64, u64)], region: Region) -> Vec<(String, String)> {
        batches
            .iter()
            .flat_map(|&(w, first, last)| (first..=last).map(move |s| (key(w, s), value(region, s))))
            .collect()
    }
}

/// What every connection of the application shares.
struct App {
    /// Region A's endpoints (every node serves the database's port).
    a: Vec<SocketAddr>,
    /// Region B's endpoint.
    b: SocketAddr,
    /// SETs per pipeline.
    batch: u64,
    /// Time between two pipelines of one connection (None: no pause).
    pace: Option<Duration>,
    acks: Mutex<Acks>,
    stop: AtomicBool,
    /// The master scenario: each pipeline also increments its writer's
    /// counter and ends with WAIT 1 (acknowledged only if the replica holds
    /// it), and writers never leave A.
    replicated: bool,
}

/// One connection of the application: pipelines of `batch` SETs of unique
/// keys to region A (starting with node `id % 3`, moving to the next node of
/// A on an error); when no node of A can be reached, it switches to B and
/// stays there. Records every acknowledged pipeline until `stop`.
async fn writer(id: usize, app: Arc<App>) {
    let mut region = Region::A;
    let mut at = id;
    let mut unreachable = 0;
    let mut seq = 0u64;
    let mut connection: Option<MultiplexedConnection> = None;
    let mut due = Instant::now();
    while !app.stop.load(Ordering::Relaxed) {
        let Some(conn) = connection.as_mut() else {
            let addr = if region == Region::A { app.a[at % app.a.len()] } else { app.b };
            connection = connect(addr).await;
            if connection.is_none() {
                if region == Region::A {
                    unreachable += 1;
                    at += 1;
                    if unreachable >= app.a.len() && app.replicated {
                        // The master scenario stays with A: its other nodes
                        // serve again once the failover is done.
                        unreachable = 0;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else if unreachable >= app.a.len() {
                        region = Region::B;
                        app.acks.lock().expect("acks").switched += 1;
                    }
                } else {
                    app.acks.lock().expect("acks").b_errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        if let Some(pace) = app.pace {
            // At most one pipeline per `pace`, without catching up on time
            // lost to a stall.
            due = (due + pace).max(Instant::now() - pace);
            tokio::time::sleep_until(due.into()).await;
        }
        let first = seq + 1;
        seq += app.batch;
        let mut pipe = redis::pipe();
        for s in first..=seq {
            pipe.cmd("SET").arg(key(id, s)).arg(value(region, s)).ignore();
        }
        let sent = Instant::now();
        let reply = if app.replicated {
            pipe.cmd("INCR").arg(counter(id)).ignore();
            pipe.cmd("WAIT").arg(1).arg(2000);
            app.acks.lock().expect("acks").increments[id].0 += 1;
            match tokio::time::timeout(Duration::from_secs(10), pipe.query_async::<(i64,)>(conn)).await {
                Ok(Ok((replicas,))) => Ok(replicas >= 1),
                _ => Err(()),
            }
        } else {
            match tokio::time::timeout(Duration::from_secs(10), pipe.query_async::<()>(conn)).await {
                Ok(Ok(())) => Ok(true),
                _ => Err(()),
            }
        };
        match reply {
            // Applied, but the replica did not confirm it in time: not
            // acknowledged (the connection is fine).
            Ok(false) => {}
            Ok(true) => {
                unreachable = 0;
                let now = Instant::now();
                let took = now - sent;
                let mut acks = app.acks.lock().expect("acks");
                if app.replicated {
                    acks.increments[id].1 += 1;
                }
                match region {
                    Region::A => {
                        acks.a.push((id, first, seq));
                        acks.last_a = Some(now);
                        acks.slowest_a = acks.slowest_a.max(took);
                    }
                    Region::B => {
                        acks.b.push((id, first, seq));
                        acks.first_b.get_or_insert(now);
                        if took > acks.slowest_b {
                            acks.slowest_b = took;
                            acks.slowest_b_at = Some(now);
                        }
                    }
                }
            }
            Err(()) => {
                // A closed connection, a timeout, an error reply: this
                // pipeline is not acknowledged (some of it may have been
                // applied); try the next node.
                connection = None;
                if region == Region::A {
                    at += 1;
                } else {
                    app.acks.lock().expect("acks").b_errors += 1;
                }
            }
        }
    }
}

/// Reads keys back from one region, through any of its endpoints.
struct Reader {
    endpoints: Vec<SocketAddr>,
    at: usize,
    connection: Option<MultiplexedConnection>,
}

impl Reader {
    fn new(endpoints: Vec<SocketAddr>) -> Reader {
        Reader { endpoints, at: 0, connection: None }
    }

    /// The entries of `keys` the region does not hold with the expected
    /// value; `None` if it could not be asked.
    async fn absent(&mut self, keys: &[(String, String)]) -> Option<Vec<(String, String)>> {
        let mut missing = Vec::new();
        for chunk in keys.chunks(1000) {
            if self.connection.is_none() {
                self.connection = connect(self.endpoints[self.at % self.endpoints.len()]).await;
                if self.connection.is_none() {
                    self.at += 1;
                    return None;
                }
            }
            let connection = self.connection.as_mut().expect("connected");
            let names: Vec<&String> = chunk.iter().map(|(k, _)| k).collect();
            let mut mget = redis::cmd("MGET");
            mget.arg(&names);
            let read = mget.query_async::<Vec<Option<String>>>(connection);
            match tokio::time::timeout(Duration::from_secs(15), read).await {
                Ok(Ok(values)) => missing.extend(
                    chunk.iter().zip(values).filter(|((_, v), got)| got.as_ref() != Some(v)).map(|(e, _)| e.clone()),
                ),
                _ => {
                    self.connection = None;
                    self.at += 1;
                    return None;
                }
            }
        }
        Some(missing)
    }
}

/// [`Reader::absent`], retried for up to 30 s.
async fn read_all(reader: &mut Reader, keys: &[(String, String)], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(missing) = reader.absent(keys).await {
            return Ok(missing);
        }
        if Instant::now() > deadline {
            bail!("timed out {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The WAN links of this region's instance (asked through `admin`) from
/// region `peer` — one per shard stream of the peer — as one: the state of
/// the first that does not stream (else `streaming`), the counters summed,
/// and `streams`, how many there are.
async fn link(admin: &str, guid: &str, peer: u64) -> Option<Value> {
    let view = admin_get(admin, &format!("/v1/crdbs/{guid}/instance")).await?;
    let links: Vec<&Value> =
        view["endpoint_status"]["links"].as_array()?.iter().filter(|l| l["region_id"] == peer).collect();
    let shown = links.iter().find(|l| l["state"] != "streaming").or(links.first())?;
    let mut merged = (*shown).clone();
    for field in ["lag_ops", "full_syncs", "partial_syncs", "deltas", "errors"] {
        merged[field] = json!(links.iter().filter_map(|l| l[field].as_u64()).sum::<u64>());
    }
    merged["streams"] = json!(links.len());
    Some(merged)
}

/// Polls `reader` until its region holds every entry of `keys`, or `limit`
/// has passed, or — given `settled` (an admin URL, the crdb guid and a peer
/// region) — that link streams with nothing left to apply and no missing key
/// arrived for 3 s. The entries still missing, and when the last one
/// arrived (None if some never did).
async fn await_keys(
    reader: &mut Reader,
    keys: Vec<(String, String)>,
    limit: Duration,
    settled: Option<(&str, &str, u64)>,
) -> (Vec<(String, String)>, Option<Instant>) {
    let deadline = Instant::now() + limit;
    let mut pending = keys;
    let mut progress = Instant::now();
    loop {
        if let Some(missing) = reader.absent(&pending).await {
            if missing.len() != pending.len() {
                progress = Instant::now();
            }
            pending = missing;
            if pending.is_empty() {
                return (pending, Some(Instant::now()));
            }
        }
        if Instant::now() > deadline {
            return (pending, None);
        }
        if let Some((admin, guid, peer)) = settled
            && progress.elapsed() > Duration::from_secs(3)
            && let Some(link) = link(admin, guid, peer).await
            && link["state"] == "streaming"
            && link["lag_ops"] == 0
        {
            return (pending, None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seconds from `since` until region `peer`'s link of the instance behind
/// `admin` streams, polled every 200 ms for at most `limit`.
fn watch_link(
    admin: String,
    guid: String,
    peer: u64,
    since: Instant,
    limit: Duration,
) -> tokio::task::JoinHandle<Option<f64>> {
    tokio::spawn(async move {
        while since.elapsed() < limit {
            if let Some(link) = link(&admin, &guid, peer).await
                && link["state"] == "streaming"
            {
                return Some(secs(since.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    })
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// A link's figures for the summary.
fn describe(link: Option<Value>) -> String {
    match link {
        Some(l) => format!(
            "{} streams={} lag_ops={} full_syncs={} partial_syncs={} deltas={} errors={}",
            l["state"].as_str().unwrap_or("?"),
            l["streams"],
            l["lag_ops"],
            l["full_syncs"],
            l["partial_syncs"],
            l["deltas"],
            l["errors"]
        ),
        None => "unknown".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Interrupted, the drill's future is dropped, and with it every node
    // process (killed and reaped).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = drill(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

async fn drill(args: Args) -> anyhow::Result<()> {
    if args.base > 251 {
        bail!("--base must leave room for five addresses");
    }
    std::fs::create_dir_all(&args.dir)?;
    let host = |i: u8| IpAddr::from([127, 0, 0, args.base + i]);
    let mut a: Vec<Node> =
        (0..3u8).map(|i| Node::new(&format!("a{}", i + 1), u64::from(i) + 1, "a", host(i))).collect();
    let mut b = Node::new("b", 1, "b", host(3));

    // Region A: node 1 starts the cluster, the others join it.
    a[0].spawn(&args, None)?;
    let a_admin = a[0].admin();
    until("A's first node", Duration::from_secs(30), || admin_get(&a_admin, "/v1/cluster")).await?;
    let first = a[0].cluster_addr();
    for node in &mut a[1..] {
        node.spawn(&args, Some(&first))?;
    }
    b.spawn(&args, None)?;
    for node in &a {
        let admin = node.admin();
        until("three voters in A", Duration::from_secs(60), || async {
            let state = admin_get(&admin, "/v1/cluster").await?;
            let voters = state["raft"]["voters"].as_array()?.len();
            (voters == 3 && state["raft"]["leader_id"].as_u64().is_some()).then_some(())
        })
        .await?;
    }
    until("three sync addresses in A", Duration::from_secs(60), || async {
        let nodes = admin_get(&a_admin, "/v1/nodes").await?;
        (nodes.as_array()?.iter().filter(|n| n["sync_addr"].is_string()).count() == 3).then_some(())
    })
    .await?;
    let b_admin = b.admin();
    until("region B", Duration::from_secs(30), || admin_get(&b_admin, "/v1/cluster")).await?;
    // A replicated database needs two nodes in every region: the master
    // scenario gives B a second one.
    let replicated = args.scenario == "master";
    let mut b2 = replicated.then(|| Node::new("b2", 2, "b", host(4)));
    if let Some(b2) = b2.as_mut() {
        b2.spawn(&args, Some(&b.cluster_addr()))?;
        until("two voters in B", Duration::from_secs(60), || async {
            let state = admin_get(&b_admin, "/v1/cluster").await?;
            (state["raft"]["voters"].as_array()?.len() == 2).then_some(())
        })
        .await?;
    }

    // The active-active database: A is region 1, B region 2.
    let port = free_port();
    let body = json!({
        "name": "outage",
        "port": port,
        "instances": [a_admin.clone(), b_admin.clone()],
        "replication": replicated,
        "shards": [args.shards, 1],
    });
    let created = tokio::time::timeout(
        Duration::from_secs(90),
        request(Method::POST, &format!("{a_admin}/v1/crdbs"), Some(body)),
    )
    .await
    .context("creating the crdb timed out")??;
    if created.0 != StatusCode::CREATED {
        bail!("cannot create the active-active database: {}", created.1);
    }
    let guid = created.1["guid"].as_str().context("a guid")?.to_string();
    let uid = created.1["instances"][0]["bdb_uid"].as_u64().context("A's bdb uid")?;
    // The node of the (first) master of A's instance: the master scenario
    // kills it.
    let master = until("the masters of A's instance", Duration::from_secs(30), || async {
        let shards = admin_get(&a_admin, "/v1/shards").await?;
        let masters: Vec<u64> = shards
            .as_array()?
            .iter()
            .filter(|s| s["bdb_uid"] == uid && s["role"] == "master")
            .filter_map(|s| s["node_uid"].as_u64())
            .collect();
        (masters.len() == usize::from(args.shards)).then(|| masters[0])
    })
    .await?;
    let master_admin = a[(master - 1) as usize].admin();
    let a_endpoints: Vec<SocketAddr> = a.iter().map(|n| SocketAddr::new(n.host, port)).collect();
    let b_endpoint = SocketAddr::new(b.host, port);
    for (i, addr) in a_endpoints.iter().chain([&b_endpoint]).enumerate() {
        let probe = format!("probe:{i}");
        until("every node to serve the database", Duration::from_secs(60), || async {
            let ok: String = once(*addr, &cmd(&["SET", &probe, "1"])).await?;
            (ok == "OK").then_some(())
        })
        .await?;
    }
    // Both WAN directions carry writes before the drill starts.
    for (to, from) in [(b_endpoint, a_endpoints[0]), (a_endpoints[0], b_endpoint)] {
        let probe = format!("probe:wan:{from}");
        until("a write to cross the WAN", Duration::from_secs(60), || async {
            let ok: String = once(from, &cmd(&["SET", &probe, "x"])).await?;
            let read: Option<String> = once(to, &cmd(&["GET", &probe])).await?;
            (ok == "OK" && read.as_deref() == Some("x")).then_some(())
        })
        .await?;
    }
    println!(
        "regions up: A = nodes 1-3 on {}-{} (instance of {} shard(s), the first mastered by node {master}), B = {}, database port {port}, crdb {guid}",
        a[0].host, a[2].host, args.shards, b.host
    );

    let pace =
        (args.rate > 0).then(|| Duration::from_secs_f64((args.batch * args.writers as u64) as f64 / args.rate as f64));
    if replicated {
        let setup = Setup { a_endpoints, b_endpoint, b_admin, guid, master, pace };
        return master_scenario(&args, &mut a, setup).await;
    }

    // The application writes to A.
    let app = Arc::new(App {
        a: a_endpoints.clone(),
        b: b_endpoint,
        batch: args.batch,
        pace,
        acks: Mutex::new(Acks::default()),
        stop: AtomicBool::new(false),
        replicated: false,
    });
    let writers: Vec<_> = (0..args.writers).map(|w| tokio::spawn(writer(w, app.clone()))).collect();
    tokio::time::sleep(Duration::from_secs_f64(args.write_s)).await;

    // Every node of A dies at once.
    let killed = Instant::now();
    for node in &mut a {
        node.signal_kill();
    }
    for node in &mut a {
        node.kill();
    }
    let first_b = until("the application to write to B", Duration::from_secs(30), || async {
        let acks = app.acks.lock().expect("acks");
        (acks.switched == args.writers).then_some(())?;
        acks.first_b
    })
    .await?;
    let (a_at_kill, last_a) = {
        let acks = app.acks.lock().expect("acks");
        (Acks::pairs(&acks.a, Region::A), acks.last_a)
    };
    let switch_ms = first_b.saturating_duration_since(killed).as_millis();
    println!(
        "killed A's three nodes; {} writes acknowledged by A, the last {} ms before the kill; first write acknowledged by B {switch_ms} ms after it",
        a_at_kill.len(),
        last_a.map_or(0, |t| killed.saturating_duration_since(t).as_millis())
    );
    // What B lacks of A's acknowledged writes while A is down: the
    // in-flight window of the asynchronous WAN at the moment of the kill.
    let mut b_reader = Reader::new(vec![b_endpoint]);
    let in_flight = read_all(&mut b_reader, &a_at_kill, "reading B").await?;
    println!("during the outage B lacks {} of A's acknowledged writes (not shipped when A died)", in_flight.len());
    tokio::time::sleep((killed + Duration::from_secs_f64(args.outage_s)).saturating_duration_since(Instant::now()))
        .await;

    // A comes back from its disks; B's backlog of the outage must reach it.
    let backlog = Acks::pairs(&app.acks.lock().expect("acks").b, Region::B);
    let backlog_len = backlog.len();
    let restarted = Instant::now();
    for node in &mut a {
        node.spawn(&args, None)?;
    }
    let limit = Duration::from_secs(args.catchup_timeout_s);
    let a_from_b = watch_link(master_admin.clone(), guid.clone(), 2, restarted, limit);
    let b_from_a = watch_link(b_admin.clone(), guid.clone(), 1, restarted, limit);
    let serving = until("A to serve again", limit, || async {
        for addr in &a_endpoints {
            if let Some(size) = once::<u64>(*addr, &cmd(&["DBSIZE"])).await {
                return Some(size);
            }
        }
        None
    })
    .await?;
    let served_s = secs(restarted.elapsed());
    println!(
        "restarted A: serving again after {served_s:.2} s ({serving} keys); B acknowledged {backlog_len} writes during the outage"
    );
    let mut a_reader = Reader::new(a_endpoints.clone());
    let (behind, caught_up) = await_keys(&mut a_reader, backlog, limit.saturating_sub(restarted.elapsed()), None).await;
    let catchup_s = secs(caught_up.unwrap_or_else(Instant::now).saturating_duration_since(restarted));
    match caught_up {
        Some(_) => println!("A holds every write B acknowledged during the outage {catchup_s:.2} s after its restart"),
        None => println!("A still lacks {} of B's outage writes after {catchup_s:.2} s", behind.len()),
    }

    // The application stays on B a little longer, then stops.
    tokio::time::sleep(Duration::from_secs(1)).await;
    app.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    let a_from_b = a_from_b.await?;
    let b_from_a = b_from_a.await?;
    let (a_acked, b_acked, slowest_a, slowest_b, slowest_b_at, b_errors) = {
        let acks = app.acks.lock().expect("acks");
        let pairs = (Acks::pairs(&acks.a, Region::A), Acks::pairs(&acks.b, Region::B));
        (pairs.0, pairs.1, acks.slowest_a, acks.slowest_b, acks.slowest_b_at, acks.b_errors)
    };
    if a_acked.len() != a_at_kill.len() {
        bail!("A acknowledged writes after it was killed ({} then {})", a_at_kill.len(), a_acked.len());
    }

    // Every write B acknowledged must be readable in A.
    let settle = Duration::from_secs(args.settle_timeout_s);
    let (lost_b, _) = await_keys(&mut a_reader, b_acked.clone(), settle, Some((&master_admin, &guid, 2))).await;
    // A's acknowledged writes that B does not have once it got A's
    // recovered state; and those A itself no longer holds.
    let (lost_a, _) = await_keys(&mut b_reader, a_acked.clone(), settle, Some((&b_admin, &guid, 1))).await;
    let gone_from_a = read_all(&mut a_reader, &a_acked, "reading A").await?;
    let gone: BTreeSet<&String> = gone_from_a.iter().map(|(k, _)| k).collect();
    let lost_with_a = lost_a.iter().filter(|(k, _)| gone.contains(k)).count();
    let diverged = lost_a.len() - lost_with_a;

    let back = |at: Option<f64>| at.map_or("not within the bound".into(), |s| format!("{s:.2} s"));
    println!("summary:");
    println!(
        "  writes acknowledged by A: {} in {:.1} s ({} writers, pipelines of {}, rate {})",
        a_acked.len(),
        args.write_s,
        args.writers,
        args.batch,
        if args.rate > 0 { format!("{}/s", args.rate) } else { "unlimited".into() }
    );
    println!(
        "  writes acknowledged by B: {} ({backlog_len} during the {:.1} s outage, the rest while A caught up); failed pipelines or connects on B: {b_errors}",
        b_acked.len(),
        args.outage_s
    );
    println!("  switch-over (kill to the first write acknowledged by B): {switch_ms} ms");
    // Where B's slowest pipeline falls, relative to A's restart (a
    // snapshot merge holds B's keyspace).
    let at = |t: Instant| {
        let (sign, d) = if t >= restarted { ("+", t - restarted) } else { ("-", restarted - t) };
        format!("{sign}{:.2} s", d.as_secs_f64())
    };
    println!(
        "  slowest acknowledged pipeline: A {} ms; B {} ms, answered at {} from A's restart",
        slowest_a.as_millis(),
        slowest_b.as_millis(),
        slowest_b_at.map_or("?".into(), at)
    );
    println!("  A's writes B lacked while A was down (not yet shipped at the kill): {}", in_flight.len());
    println!(
        "  after A's restart: serving {served_s:.2} s, its link from B streaming {}, B's link from A streaming {}, B's outage writes all in A {catchup_s:.2} s",
        back(a_from_b),
        back(b_from_a)
    );
    println!("  B's writes missing in A at the end: {}", lost_b.len());
    println!(
        "  A's writes missing in B at the end: {} ({lost_with_a} also gone from A's recovered data, {diverged} in A but not in B)",
        lost_a.len()
    );
    println!("  A's writes missing in A itself at the end: {}", gone_from_a.len());
    println!("  B's link from A: {}", describe(link(&b_admin, &guid, 1).await));
    println!("  A's link from B: {}", describe(link(&master_admin, &guid, 2).await));
    println!("region_outage_lost_b={} lost_a_window={} catchup_s={catchup_s:.2}", lost_b.len(), lost_a.len());
    if !lost_b.is_empty() {
        bail!("{} writes acknowledged by B are not readable in A (first: {:?})", lost_b.len(), lost_b[0]);
    }
    if caught_up.is_none() {
        bail!("A did not catch up with B within {} s", args.catchup_timeout_s);
    }
    if diverged > 0 {
        bail!("{diverged} writes acknowledged by A are in A but never reached B: the regions did not converge");
    }
    Ok(())
}

/// What the master scenario needs from the common setup.
struct Setup {
    a_endpoints: Vec<SocketAddr>,
    b_endpoint: SocketAddr,
    b_admin: String,
    guid: String,
    /// The node (1-3) holding the master of A's instance.
    master: u64,
    pace: Option<Duration>,
}

/// The master scenario (see the module doc): A's master node is SIGKILLed
/// under a replicated, acknowledged write load, and nothing acknowledged may
/// be lost or applied twice in either region.
async fn master_scenario(args: &Args, a: &mut [Node], setup: Setup) -> anyhow::Result<()> {
    let Setup { a_endpoints, b_endpoint, b_admin, guid, master, pace } = setup;
    let acks = Acks { increments: vec![(0, 0); args.writers], ..Acks::default() };
    let app = Arc::new(App {
        a: a_endpoints.clone(),
        b: b_endpoint,
        batch: args.batch,
        pace,
        acks: Mutex::new(acks),
        stop: AtomicBool::new(false),
        replicated: true,
    });
    let writers: Vec<_> = (0..args.writers).map(|w| tokio::spawn(writer(w, app.clone()))).collect();
    tokio::time::sleep(Duration::from_secs_f64(args.write_s)).await;
    let acked_before = app.acks.lock().expect("acks").a.len();
    if acked_before == 0 {
        bail!("no pipeline was acknowledged (WAIT 1) before the kill");
    }

    // The node holding A's master dies.
    let victim = (master - 1) as usize;
    let killed = Instant::now();
    a[victim].kill();
    // A plain SET through a surviving node (no WAIT: the new master has no
    // replica until the killed node returns) answers once A has failed over;
    // with several shards, to 64 keys whose slots fall in every shard of
    // up to 8.
    let survivor = a_endpoints[(victim + 1) % a_endpoints.len()];
    let probes: Vec<String> = (0..if args.shards > 1 { 64 } else { 1 }).map(|i| format!("ro:failover:{i}")).collect();
    until("a write to every shard through a surviving node of A", Duration::from_secs(60), || async {
        for probe in &probes {
            let ok: String = once(survivor, &cmd(&["SET", probe, "1"])).await?;
            if ok != "OK" {
                return None;
            }
        }
        Some(())
    })
    .await?;
    let failover_ms = killed.elapsed().as_millis();
    println!(
        "killed node {master} (A's master, {acked_before} pipelines acknowledged before); A takes writes again after {failover_ms} ms"
    );
    tokio::time::sleep((killed + Duration::from_secs_f64(args.outage_s)).saturating_duration_since(Instant::now()))
        .await;

    // The node comes back and rejoins as the replica: acknowledgements resume.
    let restarted = Instant::now();
    a[victim].spawn(args, None)?;
    let limit = Duration::from_secs(args.catchup_timeout_s);
    let resumed = until("a write acknowledged by the new replica", limit, || async {
        app.acks.lock().expect("acks").last_a.filter(|t| *t > restarted)
    })
    .await?;
    println!(
        "restarted node {master}: acknowledged writes resumed {:.2} s after its restart",
        secs(resumed.saturating_duration_since(restarted))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?;
    }
    let (acked, increments) = {
        let acks = app.acks.lock().expect("acks");
        (Acks::pairs(&acks.a, Region::A), acks.increments.clone())
    };

    // Every acknowledged write, in both regions.
    let settle = Duration::from_secs(args.settle_timeout_s);
    let mut a_reader = Reader::new(a_endpoints.clone());
    let mut b_reader = Reader::new(vec![b_endpoint]);
    let (lost_b, _) = await_keys(&mut b_reader, acked.clone(), limit, Some((&b_admin, &guid, 1))).await;
    let (lost_a, _) = await_keys(&mut a_reader, acked.clone(), settle, None).await;
    // Each writer's counter, in both regions, once B's link has nothing left.
    until("B's link from A to stream with nothing left", settle, || async {
        let link = link(&b_admin, &guid, 1).await?;
        (link["state"] == "streaming" && link["lag_ops"] == 0 && link["streams"] == args.shards).then_some(())
    })
    .await?;
    let mut counters_off = 0;
    for (writer, &(sent, acknowledged)) in increments.iter().enumerate() {
        for (name, addr) in [("A", a_endpoints[(victim + 1) % a_endpoints.len()]), ("B", b_endpoint)] {
            let value: Option<u64> = until("a counter", Duration::from_secs(30), || async {
                Some(once::<Option<u64>>(addr, &cmd(&["GET", &counter(writer)])).await?.unwrap_or(0))
            })
            .await
            .ok();
            let ok = value.is_some_and(|v| (acknowledged..=sent).contains(&v));
            if !ok {
                counters_off += 1;
                println!("  counter of writer {writer} in {name}: {value:?}, acknowledged {acknowledged}, sent {sent}");
            }
        }
    }
    println!("summary:");
    println!(
        "  writes acknowledged by A (WAIT 1): {} in {} pipelines; counter increments sent {}, acknowledged {}",
        acked.len(),
        acked.len() as u64 / args.batch,
        increments.iter().map(|i| i.0).sum::<u64>(),
        increments.iter().map(|i| i.1).sum::<u64>()
    );
    println!("  failover (kill to writes to every shard answered OK through a surviving node of A): {failover_ms} ms");
    println!("  acknowledged writes missing at the end: B {}, A {}", lost_b.len(), lost_a.len());
    println!("  B's link from A: {}", describe(link(&b_admin, &guid, 1).await));
    println!(
        "crdb_master_kill_lost={} failover_ms={failover_ms} counters_off={counters_off}",
        lost_b.len() + lost_a.len()
    );
    if !lost_b.is_empty() || !lost_a.is_empty() {
        let first = lost_b.first().or(lost_a.first());
        bail!("acknowledged writes lost after the failover (first: {first:?})");
    }
    if counters_off > 0 {
        bail!("{counters_off} counters outside [acknowledged, sent] increments: an effect was lost or applied twice");
    }
    Ok(())
}
