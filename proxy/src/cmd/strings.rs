//! String and counter commands.

use meridian_crdt::keyspace::{ExpiryChange, View};
use meridian_crdt::value::TypedValue;
use meridian_crdt::{CommandError, number};

use super::{CommandSpec, SYNTAX_ERROR, parse_float, parse_int};
use crate::context::Context;

/// The string commands.
pub fn commands() -> Vec<CommandSpec> {
    const W: &[&str] = &["write", "denyoom"];
    const WF: &[&str] = &["write", "denyoom", "fast"];
    const R: &[&str] = &["readonly", "fast"];
    vec![
        CommandSpec::new("get", 2, R, (1, 1, 1), get),
        CommandSpec::new("set", -3, W, (1, 1, 1), set),
        CommandSpec::new("setnx", 3, WF, (1, 1, 1), setnx),
        CommandSpec::new("setex", 4, W, (1, 1, 1), setex),
        CommandSpec::new("psetex", 4, W, (1, 1, 1), psetex),
        CommandSpec::new("getset", 3, WF, (1, 1, 1), getset),
        CommandSpec::new("getdel", 2, &["write", "fast"], (1, 1, 1), getdel),
        CommandSpec::new("getex", -2, &["write", "fast"], (1, 1, 1), getex),
        CommandSpec::new("mget", -2, R, (1, -1, 1), mget),
        CommandSpec::new("mset", -3, W, (1, -1, 2), mset),
        CommandSpec::new("msetnx", -3, W, (1, -1, 2), msetnx),
        CommandSpec::new("append", 3, W, (1, 1, 1), append),
        CommandSpec::new("strlen", 2, R, (1, 1, 1), strlen),
        CommandSpec::new("getrange", 4, &["readonly"], (1, 1, 1), getrange),
        CommandSpec::new("setrange", 4, W, (1, 1, 1), setrange),
        CommandSpec::new("incr", 2, WF, (1, 1, 1), incr),
        CommandSpec::new("decr", 2, WF, (1, 1, 1), decr),
        CommandSpec::new("incrby", 3, WF, (1, 1, 1), incrby),
        CommandSpec::new("decrby", 3, WF, (1, 1, 1), decrby),
        CommandSpec::new("incrbyfloat", 3, WF, (1, 1, 1), incrbyfloat),
    ]
}

/// The string at `key` now (owned), or `WRONGTYPE`.
fn current(ctx: &Context<'_, '_>, key: &[u8]) -> Result<Option<Vec<u8>>, CommandError> {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    Ok(shard.keyspace().get(key, now)?.map(|v| v.into_owned()))
}

