//! A key's state: its typed values, its expiry, and the compact form most
//! string keys are stored in.
//!
//! A key normally holds one typed value. Concurrent writes of different types
//! from different regions leave it holding several for a while; the visible
//! one is the type whose newest surviving write has the greatest tag (HLC, then
//! replica), the others are hidden. The losers' state is discarded by the next
//! write to the key anywhere (a local write removes every hidden element it
//! observed) — deterministic, and convergent because discarding is itself an
//! observed remove shipped in that write's delta.

use smallvec::SmallVec;

use crate::context::{CausalContext, VersionVector};
use crate::delta::{KeyDelta, TypedDelta};
use crate::dot::{Dot, ReplicaId, Tag};
use crate::expiry::Expiry;
use crate::hash::OrHash;
use crate::list::RgaList;
use crate::register::{Register, RegisterDelta};
use crate::set::OrSet;
use crate::short_bytes::ShortBytes;
use crate::zset::OrZSet;

/// The Redis type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueType {
    /// `string` (also counters).
    String,
    /// `list`.
    List,
    /// `set`.
    Set,
    /// `zset`.
    ZSet,
    /// `hash`.
    Hash,
}

impl ValueType {
    /// The name TYPE replies with.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::List => "list",
            ValueType::Set => "set",
            ValueType::ZSet => "zset",
            ValueType::Hash => "hash",
        }
    }
}

/// One typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum TypedValue {
    /// A string or counter.
    Str(Register<ShortBytes>),
    /// A set.
    Set(OrSet),
    /// A hash.
    Hash(OrHash),
    /// A sorted set.
    ZSet(OrZSet),
    /// A list.
    List(RgaList),
}

