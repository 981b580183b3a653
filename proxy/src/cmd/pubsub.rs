//! Pub/sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE,
//! PUBLISH, PUBSUB (CHANNELS, NUMSUB, NUMPAT).
//!
//! Subscription confirmations and messages are RESP2 arrays, or RESP3 push
//! messages for a client that said `HELLO 3` (which may then run any command
//! while subscribed; a RESP2 client may only run the pub/sub commands, PING,
//! QUIT and RESET). The registry and delivery are in [`crate::pubsub`].

use bytes::Bytes;

use super::CommandSpec;
use super::connection::subcommand_error;
use super::docs::{Arg, Doc, arg, doc};
use crate::context::{ClientState, Context, ServerState};
use crate::pubsub::Kind;
use crate::reply::Reply;

/// The pub/sub commands.
pub fn commands() -> Vec<CommandSpec> {
    const SUB: &[&str] = &["pubsub", "noscript", "loading", "stale"];
    vec![
        CommandSpec::new("subscribe", -2, SUB, (0, 0, 0), subscribe),
        CommandSpec::new("unsubscribe", -1, SUB, (0, 0, 0), unsubscribe),
        CommandSpec::new("psubscribe", -2, SUB, (0, 0, 0), psubscribe),
        CommandSpec::new("punsubscribe", -1, SUB, (0, 0, 0), punsubscribe),
        CommandSpec::new("publish", 3, &["pubsub", "loading", "stale", "fast"], (0, 0, 0), publish),
        CommandSpec::new("pubsub", -2, &[], (0, 0, 0), pubsub),
    ]
}

const CHANNELS: &[Arg] = &[Arg { name: "channel", kind: "string", key_spec: None, flags: &["multiple"] }];
const CHANNELS_OPTIONAL: &[Arg] =
    &[Arg { name: "channel", kind: "string", key_spec: None, flags: &["optional", "multiple"] }];
const PATTERNS: &[Arg] = &[Arg { name: "pattern", kind: "pattern", key_spec: None, flags: &["multiple"] }];
const PATTERNS_OPTIONAL: &[Arg] =
    &[Arg { name: "pattern", kind: "pattern", key_spec: None, flags: &["optional", "multiple"] }];

/// COMMAND DOCS for the pub/sub commands, sorted by name.
pub static DOCS: &[(&str, Doc)] = &[
    (
        "psubscribe",
        doc(
            "Listens for messages published to channels that match one or more patterns.",
            "2.0.0",
            "pubsub",
            "O(N) where N is the number of patterns to subscribe to.",
            PATTERNS,
        ),
    ),
    (
        "publish",
        doc(
            "Posts a message to a channel.",
            "2.0.0",
            "pubsub",
            "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
            &[arg("channel", "string"), arg("message", "string")],
        ),
    ),
    ("pubsub", doc("A container for Pub/Sub commands.", "2.8.0", "pubsub", "Depends on subcommand.", &[])),
    (
        "punsubscribe",
        doc(
            "Stops listening to messages published to channels that match one or more patterns.",
            "2.0.0",
            "pubsub",
            "O(N) where N is the number of patterns to unsubscribe.",
            PATTERNS_OPTIONAL,
        ),
    ),
    (
        "subscribe",
        doc(
            "Listens for messages published to channels.",
            "2.0.0",
            "pubsub",
            "O(N) where N is the number of channels to subscribe to.",
            CHANNELS,
        ),
    ),
    (
        "unsubscribe",
        doc(
            "Stops listening to messages posted to channels.",
            "2.0.0",
            "pubsub",
            "O(N) where N is the number of channels to unsubscribe.",
            CHANNELS_OPTIONAL,
        ),
    ),
];

/// The client's subscriptions of one kind.
fn subscriptions(client: &mut ClientState, kind: Kind) -> &mut std::collections::HashSet<Bytes> {
    match kind {
        Kind::Channel => &mut client.channels,
        Kind::Pattern => &mut client.patterns,
    }
}

/// The confirmation of one (un)subscription: `[kind, name, count]`.
fn confirm(reply: &mut Reply<'_>, what: &[u8], name: Option<&[u8]>, count: usize) {
    reply.push(3);
    reply.bulk(what);
    reply.bulk_or_null(name);
    reply.integer(count as i64);
}

fn total(client: &ClientState) -> usize {
    client.channels.len() + client.patterns.len()
}

