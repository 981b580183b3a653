//! Server administration commands: CONFIG (GET, SET, RESETSTAT), FUNCTION,
//! LASTSAVE, DEBUG SLEEP, RESET, and CLIENT's registry subcommands (LIST,
//! INFO, KILL).
//!
//! CONFIG SET accepts Redis 7's encoding-tuning parameters
//! (`hash-max-listpack-entries` and friends, with their `ziplist` aliases)
//! because clients and tools set them; they are validated, stored and
//! reported, but change nothing: Meridian's values are CRDTs whose encodings
//! are not Redis's listpacks and intsets. `timeout` is stored the same way
//! (idle clients are not disconnected yet). The settings fixed at start
//! (`maxclients`, `port`, ...) are read-only.
//!
//! There is no scripting yet: FUNCTION answers as a server with no libraries,
//! and its subcommands that would need a script engine say so.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::connection::subcommand_error;
use super::{CommandSpec, SYNTAX_ERROR, glob_match, parse_float, parse_int};
use meridian_replication::durability::{Fsync, REWRITE_MIN_BYTES, REWRITE_PERCENTAGE};

use crate::context::{ClientHandle, Context};
use crate::reply::Protocol;

/// The server administration commands.
pub fn commands() -> Vec<CommandSpec> {
    let spec = |name, arity, flags, run| CommandSpec::new(name, arity, flags, (0, 0, 0), run);
    vec![
        spec("config", -2, &["admin", "noscript", "loading", "stale"], config),
        spec("function", -2, &["noscript"], function),
        spec("lastsave", 1, &["fast", "loading", "stale"], lastsave),
        spec("debug", -2, &["admin", "noscript", "loading", "stale"], debug),
        spec("reset", 1, &["fast", "noscript", "loading", "stale", "noauth"], reset),
    ]
}

/// A CONFIG SET parameter: canonical name, alias, default, inclusive range.
struct Tunable {
    name: &'static str,
    alias: Option<&'static str>,
    default: i64,
    min: i64,
    max: i64,
}

const INT_MAX: i64 = i32::MAX as i64;
const INT_MIN: i64 = i32::MIN as i64;

const fn tunable(name: &'static str, alias: Option<&'static str>, default: i64, min: i64, max: i64) -> Tunable {
    Tunable { name, alias, default, min, max }
}

/// The settable parameters, with Redis 7's defaults and ranges.
const TUNABLES: &[Tunable] = &[
    tunable("hash-max-listpack-entries", Some("hash-max-ziplist-entries"), 128, 0, i64::MAX),
    tunable("hash-max-listpack-value", Some("hash-max-ziplist-value"), 64, 0, i64::MAX),
    tunable("set-max-intset-entries", None, 512, 0, i64::MAX),
    tunable("set-max-listpack-entries", None, 128, 0, i64::MAX),
    tunable("set-max-listpack-value", None, 64, 0, i64::MAX),
    tunable("list-max-listpack-size", Some("list-max-ziplist-size"), -2, INT_MIN, INT_MAX),
    tunable("zset-max-listpack-entries", Some("zset-max-ziplist-entries"), 128, 0, i64::MAX),
    tunable("zset-max-listpack-value", Some("zset-max-ziplist-value"), 64, 0, i64::MAX),
    tunable("timeout", None, 0, 0, INT_MAX),
];

/// The initial values of the settable parameters, by canonical name.
pub fn config_defaults() -> std::collections::BTreeMap<String, String> {
    TUNABLES.iter().map(|t| (t.name.to_string(), t.default.to_string())).collect()
}

