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
//! [`RegionOutbound`] over its outbox, one `Link` per peer — is what a node
//! runs per active-active database.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use meridian_crdt::clock::{MAX_SKEW_MS_DEFAULT, Observation};
use meridian_crdt::{ClockError, Delta, Keyspace, ReplicaId, SnapshotMerge, VersionVector};
use meridian_proxy::context::{ServerState, Settings};
use meridian_replication::Shard;
use meridian_wan::{Cursor, Inbound, Link, LinkConfig, LinkStatsSnapshot, Outbound, Outbox, Snapshot, SyncSource};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The names of the demo's regions, in order (their region ids are 1, 2, ...).
pub const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];

/// The active-active database the demo serves in every region.
pub const DATABASE: &str = "demo";

/// Bytes of locally originated deltas each region keeps for its peers.
pub const OUTBOX_BYTES: usize = 64 * 1024 * 1024;

/// The destination side of one region's database: applies a peer's deltas
/// to the database (waking blocked clients, flagging WATCHes), keeps the
/// per-source cursors, and shows the local clock the peer's timestamps.
pub struct RegionInbound {
    server: Arc<ServerState>,
    cursors: Mutex<HashMap<u16, Cursor>>,
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
            let peers: Vec<u16> = ids.iter().copied().filter(|&peer| peer != id).collect();
            shard.set_peers(&peers);
            let outbound =
                Arc::new(RegionOutbound { outbox: Outbox::for_new_database(OUTBOX_BYTES), server: OnceLock::new() });
            let sink = outbound.clone();
            let settings = Settings { port: redis_addr.port(), ..Settings::default() };
            let server = Arc::new(ServerState::new(shard, settings).with_journal_sink(Box::new(move |deltas| {
                for delta in deltas {
                    sink.outbox.push(delta);
                }
            })));
            let _ = outbound.server.set(Arc::downgrade(&server));
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
            let inbound: Arc<dyn Inbound> =
                Arc::new(RegionInbound { server: region.server.clone(), cursors: Mutex::new(HashMap::new()) });
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
