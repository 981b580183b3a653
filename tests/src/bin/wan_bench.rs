//! The WAN replication-lag benchmark behind `deploy/bench/wan-lag.sh`.
//!
//! Starts two regions, each one real `meridian node` process on its own
//! loopback address, with an active-active database across them (created
//! through the admin API, `POST /v1/crdbs`). Then, all SETs of one shape
//! (`SET k:<10 digits> <16 hex digits>`):
//!
//! 1. the peak SET rate region a accepts from this load generator
//!    (pipelined connections, unpaced);
//! 2. at several fractions of that peak, a paced write load in region a and
//!    a probe that writes one key in a every few milliseconds and polls
//!    region b until it sees the value: the replication lag is the time from
//!    a's OK to the GET in b that returns it (p50, p99, max per rate), and b's
//!    `/metrics` give the payload bytes received per delta (wire and raw);
//! 3. a partition: region b is SIGSTOPped while a writes at a steady rate,
//!    then SIGCONTed; the catch-up rate is the deltas written meanwhile over
//!    the time until b has them all (the last key of every writer readable in
//!    b), from SIGCONT and from b's first ingress, with the sync path it took
//!    (resumed from its cursor, or a snapshot because a's 64 MiB outbox no
//!    longer covered it).
//!
//! The last line is `lag_ms_p99=<N> catchup_deltas_per_s=<N>
//! wire_bytes_per_set=<N> resp_bytes_per_set=<N>`: the p99 lag and the wire
//! bytes at 50% of peak (the last rate if 50 is not among them), the
//! catch-up from SIGCONT, and the RESP size of one SET command. Targets are
//! printed, never enforced: the exit status is non-zero only on errors.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use meridian_cluster::ctl::{Method, StatusCode, request};
use meridian_tests::{admin_get, free_port, until};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::task::JoinHandle;

/// The bound of a region's outbox (`meridian_wan::OUTBOX_BYTES_DEFAULT`):
/// a peer further behind than this many bytes of encoded deltas — counted
/// compressed once sealed in segments — resumes by snapshot.
const OUTBOX_BYTES: f64 = (64 << 20) as f64;

/// The probe's key: the same shape as the writers' keys (12 bytes).
const PROBE_KEY: &str = "k:probe00000";

/// How long a probe waits to be seen in region b before it counts as lost.
const PROBE_WAIT_MAX: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(about = "Replication lag, catch-up rate and wire bytes of Meridian's WAN syncer, on loopback")]
struct Args {
    /// The `meridian` binary.
    #[arg(long)]
    binary: PathBuf,
    /// Where the nodes keep their data and logs.
    #[arg(long)]
    dir: PathBuf,
    /// Seconds of paced load (and probes) per rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unpaced load that measure the peak SET rate.
    #[arg(long, default_value_t = 5)]
    peak_seconds: u64,
    /// The paced rates, in percent of the peak.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
    rates: Vec<u32>,
    /// Seconds region b is stopped while region a writes.
    #[arg(long, default_value_t = 30)]
    partition_seconds: u64,
    /// Region a's write rate during the partition, in percent of the peak.
    #[arg(long, default_value_t = 50)]
    partition_rate: u32,
    /// Longest wait for region b to catch up after the partition.
    #[arg(long, default_value_t = 600)]
    catchup_timeout_seconds: u64,
    /// Writer connections to region a.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// SETs per pipeline of an unpaced writer (a paced one sends what is due
    /// each millisecond).
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Milliseconds between two probes.
    #[arg(long, default_value_t = 10)]
    probe_interval_ms: u64,
    /// Print every probe slower than this many ms (with the writes made so
    /// far and the probe SET's own latency) to stderr.
    #[arg(long)]
    trace_ms: Option<f64>,
    /// The nodes' `--log-level` (their logs are `a.log` and `b.log` in
    /// `--dir`).
    #[arg(long, default_value = "warn")]
    node_log_level: String,
    /// Run the nodes without `--data-dir` (nothing persisted: no journal,
    /// no fsync, WAN cursors in memory), to tell persistence's share of the
    /// lag from the syncer's.
    #[arg(long)]
    in_memory: bool,
    /// The regions' addresses are 127.0.0.<base> (a) and <base>+1 (b).
    #[arg(long, default_value_t = 81)]
    base: u8,
}

