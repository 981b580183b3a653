//! List commands, blocking pops included.
//!
//! Lists are RGA sequences (see `meridian_crdt::list`): LPUSH/RPUSH and
//! LPOP/RPOP are O(1) at either end, LINDEX and LRANGE walk from the end the
//! index counts from. The blocking commands (BLPOP, BRPOP, BLMOVE,
//! BRPOPLPUSH, BLMPOP) each have a *try* — the same code as their
//! non-blocking twin — that runs when the command arrives and again, in FIFO
//! order among the blocked clients, each time a write touches one of its keys
//! (see [`crate::blocking`]).

use bytes::Bytes;
use meridian_crdt::CommandError;
use meridian_crdt::keyspace::{End, Keyspace, Moment};
use meridian_crdt::list::RgaList;
use meridian_crdt::short_bytes::ShortBytes;
use meridian_replication::WallSnapshot;

use super::docs::{Arg, Doc, KEY, arg, doc, key};
use super::{CommandSpec, SYNTAX_ERROR, numkeys_at, parse_int};
use crate::blocking::{Attempt, NullReply, block_on, parse_timeout};
use crate::context::{Context, ServerState};
use crate::reply::Reply;

/// The list commands.
pub fn commands() -> Vec<CommandSpec> {
    const WF: &[&str] = &["write", "denyoom", "fast"];
    const W: &[&str] = &["write"];
    const WD: &[&str] = &["write", "denyoom"];
    const R: &[&str] = &["readonly"];
    const B: &[&str] = &["write", "noscript", "blocking"];
    const BD: &[&str] = &["write", "denyoom", "noscript", "blocking"];
    vec![
        CommandSpec::new("lpush", -3, WF, (1, 1, 1), lpush),
        CommandSpec::new("rpush", -3, WF, (1, 1, 1), rpush),
        CommandSpec::new("lpushx", -3, WF, (1, 1, 1), lpushx),
        CommandSpec::new("rpushx", -3, WF, (1, 1, 1), rpushx),
        CommandSpec::new("lpop", -2, &["write", "fast"], (1, 1, 1), lpop),
        CommandSpec::new("rpop", -2, &["write", "fast"], (1, 1, 1), rpop),
        CommandSpec::new("llen", 2, &["readonly", "fast"], (1, 1, 1), llen),
        CommandSpec::new("lrange", 4, R, (1, 1, 1), lrange),
        CommandSpec::new("lindex", 3, R, (1, 1, 1), lindex),
        CommandSpec::new("lset", 4, WD, (1, 1, 1), lset),
        CommandSpec::new("linsert", 5, WD, (1, 1, 1), linsert),
        CommandSpec::new("lrem", 4, W, (1, 1, 1), lrem),
        CommandSpec::new("ltrim", 4, W, (1, 1, 1), ltrim),
        CommandSpec::new("lpos", -3, R, (1, 1, 1), lpos),
        CommandSpec::new("lmove", 5, WD, (1, 2, 1), lmove),
        CommandSpec::new("rpoplpush", 3, WD, (1, 2, 1), rpoplpush),
        CommandSpec::new("lmpop", -4, &["write", "movablekeys"], (0, 0, 0), lmpop)
            .with_movable_keys(|args| numkeys_at(args, 1)),
        CommandSpec::new("blpop", -3, B, (1, -2, 1), blpop),
        CommandSpec::new("brpop", -3, B, (1, -2, 1), brpop),
        CommandSpec::new("blmove", 6, BD, (1, 2, 1), blmove),
        CommandSpec::new("brpoplpush", 4, BD, (1, 2, 1), brpoplpush),
        CommandSpec::new("blmpop", -5, &["write", "blocking", "movablekeys"], (0, 0, 0), blmpop)
            .with_movable_keys(|args| numkeys_at(args, 2)),
    ]
}

// ----- documentation -----

