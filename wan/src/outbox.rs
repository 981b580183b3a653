//! The outbound log: the deltas this region originated, by offset, for peer
//! regions to read from their own cursors.
//!
//! Only locally originated deltas enter it (DESIGN.md §4 invariant 2: a
//! region never ships what it merged from elsewhere), each encoded once as a
//! wire `Delta` so that every peer's stream ships the same bytes without
//! re-encoding. It is a [`Backlog`] bounded in bytes: a peer whose cursor fell
//! behind the oldest retained entry must take a snapshot. Appending wakes the
//! streams through a `watch` channel that carries the next offset, so writers
//! never block on readers and readers are woken once per burst, not per delta.
//!
//! A log has an id, random per incarnation: offsets restart when a process
//! restarts with an empty log, and a cursor from an earlier incarnation must
//! not be mistaken for one of this.

use std::sync::Mutex;

use bytes::Bytes;
use meridian_crdt::Delta;
use meridian_replication::{Backlog, ReadFrom};
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

/// The outbound log of one shard stream of one database.
#[derive(Debug)]
pub struct Outbox {
    log_id: u64,
    /// The log began with the database, empty: offset 0 is its whole history.
    from_empty: bool,
    backlog: Mutex<Backlog<Bytes>>,
    next_offset: watch::Sender<u64>,
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
        Outbox { log_id, from_empty: false, backlog: Mutex::new(Backlog::new(0, bytes_max)), next_offset }
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
        let mut backlog = self.backlog.lock().expect("outbox lock");
        let size = encoded.len();
        let offset = backlog.push(encoded, size);
        self.next_offset.send_replace(backlog.next_offset());
        offset
    }

    /// Up to `max_deltas` encoded deltas from `offset`, stopping before the
    /// one that would bring the total over `max_bytes` (at least one is
    /// returned if any is there, so an oversized delta still moves).
    pub fn read(&self, offset: u64, max_deltas: usize, max_bytes: usize) -> OutboxRead {
        let backlog = self.backlog.lock().expect("outbox lock");
        match backlog.read_from(offset, max_deltas) {
            ReadFrom::Entries(entries) => {
                let mut total = 0;
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    if !out.is_empty() && total + entry.len() > max_bytes {
                        break;
                    }
                    total += entry.len();
                    out.push(entry.clone());
                }
                OutboxRead::Entries(out)
            }
            ReadFrom::Trimmed { .. } | ReadFrom::Ahead { .. } => OutboxRead::NotCovered,
        }
    }

    /// True if a reader at `offset` of log `log_id` can continue from it
    /// (log 0, offset 0: a reader with no cursor yet).
    pub fn covers(&self, log_id: u64, offset: u64) -> bool {
        let backlog = self.backlog.lock().expect("outbox lock");
        if log_id == 0 && offset == 0 {
            return self.from_empty && backlog.first_offset() == 0;
        }
        log_id == self.log_id && offset >= backlog.first_offset() && offset <= backlog.next_offset()
    }

    /// The offset the next delta will get.
    pub fn next_offset(&self) -> u64 {
        *self.next_offset.borrow()
    }

    /// The oldest retained offset.
    pub fn first_offset(&self) -> u64 {
        self.backlog.lock().expect("outbox lock").first_offset()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.backlog.lock().expect("outbox lock").bytes()
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
}
