//! The listener: accepts clients up to `maxclients` and serves each on its
//! own task, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::connection;
use crate::context::ServerState;

/// How often background maintenance (active expiry, garbage collection)
/// runs: 10 times a second, like Redis's active expiry, each step bounded.
pub const MAINTENANCE_INTERVAL_MS: u64 = 100;

/// Serves clients on `listener` until `shutdown` turns true.
pub async fn run(listener: TcpListener, server: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(server.settings.maxclients));
    let maintenance = tokio::spawn(maintenance_cycle(server.clone(), shutdown.clone()));
    // Busy polling (D116) on a single-threaded runtime only.
    let poller = (tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
        .then(|| {
            let server = server.clone();
            tokio::spawn(async move { server.busy_poll.run().await })
        });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut socket, _peer)) = accepted else { continue };
                server.stats.connections.fetch_add(1, Ordering::Relaxed);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let server = server.clone();
                        tokio::spawn(async move {
                            server.stats.clients.fetch_add(1, Ordering::Relaxed);
                            connection::serve(socket, server.clone()).await;
                            server.stats.clients.fetch_sub(1, Ordering::Relaxed);
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        server.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
                        });
                    }
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
    maintenance.abort();
    if let Some(poller) = poller {
        poller.abort();
    }
    server.persistence_shutdown();
}

/// Runs only the background maintenance of `server` until `shutdown` turns
/// true: a shard of a sharded database has no listener of its own (the
/// routers hand it connections).
pub async fn maintain(server: Arc<ServerState>, shutdown: watch::Receiver<bool>) {
    maintenance_cycle(server.clone(), shutdown).await;
    server.persistence_shutdown();
}

/// Background maintenance: deletes keys whose deadline this replica owns and
/// collects garbage, a bounded amount per step, so memory is reclaimed even
/// for keys nobody reads.
async fn maintenance_cycle(server: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(MAINTENANCE_INTERVAL_MS));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let step = server.shard().maintain();
                if let Err(error) = step {
                    tracing::warn!(%error, "maintenance step skipped");
                }
                // File I/O (fsync, a rewrite) runs off the runtime's threads.
                if server.is_journaling() {
                    let persisting = server.clone();
                    let _ = tokio::task::spawn_blocking(move || persisting.persistence_tick()).await;
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() { return; }
            }
        }
    }
}

/// Binds `addr`, with the error Redis users expect when the port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(e.kind(), format!("{addr} is already in use (choose another with --port)"))
        } else {
            std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        }
    })
}
