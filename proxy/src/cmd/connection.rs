//! Connection and server commands: PING, ECHO, QUIT, SELECT, HELLO, AUTH,
//! CLIENT, COMMAND, INFO, TIME, WAIT. (CONFIG, and CLIENT's registry subcommands,
//! are in [`super::server`].)

use bytes::Bytes;

use super::{CommandSpec, SYNTAX_ERROR, parse_int, table};
use crate::context::Context;
use crate::reply::Protocol;

fn spec(name: &'static str, arity: i32, flags: &'static [&'static str], run: super::Handler) -> CommandSpec {
    CommandSpec::new(name, arity, flags, (0, 0, 0), run)
}

/// The connection and server commands.
pub fn commands() -> Vec<CommandSpec> {
    const F: &[&str] = &["fast", "stale", "loading"];
    vec![
        spec("ping", -1, F, ping),
        spec("echo", 2, F, echo),
        spec("quit", -1, &["fast", "noauth"], quit),
        spec("select", 2, F, select),
        spec("hello", -1, &["fast", "noauth"], hello),
        spec("auth", -2, &["fast", "noauth"], auth),
        spec("client", -2, &["admin"], client),
        spec("command", -1, &["loading", "stale"], command),
        spec("info", -1, &["loading", "stale"], info),
        spec("time", 1, F, time),
        spec("wait", 3, &[], wait),
    ]
}

fn ping(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let subscribed = !ctx.client.channels.is_empty() || !ctx.client.patterns.is_empty();
    if subscribed && ctx.client.protocol == Protocol::Resp2 && args.len() <= 1 {
        // A subscribed RESP2 client gets PING's answer in pub/sub shape.
        ctx.reply.array(2);
        ctx.reply.bulk(b"pong");
        return ctx.reply.bulk(args.first().map_or(&b""[..], |m| m.as_ref()));
    }
    match args {
        [] => ctx.reply.simple("PONG"),
        [message] => ctx.reply.bulk(message),
        _ => ctx.reply.error("ERR wrong number of arguments for 'ping' command"),
    }
}

fn echo(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    ctx.reply.bulk(args[0]);
}

fn quit(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    ctx.client.closing = true;
    ctx.reply.ok();
}

fn select(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    match parse_int(args[0]) {
        Ok(0) => ctx.reply.ok(),
        // A Meridian database is one keyspace with its own endpoint, as in
        // Redis Enterprise: there are no numbered databases to switch to.
        Ok(_) => ctx.reply.error("ERR DB index is out of range"),
        Err(e) => ctx.reply.error(&e.to_string()),
    }
}

/// Checks a password for the default user.
fn password_ok(ctx: &Context<'_, '_>, user: Option<&[u8]>, password: &[u8]) -> bool {
    let user_ok = user.is_none_or(|u| u == b"default");
    match ctx.server.requirepass() {
        Some(expected) => user_ok && expected.as_bytes() == password,
        None => user_ok,
    }
}

fn auth(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let (user, password) = match args {
        [password] => (None, password),
        [user, password] => (Some(*user), password),
        _ => return ctx.reply.error(SYNTAX_ERROR),
    };
    if ctx.server.requirepass().is_none() && user.is_none() {
        return ctx.reply.error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    }
    if password_ok(ctx, user, password) {
        ctx.client.authenticated = true;
        ctx.reply.ok();
    } else {
        ctx.reply.error("WRONGPASS invalid username-password pair or user is disabled.");
    }
}

fn hello(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let mut protocol = ctx.client.protocol;
    let mut i = 0;
    if let Some(version) = args.first() {
        match parse_int(version) {
            Ok(2) => protocol = Protocol::Resp2,
            Ok(3) => protocol = Protocol::Resp3,
            Ok(_) => return ctx.reply.error("NOPROTO unsupported protocol version"),
            Err(_) => return ctx.reply.error("ERR Protocol version is not an integer or out of range"),
        }
        i = 1;
    }
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if i + 2 < args.len() => {
                if !password_ok(ctx, Some(args[i + 1]), args[i + 2]) {
                    return ctx.reply.error("WRONGPASS invalid username-password pair or user is disabled.");
                }
                ctx.client.authenticated = true;
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                ctx.client.name = Some(Bytes::copy_from_slice(args[i + 1]));
                i += 2;
            }
            _ => {
                return ctx
                    .reply
                    .error(&format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(args[i])));
            }
        }
    }
    if !ctx.client.authenticated {
        return ctx.reply.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    ctx.client.protocol = protocol;
    ctx.reply.set_protocol(protocol);
    super::pubsub::resubscribe(ctx.server, ctx.client);
    ctx.reply.map(7);
    ctx.reply.bulk(b"server");
    ctx.reply.bulk(b"redis");
    ctx.reply.bulk(b"version");
    ctx.reply.bulk(crate::REDIS_COMPATIBLE_VERSION.as_bytes());
    ctx.reply.bulk(b"proto");
    ctx.reply.integer(if protocol == Protocol::Resp3 { 3 } else { 2 });
    ctx.reply.bulk(b"id");
    ctx.reply.integer(ctx.client.id as i64);
    ctx.reply.bulk(b"mode");
    ctx.reply.bulk(b"standalone");
    ctx.reply.bulk(b"role");
    ctx.reply.bulk(b"master");
    ctx.reply.bulk(b"modules");
    ctx.reply.array(0);
}

