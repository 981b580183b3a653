//! Bounded, non-recursive, resumable parser for client requests.
//!
//! Role: a proxy connection reads client bytes into a [`BytesMut`] and calls
//! [`RequestParser::parse`] (or [`RequestParser::parse_into`]) until it reports
//! that more bytes are needed. Each call returns at most one complete command
//! whose arguments are zero-copy [`Bytes`] slices of the read buffer — or,
//! with [`RequestParser::parse_in_place`] (the client connection's hot path),
//! leaves the command in the buffer and gives its arguments as byte ranges
//! of it, so that no argument costs a reference count. The parser does no
//! I/O, so tests can drive it with any byte sequence and any chunking.
//!
//! It accepts exactly what Redis 7 accepts from a client (`processMultibulkBuffer`
//! and `processInlineBuffer` in Redis's `src/networking.c`): arrays of bulk
//! strings (`*<n>\r\n` followed by n times `$<len>\r\n<data>\r\n`) and inline
//! commands (any line that does not start with `*`, split with the quoting
//! rules of Redis's `sdssplitargs`). Clients never send other RESP types, so
//! nothing here nests and nothing recurses: `*1\r\n*1\r\n` is the error
//! `expected '$', got '*'`, not a nested array. `redis-protocol` is not used
//! for requests because it has no limits, recurses on nesting and re-parses a
//! partial frame from the start on every read (see shared/DEPENDENCIES.md).
//!
//! Design decisions, each for a reason:
//! - **Nothing is consumed until a command is complete.** The parser keeps
//!   offsets into the buffer (where the current argument header starts, how far
//!   a line has been searched, the ranges of finished arguments) and, once the
//!   last argument arrives, splits the whole command off with one
//!   `split_to(..).freeze()` and hands out cheap `Bytes::slice`s of it. So the
//!   caller must only *append* to the buffer between calls.
//! - **Linear work.** A line is never searched twice and a bulk payload is
//!   never searched at all (its length is known), so a 2.6 MB `MSET` arriving
//!   in 4 KB reads costs the same as arriving in one read.
//! - **Every length is capped** by [`Limits`] (Redis's defaults), and no
//!   allocation is sized from an untrusted length beyond a small cap.
//! - **Errors are final.** Redis replies `-ERR Protocol error: ...` and closes
//!   the connection; the parser remembers the error and returns it again, so a
//!   caller cannot accidentally resynchronise on garbage.
//! - **Chunking never changes the outcome.** Limits are checked against the
//!   position of the terminator, not against how many bytes happened to be
//!   buffered, so the same bytes give the same commands and the same error
//!   however they are split. The tests and the fuzz target check this.
//!
//! Deliberate differences from Redis 7, all stricter or safer:
//! - Bulk data must be followed by `\r\n` ([`ProtocolError::MissingBulkTerminator`]);
//!   Redis skips those two bytes unchecked. A `\r` in a length line must be
//!   followed by `\n`; Redis does not check that byte either.
//! - A line longer than its limit is rejected even when it arrived in one read
//!   (Redis only checks the limit while the line is still unterminated). This
//!   is what makes the outcome independent of chunking.
//! - A byte other than `$` where an argument header must start is rejected at
//!   once instead of after the rest of the line arrives (same error text).
//! - NUL bytes in an inline line are ordinary bytes. Redis searches for the
//!   line end with `strchr`, which stops at NUL, so it never completes such a
//!   line until it hits the size limit.
//! - The "unauthenticated multibulk/bulk length" limits of Redis 7 are not
//!   built in: a connection that wants them swaps in tighter [`Limits`] with
//!   [`RequestParser::set_limits`] until the client authenticates.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// Default largest bulk string, in bytes: Redis's `proto-max-bulk-len` (512 MB).
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;

/// Default largest number of arguments in one command.
///
/// Redis 7 allows up to `INT_MAX` for authenticated clients; older Redis
/// allowed 1024 * 1024, which is still far above what a real command needs
/// and keeps the per-command argument index small.
pub const ARGS_MAX_DEFAULT: usize = 1024 * 1024;

/// Default largest inline command line, in bytes (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Default largest `*<count>` or `$<len>` header line, in bytes. Redis uses
/// `PROTO_INLINE_MAX_SIZE` for these too.
pub const HEADER_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Default largest read buffer of one client, in bytes (Redis's
/// `client-query-buffer-limit`, 1 GiB).
pub const QUERY_BUFFER_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;

/// Default largest read-buffer reservation made on the word of a `$<len>` header.
///
/// Reserving the exact size of a bulk that is about to arrive saves the buffer
/// from growing in several steps, but the length is untrusted: a 13-byte header
/// must not make the proxy reserve 512 MB. Above this cap the caller's normal
/// read loop grows the buffer as the data actually arrives.
pub const BULK_RESERVE_BYTES_MAX_DEFAULT: usize = 32 * 1024;

/// At most this many argument slots are reserved on the word of a `*<count>`
/// header; a longer command grows the index as its arguments arrive.
const ARGS_RESERVE_MAX: usize = 1024;

/// The argument index keeps at most this capacity between commands, so one
/// huge command does not pin its index for the life of the connection.
const ARGS_RETAINED_MAX: usize = 4 * ARGS_RESERVE_MAX;

/// Longest decimal length Redis's `string2ll` accepts (`-9223372036854775808`).
const LENGTH_DIGITS_MAX: usize = 20;

/// Every bound the parser enforces. [`Limits::default`] gives Redis 7's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string length; above it: `invalid bulk length`.
    pub bulk_bytes_max: usize,
    /// Largest argument count of one command; above it: `invalid multibulk length`.
    pub args_max: usize,
    /// Largest inline line, counting every byte before the `\n` (a `\r` too);
    /// above it: `too big inline request`.
    pub inline_bytes_max: usize,
    /// Largest `*<count>` / `$<len>` line, counting the bytes before its `\r`;
    /// above it: `too big mbulk count string` / `too big bulk count string`.
    pub header_bytes_max: usize,
    /// Largest read buffer, checked by [`RequestParser::check_query_buffer`].
    pub query_buffer_bytes_max: usize,
    /// Largest reservation made for a bulk string that has been announced but
    /// has not arrived yet (see [`BULK_RESERVE_BYTES_MAX_DEFAULT`]).
    pub bulk_reserve_bytes_max: usize,
    /// The client has not authenticated: the count and length errors use
    /// Redis's `unauthenticated ...` texts.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bulk_bytes_max: BULK_BYTES_MAX_DEFAULT,
            args_max: ARGS_MAX_DEFAULT,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
            header_bytes_max: HEADER_BYTES_MAX_DEFAULT,
            query_buffer_bytes_max: QUERY_BUFFER_BYTES_MAX_DEFAULT,
            bulk_reserve_bytes_max: BULK_RESERVE_BYTES_MAX_DEFAULT,
            unauthenticated: false,
        }
    }
}

/// Most arguments of a command from a client that has not authenticated
/// (Redis 7: 10), so an anonymous client cannot make the server buffer much.
pub const UNAUTHENTICATED_ARGS_MAX: usize = 10;
/// Largest bulk string from a client that has not authenticated (Redis 7: 16 KiB).
pub const UNAUTHENTICATED_BULK_BYTES_MAX: usize = 16 * 1024;

impl Limits {
    /// The limits for a client that has not authenticated yet.
    pub fn unauthenticated() -> Limits {
        Limits {
            args_max: UNAUTHENTICATED_ARGS_MAX,
            bulk_bytes_max: UNAUTHENTICATED_BULK_BYTES_MAX,
            bulk_reserve_bytes_max: BULK_RESERVE_BYTES_MAX_DEFAULT.min(UNAUTHENTICATED_BULK_BYTES_MAX),
            unauthenticated: true,
            ..Limits::default()
        }
    }

    /// Checks that the limits make sense together and names the first one
    /// that does not.
    ///
    /// The parser never panics whatever the limits are; this catches
    /// configurations that would reject every request (for example a header
    /// limit too short to hold `*1`).
    ///
    /// # Errors
    ///
    /// A description of the first unusable limit.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.args_max == 0 {
            return Err("args_max must allow at least one argument");
        }
        // `*1` and `$0` are two bytes before their `\r`.
        if self.header_bytes_max < 2 {
            return Err("header_bytes_max must hold at least `*1`");
        }
        if self.inline_bytes_max == 0 {
            return Err("inline_bytes_max must allow a non-empty line");
        }
        if self.query_buffer_bytes_max < self.inline_bytes_max || self.query_buffer_bytes_max < self.header_bytes_max {
            return Err("query_buffer_bytes_max must hold one full inline or header line");
        }
        Ok(())
    }
}

