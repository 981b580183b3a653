//! The outbound log: the deltas this region originated, by offset, for peer
//! regions to read from their own cursors.
//!
//! Only locally originated deltas enter it (DESIGN.md §4 invariant 2: a
//! region never ships what it merged from elsewhere), each encoded once as a
//! wire `Delta` so that every peer's stream ships the same bytes without
//! re-encoding. It is bounded in bytes: a peer whose cursor fell behind the
//! oldest retained entry must take a snapshot. Appending wakes the streams
//! through a `watch` channel that carries the next offset, so writers never
//! block on readers and readers are woken once per burst, not per delta.
//!
//! **Sealed segments.** Every [`SEGMENT_DELTAS`] deltas in a row are sealed:
//! concatenated — transposed, byte by byte, when they are all of one
//! length — and compressed with zstd as one block (kept raw if that is not
//! smaller), and the bound counts the compressed bytes. Deltas of one
//! region look alike (key prefixes, tags of one replica, close timestamps),
//! so a sealed segment of SETs of one size takes about a sixth of their raw
//! size (9.2 bytes a 58-byte SET delta) and the same memory covers about
//! six times as long an outage before a peer needs a snapshot. The newest deltas — what a peer that keeps up reads —
//! stay as they were pushed; a reader of sealed ones decompresses them
//! outside the outbox's lock.
//!
//! A log has an id, random per incarnation: offsets restart when a process
//! restarts with an empty log, and a cursor from an earlier incarnation must
//! not be mistaken for one of this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meridian_crdt::Delta;
use tokio::sync::watch;

/// Default bound of an outbox: 64 MiB of encoded deltas.
pub const OUTBOX_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// What a reader at some offset gets.
#[derive(Debug, PartialEq, Eq)]
pub enum OutboxRead {
    /// Encoded deltas from the requested offset on (possibly none yet).
    Entries(Vec<Bytes>),
    /// The offset is no longer (or never was) covered: take a snapshot.
    NotCovered,
}

/// Deltas sealed together into one compressed segment.
pub const SEGMENT_DELTAS: usize = 1024;

/// zstd level of sealed segments: the fastest; sealing runs on the writers'
/// path, once per [`SEGMENT_DELTAS`] deltas.
const SEGMENT_ZSTD_LEVEL: i32 = 1;

/// The outbound log of one shard stream of one database.
#[derive(Debug)]
pub struct Outbox {
    log_id: u64,
    /// The log began with the database, empty: offset 0 is its whole history.
    from_empty: bool,
    log: Mutex<Log>,
    next_offset: watch::Sender<u64>,
}

/// [`SEGMENT_DELTAS`] consecutive deltas stored as one block.
#[derive(Clone, Debug)]
struct Sealed {
    /// Offset of its first delta.
    first: u64,
    /// Each delta's encoded length, in order.
    lens: Lens,
    /// The deltas, zstd-compressed if `compressed`: one after another, or
    /// transposed when they are all of one length (see [`Sealed::seal`]).
    block: Bytes,
    compressed: bool,
    /// Bytes of the deltas, uncompressed.
    raw_bytes: usize,
}

/// The lengths of a sealed segment's deltas.
#[derive(Clone, Debug)]
enum Lens {
    /// `count` deltas of `len` bytes each (a run of one kind of write: SETs
    /// of keys and values of fixed sizes, counter increments).
    Same { len: u32, count: u32 },
    /// Each delta's length.
    Each(Arc<[u32]>),
}

impl Lens {
    fn count(&self) -> usize {
        match self {
            Lens::Same { count, .. } => *count as usize,
            Lens::Each(lens) => lens.len(),
        }
    }

    /// The length of delta `index` of the segment.
    fn at(&self, index: usize) -> usize {
        match self {
            Lens::Same { len, .. } => *len as usize,
            Lens::Each(lens) => lens[index] as usize,
        }
    }

