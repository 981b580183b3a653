//! The databases a node serves, each on its own port, kept in line with the
//! replicated configuration.
//!
//! A reconcile loop reads the applied configuration every
//! [`RECONCILE_INTERVAL`] and compares what it asks this node to serve
//! ([`wanted`], a pure function of the configuration) with what runs: a
//! database that appears is bound on its port and served; one that goes (or
//! whose master moves away) is stopped and its clients closed; a new password
//! applies to connections made afterwards; an active-active instance
//! ([`CrdbInstance`]) also gets its outbox in the node's [`SyncSource`] and
//! one WAN [`Link`] per peer region whose sync endpoint is known. The loop is
//! level-triggered — it looks at the whole state each time, not at change
//! events — so a missed tick or a restart never leaves a database half
//! served. A port that cannot be bound is logged, shown in the database's
//! local status, and retried every [`RETRY_FAILED_INTERVAL`].
//!
//! The default database (named [`DEFAULT_BDB_NAME`]) is not handled here:
//! the node serves it on `--port` from its start, as before this module.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_crdt::ReplicaId;
use meridian_crdt::clock::MAX_SKEW_MS_DEFAULT;
use meridian_crdt::clock::system_wall_ms;
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_replication::durability::Fsync;
use meridian_wan::{CursorStore, Inbound, Link, LinkConfig, MonitorRegistry, Outbox, PeerReading, SyncSource};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::active_active::{RegionInbound, RegionOutbound};
use crate::config::{ClusterConfig, CrdbInstance, ShardRole};
use crate::control::{BdbReading, ControlPlane};

/// The name of the database a new cluster creates at first start; the node
/// serves it on `--port` itself.
pub const DEFAULT_BDB_NAME: &str = "default";
/// How often the node compares the configuration with what it serves.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a database that failed to start (port taken, unreadable data)
/// waits before the next attempt.
pub const RETRY_FAILED_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes of locally originated deltas each active-active instance keeps for
/// its peers (beyond it, a peer that fell behind takes a snapshot).
pub const OUTBOX_BYTES: usize = meridian_wan::outbox::OUTBOX_BYTES_DEFAULT;

/// What the configuration asks this node to serve for one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Database uid.
    pub uid: u64,
    /// Client port.
    pub port: u16,
    /// Password of the default user.
    pub password: Option<String>,
    /// Set for an active-active instance.
    pub crdb: Option<CrdbInstance>,
}

impl Wanted {
    /// True if a running database must be restarted (not just updated) to
    /// become `other`: a new port, or another crdb identity (guid, region).
    fn needs_restart(&self, other: &Wanted) -> bool {
        let identity = |w: &Wanted| w.crdb.as_ref().map(|c| (c.guid.clone(), c.region_id));
        self.port != other.port || identity(self) != identity(other)
    }
}

/// The databases `node_id` must serve in `config`: those whose every master
/// shard is on it (the default database excepted). The second list holds
/// databases with some but not all masters here, which need routing between
/// nodes (not there yet).
pub fn wanted(config: &ClusterConfig, node_id: u64) -> (BTreeMap<u64, Wanted>, Vec<u64>) {
    let mut serve = BTreeMap::new();
    let mut partial = Vec::new();
    for bdb in config.bdbs.values().filter(|b| b.name != DEFAULT_BDB_NAME) {
        let masters: Vec<u64> = bdb
            .shard_list
            .iter()
            .filter_map(|uid| config.shards.get(uid))
            .filter(|s| s.role == ShardRole::Master)
            .map(|s| s.node_uid)
            .collect();
        let here = masters.iter().filter(|&&node| node == node_id).count();
        if here == masters.len() && here > 0 {
            let wanted =
                Wanted { uid: bdb.uid, port: bdb.port, password: bdb.password.clone(), crdb: bdb.crdb.clone() };
            serve.insert(bdb.uid, wanted);
        } else if here > 0 {
            partial.push(bdb.uid);
        }
    }
    (serve, partial)
}

/// The figures of one served database endpoint.
pub fn bdb_reading(uid: u64, server: &ServerState) -> BdbReading {
    use std::sync::atomic::Ordering::Relaxed;
    BdbReading {
        uid,
        conns: server.stats.clients.load(Relaxed),
        total_req: server.stats.commands.load(Relaxed),
        keys: server.shard().keyspace().len() as u64,
    }
}

