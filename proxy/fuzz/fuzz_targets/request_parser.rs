//! Fuzz target for the proxy's request parser.
//!
//! The first input byte picks the limits (Redis's defaults, or tiny ones so
//! short inputs reach every limit) and how many of the next bytes describe a
//! chunking; the rest is fed to the parser twice: in one piece, and in the
//! chosen chunks. Checks: no panic, the parser never consumes more bytes than
//! it was given, a command's arguments fit in the bytes it consumed, and the
//! chunking changes neither the commands nor the final error; and
//! `parse_in_place`, the connection's way (arguments read as ranges of the
//! buffer, the frame consumed after), sees exactly what `parse_into` sees.

#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use meridian_proxy::request::{InPlace, Limits, Parsed, ProtocolError, RequestParser};

/// Limits small enough that a few hundred fuzz bytes can exceed each one.
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

/// Commands parsed, and the error that stopped parsing, if any.
type Outcome = (Vec<Vec<Bytes>>, Option<ProtocolError>);

/// `input` in chunks whose sizes are `schedule` bytes plus one (cycled; an
/// empty schedule means one chunk).
fn chunks<'a>(input: &'a [u8], schedule: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut sizes = schedule.iter().map(|&size| usize::from(size) + 1).cycle();
    let mut fed = 0;
    std::iter::from_fn(move || {
        let end = sizes.next().map_or(input.len(), |size| (fed + size).min(input.len()));
        let chunk = input.get(fed..end).filter(|chunk| !chunk.is_empty())?;
        fed = end;
        Some(chunk)
    })
}

/// Feeds `input` in [`chunks`], using `parse_into` with one reused vector,
/// and drains every complete command after each chunk.
fn run(limits: Limits, input: &[u8], schedule: &[u8]) -> Outcome {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut args = Vec::new();
    let mut commands = Vec::new();
    let (mut fed, mut consumed) = (0, 0);
    for chunk in chunks(input, schedule) {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let before = buf.len();
            let result = parser.parse_into(&mut buf, &mut args);
            assert!(buf.len() <= before, "the parser grew the buffer's contents");
            consumed += before - buf.len();
            assert!(consumed <= fed, "consumed {consumed} of {fed} bytes");
            match result {
                Ok(Parsed::Command) => {
                    assert!(!args.is_empty(), "a command without arguments");
                    let arg_bytes: usize = args.iter().map(Bytes::len).sum();
                    assert!(arg_bytes <= before - buf.len());
                    commands.push(args.clone());
                }
                Ok(Parsed::Incomplete) => {
                    assert!(args.is_empty());
                    break;
                }
                Err(error) => {
                    assert!(args.is_empty());
                    assert_eq!(parser.parse_into(&mut buf, &mut args), Err(error.clone()));
                    return (commands, Some(error));
                }
            }
        }
    }
    (commands, None)
}

/// [`run`] through `parse_in_place`, consuming each frame after reading its
/// arguments, as the connection does.
fn run_in_place(limits: Limits, input: &[u8], schedule: &[u8]) -> Outcome {
    let mut parser = RequestParser::new(limits);
    let mut buf = BytesMut::new();
    let mut owned = Vec::new();
    let mut commands = Vec::new();
    for chunk in chunks(input, schedule) {
        buf.extend_from_slice(chunk);
        loop {
            match parser.parse_in_place(&mut buf, &mut owned) {
                Ok(Some(InPlace::Frame { frame_len })) => {
                    assert!(frame_len <= buf.len(), "a frame past the buffer");
                    let args: Vec<Bytes> = parser
                        .arg_ranges()
                        .iter()
                        .map(|&(start, end)| {
                            assert!(start <= end && end <= frame_len, "an argument outside its frame");
                            Bytes::copy_from_slice(&buf[start..end])
                        })
                        .collect();
                    assert!(!args.is_empty(), "a command without arguments");
                    commands.push(args);
                    buf.advance(frame_len);
                }
                Ok(Some(InPlace::Owned)) => {
                    assert!(!owned.is_empty(), "a command without arguments");
                    commands.push(owned.clone());
                }
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(parser.parse_in_place(&mut buf, &mut owned), Err(error.clone()));
                    return (commands, Some(error));
                }
            }
        }
    }
    (commands, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut limits = if control & 0x80 == 0 { Limits::default() } else { small_limits() };
    limits.unauthenticated = control & 0x40 != 0;
    let schedule_len = usize::from(control & 0x0f).min(rest.len());
    let (schedule, input) = rest.split_at(schedule_len);
    let whole = run(limits, input, &[]);
    let chunked = run(limits, input, if schedule.is_empty() { &[0] } else { schedule });
    assert_eq!(whole, chunked, "chunking changed the outcome");
    let schedule = if schedule.is_empty() { &[0][..] } else { schedule };
    assert_eq!(run_in_place(limits, input, schedule), chunked, "parse_in_place differs from parse_into");
});
