//! The wiring of one region's instance of an active-active database to the
//! WAN syncer: [`RegionInbound`] applies peers' deltas to the database's
//! [`ServerState`], [`RegionOutbound`] serves the deltas it originates from
//! an [`Outbox`] fed by the database's journal sink. `meridian demo` and the
//! node's crdb instances ([`crate::databases`]) both use them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use meridian_crdt::clock::Observation;
use meridian_crdt::{ClockError, Delta, Keyspace, SnapshotMerge, VersionVector};
use meridian_proxy::context::ServerState;
use meridian_wan::{Cursor, Inbound, Outbound, Outbox, Snapshot};

/// The destination side of one region's database: applies a peer's deltas
/// to the database (waking blocked clients, flagging WATCHes), keeps the
/// per-source cursors, and shows the local clock the peer's timestamps.
pub struct RegionInbound {
    server: Arc<ServerState>,
    cursors: Mutex<HashMap<u16, Cursor>>,
}

impl RegionInbound {
    /// An inbound side over `server`, with no cursor yet (cursors live in
    /// memory: after a restart a peer's stream resumes by snapshot).
    pub fn new(server: Arc<ServerState>) -> RegionInbound {
        RegionInbound { server, cursors: Mutex::new(HashMap::new()) }
    }
}

impl Inbound for RegionInbound {
    fn observe(&self, hlc: u64) -> Result<Observation, ClockError> {
        self.server.shard().clock().observe(hlc)
    }

    fn apply(&self, deltas: &[Delta]) -> Result<(), String> {
        self.server.apply_deltas(deltas);
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: &Keyspace) -> Result<SnapshotMerge, String> {
        let merge = self.server.shard().keyspace_mut().merge_snapshot(snapshot);
        self.server.touch_all_watched();
        Ok(merge)
    }

    fn load_cursor(&self, source_region: u16) -> Option<Cursor> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).get(&source_region).cloned()
    }

    fn store_cursor(&self, source_region: u16, cursor: Cursor) -> Result<(), String> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner()).insert(source_region, cursor);
        Ok(())
    }

    fn applied_vector(&self) -> VersionVector {
        self.server.shard().keyspace().context().vector().clone()
    }
}

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
                sink.outbox.push(delta);
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

    fn snapshot(&self) -> Snapshot {
        // The offset first: a delta appended meanwhile is shipped twice,
        // harmlessly (merges are idempotent).
        let resume_offset = self.outbox.next_offset();
        match self.server() {
            Some(server) => {
                let shard = server.shard();
                let keyspace = shard.keyspace();
                Snapshot { resume_offset, context: keyspace.context().clone(), keys: keyspace.snapshot() }
            }
            None => Snapshot { resume_offset, context: Default::default(), keys: Vec::new() },
        }
    }

    fn peer_applied(&self, region: u16, applied: VersionVector) {
        if let Some(server) = self.server() {
            server.shard().peer_applied(region, applied);
        }
    }
}
