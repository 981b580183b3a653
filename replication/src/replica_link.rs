//! The replica side of replication over gRPC: one task per replica that
//! dials its master, handshakes with the [`ReplicaStream`]'s history and
//! offset, takes a full sync or resumes, applies entries in offset order and
//! acknowledges the offset reached after each batch. When the stream breaks
//! it reconnects after an exponential backoff with full jitter, and resumes
//! partially if the master's backlog still holds its offset.
//!
//! Everything the master sends is bounded: messages by
//! [`REPLICA_MESSAGE_BYTES_MAX`], the snapshot by
//! [`ReplicaLinkConfig::snapshot_bytes_max`]; an entry out of order, a
//! malformed id or an undecodable payload ends the stream with a
//! [`LinkError`] that says which.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use meridian_proto::v1::replica_sync_client::ReplicaSyncClient;
use meridian_proto::v1::{self, replica_request, replica_response};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::backoff::{BACKOFF_BASE_MS, BACKOFF_MAX_MS, Backoff};
use crate::master_service::{REPLICA_MESSAGE_BYTES_MAX, REPLICA_PROTOCOL_VERSION, replid_from_wire, replid_to_wire};
use crate::stream::{ReplicaStream, StreamError, SyncDecision};

/// Default bound on a full sync's snapshot: 1 GiB.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// Requests (acks) queued before the replica waits for the master to read.
pub const REQUEST_QUEUE_MAX: usize = 4;

/// Why a replica's stream ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection could not be made.
    #[error("connect: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The master answered with an error status.
    #[error("master: {0}")]
    Rpc(#[from] tonic::Status),
    /// The master broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The replica refused an entry or the snapshot.
    #[error("refused: {0}")]
    Refused(#[from] StreamError),
    /// The stream ended.
    #[error("stream closed")]
    Closed,
    /// Nothing arrived within the idle timeout.
    #[error("no message within {0} ms")]
    Idle(u64),
}

/// Where a replica's link connects and how.
#[derive(Clone, Debug)]
pub struct ReplicaLinkConfig {
    /// The master's `ReplicaSync` endpoint (`http://host:port`).
    pub endpoint: String,
    /// This replica's id, unique among the master's replicas.
    pub replica_id: u64,
    /// The database whose master the link follows (the master's node routes
    /// by it; 0 for a service with one source).
    pub bdb_uid: u64,
    /// The shard's failover epoch this replica follows: a master at another
    /// epoch refuses the stream.
    pub epoch: u64,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time without any message from the master before the stream is
    /// considered dead. The master sends nothing while idle, so this only
    /// bounds the handshake and snapshot.
    pub handshake_timeout: Duration,
    /// Largest snapshot accepted.
    pub snapshot_bytes_max: usize,
    /// Backoff bounds (base, max) in milliseconds.
    pub backoff_ms: (u64, u64),
}

impl ReplicaLinkConfig {
    /// A config with default bounds.
    pub fn new(endpoint: String, replica_id: u64) -> ReplicaLinkConfig {
        ReplicaLinkConfig {
            endpoint,
            replica_id,
            bdb_uid: 0,
            epoch: 0,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(30),
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
            backoff_ms: (BACKOFF_BASE_MS, BACKOFF_MAX_MS),
        }
    }
}

/// Counters of one link.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Streams accepted with a partial resync.
    pub partial_syncs: AtomicU64,
    /// Streams accepted with a full sync.
    pub full_syncs: AtomicU64,
    /// Entries applied.
    pub entries: AtomicU64,
    /// Streams that ended with an error.
    pub failures: AtomicU64,
    /// True while a stream is accepted and running (INFO's
    /// `master_link_status:up`).
    pub up: std::sync::atomic::AtomicBool,
    /// Why the last stream ended (empty if none did).
    pub last_error: Mutex<String>,
}

/// A running replica link.
pub struct ReplicaLink {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    stats: Arc<LinkStats>,
    offset: watch::Receiver<u64>,
}

