//! The source side of WAN sync: the gRPC `WanSync` service a region serves
//! to its peers.
//!
//! Each stream belongs to one destination region and one database. The
//! destination opens it with a Subscribe naming its cursor; the source
//! answers Accepted and, if its outbox still covers the cursor, streams
//! batches from it (partial sync); otherwise it sends a snapshot in bounded
//! chunks and streams from the offset the snapshot covers (full sync). At most
//! [`IN_FLIGHT_BATCHES_MAX`](crate::protocol::IN_FLIGHT_BATCHES_MAX) batches are unacknowledged: past that the stream
//! stops reading the outbox until an Ack arrives, so a slow peer costs a
//! bounded queue here, never memory proportional to its lag. A peer that
//! breaks the protocol gets a gRPC status that says why; the server and every
//! other stream carry on.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::v1::wan_sync_server::{WanSync, WanSyncServer};
use meridian_proto::v1::{self, sync_request, sync_response};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use meridian_crdt::gc::Reporter;
use meridian_crdt::slot::Granules;

use crate::error::WanError;
use crate::outbound::{Outbound, Snapshot};
use crate::outbox::OutboxRead;
use crate::protocol::{
    self, BATCH_BYTES_MAX, BATCH_DELTAS_MAX, Codec, HEARTBEAT_MS, MESSAGE_BYTES_MAX, PROTOCOL_VERSION,
    RESPONSE_QUEUE_MAX, SNAPSHOT_CHUNK_BYTES_MAX, SUBSCRIBE_TIMEOUT_MS, Slice, Window,
};
use crate::stats::{LinkState, LinkStats};

type Responses = mpsc::Sender<Result<v1::SyncResponse, Status>>;
/// Counters of the streams served, by (database, destination region, source
/// shard stream, destination shard stream).
type StatsByStream = HashMap<(String, u16, u32, u32), Arc<LinkStats>>;

/// One served shard stream of a database: its region id, the granules it
/// holds, its source side, and the signal that ends its open streams when it
/// stops being served here.
#[derive(Clone)]
struct Served {
    region: u16,
    granules: Granules,
    held: Range<u16>,
    outbound: Arc<dyn Outbound>,
    closed: watch::Sender<bool>,
}

/// The served shard streams by (database name, stream).
type DatabasesByName = HashMap<(String, u32), Served>;

/// The sync service of one region: the databases it serves, by name.
#[derive(Clone)]
pub struct SyncSource {
    region: u16,
    /// Each database with the region id this cluster has in it (a node
    /// serving several active-active databases may be a different region in
    /// each: ids are assigned per database).
    databases: Arc<RwLock<DatabasesByName>>,
    stats: Arc<Mutex<StatsByStream>>,
    /// How what this source sends is compressed.
    codec: Codec,
}

impl SyncSource {
    /// A service for region `region` serving no database yet.
    pub fn new(region: u16) -> SyncSource {
        SyncSource { region, databases: Default::default(), stats: Default::default(), codec: Codec::default() }
    }

    /// The same source compressing what it sends with `codec`.
    pub fn with_codec(mut self, codec: Codec) -> SyncSource {
        self.codec = codec;
        self
    }

    /// Serves `database` from `outbound` (replacing an earlier one), as
    /// this source's region.
    pub fn add_database(&self, database: &str, outbound: Arc<dyn Outbound>) {
        self.add_database_in_region(database, self.region, outbound);
    }

    /// Serves `database` from `outbound` as region `region` of that
    /// database (replacing an earlier one, whose open streams end).
    pub fn add_database_in_region(&self, database: &str, region: u16, outbound: Arc<dyn Outbound>) {
        self.add_stream(database, region, 0, Granules::ONE, 0..1, outbound);
    }

    /// Serves shard stream `stream` of `database` — the shard holding the
    /// granules `held` of `granules` — from `outbound`, as region `region`
    /// of that database (replacing an earlier one, whose open streams end).
    pub fn add_stream(
        &self,
        database: &str,
        region: u16,
        stream: u32,
        granules: Granules,
        held: Range<u16>,
        outbound: Arc<dyn Outbound>,
    ) {
        let served = Served { region, granules, held, outbound, closed: watch::channel(false).0 };
        let earlier = self.databases.write().expect("databases lock").insert((database.to_owned(), stream), served);
        if let Some(earlier) = earlier {
            earlier.closed.send_replace(true);
        }
    }

    /// Stops serving every stream of `database`: open streams end at once
    /// with `UNAVAILABLE` (their destinations reconnect with backoff), so a
    /// database that moved or was deleted is not kept alive by its streams.
    pub fn remove_database(&self, database: &str) {
        let mut databases = self.databases.write().expect("databases lock");
        databases.retain(|(name, _), served| {
            let keep = name != database;
            if !keep {
                served.closed.send_replace(true);
            }
            keep
        });
    }

