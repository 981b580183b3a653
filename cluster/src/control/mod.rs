//! The control plane of one node: its Raft member of the configuration
//! store, the gRPC server other members reach it on, and the write path every
//! configuration change takes (forwarded to the leader when this node is not
//! it).
//!
//! Starting a node takes one of three paths, decided by what its data
//! directory holds: a node that has Raft state resumes it (a restart: no
//! `--join` needed); a fresh node with `--join` asks a member to add it
//! (learner, then voter, then a node record in the configuration); a fresh
//! node without `--join` initialises a one-node cluster and writes the
//! cluster's name, its own node record and the default database through
//! Raft, like any later change.

pub mod liveness;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1::cluster_raft_server::ClusterRaftServer;
use meridian_proto::v1::{ClusterReply, JoinRequest};
use meridian_wan::{MonitorRegistry, PeerReading};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, timeout};

use crate::config::{Applied, BdbSpec, ClusterConfig, Command, CommandError, NodeInfo, NodeState, ShardRole};
use crate::raft::{
    LogStore, Network, NodeId, Origin, Outcome, Proposal, RAFT_MESSAGE_BYTES_MAX, Raft, RpcClient, StateMachineStore,
};

/// How long a configuration write may wait for a leader (elections, a
/// forward to the leader, the commit) before the caller gets "unavailable".
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a joining node keeps asking to be added.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two attempts of a write or a join that found no leader.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The built-in cluster (Raft RPC) port; taken if free, else a free port is
/// used and said in the log (flag or config key `cluster_port` pins it).
pub const CLUSTER_PORT_DEFAULT: u16 = 9444;
/// The built-in admin REST API port, with the same fallback (`admin_port`).
pub const ADMIN_PORT_DEFAULT: u16 = 9443;

/// What the control plane needs to start.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// This node's id (its Raft id), 1 or more.
    pub node_id: NodeId,
    /// Region the cluster serves (recorded when the cluster is created).
    pub region: String,
    /// Rack or zone label.
    pub rack: Option<String>,
    /// Where Raft state lives; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// A member to join through (`host:port` of its cluster port).
    pub join: Option<String>,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Address other nodes are told (cluster and admin addresses); `None`:
    /// the bound one.
    pub announce: Option<IpAddr>,
    /// Cluster RPC port; `None` = the built-in default with fallback, 0 = any free port.
    pub cluster_port: Option<u16>,
    /// Admin API port; same rules as `cluster_port`.
    pub admin_port: Option<u16>,
    /// Where the node serves WAN sync (recorded in its node record so the
    /// crdb API can tell peer regions); `None` if it serves none.
    pub sync_addr: Option<SocketAddr>,
    /// The default database a new cluster gets.
    pub default_bdb: BdbSpec,
    /// Log entries between two snapshots ([`SNAPSHOT_LOGS_DEFAULT`]).
    pub snapshot_logs: u64,
    /// How long a member may stop answering before its masters fail over
    /// (see [`liveness`]).
    pub failover_timeout_ms: u64,
    /// How long a failed node's replicas wait for it before they move.
    pub replica_ha_grace_ms: u64,
    /// The masters this node serves to replicas on its cluster port.
    pub replica_sources: Arc<meridian_replication::master_service::SourceTable>,
}

/// Why a configuration write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The configuration refused it (bad input, unknown id, conflict).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// No leader could take it in time, or this node is shutting down.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
}

/// Raft state of this node, as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Index of the last applied entry.
    pub last_applied_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members (catching up after a join).
    pub learners: Vec<NodeId>,
    /// Index of the last entry in this node's snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry purged from this node's log.
    pub purged_index: Option<u64>,
}

/// A handle on this node's control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: NodeId,
    /// This process run's id, so proposal serials need not survive restarts.
    boot: u64,
    /// The serial of the last proposal made here.
    serial: std::sync::atomic::AtomicU64,
    raft: Raft,
    state: StateMachineStore,
    cluster_addr: SocketAddr,
    admin_addr: SocketAddr,
    sync_addr: Option<SocketAddr>,
    /// What this node's data path says about a database it serves (see
    /// [`ControlPlane::set_local_status`]).
    local_status: std::sync::RwLock<Option<LocalStatus>>,
    /// The WAN links' figures for `GET /metrics` (see
    /// [`ControlPlane::set_monitor`]).
    monitor: std::sync::RwLock<Option<Arc<dyn MonitorRegistry>>>,
    /// The databases' figures for `GET /metrics` (see
    /// [`ControlPlane::set_bdb_reporter`]).
    bdb_reporter: std::sync::RwLock<Option<BdbReporter>>,
    /// Failure detection and this node's write lease.
    liveness: liveness::Liveness,
    /// The replica copies held here that have never synced (see
    /// [`ControlPlane::set_unsynced_replicas`]); `None` until the data path
    /// first said.
    unsynced_replicas: std::sync::RwLock<Option<Vec<u64>>>,
}