/// The settings fixed at start: reported by CONFIG GET, refused by CONFIG SET.
fn fixed_values(ctx: &Context<'_, '_>) -> Vec<(&'static str, String)> {
    let settings = &ctx.server.settings;
    vec![
        ("maxclients", settings.maxclients.to_string()),
        ("port", settings.port.to_string()),
        ("proto-max-bulk-len", settings.proto_max_bulk_len.to_string()),
        ("requirepass", ctx.server.requirepass().as_deref().unwrap_or_default().to_string()),
        // The journal is Meridian's append-only file (no RDB saves).
        ("appendonly", if ctx.server.is_persistent() { "yes" } else { "no" }.to_string()),
        ("appendfsync", ctx.server.appendfsync().map_or("everysec", |f| f.name()).to_string()),
        ("auto-aof-rewrite-min-size", ctx.server.rewrite_min_bytes().unwrap_or(REWRITE_MIN_BYTES).to_string()),
        ("auto-aof-rewrite-percentage", ctx.server.rewrite_percentage().unwrap_or(REWRITE_PERCENTAGE).to_string()),
        ("busy-poll-us", ctx.server.busy_poll.budget_us().to_string()),
        ("save", String::new()),
    ]
}

/// Every parameter CONFIG GET can report (aliases included), sorted.
fn config_values(ctx: &Context<'_, '_>) -> Vec<(&'static str, String)> {
    let mut values = fixed_values(ctx);
    let stored = ctx.server.config();
    for t in TUNABLES {
        let value = stored.get(t.name).cloned().unwrap_or_else(|| t.default.to_string());
        if let Some(alias) = t.alias {
            values.push((alias, value.clone()));
        }
        values.push((t.name, value));
    }
    drop(stored);
    values.sort_by(|a, b| a.0.cmp(b.0));
    values
}

fn config(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let sub = args[0].to_ascii_uppercase();
    match (sub.as_slice(), &args[1..]) {
        (b"GET", patterns) if !patterns.is_empty() => {
            let values = config_values(ctx);
            let matched: Vec<_> = values
                .iter()
                .filter(|(name, _)| patterns.iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes(), true)))
                .collect();
            ctx.reply.map(matched.len());
            for (name, value) in matched {
                ctx.reply.bulk(name.as_bytes());
                ctx.reply.bulk(value.as_bytes());
            }
        }
        (b"SET", pairs) if !pairs.is_empty() && pairs.len().is_multiple_of(2) => config_set(ctx, pairs),
        (b"RESETSTAT", []) => {
            let stats = &ctx.server.stats;
            // `clients` is a gauge, not a counter: it stays.
            for counter in [&stats.commands, &stats.connections, &stats.rejected, &stats.hits, &stats.misses] {
                counter.store(0, Relaxed);
            }
            ctx.reply.ok();
        }
        _ => subcommand_error(ctx, "config", args[0], &["get", "set", "resetstat"]),
    }
}

