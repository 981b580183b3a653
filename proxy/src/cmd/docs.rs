//! COMMAND DOCS: each command's documentation as Redis 7.2 reports it
//! (summary, version introduced, group, complexity, arguments), keyed by
//! command name. Container commands' `subcommands` maps are not reported.

/// One argument of a command, as COMMAND DOCS describes it.
pub struct Arg {
    /// The argument's name (also its `display_text`).
    pub name: &'static str,
    /// Redis's argument type: `key`, `string`, `integer`, `double`,
    /// `pattern`, ...
    pub kind: &'static str,
    /// For a `key` argument, the index of its key specification.
    pub key_spec: Option<u8>,
    /// `optional`, `multiple` (empty when neither).
    pub flags: &'static [&'static str],
}

/// One command's documentation.
pub struct Doc {
    /// One-line summary.
    pub summary: &'static str,
    /// The Redis version that introduced the command.
    pub since: &'static str,
    /// The command group (`string`, `generic`, `connection`, ...).
    pub group: &'static str,
    /// Time complexity.
    pub complexity: &'static str,
    /// The arguments (empty: none, or not described).
    pub arguments: &'static [Arg],
}

/// A plain key argument with key specification `index`.
pub const fn key(index: u8) -> Arg {
    Arg { name: "key", kind: "key", key_spec: Some(index), flags: &[] }
}

/// A plain required argument.
pub const fn arg(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, key_spec: None, flags: &[] }
}

/// One key.
pub const KEY: &[Arg] = &[key(0)];
/// One or more keys.
pub const KEYS: &[Arg] = &[Arg { name: "key", kind: "key", key_spec: Some(0), flags: &["multiple"] }];
const KEY_VALUE: &[Arg] = &[key(0), arg("value", "string")];
const RENAME: &[Arg] = &[key(0), Arg { name: "newkey", kind: "key", key_spec: Some(1), flags: &[] }];

/// One command's documentation.
pub const fn doc(
    summary: &'static str,
    since: &'static str,
    group: &'static str,
    complexity: &'static str,
    arguments: &'static [Arg],
) -> Doc {
    Doc { summary, since, group, complexity, arguments }
}

/// The commonest complexity.
pub const O1: &str = "O(1)";
const BY_SUBCOMMAND: &str = "Depends on subcommand.";