/// A protocol violation by the client.
///
/// `Display` gives exactly the text Redis puts after `ERR Protocol error: `;
/// [`ProtocolError::to_redis_error`] gives the whole error line. Redis closes
/// the connection after replying, and so should the proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `*<count>` header is not a valid integer or exceeds
    /// [`Limits::args_max`] (also used when an inline command has more
    /// arguments than that).
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$<len>` header is not a valid integer, is negative, or exceeds
    /// [`Limits::bulk_bytes_max`].
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A client that has not authenticated announced more than
    /// [`UNAUTHENTICATED_ARGS_MAX`] arguments.
    #[error("unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A client that has not authenticated announced a bulk string longer than
    /// [`UNAUTHENTICATED_BULK_BYTES_MAX`].
    #[error("unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An argument inside an array does not start with `$`.
    ///
    /// Redis prints the raw byte and turns `\r` and `\n` into spaces; so do
    /// we, except that other bytes outside printable ASCII are shown as `\xHH`
    /// so the reply stays valid UTF-8 on one line.
    #[error("expected '$', got '{}'", DisplayByte(*.got))]
    ExpectedBulk {
        /// The byte found where `$` was expected.
        got: u8,
    },
    /// An inline command has an unterminated quote, or a closing quote not
    /// followed by a space.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An inline line is longer than [`Limits::inline_bytes_max`].
    #[error("too big inline request")]
    InlineTooBig,
    /// A `*<count>` line is longer than [`Limits::header_bytes_max`].
    #[error("too big mbulk count string")]
    MultibulkHeaderTooBig,
    /// A `$<len>` line is longer than [`Limits::header_bytes_max`].
    #[error("too big bulk count string")]
    BulkHeaderTooBig,
    /// Bulk data is not followed by `\r\n`.
    ///
    /// Redis has no such error (it skips the two bytes unchecked, so the next
    /// header usually fails instead); the text is ours.
    #[error("expected '\\r\\n' after bulk data")]
    MissingBulkTerminator,
    /// The client's read buffer grew past [`Limits::query_buffer_bytes_max`].
    ///
    /// Redis logs this and closes the connection without replying; a proxy
    /// may do the same. The text is ours.
    #[error("query buffer of {buffered_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    QueryBufferLimit {
        /// Bytes buffered when the check failed.
        buffered_bytes: usize,
        /// The limit in force.
        limit_bytes: usize,
    },
}

impl ProtocolError {
    /// The error line Redis sends for this violation, without the leading `-`
    /// and trailing `\r\n` of RESP framing: `ERR Protocol error: <text>`.
    pub fn to_redis_error(&self) -> String {
        format!("ERR Protocol error: {self}")
    }
}

/// Shows one byte the way it can safely appear inside a one-line error reply.
struct DisplayByte(u8);

impl fmt::Display for DisplayByte {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            // Redis maps CR and LF to spaces so the reply stays on one line.
            b'\r' | b'\n' => formatter.write_str(" "),
            byte @ 0x20..=0x7e => write!(formatter, "{}", char::from(byte)),
            byte => write!(formatter, "\\x{byte:02x}"),
        }
    }
}

/// One client command: its name followed by its arguments.
///
/// Arguments are [`Bytes`] slices of the connection's read buffer, so cloning
/// or forwarding them copies nothing. A parsed command always has at least one
/// argument, because Redis skips empty requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    args: Vec<Bytes>,
}

impl Command {
    /// All arguments, the command name first.
    pub fn args(&self) -> &[Bytes] {
        &self.args
    }

    /// The command name as sent (not case-folded). Empty only for an empty
    /// name such as `*1\r\n$0\r\n\r\n`, which Redis answers with "unknown command".
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[], |name| name.as_ref())
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Always `false` for a command from the parser; present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Gives the arguments back, for example to reuse the vector with
    /// [`RequestParser::parse_into`].
    pub fn into_args(self) -> Vec<Bytes> {
        self.args
    }
}

/// Where [`RequestParser::parse_in_place`] left a complete command.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// The command is the first `frame_len` bytes of the buffer, still there;
    /// its arguments are [`RequestParser::arg_ranges`] of them. The caller
    /// consumes the frame (`advance(frame_len)`) before parsing again.
    Frame {
        /// Length of the command's bytes at the front of the buffer.
        frame_len: usize,
    },
    /// An inline command: its arguments (unquoted, so not slices of the
    /// buffer) were written into the argument vector, its line consumed.
    Owned,
}

/// Outcome of [`RequestParser::parse_into`] when the input is valid so far.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete command was split off the buffer into the argument vector.
    Command,
    /// The buffer holds no complete command yet; read more and call again.
    Incomplete,
}

/// Where the parser stands inside the current request. Offsets count from
/// the start of the read buffer, which holds the request's first byte because
/// nothing is consumed before the request is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests; the next byte decides between array and inline.
    Idle,
    /// Inside an inline line; bytes before `scanned` hold no `\n`.
    Inline { scanned: usize },
    /// Inside the `*<count>` line; bytes `1..scanned` hold no `\r`.
    ArrayHeader { scanned: usize },
    /// Before or inside the `$<len>` line starting at `start`; bytes
    /// `start + 1..scanned` hold no `\r`. `remaining` counts this argument.
    BulkHeader { start: usize, scanned: usize, remaining: usize },
    /// Waiting for `len` bytes of data at `start` and their `\r\n`.
    /// `remaining` counts this argument.
    BulkData { start: usize, len: usize, remaining: usize },
}

/// What a state handler tells the loop in [`RequestParser::step`].
enum Step {
    /// The state changed; run the next handler.
    Continue,
    /// End this call with the given outcome.
    Done(Parsed),
}

/// A length line that has been read completely, or how far it was searched.
enum LengthLine {
    Complete { value: i64, next: usize },
    Incomplete { scanned: usize },
}

/// Resumable request parser for one client connection.
///
/// Contract: between calls the caller only appends to the buffer (or lets
/// the parser consume from it). After an error the parser keeps returning
/// that error until [`RequestParser::reset`]; the connection should send
/// [`ProtocolError::to_redis_error`] and close.
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// Byte ranges of the finished arguments of the current array, relative
    /// to the buffer start. Reused across commands to avoid allocating.
    arg_ranges: Vec<(usize, usize)>,
    /// A complete array's length, left at the buffer's front by the last
    /// step (its argument ranges are `arg_ranges`); the caller takes it.
    frame_len: Option<usize>,
    /// The first protocol error seen; it ends the connection.
    failure: Option<ProtocolError>,
    /// Bytes searched for line ends so far, to prove linear work in tests.
    #[cfg(test)]
    bytes_examined: usize,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl RequestParser {
    /// A parser that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        debug_assert!(limits.validate().is_ok(), "{:?}", limits.validate());
        Self {
            limits,
            state: State::Idle,
            arg_ranges: Vec::new(),
            frame_len: None,
            failure: None,
            #[cfg(test)]
            bytes_examined: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits, for example to relax them once a client has
    /// authenticated. A header already parsed keeps the decision made under
    /// the old limits; everything after uses the new ones.
    pub fn set_limits(&mut self, limits: Limits) {
        debug_assert!(limits.validate().is_ok(), "{:?}", limits.validate());
        self.limits = limits;
    }

    /// Forgets any partial request and any error, ready for a fresh buffer
    /// (for example when the parser is reused for a new connection).
    pub fn reset(&mut self) {
        self.failure = None;
        self.restart();
    }

    /// Fails when a client's read buffer holding `buffered` bytes has grown
    /// past [`Limits::query_buffer_bytes_max`]. The connection calls this
    /// after each read, as Redis does with `client-query-buffer-limit`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::QueryBufferLimit`] when `buffered` exceeds the limit.
    pub fn check_query_buffer(&self, buffered: usize) -> Result<(), ProtocolError> {
        if buffered > self.limits.query_buffer_bytes_max {
            return Err(ProtocolError::QueryBufferLimit {
                buffered_bytes: buffered,
                limit_bytes: self.limits.query_buffer_bytes_max,
            });
        }
        Ok(())
    }

    /// Parses the next command from `buf`, splitting its bytes off the front.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete command yet; the bytes
    /// of a partial command stay in `buf` and are not searched again next time.
    /// Empty requests (`\r\n`, `*0\r\n`, `*-1\r\n`) are consumed and skipped.
    /// Allocates only the argument vector; use [`RequestParser::parse_into`]
    /// to reuse one.
    ///
    /// # Errors
    ///
    /// The first protocol violation in the input, and the same error on every
    /// later call until [`RequestParser::reset`].
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        let mut args = Vec::new();
        match self.parse_into(buf, &mut args)? {
            Parsed::Command => Ok(Some(Command { args })),
            Parsed::Incomplete => Ok(None),
        }
    }

    /// Like [`RequestParser::parse`], but writes the arguments into `args`
    /// (cleared first) so a connection can reuse one vector for every command.
    ///
    /// On [`Parsed::Incomplete`] and on error, `args` is left empty.
    ///
    /// # Errors
    ///
    /// As for [`RequestParser::parse`].
    pub fn parse_into(&mut self, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<Parsed, ProtocolError> {
        let parsed = self.parse_step(buf, args)?;
        if let Some(frame_len) = self.frame_len.take() {
            // One split per command; every argument then shares that allocation.
            let frame = buf.split_to(frame_len).freeze();
            args.reserve(self.arg_ranges.len());
            args.extend(self.arg_ranges.iter().map(|&(start, end)| frame.slice(start..end)));
            self.arg_ranges.clear();
        }
        Ok(parsed)
    }

    /// Like [`RequestParser::parse_into`], but an array command stays in the
    /// buffer: the caller reads its arguments as [`RequestParser::arg_ranges`]
    /// of its bytes, then consumes them. No argument becomes a [`Bytes`] of
    /// its own, so a command costs no reference counting — the connection's
    /// hot path (measured at `-P 16`: the per-argument clone and drop of a
    /// shared buffer's count were ~6% of the server's time for HSET).
    ///
    /// `Ok(None)` when no complete command is buffered; inline commands,
    /// whose arguments are unquoted copies, come back in `args`.
    ///
    /// # Errors
    ///
    /// As for [`RequestParser::parse`].
    pub fn parse_in_place(
        &mut self,
        buf: &mut BytesMut,
        args: &mut Vec<Bytes>,
    ) -> Result<Option<InPlace>, ProtocolError> {
        Ok(match self.parse_step(buf, args)? {
            Parsed::Incomplete => None,
            Parsed::Command => Some(match self.frame_len.take() {
                Some(frame_len) => InPlace::Frame { frame_len },
                None => InPlace::Owned,
            }),
        })
    }

    /// The argument ranges, within its frame, of the command
    /// [`RequestParser::parse_in_place`] last returned as
    /// [`InPlace::Frame`].
    pub fn arg_ranges(&self) -> &[(usize, usize)] {
        &self.arg_ranges
    }

    /// One call's parse: a complete array is left in the buffer with its
    /// length in `frame_len`; an inline command's arguments go to `args`.
    fn parse_step(&mut self, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<Parsed, ProtocolError> {
        args.clear();
        if self.state == State::Idle {
            // The ranges of the frame handed out last time (consumed since).
            self.arg_ranges.clear();
            if self.arg_ranges.capacity() > ARGS_RETAINED_MAX {
                self.arg_ranges.shrink_to(ARGS_RESERVE_MAX);
            }
        }
        if let Some(error) = &self.failure {
            return Err(error.clone());
        }
        // A caller that consumed or swapped the buffer behind our back broke
        // the contract; start over rather than index past the end.
        debug_assert!(self.progress_end() <= buf.len(), "the read buffer shrank between calls");
        if self.progress_end() > buf.len() {
            self.restart();
        }
        let result = self.step(buf, args);
        match &result {
            Ok(Parsed::Command) if self.frame_len.is_some() => {}
            Ok(_) => debug_assert!(self.invariants_hold(buf.len())),
            Err(error) => {
                self.failure = Some(error.clone());
                self.restart();
                args.clear();
            }
        }
        result
    }

    /// Drops the partial request, keeping the argument index's capacity.
    fn restart(&mut self) {
        self.state = State::Idle;
        self.arg_ranges.clear();
    }

    /// How far into the buffer the current state refers.
    fn progress_end(&self) -> usize {
        match self.state {
            State::Idle => 0,
            State::Inline { scanned } | State::ArrayHeader { scanned } | State::BulkHeader { scanned, .. } => scanned,
            State::BulkData { start, .. } => start,
        }
    }

    /// Cheap (O(1)) consistency checks of the state against the buffer,
    /// run after every successful call in debug builds. They do not compare
    /// against the limits, which [`RequestParser::set_limits`] may lower
    /// after a header was accepted.
    fn invariants_hold(&self, buffered: usize) -> bool {
        let last_end = self.arg_ranges.last().map_or(0, |&(_, end)| end);
        let within_buffer = self.progress_end() <= buffered;
        match self.state {
            State::Idle | State::Inline { .. } | State::ArrayHeader { .. } => {
                within_buffer && self.arg_ranges.is_empty()
            }
            State::BulkHeader { start, scanned, remaining } => {
                within_buffer && start <= scanned && last_end + 2 <= start.max(2) && remaining >= 1
            }
            State::BulkData { start, len: _, remaining } => within_buffer && last_end < start && remaining >= 1,
        }
    }

    /// Runs the state machine until a command completes, more bytes are
    /// needed, or the input is invalid. A loop, never recursion: each state
    /// handler either moves to the next state or ends the call.
    fn step(&mut self, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<Parsed, ProtocolError> {
        loop {
            let step = match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(Parsed::Incomplete);
                    };
                    // Redis picks the framing from the first byte of a request.
                    if first == b'*' && self.parse_buffered_array(buf) {
                        return Ok(Parsed::Command);
                    }
                    self.state =
                        if first == b'*' { State::ArrayHeader { scanned: 1 } } else { State::Inline { scanned: 0 } };
                    Step::Continue
                }
                State::Inline { scanned } => self.read_inline(buf, scanned, args)?,
                State::ArrayHeader { scanned } => self.read_array_header(buf, scanned)?,
                State::BulkHeader { start, scanned, remaining } => {
                    self.read_bulk_header(buf, start, scanned, remaining)?
                }
                State::BulkData { start, len, remaining } => self.read_bulk_data(buf, start, len, remaining)?,
            };
            if let Step::Done(parsed) = step {
                return Ok(parsed);
            }
        }
    }

    /// The common case in one pass: an array of bulk strings that is wholly
    /// buffered, with well-formed headers within the limits. Returns false,
    /// having changed nothing but scratch space, for anything else — an
    /// incomplete frame, a negative or zero count, a malformed or oversized
    /// header — which the state machine then reads from the start, resuming
    /// and reporting errors exactly as it always does.
    fn parse_buffered_array(&mut self, buf: &BytesMut) -> bool {
        let header_max = self.limits.header_bytes_max;
        let Some((count, mut at)) = buffered_length(buf, 0, header_max) else {
            return false;
        };
        if count == 0 || count > self.limits.args_max {
            return false;
        }
        self.arg_ranges.clear();
        for _ in 0..count {
            if buf.get(at) != Some(&b'$') {
                return false;
            }
            let Some((len, start)) = buffered_length(buf, at, header_max) else {
                return false;
            };
            // `start` is within the buffer; comparing with what remains
            // keeps the sum below from overflowing under any limit.
            if len > self.limits.bulk_bytes_max || len > buf.len() - start {
                return false;
            }
            let end = start + len;
            if buf.get(end..end + 2) != Some(b"\r\n") {
                return false;
            }
            self.arg_ranges.push((start, end));
            at = end + 2;
        }
        self.finish_array(at);
        true
    }

    /// Inline request: waits for the whole line, then splits it into arguments.
    fn read_inline(
        &mut self,
        buf: &mut BytesMut,
        scanned: usize,
        args: &mut Vec<Bytes>,
    ) -> Result<Step, ProtocolError> {
        let Some(newline) = self.find(buf, b'\n', scanned) else {
            // Every buffered byte belongs to the unfinished line.
            if buf.len() > self.limits.inline_bytes_max {
                return Err(ProtocolError::InlineTooBig);
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(Step::Done(Parsed::Incomplete));
        };
        if newline > self.limits.inline_bytes_max {
            return Err(ProtocolError::InlineTooBig);
        }
        // The `\n` may be preceded by a `\r`, which is not part of the line.
        let content_len = match newline.checked_sub(1) {
            Some(before) if buf.get(before) == Some(&b'\r') => before,
            _ => newline,
        };
        let line = buf.split_to(newline + 1).freeze();
        self.state = State::Idle;
        split_inline_args(&line, content_len, args, self.limits.args_max)?;
        if args.is_empty() {
            // A blank line is skipped, as Redis does.
            return Ok(Step::Continue);
        }
        Ok(Step::Done(Parsed::Command))
    }

    /// `*<count>\r\n`: a positive count starts an array, zero or a negative
    /// count is an empty request that is skipped.
    fn read_array_header(&mut self, buf: &mut BytesMut, scanned: usize) -> Result<Step, ProtocolError> {
        let (count, next) = match self.read_length_line(
            buf,
            0,
            scanned,
            ProtocolError::MultibulkHeaderTooBig,
            ProtocolError::InvalidMultibulkLength,
        )? {
            LengthLine::Complete { value, next } => (value, next),
            LengthLine::Incomplete { scanned } => {
                self.state = State::ArrayHeader { scanned };
                return Ok(Step::Done(Parsed::Incomplete));
            }
        };
        if count <= 0 {
            buf.advance(next);
            self.state = State::Idle;
            return Ok(Step::Continue);
        }
        let too_many = if self.limits.unauthenticated {
            ProtocolError::UnauthenticatedMultibulkLength
        } else {
            ProtocolError::InvalidMultibulkLength
        };
        let count = usize::try_from(count).ok().filter(|&count| count <= self.limits.args_max).ok_or(too_many)?;
        self.arg_ranges.clear();
        // The count is untrusted: reserve a little, grow as arguments arrive.
        self.arg_ranges.reserve(count.min(ARGS_RESERVE_MAX));
        self.state = State::BulkHeader { start: next, scanned: next, remaining: count };
        Ok(Step::Continue)
    }

    /// `$<len>\r\n` of the next argument, starting at `start`.
    fn read_bulk_header(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        scanned: usize,
        remaining: usize,
    ) -> Result<Step, ProtocolError> {
        let Some(&marker) = buf.get(start) else {
            return Ok(Step::Done(Parsed::Incomplete));
        };
        if marker != b'$' {
            return Err(ProtocolError::ExpectedBulk { got: marker });
        }
        let (len, next) = match self.read_length_line(
            buf,
            start,
            scanned.max(start + 1),
            ProtocolError::BulkHeaderTooBig,
            ProtocolError::InvalidBulkLength,
        )? {
            LengthLine::Complete { value, next } => (value, next),
            LengthLine::Incomplete { scanned } => {
                self.state = State::BulkHeader { start, scanned, remaining };
                return Ok(Step::Done(Parsed::Incomplete));
            }
        };
        let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
        if len > self.limits.bulk_bytes_max {
            return Err(if self.limits.unauthenticated {
                ProtocolError::UnauthenticatedBulkLength
            } else {
                ProtocolError::InvalidBulkLength
            });
        }
        self.reserve_for_bulk(buf, next, len);
        self.state = State::BulkData { start: next, len, remaining };
        Ok(Step::Continue)
    }

    /// `<data>\r\n` of an argument whose length is known: nothing is searched,
    /// only the buffered length is compared.
    fn read_bulk_data(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        len: usize,
        remaining: usize,
    ) -> Result<Step, ProtocolError> {
        // Cannot overflow for any sane limit; checked so absurd limits cannot panic.
        let end = start
            .checked_add(len)
            .filter(|end| end.checked_add(2).is_some())
            .ok_or(ProtocolError::InvalidBulkLength)?;
        // Check each terminator byte as soon as it is visible, so garbage is
        // rejected without waiting for more input.
        for (offset, expected) in [(0, b'\r'), (1, b'\n')] {
            match buf.get(end + offset) {
                None => return Ok(Step::Done(Parsed::Incomplete)),
                Some(&byte) if byte == expected => {}
                Some(_) => return Err(ProtocolError::MissingBulkTerminator),
            }
        }
        self.arg_ranges.push((start, end));
        let next = end + 2;
        if remaining > 1 {
            self.state = State::BulkHeader { start: next, scanned: next, remaining: remaining - 1 };
            return Ok(Step::Continue);
        }
        self.finish_array(next);
        Ok(Step::Done(Parsed::Command))
    }

    /// Ends a complete array (the first `frame_len` bytes of the buffer, its
    /// arguments in `arg_ranges`), for the caller to take.
    fn finish_array(&mut self, frame_len: usize) {
        self.frame_len = Some(frame_len);
        self.state = State::Idle;
    }

    /// Reads a `*<n>\r\n` or `$<n>\r\n` line whose marker byte is at `start`,
    /// resuming the search for `\r` at `scanned`.
    fn read_length_line(
        &mut self,
        buf: &[u8],
        start: usize,
        scanned: usize,
        too_big: ProtocolError,
        invalid: ProtocolError,
    ) -> Result<LengthLine, ProtocolError> {
        let header_bytes_max = self.limits.header_bytes_max;
        let Some(carriage_return) = self.find(buf, b'\r', scanned) else {
            // Every byte from `start` on belongs to the unfinished line.
            if buf.len() - start > header_bytes_max {
                return Err(too_big);
            }
            return Ok(LengthLine::Incomplete { scanned: buf.len() });
        };
        if carriage_return - start > header_bytes_max {
            return Err(too_big);
        }
        match buf.get(carriage_return + 1) {
            // Resume at the `\r` itself: found again in O(1) next time.
            None => {
                return Ok(LengthLine::Incomplete { scanned: carriage_return });
            }
            Some(b'\n') => {}
            Some(_) => return Err(invalid),
        }
        let digits = buf.get(start + 1..carriage_return).unwrap_or_default();
        let value = parse_length(digits).ok_or(invalid)?;
        Ok(LengthLine::Complete { value, next: carriage_return + 2 })
    }

    /// Makes room for an announced bulk that is not buffered yet, but only up
    /// to [`Limits::bulk_reserve_bytes_max`], since the length is untrusted.
    fn reserve_for_bulk(&self, buf: &mut BytesMut, start: usize, len: usize) {
        let frame_end = start.saturating_add(len).saturating_add(2);
        let missing = frame_end.saturating_sub(buf.len());
        if missing > 0 && missing <= self.limits.bulk_reserve_bytes_max {
            buf.reserve(missing);
        }
    }

    /// Position of the first `needle` at or after `from`.
    fn find(&mut self, haystack: &[u8], needle: u8, from: usize) -> Option<usize> {
        let rest = haystack.get(from..).unwrap_or_default();
        let found = rest.iter().position(|&byte| byte == needle);
        #[cfg(test)]
        {
            self.bytes_examined += found.map_or(rest.len(), |index| index + 1);
        }
        found.map(|index| from + index)
    }
}