    /// Bytes they take, counted against the bound.
    fn bytes(&self) -> usize {
        match self {
            Lens::Same { .. } => 0,
            Lens::Each(lens) => lens.len() * std::mem::size_of::<u32>(),
        }
    }
}

impl Sealed {
    /// Seals `entries`. Deltas all of one length are stored transposed —
    /// byte 0 of every delta, then byte 1 of every delta, and so on — so
    /// that the fields that barely change from one write to the next (the
    /// key's prefix, the replica id, the timestamp's high bytes, protobuf
    /// tags and lengths) become long runs zstd compresses to almost nothing:
    /// measured on 2 M SET deltas of the WAN benchmark's shape (12-byte
    /// keys, 16-byte random values, 58 bytes encoded), a delta takes 9.2
    /// bytes held, where one after another (and a length each) took 18.6;
    /// zstd's level 3 gains nothing more here, and costs more.
    fn seal(first: u64, entries: &VecDeque<Bytes>) -> Sealed {
        let raw_bytes: usize = entries.iter().map(Bytes::len).sum();
        let len_of = |e: &Bytes| u32::try_from(e.len()).expect("an encoded delta is far below 4 GiB");
        let count = u32::try_from(entries.len()).expect("a segment holds few deltas");
        let same = entries.front().map(len_of).filter(|&len| entries.iter().all(|e| len_of(e) == len));
        let mut raw = Vec::with_capacity(raw_bytes);
        let lens = match same {
            Some(len) => {
                raw.resize(raw_bytes, 0);
                let stride = entries.len();
                for (i, entry) in entries.iter().enumerate() {
                    for (j, &byte) in entry.iter().enumerate() {
                        raw[j * stride + i] = byte;
                    }
                }
                Lens::Same { len, count }
            }
            None => {
                for entry in entries {
                    raw.extend_from_slice(entry);
                }
                Lens::Each(entries.iter().map(len_of).collect())
            }
        };
        // The block keeps its vector's capacity (`Bytes::from`), and zstd
        // allocates for the worst case: shrunk, what the bound counts is
        // what the block holds.
        let (mut block, compressed) = match zstd::bulk::compress(&raw, SEGMENT_ZSTD_LEVEL) {
            Ok(packed) if packed.len() < raw.len() => (packed, true),
            _ => (raw, false),
        };
        block.shrink_to_fit();
        let block = Bytes::from(block);
        Sealed { first, lens, block, compressed, raw_bytes }
    }

    /// Bytes counted against the bound.
    fn bytes(&self) -> usize {
        self.block.len() + self.lens.bytes()
    }

    /// The offset after its last delta.
    fn end(&self) -> u64 {
        self.first + self.lens.count() as u64
    }

    /// Deltas `from..to` (offsets within this segment), decompressed.
    fn deltas(&self, from: u64, to: u64) -> Vec<Bytes> {
        let raw = if self.compressed {
            // Compressed here, by this process, from `raw_bytes` bytes.
            let raw = zstd::bulk::decompress(&self.block, self.raw_bytes).expect("a block this outbox compressed");
            Bytes::from(raw)
        } else {
            self.block.clone()
        };
        let (skip, take) = ((from - self.first) as usize, (to - from) as usize);
        let mut out = Vec::with_capacity(take);
        match &self.lens {
            Lens::Same { len, count } => {
                // Transposed: delta i's byte j is at j * count + i.
                let (len, stride) = (*len as usize, *count as usize);
                let mut deltas = Vec::with_capacity(take * len);
                for i in skip..skip + take {
                    deltas.extend((0..len).map(|j| raw[j * stride + i]));
                }
                let deltas = Bytes::from(deltas);
                out.extend((0..take).map(|k| deltas.slice(k * len..(k + 1) * len)));
            }
            Lens::Each(lens) => {
                let mut at: usize = lens[..skip].iter().map(|&l| l as usize).sum();
                for &len in &lens[skip..skip + take] {
                    out.push(raw.slice(at..at + len as usize));
                    at += len as usize;
                }
            }
        }
        out
    }
}

