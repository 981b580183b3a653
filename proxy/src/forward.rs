//! The proxy of a node that does not hold a database's master: it serves the
//! database's port like every node does and forwards each client's commands
//! to the master's node, following the master when it moves.
//!
//! One backend connection per client (to the master's database port), so
//! everything a connection carries — authentication, RESP3, transactions,
//! blocking commands, pub/sub — works exactly as on the master. Requests are
//! read with the proxy's own bounded parser and written on as RESP arrays;
//! replies are relayed as they arrive and, on the side, counted into frames
//! with `redis-protocol`, so the proxy knows which commands are answered.
//!
//! When the master changes (the route's epoch moves) or its connection
//! fails, the proxy connects to the new master and replays the connection's
//! state (`AUTH`, `HELLO`, `CLIENT SETNAME`): the client's connection stays
//! open. Commands that were in flight get an error, since the proxy cannot
//! know whether the old master ran them. A connection whose state cannot
//! move — inside `MULTI`, with `WATCH`ed keys, subscribed, or with a reply
//! half relayed — is closed instead, as if its server had gone.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::request::{Limits, Parsed, RequestParser};

/// Where a database's master is, as this node's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The master's database endpoint (`None` while no node serves it).
    pub master: Option<SocketAddr>,
    /// The master's failover epoch: a change means the master moved.
    pub epoch: u64,
    /// True if the database has a password (clients get the small
    /// unauthenticated request limits until they authenticate).
    pub password: bool,
}

/// How long a client waits for a reachable master before its connection is
/// closed.
pub const MASTER_WAIT: Duration = Duration::from_secs(10);

/// What an in-flight command answers when its master was lost.
pub const LOST_ERROR: &str =
    "TRYAGAIN the shard's master failed or moved while this command was in flight; it may or may not have run";

/// Pause between attempts to reach a master.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Read size on both sides.
const READ_BYTES: usize = 16 * 1024;
/// A reply frame larger than this that is still incomplete is counted only
/// after it doubled (so counting large replies stays linear).
const COUNT_RETRY_BYTES: usize = 64 * 1024;

/// What a forwarded command changes in the connection's state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Plain,
    Auth(Vec<Bytes>),
    Hello(Vec<Bytes>),
    SetName(Bytes),
    Multi,
    EndMulti,
    Watch,
    Unwatch,
    Subscribe,
    Reset,
    Quit,
}

fn classify(args: &[Bytes]) -> Kind {
    let is = |i: usize, name: &str| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()));
    if is(0, "auth") {
        Kind::Auth(args.to_vec())
    } else if is(0, "hello") {
        Kind::Hello(args.to_vec())
    } else if is(0, "client") && is(1, "setname") && args.len() == 3 {
        Kind::SetName(args[2].clone())
    } else if is(0, "multi") {
        Kind::Multi
    } else if is(0, "exec") || is(0, "discard") {
        Kind::EndMulti
    } else if is(0, "watch") {
        Kind::Watch
    } else if is(0, "unwatch") {
        Kind::Unwatch
    } else if ["subscribe", "psubscribe", "ssubscribe", "monitor"].iter().any(|n| is(0, n)) {
        Kind::Subscribe
    } else if is(0, "reset") {
        Kind::Reset
    } else if is(0, "quit") {
        Kind::Quit
    } else {
        Kind::Plain
    }
}

/// The connection state a new master must be given, and what cannot move.
#[derive(Debug, Default)]
struct State {
    /// Commands sent (or about to be) whose replies have not come back.
    pending: VecDeque<Kind>,
    auth: Option<Vec<Bytes>>,
    hello: Option<Vec<Bytes>>,
    name: Option<Bytes>,
    resp3: bool,
    authenticated: bool,
    in_multi: bool,
    watching: bool,
    /// Subscribed (or MONITOR): replies no longer match commands one to one.
    raw: bool,
    quitting: bool,
}

impl State {
    /// True if the connection can move to another master.
    fn movable(&self) -> bool {
        !(self.in_multi || self.watching || self.raw || self.quitting)
    }

