//! The cluster configuration: what the control plane agrees on through Raft.
//!
//! One value, [`ClusterConfig`], holds the region's nodes, its databases
//! ("bdbs", Redis Enterprise's word) and every shard copy with its slots, role
//! and epoch. It changes only by [`Command`](super::Command)s applied in log
//! order, so every member holds the same value at the same log index. The
//! serde names are the admin API's JSON names (`uid`, `shards_count`,
//! `assigned_slots`, ...), so the REST API shows the model as it is.

use std::collections::BTreeMap;
use std::fmt;

use meridian_replication::slot::SLOT_COUNT;
use serde::{Deserialize, Serialize};

/// Most nodes in one region's cluster.
pub const NODES_MAX: usize = 256;
/// Most databases in one cluster.
pub const BDBS_MAX: usize = 1024;
/// Longest database name, in bytes.
pub const BDB_NAME_BYTES_MAX: usize = 64;
/// Longest database password, in bytes.
pub const PASSWORD_BYTES_MAX: usize = 128;
/// Longest node address or rack label, in bytes.
pub const LABEL_BYTES_MAX: usize = 256;

/// Whether a node takes part in placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Serving; new shards may be placed on it.
    Active,
    /// Being drained by the operator: keeps its shards, gets no new ones.
    Maintenance,
    /// Declared down by an operator: gets no new shards; its masters are the
    /// ones to fail over.
    Down,
    /// Declared failed by failure detection (it stopped answering the
    /// leader's probes): its masters were failed over, it gets no new shards,
    /// and it becomes active again once it answers.
    Failed,
}

impl NodeState {
    /// True if the node may host a master: not down, not failed.
    pub fn is_up(self) -> bool {
        matches!(self, NodeState::Active | NodeState::Maintenance)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Active => "active",
            NodeState::Maintenance => "maintenance",
            NodeState::Down => "down",
            NodeState::Failed => "failed",
        })
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id (`--node-id`), also its Raft id.
    pub uid: u64,
    /// Where the node serves the cluster (Raft) RPCs, `host:port`.
    pub addr: String,
    /// Where the node serves the admin REST API, `host:port`.
    pub admin_addr: String,
    /// Rack or zone label; copies of a shard go to different racks.
    pub rack_id: Option<String>,
    /// Placement state.
    pub status: NodeState,
    /// Where the node serves the WAN sync service (`host:port`) that peer
    /// regions of its active-active databases dial; absent on records
    /// written before the node had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_addr: Option<String>,
}

/// Most instances (regions) of one active-active database.
pub const CRDB_INSTANCES_MAX: usize = 16;

/// One region's instance of an active-active database, as its peers know it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdbPeer {
    /// The region's id in this active-active database (also the replica id
    /// of its writes).
    pub region_id: u16,
    /// The admin API of the region's cluster (`http://host:port`).
    pub admin_url: String,
    /// Where the region serves this database's WAN sync (`host:port`), once
    /// known: the node holding the master of its first shard.
    #[serde(default)]
    pub sync_endpoint: Option<String>,
    /// The region's instance's shard count (D102).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub shards: u16,
    /// With several shards: where each shard's master serves WAN sync, by
    /// shard index (the first is `sync_endpoint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_endpoints: Vec<Option<String>>,
}

impl CrdbPeer {
    /// A region's instance of `shards` shards whose endpoints are not known yet.
    pub fn new(region_id: u16, admin_url: String, shards: u16) -> CrdbPeer {
        CrdbPeer { region_id, admin_url, sync_endpoint: None, shards, shard_endpoints: Vec::new() }
    }

    /// Where shard `index` of the instance serves WAN sync, once known.
    pub fn endpoint(&self, index: u16) -> Option<&str> {
        match index {
            0 => self.sync_endpoint.as_deref(),
            _ => self.shard_endpoints.get(usize::from(index)).and_then(|e| e.as_deref()),
        }
    }

    /// Records where each shard serves WAN sync (by shard index).
    pub fn set_endpoints(&mut self, endpoints: Vec<Option<String>>) {
        self.sync_endpoint = endpoints.first().cloned().flatten();
        self.shard_endpoints = if endpoints.len() > 1 { endpoints } else { Vec::new() };
    }

    /// Every shard's endpoint, by shard index.
    pub fn endpoints(&self) -> Vec<Option<String>> {
        (0..self.shards.max(1)).map(|i| self.endpoint(i).map(str::to_string)).collect()
    }
}

fn one() -> u16 {
    1
}

fn is_one(n: &u16) -> bool {
    *n == 1
}

/// What makes a database one region's instance of an active-active
/// database ("crdb").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrdbInstance {
    /// The active-active database's id, the same in every region.
    pub guid: String,
    /// This region's id in it.
    pub region_id: u16,
    /// Every instance, this one included, in region id order.
    pub instances: Vec<CrdbPeer>,
    /// Region ids of instances removed from it: never given again, since
    /// their writes' dots stay in every region's causal context.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<u16>,
    /// The granules its slots are cut into (D102): 1, or a power of two up
    /// to 64 when instances may have several shards (at most this many).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub granules: u16,
}

