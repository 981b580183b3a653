//! Hash slots: which shard owns a key.
//!
//! The Redis Cluster rule, so cluster-aware clients agree with us: 16384
//! slots, a key's slot is CRC16 (XMODEM) of the key modulo 16384, and if the
//! key contains `{...}` with at least one byte inside, only that part is
//! hashed (a "hash tag"), so related keys can share a slot.

use core::ops::{Range, RangeInclusive};

use crate::dot::ReplicaId;

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

/// The most granules an active-active database may cut its slots into.
pub const GRANULES_MAX: u16 = 64;
/// Bits of a granular replica id that name the region (the granule is above
/// them): with more than one granule, region ids stay below `1 << 10`.
pub const REGION_BITS: u32 = 10;
/// The largest region id a database of more than one granule can hold.
pub const REGION_MAX_GRANULAR: u16 = (1 << REGION_BITS) - 1;

/// The slot space of an active-active database cut into equal runs,
/// *granules*, each with its own stream of dots per region (see
/// `docs/ARCHITECTURE.md`, D102). A key's writes in region `r` are stamped
/// with the replica id `r | granule << 10`: every dot of a granule's keys
/// comes from that granule's replica ids, so a shard holding some granules
/// sees every dot of each replica id it holds — a contiguous version vector
/// — whatever the other regions' shard counts. One granule (the default) is
/// the plain replica id `r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Granules(u16);

impl Granules {
    /// One granule: the whole slot space, replica id = region id.
    pub const ONE: Granules = Granules(1);

    /// `count` granules: a power of two from 1 to [`GRANULES_MAX`].
    pub fn new(count: u16) -> Result<Granules, String> {
        if count.is_power_of_two() && count <= GRANULES_MAX {
            Ok(Granules(count))
        } else {
            Err(format!("granules must be a power of two from 1 to {GRANULES_MAX}, not {count}"))
        }
    }

    /// How many granules.
    pub fn count(self) -> u16 {
        self.0
    }

    /// The granule of `slot`.
    pub fn of_slot(self, slot: u16) -> u16 {
        (u32::from(slot) * u32::from(self.0) / u32::from(SLOT_COUNT)) as u16
    }

    /// The granule of `key` (0 with one granule, without hashing the key).
    #[inline]
    pub fn of_key(self, key: &[u8]) -> u16 {
        if self.0 == 1 { 0 } else { self.of_slot(key_slot(key)) }
    }

    /// The granule a replica id stamps (0 with one granule).
    pub fn of_replica(self, replica: ReplicaId) -> u16 {
        if self.0 == 1 { 0 } else { replica.0 >> REGION_BITS }
    }

    /// The region a replica id belongs to.
    pub fn region(self, replica: ReplicaId) -> u16 {
        if self.0 == 1 { replica.0 } else { replica.0 & REGION_MAX_GRANULAR }
    }

    /// The replica id of `region`'s writes to keys of `granule`.
    pub fn replica(self, region: u16, granule: u16) -> ReplicaId {
        debug_assert!(granule < self.0, "granule out of range");
        debug_assert!(self.0 == 1 || region <= REGION_MAX_GRANULAR, "region id too large for granules");
        if self.0 == 1 { ReplicaId(region) } else { ReplicaId(region | granule << REGION_BITS) }
    }

    /// The slots of the granules in `granules`.
    pub fn slots(self, granules: Range<u16>) -> RangeInclusive<u16> {
        let width = SLOT_COUNT / self.0;
        granules.start * width..=granules.end * width - 1
    }

    /// The granules each of `shards` shards holds, in slot order: contiguous
    /// runs as even as possible (the later shards get the extra ones).
    pub fn split(self, shards: u16) -> Result<Vec<Range<u16>>, String> {
        if shards == 0 || shards > self.0 {
            return Err(format!("{shards} shards cannot split {} granules (1 to {} shards)", self.0, self.0));
        }
        let edge = |i: u16| (u32::from(i) * u32::from(self.0) / u32::from(shards)) as u16;
        Ok((0..shards).map(|i| edge(i)..edge(i + 1)).collect())
    }
}

impl Default for Granules {
    fn default() -> Granules {
        Granules::ONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granules_cover_the_slots_and_name_their_replicas() {
        assert!(Granules::new(0).is_err() && Granules::new(3).is_err() && Granules::new(128).is_err());
        let g = Granules::new(16).unwrap();
        assert_eq!(g.of_slot(0), 0);
        assert_eq!(g.of_slot(1023), 0);
        assert_eq!(g.of_slot(1024), 1);
        assert_eq!(g.of_slot(SLOT_COUNT - 1), 15);
        assert_eq!(g.slots(0..16), 0..=SLOT_COUNT - 1);
        assert_eq!(g.slots(1..3), 1024..=3071);
        assert_eq!(g.split(3).unwrap(), vec![0..5, 5..10, 10..16]);
        assert_eq!(g.split(16).unwrap().len(), 16);
        assert!(g.split(17).is_err() && g.split(0).is_err());
        for shards in 1..=16 {
            let runs = g.split(shards).unwrap();
            assert_eq!(runs.first().unwrap().start, 0);
            assert_eq!(runs.last().unwrap().end, 16);
            assert!(runs.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()));
        }
        let r = g.replica(5, 9);
        assert_eq!((g.region(r), g.of_replica(r)), (5, 9));
        assert_eq!(g.replica(5, 0), ReplicaId(5));
        // One granule: the plain region id, whatever its size.
        assert_eq!(Granules::ONE.replica(4000, 0), ReplicaId(4000));
        assert_eq!(Granules::ONE.region(ReplicaId(4000)), 4000);
        assert_eq!(Granules::ONE.of_key(b"foo"), 0);
        assert_eq!(g.of_key(b"foo"), g.of_slot(key_slot(b"foo")));
    }

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