    /// Records a reply to the oldest pending command.
    fn answered(&mut self, error: bool) {
        let Some(kind) = self.pending.pop_front() else {
            return;
        };
        match kind {
            _ if error => {}
            Kind::Auth(args) => {
                self.auth = Some(args);
                self.authenticated = true;
            }
            Kind::Hello(args) => {
                self.resp3 = args.get(1).is_some_and(|v| v.as_ref() == b"3") || (args.len() == 1 && self.resp3);
                if let Some(i) = args.iter().position(|a| a.eq_ignore_ascii_case(b"setname"))
                    && let Some(name) = args.get(i + 1)
                {
                    self.name = Some(name.clone());
                }
                self.authenticated = true;
                self.hello = Some(args);
            }
            Kind::SetName(name) => self.name = Some(name),
            Kind::Multi => self.in_multi = true,
            Kind::EndMulti => {
                self.in_multi = false;
                self.watching = false;
            }
            Kind::Watch => self.watching = true,
            Kind::Unwatch => self.watching = false,
            Kind::Subscribe => self.raw = true,
            Kind::Reset => {
                *self = State { pending: std::mem::take(&mut self.pending), ..State::default() };
            }
            Kind::Quit => self.quitting = true,
            Kind::Plain => self.authenticated = true,
        }
    }

    /// True if the next reply is RESP3: a `HELLO`'s own reply already uses
    /// the protocol it asks for.
    fn next_reply_resp3(&self) -> bool {
        match self.pending.front() {
            Some(Kind::Hello(args)) if args.len() > 1 => args[1].as_ref() == b"3",
            _ => self.resp3,
        }
    }

    /// The commands that bring a new master's connection to this state.
    fn replay(&self) -> Vec<Vec<Bytes>> {
        let mut commands = Vec::new();
        if let Some(auth) = &self.auth {
            commands.push(auth.clone());
        }
        if let Some(hello) = &self.hello {
            commands.push(hello.clone());
        }
        if let Some(name) = &self.name {
            commands.push(vec![Bytes::from_static(b"CLIENT"), Bytes::from_static(b"SETNAME"), name.clone()]);
        }
        commands
    }
}

/// Encodes one request as a RESP array of bulk strings.
pub(crate) fn encode_request(args: &[Bytes], out: &mut BytesMut) {
    let frame = Resp2Frame::Array(args.iter().cloned().map(Resp2Frame::BulkString).collect());
    // Encoding into a growable buffer cannot fail.
    let _ = redis_protocol::resp2::encode::extend_encode(out, &frame, false);
}

