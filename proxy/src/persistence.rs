//! The node's durability on the command path: group commit of the shard's
//! journal before replies are sent.
//!
//! Every delta the shard applies is journaled in memory (see
//! `Keyspace::set_journal`). A connection that ran a write remembers the
//! journal position after it; before it sends the replies of its batch, it
//! makes sure the journal file holds everything up to that position — and,
//! with `appendfsync always`, that it is on disk. One connection's commit
//! carries every other connection's writes made before it (group commit), so
//! a pipelined batch costs one append and at most one fsync.
//!
//! If the append fails (a full disk), the batch's replies are **not** sent:
//! the connection is closed, so no client sees an acknowledgement for a write
//! that is not in the journal; the deltas are kept and retried, and until an
//! append succeeds again every write command answers Redis's `MISCONF` error.
//! Reads keep working. The maintenance cycle retries, fsyncs once a second
//! under `appendfsync everysec`, and rewrites the journal into a snapshot
//! when it has grown — on a thread of its own, at the lowest CPU priority
//! once the shard's table is copied, so the fsyncs and commands go on (D98).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_crdt::keyspace::{FREEZE_STEP_SLOTS, FrozenKeys};
use meridian_proto::convert::encode_delta;
use meridian_replication::durability::{Fsync, Journal, write_snapshot_file};

use crate::context::ServerState;

/// A journal with the time of its last fsync.
#[derive(Debug)]
pub struct Persistence {
    journal: Mutex<Journal>,
    last_sync: Mutex<Instant>,
    /// Held by a rewrite for its whole length (one at a time).
    rewriting: Mutex<()>,
    /// True while a background rewrite's thread runs.
    rewrite_running: AtomicBool,
}

impl Persistence {
    /// Wraps an opened journal.
    pub fn new(journal: Journal) -> Persistence {
        Persistence {
            journal: Mutex::new(journal),
            last_sync: Mutex::new(Instant::now()),
            rewriting: Mutex::new(()),
            rewrite_running: AtomicBool::new(false),
        }
    }

    /// The journal, locked. Lock order: this, then the shard.
    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        // The journal's fields stay consistent across a panic in an append.
        self.journal.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Receives the locally originated deltas of each commit, in order (the WAN
/// syncer's outbox).
pub type JournalSink = Box<dyn Fn(&[Bytes]) + Send + Sync>;

/// How often `appendfsync everysec` forces the journal to disk.
pub const EVERYSEC_INTERVAL: Duration = Duration::from_secs(1);

impl ServerState {
    /// The journal position after every delta applied so far (0 without
    /// journaling).
    pub fn journal_position(&self) -> u64 {
        if !self.is_journaling() {
            return 0;
        }
        self.shard().keyspace().journal_seq()
    }

    /// Commits the journal up to position `target`: gives every delta its
    /// replication offset (with replication on), appends it to the
    /// journal file (on disk, with `appendfsync always`) if the node is
    /// persistent, then hands the locally originated deltas to the journal
    /// sink (the WAN outbox) — only once they are durable here, so a peer
    /// region never holds a write this region could lose (DESIGN §4,
    /// invariant 2). False if the append failed: the caller must not
    /// acknowledge the writes.
    pub fn commit_writes(&self, target: u64) -> bool {
        if !self.is_journaling() {
            return true;
        }
        let Some(persistence) = &self.persistence else {
            let mut unshipped = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            if self.committed_seq.load(Ordering::Acquire) >= target {
                return true;
            }
            let (entries, upto, _) = self.shard().take_journal_entries();
            self.replicate(entries, &mut unshipped);
            self.ship(&mut unshipped);
            self.committed_seq.store(upto, Ordering::Release);
            return true;
        };
        let mut journal = persistence.journal();
        let durable = if journal.fsync() == Fsync::Always { journal.synced_seq() } else { journal.written_seq() };
        if durable >= target && !journal.is_failing() {
            return true;
        }
        let (entries, upto, hlc) = self.shard().take_journal_entries();
        let mut unshipped = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        let deltas = self.replicate(entries, &mut unshipped);
        match journal.append(deltas, upto, hlc) {
            Ok(()) => {
                if self.persistence_failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("journal appends succeed again; accepting writes");
                }
                self.ship(&mut unshipped);
                true
            }
            Err(error) => {
                if !self.persistence_failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(%error, "journal append failed: refusing writes (MISCONF) until it succeeds");
                }
                *self.persistence_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
                false
            }
        }
    }

