//! The wiring of one region's instance of an active-active database to the
//! WAN syncer: [`RegionInbound`] applies peers' deltas to the database's
//! [`ServerState`], [`RegionOutbound`] serves the deltas it originates from
//! an [`Outbox`] fed by the database's journal sink. `meridian demo` and the
//! node's crdb instances ([`crate::databases`]) both use them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use meridian_crdt::clock::Observation;
use meridian_crdt::gc::Reporter;
use meridian_crdt::keyspace::{FREEZE_STEP_SLOTS, FrozenKeys};
use meridian_crdt::{ClockError, Delta, Keyspace, SnapshotMerge, VersionVector};
use meridian_proxy::context::ServerState;
use meridian_wan::{Cursor, CursorStore, Inbound, Outbound, Outbox, Snapshot, Source};

/// How often at most a link's cursor is written to disk. Between writes the
/// cursor on disk lags the one in memory: a restart then redelivers what was
/// applied since, which changes nothing (merges are idempotent).
pub const CURSOR_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// The destination side of one region's database: applies a peer's deltas
/// to the database (waking blocked clients, flagging WATCHes), keeps the
/// per-source cursors, and shows the local clock the peer's timestamps.
pub struct RegionInbound {
    server: Arc<ServerState>,
    cursors: Mutex<HashMap<Source, Cursor>>,
    /// Where the cursors persist, and the database's name there.
    store: Option<(CursorStore, String)>,
    /// When each source's cursor was last handed to the writer.
    persisted_at: Mutex<HashMap<Source, Instant>>,
    /// The cursor writer's queue (started with the first cursor to write).
    writer: OnceLock<Mutex<std::sync::mpsc::Sender<CursorWrite>>>,
}

impl RegionInbound {
    /// An inbound side over `server` whose cursors live in memory only: after
    /// a restart a peer's stream resumes by snapshot.
    pub fn new(server: Arc<ServerState>) -> RegionInbound {
        RegionInbound {
            server,
            cursors: Mutex::new(HashMap::new()),
            store: None,
            persisted_at: Mutex::default(),
            writer: OnceLock::new(),
        }
    }

    /// An inbound side over a persistent `server` whose cursors into each
    /// peer's log persist in `store` under `database`, so a restart resumes
    /// every peer's stream where it stopped (a partial sync) rather than by
    /// snapshot. A cursor is written only once the deltas below it are on
    /// disk: a writer thread fsyncs the journal (they were appended to it in
    /// [`Inbound::apply`] before the cursor moved) and then writes the
    /// cursor, off the link's task, so neither fsync stalls the async
    /// workers; a snapshot merge is written out as a journal rewrite before
    /// its cursor moves. The cursor on disk never runs ahead of the data on
    /// disk.
    pub fn persistent(server: Arc<ServerState>, store: CursorStore, database: String) -> RegionInbound {
        RegionInbound { store: Some((store, database)), ..RegionInbound::new(server) }
    }

    /// Hands `cursor` to the writer thread, starting it the first time; with
    /// `wait`, returns once it is on disk (or the writer gave up on it).
    fn write_cursor(&self, store: &CursorStore, database: &str, source: Source, cursor: Cursor, wait: bool) {
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (server, store, name) = (self.server.clone(), store.clone(), database.to_owned());
            let spawned = std::thread::Builder::new()
                .name("wan-cursors".into())
                .spawn(move || write_cursors(&rx, &server, &store, &name));
            if let Err(error) = spawned {
                tracing::error!(%error, database, "cannot start the WAN cursor writer; cursors stay in memory");
            }
            Mutex::new(tx)
        });
        let (done, written) = if wait {
            let (done, written) = std::sync::mpsc::sync_channel(1);
            (Some(done), Some(written))
        } else {
            (None, None)
        };
        // A send fails only if the writer could not start (logged above).
        let sent = writer.lock().unwrap_or_else(|p| p.into_inner()).send(CursorWrite { source, cursor, done });
        if let (Ok(()), Some(written)) = (sent, written) {
            let _ = written.recv_timeout(CURSOR_WRITE_WAIT);
        }
    }
}

