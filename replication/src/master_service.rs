//! The master side of replication over gRPC: the `ReplicaSync` service.
//!
//! A replica opens one stream per connection with a `ReplicaHello`; the
//! service asks its [`ReplicationSource`] for a [`SyncDecision`], answers
//! `ReplicaAccepted`, sends the snapshot in chunks of at most
//! [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes for a full sync, and then streams
//! entries from the agreed offset as the log grows, woken by a `watch`
//! channel carrying the log's next offset (one wake-up per batch of writes,
//! not one message per write). The replica's acks are recorded for `WAIT`.
//! The response queue is bounded ([`RESPONSE_QUEUE_MAX`]), so a replica that
//! stops reading stalls its own stream and costs bounded memory. A peer that
//! breaks the protocol gets a gRPC status saying why; other streams go on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_crdt::Keyspace;
use meridian_proto::v1::replica_sync_server::{ReplicaSync, ReplicaSyncServer};
use meridian_proto::v1::{self, replica_request, replica_response};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::stream::{ReplicaHandshake, ReplicationId, ReplicationLog, StreamError, SyncDecision};

/// Version of the `ReplicaSync` protocol; both sides must speak the same.
pub const REPLICA_PROTOCOL_VERSION: u32 = 1;
/// Largest gRPC message either side accepts or sends.
pub const REPLICA_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes of encoded deltas in one `ReplicaEntries` at most (one larger delta
/// travels alone).
pub const ENTRIES_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Entries in one `ReplicaEntries` at most.
pub const ENTRIES_BATCH_MAX: usize = 4_096;
/// Bytes of snapshot in one chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Responses queued for one stream before the sender waits.
pub const RESPONSE_QUEUE_MAX: usize = 4;
/// Time a new stream has to send its `ReplicaHello`.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;

const _: () = assert!(
    ENTRIES_BATCH_BYTES_MAX < REPLICA_MESSAGE_BYTES_MAX && SNAPSHOT_CHUNK_BYTES_MAX < REPLICA_MESSAGE_BYTES_MAX
);

/// What the service needs from a master shard. Every method is quick and
/// takes the shard's lock briefly, except `handshake` for a full sync, which
/// encodes the whole keyspace.
pub trait ReplicationSource: Send + Sync + 'static {
    /// The decision for a (re)connecting replica (see
    /// [`ReplicationLog::handshake`]).
    fn handshake(&self, handshake: ReplicaHandshake) -> SyncDecision;
    /// Encoded deltas from `offset` (bounded as
    /// [`ReplicationLog::read_from`]); `None` if no longer in the backlog.
    fn read(&self, offset: u64, entries_max: usize, bytes_max: usize) -> Option<Vec<Bytes>>;
    /// Records a replica's ack.
    fn record_ack(&self, replica: u64, offset: u64) -> Result<(), StreamError>;
    /// The replica's stream ended.
    fn forget(&self, replica: u64);
    /// A receiver of the log's next offset, changed after every append.
    fn subscribe(&self) -> watch::Receiver<u64>;
    /// The master clock's high-water: no timestamp in the shard is above it
    /// (a promoted replica starts its clock there).
    fn hlc_high_water(&self) -> u64;
}

/// Finds the master a replica asks for: a node's cluster port serves the
/// masters of every database it holds.
pub trait SourceRouter: Send + Sync + 'static {
    /// The source of database `bdb_uid`'s shard at failover epoch `epoch`,
    /// and a receiver that turns true when that source stops being this
    /// node's master (its open streams then end); an error status (not found,
    /// another epoch) otherwise, which the replica retries with backoff.
    fn route(&self, bdb_uid: u64, epoch: u64) -> Result<Routed, Status>;
}

/// A routed source and the signal that ends its streams.
pub type Routed = (Arc<dyn ReplicationSource>, watch::Receiver<bool>);

/// One source serving every stream, whatever database or epoch it names (a
/// single shard; tests).
struct SingleSource(Arc<dyn ReplicationSource>, watch::Sender<bool>);

impl SourceRouter for SingleSource {
    fn route(&self, _bdb_uid: u64, _epoch: u64) -> Result<Routed, Status> {
        Ok((self.0.clone(), self.1.subscribe()))
    }
}

/// A served master: its epoch, the source and the signal ending its streams.
type Served = (u64, Arc<dyn ReplicationSource>, watch::Sender<bool>);

/// The masters a node serves, by database uid, each at its epoch.
#[derive(Default)]
pub struct SourceTable {
    sources: Mutex<std::collections::HashMap<u64, Served>>,
}

