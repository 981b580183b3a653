//! Meridian's WAN syncer: active-active replication between regions.
//!
//! Per active-active database, every region serves the deltas it originated
//! ([`outbox::Outbox`], read through [`outbound::Outbound`]) to its peer
//! regions with the gRPC service in [`source`], and runs one [`sink::Link`] per
//! peer that dials the peer, applies its deltas to the local database through
//! [`inbound::Inbound`] and persists a cursor. The protocol's rules — limits,
//! windows, cursors, compression — live without I/O in [`protocol`]; the wire
//! schema is `proto/meridian/v1/sync.proto`. Counters for monitoring are in
//! [`stats`]; [`monitor`] serves them as the `SyncMonitor` gRPC service
//! over a [`MonitorRegistry`] the node fills in. Decisions: `docs/ARCHITECTURE.md`, "WAN syncer" (D50–D57).
//!
//! # Wiring it into a node
//!
//! - Per active-active database (and shard stream), one [`Outbox`]:
//!   [`Outbox::for_new_database`] when the database is created empty,
//!   [`Outbox::new`] when a node starts over recovered state.
//! - The node's one journal reader calls `Shard::take_journal_entries`, hands
//!   every entry to durability and, once the local replicas hold them, pushes
//!   the `local` ones to the outbox in order (invariant 2).
//! - [`Outbound`] over the database: `snapshot` reads the outbox's next offset
//!   and the keyspace under the lock appends take; `peer_applied` feeds the
//!   shard's `gc::StabilityTracker` (and the keyspace leaves solo mode,
//!   `Keyspace::set_solo(false)`, when a peer joins).
//! - [`Inbound`] over the database: route each delta to the shard owning its
//!   slot (a flush to all), `observe` with that shard's clock, persist the
//!   cursor per source region with a [`CursorStore`] in the data directory,
//!   join snapshots with
//!   `Keyspace::merge_snapshot` and rewrite the durable snapshot after one.
//! - [`ShardDatabase`] does all of the above for a database held by one
//!   shard (its `drain_journal` replaces `Shard::take_journal`).
//! - [`serve`] a [`SyncSource`] on the node's sync port and [`Link::spawn`]
//!   one link per (database, peer region); read counters with
//!   [`LinkStats::read`] and [`SyncSource::stats`].

#![deny(missing_docs)]

/// Reconnect backoff, shared with the replica links of `meridian-replication`.
pub use meridian_replication::backoff;
pub mod cursor_store;
pub mod error;
pub mod inbound;
pub mod monitor;
pub mod outbound;
pub mod outbox;
pub mod protocol;
pub mod shard_database;
pub mod sink;
pub mod source;
pub mod stats;
pub mod tls;

pub use backoff::Backoff;
pub use cursor_store::CursorStore;
pub use error::WanError;
pub use inbound::Inbound;
pub use monitor::{MonitorRegistry, PeerReading, SyncMonitorService};
pub use outbound::{Outbound, Snapshot};
pub use outbox::Outbox;
pub use protocol::{Codec, Cursor, Slice, Source};
pub use shard_database::ShardDatabase;
pub use sink::{Link, LinkConfig};
pub use source::SyncSource;
pub use stats::{LinkState, LinkStats, LinkStatsSnapshot};
pub use tls::{SyncTls, TlsFiles};

/// Serves `source` on `listener`, in plain HTTP/2, until `shutdown`
/// completes (tests).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: SyncSource,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with_monitor(listener, source, None, None, shutdown).await
}

/// Serves `source` and, when given, the `SyncMonitor` service `monitor` on
/// `listener` until `shutdown` completes: one port carries the sync streams
/// and their monitoring (see `docs/ARCHITECTURE.md`, D71). With `tls`, the
/// port speaks TLS only and requires a client certificate from the
/// deployment's authority ([`SyncTls`]).
pub async fn serve_with_monitor(
    listener: tokio::net::TcpListener,
    source: SyncSource,
    monitor: Option<SyncMonitorService>,
    tls: Option<&SyncTls>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    builder
        .max_concurrent_streams(protocol::STREAMS_PER_CONNECTION_MAX)
        .http2_keepalive_interval(Some(std::time::Duration::from_millis(protocol::HEARTBEAT_MS * 5)))
        .add_service(source.into_service())
        .add_optional_service(monitor.map(SyncMonitorService::into_service))
        // TCP_NODELAY on accepted streams: tonic sets it only on listeners
        // it binds itself, and Nagle with delayed acks held small batches
        // back 40 ms (measured by the WAN benchmark).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
