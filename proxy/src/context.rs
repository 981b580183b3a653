//! What a command runs with: the shared server state, the calling client's
//! state, and the reply writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use meridian_crdt::keyspace::MERGE_STEP_SLOTS;
use meridian_replication::Shard;
use tokio::sync::Notify;

use crate::blocking::{Block, Blocked};
use crate::cmd::CommandSpec;
use crate::cmd::transactions::Transaction;
use crate::pubsub::PubSub;
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

/// The default hard output limit of a pub/sub subscriber, as Redis's.
pub const PUBSUB_OUTPUT_LIMIT_DEFAULT: usize = 32 * 1024 * 1024;

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
    /// The largest resident set size INFO memory has seen (bytes).
    pub peak_rss: AtomicU64,
}

/// State shared by every connection of one database endpoint.
pub struct ServerState {
    shard: Mutex<Shard>,
    /// Settings.
    pub settings: Settings,
    /// The password of the default user now: starts as
    /// `settings.requirepass`, changed by the control plane when the
    /// database's password changes (connections made afterwards use it).
    requirepass: RwLock<Option<Arc<str>>>,
    /// Counters.
    pub stats: Stats,
    /// Busy polling before the runtime sleeps (`busy-poll-us`).
    pub busy_poll: crate::spin::BusyPoll,
    /// When the server started (INFO uptime).
    pub started: Instant,
    /// When the server started, on the wall clock (LASTSAVE).
    pub started_at: SystemTime,
    /// The runtime-settable parameters (CONFIG SET), by canonical name; see
    /// `cmd::server` for which exist and what they do.
    config: Mutex<BTreeMap<String, String>>,
    clients: Mutex<HashMap<u64, Arc<ClientHandle>>>,
    next_client_id: AtomicU64,
    /// Keeps an EXEC batch apart from every other command: EXEC holds it
    /// exclusively for its whole batch, every other command holds it shared
    /// while it runs (see [`ServerState::exec_shared`]).
    exec_lock: RwLock<()>,
    /// Keeps a peer region's snapshot merge in steps apart from what must
    /// not run between its steps (D106): the merge holds it exclusively for
    /// its whole length; a batch of peers' deltas and a copy of the keyspace
    /// (a journal rewrite, a replica's full sync, a snapshot for a peer) hold
    /// it shared. Taken before the shard's lock, never while holding it.
    merge_gate: RwLock<()>,
    /// Who WATCHes which key.
    watches: Mutex<Watches>,
    /// The number of keys in `watches`: while it is 0 a write skips the
    /// registry's lock entirely.
    watched_keys: AtomicUsize,
    /// Clients blocked on keys (see [`crate::blocking`]).
    blocked: Mutex<Blocked>,
    /// How many clients are blocked, or about to look at the keyspace before
    /// blocking: while 0 a write skips the blocked registry entirely.
    pub(crate) blocked_count: AtomicUsize,
    /// Channel and pattern subscriptions (see [`crate::pubsub`]).
    pub(crate) pubsub: RwLock<PubSub>,
    /// The most bytes of unwritten pub/sub messages a subscriber may hold
    /// before it is disconnected (Redis's `client-output-buffer-limit pubsub`
    /// hard limit, 32 MiB by default; 0 = no limit).
    pub pubsub_output_limit: AtomicUsize,
    /// The journal, when the node has a data directory.
    pub(crate) persistence: Option<crate::persistence::Persistence>,
    /// True while journal appends fail (write commands answer `MISCONF`).
    pub(crate) persistence_failing: AtomicBool,
    /// The last journal error.
    pub(crate) persistence_error: Mutex<String>,
    /// Where locally originated deltas go once committed (the WAN outbox).
    pub(crate) journal_sink: Option<crate::persistence::JournalSink>,
    /// Serializes commits when there is no persistence journal to lock, and
    /// holds the local deltas not yet shipped: their journal append failed,
    /// or (with replication) no replica has acknowledged them yet. Each with
    /// its replication offset (0 without replication).
    pub(crate) commit: Mutex<std::collections::VecDeque<(u64, bytes::Bytes)>>,
    /// Journal position committed so far without persistence.
    pub(crate) committed_seq: AtomicU64,
    /// The master side of shard replication, when on (see
    /// [`crate::replication`]).
    pub(crate) replication: Option<crate::replication::MasterReplication>,
    /// True while this master is fenced: write commands are refused.
    pub(crate) fenced: AtomicBool,
    /// With replication: when the write lease ends (see
    /// [`ServerState::set_write_lease`]).
    pub(crate) lease_until_us: AtomicU64,
}