impl SourceTable {
    /// An empty table.
    pub fn new() -> SourceTable {
        SourceTable::default()
    }

    /// Serves `source` as database `bdb_uid`'s master at `epoch`; a source
    /// it replaces has its streams ended.
    pub fn insert(&self, bdb_uid: u64, epoch: u64, source: Arc<dyn ReplicationSource>) {
        let ended = watch::channel(false).0;
        let old = self.lock().insert(bdb_uid, (epoch, source, ended));
        if let Some((_, _, ended)) = old {
            ended.send_replace(true);
        }
    }

    /// Stops serving database `bdb_uid`'s master (a failover or a stop); its
    /// open streams end.
    pub fn remove(&self, bdb_uid: u64) {
        if let Some((_, _, ended)) = self.lock().remove(&bdb_uid) {
            ended.send_replace(true);
        }
    }

    /// The epoch database `bdb_uid` is served at, if it is.
    pub fn epoch(&self, bdb_uid: u64) -> Option<u64> {
        self.lock().get(&bdb_uid).map(|(epoch, _, _)| *epoch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Served>> {
        // Entries are inserted and removed whole.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for SourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let epochs: std::collections::BTreeMap<u64, u64> =
            self.lock().iter().map(|(bdb, (epoch, _, _))| (*bdb, *epoch)).collect();
        f.debug_struct("SourceTable").field("epochs", &epochs).finish()
    }
}

impl SourceRouter for SourceTable {
    fn route(&self, bdb_uid: u64, epoch: u64) -> Result<Routed, Status> {
        let sources = self.lock();
        let Some((served, source, ended)) = sources.get(&bdb_uid) else {
            return Err(Status::not_found(format!("this node is not the master of database {bdb_uid}")));
        };
        if *served != epoch {
            return Err(Status::failed_precondition(format!(
                "this node is database {bdb_uid}'s master at epoch {served}, not {epoch}"
            )));
        }
        Ok((source.clone(), ended.subscribe()))
    }
}

/// A master shard's keyspace and log under one lock, so that a snapshot and
/// the offset it stands at always agree: writes go through
/// [`MasterShard::write`], which appends what the keyspace journaled.
pub struct MasterShard {
    state: Mutex<(Keyspace, ReplicationLog)>,
    next_offset: watch::Sender<u64>,
    /// Bumped after every recorded ack or forgotten replica, to wake `WAIT`.
    acks: watch::Sender<u64>,
    /// The largest timestamp of any delta written.
    hlc_high_water: std::sync::atomic::AtomicU64,
}

impl MasterShard {
    /// A master over `keyspace` (journaling is switched on here) and `log`.
    pub fn new(mut keyspace: Keyspace, log: ReplicationLog) -> Arc<MasterShard> {
        keyspace.set_journal(true);
        keyspace.take_journal();
        let next_offset = watch::channel(log.next_offset()).0;
        Arc::new(MasterShard {
            state: Mutex::new((keyspace, log)),
            next_offset,
            acks: watch::channel(0).0,
            hlc_high_water: Default::default(),
        })
    }

    /// `WAIT`: waits until at least `replicas` replicas acknowledged
    /// `offset` (a write's offset from [`MasterShard::write`]) or `timeout`
    /// passes (`None`: forever), and returns how many did. Woken by acks,
    /// not by polling.
    pub async fn wait_for_acks(&self, offset: u64, replicas: usize, timeout: Option<Duration>) -> usize {
        wait_for_count(self.acks.subscribe(), replicas, timeout, || self.read(|_, log| log.acked_count(offset))).await
    }

    /// Runs a write against the keyspace, appends the deltas it applied to
    /// the log and wakes the streams; returns the write's result and the
    /// log's next offset after it (what `WAIT` waits for).
    pub fn write<R>(&self, write: impl FnOnce(&mut Keyspace) -> R) -> (R, u64) {
        let mut state = self.state.lock().expect("master lock");
        let (keyspace, log) = &mut *state;
        let result = write(keyspace);
        let (deltas, _) = keyspace.take_journal();
        for delta in &deltas {
            log.append_delta(delta);
            if let Some(hlc) = delta.max_hlc() {
                self.hlc_high_water.fetch_max(hlc, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let next = log.next_offset();
        drop(state);
        self.next_offset.send_replace(next);
        (result, next)
    }

    /// Reads the keyspace and the log.
    pub fn read<R>(&self, read: impl FnOnce(&Keyspace, &ReplicationLog) -> R) -> R {
        let state = self.state.lock().expect("master lock");
        read(&state.0, &state.1)
    }
}

impl ReplicationSource for MasterShard {
    fn handshake(&self, handshake: ReplicaHandshake) -> SyncDecision {
        self.read(|keyspace, log| log.handshake(handshake, keyspace))
    }

    fn read(&self, offset: u64, entries_max: usize, bytes_max: usize) -> Option<Vec<Bytes>> {
        self.read(|_, log| {
            log.read_from(offset, entries_max, bytes_max)
                .map(|entries| entries.iter().map(|entry| entry.delta.clone()).collect())
        })
    }

    fn record_ack(&self, replica: u64, offset: u64) -> Result<(), StreamError> {
        let recorded = self.state.lock().expect("master lock").1.record_ack(replica, offset);
        self.acks.send_modify(|generation| *generation += 1);
        recorded
    }

    fn forget(&self, replica: u64) {
        self.state.lock().expect("master lock").1.forget(replica);
        self.acks.send_modify(|generation| *generation += 1);
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.next_offset.subscribe()
    }

    fn hlc_high_water(&self) -> u64 {
        self.hlc_high_water.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The `ReplicaSync` service: of one master shard ([`ReplicaSyncService::new`])
/// or of every master a node holds ([`ReplicaSyncService::routed`]).
#[derive(Clone)]
pub struct ReplicaSyncService {
    router: Arc<dyn SourceRouter>,
    /// Bumped to end every open stream (a role change, or a test cutting the
    /// connections); the replicas reconnect with backoff.
    disconnect: Arc<watch::Sender<u64>>,
}

impl ReplicaSyncService {
    /// A service streaming `source`'s log to every replica, whatever
    /// database and epoch it names.
    pub fn new(source: Arc<dyn ReplicationSource>) -> ReplicaSyncService {
        ReplicaSyncService::routed(Arc::new(SingleSource(source, watch::channel(false).0)))
    }

    /// A service streaming the master `router` finds for each replica's
    /// database and epoch.
    pub fn routed(router: Arc<dyn SourceRouter>) -> ReplicaSyncService {
        ReplicaSyncService { router, disconnect: Arc::new(watch::channel(0).0) }
    }

    /// Ends every open stream with `UNAVAILABLE`.
    pub fn disconnect_all(&self) {
        self.disconnect.send_modify(|generation| *generation += 1);
    }

    /// The tonic service, with the message bounds above.
    pub fn into_service(self) -> ReplicaSyncServer<ReplicaSyncService> {
        ReplicaSyncServer::new(self)
            .max_decoding_message_size(REPLICA_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(REPLICA_MESSAGE_BYTES_MAX)
    }
}

/// A replication id from its wire form: 16 bytes, or none if empty.
pub fn replid_from_wire(bytes: &[u8]) -> Result<Option<ReplicationId>, Status> {
    match bytes.len() {
        0 => Ok(None),
        16 => Ok(Some(ReplicationId(u128::from_be_bytes(bytes.try_into().expect("16 bytes"))))),
        n => Err(Status::invalid_argument(format!("a replication id has 16 bytes, not {n}"))),
    }
}

/// A replication id in its wire form.
pub fn replid_to_wire(replid: ReplicationId) -> Bytes {
    Bytes::copy_from_slice(&replid.0.to_be_bytes())
}

type Responses = mpsc::Sender<Result<v1::ReplicaResponse, Status>>;

#[tonic::async_trait]
impl ReplicaSync for ReplicaSyncService {
    type SyncStream = ReceiverStream<Result<v1::ReplicaResponse, Status>>;

    async fn sync(
        &self,
        request: Request<Streaming<v1::ReplicaRequest>>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let mut requests = request.into_inner();
        let first = tokio::time::timeout(Duration::from_millis(HELLO_TIMEOUT_MS), requests.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no ReplicaHello within the timeout"))??
            .ok_or_else(|| Status::invalid_argument("stream closed before ReplicaHello"))?;
        let Some(replica_request::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument("the first message must be a ReplicaHello"));
        };
        if hello.protocol_version != REPLICA_PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "replica protocol version {} not supported (this master speaks {REPLICA_PROTOCOL_VERSION})",
                hello.protocol_version
            )));
        }
        let handshake = ReplicaHandshake { replid: replid_from_wire(&hello.replid)?, offset: hello.offset };
        let (source, mut ended) = self.router.route(hello.bdb_uid, hello.epoch)?;
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE_MAX);
        let mut disconnect = self.disconnect.subscribe();
        disconnect.mark_unchanged();
        tokio::spawn(async move {
            let replica = hello.replica_id;
            let result = tokio::select! {
                result = serve_stream(source.clone(), replica, handshake, requests, &tx) => result,
                _ = disconnect.changed() => Err(Status::unavailable("the master ended its replication streams")),
                _ = ended.wait_for(|&ended| ended) => {
                    Err(Status::unavailable("this node stopped being the shard's master"))
                }
            };
            source.forget(replica);
            if let Err(status) = result {
                tracing::debug!(replica, %status, "replica stream ended");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn send(tx: &Responses, kind: replica_response::Kind) -> Result<(), Status> {
    tx.send(Ok(v1::ReplicaResponse { kind: Some(kind) })).await.map_err(|_| Status::cancelled("replica gone"))
}

/// One stream, from the decision to its end.
async fn serve_stream(
    source: Arc<dyn ReplicationSource>,
    replica: u64,
    handshake: ReplicaHandshake,
    mut requests: Streaming<v1::ReplicaRequest>,
    tx: &Responses,
) -> Result<(), Status> {
    // Subscribe before deciding, so no append after the decision is missed.
    let mut wake = source.subscribe();
    // A full sync copies and encodes the whole keyspace (seconds at millions
    // of keys): on a blocking thread, so the node's async workers go on
    // serving clients and the cluster's liveness probes meanwhile.
    let deciding = source.clone();
    let decision = tokio::task::spawn_blocking(move || deciding.handshake(handshake))
        .await
        .map_err(|e| Status::internal(format!("the sync decision failed: {e}")))?;
    let (replid, full_sync, mut next) = match &decision {
        SyncDecision::PartialResync { replid, from } => (*replid, false, *from),
        SyncDecision::FullSync { replid, offset, .. } => (*replid, true, *offset),
    };
    let accepted = v1::ReplicaAccepted {
        protocol_version: REPLICA_PROTOCOL_VERSION,
        replid: replid_to_wire(replid),
        full_sync,
        offset: next,
        hlc_high_water: source.hlc_high_water(),
    };
    send(tx, replica_response::Kind::Accepted(accepted)).await?;
    if let SyncDecision::FullSync { snapshot, .. } = decision {
        let snapshot = Bytes::from(snapshot);
        let chunks = snapshot.len().div_ceil(SNAPSHOT_CHUNK_BYTES_MAX).max(1);
        for index in 0..chunks {
            let start = index * SNAPSHOT_CHUNK_BYTES_MAX;
            let end = (start + SNAPSHOT_CHUNK_BYTES_MAX).min(snapshot.len());
            let chunk = v1::ReplicaSnapshotChunk {
                index: index as u32,
                last: index + 1 == chunks,
                payload: snapshot.slice(start..end),
            };
            send(tx, replica_response::Kind::SnapshotChunk(chunk)).await?;
        }
    }
    tracing::debug!(replica, full_sync, offset = next, "replica stream accepted");
    loop {
        loop {
            let entries = source.read(next, ENTRIES_BATCH_MAX, ENTRIES_BATCH_BYTES_MAX).ok_or_else(|| {
                Status::out_of_range("the replica fell out of the master's backlog while streaming; reconnect")
            })?;
            if entries.is_empty() {
                break;
            }
            let count = entries.len() as u64;
            send(tx, replica_response::Kind::Entries(v1::ReplicaEntries { first_offset: next, deltas: entries }))
                .await?;
            next += count;
        }
        tokio::select! {
            message = requests.message() => match message? {
                Some(v1::ReplicaRequest { kind: Some(replica_request::Kind::Ack(ack)) }) => {
                    if ack.offset > next {
                        return Err(Status::invalid_argument(format!(
                            "ack of offset {} beyond what was sent ({next})", ack.offset
                        )));
                    }
                    source.record_ack(replica, ack.offset).map_err(|e| Status::invalid_argument(e.to_string()))?;
                }
                Some(_) => return Err(Status::invalid_argument("only ReplicaAcks may follow the ReplicaHello")),
                None => return Ok(()),
            },
            changed = wake.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("the master shard is gone"));
                }
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Waits until `count()` reaches `replicas` — re-counting each time `acks`
/// changes — or `timeout` passes (`None`: forever); the last count. The
/// blocking part of `WAIT`, shared by every master of replicas.
pub async fn wait_for_count(
    mut acks: watch::Receiver<u64>,
    replicas: usize,
    timeout: Option<Duration>,
    count: impl Fn() -> usize,
) -> usize {
    let enough = async {
        loop {
            let acked = count();
            if acked >= replicas || acks.changed().await.is_err() {
                return acked;
            }
        }
    };
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, enough).await.unwrap_or_else(|_| count()),
        None => enough.await,
    }
}
