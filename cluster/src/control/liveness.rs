//! Failure detection and write leases.
//!
//! The Raft leader probes every other member with a `Ping` every
//! [`Liveness::interval`]. A member that has not answered for the failover
//! timeout is declared failed (`Command::NodeFailed`), which fails its master
//! shards over to their replicas; a failed member that answers again is
//! declared active.
//!
//! A master shard whose database has replicas accepts writes only while its
//! node holds a **write lease**, so that an isolated old master stops taking
//! writes before the cluster can promote its replica (a write it took after
//! the promotion would otherwise be lost silently when it rejoins as a
//! replica). A member gets the lease from the leader's probe — only if it
//! knows no newer term than the leader's and has applied the configuration
//! the leader had — and keeps it for [`Liveness::lease`] counted from its
//! own clock reading in its previous answer, which the leader echoes back
//! only if that answer returned within the lease (and never past the
//! leader's last quorum contact plus the lease). Counting from the member's
//! own earlier reading, not from the probe's arrival, is what makes a probe
//! that waited in a socket buffer while the member was stopped useless for
//! extending the lease. The leader holds the lease while a quorum of voters
//! (itself included) followed its probes within the lease.
//!
//! Why the lease ends before the failover: a member is declared failed only
//! after it missed the probes for the whole failover timeout, and a new
//! leader (after an election) waits that long from the moment it leads; the
//! lease is half the timeout. This assumes a probe is not delayed in the
//! network by more than the other half — the usual bound of lease schemes,
//! and on loopback or a LAN a wide margin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1::{PingReply, PingRequest};
use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ControlPlane;
use crate::config::{ClusterConfig, Command, NodeState, ShardRole};
use crate::raft::{NodeId, RpcClient};

/// Failover timeout unless configured (`failover_timeout_ms`).
pub const FAILOVER_TIMEOUT_MS_DEFAULT: u64 = 600;
/// The shortest failover timeout accepted.
pub const FAILOVER_TIMEOUT_MS_MIN: u64 = 100;
/// How long a failed node's replica copies wait for it before they are
/// re-created elsewhere, unless configured (`replica_ha_grace_ms`): long
/// enough for a restart, since each move costs the new replica a full sync.
pub const REPLICA_HA_GRACE_MS_DEFAULT: u64 = 60_000;

/// This node's lease and the timing of detection.
pub struct Liveness {
    /// Process-local time origin of the lease deadline.
    pub(super) origin: Instant,
    /// The lease's end, in milliseconds since `origin` (0: none).
    lease_until_ms: AtomicU64,
    timeout: Duration,
    /// How long a failed node's replicas wait before they move.
    replica_grace: Duration,
    /// A random id of this process, echoed back by the leader.
    incarnation: u64,
}

impl Liveness {
    /// Timing derived from the failover timeout: lease half of it, probes
    /// every tenth.
    pub fn new(failover_timeout_ms: u64, replica_ha_grace_ms: u64) -> Liveness {
        Liveness {
            origin: Instant::now(),
            lease_until_ms: AtomicU64::new(0),
            timeout: Duration::from_millis(failover_timeout_ms.max(FAILOVER_TIMEOUT_MS_MIN)),
            replica_grace: Duration::from_millis(replica_ha_grace_ms),
            incarnation: {
                use std::hash::{BuildHasher, Hasher};
                // Randomly keyed by the standard library: differs per process.
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u32(std::process::id());
                hasher.finish() | 1
            },
        }
    }

    /// How long a member may miss probes before it is declared failed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long a lease lasts from the leader's last quorum contact.
    pub fn lease(&self) -> Duration {
        self.timeout / 2
    }

    /// How often the leader probes.
    pub fn interval(&self) -> Duration {
        (self.timeout / 10).max(Duration::from_millis(10))
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Extends the lease to `until` (never shortens it).
    fn extend(&self, until: Instant) {
        self.lease_until_ms.fetch_max(self.millis(until).max(1), Ordering::AcqRel);
    }

    /// When the write lease ends (in the past if there is none).
    pub fn lease_until(&self) -> Instant {
        self.origin + Duration::from_millis(self.lease_until_ms.load(Ordering::Acquire))
    }

    /// True while this node holds the write lease.
    pub fn lease_valid(&self) -> bool {
        self.millis(Instant::now()) < self.lease_until_ms.load(Ordering::Acquire)
    }
}

impl ControlPlane {
    /// True while this node holds the write lease (see the module docs).
    pub fn write_lease_valid(&self) -> bool {
        self.shared.liveness.lease_valid()
    }