/// What every database of this node is served with.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// This node's id.
    pub node_id: u64,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Most clients per database.
    pub maxclients: usize,
    /// Where the data lives (`<data_dir>/bdb-<uid>/shard-1`), if persisted.
    pub data_dir: Option<PathBuf>,
    /// When journals are forced to disk.
    pub fsync: Fsync,
}

/// One served database.
struct Serving {
    addr: SocketAddr,
    server: Arc<ServerState>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The destination side every link of this instance applies through (one
    /// per database, so the peers' cursors outlive a relink).
    inbound: Arc<dyn Inbound>,
    /// The WAN links: peer region id, the endpoint dialled, the link.
    links: Vec<(u16, String, Link)>,
}

enum State {
    Serving(Serving),
    Failed {
        error: String,
        since: Instant,
    },
    /// Being stopped (the entry goes once its port is closed).
    Stopping,
}

struct Entry {
    wanted: Wanted,
    state: State,
}

/// The databases this node serves; cheap to clone.
#[derive(Clone)]
pub struct Databases {
    settings: Arc<DatabaseSettings>,
    sync: SyncSource,
    entries: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

impl Databases {
    /// No database served yet; active-active instances register with `sync`.
    pub fn new(settings: DatabaseSettings, sync: SyncSource) -> Databases {
        Databases { settings: Arc::new(settings), sync, entries: Default::default() }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // Entries are inserted and removed whole: a poisoned map is consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where database `uid` is served here, if it is.
    pub fn addr(&self, uid: u64) -> Option<SocketAddr> {
        match &self.entries().get(&uid)?.state {
            State::Serving(serving) => Some(serving.addr),
            State::Failed { .. } | State::Stopping => None,
        }
    }

    /// The figures of every database this node serves now (`GET /metrics`).
    pub fn bdb_readings(&self) -> Vec<BdbReading> {
        self.entries()
            .iter()
            .filter_map(|(&uid, entry)| match &entry.state {
                State::Serving(serving) => Some(bdb_reading(uid, &serving.server)),
                State::Failed { .. } | State::Stopping => None,
            })
            .collect()
    }

    /// The local status of database `uid` (the admin API shows it): endpoint
    /// state and, for an active-active instance, each link's figures.
    pub fn status(&self, uid: u64) -> Option<Value> {
        let entries = self.entries();
        let entry = entries.get(&uid)?;
        let mut status = json!({ "node_uid": self.settings.node_id, "port": entry.wanted.port });
        match &entry.state {
            State::Serving(serving) => {
                status["status"] = json!("active");
                status["endpoint"] = json!(serving.addr.to_string());
                if let Some(crdb) = &entry.wanted.crdb {
                    let links: Vec<Value> = self
                        .readings(uid, crdb, serving, system_wall_ms())
                        .into_iter()
                        .map(|r| {
                            let (i, e) = (&r.ingress, r.egress.clone().unwrap_or_default());
                            json!({
                                "region_id": r.peer_region, "state": i.state, "lag_ops": i.lag_ops,
                                "lag_ms": i.lag_ms, "deltas": i.deltas, "bytes_in_wire": i.bytes_in_wire,
                                "bytes_in_raw": i.bytes_in_raw, "bytes_out_wire": e.bytes_out_wire,
                                "bytes_out_raw": e.bytes_out_raw, "deltas_out": e.deltas,
                                "full_syncs": i.full_syncs, "partial_syncs": i.partial_syncs,
                                "connects": i.connects, "errors": i.errors, "last_error": i.last_error,
                            })
                        })
                        .collect();
                    status["region_id"] = json!(crdb.region_id);
                    status["links"] = Value::Array(links);
                }
            }
            State::Failed { error, .. } => {
                status["status"] = json!("error");
                status["error"] = json!(error);
            }
            State::Stopping => status["status"] = json!("stopping"),
        }
        Some(status)
    }

    /// One reading per WAN link of a served active-active instance: the
    /// incoming link's counters and those of the stream served to the peer.
    fn readings(&self, uid: u64, crdb: &CrdbInstance, serving: &Serving, now_ms: u64) -> Vec<PeerReading> {
        let mut readings: Vec<PeerReading> = serving
            .links
            .iter()
            .map(|(region, endpoint, link)| PeerReading {
                bdb: uid,
                crdb_guid: crdb.guid.clone(),
                local_region: crdb.region_id,
                peer_region: *region,
                endpoint: endpoint.clone(),
                ingress: link.stats().read(now_ms),
                egress: self.sync.stats(&crdb.guid, *region).map(|s| s.read(now_ms)),
            })
            .collect();
        readings.sort_by_key(|r| r.peer_region);
        readings
    }

    /// Runs the reconcile loop until `shutdown` turns true, then stops every
    /// database.
    pub async fn run(self, control: ControlPlane, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut partial_logged = BTreeSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|&stopped| stopped) => break,
            }
            let (wanted, partial, existing) = control.with_config(|c| {
                let (wanted, partial) = wanted(c, self.settings.node_id);
                (wanted, partial, c.bdbs.keys().copied().collect::<BTreeSet<u64>>())
            });
            for uid in &partial {
                if partial_logged.insert(*uid) {
                    tracing::warn!(
                        bdb = uid,
                        "database has master shards on several nodes; routing between nodes is not there yet, so this node does not serve it"
                    );
                }
            }
            partial_logged.retain(|uid| partial.contains(uid));
            self.reconcile(wanted, &existing).await;
        }
        let all: Vec<u64> = self.entries().keys().copied().collect();
        for uid in all {
            self.stop(uid, false).await;
        }
    }

