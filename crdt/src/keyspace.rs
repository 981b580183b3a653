//! The keyspace: the CRDT map from key to typed value that one shard holds.
//!
//! It owns the shard's causal context and allocates the dots of local writes.
//! Every local mutator builds the [`KeyDelta`] describing its effect from the
//! current state, applies it through the same [`Keyspace::apply`] path remote
//! deltas take, and returns it — so what a replica or a peer region applies is
//! exactly what the origin applied. Key-level rules (observed-remove DEL, the
//! type-conflict rule, expiry, FLUSH) live here; value-level rules live in the
//! value modules. Reads take the wall clock and never show an expired key.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::context::{CausalContext, VersionVector};
use crate::delta::{Delta, KeyDelta, TypedDelta};
use crate::dot::{Dot, ReplicaId, Tag};
use crate::error::CommandError;
use crate::expiry::Deadline;
use crate::hash::{HashDelta, OrHash};
use crate::list::{EMPTY_LIST, RgaList};
use crate::number::{self, Numeric};
use crate::register::{Amount, Register, RegisterDelta};
use crate::set::{OrSet, SetDelta};
use crate::short_bytes::ShortBytes;
use crate::slot::Granules;
use crate::table::KeyTable;
use crate::value::{KeySnapshot, KeyState, Stored, TypedValue, ValueType};
pub use crate::zset::ZAddFlags;
use crate::zset::{LexBound, OrZSet, ScoreBound, ZAddTotals};

/// A sorted-set member with its score, as ZPOPMIN/ZPOPMAX return them.
pub type ScoredMember = (ShortBytes, f64);

/// Which members [`Keyspace::zrem_range`] removes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ZRemoveRange<'a> {
    /// ZREMRANGEBYRANK start stop (ZRANGE's index rules).
    Rank(i64, i64),
    /// ZREMRANGEBYSCORE min max.
    Score(ScoreBound, ScoreBound),
    /// ZREMRANGEBYLEX min max.
    Lex(LexBound<'a>, LexBound<'a>),
}

/// What [`Keyspace::copy`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyOutcome {
    /// The source does not exist.
    NoSource,
    /// The destination exists and replacing was not asked for.
    TargetExists,
    /// Copied; the delta written at the destination.
    Copied(Box<KeyDelta>),
}

/// Which end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The head (LPUSH, LPOP).
    Front,
    /// The tail (RPUSH, RPOP).
    Back,
}

/// When a local write happens: its HLC timestamp and the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// HLC timestamp of the write (from [`crate::Clock::now`]).
    pub hlc: u64,
    /// Wall clock in Unix milliseconds (expiry decisions).
    pub wall_ms: u64,
}

/// What a write does to the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryChange {
    /// Leave it (SET KEEPTTL, and every command that is not SET).
    Keep,
    /// Remove it (plain SET: a new value has no TTL).
    Clear,
    /// Set this deadline (SET EX/PX/EXAT/PXAT), Unix milliseconds.
    At(u64),
}

/// Counters for monitoring (`INFO crdt`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyspaceStats {
    /// Deltas applied (local and remote).
    pub deltas_applied: u64,
    /// Times a key came to hold visible values of two types at once.
    pub type_conflicts: u64,
    /// Elements removed or merged by garbage collection.
    pub gc_collected: u64,
    /// Keys this replica deleted because their deadline passed.
    pub expired_deleted: u64,
}

/// A shard's keyspace.
pub struct Keyspace {
    /// The region's replica id (granule 0's, see [`Granules`]).
    replica: ReplicaId,
    /// How the slot space is cut into granules, each written with its own
    /// replica id ([`Keyspace::set_granules`]).
    granules: Granules,
    /// Sequence number of the last dot allocated, per granule.
    last_seqs: Vec<u64>,
    context: CausalContext,
    table: KeyTable<Stored>,
    /// Deadlines this replica owns (it must delete those keys), by slot.
    expires: BTreeSet<(u64, u32)>,
    /// Slots of keys whose last deltas left something to collect (counter
    /// increments, list tombstones, expiry entries), so garbage collection
    /// visits them first instead of waiting for a full pass to reach them.
    marked: hashbrown::HashSet<u32>,
    /// No peer region: nothing is ever concurrent with a write here, so every
    /// applied dot is causally stable at once (see [`Keyspace::set_solo`]).
    solo: bool,
    /// A snapshot merge is under way in steps ([`Keyspace::merge_begin`]):
    /// no peer's delta and no copy may run until it finishes.
    merging: bool,
    stats: KeyspaceStats,
    /// Every delta applied since the last [`Keyspace::take_journal`], when
    /// journaling is on (the shard's durability and replication read it).
    journal: Option<Vec<Delta>>,
    /// For each journaled delta, in step with `journal`: true if this
    /// keyspace originated it (a local mutator, expiry, FLUSH), false if it
    /// was merged through [`Keyspace::apply`]. The WAN syncer ships only the
    /// former (DESIGN.md §4 invariant 2: no back-propagation).
    journal_local: Vec<bool>,
    /// Number of deltas ever journaled (a position in the journal stream).
    journal_seq: u64,
}

/// A field and its value, as HSET takes them: a pair of slices, or two
/// arguments side by side as a client sent them (`[field, value]`), so a
/// command's arguments need no copying into pairs.
pub trait FieldValue {
    /// The field.
    fn field(&self) -> &[u8];
    /// The value.
    fn value(&self) -> &[u8];
}

impl<F: AsRef<[u8]>, V: AsRef<[u8]>> FieldValue for (F, V) {
    fn field(&self) -> &[u8] {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

impl<B: AsRef<[u8]>> FieldValue for [B; 2] {
    fn field(&self) -> &[u8] {
        self[0].as_ref()
    }
    fn value(&self) -> &[u8] {
        self[1].as_ref()
    }
}

/// One journaled delta and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct JournalEntry {
    /// The delta applied.
    pub delta: Delta,
    /// True if this keyspace originated it (a local write, an expiry delete,
    /// a FLUSH); false if it was merged from elsewhere through
    /// [`Keyspace::apply`] (a replica stream, a peer region, a recovery).
    pub local: bool,
}

/// Slots one step of a copy in steps takes under the shard's lock
/// ([`Keyspace::freeze_step`], D103): about half a millisecond of string
/// keys.
pub const FREEZE_STEP_SLOTS: u32 = 8_192;

/// The pause between two steps of [`FrozenKeys::copy_in_steps`], in which
/// the threads waiting for the shard's lock take it.
pub const FREEZE_STEP_PAUSE: std::time::Duration = std::time::Duration::from_micros(250);

/// Slots of the other keyspace (then of this one) a step of a snapshot
/// merge in steps visits ([`Keyspace::merge_step`]): joining a key costs
/// more than copying it, so fewer than a copy's step.
pub const MERGE_STEP_SLOTS: u32 = 2_048;

/// Up to this many arguments, repeated members are found by a linear scan.
const DEDUP_LINEAR_MAX: usize = 16;

/// Allocates the tags of one local write.
pub struct TagSource<'a> {
    replica: ReplicaId,
    hlc: u64,
    last_seq: &'a mut u64,
}

impl<'a> TagSource<'a> {
    /// The tags of one write to `key` by `region`, from the sequences
    /// `last_seqs` (one per granule of `granules`).
    fn for_key(granules: Granules, region: u16, last_seqs: &'a mut [u64], key: &[u8], hlc: u64) -> TagSource<'a> {
        let granule = granules.of_key(key);
        TagSource { replica: granules.replica(region, granule), hlc, last_seq: &mut last_seqs[usize::from(granule)] }
    }

    /// A fresh tag for one new element.
    pub fn next_tag(&mut self) -> Tag {
        *self.last_seq += 1;
        Tag::new(Dot::new(self.replica, *self.last_seq), self.hlc)
    }
}

/// A read-only view of a key's visible value.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    /// A compactly stored string.
    SmallString(&'a ShortBytes),
    /// A full state's visible value.
    Value(&'a TypedValue),
}

impl<'a> View<'a> {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            View::SmallString(_) => ValueType::String,
            View::Value(v) => v.value_type(),
        }
    }
}

impl Keyspace {
    /// An empty keyspace whose local writes originate at `replica`.
    pub fn new(replica: ReplicaId) -> Keyspace {
        Keyspace {
            replica,
            granules: Granules::ONE,
            last_seqs: vec![0],
            context: CausalContext::new(),
            table: KeyTable::default(),
            expires: BTreeSet::new(),
            marked: hashbrown::HashSet::new(),
            solo: false,
            merging: false,
            stats: KeyspaceStats::default(),
            journal: None,
            journal_local: Vec::new(),
            journal_seq: 0,
        }
    }

