//! Replies: Redis values encoded into a connection's output buffer.
//!
//! Scalars are encoded by `redis-protocol` from borrowed frames (no copy of
//! the value, no allocation), except the three a hot path writes per element
//! or per request — integers, bulk strings and aggregate headers — which are
//! a type byte, a decimal length and CRLF written here (measured: the
//! library sizes each with a floating-point `log10` and zero-fills before
//! writing; unit tests compare the bytes with the library's). Aggregate
//! *headers* (`*3`, `%2`, `~4`, `>3`) the library could not write anyway: it
//! encodes aggregates only from complete in-memory frame trees (a RESP3 map
//! needs a hash map of frames) or as streams of unknown length.

use bytes::{BufMut, BytesMut};
use redis_protocol::resp2::encode as resp2_encode;
use redis_protocol::resp2::types::BorrowedFrame as Resp2;
use redis_protocol::resp3::encode::complete as resp3_encode;
use redis_protocol::resp3::types::BorrowedFrame as Resp3;

/// The protocol a connection speaks (HELLO switches it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default.
    Resp2,
    /// RESP3.
    Resp3,
}

/// Writes replies for one connection.
pub struct Reply<'a> {
    out: &'a mut BytesMut,
    protocol: Protocol,
}

impl<'a> Reply<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut BytesMut, protocol: Protocol) -> Reply<'a> {
        Reply { out, protocol }
    }

    /// The protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// A writer appending to the same buffer in `protocol`, for one reply
    /// nested in this one (each command EXEC runs writes one element of
    /// EXEC's array, in the client's protocol at that point).
    pub fn nested(&mut self, protocol: Protocol) -> Reply<'_> {
        Reply { out: self.out, protocol }
    }

    /// Switches the protocol (HELLO replies in the protocol it selects).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    fn resp2(&mut self, frame: &Resp2<'_>) {
        resp2_encode::extend_encode_borrowed(self.out, frame, false).expect("encoding into a growable buffer");
    }

    fn resp3(&mut self, frame: &Resp3<'_>) {
        resp3_encode::extend_encode_borrowed(self.out, frame, false).expect("encoding into a growable buffer");
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.simple("OK");
    }

    /// A simple string.
    pub fn simple(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.resp2(&Resp2::SimpleString(text.as_bytes())),
            Protocol::Resp3 => self.resp3(&Resp3::SimpleString { data: text.as_bytes(), attributes: None }),
        }
    }

    /// An error; `text` starts with its code (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(&mut self, text: &str) {
        // Error text must not break the frame: Redis replaces newlines with spaces.
        let clean: std::borrow::Cow<'_, str> =
            if text.contains(['\r', '\n']) { text.replace(['\r', '\n'], " ").into() } else { text.into() };
        match self.protocol {
            Protocol::Resp2 => self.resp2(&Resp2::Error(&clean)),
            Protocol::Resp3 => self.resp3(&Resp3::SimpleError { data: &clean, attributes: None }),
        }
    }

    /// An integer (`:n` in both protocols). Written here like the aggregate
    /// headers: the library sizes it with a floating-point `log10` first,
    /// which showed in INCR's profile.
    pub fn integer(&mut self, value: i64) {
        self.out.put_u8(b':');
        if value < 0 {
            self.out.put_u8(b'-');
        }
        self.digits(value.unsigned_abs());
    }

    /// A bulk string (RESP3's blob string is the same bytes). Written here
    /// like integers: per string the library sizes the length with a
    /// floating-point `log10` and zero-fills the space before writing it,
    /// which a reply of many short strings (LRANGE, SMEMBERS, HGETALL) pays
    /// for every element.
    pub fn bulk(&mut self, data: &[u8]) {
        self.out.reserve(data.len() + 32);
        self.out.put_u8(b'$');
        self.digits(data.len() as u64);
        self.out.put_slice(data);
        self.out.put_slice(b"\r\n");
    }

    /// A bulk string or null.
    pub fn bulk_or_null(&mut self, data: Option<&[u8]>) {
        match data {
            Some(data) => self.bulk(data),
            None => self.null(),
        }
    }

    /// Null (RESP2: the null bulk string `$-1`).
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.resp2(&Resp2::Null),
            Protocol::Resp3 => self.resp3(&Resp3::Null),
        }
    }

    /// A null array (RESP2 `*-1`, RESP3 null): what Redis replies for an
    /// absent aggregate (e.g. a blocking pop that timed out).
    pub fn null_array(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.resp3(&Resp3::Null),
        }
    }

    /// A double, formatted as Redis 7.2's `d2string` does (RESP2: as a bulk
    /// string). RESP3 doubles are written here rather than by the library so
    /// that both protocols show the same digits (`1e+21`, `inf`).
    pub fn double(&mut self, value: f64) {
        let text = meridian_crdt::number::format_score(value);
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.out.put_u8(b',');
                self.out.put_slice(text.as_bytes());
                self.out.put_slice(b"\r\n");
            }
        }
    }

    /// A boolean (RESP2: the integer 1 or 0).
    pub fn boolean(&mut self, value: bool) {
        match self.protocol {
            Protocol::Resp2 => self.integer(i64::from(value)),
            Protocol::Resp3 => self.resp3(&Resp3::Boolean { data: value, attributes: None }),
        }
    }

    /// The header of an array of `len` elements; the elements follow.
    pub fn array(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// The header of a map of `len` pairs (RESP2: an array of 2·len).
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len * 2),
            Protocol::Resp3 => self.header(b'%', len),
        }
    }

    /// The header of a set of `len` elements (RESP2: an array).
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'~', len),
        }
    }

    /// The header of a push message of `len` elements (RESP2: an array).
    pub fn push(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'>', len),
        }
    }

    fn header(&mut self, kind: u8, len: usize) {
        self.out.put_u8(kind);
        self.digits(len as u64);
    }

    /// `n` in decimal, then CRLF.
    fn digits(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.put_slice(&digits[at..]);
        self.out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(protocol: Protocol, write: impl FnOnce(&mut Reply<'_>)) -> String {
        String::from_utf8(written(protocol, write).to_vec()).unwrap()
    }

    #[test]
    fn replies_match_redis_bytes() {
        assert_eq!(encoded(Protocol::Resp2, |r| r.ok()), "+OK\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.error("ERR bad\r\nthing")), "-ERR bad  thing\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.integer(-7)), ":-7\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.bulk(b"hi")), "$2\r\nhi\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.null()), "$-1\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.null_array()), "*-1\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.double(1.5)), "$3\r\n1.5\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.map(2)), "*4\r\n");
        assert_eq!(encoded(Protocol::Resp2, |r| r.array(12)), "*12\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.null()), "_\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.map(2)), "%2\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.set(0)), "~0\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.boolean(true)), "#t\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.double(1.5)), ",1.5\r\n");
        assert_eq!(encoded(Protocol::Resp3, |r| r.error("ERR x")), "-ERR x\r\n");
    }

    /// What the library writes for one value in `protocol`.
    fn library(protocol: Protocol, resp2: Resp2<'_>, resp3: Resp3<'_>) -> BytesMut {
        let mut out = BytesMut::new();
        match protocol {
            Protocol::Resp2 => resp2_encode::extend_encode_borrowed(&mut out, &resp2, false),
            Protocol::Resp3 => resp3_encode::extend_encode_borrowed(&mut out, &resp3, false),
        }
        .unwrap();
        out
    }

    /// What `write` writes in `protocol`, as bytes.
    fn written(protocol: Protocol, write: impl FnOnce(&mut Reply<'_>)) -> BytesMut {
        let mut out = BytesMut::new();
        write(&mut Reply::new(&mut out, protocol));
        out
    }

    #[test]
    fn integers_at_the_bounds_match_the_library() {
        for value in [0, 1, -1, 9, 10, -10, 99, 100, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            for protocol in [Protocol::Resp2, Protocol::Resp3] {
                let expected =
                    library(protocol, Resp2::Integer(value), Resp3::Number { data: value, attributes: None });
                assert_eq!(written(protocol, |r| r.integer(value)), expected, "{value}");
            }
        }
    }

    #[test]
    fn bulk_strings_match_the_library() {
        for len in [0usize, 1, 9, 10, 99, 100, 4096, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for protocol in [Protocol::Resp2, Protocol::Resp3] {
                let expected =
                    library(protocol, Resp2::BulkString(&data), Resp3::BlobString { data: &data, attributes: None });
                assert_eq!(written(protocol, |r| r.bulk(&data)), expected, "{len} bytes");
            }
        }
    }
}
