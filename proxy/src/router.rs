//! The router of a database split over several shards.
//!
//! Every node serves a sharded database's port with this router. It reads
//! each client's commands with the proxy's own bounded parser, finds the
//! shard owning each command's keys (16384 hash slots, the `{hash tag}`
//! rule, [`meridian_replication::slot`]), and sends the command to that
//! shard's master over one backend connection per shard and client. The
//! backend connection goes to the database port of the master's node and
//! names the shard with a handshake (`MERIDIAN.SHARD <unit> <epoch>`, the
//! first command on the connection); the router there hands the connection
//! to the shard's server in-process, so it is served like any client.
//!
//! Commands are handled in batches: everything the client pipelined is
//! dispatched, then the replies are read in order, merged where a command
//! went to several shards, and written back with one write. Between batches
//! no command is in flight, so a backend whose shard failed over (its epoch
//! moved) is simply reconnected; a command in flight on a master that is
//! lost answers `TRYAGAIN` (it may or may not have run), and the client's
//! connection stays open.
//!
//! Multi-key commands that Redis Cluster refuses across slots but that can
//! be split (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) are split by shard and
//! the replies merged; any other command whose keys live on several shards
//! answers `CROSSSLOT`, as Redis Cluster does. Keyless commands that concern
//! the whole keyspace (DBSIZE, KEYS, SCAN, RANDOMKEY, FLUSHDB, FLUSHALL, INFO's
//! key counts, WAIT) go to every shard; the rest go to the first shard, which
//! also carries pub/sub, so a message published through any node reaches
//! subscribers on every node. Transactions run on one shard: the router
//! queues `MULTI` … `EXEC` and sends it whole to the shard of its keys.
//!
//! In OSS Cluster mode (`oss_cluster`) the router behaves like a Redis
//! Cluster node instead: `CLUSTER SLOTS` lists each shard's master, and a
//! command for a shard mastered elsewhere answers `MOVED`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_replication::slot::{SLOT_COUNT, key_slot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::cmd::{arity_ok, as_slices, command_keys, lookup};
use crate::context::ServerState;
use crate::forward::{LOST_ERROR, MASTER_WAIT, Replay, encode_request, next_frame, replay_state};
use crate::local_client::{FollowUp, LocalClient};
use crate::reply::{Protocol, Reply};
use crate::request::{Limits, Parsed, RequestParser};

/// The handshake naming the shard a backend connection is for.
pub const HANDSHAKE: &str = "MERIDIAN.SHARD";
/// Redis Cluster's error for keys on several slots (here: shards).
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
/// Commands dispatched before their replies are collected.
const BATCH_COMMANDS: usize = 1024;
/// Request bytes dispatched before their replies are collected (bounded, so
/// a backend never waits on a router that is not reading its replies).
const BATCH_BYTES: usize = 64 * 1024;
/// Read size on both sides.
const READ_BYTES: usize = 16 * 1024;
/// Pause between attempts to reach a master.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One shard of a database: its slots and where its master is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRoute {
    /// The slot ranges it owns (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// The database endpoint of the master's node (`None` while no node
    /// masters the shard).
    pub master: Option<SocketAddr>,
    /// The node holding the master.
    pub node_uid: u64,
    /// The id the master's node serves the shard under (the handshake's).
    pub unit: u64,
    /// The shard's failover epoch: a change means the master moved.
    pub epoch: u64,
}

/// Where every shard of a database is, as this node's configuration says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// The shards, in slot order.
    pub shards: Vec<ShardRoute>,
    /// The owning shard of every slot (an index into `shards`).
    owner: Vec<u16>,
    /// True if the database has a password.
    pub password: bool,
    /// OSS Cluster mode: `MOVED` for shards mastered elsewhere.
    pub oss_cluster: bool,
    /// This node.
    pub node_uid: u64,
    /// This node's endpoint of the database.
    pub endpoint: SocketAddr,
}

impl ShardMap {
    /// A map of `shards`; slots no shard claims go to the first.
    pub fn new(
        shards: Vec<ShardRoute>,
        password: bool,
        oss_cluster: bool,
        node_uid: u64,
        endpoint: SocketAddr,
    ) -> ShardMap {
        let mut owner = vec![0u16; usize::from(SLOT_COUNT)];
        for (index, shard) in shards.iter().enumerate() {
            for &(start, end) in &shard.slots {
                for slot in start..=end.min(SLOT_COUNT - 1) {
                    owner[usize::from(slot)] = index as u16;
                }
            }
        }
        ShardMap { shards, owner, password, oss_cluster, node_uid, endpoint }
    }

    /// The shard owning `slot`.
    pub fn shard_of(&self, slot: u16) -> usize {
        usize::from(self.owner[usize::from(slot % SLOT_COUNT)])
    }
}

/// Finds a shard served on this node by its unit id and epoch: the server a
/// handshake's connection is handed to.
pub type Attach = Arc<dyn Fn(u64, u64) -> Option<Arc<ServerState>> + Send + Sync>;

/// Serves one connection accepted on a sharded database's port: a backend
/// connection of some node's router (its first command is the handshake) is
/// handed to the shard's server; any other is a client, routed.
pub async fn serve(
    mut socket: TcpStream,
    map: watch::Receiver<Arc<ShardMap>>,
    attach: Attach,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let password = map.borrow().password;
    let mut parser = RequestParser::new(if password { Limits::unauthenticated() } else { Limits::default() });
    let mut input = BytesMut::with_capacity(READ_BYTES);
    let mut first = Vec::new();
    loop {
        match parser.parse_into(&mut input, &mut first) {
            Ok(Parsed::Command) => break,
            Ok(Parsed::Incomplete) => {}
            Err(error) => {
                let mut out = BytesMut::new();
                Reply::new(&mut out, Protocol::Resp2).error(&error.to_redis_error());
                let _ = socket.write_all(&out).await;
                return;
            }
        }
        if parser.check_query_buffer(input.len()).is_err() {
            return;
        }
        input.reserve(READ_BYTES);
        tokio::select! {
            read = socket.read_buf(&mut input) => if read.unwrap_or(0) == 0 { return },
            _ = shutdown.wait_for(|&s| s) => return,
        }
    }
    if first[0].eq_ignore_ascii_case(HANDSHAKE.as_bytes()) {
        let parse = |i: usize| first.get(i).and_then(|a| std::str::from_utf8(a).ok()?.parse::<u64>().ok());
        let server = match (first.len(), parse(1), parse(2)) {
            (3, Some(unit), Some(epoch)) if input.is_empty() => attach(unit, epoch),
            _ => None,
        };
        match server {
            Some(server) => {
                if socket.write_all(b"+OK\r\n").await.is_ok() {
                    crate::connection::serve(socket, server).await;
                }
            }
            None => {
                let _ = socket
                    .write_all(b"-TRYAGAIN this node does not serve that shard at that epoch (a failover moved it)\r\n")
                    .await;
            }
        }
        return;
    }
    let peer = socket.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut router = Router::new(map, password, attach, peer);
    tokio::select! {
        _ = router.run(&mut socket, parser, input, first) => {}
        _ = shutdown.wait_for(|&s| s) => {}
    }
}

/// How a router reaches one shard's master.
enum Link {
    /// Over TCP, through the master node's port (the handshake).
    Tcp(TcpStream),
    /// In-process: the master is served by this node.
    Local(Box<LocalClient>),
}

