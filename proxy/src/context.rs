//! What a command runs with: the shared server state, the calling client's
//! state, and the reply writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use meridian_replication::Shard;

use crate::reply::{Protocol, Reply};

/// Server settings a command may read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `requirepass`: the password of the default user, if any.
    pub requirepass: Option<String>,
    /// `proto-max-bulk-len`: the largest string a command may build.
    pub proto_max_bulk_len: usize,
    /// `maxclients`.
    pub maxclients: usize,
    /// The TCP port served (INFO).
    pub port: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { requirepass: None, proto_max_bulk_len: 512 * 1024 * 1024, maxclients: 10_000, port: 6379 }
    }
}

/// Counters for INFO stats.
#[derive(Debug, Default)]
pub struct Stats {
    /// Commands processed.
    pub commands: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused at `maxclients`.
    pub rejected: AtomicU64,
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Keyspace hits (reads that found their key).
    pub hits: AtomicU64,
    /// Keyspace misses.
    pub misses: AtomicU64,
}

/// State shared by every connection of one database endpoint.
pub struct ServerState {
    shard: Mutex<Shard>,
    /// Settings.
    pub settings: Settings,
    /// Counters.
    pub stats: Stats,
    /// When the server started (INFO uptime).
    pub started: Instant,
    next_client_id: AtomicU64,
}

impl ServerState {
    /// A server over `shard`.
    pub fn new(shard: Shard, settings: Settings) -> ServerState {
        ServerState {
            shard: Mutex::new(shard),
            settings,
            stats: Stats::default(),
            started: Instant::now(),
            next_client_id: AtomicU64::new(1),
        }
    }

    /// The shard, locked for one command. Why a mutex and not a channel to a
    /// shard task: a command is a few hundred nanoseconds of work, a channel
    /// hop costs more than that, and the lock is never held across an await.
    pub fn shard(&self) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock is a bug that already aborted that
        // command; the keyspace is only changed through complete deltas, so the
        // data behind a poisoned lock is consistent and serving may go on.
        self.shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// One connection's state.
#[derive(Debug)]
pub struct ClientState {
    /// CLIENT ID.
    pub id: u64,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
    /// True once AUTH succeeded (or no password is set).
    pub authenticated: bool,
    /// Set by QUIT: close after the reply.
    pub closing: bool,
}

impl ClientState {
    /// A new client of `server`.
    pub fn new(server: &ServerState) -> ClientState {
        ClientState {
            id: server.next_client_id(),
            name: None,
            protocol: Protocol::Resp2,
            authenticated: server.settings.requirepass.is_none(),
            closing: false,
        }
    }
}

/// What one command runs with.
pub struct Context<'a, 'b> {
    /// Shared server state.
    pub server: &'a ServerState,
    /// The calling client.
    pub client: &'a mut ClientState,
    /// Where the reply goes.
    pub reply: Reply<'b>,
}
