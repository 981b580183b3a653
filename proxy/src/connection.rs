//! One client connection: read, parse, run, reply — pipelined.
//!
//! The loop reads whatever the socket has into a reused buffer, runs every
//! complete command in it, appends each reply to a reused output buffer, and
//! writes the whole batch back with one write: a pipeline of N commands costs
//! one read and one write. A protocol error is answered with Redis's error text
//! and the connection is closed, as Redis does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::blocking::Block;
use crate::cmd::{ARGS_INLINE, CommandSpec, arity_ok, command_keys, lookup, transactions};
use crate::context::{ClientHandle, ClientState, Context, ServerState};
use crate::reply::Reply;
use crate::request::{InPlace, Limits, RequestParser};

/// Initial size of a connection's read and write buffers.
pub const BUFFER_BYTES_INITIAL: usize = 16 * 1024;
/// A write buffer that grew beyond this is shrunk back after it is flushed, so
/// one large reply does not pin memory for the rest of the connection.
pub const BUFFER_BYTES_RETAINED_MAX: usize = 1024 * 1024;
/// Replies buffered before they are written out even if more commands are
/// waiting (the client output buffer bound within one batch).
pub const OUTPUT_BYTES_FLUSH_AT: usize = 64 * 1024;

/// Serves one client until it disconnects, sends QUIT, breaks the protocol,
/// or is killed (CLIENT KILL).
pub async fn serve(mut socket: TcpStream, server: Arc<ServerState>) {
    let _ = socket.set_nodelay(true);
    let mut client = ClientState::new(&server);
    let addr = socket.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let laddr = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let handle = server.register_client(client.id, addr, laddr);
    // Deregisters on every exit, including the task being dropped.
    let _registration = Registration { server: &server, id: client.id };
    client.handle = Some(handle.clone());
    serve_client(&mut socket, &server, &mut client, &handle).await;
    crate::cmd::pubsub::unsubscribe_all(&server, &mut client);
}

/// Removes a client from the registry when its connection ends.
struct Registration<'a> {
    server: &'a ServerState,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.server.unblock(self.id);
        self.server.unwatch_all(self.id);
        self.server.deregister_client(self.id);
    }
}

