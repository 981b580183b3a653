//! Shard replication to in-memory replicas, as two synchronous state machines.
//!
//! The master side, [`ReplicationLog`], numbers every encoded delta the master
//! shard applies with an offset (one offset per delta, see D70 in
//! docs/ARCHITECTURE.md), keeps the recent ones in a [`Backlog`] bounded in
//! bytes, answers a replica's [`ReplicaHandshake`] with a partial resync (the
//! replica's offset is still in the backlog, on this history) or a full sync
//! (a snapshot and the offset it stands at), and records the offsets replicas
//! acknowledge so that `WAIT` can count them. The replica side,
//! [`ReplicaStream`], holds the replica's keyspace, applies entries strictly in
//! offset order and reports its offset. Neither side does I/O: a transport
//! moves handshakes, entries and acks between them, and tests drive both
//! directly.
//!
//! Offsets follow Redis's convention for `master_repl_offset`: a replica at
//! offset `n` has applied every entry below `n` and wants entry `n` next; an
//! ack of `n` says the same. A client's write is acknowledged by a replica once
//! that replica acks the log's [`ReplicationLog::next_offset`] as it was right
//! after the write.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use meridian_crdt::{Keyspace, ReplicaId};
use meridian_proto::convert::{decode_delta, decode_snapshot, encode_delta, encode_snapshot};

use crate::backlog::{Backlog, ReadFrom};

/// Replicas one master keeps acknowledgements for at most (Redis has no hard
/// limit; a shard with more in-memory replicas than this is a configuration
/// error, and an unbounded map would let a hostile peer grow memory).
pub const REPLICAS_MAX: usize = 64;

/// A replication history's id (Redis's 40-hex `replid`): a master takes a new
/// one whenever it starts a history, at start-up or on promotion, so that an
/// offset is only ever compared within one history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicationId(pub u128);

impl ReplicationId {
    /// A fresh id: the wall clock in nanoseconds mixed with a process-wide
    /// counter and the process id. Ids only need to differ between histories,
    /// not to be secret.
    pub fn fresh() -> ReplicationId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let count = u128::from(COUNTER.fetch_add(1, Ordering::Relaxed));
        let pid = u128::from(std::process::id());
        ReplicationId(nanos ^ (count << 64) ^ (pid << 96) ^ (count.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }
}

impl fmt::Display for ReplicationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a replica says when it (re)connects: the history it followed and its
/// offset in it. A replica that has never synced sends `replid: None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaHandshake {
    /// The history the replica's state belongs to, if any.
    pub replid: Option<ReplicationId>,
    /// The next offset the replica wants (it holds everything below).
    pub offset: u64,
}

/// The master's answer to a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncDecision {
    /// The replica's offset is in the backlog on this master's history:
    /// stream entries from `from` on. `replid` is the master's current id,
    /// which the replica adopts (it differs from the one it sent after a
    /// promotion).
    PartialResync {
        /// The master's current history.
        replid: ReplicationId,
        /// The first offset that will be streamed (the replica's offset).
        from: u64,
    },
    /// The replica must replace its state with `snapshot` (an encoded shard
    /// snapshot) which stands at `offset`, then stream from `offset` on.
    FullSync {
        /// The master's current history.
        replid: ReplicationId,
        /// The encoded snapshot.
        snapshot: Vec<u8>,
        /// The offset the snapshot stands at.
        offset: u64,
    },
}

/// An entry read from the log: its offset and the encoded delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// The entry's offset.
    pub offset: u64,
    /// The encoded delta (`meridian_proto::convert::encode_delta`).
    pub delta: &'a Bytes,
}

/// What went wrong between a master and a replica. Every variant is a
/// refusal of one message: the connection that carried it should be dropped
/// and the replica resynchronised; none means the node must stop.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// An entry beyond the replica's offset: entries in between are missing.
    #[error("replication gap: expected offset {expected}, got {got}")]
    Gap {
        /// The offset the replica wanted.
        expected: u64,
        /// The offset it was sent.
        got: u64,
    },
    /// An entry below the replica's offset: it was applied already.
    #[error("duplicate replication entry: expected offset {expected}, got {got}")]
    Duplicate {
        /// The offset the replica wanted.
        expected: u64,
        /// The offset it was sent.
        got: u64,
    },
    /// A delta or snapshot that does not decode.
    #[error("undecodable replication payload: {0}")]
    Undecodable(String),
    /// A replica acknowledged an offset the master never reached.
    #[error("replica {replica} acknowledged offset {acked} beyond the log's end {next_offset}")]
    AckAhead {
        /// The replica.
        replica: u64,
        /// What it acknowledged.
        acked: u64,
        /// The log's next offset.
        next_offset: u64,
    },
    /// Acks from more distinct replicas than [`REPLICAS_MAX`].
    #[error("more than {REPLICAS_MAX} replicas")]
    TooManyReplicas,
    /// Entries arrived before any full sync or partial resync was accepted.
    #[error("replication entry before a sync decision")]
    NotSynced,
}