/// The log itself: sealed segments, then the newest deltas as pushed.
#[derive(Debug)]
struct Log {
    sealed: VecDeque<Sealed>,
    /// Offset of the first delta of `open`.
    open_first: u64,
    open: VecDeque<Bytes>,
    /// Bytes counted against `bytes_max`: sealed blocks (and their lengths)
    /// and open deltas.
    bytes: usize,
    bytes_max: usize,
}

/// Where a read's deltas come from, gathered under the lock.
enum Part {
    Sealed(Sealed, u64, u64),
    Open(Vec<Bytes>),
}

impl Log {
    fn first_offset(&self) -> u64 {
        self.sealed.front().map_or(self.open_first, |s| s.first)
    }

    fn next_offset(&self) -> u64 {
        self.open_first + self.open.len() as u64
    }

    fn push(&mut self, entry: Bytes) -> u64 {
        let offset = self.next_offset();
        self.bytes += entry.len();
        self.open.push_back(entry);
        if self.open.len() >= SEGMENT_DELTAS {
            let sealed = Sealed::seal(self.open_first, &self.open);
            self.open.clear();
            self.bytes = self.bytes - sealed.raw_bytes + sealed.bytes();
            self.open_first = sealed.end();
            self.sealed.push_back(sealed);
        }
        // Oldest first; at least the newest delta stays, whatever its size.
        while self.bytes > self.bytes_max {
            // A sealed segment goes unless it is all that is left.
            let more_than_one_segment = self.sealed.len() > 1 || !self.open.is_empty();
            if !self.sealed.is_empty() && more_than_one_segment {
                let oldest = self.sealed.pop_front().expect("not empty");
                self.bytes -= oldest.bytes();
            } else if self.open.len() > 1 {
                let oldest = self.open.pop_front().expect("not empty");
                self.bytes -= oldest.len();
                self.open_first += 1;
            } else {
                break;
            }
        }
        offset
    }

    /// What a read from `offset` takes: up to `max_deltas` deltas and
    /// `max_bytes` raw bytes (at least one delta), `None` if not covered.
    fn plan(&self, offset: u64, max_deltas: usize, max_bytes: usize) -> Option<Vec<Part>> {
        if offset < self.first_offset() || offset > self.next_offset() {
            return None;
        }
        let (mut parts, mut at, mut left, mut total) = (Vec::new(), offset, max_deltas, 0usize);
        let fits = |total: usize, len: usize, taken: bool| !taken || total + len <= max_bytes;
        let start = self.sealed.partition_point(|s| s.end() <= offset);
        for segment in self.sealed.iter().skip(start) {
            let from = at;
            while left > 0 && at < segment.end() {
                let len = segment.lens.at((at - segment.first) as usize);
                if !fits(total, len, at > offset) {
                    break;
                }
                total += len;
                at += 1;
                left -= 1;
            }
            if at > from {
                parts.push(Part::Sealed(segment.clone(), from, at));
            }
            if at < segment.end() {
                return Some(parts);
            }
        }
        let mut open = Vec::new();
        for entry in self.open.iter().skip((at - self.open_first) as usize) {
            if left == 0 || !fits(total, entry.len(), at > offset) {
                break;
            }
            total += entry.len();
            at += 1;
            left -= 1;
            open.push(entry.clone());
        }
        if !open.is_empty() {
            parts.push(Part::Open(open));
        }
        Some(parts)
    }
}

impl Outbox {
    /// An empty outbox with a fresh log id, holding at most `bytes_max`
    /// bytes of encoded deltas (at least one delta, whatever its size), for a
    /// database that may already hold state: a destination without a cursor
    /// takes a snapshot.
    pub fn new(bytes_max: usize) -> Outbox {
        Outbox::with_log_id(fresh_log_id(), bytes_max)
    }

    /// An outbox that starts with the database, empty (a database just
    /// created): while offset 0 is retained, a destination without a cursor
    /// reads the log from 0 instead of taking a snapshot. A node that
    /// restarts with recovered state must use [`Outbox::new`].
    pub fn for_new_database(bytes_max: usize) -> Outbox {
        Outbox { from_empty: true, ..Outbox::with_log_id(fresh_log_id(), bytes_max) }
    }