fn subscribe_kind(ctx: &mut Context<'_, '_>, args: &[&[u8]], kind: Kind) {
    let Some(handle) = ctx.client.handle.clone() else {
        return ctx.reply.error("ERR SUBSCRIBE needs a client connection");
    };
    if ctx.client.in_exec {
        return ctx.reply.error(&format!(
            "ERR {} isn't allowed for a DENY BLOCKING client",
            if kind == Kind::Channel { "SUBSCRIBE" } else { "PSUBSCRIBE" }
        ));
    }
    let what: &[u8] = if kind == Kind::Channel { b"subscribe" } else { b"psubscribe" };
    for &name in args {
        let name = Bytes::copy_from_slice(name);
        if subscriptions(ctx.client, kind).insert(name.clone()) {
            ctx.server.subscribe(kind, &name, &handle, ctx.client.protocol);
        }
        let count = total(ctx.client);
        confirm(&mut ctx.reply, what, Some(&name), count);
    }
}

fn unsubscribe_kind(ctx: &mut Context<'_, '_>, args: &[&[u8]], kind: Kind) {
    let what: &[u8] = if kind == Kind::Channel { b"unsubscribe" } else { b"punsubscribe" };
    let names: Vec<Bytes> = if args.is_empty() {
        subscriptions(ctx.client, kind).iter().cloned().collect()
    } else {
        args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
    };
    if names.is_empty() {
        let count = total(ctx.client);
        return confirm(&mut ctx.reply, what, None, count);
    }
    for name in &names {
        if subscriptions(ctx.client, kind).remove(name) {
            ctx.server.unsubscribe(kind, name, ctx.client.id);
        }
        let count = total(ctx.client);
        confirm(&mut ctx.reply, what, Some(name), count);
    }
}

fn subscribe(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    subscribe_kind(ctx, args, Kind::Channel);
}

fn psubscribe(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    subscribe_kind(ctx, args, Kind::Pattern);
}

fn unsubscribe(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    unsubscribe_kind(ctx, args, Kind::Channel);
}

fn punsubscribe(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    unsubscribe_kind(ctx, args, Kind::Pattern);
}

fn publish(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let receivers = ctx.server.publish(args[0], args[1]);
    ctx.reply.integer(receivers as i64);
}

fn pubsub(ctx: &mut Context<'_, '_>, args: &[&[u8]]) {
    let sub = args[0].to_ascii_uppercase();
    match (sub.as_slice(), &args[1..]) {
        (b"CHANNELS", [] | [_]) => {
            let channels = ctx.server.active_channels(args.get(1).map(|p| p.as_ref()));
            ctx.reply.array(channels.len());
            for channel in &channels {
                ctx.reply.bulk(channel);
            }
        }
        (b"NUMSUB", channels) => {
            ctx.reply.map(channels.len());
            for channel in channels {
                ctx.reply.bulk(channel);
                ctx.reply.integer(ctx.server.subscribers(channel) as i64);
            }
        }
        (b"NUMPAT", []) => ctx.reply.integer(ctx.server.pattern_subscriptions() as i64),
        (b"HELP", []) => {
            const HELP: &[&str] = &[
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "HELP",
                "    Print this help.",
            ];
            ctx.reply.array(HELP.len());
            for line in HELP {
                ctx.reply.simple(line);
            }
        }
        _ => subcommand_error(ctx, "pubsub", args[0], &["channels", "numsub", "numpat", "help"]),
    }
}

/// Drops every subscription of a client (RESET, disconnect).
pub fn unsubscribe_all(server: &ServerState, client: &mut ClientState) {
    for channel in client.channels.drain() {
        server.unsubscribe(Kind::Channel, &channel, client.id);
    }
    for pattern in client.patterns.drain() {
        server.unsubscribe(Kind::Pattern, &pattern, client.id);
    }
}

/// Re-registers a client's subscriptions after HELLO switched its protocol,
/// so that its messages come in the new shape.
pub fn resubscribe(server: &ServerState, client: &ClientState) {
    let Some(handle) = &client.handle else {
        return;
    };
    for channel in &client.channels {
        server.subscribe(Kind::Channel, channel, handle, client.protocol);
    }
    for pattern in &client.patterns {
        server.subscribe(Kind::Pattern, pattern, handle, client.protocol);
    }
}
