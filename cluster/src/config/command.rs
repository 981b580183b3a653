//! The commands that change the cluster configuration, and their
//! deterministic application.
//!
//! [`ClusterConfig::apply`] is a pure function of the configuration and the
//! command: no clock, no randomness, no I/O. Raft applies the same commands in
//! the same order on every member, so every member computes the same
//! configuration — including where a new database's shards go, which is why
//! placement ([`crate::placement`]) is deterministic too. A command that is
//! invalid for the current configuration changes nothing and returns a
//! [`CommandError`]; that outcome is itself deterministic, so it is safe to
//! keep in the log.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::model::{
    BDB_NAME_BYTES_MAX, BDBS_MAX, Bdb, CRDB_INSTANCES_MAX, ClusterConfig, CrdbInstance, LABEL_BYTES_MAX, NODES_MAX,
    NodeInfo, NodeState, PASSWORD_BYTES_MAX, ShardInfo, ShardRole, SlotRange, check_layout,
};
use crate::placement::{self, Candidate, PlacementError};
use meridian_replication::slot::{REGION_MAX_GRANULAR, SLOT_COUNT, split_slots};

/// What a new database should look like (the body of `POST /v1/bdbs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdbSpec {
    /// Unique name: letters, digits, `-` and `_`.
    pub name: String,
    /// Client endpoint port, unique in the cluster.
    pub port: u16,
    /// Number of master shards, 1 to 16384 (one slot each at most).
    #[serde(default = "one")]
    pub shards_count: u16,
    /// A replica for every master shard, on another node.
    #[serde(default)]
    pub replication: bool,
    /// Password of the default user.
    #[serde(default)]
    pub password: Option<String>,
    /// OSS Cluster API mode.
    #[serde(default)]
    pub oss_cluster: bool,
    /// Makes the database this region's instance of an active-active
    /// database (set by the crdb API, not by `POST /v1/bdbs` users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crdb: Option<CrdbInstance>,
}

fn one() -> u16 {
    1
}

/// Changes to a database (the body of `PUT /v1/bdbs/{uid}`); absent fields
/// stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdbUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New port.
    #[serde(default)]
    pub port: Option<u16>,
    /// New password; the empty string removes it.
    #[serde(default)]
    pub password: Option<String>,
    /// OSS Cluster API mode on or off.
    #[serde(default)]
    pub oss_cluster: Option<bool>,
    /// Changing the shard count is resharding (not yet supported).
    #[serde(default)]
    pub shards_count: Option<u16>,
    /// Turning replication on or off (not yet supported).
    #[serde(default)]
    pub replication: Option<bool>,
    /// New instance list of an active-active database's instance (same
    /// guid and region id; the crdb API fills in peers' sync endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crdb: Option<CrdbInstance>,
}

/// A change to the cluster configuration, as carried in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Names the cluster; applied once, when the first node initialises it.
    InitCluster {
        /// Cluster name.
        name: String,
        /// Region the cluster serves.
        region: String,
    },
    /// Adds a node, or updates the addresses of a node rejoining with the same id.
    AddNode(NodeInfo),
    /// Removes a node that hosts no shard.
    RemoveNode {
        /// Node id.
        uid: u64,
    },
    /// Creates a database and places its shards.
    CreateBdb(BdbSpec),
    /// Changes a database.
    UpdateBdb {
        /// Database uid.
        uid: u64,
        /// The changes.
        update: BdbUpdate,
    },
    /// Deletes a database and its shards.
    DeleteBdb {
        /// Database uid.
        uid: u64,
    },
    /// Makes a replica of the shard its master (the given copy if it is a
    /// replica, else the shard's first replica) and bumps the shard's epoch.
    Failover {
        /// Any copy of the shard.
        shard: u64,
    },
    /// Failure detection found the node dead: marks it failed and fails
    /// over every master shard on it that has a replica on a node that is up
    /// and not listed in `unsynced`.
    NodeFailed {
        /// Node id.
        uid: u64,
        /// Replica copies (shard uids) their nodes last reported as never
        /// synced: not promoted (an empty copy would replace the data).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unsynced: Vec<u64>,
    },
    /// A failed node answers again: marks it active (a node in another state
    /// is left as it is).
    NodeRecovered {
        /// Node id.
        uid: u64,
    },
    /// Replica high availability: moves every replica copy on a node that
    /// stayed failed past the grace period to another active node (a full
    /// sync follows), so its shards have a replica again.
    ReplaceReplicas {
        /// The failed node.
        uid: u64,
    },
    /// Sets a node's placement state.
    SetNodeState {
        /// Node id.
        uid: u64,
        /// New state.
        status: NodeState,
    },
}