    /// Stops serving shard stream `stream` of `database` (its master moved).
    pub fn remove_stream(&self, database: &str, stream: u32) {
        let removed = self.databases.write().expect("databases lock").remove(&(database.to_owned(), stream));
        if let Some(removed) = removed {
            removed.closed.send_replace(true);
        }
    }

    /// The counters of the stream to `destination` for `database` (whole
    /// instances: shard streams 0).
    pub fn stats(&self, database: &str, destination: u16) -> Option<Arc<LinkStats>> {
        self.stream_stats(database, destination, 0, 0)
    }

    /// The counters of the stream from shard stream `stream` to shard
    /// `destination_stream` of region `destination`, for `database`.
    pub fn stream_stats(
        &self,
        database: &str,
        destination: u16,
        stream: u32,
        destination_stream: u32,
    ) -> Option<Arc<LinkStats>> {
        let key = (database.to_owned(), destination, stream, destination_stream);
        self.stats.lock().expect("stats lock").get(&key).cloned()
    }

    /// The tonic service, with the message bounds of [`protocol`].
    pub fn into_service(self) -> WanSyncServer<SyncSource> {
        WanSyncServer::new(self)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    fn link_stats(&self, subscribe: &v1::Subscribe, destination: u16) -> Arc<LinkStats> {
        let key = (subscribe.database.clone(), destination, subscribe.stream, subscribe.destination_stream);
        self.stats.lock().expect("stats lock").entry(key).or_default().clone()
    }

    /// Checks a Subscribe and finds its shard stream; returns it with the
    /// destination region and the granules the destination holds.
    fn admit(&self, subscribe: &v1::Subscribe) -> Result<(Served, u16, Slice), Status> {
        if subscribe.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} not supported (this source speaks {PROTOCOL_VERSION})",
                subscribe.protocol_version
            )));
        }
        let key = (subscribe.database.clone(), subscribe.stream);
        let entry = self.databases.read().expect("databases lock").get(&key).cloned();
        let served = entry.ok_or_else(|| {
            Status::not_found(format!(
                "database {:?} has no shard stream {} here",
                subscribe.database, subscribe.stream
            ))
        })?;
        let region = served.region;
        if subscribe.source_region != u32::from(region) {
            return Err(Status::failed_precondition(format!(
                "this is region {region}, not region {}",
                subscribe.source_region
            )));
        }
        let slice = Slice::from_subscribe(subscribe).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if slice.granules != served.granules {
            return Err(Status::failed_precondition(format!(
                "the database is cut into {} granules here, not {}",
                served.granules.count(),
                slice.granules.count()
            )));
        }
        if !slice.meets(&served.held) {
            return Err(Status::failed_precondition(format!(
                "shard stream {} holds granules {:?}, none of the destination's {:?}",
                subscribe.stream, served.held, slice.held
            )));
        }
        let destination =
            u16::try_from(subscribe.destination_region).ok().filter(|&d| d != region).ok_or_else(|| {
                Status::invalid_argument(format!("bad destination region {}", subscribe.destination_region))
            })?;
        Ok((served, destination, slice))
    }
}

#[tonic::async_trait]
impl WanSync for SyncSource {
    type SyncStream = ReceiverStream<Result<v1::SyncResponse, Status>>;

