//! Transactions on one node: MULTI, EXEC, DISCARD, WATCH, UNWATCH, with
//! Redis 7's semantics.
//!
//! After MULTI the connection queues commands instead of running them
//! ([`queue`], called by the connection loop): each is checked now (unknown
//! command, arity, authentication) and an error flags the transaction so that
//! EXEC discards it. EXEC runs the queue holding the server's exec lock
//! exclusively, so no other client's command interleaves with it. WATCH
//! registers keys in the server's watch registry; any write command naming a
//! watched key (FLUSHDB and FLUSHALL: every key) sets the watcher's flag, and
//! EXEC then answers a null array and runs nothing. A watched key that
//! existed at WATCH and is gone at EXEC (it expired) counts as touched too.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::CommandSpec;
use crate::connection::{run_command, validate};
use crate::context::{ClientState, Context};
use crate::reply::Reply;
use crate::request::QUERY_BUFFER_BYTES_MAX_DEFAULT;

/// The most commands one transaction may queue.
pub const QUEUED_COMMANDS_MAX: usize = 100_000;
/// The most argument bytes one transaction may queue: the query-buffer
/// limit, so a queued transaction holds no more than one request could.
pub const QUEUED_BYTES_MAX: usize = QUERY_BUFFER_BYTES_MAX_DEFAULT;
/// The most keys one client may WATCH at once.
pub const WATCHED_KEYS_MAX: usize = 100_000;

/// Bytes accounted for each queued command on top of its arguments (the
/// vectors and `Bytes` handles), so that empty arguments still count.
const QUEUED_OVERHEAD_BYTES: usize = 64;

/// A transaction being queued, between MULTI and EXEC or DISCARD.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The queued commands, each with its name first.
    queued: Vec<Vec<Bytes>>,
    /// What the queued commands account for, against [`QUEUED_BYTES_MAX`].
    bytes: usize,
    /// Set when a command could not be queued: EXEC discards the transaction.
    aborted: bool,
}

/// The transaction commands.
pub fn commands() -> Vec<CommandSpec> {
    const F: &[&str] = &["noscript", "loading", "stale", "fast"];
    vec![
        CommandSpec::new("multi", 1, F, (0, 0, 0), multi),
        CommandSpec::new("exec", 1, &["noscript", "loading", "stale"], (0, 0, 0), exec),
        CommandSpec::new("discard", 1, F, (0, 0, 0), discard),
        CommandSpec::new("watch", -2, F, (1, -1, 1), watch),
        CommandSpec::new("unwatch", 1, F, (0, 0, 0), unwatch),
    ]
}