const KEY_ELEMENTS: &[Arg] = &[key(0), Arg { name: "element", kind: "string", key_spec: None, flags: &["multiple"] }];
const KEY_COUNT: &[Arg] = &[key(0), Arg { name: "count", kind: "integer", key_spec: None, flags: &["optional"] }];
const KEYS_TIMEOUT: &[Arg] =
    &[Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] }, arg("timeout", "double")];
const SOURCE_DESTINATION: &[Arg] = &[
    Arg { name: "source", kind: "key", key_spec: Some(0), flags: &[] },
    Arg { name: "destination", kind: "key", key_spec: Some(1), flags: &[] },
];
const MOVE: &[Arg] = &[
    Arg { name: "source", kind: "key", key_spec: Some(0), flags: &[] },
    Arg { name: "destination", kind: "key", key_spec: Some(1), flags: &[] },
    arg("wherefrom", "oneof"),
    arg("whereto", "oneof"),
];
const BLOCKING_MOVE: &[Arg] = &[
    Arg { name: "source", kind: "key", key_spec: Some(0), flags: &[] },
    Arg { name: "destination", kind: "key", key_spec: Some(1), flags: &[] },
    arg("wherefrom", "oneof"),
    arg("whereto", "oneof"),
    arg("timeout", "double"),
];
const MPOP: &[Arg] = &[
    arg("numkeys", "integer"),
    Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] },
    arg("where", "oneof"),
    Arg { name: "count", kind: "integer", key_spec: None, flags: &["optional"] },
];
const BLOCKING_MPOP: &[Arg] = &[
    arg("timeout", "double"),
    arg("numkeys", "integer"),
    Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] },
    arg("where", "oneof"),
    Arg { name: "count", kind: "integer", key_spec: None, flags: &["optional"] },
];
const KEY_INDEX: &[Arg] = &[key(0), arg("index", "integer")];
const KEY_START_STOP: &[Arg] = &[key(0), arg("start", "integer"), arg("stop", "integer")];
const BLOCKING_POP_COMPLEXITY: &str = "O(N) where N is the number of provided keys.";

