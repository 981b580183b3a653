//! The shared harness of the black-box suites: a raw RESP client that
//! decodes RESP2 and RESP3 exactly (so tests can assert Redis 7's bytes and
//! error texts), and in-process nodes on free ports. Every wait is bounded.

// Each suite uses a different part of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use meridian_cluster::node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long any single reply (or connect, or write) may take before the test
/// fails. Generous because the suite runs unoptimised on a small machine.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a bulk exchange (10,000 pipelined commands) may take.
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// A raw RESP client.
// ---------------------------------------------------------------------------

/// One decoded reply, RESP2 or RESP3.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Nil,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Double(String),
    Bool(bool),
}

impl Resp {
    /// The elements of an array (or RESP3 set); panics otherwise.
    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(items) | Resp::Set(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    /// The bytes of a bulk string; panics otherwise.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Resp::Bulk(bytes) => bytes,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    /// A bulk string as UTF-8 text; panics otherwise.
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes().to_vec()).expect("bulk string is UTF-8")
    }

    /// An integer reply; panics otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
}

pub fn ok() -> Resp {
    Resp::Simple("OK".to_string())
}

pub fn simple(text: &str) -> Resp {
    Resp::Simple(text.to_string())
}

pub fn bulk(data: impl AsRef<[u8]>) -> Resp {
    Resp::Bulk(data.as_ref().to_vec())
}

pub fn int(n: i64) -> Resp {
    Resp::Int(n)
}

pub fn error(text: &str) -> Resp {
    Resp::Error(text.to_string())
}

pub fn nil() -> Resp {
    Resp::Nil
}

/// The error every command gives for a wrong argument count.
pub fn arity_error(command: &str) -> Resp {
    error(&format!("ERR wrong number of arguments for '{command}' command"))
}

pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const SYNTAX: &str = "ERR syntax error";

/// Splits off one `\r\n`-terminated line starting at `from`.
pub fn line(buf: &[u8], from: usize) -> Option<(&str, usize)> {
    let end = from + buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    let text = std::str::from_utf8(&buf[from..end]).expect("reply header line is UTF-8");
    Some((text, end + 2))
}

/// Decodes one reply at `at`: `None` if the buffer does not hold all of it
/// yet. Malformed replies panic: the server must never send one.
pub fn decode(buf: &[u8], at: usize) -> Option<(Resp, usize)> {
    let kind = *buf.get(at)?;
    let (text, next) = line(buf, at + 1)?;
    let number = || -> i64 { text.parse().unwrap_or_else(|_| panic!("bad length or integer {text:?} in reply")) };
    match kind {
        b'+' => Some((Resp::Simple(text.to_string()), next)),
        b'-' => Some((Resp::Error(text.to_string()), next)),
        b':' => Some((Resp::Int(number()), next)),
        b'_' => Some((Resp::Nil, next)),
        b',' => Some((Resp::Double(text.to_string()), next)),
        b'#' => Some((Resp::Bool(text == "t"), next)),
        b'$' => {
            let len = number();
            if len < 0 {
                return Some((Resp::Nil, next));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return None;
            }
            assert_eq!(&buf[end..end + 2], b"\r\n", "bulk string not terminated by CRLF");
            Some((Resp::Bulk(buf[next..end].to_vec()), end + 2))
        }
        b'*' | b'~' | b'%' => {
            let len = number();
            if len < 0 {
                return Some((Resp::Nil, next));
            }
            let count = if kind == b'%' { 2 * len as usize } else { len as usize };
            let mut items = Vec::with_capacity(count.min(1024));
            let mut position = next;
            for _ in 0..count {
                let (item, after) = decode(buf, position)?;
                items.push(item);
                position = after;
            }
            let reply = match kind {
                b'*' => Resp::Array(items),
                b'~' => Resp::Set(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut items = items.into_iter();
                    while let (Some(key), Some(value)) = (items.next(), items.next()) {
                        pairs.push((key, value));
                    }
                    Resp::Map(pairs)
                }
            };
            Some((reply, position))
        }
        other => panic!("unexpected reply type byte {:?} in {:?}", other as char, String::from_utf8_lossy(buf)),
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A client on a raw TCP socket: sends bytes, decodes replies.
pub struct Client {
    pub stream: TcpStream,
    pub input: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Client { stream, input: Vec::new() }
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(REPLY_TIMEOUT, self.stream.write_all(bytes)).await.expect("write timed out").expect("write failed");
    }

    /// Reads more bytes into the input buffer; panics on timeout or EOF.
    pub async fn fill(&mut self, limit: Duration) {
        // Read straight into the heap buffer: a large array here would sit in
        // every future that reads a reply, and overflow the test thread's stack.
        self.input.reserve(64 * 1024);
        let read = timeout(limit, self.stream.read_buf(&mut self.input))
            .await
            .unwrap_or_else(|_| {
                panic!("no reply within {limit:?}; buffered so far: {:?}", String::from_utf8_lossy(&self.input))
            })
            .expect("read failed");
        assert!(read > 0, "server closed the connection; buffered: {:?}", String::from_utf8_lossy(&self.input));
    }

    /// Reads one reply.
    pub async fn read(&mut self) -> Resp {
        loop {
            if let Some((reply, used)) = decode(&self.input, 0) {
                self.input.drain(..used);
                return reply;
            }
            self.fill(REPLY_TIMEOUT).await;
        }
    }

    /// Reads exactly `len` raw bytes (for asserting the wire encoding).
    pub async fn read_raw(&mut self, len: usize, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        while self.input.len() < len {
            self.fill(deadline.saturating_duration_since(Instant::now())).await;
        }
        self.input.drain(..len).collect()
    }

    /// Reads one CRLF-terminated line, raw, including the CRLF.
    pub async fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                return self.input.drain(..end + 2).collect();
            }
            self.fill(REPLY_TIMEOUT).await;
        }
    }

    /// Sends a command and reads its reply.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(&encode(args)).await;
        self.read().await
    }

    /// Asserts the server closes the connection, sending nothing more,
    /// within the reply timeout.
    pub async fn expect_closed(&mut self) {
        assert!(self.input.is_empty(), "unread bytes before close: {:?}", String::from_utf8_lossy(&self.input));
        let mut chunk = [0u8; 4096];
        match timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("the server did not close the connection"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!("unexpected bytes before close: {:?}", String::from_utf8_lossy(&chunk[..n])),
            // A reset is a close too: it happens if the server closes with
            // bytes of ours still unread.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes.
// ---------------------------------------------------------------------------

/// How long a node may take to start: it initialises its one-node cluster
/// through Raft before it returns.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start_with(config: NodeConfig) -> Node {
    timeout(NODE_START_TIMEOUT, Node::start(&config)).await.expect("node start timed out").expect("node starts")
}

pub async fn start() -> Node {
    start_with(NodeConfig { port: 0, ..NodeConfig::default() }).await
}

pub async fn stop(node: Node) {
    timeout(NODE_START_TIMEOUT, node.stop()).await.expect("node stop timed out");
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// Asserts `reply` is an integer in `range`.
pub fn assert_int_in(reply: Resp, range: std::ops::RangeInclusive<i64>, what: &str) {
    let value = reply.int();
    assert!(range.contains(&value), "{what}: {value} not in {range:?}");
}

/// Sorted texts of an array of bulk strings.
pub fn sorted_texts(reply: &Resp) -> Vec<String> {
    let mut texts: Vec<String> = reply.items().iter().map(Resp::text).collect();
    texts.sort();
    texts
}