/// A connection to one shard's master.
struct Backend {
    link: Link,
    /// Replies read, not yet consumed.
    buf: BytesMut,
    /// Requests dispatched, not yet written.
    out: BytesMut,
    epoch: u64,
    /// Distinguishes this connection from a later one to the same shard.
    generation: u64,
    resp3: bool,
    /// Commands of the current batch sent on it.
    in_batch: usize,
}

/// Which frames of which backend a part of a reply is.
#[derive(Clone, Copy, Debug)]
struct Part {
    shard: usize,
    generation: u64,
    /// Frames to read and drop first (a transaction's `+OK`/`+QUEUED`).
    skip: usize,
}

/// How the parts of a command sent to several shards become one reply.
#[derive(Debug)]
enum Merge {
    /// The first part's reply (the others are read and dropped).
    First,
    /// Integers added (DEL, EXISTS, DBSIZE...).
    Sum,
    /// The smallest integer (WAIT).
    Min,
    /// The first error, else the first part's reply.
    AllOk,
    /// Arrays concatenated (KEYS).
    Concat,
    /// MGET: for each key in the client's order, its part and position.
    Mget(Vec<(usize, usize)>),
    /// SCAN on one shard of `count`: the cursor moves on to the next shard.
    Scan { shard: usize, count: usize },
    /// The first non-null reply (RANDOMKEY), parts in a random order.
    AnyNonNull,
    /// INFO: the first part's text with the key counts of all parts.
    Info,
    /// Read and dropped (parts of a command that failed on another shard).
    Discard,
}

/// What a reply records in the connection's state when it succeeds.
#[derive(Debug)]
enum Track {
    None,
    Auth(Vec<Bytes>),
    Hello(Vec<Bytes>),
    SetName(Bytes),
    Reset,
}

/// A reply the router makes itself.
#[derive(Debug)]
enum Local {
    Error(String),
    Simple(&'static str),
    Cluster(Vec<Bytes>),
}

/// One command's reply, in the order the client sent the commands.
#[derive(Debug)]
enum Job {
    Local(Local),
    Gather { parts: Vec<Part>, merge: Merge, track: Track },
}

/// A transaction being queued.
#[derive(Default)]
struct Multi {
    queued: Vec<Vec<Bytes>>,
    shard: Option<usize>,
    dirty: bool,
}

/// What the router does after a batch.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    /// Collect this batch's replies before dispatching more (the command
    /// changed state later commands depend on).
    Barrier,
    Quit,
    /// The client subscribed: relay it to the first shard from now on.
    Relay,
}

/// One client's router.
struct Router {
    map: watch::Receiver<Arc<ShardMap>>,
    /// Finds the shards served by this node (reached in-process).
    attach: Attach,
    /// The client's address (the in-process clients are registered under it).
    peer: String,
    password: bool,
    backends: Vec<Option<Backend>>,
    generation: u64,
    resp3: bool,
    auth: Option<Vec<Bytes>>,
    hello: Option<Vec<Bytes>>,
    name: Option<Bytes>,
    authenticated: bool,
    multi: Option<Multi>,
    /// The shard holding this connection's WATCHed keys.
    watching: Option<usize>,
    /// The connection's state was lost with a backend: close after the
    /// replies.
    close: bool,
    /// The command that subscribed the client (relayed first).
    subscribing: Option<Vec<Bytes>>,
}

impl Router {
    fn new(map: watch::Receiver<Arc<ShardMap>>, password: bool, attach: Attach, peer: String) -> Router {
        let shards = map.borrow().shards.len();
        Router {
            map,
            attach,
            peer,
            password,
            backends: (0..shards).map(|_| None).collect(),
            generation: 0,
            resp3: false,
            auth: None,
            hello: None,
            name: None,
            authenticated: !password,
            multi: None,
            watching: None,
            close: false,
            subscribing: None,
        }
    }

    fn protocol(&self) -> Protocol {
        if self.resp3 { Protocol::Resp3 } else { Protocol::Resp2 }
    }

