//! The sync protocol's rules without I/O: limits, batch encoding and
//! compression, the source's unacknowledged window and the destination's
//! cursor. The gRPC source ([`crate::source`]) and sink ([`crate::sink`])
//! only move messages; every decision they make is a call into this module,
//! so it is tested here without a network (STYLE.md §1).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use meridian_crdt::slot::Granules;
use meridian_crdt::{CausalContext, Delta, Dot, ReplicaId, VersionVector};
use meridian_proto::v1;
use prost::Message;

use crate::error::WanError;

/// The protocol version this crate speaks (`sync.proto`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest gRPC message either side decodes (tonic's
/// `max_decoding_message_size`); a larger one fails the stream.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Deltas in one batch at most.
pub const BATCH_DELTAS_MAX: usize = 4_096;
/// Encoded bytes of one batch's deltas at most (before compression); one
/// delta larger than this travels alone.
pub const BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Batches sent and not yet acknowledged at most: the source stops reading
/// its log while this many are in flight (backpressure).
pub const IN_FLIGHT_BATCHES_MAX: usize = 8;
/// Payloads at least this large are compressed with zstd.
pub const COMPRESS_MIN_BYTES: usize = 4 * 1024;
/// zstd level: fast, most of the gain on repetitive deltas.
pub const ZSTD_LEVEL: i32 = 3;
/// Encoded bytes of one snapshot chunk at most (before compression).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
// A chunk, and a batch, always fit in one message.
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX <= MESSAGE_BYTES_MAX && BATCH_BYTES_MAX <= MESSAGE_BYTES_MAX);

/// Encoded bytes of a whole snapshot a destination accepts at most.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// Responses queued for one stream at most (the gRPC send buffer).
pub const RESPONSE_QUEUE_MAX: usize = 4;
/// How long a source waits for the Subscribe that opens a stream.
pub const SUBSCRIBE_TIMEOUT_MS: u64 = 10_000;
/// Heartbeat period of an idle stream (lag accounting, dead-peer detection).
pub const HEARTBEAT_MS: u64 = 1_000;
/// Concurrent streams on one connection at most (HTTP/2): a peer has one
/// stream per database it syncs, so this bounds what one connection can open.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// A destination that hears nothing for this long drops the stream.
pub const IDLE_TIMEOUT_MS: u64 = 10 * HEARTBEAT_MS;
/// How long a destination waits for Accepted: a source answers a full sync
/// only once it has taken the snapshot (a walk of the whole keyspace, and
/// the local replica's ack), so the idle bound would drop the stream and
/// make it start over on a large database.
pub const ACCEPT_TIMEOUT_MS: u64 = 6 * IDLE_TIMEOUT_MS;

/// One source a destination shard reads: a shard stream of a peer region
/// (stream 0 for an instance of one shard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The peer region.
    pub region: u16,
    /// The shard stream within the peer's instance.
    pub stream: u32,
}

impl Source {
    /// The only stream of `region`'s instance of one shard.
    pub fn region(region: u16) -> Source {
        Source { region, stream: 0 }
    }
}

/// A destination's position in one source's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The source log incarnation (0: none yet, a full sync is needed).
    pub log_id: u64,
    /// The next offset wanted; every offset below is applied.
    pub offset: u64,
}

impl Cursor {
    /// A cursor no log covers: a destination that stores it takes a full
    /// sync (snapshot) at its next connection — after an instance left,
    /// whose deltas may have reached some regions and not others.
    pub const RESYNC: Cursor = Cursor { log_id: 0, offset: 1 };
}

/// What a destination does with a batch `[first, first + count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchPlan {
    /// Apply the deltas from index `skip` on (the first `skip` were applied
    /// before: redelivered, harmless by idempotence, counted).
    Apply {
        /// Deltas at the front already applied.
        skip: usize,
    },
    /// The batch leaves a hole after the cursor: a protocol error.
    Gap {
        /// The offset the destination expected.
        expected: u64,
    },
}