fn get(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    match shard.keyspace().view(args[0], now) {
        None => ctx.reply.null(),
        Some(View::SmallString(value)) => ctx.reply.bulk(value),
        Some(View::Value(TypedValue::Str(register))) => ctx.reply.bulk_or_null(number::render(register).as_deref()),
        Some(View::Value(_)) => ctx.reply.error(&CommandError::WrongType.to_string()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    IfAbsent,
    IfPresent,
}

/// Parses an expiry amount (EX/PX/EXAT/PXAT) into an absolute deadline.
fn deadline(unit_ms: u64, absolute: bool, arg: &[u8], now_ms: u64, command: &str) -> Result<u64, String> {
    let value = parse_int(arg).map_err(|e| e.to_string())?;
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    if value <= 0 {
        return Err(invalid());
    }
    let ms = (value as u64).checked_mul(unit_ms).ok_or_else(invalid)?;
    if absolute { Ok(ms) } else { now_ms.checked_add(ms).filter(|d| *d <= i64::MAX as u64).ok_or_else(invalid) }
}

fn set(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (key, value) = (&args[0], &args[1]);
    let mut condition = Condition::Always;
    let mut want_old = false;
    let mut expiry_arg: Option<(u64, bool, &[u8])> = None;
    let mut keep_ttl = false;
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        let next = args.get(i + 1).copied();
        match option.as_slice() {
            b"NX" if condition == Condition::Always => condition = Condition::IfAbsent,
            b"XX" if condition == Condition::Always => condition = Condition::IfPresent,
            b"GET" => want_old = true,
            b"KEEPTTL" if expiry_arg.is_none() => keep_ttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry_arg.is_none() && !keep_ttl && next.is_some() => {
                let (unit, absolute) = match option.as_slice() {
                    b"EX" => (1000, false),
                    b"PX" => (1, false),
                    b"EXAT" => (1000, true),
                    _ => (1, true),
                };
                expiry_arg = Some((unit, absolute, next.expect("checked above")));
                i += 1;
            }
            _ => return ctx.reply.error(SYNTAX_ERROR),
        }
        i += 1;
    }
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let expiry = match expiry_arg {
        Some((unit, absolute, arg)) => match deadline(unit, absolute, arg, now, "set") {
            Ok(deadline) => ExpiryChange::At(deadline),
            Err(e) => return ctx.reply.error(&e),
        },
        None if keep_ttl => ExpiryChange::Keep,
        None => ExpiryChange::Clear,
    };
    // The plain SET (the hot path) looks nothing up before writing.
    let old = if want_old {
        match shard.keyspace().get(key, now) {
            Ok(old) => old.map(|v| v.into_owned()),
            // SET overwrites any type, but SET ... GET must answer WRONGTYPE.
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&e.to_string());
            }
        }
    } else {
        None
    };
    let write = match condition {
        Condition::Always => true,
        Condition::IfAbsent => !shard.keyspace().exists(key, now),
        Condition::IfPresent => shard.keyspace().exists(key, now),
    };
    if write {
        // An absolute deadline already past deletes the key, as Redis does.
        if let ExpiryChange::At(deadline) = expiry
            && deadline <= now
        {
            match ctx.moment(&mut shard) {
                Ok(at) => {
                    shard.keyspace_mut().delete(key, at);
                }
                Err(e) => return ctx.reply.error(&format!("ERR {e}")),
            }
        } else {
            match ctx.moment(&mut shard) {
                Ok(at) => {
                    shard.keyspace_mut().set(key, value, expiry, at);
                }
                Err(e) => return ctx.reply.error(&format!("ERR {e}")),
            }
        }
    }
    drop(shard);
    if want_old {
        ctx.reply.bulk_or_null(old.as_deref());
    } else if write {
        ctx.reply.ok();
    } else {
        ctx.reply.null();
    }
}

/// Writes `value` at `key` unconditionally with `expiry` (SETEX, PSETEX, MSET, GETSET).
fn write_value(ctx: &Context<'_, '_>, key: &[u8], value: &[u8], expiry: ExpiryChange) -> Result<(), String> {
    let mut shard = ctx.server.shard();
    let at = ctx.moment(&mut shard).map_err(|e| format!("ERR {e}"))?;
    shard.keyspace_mut().set(key, value, expiry, at);
    Ok(())
}

fn setnx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    if shard.keyspace().exists(args[0], now) {
        drop(shard);
        return ctx.reply.integer(0);
    }
    match ctx.moment(&mut shard) {
        Ok(at) => {
            shard.keyspace_mut().set(args[0], args[1], ExpiryChange::Clear, at);
            drop(shard);
            ctx.reply.integer(1);
        }
        Err(e) => {
            drop(shard);
            ctx.reply.error(&format!("ERR {e}"));
        }
    }
}

fn setex_with(ctx: &mut Context<'_, '_>, args: &[&[u8]], unit_ms: u64, command: &str) {
    let now = ctx.server.shard().wall_ms();
    let deadline = match deadline(unit_ms, false, args[1], now, command) {
        Ok(d) => d,
        Err(e) => return ctx.reply.error(&e),
    };
    match write_value(ctx, args[0], args[2], ExpiryChange::At(deadline)) {
        Ok(()) => ctx.reply.ok(),
        Err(e) => ctx.reply.error(&e),
    }
}

