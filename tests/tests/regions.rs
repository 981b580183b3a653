//! Three regions as three real `meridian node` processes (each its own
//! loopback address, data directory and ports) sharing one active-active
//! database created with `meridian ctl crdb create`. Writers in every region
//! write the same keys of every type at once; meanwhile one region is
//! SIGKILLed and restarted from its disk, and another is SIGSTOPped (a peer
//! that stops answering) and resumed. Afterwards every region must hold the
//! same keyspace, key by key and value by value, and every counter must hold
//! exactly the increments acknowledged (plus at most those whose reply was
//! lost with the killed or stopped process).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{ChildGuard, free_port, meridian_binary};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use tokio::time::{sleep, timeout};

/// Keys of each type the writers share.
const KEYS: usize = 6;

/// One region: a one-node cluster.
struct Region {
    name: String,
    host: IpAddr,
    port: u16,
    admin_port: u16,
    cluster_port: u16,
    sync_port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Region {
    fn new(name: &str, host: u8, root: &std::path::Path) -> Region {
        Region {
            name: name.into(),
            host: IpAddr::from([127, 0, 0, host]),
            port: free_port(),
            admin_port: free_port(),
            cluster_port: free_port(),
            sync_port: free_port(),
            dir: root.join(name),
            child: None,
        }
    }

    fn admin(&self) -> String {
        format!("http://{}:{}", self.host, self.admin_port)
    }

    /// Starts (or restarts, from the same directory and ports) the process.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("open the node log");
        let child: Child = Command::new(meridian_binary())
            .args(["node", "--bind", &self.host.to_string(), "--port", &self.port.to_string()])
            .args(["--node-id", "1", "--region", &self.name, "--appendfsync", "always", "--log-level", "info"])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--admin-port", &self.admin_port.to_string(), "--cluster-port", &self.cluster_port.to_string()])
            .args(["--sync-port", &self.sync_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start meridian node");
        self.child = Some(ChildGuard(child));
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").0.id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut guard) = self.child.take() {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
        }
    }
}

async fn connect(addr: SocketAddr) -> Option<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}")).ok()?;
    timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await.ok()?.ok()
}

/// One command, bounded: `None` if it failed or got no reply in time.
async fn run<T: redis::FromRedisValue>(connection: &mut MultiplexedConnection, command: &redis::Cmd) -> Option<T> {
    timeout(Duration::from_secs(2), command.query_async(connection)).await.ok()?.ok()
}

fn cmd(args: &[String]) -> redis::Cmd {
    let mut command = redis::cmd(&args[0]);
    for arg in &args[1..] {
        command.arg(arg.as_str());
    }
    command
}

/// Increments acknowledged and left uncertain (sent, no reply), per counter.
struct Counters {
    acked: Vec<AtomicI64>,
    uncertain: Vec<AtomicI64>,
}

/// A random write to the shared keys of every type, as command arguments.
/// Counters (`cnt:*`) get only INCRBY, so their expected value is known.
fn random_write(rng: &mut SmallRng, region: usize) -> (Vec<String>, Option<(usize, i64)>) {
    let k = rng.random_range(0..KEYS);
    let m = format!("m{}", rng.random_range(0..5));
    let v = format!("r{region}-{}", rng.random_range(0..1000));
    let args: Vec<&str> = match rng.random_range(0..13) {
        0 => vec!["SET", "str", &v],
        1 => vec!["DEL", "str"],
        2 => {
            let by = rng.random_range(1..10);
            return (vec!["INCRBY".into(), format!("cnt:{k}"), by.to_string()], Some((k, by)));
        }
        3 => vec!["SADD", "set", &m],
        4 => vec!["SREM", "set", &m],
        5 => vec!["HSET", "hash", &m, &v],
        6 => vec!["HDEL", "hash", &m],
        7 => vec!["ZADD", "zset", "1.5", &m],
        8 => vec!["ZINCRBY", "zset", "2", &m],
        9 => vec!["RPUSH", "list", &v],
        10 => vec!["LPUSH", "list", &v],
        11 => vec!["LPOP", "list"],
        _ => vec!["ZREM", "zset", &m],
    };
    let mut args: Vec<String> = args.into_iter().map(String::from).collect();
    args[1] = format!("{}:{k}", args[1]);
    (args, None)
}

