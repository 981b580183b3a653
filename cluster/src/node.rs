//! The node: configuration, and running one database endpoint.
//!
//! With no configuration a node is a one-node cluster serving one database on
//! 127.0.0.1:6379, so `redis-cli` works at once. The cluster manager, Raft
//! configuration store and sharding join this with issue 4.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_crdt::ReplicaId;
use meridian_crdt::clock::MAX_SKEW_MS_DEFAULT;
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_replication::durability::Fsync;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A node's configuration: flags, or a TOML file with the same names.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port of the database endpoint.
    pub port: u16,
    /// Password of the default user.
    pub requirepass: Option<String>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    pub log_level: String,
    /// Most clients at once.
    pub maxclients: usize,
    /// Where the node keeps its data; `None`: nothing is persisted.
    pub data_dir: Option<PathBuf>,
    /// When the journal is forced to disk: `always`, `everysec` or `no`.
    pub appendfsync: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            requirepass: None,
            log_level: "info".to_string(),
            maxclients: 10_000,
            data_dir: None,
            appendfsync: "everysec".to_string(),
        }
    }
}

impl NodeConfig {
    /// Reads a TOML configuration file; unknown keys are an error.
    pub fn from_file(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// Checks values a flag or file could get wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.maxclients == 0 {
            anyhow::bail!("maxclients must be at least 1");
        }
        if Fsync::parse(&self.appendfsync).is_none() {
            anyhow::bail!("appendfsync must be always, everysec or no (got {:?})", self.appendfsync);
        }
        if self.requirepass.as_deref() == Some("") {
            anyhow::bail!("requirepass must not be empty (leave it out for no password)");
        }
        Ok(())
    }
}

/// A running node.
pub struct Node {
    /// Where clients connect.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Binds and starts serving. The port is taken at once, so an error here
    /// (e.g. the port is in use) is reported before anything runs.
    pub async fn start(config: &NodeConfig) -> anyhow::Result<Node> {
        config.validate()?;
        let listener: TcpListener = meridian_proxy::server::bind(SocketAddr::new(config.bind, config.port)).await?;
        let addr = listener.local_addr()?;
        let settings = Settings {
            requirepass: config.requirepass.clone(),
            maxclients: config.maxclients,
            port: addr.port(),
            ..Settings::default()
        };
        let server = match &config.data_dir {
            None => ServerState::new(Shard::new(ReplicaId(1), MAX_SKEW_MS_DEFAULT), settings),
            Some(dir) => {
                let dir = dir.join("shard-1");
                let fsync = Fsync::parse(&config.appendfsync).expect("validated");
                let (shard, journal, recovered) = Shard::recover(ReplicaId(1), MAX_SKEW_MS_DEFAULT, &dir, fsync)
                    .map_err(|e| anyhow::anyhow!("cannot recover the data in {}: {e}", dir.display()))?;
                tracing::info!(
                    dir = %dir.display(),
                    keys = shard.keyspace().len(),
                    deltas_replayed = recovered.deltas_replayed,
                    truncated_bytes = recovered.truncated_bytes,
                    appendfsync = fsync.name(),
                    "data recovered"
                );
                ServerState::new(shard, settings).with_journal(journal)
            }
        };
        let server = Arc::new(server);
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(meridian_proxy::server::run(listener, server, receiver));
        Ok(Node { addr, shutdown, task })
    }

    /// Stops accepting clients and ends the server loop.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_strict() {
        let config: NodeConfig = toml::from_str("port = 7000\nrequirepass = \"s3cret\"").unwrap();
        assert_eq!(config.port, 7000);
        assert_eq!(config.bind, IpAddr::from([127, 0, 0, 1]));
        assert!(toml::from_str::<NodeConfig>("prot = 7000").is_err(), "a misspelt key is an error");
        assert!(NodeConfig { maxclients: 0, ..NodeConfig::default() }.validate().is_err());
    }
}