/// The next complete reply frame at the start of `buf`: its length and
/// whether it is an error (`None` for a push, which answers no command).
/// `Ok(None)` while incomplete.
pub(crate) fn next_frame(buf: &[u8], resp3: bool) -> Result<Option<(usize, Option<bool>)>, String> {
    if resp3 {
        use redis_protocol::resp3::types::RangeFrame;
        match redis_protocol::resp3::decode::complete::decode_range(buf) {
            Ok(Some((frame, len))) => {
                let kind = match frame {
                    RangeFrame::Push { .. } => None,
                    RangeFrame::SimpleError { .. } | RangeFrame::BlobError { .. } => Some(true),
                    _ => Some(false),
                };
                Ok(Some((len, kind)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    } else {
        use redis_protocol::resp2::types::RangeFrame;
        match redis_protocol::resp2::decode::decode_range(buf) {
            Ok(Some((frame, len))) => Ok(Some((len, Some(matches!(frame, RangeFrame::Error(_)))))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Counts the reply frames relayed so far against the pending commands.
#[derive(Default)]
struct Counter {
    /// Relayed bytes not yet counted into a frame.
    buffered: BytesMut,
    /// Don't try again before `buffered` reaches this.
    retry_at: usize,
}

impl Counter {
    fn feed(&mut self, bytes: &[u8], state: &Mutex<State>) -> Result<(), String> {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if state.raw {
            self.buffered.clear();
            return Ok(());
        }
        self.buffered.extend_from_slice(bytes);
        self.count(&mut state)
    }

    fn count(&mut self, state: &mut State) -> Result<(), String> {
        if self.buffered.len() < self.retry_at {
            return Ok(());
        }
        while !self.buffered.is_empty() && !state.raw {
            let Some((len, kind)) = next_frame(&self.buffered, state.next_reply_resp3())? else {
                self.retry_at = if self.buffered.len() >= COUNT_RETRY_BYTES { self.buffered.len() * 2 } else { 0 };
                return Ok(());
            };
            let _ = self.buffered.split_to(len);
            if let Some(error) = kind {
                state.answered(error);
            }
        }
        self.retry_at = 0;
        Ok(())
    }

    /// Counts everything buffered; true if a reply was left half relayed.
    fn finish(&mut self, state: &mut State) -> bool {
        self.retry_at = 0;
        self.count(state).is_err() || (!self.buffered.is_empty() && !state.raw)
    }
}

/// Why a session with one master ended.
enum End {
    /// The client closed or failed: the connection is over.
    Client,
    /// The master connection failed or the master moved.
    Master,
    /// The client sent a malformed request: this error, then the close.
    Protocol(String),
}

/// Serves one client connection accepted on a database port this node does
/// not master. Ends when the client leaves, when `shutdown` turns true, or
/// when the client's state cannot follow a new master.
pub async fn serve(mut socket: TcpStream, mut route: watch::Receiver<Route>, mut shutdown: watch::Receiver<bool>) {
    let _ = socket.set_nodelay(true);
    let state = Mutex::new(State::default());
    let initial = route.borrow().clone();
    let mut requests = Requests {
        parser: RequestParser::new(if initial.password { Limits::unauthenticated() } else { Limits::default() }),
        input: BytesMut::with_capacity(READ_BYTES),
        password: initial.password,
    };
    loop {
        let reached = tokio::select! {
            reached = reach_master(&mut route, &state) => reached,
            _ = shutdown.changed() => None,
        };
        let Some((backend, epoch)) = reached else {
            return;
        };
        let mut counter = Counter::default();
        let end = tokio::select! {
            end = session(&mut socket, backend, &state, &mut requests, &mut counter, &mut route, epoch) => end,
            _ = shutdown.changed() => End::Client,
        };
        match end {
            End::Client => return,
            End::Protocol(error) => {
                let mut out = BytesMut::new();
                crate::reply::Reply::new(&mut out, crate::reply::Protocol::Resp2).error(&error);
                let _ = socket.write_all(&out).await;
                return;
            }
            End::Master => {}
        }
        // The master is gone: answer what was in flight, then follow it if
        // the connection's state can move.
        let taken = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.movable().then(|| (std::mem::take(&mut state.pending), state.resp3))
        };
        let Some((lost, resp3)) = taken else {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            tracing::info!(
                in_multi = state.in_multi,
                watching = state.watching,
                raw = state.raw,
                quitting = state.quitting,
                "the master of a forwarded connection changed and its state cannot move: closing it"
            );
            return;
        };
        let mut out = BytesMut::new();
        for _ in &lost {
            crate::reply::Reply::new(
                &mut out,
                if resp3 { crate::reply::Protocol::Resp3 } else { crate::reply::Protocol::Resp2 },
            )
            .error(LOST_ERROR);
        }
        if !out.is_empty() && socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Waits until the route's epoch differs from `epoch`.
async fn moved(route: &mut watch::Receiver<Route>, epoch: u64) {
    loop {
        if route.borrow_and_update().epoch != epoch {
            return;
        }
        if route.changed().await.is_err() {
            // The database is gone from this node: end (the caller stops).
            std::future::pending::<()>().await;
        }
    }
}

/// Connects to the route's master and replays the connection's state;
/// `None` if no master could be reached within [`MASTER_WAIT`] or the
/// replay was refused.
async fn reach_master(route: &mut watch::Receiver<Route>, state: &Mutex<State>) -> Option<(TcpStream, u64)> {
    let deadline = tokio::time::Instant::now() + MASTER_WAIT;
    loop {
        let current = route.borrow_and_update().clone();
        if let Some(addr) = current.master
            && let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            let _ = stream.set_nodelay(true);
            let (replay, resp3) = {
                let state = state.lock().unwrap_or_else(|p| p.into_inner());
                (state.replay(), state.resp3)
            };
            match replay_state(&mut stream, &replay, resp3).await {
                Ok(()) => return Some((stream, current.epoch)),
                Err(Replay::Refused(error)) => {
                    tracing::warn!(%addr, error, "the master refused a forwarded connection's state; closing it");
                    return None;
                }
                Err(Replay::Io) => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
            changed = route.changed() => if changed.is_err() { return None },
        }
    }
}

pub(crate) enum Replay {
    Io,
    Refused(String),
}

/// Sends the replay commands and checks their replies (none may fail).
pub(crate) async fn replay_state(
    stream: &mut TcpStream,
    commands: &[Vec<Bytes>],
    resp3_after_hello: bool,
) -> Result<(), Replay> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut out = BytesMut::new();
    for command in commands {
        encode_request(command, &mut out);
    }
    stream.write_all(&out).await.map_err(|_| Replay::Io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let hello = commands.iter().position(|c| c[0].eq_ignore_ascii_case(b"hello"));
    let mut answered = 0;
    let read = async {
        while answered < commands.len() {
            // Replies from the HELLO on are in the protocol it asked for.
            let resp3 = resp3_after_hello && hello.is_some_and(|h| answered >= h);
            match next_frame(&buf, resp3) {
                Ok(Some((len, Some(true)))) => {
                    let error = String::from_utf8_lossy(&buf[1..len.saturating_sub(2)]).into_owned();
                    // A node still forwarding to the old master answers
                    // TRYAGAIN while its own view catches up: try again.
                    if error.starts_with("TRYAGAIN") || error.starts_with("CLUSTERDOWN") {
                        return Err(Replay::Io);
                    }
                    return Err(Replay::Refused(error));
                }
                Ok(Some((len, _))) => {
                    let _ = buf.split_to(len);
                    answered += 1;
                }
                Ok(None) => {
                    if stream.read_buf(&mut buf).await.map_err(|_| Replay::Io)? == 0 {
                        return Err(Replay::Io);
                    }
                }
                Err(_) => return Err(Replay::Io),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.map_err(|_| Replay::Io)?
}

/// The client's side of a forwarded connection: what survives a change of
/// master.
struct Requests {
    parser: RequestParser,
    /// Read from the client, not yet parsed.
    input: BytesMut,
    /// The database has a password (the parser's limits follow auth).
    password: bool,
}

/// Relays between the client and one master until either side ends.
async fn session(
    socket: &mut TcpStream,
    mut backend: TcpStream,
    state: &Mutex<State>,
    requests: &mut Requests,
    counter: &mut Counter,
    route: &mut watch::Receiver<Route>,
    epoch: u64,
) -> End {
    let Requests { parser, input, password } = requests;
    let password = *password;
    let (mut client_read, mut client_write) = socket.split();
    let (mut master_read, mut master_write) = backend.split();
    let upstream = async {
        let mut args: Vec<Bytes> = Vec::with_capacity(8);
        let mut out = BytesMut::with_capacity(READ_BYTES);
        loop {
            loop {
                match parser.parse_into(input, &mut args) {
                    Ok(Parsed::Command) => {
                        let kind = classify(&args);
                        state.lock().unwrap_or_else(|p| p.into_inner()).pending.push_back(kind);
                        encode_request(&args, &mut out);
                        if out.len() >= READ_BYTES {
                            break;
                        }
                    }
                    Ok(Parsed::Incomplete) => break,
                    Err(error) => {
                        // As the master would: the replies to what came
                        // before, then the error, then the close.
                        if !out.is_empty() && master_write.write_all(&out).await.is_err() {
                            return End::Master;
                        }
                        return End::Protocol(error.to_redis_error());
                    }
                }
            }
            if !out.is_empty() {
                if master_write.write_all(&out).await.is_err() {
                    return End::Master;
                }
                out.clear();
                continue;
            }
            if parser.check_query_buffer(input.len()).is_err() {
                return End::Client;
            }
            let authenticated = state.lock().unwrap_or_else(|p| p.into_inner()).authenticated;
            if password && authenticated && parser.limits().unauthenticated {
                parser.set_limits(Limits::default());
            }
            input.reserve(READ_BYTES);
            match client_read.read_buf(input).await {
                Ok(0) | Err(_) => return End::Client,
                Ok(_) => {}
            }
        }
    };
    // Only the read from the master is ever interrupted (by a move), never a
    // write to the client: what the counter saw is what the client got.
    let downstream = async {
        let mut buf = BytesMut::with_capacity(READ_BYTES);
        loop {
            buf.clear();
            let read = tokio::select! {
                read = master_read.read_buf(&mut buf) => read.ok(),
                _ = moved(route, epoch) => None,
            };
            if read.is_none_or(|n| n == 0) {
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                if counter.finish(&mut state) {
                    // Half a reply went out: the client cannot be resumed.
                    state.raw = true;
                }
                return End::Master;
            }
            if counter.feed(&buf, state).is_err() {
                // Not RESP from the master: give up on this client.
                return End::Client;
            }
            if client_write.write_all(&buf).await.is_err() {
                return End::Client;
            }
        }
    };
    tokio::pin!(downstream);
    let end = tokio::select! {
        end = upstream => end,
        end = &mut downstream => return end,
    };
    if let End::Master = end {
        // The master stopped taking requests: its replies still count.
        return tokio::time::timeout(Duration::from_secs(1), &mut downstream).await.unwrap_or_else(|_| {
            state.lock().unwrap_or_else(|p| p.into_inner()).raw = true;
            End::Master
        });
    }
    if let End::Protocol(_) = &end {
        // The replies to the commands before the malformed one go out first
        // (bounded: a master that does not answer is not waited for long).
        let drained = async {
            while !state.lock().unwrap_or_else(|p| p.into_inner()).pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            _ = drained => {}
            _ = &mut downstream => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn replies_are_counted_against_commands_and_state_follows_them() {
        let state = Mutex::new(State::default());
        for command in [&["AUTH", "pw"][..], &["HELLO", "3", "SETNAME", "app"], &["GET", "k"], &["MULTI"]] {
            state.lock().unwrap().pending.push_back(classify(&args(command)));
        }
        let mut counter = Counter::default();
        // +OK (RESP2), then HELLO's map in RESP3, a null, half of +OK.
        counter.feed(b"+OK\r\n", &state).unwrap();
        assert!(state.lock().unwrap().auth.is_some());
        counter.feed(b"%1\r\n+proto\r\n:3\r\n", &state).unwrap();
        {
            let state = state.lock().unwrap();
            assert!(state.resp3 && state.name.as_deref() == Some(&b"app"[..]));
        }
        counter.feed(b"_\r\n+O", &state).unwrap();
        assert_eq!(state.lock().unwrap().pending.len(), 1, "MULTI's reply is half here");
        assert!(state.lock().unwrap().movable());
        counter.feed(b"K\r\n", &state).unwrap();
        let state = state.into_inner().unwrap();
        assert!(state.in_multi && !state.movable(), "a transaction cannot move");
        assert_eq!(state.replay().len(), 3, "AUTH, HELLO, CLIENT SETNAME");
    }

    #[test]
    fn an_error_reply_changes_nothing_and_a_push_answers_no_command() {
        let state = Mutex::new(State { resp3: true, ..State::default() });
        state.lock().unwrap().pending.push_back(classify(&args(&["AUTH", "wrong"])));
        state.lock().unwrap().pending.push_back(classify(&args(&["PING"])));
        let mut counter = Counter::default();
        counter.feed(b">2\r\n+message\r\n+x\r\n-WRONGPASS invalid\r\n", &state).unwrap();
        let state = state.into_inner().unwrap();
        assert!(state.auth.is_none() && state.pending.len() == 1);
    }

    #[test]
    fn a_half_relayed_reply_pins_the_connection() {
        let state = Mutex::new(State::default());
        state.lock().unwrap().pending.push_back(Kind::Plain);
        let mut counter = Counter::default();
        counter.feed(b"$10\r\nhello", &state).unwrap();
        let mut state = state.into_inner().unwrap();
        assert!(counter.finish(&mut state));
    }

    #[test]
    fn large_replies_are_counted_once_complete() {
        let state = Mutex::new(State::default());
        state.lock().unwrap().pending.push_back(Kind::Plain);
        let mut counter = Counter::default();
        let mut reply = format!("*{}\r\n", 100_000).into_bytes();
        for _ in 0..100_000 {
            reply.extend_from_slice(b"$1\r\nx\r\n");
        }
        for chunk in reply.chunks(4096) {
            counter.feed(chunk, &state).unwrap();
        }
        let mut state = state.into_inner().unwrap();
        assert_eq!(state.pending.len(), 1, "counted once it doubled, or when the master is lost");
        assert!(!counter.finish(&mut state), "the whole reply was relayed");
        assert!(state.pending.is_empty());
    }
}
