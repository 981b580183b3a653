//! The proxies of the databases whose master is on another node.
//!
//! Every node serves every database's port: the node holding the master
//! serves it in-process ([`crate::databases`]); every other node listens on
//! the port too and forwards each client's connection to the master's node
//! ([`meridian_proxy::forward`]), following the master when a failover moves
//! it, so clients connected to a surviving node keep their connection.
//!
//! A node does not forward a port on the address the master itself serves
//! it on (nodes sharing one address, as in-process test clusters do): that
//! address already reaches the master.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meridian_proxy::forward::Route;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::databases::RETRY_FAILED_INTERVAL;

/// A database whose master is on one node, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// Database uid.
    pub uid: u64,
    /// Client port.
    pub port: u16,
    /// The node holding its masters.
    pub master_node: u64,
    /// Where clients reach the master, its epoch, and whether there is a
    /// password.
    pub route: Route,
}

/// One port this node forwards.
struct Listening {
    port: u16,
    /// Stops the accept loop (its connections go on).
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The routes and forwarding listeners of one node.
pub struct Forwarders {
    bind: IpAddr,
    node_id: u64,
    maxclients: usize,
    /// Every routed database's route, watched by its forwarded connections
    /// (on this node, whether it listens for the database or not: a
    /// connection accepted before the master came here still follows it).
    routes: BTreeMap<u64, watch::Sender<Route>>,
    /// Closes every forwarded connection of a database (deleted).
    kill: BTreeMap<u64, watch::Sender<bool>>,
    listening: BTreeMap<u64, Listening>,
    /// Ports that could not be bound, and when (retried after a while).
    failed: BTreeMap<u64, (String, Instant)>,
    /// Forwarded connections open now, per database.
    clients: BTreeMap<u64, Arc<AtomicUsize>>,
}

impl Forwarders {
    /// No routes yet.
    pub fn new(bind: IpAddr, node_id: u64, maxclients: usize) -> Forwarders {
        Forwarders {
            bind,
            node_id,
            maxclients,
            routes: BTreeMap::new(),
            kill: BTreeMap::new(),
            listening: BTreeMap::new(),
            failed: BTreeMap::new(),
            clients: BTreeMap::new(),
        }
    }

    /// True if this node should listen for `routed`: the master is elsewhere,
    /// not on this node's own address.
    fn forwards(&self, routed: &Routed) -> bool {
        forwards(self.bind, self.node_id, routed)
    }

    /// Publishes the routes and closes the listeners no longer wanted (before
    /// the databases served here bind their ports). A database gone from the
    /// configuration closes its forwarded connections too.
    pub async fn update(&mut self, routed: &BTreeMap<u64, Routed>) {
        for (uid, want) in routed {
            match self.routes.get(uid) {
                Some(route) => {
                    route.send_if_modified(|r| {
                        let changed = *r != want.route;
                        if changed {
                            tracing::info!(bdb = uid, master = ?want.route.master, epoch = want.route.epoch, "database master moved: forwarded clients follow");
                            *r = want.route.clone();
                        }
                        changed
                    });
                }
                None => {
                    self.routes.insert(*uid, watch::channel(want.route.clone()).0);
                    self.kill.insert(*uid, watch::channel(false).0);
                }
            }
        }
        let gone: Vec<u64> = self.routes.keys().filter(|uid| !routed.contains_key(uid)).copied().collect();
        for uid in gone {
            self.routes.remove(&uid);
            if let Some(kill) = self.kill.remove(&uid) {
                let _ = kill.send(true);
            }
            self.clients.remove(&uid);
        }
        let stale: Vec<u64> = self
            .listening
            .iter()
            .filter(|(uid, l)| routed.get(uid).is_none_or(|want| !self.forwards(want) || want.port != l.port))
            .map(|(uid, _)| *uid)
            .collect();
        for uid in stale {
            if let Some(listening) = self.listening.remove(&uid) {
                let _ = listening.stop.send(true);
                let _ = listening.task.await;
                tracing::info!(bdb = uid, port = listening.port, "stopped forwarding the database's port");
            }
        }
        let (bind, node_id) = (self.bind, self.node_id);
        self.failed.retain(|uid, _| routed.get(uid).is_some_and(|want| forwards(bind, node_id, want)));
    }