/// A buffered `*<n>\r\n` or `$<n>\r\n` line whose marker is at `start`, with
/// `n` in canonical form (no sign, no leading zero) and at most 18 digits,
/// the line within `header_max`: `(n, index after the line)`. None for
/// anything else, including a line not wholly buffered.
fn buffered_length(buf: &[u8], start: usize, header_max: usize) -> Option<(usize, usize)> {
    let digits = buf.get(start + 1..)?;
    let mut value: usize = 0;
    for (index, &byte) in digits.iter().enumerate().take(19) {
        match byte {
            b'0'..=b'9' if !(index == 1 && value == 0) => value = value * 10 + usize::from(byte - b'0'),
            b'\r' if index > 0 && index < header_max && digits.get(index + 1) == Some(&b'\n') => {
                return Some((value, start + index + 3));
            }
            _ => return None,
        }
    }
    None
}

/// Parses a length the way Redis's `string2ll` does: optional `-`, then
/// digits without leading zeros (`0` alone is fine, `-0` and `+1` are not),
/// within `i64`.
fn parse_length(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > LENGTH_DIGITS_MAX {
        return None;
    }
    if digits == b"0" {
        return Some(0);
    }
    let (negative, magnitude) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if !matches!(magnitude.first(), Some(b'1'..=b'9')) {
        return None;
    }
    // Accumulate negatively so that i64::MIN is representable.
    let mut value: i64 = 0;
    for &digit in magnitude {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(digit - b'0'))?;
    }
    if negative { Some(value) } else { value.checked_neg() }
}