/// The master side: the offsets, the backlog and the replicas' acks.
#[derive(Debug)]
pub struct ReplicationLog {
    replid: ReplicationId,
    /// The previous history this one continues, and the offset at which it
    /// was left (Redis's `replid2` and `second_replid_offset`): a replica of
    /// the previous master at or below that offset shares this history.
    previous: Option<(ReplicationId, u64)>,
    backlog: Backlog<Bytes>,
    acks: BTreeMap<u64, u64>,
}

impl ReplicationLog {
    /// A new history `replid` starting at offset 0, keeping at most
    /// `backlog_bytes_max` bytes of encoded deltas.
    pub fn new(replid: ReplicationId, backlog_bytes_max: usize) -> ReplicationLog {
        ReplicationLog { replid, previous: None, backlog: Backlog::new(0, backlog_bytes_max), acks: BTreeMap::new() }
    }

    /// The log of a replica promoted to master: a new history `replid` that
    /// continues `previous` from `offset` (the promoted replica's offset), so
    /// that the other replicas of the old master can resume partially if they
    /// are not ahead of it.
    pub fn promoted(
        replid: ReplicationId,
        previous: ReplicationId,
        offset: u64,
        backlog_bytes_max: usize,
    ) -> ReplicationLog {
        assert_ne!(replid, previous, "a promotion starts a new history");
        ReplicationLog {
            replid,
            previous: Some((previous, offset)),
            backlog: Backlog::new(offset, backlog_bytes_max),
            acks: BTreeMap::new(),
        }
    }

    /// The current history.
    pub fn replid(&self) -> ReplicationId {
        self.replid
    }

    /// The history this one continues and the offset where it was left
    /// (Redis's `master_replid2` and `second_repl_offset`), after a
    /// promotion.
    pub fn previous(&self) -> Option<(ReplicationId, u64)> {
        self.previous
    }

    /// The offset the next delta will get (Redis's `master_repl_offset`).
    pub fn next_offset(&self) -> u64 {
        self.backlog.next_offset()
    }

    /// The oldest offset a partial resync can start from.
    pub fn first_offset(&self) -> u64 {
        self.backlog.first_offset()
    }