/// COMMAND DOCS for the list commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[
    (
        "blmove",
        doc(
            "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise. Deletes the list if the last element was moved.",
            "6.2.0",
            "list",
            "O(1)",
            BLOCKING_MOVE,
        ),
    ),
    (
        "blmpop",
        doc(
            "Pops the first element from one of multiple lists. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
            "7.0.0",
            "list",
            "O(N+M) where N is the number of provided keys and M is the number of elements returned.",
            BLOCKING_MPOP,
        ),
    ),
    (
        "blpop",
        doc(
            "Removes and returns the first element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
            "2.0.0",
            "list",
            BLOCKING_POP_COMPLEXITY,
            KEYS_TIMEOUT,
        ),
    ),
    (
        "brpop",
        doc(
            "Removes and returns the last element in a list. Blocks until an element is available otherwise. Deletes the list if the last element was popped.",
            "2.0.0",
            "list",
            BLOCKING_POP_COMPLEXITY,
            KEYS_TIMEOUT,
        ),
    ),
    (
        "brpoplpush",
        doc(
            "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise. Deletes the list if the last element was popped.",
            "2.2.0",
            "list",
            "O(1)",
            &[
                Arg { name: "source", kind: "key", key_spec: Some(0), flags: &[] },
                Arg { name: "destination", kind: "key", key_spec: Some(1), flags: &[] },
                arg("timeout", "double"),
            ],
        ),
    ),
    (
        "lindex",
        doc(
            "Returns an element from a list by its index.",
            "1.0.0",
            "list",
            "O(N) where N is the number of elements to traverse to get to the element at index. This makes asking for the first or the last element of the list O(1).",
            KEY_INDEX,
        ),
    ),
    (
        "linsert",
        doc(
            "Inserts an element before or after another element in a list.",
            "2.2.0",
            "list",
            "O(N) where N is the number of elements to traverse before seeing the value pivot. This means that inserting somewhere on the left end on the list (head) can be considered O(1) and inserting somewhere on the right end (tail) is O(N).",
            &[key(0), arg("where", "oneof"), arg("pivot", "string"), arg("element", "string")],
        ),
    ),
    ("llen", doc("Returns the length of a list.", "1.0.0", "list", "O(1)", KEY)),
    (
        "lmove",
        doc(
            "Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.",
            "6.2.0",
            "list",
            "O(1)",
            MOVE,
        ),
    ),
    (
        "lmpop",
        doc(
            "Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
            "7.0.0",
            "list",
            "O(N+M) where N is the number of provided keys and M is the number of elements returned.",
            MPOP,
        ),
    ),
    (
        "lpop",
        doc(
            "Returns the first elements in a list after removing it. Deletes the list if the last element was popped.",
            "1.0.0",
            "list",
            "O(N) where N is the number of elements returned",
            KEY_COUNT,
        ),
    ),
    (
        "lpos",
        doc(
            "Returns the index of matching elements in a list.",
            "6.0.6",
            "list",
            "O(N) where N is the number of elements in the list, for the average case. When searching for elements near the head or the tail of the list, or when the MAXLEN option is provided, the command may run in constant time.",
            &[
                key(0),
                arg("element", "string"),
                Arg { name: "rank", kind: "integer", key_spec: None, flags: &["optional"] },
                Arg { name: "num-matches", kind: "integer", key_spec: None, flags: &["optional"] },
                Arg { name: "len", kind: "integer", key_spec: None, flags: &["optional"] },
            ],
        ),
    ),
    (
        "lpush",
        doc(
            "Prepends one or more elements to a list. Creates the key if it doesn't exist.",
            "1.0.0",
            "list",
            "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
            KEY_ELEMENTS,
        ),
    ),
    (
        "lpushx",
        doc(
            "Prepends one or more elements to a list only when the list exists.",
            "2.2.0",
            "list",
            "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
            KEY_ELEMENTS,
        ),
    ),
    (
        "lrange",
        doc(
            "Returns a range of elements from a list.",
            "1.0.0",
            "list",
            "O(S+N) where S is the distance of start offset from HEAD for small lists, from nearest end (HEAD or TAIL) for large lists; and N is the number of elements in the specified range.",
            KEY_START_STOP,
        ),
    ),
    (
        "lrem",
        doc(
            "Removes elements from a list. Deletes the list if the last element was removed.",
            "1.0.0",
            "list",
            "O(N+M) where N is the length of the list and M is the number of elements removed.",
            &[key(0), arg("count", "integer"), arg("element", "string")],
        ),
    ),
    (
        "lset",
        doc(
            "Sets the value of an element in a list by its index.",
            "1.0.0",
            "list",
            "O(N) where N is the length of the list. Setting either the first or the last element of the list is O(1).",
            &[key(0), arg("index", "integer"), arg("element", "string")],
        ),
    ),
    (
        "ltrim",
        doc(
            "Removes elements from both ends a list. Deletes the list if all elements were trimmed.",
            "1.0.0",
            "list",
            "O(N) where N is the number of elements to be removed by the operation.",
            KEY_START_STOP,
        ),
    ),
    (
        "rpop",
        doc(
            "Returns and removes the last elements of a list. Deletes the list if the last element was popped.",
            "1.0.0",
            "list",
            "O(N) where N is the number of elements returned",
            KEY_COUNT,
        ),
    ),
    (
        "rpoplpush",
        doc(
            "Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.",
            "1.2.0",
            "list",
            "O(1)",
            SOURCE_DESTINATION,
        ),
    ),
    (
        "rpush",
        doc(
            "Appends one or more elements to a list. Creates the key if it doesn't exist.",
            "1.0.0",
            "list",
            "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
            KEY_ELEMENTS,
        ),
    ),
    (
        "rpushx",
        doc(
            "Appends an element to a list only when the list exists.",
            "2.2.0",
            "list",
            "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments.",
            KEY_ELEMENTS,
        ),
    ),
];

