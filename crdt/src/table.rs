//! The key table: a slab of slots plus a hash index of slot numbers.
//!
//! Why not a plain hash map of key to value: hashbrown sizes its table in
//! powers of two and, at one million keys, sits at 48% load with 2^21 buckets;
//! with 64-byte entries stored inline that is 136 bytes per key. Storing the
//! entries in a slab (a `Vec` that only grows by doubling) and indexing them
//! with 4-byte slot numbers costs 5 bytes per bucket instead, ~78 bytes per key
//! in all. Slots never move, which also gives SCAN its guarantee: a key present
//! for the whole scan is returned, because the cursor is a slot number.

use core::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::short_bytes::ShortBytes;

/// Largest number of slots (the index stores `u32` slot numbers).
pub const SLOTS_MAX: usize = u32::MAX as usize;

/// A slab-backed map from key to `V`.
pub struct KeyTable<V> {
    index: HashTable<u32>,
    slots: Vec<Option<(ShortBytes, V)>>,
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable { index: HashTable::new(), slots: Vec::new(), free: Vec::new(), hasher: DefaultHashBuilder::default() }
    }
}

impl<V> KeyTable<V> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot of `key`.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hash(key);
        let slots = &self.slots;
        self.index.find(hash, |&slot| slots[slot as usize].as_ref().is_some_and(|(k, _)| k.as_slice() == key)).copied()
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.find(key).map(|slot| &self.slot(slot).1)
    }

    /// The value of `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let slot = self.find(key)?;
        self.slots[slot as usize].as_mut().map(|(_, v)| v)
    }

    /// The key and value in an occupied slot. Panics on a vacant slot.
    #[inline]
    pub fn slot(&self, slot: u32) -> &(ShortBytes, V) {
        self.slots[slot as usize].as_ref().expect("slot is occupied")
    }

    /// The value in an occupied slot, mutably.
    #[inline]
    pub fn slot_mut(&mut self, slot: u32) -> &mut V {
        &mut self.slots[slot as usize].as_mut().expect("slot is occupied").1
    }

    /// Inserts a key that is not present; returns its slot.
    pub fn insert_new(&mut self, key: &[u8], value: V) -> u32 {
        debug_assert!(self.find(key).is_none());
        let hash = self.hash(key);
        let entry = Some((ShortBytes::new(key), value));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                assert!(self.slots.len() < SLOTS_MAX, "key table full");
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| {
            hasher.hash_one(slots[s as usize].as_ref().expect("indexed slot is occupied").0.as_slice())
        });
        slot
    }

    /// Makes room for `additional` more keys without growing the index.
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional.saturating_sub(self.free.len()));
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.reserve(additional, |&s| {
            hasher.hash_one(slots[s as usize].as_ref().expect("indexed slot is occupied").0.as_slice())
        });
    }

    /// Removes the key in `slot`, returning its value.
    pub fn remove_slot(&mut self, slot: u32) -> V {
        let key_hash = self.hash(&self.slot(slot).0);
        let Ok(entry) = self.index.find_entry(key_hash, |&s| s == slot) else {
            panic!("slot {slot} is not indexed");
        };
        entry.remove();
        self.free.push(slot);
        self.slots[slot as usize].take().expect("slot is occupied").1
    }

    /// Number of slots (occupied or vacant): the bound of a slot cursor.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The occupied slot at or after `from`, if any.
    pub fn next_occupied(&self, from: usize) -> Option<u32> {
        (from..self.slots.len()).find(|&i| self.slots[i].is_some()).map(|i| i as u32)
    }

    /// Every occupied slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ShortBytes, &V)> {
        self.slots.iter().enumerate().filter_map(|(i, e)| e.as_ref().map(|(k, v)| (i as u32, k, v)))
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
    }

    /// Bytes held by the table's own arrays (not by what values point to).
    pub fn table_bytes(&self) -> usize {
        self.index.capacity() * (core::mem::size_of::<u32>() + 1)
            + self.slots.capacity() * core::mem::size_of::<Option<(ShortBytes, V)>>()
            + self.free.capacity() * core::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_reuses_slots() {
        let mut table: KeyTable<u32> = KeyTable::default();
        let a = table.insert_new(b"a", 1);
        let b = table.insert_new(b"b", 2);
        assert_eq!(table.get(b"a"), Some(&1));
        assert_eq!(table.remove_slot(a), 1);
        assert_eq!(table.find(b"a"), None);
        assert_eq!(table.len(), 1);
        let c = table.insert_new(b"c", 3);
        assert_eq!(c, a, "vacant slots are reused");
        assert_eq!(table.get(b"b"), Some(&2));
        assert_eq!(table.next_occupied(0), Some(a));
        assert_eq!(table.iter().count(), 2);
        let _ = b;
    }
}