    async fn run(&mut self, socket: &mut TcpStream, mut parser: RequestParser, mut input: BytesMut, first: Vec<Bytes>) {
        let mut pending_first = Some(first);
        let mut args: Vec<Bytes> = Vec::with_capacity(8);
        let mut out = BytesMut::with_capacity(READ_BYTES);
        loop {
            let mut jobs = Vec::new();
            let mut flow = Flow::Continue;
            let mut protocol_error = None;
            let mut sent = 0usize;
            loop {
                let command = match pending_first.take() {
                    Some(first) => first,
                    None => match parser.parse_into(&mut input, &mut args) {
                        Ok(Parsed::Command) => std::mem::take(&mut args),
                        Ok(Parsed::Incomplete) => break,
                        Err(error) => {
                            protocol_error = Some(error.to_redis_error());
                            break;
                        }
                    },
                };
                sent += command.iter().map(|a| a.len() + 16).sum::<usize>();
                flow = self.dispatch(command, &mut jobs).await;
                if flow != Flow::Continue || jobs.len() >= BATCH_COMMANDS || sent >= BATCH_BYTES {
                    break;
                }
            }
            if flow == Flow::Relay {
                // The subscribing command is the last of the batch: the
                // replies before it go out, then the relay takes over.
                let Some(subscribe) = self.subscribing.take() else { return };
                self.flush_backends().await;
                self.collect(jobs, &mut out).await;
                if socket.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                self.relay(socket, &mut parser, &mut input, subscribe).await;
                return;
            }
            if !jobs.is_empty() {
                self.flush_backends().await;
                self.collect(jobs, &mut out).await;
            }
            if let Some(error) = protocol_error {
                Reply::new(&mut out, Protocol::Resp2).error(&error);
                let _ = socket.write_all(&out).await;
                return;
            }
            if !out.is_empty() {
                if socket.write_all(&out).await.is_err() {
                    return;
                }
                if out.capacity() > 1024 * 1024 {
                    out = BytesMut::with_capacity(READ_BYTES);
                } else {
                    out.clear();
                }
            }
            if flow == Flow::Quit || self.close {
                return;
            }
            if self.password && self.authenticated && parser.limits().unauthenticated {
                parser.set_limits(Limits::default());
            }
            if flow == Flow::Continue && sent == 0 {
                if parser.check_query_buffer(input.len()).is_err() {
                    return;
                }
                input.reserve(READ_BYTES);
                match socket.read_buf(&mut input).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    }

    /// Sends one command (or queues it, or answers it) and records how its
    /// reply is made.
    async fn dispatch(&mut self, args: Vec<Bytes>, jobs: &mut Vec<Job>) -> Flow {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).unwrap_or_default();
        if self.multi.is_some() {
            return self.queue(name, args, jobs).await;
        }
        match name.as_str() {
            "quit" => {
                jobs.push(Job::Local(Local::Simple("OK")));
                return Flow::Quit;
            }
            "cluster" => {
                jobs.push(Job::Local(Local::Cluster(args)));
                return Flow::Continue;
            }
            "multi" if args.len() == 1 => {
                self.multi = Some(Multi { shard: self.watching, ..Multi::default() });
                jobs.push(Job::Local(Local::Simple("OK")));
                return Flow::Continue;
            }
            "exec" | "discard" if args.len() == 1 => {
                jobs.push(Job::Local(Local::Error(format!("ERR {} without MULTI", name.to_ascii_uppercase()))));
                return Flow::Continue;
            }
            "unwatch" if args.len() == 1 => {
                match self.watching.take() {
                    Some(shard) => self.send_one(shard, &args, Track::None, jobs).await,
                    None => jobs.push(Job::Local(Local::Simple("OK"))),
                }
                return Flow::Continue;
            }
            "subscribe" | "psubscribe" | "ssubscribe" | "monitor" => {
                // The relay needs a socket: an in-process client of shard 0
                // gives way to a TCP one.
                if self.backends[0].as_ref().is_some_and(|b| matches!(b.link, Link::Local(_))) {
                    self.backends[0] = None;
                }
                if let Err(error) = self.connect_via(0, false).await {
                    jobs.push(Job::Local(Local::Error(error)));
                    return Flow::Continue;
                }
                self.subscribing = Some(args);
                return Flow::Relay;
            }
            "auth" | "hello" | "select" | "reset" | "client" if name != "client" || sub == "setname" => {
                let track = match name.as_str() {
                    "auth" => Track::Auth(args.clone()),
                    "hello" => Track::Hello(args.clone()),
                    "reset" => Track::Reset,
                    "client" if args.len() == 3 => Track::SetName(args[2].clone()),
                    _ => Track::None,
                };
                self.broadcast_connected(&args, Merge::First, track, jobs).await;
                return Flow::Barrier;
            }
            "wait" => {
                self.broadcast_connected(&args, Merge::Min, Track::None, jobs).await;
                return Flow::Continue;
            }
            "dbsize" => return self.all(&args, Merge::Sum, jobs).await,
            "keys" => return self.all(&args, Merge::Concat, jobs).await,
            "flushdb" | "flushall" => return self.all(&args, Merge::AllOk, jobs).await,
            "info" => return self.all(&args, Merge::Info, jobs).await,
            "randomkey" => return self.all(&args, Merge::AnyNonNull, jobs).await,
            "config" if sub == "set" || sub == "resetstat" => return self.all(&args, Merge::AllOk, jobs).await,
            "scan" if args.len() >= 2 => {
                self.scan(args, jobs).await;
                return Flow::Continue;
            }
            _ => {}
        }
        let Some(spec) = lookup(&args[0]).filter(|spec| arity_ok(spec, args.len())) else {
            // Unknown or misused: the shard answers Redis's error.
            self.send_one(0, &args, Track::None, jobs).await;
            return Flow::Continue;
        };
        if name == "watch" {
            match self.route(spec, &args) {
                Ok(shard) => {
                    let shard = shard.unwrap_or(0);
                    if self.watching.is_some_and(|w| w != shard) {
                        jobs.push(Job::Local(Local::Error(CROSSSLOT.into())));
                    } else {
                        self.watching = Some(shard);
                        self.send_one(shard, &args, Track::None, jobs).await;
                    }
                }
                Err(error) => jobs.push(Job::Local(Local::Error(error))),
            }
            return Flow::Continue;
        }
        match self.route(spec, &args) {
            Ok(shard) => self.send_one(shard.unwrap_or(0), &args, Track::None, jobs).await,
            Err(error) if error == CROSSSLOT && !self.map.borrow().oss_cluster => self.split(name, args, jobs).await,
            Err(error) => jobs.push(Job::Local(Local::Error(error))),
        }
        Flow::Continue
    }

    /// Queues a command inside `MULTI`; `EXEC` sends the transaction whole
    /// to the shard of its keys.
    async fn queue(&mut self, name: String, args: Vec<Bytes>, jobs: &mut Vec<Job>) -> Flow {
        const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
        match name.as_str() {
            "multi" => jobs.push(Job::Local(Local::Error("ERR MULTI calls can not be nested".into()))),
            "watch" => jobs.push(Job::Local(Local::Error("ERR WATCH inside MULTI is not allowed".into()))),
            "discard" => {
                self.multi = None;
                let unwatch = [Bytes::from_static(b"UNWATCH")];
                // UNWATCH's +OK is DISCARD's reply.
                let sent = match self.watching.take() {
                    Some(shard) => self.send(shard, &unwatch, Track::None, 0, jobs).await.is_ok(),
                    None => false,
                };
                if !sent {
                    jobs.push(Job::Local(Local::Simple("OK")));
                }
            }
            "exec" => {
                let multi = self.multi.take().unwrap_or_default();
                let watching = self.watching.take();
                if multi.dirty {
                    if let Some(shard) = watching {
                        // Closing the backend forgets the WATCH with it.
                        self.backends[shard] = None;
                    }
                    jobs.push(Job::Local(Local::Error(EXECABORT.into())));
                    return Flow::Continue;
                }
                let shard = multi.shard.or(watching).unwrap_or(0);
                if let Err(error) = self.connect(shard).await {
                    jobs.push(Job::Local(Local::Error(error)));
                    return Flow::Continue;
                }
                // MULTI, the queued commands and EXEC: only EXEC's reply is
                // the client's.
                let mut sent = self.send(shard, &[Bytes::from_static(b"MULTI")], Track::None, 0, &mut Vec::new()).await;
                for command in &multi.queued {
                    if sent.is_ok() {
                        sent = self.send(shard, command, Track::None, 0, &mut Vec::new()).await;
                    }
                }
                if sent.is_ok() {
                    sent = self.send(shard, &args, Track::None, 0, &mut Vec::new()).await;
                }
                match sent {
                    Ok(exec) => {
                        let part = Part { skip: multi.queued.len() + 1, ..exec };
                        jobs.push(Job::Gather { parts: vec![part], merge: Merge::First, track: Track::None });
                    }
                    Err(error) => jobs.push(Job::Local(Local::Error(error))),
                }
            }
            _ => {
                let error = match lookup(&args[0]) {
                    None => Some(unknown_command(&args)),
                    Some(spec) if !arity_ok(spec, args.len()) => {
                        Some(format!("ERR wrong number of arguments for '{}' command", spec.name))
                    }
                    Some(spec) => match self.route(spec, &args) {
                        Ok(Some(shard)) => {
                            let multi = self.multi.as_mut().expect("in MULTI");
                            match multi.shard {
                                Some(pinned) if pinned != shard => Some(CROSSSLOT.to_string()),
                                _ => {
                                    multi.shard = Some(shard);
                                    None
                                }
                            }
                        }
                        Ok(None) => None,
                        Err(error) => Some(error),
                    },
                };
                let multi = self.multi.as_mut().expect("in MULTI");
                match error {
                    Some(error) => {
                        multi.dirty = true;
                        jobs.push(Job::Local(Local::Error(error)));
                    }
                    None => {
                        multi.queued.push(args);
                        jobs.push(Job::Local(Local::Simple("QUEUED")));
                    }
                }
            }
        }
        Flow::Continue
    }

    /// The shard of a command's keys (`None` if it has none); `CROSSSLOT`
    /// or, in OSS Cluster mode, `MOVED` as the error.
    fn route(&self, spec: &crate::cmd::CommandSpec, args: &[Bytes]) -> Result<Option<usize>, String> {
        let map = self.map.borrow();
        let mut shard = None;
        let mut first_slot = None;
        let args = as_slices(args);
        for key in command_keys(spec, &args) {
            let slot = key_slot(key);
            if map.oss_cluster && first_slot.is_some_and(|s| s != slot) {
                return Err(CROSSSLOT.into());
            }
            first_slot.get_or_insert(slot);
            let owner = map.shard_of(slot);
            if shard.is_some_and(|s| s != owner) {
                return Err(CROSSSLOT.into());
            }
            shard = Some(owner);
        }
        if map.oss_cluster
            && let (Some(shard), Some(slot)) = (shard, first_slot)
        {
            let route = &map.shards[shard];
            if route.node_uid != map.node_uid {
                return match route.master {
                    Some(addr) => Err(format!("MOVED {slot} {addr}")),
                    None => Err("CLUSTERDOWN The cluster is down".into()),
                };
            }
        }
        Ok(shard)
    }

    /// Splits a multi-key command over the shards of its keys.
    async fn split(&mut self, name: String, args: Vec<Bytes>, jobs: &mut Vec<Job>) {
        let (pairs, merge_sum) = match name.as_str() {
            "mget" => (1, false),
            "mset" => (2, false),
            "del" | "unlink" | "exists" | "touch" => (1, true),
            _ => {
                jobs.push(Job::Local(Local::Error(CROSSSLOT.into())));
                return;
            }
        };
        let groups = {
            let map = self.map.borrow();
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
            for (i, chunk) in args[1..].chunks(pairs).enumerate() {
                let shard = map.shard_of(key_slot(&chunk[0]));
                match groups.iter_mut().find(|(s, _)| *s == shard) {
                    Some((_, keys)) => keys.push(i),
                    None => groups.push((shard, vec![i])),
                }
            }
            groups
        };
        let mut parts = Vec::with_capacity(groups.len());
        let mut order = vec![(0usize, 0usize); (args.len() - 1) / pairs];
        for (part, (shard, keys)) in groups.iter().enumerate() {
            let mut command = Vec::with_capacity(1 + keys.len() * pairs);
            command.push(args[0].clone());
            for (position, &i) in keys.iter().enumerate() {
                command.extend_from_slice(&args[1 + i * pairs..1 + (i + 1) * pairs]);
                order[i] = (part, position);
            }
            let sent = match self.connect(*shard).await {
                Ok(()) => self.send(*shard, &command, Track::None, 0, &mut Vec::new()).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(p) => parts.push(p),
                Err(error) => {
                    // The parts already sent are read and dropped.
                    jobs.push(Job::Gather { parts, merge: Merge::Discard, track: Track::None });
                    jobs.push(Job::Local(Local::Error(error)));
                    return;
                }
            }
        }
        let merge = match name.as_str() {
            "mget" => Merge::Mget(order),
            "mset" => Merge::AllOk,
            _ if merge_sum => Merge::Sum,
            _ => Merge::First,
        };
        jobs.push(Job::Gather { parts, merge, track: Track::None });
    }

    /// SCAN over every shard in turn: the cursor carries the shard.
    async fn scan(&mut self, mut args: Vec<Bytes>, jobs: &mut Vec<Job>) {
        let count = self.backends.len() as u64;
        let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|c| c.parse::<u64>().ok()) else {
            jobs.push(Job::Local(Local::Error("ERR invalid cursor".into())));
            return;
        };
        let (inner, shard) = (cursor / count, (cursor % count) as usize);
        args[1] = Bytes::from(inner.to_string());
        if let Err(error) = self.connect(shard).await {
            jobs.push(Job::Local(Local::Error(error)));
            return;
        }
        match self.send(shard, &args, Track::None, 0, &mut Vec::new()).await {
            Ok(part) => jobs.push(Job::Gather {
                parts: vec![part],
                merge: Merge::Scan { shard, count: count as usize },
                track: Track::None,
            }),
            Err(error) => jobs.push(Job::Local(Local::Error(error))),
        }
    }

