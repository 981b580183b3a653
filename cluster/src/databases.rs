//! The databases a node serves, each on its own port, kept in line with the
//! replicated configuration.
//!
//! A reconcile loop reads the applied configuration whenever a log entry is
//! applied, and at least every
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
use meridian_crdt::gc::Reporter;
use meridian_crdt::slot::Granules;
use meridian_proxy::context::{ServerState, Settings};
use meridian_proxy::replication::ServerSource;
use meridian_replication::Shard;
use meridian_replication::durability::Fsync;
use meridian_replication::master_service::SourceTable;
use meridian_replication::replica_link::{ReplicaLink, ReplicaLinkConfig};
use meridian_replication::stream::{ReplicaStream, ReplicationId, ReplicationLog};
use meridian_wan::{
    Cursor, CursorStore, Inbound, Link, LinkConfig, MonitorRegistry, Outbox, PeerReading, Slice, Source, SyncSource,
    SyncTls,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::active_active::{RegionInbound, RegionOutbound};
use crate::config::{Bdb, ClusterConfig, CrdbInstance, CrdbPeer, ShardInfo, ShardRole};
use crate::control::{BdbReading, ControlPlane};
use crate::forwarders::{Forwarders, Routed, node_host};
use meridian_proxy::forward::Route;
use meridian_proxy::router::{Attach, ShardMap, ShardRoute};

use crate::routers::{Routers, Sharded};

/// The name of the database a new cluster creates at first start; the node
/// serves it on `--port` itself.
pub const DEFAULT_BDB_NAME: &str = "default";
/// How often the node compares the configuration with what it serves.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of encoded deltas a master keeps for replicas that reconnect (a
/// partial resync); beyond it a replica takes a full sync.
pub const REPL_BACKLOG_BYTES: usize = 16 * 1024 * 1024;
/// How long a database that failed to start (port taken, unreadable data)
/// waits before the next attempt.
pub const RETRY_FAILED_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes of locally originated deltas each active-active instance keeps for
/// its peers (beyond it, a peer that fell behind takes a snapshot).
pub const OUTBOX_BYTES: usize = meridian_wan::outbox::OUTBOX_BYTES_DEFAULT;

/// What the configuration asks this node to serve for one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The id it is served under: the database uid, or for one shard of a
    /// database split over several, its [`unit_uid`].
    pub uid: u64,
    /// The database it belongs to.
    pub bdb_uid: u64,
    /// For one shard of a sharded database, its index in slot order: it is
    /// not bound on a port but reached through the routers' handshake.
    pub shard_index: Option<usize>,
    /// Client port.
    pub port: u16,
    /// Password of the default user.
    pub password: Option<String>,
    /// Set for an active-active instance.
    pub crdb: Option<CrdbInstance>,
    /// True if the database's shard has replicas: the master then serves
    /// its replication log and is fenced without the write lease.
    pub replication: bool,
    /// The master shard's failover epoch.
    pub epoch: u64,
    /// True if another copy of the shard is on a node that is up — possibly
    /// an old master still taking writes under the lease it holds: a master
    /// opened now takes writes only once such a lease must have ended.
    pub settle: bool,
}

/// A replica copy the configuration puts on this node: it follows the
/// shard's master over the master node's cluster port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaWanted {
    /// The id the shard is served under (a database uid or a [`unit_uid`]).
    pub uid: u64,
    /// This replica copy's shard uid (its id among the master's replicas).
    pub copy: u64,
    /// The shard's failover epoch.
    pub epoch: u64,
    /// The master node's cluster address (`host:port`).
    pub master_addr: String,
    /// The replica id of the database's writes (its region id in an
    /// active-active database, else 1).
    pub replica_id: u16,
    /// False for an active-active instance (counters are not merged as
    /// applied).
    pub solo: bool,
}

/// What the configuration asks of this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The databases it serves (holds every master of), by uid.
    pub serve: BTreeMap<u64, Wanted>,
    /// Databases with some but not all masters here (need routing).
    pub partial: Vec<u64>,
    /// The replica copies it holds, by database uid.
    pub replicas: BTreeMap<u64, ReplicaWanted>,
    /// Every database whose masters are on one node: where clients reach
    /// it (the proxies of the other nodes forward there).
    pub routes: BTreeMap<u64, Routed>,
    /// Every database split over several shards: its port and shard map
    /// (every node routes it).
    pub sharded: BTreeMap<u64, Sharded>,
}

/// The id one shard of a database split over several shards is served,
/// replicated and fenced under (database uids stay below 2^32).
pub fn unit_uid(bdb_uid: u64, index: usize) -> u64 {
    (1 << 48) | (bdb_uid << 16) | index as u64
}

/// The shards of `crdb`'s peer regions that read a shard holding the
/// granules `held`: those whose granules meet them (D102).
fn readers(crdb: &CrdbInstance, held: &std::ops::Range<u16>) -> Vec<Reporter> {
    sources(crdb, held).into_iter().map(|(peer, _, run)| Reporter::new(peer.region_id, run)).collect()
}

/// The shard streams of `crdb`'s peer regions a shard holding the granules
/// `held` reads (and that read it): each peer shard whose granules meet
/// them, with its index and its granules.
fn sources<'c>(crdb: &'c CrdbInstance, held: &std::ops::Range<u16>) -> Vec<(&'c CrdbPeer, u32, std::ops::Range<u16>)> {
    let cut = crdb.cut();
    let mut found = Vec::new();
    for peer in crdb.peers() {
        for (index, run) in cut.split(peer.shards).unwrap_or_default().into_iter().enumerate() {
            if run.start.max(held.start) < run.end.min(held.end) {
                found.push((peer, index as u32, run));
            }
        }
    }
    found
}

/// A database's shards: the copies of each, grouped by slots, in slot order.
fn logical_shards<'a>(copies: &[&'a ShardInfo]) -> Vec<Vec<&'a ShardInfo>> {
    let mut groups: Vec<Vec<&ShardInfo>> = Vec::new();
    for copy in copies {
        match groups.iter_mut().find(|g| g[0].assigned_slots == copy.assigned_slots) {
            Some(group) => group.push(copy),
            None => groups.push(vec![copy]),
        }
    }
    groups.sort_by_key(|g| g[0].assigned_slots.first().map(|r| r.start));
    groups
}

/// True if a database with these shards (from [`logical_shards`]) is
/// served shard by shard behind routers (an active-active instance too:
/// each shard streams its own granules, D102).
fn is_sharded(groups: &[Vec<&ShardInfo>]) -> bool {
    groups.len() > 1
}

