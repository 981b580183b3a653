//! Meridian's WAN syncer: active-active replication between regions.
//!
//! Per active-active database, the syncer streams the deltas a region
//! originated to every peer region over gRPC and applies theirs (issue 5). It
//! starts with the reconnect [`backoff::Backoff`] its links use.

#![deny(missing_docs)]

pub mod backoff;

pub use backoff::Backoff;