/// One cursor for the writer thread, and whom to tell once it is written.
struct CursorWrite {
    source: Source,
    cursor: Cursor,
    done: Option<std::sync::mpsc::SyncSender<()>>,
}

/// How long a cursor that must be on disk at once (a new log's) is waited for.
const CURSOR_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The cursor writer: takes the newest cursor of each source region from the
/// queue (in queue order, so an older cursor never overwrites a newer one),
/// forces the journal to disk, then writes the cursors and tells whoever
/// waits. Ends when the inbound side is dropped.
fn write_cursors(
    queue: &std::sync::mpsc::Receiver<CursorWrite>,
    server: &ServerState,
    store: &CursorStore,
    database: &str,
) {
    while let Ok(first) = queue.recv() {
        let mut newest: HashMap<Source, Cursor> = HashMap::new();
        let mut waiting = Vec::new();
        for write in std::iter::once(first).chain(queue.try_iter()) {
            newest.insert(write.source, write.cursor);
            waiting.extend(write.done);
        }
        match server.sync_journal() {
            Err(error) => tracing::warn!(%error, database, "journal fsync failed; WAN cursors not written"),
            Ok(()) => {
                for (source, cursor) in newest {
                    if let Err(error) = store.store(database, source, cursor) {
                        // The cursor on disk stays behind: a restart redelivers more.
                        tracing::warn!(%error, database, ?source, "cannot persist the WAN cursor");
                    }
                }
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

impl Inbound for RegionInbound {
    fn observe(&self, hlc: u64) -> Result<Observation, ClockError> {
        self.server.shard().clock().observe(hlc)
    }

    fn apply(&self, deltas: &[Delta]) -> Result<(), String> {
        self.server.apply_deltas(deltas);
        // The cursor that follows must not run ahead of the journal.
        if self.server.is_persistent() && !self.server.commit_writes(self.server.journal_position()) {
            return Err(format!("cannot persist the peer's deltas: {}", self.server.persistence_error()));
        }
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Keyspace) -> Result<SnapshotMerge, String> {
        // In steps: clients are served between them (D106).
        let merge = self.server.merge_snapshot(snapshot);
        // A snapshot merge is not a delta in the journal: the merged state
        // goes to disk as a rewrite (a snapshot file) before the cursor moves.
        if self.server.is_persistent() {
            self.server.rewrite().map_err(|e| format!("cannot persist the peer's snapshot: {e}"))?;
        }
        Ok(merge)
    }

    fn merge_gate(&self) -> Option<&std::sync::RwLock<()>> {
        Some(self.server.merge_gate())
    }

    fn load_cursor(&self, source: Source) -> Option<Cursor> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cursor) = cursors.get(&source) {
            return Some(*cursor);
        }
        let (store, database) = self.store.as_ref()?;
        match store.load(database, source) {
            Ok(Some(cursor)) => {
                cursors.insert(source, cursor);
                Some(cursor)
            }
            Ok(None) => None,
            Err(error) => {
                // Unreadable: a full sync, never a wrong position.
                tracing::warn!(%error, database, ?source, "cannot read the WAN cursor; resyncing by snapshot");
                None
            }
        }
    }

    fn store_cursor(&self, source: Source, cursor: Cursor) -> Result<(), String> {
        let previous = self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(source, cursor);
        let Some((store, database)) = &self.store else {
            return Ok(());
        };
        // A new log (after a full sync) is on disk before the link goes on:
        // the cursor on disk names a log the source no longer serves, and a
        // restart would otherwise take the whole snapshot again.
        let new_log = previous.is_none_or(|previous| previous.log_id != cursor.log_id);
        let write = {
            let mut persisted_at = self.persisted_at.lock().unwrap_or_else(|p| p.into_inner());
            let due = persisted_at.get(&source).is_none_or(|at| at.elapsed() >= CURSOR_PERSIST_INTERVAL);
            if due || new_log {
                persisted_at.insert(source, Instant::now());
            }
            due || new_log
        };
        // Handed over (and a new log's waited for) with no lock held: other
        // links' cursors do not queue behind this one's fsync.
        if write {
            self.write_cursor(store, database, source, cursor, new_log);
        }
        Ok(())
    }

    fn applied_vector(&self) -> VersionVector {
        self.server.shard().keyspace().context().vector().clone()
    }
}

/// How long a snapshot for a peer waits for the local replica to hold the
/// state it shows before the peer is told to retry.
const SNAPSHOT_REPLICA_WAIT: Duration = Duration::from_secs(10);

/// The source side of one region's database: its outbox of committed local
/// deltas, snapshots for peers whose cursor fell out of it, and peers'
/// applied vectors for garbage collection.
pub struct RegionOutbound {
    outbox: Outbox,
    server: OnceLock<Weak<ServerState>>,
}

impl RegionOutbound {
    /// An outbound side over `outbox`, not yet attached to its database.
    pub fn new(outbox: Outbox) -> RegionOutbound {
        RegionOutbound { outbox, server: OnceLock::new() }
    }

    /// The journal sink to build the database's [`ServerState`] with: every
    /// committed local delta goes to the outbox.
    pub fn journal_sink(self: &Arc<Self>) -> meridian_proxy::persistence::JournalSink {
        let sink = self.clone();
        Box::new(move |deltas| {
            for delta in deltas {
                sink.outbox.push_encoded(delta.clone());
            }
        })
    }

    /// Attaches the database (held weakly: the database owns the outbound
    /// through its journal sink, not the other way round).
    pub fn attach(&self, server: &Arc<ServerState>) {
        let _ = self.server.set(Arc::downgrade(server));
    }

    fn server(&self) -> Option<Arc<ServerState>> {
        self.server.get().and_then(Weak::upgrade)
    }
}

impl Outbound for RegionOutbound {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn snapshot(&self) -> Result<Snapshot, String> {
        // The offset first: a delta appended meanwhile is shipped twice,
        // harmlessly (merges are idempotent).
        let resume_offset = self.outbox.next_offset();
        let Some(server) = self.server() else {
            return Ok(Snapshot { resume_offset, context: Default::default(), keys: Default::default() });
        };
        // Room for the copy, made unlocked: under the lock it is a copy only.
        let mut keys = FrozenKeys::room_for(server.shard().keyspace().len());
        // In steps, the lock released between them (D103), and no other
        // peer's snapshot merge between them (D106).
        let no_merge = server.no_merge();
        keys.copy_in_steps(|keys| server.shard().keyspace_mut().freeze_step(keys, FREEZE_STEP_SLOTS));
        let snapshot = {
            let mut shard = server.shard();
            let keyspace = shard.keyspace_mut();
            keyspace.freeze_finish(&mut keys);
            Snapshot { resume_offset, context: keyspace.context().clone(), keys }
        };
        drop(no_merge);
        // With a replica, the state leaves the region only once the replica
        // holds all of it (invariant 2, D83): every delta applied so far is
        // committed and must be acknowledged.
        if server.replication().is_some() {
            let wait = server.wait_for_replicas(1, Some(SNAPSHOT_REPLICA_WAIT));
            let acked = tokio::runtime::Handle::current().block_on(wait);
            if acked == 0 {
                return Err(format!(
                    "the local replica has not acknowledged the state within {} s; the peer retries",
                    SNAPSHOT_REPLICA_WAIT.as_secs()
                ));
            }
        }
        Ok(snapshot)
    }

    fn peer_applied(&self, reader: Reporter, applied: VersionVector) {
        if let Some(server) = self.server() {
            server.shard().peer_applied(reader, applied);
        }
    }
}