/// Redis 7's errors for a container command's subcommands: an unknown one, or
/// a known one with the wrong number of arguments.
pub(super) fn subcommand_error(ctx: &mut Context<'_, '_>, command: &str, sub: &[u8], known: &[&str]) {
    let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
    if known.contains(&lower.as_str()) {
        ctx.reply.error(&format!("ERR wrong number of arguments for '{command}|{lower}' command"));
    } else {
        ctx.reply.error(&format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            command.to_ascii_uppercase()
        ));
    }
}

fn client(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let sub = args[0].to_ascii_uppercase();
    match (sub.as_slice(), &args[1..]) {
        (b"ID", []) => ctx.reply.integer(ctx.client.id as i64),
        (b"GETNAME", []) => {
            let name = ctx.client.name.clone();
            ctx.reply.bulk_or_null(name.as_deref());
        }
        (b"SETNAME", [name]) => {
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return ctx.reply.error("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            ctx.client.name = if name.is_empty() { None } else { Some(Bytes::copy_from_slice(name)) };
            ctx.reply.ok();
        }
        // Client libraries announce themselves; Redis stores it for CLIENT LIST.
        (b"SETINFO", [attribute, _])
            if attribute.eq_ignore_ascii_case(b"LIB-NAME") || attribute.eq_ignore_ascii_case(b"LIB-VER") =>
        {
            ctx.reply.ok()
        }
        (b"SETINFO", [_, _]) => ctx.reply.error(SYNTAX_ERROR),
        (b"LIST", rest) => super::server::client_list(ctx, rest),
        (b"INFO", []) => super::server::client_info(ctx),
        (b"KILL", rest) if !rest.is_empty() => super::server::client_kill(ctx, rest),
        // Meridian does not evict clients nor track key access times by
        // client: the flags are accepted, as Redis accepts them.
        (b"NO-EVICT" | b"NO-TOUCH", [flag])
            if flag.eq_ignore_ascii_case(b"on") || flag.eq_ignore_ascii_case(b"off") =>
        {
            ctx.reply.ok()
        }
        (b"NO-EVICT" | b"NO-TOUCH", [_]) => ctx.reply.error(SYNTAX_ERROR),
        (b"UNBLOCK", [id, rest @ ..]) if rest.len() <= 1 => client_unblock(ctx, id, rest.first().copied()),
        _ => subcommand_error(
            ctx,
            "client",
            args[0],
            &["id", "getname", "setname", "setinfo", "list", "info", "kill", "no-evict", "no-touch", "unblock"],
        ),
    }
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: ends a blocked client's wait as if it
/// timed out, or with an error; 1 if the client was blocked.
fn client_unblock(ctx: &mut Context<'_, '_>, id: &[u8], mode: Option<&[u8]>) {
    let error = match mode {
        None => false,
        Some(mode) if mode.eq_ignore_ascii_case(b"timeout") => false,
        Some(mode) if mode.eq_ignore_ascii_case(b"error") => true,
        Some(_) => return ctx.reply.error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
    };
    let Ok(id) = parse_int(id) else {
        return ctx.reply.error("ERR value is not an integer or out of range");
    };
    let unblocked = u64::try_from(id).is_ok_and(|id| {
        ctx.server.unblock_with(id, |reply| {
            if error {
                reply.error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
            } else {
                reply.null_array();
            }
        })
    });
    ctx.reply.integer(i64::from(unblocked));
}

/// A command family's table.
type Family = fn() -> Vec<CommandSpec>;

/// ACL categories of a command, from its flags and family (what COMMAND INFO
/// reports in Redis 7).
fn acl_categories(spec: &CommandSpec) -> Vec<&'static str> {
    let mut categories = Vec::new();
    for (flag, category) in [("write", "@write"), ("readonly", "@read"), ("fast", "@fast"), ("admin", "@admin")] {
        if spec.flags.contains(&flag) {
            categories.push(category);
        }
    }
    if !spec.flags.contains(&"fast") {
        categories.push("@slow");
    }
    if spec.flags.contains(&"blocking") {
        categories.push("@blocking");
    }
    let families: [(Family, &'static str); 8] = [
        (super::strings::commands, "@string"),
        (super::keys::commands, "@keyspace"),
        (super::transactions::commands, "@transaction"),
        (super::hashes::commands, "@hash"),
        (super::sets::commands, "@set"),
        (super::zsets::commands, "@sortedset"),
        (super::lists::commands, "@list"),
        (super::pubsub::commands, "@pubsub"),
    ];
    let family = families
        .iter()
        .find(|(commands, _)| commands().iter().any(|c| c.name == spec.name))
        .map_or("@connection", |(_, category)| category);
    categories.push(family);
    categories
}

/// COMMAND INFO's entry for one command: Redis 7's ten fields.
fn command_entry(ctx: &mut Context<'_, '_>, spec: &CommandSpec) {
    ctx.reply.array(10);
    ctx.reply.bulk(spec.name.as_bytes());
    ctx.reply.integer(spec.arity as i64);
    ctx.reply.set(spec.flags.len());
    for flag in spec.flags {
        ctx.reply.simple(flag);
    }
    ctx.reply.integer(spec.first_key as i64);
    ctx.reply.integer(spec.last_key as i64);
    ctx.reply.integer(spec.step as i64);
    let categories = acl_categories(spec);
    ctx.reply.set(categories.len());
    for category in categories {
        ctx.reply.simple(category);
    }
    // Tips: none of these commands needs request/response policies.
    ctx.reply.array(0);
    // Key specifications, derived from the key positions.
    if spec.first_key == 0 {
        ctx.reply.array(0);
    } else {
        let access = if spec.write { "RW" } else { "RO" };
        ctx.reply.array(1);
        ctx.reply.map(3);
        ctx.reply.bulk(b"flags");
        ctx.reply.array(1);
        ctx.reply.simple(access);
        ctx.reply.bulk(b"begin_search");
        ctx.reply.map(2);
        ctx.reply.bulk(b"type");
        ctx.reply.bulk(b"index");
        ctx.reply.bulk(b"spec");
        ctx.reply.map(1);
        ctx.reply.bulk(b"index");
        ctx.reply.integer(spec.first_key as i64);
        ctx.reply.bulk(b"find_keys");
        ctx.reply.map(2);
        ctx.reply.bulk(b"type");
        ctx.reply.bulk(b"range");
        ctx.reply.bulk(b"spec");
        ctx.reply.map(3);
        ctx.reply.bulk(b"lastkey");
        ctx.reply.integer(if spec.last_key < 0 {
            spec.last_key as i64
        } else {
            (spec.last_key - spec.first_key) as i64
        });
        ctx.reply.bulk(b"keystep");
        ctx.reply.integer(spec.step as i64);
        ctx.reply.bulk(b"limit");
        ctx.reply.integer(0);
    }
    // Subcommands: listed by their containers' HELP, not here.
    ctx.reply.array(0);
}

fn command(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let Some(sub) = args.first().map(|s| s.to_ascii_uppercase()) else {
        let all = table();
        ctx.reply.array(all.len());
        for spec in all {
            command_entry(ctx, spec);
        }
        return;
    };
    match sub.as_slice() {
        b"COUNT" => ctx.reply.integer(table().len() as i64),
        b"LIST" => {
            let all = table();
            ctx.reply.array(all.len());
            for spec in all {
                ctx.reply.bulk(spec.name.as_bytes());
            }
        }
        b"INFO" => {
            ctx.reply.array(args.len() - 1);
            for name in &args[1..] {
                match super::lookup(name) {
                    Some(spec) => command_entry(ctx, spec),
                    None => ctx.reply.null_array(),
                }
            }
        }
        b"DOCS" => command_docs(ctx, &args[1..]),
        _ => ctx
            .reply
            .error(&format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(args[0]))),
    }
}

/// COMMAND DOCS: a map from command name to its documentation, for the named
/// commands (unknown names skipped) or, with no names, for every command.
fn command_docs(ctx: &mut Context<'_, '_>, names: &[&[u8]]) {
    let specs: Vec<&CommandSpec> = if names.is_empty() {
        table().iter().collect()
    } else {
        names.iter().filter_map(|n| super::lookup(n)).collect()
    };
    let docs: Vec<(&str, &super::docs::Doc)> =
        specs.iter().filter_map(|spec| super::docs::lookup(spec.name).map(|doc| (spec.name, doc))).collect();
    ctx.reply.map(docs.len());
    for (name, doc) in docs {
        ctx.reply.bulk(name.as_bytes());
        let has_arguments = !doc.arguments.is_empty();
        ctx.reply.map(4 + usize::from(has_arguments));
        for (field, value) in
            [("summary", doc.summary), ("since", doc.since), ("group", doc.group), ("complexity", doc.complexity)]
        {
            ctx.reply.bulk(field.as_bytes());
            ctx.reply.bulk(value.as_bytes());
        }
        if has_arguments {
            ctx.reply.bulk(b"arguments");
            ctx.reply.array(doc.arguments.len());
            for arg in doc.arguments {
                let fields = 3 + usize::from(arg.key_spec.is_some()) + usize::from(!arg.flags.is_empty());
                ctx.reply.map(fields);
                ctx.reply.bulk(b"name");
                ctx.reply.bulk(arg.name.as_bytes());
                ctx.reply.bulk(b"type");
                ctx.reply.bulk(arg.kind.as_bytes());
                ctx.reply.bulk(b"display_text");
                ctx.reply.bulk(arg.name.as_bytes());
                if let Some(index) = arg.key_spec {
                    ctx.reply.bulk(b"key_spec_index");
                    ctx.reply.integer(i64::from(index));
                }
                if !arg.flags.is_empty() {
                    ctx.reply.bulk(b"flags");
                    ctx.reply.array(arg.flags.len());
                    for flag in arg.flags {
                        ctx.reply.simple(flag);
                    }
                }
            }
        }
    }
}

/// The process's resident set size in bytes (`VmRSS` of
/// `/proc/self/status`, whatever the page size; 0 where there is none).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
    kib.unwrap_or(0) * 1024
}