/// One region: one running `meridian node`.
struct Region {
    name: &'static str,
    host: IpAddr,
    admin_port: u16,
    child: Option<Child>,
}

impl Region {
    fn start(args: &Args, name: &'static str, host: IpAddr) -> anyhow::Result<Region> {
        let dir = args.dir.join(name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.with_extension("log"))?;
        let admin_port = free_port();
        let mut command = Command::new(&args.binary);
        command.args(["node", "--bind", &host.to_string(), "--port", &free_port().to_string()]);
        command.args(["--region", name]);
        if !args.in_memory {
            command.arg("--data-dir").arg(&dir);
        }
        command.args(["--cluster-port", &free_port().to_string(), "--admin-port", &admin_port.to_string()]);
        command.args(["--sync-port", &free_port().to_string(), "--log-level", &args.node_log_level]);
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", args.binary.display()))?;
        Ok(Region { name, host, admin_port, child: Some(child) })
    }

    fn admin(&self) -> String {
        format!("http://{}:{}", self.host, self.admin_port)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.as_ref().map(Child::id).context("region not running")
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid()?.to_string()).status()?;
        if !status.success() {
            bail!("kill -{signal} region {} failed: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn connect(addr: SocketAddr) -> Option<MultiplexedConnection> {
    meridian_tests::redis_connection(addr, Duration::from_secs(2), Duration::from_secs(10)).await
}

async fn connect_or_fail(addr: SocketAddr) -> anyhow::Result<MultiplexedConnection> {
    until(&format!("a connection to {addr}"), Duration::from_secs(30), || connect(addr)).await
}

/// Sends `command` on `conn` and waits at most `limit` for the answer:
/// `None` if it did not come (a region that stalls is measured, not an
/// error; the late answer is discarded when it arrives).
async fn query<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    command: &redis::Cmd,
    limit: Duration,
) -> anyhow::Result<Option<T>> {
    match tokio::time::timeout(limit, command.query_async::<T>(conn)).await {
        Err(_) => Ok(None),
        Ok(Ok(value)) => Ok(Some(value)),
        Ok(Err(error)) if error.is_timeout() => Ok(None),
        Ok(Err(error)) => Err(anyhow::anyhow!("{error:?}")),
    }
}

/// The key and value of write number `n`: 12 and 16 bytes.
fn key_value(n: u64) -> (String, String) {
    // splitmix64: values that do not compress better than real ones would.
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (format!("k:{n:010}"), format!("{:016x}", z ^ (z >> 31)))
}

/// The exact size of `SET key value` as the RESP array a client sends.
fn resp_bytes(key: &str, value: &str) -> usize {
    let bulk = |s: &str| 1 + s.len().to_string().len() + 2 + s.len() + 2;
    1 + 1 + 2 + bulk("SET") + bulk(key) + bulk(value)
}

/// What one writer connection did.
#[derive(Default)]
struct Written {
    acked: u64,
    /// The last acknowledged write, if any.
    last: Option<(String, String)>,
}

/// Writes SETs of fresh keys to `conn` until `until`: unpaced pipelines of
/// `pipeline` when `rate` is `None`, else what is due at `rate` per second,
/// sent every millisecond.
async fn writer(
    mut conn: MultiplexedConnection,
    next: Arc<AtomicU64>,
    rate: Option<f64>,
    pipeline: usize,
    until: Instant,
) -> anyhow::Result<Written> {
    let mut written = Written::default();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while Instant::now() < until {
        let count = match rate {
            None => pipeline as u64,
            Some(rate) => {
                tick.tick().await;
                let due = (rate * start.elapsed().as_secs_f64()) as u64;
                // A writer that fell behind catches up in bounded bursts.
                due.saturating_sub(sent).min(4_096)
            }
        };
        if count == 0 {
            continue;
        }
        let first = next.fetch_add(count, Ordering::Relaxed);
        let mut pipe = redis::pipe();
        for n in first..first + count {
            let (key, value) = key_value(n);
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.context("a pipeline of SETs in region a")?;
        sent += count;
        written.acked += count;
        written.last = Some(key_value(first + count - 1));
    }
    Ok(written)
}

/// Runs `connections` writers against `addr` until `until`; `rate` is the
/// total rate (`None`: unpaced).
async fn write_load(
    args: &Args,
    addr: SocketAddr,
    next: &Arc<AtomicU64>,
    rate: Option<f64>,
    until: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<Vec<Written>>>> {
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let conn = connect_or_fail(addr).await?;
        let per_task = rate.map(|r| r / args.connections as f64);
        tasks.push(tokio::spawn(writer(conn, next.clone(), per_task, args.pipeline, until)));
    }
    Ok(tokio::spawn(async move {
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await??);
        }
        Ok(all)
    }))
}