/// Checks a crdb's layout: `granules` a power of two up to 64, and every
/// instance's shard count in `shards` from 1 to the granules. Returns the
/// cut.
pub fn check_layout(
    granules: u16,
    shards: impl IntoIterator<Item = u16>,
) -> Result<meridian_crdt::slot::Granules, String> {
    let cut = meridian_crdt::slot::Granules::new(granules).map_err(|e| format!("crdb {e}"))?;
    if let Some(bad) = shards.into_iter().find(|&n| n == 0 || n > cut.count()) {
        return Err(format!("an instance of {bad} shards does not fit {granules} granules: 1 to {granules} shards"));
    }
    Ok(cut)
}

impl CrdbInstance {
    /// How its slots are cut (checked when the instance was written).
    pub fn cut(&self) -> meridian_crdt::slot::Granules {
        meridian_crdt::slot::Granules::new(self.granules).unwrap_or_default()
    }

    /// This region's instance as its peers know it.
    pub fn own(&self) -> Option<&CrdbPeer> {
        self.instances.iter().find(|peer| peer.region_id == self.region_id)
    }

    /// The other regions' instances.
    pub fn peers(&self) -> impl Iterator<Item = &CrdbPeer> {
        self.instances.iter().filter(|peer| peer.region_id != self.region_id)
    }
}

/// Master or replica copy of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardRole {
    /// Accepts writes for its slots.
    Master,
    /// Follows the master of the same slots.
    Replica,
}

impl fmt::Display for ShardRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShardRole::Master => "master",
            ShardRole::Replica => "replica",
        })
    }
}

/// An inclusive range of hash slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
}

impl fmt::Display for SlotRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One copy (master or replica) of one shard of a database.
///
/// A shard's copies share `bdb_uid` and `assigned_slots`; exactly one is the
/// master. `epoch` grows by one at every failover of the shard, on every copy,
/// so a replication stream or a client redirect can tell an old master from
/// the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard copy id, unique in the cluster.
    pub uid: u64,
    /// The database it belongs to.
    pub bdb_uid: u64,
    /// The slots this shard owns.
    pub assigned_slots: Vec<SlotRange>,
    /// Master or replica.
    pub role: ShardRole,
    /// The node hosting this copy.
    pub node_uid: u64,
    /// Failover generation of the shard.
    pub epoch: u64,
}

/// A database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bdb {
    /// Database id.
    pub uid: u64,
    /// Unique name.
    pub name: String,
    /// Client endpoint port, unique in the cluster.
    pub port: u16,
    /// Number of master shards (slot ranges).
    pub shards_count: u16,
    /// Whether every master shard has a replica on another node.
    pub replication: bool,
    /// Password of the default user, if any.
    pub password: Option<String>,
    /// OSS Cluster API mode: clients see the shards (MOVED/ASK) instead of
    /// one proxied endpoint.
    pub oss_cluster: bool,
    /// The database's shard copies, in slot order, master before replica.
    pub shard_list: Vec<u64>,
    /// Set when the database is this region's instance of an active-active
    /// database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crdb: Option<CrdbInstance>,
}

/// The whole replicated configuration of one region's cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// Region this cluster serves.
    pub region: String,
    /// Members, by id.
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Databases, by uid.
    pub bdbs: BTreeMap<u64, Bdb>,
    /// Shard copies, by uid.
    pub shards: BTreeMap<u64, ShardInfo>,
    /// The uid the next database gets (uids are never reused).
    pub next_bdb_uid: u64,
    /// The uid the next shard copy gets (uids are never reused).
    pub next_shard_uid: u64,
}

impl ClusterConfig {
    /// How many shard copies each node hosts (nodes without any included).
    pub fn load(&self) -> BTreeMap<u64, usize> {
        let mut load: BTreeMap<u64, usize> = self.nodes.keys().map(|&id| (id, 0)).collect();
        for shard in self.shards.values() {
            *load.entry(shard.node_uid).or_insert(0) += 1;
        }
        load
    }

    /// Where the replica copies on node `uid` would move (replica high
    /// availability): for each, an active node holding no copy of the same
    /// shard — on a rack none of the shard's other copies uses where there
    /// is one, then the least loaded, then the lowest id. Copies with no
    /// such node stay.
    pub fn replica_moves(&self, uid: u64) -> Vec<(u64, u64)> {
        let load = self.load();
        let mut moves = Vec::new();
        for copy in self.shards.values().filter(|s| s.node_uid == uid && s.role == ShardRole::Replica) {
            let group = self.shard_group(copy.uid);
            let holders: Vec<u64> = group.iter().map(|s| s.node_uid).collect();
            let racks: Vec<&Option<String>> = group
                .iter()
                .filter(|s| s.uid != copy.uid)
                .filter_map(|s| self.nodes.get(&s.node_uid).map(|n| &n.rack_id))
                .collect();
            let target =
                self.nodes.values().filter(|n| n.status == NodeState::Active && !holders.contains(&n.uid)).min_by_key(
                    |n| {
                        let shared_rack = n.rack_id.is_some() && racks.contains(&&n.rack_id);
                        (shared_rack, load.get(&n.uid).copied().unwrap_or(0), n.uid)
                    },
                );
            if let Some(target) = target {
                moves.push((copy.uid, target.uid));
            }
        }
        moves
    }