/// Redis's `bytesToHuman`: `512B`, `1.50K`, `2.00M`, `3.25G`.
fn bytes_to_human(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

fn info(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let wanted = |section: &str| {
        args.is_empty()
            || args.iter().any(|a| {
                a.eq_ignore_ascii_case(section.as_bytes())
                    || a.eq_ignore_ascii_case(b"all")
                    || a.eq_ignore_ascii_case(b"everything")
            })
    };
    let stats = &ctx.server.stats;
    let shard = ctx.server.shard();
    let keys = shard.keyspace().len();
    let expires = shard.keyspace().expires_len();
    let crdt = shard.keyspace().stats().clone();
    let cloud = shard.keyspace().context().cloud_len();
    let clamped = shard.clock().stats().clamped_total.load(Relaxed);
    drop(shard);
    let mut text = String::new();
    if wanted("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:{}\r\nmeridian_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            crate::REDIS_COMPATIBLE_VERSION,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            ctx.server.settings.port,
            ctx.server.started.elapsed().as_secs()
        );
    }
    if wanted("clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            stats.clients.load(Relaxed),
            ctx.server.settings.maxclients,
            ctx.server.blocked_clients()
        );
    }
    if wanted("memory") {
        // The process's resident set: Meridian does not count allocator
        // bytes, so `used_memory` is the RSS (every database of the node
        // shares it).
        let rss = resident_bytes();
        let peak = stats.peak_rss.fetch_max(rss, Relaxed).max(rss);
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\nmem_allocator:libc\r\n\r\n",
            bytes_to_human(rss),
            bytes_to_human(rss),
            bytes_to_human(peak)
        );
    }
    if wanted("stats") {
        let (pubsub_channels, pubsub_patterns) = ctx.server.pubsub_counts();
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\n\r\n",
            stats.connections.load(Relaxed),
            stats.commands.load(Relaxed),
            stats.rejected.load(Relaxed),
            crdt.expired_deleted,
            pubsub_channels,
            pubsub_patterns
        );
    }
    if wanted("replication") {
        replication_section(ctx.server, &mut text);
    }
    if wanted("crdt") {
        let _ = write!(
            text,
            "# CRDT\r\ncrdt_deltas_applied:{}\r\ncrdt_type_conflicts:{}\r\ncrdt_gc_collected:{}\r\ncrdt_context_cloud:{}\r\ncrdt_clock_skew_clamped:{}\r\n\r\n",
            crdt.deltas_applied, crdt.type_conflicts, crdt.gc_collected, cloud, clamped
        );
    }
    if wanted("keyspace") {
        let _ = write!(text, "# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(text, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
    }
    ctx.reply.bulk(text.as_bytes());
}

