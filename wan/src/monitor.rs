//! The `SyncMonitor` gRPC service: per active-active database and peer
//! region, the state and figures of the WAN sync, read from the links'
//! [`LinkStats`](crate::LinkStats).
//!
//! The wan crate does not know which databases a node serves, so the node
//! fills in a [`MonitorRegistry`] that lists them with their links'
//! counters; [`SyncMonitorService`] turns its readings into replies, once
//! (`Status`) or every `interval_ms` (`Watch`). The same readings feed the
//! node's Prometheus exporter, so both always agree. The service is served
//! beside `WanSync` on the node's sync port ([`crate::serve_with_monitor`]).

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1;
use meridian_proto::v1::sync_monitor_server::{SyncMonitor, SyncMonitorServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::stats::LinkStatsSnapshot;

/// Shortest interval a `Watch` may ask for: faster would only load the node.
pub const WATCH_INTERVAL_MS_MIN: u64 = 100;
/// Longest interval a `Watch` may ask for (one hour).
pub const WATCH_INTERVAL_MS_MAX: u64 = 3_600_000;
/// Replies a `Watch` stream buffers for a slow client before the next one
/// waits (the stream then ticks no faster than the client reads).
pub const WATCH_BUFFER_MAX: usize = 4;

/// One peer region of one active-active database, as the node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerReading {
    /// Local database uid.
    pub bdb: u64,
    /// The crdb's guid (the database's name on the wire).
    pub crdb_guid: String,
    /// This cluster's region id in the crdb.
    pub local_region: u16,
    /// The peer's region id in the crdb.
    pub peer_region: u16,
    /// The local shard's index in its instance (0 for one shard).
    pub local_shard: u32,
    /// The peer shard's index in the peer's instance (0 for one shard).
    pub peer_shard: u32,
    /// The peer's sync endpoint the incoming link dials.
    pub endpoint: String,
    /// The incoming link (peer → here): state, lag, ingress bytes, syncs.
    pub ingress: LinkStatsSnapshot,
    /// The stream served to the peer (here → peer), once it has connected.
    pub egress: Option<LinkStatsSnapshot>,
}

impl PeerReading {
    /// The reading as the wire message.
    pub fn to_wire(&self) -> v1::PeerStatus {
        let egress = self.egress.clone().unwrap_or_default();
        v1::PeerStatus {
            bdb: self.bdb,
            crdb_guid: self.crdb_guid.clone(),
            local_region: u32::from(self.local_region),
            peer_region: u32::from(self.peer_region),
            state: self.ingress.state.to_owned(),
            lag_ops: self.ingress.lag_ops,
            lag_ms: self.ingress.lag_ms,
            ingress_bytes_wire: self.ingress.bytes_in_wire,
            ingress_bytes_raw: self.ingress.bytes_in_raw,
            egress_bytes_wire: egress.bytes_out_wire,
            egress_bytes_raw: egress.bytes_out_raw,
            full_syncs: self.ingress.full_syncs,
            partial_syncs: self.ingress.partial_syncs,
            deltas_in: self.ingress.deltas,
            deltas_out: egress.deltas,
            errors: self.ingress.errors,
            last_error: self.ingress.last_error.clone().unwrap_or_default(),
            endpoint: self.endpoint.clone(),
            local_shard: self.local_shard,
            peer_shard: self.peer_shard,
        }
    }
}

/// What the monitor reads: the node's active-active databases and their
/// links. Implementations must be cheap (copies of atomics under a short
/// lock): `Watch` calls them every interval.
pub trait MonitorRegistry: Send + Sync + 'static {
    /// Every peer of every active-active database served here (only those
    /// of database `bdb` when given), ordered by bdb then peer region.
    fn peers(&self, bdb: Option<u64>) -> Vec<PeerReading>;
}

/// The `SyncMonitor` service over a registry.
#[derive(Clone)]
pub struct SyncMonitorService {
    registry: Arc<dyn MonitorRegistry>,
}

