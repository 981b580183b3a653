//! The key table: a slab of slots plus a hash index of slot numbers.
//!
//! Why not a plain hash map of key to value: hashbrown sizes its table in
//! powers of two and, at one million keys, sits at 48% load with 2^21 buckets;
//! with 64-byte entries stored inline that is 136 bytes per key. Storing the
//! entries in a slab and indexing them with 4-byte slot numbers costs 5 bytes
//! per bucket instead, ~78 bytes per key in all. Slots never move, which also
//! gives SCAN its guarantee: a key present for the whole scan is returned,
//! because the cursor is a slot number.
//!
//! Neither part stops the shard to grow (D99). The slab is a list of chunks
//! of [`CHUNK`] slots, so growing never copies what is there (one `Vec` of
//! 2 M slots doubled by copying 150 MB). The index, past
//! [`INCREMENTAL_FROM`] keys, grows the way Redis's dict rehashes: a new
//! index of twice the capacity takes every new key, and each insert moves
//! the entries of the next [`MOVES_PER_INSERT`] occupied slots from the old
//! one, which lookups consult until it is empty (a whole rehash of 1.8 M
//! keys at once took 100–230 ms under the shard's lock).
//!
//! A copy of the whole table can be taken in steps, with the shard's lock
//! released between them (D103): while one is under way the table records
//! which of the slots already copied change, so that the copy's last step
//! takes those again and the result is the table as it stands then.

use core::hash::BuildHasher;
use core::sync::atomic::{AtomicU64, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::short_bytes::ShortBytes;

/// Largest number of slots (the index stores `u32` slot numbers).
pub const SLOTS_MAX: usize = u32::MAX as usize;

/// Slots per chunk of the slab (a power of two).
pub const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_BITS: u32 = 16;

/// Index capacity from which the index grows incrementally (below it, a
/// whole rehash is a few milliseconds at most).
pub const INCREMENTAL_FROM: usize = 1 << 16;

/// Occupied slots whose index entries one insert moves while the index grows:
/// the old index empties in about `capacity / 16` inserts, well before the
/// new one (twice the capacity) fills.
pub const MOVES_PER_INSERT: usize = 16;

type Entry<V> = Option<(ShortBytes, V)>;

/// The index being replaced while it grows. Its entries are never removed:
/// a key moved to the new index (or removed) leaves a stale entry behind,
/// which a lookup, comparing the key in the slot it names, never takes.
struct Growth {
    old: HashTable<u32>,
    /// Slots below this one are in the new index (or vacant).
    next_slot: usize,
    /// The slots the old index covers: those in use when the growth began
    /// (until it ends, new keys take fresh slots, never vacant ones).
    end: usize,
    /// Keys still only in the old index.
    remaining: usize,
}

/// A copy of the table under way ([`KeyTable::copy_begin`]): the slots
/// below the copy's progress that changed since it passed them.
struct Copying {
    token: u64,
    dirty: Vec<u32>,
    /// Most changes recorded before the copy gives up (its end then copies
    /// the whole table at once, as without steps).
    limit: usize,
}

/// Tokens of copies, unique in the process: a copy's token never names
/// another table's copy, even of a table that replaced its own.
static COPY_TOKENS: AtomicU64 = AtomicU64::new(1);

/// A slab-backed map from key to `V`.
pub struct KeyTable<V> {
    index: HashTable<u32>,
    growth: Option<Growth>,
    chunks: Vec<Vec<Entry<V>>>,
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
    incremental_from: usize,
    /// A change to a slot below this one is recorded for the copy under
    /// way (0 when there is none: one comparison on each write).
    copied_below: u32,
    copying: Option<Box<Copying>>,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable::with_incremental_from(INCREMENTAL_FROM)
    }
}