/// What a command did, when it succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Done; nothing to report.
    Done,
    /// A database was created with this uid.
    BdbCreated {
        /// The new database's uid.
        uid: u64,
    },
    /// A shard failed over.
    FailedOver {
        /// The copy that is master now.
        master: u64,
        /// The node hosting it.
        node_uid: u64,
        /// The shard's new epoch.
        epoch: u64,
    },
}

/// Why a command was refused. Deterministic: every member refuses the same
/// command the same way.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandError {
    /// The input is malformed or out of range.
    #[error("{0}")]
    Invalid(String),
    /// An id names nothing.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the configuration (duplicate name or port,
    /// a node that still hosts shards, no room to place shards).
    #[error("{0}")]
    Conflict(String),
}

impl ClusterConfig {
    /// Applies `command`: on success the configuration changed and the result
    /// says what was done; on error nothing changed.
    pub fn apply(&mut self, command: &Command) -> Result<Applied, CommandError> {
        let result = match command {
            Command::InitCluster { name, region } => self.init_cluster(name, region),
            Command::AddNode(node) => self.add_node(node),
            Command::RemoveNode { uid } => self.remove_node(*uid),
            Command::CreateBdb(spec) => self.create_bdb(spec),
            Command::UpdateBdb { uid, update } => self.update_bdb(*uid, update),
            Command::DeleteBdb { uid } => self.delete_bdb(*uid),
            Command::Failover { shard } => self.failover(*shard),
            Command::SetNodeState { uid, status } => self.set_node_state(*uid, *status),
            Command::NodeFailed { uid, unsynced } => self.node_failed(*uid, unsynced),
            Command::NodeRecovered { uid } => self.node_recovered(*uid),
            Command::ReplaceReplicas { uid } => self.replace_replicas(*uid),
        };
        // A broken invariant here would be replicated to every member: stop
        // in debug builds (tests), where it is a bug to find.
        debug_assert_eq!(self.validate(), Ok(()), "after {command:?}");
        result
    }

    fn init_cluster(&mut self, name: &str, region: &str) -> Result<Applied, CommandError> {
        check_label("cluster name", name)?;
        check_label("region", region)?;
        if !self.name.is_empty() {
            return Err(CommandError::Conflict(format!("the cluster is already named {:?}", self.name)));
        }
        self.name = name.to_string();
        self.region = region.to_string();
        Ok(Applied::Done)
    }

    fn add_node(&mut self, node: &NodeInfo) -> Result<Applied, CommandError> {
        if node.uid == 0 {
            return Err(CommandError::Invalid("node id 0 is reserved; use 1 or more".into()));
        }
        check_label("node address", &node.addr)?;
        check_label("node admin address", &node.admin_addr)?;
        if let Some(rack) = &node.rack_id {
            check_label("rack", rack)?;
        }
        if let Some(other) = self.nodes.values().find(|n| n.uid != node.uid && n.addr == node.addr) {
            return Err(CommandError::Conflict(format!("address {} is node {}'s", node.addr, other.uid)));
        }
        if !self.nodes.contains_key(&node.uid) && self.nodes.len() >= NODES_MAX {
            return Err(CommandError::Conflict(format!("the cluster has {NODES_MAX} nodes, the most it takes")));
        }
        // A node rejoining with the same id keeps its shards; only its
        // addresses and rack change.
        self.nodes.insert(node.uid, node.clone());
        Ok(Applied::Done)
    }

    fn remove_node(&mut self, uid: u64) -> Result<Applied, CommandError> {
        self.node(uid)?;
        let hosted: Vec<String> =
            self.shards.values().filter(|s| s.node_uid == uid).map(|s| s.uid.to_string()).collect();
        if !hosted.is_empty() {
            return Err(CommandError::Conflict(format!(
                "node {uid} still hosts shards {}; move or delete them first",
                hosted.join(", ")
            )));
        }
        self.nodes.remove(&uid);
        Ok(Applied::Done)
    }

    fn set_node_state(&mut self, uid: u64, status: NodeState) -> Result<Applied, CommandError> {
        self.node(uid)?;
        if let Some(node) = self.nodes.get_mut(&uid) {
            node.status = status;
        }
        Ok(Applied::Done)
    }