/// CONFIG SET: every pair is checked before any is applied, so a failing
/// call changes nothing (Redis 7 is atomic the same way).
fn config_set(ctx: &mut Context<'_, '_>, pairs: &[&[u8]]) {
    let fixed = fixed_values(ctx);
    let mut updates: Vec<(&'static str, String)> = Vec::with_capacity(pairs.len() / 2);
    let mut fsync_update = None;
    let mut rewrite_update = None;
    let mut percentage_update = None;
    let mut busy_poll_update = None;
    for pair in pairs.chunks_exact(2) {
        let given = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        let failed =
            |reason: &str| format!("ERR CONFIG SET failed (possibly related to argument '{given}') - {reason}");
        if given == "appendfsync" {
            let Some(fsync) = std::str::from_utf8(pair[1]).ok().and_then(Fsync::parse) else {
                return ctx.reply.error(&failed("argument(s) must be one of the following: always, everysec, no"));
            };
            fsync_update = Some(fsync);
            continue;
        }
        if given == "auto-aof-rewrite-min-size" {
            let Some(bytes) = parse_memory(pair[1]) else {
                return ctx.reply.error(&failed("argument must be a memory value"));
            };
            rewrite_update = Some(bytes);
            continue;
        }
        if given == "auto-aof-rewrite-percentage" {
            let Ok(percentage) = parse_int(pair[1]) else {
                return ctx.reply.error(&failed("argument couldn't be parsed into an integer"));
            };
            if !(0..=INT_MAX).contains(&percentage) {
                return ctx.reply.error(&failed(&format!("argument must be between 0 and {INT_MAX} inclusive")));
            }
            percentage_update = Some(percentage as u64);
            continue;
        }
        if given == "busy-poll-us" {
            let Ok(us) = parse_int(pair[1]) else {
                return ctx.reply.error(&failed("argument couldn't be parsed into an integer"));
            };
            let max = crate::spin::BUSY_POLL_US_MAX;
            if !(0..=max as i64).contains(&us) {
                return ctx.reply.error(&failed(&format!("argument must be between 0 and {max} inclusive")));
            }
            busy_poll_update = Some(us as u64);
            continue;
        }
        let Some(t) = TUNABLES.iter().find(|t| t.name == given || t.alias == Some(given.as_str())) else {
            if fixed.iter().any(|(name, _)| *name == given) {
                // Redis can change these at runtime; Meridian reads them once
                // at start (the listener's client bound, the bound socket).
                return ctx.reply.error(&failed("can't set immutable config"));
            }
            return ctx.reply.error(&format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(pair[0])
            ));
        };
        if updates.iter().any(|(name, _)| *name == t.name) {
            return ctx.reply.error(&failed("duplicate parameter"));
        }
        let Ok(value) = parse_int(pair[1]) else {
            return ctx.reply.error(&failed("argument couldn't be parsed into an integer"));
        };
        if !(t.min..=t.max).contains(&value) {
            return ctx.reply.error(&failed(&format!("argument must be between {} and {} inclusive", t.min, t.max)));
        }
        updates.push((t.name, value.to_string()));
    }
    if let Some(fsync) = fsync_update
        && !ctx.server.set_appendfsync(fsync)
    {
        return ctx.reply.error(
            "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - the node has no data directory (start it with --data-dir)",
        );
    }
    if let Some(bytes) = rewrite_update
        && !ctx.server.set_rewrite_min_bytes(bytes)
    {
        return ctx.reply.error(
            "ERR CONFIG SET failed (possibly related to argument 'auto-aof-rewrite-min-size') - the node has no data directory (start it with --data-dir)",
        );
    }
    if let Some(percentage) = percentage_update
        && !ctx.server.set_rewrite_percentage(percentage)
    {
        return ctx.reply.error(
            "ERR CONFIG SET failed (possibly related to argument 'auto-aof-rewrite-percentage') - the node has no data directory (start it with --data-dir)",
        );
    }
    if let Some(us) = busy_poll_update {
        ctx.server.busy_poll.set_budget_us(us);
    }
    let mut stored = ctx.server.config();
    for (name, value) in updates {
        stored.insert(name.to_string(), value);
    }
    drop(stored);
    ctx.reply.ok();
}