/// INFO's replication section: a master, with its replicas' offsets when
/// replication is on (Redis's field names; offsets count deltas, see D70).
fn replication_section(server: &crate::context::ServerState, text: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(text, "# Replication\r\nrole:master\r\n");
    let Some(replication) = server.replication() else {
        let _ = write!(
            text,
            "connected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\nrepl_backlog_active:0\r\n\r\n"
        );
        return;
    };
    let log = replication.log();
    let next = log.next_offset();
    let replicas: Vec<(u64, u64)> = log.replicas().collect();
    let _ = write!(text, "connected_slaves:{}\r\n", replicas.len());
    for (i, (id, offset)) in replicas.iter().enumerate() {
        let _ = write!(text, "slave{i}:id={id},state=online,offset={offset},lag_entries={}\r\n", next - offset);
    }
    let (replid2, second) = match log.previous() {
        Some((replid, offset)) => (replid.to_string(), offset as i64),
        None => ("0".repeat(32), -1),
    };
    let _ = write!(
        text,
        "master_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:{replid2}\r\nmaster_repl_offset:{next}\r\nsecond_repl_offset:{second}\r\nrepl_backlog_active:1\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{}\r\n\r\n",
        log.replid(),
        log.backlog_bytes_max(),
        log.first_offset(),
        next - log.first_offset()
    );
}

