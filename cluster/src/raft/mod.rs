//! The Raft half of the configuration store: openraft 0.9's type
//! configuration, the durable log store, the state machine holding the
//! [`ClusterConfig`](crate::config::ClusterConfig), and the gRPC transport
//! between members.
//!
//! openraft runs the algorithm; this module supplies its storage and network
//! ("storage-v2" traits). Log entries carry [`Proposal`]s (a [`Command`] and
//! who proposed it); applying one yields its [`Outcome`].

mod log_store;
mod network;
mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use log_store::LogStore;
pub use network::{Network, RAFT_MESSAGE_BYTES_MAX, RpcClient};
pub use state_machine::{SESSION_OUTCOMES_MAX, Session, StateMachineStore, StoredState};

use crate::config::{Applied, Command, CommandError};

/// A Raft node id: the node's `--node-id`.
pub type NodeId = u64;

/// The result of applying one command: what it did, or why it was refused.
pub type Outcome = Result<Applied, CommandError>;

/// Who proposed a command: a node, its process run, and a serial number.
///
/// A proposal is retried with the same origin when its answer is lost (a
/// forward to the leader times out after the leader applied it, a leader
/// change); the state machine remembers the outcomes of each node's recent
/// proposals and answers a repeat with the first outcome instead of applying
/// it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The proposing node.
    pub node: NodeId,
    /// Identifies the node's process run; serials restart with each run.
    pub boot: u64,
    /// Grows by one per proposal within a run.
    pub serial: u64,
}

/// A command as it is proposed and logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who proposed it.
    pub origin: Origin,
    /// The change.
    pub command: Command,
}

openraft::declare_raft_types!(
    /// Meridian's Raft types: commands in, outcomes out, nodes addressed by
    /// their cluster RPC address.
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