/// The figures of one database endpoint this node serves, for `GET /metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BdbReading {
    /// Database uid.
    pub uid: u64,
    /// Clients connected now.
    pub conns: u64,
    /// Commands processed since the endpoint started.
    pub total_req: u64,
    /// Keys in the database (including keys expired but not yet collected).
    pub keys: u64,
}

/// Reads the figures of every database endpoint this node serves.
pub type BdbReporter = Arc<dyn Fn() -> Vec<BdbReading> + Send + Sync>;

/// This node's runtime view of one database (endpoint state, errors, WAN
/// links), by database uid; `None` if this node does not serve it. It is
/// local, not replicated: the admin API of the node serving a database
/// shows it.
pub type LocalStatus = Arc<dyn Fn(u64) -> Option<serde_json::Value> + Send + Sync>;

/// The running control plane: the handle plus the servers to stop.
pub struct RunningControl {
    /// The handle.
    pub control: ControlPlane,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _lock: Option<std::fs::File>,
}

/// Takes the exclusive lock on `dir/lock`, creating the directory if needed.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("the data directory {} is in use by another meridian node", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
    }
}

/// Binds `port` on `bind`: the exact port if one was given (0 = any), else
/// the built-in default, falling back to any free port if it is taken.
pub async fn bind_port(bind: IpAddr, port: Option<u16>, default: u16, what: &str) -> anyhow::Result<TcpListener> {
    match port {
        Some(port) => TcpListener::bind(SocketAddr::new(bind, port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {bind}:{port}: {e}")),
        None => match TcpListener::bind(SocketAddr::new(bind, default)).await {
            Ok(listener) => Ok(listener),
            Err(e) => {
                let listener = TcpListener::bind(SocketAddr::new(bind, 0)).await?;
                tracing::warn!(
                    "{what}: the default port {default} is not available ({e}); using {} instead",
                    listener.local_addr()?.port()
                );
                Ok(listener)
            }
        },
    }
}

/// Log entries between two snapshots, unless configured otherwise.
pub const SNAPSHOT_LOGS_DEFAULT: u64 = 1000;

fn raft_config(snapshot_logs: u64, failover_timeout_ms: u64) -> anyhow::Result<Arc<openraft::Config>> {
    if snapshot_logs == 0 {
        anyhow::bail!("raft_snapshot_logs must be 1 or more");
    }
    let config = openraft::Config {
        cluster_name: "meridian".to_string(),
        // A dead leader is replaced within about one failover timeout: an
        // openraft voter refuses candidates for `election_timeout_max` after
        // its last heartbeat (its leader lease), so an election takes between
        // the maximum and min + max (250 to 450 ms with the default 600);
        // failure detection then runs on the new leader (D74). Four missed
        // heartbeats start an election: the masters' write leases (half the
        // failover timeout) lapse about then anyway.
        heartbeat_interval: (failover_timeout_ms / 12).max(10),
        election_timeout_min: failover_timeout_ms / 3,
        election_timeout_max: failover_timeout_ms * 5 / 12,
        // The configuration is tiny; a snapshot every 1000 entries keeps the
        // log short, and a member too far behind gets the snapshot.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
        max_in_snapshot_log_to_keep: snapshot_logs.min(100),
        // JSON triples the size of bytes; 1 MiB chunks stay far below
        // RAFT_MESSAGE_BYTES_MAX.
        snapshot_max_chunk_size: 1024 * 1024,
        max_payload_entries: 256,
        ..openraft::Config::default()
    };
    Ok(Arc::new(config.validate()?))
}

impl RunningControl {
    /// Opens the stores, starts Raft and the cluster and admin servers, and
    /// brings the node into its cluster (resume, join or initialise).
    pub async fn start(settings: &ControlSettings, admin: AdminRouter) -> anyhow::Result<RunningControl> {
        if settings.node_id == 0 {
            anyhow::bail!("node id 0 is reserved; use 1 or more");
        }
        // One process per data directory: two Raft members writing one log
        // would corrupt it. The lock is held until `stop` and released by
        // the OS if the process dies.
        let lock = match &settings.data_dir {
            Some(dir) => Some(lock_data_dir(dir)?),
            None => None,
        };
        let (log, state) = match &settings.data_dir {
            Some(dir) => (
                LogStore::open(dir)
                    .map_err(|e| anyhow::anyhow!("cannot open the Raft log in {}: {e}", dir.display()))?,
                StateMachineStore::open(dir)
                    .map_err(|e| anyhow::anyhow!("cannot open the state in {}: {e}", dir.display()))?,
            ),
            None => (LogStore::in_memory(), StateMachineStore::in_memory()),
        };
        let cluster_listener =
            bind_port(settings.bind, settings.cluster_port, CLUSTER_PORT_DEFAULT, "the cluster port").await?;
        let admin_listener = bind_port(settings.bind, settings.admin_port, ADMIN_PORT_DEFAULT, "the admin API").await?;
        let cluster_addr = crate::node::announced(cluster_listener.local_addr()?, settings.announce);
        let admin_addr = crate::node::announced(admin_listener.local_addr()?, settings.announce);

        let raft = Raft::new(
            settings.node_id,
            raft_config(settings.snapshot_logs, settings.failover_timeout_ms)?,
            Network,
            log,
            state.clone(),
        )
        .await?;
        let control = ControlPlane {
            shared: Arc::new(Shared {
                node_id: settings.node_id,
                boot: boot_id(),
                serial: Default::default(),
                raft,
                state,
                cluster_addr,
                admin_addr,
                sync_addr: settings.sync_addr,
                local_status: Default::default(),
                unsynced_replicas: Default::default(),
                monitor: Default::default(),
                bdb_reporter: Default::default(),
                liveness: liveness::Liveness::new(settings.failover_timeout_ms, settings.replica_ha_grace_ms),
            }),
        };
        let (shutdown, receiver) = watch::channel(false);
        let mut tasks = Vec::new();

        let service = ClusterRaftServer::new(service::RaftService { control: control.clone() })
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX);
        let replicas =
            meridian_replication::master_service::ReplicaSyncService::routed(settings.replica_sources.clone())
                .into_service();
        let mut stop = receiver.clone();
        tasks.push(tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(replicas)
                .serve_with_incoming_shutdown(
                    // Replica streams and Raft carry small messages: no Nagle.
                    tonic::transport::server::TcpIncoming::from(cluster_listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stop.wait_for(|&s| s).await;
                    },
                )
                .await;
            if let Err(e) = result {
                tracing::error!("the cluster RPC server failed: {e}");
            }
        }));
        let router = admin(control.clone());
        let mut stop = receiver.clone();
        tasks.push(tokio::spawn(async move {
            let result = axum::serve(admin_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|&s| s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("the admin API server failed: {e}");
            }
        }));
        tasks.push(tokio::spawn(liveness::run(control.clone(), receiver.clone())));
        let running = RunningControl { control: control.clone(), shutdown, tasks, _lock: lock };

        let me = control.node_info(settings.rack.clone());
        let initialized = control.shared.raft.is_initialized().await?;
        let joined = if initialized {
            tracing::info!(node_id = settings.node_id, "resuming the Raft state in the data directory");
            Ok(())
        } else if let Some(join) = &settings.join {
            control.join_through(join, &me).await
        } else {
            control.initialise(settings, me.clone()).await
        };
        if let Err(e) = joined {
            running.stop().await;
            return Err(e);
        }
        // Addresses (the admin or sync port) may have changed since the last
        // run, and a join records only the cluster and admin addresses.
        let refresh = control.clone();
        tokio::spawn(async move {
            if refresh.config().nodes.get(&me.uid) != Some(&me) {
                let _ = refresh.write(Command::AddNode(me)).await;
            }
        });
        Ok(running)
    }

    /// Stops the servers and Raft.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.control.shared.raft.shutdown().await {
            tracing::warn!("Raft did not shut down cleanly: {e}");
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Builds the admin API router for a control plane.
pub type AdminRouter = fn(ControlPlane) -> axum::Router;