impl Cursor {
    /// How a batch starting at `first` with `count` deltas relates to this cursor.
    pub fn plan(&self, first: u64, count: u64) -> BatchPlan {
        if first > self.offset {
            return BatchPlan::Gap { expected: self.offset };
        }
        let skip = (self.offset - first).min(count) as usize;
        BatchPlan::Apply { skip }
    }
}

/// The source's window of sent, unacknowledged batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Everything below is acknowledged.
    acked: u64,
    /// The next offset to send.
    sent: u64,
    /// End offsets of the batches in flight, oldest first.
    in_flight: std::collections::VecDeque<u64>,
}

impl Window {
    /// A window starting at `offset` (nothing in flight).
    pub fn new(offset: u64) -> Window {
        Window { acked: offset, sent: offset, in_flight: Default::default() }
    }

    /// The next offset to send.
    pub fn next_to_send(&self) -> u64 {
        self.sent
    }

    /// Everything below is acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// True if another batch may be sent.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < IN_FLIGHT_BATCHES_MAX
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records a batch of `count` deltas sent from [`Window::next_to_send`].
    pub fn sent(&mut self, count: u64) {
        assert!(self.has_room(), "a batch sent with the window full");
        assert!(count > 0, "an empty batch");
        self.sent += count;
        self.in_flight.push_back(self.sent);
        debug_assert_eq!(self.validate(), Ok(()));
    }

    /// Checks the window's invariants: acknowledged ≤ sent, at most
    /// [`IN_FLIGHT_BATCHES_MAX`] batches in flight, their ends increasing
    /// within (acknowledged, sent], the last one at sent.
    pub fn validate(&self) -> Result<(), String> {
        if self.acked > self.sent {
            return Err(format!("acknowledged {} beyond sent {}", self.acked, self.sent));
        }
        if self.in_flight.len() > IN_FLIGHT_BATCHES_MAX {
            return Err(format!("{} batches in flight", self.in_flight.len()));
        }
        let mut previous = self.acked;
        for &end in &self.in_flight {
            if end <= previous || end > self.sent {
                return Err(format!("batch end {end} out of order"));
            }
            previous = end;
        }
        if self.in_flight.back().is_some_and(|&end| end != self.sent) {
            return Err("the newest batch does not end at sent".into());
        }
        Ok(())
    }

    /// An acknowledgement that everything below `applied` is applied. It
    /// must not go backwards nor beyond what was sent.
    pub fn ack(&mut self, applied: u64) -> Result<(), WanError> {
        if applied < self.acked || applied > self.sent {
            return Err(WanError::Protocol(format!(
                "ack of offset {applied} outside the window [{}, {}]",
                self.acked, self.sent
            )));
        }
        self.acked = applied;
        while self.in_flight.front().is_some_and(|&end| end <= applied) {
            self.in_flight.pop_front();
        }
        debug_assert_eq!(self.validate(), Ok(()));
        Ok(())
    }
}

/// A payload ready to send: bytes, how they are compressed, the raw size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// The bytes on the wire.
    pub bytes: Bytes,
    /// How they are compressed.
    pub compression: v1::Compression,
    /// Size before compression.
    pub raw_bytes: usize,
}

/// How a source compresses what it sends (the destination reads whatever
/// each payload says it is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Codec {
    /// zstd for payloads large enough that it pays (the default).
    #[default]
    Zstd,
    /// gzip (DEFLATE), for peers or tools that expect it.
    Gzip,
    /// Nothing compressed (links where CPU matters more than bandwidth).
    None,
}

impl Codec {
    /// `zstd`, `gzip` or `none`.
    pub fn parse(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "zstd" => Some(Codec::Zstd),
            "gzip" => Some(Codec::Gzip),
            "none" => Some(Codec::None),
            _ => None,
        }
    }
}

/// zstd window of a stream's context (`COMPRESSION_ZSTD_STREAM`): 256 KiB,
/// enough for the batches before to serve as the dictionary of the next,
/// and small enough to keep per stream (about 1.3 MB a source context).
pub const STREAM_WINDOW_LOG: u32 = 18;

/// The largest window a destination accepts from a stream's zstd frame
/// (memory a hostile source could make it hold).
const STREAM_WINDOW_LOG_MAX: u32 = 20;

