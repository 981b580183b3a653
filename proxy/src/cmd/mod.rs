//! The command table: every command the node answers, with Redis's arity,
//! flags and key positions (what COMMAND reports), and the function that runs
//! it. One module per command family, like mini-redis's `cmd/`.

pub mod connection;
pub mod docs;
pub mod hashes;
pub mod keys;
pub mod lists;
pub mod pubsub;
pub mod random;
pub mod scan;
pub mod server;
pub mod sets;
pub mod strings;
pub mod transactions;
pub mod zsets;

use bytes::Bytes;
use meridian_crdt::CommandError;
use smallvec::SmallVec;

use crate::context::Context;

/// How a command runs: it reads its arguments (the name excluded) and writes
/// exactly one reply.
pub type Handler = fn(&mut Context<'_, '_>, &[&[u8]]);

/// One command's description.
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count including the name,
    /// negative = at least that many.
    pub arity: i32,
    /// Flags COMMAND reports (`write`, `readonly`, `fast`, ...).
    pub flags: &'static [&'static str],
    /// `flags` holds `write` (asked of every command: found once, here).
    pub write: bool,
    /// Position of the first key (0 = none).
    pub first_key: i32,
    /// Position of the last key (-1 = the last argument).
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
    /// The implementation.
    pub run: Handler,
    /// For a command whose keys move with its arguments (`movablekeys`:
    /// LMPOP's `numkeys`...), where its keys are.
    pub movable_keys: Option<KeysFn>,
}

/// Where a `movablekeys` command's keys are, given all its arguments (the
/// name included): the positions of its keys, as a range; empty if the
/// arguments are malformed (the command itself then reports the error).
pub type KeysFn = fn(&[&[u8]]) -> std::ops::Range<usize>;

/// Keys named by a `numkeys` argument at position `at`: `numkeys key ...`.
pub fn numkeys_at(args: &[&[u8]], at: usize) -> std::ops::Range<usize> {
    match args.get(at).and_then(|n| parse_int(n).ok()) {
        Some(n) if n > 0 && (n as u64) < args.len() as u64 => {
            let first = at + 1;
            first..(first + n as usize).min(args.len())
        }
        _ => 0..0,
    }
}

impl CommandSpec {
    /// A command whose keys are at positions `keys` = (first, last, step)
    /// (`(0, 0, 0)` for none).
    pub const fn new(
        name: &'static str,
        arity: i32,
        flags: &'static [&'static str],
        keys: (i32, i32, i32),
        run: Handler,
    ) -> CommandSpec {
        CommandSpec {
            name,
            arity,
            flags,
            write: has_flag(flags, "write"),
            first_key: keys.0,
            last_key: keys.1,
            step: keys.2,
            run,
            movable_keys: None,
        }
    }

    /// The same command, its keys found by `keys` (add `movablekeys` to its
    /// flags).
    pub const fn with_movable_keys(mut self, keys: KeysFn) -> CommandSpec {
        self.movable_keys = Some(keys);
        self
    }
}

/// True if `flags` holds `flag` (in a `const fn`, where `==` on strings is
/// not available).
const fn has_flag(flags: &[&str], flag: &str) -> bool {
    let mut i = 0;
    while i < flags.len() {
        let (a, b) = (flags[i].as_bytes(), flag.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Every command, sorted by name (looked up by binary search).
pub fn table() -> &'static [CommandSpec] {
    static TABLE: std::sync::OnceLock<Vec<CommandSpec>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut all: Vec<CommandSpec> = Vec::new();
        all.extend(strings::commands());
        all.extend(keys::commands());
        all.extend(connection::commands());
        all.extend(server::commands());
        all.extend(transactions::commands());
        all.extend(hashes::commands());
        all.extend(sets::commands());
        all.extend(zsets::commands());
        all.extend(lists::commands());
        all.extend(pubsub::commands());
        all.sort_by(|a, b| a.name.cmp(b.name));
        for pair in all.windows(2) {
            assert_ne!(pair[0].name, pair[1].name, "command registered twice");
        }
        all
    })
}