impl ReplicaLink {
    /// Starts a link feeding `replica` from the master at `config.endpoint`.
    pub fn spawn(config: ReplicaLinkConfig, replica: Arc<Mutex<ReplicaStream>>) -> ReplicaLink {
        let stats = Arc::new(LinkStats::default());
        let (stop, stopped) = watch::channel(false);
        let start = replica.lock().expect("replica lock").offset();
        let (offset_tx, offset) = watch::channel(start);
        let task = tokio::spawn(run(config, replica, stats.clone(), offset_tx, stopped));
        ReplicaLink { task, stop, stats, offset }
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// A receiver of the replica's offset, changed after every batch.
    pub fn offset(&self) -> watch::Receiver<u64> {
        self.offset.clone()
    }

    /// Stops the link (closing its stream) and waits for its task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    config: ReplicaLinkConfig,
    replica: Arc<Mutex<ReplicaStream>>,
    stats: Arc<LinkStats>,
    offset: watch::Sender<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    // Seeded by the replica id, so that replicas of one master spread out.
    let mut backoff = Backoff::with_bounds(config.replica_id, config.backoff_ms.0, config.backoff_ms.1);
    loop {
        let result = tokio::select! {
            result = session(&config, &replica, &stats, &offset, &mut backoff) => result,
            _ = stopped.changed() => break,
        };
        let error = result.err().unwrap_or(LinkError::Closed);
        stats.up.store(false, Ordering::Release);
        stats.failures.fetch_add(1, Ordering::Relaxed);
        *stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
        tracing::debug!(endpoint = %config.endpoint, %error, "replica link down");
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stopped.changed() => break,
        }
    }
}

async fn next(
    responses: &mut Streaming<v1::ReplicaResponse>,
    timeout: Option<Duration>,
) -> Result<replica_response::Kind, LinkError> {
    let message = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, responses.message())
            .await
            .map_err(|_| LinkError::Idle(timeout.as_millis() as u64))??,
        None => responses.message().await?,
    };
    message.ok_or(LinkError::Closed)?.kind.ok_or_else(|| LinkError::Protocol("empty response".into()))
}

async fn session(
    config: &ReplicaLinkConfig,
    replica: &Mutex<ReplicaStream>,
    stats: &LinkStats,
    offset: &watch::Sender<u64>,
    backoff: &mut Backoff,
) -> Result<(), LinkError> {
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| LinkError::Protocol(format!("bad endpoint {:?}: {e}", config.endpoint)))?
        .connect_timeout(config.connect_timeout);
    let channel = endpoint.connect().await?;
    let mut client = ReplicaSyncClient::new(channel)
        .max_decoding_message_size(REPLICA_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(REPLICA_MESSAGE_BYTES_MAX);
    let handshake = replica.lock().expect("replica lock").handshake();
    let hello = v1::ReplicaHello {
        protocol_version: REPLICA_PROTOCOL_VERSION,
        replica_id: config.replica_id,
        replid: handshake.replid.map(replid_to_wire).unwrap_or_default(),
        offset: handshake.offset,
        bdb_uid: config.bdb_uid,
        epoch: config.epoch,
    };
    let (requests, outgoing) = mpsc::channel(REQUEST_QUEUE_MAX);
    requests
        .send(v1::ReplicaRequest { kind: Some(replica_request::Kind::Hello(hello)) })
        .await
        .map_err(|_| LinkError::Closed)?;
    let mut responses = tokio::time::timeout(config.handshake_timeout, client.sync(ReceiverStream::new(outgoing)))
        .await
        .map_err(|_| LinkError::Idle(config.handshake_timeout.as_millis() as u64))??
        .into_inner();

    let replica_response::Kind::Accepted(accepted) = next(&mut responses, Some(config.handshake_timeout)).await? else {
        return Err(LinkError::Protocol("the first response must be ReplicaAccepted".into()));
    };
    if accepted.protocol_version != REPLICA_PROTOCOL_VERSION {
        return Err(LinkError::Protocol(format!("master speaks protocol {}", accepted.protocol_version)));
    }
    let replid = replid_from_wire(&accepted.replid)?
        .ok_or_else(|| LinkError::Protocol("ReplicaAccepted without a replication id".into()))?;
    if accepted.full_sync {
        let snapshot = receive_snapshot(&mut responses, config).await?;
        // Decoding takes seconds at millions of keys: on a blocking thread,
        // not on an async worker, and without holding the stream.
        let decode = replica.lock().expect("replica lock").decoder();
        let keyspace = tokio::task::spawn_blocking(move || decode(&snapshot))
            .await
            .map_err(|e| LinkError::Protocol(format!("decoding the snapshot failed: {e}")))??;
        let mut replica = replica.lock().expect("replica lock");
        replica.accept_snapshot(replid, keyspace, accepted.offset);
        replica.observe_hlc_high_water(accepted.hlc_high_water);
    } else {
        let mut replica = replica.lock().expect("replica lock");
        replica.accept(&SyncDecision::PartialResync { replid, from: accepted.offset })?;
        replica.observe_hlc_high_water(accepted.hlc_high_water);
    }
    stats.up.store(true, Ordering::Release);
    let counter = if accepted.full_sync { &stats.full_syncs } else { &stats.partial_syncs };
    counter.fetch_add(1, Ordering::Relaxed);
    backoff.reset();
    offset.send_replace(accepted.offset);
    ack(&requests, accepted.offset).await?;

    loop {
        let replica_response::Kind::Entries(entries) = next(&mut responses, None).await? else {
            return Err(LinkError::Protocol("only entries may follow the handshake".into()));
        };
        let reached = {
            let mut replica = replica.lock().expect("replica lock");
            for (i, delta) in entries.deltas.iter().enumerate() {
                replica.apply(entries.first_offset + i as u64, delta)?;
            }
            replica.offset()
        };
        stats.entries.fetch_add(entries.deltas.len() as u64, Ordering::Relaxed);
        offset.send_replace(reached);
        ack(&requests, reached).await?;
    }
}