/// True for the commands that run at once even inside MULTI; every other
/// command is queued.
pub fn runs_inside_multi(name: &[u8]) -> bool {
    ["exec", "discard", "multi", "watch", "quit", "reset"].iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Queues one command of an open transaction, replying `+QUEUED`, or an
/// error that flags the transaction for EXEC to discard.
pub fn queue(client: &mut ClientState, args: &[&[u8]], mut reply: Reply<'_>) {
    let validated = validate(client, args);
    let tx = client.multi.as_mut().expect("queue is only called inside MULTI");
    if let Err(text) = validated {
        tx.aborted = true;
        return reply.error(&text);
    }
    let bytes = QUEUED_OVERHEAD_BYTES + args.iter().map(|a| a.len()).sum::<usize>();
    if tx.queued.len() >= QUEUED_COMMANDS_MAX || tx.bytes + bytes > QUEUED_BYTES_MAX {
        tx.aborted = true;
        return reply.error(&format!(
            "ERR transaction too large: at most {QUEUED_COMMANDS_MAX} commands and {QUEUED_BYTES_MAX} bytes may be queued"
        ));
    }
    tx.bytes += bytes;
    tx.queued.push(args.iter().map(|a| Bytes::copy_from_slice(a)).collect());
    reply.simple("QUEUED");
}

/// Ends any transaction and unwatches every key (RESET).
pub fn reset(ctx: &mut Context<'_, '_>) {
    ctx.client.multi = None;
    unwatch_all(ctx);
}

fn unwatch_all(ctx: &mut Context<'_, '_>) {
    if ctx.client.watched.is_empty() {
        return;
    }
    ctx.server.unwatch_all(ctx.client.id);
    ctx.client.watched.clear();
    // No write sets the flag once the registry has forgotten this client.
    ctx.client.watch_touched.store(false, Ordering::Release);
}

fn multi(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    if ctx.client.multi.is_some() {
        return ctx.reply.error("ERR MULTI calls can not be nested");
    }
    ctx.client.multi = Some(Transaction::default());
    ctx.reply.ok();
}

fn discard(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    if ctx.client.multi.take().is_none() {
        return ctx.reply.error("ERR DISCARD without MULTI");
    }
    unwatch_all(ctx);
    ctx.reply.ok();
}

/// True if a watched key was written, or existed at WATCH and is gone now.
fn watched_changed(ctx: &Context<'_, '_>) -> bool {
    if ctx.client.watch_touched.load(Ordering::Acquire) {
        return true;
    }
    if !ctx.client.watched.iter().any(|(_, existed)| *existed) {
        return false;
    }
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    ctx.client.watched.iter().any(|(key, existed)| *existed && !shard.keyspace().exists(key, now))
}

fn exec(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    let Some(tx) = ctx.client.multi.take() else {
        return ctx.reply.error("ERR EXEC without MULTI");
    };
    if tx.aborted {
        unwatch_all(ctx);
        return ctx.reply.error("EXECABORT Transaction discarded because of previous errors.");
    }
    // Held for the whole batch: every other client's command waits, and every
    // write that ran before has already flagged its watchers.
    let _exclusive = ctx.server.exec_exclusive();
    let changed = watched_changed(ctx);
    unwatch_all(ctx);
    if changed {
        return ctx.reply.null_array();
    }
    ctx.reply.array(tx.queued.len());
    ctx.client.in_exec = true;
    for queued in &tx.queued {
        let args = super::as_slices(queued);
        ctx.server.stats.commands.fetch_add(1, Ordering::Relaxed);
        // Each command replies in the client's protocol at that point (a
        // queued HELLO switches it for the commands after it).
        let protocol = ctx.client.protocol;
        run_command(ctx.server, ctx.client, &args, ctx.reply.nested(protocol));
    }
    ctx.client.in_exec = false;
    // Clients blocked on the keys written are served after the whole
    // transaction, as Redis does.
    let written = std::mem::take(&mut ctx.client.exec_written);
    drop(_exclusive);
    ctx.server.serve_blocked(written.iter().map(|key| key.as_ref()));
}

fn watch(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if ctx.client.multi.is_some() {
        return ctx.reply.error("ERR WATCH inside MULTI is not allowed");
    }
    if ctx.client.watched.len() + args.len() > WATCHED_KEYS_MAX {
        return ctx.reply.error(&format!("ERR too many watched keys: at most {WATCHED_KEYS_MAX} per client"));
    }
    // Register first, then read existence: a write ordered after this read
    // finds the registration and flags the client.
    let added: Vec<&[u8]> =
        args.iter().copied().filter(|key| ctx.server.watch(ctx.client.id, key, &ctx.client.watch_touched)).collect();
    if !added.is_empty() {
        let shard = ctx.server.shard();
        let now = shard.wall_ms();
        for key in added {
            let existed = shard.keyspace().exists(key, now);
            ctx.client.watched.push((Bytes::copy_from_slice(key), existed));
        }
    }
    ctx.reply.ok();
}

fn unwatch(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    unwatch_all(ctx);
    ctx.reply.ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_control_commands_bypass_the_queue() {
        for name in ["EXEC", "discard", "Multi", "watch", "quit", "reset"] {
            assert!(runs_inside_multi(name.as_bytes()), "{name}");
        }
        for name in ["unwatch", "set", "get", "ping", "hello"] {
            assert!(!runs_inside_multi(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn key_positions_follow_the_spec() {
        let args: Vec<&[u8]> = ["mset", "a", "1", "b", "2"].iter().map(|s| s.as_bytes()).collect();
        let mset = super::super::lookup(b"mset").expect("mset");
        let keys: Vec<&[u8]> = super::super::command_keys(mset, &args).collect();
        assert_eq!(keys, [args[1], args[3]]);
        let flush = super::super::lookup(b"flushall").expect("flushall");
        assert_eq!(super::super::command_keys(flush, &args[..1]).count(), 0);
        let watch = super::super::lookup(b"watch").expect("watch");
        assert_eq!(super::super::command_keys(watch, &args).count(), 4);
    }
}