/// zstd level of a stream's context: 1. Measured on SET-like deltas
/// (release, one core): level 1 compresses a one-delta batch in 0.95 µs
/// and a 1,000-delta batch in 81 µs at 12.3 bytes a delta; level 3 with
/// the same window took 2.3 µs and 726 µs at 14.0 bytes (per-batch level 3
/// zstd: 105 µs, 13.5 bytes).
pub const STREAM_ZSTD_LEVEL: i32 = 1;

/// A source stream's zstd context, kept across its batches
/// (`COMPRESSION_ZSTD_STREAM`, D109): each batch is compressed with every
/// batch before it as its history and flushed, so that even a batch of one
/// delta compresses (its key's prefix, its tag's replica id and high
/// timestamp bytes are in the window) — at low write rates a batch holds a
/// few deltas, which alone compress to about nothing.
pub struct StreamCompressor(zstd::stream::raw::Encoder<'static>);

impl StreamCompressor {
    /// A context at [`STREAM_ZSTD_LEVEL`] with a [`STREAM_WINDOW_LOG`] window.
    pub fn new() -> std::io::Result<StreamCompressor> {
        let mut encoder = zstd::stream::raw::Encoder::new(STREAM_ZSTD_LEVEL)?;
        encoder.set_parameter(zstd::zstd_safe::CParameter::WindowLog(STREAM_WINDOW_LOG))?;
        Ok(StreamCompressor(encoder))
    }

    /// The next batch's payload: `raw` compressed and flushed. An empty
    /// batch (a filtered one that kept nothing) goes uncompressed, leaving
    /// the context as it was.
    pub fn compress(&mut self, raw: &[u8]) -> std::io::Result<Payload> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        if raw.is_empty() {
            return Ok(Payload { bytes: Bytes::new(), compression: v1::Compression::None, raw_bytes: 0 });
        }
        let mut out: Vec<u8> = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()) + 64);
        let mut input = InBuffer::around(raw);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let at = out.len();
            let mut output = OutBuffer::around_pos(&mut out, at);
            if input.pos() < raw.len() {
                self.0.run(&mut input, &mut output)?;
            } else if self.0.flush(&mut output)? == 0 {
                break;
            }
        }
        Ok(Payload { bytes: Bytes::from(out), compression: v1::Compression::ZstdStream, raw_bytes: raw.len() })
    }
}

/// A destination stream's zstd context for `COMPRESSION_ZSTD_STREAM`
/// batches, which it must see in order, every one.
pub struct StreamDecompressor(zstd::stream::raw::Decoder<'static>);

impl StreamDecompressor {
    /// A context accepting windows up to 1 MiB.
    pub fn new() -> Result<StreamDecompressor, WanError> {
        let mut decoder = zstd::stream::raw::Decoder::new().map_err(|e| WanError::Local(e.to_string()))?;
        decoder
            .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(STREAM_WINDOW_LOG_MAX))
            .map_err(|e| WanError::Local(e.to_string()))?;
        Ok(StreamDecompressor(decoder))
    }

    /// The raw bytes of the next batch's payload, refusing one that claims
    /// more than `raw_max` bytes or decompresses to another size than
    /// `raw_bytes`.
    pub fn decompress(&mut self, bytes: &[u8], raw_bytes: u32, raw_max: usize) -> Result<Bytes, WanError> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let raw_bytes = raw_bytes as usize;
        if raw_bytes > raw_max {
            return Err(WanError::Protocol(format!("payload of {raw_bytes} bytes over the bound of {raw_max}")));
        }
        // One byte more than announced: a payload that fills it is too long.
        let mut out: Vec<u8> = Vec::with_capacity(raw_bytes + 1);
        let mut input = InBuffer::around(bytes);
        let bad = |e: std::io::Error| WanError::Protocol(format!("bad zstd stream payload: {e}"));
        while input.pos() < bytes.len() && out.len() <= raw_bytes {
            let before = (input.pos(), out.len());
            let mut output = OutBuffer::around_pos(&mut out, before.1);
            self.0.run(&mut input, &mut output).map_err(bad)?;
            let after = (input.pos(), output.pos());
            if after == before {
                break;
            }
        }
        // Whatever the flushed blocks still hold comes out now (a payload
        // that filled its announced size holds nothing more, or is caught
        // by the next one).
        if out.len() < raw_bytes {
            let at = out.len();
            let mut output = OutBuffer::around_pos(&mut out, at);
            self.0.flush(&mut output).map_err(bad)?;
        }
        if input.pos() < bytes.len() || out.len() > raw_bytes {
            return Err(WanError::Protocol(format!("zstd stream payload longer than the {raw_bytes} bytes announced")));
        }
        if out.len() != raw_bytes {
            return Err(WanError::Protocol(format!(
                "zstd stream payload of {} bytes, {raw_bytes} announced",
                out.len()
            )));
        }
        Ok(Bytes::from(out))
    }
}