impl ControlPlane {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Where this node serves cluster RPCs.
    pub fn cluster_addr(&self) -> SocketAddr {
        self.shared.cluster_addr
    }

    /// Where this node serves the admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.shared.admin_addr
    }

    /// Where this node serves WAN sync, if it does.
    pub fn sync_addr(&self) -> Option<SocketAddr> {
        self.shared.sync_addr
    }

    /// Installs the data path's status reporter (the node does, once its
    /// databases run).
    pub fn set_local_status(&self, status: LocalStatus) {
        *self.shared.local_status.write().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    /// The replica copies (shard uids) this node holds that have never
    /// synced with their master: the data path says so (it does after each
    /// pass), every probe's answer carries them, and a failover never
    /// promotes one — it would serve an empty database and its old master,
    /// back, would follow it and drop its data.
    pub fn set_unsynced_replicas(&self, copies: Vec<u64>) {
        *self.shared.unsynced_replicas.write().unwrap_or_else(|p| p.into_inner()) = Some(copies);
    }

    /// What [`ControlPlane::set_unsynced_replicas`] last said; before it
    /// first did (the node is starting), every replica copy the
    /// configuration places here.
    pub(crate) fn unsynced_replicas(&self) -> Vec<u64> {
        if let Some(copies) = &*self.shared.unsynced_replicas.read().unwrap_or_else(|p| p.into_inner()) {
            return copies.clone();
        }
        let me = self.shared.node_id;
        self.with_config(|c| {
            c.shards.values().filter(|s| s.node_uid == me && s.role == ShardRole::Replica).map(|s| s.uid).collect()
        })
    }

    /// Installs the registry of this node's WAN links, which `GET /metrics`
    /// reads (the node does, with the one the `SyncMonitor` service reads).
    pub fn set_monitor(&self, monitor: Arc<dyn MonitorRegistry>) {
        *self.shared.monitor.write().unwrap_or_else(|p| p.into_inner()) = Some(monitor);
    }

    /// Installs the reader of this node's database endpoints' figures, which
    /// `GET /metrics` reads (the node does, once its databases run).
    pub fn set_bdb_reporter(&self, reporter: BdbReporter) {
        *self.shared.bdb_reporter.write().unwrap_or_else(|p| p.into_inner()) = Some(reporter);
    }

    /// The figures of every database endpoint this node serves (none before
    /// the node installs its reporter).
    pub fn bdb_readings(&self) -> Vec<BdbReading> {
        let reporter = self.shared.bdb_reporter.read().unwrap_or_else(|p| p.into_inner()).clone();
        reporter.map(|r| r()).unwrap_or_default()
    }

    /// Every peer of every active-active database this node serves (none
    /// before the node installs its registry).
    pub fn monitor_peers(&self) -> Vec<PeerReading> {
        let monitor = self.shared.monitor.read().unwrap_or_else(|p| p.into_inner()).clone();
        monitor.map(|m| m.peers(None)).unwrap_or_default()
    }

    /// This node's runtime view of database `uid`, if it serves it.
    pub fn local_status(&self, uid: u64) -> Option<serde_json::Value> {
        let status = self.shared.local_status.read().unwrap_or_else(|p| p.into_inner()).clone();
        status.and_then(|status| status(uid))
    }

    /// The configuration as this node has applied it (a follower may lag the
    /// leader by the entries in flight).
    pub fn config(&self) -> ClusterConfig {
        self.shared.state.with_config(ClusterConfig::clone)
    }

    /// Waits until this node applied a log entry past `seen` (the
    /// configuration may have changed), then records the new index in it.
    pub async fn applied_past(&self, seen: &mut u64) {
        let mut metrics = self.shared.raft.metrics();
        loop {
            let applied = metrics.borrow_and_update().last_applied.map_or(0, |id| id.index);
            if applied != *seen {
                *seen = applied;
                return;
            }
            if metrics.changed().await.is_err() {
                // Raft stopped: the caller's shutdown ends its loop.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `f` on the applied configuration without copying it.
    pub fn with_config<T>(&self, f: impl FnOnce(&ClusterConfig) -> T) -> T {
        self.shared.state.with_config(f)
    }

    /// This node's Raft state.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.shared.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id)).collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        RaftStatus {
            node_id: self.shared.node_id,
            role: role.to_string(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_applied_index: metrics.last_applied.map(|l| l.index),
            voters: voters.into_iter().collect(),
            learners,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
        }
    }

    fn node_info(&self, rack: Option<String>) -> NodeInfo {
        NodeInfo {
            uid: self.shared.node_id,
            addr: self.shared.cluster_addr.to_string(),
            admin_addr: self.shared.admin_addr.to_string(),
            rack_id: rack,
            status: NodeState::Active,
            sync_addr: self.shared.sync_addr.map(|addr| addr.to_string()),
        }
    }

    /// Wraps `command` in a proposal with a fresh serial.
    fn propose(&self, command: Command) -> Proposal {
        let serial = self.shared.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Proposal { origin: Origin { node: self.shared.node_id, boot: self.shared.boot, serial }, command }
    }

    /// Applies `command` through Raft: here if this node leads, else at the
    /// leader. Waits (bounded by [`WRITE_TIMEOUT`]) through elections; every
    /// retry is the same proposal, so the command applies at most once.
    pub async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        let command = self.propose(command);
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last_error = "no leader elected".to_string();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match timeout(remaining, self.shared.raft.client_write(command.clone())).await {
                Ok(Ok(response)) => {
                    // Tell the followers the new commit index now rather than
                    // at the next heartbeat: a failover takes effect on the
                    // promoted node when it applies the change.
                    let _ = self.shared.raft.trigger().heartbeat().await;
                    return response.data.map_err(WriteError::Refused);
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    if let Some(leader) = forward.leader_node {
                        match self.forward(&leader.addr, &command, remaining).await {
                            Ok(outcome) => return outcome.map_err(WriteError::Refused),
                            Err(e) => last_error = e,
                        }
                    }
                }
                Ok(Err(RaftError::APIError(e))) => last_error = e.to_string(),
                Ok(Err(RaftError::Fatal(e))) => return Err(WriteError::Unavailable(e.to_string())),
                Err(_) => last_error = "the write did not commit in time".to_string(),
            }
            if Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(WriteError::Unavailable(format!(
                    "{last_error} (gave up after {}s)",
                    WRITE_TIMEOUT.as_secs()
                )));
            }
            sleep(RETRY_INTERVAL).await;
        }
    }

    /// Applies `command` only if this node is the leader (the receiving end
    /// of a forward: never forwarded again, so forwards cannot loop).
    async fn write_here(&self, command: Proposal) -> ClusterReply {
        match timeout(WRITE_TIMEOUT, self.shared.raft.client_write(command)).await {
            Ok(Ok(response)) => outcome_reply(&response.data),
            Ok(Err(e)) => unavailable(e.to_string()),
            Err(_) => unavailable("the write did not commit in time".to_string()),
        }
    }

    async fn forward(&self, leader: &str, command: &Proposal, deadline: Duration) -> Result<Outcome, String> {
        let client = RpcClient::new(leader).map_err(|e| e.to_string())?;
        let data = serde_json::to_vec(command).map_err(|e| e.to_string())?;
        let reply = client.forward(data, deadline).await.map_err(|e| format!("leader at {leader}: {}", e.message()))?;
        if reply.status != 0 {
            return Err(reply.error);
        }
        serde_json::from_slice(&reply.data).map_err(|e| e.to_string())
    }

    /// Adds a node to the cluster; only the leader does it, others pass the
    /// request to the leader (one hop).
    async fn handle_join(&self, request: JoinRequest) -> ClusterReply {
        let status = self.raft_status();
        if status.leader_id != Some(self.shared.node_id) {
            let Some(leader) = status.leader_id else { return unavailable("no leader elected".into()) };
            let Some(addr) = self.with_config(|c| c.nodes.get(&leader).map(|n| n.addr.clone())) else {
                return unavailable(format!("the leader {leader} has no address yet"));
            };
            if status.leader_id == Some(request.node_id) {
                return unavailable("the joining node cannot be the leader".into());
            }
            return match RpcClient::new(&addr) {
                Ok(client) => client.join(request, JOIN_TIMEOUT).await.unwrap_or_else(|e| unavailable(e.to_string())),
                Err(e) => unavailable(e.to_string()),
            };
        }
        let node = NodeInfo {
            uid: request.node_id,
            addr: request.cluster_addr.clone(),
            admin_addr: request.admin_addr,
            rack_id: Some(request.rack).filter(|r| !r.is_empty()),
            status: NodeState::Active,
            // The node records its sync address itself once it has joined.
            sync_addr: None,
        };
        let reply = self.write_here(self.propose(Command::AddNode(node))).await;
        if reply.status != 0 {
            return reply;
        }
        if let Ok(Err(refused)) = serde_json::from_slice::<Outcome>(&reply.data) {
            return ClusterReply {
                data: Default::default(),
                error: refused.to_string(),
                status: refusal_status(&refused).into(),
            };
        }
        let learner = BasicNode { addr: request.cluster_addr };
        // Blocking: returns once the learner has caught up, so it becomes a
        // voter without stalling commits. Bounded, since a joiner that went
        // away never catches up; it retries the (idempotent) join.
        match timeout(JOIN_TIMEOUT, self.shared.raft.add_learner(request.node_id, learner, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return unavailable(format!("adding node {} as a learner: {e}", request.node_id)),
            Err(_) => return unavailable(format!("node {} did not catch up in time", request.node_id)),
        }
        let voters = ChangeMembers::AddVoterIds(BTreeSet::from([request.node_id]));
        match timeout(WRITE_TIMEOUT, self.shared.raft.change_membership(voters, false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return unavailable(format!("making node {} a voter: {e}", request.node_id)),
            Err(_) => return unavailable(format!("making node {} a voter did not commit in time", request.node_id)),
        }
        tracing::info!(node_id = request.node_id, "node joined the cluster");
        outcome_reply(&Ok(Applied::Done))
    }

    async fn join_through(&self, join: &str, me: &NodeInfo) -> anyhow::Result<()> {
        let client = RpcClient::new(join).map_err(|e| anyhow::anyhow!("--join {join}: {e}"))?;
        let request = JoinRequest {
            node_id: me.uid,
            cluster_addr: me.addr.clone(),
            admin_addr: me.admin_addr.clone(),
            rack: me.rack_id.clone().unwrap_or_default(),
        };
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let last_error = match client.join(request.clone(), JOIN_TIMEOUT).await {
                Ok(reply) if reply.status == 0 => {
                    tracing::info!(node_id = me.uid, via = join, "joined the cluster");
                    return Ok(());
                }
                Ok(reply) if reply.status != 503 => anyhow::bail!("the cluster refused the join: {}", reply.error),
                Ok(reply) => reply.error,
                Err(e) => e.message().to_string(),
            };
            if Instant::now() >= deadline {
                anyhow::bail!("could not join through {join} in {}s: {last_error}", JOIN_TIMEOUT.as_secs());
            }
            tracing::debug!("join through {join} not done yet: {last_error}");
            sleep(RETRY_INTERVAL * 5).await;
        }
    }

    async fn initialise(&self, settings: &ControlSettings, me: NodeInfo) -> anyhow::Result<()> {
        let members = BTreeMap::from([(me.uid, BasicNode { addr: me.addr.clone() })]);
        self.shared.raft.initialize(members).await?;
        let name = format!("meridian-{}", settings.region);
        self.write(Command::InitCluster { name, region: settings.region.clone() }).await?;
        self.write(Command::AddNode(me)).await?;
        match self.write(Command::CreateBdb(settings.default_bdb.clone())).await {
            Ok(_) => {}
            Err(WriteError::Refused(e)) => tracing::warn!("the default database was not created: {e}"),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(node_id = self.shared.node_id, "initialised a new one-node cluster");
        Ok(())
    }
}

/// A number that differs between two runs of a node: the start time in
/// nanoseconds mixed with the process id.
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 48)
}

fn outcome_reply(outcome: &Outcome) -> ClusterReply {
    match serde_json::to_vec(outcome) {
        Ok(data) => ClusterReply { data: data.into(), error: String::new(), status: 0 },
        Err(e) => unavailable(e.to_string()),
    }
}

fn unavailable(error: String) -> ClusterReply {
    ClusterReply { data: Default::default(), error, status: 503 }
}

/// The HTTP status a refused command maps to.
pub fn refusal_status(error: &CommandError) -> u16 {
    match error {
        CommandError::Invalid(_) => 400,
        CommandError::NotFound(_) => 404,
        CommandError::Conflict(_) => 409,
    }
}