/// Plans a database split over several shards: each shard is served where
/// its master is (under its [`unit_uid`]), followed where its replicas are,
/// and every node routes the database's port by slot.
fn plan_sharded(config: &ClusterConfig, node_id: u64, bdb: &Bdb, groups: &[Vec<&ShardInfo>], plan: &mut Plan) {
    let up = |s: &ShardInfo| config.nodes.get(&s.node_uid).is_some_and(|n| n.status.is_up());
    let mut routes = Vec::with_capacity(groups.len());
    for (index, group) in groups.iter().enumerate() {
        let unit = unit_uid(bdb.uid, index);
        let slots = group[0].assigned_slots.iter().map(|r| (r.start, r.end)).collect();
        let Some(master) = group.iter().find(|s| s.role == ShardRole::Master) else {
            let epoch = group.iter().map(|s| s.epoch).max().unwrap_or(0);
            routes.push(ShardRoute { slots, master: None, node_uid: 0, unit, epoch });
            continue;
        };
        let master_node = config.nodes.get(&master.node_uid);
        let host = master_node.and_then(|n| node_host(&n.addr));
        routes.push(ShardRoute {
            slots,
            master: host.map(|h| SocketAddr::new(h, bdb.port)),
            node_uid: master.node_uid,
            unit,
            epoch: master.epoch,
        });
        if master.node_uid == node_id {
            plan.serve.insert(
                unit,
                Wanted {
                    uid: unit,
                    bdb_uid: bdb.uid,
                    shard_index: Some(index),
                    port: bdb.port,
                    password: bdb.password.clone(),
                    crdb: bdb.crdb.clone(),
                    replication: group.len() > 1,
                    epoch: master.epoch,
                    settle: group.iter().any(|s| s.role == ShardRole::Replica && up(s)),
                },
            );
        } else if let Some(copy) = group.iter().find(|s| s.role == ShardRole::Replica && s.node_uid == node_id)
            && let Some(master_node) = master_node
        {
            plan.replicas.insert(
                unit,
                ReplicaWanted {
                    uid: unit,
                    copy: copy.uid,
                    epoch: master.epoch,
                    master_addr: master_node.addr.clone(),
                    replica_id: bdb.crdb.as_ref().map_or(1, |c| c.region_id),
                    solo: bdb.crdb.is_none(),
                },
            );
        }
    }
    let host = config.nodes.get(&node_id).and_then(|n| node_host(&n.addr));
    // Nodes sharing an address: the lowest id listens for them all.
    let listen = host.is_none() || !config.nodes.iter().any(|(&id, n)| id < node_id && node_host(&n.addr) == host);
    let host = host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let map = ShardMap::new(routes, bdb.password.is_some(), bdb.oss_cluster, node_id, SocketAddr::new(host, bdb.port));
    plan.sharded.insert(bdb.uid, Sharded { port: bdb.port, map, listen });
}

impl Wanted {
    /// For an active-active instance: how its slots are cut into granules,
    /// the run of them this shard holds, and its shard stream (its index in
    /// the instance).
    fn slice(&self) -> Option<(Granules, std::ops::Range<u16>, u32)> {
        let crdb = self.crdb.as_ref()?;
        let cut = crdb.cut();
        let index = self.shard_index.unwrap_or(0);
        let shards = crdb.own().map_or(1, |own| own.shards);
        let held = cut.split(shards).ok()?.get(index)?.clone();
        Some((cut, held, index as u32))
    }

    /// True if a running database must be restarted (not just updated) to
    /// become `other`: a new port, or another crdb identity (guid, region).
    fn needs_restart(&self, other: &Wanted) -> bool {
        let identity = |w: &Wanted| w.crdb.as_ref().map(|c| (c.guid.clone(), c.region_id));
        self.port != other.port || identity(self) != identity(other)
    }
}

/// What `node_id` must serve in `config`: the databases whose every master
/// shard is on it (the default database excepted), the databases with some
/// but not all masters here (they need routing between nodes, not there
/// yet), and the replica copies on it of single-shard databases whose master
/// is elsewhere.
pub fn wanted(config: &ClusterConfig, node_id: u64) -> Plan {
    let mut plan = Plan::default();
    for bdb in config.bdbs.values().filter(|b| b.name != DEFAULT_BDB_NAME) {
        let copies: Vec<&crate::config::ShardInfo> =
            bdb.shard_list.iter().filter_map(|uid| config.shards.get(uid)).collect();
        let groups = logical_shards(&copies);
        if is_sharded(&groups) {
            plan_sharded(config, node_id, bdb, &groups, &mut plan);
            continue;
        }
        let masters: Vec<&crate::config::ShardInfo> =
            copies.iter().copied().filter(|s| s.role == ShardRole::Master).collect();
        let here = masters.iter().filter(|s| s.node_uid == node_id).count();
        let replica_id = bdb.crdb.as_ref().map_or(1, |c| c.region_id);
        if let Some(first) = masters.first()
            && masters.iter().all(|s| s.node_uid == first.node_uid)
        {
            let host = config.nodes.get(&first.node_uid).and_then(|n| node_host(&n.addr));
            let route = Route {
                master: host.map(|h| SocketAddr::new(h, bdb.port)),
                epoch: masters.iter().map(|s| s.epoch).max().unwrap_or(0),
                password: bdb.password.is_some(),
            };
            plan.routes.insert(bdb.uid, Routed { uid: bdb.uid, port: bdb.port, master_node: first.node_uid, route });
        }
        if here == masters.len() && here > 0 {
            let wanted = Wanted {
                uid: bdb.uid,
                bdb_uid: bdb.uid,
                shard_index: None,
                port: bdb.port,
                password: bdb.password.clone(),
                crdb: bdb.crdb.clone(),
                replication: copies.len() > masters.len(),
                epoch: masters.iter().map(|s| s.epoch).max().unwrap_or(0),
                settle: copies.iter().any(|s| {
                    s.role == ShardRole::Replica && config.nodes.get(&s.node_uid).is_some_and(|n| n.status.is_up())
                }),
            };
            plan.serve.insert(bdb.uid, wanted);
        } else if here > 0 {
            plan.partial.push(bdb.uid);
        } else if let [master] = masters.as_slice()
            && let Some(copy) = copies.iter().find(|s| s.role == ShardRole::Replica && s.node_uid == node_id)
            && let Some(master_node) = config.nodes.get(&master.node_uid)
        {
            plan.replicas.insert(
                bdb.uid,
                ReplicaWanted {
                    uid: bdb.uid,
                    copy: copy.uid,
                    epoch: master.epoch,
                    master_addr: master_node.addr.clone(),
                    replica_id,
                    solo: bdb.crdb.is_none(),
                },
            );
        }
    }
    plan
}