    /// One pass: stops, updates and starts databases until what runs is `wanted`.
    async fn reconcile(&self, wanted: BTreeMap<u64, Wanted>, existing: &BTreeSet<u64>) {
        let running: Vec<u64> = self.entries().keys().copied().collect();
        for uid in running {
            let action = {
                let mut entries = self.entries();
                let entry = entries.get_mut(&uid).expect("only this loop removes entries");
                match (wanted.get(&uid), &entry.state) {
                    (None, _) => Action::Stop,
                    (Some(_), State::Stopping) => Action::Keep,
                    (Some(want), _) if entry.wanted.needs_restart(want) => Action::Restart,
                    (Some(want), State::Failed { since, .. }) => {
                        if *want != entry.wanted || since.elapsed() >= RETRY_FAILED_INTERVAL {
                            Action::Restart
                        } else {
                            Action::Keep
                        }
                    }
                    (Some(want), State::Serving(serving)) => {
                        if want.password != entry.wanted.password {
                            serving.server.set_requirepass(want.password.as_deref());
                            tracing::info!(bdb = uid, "database password changed; new connections use it");
                        }
                        let relink = want.crdb != entry.wanted.crdb;
                        entry.wanted = want.clone();
                        if relink { Action::Relink } else { Action::Keep }
                    }
                }
            };
            match action {
                Action::Keep => {}
                Action::Stop => self.stop(uid, !existing.contains(&uid)).await,
                Action::Restart => {
                    self.stop(uid, false).await;
                    self.start(wanted[&uid].clone()).await;
                }
                Action::Relink => self.relink(uid).await,
            }
        }
        let missing: Vec<Wanted> = {
            let entries = self.entries();
            wanted.values().filter(|w| !entries.contains_key(&w.uid)).cloned().collect()
        };
        for want in missing {
            self.start(want).await;
        }
    }

    /// Starts serving `want`; a failure is recorded in its status.
    async fn start(&self, want: Wanted) {
        let uid = want.uid;
        let state = match self.open(&want).await {
            Ok(serving) => {
                tracing::info!(bdb = uid, addr = %serving.addr, crdb = want.crdb.is_some(), "serving database");
                State::Serving(serving)
            }
            Err(error) => {
                tracing::error!(bdb = uid, port = want.port, %error, "cannot serve database");
                State::Failed { error, since: Instant::now() }
            }
        };
        self.entries().insert(uid, Entry { wanted: want, state });
        if self.entries().get(&uid).is_some_and(|e| e.wanted.crdb.is_some()) {
            self.relink(uid).await;
        }
    }

