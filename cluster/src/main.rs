//! The `meridian` binary.
//!
//! `meridian node` runs a node: with no flags, a one-node cluster serving one
//! database on 127.0.0.1:6379; with `--node-id`, `--data-dir` and `--join`, a
//! member of a larger cluster. `meridian ctl` drives a cluster's admin API.
//! `demo` joins with issue 5.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_cluster::ctl::CtlArgs;
use meridian_cluster::node::{Node, NodeConfig};

#[derive(Parser)]
#[command(name = "meridian", version, about = "An active-active database that speaks the Redis protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (with no flags: one database on 127.0.0.1:6379).
    Node(Box<NodeArgs>),
    /// Drive a cluster through its admin REST API.
    Ctl(CtlArgs),
    /// Start a local active-active topology on loopback (no configuration):
    /// several regions, one database across them, until Ctrl-C.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Number of regions (2 to 5).
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Redis port of the first region; the others follow (a taken port is
    /// replaced by a free one). 0: free ports.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Log level or tracing filter.
    #[arg(long, default_value = "warn")]
    log_level: String,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// TOML configuration file (flags given as well override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Address other nodes, peer regions and clients are told to reach this
    /// node at (default: --bind; needed with --bind 0.0.0.0).
    #[arg(long)]
    announce: Option<IpAddr>,
    /// Port of the database endpoint.
    #[arg(long)]
    port: Option<u16>,
    /// Password of the default user.
    #[arg(long)]
    requirepass: Option<String>,
    /// Log level or tracing filter.
    #[arg(long)]
    log_level: Option<String>,
    /// Most clients at once.
    #[arg(long)]
    maxclients: Option<usize>,
    /// Region this node's cluster serves.
    #[arg(long)]
    region: Option<String>,
    /// This node's id in its cluster (1 or more; default 1).
    #[arg(long)]
    node_id: Option<u64>,
    /// Directory of the node's data: the Raft log and configuration, and
    /// the database's journal and snapshots (default: kept in memory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// When the journal is forced to disk: always, everysec (default) or no.
    #[arg(long)]
    appendfsync: Option<String>,
    /// How what this node sends to peer regions is compressed: zstd (default), gzip or none.
    #[arg(long)]
    sync_compression: Option<String>,
    /// This node's certificate (PEM) for mutual TLS on WAN links; with
    /// --sync-tls-key and --sync-tls-ca, the sync port speaks TLS only and
    /// links to peer regions dial https.
    #[arg(long)]
    sync_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --sync-tls-cert.
    #[arg(long)]
    sync_tls_key: Option<PathBuf>,
    /// The certificate authority (PEM) peer regions' certificates must chain to.
    #[arg(long)]
    sync_tls_ca: Option<PathBuf>,
    /// The name peer certificates are checked against (default: the host
    /// of the peer's sync endpoint).
    #[arg(long)]
    sync_tls_domain: Option<String>,
    /// Milliseconds a node may stop answering before its master shards fail
    /// over to their replicas (default 600; at least 100).
    #[arg(long)]
    failover_timeout_ms: Option<u64>,
    /// Milliseconds a failed node's replica shards wait for it to come back
    /// before they are re-created on other nodes (default 60000).
    #[arg(long)]
    replica_ha_grace_ms: Option<u64>,
    /// Cluster address (host:port) of a member to join on first start.
    #[arg(long)]
    join: Option<String>,
    /// Port of the cluster (Raft) RPCs (default 9444, or a free port if taken).
    #[arg(long)]
    cluster_port: Option<u16>,
    /// Port of the admin REST API (default 9443, or a free port if taken).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Port of the WAN sync service of active-active databases (default
    /// 9445, or a free port if taken).
    #[arg(long)]
    sync_port: Option<u16>,
    /// Rack or zone label of this node.
    #[arg(long)]
    rack: Option<String>,
}