    fn node_failed(&mut self, uid: u64, unsynced: &[u64]) -> Result<Applied, CommandError> {
        self.node(uid)?;
        if let Some(node) = self.nodes.get_mut(&uid) {
            node.status = NodeState::Failed;
        }
        let masters: Vec<u64> =
            self.shards.values().filter(|s| s.node_uid == uid && s.role == ShardRole::Master).map(|s| s.uid).collect();
        for master in masters {
            // A shard without a synced replica that is up stays where it is
            // (its data comes back with its node).
            match self.failover_skipping(master, unsynced) {
                Ok(_) | Err(CommandError::Conflict(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(Applied::Done)
    }

    fn replace_replicas(&mut self, uid: u64) -> Result<Applied, CommandError> {
        self.node(uid)?;
        if self.nodes.get(&uid).is_some_and(|n| n.status != NodeState::Failed) {
            return Err(CommandError::Conflict(format!("node {uid} is not failed: its replicas stay")));
        }
        // One at a time: each move changes the load the next one sees.
        while let Some((copy, target)) = self.replica_moves(uid).into_iter().next() {
            if let Some(shard) = self.shards.get_mut(&copy) {
                shard.node_uid = target;
            }
        }
        Ok(Applied::Done)
    }

    fn node_recovered(&mut self, uid: u64) -> Result<Applied, CommandError> {
        self.node(uid)?;
        if let Some(node) = self.nodes.get_mut(&uid)
            && node.status == NodeState::Failed
        {
            node.status = NodeState::Active;
        }
        Ok(Applied::Done)
    }

    fn create_bdb(&mut self, spec: &BdbSpec) -> Result<Applied, CommandError> {
        check_bdb_name(&spec.name)?;
        check_port(spec.port)?;
        if let Some(password) = &spec.password {
            check_password(password)?;
        }
        if let Some(crdb) = &spec.crdb {
            check_crdb(crdb)?;
            let own = crdb.own().map_or(1, |peer| peer.shards);
            if spec.shards_count != own {
                return Err(CommandError::Invalid(format!(
                    "the instance list gives region {} {own} shards, not {}",
                    crdb.region_id, spec.shards_count
                )));
            }
            if let Some(other) = self.bdbs.values().find(|b| b.crdb.as_ref().is_some_and(|c| c.guid == crdb.guid)) {
                return Err(CommandError::Conflict(format!(
                    "database {} is already the instance of crdb {}",
                    other.uid, crdb.guid
                )));
            }
        }
        if spec.shards_count == 0 || spec.shards_count > SLOT_COUNT {
            return Err(CommandError::Invalid(format!(
                "shards_count must be 1 to {SLOT_COUNT} (one hash slot per shard at most), not {}",
                spec.shards_count
            )));
        }
        self.check_unique(None, Some(&spec.name), Some(spec.port))?;
        if self.bdbs.len() >= BDBS_MAX {
            return Err(CommandError::Conflict(format!("the cluster has {BDBS_MAX} databases, the most it takes")));
        }
        let candidates: Vec<Candidate> = self
            .nodes
            .values()
            .filter(|n| n.status == NodeState::Active)
            .map(|n| Candidate { node: n.uid, rack: n.rack_id.clone() })
            .collect();
        let load = self.load();
        let placements =
            placement::place(usize::from(spec.shards_count), usize::from(spec.replication), &candidates, &load)
                .map_err(|e| match e {
                    PlacementError::NotEnoughNodes { .. } => {
                        CommandError::Conflict(format!("cannot place the shards: {e}"))
                    }
                    PlacementError::NoShards => CommandError::Invalid(e.to_string()),
                })?;

        let uid = self.next_bdb_uid.max(1);
        self.next_bdb_uid = uid + 1;
        let mut shard_list = Vec::with_capacity(placements.len() * (1 + usize::from(spec.replication)));
        // An active-active instance's shards hold whole granules (D102).
        let ranges = match &spec.crdb {
            Some(crdb) => crdb
                .cut()
                .split(spec.shards_count)
                .map_err(CommandError::Invalid)?
                .into_iter()
                .map(|run| crdb.cut().slots(run))
                .collect(),
            None => split_slots(spec.shards_count),
        };
        for (range, placed) in ranges.into_iter().zip(placements) {
            let slots = vec![SlotRange { start: *range.start(), end: *range.end() }];
            let copies = std::iter::once((ShardRole::Master, placed.master))
                .chain(placed.replicas.into_iter().map(|node| (ShardRole::Replica, node)));
            for (role, node) in copies {
                let shard_uid = self.next_shard_uid.max(1);
                self.next_shard_uid = shard_uid + 1;
                self.shards.insert(
                    shard_uid,
                    ShardInfo {
                        uid: shard_uid,
                        bdb_uid: uid,
                        assigned_slots: slots.clone(),
                        role,
                        node_uid: node,
                        epoch: 1,
                    },
                );
                shard_list.push(shard_uid);
            }
        }
        self.bdbs.insert(
            uid,
            Bdb {
                uid,
                name: spec.name.clone(),
                port: spec.port,
                shards_count: spec.shards_count,
                replication: spec.replication,
                password: spec.password.clone().filter(|p| !p.is_empty()),
                oss_cluster: spec.oss_cluster,
                shard_list,
                crdb: spec.crdb.clone(),
            },
        );
        Ok(Applied::BdbCreated { uid })
    }

    fn update_bdb(&mut self, uid: u64, update: &BdbUpdate) -> Result<Applied, CommandError> {
        let bdb = self.bdb(uid)?;
        if update.shards_count.is_some_and(|n| n != bdb.shards_count) {
            return Err(CommandError::Invalid("changing shards_count (resharding) is not supported yet".into()));
        }
        if update.replication.is_some_and(|r| r != bdb.replication) {
            return Err(CommandError::Invalid("turning replication on or off is not supported yet".into()));
        }
        if let Some(name) = &update.name {
            check_bdb_name(name)?;
        }
        if let Some(port) = update.port {
            check_port(port)?;
        }
        if let Some(password) = &update.password {
            check_password(password)?;
        }
        if let Some(crdb) = &update.crdb {
            check_crdb(crdb)?;
            let same = bdb
                .crdb
                .as_ref()
                .is_some_and(|c| c.guid == crdb.guid && c.region_id == crdb.region_id && c.granules == crdb.granules);
            if !same || crdb.own().map_or(1, |peer| peer.shards) != bdb.shards_count {
                return Err(CommandError::Invalid(format!(
                    "database {uid} is not region {} of crdb {} with these granules and shards; only its instance list can change",
                    crdb.region_id, crdb.guid
                )));
            }
        }
        self.check_unique(Some(uid), update.name.as_deref(), update.port)?;
        let bdb = self.bdbs.get_mut(&uid).expect("checked above");
        if let Some(name) = &update.name {
            bdb.name = name.clone();
        }
        if let Some(port) = update.port {
            bdb.port = port;
        }
        if let Some(password) = &update.password {
            bdb.password = Some(password.clone()).filter(|p| !p.is_empty());
        }
        if let Some(oss_cluster) = update.oss_cluster {
            bdb.oss_cluster = oss_cluster;
        }
        if let Some(crdb) = &update.crdb {
            bdb.crdb = Some(crdb.clone());
        }
        Ok(Applied::Done)
    }

    fn delete_bdb(&mut self, uid: u64) -> Result<Applied, CommandError> {
        self.bdb(uid)?;
        let bdb = self.bdbs.remove(&uid).expect("checked above");
        for shard in bdb.shard_list {
            self.shards.remove(&shard);
        }
        Ok(Applied::Done)
    }

    fn failover(&mut self, shard_uid: u64) -> Result<Applied, CommandError> {
        self.failover_skipping(shard_uid, &[])
    }

    /// [`Self::failover`] choosing the new master among the replicas not in
    /// `unsynced`.
    fn failover_skipping(&mut self, shard_uid: u64, unsynced: &[u64]) -> Result<Applied, CommandError> {
        if !self.shards.contains_key(&shard_uid) {
            return Err(CommandError::NotFound(format!("no shard {shard_uid}")));
        }
        let group = self.shard_group(shard_uid);
        let master = group[0].uid;
        let up = |copy: &ShardInfo| self.nodes.get(&copy.node_uid).is_some_and(|n| n.status.is_up());
        let promoted = if shard_uid != master {
            let copy = &self.shards[&shard_uid];
            if !up(copy) {
                return Err(CommandError::Conflict(format!(
                    "shard {shard_uid} is on node {}, which is down or failed",
                    copy.node_uid
                )));
            }
            shard_uid
        } else if group.len() == 1 {
            return Err(CommandError::Conflict(format!(
                "shard {shard_uid} has no replica to fail over to (database {} has replication off)",
                group[0].bdb_uid
            )));
        } else {
            match group[1..].iter().find(|copy| up(copy) && !unsynced.contains(&copy.uid)) {
                Some(replica) => replica.uid,
                None => {
                    return Err(CommandError::Conflict(format!(
                        "shard {shard_uid} has no synced replica on a node that is up"
                    )));
                }
            }
        };
        let epoch = group.iter().map(|s| s.epoch).max().unwrap_or(0) + 1;
        let uids: Vec<u64> = group.iter().map(|s| s.uid).collect();
        for uid in uids {
            let shard = self.shards.get_mut(&uid).expect("group members exist");
            shard.epoch = epoch;
            shard.role = if uid == promoted {
                ShardRole::Master
            } else if uid == master {
                ShardRole::Replica
            } else {
                shard.role
            };
        }
        Ok(Applied::FailedOver { master: promoted, node_uid: self.shards[&promoted].node_uid, epoch })
    }

    fn node(&self, uid: u64) -> Result<&NodeInfo, CommandError> {
        self.nodes.get(&uid).ok_or_else(|| CommandError::NotFound(format!("no node {uid}")))
    }

    fn bdb(&self, uid: u64) -> Result<&Bdb, CommandError> {
        self.bdbs.get(&uid).ok_or_else(|| CommandError::NotFound(format!("no database {uid}")))
    }

    /// Refuses a name or port another database (not `except`) already has.
    fn check_unique(&self, except: Option<u64>, name: Option<&str>, port: Option<u16>) -> Result<(), CommandError> {
        for bdb in self.bdbs.values().filter(|b| Some(b.uid) != except) {
            if name == Some(bdb.name.as_str()) {
                return Err(CommandError::Conflict(format!("database {} is already named {:?}", bdb.uid, bdb.name)));
            }
            if port == Some(bdb.port) {
                return Err(CommandError::Conflict(format!("database {} already uses port {}", bdb.uid, bdb.port)));
            }
        }
        Ok(())
    }
}

fn check_label(what: &str, value: &str) -> Result<(), CommandError> {
    if value.is_empty() || value.len() > LABEL_BYTES_MAX {
        return Err(CommandError::Invalid(format!("{what} must be 1 to {LABEL_BYTES_MAX} bytes")));
    }
    Ok(())
}

fn check_bdb_name(name: &str) -> Result<(), CommandError> {
    let valid = !name.is_empty()
        && name.len() <= BDB_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(CommandError::Invalid(format!(
            "database name {name:?}: use 1 to {BDB_NAME_BYTES_MAX} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Checks an active-active instance: a guid, region ids 1 and up, each once,
/// this region's among them, every admin URL and endpoint a short label.
fn check_crdb(crdb: &CrdbInstance) -> Result<(), CommandError> {
    check_label("crdb guid", &crdb.guid)?;
    if crdb.instances.len() < 2 || crdb.instances.len() > CRDB_INSTANCES_MAX {
        return Err(CommandError::Invalid(format!(
            "an active-active database has 2 to {CRDB_INSTANCES_MAX} instances, not {}",
            crdb.instances.len()
        )));
    }
    let mut ids: Vec<u16> = crdb.instances.iter().map(|i| i.region_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != crdb.instances.len() || ids.first() == Some(&0) {
        return Err(CommandError::Invalid("crdb region ids must be 1 or more, each used once".into()));
    }
    if crdb.retired.iter().any(|id| ids.binary_search(id).is_ok()) {
        return Err(CommandError::Invalid("a retired crdb region id cannot name an instance".into()));
    }
    if !ids.contains(&crdb.region_id) {
        return Err(CommandError::Invalid(format!("region {} is not among the crdb's instances", crdb.region_id)));
    }
    let granules =
        check_layout(crdb.granules, crdb.instances.iter().map(|i| i.shards)).map_err(CommandError::Invalid)?;
    if granules.count() > 1 && ids.iter().chain(&crdb.retired).any(|&id| id > REGION_MAX_GRANULAR) {
        return Err(CommandError::Invalid(format!(
            "with more than one granule, crdb region ids stay below {}",
            REGION_MAX_GRANULAR + 1
        )));
    }
    for instance in &crdb.instances {
        check_label("crdb instance admin URL", &instance.admin_url)?;
        if instance.shard_endpoints.len() > usize::from(instance.shards) {
            return Err(CommandError::Invalid(format!("region {} lists too many endpoints", instance.region_id)));
        }
        for endpoint in instance.endpoints().iter().flatten() {
            check_label("crdb instance sync endpoint", endpoint)?;
        }
    }
    Ok(())
}

fn check_port(port: u16) -> Result<(), CommandError> {
    if port == 0 {
        return Err(CommandError::Invalid("port must be 1 to 65535".into()));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), CommandError> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(CommandError::Invalid(format!("password longer than {PASSWORD_BYTES_MAX} bytes")));
    }
    Ok(())
}
