//! The node: configuration, one database endpoint, and the control plane.
//!
//! With no configuration a node is a one-node cluster serving one database on
//! 127.0.0.1:6379, so `redis-cli` works at once: it initialises the cluster
//! configuration through Raft (in memory without `data_dir`) and records
//! that database in it. With `node_id`, `data_dir` and `join` it is one member
//! of a larger cluster ([`crate::control`]). The default database is served
//! on `port` on every node; every other database is served on its own port by
//! the node holding its master shards ([`crate::databases`]), and
//! active-active instances sync with their peer regions through the node's
//! WAN sync service on `sync_port`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meridian_crdt::ReplicaId;
use meridian_crdt::clock::MAX_SKEW_MS_DEFAULT;
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_replication::durability::Fsync;
use meridian_replication::master_service::SourceTable;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use meridian_wan::{Codec, MonitorRegistry, SyncMonitorService, SyncSource, SyncTls, TlsFiles};

use crate::config::BdbSpec;
use crate::control::{ControlPlane, ControlSettings, RunningControl, bind_port};
use crate::databases::{DEFAULT_BDB_NAME, DatabaseSettings, Databases, bdb_reading};

/// The built-in WAN sync port; taken if free, else a free port is used and
/// said in the log (flag or config key `sync_port` pins it).
pub const SYNC_PORT_DEFAULT: u16 = 9445;

/// A node's configuration: flags, or a TOML file with the same names.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Address to listen on.
    pub bind: IpAddr,
    /// The address other nodes, peer regions and clients are told to reach
    /// this node at (its cluster, admin and sync addresses, and the host of
    /// its database endpoints); default: `bind`. Needed when `bind` is
    /// `0.0.0.0` or `::`, which no one can dial.
    pub announce: Option<IpAddr>,
    /// Port of the database endpoint.
    pub port: u16,
    /// Password of the default user.
    pub requirepass: Option<String>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    pub log_level: String,
    /// Most clients at once.
    pub maxclients: usize,
    /// Region this node's cluster serves.
    pub region: String,
    /// This node's id in its cluster (1 or more).
    pub node_id: u64,
    /// Where the node keeps its Raft log and configuration; none keeps them
    /// in memory (a throwaway one-node cluster).
    pub data_dir: Option<PathBuf>,
    /// A member's cluster address (`host:port`) to join through on first
    /// start; ignored once the data directory holds Raft state.
    pub join: Option<String>,
    /// Port of the cluster (Raft) RPCs; default 9444, or a free port if that
    /// one is taken. 0 picks a free port.
    pub cluster_port: Option<u16>,
    /// Port of the admin REST API; default 9443, or a free port if that one
    /// is taken. 0 picks a free port.
    pub admin_port: Option<u16>,
    /// Port of the WAN sync service peer regions dial for this node's
    /// active-active databases; default 9445, or a free port if that one is
    /// taken. 0 picks a free port.
    pub sync_port: Option<u16>,
    /// Rack or zone label of this node.
    pub rack: Option<String>,
    /// Raft log entries between two snapshots of the cluster configuration.
    pub raft_snapshot_logs: u64,
    /// When the database's journal is forced to disk: `always`, `everysec`
    /// or `no` (with a data directory).
    pub appendfsync: String,
    /// How the WAN syncer compresses what this node sends to peer regions:
    /// `zstd` (default), `gzip` or `none`.
    pub sync_compression: String,
    /// This node's certificate (PEM) for mutual TLS on WAN links. With
    /// `sync_tls_key` and `sync_tls_ca` (all three or none), the sync port
    /// speaks TLS only and requires peers' certificates from that authority,
    /// and this node's links dial `https://` and present it.
    pub sync_tls_cert: Option<PathBuf>,
    /// The private key of `sync_tls_cert` (PEM).
    pub sync_tls_key: Option<PathBuf>,
    /// The authority peer regions' certificates must chain to (PEM).
    pub sync_tls_ca: Option<PathBuf>,
    /// The name peer certificates are checked against, when peers are
    /// dialled by an address their certificates do not name (default: the
    /// host of the peer's sync endpoint).
    pub sync_tls_domain: Option<String>,
    /// Milliseconds a node may stop answering the cluster leader before its
    /// master shards fail over to their replicas (at least 100). Masters
    /// with replicas stop taking writes after half of it without contact.
    pub failover_timeout_ms: u64,
    /// Milliseconds a failed node's replica shards wait for it before they
    /// are re-created on other active nodes (replica high availability).
    pub replica_ha_grace_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            announce: None,
            port: 6379,
            requirepass: None,
            log_level: "info".to_string(),
            maxclients: 10_000,
            region: "local".to_string(),
            node_id: 1,
            data_dir: None,
            join: None,
            cluster_port: None,
            admin_port: None,
            sync_port: None,
            rack: None,
            raft_snapshot_logs: crate::control::SNAPSHOT_LOGS_DEFAULT,
            appendfsync: "everysec".to_string(),
            sync_compression: "zstd".to_string(),
            sync_tls_cert: None,
            sync_tls_key: None,
            sync_tls_ca: None,
            sync_tls_domain: None,
            failover_timeout_ms: crate::control::liveness::FAILOVER_TIMEOUT_MS_DEFAULT,
            replica_ha_grace_ms: crate::control::liveness::REPLICA_HA_GRACE_MS_DEFAULT,
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
        if let Some(announce) = self.announce.filter(IpAddr::is_unspecified) {
            anyhow::bail!("announce must be an address other nodes can reach, not {announce}");
        }
        if Codec::parse(&self.sync_compression).is_none() {
            anyhow::bail!("sync-compression must be zstd, gzip or none (got {:?})", self.sync_compression);
        }
        if Fsync::parse(&self.appendfsync).is_none() {
            anyhow::bail!("appendfsync must be always, everysec or no (got {:?})", self.appendfsync);
        }
        if self.requirepass.as_deref() == Some("") {
            anyhow::bail!("requirepass must not be empty (leave it out for no password)");
        }
        if self.node_id == 0 {
            anyhow::bail!("node_id must be 1 or more");
        }
        if self.region.is_empty() {
            anyhow::bail!("region must not be empty");
        }
        if self.raft_snapshot_logs == 0 {
            anyhow::bail!("raft_snapshot_logs must be 1 or more");
        }
        if self.failover_timeout_ms < crate::control::liveness::FAILOVER_TIMEOUT_MS_MIN {
            anyhow::bail!(
                "failover_timeout_ms must be at least {} (got {})",
                crate::control::liveness::FAILOVER_TIMEOUT_MS_MIN,
                self.failover_timeout_ms
            );
        }
        self.sync_tls_files()?;
        if self.join.as_deref() == Some("") {
            anyhow::bail!("join must be a host:port (leave it out to start a new cluster)");
        }
        Ok(())
    }
}