/// Which node masters each served shard, at which epoch, by the id it is
/// served under (the fence compares a served master with it).
fn masters(config: &ClusterConfig) -> BTreeMap<u64, (u64, u64)> {
    let mut masters = BTreeMap::new();
    for bdb in config.bdbs.values() {
        let copies: Vec<&ShardInfo> = bdb.shard_list.iter().filter_map(|uid| config.shards.get(uid)).collect();
        let groups = logical_shards(&copies);
        let sharded = is_sharded(&groups);
        for (index, group) in groups.iter().enumerate() {
            if let Some(master) = group.iter().find(|s| s.role == ShardRole::Master) {
                let id = if sharded { unit_uid(bdb.uid, index) } else { bdb.uid };
                masters.insert(id, (master.node_uid, master.epoch));
            }
        }
    }
    masters
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
    /// The cluster's failover timeout: a manual failover's hand-over waits
    /// at most half of it (see [`Databases::open`]).
    pub failover_timeout: Duration,
    /// Mutual TLS for the WAN links (the sync port's side is the node's).
    pub sync_tls: Option<SyncTls>,
}

/// One served database.
struct Serving {
    addr: SocketAddr,
    /// When it started serving (a settling master waits a lease from here).
    opened: Instant,
    server: Arc<ServerState>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// The destination side every link of this instance applies through (one
    /// per database, so the peers' cursors outlive a relink).
    inbound: Arc<dyn Inbound>,
    /// The WAN links: the peer region's shard stream, the endpoint dialled,
    /// the link.
    links: Vec<(Source, String, Link)>,
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

/// A replica copy this node holds: its state and the link that feeds it.
struct ReplicaEntry {
    wanted: ReplicaWanted,
    stream: Arc<Mutex<ReplicaStream>>,
    link: ReplicaLink,
}

/// The databases this node serves; cheap to clone.
#[derive(Clone)]
pub struct Databases {
    settings: Arc<DatabaseSettings>,
    sync: SyncSource,
    entries: Arc<Mutex<BTreeMap<u64, Entry>>>,
    /// The masters served to replicas on the cluster port.
    sources: Arc<SourceTable>,
    /// The replica copies held here, by database uid.
    replicas: Arc<tokio::sync::Mutex<BTreeMap<u64, ReplicaEntry>>>,
    /// The ports this node forwards to masters on other nodes.
    forwarders: Arc<tokio::sync::Mutex<Forwarders>>,
    /// The sharded databases' routers.
    routers: Arc<tokio::sync::Mutex<Routers>>,
    /// Active-active instances whose new sync endpoint is being announced
    /// to their peers (after a failover moved the master here).
    announcing: Arc<Mutex<BTreeSet<u64>>>,
}

impl Databases {
    /// No database served yet; active-active instances register with
    /// `sync`, masters with replicas with `sources`.
    pub fn new(settings: DatabaseSettings, sync: SyncSource, sources: Arc<SourceTable>) -> Databases {
        let forwarders = Forwarders::new(settings.bind, settings.node_id, settings.maxclients);
        let routers = Routers::new(settings.bind, settings.maxclients);
        Databases {
            settings: Arc::new(settings),
            sync,
            entries: Default::default(),
            sources,
            replicas: Default::default(),
            routers: Arc::new(tokio::sync::Mutex::new(routers)),
            forwarders: Arc::new(tokio::sync::Mutex::new(forwarders)),
            announcing: Default::default(),
        }
    }

    /// Finds a shard served here by the id it is served under and its
    /// epoch: the routers hand it the connections that name it.
    fn attach(&self) -> Attach {
        let entries = self.entries.clone();
        Arc::new(move |uid, epoch| {
            let entries = entries.lock().unwrap_or_else(|p| p.into_inner());
            match &entries.get(&uid)?.state {
                State::Serving(serving) if entries[&uid].wanted.epoch == epoch => Some(serving.server.clone()),
                _ => None,
            }
        })
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
        // A sharded database's shards add up to one reading.
        let mut readings: BTreeMap<u64, BdbReading> = BTreeMap::new();
        for entry in self.entries().values() {
            if let State::Serving(serving) = &entry.state {
                let reading = bdb_reading(entry.wanted.bdb_uid, &serving.server);
                let sum = readings.entry(reading.uid).or_insert(BdbReading {
                    uid: reading.uid,
                    conns: 0,
                    total_req: 0,
                    keys: 0,
                });
                sum.conns += reading.conns;
                sum.total_req += reading.total_req;
                sum.keys += reading.keys;
            }
        }
        readings.into_values().collect()
    }