fn config_from(args: NodeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if args.announce.is_some() {
        config.announce = args.announce;
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    if let Some(password) = args.requirepass {
        config.requirepass = Some(password);
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    if let Some(maxclients) = args.maxclients {
        config.maxclients = maxclients;
    }
    if let Some(region) = args.region {
        config.region = region;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = node_id;
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    if args.join.is_some() {
        config.join = args.join;
    }
    if args.cluster_port.is_some() {
        config.cluster_port = args.cluster_port;
    }
    if args.admin_port.is_some() {
        config.admin_port = args.admin_port;
    }
    if args.sync_port.is_some() {
        config.sync_port = args.sync_port;
    }
    if args.rack.is_some() {
        config.rack = args.rack;
    }
    if let Some(fsync) = args.appendfsync {
        config.appendfsync = fsync;
    }
    if let Some(codec) = args.sync_compression {
        config.sync_compression = codec;
    }
    if args.sync_tls_cert.is_some() {
        config.sync_tls_cert = args.sync_tls_cert;
    }
    if args.sync_tls_key.is_some() {
        config.sync_tls_key = args.sync_tls_key;
    }
    if args.sync_tls_ca.is_some() {
        config.sync_tls_ca = args.sync_tls_ca;
    }
    if args.sync_tls_domain.is_some() {
        config.sync_tls_domain = args.sync_tls_domain;
    }
    if let Some(timeout) = args.failover_timeout_ms {
        config.failover_timeout_ms = timeout;
    }
    if let Some(grace) = args.replica_ha_grace_ms {
        config.replica_ha_grace_ms = grace;
    }
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or(()),
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// The log filter: a bare level (`info`) keeps openraft at `warn`, whose
/// `info` lines describe every vote and replication step; a full tracing
/// filter is taken as given.
fn log_filter(level: &str) -> String {
    if level.contains('=') || level.contains(',') { level.to_string() } else { format!("{level},openraft=warn") }
}

/// Runs `meridian demo` until Ctrl-C or SIGTERM.
async fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let ports: Vec<u16> = (0..args.regions)
        .map(|i| {
            let port = if args.base_port == 0 { 0 } else { args.base_port.saturating_add(i as u16) };
            // A taken port becomes a free one: the demo needs no configuration.
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => port,
                Err(_) => 0,
            }
        })
        .collect();
    let demo = meridian_cluster::demo::Demo::start(args.regions, &ports).await?;
    println!("Meridian demo: one active-active database in {} regions on loopback.", demo.regions.len());
    for region in &demo.regions {
        println!("region {} redis://{}", region.name, region.redis_addr);
    }
    let port = |i: usize| demo.regions[i % demo.regions.len()].redis_addr.port();
    println!();
    println!("Try (any Redis client works):");
    println!("  redis-cli -p {} set greeting hello        # write in {}", port(0), demo.regions[0].name);
    println!("  redis-cli -p {} get greeting              # read it in {}", port(1), demo.regions[1].name);
    println!("  redis-cli -p {} incrby visits 5; redis-cli -p {} incrby visits 7", port(0), port(1));
    println!("  redis-cli -p {} get visits                # 12: concurrent increments add up", port(2));
    println!(
        "  redis-cli -p {} sadd tags a b; redis-cli -p {} srem tags a; redis-cli -p {} smembers tags",
        port(0),
        port(1),
        port(2)
    );
    println!();
    println!("Ctrl-C stops every region.");
    shutdown_signal().await;
    demo.stop().await;
    Ok(ExitCode::SUCCESS)
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // An API error is the answer, not a crash: one line, exit code 1.
            match runtime.block_on(meridian_cluster::ctl::run(args)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Demo(args) => {
            let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&args.log_level))
                .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", args.log_level))?;
            tracing_subscriber::fmt().with_env_filter(filter).init();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(run_demo(args))
        }
        Command::Node(args) => {
            let config = config_from(*args)?;
            let filter = tracing_subscriber::EnvFilter::try_new(log_filter(&config.log_level))
                .map_err(|e| anyhow::anyhow!("invalid --log-level {:?}: {e}", config.log_level))?;
            tracing_subscriber::fmt().with_env_filter(filter).init();
            // One CPU (a container limit, taskset): a current-thread runtime
            // does the same work without the multi-thread scheduler's
            // cross-thread bookkeeping; with more CPUs, one worker per CPU.
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let runtime = if cpus == 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else {
                tokio::runtime::Builder::new_multi_thread().worker_threads(cpus).enable_all().build()?
            };
            runtime.block_on(async {
                let node = Node::start(&config).await?;
                tracing::info!(
                    addr = %node.addr,
                    admin = %node.admin_addr,
                    cluster = %node.cluster_addr,
                    sync = %node.sync_addr,
                    "meridian node ready; try: redis-cli -p {}, or meridian ctl --url http://{} cluster info",
                    node.addr.port(),
                    node.admin_addr
                );
                shutdown_signal().await;
                tracing::info!("shutting down");
                node.stop().await;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
