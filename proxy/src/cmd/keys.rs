//! Key-space commands: DEL, EXISTS, TYPE, expiry, KEYS, SCAN, FLUSH.

use meridian_crdt::expiry::Deadline;
use meridian_crdt::keyspace::CopyOutcome;

use super::{CommandSpec, SYNTAX_ERROR, glob_match, parse_int};
use crate::context::Context;

/// The key-space commands.
pub fn commands() -> Vec<CommandSpec> {
    const WF: &[&str] = &["write", "fast"];
    const RF: &[&str] = &["readonly", "fast"];
    vec![
        CommandSpec::new("del", -2, &["write"], (1, -1, 1), del),
        CommandSpec::new("unlink", -2, WF, (1, -1, 1), del),
        CommandSpec::new("exists", -2, RF, (1, -1, 1), exists),
        CommandSpec::new("touch", -2, RF, (1, -1, 1), exists),
        CommandSpec::new("type", 2, RF, (1, 1, 1), key_type),
        CommandSpec::new("expire", -3, WF, (1, 1, 1), expire),
        CommandSpec::new("pexpire", -3, WF, (1, 1, 1), pexpire),
        CommandSpec::new("expireat", -3, WF, (1, 1, 1), expireat),
        CommandSpec::new("pexpireat", -3, WF, (1, 1, 1), pexpireat),
        CommandSpec::new("ttl", 2, RF, (1, 1, 1), ttl),
        CommandSpec::new("pttl", 2, RF, (1, 1, 1), pttl),
        CommandSpec::new("expiretime", 2, RF, (1, 1, 1), expiretime),
        CommandSpec::new("pexpiretime", 2, RF, (1, 1, 1), pexpiretime),
        CommandSpec::new("persist", 2, WF, (1, 1, 1), persist),
        CommandSpec::new("dbsize", 1, RF, (0, 0, 0), dbsize),
        CommandSpec::new("rename", 3, &["write"], (1, 2, 1), rename),
        CommandSpec::new("renamenx", 3, WF, (1, 2, 1), renamenx),
        CommandSpec::new("copy", -3, &["write", "denyoom"], (1, 2, 1), copy),
        CommandSpec::new("keys", 2, &["readonly"], (0, 0, 0), keys),
        CommandSpec::new("scan", -2, &["readonly"], (0, 0, 0), scan),
        CommandSpec::new("randomkey", 1, &["readonly"], (0, 0, 0), randomkey),
        CommandSpec::new("flushdb", -1, &["write"], (0, 0, 0), flush),
        CommandSpec::new("flushall", -1, &["write"], (0, 0, 0), flush),
    ]
}

fn del(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut shard = ctx.server.shard();
    let mut deleted = 0;
    for key in args {
        match ctx.moment(&mut shard) {
            Ok(at) => deleted += i64::from(shard.keyspace_mut().delete(key, at).0),
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&format!("ERR {e}"));
            }
        }
    }
    drop(shard);
    ctx.reply.integer(deleted);
}

fn exists(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let count = args.iter().filter(|key| shard.keyspace().exists(key, now)).count();
    drop(shard);
    ctx.reply.integer(count as i64);
}

fn key_type(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let name = shard.keyspace().value_type(args[0], now).map_or("none", |t| t.name());
    drop(shard);
    ctx.reply.simple(name);
}