/// The lags the probe saw, in ms (a lost probe counts as
/// [`PROBE_WAIT_MAX`]), and the probes not seen in time.
struct Probes {
    lags: Vec<f64>,
    lost: u64,
}

/// Every `interval`, SETs the probe key in region a and polls region b
/// (GET after GET, no pause) until it answers the new value; the lag is the
/// time from a's OK to that answer. A probe not seen within
/// [`PROBE_WAIT_MAX`] is lost.
async fn probe(
    mut a: MultiplexedConnection,
    mut b: MultiplexedConnection,
    seq: Arc<AtomicU64>,
    interval: Duration,
    until: Instant,
    trace: Option<(f64, Arc<AtomicU64>)>,
) -> anyhow::Result<Probes> {
    let mut probes = Probes { lags: Vec::new(), lost: 0 };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let value = format!("{:016}", seq.fetch_add(1, Ordering::Relaxed));
        let sent = Instant::now();
        redis::cmd("SET").arg(PROBE_KEY).arg(&value).query_async::<()>(&mut a).await.context("probe SET")?;
        let acked = Instant::now();
        let mut get = redis::cmd("GET");
        get.arg(PROBE_KEY);
        loop {
            let left = PROBE_WAIT_MAX.saturating_sub(acked.elapsed()).max(Duration::from_millis(1));
            let seen: Option<Option<String>> = query(&mut b, &get, left).await.context("probe GET in region b")?;
            if seen.flatten().as_deref() == Some(value.as_str()) {
                let lag = acked.elapsed().as_secs_f64() * 1e3;
                probes.lags.push(lag);
                if let Some((over, writes)) = &trace
                    && lag > *over
                {
                    // The wall-clock time of the SET, to line up with the node logs.
                    let at = std::time::SystemTime::now() - acked.elapsed() - (acked - sent);
                    let at = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    eprintln!(
                        "slow probe: lag {lag:.2} ms, probe SET {:.2} ms, {} writes so far, sent at {}.{:03} (Unix time)",
                        (acked - sent).as_secs_f64() * 1e3,
                        writes.load(Ordering::Relaxed),
                        at.as_secs(),
                        at.subsec_millis()
                    );
                }
                break;
            }
            if acked.elapsed() > PROBE_WAIT_MAX {
                // Counted in the percentiles at the bound (a floor).
                probes.lost += 1;
                probes.lags.push(PROBE_WAIT_MAX.as_secs_f64() * 1e3);
                break;
            }
        }
    }
    Ok(probes)
}

/// The WAN link figures a region's `/metrics` give for its one peer.
#[derive(Clone, Copy, Debug, Default)]
struct Syncer {
    bytes_wire: u64,
    bytes_raw: u64,
    deltas: u64,
    full_syncs: u64,
    partial_syncs: u64,
    errors: u64,
}