    /// Turns journaling on or off. On, every delta this keyspace applies —
    /// its own writes, expiry deletes, flushes, and deltas merged from
    /// elsewhere — is also kept, in order, until [`Keyspace::take_journal`]
    /// drains it: what a durable log or a replica stream must carry to rebuild
    /// this state. Off (the default), nothing is kept and nothing is cloned.
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
        self.journal_local.clear();
    }

    /// True if journaling is on.
    pub fn journaling(&self) -> bool {
        self.journal.is_some()
    }

    /// The deltas journaled since the last call, and the journal position
    /// after them (the count of deltas ever journaled). Drops their origins;
    /// [`Keyspace::take_journal_entries`] keeps them.
    pub fn take_journal(&mut self) -> (Vec<Delta>, u64) {
        let deltas = self.journal.as_mut().map(core::mem::take).unwrap_or_default();
        self.journal_local.clear();
        (deltas, self.journal_seq)
    }

    /// Like [`Keyspace::take_journal`], each delta with its origin: the
    /// reader that feeds both durability and the WAN syncer calls this once
    /// and hands only the local entries to the syncer.
    pub fn take_journal_entries(&mut self) -> (Vec<JournalEntry>, u64) {
        let deltas = self.journal.as_mut().map(core::mem::take).unwrap_or_default();
        debug_assert_eq!(deltas.len(), self.journal_local.len(), "journal origins out of step");
        let entries =
            deltas.into_iter().zip(self.journal_local.drain(..)).map(|(delta, local)| JournalEntry { delta, local });
        (entries.collect(), self.journal_seq)
    }

    /// The journal position: the count of deltas ever journaled.
    pub fn journal_seq(&self) -> u64 {
        self.journal_seq
    }

    fn record(&mut self, local: bool, delta: impl FnOnce() -> Delta) {
        if let Some(journal) = &mut self.journal {
            journal.push(delta());
            self.journal_local.push(local);
            self.journal_seq += 1;
        }
    }

    /// Declares that this keyspace has no peer region (`true`), or has one
    /// (`false`, the default). Solo, nothing is concurrent with a local write,
    /// so a counter's increments are merged as they are applied instead of at
    /// the next garbage collection. The WAN syncer turns it off when a peer
    /// joins; merged and unmerged states read the same.
    pub fn set_solo(&mut self, solo: bool) {
        self.solo = solo;
    }

    /// The replica local writes originate at.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// Every dot this keyspace has seen.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// Monitoring counters.
    pub fn stats(&self) -> &KeyspaceStats {
        &self.stats
    }

    /// Number of keys held, including keys hidden by expiry or holding only
    /// tombstones (like Redis's DBSIZE, which counts keys not yet reclaimed).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Number of keys with a deadline this replica enforces (INFO's
    /// `expires`; on a node with no peer region, every key with a TTL).
    pub fn expires_len(&self) -> usize {
        self.expires.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    // ----- merging -----

    /// Merges a delta from anywhere (this replica's own, a replica stream, a
    /// peer region). Commutative, associative and idempotent. The journal
    /// records it as merged, not originated here (see [`JournalEntry`]).
    pub fn apply(&mut self, delta: &Delta) {
        debug_assert!(!self.merging, "a peer's delta during a snapshot merge in steps");
        self.apply_from(delta, false);
    }

    fn apply_from(&mut self, delta: &Delta, local: bool) {
        match delta {
            Delta::Key(key_delta) => self.apply_key_from(key_delta, local),
            Delta::Flush(context) => {
                self.record(local, || delta.clone());
                self.apply_flush(context)
            }
        }
    }

    /// Applies a delta a local mutator of this keyspace produced.
    fn apply_key(&mut self, delta: &KeyDelta) {
        self.apply_key_from(delta, true);
    }

    fn apply_key_from(&mut self, delta: &KeyDelta, local: bool) {
        let found = self.table.find(&delta.key);
        self.apply_key_at(found, delta, local);
    }

    /// Applies a key delta whose key is at `found` in the table (the result of
    /// `self.table.find(&delta.key)`, taken with no change to the table since).
    fn apply_key_at(&mut self, found: Option<u32>, delta: &KeyDelta, local: bool) {
        debug_assert_eq!(found, self.table.find(&delta.key), "a stale slot");
        self.record(local, || Delta::Key(delta.clone()));
        self.stats.deltas_applied += 1;
        let owner = self.owner(&delta.key);
        // The slot that holds the key after the merge, if any.
        let kept = match found {
            Some(slot) => {
                let stored = self.table.slot_mut(slot);
                if let Stored::Big(state) = stored {
                    // Merge in place: no allocation for the common write to a
                    // boxed state (INCR, SADD, HSET, LPUSH ...).
                    let before_deadline = state.owned_deadline(owner);
                    let before_conflict = state.visible_types() > 1;
                    state.apply(delta, &self.context);
                    if self.solo {
                        state.merge_last_increments(delta);
                    }
                    if !before_conflict && state.visible_types() > 1 {
                        self.stats.type_conflicts += 1;
                    }
                    let after_deadline = state.owned_deadline(owner);
                    if state.can_drop() {
                        self.table.remove_slot(slot);
                        self.track_deadline(slot, before_deadline, None);
                        None
                    } else {
                        if state.is_small() {
                            let placeholder = Stored::Small { tag: PLACEHOLDER_TAG, value: ShortBytes::EMPTY };
                            let state = core::mem::replace(stored, placeholder).into_state();
                            *self.table.slot_mut(slot) = Stored::from_state(state);
                        }
                        self.track_deadline(slot, before_deadline, after_deadline);
                        Some(slot)
                    }
                } else if apply_small_fast(stored, delta, &self.context) {
                    Some(slot)
                } else {
                    let context = core::mem::take(&mut self.context);
                    let (conflict, kept) = self.update_slot(slot, |state| {
                        let before_conflict = state.visible_types() > 1;
                        state.apply(delta, &context);
                        !before_conflict && state.visible_types() > 1
                    });
                    self.context = context;
                    if conflict {
                        self.stats.type_conflicts += 1;
                    }
                    kept.then_some(slot)
                }
            }
            None => {
                let mut state = KeyState::default();
                state.apply(delta, &self.context);
                if state.can_drop() {
                    None
                } else {
                    if state.visible_types() > 1 {
                        self.stats.type_conflicts += 1;
                    }
                    let deadline = state.owned_deadline(owner);
                    let slot = self.table.insert_new(&delta.key, Stored::from_state(state));
                    self.track_deadline(slot, None, deadline);
                    Some(slot)
                }
            }
        };
        if let Some(slot) = kept
            && leaves_garbage(delta, self.solo)
        {
            self.marked.insert(slot);
        }
        let granule = usize::from(self.granules.of_replica(owner));
        let (context, last_seq) = (&mut self.context, &mut self.last_seqs[granule]);
        delta.for_each_dot(|dot| {
            context.insert(dot);
            if dot.replica() == owner && dot.seq() > *last_seq {
                *last_seq = dot.seq();
            }
        });
        // With no peer region every dot is stable at once: a key this delta
        // left holding only tombstones (a list popped empty) is collected
        // now, as Redis deletes it — not at the next GC pass, which a
        // restart replaying the journal would wait for again (DBSIZE, KEYS).
        if self.solo
            && let Some(slot) = kept
            && matches!(&self.table.slot(slot).1, Stored::Big(state) if state.visible_types() == 0)
        {
            let stable = self.context.vector().clone();
            self.marked.remove(&slot);
            self.collect_slot(slot, &stable);
        }
    }

    fn apply_flush(&mut self, flushed: &CausalContext) {
        self.stats.deltas_applied += 1;
        let slots: Vec<u32> = self.table.iter().map(|(slot, _, _)| slot).collect();
        for slot in slots {
            self.update_slot(slot, |state| state.remove_covered(flushed));
        }
        self.context.join(flushed);
        self.resume_own_seqs();
    }

    /// Takes the state out of `slot`, runs `work` on it, and puts it back in
    /// its compact form — or removes the key if nothing is left — keeping the
    /// deadline index in step. Returns `work`'s result and whether the key is
    /// still there.
    fn update_slot<R>(&mut self, slot: u32, work: impl FnOnce(&mut KeyState) -> R) -> (R, bool) {
        let placeholder = Stored::Small { tag: PLACEHOLDER_TAG, value: ShortBytes::EMPTY };
        let owner = self.slot_owner(slot);
        let mut state = core::mem::replace(self.table.slot_mut(slot), placeholder).into_state();
        let before_deadline = state.owned_deadline(owner);
        let result = work(&mut state);
        if state.can_drop() {
            self.table.remove_slot(slot);
            self.track_deadline(slot, before_deadline, None);
            (result, false)
        } else {
            let after_deadline = state.owned_deadline(owner);
            *self.table.slot_mut(slot) = Stored::from_state(state);
            self.track_deadline(slot, before_deadline, after_deadline);
            (result, true)
        }
    }

    fn track_deadline(&mut self, slot: u32, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        if let Some(deadline) = before {
            self.expires.remove(&(deadline, slot));
        }
        if let Some(deadline) = after {
            self.expires.insert((deadline, slot));
        }
    }

    // ----- reading -----

    fn stored(&self, key: &[u8]) -> Option<&Stored> {
        self.table.get(key)
    }

    /// The visible value of `key` at wall time `now_ms`.
    pub fn view(&self, key: &[u8], now_ms: u64) -> Option<View<'_>> {
        match self.stored(key)? {
            Stored::Small { value, .. } => Some(View::SmallString(value)),
            Stored::Big(state) => {
                if state.is_expired(now_ms) {
                    return None;
                }
                state.visible().map(View::Value)
            }
        }
    }

    /// The full state of `key`, as stored (expired or not).
    pub fn state(&self, key: &[u8]) -> Option<KeyState> {
        self.stored(key).map(Stored::to_state)
    }

    /// TYPE.
    pub fn value_type(&self, key: &[u8], now_ms: u64) -> Option<ValueType> {
        self.view(key, now_ms).map(|v| v.value_type())
    }

    /// EXISTS for one key.
    pub fn exists(&self, key: &[u8], now_ms: u64) -> bool {
        self.view(key, now_ms).is_some()
    }

    /// GET: the string value, `WRONGTYPE` for another type.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Result<Option<Cow<'_, [u8]>>, CommandError> {
        match self.view(key, now_ms) {
            None => Ok(None),
            Some(View::SmallString(value)) => Ok(Some(Cow::Borrowed(value.as_slice()))),
            Some(View::Value(TypedValue::Str(register))) => Ok(number::render(register)),
            Some(View::Value(_)) => Err(CommandError::WrongType),
        }
    }

    /// The set at `key` (None if absent), `WRONGTYPE` for another type.
    pub fn set_value(&self, key: &[u8], now_ms: u64) -> Result<Option<&OrSet>, CommandError> {
        match self.view(key, now_ms) {
            None => Ok(None),
            Some(View::Value(TypedValue::Set(set))) => Ok(Some(set)),
            Some(_) => Err(CommandError::WrongType),
        }
    }

    /// The hash at `key`.
    pub fn hash_value(&self, key: &[u8], now_ms: u64) -> Result<Option<&OrHash>, CommandError> {
        match self.view(key, now_ms) {
            None => Ok(None),
            Some(View::Value(TypedValue::Hash(hash))) => Ok(Some(hash)),
            Some(_) => Err(CommandError::WrongType),
        }
    }

    /// The sorted set at `key`.
    pub fn zset_value(&self, key: &[u8], now_ms: u64) -> Result<Option<&OrZSet>, CommandError> {
        match self.view(key, now_ms) {
            None => Ok(None),
            Some(View::Value(TypedValue::ZSet(zset))) => Ok(Some(zset)),
            Some(_) => Err(CommandError::WrongType),
        }
    }

    /// The list at `key`.
    pub fn list_value(&self, key: &[u8], now_ms: u64) -> Result<Option<&RgaList>, CommandError> {
        match self.view(key, now_ms) {
            None => Ok(None),
            Some(View::Value(TypedValue::List(list))) => Ok(Some(list)),
            Some(_) => Err(CommandError::WrongType),
        }
    }

    /// The deadline of `key` in Unix milliseconds: `None` if the key does not
    /// exist, `Some(None)` if it has no expiry.
    pub fn deadline(&self, key: &[u8], now_ms: u64) -> Option<Option<u64>> {
        self.view(key, now_ms)?;
        match self.stored(key)? {
            Stored::Small { .. } => Some(None),
            Stored::Big(state) => Some(state.expiry().effective().map(|e| e.deadline_ms)),
        }
    }

    /// One step of SCAN: up to `count` visible keys from slot `cursor`, and the
    /// cursor to continue from (0 when done).
    pub fn scan(&self, cursor: u64, count: usize, now_ms: u64) -> (u64, Vec<ShortBytes>) {
        let mut keys = Vec::new();
        let mut position = cursor as usize;
        let mut visited = 0;
        while visited < count.max(1) {
            let Some(slot) = self.table.next_occupied(position) else {
                return (0, keys);
            };
            let (key, _) = self.table.slot(slot);
            if self.view(key, now_ms).is_some() {
                keys.push(key.clone());
            }
            visited += 1;
            position = slot as usize + 1;
        }
        let next = if self.table.next_occupied(position).is_some() { position as u64 } else { 0 };
        (next, keys)
    }

    /// Every visible key (KEYS); O(n).
    pub fn keys(&self, now_ms: u64) -> Vec<ShortBytes> {
        self.table.iter().filter(|(_, key, _)| self.view(key, now_ms).is_some()).map(|(_, k, _)| k.clone()).collect()
    }

    /// A visible key chosen from `random` (RANDOMKEY), if any key is visible.
    pub fn random_key(&self, random: u64, now_ms: u64) -> Option<ShortBytes> {
        let slots = self.table.slot_count();
        if slots == 0 {
            return None;
        }
        let start = (random % slots as u64) as usize;
        let after = (start..slots).chain(0..start);
        for position in after {
            if let Some(slot) = self.table.next_occupied(position).filter(|&s| s as usize == position) {
                let (key, _) = self.table.slot(slot);
                if self.view(key, now_ms).is_some() {
                    return Some(key.clone());
                }
            }
        }
        None
    }

    // ----- local writes: the common machinery -----

    /// Runs a local write on the value of type `value_type` at `key`.
    ///
    /// `build` gets the current value of that type (None if the key is absent,
    /// expired, or of no such value) and a tag source, and returns its result
    /// and the typed delta (None for a no-op). The write also removes, in the
    /// same delta, everything it observed that the new state must not keep:
    /// the whole key if it was expired, and the hidden values of other types
    /// if the key was in a type conflict. A key of another visible type is
    /// `WRONGTYPE` and nothing happens.
    pub fn mutate<R>(
        &mut self,
        key: &[u8],
        at: Moment,
        value_type: ValueType,
        build: impl FnOnce(Option<&TypedValue>, &mut TagSource<'_>) -> Result<(R, Option<TypedDelta>), CommandError>,
    ) -> Result<(R, Option<KeyDelta>), CommandError> {
        let mut tags = TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, key, at.hlc);
        // A write that ends with no delta (an error, nothing to change) gives
        // back the sequence numbers it took: a dot allocated and never
        // shipped would leave a hole in every peer's vector for good.
        let first_seq = *tags.last_seq;
        // One lookup per write: the slot found here is where the delta is
        // applied below (nothing in between changes the table).
        let found = self.table.find(key);
        let state: Option<Cow<'_, KeyState>> = match found.map(|slot| &self.table.slot(slot).1) {
            None => None,
            Some(Stored::Big(state)) => Some(Cow::Borrowed(&**state)),
            Some(small) => Some(Cow::Owned(small.to_state())),
        };
        let mut prelude = KeyDelta::new(key);
        let current = match &state {
            None => None,
            Some(state) if state.is_expired(at.wall_ms) => {
                prelude = state.removal(key, &mut || tags.next_tag());
                None
            }
            Some(state) => {
                if let Some(visible) = state.visible()
                    && visible.value_type() != value_type
                {
                    return Err(CommandError::WrongType);
                }
                // Values of other types (a type conflict between regions)
                // are rare: no collecting, and no moving an empty list of
                // parts into place, for the common write.
                let other = |v: &&TypedValue| v.value_type() != value_type;
                if state.values().iter().any(|v| other(&v)) {
                    prelude.parts =
                        state.values().iter().filter(other).map(|v| v.clear(&mut || tags.next_tag())).collect();
                }
                state.typed(value_type)
            }
        };
        let (result, typed) = match build(current, &mut tags) {
            Ok((result, Some(typed))) => (result, typed),
            Ok((result, None)) => {
                *tags.last_seq = first_seq;
                return Ok((result, None));
            }
            Err(error) => {
                *tags.last_seq = first_seq;
                return Err(error);
            }
        };
        drop(state);
        prelude.parts.push(typed);
        self.apply_key_at(found, &prelude, true);
        Ok((result, Some(prelude)))
    }

    /// The tags of one local write to `key`: dots of the replica id of the
    /// key's granule.
    fn tags(&mut self, key: &[u8], hlc: u64) -> TagSource<'_> {
        TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, key, hlc)
    }

    /// The replica id this keyspace writes `key` with (whose expiry deadlines
    /// it owns).
    #[inline]
    fn owner(&self, key: &[u8]) -> ReplicaId {
        self.granules.replica(self.replica.0, self.granules.of_key(key))
    }

    /// [`Keyspace::owner`] of the key at `slot`, reading the key only when
    /// there are several granules (every full-table walk goes through here).
    fn slot_owner(&self, slot: u32) -> ReplicaId {
        if self.granules == Granules::ONE { self.replica } else { self.owner(&self.table.slot(slot).0) }
    }

    /// Raises each granule's last sequence to what the context holds of its
    /// replica id (after a join or a restore brought in our own dots).
    fn resume_own_seqs(&mut self) {
        raise_own_seqs(self.granules, self.replica, &mut self.last_seqs, &self.context);
    }

    /// Cuts the slot space into `granules` (D102): from now on a write to a
    /// key is stamped with the replica id of the key's granule in this
    /// region. Each granule's sequence resumes from the context, and the
    /// index of the deadlines this keyspace owns is rebuilt. Set once, when
    /// the keyspace is opened, before it writes.
    pub fn set_granules(&mut self, granules: Granules) {
        if granules == self.granules {
            return;
        }
        self.granules = granules;
        self.last_seqs = vec![0; usize::from(granules.count())];
        self.resume_own_seqs();
        let mut expires = BTreeSet::new();
        for (slot, key, stored) in self.table.iter() {
            if let Stored::Big(state) = stored
                && let Some(deadline) =
                    state.owned_deadline(self.granules.replica(self.replica.0, granules.of_key(key)))
            {
                expires.insert((deadline, slot));
            }
        }
        self.expires = expires;
    }

    /// How the slot space is cut into granules.
    pub fn granules(&self) -> Granules {
        self.granules
    }

    /// Every replica id this keyspace writes with (one per granule).
    pub fn own_replicas(&self) -> Vec<ReplicaId> {
        (0..self.granules.count()).map(|g| self.granules.replica(self.replica.0, g)).collect()
    }

    // ----- keys -----

    /// DEL/UNLINK of one key: removes everything observed of it. Returns
    /// whether a visible key was deleted, and the delta (also for a key hidden
    /// by expiry, so that its state is reclaimed everywhere).
    pub fn delete(&mut self, key: &[u8], at: Moment) -> (bool, Option<KeyDelta>) {
        let Some(stored) = self.stored(key) else {
            return (false, None);
        };
        let state = stored.to_state();
        let visible = !state.is_expired(at.wall_ms) && state.visible().is_some();
        let delta = state.removal(key, &mut || self.tags(key, at.hlc).next_tag());
        if delta.is_empty() {
            return (visible, None);
        }
        self.apply_key(&delta);
        (visible, Some(delta))
    }

    /// COPY (and RENAME, which deletes the source afterwards): writes at `dst`
    /// a fresh copy of `src`'s visible value — new elements with new tags, so
    /// the copy is a new write that replicates like any other — with the same
    /// deadline, removing everything observed at `dst` first. Counters are
    /// copied as their current value. `replace` false refuses an existing `dst`.
    pub fn copy(&mut self, src: &[u8], dst: &[u8], replace: bool, at: Moment) -> CopyOutcome {
        let Some(view) = self.view(src, at.wall_ms) else {
            return CopyOutcome::NoSource;
        };
        if !replace && self.exists(dst, at.wall_ms) {
            return CopyOutcome::TargetExists;
        }
        let deadline = self.deadline(src, at.wall_ms).flatten();
        // Read the source into plain data first: it may be `dst` itself.
        enum Content {
            Str(Vec<u8>),
            Set(Vec<ShortBytes>),
            Hash(Vec<(ShortBytes, Vec<u8>)>),
            ZSet(Vec<(f64, ShortBytes)>),
            List(Vec<ShortBytes>),
        }
        let content = match view {
            View::SmallString(value) => Content::Str(value.to_vec()),
            View::Value(TypedValue::Str(r)) => {
                Content::Str(number::render(r).map(|v| v.into_owned()).unwrap_or_default())
            }
            View::Value(TypedValue::Set(set)) => Content::Set(set.members().cloned().collect()),
            View::Value(TypedValue::Hash(hash)) => Content::Hash(
                hash.iter()
                    .map(|(f, r)| (f.clone(), number::render(r).map(|v| v.into_owned()).unwrap_or_default()))
                    .collect(),
            ),
            View::Value(TypedValue::ZSet(zset)) => Content::ZSet(zset.iter().map(|(m, s)| (s, m.clone())).collect()),
            View::Value(TypedValue::List(list)) => Content::List(list.iter().cloned().collect()),
        };
        let existing = self.table.get(dst).map(Stored::to_state);
        let mut tags = TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, dst, at.hlc);
        let mut delta = match &existing {
            Some(state) => state.removal(dst, &mut || tags.next_tag()),
            None => KeyDelta::new(dst),
        };
        let part = match content {
            Content::Str(value) => TypedDelta::Str(RegisterDelta {
                removed: Default::default(),
                entry: Some(crate::register::Entry { tag: tags.next_tag(), value: ShortBytes::from_vec(value) }),
                increment: None,
                removed_runs: Box::default(),
            }),
            Content::Set(members) => {
                let empty = OrSet::default();
                let mut set = SetDelta::default();
                for member in &members {
                    empty.add_to(&mut set, member, tags.next_tag());
                }
                TypedDelta::Set(set)
            }
            Content::Hash(fields) => {
                let empty = OrHash::default();
                let mut hash = HashDelta::default();
                for (field, value) in &fields {
                    empty.assign_to(&mut hash, field, value, tags.next_tag());
                }
                TypedDelta::Hash(hash)
            }
            Content::ZSet(members) => {
                let items: Vec<(f64, &[u8])> = members.iter().map(|(s, m)| (*s, m.as_slice())).collect();
                let (_, zset) = OrZSet::default()
                    .zadd_many(&items, ZAddFlags::default(), &mut || tags.next_tag())
                    .expect("scores read from a sorted set are valid");
                TypedDelta::ZSet(zset.unwrap_or_default())
            }
            Content::List(values) => TypedDelta::List(EMPTY_LIST.push_back(values.iter(), &mut || tags.next_tag())),
        };
        delta.parts.push(part);
        if let Some(deadline) = deadline {
            let removed = delta.expiry.take().map(|e| e.removed).unwrap_or_default();
            delta.expiry =
                Some(crate::expiry::ExpiryDelta { removed, entry: Some((tags.next_tag(), Deadline::At(deadline))) });
        }
        self.apply_key(&delta);
        CopyOutcome::Copied(Box::new(delta))
    }

    /// EXPIRE-family with an absolute deadline, or PERSIST with
    /// [`Deadline::Persist`]. A deadline not in the future deletes the key, as
    /// Redis does. Returns None (reply 0) if the key does not exist, or for
    /// PERSIST if it has no deadline.
    pub fn set_expiry(&mut self, key: &[u8], deadline: Deadline, at: Moment) -> Option<KeyDelta> {
        let current = self.deadline(key, at.wall_ms)?;
        match deadline {
            Deadline::Persist if current.is_none() => None,
            Deadline::At(ms) if ms <= at.wall_ms => self.delete(key, at).1,
            _ => {
                let state = self.stored(key)?.to_state();
                let mut tags = self.tags(key, at.hlc);
                let tag = tags.next_tag();
                let mut delta = KeyDelta::new(key);
                delta.expiry = Some(state.expiry().assign(tag, deadline));
                self.apply_key(&delta);
                Some(delta)
            }
        }
    }

    /// Active expiry: deletes up to `max_keys` keys whose deadline this
    /// replica owns and which have passed `at.wall_ms`. Other replicas' keys
    /// are only hidden here; their owner ships the delete.
    pub fn expire_due(&mut self, at: Moment, max_keys: usize) -> Vec<KeyDelta> {
        let due: Vec<(u64, u32)> =
            self.expires.iter().take_while(|(deadline, _)| *deadline <= at.wall_ms).take(max_keys).copied().collect();
        let mut deltas = Vec::with_capacity(due.len());
        for (_, slot) in due {
            let key = self.table.slot(slot).0.clone();
            if let (_, Some(delta)) = self.delete(&key, at) {
                self.stats.expired_deleted += 1;
                deltas.push(delta);
            }
        }
        deltas
    }

    /// FLUSHDB/FLUSHALL: removes everything this replica has seen, everywhere.
    pub fn flush(&mut self) -> Delta {
        let delta = Delta::Flush(self.context.clone());
        self.apply_from(&delta, true);
        delta
    }

    // ----- strings -----

    /// SET (unconditional; NX/XX/GET are decided by the caller from a read).
    /// Overwrites a key of any type.
    pub fn set(&mut self, key: &[u8], value: &[u8], expiry: ExpiryChange, at: Moment) -> KeyDelta {
        let tag = {
            let mut tags = self.tags(key, at.hlc);
            tags.next_tag()
        };
        let value = ShortBytes::new(value);
        let mut delta = KeyDelta::new(key);
        // One lookup for the read and the apply (the table does not change
        // in between): the lookup is SET's largest cost.
        let found = self.table.find(key);
        match found.map(|slot| &self.table.slot(slot).1) {
            None => delta.parts.push(TypedDelta::Str(RegisterDelta {
                removed: Default::default(),
                entry: Some(crate::register::Entry { tag, value }),
                increment: None,
                removed_runs: Box::default(),
            })),
            Some(Stored::Small { tag: old, .. }) => delta.parts.push(TypedDelta::Str(RegisterDelta {
                removed: smallvec::smallvec![old.dot],
                entry: Some(crate::register::Entry { tag, value }),
                increment: None,
                removed_runs: Box::default(),
            })),
            Some(Stored::Big(state)) => {
                let mut tags = TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, key, at.hlc);
                let mut removal = state.removal(key, &mut || tags.next_tag());
                match removal.parts.iter_mut().find_map(|p| match p {
                    TypedDelta::Str(r) => Some(r),
                    _ => None,
                }) {
                    Some(register) => register.entry = Some(crate::register::Entry { tag, value }),
                    None => removal.parts.push(TypedDelta::Str(RegisterDelta {
                        removed: Default::default(),
                        entry: Some(crate::register::Entry { tag, value }),
                        increment: None,
                        removed_runs: Box::default(),
                    })),
                }
                delta = removal;
                // KEEPTTL keeps a live TTL, but not one that has already fired.
                if expiry == ExpiryChange::Keep && !state.is_expired(at.wall_ms) {
                    delta.expiry = None;
                }
            }
        }
        if let ExpiryChange::At(deadline) = expiry {
            let mut tags = self.tags(key, at.hlc);
            let expiry_tag = tags.next_tag();
            let removed = delta.expiry.take().map(|e| e.removed).unwrap_or_default();
            delta.expiry =
                Some(crate::expiry::ExpiryDelta { removed, entry: Some((expiry_tag, Deadline::At(deadline))) });
        }
        self.apply_key_at(found, &delta, true);
        delta
    }

    /// INCRBY (INCR, DECR, DECRBY): the new value, or an error if the value is
    /// not an integer or the result leaves `i64`.
    pub fn incr_by(&mut self, key: &[u8], by: i64, at: Moment) -> Result<(i64, KeyDelta), CommandError> {
        let (value, delta) = self.mutate(key, at, ValueType::String, |current, tags| {
            let current = match current {
                None => 0,
                Some(TypedValue::Str(register)) => match number::numeric_value(register) {
                    Some(Numeric::Int(v)) => i64::try_from(v).map_err(|_| CommandError::NotInteger)?,
                    _ => return Err(CommandError::NotInteger),
                },
                Some(_) => return Err(CommandError::WrongType),
            };
            let value = current.checked_add(by).ok_or(CommandError::Overflow)?;
            Ok((value, Some(TypedDelta::Str(Register::increment(tags.next_tag(), Amount::Int(by as i128))))))
        })?;
        Ok((value, delta.expect("an increment always writes")))
    }

    /// INCRBYFLOAT: the new value as Redis prints it.
    pub fn incr_by_float(&mut self, key: &[u8], by: f64, at: Moment) -> Result<(Vec<u8>, KeyDelta), CommandError> {
        if !by.is_finite() {
            return Err(CommandError::NanOrInfinity);
        }
        let ((), delta) = self.mutate(key, at, ValueType::String, |current, tags| {
            let current = match current {
                None => 0.0,
                Some(TypedValue::Str(register)) => match number::numeric_value(register) {
                    Some(Numeric::Int(v)) => v as f64,
                    Some(Numeric::Float(v)) => v,
                    None => return Err(CommandError::NotFloat),
                },
                Some(_) => return Err(CommandError::WrongType),
            };
            if !(current + by).is_finite() {
                return Err(CommandError::NanOrInfinity);
            }
            Ok(((), Some(TypedDelta::Str(Register::increment(tags.next_tag(), Amount::Float(by))))))
        })?;
        let value = self.get(key, at.wall_ms)?.map(|v| v.into_owned()).unwrap_or_default();
        Ok((value, delta.expect("an increment always writes")))
    }

    // ----- sets -----

    /// SADD: the number of members added (members already present are
    /// re-asserted, see below, but not counted).
    pub fn sadd(
        &mut self,
        key: &[u8],
        members: &[&[u8]],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        let solo = self.solo;
        self.mutate(key, at, ValueType::Set, |current, tags| {
            let empty = OrSet::default();
            let set = match current {
                Some(TypedValue::Set(set)) => set,
                _ => &empty,
            };
            let mut delta = SetDelta::default();
            let mut added = 0;
            // A member already present is added again with a new tag (the reply
            // does not count it): that re-assertion is what makes SADD win over
            // a concurrent SREM that observed the old tag (add wins).
            // Repeated members count once: a linear check for the usual few,
            // a hash set for long argument lists (no quadratic cost).
            let mut seen: Option<hashbrown::HashSet<&[u8]>> =
                (members.len() > DEDUP_LINEAR_MAX).then(|| hashbrown::HashSet::with_capacity(members.len()));
            for (index, &member) in members.iter().enumerate() {
                let repeated = match &mut seen {
                    Some(seen) => !seen.insert(member),
                    None => members[..index].contains(&member),
                };
                // Solo, no region can remove the member concurrently, so
                // there is nothing for a re-assertion to win against: a
                // present member is left as it is and, if every member is
                // present, the SADD writes nothing (no delta to journal or
                // replicate), as in Redis.
                if repeated || (solo && set.contains(member)) {
                    continue;
                }
                if set.add_to(&mut delta, member, tags.next_tag()) {
                    added += 1;
                }
            }
            Ok((added, (!delta.is_empty()).then_some(TypedDelta::Set(delta))))
        })
    }

    /// SREM: the number of members removed.
    pub fn srem(
        &mut self,
        key: &[u8],
        members: &[&[u8]],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::Set, |current, _| {
            let Some(TypedValue::Set(set)) = current else {
                return Ok((0, None));
            };
            let mut delta = SetDelta::default();
            let mut removed = 0;
            let mut done: Vec<&[u8]> = Vec::new();
            for &member in members {
                if !done.contains(&member) && set.remove_to(&mut delta, member) {
                    removed += 1;
                    done.push(member);
                }
            }
            Ok((removed, (!delta.is_empty()).then_some(TypedDelta::Set(delta))))
        })
    }

    /// SINTERSTORE, SUNIONSTORE, SDIFFSTORE: makes `key` hold exactly the set
    /// of `members` (duplicates ignored), whatever it held before and of
    /// whatever type, with no TTL — or deletes it when `members` is empty, as
    /// Redis does. One delta removes everything observed at `key` and adds the
    /// members with fresh tags, so a peer region never sees the key half
    /// replaced; writes the delta did not observe survive, as for DEL.
    /// Returns the delta, or None if there was nothing to remove or add.
    pub fn replace_with_set(&mut self, key: &[u8], members: &[&[u8]], at: Moment) -> Option<KeyDelta> {
        let existing = self.table.get(key).map(Stored::to_state);
        let mut tags = TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, key, at.hlc);
        let mut delta = match &existing {
            Some(state) => state.removal(key, &mut || tags.next_tag()),
            None => KeyDelta::new(key),
        };
        if !members.is_empty() {
            let empty = OrSet::default();
            let mut set = SetDelta::default();
            let mut seen: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::with_capacity(members.len());
            for &member in members {
                if seen.insert(member) {
                    empty.add_to(&mut set, member, tags.next_tag());
                }
            }
            delta.parts.push(TypedDelta::Set(set));
        }
        if delta.is_empty() {
            return None;
        }
        self.apply_key(&delta);
        Some(delta)
    }

    // ----- hashes -----

    /// HSET: the number of fields created.
    pub fn hset<P: FieldValue>(
        &mut self,
        key: &[u8],
        pairs: &[P],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::Hash, |current, tags| {
            let empty = OrHash::default();
            let hash = match current {
                Some(TypedValue::Hash(hash)) => hash,
                _ => &empty,
            };
            let mut delta = HashDelta::default();
            let mut created = 0;
            for (i, pair) in pairs.iter().enumerate() {
                let field = pair.field();
                // A field named twice in one HSET: the last value is kept.
                if pairs[i + 1..].iter().any(|p| p.field() == field) {
                    continue;
                }
                if hash.assign_to(&mut delta, field, pair.value(), tags.next_tag()) {
                    created += 1;
                }
            }
            Ok((created, Some(TypedDelta::Hash(delta))))
        })
    }

    /// HDEL: the number of fields removed.
    pub fn hdel(
        &mut self,
        key: &[u8],
        fields: &[&[u8]],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::Hash, |current, _| {
            let Some(TypedValue::Hash(hash)) = current else {
                return Ok((0, None));
            };
            let mut delta = HashDelta::default();
            let mut removed = 0;
            let mut done: Vec<&[u8]> = Vec::new();
            for &field in fields {
                if !done.contains(&field) && hash.remove_to(&mut delta, field) {
                    removed += 1;
                    done.push(field);
                }
            }
            Ok((removed, (!delta.is_empty()).then_some(TypedDelta::Hash(delta))))
        })
    }

    /// HINCRBY: the field's new value.
    pub fn hincr_by(&mut self, key: &[u8], field: &[u8], by: i64, at: Moment) -> Result<(i64, KeyDelta), CommandError> {
        let (value, delta) = self.mutate(key, at, ValueType::Hash, |current, tags| {
            let empty = OrHash::default();
            let hash = match current {
                Some(TypedValue::Hash(hash)) => hash,
                _ => &empty,
            };
            let current = match hash.field(field) {
                None => 0,
                Some(register) => match number::numeric_value(register) {
                    Some(Numeric::Int(v)) => i64::try_from(v).map_err(|_| CommandError::HashNotInteger)?,
                    _ => return Err(CommandError::HashNotInteger),
                },
            };
            let value = current.checked_add(by).ok_or(CommandError::Overflow)?;
            let mut delta = HashDelta::default();
            hash.increment_to(&mut delta, field, tags.next_tag(), Amount::Int(by as i128));
            Ok((value, Some(TypedDelta::Hash(delta))))
        })?;
        Ok((value, delta.expect("an increment always writes")))
    }

    /// HINCRBYFLOAT: the field's new value as Redis prints it.
    pub fn hincr_by_float(
        &mut self,
        key: &[u8],
        field: &[u8],
        by: f64,
        at: Moment,
    ) -> Result<(Vec<u8>, KeyDelta), CommandError> {
        if !by.is_finite() {
            return Err(CommandError::NanOrInfinity);
        }
        let ((), delta) = self.mutate(key, at, ValueType::Hash, |current, tags| {
            let empty = OrHash::default();
            let hash = match current {
                Some(TypedValue::Hash(hash)) => hash,
                _ => &empty,
            };
            let current = match hash.field(field) {
                None => 0.0,
                Some(register) => match number::numeric_value(register) {
                    Some(Numeric::Int(v)) => v as f64,
                    Some(Numeric::Float(v)) => v,
                    None => return Err(CommandError::HashNotFloat),
                },
            };
            if !(current + by).is_finite() {
                return Err(CommandError::NanOrInfinity);
            }
            let mut delta = HashDelta::default();
            hash.increment_to(&mut delta, field, tags.next_tag(), Amount::Float(by));
            Ok(((), Some(TypedDelta::Hash(delta))))
        })?;
        let value = self
            .hash_value(key, at.wall_ms)?
            .and_then(|h| h.field(field))
            .and_then(number::render)
            .map(|v| v.into_owned())
            .unwrap_or_default();
        Ok((value, delta.expect("an increment always writes")))
    }

    /// Garbage collection of up to `max_keys` keys marked by their deltas
    /// (see [`Keyspace::collect`] for `stable`). Returns the number of
    /// elements collected.
    pub fn collect_marked(&mut self, stable: &VersionVector, max_keys: usize) -> usize {
        let slots: Vec<u32> = self.marked.iter().take(max_keys).copied().collect();
        let mut collected = 0;
        for slot in slots {
            self.marked.remove(&slot);
            if self.table.next_occupied(slot as usize) != Some(slot) {
                continue;
            }
            collected += self.collect_slot(slot, stable);
        }
        self.stats.gc_collected += collected as u64;
        collected
    }

    /// Number of keys marked for garbage collection.
    pub fn marked_len(&self) -> usize {
        self.marked.len()
    }

    fn collect_slot(&mut self, slot: u32, stable: &VersionVector) -> usize {
        if matches!(self.table.slot(slot).1, Stored::Small { .. }) {
            return 0;
        }
        self.update_slot(slot, |state| state.collect(stable)).0
    }

    // ----- sorted sets -----

    /// ZADD of (score, member) pairs with Redis 7's flags; the totals (added,
    /// updated, and the score for INCR) and the delta if anything changed.
    pub fn zadd(
        &mut self,
        key: &[u8],
        items: &[(f64, &[u8])],
        flags: ZAddFlags,
        at: Moment,
    ) -> Result<(ZAddTotals, Option<KeyDelta>), CommandError> {
        let solo = self.solo;
        self.mutate(key, at, ValueType::ZSet, |current, tags| {
            let empty = OrZSet::default();
            let zset = match current {
                Some(TypedValue::ZSet(zset)) => zset,
                _ => &empty,
            };
            // Solo, as with SADD: no region can remove a member concurrently,
            // so a member given again with the score it has is left as it is
            // (not re-asserted), and a ZADD of nothing else writes nothing.
            // A member named more than once keeps the general path: a later
            // pair may undo an earlier one.
            let unchanged = |&(score, member): &(f64, &[u8])| zset.score(member) == Some(score);
            let kept: Vec<(f64, &[u8])>;
            let items = if solo && !flags.incr && items.iter().any(unchanged) && !names_a_member_twice(items) {
                kept = items.iter().copied().filter(|item| !unchanged(item)).collect();
                &kept[..]
            } else {
                items
            };
            let (totals, delta) = zset.zadd_many(items, flags, &mut || tags.next_tag())?;
            Ok((totals, delta.map(TypedDelta::ZSet)))
        })
    }

    /// ZINCRBY: the member's new score, and the delta (none when the score
    /// does not change, as with an increment of 0 on an existing member).
    pub fn zincr_by(
        &mut self,
        key: &[u8],
        member: &[u8],
        by: f64,
        at: Moment,
    ) -> Result<(f64, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::ZSet, |current, tags| {
            let empty = OrZSet::default();
            let zset = match current {
                Some(TypedValue::ZSet(zset)) => zset,
                _ => &empty,
            };
            let (score, delta) = zset.zincrby(member, by, &mut || tags.next_tag())?;
            Ok((score, (!delta.is_empty()).then_some(TypedDelta::ZSet(delta))))
        })
    }

    /// ZREM: the number of members removed.
    pub fn zrem(
        &mut self,
        key: &[u8],
        members: &[&[u8]],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::ZSet, |current, _| {
            let Some(TypedValue::ZSet(zset)) = current else {
                return Ok((0, None));
            };
            let (removed, delta) = zset.zrem(members.iter().copied());
            Ok((removed, (!delta.is_empty()).then_some(TypedDelta::ZSet(delta))))
        })
    }

    /// ZPOPMIN (`max` false) / ZPOPMAX: the popped members with their scores.
    pub fn zpop(
        &mut self,
        key: &[u8],
        max: bool,
        count: usize,
        at: Moment,
    ) -> Result<(Vec<ScoredMember>, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::ZSet, |current, _| {
            let Some(TypedValue::ZSet(zset)) = current else {
                return Ok((Vec::new(), None));
            };
            let (popped, delta) = if max { zset.pop_max(count) } else { zset.pop_min(count) };
            Ok((popped, (!delta.is_empty()).then_some(TypedDelta::ZSet(delta))))
        })
    }

    /// ZREMRANGEBYRANK / ZREMRANGEBYSCORE / ZREMRANGEBYLEX: removes the
    /// members `range` selects, each with exactly the score elements observed
    /// (a concurrent ZADD or ZINCRBY of a member survives, add wins). Returns
    /// the number of members removed. The range is found through the ordered
    /// index: O(log n + m) for scores and same-score lex ranges.
    pub fn zrem_range(
        &mut self,
        key: &[u8],
        range: ZRemoveRange<'_>,
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::ZSet, |current, _| {
            let Some(TypedValue::ZSet(zset)) = current else {
                return Ok((0, None));
            };
            let (removed, delta) = match range {
                ZRemoveRange::Rank(start, stop) => zset.remove_range_by_rank(start, stop),
                ZRemoveRange::Score(min, max) => zset.remove_range_by_score(min, max),
                ZRemoveRange::Lex(min, max) => zset.remove_range_by_lex(min, max),
            };
            Ok((removed, (!delta.is_empty()).then_some(TypedDelta::ZSet(delta))))
        })
    }

    /// The write of the sorted-set store commands (ZUNIONSTORE, ZINTERSTORE,
    /// ZDIFFSTORE, ZRANGESTORE): replaces whatever `key` holds — any type, and
    /// its TTL — by a sorted set of `items`, in one delta that removes
    /// everything observed at `key` and adds every member with a fresh tag.
    /// No items deletes the key, as Redis does. A write at `key` the store did
    /// not observe (a concurrent ZADD in another region) survives the merge.
    /// Returns the new cardinality and the delta (none when nothing changed).
    ///
    /// Errors: `NotFloat` for a NaN score (the commands never produce one).
    pub fn zstore(
        &mut self,
        key: &[u8],
        items: &[(f64, &[u8])],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        if items.is_empty() {
            return Ok((0, self.delete(key, at).1));
        }
        let existing = self.table.get(key).map(Stored::to_state);
        let mut tags = TagSource::for_key(self.granules, self.replica.0, &mut self.last_seqs, key, at.hlc);
        let mut delta = match &existing {
            Some(state) => state.removal(key, &mut || tags.next_tag()),
            None => KeyDelta::new(key),
        };
        let (totals, zset) = OrZSet::default().zadd_many(items, ZAddFlags::default(), &mut || tags.next_tag())?;
        delta.parts.push(TypedDelta::ZSet(zset.unwrap_or_default()));
        self.apply_key(&delta);
        Ok((totals.added, Some(delta)))
    }

    // ----- lists -----

    /// LPUSH (`End::Front`) / RPUSH: the list's length after the push.
    pub fn push<V: AsRef<[u8]>>(
        &mut self,
        key: &[u8],
        values: &[V],
        end: End,
        at: Moment,
    ) -> Result<(usize, KeyDelta), CommandError> {
        let (len, delta) = self.mutate(key, at, ValueType::List, |current, tags| {
            let list = match current {
                Some(TypedValue::List(list)) => list,
                _ => &EMPTY_LIST,
            };
            let delta = match end {
                End::Front => list.push_front(values, &mut || tags.next_tag()),
                End::Back => list.push_back(values, &mut || tags.next_tag()),
            };
            Ok((list.len() + values.len(), Some(TypedDelta::List(delta))))
        })?;
        Ok((len, delta.expect("a push always writes")))
    }

    /// LPOP/RPOP of up to `count` elements: the values popped.
    pub fn pop(
        &mut self,
        key: &[u8],
        end: End,
        count: usize,
        at: Moment,
    ) -> Result<(Vec<ShortBytes>, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::List, |current, tags| {
            let Some(TypedValue::List(list)) = current else {
                return Ok((Vec::new(), None));
            };
            let (values, delta) = match end {
                End::Front => list.pop_front(count, &mut || tags.next_tag()),
                End::Back => list.pop_back(count, &mut || tags.next_tag()),
            };
            Ok((values, (!delta.is_empty()).then_some(TypedDelta::List(delta))))
        })
    }

    /// LINSERT: the new length, -1 if the pivot is absent, 0 if the key is.
    pub fn list_insert(
        &mut self,
        key: &[u8],
        before: bool,
        pivot: &[u8],
        value: &[u8],
        at: Moment,
    ) -> Result<(i64, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::List, |current, tags| {
            let Some(TypedValue::List(list)) = current.filter(|v| v.is_visible()) else {
                return Ok((0, None));
            };
            let delta = if before {
                list.insert_before(pivot, value, &mut || tags.next_tag())
            } else {
                list.insert_after(pivot, value, &mut || tags.next_tag())
            };
            match delta {
                Some(delta) => Ok((list.len() as i64 + 1, Some(TypedDelta::List(delta)))),
                None => Ok((-1, None)),
            }
        })
    }

    /// LSET.
    pub fn list_set(&mut self, key: &[u8], index: i64, value: &[u8], at: Moment) -> Result<KeyDelta, CommandError> {
        let ((), delta) = self.mutate(key, at, ValueType::List, |current, tags| {
            let Some(TypedValue::List(list)) = current.filter(|v| v.is_visible()) else {
                return Err(CommandError::NoSuchKey);
            };
            Ok(((), Some(TypedDelta::List(list.set(index, value, &mut || tags.next_tag())?))))
        })?;
        Ok(delta.expect("LSET always writes"))
    }

    /// LREM: the number of elements removed.
    pub fn list_remove(
        &mut self,
        key: &[u8],
        count: i64,
        value: &[u8],
        at: Moment,
    ) -> Result<(usize, Option<KeyDelta>), CommandError> {
        self.mutate(key, at, ValueType::List, |current, tags| {
            let Some(TypedValue::List(list)) = current else {
                return Ok((0, None));
            };
            let (removed, delta) = list.remove(count, value, &mut || tags.next_tag());
            Ok((removed, (!delta.is_empty()).then_some(TypedDelta::List(delta))))
        })
    }

    /// LTRIM: the delta, if any element was removed.
    pub fn list_trim(
        &mut self,
        key: &[u8],
        start: i64,
        stop: i64,
        at: Moment,
    ) -> Result<Option<KeyDelta>, CommandError> {
        let ((), delta) = self.mutate(key, at, ValueType::List, |current, tags| {
            let Some(TypedValue::List(list)) = current else {
                return Ok(((), None));
            };
            let delta = list.trim(start, stop, &mut || tags.next_tag());
            Ok(((), (!delta.is_empty()).then_some(TypedDelta::List(delta))))
        })?;
        Ok(delta)
    }

    // ----- garbage collection -----

    /// Garbage collection over up to `max_keys` keys from slot `cursor`, with a
    /// causally stable vector (see [`crate::gc::StabilityTracker`]). Returns the
    /// cursor to continue from (0 when a full pass is done) and the number of
    /// elements collected.
    pub fn collect(&mut self, stable: &VersionVector, cursor: u64, max_keys: usize) -> (u64, usize) {
        let mut position = cursor as usize;
        let mut collected = 0;
        for _ in 0..max_keys.max(1) {
            let Some(slot) = self.table.next_occupied(position) else {
                self.stats.gc_collected += collected as u64;
                return (0, collected);
            };
            position = slot as usize + 1;
            collected += self.collect_slot(slot, stable);
        }
        self.stats.gc_collected += collected as u64;
        let next = if self.table.next_occupied(position).is_some() { position as u64 } else { 0 };
        (next, collected)
    }

    // ----- snapshots -----

    /// Every key's state as plain data, keys in byte order (with
    /// [`Keyspace::context`], a snapshot of the shard).
    pub fn snapshot(&self) -> Vec<KeySnapshot> {
        self.freeze().into_snapshot()
    }

    /// The greatest HLC timestamp of any element held (what a receiver of
    /// this keyspace as a snapshot must observe before merging it).
    pub fn max_hlc(&self) -> Option<u64> {
        let mut max = None;
        for (_, _, stored) in self.table.iter() {
            let hlc = match stored {
                Stored::Small { tag, .. } => Some(tag.hlc),
                Stored::Big(state) => state.values().iter().filter_map(|v| v.max_tag()).map(|t| t.hlc).max(),
            };
            max = max.max(hlc);
        }
        max
    }

    /// A copy of every key's state as stored, for a snapshot built later
    /// ([`FrozenKeys::into_snapshot`]) without this keyspace: a node holds
    /// its shard's lock only for this copy (for string keys a copy of the
    /// table's entries, no allocation per key), not for sorting and
    /// converting the keys.
    pub fn freeze(&self) -> FrozenKeys {
        let mut frozen = FrozenKeys::default();
        self.freeze_into(&mut frozen);
        frozen
    }

    /// [`Keyspace::freeze`] into `frozen`, replacing what it held. With room
    /// made beforehand by [`FrozenKeys::room_for`] (outside the lock),
    /// the copy under the lock is a copy only: no allocation, no growth, no
    /// page faults on fresh memory (at millions of keys those cost more
    /// than the copy itself).
    pub fn freeze_into(&self, frozen: &mut FrozenKeys) {
        debug_assert!(!self.merging, "a copy during a snapshot merge in steps");
        frozen.entries.clear();
        frozen.slots.clear();
        frozen.progress = None;
        frozen.entries.reserve(self.table.len());
        frozen.entries.extend(self.table.iter().map(|(_, key, stored)| (key.clone(), stored.clone())));
    }

    /// One step of a copy of the table taken in steps, with the shard's lock
    /// released between them (D103): copies the next `slots` slots into
    /// `frozen` (the first step starts the copy, replacing what `frozen`
    /// held). True once every slot is copied or the copy was given up;
    /// then [`Keyspace::freeze_finish`], under the same lock as the state
    /// the copy must match (the context, a journal position), completes it.
    pub fn freeze_step(&mut self, frozen: &mut FrozenKeys, slots: u32) -> bool {
        debug_assert!(!self.merging, "a copy during a snapshot merge in steps");
        let slots = slots.max(1);
        let progress = match frozen.progress {
            Some(progress) => progress,
            None => {
                frozen.entries.clear();
                frozen.slots.clear();
                Progress { token: self.table.copy_begin(), next: 0 }
            }
        };
        let end = (self.table.slot_count() as u64).min(u64::from(progress.next) + u64::from(slots)) as u32;
        frozen.copy_range(&self.table, progress.next, end);
        frozen.progress = Some(Progress { token: progress.token, next: end });
        !self.table.copy_advance(progress.token, end) || end as usize == self.table.slot_count()
    }

    /// Completes a copy begun by [`Keyspace::freeze_step`]: copies the slots
    /// it has not reached and again those changed since it copied them, so
    /// that `frozen` holds the table as it stands now, as
    /// [`Keyspace::freeze_into`] would. A copy that was given up (another
    /// began, too many changes, the table replaced) or never begun is
    /// taken whole here.
    pub fn freeze_finish(&mut self, frozen: &mut FrozenKeys) {
        let Some(progress) = frozen.progress.take() else {
            return self.freeze_into(frozen);
        };
        let Some(changed) = self.table.copy_end(progress.token) else {
            return self.freeze_into(frozen);
        };
        // The entries copied so far are in slot order; every changed slot is
        // among them (below the progress) or was vacant when passed.
        let mut searched = frozen.entries.len();
        frozen.copy_range(&self.table, progress.next, self.table.slot_count() as u32);
        // Highest first: a removal moves the last entry into the removed
        // one's place, above every slot still to be found.
        for &slot in changed.iter().rev() {
            let now = self.table.get_slot(slot).map(|(key, stored)| (key.clone(), stored.clone()));
            match (frozen.slots[..searched].binary_search(&slot), now) {
                (Ok(at), Some(entry)) => {
                    frozen.entries[at] = entry;
                    searched = at;
                }
                (Ok(at), None) => {
                    frozen.entries.swap_remove(at);
                    frozen.slots.swap_remove(at);
                    searched = at;
                }
                (Err(at), Some(entry)) => {
                    frozen.entries.push(entry);
                    frozen.slots.push(slot);
                    searched = at;
                }
                (Err(at), None) => searched = at,
            }
        }
    }

    /// Rebuilds a keyspace from a snapshot. Local writes will originate at
    /// `replica` and continue its sequence where the context leaves it. A
    /// snapshot that breaks an invariant (a repeated key, a state outside its
    /// context, an invalid value) is refused whole.
    pub fn restore(replica: ReplicaId, context: CausalContext, keys: &[KeySnapshot]) -> Result<Keyspace, String> {
        Keyspace::restore_each(replica, context, keys.len(), keys)
    }

    /// [`Keyspace::restore`] from keys produced one at a time (a decoder's),
    /// so that no list of every key's snapshot is held at once; `expected`
    /// is how many to make room for.
    pub fn restore_each<K: core::borrow::Borrow<KeySnapshot>>(
        replica: ReplicaId,
        context: CausalContext,
        expected: usize,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Keyspace, String> {
        context.validate()?;
        let mut keyspace = Keyspace::new(replica);
        keyspace.context = context;
        keyspace.table.reserve(expected);
        let mut previous: Option<u32> = None;
        for snapshot in keys {
            let snapshot = snapshot.borrow();
            // Snapshots list keys in byte order: a repeated key is caught by
            // the order check without a lookup.
            if previous.is_some_and(|slot| keyspace.table.slot(slot).0.as_slice() >= snapshot.key.as_slice()) {
                return Err(format!("key {:?} is repeated or out of byte order", snapshot.key));
            }
            let stored = match Stored::small_from_snapshot(snapshot) {
                Some(small) => small,
                None => Stored::from_state(KeyState::from_snapshot(snapshot)?),
            };
            let mut outside = None;
            stored.for_each_dot(|dot| {
                if !keyspace.context.contains(dot) {
                    outside = Some(dot);
                }
            });
            if let Some(dot) = outside {
                return Err(format!("key {:?} holds dot {dot:?} outside the context", snapshot.key));
            }
            let deadline = match &stored {
                Stored::Small { .. } => None,
                Stored::Big(state) => state.owned_deadline(keyspace.owner(&snapshot.key)),
            };
            let slot = keyspace.table.insert_new(&snapshot.key, stored);
            keyspace.track_deadline(slot, None, deadline);
            previous = Some(slot);
        }
        keyspace.resume_own_seqs();
        #[cfg(debug_assertions)]
        keyspace.validate()?;
        Ok(keyspace)
    }

    /// Joins another replica's whole state into this one (a full sync from a
    /// peer region whose log no longer covers what this keyspace missed).
    /// Afterwards this keyspace holds the join of both states: an element
    /// survives if both hold it, or if one holds it and the other never saw
    /// its dot; the contexts are joined. Idempotent, like every merge.
    ///
    /// Lists join with [`RgaList::join`](crate::list::RgaList::join). Two
    /// lists that cannot be replicas of one list (elements both hold in
    /// different orders: only a broken or hostile peer sends that) keep the
    /// local list, and the key is counted in the returned
    /// [`SnapshotMerge::lists_kept`]. Snapshot merges are not journaled: the
    /// caller rewrites its durable snapshot after one.
    pub fn merge_snapshot(&mut self, other: &Keyspace) -> SnapshotMerge {
        let merging = self.merge_begin(other);
        self.merge_finish(other, merging)
    }

    /// Begins [`Keyspace::merge_snapshot`] in steps, so that the caller can
    /// release the keyspace's lock between them: each
    /// [`Keyspace::merge_step`] joins a bounded number of keys, and
    /// [`Keyspace::merge_finish`] joins the rest and the contexts. The result
    /// is the same join.
    ///
    /// Between the steps the keyspace's own reads and writes may run (their
    /// new dots are fresh: this keyspace's sequences are raised here past
    /// every dot of its own that `other` holds), but no peer's delta, no
    /// other merge and no copy of the keyspace ([`Keyspace::freeze_step`],
    /// [`Keyspace::freeze`]): until the finish joins `other`'s context the
    /// merged keys hold dots this context lacks, and a peer's delta could be
    /// judged against the context without `other`'s removals. The caller
    /// keeps those out (the node holds a gate for the merge's length).
    pub fn merge_begin(&mut self, other: &Keyspace) -> SnapshotMerging {
        debug_assert!(!self.merging, "one snapshot merge at a time");
        self.merging = true;
        raise_own_seqs(self.granules, self.replica, &mut self.last_seqs, &other.context);
        SnapshotMerging { theirs_below: 0, ours_below: 0, outcome: SnapshotMerge::default() }
    }

    /// Joins up to `slots` more slots' keys of `other` (then, once every
    /// key of `other` is joined, checks up to `slots` of this keyspace's
    /// slots for keys `other` lacks but whose elements it has seen). True
    /// once nothing is left for [`Keyspace::merge_finish`] but the contexts.
    pub fn merge_step(&mut self, other: &Keyspace, merging: &mut SnapshotMerging, slots: u32) -> bool {
        let mut budget = slots.max(1);
        let theirs_end = other.table.slot_count() as u32;
        while budget > 0 && merging.theirs_below < theirs_end {
            let slot = merging.theirs_below;
            merging.theirs_below += 1;
            budget -= 1;
            if let Some((key, stored)) = other.table.get_slot(slot) {
                self.merge_key(key, Some(stored), &other.context, &mut merging.outcome);
            }
        }
        // Local keys `other` lacks but whose elements it has seen lose
        // those elements (joined with nothing). The keyspace's own writes
        // between steps add only fresh dots, which `other` has not seen: a
        // key passed here cannot become one to join.
        while budget > 0 && (merging.ours_below as usize) < self.table.slot_count() {
            let slot = merging.ours_below;
            merging.ours_below += 1;
            budget -= 1;
            let Some((key, stored)) = self.table.get_slot(slot) else {
                continue;
            };
            if other.table.find(key).is_some() {
                continue;
            }
            let mut covered = false;
            stored.for_each_dot(|dot| covered |= other.context.contains(dot));
            if covered {
                let key = key.clone();
                self.merge_key(&key, None, &other.context, &mut merging.outcome);
            }
        }
        merging.theirs_below >= theirs_end && merging.ours_below as usize >= self.table.slot_count()
    }

    /// Completes a merge begun by [`Keyspace::merge_begin`]: joins what the
    /// steps have not reached, then the contexts.
    pub fn merge_finish(&mut self, other: &Keyspace, mut merging: SnapshotMerging) -> SnapshotMerge {
        while !self.merge_step(other, &mut merging, u32::MAX) {}
        self.context.join(&other.context);
        self.resume_own_seqs();
        self.merging = false;
        merging.outcome
    }

    /// Joins one key's state in `other` (`theirs`, seen with
    /// `their_context`) into this keyspace's.
    fn merge_key(
        &mut self,
        key: &ShortBytes,
        theirs: Option<&Stored>,
        their_context: &CausalContext,
        outcome: &mut SnapshotMerge,
    ) {
        let found = self.table.find(key);
        // The common cases of a catch-up, without building states: the
        // same register on both sides, and a register this side has
        // neither (its dot unseen here: a write it missed) nor dropped.
        match (found.map(|slot| &self.table.slot(slot).1), theirs) {
            (Some(Stored::Small { tag, value }), Some(Stored::Small { tag: their_tag, value: their_value }))
                if tag == their_tag && value == their_value =>
            {
                outcome.keys_merged += 1;
                return;
            }
            (None, Some(small @ Stored::Small { tag, .. })) => {
                outcome.keys_merged += 1;
                if !self.context.contains(tag.dot) {
                    self.table.insert_new(key, small.clone());
                }
                return;
            }
            _ => {}
        }
        let local = found.map(|slot| self.table.slot(slot).1.to_state());
        let theirs = theirs.map(Stored::to_state);
        let (joined, list_kept) = join_states(local.as_ref(), &self.context, theirs.as_ref(), their_context);
        outcome.keys_merged += 1;
        outcome.lists_kept += usize::from(list_kept);
        match found {
            Some(slot) => {
                self.update_slot(slot, |state| *state = joined);
                self.marked.insert(slot);
            }
            None if !joined.can_drop() => {
                let deadline = joined.owned_deadline(self.owner(key));
                let slot = self.table.insert_new(key, Stored::from_state(joined));
                self.track_deadline(slot, None, deadline);
                self.marked.insert(slot);
            }
            None => {}
        }
    }

    // ----- checking -----

    /// Checks the keyspace's invariants (tests and debug builds): the context
    /// is well formed, it covers every live dot, no key is droppable, every
    /// value is valid, and the deadline index matches the keys.
    pub fn validate(&self) -> Result<(), String> {
        self.context.validate()?;
        let mut owned = BTreeSet::new();
        for (slot, key, stored) in self.table.iter() {
            let state = stored.to_state();
            state.validate().map_err(|e| format!("key {key:?}: {e}"))?;
            if state.can_drop() {
                return Err(format!("key {key:?} holds nothing but is kept"));
            }
            let mut missing = None;
            state.for_each_dot(|dot| {
                if !self.context.contains(dot) {
                    missing = Some(dot);
                }
            });
            if let Some(dot) = missing {
                return Err(format!("key {key:?} holds dot {dot:?} outside the context"));
            }
            if let Some(deadline) = state.owned_deadline(self.owner(key)) {
                owned.insert((deadline, slot));
            }
        }
        if owned != self.expires {
            return Err("deadline index does not match the keys".into());
        }
        for (granule, replica) in self.own_replicas().into_iter().enumerate() {
            if self.last_seqs[granule] < self.context.vector().get(replica) {
                return Err(format!("local sequence of {replica:?} behind the context"));
            }
        }
        Ok(())
    }

    /// Every key with its full state, sorted by key (tests, snapshots).
    pub fn entries(&self) -> Vec<(ShortBytes, KeyState)> {
        let mut entries: Vec<_> = self.table.iter().map(|(_, k, v)| (k.clone(), v.to_state())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// Bytes held by the key table's arrays (for memory accounting).
    pub fn table_bytes(&self) -> usize {
        self.table.table_bytes()
    }
}

/// Every key's state as a keyspace stored it at [`Keyspace::freeze`] (or
/// at the end of a copy in steps, [`Keyspace::freeze_finish`]).
#[derive(Clone, Debug, Default)]
pub struct FrozenKeys {
    entries: Vec<(ShortBytes, Stored)>,
    /// For a copy in steps: each entry's slot (ascending until the copy's
    /// last step), to take a changed slot again.
    slots: Vec<u32>,
    progress: Option<Progress>,
}

/// How far a copy in steps has come.
#[derive(Clone, Copy, Debug)]
struct Progress {
    token: u64,
    /// The first slot not copied yet.
    next: u32,
}

impl FrozenKeys {
    /// Room for `keys` keys and a margin for keys added meanwhile (1/16),
    /// for a later [`Keyspace::freeze_into`] or a copy in steps: made before
    /// taking the lock the copy needs, with the key count read under it a
    /// moment before. Its pages are not touched here: a copy in steps takes
    /// their faults a few hundred per step, where touching 170 MB at once
    /// (2 M keys) was a burst of CPU the shard's clients felt (D103).
    pub fn room_for(keys: usize) -> FrozenKeys {
        let room = keys + keys / 16 + 16;
        let entries = Vec::with_capacity(room);
        let slots = Vec::with_capacity(room);
        FrozenKeys { entries, slots, progress: None }
    }

    /// Runs the steps of a copy in steps (D103) until it has passed every
    /// slot: `step` takes the keyspace's lock, calls
    /// [`Keyspace::freeze_step`] with `self` and releases the lock, which
    /// other threads then get between steps. The caller then locks once
    /// more for [`Keyspace::freeze_finish`]. Blocking (it sleeps between
    /// steps): never on an async worker.
    pub fn copy_in_steps(&mut self, mut step: impl FnMut(&mut FrozenKeys) -> bool) {
        in_steps(|| step(self));
    }

    /// Copies the occupied slots from `from` up to `to` (a step of a copy).
    fn copy_range(&mut self, table: &KeyTable<Stored>, from: u32, to: u32) {
        for (slot, entry) in table.range(from, to) {
            if let Some((key, stored)) = entry {
                self.entries.push((key.clone(), stored.clone()));
                self.slots.push(slot);
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys' states as plain data, keys in byte order: what
    /// [`Keyspace::snapshot`] returned at the freeze.
    pub fn into_snapshot(self) -> Vec<KeySnapshot> {
        self.into_sorted().collect()
    }

    /// Keeps only the keys `keep` accepts (a snapshot for a shard holding
    /// some of the granules, D102).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.slots.clear();
        self.progress = None;
        self.entries.retain(|(key, _)| keep(key));
    }

    /// The keys' states as plain data, keys in byte order, converted one at
    /// a time as the iterator is read (an encoder's input: no list of every
    /// key's snapshot is held at once).
    pub fn into_sorted(mut self) -> impl ExactSizeIterator<Item = KeySnapshot> {
        self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.entries.into_iter().map(|(key, stored)| match stored {
            Stored::Big(state) => state.snapshot(&key),
            small => small.to_state().snapshot(&key),
        })
    }
}

/// Raises each granule's last sequence to what `context` holds of its
/// replica id.
fn raise_own_seqs(granules: Granules, replica: ReplicaId, last_seqs: &mut [u64], context: &CausalContext) {
    for granule in 0..granules.count() {
        let id = granules.replica(replica.0, granule);
        let cloud = context.cloud().filter(|d| d.replica() == id).map(|d| d.seq()).max();
        let seq = &mut last_seqs[usize::from(granule)];
        *seq = (*seq).max(context.vector().get(id)).max(cloud.unwrap_or(0));
    }
}

/// A snapshot merge under way in steps ([`Keyspace::merge_begin`]).
#[derive(Debug)]
#[must_use = "a merge begun must be finished (`Keyspace::merge_finish`)"]
pub struct SnapshotMerging {
    /// The other keyspace's slots below this one are joined.
    theirs_below: u32,
    /// This keyspace's slots below this one were checked for keys the other
    /// lacks (once every key of the other is joined).
    ours_below: u32,
    outcome: SnapshotMerge,
}

impl SnapshotMerging {
    /// Runs `step` (a lock, then [`Keyspace::merge_step`]) until it answers
    /// true, pausing between steps so that threads waiting for the lock
    /// take it (see [`FrozenKeys::copy_in_steps`]). The caller then takes
    /// the lock once more for [`Keyspace::merge_finish`].
    pub fn run_steps(&mut self, mut step: impl FnMut(&mut SnapshotMerging) -> bool) {
        in_steps(|| step(self));
    }
}

/// Runs `step` until it answers true, with a [`FREEZE_STEP_PAUSE`] between
/// two calls. A pause, not a yield: the lock each step takes is not fair,
/// and a thread that only yields takes it back before a woken waiter runs,
/// which held the shard for a whole copy (100–280 ms at 2 M keys). Callers
/// run on blocking threads (a rewrite's own, or `spawn_blocking`), never on
/// an async worker.
fn in_steps(mut step: impl FnMut() -> bool) {
    while !step() {
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(FREEZE_STEP_PAUSE);
    }
}

/// What [`Keyspace::merge_snapshot`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMerge {
    /// Keys whose state was joined (present on either side and touched).
    pub keys_merged: usize,
    /// Keys whose list could not be joined (the peer's elements stood in
    /// another order) and was kept as it was here.
    pub lists_kept: usize,
}

/// The join of one key's states `local` (seen with `local_context`) and
/// `theirs` (seen with `their_context`), and whether a list had to be kept.
fn join_states(
    local: Option<&KeyState>,
    local_context: &CausalContext,
    theirs: Option<&KeyState>,
    their_context: &CausalContext,
) -> (KeyState, bool) {
    let dots = |state: Option<&KeyState>| {
        let mut dots = hashbrown::HashSet::new();
        if let Some(state) = state {
            state.for_each_dot(|d| {
                dots.insert(d);
            });
        }
        dots
    };
    let (local_dots, their_dots) = (dots(local), dots(theirs));
    // What one side saw and dropped, the other drops too.
    let drop_local: Vec<Dot> =
        local_dots.iter().copied().filter(|d| their_context.contains(*d) && !their_dots.contains(d)).collect();
    let drop_theirs: Vec<Dot> =
        their_dots.iter().copied().filter(|d| local_context.contains(*d) && !local_dots.contains(d)).collect();
    // A counter merged by garbage collection on their side and not on ours
    // shares its dot with our single increment: ours gives way (before the
    // drops below, which need to see the increments the merge absorbed).
    let yielding = local.zip(theirs).and_then(|(mine, theirs)| mine.yielding_to_merged(theirs));
    let nothing_seen = CausalContext::new();
    let mut joined = local.cloned().unwrap_or_default();
    joined.remove_covered(&CausalContext::from_parts(VersionVector::new(), drop_local));
    if let Some(yielding) = &yielding {
        joined.apply(yielding, &nothing_seen);
    }
    let Some(theirs) = theirs else {
        return (joined, false);
    };
    let mut theirs = theirs.clone();
    theirs.remove_covered(&CausalContext::from_parts(VersionVector::new(), drop_theirs));
    // Both sides now agree on every element they share: add theirs.
    let mut list_kept = false;
    for value in &theirs.values {
        match value {
            TypedValue::List(list) => {
                let at = joined.values.partition_point(|v| v.value_type() < ValueType::List);
                match joined.values.get_mut(at) {
                    // Lists that are not replicas of one list (elements both
                    // hold in different orders: a broken or hostile peer) keep
                    // ours, reported, never silently dropped.
                    Some(TypedValue::List(mine)) => {
                        list_kept |= mine.join(local_context, list, their_context).is_err();
                        // Both sides' collections together may leave nothing.
                        if mine.can_drop() {
                            joined.values.remove(at);
                        }
                    }
                    _ => joined.values.insert(at, TypedValue::List(list.clone())),
                }
            }
            other => {
                let mut delta = KeyDelta::new(b"");
                delta.parts = other.as_parts().into_iter().collect();
                joined.apply(&delta, &nothing_seen);
            }
        }
    }
    for &(tag, deadline) in theirs.expiry.entries() {
        joined
            .expiry
            .apply(&crate::expiry::ExpiryDelta { removed: Vec::new(), entry: Some((tag, deadline)) }, &nothing_seen);
    }
    (joined, list_kept)
}

/// Equality of what two keyspaces hold: the same context and, key by key, the
/// same state. (Which replica writes locally, and statistics, do not count.)
impl PartialEq for Keyspace {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context
            && self.table.len() == other.table.len()
            && self.table.iter().all(|(_, key, stored)| {
                other.stored(key).is_some_and(|theirs| match (stored, theirs) {
                    (Stored::Small { tag: a, value: x }, Stored::Small { tag: b, value: y }) => a == b && x == y,
                    (mine, theirs) => mine.to_state() == theirs.to_state(),
                })
            })
    }
}

impl core::fmt::Debug for Keyspace {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keyspace")
            .field("replica", &self.replica)
            .field("context", &self.context)
            .field("entries", &self.entries())
            .finish()
    }
}

/// True if a member appears in more than one of `items` (a linear check
/// for the usual few, a hash set for long lists).
fn names_a_member_twice(items: &[(f64, &[u8])]) -> bool {
    if items.len() <= DEDUP_LINEAR_MAX {
        return items.iter().enumerate().any(|(i, (_, m))| items[..i].iter().any(|(_, o)| o == m));
    }
    let mut seen = hashbrown::HashSet::with_capacity(items.len());
    items.iter().any(|(_, m)| !seen.insert(*m))
}

/// A tag used only to fill a slot while its state is taken out and merged.
const PLACEHOLDER_TAG: Tag = Tag { dot: crate::dot::PLACEHOLDER_DOT, hlc: 0 };

/// The hot path of SET on a compactly stored string: the delta replaces the
/// one entry it observed with a new one. Returns false if the delta is of any
/// other shape (the general path then runs).
#[inline]
fn apply_small_fast(stored: &mut Stored, delta: &KeyDelta, seen: &CausalContext) -> bool {
    let Stored::Small { tag, value } = stored else {
        return false;
    };
    let [TypedDelta::Str(RegisterDelta { removed, entry: Some(entry), increment: None, removed_runs })] =
        delta.parts.as_slice()
    else {
        return false;
    };
    if delta.expiry.is_some()
        || removed.as_slice() != [tag.dot]
        || !removed_runs.is_empty()
        || seen.contains(entry.tag.dot)
    {
        return false;
    }
    *tag = entry.tag;
    *value = entry.value.clone();
    true
}

/// True if applying `delta` may leave something for garbage collection:
/// counter increments (merged once stable), list removals (tombstones),
/// expiry entries (spent or losing ones), or several values at once.
///
/// A solo keyspace merges a string's increments as they are applied, so those
/// leave nothing.
fn leaves_garbage(delta: &KeyDelta, solo: bool) -> bool {
    delta.expiry.is_some()
        || delta.parts.len() > 1
        || delta.parts.iter().any(|part| match part {
            TypedDelta::Str(d) => d.increment.is_some() && !solo,
            TypedDelta::Hash(d) => d.fields.iter().any(|(_, f)| f.increment.is_some()),
            TypedDelta::ZSet(d) => d.changes.iter().any(|(_, c)| c.increment.is_some()),
            TypedDelta::List(d) => d.ops.iter().any(|op| matches!(op, crate::list::ListOp::Remove { .. })),
            TypedDelta::Set(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moment(hlc: u64) -> Moment {
        Moment { hlc, wall_ms: 1_000 }
    }

    /// A journaling keyspace, solo (no peer region) or not.
    fn journaled(solo: bool) -> Keyspace {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set_solo(solo);
        keyspace.set_journal(true);
        keyspace
    }

    #[test]
    fn zadd_of_an_unchanged_score_reasserts_it_only_when_a_peer_could_remove_it() {
        for solo in [false, true] {
            let mut keyspace = journaled(solo);
            let flags = ZAddFlags::default();
            let (totals, delta) = keyspace.zadd(b"z", &[(1.0, b"m")], flags, moment(1)).expect("zadd");
            assert_eq!((totals.added, delta.is_some()), (1, true));
            let seq = keyspace.journal_seq();
            // The same score: answers 0 either way; solo it writes nothing.
            let (totals, delta) = keyspace.zadd(b"z", &[(1.0, b"m")], flags, moment(2)).expect("zadd");
            assert_eq!((totals.added, totals.updated), (0, 0));
            assert_eq!(delta.is_some(), !solo, "solo={solo}");
            assert_eq!(keyspace.journal_seq() > seq, !solo, "solo={solo}");
            // Next to a new member and a changed one, only those are written solo.
            let items: [(f64, &[u8]); 3] = [(1.0, b"m"), (2.0, b"n"), (5.0, b"o")];
            keyspace.zadd(b"z", &[(4.0, b"o")], flags, moment(3)).expect("zadd");
            let (totals, delta) = keyspace.zadd(b"z", &items, flags, moment(4)).expect("zadd");
            assert_eq!((totals.added, totals.updated), (1, 1));
            let Some(TypedDelta::ZSet(change)) = delta.expect("a delta").parts.pop() else {
                panic!("a sorted-set delta");
            };
            let written: Vec<&[u8]> = change.changes.iter().map(|(m, _)| m.as_slice()).collect();
            assert_eq!(written, if solo { vec![&b"n"[..], &b"o"[..]] } else { vec![&b"m"[..], &b"n"[..], &b"o"[..]] });
            // A member named twice takes the general path: the last pair wins.
            keyspace.zadd(b"z", &[(3.0, b"m"), (1.0, b"m")], flags, moment(5)).expect("zadd");
            let zset = keyspace.zset_value(b"z", 1_000).expect("a sorted set").expect("present");
            let scores: Vec<Option<f64>> = [&b"m"[..], b"n", b"o"].iter().map(|m| zset.score(m)).collect();
            assert_eq!(scores, [Some(1.0), Some(2.0), Some(5.0)]);
            keyspace.validate().expect("valid");
        }
    }

    #[test]
    fn sadd_of_a_present_member_reasserts_it_only_when_a_peer_could_remove_it() {
        for solo in [false, true] {
            let mut keyspace = journaled(solo);
            let (added, delta) = keyspace.sadd(b"s", &[b"m"], moment(1)).expect("sadd");
            assert_eq!(added, 1);
            assert!(delta.is_some());
            let seq = keyspace.journal_seq();
            // Present: answers 0 either way; with peers it re-asserts the
            // member (add wins over a concurrent SREM), solo it writes nothing.
            let (added, delta) = keyspace.sadd(b"s", &[b"m"], moment(2)).expect("sadd");
            assert_eq!(added, 0);
            assert_eq!(delta.is_some(), !solo, "solo={solo}");
            assert_eq!(keyspace.journal_seq() > seq, !solo, "solo={solo}");
            // A new member next to a present one: only the new one is written solo.
            let (added, delta) = keyspace.sadd(b"s", &[b"m", b"n"], moment(3)).expect("sadd");
            assert_eq!(added, 1);
            let Some(TypedDelta::Set(change)) = delta.expect("a delta").parts.pop() else {
                panic!("a set delta");
            };
            let written: Vec<&[u8]> = change.adds.iter().map(|(m, _)| m.as_slice()).collect();
            assert_eq!(written, if solo { vec![&b"n"[..]] } else { vec![&b"m"[..], &b"n"[..]] });
            assert_eq!(sorted_members(&keyspace, b"s"), vec![b"m".to_vec(), b"n".to_vec()]);
            keyspace.validate().expect("valid");
        }
    }

    fn sorted_members(keyspace: &Keyspace, key: &[u8]) -> Vec<Vec<u8>> {
        let mut members: Vec<Vec<u8>> = keyspace
            .set_value(key, 1_000)
            .expect("a set")
            .map(|s| s.members().map(|m| m.to_vec()).collect())
            .unwrap_or_default();
        members.sort();
        members
    }

    fn copy_of(keyspace: &Keyspace) -> Keyspace {
        Keyspace::restore(keyspace.replica(), keyspace.context().clone(), &keyspace.snapshot()).expect("restore")
    }

    #[test]
    fn the_journal_tells_local_writes_from_merged_deltas() {
        let (mut a, mut b) = (Keyspace::new(ReplicaId(1)), Keyspace::new(ReplicaId(2)));
        a.set_journal(true);
        let remote = b.set(b"k", b"from b", ExpiryChange::Keep, moment(1));
        a.set(b"x", b"mine", ExpiryChange::Keep, moment(2));
        a.apply(&Delta::Key(remote.clone()));
        a.delete(b"x", moment(3));
        let flush = a.flush();
        let (entries, upto) = a.take_journal_entries();
        assert_eq!(upto, 4);
        let origins: Vec<bool> = entries.iter().map(|e| e.local).collect();
        assert_eq!(origins, vec![true, false, true, true]);
        assert_eq!(entries[1].delta, Delta::Key(remote));
        assert_eq!(entries[3].delta, flush);
        // The plain variant still works and keeps origins in step.
        a.apply(&Delta::Key(b.set(b"k", b"again", ExpiryChange::Keep, moment(4))));
        assert_eq!(a.take_journal().0.len(), 1);
        a.set(b"y", b"local", ExpiryChange::Keep, moment(5));
        let (entries, _) = a.take_journal_entries();
        assert_eq!(entries.len(), 1);
        assert!(entries[0].local);
    }

    #[test]
    fn merging_a_snapshot_is_the_join_of_both_states() {
        let (mut a, mut b) = (Keyspace::new(ReplicaId(1)), Keyspace::new(ReplicaId(2)));
        let mut a_deltas = Vec::new();
        let mut b_deltas = Vec::new();
        // Shared history: both see a's first writes.
        a_deltas.push(Delta::Key(a.set(b"s", b"v1", ExpiryChange::Keep, moment(1))));
        a_deltas.push(Delta::Key(a.sadd(b"set", &[b"m1", b"m2"], moment(2)).unwrap().1.unwrap()));
        a_deltas.push(Delta::Key(a.push(b"list", &[b"x"], End::Back, moment(3)).unwrap().1));
        for d in &a_deltas {
            b.apply(d);
        }
        a_deltas.clear();
        // Concurrent: a removes m1 and overwrites s; b adds m3, deletes the
        // string, writes its own key and pushes to a list a does not touch.
        a_deltas.push(Delta::Key(a.srem(b"set", &[b"m1"], moment(10)).unwrap().1.unwrap()));
        a_deltas.push(Delta::Key(a.set(b"only-a", b"1", ExpiryChange::At(99_000), moment(11))));
        b_deltas.push(Delta::Key(b.sadd(b"set", &[b"m3"], moment(12)).unwrap().1.unwrap()));
        b_deltas.push(Delta::Key(b.delete(b"s", moment(13)).1.unwrap()));
        b_deltas.push(Delta::Key(b.set(b"only-b", b"2", ExpiryChange::Keep, moment(14))));
        b_deltas.push(Delta::Key(b.push(b"list2", &[b"y"], End::Back, moment(15)).unwrap().1));
        // The reference: exchange the deltas.
        let (mut a_ref, mut b_ref) = (copy_of(&a), copy_of(&b));
        for d in &b_deltas {
            a_ref.apply(d);
        }
        for d in &a_deltas {
            b_ref.apply(d);
        }
        assert_eq!(a_ref, b_ref);
        // Full syncs instead, in both directions, twice (idempotence).
        let (a_before, b_before) = (copy_of(&a), copy_of(&b));
        for _ in 0..2 {
            assert_eq!(a.merge_snapshot(&b_before).lists_kept, 0);
            assert_eq!(b.merge_snapshot(&a_before).lists_kept, 0);
        }
        a.validate().expect("a valid");
        b.validate().expect("b valid");
        assert_eq!(a, a_ref);
        assert_eq!(b, a_ref);
        // A fresh keyspace that merges a snapshot equals the snapshot.
        let mut fresh = Keyspace::new(ReplicaId(3));
        fresh.merge_snapshot(&a);
        assert_eq!(fresh, a);
    }

    /// Region a (replica 1) increments a string `n` by 2, a hash field `h`.`f`
    /// by 3 and a sorted-set member `z`.`m` by 1.5, five times each; region b
    /// (replica 2) applies every delta.
    fn counters_incremented_in_a_and_delivered_to_b() -> (Keyspace, Keyspace) {
        let mut a = Keyspace::new(ReplicaId(1));
        let mut b = Keyspace::new(ReplicaId(2));
        let by = ZAddFlags { incr: true, ..ZAddFlags::default() };
        for i in 0..5u64 {
            let deltas = [
                a.incr_by(b"n", 2, moment(10 + i)).unwrap().1,
                a.hincr_by(b"h", b"f", 3, moment(20 + i)).unwrap().1,
                a.zadd(b"z", &[(1.5, b"m".as_slice())], by, moment(30 + i)).unwrap().1.unwrap(),
            ];
            for delta in deltas {
                b.apply(&Delta::Key(delta));
            }
        }
        (a, b)
    }

    /// The master-kill drill's lost increments: the region that collected
    /// merged a's stable increments into one element at the last one's dot;
    /// the other still held them one by one, that last one included. A full
    /// sync in either direction must keep every increment.
    #[test]
    fn a_join_keeps_increments_merged_on_one_side_only() {
        let (a, b) = counters_incremented_in_a_and_delivered_to_b();
        // Every region has applied everything: a's whole history is stable.
        let stable = a.context().vector().clone();
        let mut merged = copy_of(&a);
        merged.collect(&stable, 0, usize::MAX);
        let expected = |keyspace: &Keyspace| {
            assert_eq!(keyspace.get(b"n", 1_000).unwrap().as_deref(), Some(b"10".as_slice()));
            let hash = keyspace.hash_value(b"h", 1_000).unwrap().expect("a hash");
            assert_eq!(hash.field(b"f").and_then(|r| r.int_sum()), Some(15));
            let zset = keyspace.zset_value(b"z", 1_000).unwrap().expect("a sorted set");
            assert_eq!(zset.score(b"m"), Some(7.5));
        };
        expected(&merged);
        let (mut unmerged, mut collected) = (copy_of(&b), copy_of(&merged));
        unmerged.merge_snapshot(&merged);
        collected.merge_snapshot(&b);
        expected(&unmerged);
        expected(&collected);
        // Once both collect, they are the same state.
        unmerged.collect(&stable, 0, usize::MAX);
        collected.collect(&stable, 0, usize::MAX);
        assert_eq!(unmerged, collected);
    }

    /// A region that merged a counter's stable increments names one dot for
    /// them when it overwrites the counter; a region still holding them one
    /// by one must remove them all (the removal carries the merged run).
    #[test]
    fn an_overwrite_of_merged_increments_removes_them_where_they_are_single() {
        let (mut a, mut b) = counters_incremented_in_a_and_delivered_to_b();
        let stable = a.context().vector().clone();
        a.collect(&stable, 0, usize::MAX);
        let set = a.set(b"n", b"100", ExpiryChange::Keep, moment(30));
        let (_, hset) = a.hset(b"h", &[(b"f", b"7")], moment(31)).unwrap();
        b.apply(&Delta::Key(set));
        b.apply(&Delta::Key(hset.expect("a delta")));
        for keyspace in [&a, &b] {
            assert_eq!(keyspace.get(b"n", 1_000).unwrap().as_deref(), Some(b"100".as_slice()));
            let hash = keyspace.hash_value(b"h", 1_000).unwrap().expect("a hash");
            assert_eq!(hash.field(b"f").and_then(|r| r.increments().first().copied()), None);
        }
        b.collect(&b.context().vector().clone(), 0, usize::MAX);
        a.collect(&a.context().vector().clone(), 0, usize::MAX);
        assert_eq!(a, b);
    }

    #[test]
    fn replace_with_set_overwrites_any_type_clears_the_ttl_and_deletes_when_empty() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set(b"dst", b"a string", ExpiryChange::At(50_000), moment(1));
        let delta = keyspace.replace_with_set(b"dst", &[b"x", b"y", b"x"], moment(2)).expect("a write");
        assert!(delta.expiry.is_some(), "the old TTL is removed in the same delta");
        assert_eq!(sorted_members(&keyspace, b"dst"), vec![b"x".to_vec(), b"y".to_vec()]);
        assert_eq!(keyspace.deadline(b"dst", 1_000), Some(None), "a stored result has no TTL");
        // Replacing a set with another drops the members not named again.
        keyspace.replace_with_set(b"dst", &[b"y", b"z"], moment(3)).expect("a write");
        assert_eq!(sorted_members(&keyspace, b"dst"), vec![b"y".to_vec(), b"z".to_vec()]);
        // An empty result deletes the key; on a missing key it does nothing.
        assert!(keyspace.replace_with_set(b"dst", &[], moment(4)).is_some());
        assert!(!keyspace.exists(b"dst", 1_000));
        assert!(keyspace.replace_with_set(b"dst", &[], moment(5)).is_none());
        keyspace.validate().expect("valid");
    }

    #[test]
    fn replace_with_set_converges_with_a_concurrent_sadd() {
        let (mut a, mut b) = (Keyspace::new(ReplicaId(1)), Keyspace::new(ReplicaId(2)));
        let (_, first) = a.sadd(b"s", &[b"old"], moment(1)).expect("sadd");
        b.apply(&Delta::Key(first.expect("a write")));
        let replaced = a.replace_with_set(b"s", &[b"new"], moment(2)).expect("a write");
        let (_, concurrent) = b.sadd(b"s", &[b"late"], moment(2)).expect("sadd");
        a.apply(&Delta::Key(concurrent.expect("a write")));
        b.apply(&Delta::Key(replaced));
        assert_eq!(a, b);
        // The add the replacement did not observe survives; the old member does not.
        assert_eq!(sorted_members(&a, b"s"), vec![b"late".to_vec(), b"new".to_vec()]);
    }

    fn zmoment(hlc: u64) -> Moment {
        Moment { hlc, wall_ms: 1_790_000_000_000 }
    }

    fn members(keyspace: &Keyspace, key: &[u8]) -> Vec<(Vec<u8>, f64)> {
        let zset = keyspace.zset_value(key, 1_790_000_000_000).unwrap();
        zset.map(|z| z.iter().map(|(m, s)| (m.to_vec(), s)).collect()).unwrap_or_default()
    }

    #[test]
    fn zrem_range_removes_the_selected_members_only() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        let items: Vec<(f64, &[u8])> = vec![(1.0, b"a"), (2.0, b"b"), (3.0, b"c"), (4.0, b"d")];
        keyspace.zadd(b"z", &items, ZAddFlags::default(), zmoment(1)).unwrap();
        let range = ZRemoveRange::Score(ScoreBound::exclusive(1.0), ScoreBound::inclusive(3.0));
        let (removed, delta) = keyspace.zrem_range(b"z", range, zmoment(2)).unwrap();
        assert_eq!((removed, delta.is_some()), (2, true));
        assert_eq!(members(&keyspace, b"z"), vec![(b"a".to_vec(), 1.0), (b"d".to_vec(), 4.0)]);
        let (removed, delta) = keyspace.zrem_range(b"z", ZRemoveRange::Rank(5, 10), zmoment(3)).unwrap();
        assert_eq!((removed, delta), (0, None), "an empty range writes nothing");
        let lex = ZRemoveRange::Lex(LexBound::Inclusive(b"b"), LexBound::Max);
        assert_eq!(keyspace.zrem_range(b"z", lex, zmoment(4)).unwrap().0, 1);
        assert_eq!(members(&keyspace, b"z"), vec![(b"a".to_vec(), 1.0)]);
        let (removed, _) = keyspace.zrem_range(b"z", ZRemoveRange::Rank(0, -1), zmoment(5)).unwrap();
        assert_eq!(removed, 1);
        assert!(!keyspace.exists(b"z", 1_790_000_000_000), "removing every member deletes the key");
        assert_eq!(keyspace.zrem_range(b"missing", ZRemoveRange::Rank(0, -1), zmoment(6)).unwrap(), (0, None));
        keyspace.set(b"s", b"v", ExpiryChange::Clear, zmoment(7));
        assert_eq!(keyspace.zrem_range(b"s", ZRemoveRange::Rank(0, -1), zmoment(8)), Err(CommandError::WrongType));
        keyspace.validate().unwrap();
    }

    #[test]
    fn zstore_replaces_any_value_and_deletes_on_empty() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set(b"d", b"string", ExpiryChange::At(1_790_000_100_000), zmoment(1));
        let (len, delta) = keyspace.zstore(b"d", &[(2.0, b"x"), (1.0, b"y")], zmoment(2)).unwrap();
        assert_eq!((len, delta.is_some()), (2, true));
        assert_eq!(members(&keyspace, b"d"), vec![(b"y".to_vec(), 1.0), (b"x".to_vec(), 2.0)]);
        assert_eq!(keyspace.deadline(b"d", 1_790_000_000_000), Some(None), "the store drops the old TTL");
        let (len, _) = keyspace.zstore(b"d", &[(5.0, b"z")], zmoment(3)).unwrap();
        assert_eq!(len, 1);
        assert_eq!(members(&keyspace, b"d"), vec![(b"z".to_vec(), 5.0)], "members not stored again are gone");
        let (len, delta) = keyspace.zstore(b"d", &[], zmoment(4)).unwrap();
        assert_eq!((len, delta.is_some()), (0, true));
        assert!(!keyspace.exists(b"d", 1_790_000_000_000));
        assert_eq!(keyspace.zstore(b"d", &[], zmoment(5)).unwrap(), (0, None), "nothing to delete");
        keyspace.validate().unwrap();
    }

    #[test]
    fn a_frozen_copy_snapshots_as_the_keyspace_did_and_restore_wants_byte_order() {
        let mut keyspace = Keyspace::new(ReplicaId(1));
        keyspace.set(b"b", b"2", ExpiryChange::Clear, moment(1));
        keyspace.set(b"a", b"1", ExpiryChange::At(9_000), moment(2));
        keyspace.sadd(b"c", &[b"x", b"y"], moment(3)).unwrap();
        let frozen = keyspace.freeze();
        // A copy into room made beforehand (too little of it: one key came
        // since) holds the same, and a second copy replaces the first.
        let mut into = FrozenKeys::room_for(0);
        keyspace.freeze_into(&mut into);
        keyspace.freeze_into(&mut into);
        assert_eq!(into.len(), 3);
        assert_eq!(into.clone().into_snapshot(), frozen.clone().into_snapshot());
        // Writes after the freeze are not in it.
        keyspace.set(b"d", b"4", ExpiryChange::Clear, moment(4));
        let keys = frozen.into_snapshot();
        assert_eq!(
            keys.iter().map(|k| k.key.to_vec()).collect::<Vec<_>>(),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        let restored = Keyspace::restore(ReplicaId(1), keyspace.context().clone(), &keys).unwrap();
        assert_eq!(restored.get(b"b", 1_000).unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(restored.max_hlc(), Some(3));
        let mut swapped = keys.clone();
        swapped.swap(0, 1);
        let error = Keyspace::restore(ReplicaId(1), keyspace.context().clone(), &swapped).unwrap_err();
        assert!(error.contains("out of byte order"), "{error}");
        let mut repeated = keys.clone();
        repeated.insert(1, keys[0].clone());
        assert!(Keyspace::restore(ReplicaId(1), keyspace.context().clone(), &repeated).is_err());
        // A key whose dot the context does not hold is refused.
        let error = Keyspace::restore(ReplicaId(1), CausalContext::new(), &keys).unwrap_err();
        assert!(error.contains("outside the context"), "{error}");
    }
}
