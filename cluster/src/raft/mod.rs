//! The Raft half of the configuration store: openraft 0.9's type
//! configuration, the durable log store, the state machine holding the
//! [`ClusterConfig`](crate::config::ClusterConfig), and the gRPC transport
//! between members.
//!
//! openraft runs the algorithm; this module supplies its storage and network
//! ("storage-v2" traits). Log entries carry [`Command`]s; applying one yields
//! its [`Outcome`].

mod log_store;
mod network;
mod state_machine;

use std::io::Cursor;

pub use log_store::LogStore;
pub use network::{Network, RAFT_MESSAGE_BYTES_MAX, RpcClient};
pub use state_machine::{StateMachineStore, StoredState};

use crate::config::{Applied, Command, CommandError};

/// A Raft node id: the node's `--node-id`.
pub type NodeId = u64;

/// The result of applying one command: what it did, or why it was refused.
pub type Outcome = Result<Applied, CommandError>;

openraft::declare_raft_types!(
    /// Meridian's Raft types: commands in, outcomes out, nodes addressed by
    /// their cluster RPC address.
    pub TypeConfig:
        D = Command,
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