/// A memory value as Redis's configuration reads it: a number of bytes,
/// optionally with a unit (`k` 1000, `kb` 1024, `m`, `mb`, `g`, `gb`; any
/// case).
fn parse_memory(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.to_ascii_lowercase();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let unit = match &text[digits..] {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    text[..digits].parse::<u64>().ok()?.checked_mul(unit)
}

/// The error for what needs a script engine.
const NO_SCRIPTING: &str = "ERR scripting is not supported by Meridian yet";

fn function(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let sub = args[0].to_ascii_uppercase();
    match (sub.as_slice(), &args[1..]) {
        (b"FLUSH", []) => ctx.reply.ok(),
        (b"FLUSH", [mode]) if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {
            ctx.reply.ok()
        }
        (b"FLUSH", [_]) => ctx.reply.error("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"),
        (b"LIST", options) => {
            let mut i = 0;
            while i < options.len() {
                if options[i].eq_ignore_ascii_case(b"WITHCODE") {
                    i += 1;
                } else if options[i].eq_ignore_ascii_case(b"LIBRARYNAME") {
                    if i + 1 >= options.len() {
                        return ctx.reply.error("ERR library name argument was not given");
                    }
                    i += 2;
                } else {
                    return ctx.reply.error(&format!("ERR Unknown argument {}", String::from_utf8_lossy(options[i])));
                }
            }
            ctx.reply.array(0);
        }
        (b"STATS", []) => {
            ctx.reply.map(2);
            ctx.reply.bulk(b"running_script");
            ctx.reply.null();
            ctx.reply.bulk(b"engines");
            ctx.reply.map(1);
            ctx.reply.bulk(b"LUA");
            ctx.reply.map(2);
            ctx.reply.bulk(b"libraries_count");
            ctx.reply.integer(0);
            ctx.reply.bulk(b"functions_count");
            ctx.reply.integer(0);
        }
        (b"KILL", []) => ctx.reply.error("NOTBUSY No scripts in execution right now."),
        (b"LOAD", [_, ..]) | (b"DELETE", [_]) | (b"DUMP", []) | (b"RESTORE", [_, ..]) => ctx.reply.error(NO_SCRIPTING),
        _ => subcommand_error(
            ctx,
            "function",
            args[0],
            &["flush", "list", "stats", "kill", "load", "delete", "dump", "restore"],
        ),
    }
}

fn lastsave(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    // Nothing is saved yet (no persistence, issue 4): the last time the data
    // set was "as on disk" is the start, which is also what Redis reports
    // before its first save.
    let started = ctx.server.started_at.duration_since(UNIX_EPOCH).unwrap_or_default();
    ctx.reply.integer(started.as_secs() as i64);
}

fn debug(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match (args[0].to_ascii_uppercase().as_slice(), &args[1..]) {
        (b"SLEEP", [seconds]) => {
            let pause = match parse_float(seconds) {
                Ok(s) if s <= 0.0 => Duration::ZERO,
                Ok(s) => match Duration::try_from_secs_f64(s) {
                    Ok(pause) => pause,
                    Err(_) => return ctx.reply.error("ERR value is not a valid float"),
                },
                Err(e) => return ctx.reply.error(&e.to_string()),
            };
            // The connection awaits this after the command, on its own task.
            ctx.client.sleep = Some(pause);
            ctx.reply.ok();
        }
        _ => subcommand_error(ctx, "debug", args[0], &["sleep"]),
    }
}

fn reset(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    super::transactions::reset(ctx);
    super::pubsub::unsubscribe_all(ctx.server, ctx.client);
    ctx.client.protocol = Protocol::Resp2;
    ctx.reply.set_protocol(Protocol::Resp2);
    ctx.client.name = None;
    ctx.client.authenticated = ctx.server.requirepass().is_none();
    ctx.reply.simple("RESET");
}

/// One CLIENT LIST line (without the newline). `current` is the calling
/// client's own state and command, fresher than its registry entry.
fn client_line(handle: &ClientHandle, current: Option<(&Context<'_, '_>, &str)>) -> String {
    let now = Instant::now();
    let info = handle.info();
    let (name, protocol, command) = match current {
        Some((ctx, command)) => (ctx.client.name.clone(), ctx.client.protocol, command.to_string()),
        None => (info.name.clone(), info.protocol, info.last_command.clone()),
    };
    let idle = if current.is_some() { 0 } else { now.duration_since(info.last_active).as_secs() };
    drop(info);
    let mut line = String::with_capacity(320);
    let _ = write!(
        line,
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 \
         qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default \
         redir=-1 resp={} lib-name= lib-ver=",
        handle.id,
        handle.addr,
        handle.laddr,
        String::from_utf8_lossy(name.as_deref().unwrap_or_default()),
        now.duration_since(handle.created).as_secs(),
        idle,
        command,
        if protocol == Protocol::Resp3 { 3 } else { 2 },
    );
    line
}

/// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...].
pub(super) fn client_list(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut ids: Option<Vec<u64>> = None;
    match args {
        [] => {}
        [kind, value] if kind.eq_ignore_ascii_case(b"TYPE") => {
            let value = value.to_ascii_lowercase();
            match value.as_slice() {
                b"normal" => {}
                // Meridian's clients are all normal ones.
                b"master" | b"replica" | b"slave" | b"pubsub" => ids = Some(Vec::new()),
                _ => {
                    return ctx.reply.error(&format!("ERR Unknown client type '{}'", String::from_utf8_lossy(&value)));
                }
            }
        }
        [kind, values @ ..] if kind.eq_ignore_ascii_case(b"ID") && !values.is_empty() => {
            let mut wanted = Vec::with_capacity(values.len());
            for value in values {
                match parse_int(value) {
                    Ok(id) if id > 0 => wanted.push(id as u64),
                    _ => return ctx.reply.error("ERR Invalid client ID"),
                }
            }
            ids = Some(wanted);
        }
        _ => return ctx.reply.error(SYNTAX_ERROR),
    }
    let mut text = String::new();
    for handle in ctx.server.client_handles() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&handle.id)) {
            continue;
        }
        let current = (handle.id == ctx.client.id).then_some((&*ctx, "client|list"));
        text.push_str(&client_line(&handle, current));
        text.push('\n');
    }
    ctx.reply.bulk(text.as_bytes());
}