    /// The local status of database `uid` (the admin API shows it): endpoint
    /// state and, for an active-active instance, each link's figures.
    pub fn status(&self, uid: u64) -> Option<Value> {
        let entries = self.entries();
        let Some(entry) = entries.get(&uid) else {
            drop(entries);
            if let Some(mut router) = self.routers.try_lock().ok().and_then(|r| r.status(uid)) {
                router["node_uid"] = json!(self.settings.node_id);
                router["local_shards"] = self.unit_status(uid);
                return Some(router);
            }
            let proxy = self.forwarders.try_lock().ok().and_then(|f| f.status(uid));
            return match (self.replica_status(uid), proxy) {
                (Some(mut replica), Some(proxy)) => {
                    replica["proxy"] = proxy;
                    Some(replica)
                }
                (replica, proxy) => replica.or(proxy),
            };
        };
        let mut status = json!({ "node_uid": self.settings.node_id, "port": entry.wanted.port });
        match &entry.state {
            State::Serving(serving) => {
                status["status"] = json!("active");
                status["role"] = json!("master");
                status["endpoint"] = json!(serving.addr.to_string());
                if let Some(replication) = serving.server.replication() {
                    let log = replication.log();
                    status["epoch"] = json!(entry.wanted.epoch);
                    status["fenced"] = json!(serving.server.is_fenced());
                    status["repl_offset"] = json!(log.next_offset());
                    status["replicas"] = json!(
                        log.replicas().map(|(id, offset)| json!({"id": id, "offset": offset})).collect::<Vec<_>>()
                    );
                }
                if let Some(crdb) = &entry.wanted.crdb {
                    status["region_id"] = json!(crdb.region_id);
                    status["links"] = self.links_view(entry, serving);
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

    /// The figures of each WAN link of a served active-active instance (or
    /// one shard of one).
    fn links_view(&self, entry: &Entry, serving: &Serving) -> Value {
        let Some(crdb) = &entry.wanted.crdb else { return Value::Null };
        let stream = entry.wanted.slice().map_or(0, |s| s.2);
        let readings = self.readings(entry.wanted.bdb_uid, crdb, stream, serving, system_wall_ms());
        let links = readings.into_iter().map(|r| {
            let (i, e) = (&r.ingress, r.egress.clone().unwrap_or_default());
            json!({
                "region_id": r.peer_region, "shard": r.peer_shard, "endpoint": r.endpoint, "state": i.state,
                "lag_ops": i.lag_ops, "lag_ms": i.lag_ms, "deltas": i.deltas, "bytes_in_wire": i.bytes_in_wire,
                "bytes_in_raw": i.bytes_in_raw, "bytes_out_wire": e.bytes_out_wire,
                "bytes_out_raw": e.bytes_out_raw, "deltas_out": e.deltas,
                "full_syncs": i.full_syncs, "partial_syncs": i.partial_syncs,
                "connects": i.connects, "errors": i.errors, "last_error": i.last_error,
            })
        });
        Value::Array(links.collect())
    }

    /// The shards of sharded database `bdb` this node holds, masters and
    /// replicas.
    fn unit_status(&self, bdb: u64) -> Value {
        let units: Vec<u64> = {
            let entries = self.entries();
            let masters = entries.iter().filter(|(_, e)| e.wanted.bdb_uid == bdb && e.wanted.shard_index.is_some());
            let mut units: Vec<u64> = masters.map(|(uid, _)| *uid).collect();
            if let Ok(replicas) = self.replicas.try_lock() {
                units.extend(replicas.keys().filter(|&&u| u >> 16 == (1 << 32) | bdb));
            }
            units
        };
        let shards: Vec<Value> = units
            .into_iter()
            .filter_map(|unit| {
                let mut status = self.unit_entry_status(unit).or_else(|| self.replica_status(unit))?;
                status["shard"] = json!((unit & 0xffff) + 1);
                Some(status)
            })
            .collect();
        Value::Array(shards)
    }

    /// The status of one served master (a database or one shard of one).
    fn unit_entry_status(&self, uid: u64) -> Option<Value> {
        let entries = self.entries();
        let entry = entries.get(&uid)?;
        let State::Serving(serving) = &entry.state else {
            return Some(json!({"status": "error", "role": "master"}));
        };
        let mut status = json!({"status": "active", "role": "master", "keys": serving.server.shard().keyspace().len()});
        if entry.wanted.crdb.is_some() {
            status["links"] = self.links_view(entry, serving);
        }
        if let Some(replication) = serving.server.replication() {
            let log = replication.log();
            status["epoch"] = json!(entry.wanted.epoch);
            status["fenced"] = json!(serving.server.is_fenced());
            status["repl_offset"] = json!(log.next_offset());
        }
        Some(status)
    }

    /// One reading per WAN link of a served active-active instance: the
    /// incoming link's counters and those of the stream served to the peer.
    fn readings(&self, uid: u64, crdb: &CrdbInstance, stream: u32, serving: &Serving, now_ms: u64) -> Vec<PeerReading> {
        let mut links: Vec<&(Source, String, Link)> = serving.links.iter().collect();
        links.sort_by_key(|(source, _, _)| *source);
        links
            .into_iter()
            .map(|(source, endpoint, link)| PeerReading {
                bdb: uid,
                crdb_guid: crdb.guid.clone(),
                local_region: crdb.region_id,
                peer_region: source.region,
                local_shard: stream,
                peer_shard: source.stream,
                endpoint: endpoint.clone(),
                ingress: link.stats().read(now_ms),
                egress: self
                    .sync
                    .stream_stats(&crdb.guid, source.region, stream, source.stream)
                    .map(|s| s.read(now_ms)),
            })
            .collect()
    }

    /// Runs the reconcile loop until `shutdown` turns true, then stops every
    /// database. Between passes, every few milliseconds, it fences the
    /// masters with replicas that may no longer take writes.
    pub async fn run(self, control: ControlPlane, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fence_tick = tokio::time::interval((control.failover_timeout() / 20).max(Duration::from_millis(5)));
        fence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut partial_logged = BTreeSet::new();
        let attach = self.attach();
        let mut applied = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // A configuration change (a failover) is acted on at once.
                _ = control.applied_past(&mut applied) => {}
                _ = fence_tick.tick() => {
                    self.fence(&control);
                    self.report_unsynced(&control);
                    continue;
                }
                _ = shutdown.wait_for(|&stopped| stopped) => break,
            }
            let (plan, existing) = control
                .with_config(|c| (wanted(c, self.settings.node_id), c.bdbs.keys().copied().collect::<BTreeSet<u64>>()));
            for uid in &plan.partial {
                if partial_logged.insert(*uid) {
                    tracing::warn!(
                        bdb = uid,
                        "the configuration names master copies of one shard on several nodes; this node does not serve it until that settles"
                    );
                }
            }
            partial_logged.retain(|uid| plan.partial.contains(uid));
            // A master with replicas starts only once the cluster confirmed
            // this node (a restarted node may hold an old configuration).
            let lease = control.write_lease_valid();
            let (serve, deferred): (BTreeMap<u64, Wanted>, BTreeMap<u64, Wanted>) = plan
                .serve
                .into_iter()
                .partition(|(uid, want)| lease || !want.replication || self.entries().contains_key(uid));
            // Ports change hands between the forwarding proxy and the
            // served master: the side giving a port up closes it first.
            let mut forwarders = self.forwarders.lock().await;
            forwarders.update(&plan.routes).await;
            self.reconcile(serve, &plan.replicas, &existing).await;
            forwarders.listen(&plan.routes).await;
            drop(forwarders);
            self.routers.lock().await.update(&plan.sharded, &attach).await;
            // A replica waiting for the lease to be promoted keeps its copy:
            // its state is the shard's data.
            self.reconcile_replicas(plan.replicas, &deferred).await;
            self.report_unsynced(&control);
            self.fence(&control);
            self.announce(&control);
        }
        self.forwarders.lock().await.stop_all().await;
        self.routers.lock().await.stop_all(&attach).await;
        let all: Vec<u64> = self.entries().keys().copied().collect();
        for uid in all {
            self.stop(uid, false).await;
        }
        for (_, replica) in std::mem::take(&mut *self.replicas.lock().await) {
            replica.link.stop().await;
        }
    }

    /// Tells the control plane which replica copies held here have never
    /// synced with their master (a failover must not promote them); skipped
    /// while a reconcile holds the copies (the next tick says).
    fn report_unsynced(&self, control: &ControlPlane) {
        let Ok(replicas) = self.replicas.try_lock() else {
            return;
        };
        let unsynced = replicas
            .values()
            .filter(|entry| entry.stream.lock().unwrap_or_else(|p| p.into_inner()).replid().is_none())
            .map(|entry| entry.wanted.copy)
            .collect();
        control.set_unsynced_replicas(unsynced);
    }

    /// Fences every served master with replicas that may not take writes
    /// now: this node lost its write lease, or the configuration no longer
    /// names it the shard's master at the epoch it serves.
    fn fence(&self, control: &ControlPlane) {
        let lease_until = control.write_lease_until();
        let lease = control.write_lease_valid();
        let masters = control.with_config(masters);
        let me = self.settings.node_id;
        let settle = control.failover_timeout() / 2;
        for (uid, entry) in self.entries().iter() {
            if let State::Serving(serving) = &entry.state
                && entry.wanted.replication
            {
                // A settling master is confirmed but holds no lease yet:
                // writes wait for it rather than fail.
                let settled = !entry.wanted.settle || serving.opened.elapsed() >= settle;
                let confirmed = lease && masters.get(uid) == Some(&(me, entry.wanted.epoch));
                // Fence first: a write waiting for the lease must not see it
                // renewed before it sees the fence.
                serving.server.set_fenced(!confirmed);
                serving.server.set_write_lease(if settled { lease_until } else { Instant::now() });
            }
        }
    }

    /// Brings the replica copies held here in line with `wanted`: a new one
    /// starts following its master; one whose master or epoch changed
    /// follows the new one, keeping its state and offset (a partial resync
    /// when the new master continues the history); one no longer wanted
    /// stops. A replica promoted to master was taken by [`Databases::open`]
    /// before this runs.
    async fn reconcile_replicas(&self, wanted: BTreeMap<u64, ReplicaWanted>, promoting: &BTreeMap<u64, Wanted>) {
        let mut replicas = self.replicas.lock().await;
        let held: Vec<u64> = replicas.keys().copied().collect();
        for uid in held {
            let keep =
                promoting.contains_key(&uid) || wanted.get(&uid).is_some_and(|want| *want == replicas[&uid].wanted);
            if keep {
                continue;
            }
            let entry = replicas.remove(&uid).expect("held");
            entry.link.stop().await;
            match wanted.get(&uid) {
                Some(want) if want.replica_id == entry.wanted.replica_id && want.solo == entry.wanted.solo => {
                    tracing::info!(bdb = uid, master = %want.master_addr, epoch = want.epoch, "replica follows a new master");
                    let link = self.follow(want, entry.stream.clone());
                    replicas.insert(uid, ReplicaEntry { wanted: want.clone(), stream: entry.stream, link });
                }
                _ => tracing::info!(bdb = uid, "replica copy removed from this node"),
            }
        }
        for (uid, want) in wanted {
            if replicas.contains_key(&uid) {
                continue;
            }
            tracing::info!(bdb = uid, master = %want.master_addr, epoch = want.epoch, "holding a replica copy");
            let stream = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(want.replica_id), want.solo)));
            let link = self.follow(&want, stream.clone());
            replicas.insert(uid, ReplicaEntry { wanted: want, stream, link });
        }
    }