// ----- helpers -----

/// Runs a write against the keyspace at a fresh HLC moment, with the wall
/// clock read through `wall` (the client's batch snapshot; a new one for
/// a blocked client served by another's write).
fn write<R>(
    server: &ServerState,
    wall: &WallSnapshot,
    f: impl FnOnce(&mut Keyspace, Moment) -> Result<R, CommandError>,
) -> Result<R, CommandError> {
    let mut shard = server.shard();
    let at = shard.moment_in(wall).map_err(CommandError::from)?;
    f(shard.keyspace_mut(), at)
}

/// Runs `f` over the list at `key` (`None` if absent): `WRONGTYPE` for
/// another type.
fn read<R>(server: &ServerState, key: &[u8], f: impl FnOnce(Option<&RgaList>) -> R) -> Result<R, CommandError> {
    let shard = server.shard();
    let now = shard.wall_ms();
    let list = shard.keyspace().list_value(key, now)?.filter(|list| !list.is_empty());
    Ok(f(list))
}

/// `LEFT` or `RIGHT`.
fn parse_end(arg: &[u8]) -> Option<End> {
    if arg.eq_ignore_ascii_case(b"left") {
        Some(End::Front)
    } else if arg.eq_ignore_ascii_case(b"right") {
        Some(End::Back)
    } else {
        None
    }
}

