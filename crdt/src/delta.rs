//! Deltas: the unit of replication, persistence and WAN sync.
//!
//! One local write produces one [`Delta`]: the change it made to one key (or,
//! for FLUSHDB/FLUSHALL, the observed-remove of everything). A delta is itself
//! a small CRDT state — new elements with their tags plus the exact dots the
//! write observed and removed — so applying it anywhere, in any order, any
//! number of times, gives the same result.

use smallvec::SmallVec;

use crate::context::CausalContext;
use crate::dot::Dot;
use crate::expiry::ExpiryDelta;
use crate::hash::HashDelta;
use crate::list::{ListDelta, ListOp};
use crate::register::RegisterDelta;
use crate::set::SetDelta;
use crate::short_bytes::ShortBytes;
use crate::value::ValueType;
use crate::zset::ZSetDelta;

/// The change to one typed value of a key.
#[derive(Clone, Debug, PartialEq)]
pub enum TypedDelta {
    /// A string (register with counter increments).
    Str(RegisterDelta<ShortBytes>),
    /// A set.
    Set(SetDelta),
    /// A hash.
    Hash(HashDelta),
    /// A sorted set.
    ZSet(ZSetDelta),
    /// A list.
    List(ListDelta),
}

impl TypedDelta {
    /// The type this delta changes.
    pub fn value_type(&self) -> ValueType {
        match self {
            TypedDelta::Str(_) => ValueType::String,
            TypedDelta::Set(_) => ValueType::Set,
            TypedDelta::Hash(_) => ValueType::Hash,
            TypedDelta::ZSet(_) => ValueType::ZSet,
            TypedDelta::List(_) => ValueType::List,
        }
    }

    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, f: impl FnMut(Dot)) {
        match self {
            TypedDelta::Str(d) => d.for_each_dot(f),
            TypedDelta::Set(d) => d.for_each_dot(f),
            TypedDelta::Hash(d) => d.for_each_dot(f),
            TypedDelta::ZSet(d) => d.for_each_dot(f),
            TypedDelta::List(d) => d.for_each_dot(f),
        }
    }
}

/// The change one write made to one key.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyDelta {
    /// The key.
    pub key: ShortBytes,
    /// Changes to the key's typed values (usually one; a write that replaces a
    /// key of another type also removes what it observed of that type).
    pub parts: SmallVec<[TypedDelta; 1]>,
    /// The change to the key's expiry, if any.
    pub expiry: Option<ExpiryDelta>,
}

impl KeyDelta {
    /// An empty change to `key`.
    pub fn new(key: &[u8]) -> KeyDelta {
        KeyDelta { key: ShortBytes::new(key), parts: SmallVec::new(), expiry: None }
    }

    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.parts.iter().for_each(|p| p.for_each_dot(&mut f));
        if let Some(expiry) = &self.expiry {
            expiry.for_each_dot(f);
        }
    }

    /// True if the delta names no dot at all (it would change nothing).
    pub fn is_empty(&self) -> bool {
        let mut empty = true;
        self.for_each_dot(|_| empty = false);
        empty
    }
}

/// One write's effect, as shipped to replicas, disk and peer regions.
// A key delta is the hot variant (every write) and a flush the rare one:
// boxing the key delta to even them out would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// A change to one key.
    Key(KeyDelta),
    /// FLUSHDB/FLUSHALL: remove every element whose dot the flushing replica
    /// had seen (its whole causal context); writes it had not seen survive.
    Flush(CausalContext),
}

impl Delta {
    /// Every HLC timestamp the delta carries (the tags of the elements it
    /// adds): what a receiver shows its clock (DESIGN.md §4 invariant 5). A
    /// flush carries none.
    pub fn for_each_hlc(&self, mut f: impl FnMut(u64)) {
        let Delta::Key(key) = self else {
            return;
        };
        fn register<V>(d: &RegisterDelta<V>, f: &mut impl FnMut(u64)) {
            if let Some(entry) = &d.entry {
                f(entry.tag.hlc);
            }
            if let Some(increment) = &d.increment {
                f(increment.tag.hlc);
            }
        }
        for part in &key.parts {
            match part {
                TypedDelta::Str(d) => register(d, &mut f),
                TypedDelta::Set(d) => d.adds.iter().for_each(|(_, tag)| f(tag.hlc)),
                TypedDelta::Hash(d) => d.fields.iter().for_each(|(_, d)| register(d, &mut f)),
                TypedDelta::ZSet(d) => d.changes.iter().for_each(|(_, d)| register(d, &mut f)),
                TypedDelta::List(d) => {
                    for op in &d.ops {
                        match op {
                            ListOp::Insert { id, .. } => f(id.hlc),
                            ListOp::Assign { tag, .. } => f(tag.hlc),
                            ListOp::Remove { .. } => {}
                        }
                    }
                }
            }
        }
        if let Some((tag, _)) = key.expiry.as_ref().and_then(|e| e.entry) {
            f(tag.hlc);
        }
    }

    /// The largest HLC timestamp the delta carries, if any.
    pub fn max_hlc(&self) -> Option<u64> {
        let mut max = None;
        self.for_each_hlc(|hlc| max = max.max(Some(hlc)));
        max
    }

    /// The key changed, if the delta is about one key.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Delta::Key(k) => Some(&k.key),
            Delta::Flush(_) => None,
        }
    }
}
