//! The destination side of WAN sync: a [`Link`] dials one source region for
//! one database, applies what it streams and keeps the cursor.
//!
//! The link runs as one task: connect, Subscribe with the persisted cursor,
//! take a snapshot if the source says so, then apply batches in offset order,
//! persisting the cursor after each and acknowledging it. Every timestamp
//! received is shown to the local clock first ([`Inbound::observe`]: clamped
//! and counted when too far ahead, invariant 5). Any error ends the stream;
//! the link waits a jittered [`Backoff`] and resubscribes from the persisted
//! cursor, so a reconnect loses nothing and redelivers at most what was
//! applied after the last persisted cursor (harmless by idempotence, and
//! counted).

use std::sync::{Arc, RwLock, TryLockError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_crdt::clock::{Observation, system_wall_ms};
use meridian_crdt::{ClockError, Delta, ReplicaId};
use meridian_proto::v1::wan_sync_client::WanSyncClient;
use meridian_proto::v1::{self, sync_request, sync_response};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;
use crate::error::WanError;
use crate::inbound::Inbound;
use crate::protocol::{
    self, BatchPlan, Cursor, IDLE_TIMEOUT_MS, MESSAGE_BYTES_MAX, PROTOCOL_VERSION, RESPONSE_QUEUE_MAX,
    SNAPSHOT_BYTES_MAX_DEFAULT, Slice, Source,
};
use crate::stats::{LinkState, LinkStats};
use crate::tls::SyncTls;

/// Default time to establish a connection.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// How often a batch waiting for another link's snapshot merge looks again.
const MERGE_WAIT_POLL: Duration = Duration::from_millis(2);

/// What one link connects to and how.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The database, by its cluster-wide name.
    pub database: String,
    /// This region.
    pub local_region: u16,
    /// The region streamed from.
    pub source_region: u16,
    /// The source's sync endpoint, `http://host:port`.
    pub endpoint: String,
    /// The source shard's stream within the source region's instance (0 for
    /// an instance of one shard).
    pub stream: u32,
    /// The granules this region's shard holds (D102): a source holding
    /// others ships only the deltas of these.
    pub slice: Slice,
    /// This shard's index in this region's instance (monitoring).
    pub destination_stream: u32,
    /// Largest snapshot accepted, in encoded bytes.
    pub snapshot_bytes_max: usize,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Silence after which the stream is dropped.
    pub idle_timeout: Duration,
    /// Seed of the reconnect backoff's jitter.
    pub backoff_seed: u64,
    /// Backoff bounds (ms): smallest and largest cap.
    pub backoff_ms: (u64, u64),
    /// Mutual TLS with the source (`endpoint` is then `https://`).
    pub tls: Option<SyncTls>,
}

impl LinkConfig {
    /// A link with the default bounds.
    pub fn new(database: &str, local_region: u16, source_region: u16, endpoint: String) -> LinkConfig {
        LinkConfig {
            database: database.to_owned(),
            local_region,
            source_region,
            endpoint,
            stream: 0,
            slice: Slice::whole(),
            destination_stream: 0,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS),
            backoff_seed: (u64::from(local_region) << 16) | u64::from(source_region),
            backoff_ms: (crate::backoff::BACKOFF_BASE_MS, crate::backoff::BACKOFF_MAX_MS),
            tls: None,
        }
    }

    /// The source streamed from: the source region's shard stream.
    pub fn source(&self) -> Source {
        Source { region: self.source_region, stream: self.stream }
    }
}

/// A running link: the task and its counters.
pub struct Link {
    task: JoinHandle<()>,
    stats: Arc<LinkStats>,
    stop: watch::Sender<bool>,
}

impl Link {
    /// Starts a link applying `config.source_region`'s deltas to `inbound`.
    pub fn spawn(config: LinkConfig, inbound: Arc<dyn Inbound>) -> Link {
        let stats = Arc::new(LinkStats::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(config, inbound, stats.clone(), stopped));
        Link { task, stats, stop }
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Stops the link and waits for its task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(config: LinkConfig, inbound: Arc<dyn Inbound>, stats: Arc<LinkStats>, mut stopped: watch::Receiver<bool>) {
    let mut backoff = Backoff::with_bounds(config.backoff_seed, config.backoff_ms.0, config.backoff_ms.1);
    loop {
        stats.set_state(LinkState::Connecting);
        let result = tokio::select! {
            result = session(&config, &inbound, &stats, &mut backoff) => result,
            _ = stopped.changed() => break,
        };
        let error = match result {
            Ok(()) => WanError::Closed,
            Err(error) => error,
        };
        tracing::debug!(source = config.source_region, database = %config.database, %error, "wan link down");
        stats.fail(&error.to_string());
        stats.set_state(LinkState::Backoff);
        let delay = backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => break,
        }
    }
    stats.set_state(LinkState::Idle);
}

/// The requests of one stream and the state it keeps.
struct Session<'a> {
    config: &'a LinkConfig,
    inbound: &'a Arc<dyn Inbound>,
    stats: &'a LinkStats,
    requests: mpsc::Sender<v1::SyncRequest>,
    responses: Streaming<v1::SyncResponse>,
    cursor: Cursor,
    /// The zstd context of the stream's `COMPRESSION_ZSTD_STREAM` batches
    /// (made at the first; a new session starts a new one, as does the
    /// source).
    stream_zstd: Option<protocol::StreamDecompressor>,
}