/// EXPIRE-family: `unit_ms` per argument unit, absolute or relative.
fn expire_with(ctx: &mut Context<'_, '_>, args: &[&[u8]], unit_ms: i64, absolute: bool, command: &str) {
    let amount = match parse_int(args[1]) {
        Ok(v) => v,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[2..] {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => return ctx.reply.error(&format!("ERR Unsupported option {}", String::from_utf8_lossy(option))),
        }
    }
    if nx && (xx || gt || lt) {
        return ctx.reply.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return ctx.reply.error("ERR GT and LT options at the same time are not compatible");
    }
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms() as i64;
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    let Some(ms) = amount.checked_mul(unit_ms) else {
        drop(shard);
        return ctx.reply.error(&invalid());
    };
    let Some(deadline) = (if absolute { Some(ms) } else { ms.checked_add(now) }) else {
        drop(shard);
        return ctx.reply.error(&invalid());
    };
    let Some(current) = shard.keyspace().deadline(args[0], now as u64) else {
        drop(shard);
        return ctx.reply.integer(0);
    };
    // GT and LT treat "no TTL" as an infinite TTL, as Redis does.
    let allowed = match current {
        None => !xx && !gt,
        Some(current) => {
            let current = current as i64;
            !(nx || (gt && deadline <= current) || (lt && deadline >= current))
        }
    };
    if !allowed {
        drop(shard);
        return ctx.reply.integer(0);
    }
    let target = Deadline::At(deadline.max(0) as u64);
    match ctx.moment(&mut shard) {
        Ok(at) => {
            shard.keyspace_mut().set_expiry(args[0], target, at);
            drop(shard);
            ctx.reply.integer(1);
        }
        Err(e) => {
            drop(shard);
            ctx.reply.error(&format!("ERR {e}"));
        }
    }
}

fn expire(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    expire_with(ctx, args, 1000, false, "expire");
}

fn pexpire(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    expire_with(ctx, args, 1, false, "pexpire");
}

fn expireat(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    expire_with(ctx, args, 1000, true, "expireat");
}

fn pexpireat(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    expire_with(ctx, args, 1, true, "pexpireat");
}

/// TTL-family reply: -2 missing, -1 no expiry, else the remaining time (or
/// the absolute deadline) in `unit_ms`.
fn ttl_with(ctx: &mut Context<'_, '_>, key: &[u8], unit_ms: u64, absolute: bool) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let reply = match shard.keyspace().deadline(key, now) {
        None => -2,
        Some(None) => -1,
        Some(Some(deadline)) if absolute => (deadline / unit_ms) as i64,
        // Redis rounds TTL up to the next whole second.
        Some(Some(deadline)) => (deadline.saturating_sub(now)).div_ceil(unit_ms) as i64,
    };
    drop(shard);
    ctx.reply.integer(reply);
}

fn ttl(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    ttl_with(ctx, args[0], 1000, false);
}

fn pttl(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    ttl_with(ctx, args[0], 1, false);
}

fn expiretime(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    ttl_with(ctx, args[0], 1000, true);
}

fn pexpiretime(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    ttl_with(ctx, args[0], 1, true);
}

fn persist(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut shard = ctx.server.shard();
    let result =
        ctx.moment(&mut shard).map(|at| shard.keyspace_mut().set_expiry(args[0], Deadline::Persist, at).is_some());
    drop(shard);
    match result {
        Ok(changed) => ctx.reply.integer(i64::from(changed)),
        Err(e) => ctx.reply.error(&format!("ERR {e}")),
    }
}

fn dbsize(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    let len = ctx.server.shard().keyspace().len();
    ctx.reply.integer(len as i64);
}

fn keys(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let matched: Vec<_> = shard.keyspace().keys(now).into_iter().filter(|k| glob_match(args[0], k, false)).collect();
    drop(shard);
    ctx.reply.array(matched.len());
    for key in matched {
        ctx.reply.bulk(&key);
    }
}

