//! Meridian's WAN syncer: active-active replication between regions.
//!
//! Per active-active database, every region serves the deltas it originated
//! ([`outbox::Outbox`], read through [`outbound::Outbound`]) to its peer
//! regions with the gRPC service in [`source`], and runs one [`sink::Link`] per
//! peer that dials the peer, applies its deltas to the local database through
//! [`inbound::Inbound`] and persists a cursor. The protocol's rules — limits,
//! windows, cursors, compression — live without I/O in [`protocol`]; the wire
//! schema is `proto/meridian/v1/sync.proto`. Counters for monitoring are in
//! [`stats`]. Decisions: `docs/ARCHITECTURE.md`, "WAN syncer".

#![deny(missing_docs)]

pub mod backoff;
pub mod error;
pub mod inbound;
pub mod outbound;
pub mod outbox;
pub mod protocol;
pub mod sink;
pub mod source;
pub mod stats;

pub use backoff::Backoff;
pub use error::WanError;
pub use inbound::Inbound;
pub use outbound::{Outbound, Snapshot};
pub use outbox::Outbox;
pub use protocol::Cursor;
pub use sink::{Link, LinkConfig};
pub use source::SyncSource;
pub use stats::{LinkState, LinkStats, LinkStatsSnapshot};

/// Serves `source` on `listener` until `shutdown` completes (the node and
/// tests; TLS joins with the node's certificates).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: SyncSource,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(source.into_service())
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
}