/// C's `isspace` in the "C" locale, which `sdssplitargs` uses to skip blanks.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Value of one hexadecimal digit.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Quoting state while reading one inline token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Splits the first `content_len` bytes of an inline `line` into arguments
/// with the rules of Redis's `sdssplitargs`.
///
/// Unquoted tokens are zero-copy slices of `line`; a token with quotes is
/// copied, since unescaping changes its bytes. Redis's quirks are kept: a
/// quote may open in the middle of a token (`ab"c d"` is `abc d`), a closing
/// quote must be followed by a blank or the end of line, and an unknown
/// escape such as `\q` or an incomplete `\xZ` stands for the escaped byte.
fn split_inline_args(
    line: &Bytes,
    content_len: usize,
    args: &mut Vec<Bytes>,
    args_max: usize,
) -> Result<(), ProtocolError> {
    let bytes = line.get(..content_len).unwrap_or_default();
    let at = |index: usize| bytes.get(index).copied();
    // Holds unescaped quoted tokens; allocated only if a quote appears.
    let mut unescaped: Vec<u8> = Vec::new();
    let mut index = 0;
    loop {
        while at(index).is_some_and(is_c_space) {
            index += 1;
        }
        if index >= bytes.len() {
            return Ok(());
        }
        if args.len() >= args_max {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        let start = index;
        let mut quote = Quote::None;
        let mut quoted = false;
        // Exclusive end of an unquoted token.
        let mut end = bytes.len();
        unescaped.clear();
        loop {
            let Some(byte) = at(index) else {
                if quote != Quote::None {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match quote {
                Quote::Double => match byte {
                    b'\\' => {
                        let escaped = at(index + 1);
                        let hex = match (escaped, at(index + 2), at(index + 3)) {
                            (Some(b'x'), Some(high), Some(low)) => hex_value(high).zip(hex_value(low)),
                            _ => None,
                        };
                        if let Some((high, low)) = hex {
                            unescaped.push(high * 16 + low);
                            index += 4;
                        } else if let Some(escaped) = escaped {
                            unescaped.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            index += 2;
                        } else {
                            // A lone backslash at the end; the missing
                            // closing quote is reported next.
                            unescaped.push(byte);
                            index += 1;
                        }
                    }
                    b'"' => {
                        close_quote(bytes, index)?;
                        index += 1;
                        break;
                    }
                    other => {
                        unescaped.push(other);
                        index += 1;
                    }
                },
                Quote::Single => match byte {
                    b'\\' if at(index + 1) == Some(b'\'') => {
                        unescaped.push(b'\'');
                        index += 2;
                    }
                    b'\'' => {
                        close_quote(bytes, index)?;
                        index += 1;
                        break;
                    }
                    other => {
                        unescaped.push(other);
                        index += 1;
                    }
                },
                Quote::None => match byte {
                    // `sdssplitargs` ends an unquoted token only at these
                    // (and NUL), not at every `isspace` byte.
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        end = index;
                        index += 1;
                        break;
                    }
                    b'"' | b'\'' => {
                        if !quoted {
                            unescaped.extend_from_slice(bytes.get(start..index).unwrap_or_default());
                            quoted = true;
                        }
                        quote = if byte == b'"' { Quote::Double } else { Quote::Single };
                        index += 1;
                    }
                    // Once a quote opens, the token ends at its closing
                    // quote, so unquoted bytes are never unescaped.
                    _ => index += 1,
                },
            }
        }
        if quoted {
            args.push(Bytes::copy_from_slice(&unescaped));
        } else {
            args.push(line.slice(start..end));
        }
    }
}

/// A closing quote at `index` must be followed by a blank or the end of line.
fn close_quote(bytes: &[u8], index: usize) -> Result<(), ProtocolError> {
    match bytes.get(index + 1) {
        Some(&next) if !is_c_space(next) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Counts heap allocations per thread, so a test can prove that the hot
    /// path allocates nothing per command. Tests run on separate threads, so
    /// they do not disturb each other's counts.
    mod counting_allocator {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
        }

        pub struct CountingAllocator;

        fn count() {
            // `try_with` because the allocator also runs while thread-locals
            // are being torn down.
            let _ = ALLOCATIONS.try_with(|allocations| allocations.set(allocations.get() + 1));
        }

        // SAFETY: every call is forwarded unchanged to the system allocator.
        unsafe impl GlobalAlloc for CountingAllocator {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                count();
                // SAFETY: forwarded with the caller's guarantees.
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: forwarded with the caller's guarantees.
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                count();
                // SAFETY: forwarded with the caller's guarantees.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        /// Allocations made by the current thread so far.
        pub fn allocations() -> usize {
            ALLOCATIONS.with(Cell::get)
        }
    }

    #[global_allocator]
    static ALLOCATOR: counting_allocator::CountingAllocator = counting_allocator::CountingAllocator;

    type Args = Vec<Vec<u8>>;

    /// Everything a parse run produced: the commands, then the error that
    /// stopped it, if any.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        commands: Vec<Args>,
        error: Option<ProtocolError>,
    }

    /// Feeds `input` in chunks to a parser through [`RequestParser::parse`],
    /// and to another through [`RequestParser::parse_in_place`] (consuming
    /// each frame as the connection does): both must see the same commands
    /// and the same error.
    fn feed(limits: Limits, input: &[u8], chunk_sizes: &[usize]) -> Outcome {
        let outcome = feed_split(limits, input, chunk_sizes);
        assert_eq!(feed_in_place(limits, input, chunk_sizes), outcome, "parse_in_place differs from parse");
        outcome
    }

    /// `input` cut in chunks of `chunk_sizes` (cycled; empty means one chunk).
    fn chunks<'a>(input: &'a [u8], chunk_sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
        let mut sizes = chunk_sizes.iter().cycle();
        let mut fed = 0;
        std::iter::from_fn(move || {
            let size = sizes.next().copied().unwrap_or(input.len()).max(1);
            let chunk = input.get(fed..(fed + size).min(input.len())).filter(|c| !c.is_empty())?;
            fed += chunk.len();
            Some(chunk)
        })
    }

    fn feed_in_place(limits: Limits, input: &[u8], chunk_sizes: &[usize]) -> Outcome {
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut owned = Vec::new();
        let mut commands = Vec::new();
        for chunk in chunks(input, chunk_sizes) {
            buf.extend_from_slice(chunk);
            loop {
                match parser.parse_in_place(&mut buf, &mut owned) {
                    Ok(Some(InPlace::Frame { frame_len })) => {
                        assert!(frame_len <= buf.len());
                        let args = parser.arg_ranges().iter().map(|&(s, e)| buf[s..e].to_vec()).collect();
                        commands.push(args);
                        buf.advance(frame_len);
                    }
                    Ok(Some(InPlace::Owned)) => commands.push(owned.iter().map(|a| a.to_vec()).collect()),
                    Ok(None) => break,
                    Err(error) => {
                        assert_eq!(parser.parse_in_place(&mut buf, &mut owned), Err(error.clone()));
                        return Outcome { commands, error: Some(error) };
                    }
                }
            }
        }
        Outcome { commands, error: None }
    }

    /// [`RequestParser::parse`] over the chunks, draining every complete
    /// command after each, checking that the parser never consumes more than
    /// it was given.
    fn feed_split(limits: Limits, input: &[u8], chunk_sizes: &[usize]) -> Outcome {
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        let mut fed = 0;
        let mut consumed = 0;
        for chunk in chunks(input, chunk_sizes) {
            buf.extend_from_slice(chunk);
            fed += chunk.len();
            loop {
                let before = buf.len();
                let result = parser.parse(&mut buf);
                assert!(buf.len() <= before, "the parser added bytes");
                consumed += before - buf.len();
                assert!(consumed <= fed, "consumed more than was fed");
                match result {
                    Ok(Some(command)) => {
                        assert!(!command.is_empty());
                        let arg_bytes: usize = command.args().iter().map(Bytes::len).sum();
                        assert!(arg_bytes <= before - buf.len());
                        commands.push(to_vecs(&command));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        // Errors are sticky.
                        assert_eq!(parser.parse(&mut buf), Err(error.clone()));
                        return Outcome { commands, error: Some(error) };
                    }
                }
            }
        }
        Outcome { commands, error: None }
    }

    fn to_vecs(command: &Command) -> Args {
        command.args().iter().map(|arg| arg.to_vec()).collect()
    }

    fn args(list: &[&[u8]]) -> Args {
        list.iter().map(|arg| arg.to_vec()).collect()
    }

    fn encode_multibulk<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Every argument in double quotes, escaped as `redis-cli` would.
    fn encode_inline_quoted<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
        let mut out = Vec::new();
        for arg in args {
            out.push(b'"');
            for &byte in arg.as_ref() {
                match byte {
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    0x07 => out.extend_from_slice(b"\\a"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    0x20..=0x7e => out.push(byte),
                    _ => out.extend_from_slice(format!("\\x{byte:02X}").as_bytes()),
                }
            }
            out.extend_from_slice(b"\" ");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn parse_one(input: &[u8]) -> Result<Option<Command>, ProtocolError> {
        RequestParser::default().parse(&mut BytesMut::from(input))
    }

    /// A pipeline that exercises every framing, the skipped empty requests
    /// and binary data that contains CRLF.
    fn mixed_pipeline() -> (Vec<u8>, Vec<Args>) {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\na\r\nb\n\r\n\
            \r\n*0\r\n*-1\r\n\n\
            PING\r\n\
            GET \"quoted key\" 'single'\n\
            *1\r\n$0\r\n\r\n\
            \t  \r\n\
            *2\r\n$4\r\nECHO\r\n$0\r\n\r\n\
            SET \"\\x00\\xff\" \"\\r\\n\"\r\n"
            .to_vec();
        let expected = vec![
            args(&[b"SET", b"key", b"a\r\nb\n"]),
            args(&[b"PING"]),
            args(&[b"GET", b"quoted key", b"single"]),
            args(&[b""]),
            args(&[b"ECHO", b""]),
            args(&[b"SET", b"\x00\xff", b"\r\n"]),
        ];
        (input, expected)
    }

    #[test]
    fn parses_one_multibulk_command() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1"[..]);
        let mut parser = RequestParser::default();
        let command = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(command.name(), b"GET");
        assert_eq!(command.len(), 2);
        assert_eq!(to_vecs(&command), args(&[b"GET", b"key"]));
        // Exactly the command's bytes were consumed.
        assert_eq!(&buf[..], b"*1");
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"*1");
        assert_eq!(command.into_args().len(), 2);
    }

    #[test]
    fn parses_inline_commands_with_either_line_ending() {
        let outcome = feed(Limits::default(), b"PING\r\nSET a  b\n\tGET\ta\t\r\n", &[]);
        assert_eq!(outcome.commands, vec![args(&[b"PING"]), args(&[b"SET", b"a", b"b"]), args(&[b"GET", b"a"])]);
        assert_eq!(outcome.error, None);
    }

    #[test]
    fn skips_empty_requests_like_redis() {
        let outcome = feed(Limits::default(), b"\r\n\n   \r\n*0\r\n*-1\r\n*-10\r\nPING\r\n", &[]);
        assert_eq!(outcome.commands, vec![args(&[b"PING"])]);
        let mut buf = BytesMut::from(&b"\r\n*0\r\n*-1\r\n"[..]);
        assert_eq!(RequestParser::default().parse(&mut buf), Ok(None));
        assert!(buf.is_empty(), "empty requests are consumed");
    }

    #[test]
    fn inline_quoting_follows_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"SET \"a b\" c", &[b"SET", b"a b", b"c"]),
            (b"\"\\x41\\x4a\\x4A\"", &[b"AJJ"]),
            (b"\"\\n\\r\\t\\b\\a\\\\\\\"\"", &[b"\n\r\t\x08\x07\\\""]),
            // Unknown escapes and incomplete hex stand for the escaped byte.
            (b"\"\\q\\xZZ\\x4\"", &[b"qxZZx4"]),
            (b"'it\\'s' 'a\\nb' '\"'", &[b"it's", b"a\\nb", b"\""]),
            (b"\"\" ''", &[b"", b""]),
            // A quote may open in the middle of a token.
            (b"ab\"cd ef\" g", &[b"abcd ef", b"g"]),
            (b"a'b c'", &[b"ab c"]),
            // Vertical tab and form feed separate tokens only as leading blanks.
            (b"\x0ba\x0bb\x0c", &[b"a\x0bb\x0c"]),
            (b"a\rb", &[b"a", b"b"]),
            (b"\"closing\"\t'then tab'", &[b"closing", b"then tab"]),
            (b"x \"\\x00\" \x00", &[b"x", b"\x00", b"\x00"]),
        ];
        for (line, expected) in cases {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            let command = parse_one(&input).unwrap_or_else(|error| panic!("{}: {error}", line.escape_ascii())).unwrap();
            assert_eq!(to_vecs(&command), args(expected), "{}", line.escape_ascii());
        }
    }

    #[test]
    fn unbalanced_quotes_are_rejected() {
        let cases: &[&[u8]] = &[
            b"GET \"abc",
            b"GET 'abc",
            b"GET \"abc\"d",
            b"GET 'abc'd",
            b"set \"\"\"test-key\"\"\" test-value",
            b"GET \"abc\\",
            b"GET 'abc\\'",
        ];
        for line in cases {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            assert_eq!(parse_one(&input).unwrap_err(), ProtocolError::UnbalancedQuotes, "{}", line.escape_ascii());
        }
    }

    #[test]
    fn every_error_has_the_redis_text() {
        let cases: &[(&[u8], ProtocolError, &str)] = &[
            (b"*abc\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*01\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*-0\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*+1\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*1 \r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*1048577\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*3000000000\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*99999999999999999999\r\n", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*1\rX", ProtocolError::InvalidMultibulkLength, "invalid multibulk length"),
            (b"*1\r\n$abc\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$536870913\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$2147483648\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$2000000000\r\n", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (b"*1\r\n$3\rfoo", ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
                ProtocolError::ExpectedBulk { got: b'f' },
                "expected '$', got 'f'",
            ),
            (b"*1\r\nfoo\r\n", ProtocolError::ExpectedBulk { got: b'f' }, "expected '$', got 'f'"),
            (b"*1\r\n*1\r\n", ProtocolError::ExpectedBulk { got: b'*' }, "expected '$', got '*'"),
            (b"*1\r\n\r\n", ProtocolError::ExpectedBulk { got: b'\r' }, "expected '$', got ' '"),
            (b"*1\r\n\x01", ProtocolError::ExpectedBulk { got: 1 }, "expected '$', got '\\x01'"),
            (b"*1\r\n\xff", ProtocolError::ExpectedBulk { got: 0xff }, "expected '$', got '\\xff'"),
            (b"*1\r\n$3\r\nfooXX", ProtocolError::MissingBulkTerminator, "expected '\\r\\n' after bulk data"),
            (b"*1\r\n$3\r\nfoo\rX", ProtocolError::MissingBulkTerminator, "expected '\\r\\n' after bulk data"),
            // Rejected as soon as the wrong byte is visible.
            (b"*1\r\n$3\r\nfooX", ProtocolError::MissingBulkTerminator, "expected '\\r\\n' after bulk data"),
            (b"GET \"a\r\n", ProtocolError::UnbalancedQuotes, "unbalanced quotes in request"),
        ];
        for (input, expected, text) in cases {
            let label = input.escape_ascii().to_string();
            assert_eq!(expected.to_string(), *text, "{label}");
            assert_eq!(expected.to_redis_error(), format!("ERR Protocol error: {text}"), "{label}");
            let whole = feed(Limits::default(), input, &[]);
            assert_eq!(whole.error.as_ref(), Some(expected), "{label}");
            assert_eq!(feed(Limits::default(), input, &[1]), whole, "{label}");
        }
    }

    #[test]
    fn line_limits_are_exact_and_independent_of_chunking() {
        let limit = INLINE_BYTES_MAX_DEFAULT;
        let check = |input: &[u8], expected: Option<ProtocolError>| {
            for chunks in [&[][..], &[4096], &[1000, 1]] {
                let outcome = feed(Limits::default(), input, chunks);
                assert_eq!(outcome.error, expected, "chunks {chunks:?}");
            }
        };
        // Inline: the bytes before `\n` count, a `\r` included.
        let mut line = vec![b'a'; limit];
        line.push(b'\n');
        check(&line, None);
        let mut line = vec![b'a'; limit];
        line.extend_from_slice(b"\r\n");
        check(&line, Some(ProtocolError::InlineTooBig));
        check(&vec![b'a'; limit + 1], Some(ProtocolError::InlineTooBig));
        check(&vec![b'a'; limit], None);

        // Array header: the bytes before `\r` count, `*` included.
        let header = |digits: usize, tail: &[u8]| {
            let mut input = vec![b'*'];
            input.extend(std::iter::repeat_n(b'1', digits));
            input.extend_from_slice(tail);
            input
        };
        check(&header(limit - 1, b"\r\n"), Some(ProtocolError::InvalidMultibulkLength));
        check(&header(limit, b"\r\n"), Some(ProtocolError::MultibulkHeaderTooBig));
        check(&header(limit, b""), Some(ProtocolError::MultibulkHeaderTooBig));
        check(&header(limit - 1, b""), None);

        // Bulk header: the bytes before `\r` count, `$` included.
        let bulk = |digits: usize, tail: &[u8]| {
            let mut input = b"*1\r\n$".to_vec();
            input.extend(std::iter::repeat_n(b'1', digits));
            input.extend_from_slice(tail);
            input
        };
        check(&bulk(limit - 1, b"\r\n"), Some(ProtocolError::InvalidBulkLength));
        check(&bulk(limit, b"\r\n"), Some(ProtocolError::BulkHeaderTooBig));
        check(&bulk(limit, b""), Some(ProtocolError::BulkHeaderTooBig));
        check(&bulk(limit - 1, b""), None);
    }

    #[test]
    fn unauthenticated_clients_get_redis_small_limits_and_texts() {
        let limits = Limits::unauthenticated();
        assert_eq!(limits.validate(), Ok(()));
        let run = |input: &[u8]| feed(limits, input, &[]);
        assert_eq!(run(b"*11\r\n").error, Some(ProtocolError::UnauthenticatedMultibulkLength));
        assert_eq!(run(b"*1\r\n$16385\r\n").error, Some(ProtocolError::UnauthenticatedBulkLength));
        assert_eq!(run(b"*1\r\n$-5\r\n").error, Some(ProtocolError::InvalidBulkLength));
        assert_eq!(run(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n").commands, vec![args(&[b"AUTH", b"pw"])]);
        assert_eq!(
            ProtocolError::UnauthenticatedBulkLength.to_redis_error(),
            "ERR Protocol error: unauthenticated bulk length"
        );
    }

    #[test]
    fn configured_limits_are_enforced() {
        let limits = Limits {
            bulk_bytes_max: 3,
            args_max: 2,
            inline_bytes_max: 8,
            header_bytes_max: 3,
            query_buffer_bytes_max: 100,
            bulk_reserve_bytes_max: 0,
            unauthenticated: false,
        };
        assert_eq!(limits.validate(), Ok(()));
        let run = |input: &[u8]| feed(limits, input, &[]);
        assert_eq!(run(b"*2\r\n$3\r\nabc\r\n$0\r\n\r\n").commands, vec![args(&[b"abc", b""])]);
        assert_eq!(run(b"*3\r\n").error, Some(ProtocolError::InvalidMultibulkLength));
        assert_eq!(run(b"*1\r\n$4\r\n").error, Some(ProtocolError::InvalidBulkLength));
        assert_eq!(run(b"*100\r\n").error, Some(ProtocolError::MultibulkHeaderTooBig));
        assert_eq!(run(b"*1\r\n$100\r\n").error, Some(ProtocolError::BulkHeaderTooBig));
        assert_eq!(run(b"a b\r\n").commands, vec![args(&[b"a", b"b"])]);
        assert_eq!(run(b"a b c\r\n").error, Some(ProtocolError::InvalidMultibulkLength));
        assert_eq!(run(b"abcdefghi\r\n").error, Some(ProtocolError::InlineTooBig));

        let parser = RequestParser::new(limits);
        assert_eq!(parser.check_query_buffer(100), Ok(()));
        let error = parser.check_query_buffer(101).unwrap_err();
        assert_eq!(error, ProtocolError::QueryBufferLimit { buffered_bytes: 101, limit_bytes: 100 });
        assert!(error.to_redis_error().starts_with("ERR Protocol error: query buffer"));
        let default = RequestParser::default();
        assert_eq!(default.check_query_buffer(QUERY_BUFFER_BYTES_MAX_DEFAULT), Ok(()));
        assert!(default.check_query_buffer(QUERY_BUFFER_BYTES_MAX_DEFAULT + 1).is_err());
    }

    #[test]
    fn limits_validate_rejects_unusable_settings() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let bad = [
            Limits { args_max: 0, ..Limits::default() },
            Limits { header_bytes_max: 1, ..Limits::default() },
            Limits { inline_bytes_max: 0, ..Limits::default() },
            Limits { query_buffer_bytes_max: 10, ..Limits::default() },
        ];
        for limits in bad {
            assert!(limits.validate().is_err(), "{limits:?}");
        }
    }

    #[test]
    fn set_limits_applies_to_the_next_header() {
        let strict = Limits { args_max: 1, ..Limits::default() };
        let mut parser = RequestParser::new(strict);
        assert_eq!(parser.limits(), &strict);
        let mut buf = BytesMut::from(&b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"[..]);
        parser.set_limits(Limits::default());
        assert_eq!(to_vecs(&parser.parse(&mut buf).unwrap().unwrap()), args(&[b"a", b"b"]));
    }

    #[test]
    fn lowering_limits_mid_command_keeps_earlier_decisions() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*3\r\n$5\r\nhel"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        parser.set_limits(Limits { args_max: 1, bulk_bytes_max: 1, ..Limits::default() });
        buf.extend_from_slice(b"lo\r\n$1\r\na\r\n");
        assert_eq!(parser.parse(&mut buf), Ok(None));
        // The next header is judged by the new limits.
        buf.extend_from_slice(b"$2\r\n");
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::InvalidBulkLength));
    }

    #[test]
    fn errors_are_sticky_until_reset() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*x\r\n"[..]);
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::InvalidMultibulkLength));
        let mut fresh = BytesMut::from(&b"PING\r\n"[..]);
        assert_eq!(parser.parse(&mut fresh), Err(ProtocolError::InvalidMultibulkLength));
        parser.reset();
        assert_eq!(to_vecs(&parser.parse(&mut fresh).unwrap().unwrap()), args(&[b"PING"]));
    }

    #[test]
    fn split_at_every_byte_boundary_gives_the_same_commands() {
        let (input, expected) = mixed_pipeline();
        let whole = feed(Limits::default(), &input, &[]);
        assert_eq!(whole, Outcome { commands: expected, error: None });
        assert_eq!(feed(Limits::default(), &input, &[1]), whole, "one byte at a time");
        for split in 1..input.len() {
            assert_eq!(feed(Limits::default(), &input, &[split, input.len()]), whole, "split at {split}");
        }
        // A partial command leaves its bytes in the buffer.
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        for &byte in &input[..input.len() - 1] {
            buf.extend_from_slice(&[byte]);
            while parser.parse(&mut buf).unwrap().is_some() {}
        }
        assert!(!buf.is_empty());
    }

    #[test]
    fn ten_thousand_pipelined_commands() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for index in 0..10_000 {
            let key = format!("key:{index}");
            let value = format!("value:{index}");
            let command: Args = if index % 2 == 0 {
                vec![b"SET".to_vec(), key.into_bytes(), value.into_bytes()]
            } else {
                vec![b"GET".to_vec(), key.into_bytes()]
            };
            input.extend(encode_multibulk(&command));
            expected.push(command);
        }
        let outcome = feed(Limits::default(), &input, &[4096]);
        assert_eq!(outcome, Outcome { commands: expected.clone(), error: None });

        // The same through `parse_into` with one reused vector.
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&input[..]);
        let mut reused = Vec::new();
        let mut parsed = Vec::new();
        while parser.parse_into(&mut buf, &mut reused) == Ok(Parsed::Command) {
            parsed.push(reused.iter().map(|arg| arg.to_vec()).collect::<Args>());
        }
        assert!(reused.is_empty() && buf.is_empty());
        assert_eq!(parsed, expected);
    }

    #[test]
    fn nested_looking_input_is_a_clean_error() {
        let input = b"*1\r\n".repeat(10_000);
        let expected = ProtocolError::ExpectedBulk { got: b'*' };
        for chunks in [&[][..], &[1], &[7]] {
            let outcome = feed(Limits::default(), &input, chunks);
            assert_eq!(outcome, Outcome { commands: vec![], error: Some(expected.clone()) });
        }
        assert_eq!(expected.to_redis_error(), "ERR Protocol error: expected '$', got '*'");
    }

    #[test]
    fn huge_bulk_header_is_rejected_without_allocating_for_it() {
        let mut buf = BytesMut::from(&b"*1\r\n$2147483648\r\n"[..]);
        let mut parser = RequestParser::default();
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::InvalidBulkLength));
        assert!(buf.capacity() < 1024);
        // Outside an array the same line is an inline command, as in Redis.
        let command = parse_one(b"$2147483648\r\n").unwrap().unwrap();
        assert_eq!(command.name(), b"$2147483648");
        // A huge but legal length waits for data without reserving it.
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
        assert_eq!(parser_default_parse(&mut buf), Ok(None));
        assert!(buf.capacity() < 1024);
        // A huge count reserves only a small argument index.
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1048576\r\n"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert!(parser.arg_ranges.capacity() <= ARGS_RESERVE_MAX);
    }

    fn parser_default_parse(buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        RequestParser::default().parse(buf)
    }

    #[test]
    fn small_announced_bulks_are_reserved_up_to_the_cap() {
        let mut buf = BytesMut::from(&b"*1\r\n$1000\r\n"[..]);
        assert_eq!(parser_default_parse(&mut buf), Ok(None));
        assert!(buf.capacity() >= 11 + 1002);
        let mut buf = BytesMut::from(&b"*1\r\n$100000\r\n"[..]);
        assert_eq!(parser_default_parse(&mut buf), Ok(None));
        assert!(buf.capacity() < 100_000);
    }

    #[test]
    fn large_mset_in_4k_reads_is_parsed_in_linear_time() {
        let mut command: Args = vec![b"MSET".to_vec()];
        for index in 0..80_000 {
            command.push(format!("key:{index:06}").into_bytes());
            command.push(format!("value:{index:07}").into_bytes());
        }
        let input = encode_multibulk(&command);
        assert!(input.len() > 2_600_000, "{}", input.len());
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut parsed = None;
        for (index, chunk) in input.chunks(4096).enumerate() {
            buf.extend_from_slice(chunk);
            let result = parser.parse(&mut buf).unwrap();
            if index + 1 < input.len().div_ceil(4096) {
                assert!(result.is_none());
            }
            parsed = parsed.or(result);
        }
        assert_eq!(to_vecs(&parsed.unwrap()), command);
        // Only header lines are searched, each once: far less than the input.
        // Re-scanning from the start on each read would cost ~900 MB here.
        assert!(parser.bytes_examined < input.len() / 2, "{}", parser.bytes_examined);
    }

    #[test]
    fn long_inline_line_fed_bytewise_is_searched_once() {
        let mut input = b"SET key ".to_vec();
        input.extend(std::iter::repeat_n(b'v', 60_000));
        input.extend_from_slice(b"\r\n");
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::new();
        let mut parsed = None;
        for &byte in &input {
            buf.extend_from_slice(&[byte]);
            parsed = parsed.or(parser.parse(&mut buf).unwrap());
        }
        assert_eq!(parsed.unwrap().args()[2].len(), 60_000);
        assert!(parser.bytes_examined <= input.len(), "{}", parser.bytes_examined);
    }

    #[test]
    fn arguments_are_zero_copy_slices_of_the_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nSET a b\r\n"[..]);
        let range = buf.as_ptr_range();
        let mut parser = RequestParser::default();
        let array = parser.parse(&mut buf).unwrap().unwrap();
        let inline = parser.parse(&mut buf).unwrap().unwrap();
        for arg in array.args().iter().chain(inline.args()) {
            assert!(range.contains(&arg.as_ptr()), "{arg:?} was copied");
        }
    }

    #[test]
    fn pipelined_small_commands_allocate_nothing_per_command() {
        let mut input = Vec::new();
        for index in 0..1000 {
            let key = format!("key:{index}");
            input.extend(encode_multibulk(&[b"SET".as_slice(), key.as_bytes(), b"value"]));
            input.extend(encode_multibulk(&[b"GET".as_slice(), key.as_bytes()]));
            input.extend_from_slice(b"PING\r\n");
        }
        let mut buf = BytesMut::from(&input[..]);
        let mut parser = RequestParser::default();
        let mut args = Vec::with_capacity(8);
        // Warm-up: the first split moves the buffer to shared storage and the
        // argument index gets its capacity.
        assert_eq!(parser.parse_into(&mut buf, &mut args), Ok(Parsed::Command));
        let before = counting_allocator::allocations();
        let mut parsed = 1;
        while parser.parse_into(&mut buf, &mut args) == Ok(Parsed::Command) {
            parsed += 1;
        }
        let allocations = counting_allocator::allocations() - before;
        assert_eq!(parsed, 3000);
        assert_eq!(allocations, 0);
    }

    #[test]
    fn parse_length_matches_string2ll() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"-1"), Some(-1));
        assert_eq!(parse_length(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_length(b"-9223372036854775808"), Some(i64::MIN));
        for invalid in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"123456789012345678901",
        ] {
            assert_eq!(parse_length(invalid), None, "{}", invalid.escape_ascii());
        }
    }

    /// One request as a client could send it.
    #[derive(Debug, Clone)]
    enum Request {
        Multibulk(Args),
        InlineQuoted(Args),
        /// Tokens without blanks or quotes, joined by a blank; `true` ends
        /// the line with `\r\n`, `false` with `\n`.
        InlinePlain(Args, bool),
        /// A request Redis skips.
        Empty(&'static [u8]),
    }

    impl Request {
        fn encode(&self, out: &mut Vec<u8>) {
            match self {
                Request::Multibulk(args) => out.extend(encode_multibulk(args)),
                Request::InlineQuoted(args) => out.extend(encode_inline_quoted(args)),
                Request::InlinePlain(args, crlf) => {
                    out.extend(args.join(&b' '));
                    out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                }
                Request::Empty(bytes) => out.extend_from_slice(bytes),
            }
        }

        fn args(&self) -> Option<&Args> {
            match self {
                Request::Multibulk(args) | Request::InlineQuoted(args) | Request::InlinePlain(args, _) => Some(args),
                Request::Empty(_) => None,
            }
        }
    }

    fn request_strategy() -> impl Strategy<Value = Request> {
        let binary_args = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6);
        let plain_token = prop::collection::vec(prop::sample::select(b"abcXYZ019_:.-$*{}".to_vec()), 1..12)
            .prop_filter("an inline line must not start with '*'", |token| token[0] != b'*');
        prop_oneof![
            binary_args.clone().prop_map(Request::Multibulk),
            binary_args.prop_map(Request::InlineQuoted),
            (prop::collection::vec(plain_token, 1..6), any::<bool>())
                .prop_map(|(args, crlf)| Request::InlinePlain(args, crlf)),
            prop::sample::select(vec![&b"\r\n"[..], b"\n", b" \t \r\n", b"*0\r\n", b"*-1\r\n",])
                .prop_map(Request::Empty),
        ]
    }

    /// Bytes biased towards protocol syntax so random input reaches deep states.
    fn protocol_noise() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            3 => prop::sample::select(b"*$\r\n0123-\"' \\x".to_vec()),
            1 => any::<u8>(),
        ];
        prop::collection::vec(byte, 0..300)
    }

    fn small_limits() -> Limits {
        Limits {
            bulk_bytes_max: 16,
            args_max: 4,
            inline_bytes_max: 24,
            header_bytes_max: 4,
            query_buffer_bytes_max: 1024,
            bulk_reserve_bytes_max: 8,
            unauthenticated: false,
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_chunking_does_not_matter(
            input in protocol_noise(),
            chunks in prop::collection::vec(1..64usize, 1..8),
            small in any::<bool>(),
        ) {
            let limits = if small { small_limits() } else { Limits::default() };
            let whole = feed(limits, &input, &[]);
            prop_assert_eq!(feed(limits, &input, &chunks), whole);
        }

        #[test]
        fn random_raw_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let whole = feed(Limits::default(), &input, &[]);
            prop_assert_eq!(feed(Limits::default(), &input, &[1]), whole);
        }

        #[test]
        fn valid_requests_round_trip_at_any_split(
            requests in prop::collection::vec(request_strategy(), 0..20),
            chunks in prop::collection::vec(1..200usize, 1..10),
        ) {
            let mut input = Vec::new();
            for request in &requests {
                request.encode(&mut input);
            }
            let expected: Vec<Args> = requests.iter().filter_map(Request::args).cloned().collect();
            let outcome = feed(Limits::default(), &input, &chunks);
            prop_assert_eq!(outcome, Outcome { commands: expected, error: None });
        }
    }
}
