//! The cluster configuration store's data: the model ([`ClusterConfig`] and
//! its parts) and the commands that change it ([`Command`]).
//!
//! Everything here is pure and synchronous — the Raft state machine
//! ([`crate::raft`]) only feeds committed commands to
//! [`ClusterConfig::apply`] — so the rules are tested without any network.

mod command;
mod model;

pub use command::{Applied, BdbSpec, BdbUpdate, Command, CommandError};
pub use model::{
    BDB_NAME_BYTES_MAX, BDBS_MAX, Bdb, CRDB_INSTANCES_MAX, ClusterConfig, CrdbInstance, CrdbPeer, LABEL_BYTES_MAX,
    NODES_MAX, NodeInfo, NodeState, PASSWORD_BYTES_MAX, ShardInfo, ShardRole, SlotRange, check_layout,
};

#[cfg(test)]
mod tests;