/// The WATCH registry: for each watched key, the watching clients' "touched"
/// flags; for each watching client, its keys (to unwatch them all at once).
#[derive(Default)]
struct Watches {
    by_key: HashMap<Bytes, HashMap<u64, Arc<AtomicBool>>>,
    by_client: HashMap<u64, Vec<Bytes>>,
}

impl ServerState {
    /// A server over `shard`.
    pub fn new(shard: Shard, settings: Settings) -> ServerState {
        ServerState {
            shard: Mutex::new(shard),
            requirepass: RwLock::new(settings.requirepass.as_deref().map(Arc::from)),
            settings,
            stats: Stats::default(),
            busy_poll: crate::spin::BusyPoll::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            config: Mutex::new(crate::cmd::server::config_defaults()),
            clients: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            exec_lock: RwLock::new(()),
            merge_gate: RwLock::new(()),
            watches: Mutex::new(Watches::default()),
            watched_keys: AtomicUsize::new(0),
            blocked: Mutex::new(Blocked::default()),
            blocked_count: AtomicUsize::new(0),
            pubsub: RwLock::new(PubSub::default()),
            pubsub_output_limit: AtomicUsize::new(PUBSUB_OUTPUT_LIMIT_DEFAULT),
            persistence: None,
            persistence_failing: AtomicBool::new(false),
            persistence_error: Mutex::new(String::new()),
            journal_sink: None,
            commit: Mutex::new(std::collections::VecDeque::new()),
            committed_seq: AtomicU64::new(0),
            replication: None,
            fenced: AtomicBool::new(false),
            lease_until_us: AtomicU64::new(0),
        }
    }

    /// A server whose shard persists its deltas to `journal` (see
    /// [`crate::persistence`]).
    pub fn with_journal(mut self, journal: meridian_replication::durability::Journal) -> ServerState {
        self.persistence = Some(crate::persistence::Persistence::new(journal));
        self
    }

