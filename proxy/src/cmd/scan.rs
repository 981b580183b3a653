//! The cursor of HSCAN and SSCAN (and any command that scans one collection).
//!
//! Redis's guarantee: an element present for the whole scan is returned at
//! least once, and a scan ends with cursor 0. Redis gets it from its own hash
//! table (a reverse-binary bucket cursor that survives rehashing); a Meridian
//! collection lives in a `hashbrown` map whose buckets move on every resize
//! and are not addressable, so the cursor cannot be a bucket.
//!
//! Instead every element has a fixed *position*: a 64-bit hash of its bytes
//! with a fixed seed (the same on every node and in every region, so a cursor
//! stays valid after a failover). The cursor is a position; one call returns
//! the elements whose positions lie in `[cursor, next)`, and the next call
//! starts at `next`. The windows of successive calls tile the position space,
//! so an element present for the whole scan is returned exactly once,
//! whatever is added or removed in between, and the scan ends when a window
//! reaches the end of the space.
//!
//! The cost, and why it is bounded: a call cannot look positions up in order
//! without an index, so it makes one O(n) pass over the collection, hashing
//! each element and keeping those inside its window (no sort, no allocation
//! beyond the reply). The window is sized so that it holds about
//! `max(COUNT, n / CALLS_MAX)` elements: the usual COUNT on a modest
//! collection, and at most about [`CALLS_MAX`] calls (O(CALLS_MAX · n) in all)
//! for a huge one, where each reply then carries more than COUNT elements —
//! which Redis allows, COUNT being a hint. A collection of at most
//! [`WHOLE_MAX`] elements is returned whole with cursor 0, as Redis does for
//! its compact (listpack/intset) encodings.

use super::{SYNTAX_ERROR, parse_int};

/// Collections this small are returned whole in one call (Redis returns its
/// listpack-encoded hashes and sets, up to 128 entries by default, whole).
pub const WHOLE_MAX: usize = 128;

/// The number of calls a full scan of a huge collection takes at most (about):
/// each call costs one pass over the collection, so this bounds the cost of a
/// whole scan to `CALLS_MAX` passes.
pub const CALLS_MAX: u64 = 256;

/// The position of an element: FNV-1a over its bytes, then the SplitMix64
/// finaliser to spread short and similar elements over the whole space.
pub fn position(element: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in element {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The positions one call covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First position (inclusive): the cursor.
    pub start: u64,
    /// End (exclusive); `None` for the end of the space.
    pub end: Option<u64>,
}

impl Window {
    /// The window of a call with `cursor` and `count` over `len` elements.
    pub fn new(cursor: u64, count: usize, len: usize) -> Window {
        if len <= WHOLE_MAX.max(count) {
            // Everything, whatever the cursor: a collection that shrank during
            // a scan is simply returned whole (duplicates are allowed).
            return Window { start: 0, end: None };
        }
        let target = (count as u128).max((len as u128).div_ceil(u128::from(CALLS_MAX)));
        // A window of `target / len` of the space holds about `target` elements.
        let span = ((target << 64) / len as u128).max(1);
        let end = u128::from(cursor) + span;
        Window { start: cursor, end: u64::try_from(end).ok() }
    }

    /// True if `element` is in the window.
    pub fn contains(&self, element: &[u8]) -> bool {
        let at = position(element);
        at >= self.start && self.end.is_none_or(|end| at < end)
    }

    /// The cursor to reply with: the window's end, or 0 when the scan is done.
    pub fn next_cursor(&self) -> u64 {
        self.end.unwrap_or(0)
    }
}

/// Parses a cursor as Redis does (`strtoul` in base 10: an optional sign, a
/// negative number wrapping around, the empty string reading as 0).
pub fn parse_cursor(arg: &[u8]) -> Result<u64, &'static str> {
    const INVALID: &str = "ERR invalid cursor";
    let (negative, digits) = match arg {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() {
        // strtoul reads nothing; Redis accepts only the empty string itself.
        return if arg.is_empty() { Ok(0) } else { Err(INVALID) };
    }
    let mut value: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return Err(INVALID);
        }
        value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(byte - b'0'))).ok_or(INVALID)?;
    }
    Ok(if negative { value.wrapping_neg() } else { value })
}

/// The options of HSCAN/SSCAN after the cursor: MATCH and COUNT.
pub struct ScanOptions<'a> {
    /// The MATCH pattern.
    pub pattern: Option<&'a [u8]>,
    /// The COUNT hint (default 10).
    pub count: usize,
}