    /// An empty outbox with a given log id (nonzero; tests and restarts that
    /// persist their log).
    pub fn with_log_id(log_id: u64, bytes_max: usize) -> Outbox {
        assert!(log_id != 0, "log id 0 means no log");
        let (next_offset, _) = watch::channel(0);
        let log = Log { sealed: VecDeque::new(), open_first: 0, open: VecDeque::new(), bytes: 0, bytes_max };
        Outbox { log_id, from_empty: false, log: Mutex::new(log), next_offset }
    }

    /// The id of this log incarnation.
    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Appends a delta this region originated; returns its offset. The
    /// caller must have the delta on the local replicas first (invariant 2:
    /// a failover must not take back what a peer region has).
    pub fn push(&self, delta: &Delta) -> u64 {
        self.push_encoded(Bytes::from(meridian_proto::encode_delta(delta)))
    }

    /// Appends an already encoded wire `Delta`.
    pub fn push_encoded(&self, encoded: Bytes) -> u64 {
        let mut log = self.log.lock().expect("outbox lock");
        let offset = log.push(encoded);
        self.next_offset.send_replace(log.next_offset());
        offset
    }

    /// Up to `max_deltas` encoded deltas from `offset`, stopping before the
    /// one that would bring the total over `max_bytes` (at least one is
    /// returned if any is there, so an oversized delta still moves). Sealed
    /// deltas are decompressed after the lock is released.
    pub fn read(&self, offset: u64, max_deltas: usize, max_bytes: usize) -> OutboxRead {
        let plan = self.log.lock().expect("outbox lock").plan(offset, max_deltas, max_bytes);
        let Some(parts) = plan else {
            return OutboxRead::NotCovered;
        };
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Sealed(segment, from, to) => out.extend(segment.deltas(from, to)),
                Part::Open(entries) => out.extend(entries),
            }
        }
        OutboxRead::Entries(out)
    }

    /// True if a reader at `offset` of log `log_id` can continue from it
    /// (log 0, offset 0: a reader with no cursor yet).
    pub fn covers(&self, log_id: u64, offset: u64) -> bool {
        let log = self.log.lock().expect("outbox lock");
        if log_id == 0 && offset == 0 {
            return self.from_empty && log.first_offset() == 0;
        }
        log_id == self.log_id && offset >= log.first_offset() && offset <= log.next_offset()
    }

    /// The offset the next delta will get.
    pub fn next_offset(&self) -> u64 {
        *self.next_offset.borrow()
    }

    /// The oldest retained offset.
    pub fn first_offset(&self) -> u64 {
        self.log.lock().expect("outbox lock").first_offset()
    }

    /// Bytes held, as counted against the bound: sealed segments compressed.
    pub fn bytes(&self) -> usize {
        self.log.lock().expect("outbox lock").bytes
    }

    /// A receiver woken whenever the next offset moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.next_offset.subscribe()
    }
}

