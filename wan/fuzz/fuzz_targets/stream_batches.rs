//! A destination's zstd stream context fed hostile batches, and a source's
//! and a destination's contexts fed arbitrary batches.
//!
//! The input is cut into batches: each a little-endian u16 length, then
//! that many bytes. First every batch goes, as a payload announcing a size
//! taken from its first two bytes, to one `StreamDecompressor`: it must
//! never panic, and what it returns must have exactly the size announced
//! (it stops at the first refusal, as the stream would). Then the same
//! batches, as raw data, go through a `StreamCompressor` and a fresh
//! `StreamDecompressor`: each must come back exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_wan::protocol::{MESSAGE_BYTES_MAX, StreamCompressor, StreamDecompressor};

fn batches(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        out.push(&rest[..take]);
        rest = &rest[take..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let batches = batches(data);
    let mut hostile = StreamDecompressor::new().expect("a context");
    for payload in &batches {
        let announced = payload.first().map_or(0, |&b| u32::from(b)) * 64
            + payload.get(1).map_or(0, |&b| u32::from(b));
        match hostile.decompress(payload, announced, MESSAGE_BYTES_MAX) {
            Ok(raw) => assert_eq!(raw.len(), announced as usize),
            Err(_) => break,
        }
    }
    let mut sender = StreamCompressor::new().expect("a context");
    let mut receiver = StreamDecompressor::new().expect("a context");
    for raw in &batches {
        let payload = sender.compress(raw).expect("compressed");
        let back = receiver.decompress(&payload.bytes, raw.len() as u32, MESSAGE_BYTES_MAX).expect("read back");
        assert_eq!(&back[..], *raw);
    }
});