    /// The copies of the shard that `shard_uid` is one copy of (same database,
    /// same slots), master first.
    pub fn shard_group(&self, shard_uid: u64) -> Vec<&ShardInfo> {
        let Some(shard) = self.shards.get(&shard_uid) else { return Vec::new() };
        let mut group: Vec<&ShardInfo> = self
            .shards
            .values()
            .filter(|s| s.bdb_uid == shard.bdb_uid && s.assigned_slots == shard.assigned_slots)
            .collect();
        group.sort_by_key(|s| (s.role != ShardRole::Master, s.uid));
        group
    }

    /// Checks every relationship the commands maintain; `Err` names the first
    /// broken one. Used by tests and, in debug builds, after every command.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.len() > NODES_MAX {
            return Err(format!("{} nodes, at most {NODES_MAX}", self.nodes.len()));
        }
        if self.bdbs.len() > BDBS_MAX {
            return Err(format!("{} databases, at most {BDBS_MAX}", self.bdbs.len()));
        }
        for (&id, node) in &self.nodes {
            if id != node.uid {
                return Err(format!("node keyed {id} says uid {}", node.uid));
            }
        }
        let mut ports = BTreeMap::new();
        let mut names = BTreeMap::new();
        for (&uid, bdb) in &self.bdbs {
            if uid != bdb.uid || uid >= self.next_bdb_uid {
                return Err(format!("bdb keyed {uid}: uid {} (next {})", bdb.uid, self.next_bdb_uid));
            }
            if let Some(other) = ports.insert(bdb.port, uid) {
                return Err(format!("bdbs {other} and {uid} share port {}", bdb.port));
            }
            if let Some(other) = names.insert(bdb.name.as_str(), uid) {
                return Err(format!("bdbs {other} and {uid} share name {:?}", bdb.name));
            }
            // Every slot is owned by exactly one master of the database.
            let mut owned = vec![0u8; usize::from(SLOT_COUNT)];
            let copies = if bdb.replication { 2 } else { 1 };
            if bdb.shard_list.len() != usize::from(bdb.shards_count) * copies {
                return Err(format!(
                    "bdb {uid}: {} shard copies for {} shards",
                    bdb.shard_list.len(),
                    bdb.shards_count
                ));
            }
            for shard_uid in &bdb.shard_list {
                let Some(shard) = self.shards.get(shard_uid) else {
                    return Err(format!("bdb {uid} lists missing shard {shard_uid}"));
                };
                if shard.bdb_uid != uid {
                    return Err(format!("shard {shard_uid} listed by bdb {uid} belongs to {}", shard.bdb_uid));
                }
                let group = self.shard_group(*shard_uid);
                if group.iter().filter(|s| s.role == ShardRole::Master).count() != 1 {
                    return Err(format!("shard {shard_uid} of bdb {uid} has no single master"));
                }
                let mut hosts: Vec<u64> = group.iter().map(|s| s.node_uid).collect();
                hosts.sort_unstable();
                hosts.dedup();
                if hosts.len() != group.len() {
                    return Err(format!("copies of shard {shard_uid} share a node"));
                }
                if group.iter().any(|s| s.epoch != shard.epoch) {
                    return Err(format!("copies of shard {shard_uid} disagree on the epoch"));
                }
                if shard.role == ShardRole::Master {
                    for range in &shard.assigned_slots {
                        if range.start > range.end || range.end >= SLOT_COUNT {
                            return Err(format!("shard {shard_uid}: bad slot range {range}"));
                        }
                        for slot in range.start..=range.end {
                            owned[usize::from(slot)] += 1;
                        }
                    }
                }
            }
            if let Some(slot) = owned.iter().position(|&n| n != 1) {
                return Err(format!("bdb {uid}: slot {slot} has {} masters", owned[slot]));
            }
        }
        for (&uid, shard) in &self.shards {
            if uid != shard.uid || uid >= self.next_shard_uid {
                return Err(format!("shard keyed {uid}: uid {} (next {})", shard.uid, self.next_shard_uid));
            }
            if !self.bdbs.get(&shard.bdb_uid).is_some_and(|b| b.shard_list.contains(&uid)) {
                return Err(format!("shard {uid} is not listed by bdb {}", shard.bdb_uid));
            }
            if !self.nodes.contains_key(&shard.node_uid) {
                return Err(format!("shard {uid} is on unknown node {}", shard.node_uid));
            }
        }
        Ok(())
    }
}