impl TypedValue {
    /// An empty value of `value_type`.
    pub fn empty(value_type: ValueType) -> TypedValue {
        match value_type {
            ValueType::String => TypedValue::Str(Register::default()),
            ValueType::Set => TypedValue::Set(OrSet::default()),
            ValueType::Hash => TypedValue::Hash(OrHash::default()),
            ValueType::ZSet => TypedValue::ZSet(OrZSet::default()),
            ValueType::List => TypedValue::List(RgaList::default()),
        }
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            TypedValue::Str(_) => ValueType::String,
            TypedValue::Set(_) => ValueType::Set,
            TypedValue::Hash(_) => ValueType::Hash,
            TypedValue::ZSet(_) => ValueType::ZSet,
            TypedValue::List(_) => ValueType::List,
        }
    }

    /// True if a client would see something (the key exists as this type).
    pub fn is_visible(&self) -> bool {
        match self {
            TypedValue::Str(r) => !r.is_empty(),
            TypedValue::Set(s) => !s.is_empty(),
            TypedValue::Hash(h) => !h.is_empty(),
            TypedValue::ZSet(z) => !z.is_empty(),
            TypedValue::List(l) => !l.is_empty(),
        }
    }

    /// True if nothing at all is left (no tombstone, nothing pending).
    pub fn can_drop(&self) -> bool {
        match self {
            TypedValue::List(l) => l.can_drop(),
            other => !other.is_visible(),
        }
    }

    /// The greatest tag of any live element.
    pub fn max_tag(&self) -> Option<Tag> {
        match self {
            TypedValue::Str(r) => r.max_tag(),
            TypedValue::Set(s) => s.max_tag(),
            TypedValue::Hash(h) => h.max_tag(),
            TypedValue::ZSet(z) => z.max_tag(),
            TypedValue::List(l) => l.max_tag(),
        }
    }

    /// The delta removing everything observed of this value. `tags` supplies
    /// fresh tags for removals that need their own dot (lists).
    pub fn clear(&self, tags: &mut impl FnMut() -> Tag) -> TypedDelta {
        match self {
            TypedValue::Str(r) => TypedDelta::Str(r.clear()),
            TypedValue::Set(s) => TypedDelta::Set(s.clear()),
            TypedValue::Hash(h) => TypedDelta::Hash(h.clear()),
            TypedValue::ZSet(z) => TypedDelta::ZSet(z.clear()),
            TypedValue::List(l) => TypedDelta::List(l.clear(tags)),
        }
    }

    /// For a full-sync join with `theirs` (of the same type): a delta
    /// removing the increments here that must give way to merged increments
    /// of theirs ([`Register::yielding_to_merged`]), for every counter of
    /// the value — the string, each hash field, each sorted-set member.
    pub fn yielding_to_merged(&self, theirs: &TypedValue) -> Option<TypedDelta> {
        fn removal<V>(removed: crate::register::Dots) -> Option<RegisterDelta<V>> {
            (!removed.is_empty()).then(|| RegisterDelta { removed, ..RegisterDelta::default() })
        }
        let delta = match (self, theirs) {
            (TypedValue::Str(mine), TypedValue::Str(other)) => {
                TypedDelta::Str(removal(mine.yielding_to_merged(other))?)
            }
            (TypedValue::Hash(mine), TypedValue::Hash(other)) => {
                let fields: SmallVec<_> = other
                    .iter()
                    .filter_map(|(field, register)| {
                        Some((field.clone(), removal(mine.field(field)?.yielding_to_merged(register))?))
                    })
                    .collect();
                if fields.is_empty() {
                    return None;
                }
                TypedDelta::Hash(crate::hash::HashDelta { fields })
            }
            (TypedValue::ZSet(mine), TypedValue::ZSet(other)) => {
                let changes: SmallVec<_> = other
                    .iter()
                    .filter_map(|(member, _)| {
                        let dots = mine.register(member)?.yielding_to_merged(other.register(member)?);
                        Some((member.clone(), removal(dots)?))
                    })
                    .collect();
                if changes.is_empty() {
                    return None;
                }
                TypedDelta::ZSet(crate::zset::ZSetDelta { changes })
            }
            _ => return None,
        };
        Some(delta)
    }

    /// The value as delta parts that rebuild it from nothing (snapshots). A
    /// register needs one part per element; sets, hashes and sorted sets one
    /// part. Lists cannot be rebuilt from inserts (see `list::snapshot`) and
    /// give no part: their image goes into the snapshot instead.
    pub fn as_parts(&self) -> Vec<TypedDelta> {
        match self {
            TypedValue::Str(r) => r.as_deltas().into_iter().map(TypedDelta::Str).collect(),
            TypedValue::Set(v) => vec![TypedDelta::Set(v.as_delta())],
            TypedValue::Hash(v) => vec![TypedDelta::Hash(v.as_delta())],
            TypedValue::ZSet(v) => vec![TypedDelta::ZSet(v.as_delta())],
            TypedValue::List(_) => Vec::new(),
        }
    }

    /// Merges a delta of the same type.
    fn apply(&mut self, delta: &TypedDelta, seen: &CausalContext) {
        match (self, delta) {
            (TypedValue::Str(v), TypedDelta::Str(d)) => v.apply(d, seen),
            (TypedValue::Set(v), TypedDelta::Set(d)) => v.apply(d, seen),
            (TypedValue::Hash(v), TypedDelta::Hash(d)) => v.apply(d, seen),
            (TypedValue::ZSet(v), TypedDelta::ZSet(d)) => v.apply(d, seen),
            (TypedValue::List(v), TypedDelta::List(d)) => v.apply(d, seen),
            (value, delta) => {
                unreachable!("{:?} delta applied to a {:?} value", delta.value_type(), value.value_type())
            }
        }
    }

    fn remove_covered(&mut self, context: &CausalContext) -> bool {
        match self {
            TypedValue::Str(v) => v.remove_covered(context),
            TypedValue::Set(v) => v.remove_covered(context),
            TypedValue::Hash(v) => v.remove_covered(context),
            TypedValue::ZSet(v) => v.remove_covered(context),
            TypedValue::List(v) => v.remove_covered(context),
        }
    }

    fn collect(&mut self, stable: &VersionVector) -> usize {
        match self {
            TypedValue::Str(v) => v.collect(stable),
            TypedValue::Set(_) => 0,
            TypedValue::Hash(v) => v.collect(stable),
            TypedValue::ZSet(v) => v.collect(stable),
            TypedValue::List(v) => v.collect(stable),
        }
    }

    /// Checks the value's invariants.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            TypedValue::Str(_) => Ok(()),
            TypedValue::Set(v) => v.validate(),
            TypedValue::Hash(v) => v.validate(),
            TypedValue::ZSet(v) => v.validate(),
            TypedValue::List(v) => v.validate(),
        }
    }
}