fn setex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    setex_with(ctx, args, 1000, "setex");
}

fn psetex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    setex_with(ctx, args, 1, "psetex");
}

fn getset(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let old = match current(ctx, args[0]) {
        Ok(old) => old,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    match write_value(ctx, args[0], args[1], ExpiryChange::Clear) {
        Ok(()) => ctx.reply.bulk_or_null(old.as_deref()),
        Err(e) => ctx.reply.error(&e),
    }
}

fn getdel(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    let old = match shard.keyspace().get(args[0], now) {
        Ok(old) => old.map(|v| v.into_owned()),
        Err(e) => {
            drop(shard);
            return ctx.reply.error(&e.to_string());
        }
    };
    if old.is_some() {
        match ctx.moment(&mut shard) {
            Ok(at) => {
                shard.keyspace_mut().delete(args[0], at);
            }
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&format!("ERR {e}"));
            }
        }
    }
    drop(shard);
    ctx.reply.bulk_or_null(old.as_deref());
}

fn getex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    use meridian_crdt::expiry::Deadline;
    let now = ctx.server.shard().wall_ms();
    let change = match args.len() {
        1 => None,
        2 if args[1].eq_ignore_ascii_case(b"PERSIST") => Some(Deadline::Persist),
        3 => {
            let option = args[1].to_ascii_uppercase();
            let (unit, absolute) = match option.as_slice() {
                b"EX" => (1000, false),
                b"PX" => (1, false),
                b"EXAT" => (1000, true),
                b"PXAT" => (1, true),
                _ => return ctx.reply.error(SYNTAX_ERROR),
            };
            match deadline(unit, absolute, args[2], now, "getex") {
                Ok(d) => Some(Deadline::At(d)),
                Err(e) => return ctx.reply.error(&e),
            }
        }
        _ => return ctx.reply.error(SYNTAX_ERROR),
    };
    let value = match current(ctx, args[0]) {
        Ok(value) => value,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    if let (Some(_), Some(change)) = (&value, change) {
        let mut shard = ctx.server.shard();
        match ctx.moment(&mut shard) {
            Ok(at) => {
                shard.keyspace_mut().set_expiry(args[0], change, at);
            }
            Err(e) => {
                drop(shard);
                return ctx.reply.error(&format!("ERR {e}"));
            }
        }
    }
    ctx.reply.bulk_or_null(value.as_deref());
}

fn mget(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let shard = ctx.server.shard();
    let now = shard.wall_ms();
    ctx.reply.array(args.len());
    for key in args {
        match shard.keyspace().get(key, now) {
            Ok(value) => ctx.reply.bulk_or_null(value.as_deref()),
            // MGET answers nil for keys of another type.
            Err(_) => ctx.reply.null(),
        }
    }
}

/// Writes every (key, value) pair of MSET/MSETNX, each as its own delta.
fn set_pairs(
    shard: &mut meridian_replication::Shard,
    wall: &meridian_replication::WallSnapshot,
    args: &[&[u8]],
) -> Result<(), String> {
    for pair in args.chunks(2) {
        let at = shard.moment_in(wall).map_err(|e| format!("ERR {e}"))?;
        shard.keyspace_mut().set(pair[0], pair[1], ExpiryChange::Clear, at);
    }
    Ok(())
}

fn mset(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if !args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'mset' command");
    }
    let result = set_pairs(&mut ctx.server.shard(), &ctx.client.wall, args);
    match result {
        Ok(()) => ctx.reply.ok(),
        Err(e) => ctx.reply.error(&e),
    }
}