    /// Sends a command to every shard.
    async fn all(&mut self, args: &[Bytes], merge: Merge, jobs: &mut Vec<Job>) -> Flow {
        let mut parts = Vec::new();
        for shard in 0..self.backends.len() {
            let sent = match self.connect(shard).await {
                Ok(()) => self.send(shard, args, Track::None, 0, &mut Vec::new()).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(part) => parts.push(part),
                Err(error) => {
                    // The parts already sent are read and dropped.
                    jobs.push(Job::Gather { parts, merge: Merge::Discard, track: Track::None });
                    jobs.push(Job::Local(Local::Error(error)));
                    return Flow::Continue;
                }
            }
        }
        jobs.push(Job::Gather { parts, merge, track: Track::None });
        Flow::Continue
    }

    /// Sends a command to every connected backend (the first shard's if
    /// none is): connection state (AUTH, HELLO, SETNAME) and WAIT.
    async fn broadcast_connected(&mut self, args: &[Bytes], merge: Merge, track: Track, jobs: &mut Vec<Job>) {
        if self.backends.iter().all(Option::is_none)
            && let Err(error) = self.connect(0).await
        {
            jobs.push(Job::Local(Local::Error(error)));
            return;
        }
        let shards: Vec<usize> = (0..self.backends.len()).filter(|&s| self.backends[s].is_some()).collect();
        let mut parts = Vec::new();
        for shard in shards {
            if let Ok(part) = self.send(shard, args, Track::None, 0, &mut Vec::new()).await {
                parts.push(part);
            }
        }
        jobs.push(Job::Gather { parts, merge, track });
    }

    /// Sends a command to one shard.
    async fn send_one(&mut self, shard: usize, args: &[Bytes], track: Track, jobs: &mut Vec<Job>) {
        if let Err(error) = self.connect(shard).await {
            jobs.push(Job::Local(Local::Error(error)));
            return;
        }
        if let Err(error) = self.send(shard, args, track, 0, jobs).await {
            jobs.push(Job::Local(Local::Error(error)));
        }
    }

    /// Sends a command to a connected backend: appended to its requests
    /// (TCP) or run at once (in-process). Returns the part of the reply it
    /// is (also pushed as a job when `jobs` is the batch's).
    async fn send(
        &mut self,
        shard: usize,
        args: &[Bytes],
        track: Track,
        skip: usize,
        jobs: &mut Vec<Job>,
    ) -> Result<Part, String> {
        let Some(backend) = self.backends[shard].as_mut() else {
            return Err("TRYAGAIN the shard's master is not reachable now".into());
        };
        let part = Part { shard, generation: backend.generation, skip };
        match &mut backend.link {
            Link::Tcp(_) => encode_request(args, &mut backend.out),
            Link::Local(_) => {
                if self.run_local(shard, args).await.is_err() {
                    self.lose(shard);
                    return Err(LOST_ERROR.into());
                }
            }
        }
        if let Some(backend) = self.backends[shard].as_mut() {
            backend.in_batch += 1;
        }
        jobs.push(Job::Gather { parts: vec![part], merge: Merge::First, track });
        Ok(part)
    }