    async fn open(&self, want: &Wanted) -> Result<Serving, String> {
        let listener = meridian_proxy::server::bind(SocketAddr::new(self.settings.bind, want.port))
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let replica = ReplicaId(want.crdb.as_ref().map_or(1, |c| c.region_id));
        let settings = Settings {
            requirepass: want.password.clone(),
            maxclients: self.settings.maxclients,
            port: addr.port(),
            ..Settings::default()
        };
        let bdb_dir = self.settings.data_dir.as_ref().map(|dir| dir.join(format!("bdb-{}", want.uid)));
        let (mut shard, journal) = match &bdb_dir {
            None => (Shard::new(replica, MAX_SKEW_MS_DEFAULT), None),
            Some(dir) => {
                let dir = dir.join("shard-1");
                let (shard, journal, recovered) =
                    Shard::recover(replica, MAX_SKEW_MS_DEFAULT, &dir, self.settings.fsync)
                        .map_err(|e| format!("cannot recover the data in {}: {e}", dir.display()))?;
                tracing::info!(
                    bdb = want.uid,
                    dir = %dir.display(),
                    keys = shard.keyspace().len(),
                    deltas_replayed = recovered.deltas_replayed,
                    "data recovered"
                );
                (shard, Some(journal))
            }
        };
        let outbound = want.crdb.as_ref().map(|crdb| {
            let peers: Vec<u16> = crdb.peers().map(|p| p.region_id).collect();
            shard.set_peers(&peers);
            // Recovered state may be non-empty: peers then start from a
            // snapshot rather than from offset 0 of a fresh log.
            let outbox =
                if journal.is_some() { Outbox::new(OUTBOX_BYTES) } else { Outbox::for_new_database(OUTBOX_BYTES) };
            Arc::new(RegionOutbound::new(outbox))
        });
        let mut server = ServerState::new(shard, settings);
        if let Some(journal) = journal {
            server = server.with_journal(journal);
        }
        if let Some(outbound) = &outbound {
            server = server.with_journal_sink(outbound.journal_sink());
        }
        let server = Arc::new(server);
        if let (Some(outbound), Some(crdb)) = (outbound, &want.crdb) {
            outbound.attach(&server);
            self.sync.add_database_in_region(&crdb.guid, crdb.region_id, outbound);
        }
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(meridian_proxy::server::run(listener, server.clone(), receiver));
        let inbound: Arc<dyn Inbound> = match (&bdb_dir, &want.crdb) {
            (Some(dir), Some(crdb)) => {
                let dir = dir.join("wan");
                let store = CursorStore::open(&dir)
                    .map_err(|e| format!("cannot open the WAN cursors in {}: {e}", dir.display()))?;
                Arc::new(RegionInbound::persistent(server.clone(), store, crdb.guid.clone()))
            }
            _ => Arc::new(RegionInbound::new(server.clone())),
        };
        Ok(Serving { addr, server, shutdown, task, inbound, links: Vec::new() })
    }

    /// Brings an active-active instance's links in line with its instance
    /// list: one per peer whose sync endpoint is known. A link whose peer and
    /// endpoint are unchanged keeps running (its counters and cursor too).
    async fn relink(&self, uid: u64) {
        let (stale, count) = {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(&uid) else { return };
            let State::Serving(serving) = &mut entry.state else { return };
            let Some(crdb) = &entry.wanted.crdb else { return };
            let wanted: Vec<(u16, String)> = crdb
                .peers()
                .filter_map(|peer| peer.sync_endpoint.as_ref().map(|e| (peer.region_id, format!("http://{e}"))))
                .collect();
            let (kept, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut serving.links)
                .into_iter()
                .partition(|(region, endpoint, _)| wanted.iter().any(|(r, e)| r == region && e == endpoint));
            serving.links = kept;
            for (region, endpoint) in wanted {
                if serving.links.iter().any(|(r, _, _)| *r == region) {
                    continue;
                }
                let config = LinkConfig::new(&crdb.guid, crdb.region_id, region, endpoint.clone());
                serving.links.push((region, endpoint, Link::spawn(config, serving.inbound.clone())));
            }
            let peers: Vec<u16> = crdb.peers().map(|p| p.region_id).collect();
            serving.server.shard().set_peers(&peers);
            (stale, serving.links.len())
        };
        for (_, _, link) in stale {
            link.stop().await;
        }
        tracing::info!(bdb = uid, links = count, "active-active links in line with the instance list");
    }