/// Compresses `raw` with `codec` when it is large enough and compression pays.
pub fn compress(raw: Bytes, codec: Codec) -> Payload {
    let raw_bytes = raw.len();
    if raw_bytes >= COMPRESS_MIN_BYTES {
        let packed = match codec {
            Codec::Zstd => zstd::bulk::compress(&raw, ZSTD_LEVEL).ok().map(|p| (p, v1::Compression::Zstd)),
            Codec::Gzip => gzip(&raw).ok().map(|p| (p, v1::Compression::Gzip)),
            Codec::None => None,
        };
        if let Some((packed, compression)) = packed
            && packed.len() < raw_bytes
        {
            return Payload { bytes: Bytes::from(packed), compression, raw_bytes };
        }
    }
    Payload { bytes: raw, compression: v1::Compression::None, raw_bytes }
}

fn gzip(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), flate2::Compression::fast());
    encoder.write_all(raw)?;
    encoder.finish()
}

/// Inflates a gzip payload, reading at most `raw_max + 1` bytes so that a
/// bomb is caught by the size check instead of filling memory.
fn gunzip(packed: &[u8], raw_max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(packed).take(raw_max as u64 + 1).read_to_end(&mut raw)?;
    Ok(raw)
}

/// The raw bytes of a received payload, refusing one that claims or
/// decompresses to more than `raw_max` bytes or to another size than claimed.
pub fn decompress(bytes: Bytes, compression: i32, raw_bytes: u32, raw_max: usize) -> Result<Bytes, WanError> {
    let raw_bytes = raw_bytes as usize;
    if raw_bytes > raw_max {
        return Err(WanError::Protocol(format!("payload of {raw_bytes} bytes over the bound of {raw_max}")));
    }
    let raw = match v1::Compression::try_from(compression) {
        Ok(v1::Compression::None) => bytes,
        Ok(v1::Compression::Zstd) => Bytes::from(
            zstd::bulk::decompress(&bytes, raw_bytes)
                .map_err(|e| WanError::Protocol(format!("bad zstd payload: {e}")))?,
        ),
        Ok(v1::Compression::Gzip) => {
            Bytes::from(gunzip(&bytes, raw_bytes).map_err(|e| WanError::Protocol(format!("bad gzip payload: {e}")))?)
        }
        Ok(v1::Compression::ZstdStream) => {
            return Err(WanError::Protocol("a zstd stream payload outside a stream's batches".into()));
        }
        Err(_) => return Err(WanError::Protocol(format!("unknown compression {compression}"))),
    };
    if raw.len() != raw_bytes {
        return Err(WanError::Protocol(format!("payload of {} bytes, {raw_bytes} announced", raw.len())));
    }
    Ok(raw)
}

/// Encodes already encoded wire `Delta`s as one `DeltaList` by framing each
/// as field 1 (no decode, no re-encode).
pub fn delta_list(encoded: &[Bytes]) -> Bytes {
    let len: usize = encoded.iter().map(|d| 1 + prost::length_delimiter_len(d.len()) + d.len()).sum();
    let mut out = BytesMut::with_capacity(len);
    for delta in encoded {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(delta.len() as u64, &mut out);
        out.put_slice(delta);
    }
    out.freeze()
}