/// Everything a key holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyState {
    /// Typed values, at most one per type, sorted by type.
    pub(crate) values: SmallVec<[TypedValue; 1]>,
    /// Expiry entries.
    pub(crate) expiry: Expiry,
}

impl KeyState {
    /// For a full-sync join with `theirs`: a delta removing the increments
    /// here that must give way to merged increments of theirs
    /// ([`TypedValue::yielding_to_merged`]), if there are any.
    pub fn yielding_to_merged(&self, theirs: &KeyState) -> Option<KeyDelta> {
        let mut delta = KeyDelta::new(b"");
        for mine in &self.values {
            let other = theirs.values.iter().find(|v| v.value_type() == mine.value_type());
            if let Some(part) = other.and_then(|other| mine.yielding_to_merged(other)) {
                delta.parts.push(part);
            }
        }
        (!delta.parts.is_empty()).then_some(delta)
    }

    /// The value clients see: the only visible one, or with several (a type
    /// conflict) the one whose newest element has the greatest tag.
    pub fn visible(&self) -> Option<&TypedValue> {
        let mut visible = self.values.iter().filter(|v| v.is_visible());
        let first = visible.next()?;
        match visible.next() {
            None => Some(first),
            Some(_) => self.values.iter().filter(|v| v.is_visible()).max_by_key(|v| v.max_tag()),
        }
    }

    /// True if the state fits [`Stored::Small`]: one string entry, no
    /// increments, no expiry.
    pub fn is_small(&self) -> bool {
        self.expiry.is_empty()
            && self.values.len() == 1
            && matches!(&self.values[0], TypedValue::Str(r) if r.increments().is_empty() && r.entries().len() == 1)
    }

    /// The typed value of `value_type`, visible or not.
    pub fn typed(&self, value_type: ValueType) -> Option<&TypedValue> {
        self.values.iter().find(|v| v.value_type() == value_type)
    }

    /// Number of types with visible elements (more than one is a conflict).
    pub fn visible_types(&self) -> usize {
        self.values.iter().filter(|v| v.is_visible()).count()
    }

    /// All typed values.
    pub fn values(&self) -> &[TypedValue] {
        &self.values
    }

    /// The key's expiry entries.
    pub fn expiry(&self) -> &Expiry {
        &self.expiry
    }

    /// True if the key holds nothing at all and can leave the table.
    pub fn can_drop(&self) -> bool {
        self.expiry.is_empty() && self.values.iter().all(TypedValue::can_drop)
    }

    /// The delta removing everything observed of this key (DEL).
    pub fn removal(&self, key: &[u8], tags: &mut impl FnMut() -> Tag) -> KeyDelta {
        let mut delta = KeyDelta::new(key);
        delta.parts = self.values.iter().map(|v| v.clear(tags)).collect();
        if !self.expiry.is_empty() {
            delta.expiry = Some(self.expiry.clear());
        }
        delta
    }

