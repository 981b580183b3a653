//! The `meridian` binary.
//!
//! `meridian node` runs a node: with no flags, a one-node cluster serving one
//! database on 127.0.0.1:6379. `demo` and `ctl` join with issues 4 and 5.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
    Node(NodeArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// TOML configuration file (flags given as well override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<IpAddr>,
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
    /// Directory where the node keeps its data (journal and snapshots);
    /// without it, nothing is persisted.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// When the journal is forced to disk: always, everysec (default) or no.
    #[arg(long)]
    appendfsync: Option<String>,
}

fn config_from(args: NodeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(bind) = args.bind {
        config.bind = bind;
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
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(fsync) = args.appendfsync {
        config.appendfsync = fsync;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => {
            let config = config_from(args)?;
            let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
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
                tracing::info!(addr = %node.addr, "meridian node ready; try: redis-cli -p {}", node.addr.port());
                shutdown_signal().await;
                tracing::info!("shutting down");
                node.stop().await;
                Ok(())
            })
        }
    }
}