    /// Numbers committed `entries` in the replication log (with replication
    /// on) and queues the locally originated ones for the journal sink with
    /// their offsets; returns every delta, for the journal.
    fn replicate(
        &self,
        entries: Vec<meridian_crdt::JournalEntry>,
        unshipped: &mut VecDeque<(u64, Bytes)>,
    ) -> Vec<Bytes> {
        // Each delta is encoded once; the replication log, the journal and
        // the sink share the bytes.
        let encoded: Vec<Bytes> = entries.iter().map(|e| Bytes::from(encode_delta(&e.delta))).collect();
        let first = match &self.replication {
            Some(replication) => replication.append(encoded.iter().cloned()),
            None => 0,
        };
        if self.journal_sink.is_some() {
            let replicated = self.replication.is_some();
            for (index, (entry, bytes)) in entries.iter().zip(&encoded).enumerate() {
                if entry.local {
                    let offset = if replicated { first + index as u64 } else { 0 };
                    unshipped.push_back((offset, bytes.clone()));
                }
            }
        }
        encoded
    }

    /// Hands committed local deltas to the journal sink (the WAN outbox), in
    /// order. With replication on, only those a replica has acknowledged: a
    /// peer region must never hold a write a failover here could take back
    /// (DESIGN §4, invariant 2; a promoted replica would reuse the lost
    /// writes' dots for new ones). The rest wait for the next ack
    /// ([`ServerState::ship_acknowledged`]).
    pub(crate) fn ship(&self, unshipped: &mut VecDeque<(u64, Bytes)>) {
        let Some(sink) = &self.journal_sink else {
            unshipped.clear();
            return;
        };
        let held_below = match &self.replication {
            Some(replication) => replication.log().replicas().map(|(_, acked)| acked).max().unwrap_or(0),
            None => u64::MAX,
        };
        let ready = unshipped.iter().take_while(|(offset, _)| *offset < held_below).count();
        if ready > 0 {
            let batch: Vec<Bytes> = unshipped.drain(..ready).map(|(_, delta)| delta).collect();
            sink(&batch);
        }
    }

    /// Ships the local deltas a replica has now acknowledged (called on
    /// every ack).
    pub(crate) fn ship_acknowledged(&self) {
        if self.journal_sink.is_none() {
            return;
        }
        let mut unshipped = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        if !unshipped.is_empty() {
            self.ship(&mut unshipped);
        }
    }

