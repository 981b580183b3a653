//! Hash slots: which shard owns a key.
//!
//! The Redis Cluster rule, so cluster-aware clients agree with us: 16384
//! slots, a key's slot is CRC16 (XMODEM) of the key modulo 16384, and if the
//! key contains `{...}` with at least one byte inside, only that part is
//! hashed (a "hash tag"), so related keys can share a slot.

use core::ops::RangeInclusive;

/// Number of hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster
/// computes it.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The part of `key` that is hashed: the first `{...}` with a non-empty
/// inside, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOT_COUNT
}

/// Splits the slots into `shards` contiguous ranges as evenly as possible
/// (the first `16384 % shards` ranges get one slot more).
pub fn split_slots(shards: u16) -> Vec<RangeInclusive<u16>> {
    assert!((1..=SLOT_COUNT).contains(&shards), "shard count out of range");
    let base = SLOT_COUNT / shards;
    let extra = SLOT_COUNT % shards;
    let mut start = 0u16;
    (0..shards)
        .map(|i| {
            let len = base + u16::from(i < extra);
            let range = start..=start + len - 1;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn split_covers_every_slot_once() {
        for shards in [1u16, 2, 3, 7, 1000, 16384] {
            let ranges = split_slots(shards);
            assert_eq!(ranges.len(), shards as usize);
            assert_eq!(*ranges[0].start(), 0);
            assert_eq!(*ranges.last().unwrap().end(), SLOT_COUNT - 1);
            for pair in ranges.windows(2) {
                assert_eq!(*pair[0].end() + 1, *pair[1].start());
            }
        }
        assert_eq!(split_slots(3), vec![0..=5461, 5462..=10922, 10923..=16383]);
    }
}
