//! A served database as the master of its shard's in-memory replicas.
//!
//! With replication on, every delta the shard applies — local writes, merges
//! from peer regions, expiry — gets the next offset of the shard's
//! [`ReplicationLog`] when it is committed ([`ServerState::commit_writes`]),
//! in commit order, so a replica that applies the log in offset order holds
//! the master's state. [`ServerSource`] serves that log to the `ReplicaSync`
//! service; `WAIT` counts the replicas whose acknowledgements reach the log's
//! next offset after the client's writes.
//!
//! A master can be *fenced*: while the cluster may be failing its shard over
//! (this node lost contact with the cluster, or the configuration no longer
//! names it master at its epoch), write commands answer
//! [`FENCED_ERROR`] instead of being accepted, so a write taken by an
//! isolated old master can never be lost silently by the failover that
//! replaces it. Reads go on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use meridian_crdt::keyspace::{FREEZE_STEP_SLOTS, FrozenKeys};
use meridian_replication::master_service::ReplicationSource;
use meridian_replication::stream::{ReplicaHandshake, ReplicationLog, StreamError, SyncDecision};
use tokio::sync::watch;

use crate::context::ServerState;

/// What a write command answers on a fenced master.
pub const FENCED_ERROR: &str =
    "CLUSTERDOWN this shard's master is fenced (failing over, or its node lost the cluster); retry shortly";

/// The master side of a database's shard replication.
pub struct MasterReplication {
    log: Mutex<ReplicationLog>,
    /// The log's next offset, changed after every append (wakes streams).
    next_offset: watch::Sender<u64>,
    /// Bumped after every ack or forgotten replica (wakes `WAIT`).
    acks: watch::Sender<u64>,
    /// Woken when the write lease is renewed (wakes writes that wait for it).
    lease_renewed: tokio::sync::Notify,
}

/// How long a write that finds the write lease lapsed (but the master not
/// fenced) waits for the cluster to renew it before answering
/// [`FENCED_ERROR`]: a lease renewal delayed by a busy machine stalls writes
/// briefly instead of failing them; a master that really lost the cluster
/// refuses them after this long.
pub const LEASE_WAIT: Duration = Duration::from_secs(1);

impl MasterReplication {
    fn new(log: ReplicationLog) -> MasterReplication {
        let next = log.next_offset();
        MasterReplication {
            log: Mutex::new(log),
            next_offset: watch::channel(next).0,
            acks: watch::channel(0).0,
            lease_renewed: tokio::sync::Notify::new(),
        }
    }

    /// The log. Lock order: the shard (if held), then this.
    pub fn log(&self) -> MutexGuard<'_, ReplicationLog> {
        // Appends and acks leave the log consistent even if one panics.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends committed deltas (encoded), in order, and wakes the streams;
    /// returns the offset of the first (the others follow one by one).
    pub(crate) fn append(&self, deltas: impl IntoIterator<Item = Bytes>) -> u64 {
        let mut log = self.log();
        let before = log.next_offset();
        for delta in deltas {
            log.append(delta);
        }
        let next = log.next_offset();
        drop(log);
        if next != before {
            self.next_offset.send_replace(next);
        }
        before
    }

    /// Makes every replica take a full sync: the backlog restarts past a
    /// skipped offset (see [`ReplicationLog::restart_backlog`]) and the
    /// streams, woken, find their next offset gone and end; their replicas
    /// reconnect and copy the state anew. After a peer region's snapshot
    /// merge, which the log does not carry.
    pub fn resync_replicas(&self) {
        let next = {
            let mut log = self.log();
            log.restart_backlog();
            log.next_offset()
        };
        self.next_offset.send_replace(next);
    }
}

impl ServerState {
    /// Makes this database the master of in-memory replicas, numbering its
    /// committed deltas in `log` (a fresh history, or a promoted replica's).
    /// Turns the shard's journal on.
    pub fn with_replication(mut self, log: ReplicationLog) -> ServerState {
        self.shard().keyspace_mut().set_journal(true);
        self.replication = Some(MasterReplication::new(log));
        self
    }

    /// The master side of replication, if on.
    pub fn replication(&self) -> Option<&MasterReplication> {
        self.replication.as_ref()
    }

    /// Sets when this master's write lease ends: past it, write commands
    /// answer [`FENCED_ERROR`] whatever [`ServerState::set_fenced`] says.
    /// Checked against the clock on every write, so a master that was
    /// stopped (paused, descheduled) refuses the writes waiting for it when
    /// it resumes, before anything renews the lease.
    pub fn set_write_lease(&self, until: std::time::Instant) {
        self.lease_until_us.store(lease_clock_us(until), Ordering::Release);
        if let Some(replication) = &self.replication
            && until > std::time::Instant::now()
        {
            replication.lease_renewed.notify_waiters();
        }
    }

