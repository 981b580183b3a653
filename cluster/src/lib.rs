//! Meridian's control plane and node process.
//!
//! The cluster crate grows into the node (the `meridian` binary), the
//! Raft-replicated cluster configuration, failure detection and failover,
//! resharding, database lifecycle, the admin REST API and CLI, and metrics
//! (issues 3 and 4). It has the [`node`] (configuration and a running database
//! endpoint) and the pure [`placement`] rules that decide where a database's
//! shards live.

#![deny(missing_docs)]

pub mod node;
pub mod placement;