async fn ack(requests: &mpsc::Sender<v1::ReplicaRequest>, offset: u64) -> Result<(), LinkError> {
    requests
        .send(v1::ReplicaRequest { kind: Some(replica_request::Kind::Ack(v1::ReplicaAck { offset })) })
        .await
        .map_err(|_| LinkError::Closed)
}

/// Collects the snapshot chunks, in order, within the snapshot bound.
async fn receive_snapshot(
    responses: &mut Streaming<v1::ReplicaResponse>,
    config: &ReplicaLinkConfig,
) -> Result<Vec<u8>, LinkError> {
    let mut buffer = BytesMut::new();
    let mut index = 0u32;
    loop {
        let replica_response::Kind::SnapshotChunk(chunk) = next(responses, Some(config.handshake_timeout)).await?
        else {
            return Err(LinkError::Protocol("a full sync sends snapshot chunks first".into()));
        };
        if chunk.index != index {
            return Err(LinkError::Protocol(format!("snapshot chunk {} where {index} was due", chunk.index)));
        }
        if buffer.len() + chunk.payload.len() > config.snapshot_bytes_max {
            return Err(LinkError::Protocol(format!("snapshot over the bound of {} bytes", config.snapshot_bytes_max)));
        }
        buffer.extend_from_slice(&chunk.payload);
        index += 1;
        if chunk.last {
            return Ok(buffer.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_crdt::keyspace::{ExpiryChange, Moment};
    use meridian_crdt::{Keyspace, ReplicaId};
    use meridian_proto::convert::encode_snapshot;

    use super::*;
    use crate::master_service::{MasterShard, ReplicaSyncService};
    use crate::stream::{ReplicationId, ReplicationLog};

    fn at(n: u64) -> Moment {
        Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(1_790_000_000_000 + n, 0), wall_ms: 1_790_000_000_000 + n }
    }

    /// A master on a loopback port; returns it, its service and its endpoint.
    async fn serve(backlog_bytes_max: usize) -> (Arc<MasterShard>, ReplicaSyncService, String) {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set_solo(true);
        let master = MasterShard::new(keyspace, ReplicationLog::new(ReplicationId(42), backlog_bytes_max));
        let service = ReplicaSyncService::new(master.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = service.clone().into_service();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(served)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (master, service, endpoint)
    }

    fn set(master: &MasterShard, n: u64) -> u64 {
        master
            .write(|keyspace| {
                keyspace.set(format!("k{}", n % 7).as_bytes(), format!("v{n}").as_bytes(), ExpiryChange::Clear, at(n))
            })
            .1
    }

    fn config(endpoint: &str) -> ReplicaLinkConfig {
        ReplicaLinkConfig { backoff_ms: (5, 50), ..ReplicaLinkConfig::new(endpoint.to_owned(), 2) }
    }

    /// Waits until the replica reached `offset` and the master counts its ack.
    async fn caught_up(master: &MasterShard, link: &ReplicaLink, offset: u64) {
        let mut reached = link.offset();
        tokio::time::timeout(Duration::from_secs(10), async {
            reached.wait_for(|&reached| reached >= offset).await.unwrap();
            while master.read(|_, log| log.acked_count(offset)) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the replica catches up in time");
    }

    fn same(master: &MasterShard, replica: &Mutex<ReplicaStream>) {
        let expected = master.read(|keyspace, _| encode_snapshot(keyspace));
        assert_eq!(encode_snapshot(replica.lock().unwrap().keyspace()), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_connection_resumes_partially() {
        let (master, service, endpoint) = serve(1 << 20).await;
        for n in 0..10 {
            set(&master, n);
        }
        let replica = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(1), true)));
        let link = ReplicaLink::spawn(config(&endpoint), replica.clone());
        caught_up(&master, &link, 10).await;
        assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 1, "a new replica takes a snapshot");
        let mut last = 0;
        for n in 10..20 {
            last = set(&master, n);
        }
        caught_up(&master, &link, last).await;
        same(&master, &replica);

        service.disconnect_all();
        for n in 20..30 {
            last = set(&master, n);
        }
        caught_up(&master, &link, last).await;
        same(&master, &replica);
        assert!(link.stats().failures.load(Ordering::Relaxed) >= 1, "the stream was cut");
        assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 1);
        assert!(link.stats().partial_syncs.load(Ordering::Relaxed) >= 1, "the reconnect resumed from the backlog");
        link.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_past_the_backlog_full_syncs_again() {
        // A backlog of one byte keeps only the newest delta.
        let (master, _service, endpoint) = serve(1).await;
        let replica = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(1), true)));
        let link = ReplicaLink::spawn(config(&endpoint), replica.clone());
        let last = set(&master, 0);
        caught_up(&master, &link, last).await;
        link.stop().await;
        let mut last = 0;
        for n in 1..20 {
            last = set(&master, n);
        }
        let link = ReplicaLink::spawn(config(&endpoint), replica.clone());
        caught_up(&master, &link, last).await;
        assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 1, "the offset was trimmed");
        assert_eq!(link.stats().partial_syncs.load(Ordering::Relaxed), 0);
        same(&master, &replica);
        link.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sibling_resumes_partially_from_a_promoted_replica() {
        let (old_master, _service, endpoint) = serve(1 << 20).await;
        let sibling = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(1), true)));
        let link = ReplicaLink::spawn(config(&endpoint), sibling.clone());
        let mut last = 0;
        for n in 0..10 {
            last = set(&old_master, n);
        }
        caught_up(&old_master, &link, last).await;
        link.stop().await;

        // Another replica, at the same offset, is promoted: a new history
        // that continues history 42 from offset `last`.
        let snapshot = old_master.read(|keyspace, _| encode_snapshot(keyspace));
        let mut keyspace = meridian_proto::decode_snapshot(ReplicaId(1), &snapshot).unwrap();
        keyspace.set_solo(true);
        let log = ReplicationLog::promoted(ReplicationId(43), ReplicationId(42), last, 1 << 20);
        let new_master = MasterShard::new(keyspace, log);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ReplicaSyncService::new(new_master.clone()).into_service())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        for n in 10..15 {
            last = set(&new_master, n);
        }
        let link = ReplicaLink::spawn(config(&endpoint), sibling.clone());
        caught_up(&new_master, &link, last).await;
        assert_eq!(link.stats().partial_syncs.load(Ordering::Relaxed), 1, "the shared history is resumed");
        assert_eq!(link.stats().full_syncs.load(Ordering::Relaxed), 0);
        assert_eq!(sibling.lock().unwrap().replid(), Some(ReplicationId(43)), "the sibling adopts the new history");
        same(&new_master, &sibling);
        link.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_counts_the_replicas_that_acknowledged_a_write() {
        let (master, _service, endpoint) = serve(1 << 20).await;
        let replica = Arc::new(Mutex::new(ReplicaStream::new(ReplicaId(1), true)));
        let link = ReplicaLink::spawn(config(&endpoint), replica.clone());
        let offset = set(&master, 1);
        let one = master.wait_for_acks(offset, 1, None).await;
        assert_eq!(one, 1, "timeout 0 (None) waits until the replica acked");
        let started = std::time::Instant::now();
        let still_one = master.wait_for_acks(offset, 2, Some(Duration::from_millis(50))).await;
        assert_eq!(still_one, 1, "only one replica exists");
        assert!(started.elapsed() >= Duration::from_millis(50), "asking for more replicas waits the timeout");
        link.stop().await;
        let offset = set(&master, 2);
        let none = master.wait_for_acks(offset, 1, Some(Duration::from_millis(20))).await;
        assert_eq!(none, 0, "a stopped replica acknowledges nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostile_hello_gets_a_clear_error() {
        let (_master, _service, endpoint) = serve(1 << 20).await;
        let channel = Endpoint::from_shared(endpoint).unwrap().connect().await.unwrap();
        let mut client = ReplicaSyncClient::new(channel);
        let hello = v1::ReplicaHello {
            protocol_version: REPLICA_PROTOCOL_VERSION,
            replica_id: 1,
            replid: vec![1, 2, 3].into(),
            offset: 0,
            ..Default::default()
        };
        let request = v1::ReplicaRequest { kind: Some(replica_request::Kind::Hello(hello)) };
        let status = client.sync(tokio_stream::iter(vec![request])).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("16 bytes"), "{}", status.message());
    }
}