/// WAIT numreplicas timeout: the number of replicas that acknowledged the
/// client's writes. On a master with replication, the connection waits
/// (after writing the replies before it) until that many replicas hold
/// everything committed so far, or the timeout (milliseconds, 0 = forever)
/// passes, and answers how many do; inside EXEC it answers at once, as
/// Redis's does. Without replication it answers 0 at once whatever the
/// timeout (the brief's rule for a master without replicas; Redis would block
/// until the timeout when asked for more replicas than it has). The
/// arguments are checked as Redis does.
fn wait(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let Ok(replicas) = parse_int(args[0]) else {
        return ctx.reply.error("ERR value is not an integer or out of range");
    };
    let timeout_ms = match parse_int(args[1]) {
        Err(_) => return ctx.reply.error("ERR timeout is not an integer or out of range"),
        Ok(timeout_ms) if timeout_ms < 0 => return ctx.reply.error("ERR timeout is negative"),
        Ok(timeout_ms) => timeout_ms as u64,
    };
    let Some(replication) = ctx.server.replication() else {
        return ctx.reply.integer(0);
    };
    let replicas = replicas.max(0) as usize;
    if ctx.client.in_exec {
        ctx.server.commit_writes(u64::MAX);
        let log = replication.log();
        let acked = log.acked_count(log.next_offset());
        return ctx.reply.integer(acked as i64);
    }
    let timeout = (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms));
    ctx.client.wait = Some((replicas, timeout));
}