/// Every command's documentation, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[
    (
        "append",
        doc(
            "Appends a string to the value of a key. Creates the key if it doesn't exist.",
            "2.0.0",
            "string",
            "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation.",
            KEY_VALUE,
        ),
    ),
    (
        "auth",
        doc(
            "Authenticates the connection.",
            "1.0.0",
            "connection",
            "O(N) where N is the number of passwords defined for the user",
            &[
                Arg { name: "username", kind: "string", key_spec: None, flags: &["optional"] },
                arg("password", "string"),
            ],
        ),
    ),
    ("client", doc("A container for client connection commands.", "2.4.0", "connection", BY_SUBCOMMAND, &[])),
    (
        "command",
        doc(
            "Returns detailed information about all commands.",
            "2.8.13",
            "server",
            "O(N) where N is the total number of Redis commands",
            &[],
        ),
    ),
    ("config", doc("A container for server configuration commands.", "2.0.0", "server", BY_SUBCOMMAND, &[])),
    (
        "copy",
        doc(
            "Copies the value of a key to a new key.",
            "6.2.0",
            "generic",
            "O(N) worst case for collections, where N is the number of nested items. O(1) for string values.",
            &[],
        ),
    ),
    ("dbsize", doc("Returns the number of keys in the database.", "1.0.0", "server", O1, &[])),
    ("debug", doc("A container for debugging commands.", "1.0.0", "server", BY_SUBCOMMAND, &[])),
    (
        "decr",
        doc(
            "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
            "1.0.0",
            "string",
            O1,
            KEY,
        ),
    ),
    (
        "decrby",
        doc(
            "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
            "1.0.0",
            "string",
            O1,
            &[key(0), arg("decrement", "integer")],
        ),
    ),
    (
        "del",
        doc(
            "Deletes one or more keys.",
            "1.0.0",
            "generic",
            "O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1).",
            KEYS,
        ),
    ),
    (
        "discard",
        doc("Discards a transaction.", "2.0.0", "transactions", "O(N), when N is the number of queued commands", &[]),
    ),
    ("echo", doc("Returns the given string.", "1.0.0", "connection", O1, &[arg("message", "string")])),
    (
        "exec",
        doc(
            "Executes all commands in a transaction.",
            "1.2.0",
            "transactions",
            "Depends on commands in the transaction",
            &[],
        ),
    ),
    (
        "exists",
        doc(
            "Determines whether one or more keys exist.",
            "1.0.0",
            "generic",
            "O(N) where N is the number of keys to check.",
            KEYS,
        ),
    ),
    (
        "expire",
        doc(
            "Sets the expiration time of a key in seconds.",
            "1.0.0",
            "generic",
            O1,
            &[key(0), arg("seconds", "integer")],
        ),
    ),
    (
        "expireat",
        doc(
            "Sets the expiration time of a key to a Unix timestamp.",
            "1.2.0",
            "generic",
            O1,
            &[key(0), arg("unix-time-seconds", "unix-time")],
        ),
    ),
    ("expiretime", doc("Returns the expiration time of a key as a Unix timestamp.", "7.0.0", "generic", O1, KEY)),
    (
        "flushall",
        doc(
            "Removes all keys from all databases.",
            "1.0.0",
            "server",
            "O(N) where N is the total number of keys in all databases",
            &[],
        ),
    ),
    (
        "flushdb",
        doc(
            "Remove all keys from the current database.",
            "1.0.0",
            "server",
            "O(N) where N is the number of keys in the selected database",
            &[],
        ),
    ),
    ("function", doc("A container for function commands.", "7.0.0", "scripting", BY_SUBCOMMAND, &[])),
    ("get", doc("Returns the string value of a key.", "1.0.0", "string", O1, KEY)),
    ("getdel", doc("Returns the string value of a key after deleting the key.", "6.2.0", "string", O1, KEY)),
    ("getex", doc("Returns the string value of a key after setting its expiration time.", "6.2.0", "string", O1, &[])),
    (
        "getrange",
        doc(
            "Returns a substring of the string stored at a key.",
            "2.4.0",
            "string",
            "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings.",
            &[key(0), arg("start", "integer"), arg("end", "integer")],
        ),
    ),
    (
        "getset",
        doc(
            "Returns the previous string value of a key after setting it to a new value.",
            "1.0.0",
            "string",
            O1,
            KEY_VALUE,
        ),
    ),
    ("hello", doc("Handshakes with the Redis server.", "6.0.0", "connection", O1, &[])),
    (
        "incr",
        doc(
            "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
            "1.0.0",
            "string",
            O1,
            KEY,
        ),
    ),
    (
        "incrby",
        doc(
            "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
            "1.0.0",
            "string",
            O1,
            &[key(0), arg("increment", "integer")],
        ),
    ),
    (
        "incrbyfloat",
        doc(
            "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
            "2.6.0",
            "string",
            O1,
            &[key(0), arg("increment", "double")],
        ),
    ),
    ("info", doc("Returns information and statistics about the server.", "1.0.0", "server", O1, &[])),
    (
        "keys",
        doc(
            "Returns all key names that match a pattern.",
            "1.0.0",
            "generic",
            "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length.",
            &[arg("pattern", "pattern")],
        ),
    ),
    ("lastsave", doc("Returns the Unix timestamp of the last successful save to disk.", "1.0.0", "server", O1, &[])),
    (
        "mget",
        doc(
            "Atomically returns the string values of one or more keys.",
            "1.0.0",
            "string",
            "O(N) where N is the number of keys to retrieve.",
            KEYS,
        ),
    ),
    (
        "mset",
        doc(
            "Atomically creates or modifies the string values of one or more keys.",
            "1.0.1",
            "string",
            "O(N) where N is the number of keys to set.",
            &[],
        ),
    ),
    (
        "msetnx",
        doc(
            "Atomically modifies the string values of one or more keys only when all keys don't exist.",
            "1.0.1",
            "string",
            "O(N) where N is the number of keys to set.",
            &[],
        ),
    ),
    ("multi", doc("Starts a transaction.", "1.2.0", "transactions", O1, &[])),
    ("persist", doc("Removes the expiration time of a key.", "2.2.0", "generic", O1, KEY)),
    (
        "pexpire",
        doc(
            "Sets the expiration time of a key in milliseconds.",
            "2.6.0",
            "generic",
            O1,
            &[key(0), arg("milliseconds", "integer")],
        ),
    ),
    (
        "pexpireat",
        doc(
            "Sets the expiration time of a key to a Unix milliseconds timestamp.",
            "2.6.0",
            "generic",
            O1,
            &[key(0), arg("unix-time-milliseconds", "unix-time")],
        ),
    ),
    (
        "pexpiretime",
        doc("Returns the expiration time of a key as a Unix milliseconds timestamp.", "7.0.0", "generic", O1, KEY),
    ),
    (
        "ping",
        doc(
            "Returns the server's liveliness response.",
            "1.0.0",
            "connection",
            O1,
            &[Arg { name: "message", kind: "string", key_spec: None, flags: &["optional"] }],
        ),
    ),
    (
        "psetex",
        doc(
            "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
            "2.6.0",
            "string",
            O1,
            &[key(0), arg("milliseconds", "integer"), arg("value", "string")],
        ),
    ),
    ("pttl", doc("Returns the expiration time in milliseconds of a key.", "2.6.0", "generic", O1, KEY)),
    ("quit", doc("Closes the connection.", "1.0.0", "connection", O1, &[])),
    ("randomkey", doc("Returns a random key name from the database.", "1.0.0", "generic", O1, &[])),
    ("rename", doc("Renames a key and overwrites the destination.", "1.0.0", "generic", O1, RENAME)),
    ("renamenx", doc("Renames a key only when the target key name doesn't exist.", "1.0.0", "generic", O1, RENAME)),
    ("reset", doc("Resets the connection.", "6.2.0", "connection", O1, &[])),
    (
        "scan",
        doc(
            "Iterates over the key names in the database.",
            "2.8.0",
            "generic",
            "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
            &[],
        ),
    ),
    ("select", doc("Changes the selected database.", "1.0.0", "connection", O1, &[arg("index", "integer")])),
    (
        "set",
        doc(
            "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
            "1.0.0",
            "string",
            O1,
            &[],
        ),
    ),
    (
        "setex",
        doc(
            "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
            "2.0.0",
            "string",
            O1,
            &[key(0), arg("seconds", "integer"), arg("value", "string")],
        ),
    ),
    ("setnx", doc("Set the string value of a key only when the key doesn't exist.", "1.0.0", "string", O1, KEY_VALUE)),
    (
        "setrange",
        doc(
            "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
            "2.2.0",
            "string",
            "O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument.",
            &[key(0), arg("offset", "integer"), arg("value", "string")],
        ),
    ),
    ("strlen", doc("Returns the length of a string value.", "2.2.0", "string", O1, KEY)),
    ("time", doc("Returns the server time.", "2.6.0", "server", O1, &[])),
    (
        "touch",
        doc(
            "Returns the number of existing keys out of those specified after updating the time they were last accessed.",
            "3.2.1",
            "generic",
            "O(N) where N is the number of keys that will be touched.",
            KEYS,
        ),
    ),
    ("ttl", doc("Returns the expiration time in seconds of a key.", "1.0.0", "generic", O1, KEY)),
    ("type", doc("Determines the type of value stored at a key.", "1.0.0", "generic", O1, KEY)),
    (
        "unlink",
        doc(
            "Asynchronously deletes one or more keys.",
            "4.0.0",
            "generic",
            "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of.",
            KEYS,
        ),
    ),
    ("unwatch", doc("Forgets about watched keys of a transaction.", "2.2.0", "transactions", O1, &[])),
    (
        "wait",
        doc(
            "Blocks until the asynchronous replication of all preceding write commands sent by the connection is completed.",
            "3.0.0",
            "generic",
            O1,
            &[arg("numreplicas", "integer"), arg("timeout", "integer")],
        ),
    ),
    (
        "watch",
        doc(
            "Monitors changes to keys to determine the execution of a transaction.",
            "2.2.0",
            "transactions",
            "O(1) for every key.",
            KEYS,
        ),
    ),
];

