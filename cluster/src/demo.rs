//! `meridian demo`: a local active-active topology on loopback, no
//! configuration.
//!
//! It starts several regions (three by default: `us-east`, `eu-west`,
//! `ap-south`), each serving one active-active database on its own Redis
//! port, and connects every region to every other with the WAN syncer over
//! gRPC (`meridian_wan`): each region streams the deltas it originates to its
//! peers and applies theirs. A write in any region shows up in the others
//! within milliseconds, and concurrent writes to the same keys converge by
//! the rules of docs/semantics.md.
//!
//! The same wiring — a [`RegionInbound`] over a database's server state, a
//! [`RegionOutbound`] over its outbox, one `Link` per peer
//! ([`crate::active_active`]) — is what a node runs per active-active
//! database ([`crate::databases`]).

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_crdt::ReplicaId;
use meridian_crdt::clock::MAX_SKEW_MS_DEFAULT;
use meridian_crdt::gc::Reporter;
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_wan::{Inbound, Link, LinkConfig, LinkStatsSnapshot, Outbox, SyncSource};

use crate::active_active::{RegionInbound, RegionOutbound};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The names of the demo's regions, in order (their region ids are 1, 2, ...).
pub const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];

/// The active-active database the demo serves in every region.
pub const DATABASE: &str = "demo";

/// Bytes of locally originated deltas each region keeps for its peers.
pub const OUTBOX_BYTES: usize = 64 * 1024 * 1024;

/// One running region of the demo.
pub struct Region {
    /// Its name (`us-east`, ...).
    pub name: &'static str,
    /// Its region id (also its replica id).
    pub id: u16,
    /// Where Redis clients connect.
    pub redis_addr: SocketAddr,
    /// Where peers dial its WAN sync service.
    pub sync_addr: SocketAddr,
    /// The database's server state.
    pub server: Arc<ServerState>,
    links: Vec<Link>,
}

impl Region {
    /// Each incoming link's figures (peer, lag, bytes, state).
    pub fn link_stats(&self) -> Vec<LinkStatsSnapshot> {
        let now_ms = self.server.shard().wall_ms();
        self.links.iter().map(|link| link.stats().read(now_ms)).collect()
    }
}

/// A running demo topology.
pub struct Demo {
    /// The regions, in id order.
    pub regions: Vec<Region>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Demo {
    /// Starts `count` regions (2 to 5) on 127.0.0.1. `redis_ports` gives each
    /// region's Redis port (0 or absent: any free port).
    pub async fn start(count: usize, redis_ports: &[u16]) -> anyhow::Result<Demo> {
        anyhow::ensure!((2..=REGION_NAMES.len()).contains(&count), "a demo has 2 to 5 regions (got {count})");
        let (shutdown, receiver) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut regions = Vec::new();
        let ids: Vec<u16> = (1..=count as u16).collect();
        for (index, &id) in ids.iter().enumerate() {
            let port = redis_ports.get(index).copied().unwrap_or(0);
            let listener = meridian_proxy::server::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
            let redis_addr = listener.local_addr()?;
            let mut shard = Shard::new(ReplicaId(id), MAX_SKEW_MS_DEFAULT);
            let peers: Vec<Reporter> = ids.iter().copied().filter(|&peer| peer != id).map(Reporter::region).collect();
            shard.set_peers(&peers);
            let outbound = Arc::new(RegionOutbound::new(Outbox::for_new_database(OUTBOX_BYTES)));
            let settings = Settings { port: redis_addr.port(), ..Settings::default() };
            let server = Arc::new(ServerState::new(shard, settings).with_journal_sink(outbound.journal_sink()));
            outbound.attach(&server);
            tasks.push(tokio::spawn(meridian_proxy::server::run(listener, server.clone(), receiver.clone())));

            let source = SyncSource::new(id);
            source.add_database(DATABASE, outbound);
            let sync_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let sync_addr = sync_listener.local_addr()?;
            let mut stop = receiver.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                if let Err(error) = meridian_wan::serve(sync_listener, source, stopped).await {
                    tracing::error!(%error, "WAN sync service failed");
                }
            }));
            regions.push(Region { name: REGION_NAMES[index], id, redis_addr, sync_addr, server, links: Vec::new() });
        }
        let endpoints: Vec<(u16, SocketAddr)> = regions.iter().map(|r| (r.id, r.sync_addr)).collect();
        for region in &mut regions {
            let inbound: Arc<dyn Inbound> = Arc::new(RegionInbound::new(region.server.clone()));
            for &(peer, addr) in endpoints.iter().filter(|(peer, _)| *peer != region.id) {
                let config = LinkConfig::new(DATABASE, region.id, peer, format!("http://{addr}"));
                region.links.push(Link::spawn(config, inbound.clone()));
            }
        }
        Ok(Demo { regions, shutdown, tasks })
    }

    /// Stops every region: links first, then the services.
    pub async fn stop(self) {
        for region in self.regions {
            for link in region.links {
                link.stop().await;
            }
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