    /// True if a write command arriving now should wait for the write lease
    /// ([`ServerState::await_write_lease`]) rather than be refused at once:
    /// the lease lapsed but the master is not fenced.
    pub(crate) fn lease_lapsed(&self) -> bool {
        self.write_lease_expired() && !self.is_fenced()
    }

    /// Waits until the write lease is valid again, the master is fenced, or
    /// `bound` passes, whichever comes first.
    pub(crate) async fn await_write_lease(&self, bound: Duration) {
        let Some(replication) = &self.replication else {
            return;
        };
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let renewed = replication.lease_renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if !self.lease_lapsed() {
                return;
            }
            tokio::select! {
                _ = renewed => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// True if the write lease has ended (always false without replication).
    pub fn write_lease_expired(&self) -> bool {
        self.replication.is_some()
            && lease_clock_us(std::time::Instant::now()) >= self.lease_until_us.load(Ordering::Acquire)
    }

    /// Fences (true) or unfences this master: while fenced, write commands
    /// answer [`FENCED_ERROR`].
    pub fn set_fenced(&self, fenced: bool) {
        if self.fenced.swap(fenced, Ordering::AcqRel) != fenced {
            if fenced {
                if let Some(replication) = &self.replication {
                    // Writes waiting for the lease are refused at once.
                    replication.lease_renewed.notify_waiters();
                }
                tracing::warn!(
                    port = self.settings.port,
                    "master fenced: refusing writes until the cluster confirms it"
                );
            } else {
                tracing::info!(port = self.settings.port, "master confirmed by the cluster: accepting writes");
            }
        }
    }

    /// True while writes are refused because this master is fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// `WAIT`: commits what was applied, then waits until `replicas`
    /// replicas acknowledged the log's next offset or `timeout` passes
    /// (`None`: forever); returns how many did. 0 at once without
    /// replication.
    pub async fn wait_for_replicas(&self, replicas: usize, timeout: Option<Duration>) -> usize {
        let Some(replication) = &self.replication else {
            return 0;
        };
        self.commit_writes(u64::MAX);
        let acks = replication.acks.subscribe();
        let offset = replication.log().next_offset();
        meridian_replication::master_service::wait_for_count(acks, replicas, timeout, || {
            replication.log().acked_count(offset)
        })
        .await
    }
}

/// A served database as the `ReplicaSync` service's source.
pub struct ServerSource(pub Arc<ServerState>);

impl ServerSource {
    fn replication(&self) -> &MasterReplication {
        self.0.replication.as_ref().expect("a replication source is a server with replication on")
    }
}

impl ReplicationSource for ServerSource {
    fn handshake(&self, handshake: ReplicaHandshake) -> SyncDecision {
        // Deltas applied but not yet committed are in the snapshot and will
        // also follow it in the log: a replica merges them twice, which
        // changes nothing (merging is idempotent).
        self.0.commit_writes(u64::MAX);
        {
            let log = self.replication().log();
            if log.can_resume(handshake) {
                return SyncDecision::PartialResync { replid: log.replid(), from: handshake.offset };
            }
        }
        // A full sync (called on a blocking thread): the table is copied in
        // steps, the shard's lock released between them (D103), and encoded
        // unlocked. The offset is read under the lock of the copy's last
        // step: every entry before it was applied before, so the state holds
        // it; entries after it follow in the stream, and those the state
        // holds already merge again harmlessly.
        let mut keys = FrozenKeys::room_for(self.0.shard().keyspace().len());
        // No peer's snapshot merge between the copy's steps (D106).
        let no_merge = self.0.no_merge();
        keys.copy_in_steps(|keys| self.0.shard().keyspace_mut().freeze_step(keys, FREEZE_STEP_SLOTS));
        let (context, replid, offset) = {
            let mut shard = self.0.shard();
            shard.keyspace_mut().freeze_finish(&mut keys);
            let log = self.replication().log();
            (shard.keyspace().context().clone(), log.replid(), log.next_offset())
        };
        drop(no_merge);
        let snapshot = meridian_proto::convert::encode_snapshot_each(&context, keys.into_sorted());
        SyncDecision::FullSync { replid, snapshot, offset }
    }

    fn read(&self, offset: u64, entries_max: usize, bytes_max: usize) -> Option<Vec<Bytes>> {
        let log = self.replication().log();
        log.read_from(offset, entries_max, bytes_max)
            .map(|entries| entries.iter().map(|entry| entry.delta.clone()).collect())
    }

    fn record_ack(&self, replica: u64, offset: u64) -> Result<(), StreamError> {
        let replication = self.replication();
        let recorded = replication.log().record_ack(replica, offset);
        replication.acks.send_modify(|generation| *generation += 1);
        self.0.ship_acknowledged();
        recorded
    }

    fn forget(&self, replica: u64) {
        let replication = self.replication();
        replication.log().forget(replica);
        replication.acks.send_modify(|generation| *generation += 1);
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.replication().next_offset.subscribe()
    }

    fn hlc_high_water(&self) -> u64 {
        self.0.shard().clock().high_water()
    }
}

/// Microseconds since a process-wide origin (1 at the origin, so 0 means
/// "no lease").
fn lease_clock_us(at: std::time::Instant) -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    at.saturating_duration_since(origin).as_micros() as u64 + 1
}

/// True if the write path must refuse writes: fenced, the write lease over
/// (with replication), or journal appends failing.
pub(crate) fn write_refusal(server: &ServerState) -> Option<String> {
    if server.is_fenced() || server.write_lease_expired() {
        Some(FENCED_ERROR.to_string())
    } else if server.persistence_failing() {
        Some(server.persistence_error())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use meridian_crdt::ReplicaId;
    use meridian_replication::Shard;
    use meridian_replication::stream::{ReplicationId, ReplicationLog};

    use crate::context::{ServerState, Settings};

    fn master() -> Arc<ServerState> {
        Arc::new(
            ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default())
                .with_replication(ReplicationLog::new(ReplicationId(3), 1 << 20)),
        )
    }

    #[tokio::test]
    async fn a_write_waiting_for_a_lapsed_lease_resumes_when_it_is_renewed() {
        let server = master();
        assert!(server.lease_lapsed(), "no lease yet");
        let renew = Arc::clone(&server);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            renew.set_write_lease(Instant::now() + Duration::from_secs(60));
        });
        server.await_write_lease(Duration::from_secs(30)).await;
        assert!(!server.write_lease_expired(), "woken by the renewal, not the bound");
        assert!(super::write_refusal(&server).is_none());
    }

    #[tokio::test]
    async fn a_fence_ends_the_wait_and_the_write_is_refused() {
        let server = master();
        let fence = Arc::clone(&server);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            fence.set_fenced(true);
            // A renewal after the fence does not let the write through.
            fence.set_write_lease(Instant::now() + Duration::from_secs(60));
        });
        server.await_write_lease(Duration::from_secs(30)).await;
        assert!(server.is_fenced());
        assert_eq!(super::write_refusal(&server).as_deref(), Some(super::FENCED_ERROR));
    }

    #[test]
    fn local_deltas_are_shipped_only_once_a_replica_holds_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use meridian_crdt::keyspace::ExpiryChange;
        use meridian_replication::master_service::ReplicationSource;

        let shipped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&shipped);
        let server = Arc::new(
            ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default())
                .with_replication(ReplicationLog::new(ReplicationId(3), 1 << 20))
                .with_journal_sink(Box::new(move |deltas| {
                    counter.fetch_add(deltas.len(), Ordering::SeqCst);
                })),
        );
        let write = |key: &[u8]| {
            let mut shard = server.shard();
            let at = shard.moment().expect("a moment");
            shard.keyspace_mut().set(key, b"v", ExpiryChange::Keep, at);
        };
        let source = super::ServerSource(Arc::clone(&server));
        write(b"a");
        write(b"b");
        assert!(server.commit_writes(u64::MAX));
        // Committed and numbered 0 and 1, but no replica holds them yet.
        assert_eq!((shipped.load(Ordering::SeqCst), server.unshipped_deltas()), (0, 2));
        // A replica that holds offset 0 only: the first one goes.
        source.record_ack(9, 1).expect("an ack");
        assert_eq!((shipped.load(Ordering::SeqCst), server.unshipped_deltas()), (1, 1));
        // A later write waits for the ack that covers it.
        write(b"c");
        assert!(server.commit_writes(u64::MAX));
        assert_eq!(server.unshipped_deltas(), 2);
        source.record_ack(9, 3).expect("an ack");
        assert_eq!((shipped.load(Ordering::SeqCst), server.unshipped_deltas()), (3, 0));
    }

    #[tokio::test]
    async fn without_renewal_the_wait_ends_at_its_bound() {
        let server = master();
        server.await_write_lease(Duration::from_millis(20)).await;
        assert!(server.lease_lapsed());
        assert_eq!(super::write_refusal(&server).as_deref(), Some(super::FENCED_ERROR));
    }
}
