//! The syncer's errors. A failed link is a [`WanError`]: logged, counted in
//! the link's statistics and answered with a reconnect after a backoff; none
//! of them stops the node.

use meridian_proto::DecodeError;

/// Why a sync stream failed.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// The peer broke the protocol (bad order, bad offsets, over a bound).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A delta or snapshot did not decode.
    #[error("undecodable data: {0}")]
    Decode(#[from] DecodeError),
    /// The peer refused the stream or the transport failed.
    #[error("rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// The connection could not be made (with the transport's reasons:
    /// refused, timed out, a TLS certificate the other side rejected).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The peer said nothing for too long.
    #[error("peer idle for {0} ms")]
    Idle(u64),
    /// The stream ended.
    #[error("stream closed by the peer")]
    Closed,
    /// Applying or persisting locally failed.
    #[error("local apply failed: {0}")]
    Local(String),
}

impl From<tonic::transport::Error> for WanError {
    fn from(error: tonic::transport::Error) -> WanError {
        WanError::Connect(crate::tls::source_chain(&error))
    }
}