/// The documentation of the command named `name` (lowercase).
pub fn lookup(name: &str) -> Option<&'static Doc> {
    families().iter().find_map(|docs| docs.binary_search_by(|(n, _)| n.cmp(&name)).ok().map(|i| &docs[i].1))
}

/// The documentation of every command family, each sorted by name.
fn families() -> [&'static [(&'static str, Doc)]; 6] {
    [DOCS, super::hashes::DOCS, super::sets::DOCS, super::zsets::DOCS, super::lists::DOCS, super::pubsub::DOCS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_docs_and_no_doc_is_orphaned() {
        for docs in families() {
            for pair in docs.windows(2) {
                assert!(pair[0].0 < pair[1].0, "DOCS not sorted at {}", pair[1].0);
            }
        }
        for spec in super::super::table() {
            assert!(lookup(spec.name).is_some(), "no docs for {}", spec.name);
        }
        for (name, doc) in families().into_iter().flatten() {
            assert!(super::super::lookup(name.as_bytes()).is_some(), "docs for unknown command {name}");
            assert!(!doc.summary.is_empty() && !doc.complexity.is_empty());
            assert!(
                [
                    "string",
                    "generic",
                    "connection",
                    "server",
                    "transactions",
                    "scripting",
                    "hash",
                    "set",
                    "sorted-set",
                    "list",
                    "pubsub"
                ]
                .contains(&doc.group),
                "bad group for {name}"
            );
            let mut parts = doc.since.split('.');
            assert!(parts.clone().count() == 3 && parts.all(|p| p.parse::<u32>().is_ok()), "bad since for {name}");
        }
    }
}