    async fn sync(&self, request: Request<Streaming<v1::SyncRequest>>) -> Result<Response<Self::SyncStream>, Status> {
        let mut requests = request.into_inner();
        let first = tokio::time::timeout(Duration::from_millis(SUBSCRIBE_TIMEOUT_MS), requests.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Subscribe within the timeout"))??
            .ok_or_else(|| Status::invalid_argument("stream closed before Subscribe"))?;
        let Some(sync_request::Kind::Subscribe(subscribe)) = first.kind else {
            return Err(Status::invalid_argument("the first message must be a Subscribe"));
        };
        let (served, destination, slice) = self.admit(&subscribe)?;
        let stats = self.link_stats(&subscribe, destination);
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE_MAX);
        let codec = self.codec;
        tokio::spawn(async move {
            stats.set_state(LinkState::Connecting);
            let mut closed = served.closed.subscribe();
            let stream = serve_stream(&served, destination, &slice, &subscribe, requests, &tx, &stats, codec);
            let result = tokio::select! {
                result = stream => result,
                _ = closed.wait_for(|&closed| closed) => {
                    Err(WanError::Rpc(Status::unavailable("the database is no longer served here")))
                }
            };
            if let Err(error) = result {
                stats.fail(&error.to_string());
                tracing::debug!(destination, database = %subscribe.database, %error, "wan stream ended");
                let status = match error {
                    WanError::Rpc(status) => status,
                    WanError::Protocol(message) => Status::invalid_argument(message),
                    WanError::Closed => Status::cancelled("stream closed"),
                    other => Status::failed_precondition(other.to_string()),
                };
                let _ = tx.send(Err(status)).await;
            }
            stats.set_state(LinkState::Idle);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn send(tx: &Responses, kind: sync_response::Kind) -> Result<(), WanError> {
    tx.send(Ok(v1::SyncResponse { kind: Some(kind) })).await.map_err(|_| WanError::Closed)
}

/// One stream, from Accepted to its end.
#[allow(clippy::too_many_arguments)]
async fn serve_stream(
    served: &Served,
    destination: u16,
    slice: &Slice,
    subscribe: &v1::Subscribe,
    mut requests: Streaming<v1::SyncRequest>,
    tx: &Responses,
    stats: &LinkStats,
    codec: Codec,
) -> Result<(), WanError> {
    let (region, outbound) = (served.region, &served.outbound);
    // A destination holding only some of this shard's granules is sent only
    // theirs (D102).
    let filter = (!slice.covers(&served.held)).then_some(slice);
    let reader = Reporter::new(destination, slice.held.clone());
    let outbox = outbound.outbox();
    // Subscribe before reading, so no append between the read and the wait is missed.
    let mut wake = outbox.subscribe();
    let partial = outbox.covers(subscribe.log_id, subscribe.cursor);
    let snapshot = if partial {
        LinkStats::add(&stats.partial_syncs, 1);
        None
    } else {
        LinkStats::add(&stats.full_syncs, 1);
        stats.set_state(LinkState::FullSync);
        // Taking a snapshot walks the whole keyspace: off the async workers.
        let taker = outbound.clone();
        let snapshot = tokio::task::spawn_blocking(move || taker.snapshot())
            .await
            .map_err(|e| WanError::Local(format!("snapshot task failed: {e}")))?
            .map_err(WanError::Local)?;
        Some(snapshot)
    };
    let start = snapshot.as_ref().map_or(subscribe.cursor, |s| s.resume_offset);
    let accepted = v1::Accepted {
        protocol_version: PROTOCOL_VERSION,
        source_region: u32::from(region),
        log_id: outbox.log_id(),
        mode: if partial { v1::SyncMode::Partial } else { v1::SyncMode::Full } as i32,
        start_offset: start,
    };
    send(tx, sync_response::Kind::Accepted(accepted)).await?;
    if let Some(snapshot) = snapshot {
        send_snapshot(snapshot, filter.cloned(), tx, stats, codec).await?;
    }
    LinkStats::add(&stats.connects, 1);
    stats.set_state(LinkState::Streaming);
    tracing::debug!(destination, database = %subscribe.database, partial, start, "wan stream accepted");

    let mut window = Window::new(start);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
    // A destination that reads zstd streams gets one context for all the
    // stream's batches (D109); one that does not (an older node), a zstd
    // block per large batch.
    let mut stream_zstd = match codec {
        Codec::Zstd if subscribe.zstd_stream => match protocol::StreamCompressor::new() {
            Ok(compressor) => Some(compressor),
            Err(error) => {
                tracing::warn!(%error, "no zstd stream context; compressing batch by batch");
                None
            }
        },
        _ => None,
    };
    loop {
        while window.has_room() {
            let entries = match outbox.read(window.next_to_send(), BATCH_DELTAS_MAX, BATCH_BYTES_MAX) {
                OutboxRead::Entries(entries) if entries.is_empty() => break,
                OutboxRead::Entries(entries) => entries,
                OutboxRead::NotCovered => {
                    return Err(WanError::Rpc(Status::out_of_range(
                        "the destination fell out of the source log while streaming; resubscribe",
                    )));
                }
            };
            let count = entries.len() as u64;
            let (entries, kept) = match filter {
                None => (entries, Vec::new()),
                Some(slice) => protocol::filter_batch(&entries, slice)?,
            };
            let list = protocol::delta_list(&entries);
            let payload = match stream_zstd.as_mut() {
                Some(compressor) => compressor
                    .compress(&list)
                    .map_err(|e| WanError::Local(format!("zstd stream compression failed: {e}")))?,
                None => protocol::compress(list, codec),
            };
            LinkStats::add(&stats.bytes_out_raw, payload.raw_bytes as u64);
            LinkStats::add(&stats.bytes_out_wire, payload.bytes.len() as u64);
            LinkStats::add(&stats.deltas, entries.len() as u64);
            LinkStats::add(&stats.batches, 1);
            let batch = v1::DeltaBatch {
                first_offset: window.next_to_send(),
                count: count as u32,
                compression: payload.compression as i32,
                raw_bytes: payload.raw_bytes as u32,
                payload: payload.bytes,
                source_next_offset: outbox.next_offset(),
                source_wall_ms: meridian_crdt::clock::system_wall_ms(),
                filtered: filter.is_some(),
                kept,
            };
            send(tx, sync_response::Kind::Batch(batch)).await?;
            window.sent(count);
        }
        stats.set_lag(outbox.next_offset().saturating_sub(window.acked()), meridian_crdt::clock::system_wall_ms());
        tokio::select! {
            message = requests.message() => match message? {
                Some(v1::SyncRequest { kind: Some(sync_request::Kind::Ack(ack)) }) => {
                    window.ack(ack.applied_offset)?;
                    outbound.peer_applied(reader, protocol::vector_from_wire(&ack.applied_vector)?);
                }
                Some(_) => return Err(WanError::Protocol("only Acks may follow the Subscribe".into())),
                None => return Ok(()),
            },
            changed = wake.changed() => {
                if changed.is_err() {
                    return Err(WanError::Closed);
                }
            }
            _ = heartbeat.tick() => {
                let beat = v1::Heartbeat {
                    source_next_offset: outbox.next_offset(),
                    source_wall_ms: meridian_crdt::clock::system_wall_ms(),
                };
                send(tx, sync_response::Kind::Heartbeat(beat)).await?;
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Sends a snapshot as chunks of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes
/// (one key larger than that travels alone). Each chunk is an encoded
/// `ShardSnapshot`; concatenated they decode as one (protobuf merges
/// repeated fields), the context travelling in the first. Sorting, encoding
/// and compressing walk every key, so they run on a blocking thread a few
/// chunks ahead of the stream, never on the async workers.
/// With `slice`, only the keys of the destination's granules travel, with
/// the context cut to them (D102).
async fn send_snapshot(
    snapshot: Snapshot,
    slice: Option<Slice>,
    tx: &Responses,
    stats: &LinkStats,
    codec: Codec,
) -> Result<(), WanError> {
    let (chunks_tx, mut chunks) = mpsc::channel::<(v1::SnapshotChunk, usize)>(SNAPSHOT_CHUNKS_AHEAD);
    let encoder = tokio::task::spawn_blocking(move || {
        let emit = |chunk, raw_bytes| chunks_tx.blocking_send((chunk, raw_bytes)).is_ok();
        encode_snapshot_chunks(snapshot, slice.as_ref(), codec, emit)
    });
    while let Some((chunk, raw_bytes)) = chunks.recv().await {
        LinkStats::add(&stats.bytes_out_raw, raw_bytes as u64);
        LinkStats::add(&stats.bytes_out_wire, chunk.payload.len() as u64);
        // On an error the receiver is dropped and the encoder stops at its next chunk.
        send(tx, sync_response::Kind::SnapshotChunk(chunk)).await?;
    }
    encoder.await.map_err(|e| WanError::Local(format!("snapshot encoder failed: {e}")))
}

/// Chunks a snapshot may be encoded ahead of the stream.
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// Encodes and compresses `snapshot` chunk by chunk, handing each to `emit`
/// (with its uncompressed size) until `emit` returns false.
fn encode_snapshot_chunks(
    mut snapshot: Snapshot,
    slice: Option<&Slice>,
    codec: Codec,
    mut emit: impl FnMut(v1::SnapshotChunk, usize) -> bool,
) {
    if let Some(slice) = slice {
        slice.project(&mut snapshot.context);
        snapshot.keys.retain(|key| slice.holds_key(key));
    }
    let mut chunk = meridian_proto::convert::encode_snapshot_parts(&snapshot.context, &[]);
    let mut index = 0u32;
    let mut keys = snapshot.keys.into_sorted().peekable();
    let mut next = Vec::new();
    loop {
        next.clear();
        if let Some(key) = keys.peek() {
            meridian_proto::convert::encode_snapshot_key(key, &mut next);
        }
        let last = keys.peek().is_none();
        let full = !last && !chunk.is_empty() && chunk.len() + next.len() > SNAPSHOT_CHUNK_BYTES_MAX;
        if last || full {
            let payload = protocol::compress(Bytes::from(std::mem::take(&mut chunk)), codec);
            let raw_bytes = payload.raw_bytes;
            let message = v1::SnapshotChunk {
                index,
                last,
                compression: payload.compression as i32,
                raw_bytes: payload.raw_bytes as u32,
                payload: payload.bytes,
            };
            if !emit(message, raw_bytes) || last {
                return;
            }
            index += 1;
        }
        chunk.extend_from_slice(&next);
        keys.next();
    }
}
