//! A ready-made [`Outbound`] and [`Inbound`] over one `replication::Shard`:
//! what a node with single-shard active-active databases plugs into the
//! syncer, and the pattern a multi-shard one follows per shard.
//!
//! The shard journals every delta it applies. The node's one journal reader
//! calls [`ShardDatabase::drain_journal`] instead of `Shard::take_journal`:
//! it pushes the locally originated deltas to the outbox (in apply order,
//! under the shard lock) and returns every entry for durability. Deltas
//! merged from peers are journaled as remote and never reach the outbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use meridian_crdt::clock::Observation;
use meridian_crdt::gc::Reporter;
use meridian_crdt::keyspace::{FREEZE_STEP_SLOTS, FrozenKeys, MERGE_STEP_SLOTS};
use meridian_crdt::{ClockError, Delta, JournalEntry, Keyspace, SnapshotMerge, VersionVector};
use meridian_replication::Shard;

use crate::cursor_store::CursorStore;
use crate::inbound::Inbound;
use crate::outbound::{Outbound, Snapshot};
use crate::outbox::Outbox;
use crate::protocol::{Cursor, Source};

/// One database held by one shard, as the syncer sees it.
pub struct ShardDatabase {
    database: String,
    shard: Arc<Mutex<Shard>>,
    outbox: Outbox,
    /// Durable cursors; `None` keeps them in memory (tests, no data directory).
    cursors: Option<CursorStore>,
    memory_cursors: Mutex<HashMap<Source, Cursor>>,
    peer_reports: Mutex<HashMap<Reporter, VersionVector>>,
    /// Held exclusively by a snapshot merge in steps, shared by a batch of
    /// peers' deltas and by a copy of the keyspace (see
    /// [`Inbound::merge_gate`]).
    merge_gate: RwLock<()>,
}

impl ShardDatabase {
    /// The syncer's view of `database` held by `shard`, shipping through
    /// `outbox`. Turns the shard's journal on and its solo mode off (it has
    /// peers now).
    pub fn new(
        database: &str,
        shard: Arc<Mutex<Shard>>,
        outbox: Outbox,
        cursors: Option<CursorStore>,
    ) -> ShardDatabase {
        {
            let mut guard = shard.lock().expect("shard lock");
            let keyspace = guard.keyspace_mut();
            keyspace.set_solo(false);
            if !keyspace.journaling() {
                keyspace.set_journal(true);
            }
        }
        ShardDatabase {
            database: database.to_owned(),
            shard,
            outbox,
            cursors,
            memory_cursors: Mutex::new(HashMap::new()),
            peer_reports: Mutex::new(HashMap::new()),
            merge_gate: RwLock::new(()),
        }
    }

    fn shard(&self) -> MutexGuard<'_, Shard> {
        self.shard.lock().expect("shard lock")
    }

    /// Takes the shard's journal: local deltas go to the outbox, every entry
    /// is returned (for durability) with the journal position and the clock's
    /// high-water, like `Shard::take_journal`.
    pub fn drain_journal(&self) -> (Vec<JournalEntry>, u64, u64) {
        let mut shard = self.shard();
        let (entries, upto, hlc) = shard.take_journal_entries();
        for entry in entries.iter().filter(|e| e.local) {
            self.outbox.push(&entry.delta);
        }
        (entries, upto, hlc)
    }

    /// The latest applied vector each peer shard reported (for the shard's
    /// causal-stability tracker).
    pub fn peer_reports(&self) -> HashMap<Reporter, VersionVector> {
        self.peer_reports.lock().expect("reports lock").clone()
    }
}

impl Outbound for ShardDatabase {
    fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    fn snapshot(&self) -> Result<Snapshot, String> {
        // Room for the copy, made unlocked: under the lock it is a copy only.
        let mut keys = FrozenKeys::room_for(self.shard().keyspace().len());
        // In steps, the lock released between them (D103), and no snapshot
        // merge between them.
        let _no_merge = self.merge_gate.read().unwrap_or_else(|p| p.into_inner());
        keys.copy_in_steps(|keys| self.shard().keyspace_mut().freeze_step(keys, FREEZE_STEP_SLOTS));
        let mut shard = self.shard();
        // Under the shard lock, the state holds every delta the outbox has
        // (pushes happen after the apply, under this lock).
        shard.keyspace_mut().freeze_finish(&mut keys);
        Ok(Snapshot { resume_offset: self.outbox.next_offset(), context: shard.keyspace().context().clone(), keys })
    }

    fn peer_applied(&self, reader: Reporter, applied: VersionVector) {
        self.peer_reports.lock().expect("reports lock").insert(reader, applied);
    }
}

impl Inbound for ShardDatabase {
    fn observe(&self, hlc: u64) -> Result<Observation, ClockError> {
        self.shard().clock().observe(hlc)
    }

    fn apply(&self, deltas: &[Delta]) -> Result<(), String> {
        let mut shard = self.shard();
        for delta in deltas {
            shard.keyspace_mut().apply(delta);
        }
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Keyspace) -> Result<SnapshotMerge, String> {
        // In steps, the shard's lock released between them.
        let _gate = self.merge_gate.write().unwrap_or_else(|p| p.into_inner());
        let mut merging = self.shard().keyspace_mut().merge_begin(snapshot);
        merging.run_steps(|merging| self.shard().keyspace_mut().merge_step(snapshot, merging, MERGE_STEP_SLOTS));
        Ok(self.shard().keyspace_mut().merge_finish(snapshot, merging))
    }

    fn merge_gate(&self) -> Option<&RwLock<()>> {
        Some(&self.merge_gate)
    }

    fn load_cursor(&self, source: Source) -> Option<Cursor> {
        match &self.cursors {
            Some(store) => store.load(&self.database, source).ok().flatten(),
            None => self.memory_cursors.lock().expect("cursors lock").get(&source).copied(),
        }
    }

    fn store_cursor(&self, source: Source, cursor: Cursor) -> Result<(), String> {
        match &self.cursors {
            Some(store) => store.store(&self.database, source, cursor).map_err(|e| e.to_string()),
            None => {
                self.memory_cursors.lock().expect("cursors lock").insert(source, cursor);
                Ok(())
            }
        }
    }

    fn applied_vector(&self) -> VersionVector {
        self.shard().keyspace().context().vector().clone()
    }
}