/// Decodes a `DeltaList` into deltas (total: errors, never panics).
pub fn decode_delta_list(raw: Bytes) -> Result<Vec<Delta>, WanError> {
    let list = v1::DeltaList::decode(raw).map_err(|e| WanError::Protocol(format!("malformed delta list: {e}")))?;
    list.deltas.iter().map(|d| meridian_proto::delta_from_wire(d).map_err(WanError::Decode)).collect()
}

/// The granules one stream carries (D102): the database's cut, and the run
/// of granules the destination shard holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    /// How the database's slots are cut.
    pub granules: Granules,
    /// The granules the destination holds.
    pub held: Range<u16>,
}

impl Slice {
    /// A database of one granule, held whole.
    pub fn whole() -> Slice {
        Slice { granules: Granules::ONE, held: 0..1 }
    }

    /// The slice a Subscribe asks for (no granules named: the whole
    /// database); an empty run or one past the granules is refused.
    pub fn from_subscribe(subscribe: &v1::Subscribe) -> Result<Slice, WanError> {
        if subscribe.granules == 0 {
            return Ok(Slice::whole());
        }
        let count = u16::try_from(subscribe.granules).map_err(|_| WanError::Protocol("too many granules".into()))?;
        let granules = Granules::new(count).map_err(WanError::Protocol)?;
        let (first, end) = (subscribe.first_granule, subscribe.end_granule);
        if first >= end || end > subscribe.granules {
            return Err(WanError::Protocol(format!("bad granule run {first}..{end} of {count}")));
        }
        Ok(Slice { granules, held: first as u16..end as u16 })
    }

    /// True if the destination holds every granule of `run` (it needs no
    /// filtering of a source holding `run`).
    pub fn covers(&self, run: &Range<u16>) -> bool {
        self.held.start <= run.start && run.end <= self.held.end
    }

    /// True if the run of granules `run` meets the destination's.
    pub fn meets(&self, run: &Range<u16>) -> bool {
        self.held.start.max(run.start) < self.held.end.min(run.end)
    }

    /// True if the destination holds `key`.
    pub fn holds_key(&self, key: &[u8]) -> bool {
        self.held.contains(&self.granules.of_key(key))
    }

    /// Cuts `context` to the replica ids of the destination's granules.
    pub fn project(&self, context: &mut CausalContext) {
        let (granules, held) = (self.granules, &self.held);
        context.retain(|replica| held.contains(&granules.of_replica(replica)));
    }
}

/// What a destination holding `slice` takes of a batch of encoded deltas:
/// the deltas of its granules as they are, and flushes with their context
/// cut to its granules; with each, its index in `encoded`.
pub fn filter_batch(encoded: &[Bytes], slice: &Slice) -> Result<(Vec<Bytes>, Vec<u32>), WanError> {
    let (mut kept, mut offsets) = (Vec::new(), Vec::new());
    for (index, bytes) in encoded.iter().enumerate() {
        match meridian_proto::decode_delta(bytes).map_err(WanError::Decode)? {
            Delta::Key(delta) if slice.holds_key(&delta.key) => kept.push(bytes.clone()),
            Delta::Key(_) => continue,
            Delta::Flush(mut context) => {
                slice.project(&mut context);
                kept.push(Bytes::from(meridian_proto::encode_delta(&Delta::Flush(context))));
            }
        }
        offsets.push(index as u32);
    }
    Ok((kept, offsets))
}

/// Which of a filtered batch's deltas a destination applies: those at or
/// past `skip` (the batch's offsets already applied). `kept` must name
/// one offset per delta, rising, within `count`.
pub fn fresh_of_filtered(kept: &[u32], deltas: usize, count: u64, skip: usize) -> Result<usize, WanError> {
    if kept.len() != deltas {
        return Err(WanError::Protocol(format!("{deltas} deltas with {} offsets", kept.len())));
    }
    if kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&last| u64::from(last) >= count) {
        return Err(WanError::Protocol(format!("bad offsets {kept:?} in a batch of {count}")));
    }
    Ok(kept.partition_point(|&offset| (offset as usize) < skip))
}

