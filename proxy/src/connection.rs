//! One client connection: read, parse, run, reply — pipelined.
//!
//! The loop reads whatever the socket has into a reused buffer, runs every
//! complete command in it, appends each reply to a reused output buffer, and
//! writes the whole batch back with one write: a pipeline of N commands costs
//! one read and one write. A protocol error is answered with Redis's error text
//! and the connection is closed, as Redis does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cmd::{arity_ok, lookup};
use crate::context::{ClientState, Context, ServerState};
use crate::reply::Reply;
use crate::request::{Limits, Parsed, RequestParser};

/// Initial size of a connection's read and write buffers.
pub const BUFFER_BYTES_INITIAL: usize = 16 * 1024;
/// A write buffer that grew beyond this is shrunk back after it is flushed, so
/// one large reply does not pin memory for the rest of the connection.
pub const BUFFER_BYTES_RETAINED_MAX: usize = 1024 * 1024;
/// Replies buffered before they are written out even if more commands are
/// waiting (the client output buffer bound within one batch).
pub const OUTPUT_BYTES_FLUSH_AT: usize = 64 * 1024;

/// Serves one client until it disconnects, sends QUIT, or breaks the protocol.
pub async fn serve(mut socket: TcpStream, server: Arc<ServerState>) {
    let _ = socket.set_nodelay(true);
    let mut client = ClientState::new(&server);
    // Until it authenticates, a client gets Redis's small frame limits, so an
    // anonymous connection cannot make the server buffer large requests.
    let mut parser =
        RequestParser::new(if client.authenticated { Limits::default() } else { Limits::unauthenticated() });
    let mut input = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
    let mut output = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
    let mut args: Vec<Bytes> = Vec::with_capacity(8);
    loop {
        loop {
            match parser.parse_into(&mut input, &mut args) {
                Ok(Parsed::Command) => {
                    execute(&server, &mut client, &args, &mut output);
                    if client.authenticated && parser.limits().unauthenticated {
                        parser.set_limits(Limits::default());
                    }
                    if client.closing {
                        let _ = socket.write_all(&output).await;
                        return;
                    }
                    if output.len() >= OUTPUT_BYTES_FLUSH_AT {
                        if socket.write_all(&output).await.is_err() {
                            return;
                        }
                        output.clear();
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(error) => {
                    Reply::new(&mut output, client.protocol).error(&error.to_redis_error());
                    let _ = socket.write_all(&output).await;
                    return;
                }
            }
        }
        if !output.is_empty() {
            if socket.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
            if output.capacity() > BUFFER_BYTES_RETAINED_MAX {
                output = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
            }
        }
        if let Err(error) = parser.check_query_buffer(input.len()) {
            Reply::new(&mut output, client.protocol).error(&error.to_redis_error());
            let _ = socket.write_all(&output).await;
            return;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(BUFFER_BYTES_INITIAL);
        }
        match socket.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs one command and writes its reply.
pub fn execute(server: &ServerState, client: &mut ClientState, args: &[Bytes], output: &mut BytesMut) {
    server.stats.commands.fetch_add(1, Ordering::Relaxed);
    let mut reply = Reply::new(output, client.protocol);
    let Some(spec) = lookup(&args[0]) else {
        let mut shown = String::new();
        for arg in args[1..].iter().take(20) {
            shown.push('\'');
            shown.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(128)]));
            shown.push_str("' ");
        }
        return reply.error(&format!(
            "ERR unknown command '{}', with args beginning with: {}",
            String::from_utf8_lossy(&args[0][..args[0].len().min(128)]),
            shown
        ));
    };
    if !client.authenticated && !spec.flags.contains(&"noauth") {
        return reply.error("NOAUTH Authentication required.");
    }
    if !arity_ok(spec, args.len()) {
        return reply.error(&format!("ERR wrong number of arguments for '{}' command", spec.name));
    }
    let mut context = Context { server, client, reply };
    (spec.run)(&mut context, &args[1..]);
}
