//! The shared harness of the black-box suites: a raw RESP client that
//! decodes RESP2 and RESP3 exactly (so tests can assert Redis 7's bytes and
//! error texts), and in-process nodes on free ports. Every wait is bounded.

// Each suite uses a different part of the harness.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
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

/// One region of a multi-region test: a one-node cluster of its own on its
/// own loopback address (127.0.0.`host`), so every region can serve an
/// active-active database on the same port, like separate hosts.
pub async fn start_region(name: &str, host: u8) -> Node {
    start_with(NodeConfig {
        bind: std::net::IpAddr::from([127, 0, 0, host]),
        port: 0,
        region: name.into(),
        admin_port: Some(0),
        cluster_port: Some(0),
        sync_port: Some(0),
        ..NodeConfig::default()
    })
    .await
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

// ---------------------------------------------------------------------------
// The binary.
// ---------------------------------------------------------------------------

/// The `meridian` binary, built once per test run.
///
/// `CARGO_BIN_EXE_meridian` only exists inside the crate that defines the
/// binary, so the path is derived from the workspace layout. The build runs
/// even when the binary exists: cargo makes it a no-op when it is up to date,
/// and otherwise these tests would silently run a stale binary after the
/// server's code changed. (cargo does not hold its build lock while tests
/// run, so the nested build does not wait on the outer `cargo test`.)
pub fn meridian_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace");
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
        let binary = target.join("debug").join(format!("meridian{}", std::env::consts::EXE_SUFFIX));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo)
            .args(["build", "--quiet", "-p", "meridian-cluster", "--bin", "meridian"])
            .current_dir(workspace)
            .stdin(Stdio::null())
            .spawn()
            .expect("run cargo build");
        let status = wait_until(&mut build, Duration::from_secs(900))
            .expect("`cargo build -p meridian-cluster --bin meridian` took over 15 minutes");
        assert!(status.success(), "building the meridian binary failed: {status}");
        assert!(binary.exists(), "no binary at {}", binary.display());
        binary
    })
}

/// Waits for `child` to exit, polling, for at most `limit`.
pub fn wait_until(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // This runs in plain threads (std tests or the one-time build), never
        // on a tokio worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed if the test ends without reaping it.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// Not every suite picks ports.
#[allow(unused_imports)]
pub use meridian_tests::free_port;

/// Runs the binary with `args` to completion, for at most `limit`: its
/// status, stdout and stderr (for commands whose output is small: both are
/// read once it has exited).
fn run_to_exit(args: &[String], limit: Duration) -> (ExitStatus, String, String) {
    let child = Command::new(meridian_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start meridian {args:?}: {e}"));
    let mut guard = ChildGuard(child);
    let status =
        wait_until(&mut guard.0, limit).unwrap_or_else(|| panic!("meridian {args:?} did not exit in {limit:?}"));
    use std::io::Read;
    let (mut out, mut err) = (String::new(), String::new());
    guard.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("read stdout");
    guard.0.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    (status, out, err)
}

/// Runs `meridian ctl --url URL ARGS...` to completion, for at most `limit`:
/// success, stdout and stderr.
pub async fn ctl_output(url: &str, args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut all = vec!["ctl".to_string(), "--url".into(), url.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let (status, out, err) = tokio::task::spawn_blocking(move || run_to_exit(&all, limit)).await.expect("ctl task");
    (status.success(), out, err)
}

/// Runs `meridian ctl --url URL ARGS...` (at most 120 s); returns success
/// and stdout (stderr on failure).
pub async fn ctl(url: &str, args: &[&str]) -> (bool, String) {
    let (success, out, err) = ctl_output(url, args, Duration::from_secs(120)).await;
    (success, if success { out } else { err })
}

/// Runs the binary to completion (it is expected to fail fast, within 10 s)
/// and returns its status and stderr.
pub fn run_expecting_exit(args: &[&str]) -> (ExitStatus, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (status, _, stderr) = run_to_exit(&args, Duration::from_secs(10));
    (status, stderr)
}

/// Starts the `meridian` binary with `args` and waits (bounded) until the
/// node on `port` answers PING: the child (killed when dropped) and a client.
pub async fn spawn_meridian(args: &[&str], port: u16) -> (ChildGuard, Client) {
    let binary = tokio::task::spawn_blocking(meridian_binary).await.expect("locate the binary");
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian");
    let mut guard = ChildGuard(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            panic!("meridian exited before serving: {status}");
        }
        if let Ok(Ok(stream)) = timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            let mut c = Client { stream, input: Vec::new() };
            if c.cmd(&["PING"]).await == Resp::Simple("PONG".to_string()) {
                return (guard, c);
            }
        }
        assert!(Instant::now() < deadline, "meridian did not answer PING within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a multi-node or multi-region step may take to converge (a link
/// connecting, a delta crossing, a configuration change applied).
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// [`eventually`] bounded by [`CONVERGE_TIMEOUT`].
pub async fn converges<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually(what, CONVERGE_TIMEOUT, check).await
}

/// Polls `check` until it returns `Some`, for at most `limit`: the value,
/// or a panic naming `what` was awaited.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