/// A version vector as packed dots (replica << 48 | seq).
pub fn vector_to_wire(vector: &VersionVector) -> Vec<u64> {
    vector.iter().filter(|&(_, seq)| seq > 0).map(|(replica, seq)| Dot::new(replica, seq).packed()).collect()
}

/// A version vector from packed dots; a zero sequence is refused.
pub fn vector_from_wire(packed: &[u64]) -> Result<VersionVector, WanError> {
    let mut entries: Vec<(ReplicaId, u64)> = Vec::with_capacity(packed.len());
    for &p in packed {
        let dot = Dot::from_packed(p).ok_or_else(|| WanError::Protocol(format!("bad dot {p:#x} in vector")))?;
        entries.push((dot.replica(), dot.seq()));
    }
    Ok(VersionVector::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches compressed with one stream context read back in order, and
    /// after the first few a batch of one SET-like delta takes far less
    /// than its raw size; a payload out of order, cut, or announcing the
    /// wrong size is refused.
    #[test]
    fn stream_batches_read_back_in_order_and_small() {
        let mut compressor = StreamCompressor::new().unwrap();
        let mut decompressor = StreamDecompressor::new().unwrap();
        let delta = |n: u64| format!("\x0a\x0ckey:{n:08}\x12\x10value:{:010}\x18\x01\x20{}", n * 7919 % 10_007, n * 7);
        let mut last = 0;
        for n in 0..500u64 {
            // Batches of 1 to 7 deltas, and now and then a large one.
            let raw: String = (0..if n % 97 == 0 { 3_000 } else { 1 + n % 7 }).map(|k| delta(n * 10_000 + k)).collect();
            let payload = compressor.compress(raw.as_bytes()).unwrap();
            assert_eq!(payload.compression, v1::Compression::ZstdStream);
            assert_eq!(payload.raw_bytes, raw.len());
            let back = decompressor.decompress(&payload.bytes, raw.len() as u32, MESSAGE_BYTES_MAX).unwrap();
            assert_eq!(back, raw.as_bytes(), "batch {n}");
            if n % 7 == 0 && n % 97 != 0 {
                last = payload.bytes.len();
                assert!(last * 4 < raw.len() * 3, "batch {n}: {last} bytes for {}", raw.len());
            }
        }
        assert!(last > 0);

        // Refused: a size other than announced, a bound, a skipped batch.
        let raw = delta(1);
        let payload = compressor.compress(raw.as_bytes()).unwrap();
        assert!(decompressor.decompress(&payload.bytes, raw.len() as u32 - 1, MESSAGE_BYTES_MAX).is_err());
        let mut fresh = StreamDecompressor::new().unwrap();
        let first = StreamCompressor::new().unwrap().compress(raw.as_bytes()).unwrap();
        assert!(fresh.decompress(&first.bytes, raw.len() as u32, 4).is_err(), "over the bound");
        let mut fresh = StreamDecompressor::new().unwrap();
        assert!(
            fresh.decompress(&first.bytes, raw.len() as u32 + 5, MESSAGE_BYTES_MAX).is_err(),
            "fewer bytes than announced"
        );
        let mut sender = StreamCompressor::new().unwrap();
        let _skipped = sender.compress(raw.as_bytes()).unwrap();
        let second = sender.compress(raw.as_bytes()).unwrap();
        let mut receiver = StreamDecompressor::new().unwrap();
        let out_of_order = receiver.decompress(&second.bytes, raw.len() as u32, MESSAGE_BYTES_MAX);
        assert!(out_of_order.is_err(), "a batch without the ones before it: {out_of_order:?}");
        let mut receiver = StreamDecompressor::new().unwrap();
        assert!(
            receiver.decompress(&first.bytes[..first.bytes.len() / 2], raw.len() as u32, MESSAGE_BYTES_MAX).is_err()
        );
        // Empty batches (filtered ones that kept nothing), however many in a
        // row, leave the stream's contexts as they were (found by the fuzz
        // target: they made the destination's context refuse the stream).
        let mut sender = StreamCompressor::new().unwrap();
        let mut receiver = StreamDecompressor::new().unwrap();
        for n in 0..20 {
            let raw = if n % 5 == 4 { delta(n) } else { String::new() };
            let payload = sender.compress(raw.as_bytes()).unwrap();
            let back = if payload.compression == v1::Compression::ZstdStream {
                receiver.decompress(&payload.bytes, raw.len() as u32, MESSAGE_BYTES_MAX).unwrap()
            } else {
                decompress(payload.bytes, payload.compression as i32, 0, MESSAGE_BYTES_MAX).unwrap()
            };
            assert_eq!(back, raw.as_bytes(), "batch {n}");
        }
        // Outside a stream, such a payload is refused.
        assert!(
            decompress(first.bytes, v1::Compression::ZstdStream as i32, raw.len() as u32, MESSAGE_BYTES_MAX).is_err()
        );
    }

    #[test]
    fn the_window_bounds_batches_in_flight_and_checks_acks() {
        let mut window = Window::new(10);
        for _ in 0..IN_FLIGHT_BATCHES_MAX {
            assert!(window.has_room());
            window.sent(5);
        }
        assert!(!window.has_room(), "backpressure: the window is full");
        assert_eq!(window.next_to_send(), 10 + 5 * IN_FLIGHT_BATCHES_MAX as u64);
        window.ack(17).unwrap();
        assert_eq!(window.in_flight(), IN_FLIGHT_BATCHES_MAX - 1, "only whole batches leave");
        assert!(window.ack(12).is_err(), "acks never go backwards");
        assert!(window.ack(10_000).is_err(), "nor beyond what was sent");
        window.ack(window.next_to_send()).unwrap();
        assert_eq!(window.in_flight(), 0);
    }

    #[test]
    fn the_cursor_skips_redelivered_deltas_and_refuses_gaps() {
        let cursor = Cursor { log_id: 1, offset: 100 };
        assert_eq!(cursor.plan(100, 5), BatchPlan::Apply { skip: 0 });
        assert_eq!(cursor.plan(98, 5), BatchPlan::Apply { skip: 2 });
        assert_eq!(cursor.plan(90, 5), BatchPlan::Apply { skip: 5 });
        assert_eq!(cursor.plan(101, 5), BatchPlan::Gap { expected: 100 });
    }

    #[test]
    fn payloads_compress_when_large_and_decompress_within_bounds() {
        let small = Bytes::from_static(b"tiny");
        assert_eq!(compress(small.clone(), Codec::Zstd).compression, v1::Compression::None);
        let large = Bytes::from(vec![b'a'; 64 * 1024]);
        let payload = compress(large.clone(), Codec::Zstd);
        assert_eq!(compress(large.clone(), Codec::None).compression, v1::Compression::None);
        assert_eq!(Codec::parse("ZSTD"), Some(Codec::Zstd));
        assert_eq!(Codec::parse("none"), Some(Codec::None));
        assert_eq!(Codec::parse("gzip"), Some(Codec::Gzip));
        assert_eq!(Codec::parse("lz4"), None);
        let gzipped = compress(large.clone(), Codec::Gzip);
        assert_eq!(gzipped.compression, v1::Compression::Gzip);
        assert!(gzipped.bytes.len() < large.len());
        let back = decompress(gzipped.bytes.clone(), gzipped.compression as i32, large.len() as u32, MESSAGE_BYTES_MAX);
        assert_eq!(back.unwrap(), large);
        // A gzip payload that inflates past what it announced is refused.
        let short = decompress(gzipped.bytes, v1::Compression::Gzip as i32, 10, MESSAGE_BYTES_MAX);
        assert!(short.is_err());
        assert_eq!(payload.compression, v1::Compression::Zstd);
        assert!(payload.bytes.len() < 1024);
        let raw = decompress(payload.bytes.clone(), payload.compression as i32, payload.raw_bytes as u32, 1 << 20);
        assert_eq!(raw.unwrap(), large);
        // A lying size, a bound too small, garbage: errors, not panics.
        assert!(decompress(payload.bytes.clone(), 1, 100, 1 << 20).is_err());
        assert!(decompress(payload.bytes.clone(), 1, payload.raw_bytes as u32, 1024).is_err());
        assert!(decompress(Bytes::from_static(b"garbage"), 1, 10, 1 << 20).is_err());
        assert!(decompress(Bytes::from_static(b"x"), 9, 1, 1 << 20).is_err());
    }

    #[test]
    fn delta_lists_frame_encoded_deltas() {
        use meridian_crdt::keyspace::{ExpiryChange, Moment};
        let mut keyspace = meridian_crdt::Keyspace::new(ReplicaId(3));
        let deltas: Vec<Delta> = (0..3u64)
            .map(|i| Delta::Key(keyspace.set(&[i as u8], b"v", ExpiryChange::Keep, Moment { hlc: i + 1, wall_ms: 0 })))
            .collect();
        let encoded: Vec<Bytes> = deltas.iter().map(|d| Bytes::from(meridian_proto::encode_delta(d))).collect();
        assert_eq!(decode_delta_list(delta_list(&encoded)).unwrap(), deltas);
        assert!(decode_delta_list(Bytes::from_static(b"\x0a\xff\xff")).is_err());
        let vector = VersionVector::from_entries([(ReplicaId(1), 5), (ReplicaId(9), 1)]);
        assert_eq!(vector_from_wire(&vector_to_wire(&vector)).unwrap(), vector);
    }

    #[test]
    fn a_destination_of_some_granules_takes_their_deltas_and_a_cut_flush() {
        use meridian_crdt::keyspace::{ExpiryChange, Moment};
        let granules = Granules::new(4).unwrap();
        let mut keyspace = meridian_crdt::Keyspace::new(ReplicaId(3));
        keyspace.set_granules(granules);
        // Keys of every granule, written in turn, then a flush of them all.
        let keys: Vec<Vec<u8>> = (0..64u8).map(|i| vec![b'k', i]).collect();
        let mut deltas: Vec<Delta> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let at = Moment { hlc: i as u64 + 1, wall_ms: 0 };
                Delta::Key(keyspace.set(k, b"v", ExpiryChange::Keep, at))
            })
            .collect();
        deltas.push(keyspace.flush());
        let encoded: Vec<Bytes> = deltas.iter().map(|d| Bytes::from(meridian_proto::encode_delta(d))).collect();
        let slice = Slice { granules, held: 1..3 };
        let (kept, offsets) = filter_batch(&encoded, &slice).unwrap();
        assert_eq!(kept.len(), offsets.len());
        let expected: Vec<u32> = (0..64u32).filter(|&i| slice.holds_key(&keys[i as usize])).chain([64]).collect();
        assert_eq!(offsets, expected);
        assert!(expected.len() > 1 && expected.len() < 65, "the keys meet the slice and miss it");
        let Delta::Flush(context) = meridian_proto::decode_delta(kept.last().unwrap()).unwrap() else {
            panic!("the flush travels last");
        };
        assert!(context.vector().iter().all(|(r, _)| slice.held.contains(&granules.of_replica(r))));
        assert!(!context.vector().is_empty());
        // The destination applies what is at or past its cursor in the batch.
        assert_eq!(fresh_of_filtered(&[1, 4, 7], 3, 8, 0).unwrap(), 0);
        assert_eq!(fresh_of_filtered(&[1, 4, 7], 3, 8, 4).unwrap(), 1);
        assert_eq!(fresh_of_filtered(&[1, 4, 7], 3, 8, 8).unwrap(), 3);
        assert!(fresh_of_filtered(&[4, 1], 2, 8, 0).is_err());
        assert!(fresh_of_filtered(&[1], 2, 8, 0).is_err());
        assert!(fresh_of_filtered(&[8], 1, 8, 0).is_err());
        assert!(Slice { granules, held: 0..4 }.covers(&(1..3)) && !slice.covers(&(0..4)));
        assert!(slice.meets(&(2..4)) && !slice.meets(&(3..4)));
    }
}