fn msetnx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if !args.len().is_multiple_of(2) {
        return ctx.reply.error("ERR wrong number of arguments for 'msetnx' command");
    }
    let mut shard = ctx.server.shard();
    let now = shard.wall_ms();
    if args.chunks(2).any(|pair| shard.keyspace().exists(pair[0], now)) {
        drop(shard);
        return ctx.reply.integer(0);
    }
    let result = set_pairs(&mut shard, &ctx.client.wall, args);
    drop(shard);
    match result {
        Ok(()) => ctx.reply.integer(1),
        Err(e) => ctx.reply.error(&e),
    }
}

fn append(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut value = match current(ctx, args[0]) {
        Ok(value) => value.unwrap_or_default(),
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    if value.len() + args[1].len() > ctx.server.settings.proto_max_bulk_len {
        return ctx.reply.error(&CommandError::StringTooLong.to_string());
    }
    value.extend_from_slice(args[1]);
    match write_value(ctx, args[0], &value, ExpiryChange::Keep) {
        Ok(()) => ctx.reply.integer(value.len() as i64),
        Err(e) => ctx.reply.error(&e),
    }
}

fn strlen(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match current(ctx, args[0]) {
        Ok(value) => ctx.reply.integer(value.map_or(0, |v| v.len()) as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn getrange(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (start, end) = match (parse_int(args[1]), parse_int(args[2])) {
        (Ok(s), Ok(e)) => (s, e),
        _ => return ctx.reply.error(&CommandError::NotInteger.to_string()),
    };
    let value = match current(ctx, args[0]) {
        Ok(value) => value.unwrap_or_default(),
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return ctx.reply.bulk(b"");
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return ctx.reply.bulk(b"");
    }
    ctx.reply.bulk(&value[start as usize..=end as usize]);
}

fn setrange(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let offset = match parse_int(args[1]) {
        Ok(o) if o >= 0 => o as usize,
        Ok(_) => return ctx.reply.error("ERR offset is out of range"),
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let mut value = match current(ctx, args[0]) {
        Ok(value) => value,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let patch = &args[2];
    if patch.is_empty() {
        return ctx.reply.integer(value.map_or(0, |v| v.len()) as i64);
    }
    if offset.saturating_add(patch.len()) > ctx.server.settings.proto_max_bulk_len {
        return ctx.reply.error(&CommandError::StringTooLong.to_string());
    }
    let value = value.get_or_insert_with(Vec::new);
    if value.len() < offset + patch.len() {
        value.resize(offset + patch.len(), 0);
    }
    value[offset..offset + patch.len()].copy_from_slice(patch);
    let len = value.len();
    let value = value.clone();
    match write_value(ctx, args[0], &value, ExpiryChange::Keep) {
        Ok(()) => ctx.reply.integer(len as i64),
        Err(e) => ctx.reply.error(&e),
    }
}

fn incr_by(ctx: &mut Context<'_, '_>, key: &[u8], by: i64) {
    let mut shard = ctx.server.shard();
    let result =
        ctx.moment(&mut shard).map_err(CommandError::from).and_then(|at| shard.keyspace_mut().incr_by(key, by, at));
    drop(shard);
    match result {
        Ok((value, _)) => ctx.reply.integer(value),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn incr(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    incr_by(ctx, args[0], 1);
}

fn decr(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    incr_by(ctx, args[0], -1);
}

fn incrby(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match parse_int(args[1]) {
        Ok(by) => incr_by(ctx, args[0], by),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn decrby(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match parse_int(args[1]) {
        Ok(by) if by != i64::MIN => incr_by(ctx, args[0], -by),
        Ok(_) => ctx.reply.error("ERR decrement would overflow"),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn incrbyfloat(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let by = match parse_float(args[1]) {
        Ok(by) => by,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let mut shard = ctx.server.shard();
    let result = ctx
        .moment(&mut shard)
        .map_err(CommandError::from)
        .and_then(|at| shard.keyspace_mut().incr_by_float(args[0], by, at));
    drop(shard);
    match result {
        Ok((value, _)) => ctx.reply.bulk(&value),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}