/// A nonzero id that differs between incarnations: the wall clock in
/// nanoseconds mixed with the process id and a per-process counter.
fn fresh_log_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finalizer: spread the bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_resume_until_the_bound_trims_their_cursor() {
        let outbox = Outbox::with_log_id(7, 10);
        for i in 0..5u8 {
            assert_eq!(outbox.push_encoded(Bytes::from(vec![i; 3])), u64::from(i));
        }
        assert_eq!(outbox.next_offset(), 5);
        assert_eq!(outbox.first_offset(), 2);
        assert!(outbox.covers(7, 2) && outbox.covers(7, 5));
        assert!(!outbox.covers(7, 1), "trimmed");
        assert!(!outbox.covers(7, 6), "ahead");
        assert!(!outbox.covers(8, 3), "another incarnation");
        assert_eq!(
            outbox.read(3, 10, 100),
            OutboxRead::Entries(vec![Bytes::from(vec![3; 3]), Bytes::from(vec![4; 3])])
        );
        assert_eq!(outbox.read(2, 10, 5), OutboxRead::Entries(vec![Bytes::from(vec![2; 3])]), "byte bound");
        assert_eq!(outbox.read(0, 10, 100), OutboxRead::NotCovered);
    }

    #[test]
    fn appending_wakes_subscribers() {
        let outbox = Outbox::new(1024);
        let mut rx = outbox.subscribe();
        outbox.push_encoded(Bytes::from_static(b"x"));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        assert_ne!(Outbox::new(1).log_id(), Outbox::new(1).log_id());
    }

    #[test]
    fn a_reader_without_cursor_reads_a_new_database_log_from_the_start() {
        let outbox = Outbox::for_new_database(10);
        assert!(outbox.covers(0, 0));
        outbox.push_encoded(Bytes::from(vec![0; 6]));
        assert!(outbox.covers(0, 0), "offset 0 still retained");
        outbox.push_encoded(Bytes::from(vec![1; 6]));
        assert!(!outbox.covers(0, 0), "offset 0 trimmed: snapshot");
        assert!(!Outbox::new(10).covers(0, 0), "a log over recovered state needs a snapshot");
    }

    /// A SET-like delta: similar bytes, as one region's deltas are.
    fn delta(n: u64) -> Bytes {
        Bytes::from(format!("\x0a\x0ckey:{n:08}\x12\x10value:{n:010}\x18\x01\x20{}", n * 7))
    }

    #[test]
    fn sealed_segments_read_back_what_was_pushed_in_less_memory() {
        let outbox = Outbox::with_log_id(3, usize::MAX);
        let total = 3 * SEGMENT_DELTAS as u64 + 10;
        let pushed: Vec<Bytes> = (0..total).map(delta).collect();
        for (n, entry) in pushed.iter().enumerate() {
            assert_eq!(outbox.push_encoded(entry.clone()), n as u64);
        }
        let raw: usize = pushed.iter().map(Bytes::len).sum();
        assert!(outbox.bytes() * 2 < raw, "{} bytes held for {raw} raw", outbox.bytes());
        let segment = SEGMENT_DELTAS as u64;
        for from in [0, 1, segment - 1, segment, segment + 5, 3 * segment, total - 1, total] {
            let OutboxRead::Entries(got) = outbox.read(from, 5000, usize::MAX) else { panic!("covered") };
            assert_eq!(got, pushed[from as usize..], "from {from}");
            let OutboxRead::Entries(got) = outbox.read(from, 3, usize::MAX) else { panic!("covered") };
            assert_eq!(got, pushed[from as usize..(from + 3).min(total) as usize], "three from {from}");
        }
        // The byte bound stops inside a sealed segment, and one delta always moves.
        let OutboxRead::Entries(got) = outbox.read(10, 5000, pushed[10].len() * 4) else { panic!() };
        assert_eq!(got, pushed[10..14]);
        let OutboxRead::Entries(got) = outbox.read(10, 5000, 1) else { panic!() };
        assert_eq!(got, pushed[10..11]);
    }

    #[test]
    fn the_bound_drops_the_oldest_sealed_segments_first() {
        let total = 64 * SEGMENT_DELTAS as u64;
        let one: usize = (total - SEGMENT_DELTAS as u64..total).map(delta).map(|d| d.len()).sum();
        // Room for a segment of open deltas, raw, and a few sealed ones.
        let bound = 2 * one;
        let outbox = Outbox::with_log_id(4, bound);
        for n in 0..total {
            outbox.push_encoded(delta(n));
            assert!(outbox.bytes() <= bound, "{} bytes held", outbox.bytes());
        }
        let first = outbox.first_offset();
        assert!(first > 0 && first.is_multiple_of(SEGMENT_DELTAS as u64), "whole segments dropped: first {first}");
        assert!(first <= total - 2 * SEGMENT_DELTAS as u64, "more than the raw bound retained: first {first}");
        assert_eq!(outbox.read(first - 1, 10, usize::MAX), OutboxRead::NotCovered);
        assert!(!outbox.covers(4, first - 1) && outbox.covers(4, first));
        let OutboxRead::Entries(got) = outbox.read(first, usize::MAX, usize::MAX) else { panic!() };
        assert_eq!(got, (first..total).map(delta).collect::<Vec<_>>());
    }

    /// Segments of deltas of one length (stored transposed) and of mixed
    /// lengths read back byte for byte, from any offset, random contents
    /// included (which zstd leaves raw).
    #[test]
    fn transposed_and_mixed_segments_read_back_exactly() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let segment = SEGMENT_DELTAS as u64;
        let mut pushed = Vec::new();
        // One length with random bytes, one length alike, then mixed lengths.
        pushed.extend((0..segment).map(|_| Bytes::from((0..37).map(|_| random() as u8).collect::<Vec<u8>>())));
        pushed.extend((0..).map(delta).filter(|d| d.len() == delta(500).len()).take(SEGMENT_DELTAS));
        pushed.extend((0..segment).map(|n| Bytes::from(vec![n as u8; (random() % 90) as usize])));
        pushed.push(Bytes::from_static(b"open"));
        let outbox = Outbox::with_log_id(6, usize::MAX);
        for entry in &pushed {
            outbox.push_encoded(entry.clone());
        }
        let total = pushed.len() as u64;
        for from in [0, 1, 17, segment - 1, segment, segment + 300, 2 * segment - 1, 2 * segment + 3, total - 1] {
            for take in [1, 2, 1000, usize::MAX] {
                let OutboxRead::Entries(got) = outbox.read(from, take, usize::MAX) else { panic!("covered") };
                let end = (from as usize).saturating_add(take).min(pushed.len());
                assert_eq!(got, pushed[from as usize..end], "from {from}, {take}");
            }
        }
        // The alike segment is held in far less than its raw size.
        let alike: usize = pushed[SEGMENT_DELTAS..2 * SEGMENT_DELTAS].iter().map(Bytes::len).sum();
        let log = outbox.log.lock().unwrap();
        assert!(matches!(log.sealed[0].lens, Lens::Same { len: 37, .. }));
        assert!(matches!(log.sealed[2].lens, Lens::Each(_)));
        assert!(log.sealed[1].bytes() * 4 < alike, "{} bytes held for {alike}", log.sealed[1].bytes());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Any pushes under any bound: what is covered reads back exactly
        /// what was pushed, under the delta and byte limits of a read.
        #[test]
        fn reads_match_what_was_pushed(
            sizes in proptest::collection::vec(0usize..200, 1..3000),
            bound in 1usize..100_000,
            reads in proptest::collection::vec((0u64..3200, 1usize..5000, 1usize..20_000), 1..20),
        ) {
            let outbox = Outbox::with_log_id(5, bound);
            let pushed: Vec<Bytes> =
                sizes.iter().enumerate().map(|(n, &size)| Bytes::from(vec![(n % 7) as u8; size])).collect();
            for entry in &pushed {
                outbox.push_encoded(entry.clone());
            }
            let first = outbox.first_offset();
            proptest::prop_assert!(first < pushed.len() as u64, "the newest delta stays");
            for (from, max_deltas, max_bytes) in reads {
                let read = outbox.read(from, max_deltas, max_bytes);
                if from < first || from > pushed.len() as u64 {
                    proptest::prop_assert_eq!(read, OutboxRead::NotCovered);
                    continue;
                }
                let mut expected = Vec::new();
                let mut total = 0;
                for entry in pushed.iter().skip(from as usize).take(max_deltas) {
                    if !expected.is_empty() && total + entry.len() > max_bytes {
                        break;
                    }
                    total += entry.len();
                    expected.push(entry.clone());
                }
                proptest::prop_assert_eq!(read, OutboxRead::Entries(expected));
            }
        }
    }
}