    /// The key's state as plain data, in a fixed order (snapshots).
    pub fn snapshot(&self, key: &[u8]) -> KeySnapshot {
        KeySnapshot {
            key: ShortBytes::new(key),
            parts: self.values.iter().flat_map(TypedValue::as_parts).collect(),
            expiry: self.expiry.entries().to_vec(),
            list: self.values.iter().find_map(|v| match v {
                TypedValue::List(list) => Some(list.image()),
                _ => None,
            }),
        }
    }

    /// Rebuilds a key's state from its snapshot, refusing one that breaks an
    /// invariant or holds nothing.
    pub fn from_snapshot(snapshot: &KeySnapshot) -> Result<KeyState, String> {
        let nothing_seen = CausalContext::new();
        let mut state = KeyState::default();
        let mut delta = KeyDelta::new(&snapshot.key);
        delta.parts = snapshot.parts.iter().filter(|p| p.value_type() != ValueType::List).cloned().collect();
        state.apply(&delta, &nothing_seen);
        for &(tag, deadline) in &snapshot.expiry {
            state.expiry.apply(
                &crate::expiry::ExpiryDelta { removed: Vec::new(), entry: Some((tag, deadline)) },
                &nothing_seen,
            );
        }
        if let Some(image) = &snapshot.list {
            let list = RgaList::from_image(image)?;
            let at = state.values.partition_point(|v| v.value_type() < ValueType::List);
            state.values.insert(at, TypedValue::List(list));
        }
        state.validate()?;
        if state.can_drop() {
            return Err(format!("snapshot of key {:?} holds nothing", snapshot.key));
        }
        Ok(state)
    }

    /// Merges a key delta. `seen` is the context before the delta.
    pub fn apply(&mut self, delta: &KeyDelta, seen: &CausalContext) {
        for part in &delta.parts {
            let value_type = part.value_type();
            let at = self.values.partition_point(|v| v.value_type() < value_type);
            if self.values.get(at).is_none_or(|v| v.value_type() != value_type) {
                self.values.insert(at, TypedValue::empty(value_type));
            }
            self.values[at].apply(part, seen);
            if self.values[at].can_drop() {
                self.values.remove(at);
            }
        }
        if let Some(expiry) = &delta.expiry {
            self.expiry.apply(expiry, seen);
        }
    }

    /// After applying `delta` with nothing concurrent (a solo keyspace):
    /// merges a string's new increment into its previous one.
    pub fn merge_last_increments(&mut self, delta: &KeyDelta) {
        for part in &delta.parts {
            if let TypedDelta::Str(change) = part
                && change.increment.is_some()
                && let Some(TypedValue::Str(register)) =
                    self.values.iter_mut().find(|v| v.value_type() == ValueType::String)
            {
                register.merge_last_increments();
            }
        }
    }

    /// Removes every element whose dot is in `context` (a flush).
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let mut changed = self.expiry.remove_covered(context);
        for value in self.values.iter_mut() {
            changed |= value.remove_covered(context);
        }
        self.values.retain(|v| !v.can_drop());
        changed
    }

    /// Garbage collection with a causally stable vector.
    pub fn collect(&mut self, stable: &VersionVector) -> usize {
        // Expiry entries are never collected: a removal names the entries it
        // observed, and one dropped here but still held elsewhere would
        // outlive a later EXPIRE, PERSIST or DEL there — a PERSIST that won
        // and was dropped here would still beat a new TTL elsewhere (D96).
        let mut collected = 0;
        for value in self.values.iter_mut() {
            collected += value.collect(stable);
        }
        self.values.retain(|v| !v.can_drop());
        collected
    }

    /// Every live dot of the key (values and expiry).
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        for value in &self.values {
            match value {
                TypedValue::Str(v) => v.for_each_dot(&mut f),
                TypedValue::Set(v) => v.for_each_dot(&mut f),
                TypedValue::Hash(v) => v.for_each_dot(&mut f),
                TypedValue::ZSet(v) => v.for_each_dot(&mut f),
                TypedValue::List(v) => v.for_each_dot(&mut f),
            }
        }
        self.expiry.for_each_dot(f);
    }

    /// Checks invariants: values sorted by type, none droppable, each valid.
    pub fn validate(&self) -> Result<(), String> {
        if self.values.windows(2).any(|w| w[0].value_type() >= w[1].value_type()) {
            return Err("typed values not sorted by type".into());
        }
        for value in &self.values {
            if value.can_drop() {
                return Err(format!("empty {:?} value kept", value.value_type()));
            }
            value.validate()?;
        }
        Ok(())
    }

    /// The deadline this replica must enforce by deleting the key.
    pub fn owned_deadline(&self, replica: ReplicaId) -> Option<u64> {
        self.expiry.effective().filter(|e| e.owner == replica).map(|e| e.deadline_ms)
    }

    /// True if the key is past its deadline at `now_ms` (hidden from reads).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expiry.effective().is_some_and(|e| e.deadline_ms <= now_ms)
    }
}