async fn session(
    config: &LinkConfig,
    inbound: &Arc<dyn Inbound>,
    stats: &LinkStats,
    backoff: &mut Backoff,
) -> Result<(), WanError> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| WanError::Protocol(format!("bad endpoint {:?}: {e}", config.endpoint)))?
        .connect_timeout(config.connect_timeout);
    if let Some(tls) = &config.tls {
        endpoint = endpoint.tls_config(tls.client_config())?;
    }
    let channel = endpoint.connect().await?;
    let mut client = WanSyncClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX);
    let cursor = inbound.load_cursor(config.source()).unwrap_or_default();
    let whole = config.slice == Slice::whole();
    let (requests, outgoing) = mpsc::channel(RESPONSE_QUEUE_MAX);
    let subscribe = v1::Subscribe {
        protocol_version: PROTOCOL_VERSION,
        database: config.database.clone(),
        source_region: u32::from(config.source_region),
        destination_region: u32::from(config.local_region),
        log_id: cursor.log_id,
        cursor: cursor.offset,
        stream: config.stream,
        granules: if whole { 0 } else { u32::from(config.slice.granules.count()) },
        first_granule: u32::from(config.slice.held.start),
        end_granule: if whole { 0 } else { u32::from(config.slice.held.end) },
        destination_stream: config.destination_stream,
        zstd_stream: true,
    };
    requests
        .send(v1::SyncRequest { kind: Some(sync_request::Kind::Subscribe(subscribe)) })
        .await
        .map_err(|_| WanError::Closed)?;
    let responses = tokio::time::timeout(config.idle_timeout, client.sync(ReceiverStream::new(outgoing)))
        .await
        .map_err(|_| WanError::Idle(config.idle_timeout.as_millis() as u64))??
        .into_inner();
    let mut session = Session { config, inbound, stats, requests, responses, cursor, stream_zstd: None };
    session.run(backoff).await
}