impl NodeConfig {
    /// The WAN TLS files, when configured: all three of certificate, key and
    /// authority, or none.
    pub fn sync_tls_files(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.sync_tls_cert, &self.sync_tls_key, &self.sync_tls_ca) {
            (None, None, None) => {
                if self.sync_tls_domain.is_some() {
                    anyhow::bail!("sync-tls-domain needs sync-tls-cert, sync-tls-key and sync-tls-ca");
                }
                Ok(None)
            }
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                domain: self.sync_tls_domain.clone(),
            })),
            _ => anyhow::bail!("sync-tls-cert, sync-tls-key and sync-tls-ca go together: give all three or none"),
        }
    }
}

/// `addr` as others reach it: its port at `announce`, if given.
pub(crate) fn announced(addr: SocketAddr, announce: Option<IpAddr>) -> SocketAddr {
    SocketAddr::new(announce.unwrap_or(addr.ip()), addr.port())
}

/// A running node.
pub struct Node {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where the admin REST API is reached (the announced address).
    pub admin_addr: SocketAddr,
    /// Where the cluster (Raft) RPCs are reached (the announced address).
    pub cluster_addr: SocketAddr,
    /// Where peer regions dial the WAN sync service (the announced address).
    pub sync_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The sync service and the reconcile loop of the other databases.
    background: Vec<tokio::task::JoinHandle<()>>,
    databases: Databases,
    control: RunningControl,
}