/// One key's state as plain data: what a shard snapshot holds per key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeySnapshot {
    /// The key.
    pub key: ShortBytes,
    /// Delta parts that rebuild the registers, sets, hashes and sorted sets.
    pub parts: Vec<TypedDelta>,
    /// The expiry entries.
    pub expiry: Vec<(Tag, crate::expiry::Deadline)>,
    /// The list, if the key holds one.
    pub list: Option<crate::list::ListImage>,
}

/// How a key is stored in the table.
///
/// Most keys are strings written once by one region with no TTL: a single
/// register entry. They are stored as `Small` — a tag and the value, 40 bytes
/// — instead of a boxed [`KeyState`]. Both forms mean the same state;
/// [`Stored::to_state`] and [`Stored::from_state`] convert.
#[derive(Clone, Debug)]
pub enum Stored {
    /// A string with one register entry, no increments, no expiry.
    Small {
        /// The write's tag.
        tag: Tag,
        /// The value.
        value: ShortBytes,
    },
    /// Anything else.
    Big(Box<KeyState>),
}

impl Stored {
    /// The full state (copies a small value into a new state).
    pub fn to_state(&self) -> KeyState {
        match self {
            Stored::Small { tag, value } => KeyState {
                values: smallvec::smallvec![TypedValue::Str(Register::with_entry(*tag, value.clone()))],
                expiry: Expiry::default(),
            },
            Stored::Big(state) => (**state).clone(),
        }
    }

    /// Takes the full state out, leaving nothing behind to clone.
    pub fn into_state(self) -> KeyState {
        match self {
            Stored::Small { tag, value } => KeyState {
                values: smallvec::smallvec![TypedValue::Str(Register::with_entry(tag, value))],
                expiry: Expiry::default(),
            },
            Stored::Big(state) => *state,
        }
    }

    /// The small form of a key's snapshot that holds one plain string
    /// entry (most keys), built without a full state; None for anything else.
    pub fn small_from_snapshot(snapshot: &KeySnapshot) -> Option<Stored> {
        if !snapshot.expiry.is_empty() || snapshot.list.is_some() {
            return None;
        }
        match snapshot.parts.as_slice() {
            [TypedDelta::Str(RegisterDelta { removed, entry: Some(entry), increment: None, removed_runs })]
                if removed.is_empty() && removed_runs.is_empty() =>
            {
                Some(Stored::Small { tag: entry.tag, value: entry.value.clone() })
            }
            _ => None,
        }
    }

    /// Every dot the stored state holds.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        match self {
            Stored::Small { tag, .. } => f(tag.dot),
            Stored::Big(state) => state.for_each_dot(f),
        }
    }

    /// The compact form of a state.
    pub fn from_state(state: KeyState) -> Stored {
        if state.is_small()
            && let TypedValue::Str(register) = &state.values[0]
        {
            let entry = &register.entries()[0];
            return Stored::Small { tag: entry.tag, value: entry.value.clone() };
        }
        Stored::Big(Box::new(state))
    }
}