    /// Bytes the backlog holds.
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.bytes()
    }

    /// The most bytes the backlog keeps (Redis's `repl-backlog-size`).
    pub fn backlog_bytes_max(&self) -> usize {
        self.backlog.bytes_max()
    }

    /// Empties the backlog and skips one offset, so that no replica can
    /// resume partially: each takes a full sync at its next handshake. For
    /// a change to the state that the log does not carry — a peer region's
    /// snapshot merged into the shard. Acknowledgements stay (they count
    /// for the offsets before), and so does the history.
    pub fn restart_backlog(&mut self) {
        let next = self.next_offset() + 1;
        self.backlog = Backlog::new(next, self.backlog.bytes_max());
    }

    /// Appends one encoded delta; returns its offset.
    pub fn append(&mut self, encoded_delta: Bytes) -> u64 {
        let size = encoded_delta.len();
        self.backlog.push(encoded_delta, size)
    }

    /// Encodes and appends a delta; returns its offset.
    pub fn append_delta(&mut self, delta: &meridian_crdt::Delta) -> u64 {
        self.append(Bytes::from(encode_delta(delta)))
    }

    /// Decides how a replica resumes. `keyspace` must be the master's keyspace
    /// with every delta applied to it appended here (so that it stands at
    /// [`ReplicationLog::next_offset`]); it is encoded only for a full sync.
    pub fn handshake(&self, handshake: ReplicaHandshake, keyspace: &Keyspace) -> SyncDecision {
        if self.can_resume(handshake) {
            return SyncDecision::PartialResync { replid: self.replid, from: handshake.offset };
        }
        SyncDecision::FullSync { replid: self.replid, snapshot: encode_snapshot(keyspace), offset: self.next_offset() }
    }

    /// True if `handshake` can be answered with a partial resync: the replica
    /// is on this history (or on the previous one, not past the promotion
    /// offset) and its offset is still in the backlog.
    pub fn can_resume(&self, handshake: ReplicaHandshake) -> bool {
        let on_history = match handshake.replid {
            Some(id) if id == self.replid => true,
            Some(id) => self.previous.is_some_and(|(previous, upto)| id == previous && handshake.offset <= upto),
            None => false,
        };
        on_history && matches!(self.backlog.read_from(handshake.offset, 0), ReadFrom::Entries(_))
    }

    /// Up to `entries_max` entries from `offset`, at most `bytes_max` bytes of
    /// them (at least one if any is there). `None` if `offset` is no longer
    /// (or not yet) in the backlog: the replica must full sync.
    pub fn read_from(&self, offset: u64, entries_max: usize, bytes_max: usize) -> Option<Vec<LogEntry<'_>>> {
        match self.backlog.read_from(offset, entries_max) {
            ReadFrom::Entries(entries) => {
                let mut bytes = 0;
                let mut out = Vec::with_capacity(entries.len());
                for (i, delta) in entries.into_iter().enumerate() {
                    bytes += delta.len();
                    if i > 0 && bytes > bytes_max {
                        break;
                    }
                    out.push(LogEntry { offset: offset + i as u64, delta });
                }
                Some(out)
            }
            ReadFrom::Trimmed { .. } | ReadFrom::Ahead { .. } => None,
        }
    }

    /// Records that `replica` holds every entry below `offset`. Acks only move
    /// forward (a late, smaller ack is ignored).
    pub fn record_ack(&mut self, replica: u64, offset: u64) -> Result<(), StreamError> {
        if offset > self.next_offset() {
            return Err(StreamError::AckAhead { replica, acked: offset, next_offset: self.next_offset() });
        }
        if !self.acks.contains_key(&replica) && self.acks.len() >= REPLICAS_MAX {
            return Err(StreamError::TooManyReplicas);
        }
        let acked = self.acks.entry(replica).or_insert(offset);
        *acked = (*acked).max(offset);
        Ok(())
    }

    /// Forgets a replica (it disconnected or was removed): it no longer
    /// counts for `WAIT`.
    pub fn forget(&mut self, replica: u64) {
        self.acks.remove(&replica);
    }

    /// The replicas that acknowledged `offset` or later (for `WAIT`).
    pub fn acked_count(&self, offset: u64) -> usize {
        self.acks.values().filter(|acked| **acked >= offset).count()
    }

    /// Every known replica and the offset it acknowledged, by replica id (for
    /// `INFO replication`).
    pub fn replicas(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.acks.iter().map(|(replica, acked)| (*replica, *acked))
    }

    /// Checks the log's invariants; panics if one is broken.
    pub fn validate(&self) {
        assert!(self.backlog.first_offset() <= self.backlog.next_offset());
        if let Some((previous, upto)) = self.previous {
            assert_ne!(previous, self.replid, "the previous history is another one");
            assert!(upto <= self.next_offset(), "the promotion offset is in this history");
        }
        assert!(self.acks.len() <= REPLICAS_MAX);
        for acked in self.acks.values() {
            assert!(*acked <= self.next_offset(), "no replica is ahead of its master");
        }
    }
}

/// The replica side: the replica's keyspace, its history and its offset.
#[derive(Debug)]
pub struct ReplicaStream {
    keyspace: Keyspace,
    replica: ReplicaId,
    solo: bool,
    replid: Option<ReplicationId>,
    offset: u64,
    /// True between an accepted decision and the end of the connection.
    synced: bool,
    /// The largest timestamp the shard holds, as far as this replica knows:
    /// the master's high-water at each handshake and every applied delta's.
    hlc_high_water: u64,
}

impl ReplicaStream {
    /// An empty replica whose keyspace is rebuilt with `replica` as its own
    /// replica id (the master's, so that a promotion continues its writes)
    /// and solo mode `solo` (as the master's keyspace).
    pub fn new(replica: ReplicaId, solo: bool) -> ReplicaStream {
        let mut keyspace = Keyspace::new(replica);
        keyspace.set_solo(solo);
        ReplicaStream { keyspace, replica, solo, replid: None, offset: 0, synced: false, hlc_high_water: 0 }
    }