impl Node {
    /// Binds and starts serving. The port is taken at once, so an error here
    /// (e.g. the port is in use) is reported before anything runs.
    pub async fn start(config: &NodeConfig) -> anyhow::Result<Node> {
        config.validate()?;
        let sync_tls = match config.sync_tls_files()? {
            Some(files) => Some(SyncTls::load(&files).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        };
        let listener: TcpListener = meridian_proxy::server::bind(SocketAddr::new(config.bind, config.port)).await?;
        let addr = listener.local_addr()?;
        let sync_listener = bind_port(config.bind, config.sync_port, SYNC_PORT_DEFAULT, "the WAN sync service").await?;
        // What others are told: the bound port at the announced address.
        let sync_addr = announced(sync_listener.local_addr()?, config.announce);
        if config.bind.is_unspecified() && config.announce.is_none() {
            tracing::warn!(
                bind = %config.bind,
                "listening on every address without `announce`: other nodes and peer regions are told {}, \
                 which they cannot dial; set --announce to the address they reach this node at",
                config.bind
            );
        }
        let settings = Settings {
            requirepass: config.requirepass.clone(),
            maxclients: config.maxclients,
            port: addr.port(),
            ..Settings::default()
        };
        let replica_sources = Arc::new(SourceTable::new());
        let control_settings = ControlSettings {
            node_id: config.node_id,
            region: config.region.clone(),
            rack: config.rack.clone(),
            data_dir: config.data_dir.clone(),
            join: config.join.clone(),
            bind: config.bind,
            announce: config.announce,
            cluster_port: config.cluster_port,
            admin_port: config.admin_port,
            sync_addr: Some(sync_addr),
            default_bdb: BdbSpec {
                name: DEFAULT_BDB_NAME.to_string(),
                port: addr.port(),
                shards_count: 1,
                replication: false,
                password: config.requirepass.clone(),
                oss_cluster: false,
                crdb: None,
            },
            snapshot_logs: config.raft_snapshot_logs,
            failover_timeout_ms: config.failover_timeout_ms,
            replica_ha_grace_ms: config.replica_ha_grace_ms,
            replica_sources: replica_sources.clone(),
        };
        // The control plane first: it takes the data directory's lock, so a
        // second node on the same directory is refused before it can touch
        // the database's journal.
        let control = RunningControl::start(&control_settings, crate::admin::router).await?;
        let server = match &config.data_dir {
            None => ServerState::new(Shard::new(ReplicaId(1), MAX_SKEW_MS_DEFAULT), settings),
            Some(dir) => {
                let dir = dir.join("shard-1");
                let fsync = Fsync::parse(&config.appendfsync).expect("validated");
                let recovered = Shard::recover(ReplicaId(1), MAX_SKEW_MS_DEFAULT, &dir, fsync)
                    .map_err(|e| anyhow::anyhow!("cannot recover the data in {}: {e}", dir.display()));
                let (shard, journal, recovered) = match recovered {
                    Ok(recovered) => recovered,
                    Err(e) => {
                        control.stop().await;
                        return Err(e);
                    }
                };
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
        let task = tokio::spawn(meridian_proxy::server::run(listener, server.clone(), receiver.clone()));

        // Every other database of the configuration, on its own port; the
        // active-active ones share this node's sync service (region ids are
        // per database, so the source's own id is unused: 0).
        let sync = SyncSource::new(0).with_codec(Codec::parse(&config.sync_compression).expect("validated"));
        let databases = Databases::new(
            DatabaseSettings {
                node_id: config.node_id,
                bind: config.bind,
                maxclients: config.maxclients,
                data_dir: config.data_dir.clone(),
                fsync: Fsync::parse(&config.appendfsync).expect("validated"),
                failover_timeout: std::time::Duration::from_millis(config.failover_timeout_ms),
                sync_tls: sync_tls.clone(),
            },
            sync.clone(),
            replica_sources,
        );
        let reporter = databases.clone();
        control.control.set_local_status(Arc::new(move |uid| reporter.status(uid)));
        // The default database is served here, the others by `databases`.
        let (served, plane) = (databases.clone(), control.control.clone());
        control.control.set_bdb_reporter(Arc::new(move || {
            let default_uid =
                plane.with_config(|c| c.bdbs.values().find(|b| b.name == DEFAULT_BDB_NAME).map(|b| b.uid));
            let mut readings: Vec<_> = default_uid.map(|uid| bdb_reading(uid, &server)).into_iter().collect();
            readings.extend(served.bdb_readings());
            readings
        }));
        // The links' figures, for the SyncMonitor service on the sync port and
        // for the admin port's /metrics: both read the same registry.
        let registry: Arc<dyn MonitorRegistry> = Arc::new(databases.clone());
        control.control.set_monitor(registry.clone());
        let monitor = SyncMonitorService::new(registry);
        let mut stop = receiver.clone();
        let mut background = vec![tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|&stopped| stopped).await;
            };
            if let Err(error) =
                meridian_wan::serve_with_monitor(sync_listener, sync, Some(monitor), sync_tls.as_ref(), stopped).await
            {
                tracing::error!(%error, "the WAN sync service failed");
            }
        })];
        background.push(tokio::spawn(databases.clone().run(control.control.clone(), receiver)));
        Ok(Node {
            addr,
            admin_addr: control.control.admin_addr(),
            cluster_addr: control.control.cluster_addr(),
            sync_addr,
            shutdown,
            task,
            background,
            databases,
            control,
        })
    }

    /// Where database `uid` (not the default one) is served on this node.
    pub fn database_addr(&self, uid: u64) -> Option<SocketAddr> {
        self.databases.addr(uid)
    }

    /// This node's control plane (configuration, Raft state, writes).
    pub fn control(&self) -> &ControlPlane {
        &self.control.control
    }

    /// Stops the control plane, stops accepting clients and ends the server
    /// loops (the other databases' and the sync service's too).
    pub async fn stop(self) {
        self.control.stop().await;
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        for task in self.background {
            let _ = task.await;
        }
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
        assert!(NodeConfig { node_id: 0, ..NodeConfig::default() }.validate().is_err());
        let config: NodeConfig =
            toml::from_str("node_id = 2\nregion = \"eu\"\ndata_dir = \"/var/lib/meridian\"\njoin = \"10.0.0.1:9444\"\ncluster_port = 9500\nadmin_port = 9501\nrack = \"r1\"").unwrap();
        assert_eq!((config.node_id, config.cluster_port, config.admin_port), (2, Some(9500), Some(9501)));
        assert_eq!(config.join.as_deref(), Some("10.0.0.1:9444"));
    }
}