    /// When this node's write lease ends.
    pub fn write_lease_until(&self) -> std::time::Instant {
        self.shared.liveness.lease_until().into_std()
    }

    /// The failover timeout this node runs with.
    pub fn failover_timeout(&self) -> Duration {
        self.shared.liveness.timeout()
    }

    /// Answers the leader's probe (the `Ping` RPC).
    pub(super) fn answer_ping(&self, request: &PingRequest) -> PingReply {
        let liveness = &self.shared.liveness;
        let metrics = self.shared.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let quorum_age = Duration::from_millis(request.quorum_age_ms);
        let follows = request.term >= metrics.current_term && request.leader_id != self.shared.node_id;
        let now = Instant::now();
        let now_us = now.saturating_duration_since(liveness.origin).as_micros() as u64;
        // The lease counts from this member's own reply that the leader saw
        // come back in time (never from when this probe arrived: it may have
        // waited in a buffer while this process was stopped).
        let echoed = (request.echo_incarnation == liveness.incarnation && request.echo_us <= now_us)
            .then(|| liveness.origin + Duration::from_micros(request.echo_us));
        let granted = follows && applied >= request.applied_index && quorum_age < liveness.lease() && echoed.is_some();
        if let Some(echoed) = echoed
            && granted
        {
            liveness.extend((echoed + liveness.lease()).min(now + (liveness.lease() - quorum_age)));
        }
        PingReply {
            node_id: self.shared.node_id,
            granted,
            follows,
            member_time_us: now_us,
            incarnation: liveness.incarnation,
            unsynced_replicas: self.unsynced_replicas(),
        }
    }
}

/// What the leader learnt from the probes to one member.
#[derive(Default, Clone, Copy)]
struct Probe {
    /// When the last probe that got an answer was sent.
    answered: Option<Instant>,
    /// When the last probe the member followed (knew no newer term) was
    /// sent.
    followed: Option<Instant>,
    /// A probe is on its way.
    in_flight: bool,
    /// When this leader first probed the member (a member that just joined
    /// is silent from then, not from when this node began to lead).
    first: Option<Instant>,
    /// The member's clock reading (and process) from its last answer that
    /// came back within the lease: echoed in the next probe.
    echo: (u64, u64),
}

/// The replica copies a failover must not promote: `own` (the leader's),
/// each other member's last report, and every replica copy of a member with
/// no current report (a probe to it failed since, or it never answered
/// this leader).
fn unsynced_copies(
    config: &ClusterConfig,
    me: NodeId,
    own: Vec<u64>,
    reports: &HashMap<NodeId, Option<Vec<u64>>>,
) -> Vec<u64> {
    let mut unsynced = own;
    for node in config.nodes.values().filter(|n| n.uid != me) {
        match reports.get(&node.uid) {
            Some(Some(copies)) => unsynced.extend(copies),
            _ => unsynced.extend(
                config
                    .shards
                    .values()
                    .filter(|s| s.node_uid == node.uid && s.role == ShardRole::Replica)
                    .map(|s| s.uid),
            ),
        }
    }
    unsynced.sort_unstable();
    unsynced.dedup();
    unsynced
}

/// Runs failure detection and the leader's lease until `shutdown`: every
/// member runs it; it acts only while the member leads.
pub async fn run(control: ControlPlane, mut shutdown: watch::Receiver<bool>) {
    let liveness = &control.shared.liveness;
    let me = control.shared.node_id;
    let mut tick = tokio::time::interval(liveness.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probes: Arc<Mutex<HashMap<NodeId, Probe>>> = Default::default();
    // Each member's last word on its replica copies that never synced;
    // `None` once a probe to it failed since (it may have restarted: its
    // copies may be empty now).
    let reports: Arc<Mutex<HashMap<NodeId, Option<Vec<u64>>>>> = Default::default();
    let mut clients: HashMap<NodeId, (String, RpcClient)> = HashMap::new();
    let mut leading_since: Option<(u64, Instant)> = None;
    let mut pending: HashMap<NodeId, Instant> = HashMap::new();
    // The leader before this node led: an election is evidence that it went
    // silent, so it gets a shorter wait (see below).
    let mut previous_leader: Option<NodeId> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|&stopped| stopped) => return,
        }
        let metrics = control.shared.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            if let Some(leader) = metrics.current_leader.filter(|&l| l != me) {
                previous_leader = Some(leader);
            }
            leading_since = None;
            probes.lock().unwrap_or_else(|p| p.into_inner()).clear();
            reports.lock().unwrap_or_else(|p| p.into_inner()).clear();
            continue;
        }
        let now = Instant::now();
        let term = metrics.current_term;
        if leading_since.is_none_or(|(t, _)| t != term) {
            leading_since = Some((term, now));
            probes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        let since = leading_since.map(|(_, at)| at).unwrap_or(now);
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let config = control.config();

        // The leader's own lease: the quorum-th most recent probe followed
        // among the voters (itself now).
        let quorum_at = {
            let probes = probes.lock().unwrap_or_else(|p| p.into_inner());
            let mut grants: Vec<Option<Instant>> = voters
                .iter()
                .map(|id| if *id == me { Some(now) } else { probes.get(id).and_then(|p| p.followed) })
                .collect();
            grants.sort_by(|a, b| b.cmp(a));
            let quorum = voters.len() / 2 + 1;
            grants.get(quorum - 1).copied().flatten()
        };
        if let Some(at) = quorum_at {
            liveness.extend(at + liveness.lease());
        }
        let quorum_age = quorum_at.map_or(u64::MAX, |at| now.saturating_duration_since(at).as_millis() as u64);
        let request = PingRequest {
            leader_id: me,
            term,
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            quorum_age_ms: quorum_age,
            echo_us: 0,
            echo_incarnation: 0,
        };

        for node in config.nodes.values().filter(|n| n.uid != me) {
            let client = match clients.get(&node.uid) {
                Some((addr, client)) if *addr == node.addr => client.clone(),
                _ => match RpcClient::new(&node.addr) {
                    Ok(client) => {
                        clients.insert(node.uid, (node.addr.clone(), client.clone()));
                        client
                    }
                    Err(error) => {
                        tracing::warn!(node = node.uid, addr = %node.addr, %error, "cannot probe node");
                        continue;
                    }
                },
            };
            let probe = {
                let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
                let probe = probes.entry(node.uid).or_insert_with(|| Probe { first: Some(now), ..Probe::default() });
                let send = !probe.in_flight;
                probe.in_flight = true;
                (send, *probe)
            };
            if probe.0 {
                let (probes, reports) = (probes.clone(), reports.clone());
                let (uid, deadline, lease) = (node.uid, liveness.timeout(), liveness.lease());
                let request = PingRequest { echo_us: probe.1.echo.0, echo_incarnation: probe.1.echo.1, ..request };
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let reply = client.ping(request, deadline).await;
                    let report = reply.as_ref().ok().map(|reply| reply.unsynced_replicas.clone());
                    reports.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, report);
                    let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
                    let probe = probes.entry(uid).or_default();
                    probe.in_flight = false;
                    if let Ok(reply) = reply {
                        // Only an answer that came back within the lease may
                        // start one: it was given less than a lease after
                        // `sent`, so a lease counted from it ends before the
                        // member can be declared failed (timeout after `sent`).
                        if sent.elapsed() < lease {
                            probe.echo = (reply.member_time_us, reply.incarnation);
                        }
                        probe.answered = Some(probe.answered.map_or(sent, |a| a.max(sent)));
                        if reply.follows {
                            probe.followed = Some(probe.followed.map_or(sent, |f| f.max(sent)));
                        }
                    }
                });
            }
            let last = probe.1.answered.or(probe.1.first).map_or(since, |a| a.max(since));
            let silent = now.saturating_duration_since(last);
            // The previous leader, silent since this node was elected: a
            // voter grants a vote only once the old leader was silent to it
            // for the election timeout's maximum (openraft's leader lease,
            // five twelfths of the failover timeout), and a quorum granted
            // this node's, so the old leader can have had no quorum contact
            // for about that long — its write lease (half the timeout) has
            // ended or ends within a twelfth. Three probe intervals (three
            // tenths) cover that and give a live old leader time to answer,
            // rather than a whole timeout after an election that already
            // took one. (This leans on the probes travelling as the Raft
            // messages do: the same service, address and port.)
            let limit = if previous_leader == Some(node.uid) && probe.1.answered.is_none() {
                liveness.interval() * 3
            } else {
                liveness.timeout()
            };
            let command = if node.status.is_up() && silent > limit {
                tracing::warn!(
                    node = node.uid,
                    silent_ms = silent.as_millis() as u64,
                    "node stopped answering: declaring it failed and failing over its masters"
                );
                // Replicas that never synced are not promoted (an empty
                // copy would replace the data): this node's own, what every
                // other member last said of its copies, and every copy of a
                // member whose word is not known to be current.
                let reports = reports.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let unsynced = unsynced_copies(&config, me, control.unsynced_replicas(), &reports);
                Some(Command::NodeFailed { uid: node.uid, unsynced })
            } else if node.status == NodeState::Failed && probe.1.answered.is_some() && silent < liveness.interval() * 3
            {
                // Only an answer counts: a leader that just took over has
                // heard from nobody yet (`since` is not an answer).
                tracing::info!(node = node.uid, "failed node answers again: declaring it active");
                Some(Command::NodeRecovered { uid: node.uid })
            } else if node.status == NodeState::Failed
                && silent > liveness.timeout + liveness.replica_grace
                && !config.replica_moves(node.uid).is_empty()
            {
                tracing::warn!(
                    node = node.uid,
                    silent_ms = silent.as_millis() as u64,
                    "failed node stayed away past the replica grace period: re-creating its replicas on other nodes"
                );
                Some(Command::ReplaceReplicas { uid: node.uid })
            } else {
                None
            };
            // One such write per node at a time, retried after a timeout.
            if let Some(command) = command
                && pending.get(&node.uid).is_none_or(|at| at.elapsed() > liveness.timeout())
            {
                pending.insert(node.uid, Instant::now());
                let control = control.clone();
                tokio::spawn(async move {
                    if let Err(error) = control.write(command).await {
                        tracing::warn!(%error, "failure detection could not write its finding");
                    }
                });
            }
        }
        pending.retain(|_, at| at.elapsed() <= liveness.timeout());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Applied, BdbSpec, NodeInfo};

    #[test]
    fn copies_of_members_with_no_current_word_count_as_unsynced() {
        let mut config = ClusterConfig::default();
        config.apply(&Command::InitCluster { name: "c1".into(), region: "eu".into() }).unwrap();
        for uid in 1..=3 {
            let node = NodeInfo {
                uid,
                addr: format!("127.0.0.1:{}", 9000 + uid),
                admin_addr: format!("127.0.0.1:{}", 9500 + uid),
                rack_id: None,
                status: NodeState::Active,
                sync_addr: None,
            };
            config.apply(&Command::AddNode(node)).unwrap();
        }
        let spec = BdbSpec {
            name: "db".into(),
            port: 12000,
            shards_count: 3,
            replication: true,
            password: None,
            oss_cluster: false,
            crdb: None,
        };
        let Applied::BdbCreated { .. } = config.apply(&Command::CreateBdb(spec)).unwrap() else { panic!("created") };
        let replicas_on = |node: u64| -> Vec<u64> {
            config
                .shards
                .values()
                .filter(|s| s.node_uid == node && s.role == ShardRole::Replica)
                .map(|s| s.uid)
                .collect()
        };
        let (on2, on3) = (replicas_on(2), replicas_on(3));
        assert!(!on2.is_empty() && !on3.is_empty());
        // Node 2 answered with nothing unsynced, node 3 with one copy; the
        // leader (node 1) has one of its own.
        let reports = HashMap::from([(2, Some(vec![])), (3, Some(vec![on3[0]]))]);
        assert_eq!(unsynced_copies(&config, 1, vec![77], &reports), vec![on3[0], 77]);
        // A probe to node 2 failed since (it may have restarted), node 3
        // never answered this leader: every replica copy on them.
        let reports = HashMap::from([(2, None)]);
        let mut all: Vec<u64> = on2.iter().chain(&on3).copied().collect();
        all.sort_unstable();
        assert_eq!(unsynced_copies(&config, 1, vec![], &reports), all);
    }
}