    /// A replica continuing a demoted master's state: its keyspace (journal
    /// switched off), the history it led and the offset it reached, so that
    /// the new master — which continues that history — resumes it partially
    /// unless it holds writes the new master never got.
    pub fn continuing(
        mut keyspace: Keyspace,
        solo: bool,
        replid: ReplicationId,
        offset: u64,
        hlc_high_water: u64,
    ) -> ReplicaStream {
        keyspace.set_journal(false);
        keyspace.take_journal();
        keyspace.set_solo(solo);
        let replica = keyspace.replica();
        ReplicaStream { keyspace, replica, solo, replid: Some(replid), offset, synced: false, hlc_high_water }
    }

    /// What to send the master on (re)connecting. Ends the previous
    /// connection's stream: entries are refused until the next decision.
    pub fn handshake(&mut self) -> ReplicaHandshake {
        self.synced = false;
        ReplicaHandshake { replid: self.replid, offset: self.offset }
    }

    /// Takes the master's decision: adopts its history, and for a full sync
    /// replaces the keyspace with the snapshot. A partial resync must start at
    /// this replica's offset.
    pub fn accept(&mut self, decision: &SyncDecision) -> Result<(), StreamError> {
        match decision {
            SyncDecision::PartialResync { replid, from } => {
                if *from != self.offset {
                    return Err(if *from > self.offset {
                        StreamError::Gap { expected: self.offset, got: *from }
                    } else {
                        StreamError::Duplicate { expected: self.offset, got: *from }
                    });
                }
                self.replid = Some(*replid);
            }
            SyncDecision::FullSync { replid, snapshot, offset } => {
                let keyspace = self.decode(snapshot)?;
                self.accept_snapshot(*replid, keyspace, *offset);
                return Ok(());
            }
        }
        self.synced = true;
        Ok(())
    }

    /// A full sync's snapshot decoded for this replica: what
    /// [`ReplicaStream::accept_snapshot`] takes. It needs only the replica
    /// id, so a link decodes seconds of snapshot without holding the stream
    /// ([`ReplicaStream::decoder`]).
    pub fn decode(&self, snapshot: &[u8]) -> Result<Keyspace, StreamError> {
        self.decoder()(snapshot)
    }

    /// [`ReplicaStream::decode`] detached from the stream (for a blocking
    /// thread).
    pub fn decoder(&self) -> impl Fn(&[u8]) -> Result<Keyspace, StreamError> + Send + 'static {
        let (replica, solo) = (self.replica, self.solo);
        move |snapshot| {
            let mut keyspace =
                decode_snapshot(replica, snapshot).map_err(|error| StreamError::Undecodable(error.to_string()))?;
            keyspace.set_solo(solo);
            Ok(keyspace)
        }
    }

    /// Takes a full sync whose snapshot is decoded already
    /// ([`ReplicaStream::decode`]): the keyspace replaces this replica's,
    /// which follows `replid` from `offset`.
    pub fn accept_snapshot(&mut self, replid: ReplicationId, keyspace: Keyspace, offset: u64) {
        self.keyspace = keyspace;
        self.replid = Some(replid);
        self.offset = offset;
        self.synced = true;
    }

    /// Applies the entry at `offset`, which must be this replica's offset;
    /// returns the new offset (what to ack).
    pub fn apply(&mut self, offset: u64, encoded_delta: &[u8]) -> Result<u64, StreamError> {
        if !self.synced {
            return Err(StreamError::NotSynced);
        }
        if offset > self.offset {
            return Err(StreamError::Gap { expected: self.offset, got: offset });
        }
        if offset < self.offset {
            return Err(StreamError::Duplicate { expected: self.offset, got: offset });
        }
        let delta = decode_delta(encoded_delta).map_err(|error| StreamError::Undecodable(error.to_string()))?;
        if let Some(hlc) = delta.max_hlc() {
            self.hlc_high_water = self.hlc_high_water.max(hlc);
        }
        self.keyspace.apply(&delta);
        self.offset += 1;
        Ok(self.offset)
    }

    /// The next offset this replica wants (what it acks).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The history this replica follows, once synced.
    pub fn replid(&self) -> Option<ReplicationId> {
        self.replid
    }

    /// The replica's keyspace.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// Raises the clock high-water to the master's (sent at each handshake).
    pub fn observe_hlc_high_water(&mut self, hlc: u64) {
        self.hlc_high_water = self.hlc_high_water.max(hlc);
    }

    /// No timestamp in the keyspace is above this.
    pub fn hlc_high_water(&self) -> u64 {
        self.hlc_high_water
    }

    /// What a promotion continues from: the keyspace, the history followed
    /// (if it ever synced), the offset reached on it and the clock
    /// high-water. The replica is left empty and unsynced.
    pub fn take_for_promotion(&mut self) -> (Keyspace, Option<ReplicationId>, u64, u64) {
        let mut fresh = Keyspace::new(self.replica);
        fresh.set_solo(self.solo);
        let keyspace = std::mem::replace(&mut self.keyspace, fresh);
        let taken = (keyspace, self.replid.take(), self.offset, self.hlc_high_water);
        self.offset = 0;
        self.synced = false;
        self.hlc_high_water = 0;
        taken
    }
}