/// CLIENT INFO: the caller's CLIENT LIST line.
pub(super) fn client_info(ctx: &mut Context<'_, '_>) {
    let Some(handle) = ctx.client.handle.clone() else {
        return ctx.reply.bulk(b"");
    };
    let mut line = client_line(&handle, Some((&*ctx, "client|info")));
    line.push('\n');
    ctx.reply.bulk(line.as_bytes());
}

/// CLIENT KILL addr (old form: OK or an error) and CLIENT KILL <filter>
/// <value> ... (new form: the number killed; the caller is skipped unless
/// SKIPME no).
pub(super) fn client_kill(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let old_form = args.len() == 1;
    let mut id: Option<u64> = None;
    let mut addr: Option<&[u8]> = None;
    let mut laddr: Option<&[u8]> = None;
    let mut skipme = !old_form;
    let mut none_match = false;
    if old_form {
        addr = Some(args[0]);
    } else {
        if !args.len().is_multiple_of(2) {
            return ctx.reply.error(SYNTAX_ERROR);
        }
        for pair in args.chunks_exact(2) {
            let value = &pair[1];
            match pair[0].to_ascii_uppercase().as_slice() {
                b"ID" => match parse_int(value) {
                    Ok(n) if n > 0 => id = Some(n as u64),
                    _ => return ctx.reply.error("ERR client-id should be greater than 0"),
                },
                b"ADDR" => addr = Some(value),
                b"LADDR" => laddr = Some(value),
                b"SKIPME" if value.eq_ignore_ascii_case(b"yes") => skipme = true,
                b"SKIPME" if value.eq_ignore_ascii_case(b"no") => skipme = false,
                b"USER" if value == b"default" => {}
                b"USER" => {
                    return ctx.reply.error(&format!("ERR No such user '{}'", String::from_utf8_lossy(value)));
                }
                b"TYPE" => match value.to_ascii_lowercase().as_slice() {
                    b"normal" => {}
                    b"master" | b"replica" | b"slave" | b"pubsub" => none_match = true,
                    _ => {
                        return ctx
                            .reply
                            .error(&format!("ERR Unknown client type '{}'", String::from_utf8_lossy(value)));
                    }
                },
                _ => return ctx.reply.error(SYNTAX_ERROR),
            }
        }
    }
    let mut killed = 0i64;
    if !none_match {
        for handle in ctx.server.client_handles() {
            let is_me = handle.id == ctx.client.id;
            if id.is_some_and(|id| id != handle.id)
                || addr.is_some_and(|a| a != handle.addr.as_bytes())
                || laddr.is_some_and(|a| a != handle.laddr.as_bytes())
                || (skipme && is_me)
            {
                continue;
            }
            if is_me {
                // Killing yourself closes the connection after this reply.
                ctx.client.closing = true;
            } else {
                handle.kill();
            }
            killed += 1;
        }
    }
    if !old_form {
        ctx.reply.integer(killed);
    } else if killed == 0 {
        ctx.reply.error("ERR No such client");
    } else {
        ctx.reply.ok();
    }
}