fn scan(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let Ok(cursor) = std::str::from_utf8(args[0]).unwrap_or("").parse::<u64>() else {
        return ctx.reply.error("ERR invalid cursor");
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count: usize = 10;
    let mut type_filter: Option<Vec<u8>> = None;
    let mut i = 1;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return ctx.reply.error(SYNTAX_ERROR);
        };
        match args[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value),
            b"COUNT" => match parse_int(value) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => return ctx.reply.error(SYNTAX_ERROR),
                Err(e) => return ctx.reply.error(&e.to_string()),
            },
            b"TYPE" => type_filter = Some(value.to_ascii_lowercase()),
            _ => return ctx.reply.error(SYNTAX_ERROR),
        }
        i += 2;
    }
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    let (next, keys) = shard.keyspace().scan(cursor, count, now);
    let keys: Vec<_> = keys
        .into_iter()
        .filter(|k| pattern.is_none_or(|p| glob_match(p, k, false)))
        .filter(|k| {
            type_filter.as_ref().is_none_or(|t| {
                shard.keyspace().value_type(k, now).is_some_and(|vt| vt.name().as_bytes() == t.as_slice())
            })
        })
        .collect();
    drop(shard);
    ctx.reply.array(2);
    ctx.reply.bulk(next.to_string().as_bytes());
    ctx.reply.array(keys.len());
    for key in keys {
        ctx.reply.bulk(&key);
    }
}

fn randomkey(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    // Any well-spread number will do; the clock's low bits change every call.
    let random = shard.clock().high_water().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let key = shard.keyspace().random_key(random, now);
    drop(shard);
    ctx.reply.bulk_or_null(key.as_deref());
}

fn flush(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match args {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return ctx.reply.error(SYNTAX_ERROR),
    }
    ctx.server.shard().keyspace_mut().flush();
    ctx.reply.ok();
}

/// Copies `src` to `dst` (replacing it if asked) and, for RENAME, deletes `src`.
fn move_key(
    ctx: &mut Context<'_, '_>,
    src: &[u8],
    dst: &[u8],
    replace: bool,
    delete_source: bool,
) -> Result<CopyOutcome, String> {
    let mut shard = ctx.server.shard();
    let at = ctx.moment(&mut shard).map_err(|e| format!("ERR {e}"))?;
    let outcome = shard.keyspace_mut().copy(src, dst, replace, at);
    if delete_source && src != dst && matches!(outcome, CopyOutcome::Copied(_)) {
        let at = ctx.moment(&mut shard).map_err(|e| format!("ERR {e}"))?;
        shard.keyspace_mut().delete(src, at);
    }
    Ok(outcome)
}

fn rename(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match move_key(ctx, args[0], args[1], true, true) {
        Ok(CopyOutcome::Copied(_)) => ctx.reply.ok(),
        Ok(CopyOutcome::NoSource) => ctx.reply.error("ERR no such key"),
        Ok(CopyOutcome::TargetExists) => unreachable!("RENAME replaces its target"),
        Err(e) => ctx.reply.error(&e),
    }
}

fn renamenx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if args[0] == args[1] {
        // Redis: the same key is "already there", whether it exists or not.
        let exists = {
            let shard = ctx.server.shard();
            let now = shard.wall_ms();
            shard.keyspace().exists(args[0], now)
        };
        return if exists { ctx.reply.integer(0) } else { ctx.reply.error("ERR no such key") };
    }
    match move_key(ctx, args[0], args[1], false, true) {
        Ok(CopyOutcome::Copied(_)) => ctx.reply.integer(1),
        Ok(CopyOutcome::TargetExists) => ctx.reply.integer(0),
        Ok(CopyOutcome::NoSource) => ctx.reply.error("ERR no such key"),
        Err(e) => ctx.reply.error(&e),
    }
}

fn copy(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut replace = false;
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"DB" if i + 1 < args.len() => {
                match parse_int(args[i + 1]) {
                    Ok(0) => {}
                    Ok(_) => return ctx.reply.error("ERR DB index is out of range"),
                    Err(e) => return ctx.reply.error(&e.to_string()),
                }
                i += 1;
            }
            _ => return ctx.reply.error(SYNTAX_ERROR),
        }
        i += 1;
    }
    if args[0] == args[1] {
        return ctx.reply.error("ERR source and destination objects are the same");
    }
    match move_key(ctx, args[0], args[1], replace, false) {
        Ok(CopyOutcome::Copied(_)) => ctx.reply.integer(1),
        Ok(_) => ctx.reply.integer(0),
        Err(e) => ctx.reply.error(&e),
    }
}