#[cfg(test)]
mod tests {
    use meridian_crdt::keyspace::{ExpiryChange, Moment};
    use proptest::prelude::*;

    use super::*;

    fn at(n: u64) -> Moment {
        Moment { hlc: meridian_crdt::clock::hlc_from_unix_ms(1_790_000_000_000 + n, 0), wall_ms: 1_790_000_000_000 + n }
    }

    fn master() -> Keyspace {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set_solo(true);
        keyspace.set_journal(true);
        keyspace
    }

    /// Appends what the master's keyspace journaled since the last call.
    fn feed(log: &mut ReplicationLog, keyspace: &mut Keyspace) {
        let (deltas, _) = keyspace.take_journal();
        for delta in &deltas {
            log.append_delta(delta);
        }
    }

    /// One write of the property test: a key out of a few and an operation.
    fn write(keyspace: &mut Keyspace, op: u8, key: u8, n: u64) {
        let key = [b'k', key];
        match op % 4 {
            0 => {
                keyspace.set(&key, format!("v{n}").as_bytes(), ExpiryChange::Clear, at(n));
            }
            1 => {
                let _ = keyspace.incr_by(&[b'n', key[1]], 1 + (n % 3) as i64, at(n));
            }
            2 => {
                keyspace.delete(&key, at(n));
            }
            _ => {
                let _ = keyspace.sadd(&[b's', key[1]], &[format!("m{}", n % 5).as_bytes()], at(n));
            }
        }
    }

    /// Handshakes and accepts the decision.
    fn sync(log: &ReplicationLog, replica: &mut ReplicaStream, keyspace: &Keyspace) {
        let hello = replica.handshake();
        replica.accept(&log.handshake(hello, keyspace)).expect("accepted");
    }

    /// Streams up to `entries_max` entries to a synced replica and acks them;
    /// false if its offset is not in the backlog.
    fn stream(log: &mut ReplicationLog, replica: &mut ReplicaStream, id: u64, entries_max: usize) -> bool {
        let Some(entries) = log.read_from(replica.offset(), entries_max, 1024) else {
            return false;
        };
        for entry in entries {
            replica.apply(entry.offset, entry.delta).expect("in order");
        }
        log.record_ack(id, replica.offset()).expect("not ahead");
        true
    }

    /// Streams everything the master has to a synced replica and acks it.
    fn catch_up(log: &mut ReplicationLog, replica: &mut ReplicaStream, id: u64) {
        while replica.offset() < log.next_offset() {
            assert!(stream(log, replica, id, 16), "in the backlog");
        }
    }

    #[test]
    fn a_new_replica_full_syncs_then_a_reconnect_resumes() {
        let mut keyspace = master();
        let mut log = ReplicationLog::new(ReplicationId(7), 1 << 20);
        keyspace.set(b"a", b"1", ExpiryChange::Clear, at(1));
        feed(&mut log, &mut keyspace);

        let mut replica = ReplicaStream::new(ReplicaId(1), true);
        let hello = replica.handshake();
        assert_eq!(hello, ReplicaHandshake { replid: None, offset: 0 });
        let decision = log.handshake(hello, &keyspace);
        assert!(matches!(decision, SyncDecision::FullSync { offset: 1, .. }));
        replica.accept(&decision).unwrap();
        keyspace.set(b"b", b"2", ExpiryChange::Clear, at(2));
        feed(&mut log, &mut keyspace);
        catch_up(&mut log, &mut replica, 9);
        assert_eq!(log.acked_count(2), 1);
        assert_eq!(log.acked_count(3), 0);

        // Disconnected: the master writes on; the replica resumes partially.
        keyspace.set(b"c", b"3", ExpiryChange::Clear, at(3));
        feed(&mut log, &mut keyspace);
        let decision = log.handshake(replica.handshake(), &keyspace);
        assert_eq!(decision, SyncDecision::PartialResync { replid: ReplicationId(7), from: 2 });
        replica.accept(&decision).unwrap();
        catch_up(&mut log, &mut replica, 9);
        assert_eq!(encode_snapshot(replica.keyspace()), encode_snapshot(&keyspace));
        log.validate();
    }