/// The hash of the key in `slot` (for the index's own rehashing).
#[inline]
fn rehash<V>(chunks: &[Vec<Entry<V>>], hasher: &DefaultHashBuilder, slot: u32) -> u64 {
    hasher.hash_one(entry(chunks, slot).as_ref().expect("indexed slot is occupied").0.as_slice())
}

/// The chunk and the offset in it of `slot`.
#[inline]
fn position(slot: u32) -> (usize, usize) {
    ((slot >> CHUNK_BITS) as usize, slot as usize & (CHUNK - 1))
}

#[inline]
fn entry<V>(chunks: &[Vec<Entry<V>>], slot: u32) -> &Entry<V> {
    let (chunk, offset) = position(slot);
    &chunks[chunk][offset]
}

impl<V> KeyTable<V> {
    /// A table whose index grows incrementally from `capacity` on (tests
    /// use a small one to exercise the growth).
    pub fn with_incremental_from(capacity: usize) -> Self {
        KeyTable {
            index: HashTable::new(),
            growth: None,
            chunks: Vec::new(),
            free: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            incremental_from: capacity,
            copied_below: 0,
            copying: None,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.index.len() + self.growth.as_ref().map_or(0, |g| g.remaining)
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while the index grows (entries left in the old index).
    pub fn is_growing(&self) -> bool {
        self.growth.is_some()
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot of `key`.
    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hash(key);
        let chunks = &self.chunks;
        let eq = |&slot: &u32| entry(chunks, slot).as_ref().is_some_and(|(k, _)| k.as_slice() == key);
        match self.index.find(hash, eq) {
            Some(&slot) => Some(slot),
            None => self.growth.as_ref().and_then(|g| g.old.find(hash, eq)).copied(),
        }
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
        Some(self.slot_mut(slot))
    }

    /// The key and value in an occupied slot. Panics on a vacant slot.
    #[inline]
    pub fn slot(&self, slot: u32) -> &(ShortBytes, V) {
        entry(&self.chunks, slot).as_ref().expect("slot is occupied")
    }

    /// The key and value in `slot`, if it is occupied.
    #[inline]
    pub fn get_slot(&self, slot: u32) -> Option<&(ShortBytes, V)> {
        let (chunk, offset) = position(slot);
        self.chunks.get(chunk).and_then(|c| c.get(offset)).and_then(Option::as_ref)
    }

    /// Every slot's entry from `from` up to (not including) `to`, in slot
    /// order, vacant ones included (`to` at most [`KeyTable::slot_count`]).
    pub fn range(&self, from: u32, to: u32) -> impl Iterator<Item = (u32, Option<&(ShortBytes, V)>)> {
        (from..to).map(|slot| (slot, entry(&self.chunks, slot).as_ref()))
    }

    /// Every write to a slot goes through here.
    #[inline]
    fn entry_mut(&mut self, slot: u32) -> &mut Entry<V> {
        if slot < self.copied_below {
            self.record_change(slot);
        }
        let (chunk, offset) = position(slot);
        &mut self.chunks[chunk][offset]
    }

    /// Records a change to a slot the copy under way has passed; past the
    /// copy's limit, stops recording (the copy then ends with a whole copy).
    #[cold]
    fn record_change(&mut self, slot: u32) {
        let Some(copying) = &mut self.copying else {
            self.copied_below = 0;
            return;
        };
        if copying.dirty.last() == Some(&slot) {
            return;
        }
        if copying.dirty.len() < copying.limit {
            copying.dirty.push(slot);
        } else {
            self.copied_below = 0;
            self.copying = None;
        }
    }

    /// Starts a copy of the table in steps and returns its token. Another
    /// copy under way is given up (its [`KeyTable::copy_end`] answers
    /// `None`): one at a time per table.
    pub fn copy_begin(&mut self) -> u64 {
        let token = COPY_TOKENS.fetch_add(1, Ordering::Relaxed);
        let limit = self.len() / 4 + CHUNK;
        self.copying = Some(Box::new(Copying { token, dirty: Vec::new(), limit }));
        self.copied_below = 0;
        token
    }

    /// The copy `token` holds every slot below `below`: changes to them
    /// from now on are recorded. False if the copy is no longer under way
    /// (another began, or it recorded too many changes).
    pub fn copy_advance(&mut self, token: u64, below: u32) -> bool {
        match &self.copying {
            Some(copying) if copying.token == token => {
                self.copied_below = below;
                true
            }
            _ => false,
        }
    }

    /// Ends the copy `token`: the slots below its progress that changed
    /// since it copied them, ascending, each once; `None` if the copy is no
    /// longer under way (the caller copies the whole table instead).
    pub fn copy_end(&mut self, token: u64) -> Option<Vec<u32>> {
        match self.copying.take() {
            Some(copying) if copying.token == token => {
                self.copied_below = 0;
                let mut dirty = copying.dirty;
                dirty.sort_unstable();
                dirty.dedup();
                Some(dirty)
            }
            other => {
                self.copying = other;
                None
            }
        }
    }

    /// The value in an occupied slot, mutably.
    #[inline]
    pub fn slot_mut(&mut self, slot: u32) -> &mut V {
        &mut self.entry_mut(slot).as_mut().expect("slot is occupied").1
    }

    /// Inserts a key that is not present; returns its slot.
    pub fn insert_new(&mut self, key: &[u8], value: V) -> u32 {
        debug_assert!(self.find(key).is_none());
        let hash = self.hash(key);
        // Before the slot is taken: a growth covers the slots in use.
        self.make_room();
        let entry = Some((ShortBytes::new(key), value));
        let reused = if self.growth.is_none() { self.free.pop() } else { None };
        let slot = match reused {
            Some(slot) => {
                *self.entry_mut(slot) = entry;
                slot
            }
            None => {
                let slot = self.slot_count();
                assert!(slot < SLOTS_MAX, "key table full");
                match self.chunks.last_mut() {
                    Some(chunk) if chunk.len() < CHUNK => chunk.push(entry),
                    _ => {
                        let mut chunk = Vec::with_capacity(if self.chunks.is_empty() { 0 } else { CHUNK });
                        chunk.push(entry);
                        self.chunks.push(chunk);
                    }
                }
                slot as u32
            }
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| rehash(chunks, hasher, s));
        self.grow_step(MOVES_PER_INSERT);
        slot
    }

    /// Before an insert into the index: starts an incremental growth when it
    /// is full and large (a small one grows at once inside the insert), or
    /// finishes one whose new index filled first.
    fn make_room(&mut self) {
        if self.index.len() < self.index.capacity() {
            return;
        }
        if self.growth.is_some() {
            self.grow_step(usize::MAX);
        }
        if self.index.capacity() >= self.incremental_from {
            let bigger = HashTable::with_capacity(self.index.capacity() * 2);
            let old = std::mem::replace(&mut self.index, bigger);
            let (end, remaining) = (self.slot_count(), old.len());
            self.growth = Some(Growth { old, next_slot: 0, end, remaining });
        }
    }

    /// Moves the keys of up to `moves` occupied slots from the old index to
    /// the new one; ends the growth once every slot it covers is passed.
    fn grow_step(&mut self, moves: usize) {
        let Some(growth) = &mut self.growth else {
            return;
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let mut moved = 0;
        while moved < moves && growth.next_slot < growth.end {
            let slot = growth.next_slot as u32;
            growth.next_slot += 1;
            let Some((key, _)) = entry(chunks, slot) else {
                continue;
            };
            moved += 1;
            growth.remaining -= 1;
            self.index.insert_unique(hasher.hash_one(key.as_slice()), slot, |&s| rehash(chunks, hasher, s));
        }
        if growth.next_slot == growth.end {
            debug_assert_eq!(growth.remaining, 0, "keys left behind in the old index");
            self.growth = None;
        }
    }

    /// Makes room for `additional` more keys without growing the index.
    pub fn reserve(&mut self, additional: usize) {
        self.grow_step(usize::MAX);
        let mut room = additional.saturating_sub(self.free.len());
        if let Some(last) = self.chunks.last_mut() {
            let here = room.min(CHUNK - last.len());
            last.reserve_exact(here);
            room -= here;
        }
        while room > 0 {
            self.chunks.push(Vec::with_capacity(CHUNK));
            room = room.saturating_sub(CHUNK);
        }
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.index.reserve(additional, |&s| rehash(chunks, hasher, s));
    }

    /// Removes the key in `slot`, returning its value.
    pub fn remove_slot(&mut self, slot: u32) -> V {
        match &mut self.growth {
            // Not moved yet: only in the old index, where its entry goes
            // stale (the slot stays vacant until the growth ends).
            Some(growth) if (growth.next_slot..growth.end).contains(&(slot as usize)) => {
                assert!(entry(&self.chunks, slot).is_some(), "slot {slot} is vacant");
                growth.remaining -= 1;
            }
            _ => {
                let key_hash = self.hash(&self.slot(slot).0);
                let Ok(found) = self.index.find_entry(key_hash, |&s| s == slot) else {
                    panic!("slot {slot} is not indexed");
                };
                found.remove();
            }
        }
        self.free.push(slot);
        self.entry_mut(slot).take().expect("slot is occupied").1
    }

    /// Number of slots (occupied or vacant): the bound of a slot cursor.
    pub fn slot_count(&self) -> usize {
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
            None => 0,
        }
    }

    /// The occupied slot at or after `from`, if any.
    pub fn next_occupied(&self, from: usize) -> Option<u32> {
        (from..self.slot_count()).find(|&i| entry(&self.chunks, i as u32).is_some()).map(|i| i as u32)
    }

    /// Every occupied slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &ShortBytes, &V)> {
        self.chunks.iter().flatten().enumerate().filter_map(|(i, e)| e.as_ref().map(|(k, v)| (i as u32, k, v)))
    }

    /// Removes every key (and gives up a copy under way).
    pub fn clear(&mut self) {
        self.copied_below = 0;
        self.copying = None;
        self.index.clear();
        self.growth = None;
        self.chunks.clear();
        self.free.clear();
    }

    /// Bytes held by the table's own arrays (not by what values point to).
    pub fn table_bytes(&self) -> usize {
        let index = self.index.capacity() + self.growth.as_ref().map_or(0, |g| g.old.capacity());
        index * (core::mem::size_of::<u32>() + 1)
            + self.chunks.iter().map(Vec::capacity).sum::<usize>() * core::mem::size_of::<Entry<V>>()
            + self.free.capacity() * core::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_records_changes_to_passed_slots_until_its_limit() {
        let mut table: KeyTable<u32> = KeyTable::default();
        for i in 0..8u32 {
            table.insert_new(&i.to_le_bytes(), i);
        }
        let token = table.copy_begin();
        assert!(table.copy_advance(token, 4));
        *table.slot_mut(5) = 50; // not passed yet: the copy takes it later
        *table.slot_mut(2) = 20;
        *table.slot_mut(2) = 21;
        table.remove_slot(1);
        let reused = table.insert_new(b"new", 9);
        assert_eq!(reused, 1, "a vacant passed slot is reused");
        assert_eq!(table.copy_end(token), Some(vec![1, 2]));
        // Ended: nothing more is recorded.
        *table.slot_mut(0) = 1;
        assert_eq!(table.copy_end(token), None);

        // A rival copy gives up the first; too many changes give up a copy.
        let first = table.copy_begin();
        let second = table.copy_begin();
        assert!(!table.copy_advance(first, 8));
        assert!(table.copy_advance(second, 8));
        for round in 0..(CHUNK as u32 + 8) {
            *table.slot_mut(round % 2) = round;
        }
        assert_eq!(table.copy_end(first), None);
        assert_eq!(table.copy_end(second), None);
    }

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

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Reserve(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => any::<u16>().prop_map(|k| Op::Insert(k % 2_000)),
            3 => any::<u16>().prop_map(|k| Op::Remove(k % 2_000)),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    proptest::proptest! {
        /// Through incremental growths of the index (from a capacity of 8,
        /// a few slots moved per insert) and chunks of the slab, the table
        /// holds exactly what a map would.
        #[test]
        fn the_table_is_a_map_through_its_growth(ops in proptest::collection::vec(op(), 1..3_000)) {
            let mut table: KeyTable<u16> = KeyTable::with_incremental_from(8);
            let mut model = std::collections::HashMap::new();

            for op in ops {
                match op {
                    Op::Insert(k) => {
                        if let std::collections::hash_map::Entry::Vacant(vacant) = model.entry(k) {
                            vacant.insert(table.insert_new(format!("key-{k}").as_bytes(), k));
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(slot) = model.remove(&k) {
                            proptest::prop_assert_eq!(table.remove_slot(slot), k);
                            proptest::prop_assert_eq!(table.find(format!("key-{k}").as_bytes()), None);
                        }
                    }
                    Op::Reserve(n) => table.reserve(usize::from(n % 16)),
                }
                proptest::prop_assert_eq!(table.len(), model.len());
            }
            for (k, slot) in &model {
                proptest::prop_assert_eq!(table.find(format!("key-{k}").as_bytes()), Some(*slot));
                proptest::prop_assert_eq!(table.slot(*slot).1, *k);
            }
            for k in 0..2_000u16 {
                let found = table.find(format!("key-{k}").as_bytes());
                proptest::prop_assert_eq!(found, model.get(&k).copied(), "key-{}", k);
            }
            proptest::prop_assert_eq!(table.iter().count(), model.len());
        }
    }

    /// While the index grows, every key is found, whichever index holds it,
    /// and the old index empties within capacity / 16 inserts.
    #[test]
    fn keys_are_found_all_through_a_growth() {
        let mut table: KeyTable<u32> = KeyTable::with_incremental_from(8);
        let (mut growths, mut growing_for) = (0, 0);
        for i in 0..2_000u32 {
            let was_growing = table.is_growing();
            table.insert_new(&i.to_le_bytes(), i);
            if table.is_growing() {
                growing_for += 1;
                growths += usize::from(!was_growing);
                assert!(growing_for <= table.len() / MOVES_PER_INSERT + 1, "{growing_for} inserts at {}", table.len());
            } else {
                growing_for = 0;
            }
            if i % 7 == 0 {
                assert!((0..=i).all(|k| table.get(&k.to_le_bytes()) == Some(&k)), "after {i}");
            }
        }
        // 28 → 56 → ... → 3,584: seven growths outlast their first insert.
        assert_eq!(growths, 7);
    }

    /// Slots cross chunk boundaries and keep their numbers.
    #[test]
    fn slots_span_chunks() {
        let mut table: KeyTable<usize> = KeyTable::with_incremental_from(1 << 10);
        let count = CHUNK * 2 + 5;
        for i in 0..count {
            assert_eq!(table.insert_new(&i.to_le_bytes(), i), i as u32);
        }
        assert!(table.table_bytes() >= count * core::mem::size_of::<Entry<usize>>());
        assert_eq!(table.slot_count(), count);
        assert_eq!(table.next_occupied(CHUNK - 1), Some(CHUNK as u32 - 1));
        assert_eq!(table.remove_slot(CHUNK as u32), CHUNK);
        assert_eq!(table.next_occupied(CHUNK), Some(CHUNK as u32 + 1));
        assert_eq!(table.get(&(CHUNK * 2).to_le_bytes()), Some(&(CHUNK * 2)));
        assert_eq!(table.iter().map(|(slot, _, v)| (slot as usize, *v)).filter(|(s, v)| s == v).count(), count - 1);
    }
}