    fn follow(&self, want: &ReplicaWanted, stream: Arc<Mutex<ReplicaStream>>) -> ReplicaLink {
        let mut config = ReplicaLinkConfig::new(format!("http://{}", want.master_addr), want.copy);
        config.bdb_uid = want.uid;
        config.epoch = want.epoch;
        config.connect_timeout = Duration::from_secs(1);
        config.backoff_ms = (20, 1_000);
        ReplicaLink::spawn(config, stream)
    }

    /// Waits until the replica copy `uid`'s link to its old master went down
    /// (the old master handed over) or half a failover timeout passed.
    async fn await_hand_over(&self, uid: u64) {
        let deadline = Instant::now() + self.settings.failover_timeout / 2;
        loop {
            let up = {
                let replicas = self.replicas.lock().await;
                match replicas.get(&uid) {
                    Some(entry) => entry.link.stats().up.load(std::sync::atomic::Ordering::Acquire),
                    None => false,
                }
            };
            if !up || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops following database `uid`'s master and takes the replica's state
    /// for a promotion: keyspace, history, offset and clock high-water.
    async fn take_replica(&self, uid: u64) -> Option<(meridian_crdt::Keyspace, Option<ReplicationId>, u64, u64)> {
        let entry = self.replicas.lock().await.remove(&uid)?;
        entry.link.stop().await;
        let mut stream = entry.stream.lock().unwrap_or_else(|p| p.into_inner());
        // Never synced: nothing to continue from.
        stream.replid()?;
        Some(stream.take_for_promotion())
    }

    /// The local view of a replica copy held here (offset, link state).
    fn replica_status(&self, uid: u64) -> Option<Value> {
        let replicas = self.replicas.try_lock().ok()?;
        let entry = replicas.get(&uid)?;
        let stream = entry.stream.lock().unwrap_or_else(|p| p.into_inner());
        let stats = entry.link.stats();
        use std::sync::atomic::Ordering::Relaxed;
        Some(json!({
            "node_uid": self.settings.node_id,
            "status": "replica",
            "role": "replica",
            "epoch": entry.wanted.epoch,
            "master": entry.wanted.master_addr,
            "link": if stats.up.load(Relaxed) { "up" } else { "down" },
            "offset": stream.offset(),
            "keys": stream.keyspace().len(),
            "full_syncs": stats.full_syncs.load(Relaxed),
            "partial_syncs": stats.partial_syncs.load(Relaxed),
            "last_error": stats.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }))
    }

    /// One pass: stops, updates and starts databases until what runs is `wanted`.
    async fn reconcile(
        &self,
        wanted: BTreeMap<u64, Wanted>,
        replicas: &BTreeMap<u64, ReplicaWanted>,
        existing: &BTreeSet<u64>,
    ) {
        let running: Vec<u64> = self.entries().keys().copied().collect();
        for uid in running {
            let action = {
                let mut entries = self.entries();
                let entry = entries.get_mut(&uid).expect("only this loop removes entries");
                match (wanted.get(&uid), &entry.state) {
                    (None, _) => Action::Stop,
                    (Some(_), State::Stopping) => Action::Keep,
                    (Some(want), _) if entry.wanted.needs_restart(want) => Action::Restart,
                    (Some(want), State::Serving(_)) if want.replication != entry.wanted.replication => Action::Restart,
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
                        if want.replication && want.epoch != entry.wanted.epoch {
                            // Still master, at a new epoch: replicas must
                            // reconnect naming it.
                            let source = Arc::new(ServerSource(serving.server.clone()));
                            self.sources.insert(uid, want.epoch, source);
                        }
                        entry.wanted = want.clone();
                        if relink { Action::Relink } else { Action::Keep }
                    }
                }
            };
            match action {
                Action::Keep => {}
                Action::Stop => {
                    if replicas.contains_key(&uid) {
                        self.hand_over(uid).await;
                    }
                    let bdb = self.entries().get(&uid).map_or(uid, |e| e.wanted.bdb_uid);
                    let stopped = self.stop(uid, !existing.contains(&bdb)).await;
                    if let (Some(server), Some(want)) = (stopped, replicas.get(&uid)) {
                        self.demote(server, want).await;
                    }
                }
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

    /// Active-active instances served here whose recorded sync endpoint is
    /// another node's (a failover moved the master here): announces this
    /// node's to the peer regions in the background, retrying with backoff
    /// while this node still serves the instance. An instance whose endpoint
    /// was never recorded is still being created and is left alone.
    fn announce(&self, control: &ControlPlane) {
        let node_id = self.settings.node_id;
        let Some(endpoint) = control.with_config(|c| c.nodes.get(&node_id).and_then(|n| n.sync_addr.clone())) else {
            return;
        };
        if endpoint.parse::<SocketAddr>().is_ok_and(|addr| addr.ip().is_unspecified()) {
            // Bound to every address: which one peers reach is unknown here.
            return;
        }
        let moved: Vec<(u64, String, u16)> = self
            .entries()
            .iter()
            .filter_map(|(uid, entry)| {
                let State::Serving(_) = entry.state else { return None };
                let crdb = entry.wanted.crdb.as_ref()?;
                let stream = entry.wanted.shard_index.unwrap_or(0) as u16;
                let recorded = crdb.own()?.endpoint(stream)?;
                (recorded != endpoint).then(|| (*uid, crdb.guid.clone(), stream))
            })
            .collect();
        for (uid, guid, stream) in moved {
            if !self.announcing.lock().unwrap_or_else(|p| p.into_inner()).insert(uid) {
                continue;
            }
            let (databases, control, endpoint) = (self.clone(), control.clone(), endpoint.clone());
            tokio::spawn(async move {
                let mut backoff = meridian_wan::Backoff::with_bounds(uid, 100, 5_000);
                loop {
                    match crate::admin::crdb::announce_endpoint(&control, &guid, stream, &endpoint).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(bdb = uid, guid, %error, "announcing the new sync endpoint failed")
                        }
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    let serving = databases.entries().get(&uid).is_some_and(|e| matches!(e.state, State::Serving(_)));
                    if !serving {
                        break;
                    }
                }
                databases.announcing.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
            });
        }
    }

    /// A master about to become a replica of another copy (a manual
    /// failover, or a master coming back after one): it takes no more
    /// writes, and its log goes on streaming until its replica acknowledged
    /// all of it — bounded by half the failover timeout — so the promoted
    /// copy has every write it acknowledged (Redis's CLUSTER FAILOVER
    /// hand-over). A replica that is no longer listening just costs the wait.
    async fn hand_over(&self, uid: u64) {
        let server = match &self.entries().get(&uid).map(|e| &e.state) {
            Some(State::Serving(serving)) => serving.server.clone(),
            _ => return,
        };
        if server.replication().is_none() {
            return;
        }
        server.set_fenced(true);
        let acked = server.wait_for_replicas(1, Some(self.settings.failover_timeout / 2)).await;
        tracing::info!(bdb = uid, acked, "handed the shard over: fenced, its log acknowledged by {acked} replica(s)");
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
        // A settling master counts its settling from here (the hand-over
        // below is part of it).
        let began = Instant::now();
        // One shard of a sharded database has no port of its own: the
        // routers hand it connections.
        let listener = match want.shard_index {
            None => Some(
                meridian_proxy::server::bind(SocketAddr::new(self.settings.bind, want.port))
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Some(_) => None,
        };
        let addr = match &listener {
            Some(listener) => listener.local_addr().map_err(|e| e.to_string())?,
            None => SocketAddr::new(self.settings.bind, want.port),
        };
        let replica = ReplicaId(want.crdb.as_ref().map_or(1, |c| c.region_id));
        let settings = Settings {
            requirepass: want.password.clone(),
            maxclients: self.settings.maxclients,
            port: addr.port(),
            ..Settings::default()
        };
        let bdb_dir = self.settings.data_dir.as_ref().map(|dir| dir.join(format!("bdb-{}", want.bdb_uid)));
        let shard_dir_name = format!("shard-{}", want.shard_index.map_or(1, |i| i + 1));
        // A replica copy held here becomes the master: its state, history
        // and clock continue (a promotion). When the old master may still be
        // up (a manual failover), it streams its last writes before it lets
        // go (`hand_over`, which ends its stream): the replica follows until
        // then, within half a failover timeout — time the new master would
        // spend settling anyway.
        if want.replication && want.settle {
            self.await_hand_over(want.uid).await;
        }
        let promoted = if want.replication { self.take_replica(want.uid).await } else { None };
        // Recovery from disk and a promotion's file work take seconds at
        // millions of keys: on a blocking thread, never on an async worker
        // (a worker held that long misses the cluster's liveness probes,
        // and the node is failed over for it).
        let (uid, fsync, data_dir) = (want.uid, self.settings.fsync, bdb_dir.clone());
        let opened = tokio::task::spawn_blocking(move || {
            open_shard(uid, replica, promoted, data_dir.map(|d| d.join(shard_dir_name)), fsync)
        })
        .await;
        let (mut shard, journal, previous) = opened.map_err(|e| format!("opening the shard failed: {e}"))??;
        let slice = want.slice();
        let outbound = want.crdb.as_ref().zip(slice.as_ref()).map(|(crdb, (cut, held, _))| {
            shard.set_granules(*cut, held.clone());
            shard.set_peers(&readers(crdb, held));
            // Every peer link begins with a full sync (D82), so the log
            // never needs to serve a cursorless reader from offset 0; the
            // state may be recovered or promoted anyway.
            Arc::new(RegionOutbound::new(Outbox::new(OUTBOX_BYTES)))
        });
        let mut server = ServerState::new(shard, settings);
        let persistent = journal.is_some();
        if let Some(journal) = journal {
            server = server.with_journal(journal);
        }
        if want.replication {
            let log = match previous {
                Some((replid, offset)) => {
                    ReplicationLog::promoted(ReplicationId::fresh(), replid, offset, REPL_BACKLOG_BYTES)
                }
                None => ReplicationLog::new(ReplicationId::fresh(), REPL_BACKLOG_BYTES),
            };
            server = server.with_replication(log);
        }
        if let Some(outbound) = &outbound {
            server = server.with_journal_sink(outbound.journal_sink());
        }
        let server = Arc::new(server);
        if previous.is_some() && persistent {
            // The promoted state is not in the fresh journal: write it out
            // (seconds at millions of keys: on a blocking thread).
            let promoted = server.clone();
            tokio::task::spawn_blocking(move || promoted.rewrite())
                .await
                .map_err(|e| format!("persisting the promoted state failed: {e}"))?
                .map_err(|e| format!("cannot persist the promoted state: {e}"))?;
        }
        if want.replication {
            server.set_fenced(true);
            self.sources.insert(want.uid, want.epoch, Arc::new(ServerSource(server.clone())));
        }
        if let (Some(outbound), Some(crdb), Some((cut, held, stream))) = (outbound, &want.crdb, slice) {
            outbound.attach(&server);
            self.sync.add_stream(&crdb.guid, crdb.region_id, stream, cut, held, outbound);
        }
        let (shutdown, receiver) = watch::channel(false);
        let task = match listener {
            Some(listener) => tokio::spawn(meridian_proxy::server::run(listener, server.clone(), receiver)),
            None => tokio::spawn(meridian_proxy::server::maintain(server.clone(), receiver)),
        };
        let inbound: Arc<dyn Inbound> = match (&bdb_dir, &want.crdb) {
            (Some(dir), Some(crdb)) => {
                let dir = dir.join("wan");
                let store = CursorStore::open(&dir)
                    .map_err(|e| format!("cannot open the WAN cursors in {}: {e}", dir.display()))?;
                Arc::new(RegionInbound::persistent(server.clone(), store, crdb.guid.clone()))
            }
            _ => Arc::new(RegionInbound::new(server.clone())),
        };
        Ok(Serving { addr, opened: began, server, shutdown, task, inbound, links: Vec::new() })
    }

    /// Brings an active-active instance's links in line with its instance
    /// list: one per peer whose sync endpoint is known. A link whose peer and
    /// endpoint are unchanged keeps running (its counters and cursor too).
    /// When a peer's instance was removed (its region id retired), every
    /// link restarts with [`Cursor::RESYNC`]: the removed region's last
    /// deltas may have reached some regions and not others, and only the
    /// peers' full state (a snapshot) carries them on.
    async fn relink(&self, uid: u64) {
        loop {
            let Some((stale, resync)) = self.relink_pass(uid) else { return };
            for (_, _, link) in stale {
                link.stop().await;
            }
            let Some((inbound, sources)) = resync else { return };
            for source in sources {
                if let Err(error) = inbound.store_cursor(source, Cursor::RESYNC) {
                    tracing::error!(bdb = uid, ?source, %error, "cannot reset a WAN cursor for a full sync");
                }
            }
        }
    }

    /// One pass of [`Databases::relink`]: the links to stop and, when a
    /// removed peer calls for full syncs, the regions whose cursors to
    /// reset before the next pass (no link is started then).
    #[allow(clippy::type_complexity)]
    fn relink_pass(&self, uid: u64) -> Option<(Vec<(Source, String, Link)>, Option<(Arc<dyn Inbound>, Vec<Source>)>)> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&uid)?;
        let (cut, held, stream) = entry.wanted.slice()?;
        let State::Serving(serving) = &mut entry.state else { return None };
        let crdb = entry.wanted.crdb.as_ref()?;
        let url = |e: &str| SyncTls::url(self.settings.sync_tls.as_ref(), e);
        // Every shard of every peer region whose granules meet this shard's.
        let streams = sources(crdb, &held);
        let wanted: Vec<(Source, String)> = streams
            .iter()
            .filter_map(|(peer, index, _)| {
                let source = Source { region: peer.region_id, stream: *index };
                peer.endpoint(*index as u16).map(|e| (source, url(e)))
            })
            .collect();
        if serving.links.iter().any(|(source, _, _)| crdb.retired.contains(&source.region)) {
            let stale = std::mem::take(&mut serving.links);
            let all =
                streams.iter().map(|(peer, index, _)| Source { region: peer.region_id, stream: *index }).collect();
            tracing::info!(bdb = uid, "a peer instance was removed: full syncs from the others");
            return Some((stale, Some((serving.inbound.clone(), all))));
        }
        let (kept, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut serving.links)
            .into_iter()
            .partition(|(source, endpoint, _)| wanted.iter().any(|(s, e)| s == source && e == endpoint));
        serving.links = kept;
        for (source, endpoint) in wanted {
            if serving.links.iter().any(|(s, _, _)| *s == source) {
                continue;
            }
            // A peer never synced from begins with its full state: its log
            // holds only what it originated, and an instance added to a
            // running crdb also needs what other regions (some perhaps gone)
            // wrote before.
            if serving.inbound.load_cursor(source).is_none()
                && let Err(error) = serving.inbound.store_cursor(source, Cursor::RESYNC)
            {
                tracing::error!(bdb = uid, ?source, %error, "cannot set a WAN cursor for a full sync");
            }
            let mut config = LinkConfig::new(&crdb.guid, crdb.region_id, source.region, endpoint.clone());
            config.tls = self.settings.sync_tls.clone();
            config.stream = source.stream;
            config.slice = Slice { granules: cut, held: held.clone() };
            config.destination_stream = stream;
            config.backoff_seed ^= (u64::from(source.stream) << 32) | (u64::from(stream) << 40);
            serving.links.push((source, endpoint, Link::spawn(config, serving.inbound.clone())));
        }
        serving.server.shard().set_peers(&readers(crdb, &held));
        tracing::info!(bdb = uid, links = serving.links.len(), "active-active links in line with the instance list");
        Some((stale, None))
    }

    /// Stops serving `uid`: links, the sync registration, the listener and
    /// every client; with `delete_data`, removes its data directory too.
    async fn stop(&self, uid: u64, delete_data: bool) -> Option<Arc<ServerState>> {
        // The entry stays (as stopping) until the port is closed, so its
        // status says "served" until it no longer is.
        let (state, crdb, data) = {
            let mut entries = self.entries();
            let entry = entries.get_mut(&uid)?;
            let data = (entry.wanted.bdb_uid, entry.wanted.shard_index);
            let crdb = entry.wanted.crdb.clone().zip(entry.wanted.slice()).map(|(c, (_, _, stream))| (c, stream));
            (std::mem::replace(&mut entry.state, State::Stopping), crdb, data)
        };
        self.sources.remove(uid);
        let mut stopped = None;
        if let State::Serving(serving) = state {
            for (_, _, link) in serving.links {
                link.stop().await;
            }
            if let Some((crdb, stream)) = &crdb {
                self.sync.remove_stream(&crdb.guid, *stream);
            }
            let _ = serving.shutdown.send(true);
            let _ = serving.task.await;
            for client in serving.server.client_handles() {
                client.kill();
            }
            tracing::info!(bdb = uid, addr = %serving.addr, "stopped serving database");
            stopped = Some(serving.server);
        }
        self.entries().remove(&uid);
        if delete_data && let Some(dir) = &self.settings.data_dir {
            let (bdb, shard_index) = data;
            let bdb_dir = dir.join(format!("bdb-{bdb}"));
            let dir = match shard_index {
                None => bdb_dir.clone(),
                Some(index) => bdb_dir.join(format!("shard-{}", index + 1)),
            };
            if dir.exists()
                && let Err(error) = std::fs::remove_dir_all(&dir)
            {
                tracing::warn!(bdb, dir = %dir.display(), %error, "cannot remove a deleted database's data");
            }
            // The last shard of a deleted database takes its directory along.
            if shard_index.is_some() && std::fs::read_dir(&bdb_dir).is_ok_and(|mut d| d.next().is_none()) {
                let _ = std::fs::remove_dir(&bdb_dir);
            }
        }
        stopped
    }

    /// Turns a stopped master into a replica copy of the shard's new master
    /// (a failover moved the master away, and this node keeps a replica):
    /// the replica continues its state, history and offset, so that it
    /// resumes partially when it holds nothing the new master lacks.
    async fn demote(&self, server: Arc<ServerState>, want: &ReplicaWanted) {
        let Some(replication) = server.replication() else { return };
        server.commit_writes(u64::MAX);
        let (replid, offset) = {
            let log = replication.log();
            (log.replid(), log.next_offset())
        };
        let (keyspace, hlc) = {
            let mut shard = server.shard();
            let hlc = shard.clock().high_water();
            let empty = meridian_crdt::Keyspace::new(ReplicaId(want.replica_id));
            (std::mem::replace(shard.keyspace_mut(), empty), hlc)
        };
        tracing::info!(bdb = want.uid, offset, master = %want.master_addr, "demoted: following the new master");
        let stream = Arc::new(Mutex::new(ReplicaStream::continuing(keyspace, want.solo, replid, offset, hlc)));
        let link = self.follow(want, stream.clone());
        let old = self.replicas.lock().await.insert(want.uid, ReplicaEntry { wanted: want.clone(), stream, link });
        if let Some(old) = old {
            old.link.stop().await;
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
        // A sharded instance's shards are served under their own ids; a
        // reading names the database.
        for entry in entries.values().filter(|e| bdb.is_none_or(|b| b == e.wanted.bdb_uid)) {
            if let (State::Serving(serving), Some(crdb)) = (&entry.state, &entry.wanted.crdb) {
                let stream = entry.wanted.slice().map_or(0, |s| s.2);
                peers.extend(self.readings(entry.wanted.bdb_uid, crdb, stream, serving, now_ms));
            }
        }
        peers
    }
}

/// A database shard's state and journal: a promoted replica copy (with the
/// history it continues) or what `dir` holds. Blocking: file work and, at
/// millions of keys, seconds of recovery.
#[allow(clippy::type_complexity)]
fn open_shard(
    uid: u64,
    replica: ReplicaId,
    promoted: Option<(meridian_crdt::Keyspace, Option<ReplicationId>, u64, u64)>,
    dir: Option<PathBuf>,
    fsync: Fsync,
) -> Result<(Shard, Option<meridian_replication::durability::Journal>, Option<(ReplicationId, u64)>), String> {
    let mut previous = None;
    let (shard, journal) = match (promoted, dir) {
        (Some((keyspace, replid, offset, hlc)), dir) => {
            tracing::info!(bdb = uid, offset, keys = keyspace.len(), "promoting the replica copy to master");
            previous = replid.map(|replid| (replid, offset));
            let shard = Shard::promoted(keyspace, MAX_SKEW_MS_DEFAULT, hlc)
                .map_err(|e| format!("cannot promote the replica: {e}"))?;
            let journal = match dir {
                None => None,
                Some(dir) => {
                    // Whatever this node persisted as an earlier master is
                    // stale: the promoted state replaces it (written out
                    // as a snapshot once served, below).
                    if dir.exists() {
                        std::fs::remove_dir_all(&dir)
                            .map_err(|e| format!("cannot clear the stale data in {}: {e}", dir.display()))?;
                    }
                    let (_, journal, _) = Shard::recover(replica, MAX_SKEW_MS_DEFAULT, &dir, fsync)
                        .map_err(|e| format!("cannot open a journal in {}: {e}", dir.display()))?;
                    Some(journal)
                }
            };
            (shard, journal)
        }
        (None, None) => (Shard::new(replica, MAX_SKEW_MS_DEFAULT), None),
        (None, Some(dir)) => {
            let (shard, journal, recovered) = Shard::recover(replica, MAX_SKEW_MS_DEFAULT, &dir, fsync)
                .map_err(|e| format!("cannot recover the data in {}: {e}", dir.display()))?;
            tracing::info!(
                bdb = uid,
                dir = %dir.display(),
                keys = shard.keyspace().len(),
                deltas_replayed = recovered.deltas_replayed,
                "data recovered"
            );
            (shard, Some(journal))
        }
    };
    Ok((shard, journal, previous))
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
        let (plan_one, plan_two) = (wanted(&config, 1), wanted(&config, 2));
        let (one, two) = (&plan_one.serve, &plan_two.serve);
        assert!(!one.values().chain(two.values()).any(|w| w.port == 6379), "the default is --port's");
        for name in ["a", "b"] {
            let port = config.bdbs.values().find(|b| b.name == name).unwrap().port;
            let served = if holder(name) == 1 { one } else { two };
            assert!(served.values().any(|w| w.port == port), "{name} served by its master's node");
        }
        // A database of two shards: each node serves one shard (under its
        // unit id, on no port of its own) and both route its port.
        let wide = config.bdbs.values().find(|b| b.name == "wide").unwrap().uid;
        let units = |served: &BTreeMap<u64, Wanted>| -> Vec<(u64, Option<usize>)> {
            served.values().filter(|w| w.bdb_uid == wide).map(|w| (w.uid, w.shard_index)).collect()
        };
        let mut both = [units(one), units(two)].concat();
        both.sort_unstable();
        assert_eq!(both, vec![(unit_uid(wide, 0), Some(0)), (unit_uid(wide, 1), Some(1))]);
        for plan in [&plan_one, &plan_two] {
            let sharded = &plan.sharded[&wide];
            assert!(plan.partial.is_empty() && sharded.port == 12002 && sharded.listen);
            assert_eq!(sharded.map.shards.len(), 2);
            assert_eq!(sharded.map.shard_of(0), 0);
            assert_eq!(sharded.map.shard_of(16383), 1);
        }
    }
}