    /// Runs a command on an in-process backend, its reply into the
    /// backend's buffer. Anything that waits (a lapsed lease, a blocking
    /// command, WAIT) first sends what the batch dispatched to the other
    /// shards, so their commands are not held back behind it.
    async fn run_local(&mut self, shard: usize, args: &[Bytes]) -> Result<(), crate::local_client::Lost> {
        use crate::local_client::Lost;
        let needs_lease = match self.backends[shard].as_ref().map(|b| &b.link) {
            Some(Link::Local(local)) => local.needs_lease(&as_slices(args)),
            _ => return Err(Lost),
        };
        if needs_lease {
            self.flush_backends().await;
            let Some(Backend { link: Link::Local(local), .. }) = self.backends[shard].as_mut() else {
                return Err(Lost);
            };
            local.await_lease().await?;
        }
        let Some(Backend { link: Link::Local(local), buf, .. }) = self.backends[shard].as_mut() else {
            return Err(Lost);
        };
        let follow = local.execute(&as_slices(args), buf)?;
        if let FollowUp::None = follow {
            return Ok(());
        }
        self.flush_backends().await;
        let Some(Backend { link: Link::Local(local), buf, .. }) = self.backends[shard].as_mut() else {
            return Err(Lost);
        };
        local.follow(follow, buf).await
    }

    /// Makes sure the shard's backend is connected to its current master
    /// (reconnecting if the master moved and nothing is in flight on it).
    async fn connect(&mut self, shard: usize) -> Result<(), String> {
        self.connect_via(shard, true).await
    }