/// A count that must be positive (LPOP's, LMPOP's): Redis's error texts.
fn parse_count(arg: &[u8], error: &'static str) -> Result<usize, String> {
    match parse_int(arg) {
        Ok(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Ok(_) => Err(error.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn values_reply(reply: &mut Reply<'_>, values: &[ShortBytes]) {
    reply.array(values.len());
    for value in values {
        reply.bulk(value.as_slice());
    }
}

// ----- pushes -----

fn push(ctx: &mut Context<'_, '_>, args: &[&[u8]], end: End, only_existing: bool) {
    let values = &args[1..];
    let result = write(ctx.server, &ctx.client.wall, |keyspace, at| {
        if only_existing {
            let exists = keyspace.list_value(args[0], at.wall_ms)?.is_some_and(|list| !list.is_empty());
            if !exists {
                return Ok(0);
            }
        }
        keyspace.push(args[0], values, end, at).map(|(len, _)| len)
    });
    match result {
        Ok(len) => ctx.reply.integer(len as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn lpush(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    push(ctx, args, End::Front, false);
}

fn rpush(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    push(ctx, args, End::Back, false);
}

fn lpushx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    push(ctx, args, End::Front, true);
}

fn rpushx(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    push(ctx, args, End::Back, true);
}

// ----- pops -----

fn pop(ctx: &mut Context<'_, '_>, args: &[&[u8]], end: End) {
    let count = match args {
        [_] => None,
        [_, count] => match parse_count(count, "ERR value is out of range, must be positive") {
            Ok(count) => Some(count),
            Err(e) => return ctx.reply.error(&e),
        },
        _ => {
            let name = if end == End::Front { "lpop" } else { "rpop" };
            return ctx.reply.error(&format!("ERR wrong number of arguments for '{name}' command"));
        }
    };
    let result = write(ctx.server, &ctx.client.wall, |keyspace, at| {
        let exists = keyspace.list_value(args[0], at.wall_ms)?.is_some_and(|list| !list.is_empty());
        if !exists {
            return Ok(None);
        }
        let (values, _) = keyspace.pop(args[0], end, count.unwrap_or(1), at)?;
        Ok(Some(values))
    });
    match (result, count) {
        (Err(e), _) => ctx.reply.error(&e.to_string()),
        (Ok(None), None) => ctx.reply.null(),
        (Ok(None), Some(_)) => ctx.reply.null_array(),
        (Ok(Some(values)), None) => ctx.reply.bulk_or_null(values.first().map(ShortBytes::as_slice)),
        (Ok(Some(values)), Some(_)) => values_reply(&mut ctx.reply, &values),
    }
}

fn lpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    pop(ctx, args, End::Front);
}

fn rpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    pop(ctx, args, End::Back);
}

// ----- reads -----

fn llen(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match read(ctx.server, args[0], |list| list.map_or(0, RgaList::len)) {
        Ok(len) => ctx.reply.integer(len as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn lrange(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (start, stop) = match (parse_int(args[1]), parse_int(args[2])) {
        (Ok(start), Ok(stop)) => (start, stop),
        _ => return ctx.reply.error(&CommandError::NotInteger.to_string()),
    };
    let reply = &mut ctx.reply;
    let result = read(ctx.server, args[0], |list| {
        let values: Vec<&ShortBytes> = list.map(|list| list.range(start, stop).collect()).unwrap_or_default();
        reply.array(values.len());
        for value in values {
            reply.bulk(value.as_slice());
        }
    });
    if let Err(e) = result {
        ctx.reply.error(&e.to_string());
    }
}

fn lindex(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let index = match parse_int(args[1]) {
        Ok(index) => index,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    let reply = &mut ctx.reply;
    let result = read(ctx.server, args[0], |list| {
        reply.bulk_or_null(list.and_then(|list| list.get(index)).map(ShortBytes::as_slice));
    });
    if let Err(e) = result {
        ctx.reply.error(&e.to_string());
    }
}

/// LPOS's options.
struct PosOptions {
    rank: i64,
    count: Option<usize>,
    maxlen: usize,
}

fn parse_lpos_options(args: &[&[u8]]) -> Result<PosOptions, String> {
    let mut options = PosOptions { rank: 1, count: None, maxlen: 0 };
    let mut i = 0;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return Err(SYNTAX_ERROR.to_string());
        };
        let name = args[i].to_ascii_uppercase();
        let number = parse_int(value).map_err(|e| e.to_string())?;
        match name.as_slice() {
            b"RANK" => {
                if number == 0 {
                    return Err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list".to_string());
                }
                if number == i64::MIN {
                    return Err(
                        "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"
                            .to_string(),
                    );
                }
                options.rank = number;
            }
            b"COUNT" if number < 0 => return Err("ERR COUNT can't be negative".to_string()),
            b"COUNT" => options.count = Some(number as usize),
            b"MAXLEN" if number < 0 => return Err("ERR MAXLEN can't be negative".to_string()),
            b"MAXLEN" => options.maxlen = number as usize,
            _ => return Err(SYNTAX_ERROR.to_string()),
        }
        i += 2;
    }
    Ok(options)
}

/// The head-based indexes of the matches LPOS asks for.
fn positions(list: &RgaList, element: &[u8], options: &PosOptions) -> Vec<usize> {
    let len = list.len();
    let wanted = match options.count {
        Some(0) => usize::MAX,
        Some(n) => n,
        None => 1,
    };
    let mut skip = options.rank.unsigned_abs() - 1;
    let scanned = if options.maxlen == 0 { len } else { options.maxlen.min(len) };
    let mut found = Vec::new();
    let mut visit = |index: usize, value: &ShortBytes| {
        if value.as_slice() == element {
            if skip > 0 {
                skip -= 1;
            } else {
                found.push(index);
            }
        }
        found.len() < wanted
    };
    if options.rank > 0 {
        for (index, value) in list.iter().enumerate().take(scanned) {
            if !visit(index, value) {
                break;
            }
        }
    } else {
        for (offset, value) in list.iter().rev().enumerate().take(scanned) {
            if !visit(len - 1 - offset, value) {
                break;
            }
        }
    }
    found
}

fn lpos(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let options = match parse_lpos_options(&args[2..]) {
        Ok(options) => options,
        Err(e) => return ctx.reply.error(&e),
    };
    let reply = &mut ctx.reply;
    let result = read(ctx.server, args[0], |list| {
        let found = list.map(|list| positions(list, args[1], &options)).unwrap_or_default();
        if options.count.is_some() {
            reply.array(found.len());
            for index in found {
                reply.integer(index as i64);
            }
        } else {
            match found.first() {
                Some(&index) => reply.integer(index as i64),
                None => reply.null(),
            }
        }
    });
    if let Err(e) = result {
        ctx.reply.error(&e.to_string());
    }
}

// ----- updates -----

fn lset(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let index = match parse_int(args[1]) {
        Ok(index) => index,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    match write(ctx.server, &ctx.client.wall, |keyspace, at| keyspace.list_set(args[0], index, args[2], at)) {
        Ok(_) => ctx.reply.ok(),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn linsert(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let before = if args[1].eq_ignore_ascii_case(b"before") {
        true
    } else if args[1].eq_ignore_ascii_case(b"after") {
        false
    } else {
        return ctx.reply.error(SYNTAX_ERROR);
    };
    match write(ctx.server, &ctx.client.wall, |keyspace, at| {
        keyspace.list_insert(args[0], before, args[2], args[3], at)
    }) {
        Ok((len, _)) => ctx.reply.integer(len),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn lrem(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let count = match parse_int(args[1]) {
        Ok(count) => count,
        Err(e) => return ctx.reply.error(&e.to_string()),
    };
    match write(ctx.server, &ctx.client.wall, |keyspace, at| keyspace.list_remove(args[0], count, args[2], at)) {
        Ok((removed, _)) => ctx.reply.integer(removed as i64),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn ltrim(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (start, stop) = match (parse_int(args[1]), parse_int(args[2])) {
        (Ok(start), Ok(stop)) => (start, stop),
        _ => return ctx.reply.error(&CommandError::NotInteger.to_string()),
    };
    match write(ctx.server, &ctx.client.wall, |keyspace, at| keyspace.list_trim(args[0], start, stop, at)) {
        Ok(_) => ctx.reply.ok(),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

// ----- moves -----

/// What one LMOVE try found.
enum Moved {
    /// The source is empty or absent.
    Empty,
    /// The element moved.
    Value(ShortBytes),
}

/// LMOVE's core: pops one element from `source` at `from` and pushes it to
/// `destination` at `to`, in one keyspace critical section. A source of the
/// wrong type, or (with a source to pop) a destination of the wrong type, is
/// `WRONGTYPE`, checked before anything changes.
fn move_one(
    server: &ServerState,
    source: &[u8],
    destination: &[u8],
    from: End,
    to: End,
) -> Result<Moved, CommandError> {
    write(server, &WallSnapshot::default(), |keyspace, at| {
        if keyspace.list_value(source, at.wall_ms)?.is_none_or(|list| list.is_empty()) {
            return Ok(Moved::Empty);
        }
        keyspace.list_value(destination, at.wall_ms)?;
        let (values, _) = keyspace.pop(source, from, 1, at)?;
        let Some(value) = values.into_iter().next() else {
            return Ok(Moved::Empty);
        };
        keyspace.push(destination, &[value.as_slice()], to, at)?;
        Ok(Moved::Value(value))
    })
}

fn lmove_with(ctx: &mut Context<'_, '_>, source: &[u8], destination: &[u8], from: End, to: End) {
    match move_one(ctx.server, source, destination, from, to) {
        Ok(Moved::Empty) => ctx.reply.null(),
        Ok(Moved::Value(value)) => ctx.reply.bulk(value.as_slice()),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

fn lmove(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (Some(from), Some(to)) = (parse_end(args[2]), parse_end(args[3])) else {
        return ctx.reply.error(SYNTAX_ERROR);
    };
    lmove_with(ctx, args[0], args[1], from, to);
}

fn rpoplpush(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    lmove_with(ctx, args[0], args[1], End::Back, End::Front);
}

// ----- LMPOP -----

/// LMPOP's arguments after `numkeys`'s position.
struct MultiPop {
    keys: std::ops::Range<usize>,
    end: End,
    count: usize,
}

/// Parses `numkeys key ... LEFT|RIGHT [COUNT n]` starting at `args[0]`.
fn parse_mpop(args: &[&[u8]]) -> Result<MultiPop, String> {
    let numkeys = match parse_int(args[0]) {
        Ok(n) if n > 0 => n as u64,
        _ => return Err("ERR numkeys should be greater than 0".to_string()),
    };
    let where_at = numkeys.checked_add(1).filter(|&w| w < args.len() as u64).ok_or(SYNTAX_ERROR)? as usize;
    let end = parse_end(args[where_at]).ok_or(SYNTAX_ERROR)?;
    let mut count = None;
    let mut i = where_at + 1;
    while i < args.len() {
        match args.get(i + 1) {
            Some(value) if count.is_none() && args[i].eq_ignore_ascii_case(b"count") => {
                count = Some(match parse_int(value) {
                    Ok(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                    _ => return Err("ERR count should be greater than 0".to_string()),
                });
                i += 2;
            }
            _ => return Err(SYNTAX_ERROR.to_string()),
        }
    }
    Ok(MultiPop { keys: 1..where_at, end, count: count.unwrap_or(1) })
}

/// LMPOP's core: pops up to `count` from the first non-empty list of
/// `keys`; `first` decides whether a key of the wrong type is an error (the
/// command's own try) or passed over (a blocked client being served).
fn mpop_try(
    server: &ServerState,
    keys: &[&[u8]],
    end: End,
    count: usize,
    reply: &mut Reply<'_>,
    first: bool,
) -> Attempt {
    let result = write(server, &WallSnapshot::default(), |keyspace, at| {
        for key in keys {
            match keyspace.list_value(key, at.wall_ms) {
                Ok(Some(list)) if !list.is_empty() => {
                    let (values, _) = keyspace.pop(key, end, count, at)?;
                    return Ok(Some((key, values)));
                }
                Ok(_) => {}
                Err(e) if first => return Err(e),
                Err(_) => {}
            }
        }
        Ok(None)
    });
    match result {
        Ok(Some((key, values))) => {
            reply.array(2);
            reply.bulk(key);
            values_reply(reply, &values);
            Attempt::Served { pushed: None }
        }
        Ok(None) => Attempt::Waiting,
        Err(e) => {
            reply.error(&e.to_string());
            Attempt::Served { pushed: None }
        }
    }
}

fn lmpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let parsed = match parse_mpop(args) {
        Ok(parsed) => parsed,
        Err(e) => return ctx.reply.error(&e),
    };
    if mpop_try(ctx.server, &args[parsed.keys.clone()], parsed.end, parsed.count, &mut ctx.reply, true)
        == Attempt::Waiting
    {
        ctx.reply.null_array();
    }
}

// ----- blocking commands -----

/// BLPOP/BRPOP's try: `[key, value]` from the first non-empty key.
fn bpop_try(server: &ServerState, args: &[&[u8]], end: End, reply: &mut Reply<'_>, first: bool) -> Attempt {
    let keys = &args[..args.len() - 1];
    let result = write(server, &WallSnapshot::default(), |keyspace, at| {
        for key in keys {
            match keyspace.list_value(key, at.wall_ms) {
                Ok(Some(list)) if !list.is_empty() => {
                    let (values, _) = keyspace.pop(key, end, 1, at)?;
                    return Ok(values.into_iter().next().map(|value| (key, value)));
                }
                Ok(_) => {}
                Err(e) if first => return Err(e),
                Err(_) => {}
            }
        }
        Ok(None)
    });
    match result {
        Ok(Some((key, value))) => {
            reply.array(2);
            reply.bulk(key);
            reply.bulk(value.as_slice());
            Attempt::Served { pushed: None }
        }
        Ok(None) => Attempt::Waiting,
        Err(e) => {
            reply.error(&e.to_string());
            Attempt::Served { pushed: None }
        }
    }
}

fn blpop_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    bpop_try(server, args, End::Front, reply, first)
}

fn brpop_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    bpop_try(server, args, End::Back, reply, first)
}

fn blocking_pop(ctx: &mut Context<'_, '_>, args: &[&[u8]], try_serve: crate::blocking::TryServe) {
    let timeout = match parse_timeout(args[args.len() - 1]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    let keys = &args[..args.len() - 1];
    block_on(ctx, args, keys, timeout, try_serve, NullReply::Array);
}

fn blpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    blocking_pop(ctx, args, blpop_try);
}

fn brpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    blocking_pop(ctx, args, brpop_try);
}

/// BLMOVE's try (its arguments: source destination wherefrom whereto
/// timeout; the ends were checked when it arrived).
fn blmove_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    let (Some(from), Some(to)) = (parse_end(args[2]), parse_end(args[3])) else {
        reply.error(SYNTAX_ERROR);
        return Attempt::Served { pushed: None };
    };
    move_try(server, args[0], args[1], from, to, reply, first)
}

/// BRPOPLPUSH's try (source destination timeout).
fn brpoplpush_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    move_try(server, args[0], args[1], End::Back, End::Front, reply, first)
}

fn move_try(
    server: &ServerState,
    source: &[u8],
    destination: &[u8],
    from: End,
    to: End,
    reply: &mut Reply<'_>,
    first: bool,
) -> Attempt {
    match move_one(server, source, destination, from, to) {
        Ok(Moved::Value(value)) => {
            reply.bulk(value.as_slice());
            Attempt::Served { pushed: Some(Bytes::copy_from_slice(destination)) }
        }
        Ok(Moved::Empty) => Attempt::Waiting,
        // A source of another type keeps a woken client waiting, as Redis.
        Err(CommandError::WrongType) if !first && !source_is_list(server, source) => Attempt::Waiting,
        Err(e) => {
            reply.error(&e.to_string());
            Attempt::Served { pushed: None }
        }
    }
}

fn source_is_list(server: &ServerState, source: &[u8]) -> bool {
    read(server, source, |_| ()).is_ok()
}

fn blmove(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    if parse_end(args[2]).is_none() || parse_end(args[3]).is_none() {
        return ctx.reply.error(SYNTAX_ERROR);
    }
    let timeout = match parse_timeout(args[4]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    block_on(ctx, args, &args[..1], timeout, blmove_try, NullReply::Bulk);
}

fn brpoplpush(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let timeout = match parse_timeout(args[2]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    block_on(ctx, args, &args[..1], timeout, brpoplpush_try, NullReply::Bulk);
}

/// BLMPOP's try (timeout numkeys key ... LEFT|RIGHT [COUNT n]; checked when
/// it arrived).
fn blmpop_try(server: &ServerState, args: &[&[u8]], reply: &mut Reply<'_>, first: bool) -> Attempt {
    match parse_mpop(&args[1..]) {
        Ok(parsed) => {
            let keys = &args[1..][parsed.keys];
            mpop_try(server, keys, parsed.end, parsed.count, reply, first)
        }
        Err(e) => {
            reply.error(&e);
            Attempt::Served { pushed: None }
        }
    }
}

fn blmpop(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let timeout = match parse_timeout(args[0]) {
        Ok(timeout) => timeout,
        Err(e) => return ctx.reply.error(e),
    };
    let parsed = match parse_mpop(&args[1..]) {
        Ok(parsed) => parsed,
        Err(e) => return ctx.reply.error(&e),
    };
    let keys = args[1..][parsed.keys].to_vec();
    block_on(ctx, args, &keys, timeout, blmpop_try, NullReply::Array);
}