    #[test]
    fn gaps_and_duplicates_are_refused() {
        let mut keyspace = master();
        let mut log = ReplicationLog::new(ReplicationId(7), 1 << 20);
        let mut replica = ReplicaStream::new(ReplicaId(1), true);
        assert_eq!(replica.apply(0, &[]), Err(StreamError::NotSynced));
        sync(&log, &mut replica, &keyspace);
        keyspace.set(b"a", b"1", ExpiryChange::Clear, at(1));
        keyspace.set(b"b", b"1", ExpiryChange::Clear, at(2));
        feed(&mut log, &mut keyspace);
        let entries: Vec<(u64, Vec<u8>)> =
            log.read_from(0, 10, 1 << 20).unwrap().iter().map(|e| (e.offset, e.delta.to_vec())).collect();
        assert_eq!(replica.apply(1, &entries[1].1), Err(StreamError::Gap { expected: 0, got: 1 }));
        assert_eq!(replica.apply(0, &entries[0].1), Ok(1));
        assert_eq!(replica.apply(0, &entries[0].1), Err(StreamError::Duplicate { expected: 1, got: 0 }));
        assert!(matches!(replica.apply(1, b"\xff\xff"), Err(StreamError::Undecodable(_))));
        assert_eq!(replica.offset(), 1, "a refused entry changes nothing");
        assert_eq!(
            log.record_ack(3, 5),
            Err(StreamError::AckAhead { replica: 3, acked: 5, next_offset: 2 }),
            "no replica acks what was never written"
        );
    }

    /// After a restarted backlog (a peer's snapshot merged on the master)
    /// no replica resumes, however far it had come; new appends go on past
    /// the skipped offset and acknowledgements of earlier ones still count.
    #[test]
    fn a_restarted_backlog_sends_every_replica_to_a_full_sync() {
        let mut keyspace = master();
        let mut log = ReplicationLog::new(ReplicationId(7), 1 << 20);
        for n in 0..5 {
            keyspace.set(b"k", format!("v{n}").as_bytes(), ExpiryChange::Clear, at(n));
        }
        feed(&mut log, &mut keyspace);
        log.record_ack(1, 5).unwrap();
        let caught_up = ReplicaHandshake { replid: Some(ReplicationId(7)), offset: 5 };
        let behind = ReplicaHandshake { replid: Some(ReplicationId(7)), offset: 2 };
        assert!(log.can_resume(caught_up) && log.can_resume(behind));
        log.restart_backlog();
        assert!(!log.can_resume(caught_up), "even a replica that had everything");
        assert!(!log.can_resume(behind));
        assert!(matches!(log.handshake(caught_up, &keyspace), SyncDecision::FullSync { offset: 6, .. }));
        assert!(log.read_from(5, 10, 1 << 20).is_none(), "a stream at the old end ends");
        keyspace.set(b"k", b"after", ExpiryChange::Clear, at(9));
        feed(&mut log, &mut keyspace);
        assert_eq!(log.next_offset(), 7);
        assert_eq!(log.read_from(6, 10, 1 << 20).map(|entries| entries.len()), Some(1));
        assert_eq!(log.acked_count(5), 1);
        assert_eq!(log.replid(), ReplicationId(7));
    }