    /// [`Router::connect`], in-process if `local` allows and this node
    /// serves the shard's master, else over TCP.
    async fn connect_via(&mut self, shard: usize, local: bool) -> Result<(), String> {
        let epoch = self.map.borrow().shards.get(shard).map(|s| s.epoch);
        if let Some(backend) = &self.backends[shard]
            && matches!(backend.link, Link::Local(ref l) if l.lost())
            && backend.in_batch == 0
        {
            self.backends[shard] = None;
        }
        if let Some(backend) = &self.backends[shard]
            && (Some(backend.epoch) == epoch || backend.in_batch > 0)
        {
            return Ok(());
        }
        if self.backends[shard].take().is_some() && self.watching == Some(shard) {
            // WATCHed keys lived on the old master.
            self.close = true;
            return Err("TRYAGAIN the shard's master moved; WATCHed keys were lost".into());
        }
        let deadline = tokio::time::Instant::now() + MASTER_WAIT;
        loop {
            let route = self.map.borrow_and_update().shards.get(shard).cloned();
            let Some(route) = route else {
                return Err("CLUSTERDOWN the database's shards changed".into());
            };
            if local && let Some(server) = (self.attach)(route.unit, route.epoch) {
                match self.local_backend(server, &route) {
                    Ok(backend) => {
                        self.backends[shard] = Some(backend);
                        return Ok(());
                    }
                    Err(error) => return Err(error),
                }
            }
            if let Some(addr) = route.master
                && let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
            {
                let _ = stream.set_nodelay(true);
                // The handshake alone first: the shard's server takes the
                // connection over only once it answered.
                let handshake = [vec![
                    Bytes::from_static(HANDSHAKE.as_bytes()),
                    Bytes::from(route.unit.to_string()),
                    Bytes::from(route.epoch.to_string()),
                ]];
                let mut replay = Vec::new();
                replay.extend(self.auth.iter().cloned());
                replay.extend(self.hello.iter().cloned());
                if let Some(name) = &self.name {
                    replay.push(vec![Bytes::from_static(b"CLIENT"), Bytes::from_static(b"SETNAME"), name.clone()]);
                }
                let replayed = match replay_state(&mut stream, &handshake, false).await {
                    Ok(()) => replay_state(&mut stream, &replay, self.resp3).await,
                    Err(error) => Err(error),
                };
                match replayed {
                    Ok(()) => {
                        self.generation += 1;
                        self.backends[shard] = Some(Backend {
                            link: Link::Tcp(stream),
                            buf: BytesMut::with_capacity(READ_BYTES),
                            out: BytesMut::with_capacity(READ_BYTES),
                            epoch: route.epoch,
                            generation: self.generation,
                            resp3: self.resp3,
                            in_batch: 0,
                        });
                        return Ok(());
                    }
                    Err(Replay::Refused(error)) => return Err(error),
                    Err(Replay::Io) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("CLUSTERDOWN the shard's master is not reachable".into());
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                changed = self.map.changed() => if changed.is_err() {
                    return Err("CLUSTERDOWN the database is no longer served here".into());
                },
            }
        }
    }

    /// An in-process backend of `server` (this node's master of the
    /// shard), given the connection's state.
    fn local_backend(&mut self, server: Arc<ServerState>, route: &ShardRoute) -> Result<Backend, String> {
        let mut local = LocalClient::new(server, self.peer.clone());
        let mut replay: Vec<Vec<Bytes>> = self.auth.iter().cloned().collect();
        replay.extend(self.hello.iter().cloned());
        if let Some(name) = &self.name {
            replay.push(vec![Bytes::from_static(b"CLIENT"), Bytes::from_static(b"SETNAME"), name.clone()]);
        }
        for command in &replay {
            let mut reply = BytesMut::new();
            let _ = local.execute(&as_slices(command), &mut reply).map_err(|_| LOST_ERROR.to_string())?;
            if is_error(&reply) {
                return Err(String::from_utf8_lossy(&reply[1..reply.len().saturating_sub(2)]).into_owned());
            }
        }
        self.generation += 1;
        Ok(Backend {
            link: Link::Local(Box::new(local)),
            buf: BytesMut::with_capacity(READ_BYTES),
            out: BytesMut::new(),
            epoch: route.epoch,
            generation: self.generation,
            resp3: self.resp3,
            in_batch: 0,
        })
    }

    /// Writes every TCP backend's dispatched requests.
    async fn flush_backends(&mut self) {
        for slot in self.backends.iter_mut() {
            if let Some(Backend { link: Link::Tcp(stream), out, .. }) = slot
                && !out.is_empty()
            {
                let pending = std::mem::take(out);
                if stream.write_all(&pending).await.is_err() {
                    *slot = None;
                }
            }
        }
    }

    /// Commits what the in-process backends ran (their replies go out
    /// next); a backend whose commit failed is lost.
    fn commit_local(&mut self) {
        for shard in 0..self.backends.len() {
            if let Some(Backend { link: Link::Local(local), .. }) = self.backends[shard].as_mut()
                && local.commit().is_err()
            {
                self.lose(shard);
            }
        }
    }

    /// Reads the batch's replies in order and writes them to `out`.
    async fn collect(&mut self, jobs: Vec<Job>, out: &mut BytesMut) {
        self.commit_local();
        for job in jobs {
            match job {
                Job::Local(local) => self.local(local, out),
                Job::Gather { parts, merge, track } => {
                    if let Track::Hello(args) = &track
                        && let Some(version) = args.get(1)
                    {
                        let resp3 = version.as_ref() == b"3";
                        for part in &parts {
                            if let Some(backend) = self.backends[part.shard].as_mut() {
                                backend.resp3 = resp3;
                            }
                        }
                    }
                    let mut frames = Vec::with_capacity(parts.len());
                    for part in &parts {
                        frames.push(self.frame(*part).await);
                    }
                    if let Track::Hello(_) = &track
                        && frames.first().is_none_or(|f| f.as_ref().is_none_or(|f| is_error(f)))
                    {
                        // Refused: the backends stay in the protocol they had.
                        let resp3 = self.resp3;
                        for backend in self.backends.iter_mut().flatten() {
                            backend.resp3 = resp3;
                        }
                    }
                    self.finish(frames, merge, track, out);
                }
            }
        }
        for backend in self.backends.iter_mut().flatten() {
            backend.in_batch = 0;
        }
    }

    fn local(&mut self, local: Local, out: &mut BytesMut) {
        let mut reply = Reply::new(out, self.protocol());
        match local {
            Local::Error(error) => reply.error(&error),
            Local::Simple(text) => reply.simple(text),
            Local::Cluster(args) => {
                let map = self.map.borrow().clone();
                cluster(&map, &args, &mut reply);
            }
        }
    }

    /// The next reply frame of a part; `None` if its master was lost.
    async fn frame(&mut self, part: Part) -> Option<Bytes> {
        let mut skip = part.skip;
        loop {
            let backend = self.backends[part.shard].as_mut().filter(|b| b.generation == part.generation)?;
            match next_frame(&backend.buf, backend.resp3) {
                Ok(Some((len, kind))) => {
                    let frame = backend.buf.split_to(len).freeze();
                    if kind.is_none() {
                        continue; // a push answers no command
                    }
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    return Some(frame);
                }
                Ok(None) => {}
                Err(_) => {
                    self.lose(part.shard);
                    return None;
                }
            }
            let epoch = backend.epoch;
            let Link::Tcp(stream) = &mut backend.link else {
                // In-process replies are complete when the command returns.
                self.lose(part.shard);
                return None;
            };
            backend.buf.reserve(READ_BYTES);
            let read = tokio::select! {
                read = stream.read_buf(&mut backend.buf) => read.ok().filter(|&n| n > 0),
                _ = moved(&mut self.map, part.shard, epoch) => None,
            };
            if read.is_none() {
                self.lose(part.shard);
                return None;
            }
        }
    }

    /// Drops a backend whose master was lost.
    fn lose(&mut self, shard: usize) {
        self.backends[shard] = None;
        if self.watching == Some(shard) {
            self.close = true;
        }
    }

    /// Merges the parts' frames into the command's reply.
    fn finish(&mut self, frames: Vec<Option<Bytes>>, merge: Merge, track: Track, out: &mut BytesMut) {
        if let Merge::Discard = merge {
            return;
        }
        if frames.iter().any(Option::is_none) {
            Reply::new(out, self.protocol()).error(LOST_ERROR);
            return;
        }
        let frames: Vec<Bytes> = frames.into_iter().flatten().collect();
        let error = frames.iter().find(|f| is_error(f)).cloned();
        if let Some(first) = frames.first()
            && !is_error(first)
        {
            self.record(track);
        }
        let Some(first) = frames.first() else {
            Reply::new(out, self.protocol()).error(LOST_ERROR);
            return;
        };
        match merge {
            Merge::First | Merge::Discard => out.extend_from_slice(first),
            Merge::AllOk => out.extend_from_slice(error.as_ref().unwrap_or(first)),
            _ if error.is_some() => out.extend_from_slice(error.as_ref().expect("an error")),
            Merge::Sum | Merge::Min => {
                let numbers: Option<Vec<i64>> = frames.iter().map(|f| integer(f)).collect();
                match numbers {
                    Some(numbers) => {
                        let value = if let Merge::Sum = merge {
                            numbers.iter().sum()
                        } else {
                            numbers.iter().copied().min().unwrap_or(0)
                        };
                        Reply::new(out, self.protocol()).integer(value);
                    }
                    None => out.extend_from_slice(first),
                }
            }
            Merge::Concat => {
                let resp3 = self.resp3;
                let all: Option<Vec<Vec<Bytes>>> = frames.iter().map(|f| elements(f, resp3)).collect();
                match all {
                    Some(all) => {
                        Reply::new(out, self.protocol()).array(all.iter().map(Vec::len).sum());
                        for element in all.iter().flatten() {
                            out.extend_from_slice(element);
                        }
                    }
                    None => out.extend_from_slice(first),
                }
            }
            Merge::Mget(order) => {
                let resp3 = self.resp3;
                let all: Option<Vec<Vec<Bytes>>> = frames.iter().map(|f| elements(f, resp3)).collect();
                match all {
                    Some(all) if order.iter().all(|&(p, i)| all.get(p).is_some_and(|e| i < e.len())) => {
                        Reply::new(out, self.protocol()).array(order.len());
                        for (part, position) in order {
                            out.extend_from_slice(&all[part][position]);
                        }
                    }
                    _ => out.extend_from_slice(first),
                }
            }
            Merge::Scan { shard, count } => match elements(first, self.resp3) {
                Some(pair) if pair.len() == 2 => {
                    let inner = bulk_text(&pair[0]).and_then(|c| std::str::from_utf8(&c).ok()?.parse::<u64>().ok());
                    let next = match inner {
                        Some(0) if shard + 1 < count => Some((shard + 1) as u64),
                        Some(0) => Some(0),
                        Some(inner) => inner.checked_mul(count as u64).and_then(|c| c.checked_add(shard as u64)),
                        None => None,
                    };
                    match next {
                        Some(next) => {
                            let mut reply = Reply::new(out, self.protocol());
                            reply.array(2);
                            reply.bulk(next.to_string().as_bytes());
                            out.extend_from_slice(&pair[1]);
                        }
                        None => Reply::new(out, self.protocol()).error("ERR the shard's SCAN cursor is out of range"),
                    }
                }
                _ => out.extend_from_slice(first),
            },
            Merge::AnyNonNull => {
                let start = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0) as usize)
                    % frames.len();
                let found = (0..frames.len()).map(|i| &frames[(start + i) % frames.len()]).find(|f| !is_null(f));
                out.extend_from_slice(found.unwrap_or(first));
            }
            Merge::Info => {
                let texts: Option<Vec<String>> = frames.iter().map(|f| bulk_text(f).map(info_text)).collect();
                match texts {
                    Some(texts) => {
                        let merged = merge_info(&texts);
                        Reply::new(out, self.protocol()).bulk(merged.as_bytes());
                    }
                    None => out.extend_from_slice(first),
                }
            }
        }
    }

    /// Records what a successful reply changed in the connection's state.
    fn record(&mut self, track: Track) {
        match track {
            Track::None => {}
            Track::Auth(args) => {
                self.auth = Some(args);
                self.authenticated = true;
            }
            Track::Hello(args) => {
                if let Some(version) = args.get(1) {
                    self.resp3 = version.as_ref() == b"3";
                }
                if let Some(i) = args.iter().position(|a| a.eq_ignore_ascii_case(b"setname"))
                    && let Some(name) = args.get(i + 1)
                {
                    self.name = Some(name.clone());
                }
                if args.iter().any(|a| a.eq_ignore_ascii_case(b"auth")) {
                    self.authenticated = true;
                }
                self.hello = Some(args);
            }
            Track::SetName(name) => self.name = Some(name),
            Track::Reset => {
                self.auth = None;
                self.hello = None;
                self.name = None;
                self.resp3 = false;
                self.authenticated = !self.password;
                self.watching = None;
                for backend in self.backends.iter_mut().flatten() {
                    backend.resp3 = false;
                }
            }
        }
    }

    /// A subscribed client: its commands go to the first shard (which
    /// carries pub/sub) and everything that shard sends is relayed, until
    /// either side ends.
    async fn relay(
        &mut self,
        socket: &mut TcpStream,
        parser: &mut RequestParser,
        input: &mut BytesMut,
        first: Vec<Bytes>,
    ) {
        let Some(Backend { link: Link::Tcp(mut stream), buf, .. }) = self.backends[0].take() else {
            return;
        };
        let mut out = BytesMut::new();
        encode_request(&first, &mut out);
        if stream.write_all(&out).await.is_err() || socket.write_all(&buf).await.is_err() {
            return;
        }
        let (mut client_read, mut client_write) = socket.split();
        let (mut master_read, mut master_write) = stream.split();
        let upstream = async {
            let mut args = Vec::with_capacity(8);
            loop {
                let mut out = BytesMut::new();
                loop {
                    match parser.parse_into(input, &mut args) {
                        Ok(Parsed::Command) => encode_request(&args, &mut out),
                        Ok(Parsed::Incomplete) => break,
                        Err(_) => return,
                    }
                }
                if !out.is_empty() && master_write.write_all(&out).await.is_err() {
                    return;
                }
                if parser.check_query_buffer(input.len()).is_err() {
                    return;
                }
                input.reserve(READ_BYTES);
                match client_read.read_buf(input).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let downstream = async {
            let mut buf = BytesMut::with_capacity(READ_BYTES);
            loop {
                buf.clear();
                match master_read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if client_write.write_all(&buf).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
        }
    }
}

/// Waits until `shard`'s epoch in the map differs from `epoch`.
async fn moved(map: &mut watch::Receiver<Arc<ShardMap>>, shard: usize, epoch: u64) {
    loop {
        if map.borrow_and_update().shards.get(shard).is_none_or(|s| s.epoch != epoch) {
            return;
        }
        if map.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Redis's reply to an unknown command.
fn unknown_command(args: &[Bytes]) -> String {
    let mut text = format!("ERR unknown command '{}', with args beginning with: ", String::from_utf8_lossy(&args[0]));
    for arg in args.iter().skip(1).take(10) {
        text.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
    }
    text
}

fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-') | Some(b'!'))
}

fn is_null(frame: &[u8]) -> bool {
    frame.starts_with(b"$-1\r\n") || frame.starts_with(b"*-1\r\n") || frame.starts_with(b"_\r\n")
}

/// The value of an integer reply.
fn integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The length in a `<type><len>\r\n` header, and where the body starts.
fn header(frame: &[u8]) -> Option<(usize, usize)> {
    let end = frame.iter().position(|&b| b == b'\r')?;
    let len = std::str::from_utf8(&frame[1..end]).ok()?.parse().ok()?;
    Some((len, end + 2))
}

/// The encoded elements of an array or set reply.
fn elements(frame: &[u8], resp3: bool) -> Option<Vec<Bytes>> {
    if !matches!(frame.first(), Some(b'*') | Some(b'~')) {
        return None;
    }
    let (count, mut at) = header(frame)?;
    let mut elements = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let rest = frame.get(at..)?;
        let (len, _) = next_frame(rest, resp3).ok()??;
        elements.push(Bytes::copy_from_slice(rest.get(..len)?));
        at += len;
    }
    Some(elements)
}

/// The text of a bulk string or verbatim string reply.
fn bulk_text(frame: &[u8]) -> Option<Vec<u8>> {
    if !matches!(frame.first(), Some(b'$') | Some(b'=')) {
        return None;
    }
    let (len, at) = header(frame)?;
    let body = frame.get(at..at + len)?;
    Some(if frame[0] == b'=' { body.get(4..)?.to_vec() } else { body.to_vec() })
}

fn info_text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The first shard's INFO with the keyspace counts of all shards added up.
fn merge_info(texts: &[String]) -> String {
    let mut keys = 0u64;
    let mut expires = 0u64;
    let mut found = false;
    for text in texts {
        for line in text.lines().filter(|l| l.starts_with("db0:")) {
            found = true;
            for field in line["db0:".len()..].split(',') {
                match field.split_once('=') {
                    Some(("keys", n)) => keys += n.parse::<u64>().unwrap_or(0),
                    Some(("expires", n)) => expires += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
    }
    let mut merged = String::with_capacity(texts[0].len() + 32);
    let mut wrote = false;
    for line in texts[0].split_inclusive("\r\n") {
        if line.starts_with("db0:") {
            merged.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
            wrote = true;
        } else if line.starts_with("# Keyspace") && !texts[0].contains("db0:") && found {
            merged.push_str(line);
            merged.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
            wrote = true;
        } else {
            merged.push_str(line);
        }
    }
    let _ = wrote;
    merged
}

/// A node id in Redis Cluster's form (40 hex digits).
fn node_id(uid: u64) -> String {
    format!("{uid:040x}")
}

/// `CLUSTER ...`: the database as a Redis Cluster. In proxy mode the node a
/// client talks to owns every slot (it routes them all); in OSS Cluster
/// mode each shard's master owns its slots.
fn cluster(map: &ShardMap, args: &[Bytes], reply: &mut Reply<'_>) {
    let sub = args.get(1).map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).unwrap_or_default();
    let epoch = map.shards.iter().map(|s| s.epoch).max().unwrap_or(0);
    // (start, end, endpoint, node uid, epoch) of every slot range.
    let ranges: Vec<(u16, u16, Option<SocketAddr>, u64, u64)> = if map.oss_cluster {
        let mut ranges: Vec<_> = map
            .shards
            .iter()
            .flat_map(|s| s.slots.iter().map(move |&(a, b)| (a, b, s.master, s.node_uid, s.epoch)))
            .collect();
        ranges.sort_by_key(|r| r.0);
        ranges
    } else {
        vec![(0, SLOT_COUNT - 1, Some(map.endpoint), map.node_uid, epoch)]
    };
    let healthy = map.shards.iter().all(|s| s.master.is_some());
    match (sub.as_str(), args.len()) {
        ("keyslot", 3) => reply.integer(i64::from(key_slot(&args[2]))),
        ("myid", 2) => reply.bulk(node_id(map.node_uid).as_bytes()),
        ("info", 2) => {
            let ok: u32 = ranges.iter().filter(|r| r.2.is_some()).map(|r| u32::from(r.1 - r.0) + 1).sum();
            let mut nodes: Vec<u64> = ranges.iter().map(|r| r.3).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let text = format!(
                "cluster_enabled:1\r\ncluster_state:{}\r\ncluster_slots_assigned:{}\r\ncluster_slots_ok:{ok}\r\n\
                 cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\n\
                 cluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\n",
                if healthy { "ok" } else { "fail" },
                SLOT_COUNT,
                u32::from(SLOT_COUNT) - ok,
                nodes.len(),
                if map.oss_cluster { map.shards.len() } else { 1 },
            );
            reply.bulk(text.as_bytes());
        }
        ("slots", 2) => {
            let served: Vec<_> = ranges.iter().filter(|r| r.2.is_some()).collect();
            reply.array(served.len());
            for (start, end, addr, node, _) in served {
                let addr = addr.expect("served");
                reply.array(3);
                reply.integer(i64::from(*start));
                reply.integer(i64::from(*end));
                reply.array(3);
                reply.bulk(addr.ip().to_string().as_bytes());
                reply.integer(i64::from(addr.port()));
                reply.bulk(node_id(*node).as_bytes());
            }
        }
        ("shards", 2) => {
            reply.array(ranges.len());
            for (start, end, addr, node, _) in &ranges {
                reply.map(2);
                reply.bulk(b"slots");
                reply.array(2);
                reply.integer(i64::from(*start));
                reply.integer(i64::from(*end));
                reply.bulk(b"nodes");
                reply.array(1);
                reply.map(7);
                reply.bulk(b"id");
                reply.bulk(node_id(*node).as_bytes());
                reply.bulk(b"port");
                reply.integer(i64::from(addr.map_or(0, |a| a.port())));
                reply.bulk(b"ip");
                reply.bulk(addr.map(|a| a.ip().to_string()).unwrap_or_default().as_bytes());
                reply.bulk(b"endpoint");
                reply.bulk(addr.map(|a| a.ip().to_string()).unwrap_or_default().as_bytes());
                reply.bulk(b"role");
                reply.bulk(b"master");
                reply.bulk(b"replication-offset");
                reply.integer(0);
                reply.bulk(b"health");
                reply.bulk(if addr.is_some() { &b"online"[..] } else { &b"failed"[..] });
            }
        }
        ("nodes", 2) => {
            let mut text = String::new();
            let mut seen: Vec<u64> = Vec::new();
            for (_, _, addr, node, node_epoch) in &ranges {
                if seen.contains(node) {
                    continue;
                }
                seen.push(*node);
                let addr = addr.map(|a| a.to_string()).unwrap_or_else(|| ":0".into());
                let flags = if *node == map.node_uid { "myself,master" } else { "master" };
                let slots: Vec<String> = ranges
                    .iter()
                    .filter(|r| r.3 == *node)
                    .map(|r| if r.0 == r.1 { r.0.to_string() } else { format!("{}-{}", r.0, r.1) })
                    .collect();
                text.push_str(&format!(
                    "{} {addr}@0 {flags} - 0 0 {node_epoch} connected {}\n",
                    node_id(*node),
                    slots.join(" ")
                ));
            }
            reply.bulk(text.as_bytes());
        }
        _ => reply.error(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| a))
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(oss: bool) -> ShardMap {
        let addr = |port: u16| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        ShardMap::new(
            vec![
                ShardRoute { slots: vec![(0, 8191)], master: addr(7001), node_uid: 1, unit: 10, epoch: 1 },
                ShardRoute { slots: vec![(8192, 16383)], master: addr(7002), node_uid: 2, unit: 11, epoch: 3 },
            ],
            false,
            oss,
            1,
            SocketAddr::from(([127, 0, 0, 1], 7001)),
        )
    }

    #[test]
    fn slots_map_to_their_shards() {
        let map = map(false);
        assert_eq!(map.shard_of(0), 0);
        assert_eq!(map.shard_of(8191), 0);
        assert_eq!(map.shard_of(8192), 1);
        assert_eq!(map.shard_of(key_slot(b"foo")), 1, "foo is slot 12182");
        assert_eq!(map.shard_of(key_slot(b"bar")), 0, "bar is slot 5061");
    }

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    fn router(oss: bool) -> Router {
        let (_tx, rx) = watch::channel(Arc::new(map(oss)));
        // The sender goes: the router only reads the map.
        Router::new(rx, false, Arc::new(|_, _| None), String::new())
    }

    #[test]
    fn keys_on_two_shards_cross_slots_and_moved_points_at_the_master() {
        let router = router(false);
        let spec = lookup(b"rename").unwrap();
        assert_eq!(router.route(spec, &args(&["rename", "foo", "bar"])), Err(CROSSSLOT.into()));
        assert_eq!(router.route(spec, &args(&["rename", "{foo}a", "{foo}b"])), Ok(Some(1)));
        assert_eq!(router.route(lookup(b"ping").unwrap(), &args(&["ping"])), Ok(None));
        let oss = self::router(true);
        let get = lookup(b"get").unwrap();
        assert_eq!(oss.route(get, &args(&["get", "foo"])), Err("MOVED 12182 127.0.0.1:7002".into()));
        assert_eq!(oss.route(get, &args(&["get", "bar"])), Ok(Some(0)));
        let mget = lookup(b"mget").unwrap();
        assert_eq!(oss.route(mget, &args(&["mget", "bar", "{bar}x"])), Ok(Some(0)));
        assert_eq!(
            oss.route(mget, &args(&["mget", "bar", "x"])),
            Err(CROSSSLOT.into()),
            "OSS mode refuses keys of two slots as Redis Cluster does"
        );
    }

    #[test]
    fn replies_are_split_into_elements_and_info_counts_add_up() {
        let frame = b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n";
        let elements = elements(frame, false).unwrap();
        assert_eq!(elements, vec![Bytes::from("$1\r\na\r\n"), Bytes::from("$-1\r\n"), Bytes::from(":5\r\n")]);
        assert_eq!(integer(b":-42\r\n"), Some(-42));
        assert_eq!(bulk_text(b"=9\r\ntxt:hello\r\n").as_deref(), Some(&b"hello"[..]));
        let merged = merge_info(&[
            "# Server\r\nx:1\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n".into(),
            "# Server\r\nx:1\r\n# Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\n".into(),
        ]);
        assert!(merged.contains("db0:keys=7,expires=1"), "{merged}");
    }

    proptest::proptest! {
        /// The reply helpers see only complete frames from our own shards,
        /// but must not panic on anything (a peer node is still a peer).
        #[test]
        fn reply_helpers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), resp3: bool) {
            let _ = elements(&bytes, resp3);
            let _ = bulk_text(&bytes);
            let _ = integer(&bytes);
            let _ = is_null(&bytes);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = merge_info(&[text.clone(), format!("# Keyspace\r\n{text}")]);
        }

        #[test]
        fn framed_arrays_split_into_their_elements(items in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8), 0..6)) {
            let mut frame = format!("*{}\r\n", items.len()).into_bytes();
            for item in &items {
                frame.extend_from_slice(format!("${}\r\n", item.len()).as_bytes());
                frame.extend_from_slice(item);
                frame.extend_from_slice(b"\r\n");
            }
            let split = elements(&frame, false).expect("a well-formed array");
            proptest::prop_assert_eq!(split.len(), items.len());
            for (element, item) in split.iter().zip(&items) {
                let text = bulk_text(element);
                proptest::prop_assert_eq!(text.as_deref(), Some(&item[..]));
            }
        }
    }

    #[test]
    fn cluster_slots_show_the_proxy_or_the_shards() {
        let mut out = BytesMut::new();
        cluster(&map(false), &args(&["cluster", "slots"]), &mut Reply::new(&mut out, Protocol::Resp2));
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("*1\r\n*3\r\n:0\r\n:16383\r\n") && text.contains(":7001"), "{text}");
        out.clear();
        cluster(&map(true), &args(&["cluster", "slots"]), &mut Reply::new(&mut out, Protocol::Resp2));
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("*2\r\n") && text.contains(":8192\r\n:16383") && text.contains(":7002"), "{text}");
        out.clear();
        cluster(&map(true), &args(&["cluster", "keyslot", "foo"]), &mut Reply::new(&mut out, Protocol::Resp2));
        assert_eq!(&out[..], b":12182\r\n");
    }
}