    /// Stops serving `uid`: links, the sync registration, the listener and
    /// every client; with `delete_data`, removes its data directory too.
    async fn stop(&self, uid: u64, delete_data: bool) {
        // The entry stays (as stopping) until the port is closed, so its
        // status says "served" until it no longer is.
        let (state, crdb) = {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(&uid) else { return };
            (std::mem::replace(&mut entry.state, State::Stopping), entry.wanted.crdb.clone())
        };
        if let State::Serving(serving) = state {
            for (_, _, link) in serving.links {
                link.stop().await;
            }
            if let Some(crdb) = &crdb {
                self.sync.remove_database(&crdb.guid);
            }
            let _ = serving.shutdown.send(true);
            let _ = serving.task.await;
            for client in serving.server.client_handles() {
                client.kill();
            }
            tracing::info!(bdb = uid, addr = %serving.addr, "stopped serving database");
        }
        self.entries().remove(&uid);
        if delete_data && let Some(dir) = &self.settings.data_dir {
            let dir = dir.join(format!("bdb-{uid}"));
            if dir.exists()
                && let Err(error) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(bdb = uid, dir = %dir.display(), %error, "cannot remove a deleted database's data");
            }
        }
    }
}

enum Action {
    Keep,
    Stop,
    Restart,
    Relink,
}

/// The `SyncMonitor` service and `GET /metrics` read the links of every
/// active-active instance served here.
impl MonitorRegistry for Databases {
    fn peers(&self, bdb: Option<u64>) -> Vec<PeerReading> {
        let now_ms = system_wall_ms();
        let entries = self.entries();
        let mut peers = Vec::new();
        for (uid, entry) in entries.iter().filter(|(uid, _)| bdb.is_none_or(|b| b == **uid)) {
            if let (State::Serving(serving), Some(crdb)) = (&entry.state, &entry.wanted.crdb) {
                peers.extend(self.readings(*uid, crdb, serving, now_ms));
            }
        }
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BdbSpec, Command, NodeInfo, NodeState};

    fn node(uid: u64) -> Command {
        Command::AddNode(NodeInfo {
            uid,
            addr: format!("n{uid}:1"),
            admin_addr: format!("n{uid}:2"),
            rack_id: None,
            status: NodeState::Active,
            sync_addr: None,
        })
    }

    fn create(name: &str, port: u16, shards_count: u16) -> Command {
        Command::CreateBdb(BdbSpec {
            name: name.into(),
            port,
            shards_count,
            replication: false,
            password: None,
            oss_cluster: false,
            crdb: None,
        })
    }

    #[test]
    fn a_node_serves_the_databases_whose_masters_it_holds() {
        let mut config = ClusterConfig::default();
        for command in [node(1), node(2), create(DEFAULT_BDB_NAME, 6379, 1), create("a", 12000, 1)] {
            config.apply(&command).unwrap();
        }
        config.apply(&create("b", 12001, 1)).unwrap();
        config.apply(&create("wide", 12002, 2)).unwrap();
        let holder = |name: &str| {
            let bdb = config.bdbs.values().find(|b| b.name == name).unwrap();
            config.shards[&bdb.shard_list[0]].node_uid
        };
        let (one, partial_one) = wanted(&config, 1);
        let (two, partial_two) = wanted(&config, 2);
        assert!(!one.values().chain(two.values()).any(|w| w.port == 6379), "the default is --port's");
        for name in ["a", "b"] {
            let port = config.bdbs.values().find(|b| b.name == name).unwrap().port;
            let served = if holder(name) == 1 { &one } else { &two };
            assert!(served.values().any(|w| w.port == port), "{name} served by its master's node");
        }
        let wide = config.bdbs.values().find(|b| b.name == "wide").unwrap().uid;
        assert_eq!((partial_one, partial_two), (vec![wide], vec![wide]), "split masters need routing");
    }
}
