//! The routers of the databases split over several shards.
//!
//! Every node serves each sharded database's port with
//! [`meridian_proxy::router`]: clients connected to any node reach every
//! shard, and the routers of the other nodes reach this node's shards
//! through the same port (their backend connections name the shard with a
//! handshake, and are handed to the shard's server here).
//!
//! Nodes sharing one address (in-process test clusters) cannot all listen
//! on it: the node with the lowest id among them does, and reaches only its
//! own shards; a real deployment gives each node its own address.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meridian_proxy::router::{Attach, ShardMap};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::databases::RETRY_FAILED_INTERVAL;
use crate::forwarders::accept_each;

/// A sharded database as this node routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharded {
    /// Client port.
    pub port: u16,
    /// Where each shard's master is.
    pub map: ShardMap,
    /// False if a node with a lower id shares this node's address (it
    /// listens for both).
    pub listen: bool,
}

/// One routed database.
struct Routed {
    port: u16,
    map: watch::Sender<Arc<ShardMap>>,
    /// Closes the listener and every routed connection.
    kill: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    clients: Arc<AtomicUsize>,
}

/// The sharded databases' routers of one node.
pub struct Routers {
    bind: IpAddr,
    maxclients: usize,
    routed: BTreeMap<u64, Routed>,
    /// Ports that could not be bound, and when (retried after a while).
    failed: BTreeMap<u64, (String, Instant)>,
}

impl Routers {
    /// No database routed yet.
    pub fn new(bind: IpAddr, maxclients: usize) -> Routers {
        Routers { bind, maxclients, routed: BTreeMap::new(), failed: BTreeMap::new() }
    }

    /// Publishes every sharded database's map, closes the routers of the
    /// databases gone (or moved to another port) and opens the missing
    /// ones.
    pub async fn update(&mut self, wanted: &BTreeMap<u64, Sharded>, attach: &Attach) {
        let gone: Vec<u64> = self
            .routed
            .iter()
            .filter(|(uid, r)| wanted.get(uid).is_none_or(|w| w.port != r.port))
            .map(|(uid, _)| *uid)
            .collect();
        for uid in gone {
            let routed = self.routed.remove(&uid).expect("listed");
            let _ = routed.kill.send(true);
            if let Some(task) = routed.task {
                let _ = task.await;
            }
            tracing::info!(bdb = uid, port = routed.port, "stopped routing the database's port");
        }
        self.failed.retain(|uid, _| wanted.contains_key(uid));
        for (uid, want) in wanted {
            let map = Arc::new(want.map.clone());
            let routed = self.routed.entry(*uid).or_insert_with(|| Routed {
                port: want.port,
                map: watch::channel(map.clone()).0,
                kill: watch::channel(false).0,
                task: None,
                clients: Arc::default(),
            });
            routed.map.send_if_modified(|current| {
                let changed = **current != *map;
                if changed {
                    *current = map.clone();
                }
                changed
            });
            if !want.listen || routed.task.as_ref().is_some_and(|t| !t.is_finished()) {
                continue;
            }
            if let Some((_, since)) = self.failed.get(uid)
                && since.elapsed() < RETRY_FAILED_INTERVAL
            {
                continue;
            }
            let addr = SocketAddr::new(self.bind, want.port);
            match meridian_proxy::server::bind(addr).await {
                Ok(listener) => {
                    self.failed.remove(uid);
                    let task = tokio::spawn(accept(
                        listener,
                        routed.map.subscribe(),
                        routed.kill.subscribe(),
                        attach.clone(),
                        routed.clients.clone(),
                        self.maxclients,
                    ));
                    routed.task = Some(task);
                    tracing::info!(bdb = uid, %addr, shards = want.map.shards.len(), "routing the sharded database's port");
                }
                Err(error) => {
                    tracing::error!(bdb = uid, %addr, %error, "cannot route the database's port");
                    self.failed.insert(*uid, (error.to_string(), Instant::now()));
                }
            }
        }
    }

    /// Closes every router and routed connection (node shutdown).
    pub async fn stop_all(&mut self, attach: &Attach) {
        self.update(&BTreeMap::new(), attach).await;
    }

    /// This node's router of database `uid`, if it routes it.
    pub fn status(&self, uid: u64) -> Option<Value> {
        let routed = self.routed.get(&uid)?;
        let map = routed.map.borrow().clone();
        let shards: Vec<Value> = map
            .shards
            .iter()
            .map(|s| {
                json!({
                    "slots": s.slots.iter().map(|(a, b)| format!("{a}-{b}")).collect::<Vec<_>>(),
                    "master_node": s.node_uid,
                    "master": s.master.map(|m| m.to_string()),
                    "epoch": s.epoch,
                })
            })
            .collect();
        let mut status = json!({
            "role": "router", "port": routed.port, "shards": shards,
            "clients": routed.clients.load(Ordering::Relaxed),
            "status": if routed.task.is_some() { "active" } else { "not listening" },
        });
        if let Some((error, _)) = self.failed.get(&uid) {
            status["status"] = json!("error");
            status["error"] = json!(error);
        }
        Some(status)
    }
}

/// Accepts connections on a routed port until `kill`; each runs on its own
/// task and ends with `kill` too.
async fn accept(
    listener: tokio::net::TcpListener,
    map: watch::Receiver<Arc<ShardMap>>,
    kill: watch::Receiver<bool>,
    attach: Attach,
    clients: Arc<AtomicUsize>,
    maxclients: usize,
) {
    accept_each(listener, kill.clone(), clients, maxclients, move |socket| {
        meridian_proxy::router::serve(socket, map.clone(), attach.clone(), kill.clone())
    })
    .await;
}