    #[test]
    fn a_trimmed_offset_full_syncs() {
        let mut keyspace = master();
        let mut log = ReplicationLog::new(ReplicationId(7), 1);
        let mut replica = ReplicaStream::new(ReplicaId(1), true);
        sync(&log, &mut replica, &keyspace);
        for n in 0..5 {
            keyspace.set(b"a", format!("{n}").as_bytes(), ExpiryChange::Clear, at(n));
        }
        feed(&mut log, &mut keyspace);
        assert_eq!(log.first_offset(), 4, "a one-byte backlog keeps the newest entry only");
        let decision = log.handshake(replica.handshake(), &keyspace);
        assert!(matches!(decision, SyncDecision::FullSync { offset: 5, .. }));
        replica.accept(&decision).unwrap();
        assert_eq!(encode_snapshot(replica.keyspace()), encode_snapshot(&keyspace));
    }

    #[test]
    fn a_promoted_replica_resumes_its_siblings_up_to_the_promotion_offset() {
        let mut keyspace = master();
        let mut log = ReplicationLog::new(ReplicationId(1), 1 << 20);
        for n in 0..4 {
            keyspace.set(b"a", format!("{n}").as_bytes(), ExpiryChange::Clear, at(n));
        }
        feed(&mut log, &mut keyspace);
        // The promoted replica had reached offset 3 of history 1.
        let promoted = ReplicationLog::promoted(ReplicationId(2), ReplicationId(1), 3, 1 << 20);
        let behind = ReplicaHandshake { replid: Some(ReplicationId(1)), offset: 3 };
        assert!(promoted.can_resume(behind));
        let ahead = ReplicaHandshake { replid: Some(ReplicationId(1)), offset: 4 };
        assert!(!promoted.can_resume(ahead), "offset 3 of history 1 was never on the new master");
        let stranger = ReplicaHandshake { replid: Some(ReplicationId(9)), offset: 3 };
        assert!(!promoted.can_resume(stranger));
        let current = ReplicaHandshake { replid: Some(ReplicationId(2)), offset: 3 };
        assert!(promoted.can_resume(current));
        promoted.validate();
    }

    #[derive(Clone, Debug)]
    enum Step {
        Write {
            op: u8,
            key: u8,
        },
        /// The replica streams up to `entries` entries, then disconnects.
        Stream {
            entries: u8,
        },
        Reconnect,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (any::<u8>(), 0u8..6).prop_map(|(op, key)| Step::Write { op, key }),
            2 => (0u8..20).prop_map(|entries| Step::Stream { entries }),
            1 => Just(Step::Reconnect),
        ]
    }

    proptest! {
        /// Random writes, partial streaming, disconnects and backlog sizes: a
        /// reconnect is a partial resync exactly when the replica's offset is
        /// still in the backlog, and after catching up the replica's keyspace
        /// encodes to the same bytes as the master's.
        #[test]
        fn replicas_converge_and_resume_only_from_the_backlog(
            steps in proptest::collection::vec(step(), 1..80),
            backlog_bytes_max in 1usize..400,
        ) {
            let mut keyspace = master();
            let mut log = ReplicationLog::new(ReplicationId(5), backlog_bytes_max);
            let mut replica = ReplicaStream::new(ReplicaId(1), true);
            sync(&log, &mut replica, &keyspace);
            let mut clock = 0u64;
            for step in steps {
                match step {
                    Step::Write { op, key } => {
                        clock += 1;
                        write(&mut keyspace, op, key, clock);
                        feed(&mut log, &mut keyspace);
                    }
                    Step::Stream { entries } => {
                        stream(&mut log, &mut replica, 1, entries as usize);
                    }
                    Step::Reconnect => {
                        let hello = replica.handshake();
                        let in_backlog = hello.offset >= log.first_offset() && hello.offset <= log.next_offset();
                        let decision = log.handshake(hello, &keyspace);
                        match &decision {
                            SyncDecision::PartialResync { from, .. } => {
                                prop_assert!(in_backlog);
                                prop_assert_eq!(*from, hello.offset);
                            }
                            SyncDecision::FullSync { offset, .. } => {
                                prop_assert!(!in_backlog);
                                prop_assert_eq!(*offset, log.next_offset());
                            }
                        }
                        replica.accept(&decision).unwrap();
                    }
                }
                log.validate();
            }
            // Last reconnect and catch-up.
            let decision = log.handshake(replica.handshake(), &keyspace);
            replica.accept(&decision).unwrap();
            catch_up(&mut log, &mut replica, 1);
            log.record_ack(1, replica.offset()).unwrap();
            prop_assert_eq!(log.acked_count(log.next_offset()), 1);
            prop_assert_eq!(encode_snapshot(replica.keyspace()), encode_snapshot(&keyspace));
        }
    }
}