async fn serve_client(socket: &mut TcpStream, server: &ServerState, client: &mut ClientState, handle: &ClientHandle) {
    // Until it authenticates, a client gets Redis's small frame limits, so an
    // anonymous connection cannot make the server buffer large requests.
    let mut parser =
        RequestParser::new(if client.authenticated { Limits::default() } else { Limits::unauthenticated() });
    let mut input = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
    let mut output = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
    // Inline commands' arguments (copies: unquoted); an array command is
    // read in place from `input`.
    let mut owned: Vec<Bytes> = Vec::new();
    loop {
        // The writes of what this read brought share one wall-clock reading;
        // it is dropped again by every flush (anything below that waits
        // flushes first) and by DEBUG SLEEP.
        client.wall.clear();
        loop {
            match parser.parse_in_place(&mut input, &mut owned) {
                Ok(Some(parsed)) => {
                    // Filled where it lies (a moved list of slices is a
                    // measurable copy per command).
                    let mut args: SmallVec<[&[u8]; ARGS_INLINE]> = SmallVec::new();
                    let frame_len = match parsed {
                        InPlace::Frame { frame_len } => {
                            let frame = &input[..frame_len];
                            args.extend(parser.arg_ranges().iter().map(|&(start, end)| &frame[start..end]));
                            frame_len
                        }
                        InPlace::Owned => {
                            args.extend(owned.iter().map(|arg| &arg[..]));
                            0
                        }
                    };
                    if server.replication().is_some() && server.lease_lapsed() && awaits_lease(client, &args) {
                        // The write lease lapsed (a renewal running late):
                        // the replies so far go out, then the write waits
                        // for the cluster to renew it or fence this master.
                        if !flush(socket, server, client, &mut output).await {
                            return;
                        }
                        tokio::select! {
                            _ = server.await_write_lease(crate::replication::LEASE_WAIT) => {}
                            _ = handle.kill.notified() => return,
                        }
                    }
                    execute(server, client, &args, &mut output);
                    drop(args);
                    input.advance(frame_len);
                    if client.authenticated && parser.limits().unauthenticated {
                        parser.set_limits(Limits::default());
                    } else if !client.authenticated && !parser.limits().unauthenticated {
                        // RESET logged the client out.
                        parser.set_limits(Limits::unauthenticated());
                    }
                    if client.closing || handle.is_killed() {
                        flush(socket, server, client, &mut output).await;
                        return;
                    }
                    if let Some(block) = client.blocked.take() {
                        // A blocking command found nothing: write what came
                        // before it, then wait for its reply.
                        if !flush(socket, server, client, &mut output).await {
                            server.unblock(client.id);
                            return;
                        }
                        match wait_unblocked(socket, server, client, handle, &mut input, &parser, block).await {
                            Some(reply) => {
                                // The pop that served it is a write of its own.
                                if server.is_journaling() {
                                    client.sync_target = Some(server.journal_position());
                                }
                                output.extend_from_slice(&reply)
                            }
                            None => return,
                        }
                    }
                    if let Some((replicas, timeout)) = client.wait.take() {
                        // WAIT: the replies before it go out first (which
                        // commits the writes it waits for).
                        if !flush(socket, server, client, &mut output).await {
                            return;
                        }
                        let acked = tokio::select! {
                            acked = server.wait_for_replicas(replicas, timeout) => acked,
                            _ = handle.kill.notified() => return,
                        };
                        Reply::new(&mut output, client.protocol).integer(acked as i64);
                    }
                    if let Some(pause) = client.sleep.take() {
                        // DEBUG SLEEP: only this connection waits.
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = handle.kill.notified() => return,
                        }
                        client.wall.clear();
                    }
                    if output.len() >= OUTPUT_BYTES_FLUSH_AT && !flush(socket, server, client, &mut output).await {
                        return;
                    }
                }
                Ok(None) => {
                    record_activity(client);
                    break;
                }
                Err(error) => {
                    Reply::new(&mut output, client.protocol).error(&error.to_redis_error());
                    flush(socket, server, client, &mut output).await;
                    return;
                }
            }
        }
        server.busy_poll.batch();
        if !output.is_empty() || client.sync_target.is_some() {
            if !flush(socket, server, client, &mut output).await {
                return;
            }
            if output.capacity() > BUFFER_BYTES_RETAINED_MAX {
                output = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
            }
        }
        if let Err(error) = parser.check_query_buffer(input.len()) {
            Reply::new(&mut output, client.protocol).error(&error.to_redis_error());
            flush(socket, server, client, &mut output).await;
            return;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(BUFFER_BYTES_INITIAL);
        }
        if handle.is_killed() {
            return;
        }
        // A kill wakes the task even while it waits for the client to send;
        // so do pub/sub messages, written as they come.
        tokio::select! {
            read = read_some(socket, &mut input) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = handle.kill.notified() => return,
            _ = handle.wake.notified() => {
                if !write_messages(socket, handle).await {
                    return;
                }
            }
        }
    }
}