impl Session<'_> {
    async fn next(&mut self) -> Result<sync_response::Kind, WanError> {
        self.next_within(self.config.idle_timeout).await
    }

    async fn next_within(&mut self, limit: Duration) -> Result<sync_response::Kind, WanError> {
        let message = tokio::time::timeout(limit, self.responses.message())
            .await
            .map_err(|_| WanError::Idle(limit.as_millis() as u64))??
            .ok_or(WanError::Closed)?;
        message.kind.ok_or_else(|| WanError::Protocol("empty response".into()))
    }

    async fn run(&mut self, backoff: &mut Backoff) -> Result<(), WanError> {
        let accept_timeout = self.config.idle_timeout.max(Duration::from_millis(protocol::ACCEPT_TIMEOUT_MS));
        let sync_response::Kind::Accepted(accepted) = self.next_within(accept_timeout).await? else {
            return Err(WanError::Protocol("the first response must be Accepted".into()));
        };
        if accepted.protocol_version != PROTOCOL_VERSION
            || accepted.source_region != u32::from(self.config.source_region)
            || accepted.log_id == 0
        {
            return Err(WanError::Protocol(format!("unexpected Accepted {accepted:?}")));
        }
        backoff.reset();
        LinkStats::add(&self.stats.connects, 1);
        match v1::SyncMode::try_from(accepted.mode) {
            Ok(v1::SyncMode::Partial) => {
                let fresh = self.cursor == Cursor::default();
                if (accepted.log_id != self.cursor.log_id && !fresh) || accepted.start_offset != self.cursor.offset {
                    return Err(WanError::Protocol("partial sync from another position than the cursor".into()));
                }
                self.cursor.log_id = accepted.log_id;
                LinkStats::add(&self.stats.partial_syncs, 1);
            }
            Ok(v1::SyncMode::Full) => {
                LinkStats::add(&self.stats.full_syncs, 1);
                self.stats.set_state(LinkState::FullSync);
                self.full_sync(Cursor { log_id: accepted.log_id, offset: accepted.start_offset }).await?;
            }
            _ => return Err(WanError::Protocol(format!("unknown sync mode {}", accepted.mode))),
        }
        self.stats.set_state(LinkState::Streaming);
        loop {
            match self.next().await? {
                sync_response::Kind::Batch(batch) => self.apply_batch(batch).await?,
                sync_response::Kind::Heartbeat(beat) => {
                    self.stats.set_lag(beat.source_next_offset.saturating_sub(self.cursor.offset), system_wall_ms());
                }
                _ => return Err(WanError::Protocol("only batches and heartbeats may follow".into())),
            }
        }
    }

    /// Receives the snapshot chunks, joins the snapshot, and moves the cursor
    /// to `resume`.
    async fn full_sync(&mut self, resume: Cursor) -> Result<(), WanError> {
        let mut buffer = BytesMut::new();
        let mut index = 0u32;
        loop {
            let sync_response::Kind::SnapshotChunk(chunk) = self.next().await? else {
                return Err(WanError::Protocol("a full sync sends snapshot chunks first".into()));
            };
            if chunk.index != index {
                return Err(WanError::Protocol(format!("snapshot chunk {} where {index} was due", chunk.index)));
            }
            LinkStats::add(&self.stats.bytes_in_wire, chunk.payload.len() as u64);
            // A chunk holds one key beyond the chunk bound at most: allow the message bound.
            let raw = protocol::decompress(chunk.payload, chunk.compression, chunk.raw_bytes, MESSAGE_BYTES_MAX)?;
            LinkStats::add(&self.stats.bytes_in_raw, raw.len() as u64);
            if buffer.len() + raw.len() > self.config.snapshot_bytes_max {
                return Err(WanError::Protocol(format!(
                    "snapshot over the bound of {} bytes",
                    self.config.snapshot_bytes_max
                )));
            }
            buffer.extend_from_slice(&raw);
            index += 1;
            if chunk.last {
                break;
            }
        }
        // Decoding and merging walk every key: on blocking threads, never on
        // the async workers. The replica id only names who would write
        // locally: the snapshot is read, never written.
        let (snapshot, max_hlc) = tokio::task::spawn_blocking(move || {
            meridian_proto::decode_snapshot_shared(ReplicaId(u16::MAX), buffer.freeze()).map(|snapshot| {
                let max_hlc = snapshot.max_hlc();
                (snapshot, max_hlc)
            })
        })
        .await
        .map_err(|e| WanError::Local(format!("snapshot decoder failed: {e}")))??;
        if let Some(hlc) = max_hlc {
            self.observe(hlc)?;
        }
        let inbound = self.inbound.clone();
        let merged = tokio::task::spawn_blocking(move || inbound.apply_snapshot(&snapshot))
            .await
            .map_err(|e| WanError::Local(format!("snapshot merge failed: {e}")))?
            .map_err(WanError::Local)?;
        LinkStats::add(&self.stats.snapshot_lists_kept, merged.lists_kept as u64);
        self.advance(resume).await
    }

    async fn apply_batch(&mut self, batch: v1::DeltaBatch) -> Result<(), WanError> {
        let count = u64::from(batch.count);
        let skip = match self.cursor.plan(batch.first_offset, count) {
            BatchPlan::Apply { skip } => skip,
            BatchPlan::Gap { expected } => {
                return Err(WanError::Protocol(format!(
                    "batch from offset {} where {expected} was due",
                    batch.first_offset
                )));
            }
        };
        LinkStats::add(&self.stats.bytes_in_wire, batch.payload.len() as u64);
        let raw: Bytes = if batch.compression == v1::Compression::ZstdStream as i32 {
            // The stream's one context, made at its first such batch.
            let decompressor = match &mut self.stream_zstd {
                Some(decompressor) => decompressor,
                None => self.stream_zstd.insert(protocol::StreamDecompressor::new()?),
            };
            decompressor.decompress(&batch.payload, batch.raw_bytes, MESSAGE_BYTES_MAX)?
        } else {
            protocol::decompress(batch.payload, batch.compression, batch.raw_bytes, MESSAGE_BYTES_MAX)?
        };
        LinkStats::add(&self.stats.bytes_in_raw, raw.len() as u64);
        let deltas = protocol::decode_delta_list(raw)?;
        // A filtered batch holds the deltas of this shard's granules only,
        // each with its offset in the batch (D102).
        let first_fresh = if batch.filtered {
            protocol::fresh_of_filtered(&batch.kept, deltas.len(), count, skip)?
        } else if deltas.len() as u64 != count {
            return Err(WanError::Protocol(format!("batch of {} deltas announced as {count}", deltas.len())));
        } else {
            skip
        };
        let fresh: &[Delta] = &deltas[first_fresh..];
        self.observe_batch(fresh)?;
        if !fresh.is_empty() {
            // Another link's snapshot merge in steps keeps peers' deltas
            // out until it ends: waited for here without holding a worker.
            let applied = loop {
                if let Some(applied) = self.apply_unless_merging(fresh) {
                    break applied;
                }
                tokio::time::sleep(MERGE_WAIT_POLL).await;
            };
            applied.map_err(WanError::Local)?;
        }
        LinkStats::add(&self.stats.deltas, fresh.len() as u64);
        LinkStats::add(&self.stats.deltas_redelivered, first_fresh as u64);
        LinkStats::add(&self.stats.batches, 1);
        let next = Cursor { log_id: self.cursor.log_id, offset: batch.first_offset + count };
        self.stats.set_lag(batch.source_next_offset.saturating_sub(next.offset), system_wall_ms());
        self.advance(next).await
    }

    /// Applies `deltas` holding the inbound side's merge gate shared, or
    /// answers `None` at once if a snapshot merge holds (or waits for) it.
    fn apply_unless_merging(&self, deltas: &[Delta]) -> Option<Result<(), String>> {
        let _no_merge = match self.inbound.merge_gate().map(RwLock::try_read) {
            None => None,
            Some(Ok(guard)) => Some(guard),
            Some(Err(TryLockError::Poisoned(poisoned))) => Some(poisoned.into_inner()),
            Some(Err(TryLockError::WouldBlock)) => return None,
        };
        Some(self.inbound.apply(deltas))
    }

    /// Shows the clock a batch's timestamps (invariant 5) before it is
    /// applied. Every timestamp is checked, but the clock is shown only the
    /// newest: moving past it moves past all (one clock reading and one
    /// shard lock per batch, not per delta). If the newest is beyond the
    /// allowed skew, the others are shown one by one, so that each clamped
    /// timestamp is counted.
    fn observe_batch(&self, deltas: &[Delta]) -> Result<(), WanError> {
        let (mut newest, mut invalid) = (None::<u64>, None::<u64>);
        for delta in deltas {
            delta.for_each_hlc(|hlc| {
                if !meridian_crdt::clock::is_valid_hlc(hlc) {
                    invalid.get_or_insert(hlc);
                }
                newest = newest.max(Some(hlc));
            });
        }
        if let Some(hlc) = invalid {
            return Err(WanError::Protocol(format!("bad peer timestamp: {}", ClockError::InvalidTimestamp(hlc))));
        }
        let Some(newest) = newest else {
            return Ok(());
        };
        if !self.observe(newest)? {
            return Ok(());
        }
        let mut result = Ok(());
        let mut newest_seen = false;
        for delta in deltas {
            delta.for_each_hlc(|hlc| {
                if hlc == newest && !newest_seen {
                    newest_seen = true; // Shown and counted above.
                } else if result.is_ok() {
                    result = self.observe(hlc).map(|_| ());
                }
            });
        }
        result
    }

    /// Shows the clock one peer timestamp; counts a clamp. True if it was
    /// clamped.
    fn observe(&self, hlc: u64) -> Result<bool, WanError> {
        match self.inbound.observe(hlc) {
            Ok(Observation::Applied) => Ok(false),
            Ok(Observation::Clamped { .. }) => {
                LinkStats::add(&self.stats.clamped_timestamps, 1);
                Ok(true)
            }
            Err(error) => Err(WanError::Protocol(format!("bad peer timestamp: {error}"))),
        }
    }

    /// Persists the cursor and acknowledges it with the applied vector.
    async fn advance(&mut self, cursor: Cursor) -> Result<(), WanError> {
        self.inbound.store_cursor(self.config.source(), cursor).map_err(WanError::Local)?;
        self.cursor = cursor;
        let ack = v1::Ack {
            applied_offset: cursor.offset,
            applied_vector: protocol::vector_to_wire(&self.inbound.applied_vector()),
        };
        self.requests
            .send(v1::SyncRequest { kind: Some(sync_request::Kind::Ack(ack)) })
            .await
            .map_err(|_| WanError::Closed)
    }
}