/// Writes to `addr` until `stop`, reconnecting after failures.
async fn writer(region: usize, addr: SocketAddr, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> usize {
    let mut rng = SmallRng::seed_from_u64(region as u64 * 7919 + 1);
    let mut connection = None;
    let mut acked = 0;
    while !stop.load(Ordering::Acquire) {
        if connection.is_none() {
            connection = connect(addr).await;
            if connection.is_none() {
                sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let (args, increment) = random_write(&mut rng, region);
        let Some(c) = connection.as_mut() else { continue };
        let reply: Option<redis::Value> = run(c, &cmd(&args)).await;
        match (reply, increment) {
            (Some(_), Some((k, by))) => {
                counters.acked[k].fetch_add(by, Ordering::Relaxed);
                acked += 1;
            }
            (Some(_), None) => acked += 1,
            (None, increment) => {
                if let Some((k, by)) = increment {
                    counters.uncertain[k].fetch_add(by, Ordering::Relaxed);
                }
                connection = None;
            }
        }
    }
    acked
}

/// The whole keyspace as text, key by key (values sorted where Redis's
/// order is not the type's: set members, hash fields).
async fn dump(addr: SocketAddr) -> Option<BTreeMap<String, String>> {
    let mut c = connect(addr).await?;
    let mut keys: Vec<String> = run(&mut c, redis::cmd("KEYS").arg("*")).await?;
    keys.sort();
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = run(&mut c, redis::cmd("TYPE").arg(&key)).await?;
        let value = match kind.as_str() {
            "string" => run::<String>(&mut c, redis::cmd("GET").arg(&key)).await?,
            "list" => run::<Vec<String>>(&mut c, redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)).await?.join(","),
            "set" => {
                let mut members: Vec<String> = run(&mut c, redis::cmd("SMEMBERS").arg(&key)).await?;
                members.sort();
                members.join(",")
            }
            "hash" => {
                let fields: BTreeMap<String, String> = run(&mut c, redis::cmd("HGETALL").arg(&key)).await?;
                format!("{fields:?}")
            }
            "zset" => run::<Vec<String>>(&mut c, redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES"))
                .await?
                .join(","),
            "none" => continue,
            other => other.to_string(),
        };
        out.insert(key, format!("{kind} {value}"));
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_region_processes_converge_through_a_kill_and_a_stop() {
    converge_through_a_kill_and_a_stop([31, 32, 33], &[]).await;
}

/// The same with instances of one, two and three shards (D102): the killed
/// region recovers both its shards from disk, the stopped one has three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_region_processes_of_different_shard_counts_converge_through_a_kill_and_a_stop() {
    converge_through_a_kill_and_a_stop([34, 35, 36], &["--shards", "1", "--shards", "2", "--shards", "3"]).await;
}

/// Three regions on the loopback addresses `hosts`, a crdb created with
/// `create_args` added, writers everywhere while the second region is
/// killed and restarted and the third stopped and resumed; then one
/// keyspace everywhere and the counters as acknowledged.
async fn converge_through_a_kill_and_a_stop(hosts: [u8; 3], create_args: &[&str]) {
    // One scenario at a time: six nodes and their writers on two cores
    // would only measure the machine.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let root = std::env::temp_dir().join(format!("meridian-regions-{}-{}", std::process::id(), hosts[0]));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the test directory");
    tokio::task::spawn_blocking(meridian_binary).await.expect("build the binary");
    let mut regions: Vec<Region> =
        ["east", "west", "south"].iter().zip(hosts).map(|(name, host)| Region::new(name, host, &root)).collect();
    for region in &mut regions {
        region.spawn();
    }
    for region in &regions {
        let addr = SocketAddr::new(region.host, region.port);
        common::converges(&format!("region {} to answer", region.name), || async move {
            let mut c = connect(addr).await?;
            run::<String>(&mut c, &redis::cmd("PING")).await
        })
        .await;
    }

    // The active-active database, created from the first region's admin API.
    let port = free_port().to_string();
    let admins: Vec<String> = regions.iter().map(Region::admin).collect();
    let mut args = vec!["crdb", "create", "--name", "shared", "--port", &port];
    for admin in &admins {
        args.extend(["--instance", admin.as_str()]);
    }
    args.extend(create_args);
    let (created, out) = common::ctl(&admins[0], &args).await;
    assert!(created, "crdb create: {out}");
    let port: u16 = port.parse().expect("port");
    let endpoints: Vec<SocketAddr> = regions.iter().map(|r| SocketAddr::new(r.host, port)).collect();
    for &addr in &endpoints {
        common::converges("every region to serve the database", || async move {
            let mut c = connect(addr).await?;
            (run::<String>(&mut c, redis::cmd("SET").arg("hello").arg("1")).await? == "OK").then_some(())
        })
        .await;
    }

    // Writers in every region, while west is killed and restarted from its
    // disk and south stops answering for a while.
    let counters = Arc::new(Counters {
        acked: (0..KEYS).map(|_| AtomicI64::new(0)).collect(),
        uncertain: (0..KEYS).map(|_| AtomicI64::new(0)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, &addr)| tokio::spawn(writer(i, addr, counters.clone(), stop.clone())))
        .collect();
    sleep(Duration::from_secs(3)).await;
    regions[1].kill();
    sleep(Duration::from_secs(2)).await;
    regions[2].signal("-STOP");
    sleep(Duration::from_secs(3)).await;
    regions[1].spawn();
    sleep(Duration::from_secs(2)).await;
    regions[2].signal("-CONT");
    sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Release);
    let mut acked = Vec::new();
    for writer in writers {
        acked.push(writer.await.expect("writer"));
    }
    assert!(acked.iter().all(|&n| n > 20), "every region took writes: {acked:?}");

    // Every region ends with the same keyspace, and every counter with the
    // acknowledged increments.
    let started = Instant::now();
    let converged = common::eventually("the three regions to hold one keyspace", Duration::from_secs(120), || {
        let endpoints = endpoints.clone();
        async move {
            let mut dumps = Vec::new();
            for addr in endpoints {
                dumps.push(dump(addr).await?);
            }
            (dumps[0] == dumps[1] && dumps[1] == dumps[2]).then(|| dumps.swap_remove(0))
        }
    })
    .await;
    for k in 0..KEYS {
        let (acked, uncertain) =
            (counters.acked[k].load(Ordering::Relaxed), counters.uncertain[k].load(Ordering::Relaxed));
        let held: i64 = converged.get(&format!("cnt:{k}")).map_or(0, |v| {
            v.strip_prefix("string ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("counter {v}"))
        });
        assert!(
            (acked..=acked + uncertain).contains(&held),
            "cnt:{k} holds {held}: {acked} acknowledged, {uncertain} unanswered"
        );
    }
    assert!(converged.len() > KEYS, "the workload left keys: {converged:?}");
    eprintln!("converged in {:?} after {acked:?} acknowledged writes", started.elapsed());
    for region in &mut regions {
        region.kill();
    }
    let _ = std::fs::remove_dir_all(&root);
}