/// Looks a command up by name, case-insensitively, without allocating.
///
/// Measured (callgrind): a binary search over the whole table cost ~450
/// instructions per command; the table is bucketed instead by first letter
/// and length, so a lookup compares against one or two names.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let bucket = bucket_of(name)?;
    index()[bucket].iter().copied().find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Longest command name the lookup index distinguishes by length.
const NAME_LEN_MAX: usize = 32;

/// The index bucket of a name: its first letter (a–z) and its length.
fn bucket_of(name: &[u8]) -> Option<usize> {
    let first = name.first()?.to_ascii_lowercase();
    if !first.is_ascii_lowercase() || name.len() > NAME_LEN_MAX {
        return None;
    }
    Some(usize::from(first - b'a') * (NAME_LEN_MAX + 1) + name.len())
}

/// The command table bucketed by [`bucket_of`].
fn index() -> &'static [Vec<&'static CommandSpec>] {
    static INDEX: std::sync::OnceLock<Vec<Vec<&'static CommandSpec>>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = vec![Vec::new(); 26 * (NAME_LEN_MAX + 1)];
        for spec in table() {
            let bucket = bucket_of(spec.name.as_bytes()).expect("command names are short and start with a letter");
            index[bucket].push(spec);
        }
        index
    })
}

/// The keys a command names, from its spec's key positions over `args`
/// (the name included, at position 0).
pub fn command_keys<'a>(spec: &CommandSpec, args: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let movable = spec.movable_keys.map(|keys| &args[keys(args)]).unwrap_or_default();
    let len = args.len() as i64;
    let first = i64::from(spec.first_key);
    let last = if spec.last_key < 0 { len + i64::from(spec.last_key) } else { i64::from(spec.last_key) };
    let step = i64::from(spec.step);
    let (first, last, step) = if first <= 0 || step <= 0 { (1, 0, 1) } else { (first, last.min(len - 1), step) };
    movable.iter().chain((first..=last).step_by(step as usize).filter_map(move |i| args.get(i as usize))).copied()
}

/// True if `argc` (including the name) fits the arity.
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = spec.arity as i64;
    if arity >= 0 { argc == arity } else { argc >= -arity }
}

/// Parses a Redis integer argument.
pub fn parse_int(arg: &[u8]) -> Result<i64, CommandError> {
    meridian_crdt::number::parse_i64(arg).ok_or(CommandError::NotInteger)
}

/// Parses a Redis float argument.
pub fn parse_float(arg: &[u8]) -> Result<f64, CommandError> {
    meridian_crdt::number::parse_f64(arg).ok_or(CommandError::NotFloat)
}

/// The standard syntax error.
pub const SYNTAX_ERROR: &str = "ERR syntax error";

/// Arguments a command handler keeps inline when it gathers them into a list
/// (members, fields, values): the usual command names a few, and a heap
/// allocation per command costs about as much as the write itself.
pub(crate) const ARGS_INLINE: usize = 8;

/// Owned arguments (a queued transaction, a blocked client, the router's
/// parsed commands) as the slices a handler takes.
pub(crate) fn as_slices(args: &[Bytes]) -> SmallVec<[&[u8]; ARGS_INLINE]> {
    args.iter().map(|arg| &arg[..]).collect()
}

/// Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges
/// and `^` negation, `\` escapes. Iterative, with one backtrack point per
/// star, so hostile patterns cost O(pattern · string).
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    let (mut p, mut s) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while s < string.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, s));
                    continue;
                }
                b'?' => {
                    p += 1;
                    s += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, string[s], nocase)
                        && matched
                    {
                        p = next;
                        s += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if eq(pattern[p + 1], string[s]) {
                        p += 2;
                        s += 1;
                        continue;
                    }
                }
                c => {
                    if eq(c, string[s]) {
                        p += 1;
                        s += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((star_p, star_s)) => {
                p = star_p;
                s = star_s + 1;
                star = Some((star_p, star_s + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == '['`; returns
/// (matched, index after the class).
fn class_match(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= fold(pattern[i + 1]) == fold(c);
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (mut lo, mut hi) = (fold(pattern[i]), fold(pattern[i + 2]));
            if lo > hi {
                core::mem::swap(&mut lo, &mut hi);
            }
            matched |= (lo..=hi).contains(&fold(c));
            i += 3;
        } else {
            matched |= fold(pattern[i]) == fold(c);
            i += 1;
        }
    }
    // An unterminated class matches up to the end of the pattern, as in Redis.
    let next = if i < pattern.len() { i + 1 } else { i };
    Some((matched != negate, next))
}

/// A fresh random generator for commands that pick at random (SPOP,
/// SRANDMEMBER, HRANDFIELD, ZRANDMEMBER): seeded from the time and a
/// process-wide counter, so two calls in one nanosecond still differ.
pub fn rng() -> rand::rngs::SmallRng {
    use rand::SeedableRng;
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    rand::rngs::SmallRng::seed_from_u64(nanos ^ calls.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_found_case_insensitively() {
        assert!(lookup(b"GET").is_some());
        assert!(lookup(b"gEt").is_some());
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(&[b'a'; 100]).is_none());
    }

    #[test]
    fn the_write_mark_matches_the_flags() {
        for spec in table() {
            assert_eq!(spec.write, spec.flags.contains(&"write"), "{}", spec.name);
        }
        assert!(lookup(b"hset").is_some_and(|s| s.write) && !lookup(b"hget").is_some_and(|s| s.write));
        assert!(has_flag(&["fast", "write"], "write") && !has_flag(&["writes", "rite"], "write"));
    }

    #[test]
    fn command_keys_follow_numkeys_for_movable_commands() {
        let keys = |args: &[&str]| -> Vec<String> {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let spec = lookup(args[0]).expect("a command");
            command_keys(spec, &args).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
        };
        assert_eq!(keys(&["zmpop", "2", "a", "b", "MIN"]), ["a", "b"]);
        assert_eq!(keys(&["lmpop", "1", "a", "LEFT"]), ["a"]);
        assert_eq!(keys(&["blmpop", "0", "2", "a", "b", "LEFT"]), ["a", "b"]);
        assert_eq!(keys(&["zmpop", "99", "a", "MIN"]), Vec::<String>::new(), "numkeys beyond the arguments");
        assert_eq!(keys(&["zmpop", "x", "a", "MIN"]), Vec::<String>::new());
        assert_eq!(keys(&["zunionstore", "d", "2", "a", "b"]), ["a", "b", "d"]);
        assert_eq!(keys(&["zinter", "2", "a", "b", "WITHSCORES"]), ["a", "b"]);
        assert_eq!(keys(&["sintercard", "2", "a", "b", "LIMIT", "1"]), ["a", "b"]);
        assert_eq!(keys(&["mset", "a", "1", "b", "2"]), ["a", "b"]);
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob_match(b"*", b"anything", false));
        assert!(glob_match(b"h?llo", b"hello", false));
        assert!(glob_match(b"h*llo", b"heeeello", false));
        assert!(glob_match(b"h[ae]llo", b"hallo", false));
        assert!(!glob_match(b"h[^e]llo", b"hello", false));
        assert!(glob_match(b"h[a-b]llo", b"hbllo", false));
        assert!(glob_match(b"key:\\*", b"key:*", false));
        assert!(!glob_match(b"key:\\*", b"key:x", false));
        assert!(glob_match(b"HELLO", b"hello", true));
        assert!(!glob_match(b"a*b", b"aaac", false));
        // Pathological pattern stays fast.
        let long = vec![b'a'; 10_000];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*b", &long, false));
    }
}