    /// Local deltas committed but not yet handed to the journal sink (INFO;
    /// tests).
    pub fn unshipped_deltas(&self) -> usize {
        self.commit.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The fsync policy, when persistent.
    pub fn appendfsync(&self) -> Option<Fsync> {
        self.persistence.as_ref().map(|p| p.journal().fsync())
    }

    /// CONFIG SET appendfsync: false if the node is not persistent.
    pub fn set_appendfsync(&self, fsync: Fsync) -> bool {
        self.change_journal(|journal| journal.set_fsync(fsync))
    }

    /// The journal size below which it is never rewritten; `None` without
    /// a data directory.
    pub fn rewrite_min_bytes(&self) -> Option<u64> {
        self.persistence.as_ref().map(|p| p.journal().rewrite_min_bytes())
    }

    /// CONFIG SET auto-aof-rewrite-min-size: false if the node is not
    /// persistent.
    pub fn set_rewrite_min_bytes(&self, bytes: u64) -> bool {
        self.change_journal(|journal| journal.set_rewrite_min_bytes(bytes))
    }

    /// `auto-aof-rewrite-percentage`; `None` without a data directory.
    pub fn rewrite_percentage(&self) -> Option<u64> {
        self.persistence.as_ref().map(|p| p.journal().rewrite_percentage())
    }

    /// CONFIG SET auto-aof-rewrite-percentage: false if the node is not
    /// persistent.
    pub fn set_rewrite_percentage(&self, percentage: u64) -> bool {
        self.change_journal(|journal| journal.set_rewrite_percentage(percentage))
    }

    /// Applies a setting to the journal; false if there is none.
    fn change_journal(&self, change: impl FnOnce(&mut Journal)) -> bool {
        let Some(persistence) = &self.persistence else {
            return false;
        };
        change(&mut persistence.journal());
        true
    }

    /// True while journal appends fail: write commands answer `MISCONF`.
    pub fn persistence_failing(&self) -> bool {
        self.persistence_failing.load(Ordering::Acquire)
    }

    /// The `MISCONF` error text for write commands while appends fail.
    pub fn persistence_error(&self) -> String {
        let error = self.persistence_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!("MISCONF Errors writing to the AOF file: {error}")
    }

    /// One maintenance step of persistence: commits what background work
    /// applied (expiry, GC, merges), fsyncs once a second under `everysec`,
    /// and starts a rewrite of the journal into a snapshot, on a thread of
    /// its own, when it has grown (so the fsyncs go on meanwhile).
    pub fn persistence_tick(self: &Arc<Self>) {
        self.commit_writes(u64::MAX);
        let Some(persistence) = &self.persistence else {
            return;
        };
        let due = {
            let mut last_sync = persistence.last_sync.lock().unwrap_or_else(|p| p.into_inner());
            let due = persistence.journal().fsync() == Fsync::EverySec && last_sync.elapsed() >= EVERYSEC_INTERVAL;
            if due {
                *last_sync = Instant::now();
            }
            due
        };
        if due && let Err(error) = self.sync_journal() {
            tracing::error!(%error, "journal fsync failed");
        }
        let keys = self.shard().keyspace().len() as u64;
        if persistence.journal().needs_rewrite(keys) && !persistence.rewrite_running.swap(true, Ordering::AcqRel) {
            let server = Arc::clone(self);
            let spawned = std::thread::Builder::new().name("journal-rewrite".into()).spawn(move || {
                if let Err(error) = server.rewrite_with(Urgency::Background) {
                    tracing::error!(%error, "journal rewrite failed; the journal keeps growing and will be retried");
                }
                if let Some(persistence) = &server.persistence {
                    persistence.rewrite_running.store(false, Ordering::Release);
                }
            });
            if let Err(error) = spawned {
                persistence.rewrite_running.store(false, Ordering::Release);
                tracing::error!(%error, "cannot start a journal rewrite; it will be retried");
            }
        }
    }

    /// Forces everything the journal holds to disk. The journal stays
    /// unlocked during the fsync, so commands keep committing meanwhile
    /// (their appends wait for the next sync); with no persistence, nothing.
    pub fn sync_journal(&self) -> std::io::Result<()> {
        let Some(persistence) = &self.persistence else {
            return Ok(());
        };
        let Some(pending) = persistence.journal().begin_sync()? else {
            return Ok(());
        };
        let result = pending.sync();
        persistence.journal().end_sync(&pending, result)
    }

    /// At shutdown: appends and fsyncs everything applied so far.
    pub fn persistence_shutdown(&self) {
        let Some(persistence) = &self.persistence else {
            return;
        };
        self.commit_writes(u64::MAX);
        if let Err(error) = persistence.journal().sync() {
            tracing::error!(%error, "journal fsync at shutdown failed");
        }
        // A background rewrite finishes first (its snapshot replaces
        // journals; stopped halfway, it would leave only a temporary file,
        // and one still starting would run on after the node stopped). Its
        // thread holds `rewriting` while it works; the flag also covers the
        // moment between its start and taking the lock.
        let mut waited = false;
        while persistence.rewrite_running.load(Ordering::Acquire) {
            if !waited {
                tracing::info!("waiting for the journal rewrite to finish");
                waited = true;
            }
            drop(persistence.rewriting.lock().unwrap_or_else(|p| p.into_inner()));
            std::thread::yield_now();
        }
    }

    /// Rewrites the journal: rotates to a new journal generation and writes a
    /// snapshot of the state at the rotation, then deletes what it covers.
    /// The shard is locked only to copy its table out; sorting, encoding and
    /// writing happen while commands run (their deltas go to the new
    /// generation). For callers that wait on it (a promotion, a peer's
    /// snapshot): the work runs at the caller's priority.
    pub fn rewrite(&self) -> std::io::Result<()> {
        self.rewrite_with(Urgency::Now)
    }

    fn rewrite_with(&self, urgency: Urgency) -> std::io::Result<()> {
        let Some(persistence) = &self.persistence else {
            return Ok(());
        };
        let _one_at_a_time = persistence.rewriting.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // Room for the copy, made unlocked: under the lock it is a copy only.
        let mut keys = FrozenKeys::room_for(self.shard().keyspace().len());
        // The table is copied in steps, the shard's lock released between
        // them (D103); the last step, with the rotation, takes again what
        // changed meanwhile.
        let copying = Instant::now();
        // No snapshot merge between the copy's steps (D106).
        let no_merge = self.no_merge();
        keys.copy_in_steps(|keys| self.shard().keyspace_mut().freeze_step(keys, FREEZE_STEP_SLOTS));
        let copy_ms = copying.elapsed().as_millis() as u64;
        // Most of the journal reaches disk here, unlocked: the rotation below
        // syncs under the shard's lock only what was written since.
        self.sync_journal()?;
        let locked = Instant::now();
        let (dir, covered, context, hlc, finish_us) = {
            let mut journal = persistence.journal();
            let mut shard = self.shard();
            let (entries, upto, hlc) = shard.take_journal_entries();
            let mut unshipped = self.commit.lock().unwrap_or_else(|p| p.into_inner());
            let deltas = self.replicate(entries, &mut unshipped);
            journal.append(deltas, upto, hlc)?;
            self.ship(&mut unshipped);
            drop(unshipped);
            let covered = journal.rotate()?;
            let keyspace = shard.keyspace_mut();
            let finishing = Instant::now();
            keyspace.freeze_finish(&mut keys);
            let finish_us = finishing.elapsed().as_micros() as u64;
            (journal.dir().to_path_buf(), covered, keyspace.context().clone(), hlc, finish_us)
        };
        drop(no_merge);
        let locked_ms = locked.elapsed().as_millis() as u64;
        let count = keys.len();
        let write = || {
            let encoding = Instant::now();
            let body = meridian_proto::convert::encode_snapshot_each(&context, keys.into_sorted());
            let encode_ms = encoding.elapsed().as_millis() as u64;
            let writing = Instant::now();
            let bytes = write_snapshot_file(&dir, covered, &body, hlc)?;
            Ok::<_, std::io::Error>((bytes, encode_ms, writing.elapsed().as_millis() as u64))
        };
        // Seconds of sorting, encoding and writing at 1-2 M keys: in the
        // background, the rewrite's own thread then yields the cores to the
        // shard's workers (it holds no lock from here on, so nothing waits
        // on it at low priority).
        if let Urgency::Background = urgency {
            lower_this_threads_priority();
        }
        let (bytes, encode_ms, write_ms) = write()?;
        persistence.journal().set_snapshot(bytes, count as u64);
        tracing::info!(
            keys = count,
            bytes,
            copy_ms,
            locked_ms,
            finish_us,
            encode_ms,
            write_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "journal rewritten into a snapshot"
        );
        Ok(())
    }
}

/// Who waits for a journal rewrite.
#[derive(Clone, Copy)]
enum Urgency {
    /// A caller (a promotion, a peer's snapshot merge): full priority.
    Now,
    /// The periodic check found the journal grown; this is the rewrite's own
    /// thread: lowest CPU priority for the unlocked part, so client commands
    /// and WAN deltas go first.
    Background,
}

/// Gives the calling thread the lowest CPU priority (nice 19). On Linux the
/// nice value is per thread, and `setpriority(PRIO_PROCESS, 0, ..)` sets the
/// calling thread's; a failure only leaves the priority as it was.
fn lower_this_threads_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the journal rewrite's priority");
    }
}