impl<'a> ScanOptions<'a> {
    /// Parses `MATCH pattern` and `COUNT n` in any order (the last one of
    /// each wins); anything else, a COUNT below 1 or an option without its
    /// value is a syntax error, as in Redis.
    pub fn parse(args: &'a [&'a [u8]]) -> Result<ScanOptions<'a>, String> {
        let mut options = ScanOptions { pattern: None, count: 10 };
        let mut i = 0;
        while i < args.len() {
            let Some(value) = args.get(i + 1) else {
                return Err(SYNTAX_ERROR.to_string());
            };
            if args[i].eq_ignore_ascii_case(b"COUNT") {
                match parse_int(value) {
                    Ok(n) if n >= 1 => options.count = usize::try_from(n).unwrap_or(usize::MAX),
                    Ok(_) => return Err(SYNTAX_ERROR.to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            } else if args[i].eq_ignore_ascii_case(b"MATCH") {
                // A lone `*` matches everything: skip matching altogether.
                options.pattern = (value != b"*").then_some(value.as_ref());
            } else {
                return Err(SYNTAX_ERROR.to_string());
            }
            i += 2;
        }
        Ok(options)
    }

    /// True if `element` passes the MATCH filter.
    pub fn matches(&self, element: &[u8]) -> bool {
        self.pattern.is_none_or(|p| super::glob_match(p, element, false))
    }
}

/// Writes the reply of a scan over a missing key: cursor 0, no elements.
pub fn reply_empty(reply: &mut crate::reply::Reply<'_>) {
    reply.array(2);
    reply.bulk(b"0");
    reply.array(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_like_strtoul() {
        assert_eq!(parse_cursor(b"0"), Ok(0));
        assert_eq!(parse_cursor(b"42"), Ok(42));
        assert_eq!(parse_cursor(b"+42"), Ok(42));
        assert_eq!(parse_cursor(b"-1"), Ok(u64::MAX));
        assert_eq!(parse_cursor(b""), Ok(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [&b"18446744073709551616"[..], b"abc", b" 1", b"1 ", b"0x10", b"-", b"+", b"1.5", b"--1", b"-+1"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }

    /// Runs a whole scan with `count` over `len` elements; returns how many
    /// times each element came back and the number of calls.
    fn full_scan(len: u32, count: usize) -> (Vec<u32>, u64) {
        let elements: Vec<Vec<u8>> = (0..len).map(|i| format!("element:{i}").into_bytes()).collect();
        let mut seen = vec![0u32; elements.len()];
        let (mut cursor, mut calls) = (0, 0);
        loop {
            let window = Window::new(cursor, count, elements.len());
            for (i, element) in elements.iter().enumerate() {
                if window.contains(element) {
                    seen[i] += 1;
                }
            }
            calls += 1;
            cursor = window.next_cursor();
            if cursor == 0 {
                return (seen, calls);
            }
        }
    }

    #[test]
    fn windows_tile_the_space_and_return_each_element_once() {
        // COUNT rules on a modest collection: about len / COUNT calls.
        let (seen, calls) = full_scan(2_000, 10);
        assert!(seen.iter().all(|&n| n == 1), "every element exactly once");
        assert!((170..=230).contains(&calls), "about 200 calls, got {calls}");
        // A larger one takes about CALLS_MAX calls whatever the COUNT.
        let (seen, calls) = full_scan(20_000, 10);
        assert!(seen.iter().all(|&n| n == 1), "every element exactly once");
        assert!((200..=300).contains(&calls), "about CALLS_MAX calls, got {calls}");
        let window = Window::new(0, 10, 10_000_000);
        let span = window.end.expect("not the whole space");
        assert!(u64::MAX / span <= CALLS_MAX + 1);
    }

    #[test]
    fn small_collections_come_whole() {
        assert_eq!(Window::new(12345, 10, WHOLE_MAX), Window { start: 0, end: None });
        assert_eq!(Window::new(0, 1_000, 900), Window { start: 0, end: None });
        assert_eq!(Window::new(0, 10, 0).next_cursor(), 0);
    }

    #[test]
    fn a_window_that_reaches_the_end_finishes_the_scan() {
        let window = Window::new(u64::MAX - 5, 10, 1_000);
        assert_eq!(window.end, None);
        assert_eq!(window.next_cursor(), 0);
        assert!(window.contains(b"anything") || position(b"anything") < u64::MAX - 5);
    }
}