    /// Opens the listeners wanted and missing (after the databases no longer
    /// served here closed their ports).
    pub async fn listen(&mut self, routed: &BTreeMap<u64, Routed>) {
        for want in routed.values() {
            if !self.forwards(want) || self.listening.contains_key(&want.uid) {
                continue;
            }
            if let Some((_, since)) = self.failed.get(&want.uid)
                && since.elapsed() < RETRY_FAILED_INTERVAL
            {
                continue;
            }
            let addr = SocketAddr::new(self.bind, want.port);
            let listener = match meridian_proxy::server::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(bdb = want.uid, %addr, %error, "cannot forward the database's port");
                    self.failed.insert(want.uid, (error.to_string(), Instant::now()));
                    continue;
                }
            };
            self.failed.remove(&want.uid);
            let (stop, stopped) = watch::channel(false);
            let route = self.routes[&want.uid].subscribe();
            let kill = self.kill[&want.uid].subscribe();
            let clients = self.clients.entry(want.uid).or_default().clone();
            let task = tokio::spawn(accept(listener, route, kill, stopped, clients, self.maxclients));
            tracing::info!(bdb = want.uid, %addr, master = ?want.route.master, "forwarding the database's port to its master");
            self.listening.insert(want.uid, Listening { port: want.port, stop, task });
        }
    }

    /// Closes every listener and forwarded connection (node shutdown).
    pub async fn stop_all(&mut self) {
        self.update(&BTreeMap::new()).await;
    }

    /// This node's proxy view of database `uid`, if it forwards it.
    pub fn status(&self, uid: u64) -> Option<Value> {
        let route = self.routes.get(&uid)?.borrow().clone();
        let clients = self.clients.get(&uid).map_or(0, |c| c.load(Ordering::Relaxed));
        if let Some(listening) = self.listening.get(&uid) {
            Some(json!({
                "node_uid": self.node_id, "status": "active", "role": "proxy", "port": listening.port,
                "master": route.master.map(|m| m.to_string()), "epoch": route.epoch, "clients": clients,
            }))
        } else {
            let (error, _) = self.failed.get(&uid)?;
            Some(json!({"node_uid": self.node_id, "status": "error", "role": "proxy", "error": error}))
        }
    }
}

/// True if a node (`node_id`, listening on `bind`) forwards `routed`: the
/// master is elsewhere, not on the node's own address.
fn forwards(bind: IpAddr, node_id: u64, routed: &Routed) -> bool {
    routed.master_node != node_id && routed.route.master.is_none_or(|master| master.ip() != bind)
}

/// Accepts clients on a forwarded port until `stopped`; each connection
/// runs on its own task and outlives the listener.
async fn accept(
    listener: tokio::net::TcpListener,
    route: watch::Receiver<Route>,
    kill: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
    clients: Arc<AtomicUsize>,
    maxclients: usize,
) {
    accept_each(listener, stopped, clients, maxclients, move |socket| {
        meridian_proxy::forward::serve(socket, route.clone(), kill.clone())
    })
    .await;
}

/// Accepts connections until `stopped`, at most `maxclients` open at once
/// (counted in `clients`; the next gets Redis's error), and serves each
/// with `serve` on its own task.
pub(crate) async fn accept_each<F, Fut>(
    listener: tokio::net::TcpListener,
    mut stopped: watch::Receiver<bool>,
    clients: Arc<AtomicUsize>,
    maxclients: usize,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|&s| s) => return,
        };
        let Ok((mut socket, _)) = accepted else {
            // Out of descriptors and the like: pause instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if clients.fetch_add(1, Ordering::AcqRel) >= maxclients {
            clients.fetch_sub(1, Ordering::AcqRel);
            tokio::spawn(async move {
                let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        }
        let (served, clients) = (serve(socket), clients.clone());
        tokio::spawn(async move {
            served.await;
            clients.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Where clients reach a node's databases: the host of its cluster address.
pub fn node_host(cluster_addr: &str) -> Option<IpAddr> {
    cluster_addr.parse::<SocketAddr>().ok().map(|a| a.ip()).or_else(|| {
        let (host, _) = cluster_addr.rsplit_once(':')?;
        host.trim_matches(['[', ']']).parse().ok()
    })
}