async fn syncer(admin: &str) -> anyhow::Result<Syncer> {
    let url = format!("{admin}/metrics");
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), request(Method::GET, &url, None))
        .await
        .with_context(|| format!("{url} did not answer"))??;
    if status != StatusCode::OK {
        bail!("{url}: {status} {body}");
    }
    // Not JSON: `request` hands the text over as the description.
    let text = body["description"].as_str().context("the metrics text")?;
    let mut found = Syncer::default();
    let mut series = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let value = value as u64;
        let slot = match name {
            "database_syncer_ingress_bytes_total" => &mut found.bytes_wire,
            "database_syncer_ingress_bytes_decompressed_total" => &mut found.bytes_raw,
            "database_syncer_ingress_deltas_total" => {
                series += 1;
                &mut found.deltas
            }
            "database_syncer_full_syncs_total" => &mut found.full_syncs,
            "database_syncer_partial_syncs_total" => &mut found.partial_syncs,
            "database_syncer_errors_total" => &mut found.errors,
            _ => continue,
        };
        *slot += value;
    }
    if series != 1 {
        bail!("{url}: expected one WAN link, found {series}");
    }
    Ok(found)
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let rank = ((values.len() as f64 * p / 100.0).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Writes a fresh marker in region a and waits until region b reads it:
/// b then holds every earlier write of a (a link applies in log order).
async fn settle(a: &mut MultiplexedConnection, b: &mut MultiplexedConnection, limit: Duration) -> anyhow::Result<()> {
    let marker = format!("{:?}", std::time::SystemTime::now());
    redis::cmd("SET").arg("marker").arg(&marker).query_async::<()>(a).await.context("marker SET in region a")?;
    let deadline = Instant::now() + limit;
    let mut get = redis::cmd("GET");
    get.arg("marker");
    loop {
        let seen: Option<Option<String>> = query(b, &get, Duration::from_secs(1)).await.context("marker GET in b")?;
        if seen.flatten().as_deref() == Some(marker.as_str()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("region b did not catch up with region a within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One paced rate's figures.
struct Row {
    percent: u32,
    target: f64,
    achieved: f64,
    probes: usize,
    lost: u64,
    lag: Option<(f64, f64, f64)>,
    wire_per_delta: f64,
    raw_per_delta: f64,
}

fn per_delta(before: Syncer, after: Syncer) -> (f64, f64) {
    let deltas = after.deltas.saturating_sub(before.deltas).max(1) as f64;
    (
        after.bytes_wire.saturating_sub(before.bytes_wire) as f64 / deltas,
        after.bytes_raw.saturating_sub(before.bytes_raw) as f64 / deltas,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.pipeline == 0 || args.rates.is_empty() {
        bail!("--connections, --pipeline and --rates must be positive");
    }
    std::fs::create_dir_all(&args.dir)?;
    let a_host = IpAddr::from([127, 0, 0, args.base]);
    let b_host = IpAddr::from([127, 0, 0, args.base.checked_add(1).context("--base below 255")?]);
    let a = Region::start(&args, "a", a_host)?;
    let b = Region::start(&args, "b", b_host)?;
    for region in [&a, &b] {
        let admin = region.admin();
        // Up once the node is an active member with its sync address (the
        // admin API answers a moment before that).
        until(&format!("region {}'s node", region.name), Duration::from_secs(60), || async {
            let nodes = admin_get(&admin, "/v1/nodes").await?;
            nodes.as_array()?.iter().any(|n| n["status"] == "active" && n["sync_addr"].is_string()).then_some(())
        })
        .await?;
    }
    let port = free_port();
    let body = json!({"name": "bench", "port": port, "instances": [a.admin(), b.admin()]});
    let created = tokio::time::timeout(
        Duration::from_secs(90),
        request(Method::POST, &format!("{}/v1/crdbs", a.admin()), Some(body)),
    )
    .await
    .context("POST /v1/crdbs timed out")??;
    if created.0 != StatusCode::CREATED {
        bail!("cannot create the active-active database: {} {}", created.0, created.1);
    }
    let guid = created.1["guid"].as_str().context("a crdb guid")?.to_string();
    let (a_addr, b_addr) = (SocketAddr::new(a_host, port), SocketAddr::new(b_host, port));
    let mut a_conn = connect_or_fail(a_addr).await?;
    let mut b_conn = connect_or_fail(b_addr).await?;
    // Both directions stream before anything is measured.
    settle(&mut a_conn, &mut b_conn, Duration::from_secs(60)).await?;
    settle(&mut b_conn, &mut a_conn, Duration::from_secs(60)).await?;
    println!(
        "regions: a on {a_host} (admin {}), b on {b_host} (admin {}); active-active database {guid} on port {port}",
        a.admin(),
        b.admin()
    );
    let (sample_key, sample_value) = key_value(0);
    let resp = resp_bytes(&sample_key, &sample_value);
    println!(
        "every write: SET <{}-byte key> <{}-byte value>, {resp} bytes of RESP; load: {} connections to region a",
        sample_key.len(),
        sample_value.len(),
        args.connections
    );

    let next = Arc::new(AtomicU64::new(1));
    // 1. Peak.
    let before = syncer(&b.admin()).await?;
    let started = Instant::now();
    let load = write_load(&args, a_addr, &next, None, started + Duration::from_secs(args.peak_seconds)).await?;
    let peak_writes: u64 = load.await??.iter().map(|w| w.acked).sum();
    let peak = peak_writes as f64 / started.elapsed().as_secs_f64();
    settle(&mut a_conn, &mut b_conn, Duration::from_secs(120)).await?;
    let (peak_wire, peak_raw) = per_delta(before, syncer(&b.admin()).await?);
    println!(
        "peak: {peak:.0} SETs/s accepted by region a ({peak_writes} in {:.1} s, pipelines of {}); region b caught up after {:.1} s",
        args.peak_seconds as f64,
        args.pipeline,
        started.elapsed().as_secs_f64() - args.peak_seconds as f64
    );

    // 2. Lag at each rate.
    let seq = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::new();
    for &percent in &args.rates {
        let target = peak * f64::from(percent) / 100.0;
        let before = syncer(&b.admin()).await?;
        let started = Instant::now();
        let until = started + Duration::from_secs(args.seconds);
        let load = write_load(&args, a_addr, &next, Some(target), until).await?;
        let (pa, pb) = (connect_or_fail(a_addr).await?, connect_or_fail(b_addr).await?);
        let interval = Duration::from_millis(args.probe_interval_ms.max(1));
        let trace = args.trace_ms.map(|ms| (ms, next.clone()));
        let probes = tokio::spawn(probe(pa, pb, seq.clone(), interval, until, trace));
        let writes: u64 = load.await??.iter().map(|w| w.acked).sum();
        let achieved = writes as f64 / started.elapsed().as_secs_f64();
        let mut probes = probes.await??;
        settle(&mut a_conn, &mut b_conn, Duration::from_secs(120)).await?;
        let (wire_per_delta, raw_per_delta) = per_delta(before, syncer(&b.admin()).await?);
        probes.lags.sort_by(f64::total_cmp);
        let lag = (!probes.lags.is_empty()).then(|| {
            (percentile(&probes.lags, 50.0), percentile(&probes.lags, 99.0), probes.lags[probes.lags.len() - 1])
        });
        rows.push(Row {
            percent,
            target,
            achieved,
            probes: probes.lags.len() - probes.lost as usize,
            lost: probes.lost,
            lag,
            wire_per_delta,
            raw_per_delta,
        });
    }
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>7} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "rate", "target/s", "SETs/s", "probes", "lost", "p50 ms", "p99 ms", "max ms", "wire B/Δ", "raw B/Δ"
    );
    println!(
        "{:<10} {:>10} {:>10.0} {:>7} {:>5} {:>8} {:>8} {:>8} {:>9.1} {:>9.1}",
        "peak", "-", peak, "-", "-", "-", "-", "-", peak_wire, peak_raw
    );
    for row in &rows {
        let (p50, p99, max) = match row.lag {
            Some((p50, p99, max)) => (format!("{p50:.2}"), format!("{p99:.2}"), format!("{max:.2}")),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<10} {:>10.0} {:>10.0} {:>7} {:>5} {p50:>8} {p99:>8} {max:>8} {:>9.1} {:>9.1}",
            format!("{}% peak", row.percent),
            row.target,
            row.achieved,
            row.probes,
            row.lost,
            row.wire_per_delta,
            row.raw_per_delta
        );
    }
    println!(
        "(lag: from region a's OK of a probe SET to the GET in region b that returns it, a lost probe counting as {} ms; \
         Δ: one SET delta)",
        PROBE_WAIT_MAX.as_millis()
    );

    // 3. Partition and catch-up.
    println!();
    settle(&mut a_conn, &mut b_conn, Duration::from_secs(120)).await?;
    let before = syncer(&b.admin()).await?;
    let rate = peak * f64::from(args.partition_rate) / 100.0;
    let mut reader = connect_or_fail(b_addr).await?;
    b.signal("STOP")?;
    let stopped = Instant::now();
    let until = stopped + Duration::from_secs(args.partition_seconds);
    // Region b is resumed before any error of the load is returned.
    let written = match write_load(&args, a_addr, &next, Some(rate), until).await {
        Ok(load) => load.await.map_err(anyhow::Error::from).and_then(|written| written),
        Err(error) => Err(error),
    };
    b.signal("CONT")?;
    let resumed = Instant::now();
    let written = written?;
    let deltas: u64 = written.iter().map(|w| w.acked).sum();
    let lasts: Vec<(String, String)> = written.into_iter().filter_map(|w| w.last).collect();
    let paused = resumed.duration_since(stopped).as_secs_f64();
    let raw_per_delta = rows.last().map_or(peak_raw, |r| r.raw_per_delta);
    println!(
        "partition: region b stopped (SIGSTOP) {paused:.1} s while region a wrote {deltas} SETs ({:.0}/s, {}% of peak); \
         about {:.0} MiB of encoded deltas (raw; the outbox compresses sealed segments) for a {:.0} MiB outbox",
        deltas as f64 / paused,
        args.partition_rate,
        deltas as f64 * raw_per_delta / (1 << 20) as f64,
        OUTBOX_BYTES / (1 << 20) as f64
    );

    // First ingress and the delta counter, from b's /metrics every 10 ms.
    // (After a snapshot the counter never gets there: the snapshot's keys
    // are not deltas.)
    let b_admin = b.admin();
    let watched = Arc::new(std::sync::Mutex::new((None, None)));
    let watcher = tokio::spawn({
        let watched = watched.clone();
        async move {
            loop {
                if let Ok(now) = syncer(&b_admin).await {
                    let mut seen = watched.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.0.is_none() && now.bytes_wire > before.bytes_wire {
                        seen.0 = Some(resumed.elapsed());
                    }
                    if seen.1.is_none() && now.deltas >= before.deltas + deltas {
                        seen.1 = Some(resumed.elapsed());
                    }
                    if seen.0.is_some() && seen.1.is_some() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    // Caught up when every writer's last key reads its value in b.
    let keys: Vec<&String> = lasts.iter().map(|(k, _)| k).collect();
    let deadline = resumed + Duration::from_secs(args.catchup_timeout_seconds);
    let mut mget = redis::cmd("MGET");
    mget.arg(&keys);
    // The longest b took to answer a read meanwhile (from SIGCONT on).
    let (mut answered, mut read_stall) = (resumed, Duration::ZERO);
    loop {
        let values: Option<Vec<Option<String>>> = if keys.is_empty() {
            Some(Vec::new())
        } else {
            query(&mut reader, &mget, Duration::from_secs(1)).await.context("MGET in region b")?
        };
        if let Some(values) = values {
            read_stall = read_stall.max(answered.elapsed());
            answered = Instant::now();
            if values.iter().zip(&lasts).all(|(got, (_, want))| got.as_deref() == Some(want.as_str())) {
                break;
            }
        }
        if Instant::now() > deadline {
            watcher.abort();
            bail!("region b did not catch up within {} s of SIGCONT", args.catchup_timeout_seconds);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let caught_up = resumed.elapsed();
    // The counter may lag the reads by a scrape; give it a moment.
    let stop_watcher = watcher.abort_handle();
    let _ = tokio::time::timeout(Duration::from_secs(2), watcher).await;
    stop_watcher.abort();
    let (first_ingress, counted): (Option<Duration>, Option<Duration>) =
        *watched.lock().unwrap_or_else(|p| p.into_inner());
    let after = syncer(&b.admin()).await?;
    let (full, partial, errors) = (
        after.full_syncs.saturating_sub(before.full_syncs),
        after.partial_syncs.saturating_sub(before.partial_syncs),
        after.errors.saturating_sub(before.errors),
    );
    let path = match (full, partial) {
        (0, 0) => "the stream open before the partition went on (no reconnect)".to_string(),
        (0, p) => format!("resumed from its cursor ({p} partial sync{})", if p == 1 { "" } else { "s" }),
        (f, _) => format!(
            "snapshot: a's outbox no longer covered b's cursor ({f} full sync{})",
            if f == 1 { "" } else { "s" }
        ),
    };
    let link = admin_get(&b.admin(), &format!("/v1/crdbs/{guid}/instance")).await;
    let last_error = link
        .as_ref()
        .and_then(|l| l["endpoint_status"]["links"][0]["last_error"].as_str().map(str::to_string))
        .unwrap_or_else(|| "none".into());
    let catchup = deltas as f64 / caught_up.as_secs_f64();
    println!("catch-up path: {path}; stream errors {errors} (last: {last_error})");
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    println!(
        "catch-up: first bytes from a {} after SIGCONT; delta counter complete {}; every key readable after {:.0} ms",
        ms(first_ingress),
        ms(counted),
        caught_up.as_secs_f64() * 1e3
    );
    println!(
        "catch-up rate: {catchup:.0} deltas/s from SIGCONT (meanwhile b took up to {:.0} ms to answer a read)",
        read_stall.as_secs_f64() * 1e3
    );
    if let Some(first) = first_ingress.filter(|f| *f < caught_up) {
        println!(
            "               {:.0} deltas/s from the first ingress ({:.0} ms of reconnect/stall before it)",
            deltas as f64 / (caught_up - first).as_secs_f64(),
            first.as_secs_f64() * 1e3
        );
    }
    if full == 0 {
        let (wire, raw) = per_delta(before, after);
        println!("catch-up bytes per delta: {wire:.1} wire, {raw:.1} raw (large batches)");
    }

    let main = rows.iter().find(|r| r.percent == 50).or(rows.last()).context("a rate row")?;
    let p99 = main.lag.map(|l| l.1).context("no probe reached region b at the reported rate")?;
    println!();
    println!(
        "targets: lag p99 < 5 ms at 50% of peak ({}), catch-up >= 500000 deltas/s ({}), wire bytes per SET <= RESP ({})",
        if p99 < 5.0 { "met" } else { "missed" },
        if catchup >= 500_000.0 { "met" } else { "missed" },
        if main.wire_per_delta <= resp as f64 { "met" } else { "missed" }
    );
    println!(
        "lag_ms_p99={p99:.2} catchup_deltas_per_s={catchup:.0} wire_bytes_per_set={:.1} resp_bytes_per_set={resp}",
        main.wire_per_delta
    );
    drop((a, b));
    Ok(())
}