/// Reads what the socket holds into `input` (its spare capacity): the
/// number of bytes read, 0 at end of stream.
///
/// One `read` per readiness event, as Redis does: when the read leaves part
/// of the buffer unfilled the socket is drained, so the readiness is cleared
/// at once instead of being discovered by a second `read` that fails with
/// `EAGAIN` — one system call per request saved at pipeline depth 1. The
/// readiness is cleared against the event observed *before* the read (tokio's
/// `try_io` compares its tick), so data arriving after the read raises a new
/// event and is never missed.
async fn read_some(socket: &TcpStream, input: &mut BytesMut) -> std::io::Result<usize> {
    loop {
        socket.readable().await?;
        let spare = input.capacity() - input.len();
        let mut read = 0;
        let attempt = socket.try_io(Interest::READABLE, || {
            read = socket.try_read_buf(input)?;
            if read > 0 && read < spare { Err(std::io::ErrorKind::WouldBlock.into()) } else { Ok(read) }
        });
        match attempt {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if read > 0 {
                    return Ok(read);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// Writes a batch of replies, once the journal holds the writes they
/// acknowledge (see [`crate::persistence`]). False if the connection must
/// close: the socket failed, or the writes could not be made durable (their
/// replies are then never sent).
async fn flush(socket: &mut TcpStream, server: &ServerState, client: &mut ClientState, output: &mut BytesMut) -> bool {
    // Time passes while the replies go out: the writes after them read the
    // clock again.
    client.wall.clear();
    if let Some(target) = client.sync_target.take()
        && !server.commit_writes(target)
    {
        return false;
    }
    if output.is_empty() {
        return true;
    }
    let written = socket.write_all(output).await.is_ok();
    output.clear();
    written
}

/// Writes the pub/sub messages waiting in the client's mailbox. False if the
/// connection must close: the write failed, or the client was killed while
/// the write waited on a subscriber that does not read (the output limit).
async fn write_messages(socket: &mut TcpStream, handle: &ClientHandle) -> bool {
    let Some(messages) = handle.take_messages() else {
        return !handle.is_killed();
    };
    tokio::select! {
        written = socket.write_all(&messages) => written.is_ok() && !handle.is_killed(),
        _ = handle.kill.notified() => false,
    }
}

/// Waits, for a client blocked by a blocking command, until a write serves
/// it, its deadline passes (the reply is then a null array, as Redis's), or
/// it goes away (disconnect, CLIENT KILL: `None`). Meanwhile it reads the
/// socket only to notice a disconnect — pipelined commands wait in `input`
/// (bounded by the query buffer limit) — and writes pub/sub messages.
async fn wait_unblocked(
    socket: &mut TcpStream,
    server: &ServerState,
    client: &ClientState,
    handle: &ClientHandle,
    input: &mut BytesMut,
    parser: &RequestParser,
    block: Block,
) -> Option<BytesMut> {
    let deadline = block.expired();
    tokio::pin!(deadline);
    let mut armed = true;
    loop {
        if let Some(reply) = handle.take_unblocked() {
            return Some(reply);
        }
        if handle.is_killed() {
            server.unblock(client.id);
            return None;
        }
        tokio::select! {
            _ = handle.wake.notified() => {
                if !write_messages(socket, handle).await {
                    server.unblock(client.id);
                    return None;
                }
            }
            _ = handle.kill.notified() => {
                server.unblock(client.id);
                return None;
            }
            _ = &mut deadline, if armed => {
                if server.unblock(client.id) {
                    let mut reply = BytesMut::new();
                    Reply::new(&mut reply, client.protocol).null_array();
                    return Some(reply);
                }
                // Served just as the deadline passed: its reply is on the way.
                armed = false;
            }
            read = read_some(socket, input) => {
                let closed = !matches!(read, Ok(n) if n > 0);
                if closed || parser.check_query_buffer(input.len()).is_err() {
                    server.unblock(client.id);
                    return None;
                }
            }
        }
    }
}

/// True if the command runs writes now (a write command not queued by
/// MULTI, or EXEC), so it must wait for a lapsed write lease.
pub(crate) fn awaits_lease(client: &ClientState, args: &[&[u8]]) -> bool {
    if args[0].eq_ignore_ascii_case(b"exec") {
        return true;
    }
    client.multi.is_none() && lookup(args[0]).is_some_and(|spec| spec.write)
}

/// Runs one command and writes its reply.
pub fn execute(server: &ServerState, client: &mut ClientState, args: &[&[u8]], output: &mut BytesMut) {
    server.stats.commands.fetch_add(1, Ordering::Relaxed);
    let ran = if client.multi.is_some() && !transactions::runs_inside_multi(args[0]) {
        transactions::queue(client, args, Reply::new(output, client.protocol));
        None
    } else if args[0].eq_ignore_ascii_case(b"exec") {
        // EXEC takes the exec lock exclusively itself (it cannot also hold it
        // shared: the lock is not reentrant).
        run_command(server, client, args, Reply::new(output, client.protocol))
    } else {
        let _shared = server.exec_shared();
        run_command(server, client, args, Reply::new(output, client.protocol))
    };
    if let Some(spec) = ran {
        let sub =
            if CONTAINER_COMMANDS.contains(&spec.name) { args.get(1).map(|a| Bytes::copy_from_slice(a)) } else { None };
        client.last_command = Some((spec.name, sub));
    }
}

/// Copies the client's activity into the registry (CLIENT LIST, CLIENT INFO).
/// Once per batch rather than per command: it takes a lock and reads the clock.
fn record_activity(client: &ClientState) {
    let Some(handle) = &client.handle else {
        return;
    };
    let mut info = handle.info();
    info.last_active = std::time::Instant::now();
    info.name.clone_from(&client.name);
    info.protocol = client.protocol;
    if let Some((name, sub)) = &client.last_command {
        info.last_command.clear();
        info.last_command.push_str(name);
        if let Some(sub) = sub {
            info.last_command.push('|');
            info.last_command.push_str(&String::from_utf8_lossy(&sub[..sub.len().min(32)]).to_ascii_lowercase());
        }
    }
}

/// What a RESP2 client may run while subscribed to a channel or pattern.
const SUBSCRIBED_CONTEXT_COMMANDS: &[&str] =
    &["subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset"];

/// Commands whose first argument is a subcommand (CLIENT LIST shows
/// `cmd=client|list`, as Redis does).
const CONTAINER_COMMANDS: &[&str] = &["client", "command", "config", "function"];

/// Runs one command (its reply into `reply`) and, if it is a write, marks the
/// clients watching its keys as touched. The caller holds the exec lock
/// (shared, or exclusively for a command EXEC runs), except for EXEC itself.
pub fn run_command(
    server: &ServerState,
    client: &mut ClientState,
    args: &[&[u8]],
    reply: Reply<'_>,
) -> Option<&'static CommandSpec> {
    let ran = dispatch(server, client, args, reply);
    if let Some(spec) = ran
        && spec.write
    {
        server.touch_written(spec, args);
        if client.in_exec {
            // Served when EXEC ends, as Redis does.
            client.exec_written.extend(command_keys(spec, args).map(Bytes::copy_from_slice));
        } else {
            server.serve_blocked(command_keys(spec, args));
        }
        if server.is_journaling() {
            client.sync_target = Some(server.journal_position());
        }
    }
    ran
}

/// Checks that a command exists, that the client may run it and that its
/// argument count fits: the spec, or the error reply's text.
pub fn validate(client: &ClientState, args: &[&[u8]]) -> Result<&'static CommandSpec, String> {
    let Some(spec) = lookup(args[0]) else {
        let mut shown = String::new();
        for arg in args[1..].iter().take(20) {
            shown.push('\'');
            shown.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(128)]));
            shown.push_str("' ");
        }
        return Err(format!(
            "ERR unknown command '{}', with args beginning with: {}",
            String::from_utf8_lossy(&args[0][..args[0].len().min(128)]),
            shown
        ));
    };
    if !client.authenticated && !spec.flags.contains(&"noauth") {
        return Err("NOAUTH Authentication required.".to_string());
    }
    if !arity_ok(spec, args.len()) {
        return Err(format!("ERR wrong number of arguments for '{}' command", spec.name));
    }
    if client.protocol == crate::reply::Protocol::Resp2
        && (!client.channels.is_empty() || !client.patterns.is_empty())
        && !SUBSCRIBED_CONTEXT_COMMANDS.contains(&spec.name)
    {
        return Err(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
    }
    Ok(spec)
}

/// Finds and runs the command; returns it if it ran.
fn dispatch(
    server: &ServerState,
    client: &mut ClientState,
    args: &[&[u8]],
    mut reply: Reply<'_>,
) -> Option<&'static CommandSpec> {
    let spec = match validate(client, args) {
        Ok(spec)
            if spec.write
                && let Some(refusal) = crate::replication::write_refusal(server) =>
        {
            reply.error(&refusal);
            return None;
        }
        Ok(spec) => spec,
        Err(text) => {
            reply.error(&text);
            return None;
        }
    };
    let mut context = Context { server, client, reply };
    (spec.run)(&mut context, &args[1..]);
    Some(spec)
}
