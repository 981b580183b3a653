//! Meridian's client face: the Redis protocol.
//!
//! [`request`] parses what clients send (bounded, resumable, fuzzed);
//! [`reply`] encodes what they get back (RESP2 or RESP3); [`connection`] runs
//! a pipelined read-run-reply loop per client; [`server`] accepts clients; the
//! command table lives in [`cmd`], one module per command family.

#![deny(missing_docs)]

pub mod blocking;
pub mod cmd;
pub mod connection;
pub mod context;
pub mod forward;
mod local_client;
pub mod persistence;
pub mod pubsub;
pub mod replication;
pub mod reply;
pub mod request;
pub mod router;
pub mod server;
pub mod spin;

/// The Redis version Meridian reports to clients (INFO, HELLO): the command
/// set and replies follow Redis 7.
pub const REDIS_COMPATIBLE_VERSION: &str = "7.2.0";
