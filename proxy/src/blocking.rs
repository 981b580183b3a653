//! Blocked clients: BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
//! BZPOPMAX, BZMPOP.
//!
//! A blocking command first tries to run at once. If every key it names is
//! empty, the client is registered as a *waiter* on those keys, in arrival
//! order, and its connection waits (reading its socket only to notice a
//! disconnect). Every write — a local command, or deltas applied from a
//! replica stream or another region ([`ServerState::apply_deltas`]) — then
//! calls [`ServerState::serve_blocked`] with the keys it wrote (a peer
//! region's snapshot, merged in steps, names none: after each step
//! [`ServerState::serve_all_blocked`] tries every waiter): the waiters on
//! those keys are served **in FIFO order**, each by re-running its command
//! against the keyspace right after the write, the way Redis's
//! `handleClientsBlockedOnKeys` does, so that the first client to block on a
//! key gets the first element pushed to it. The reply is handed to the
//! waiter's connection through its [`ClientHandle`], which writes it.
//!
//! No wake-up is lost: a blocking command counts itself in
//! [`ServerState::blocked_count`] (sequentially consistent) *before* it
//! looks at the keyspace, under the registry lock; a writer writes first and
//! then reads that count. Either the writer sees the count and, taking the
//! registry lock, finds the waiter registered; or the blocking command's look
//! at the keyspace comes after the write and sees its element.
//!
//! Lock order: the exec lock (shared), then the registry, then the shard.
//! Inside EXEC a blocking command never blocks (it answers null at once, as
//! in Redis), and the keys a transaction writes are served after EXEC.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_crdt::delta::Delta;

use crate::context::{ClientHandle, Context, ServerState};
use crate::reply::{Protocol, Reply};

/// What one try of a blocking command did.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It replied (popped, or answered an error); `pushed` is a key it pushed
    /// to (BLMOVE's destination), whose own waiters may now be served.
    Served {
        /// A key this command wrote an element to.
        pushed: Option<Bytes>,
    },
    /// Every key was empty (or, when serving a waiter, of another type): it
    /// wrote nothing.
    Waiting,
}

/// One try of a blocking command over its arguments (the name excluded).
/// `first` is true for the try the command makes when it arrives (a key of
/// the wrong type is then a `WRONGTYPE` reply), false when a write wakes it
/// (a key of the wrong type is then passed over, as Redis does).
pub type TryServe = fn(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt;

/// The null a blocking command answers when it cannot block (inside EXEC)
/// and finds nothing: Redis's BLMOVE and BRPOPLPUSH answer a null bulk
/// string, the others a null array. (A timeout is a null array for all.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullReply {
    /// `$-1` (RESP3 `_`).
    Bulk,
    /// `*-1` (RESP3 `_`).
    Array,
}

/// What a blocking command left for its connection: wait until served, the
/// deadline passes, or the client goes away.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    /// When to give up (`None`: never, a timeout of 0).
    pub deadline: Option<tokio::time::Instant>,
}

