//! Counters of one link, for the monitoring service and Prometheus.
//!
//! Plain atomics written by the link's task and read by anyone at any time;
//! [`LinkStats::read`] copies them into a [`LinkStatsSnapshot`], a plain struct
//! a SyncMonitor reply or a metrics exporter can format.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Where a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Not started, or stopped.
    Idle = 0,
    /// Dialing the peer or waiting for its answer.
    Connecting = 1,
    /// Receiving a snapshot.
    FullSync = 2,
    /// Streaming deltas.
    Streaming = 3,
    /// Waiting before the next attempt after an error.
    Backoff = 4,
}

impl LinkState {
    fn from_u8(value: u8) -> LinkState {
        match value {
            1 => LinkState::Connecting,
            2 => LinkState::FullSync,
            3 => LinkState::Streaming,
            4 => LinkState::Backoff,
            _ => LinkState::Idle,
        }
    }

    /// The state named `name` (see [`LinkState::name`]), as a snapshot
    /// carries it.
    pub fn from_name(name: &str) -> Option<LinkState> {
        [LinkState::Idle, LinkState::Connecting, LinkState::FullSync, LinkState::Streaming, LinkState::Backoff]
            .into_iter()
            .find(|state| state.name() == name)
    }

    /// A number for gauges: 0 idle, 1 connecting, 2 full sync, 3 streaming,
    /// 4 backoff.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connecting => "connecting",
            LinkState::FullSync => "full_sync",
            LinkState::Streaming => "streaming",
            LinkState::Backoff => "backoff",
        }
    }
}

/// Live counters of one link (one direction of one database between two regions).
#[derive(Debug, Default)]
pub struct LinkStats {
    state: AtomicU8,
    /// Deltas the source has that this side has not applied (destination), or
    /// sent and not acknowledged (source).
    pub lag_ops: AtomicU64,
    /// Wall time (Unix ms) when the destination last had everything the
    /// source had announced; 0 before the first time.
    pub caught_up_at_ms: AtomicU64,
    /// Payload bytes received, before decompression.
    pub bytes_in_wire: AtomicU64,
    /// Payload bytes received, after decompression.
    pub bytes_in_raw: AtomicU64,
    /// Payload bytes sent, after compression.
    pub bytes_out_wire: AtomicU64,
    /// Payload bytes sent, before compression.
    pub bytes_out_raw: AtomicU64,
    /// Deltas applied (destination) or sent (source).
    pub deltas: AtomicU64,
    /// Deltas received again below the cursor and skipped.
    pub deltas_redelivered: AtomicU64,
    /// Batches received or sent.
    pub batches: AtomicU64,
    /// Streams that began with a snapshot.
    pub full_syncs: AtomicU64,
    /// Streams that resumed from a cursor.
    pub partial_syncs: AtomicU64,
    /// Streams opened (connections that reached Accepted).
    pub connects: AtomicU64,
    /// Streams that failed.
    pub errors: AtomicU64,
    /// Peer timestamps beyond the allowed skew (clamped, invariant 5).
    pub clamped_timestamps: AtomicU64,
    /// List keys a snapshot merge kept as they were because the peer's list
    /// was not a replica of the local one (its elements in another order:
    /// a broken or hostile peer; see `Keyspace::merge_snapshot`).
    pub snapshot_lists_kept: AtomicU64,
    /// The last error, if any.
    last_error: Mutex<Option<String>>,
}

/// A copy of a link's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStatsSnapshot {
    /// Connection state name (see [`LinkState::name`]).
    pub state: &'static str,
    /// Deltas behind.
    pub lag_ops: u64,
    /// Milliseconds since the link was last caught up (0 when it is).
    pub lag_ms: u64,
    /// Payload bytes received on the wire / after decompression.
    pub bytes_in_wire: u64,
    /// See [`LinkStats::bytes_in_raw`].
    pub bytes_in_raw: u64,
    /// Payload bytes sent on the wire / before compression.
    pub bytes_out_wire: u64,
    /// See [`LinkStats::bytes_out_raw`].
    pub bytes_out_raw: u64,
    /// Deltas applied or sent.
    pub deltas: u64,
    /// Deltas redelivered and skipped.
    pub deltas_redelivered: u64,
    /// Batches.
    pub batches: u64,
    /// Full syncs.
    pub full_syncs: u64,
    /// Partial syncs.
    pub partial_syncs: u64,
    /// Streams opened.
    pub connects: u64,
    /// Streams failed.
    pub errors: u64,
    /// Clamped peer timestamps.
    pub clamped_timestamps: u64,
    /// List keys kept by snapshot merges.
    pub snapshot_lists_kept: u64,
    /// The last error.
    pub last_error: Option<String>,
}

impl LinkStats {
    /// Sets the state.
    pub fn set_state(&self, state: LinkState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The state.
    pub fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Records a failure.
    pub fn fail(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("stats lock") = Some(error.to_owned());
    }

    /// Records how far behind the source this side is, at wall time `now_ms`.
    pub fn set_lag(&self, lag_ops: u64, now_ms: u64) {
        self.lag_ops.store(lag_ops, Ordering::Relaxed);
        if lag_ops == 0 {
            self.caught_up_at_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of every counter, with the lag in ms computed at `now_ms`.
    pub fn read(&self, now_ms: u64) -> LinkStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lag_ops = get(&self.lag_ops);
        let caught_up = get(&self.caught_up_at_ms);
        LinkStatsSnapshot {
            state: self.state().name(),
            lag_ops,
            lag_ms: if lag_ops == 0 || caught_up == 0 { 0 } else { now_ms.saturating_sub(caught_up) },
            bytes_in_wire: get(&self.bytes_in_wire),
            bytes_in_raw: get(&self.bytes_in_raw),
            bytes_out_wire: get(&self.bytes_out_wire),
            bytes_out_raw: get(&self.bytes_out_raw),
            deltas: get(&self.deltas),
            deltas_redelivered: get(&self.deltas_redelivered),
            batches: get(&self.batches),
            full_syncs: get(&self.full_syncs),
            partial_syncs: get(&self.partial_syncs),
            connects: get(&self.connects),
            errors: get(&self.errors),
            clamped_timestamps: get(&self.clamped_timestamps),
            snapshot_lists_kept: get(&self.snapshot_lists_kept),
            last_error: self.last_error.lock().expect("stats lock").clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_and_codes_round_trip() {
        for code in 0..=4u8 {
            let state = LinkState::from_u8(code);
            assert_eq!(state.code(), code);
            assert_eq!(LinkState::from_name(state.name()), Some(state));
        }
        assert_eq!(LinkState::from_name("nonsense"), None);
    }

    #[test]
    fn lag_ms_counts_from_the_last_catch_up() {
        let stats = LinkStats::default();
        stats.set_lag(0, 1_000);
        stats.set_lag(5, 1_200);
        let behind = stats.read(1_500);
        assert_eq!((behind.lag_ops, behind.lag_ms), (5, 500));
        stats.set_lag(0, 1_600);
        assert_eq!(stats.read(2_000).lag_ms, 0, "caught up");
    }
}
