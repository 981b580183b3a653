//! Meridian's control plane and node process.
//!
//! The cluster crate grows into the node (the `meridian` binary), the
//! Raft-replicated cluster configuration, failure detection and failover,
//! resharding, database lifecycle, the admin REST API and CLI, and metrics
//! (issues 3 and 4). It has:
//! - [`config`]: the cluster configuration and the commands that change it
//!   (pure, deterministic);
//! - [`placement`]: the pure rules that decide where a database's shards live;
//! - [`raft`]: openraft's storage (a checked append-only log, the state
//!   machine) and its gRPC transport;
//! - [`control`]: this node's member of the configuration store — start,
//!   join, writes forwarded to the leader;
//! - [`admin`]: the admin REST API, and [`ctl`], its command-line client;
//! - [`node`]: a node's configuration and the running node;
//! - [`databases`]: the databases a node serves, each on its port, kept in
//!   line with the configuration, and [`active_active`], the WAN wiring of
//!   an active-active instance.

#![deny(missing_docs)]

pub mod active_active;
pub mod admin;
pub mod config;
pub mod control;
pub mod ctl;
pub mod databases;
pub mod demo;
pub mod forwarders;
pub mod node;
pub mod placement;
pub mod raft;
pub mod routers;