impl Block {
    /// Completes when the deadline passes (never without one).
    pub async fn expired(self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// A registered waiter.
struct Waiter {
    /// The command's arguments (the name excluded).
    args: Vec<Bytes>,
    /// The keys it waits on, in the order given.
    keys: Vec<Bytes>,
    /// The protocol its reply is written in.
    protocol: Protocol,
    /// How to try it again.
    try_serve: TryServe,
    /// Its connection, to hand the reply to.
    handle: Arc<ClientHandle>,
}

/// The registry of blocked clients: per key, the waiters in arrival order.
#[derive(Default)]
pub struct Blocked {
    by_key: HashMap<Bytes, VecDeque<u64>>,
    waiters: HashMap<u64, Waiter>,
}

impl Blocked {
    fn remove(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        for key in &waiter.keys {
            if let Some(queue) = self.by_key.get_mut(key) {
                queue.retain(|&waiting| waiting != id);
                if queue.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        Some(waiter)
    }
}

/// The largest timeout accepted, in seconds (Redis rejects what overflows
/// its millisecond clock; a year is far beyond any real use).
const TIMEOUT_SECONDS_MAX: f64 = 365.0 * 24.0 * 3600.0 * 100.0;

/// Parses a blocking command's timeout, in seconds (a float, 0 = forever):
/// `None` for forever. Errors are Redis's texts.
pub fn parse_timeout(arg: &[u8]) -> Result<Option<Duration>, &'static str> {
    let seconds = std::str::from_utf8(arg)
        .ok()
        .and_then(|text| meridian_crdt::number::parse_f64(text.as_bytes()))
        .filter(|s| s.is_finite())
        .ok_or("ERR timeout is not a float or out of range")?;
    if seconds < 0.0 {
        return Err("ERR timeout is negative");
    }
    if seconds > TIMEOUT_SECONDS_MAX {
        return Err("ERR timeout is out of range");
    }
    // Redis rounds to milliseconds; anything below 1 ms but above 0 waits 1 ms.
    let ms = (seconds * 1000.0).ceil() as u64;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// Runs a blocking command: tries it now and, if every key is empty,
/// registers the client to wait (the connection does the waiting). Inside
/// EXEC, or for a client without a connection, it answers at once with
/// `null` (the reply Redis gives a blocking command that cannot block).
pub fn block_on(
    ctx: &mut Context<'_, '_>,
    args: &[&[u8]],
    keys: &[&[u8]],
    timeout: Option<Duration>,
    try_serve: TryServe,
    null: NullReply,
) {
    let handle = match &ctx.client.handle {
        Some(handle) if !ctx.client.in_exec => handle.clone(),
        _ => {
            if try_serve(ctx.server, args, &mut ctx.reply, true) == Attempt::Waiting {
                match null {
                    NullReply::Bulk => ctx.reply.null(),
                    NullReply::Array => ctx.reply.null_array(),
                }
            }
            return;
        }
    };
    let server = ctx.server;
    let mut blocked = server.blocked();
    server.blocked_count.fetch_add(1, Ordering::SeqCst);
    if let Attempt::Served { .. } = try_serve(server, args, &mut ctx.reply, true) {
        server.blocked_count.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let id = ctx.client.id;
    let mut unique: Vec<Bytes> = Vec::with_capacity(keys.len());
    for &key in keys {
        if !unique.iter().any(|k| k == key) {
            unique.push(Bytes::copy_from_slice(key));
        }
    }
    for key in &unique {
        blocked.by_key.entry(key.clone()).or_default().push_back(id);
    }
    blocked.waiters.insert(
        id,
        Waiter {
            args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
            keys: unique,
            protocol: ctx.client.protocol,
            try_serve,
            handle,
        },
    );
    ctx.client.blocked = Some(Block { deadline: timeout.map(|t| tokio::time::Instant::now() + t) });
}

impl ServerState {
    /// Serves, in FIFO order per key, the clients blocked on keys that now
    /// hold something: after a write that does not name its keys (a peer
    /// region's snapshot merged in steps). Only keys that exist count as
    /// written — as Redis serves the waiters of the keys a write made ready
    /// — so a client blocked on several keys is not served out of turn
    /// through a key that is still empty. One atomic load when nobody
    /// waits.
    pub fn serve_all_blocked(&self) {
        if self.blocked_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut keys: Vec<Bytes> = self.blocked().by_key.keys().cloned().collect();
        {
            let shard = self.shard();
            let now = shard.wall_ms();
            keys.retain(|key| shard.keyspace().exists(key, now));
        }
        self.serve_blocked(keys.iter().map(|key| key.as_ref()));
    }

    /// Serves the clients blocked on `keys`, in FIFO order per key, after a
    /// write to those keys. Costs one atomic load when no client is blocked.
    pub fn serve_blocked<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        if self.blocked_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut blocked = self.blocked();
        let mut ready: VecDeque<Bytes> = VecDeque::new();
        for key in keys {
            if blocked.by_key.contains_key(key) && !ready.iter().any(|k| k.as_ref() == key) {
                ready.push_back(Bytes::copy_from_slice(key));
            }
        }
        while let Some(key) = ready.pop_front() {
            let ids: Vec<u64> =
                blocked.by_key.get(&key).map(|queue| queue.iter().copied().collect()).unwrap_or_default();
            for id in ids {
                let Some(waiter) = blocked.waiters.get(&id) else {
                    continue;
                };
                let mut out = BytesMut::new();
                let attempt = {
                    let args = crate::cmd::as_slices(&waiter.args);
                    (waiter.try_serve)(self, &args, &mut Reply::new(&mut out, waiter.protocol), false)
                };
                if let Attempt::Served { pushed } = attempt {
                    if let Some(waiter) = blocked.remove(id) {
                        self.blocked_count.fetch_sub(1, Ordering::SeqCst);
                        waiter.handle.deliver_unblocked(out);
                    }
                    if let Some(pushed) = pushed
                        && blocked.by_key.contains_key(&pushed)
                        && !ready.contains(&pushed)
                    {
                        ready.push_back(pushed);
                    }
                }
            }
        }
    }

    /// Removes a blocked client from the registry (timeout, disconnect, kill).
    /// False if it was not blocked — it may have been served just now, its
    /// reply already handed to its connection.
    pub fn unblock(&self, id: u64) -> bool {
        let removed = self.blocked().remove(id).is_some();
        if removed {
            self.blocked_count.fetch_sub(1, Ordering::SeqCst);
        }
        removed
    }

    /// CLIENT UNBLOCK: ends a client's wait with the reply `write` gives (in
    /// the client's protocol). False if the client was not blocked.
    pub fn unblock_with(&self, id: u64, write: impl FnOnce(&mut Reply<'_>)) -> bool {
        let Some(waiter) = self.blocked().remove(id) else {
            return false;
        };
        self.blocked_count.fetch_sub(1, Ordering::SeqCst);
        let mut out = BytesMut::new();
        write(&mut Reply::new(&mut out, waiter.protocol));
        waiter.handle.deliver_unblocked(out);
        true
    }

    /// Number of clients blocked now (INFO `blocked_clients`).
    pub fn blocked_clients(&self) -> usize {
        self.blocked_count.load(Ordering::SeqCst)
    }

    /// Applies deltas that arrived from elsewhere — a replica stream or
    /// another region — to the shard, then does what a local write to the
    /// same keys does: flags the clients WATCHing them and serves the clients
    /// blocked on them. A peer region's deltas must not arrive between the
    /// steps of a snapshot merge: the WAN sink calls this holding the merge
    /// gate shared (`Inbound::merge_gate`, [`ServerState::merge_gate`]).
    pub fn apply_deltas(&self, deltas: &[Delta]) {
        {
            let mut shard = self.shard();
            for delta in deltas {
                shard.keyspace_mut().apply(delta);
            }
        }
        let mut keys: Vec<&[u8]> = Vec::with_capacity(deltas.len());
        for delta in deltas {
            match delta {
                Delta::Key(delta) => keys.push(delta.key.as_slice()),
                Delta::Flush(_) => self.touch_all_watched(),
            }
        }
        self.touch_keys(keys.iter().copied());
        self.serve_blocked(keys);
    }
}