fn time(ctx: &mut Context<'_, '_>, _args: &[&[u8]]) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ctx.reply.array(2);
    ctx.reply.bulk(now.as_secs().to_string().as_bytes());
    ctx.reply.bulk(now.subsec_micros().to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use meridian_crdt::ReplicaId;
    use meridian_replication::Shard;

    use crate::connection::run_command;
    use crate::context::{ClientState, ServerState, Settings};
    use crate::reply::{Protocol, Reply};

    fn run(server: &ServerState, client: &mut ClientState, words: &[&str]) -> String {
        let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
        let mut out = BytesMut::new();
        run_command(server, client, &args, Reply::new(&mut out, Protocol::Resp2));
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn busy_polling_is_configured_with_config_set() {
        let server = ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default());
        let mut client = ClientState::new(&server);
        let default = crate::spin::BUSY_POLL_US_DEFAULT;
        assert_eq!(
            run(&server, &mut client, &["CONFIG", "GET", "busy-poll-us"]),
            format!("*2\r\n$12\r\nbusy-poll-us\r\n${}\r\n{default}\r\n", default.to_string().len())
        );
        assert_eq!(run(&server, &mut client, &["CONFIG", "SET", "busy-poll-us", "0"]), "+OK\r\n");
        assert_eq!(server.busy_poll.budget_us(), 0);
        assert_eq!(run(&server, &mut client, &["CONFIG", "SET", "BUSY-POLL-US", "120"]), "+OK\r\n");
        assert_eq!(server.busy_poll.budget_us(), 120);
        for bad in ["-1", "1000001", "soon"] {
            let reply = run(&server, &mut client, &["CONFIG", "SET", "busy-poll-us", bad]);
            assert!(
                reply.starts_with("-ERR CONFIG SET failed (possibly related to argument 'busy-poll-us')"),
                "{reply}"
            );
        }
        assert_eq!(server.busy_poll.budget_us(), 120);
    }

    #[test]
    fn wait_without_replicas_answers_zero_at_once_and_checks_its_arguments() {
        let server = ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default());
        let mut client = ClientState::new(&server);
        assert_eq!(run(&server, &mut client, &["set", "k", "v"]), "+OK\r\n");
        assert_eq!(run(&server, &mut client, &["wait", "1", "0"]), ":0\r\n", "0 is forever, but no replica exists");
        assert_eq!(run(&server, &mut client, &["WAIT", "0", "100"]), ":0\r\n");
        assert_eq!(run(&server, &mut client, &["wait", "x", "0"]), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(
            run(&server, &mut client, &["wait", "1", "1.5"]),
            "-ERR timeout is not an integer or out of range\r\n"
        );
        assert_eq!(run(&server, &mut client, &["wait", "1", "-1"]), "-ERR timeout is negative\r\n");
        assert!(run(&server, &mut client, &["wait", "1"]).starts_with("-ERR wrong number of arguments"));
        let info = run(&server, &mut client, &["info", "replication"]);
        assert!(info.contains("role:master\r\nconnected_slaves:0\r\n"), "{info}");
        assert!(info.contains("master_repl_offset:0\r\n"), "{info}");
    }

    #[test]
    fn a_master_with_replication_numbers_its_writes_and_fences() {
        use meridian_replication::stream::{ReplicationId, ReplicationLog};
        let server = ServerState::new(Shard::new(ReplicaId(1), 1_000), Settings::default())
            .with_replication(ReplicationLog::new(ReplicationId(7), 1 << 20));
        let mut client = ClientState::new(&server);
        // No lease yet: writes are refused, reads are not.
        assert!(run(&server, &mut client, &["set", "k", "v"]).starts_with("-CLUSTERDOWN"));
        assert_eq!(run(&server, &mut client, &["get", "k"]), "$-1\r\n");
        server.set_write_lease(std::time::Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(run(&server, &mut client, &["set", "k", "v"]), "+OK\r\n");
        assert_eq!(run(&server, &mut client, &["incr", "n"]), ":1\r\n");
        server.commit_writes(u64::MAX);
        let info = run(&server, &mut client, &["info", "replication"]);
        assert!(info.contains("master_repl_offset:2\r\n"), "two deltas, two offsets: {info}");
        assert!(info.contains("master_replid:00000000000000000000000000000007\r\n"), "{info}");
        server.set_fenced(true);
        assert!(run(&server, &mut client, &["del", "k"]).starts_with("-CLUSTERDOWN"), "a fenced master refuses");
        server.set_fenced(false);
        assert_eq!(run(&server, &mut client, &["del", "k"]), ":1\r\n");
    }
}