    /// The password of the default user, if any (read when a client
    /// connects, authenticates or resets).
    pub fn requirepass(&self) -> Option<Arc<str>> {
        // Replaced whole under the lock: a poisoned value is consistent.
        self.requirepass.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Changes the password of the default user for connections made from
    /// now on (connected clients stay authenticated, as with Redis's CONFIG
    /// SET requirepass).
    pub fn set_requirepass(&self, password: Option<&str>) {
        *self.requirepass.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = password.map(Arc::from);
    }

    /// True if the node persists its writes.
    pub fn is_persistent(&self) -> bool {
        self.persistence.is_some()
    }

    /// Hands every delta this database originates, once committed (see
    /// [`crate::persistence`]), to `sink` — the WAN syncer's outbox. Turns
    /// the shard's journal on.
    pub fn with_journal_sink(mut self, sink: crate::persistence::JournalSink) -> ServerState {
        self.shard().keyspace_mut().set_journal(true);
        self.journal_sink = Some(sink);
        self
    }

    /// True if applied deltas are journaled (persistence, a journal sink or
    /// replication): a write's reply then waits for its commit.
    pub fn is_journaling(&self) -> bool {
        self.persistence.is_some() || self.journal_sink.is_some() || self.replication.is_some()
    }

    /// Held shared by every command except EXEC, for the whole command
    /// (including marking watched keys touched). Why a `RwLock` rather than
    /// making EXEC hold the shard lock: each handler locks the shard itself
    /// and the std mutex is not reentrant, so EXEC cannot lock it around its
    /// batch; a shared lock taken by everyone else costs one uncontended
    /// atomic read-modify-write on the normal path, and only EXEC excludes.
    /// It is never held across an await. Lock order: this, then the shard or
    /// the watch registry (never both at once).
    pub fn exec_shared(&self) -> RwLockReadGuard<'_, ()> {
        // The guarded value is `()`: a poisoned lock protects nothing broken.
        self.exec_lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by EXEC for its whole batch: no other client's command runs
    /// meanwhile, and every write that ran before has already marked its
    /// watched keys touched.
    pub fn exec_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.exec_lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn watches(&self) -> MutexGuard<'_, Watches> {
        // Every update leaves both maps consistent before it can panic.
        self.watches.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `client` as watching `key`, with the flag a write to the key
    /// sets. Returns false if it already watched the key.
    pub fn watch(&self, client: u64, key: &[u8], touched: &Arc<AtomicBool>) -> bool {
        let mut watches = self.watches();
        if watches.by_key.get(key).is_some_and(|clients| clients.contains_key(&client)) {
            return false;
        }
        // Copied so that a long-lived watch does not pin the read buffer the
        // argument was parsed from.
        let key = Bytes::copy_from_slice(key);
        let clients = watches.by_key.entry(key.clone()).or_default();
        if clients.is_empty() {
            self.watched_keys.fetch_add(1, Ordering::Relaxed);
        }
        clients.insert(client, touched.clone());
        watches.by_client.entry(client).or_default().push(key);
        true
    }

    /// Unregisters every key `client` watches (UNWATCH, EXEC, DISCARD,
    /// disconnect). Once this returns, no write sets the client's flag.
    pub fn unwatch_all(&self, client: u64) {
        let mut watches = self.watches();
        let Some(keys) = watches.by_client.remove(&client) else { return };
        for key in keys {
            if let Some(clients) = watches.by_key.get_mut(&key) {
                clients.remove(&client);
                if clients.is_empty() {
                    watches.by_key.remove(&key);
                    self.watched_keys.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Marks the clients watching the keys a write command named as touched
    /// (every watcher for FLUSHDB and FLUSHALL). Called after the command
    /// ran, while its [`ServerState::exec_shared`] guard is still held.
    pub fn touch_written(&self, spec: &CommandSpec, args: &[&[u8]]) {
        // Relaxed is enough: WATCH registers before it reads the shard, and
        // every write takes the shard lock before it gets here, so a write
        // ordered after a WATCH sees that WATCH's count through the shard
        // mutex; a write racing with WATCH may or may not touch, as in Redis.
        if self.watched_keys.load(Ordering::Relaxed) == 0 {
            return;
        }
        if spec.name == "flushdb" || spec.name == "flushall" {
            return self.touch_all_watched();
        }
        let watches = self.watches();
        for key in crate::cmd::command_keys(spec, args) {
            if let Some(clients) = watches.by_key.get(key.as_ref()) {
                for flag in clients.values() {
                    flag.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Flags the clients WATCHing any of `keys` (writes that did not come
    /// from a command: deltas from a replica stream or another region).
    pub fn touch_keys<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        if self.watched_keys.load(Ordering::Relaxed) == 0 {
            return;
        }
        let watches = self.watches();
        for key in keys {
            if let Some(clients) = watches.by_key.get(key) {
                for flag in clients.values() {
                    flag.store(true, Ordering::Release);
                }
            }
        }
    }

    /// The gate of snapshot merges in steps (see [`ServerState::merge_snapshot`]).
    pub fn merge_gate(&self) -> &RwLock<()> {
        &self.merge_gate
    }

    /// Holds the merge gate shared: no snapshot merge runs (or is between
    /// two of its steps) until the guard drops. For a copy of the keyspace.
    pub fn no_merge(&self) -> RwLockReadGuard<'_, ()> {
        self.merge_gate.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins a peer region's whole state into the shard (a WAN full sync),
    /// in steps of [`MERGE_STEP_SLOTS`] slots with the shard's lock released
    /// between them, so that clients are served meanwhile (D106). Holds the
    /// merge gate exclusively throughout: peers' deltas and copies of the
    /// keyspace wait. Flags every WATCHing client after each step, and
    /// serves clients blocked on keys the step may have filled. In-region
    /// replicas are sent to a full sync afterwards (the merge is not in the
    /// replication log). Seconds
    /// at millions of keys: on a blocking thread, never an async worker.
    pub fn merge_snapshot(&self, snapshot: &meridian_crdt::Keyspace) -> meridian_crdt::SnapshotMerge {
        let _gate = self.merge_gate.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut merging = self.shard().keyspace_mut().merge_begin(snapshot);
        merging.run_steps(|merging| {
            let done = self.shard().keyspace_mut().merge_step(snapshot, merging, MERGE_STEP_SLOTS);
            self.touch_all_watched();
            self.serve_all_blocked();
            done
        });
        let merged = self.shard().keyspace_mut().merge_finish(snapshot, merging);
        // The merge is no delta in the replication log: the in-region
        // replicas take the merged state by a full sync, whose copy (it
        // holds the gate shared) waits for this merge to end.
        if let Some(replication) = &self.replication {
            replication.resync_replicas();
        }
        self.touch_all_watched();
        self.serve_all_blocked();
        merged
    }

    /// Flags every WATCHing client (a flush).
    pub fn touch_all_watched(&self) {
        if self.watched_keys.load(Ordering::Relaxed) == 0 {
            return;
        }
        for flag in self.watches().by_key.values().flat_map(HashMap::values) {
            flag.store(true, Ordering::Release);
        }
    }

    /// The blocked-clients registry, locked.
    pub(crate) fn blocked(&self) -> MutexGuard<'_, Blocked> {
        // Every update leaves the registry consistent before it can panic.
        self.blocked.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// The stored CONFIG SET parameters, locked briefly.
    pub fn config(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        // Values are replaced whole under the lock: a poisoned map is consistent.
        self.config.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<u64, Arc<ClientHandle>>> {
        // Entries are inserted and removed whole: a poisoned map is consistent.
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a connected client to the registry CLIENT LIST and CLIENT KILL
    /// read. The caller removes it with [`ServerState::deregister_client`].
    pub fn register_client(&self, id: u64, addr: String, laddr: String) -> Arc<ClientHandle> {
        let now = Instant::now();
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            created: now,
            info: Mutex::new(ClientInfo {
                name: None,
                last_command: String::from("NULL"),
                last_active: now,
                protocol: Protocol::Resp2,
            }),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
            wake: Notify::new(),
            unblocked: Mutex::new(None),
            mailbox: Mutex::new(BytesMut::new()),
        });
        let previous = self.clients().insert(id, handle.clone());
        assert!(previous.is_none(), "client id {id} registered twice");
        handle
    }

    /// Removes a client from the registry (it disconnected).
    pub fn deregister_client(&self, id: u64) {
        self.clients().remove(&id);
    }

    /// Every registered client, sorted by id.
    pub fn client_handles(&self) -> Vec<Arc<ClientHandle>> {
        let mut all: Vec<_> = self.clients().values().cloned().collect();
        all.sort_by_key(|handle| handle.id);
        all
    }
}

/// What the registry knows of one connection (CLIENT LIST), and how to close
/// it (CLIENT KILL).
#[derive(Debug)]
pub struct ClientHandle {
    /// CLIENT ID.
    pub id: u64,
    /// The peer's address, `ip:port`.
    pub addr: String,
    /// The local address the client connected to, `ip:port`.
    pub laddr: String,
    /// When the connection was accepted.
    pub created: Instant,
    /// What changes as the client runs commands (updated after each one).
    pub info: Mutex<ClientInfo>,
    /// Wakes the connection's task when it is killed, even mid-read.
    pub kill: Notify,
    /// Set when the client is killed; the connection closes at its next check.
    pub killed: AtomicBool,
    /// Wakes the connection's task when something arrived for it: the reply
    /// that ends its wait in a blocking command, or pub/sub messages.
    pub wake: Notify,
    /// The reply that ends a blocking command's wait, once served.
    unblocked: Mutex<Option<BytesMut>>,
    /// Pub/sub messages not yet written to the socket (bounded: see
    /// [`crate::pubsub`]).
    pub(crate) mailbox: Mutex<BytesMut>,
}

impl ClientHandle {
    /// The mutable part, locked briefly (only its own connection and CLIENT
    /// LIST take this lock, so it is uncontended on the command path).
    pub fn info(&self) -> MutexGuard<'_, ClientInfo> {
        self.info.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the connection to close; it does so after the command it is running.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        // `notify_one` keeps a permit if the task is not waiting right now.
        self.kill.notify_one();
    }

    /// True once killed.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Hands a blocked client the reply that ends its wait.
    pub(crate) fn deliver_unblocked(&self, reply: BytesMut) {
        *self.unblocked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reply);
        // `notify_one` keeps a permit if the task is not waiting right now.
        self.wake.notify_one();
    }

    /// The reply that ended this client's wait, if it came.
    pub(crate) fn take_unblocked(&self) -> Option<BytesMut> {
        self.unblocked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// The pub/sub messages waiting to be written, taken.
    pub(crate) fn take_messages(&self) -> Option<BytesMut> {
        let mut mailbox = self.mailbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (!mailbox.is_empty()).then(|| mailbox.split())
    }
}

/// The part of a client's registry entry that changes per command.
#[derive(Debug)]
pub struct ClientInfo {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// The last command run, `name` or `container|sub` (`NULL` before any).
    pub last_command: String,
    /// When the last command ran (CLIENT LIST `idle`).
    pub last_active: Instant,
    /// RESP2 or RESP3.
    pub protocol: Protocol,
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
    /// Set by DEBUG SLEEP: the connection waits this long after the command,
    /// on its own task, so other clients are served meanwhile.
    pub sleep: Option<Duration>,
    /// Set by WAIT on a master with replicas: after the replies before it are
    /// written (and so its writes committed), the connection waits for this
    /// many replicas, at most until the deadline (`None`: forever), and
    /// answers how many acknowledged.
    pub wait: Option<(usize, Option<Duration>)>,
    /// The last command run and, for container commands, its subcommand:
    /// copied into the registry once per batch (CLIENT LIST's `cmd=`).
    pub last_command: Option<(&'static str, Option<Bytes>)>,
    /// This client's registry entry (absent for clients not on a socket).
    pub handle: Option<Arc<ClientHandle>>,
    /// The open transaction, between MULTI and EXEC or DISCARD.
    pub multi: Option<Transaction>,
    /// The keys this client WATCHes, each with whether it existed at WATCH.
    pub watched: Vec<(Bytes, bool)>,
    /// Set by any write to a watched key (shared with the watch registry).
    pub watch_touched: Arc<AtomicBool>,
    /// True while EXEC runs this client's queued commands (a blocking
    /// command then answers at once).
    pub in_exec: bool,
    /// Keys written by the running EXEC: their blocked clients are served
    /// when it ends.
    pub exec_written: Vec<Bytes>,
    /// Set by a blocking command that found nothing: the connection waits.
    pub blocked: Option<Block>,
    /// The journal position after this client's last write, until the
    /// journal holds it (persistence on).
    pub sync_target: Option<u64>,
    /// The channels this client is subscribed to.
    pub channels: std::collections::HashSet<Bytes>,
    /// The patterns this client is subscribed to.
    pub patterns: std::collections::HashSet<Bytes>,
    /// The wall-clock reading the writes of the current batch share: the
    /// connection clears it after each read from the socket and whenever it
    /// waits (see [`meridian_replication::WallSnapshot`]).
    pub wall: meridian_replication::WallSnapshot,
}

impl ClientState {
    /// A new client of `server`.
    pub fn new(server: &ServerState) -> ClientState {
        ClientState {
            id: server.next_client_id(),
            name: None,
            protocol: Protocol::Resp2,
            authenticated: server.requirepass().is_none(),
            closing: false,
            sleep: None,
            wait: None,
            last_command: None,
            handle: None,
            multi: None,
            watched: Vec::new(),
            watch_touched: Arc::new(AtomicBool::new(false)),
            in_exec: false,
            exec_written: Vec::new(),
            blocked: None,
            sync_target: None,
            channels: std::collections::HashSet::new(),
            patterns: std::collections::HashSet::new(),
            wall: Default::default(),
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

impl Context<'_, '_> {
    /// A timestamp for one write of this command on `shard`, sharing the wall
    /// clock's reading with the other writes of the client's batch.
    pub fn moment(&self, shard: &mut Shard) -> Result<meridian_crdt::keyspace::Moment, meridian_crdt::ClockError> {
        shard.moment_in(&self.client.wall)
    }
}