impl SyncMonitorService {
    /// A service reading `registry`.
    pub fn new(registry: Arc<dyn MonitorRegistry>) -> SyncMonitorService {
        SyncMonitorService { registry }
    }

    /// The tonic service.
    pub fn into_service(self) -> SyncMonitorServer<SyncMonitorService> {
        SyncMonitorServer::new(self)
    }

    fn reply(registry: &dyn MonitorRegistry, bdb: Option<u64>) -> v1::StatusReply {
        let peers = registry.peers(bdb).iter().map(PeerReading::to_wire).collect();
        v1::StatusReply { peers, at_ms: meridian_crdt::clock::system_wall_ms() }
    }
}

/// Checks a `Watch` interval against [`WATCH_INTERVAL_MS_MIN`] and
/// [`WATCH_INTERVAL_MS_MAX`].
pub fn check_watch_interval(interval_ms: u64) -> Result<Duration, Status> {
    if (WATCH_INTERVAL_MS_MIN..=WATCH_INTERVAL_MS_MAX).contains(&interval_ms) {
        Ok(Duration::from_millis(interval_ms))
    } else {
        Err(Status::invalid_argument(format!(
            "interval_ms {interval_ms} out of range: it must be from {WATCH_INTERVAL_MS_MIN} to {WATCH_INTERVAL_MS_MAX}"
        )))
    }
}

#[tonic::async_trait]
impl SyncMonitor for SyncMonitorService {
    type WatchStream = ReceiverStream<Result<v1::StatusReply, Status>>;

    async fn status(&self, request: Request<v1::StatusRequest>) -> Result<Response<v1::StatusReply>, Status> {
        Ok(Response::new(Self::reply(&*self.registry, request.into_inner().bdb)))
    }

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let interval = check_watch_interval(request.interval_ms)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_MAX);
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // The send fails once the client has gone: the task ends.
                if tx.send(Ok(Self::reply(&*registry, request.bdb))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<PeerReading>);

    impl MonitorRegistry for Fixed {
        fn peers(&self, bdb: Option<u64>) -> Vec<PeerReading> {
            self.0.iter().filter(|p| bdb.is_none_or(|b| b == p.bdb)).cloned().collect()
        }
    }

    fn reading(bdb: u64, peer: u16) -> PeerReading {
        PeerReading {
            bdb,
            crdb_guid: format!("g{bdb}"),
            local_region: 1,
            peer_region: peer,
            local_shard: 0,
            peer_shard: 0,
            endpoint: "http://b:9445".into(),
            ingress: LinkStatsSnapshot {
                state: "streaming",
                bytes_in_wire: 10,
                bytes_in_raw: 30,
                partial_syncs: 2,
                ..Default::default()
            },
            egress: Some(LinkStatsSnapshot { bytes_out_wire: 5, bytes_out_raw: 9, deltas: 3, ..Default::default() }),
        }
    }

    #[test]
    fn watch_interval_is_bounded() {
        assert_eq!(check_watch_interval(0).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(check_watch_interval(WATCH_INTERVAL_MS_MAX + 1).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(check_watch_interval(WATCH_INTERVAL_MS_MIN).unwrap(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn status_filters_by_bdb_and_maps_both_directions() {
        let service = SyncMonitorService::new(Arc::new(Fixed(vec![reading(1, 2), reading(3, 2)])));
        let reply = service.status(Request::new(v1::StatusRequest { bdb: Some(3) })).await.unwrap().into_inner();
        assert_eq!(reply.peers.len(), 1);
        let peer = &reply.peers[0];
        assert_eq!((peer.bdb, peer.crdb_guid.as_str(), peer.state.as_str()), (3, "g3", "streaming"));
        assert_eq!((peer.ingress_bytes_wire, peer.ingress_bytes_raw), (10, 30));
        assert_eq!((peer.egress_bytes_wire, peer.egress_bytes_raw, peer.deltas_out), (5, 9, 3));
        assert_eq!(peer.partial_syncs, 2);
        let all = service.status(Request::new(v1::StatusRequest { bdb: None })).await.unwrap().into_inner();
        assert_eq!(all.peers.len(), 2);
    }
}
