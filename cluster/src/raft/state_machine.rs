//! The Raft state machine: the cluster configuration at the last applied log
//! entry, persisted after every applied batch.
//!
//! The configuration is small (kilobytes), so the state machine *is* its
//! snapshot: `state.json` in the data directory holds the configuration, the
//! last applied log id and the membership, written to a temporary file,
//! fsynced and renamed, so a crash leaves the old or the new state, never a
//! mix. A restarted node therefore resumes from its last applied entry and
//! replays only the log after it. Building a snapshot serializes the current
//! state; a snapshot taken later than openraft asked for is still a valid
//! snapshot, since every applied entry is committed.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::log_store::{sync_dir, write_synced};
use super::{Entry, NodeId, Origin, Outcome, Proposal, StorageError, TypeConfig};
use crate::config::{Applied, ClusterConfig};

/// What the state machine holds (and writes to `state.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// The last log entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    /// The cluster configuration.
    pub config: ClusterConfig,
    /// Recent proposal outcomes per proposing node, to answer retries.
    #[serde(default)]
    pub sessions: BTreeMap<NodeId, Session>,
}

/// Outcomes remembered per proposing node. A retry comes within seconds of
/// its first attempt, while at most a few other proposals of the same node
/// are in flight, so a short window covers it and bounds the state.
pub const SESSION_OUTCOMES_MAX: usize = 128;

/// One node's recent proposals and their outcomes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The proposer's process run these serials belong to.
    pub boot: u64,
    /// (serial, outcome), oldest first, at most [`SESSION_OUTCOMES_MAX`].
    pub outcomes: VecDeque<(u64, Outcome)>,
}

impl StoredState {
    /// Applies a proposal once: a repeat of a remembered one (same origin)
    /// gets the first outcome and changes nothing.
    pub fn apply_proposal(&mut self, proposal: &Proposal) -> Outcome {
        let Origin { node, boot, serial } = proposal.origin;
        let session = self.sessions.entry(node).or_default();
        if session.boot != boot {
            *session = Session { boot, outcomes: VecDeque::new() };
        }
        if let Some((_, outcome)) = session.outcomes.iter().find(|(s, _)| *s == serial) {
            return outcome.clone();
        }
        let outcome = self.config.apply(&proposal.command);
        let session = self.sessions.get_mut(&node).expect("created above");
        session.outcomes.push_back((serial, outcome.clone()));
        while session.outcomes.len() > SESSION_OUTCOMES_MAX {
            session.outcomes.pop_front();
        }
        outcome
    }
}

/// The state machine. Clones share one state; readers (the admin API) take
/// the read lock and clone what they show.
#[derive(Clone)]
pub struct StateMachineStore {
    state: Arc<RwLock<StoredState>>,
    path: Option<PathBuf>,
    snapshot_count: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachineStore {
    /// A state machine that lives in memory only.
    pub fn in_memory() -> StateMachineStore {
        StateMachineStore { state: Arc::default(), path: None, snapshot_count: Arc::default() }
    }

    /// Opens `state.json` in `dir`, or starts empty if there is none.
    pub fn open(dir: &Path) -> io::Result<StateMachineStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => StoredState::default(),
            Err(e) => return Err(e),
        };
        Ok(StateMachineStore { state: Arc::new(RwLock::new(state)), path: Some(path), snapshot_count: Arc::default() })
    }

    /// A copy of the current state.
    pub fn read(&self) -> StoredState {
        self.state.read().expect("a state machine writer panicked").clone()
    }

    /// Runs `f` on the current configuration under the read lock.
    pub fn with_config<T>(&self, f: impl FnOnce(&ClusterConfig) -> T) -> T {
        f(&self.state.read().expect("a state machine writer panicked").config)
    }

    /// Writes the current state to disk (no-op in memory).
    async fn persist(&self) -> io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let bytes = serde_json::to_vec(&self.read()).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let temporary = path.with_extension("tmp");
            write_synced(&temporary, &bytes)?;
            std::fs::rename(&temporary, &path)?;
            sync_dir(&path)
        })
        .await
        .map_err(io::Error::other)?
    }

    // openraft's own error type is large; it is the trait's, not ours to box.
    #[allow(clippy::result_large_err)]
    fn snapshot_of(&self, state: &StoredState) -> Result<Snapshot<TypeConfig>, StorageError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let count = self.snapshot_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let snapshot_id = match state.last_applied {
            Some(log_id) => format!("{}-{}-{count}", log_id.leader_id.term, log_id.index),
            None => format!("0-0-{count}"),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

fn write_error(e: io::Error) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.read();
        self.snapshot_of(&state)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let state = self.state.read().expect("a state machine writer panicked");
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        {
            let mut state = self.state.write().expect("a state machine writer panicked");
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Ok(Applied::Done),
                    EntryPayload::Normal(proposal) => {
                        let outcome = state.apply_proposal(&proposal);
                        if let Err(error) = &outcome {
                            tracing::debug!(?proposal, %error, "configuration command refused");
                        }
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        state.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Applied::Done)
                    }
                };
                outcomes.push(outcome);
            }
        }
        self.persist().await.map_err(write_error)?;
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let mut state: StoredState = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))
        })?;
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        *self.state.write().expect("a state machine writer panicked") = state;
        self.persist().await.map_err(write_error)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let state = self.read();
        if state.last_applied.is_none() {
            return Ok(None);
        }
        self.snapshot_of(&state).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Applied, BdbSpec, Command, NodeInfo, NodeState};

    fn proposal(boot: u64, serial: u64, command: Command) -> Proposal {
        Proposal { origin: Origin { node: 1, boot, serial }, command }
    }

    #[test]
    fn a_retried_proposal_applies_once_and_gets_the_first_outcome() {
        let mut state = StoredState::default();
        let node = NodeInfo {
            uid: 1,
            addr: "a:1".into(),
            admin_addr: "a:2".into(),
            rack_id: None,
            status: NodeState::Active,
            sync_addr: None,
        };
        state.apply_proposal(&proposal(7, 1, Command::AddNode(node))).unwrap();
        let create = Command::CreateBdb(BdbSpec {
            name: "db".into(),
            port: 1000,
            shards_count: 1,
            replication: false,
            password: None,
            oss_cluster: false,
            crdb: None,
        });
        let first = state.apply_proposal(&proposal(7, 2, create.clone()));
        assert_eq!(first, Ok(Applied::BdbCreated { uid: 1 }));
        // The retry is not refused as a duplicate name: it is the same request.
        assert_eq!(state.apply_proposal(&proposal(7, 2, create.clone())), first);
        assert_eq!(state.config.bdbs.len(), 1);
        // A new request with the same command is a new write (and a duplicate).
        assert!(state.apply_proposal(&proposal(7, 3, create.clone())).is_err());
        // A new run of the node starts its serials again.
        assert!(state.apply_proposal(&proposal(8, 2, create)).is_err());
        assert_eq!(state.sessions[&1].outcomes.len(), 1);
        for serial in 0..(SESSION_OUTCOMES_MAX as u64 + 10) {
            let _ = state.apply_proposal(&proposal(8, 100 + serial, Command::DeleteBdb { uid: 99 }));
        }
        assert_eq!(state.sessions[&1].outcomes.len(), SESSION_OUTCOMES_MAX, "the window is bounded");
    }
}
