//! The hash: an observed-remove map from field to [`Register`].
//!
//! Each field is a register, so a field is a string with last-writer-wins
//! updates and counter increments (HINCRBY, HINCRBYFLOAT) that add up across
//! regions. HSET of a field replaces what it observed of that field; HDEL
//! removes what it observed, so an update it did not see survives (add/update
//! wins over delete). A field whose register becomes empty disappears.

use hashbrown::HashMap;
use smallvec::SmallVec;

use crate::context::{CausalContext, VersionVector};
use crate::dot::{Dot, Tag};
use crate::register::{Amount, Register, RegisterDelta};
use crate::short_bytes::ShortBytes;

/// An observed-remove map of fields to registers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrHash {
    fields: HashMap<ShortBytes, Register<ShortBytes>>,
}

/// The change one write makes to a hash: one register delta per field touched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HashDelta {
    /// Per field, the change to its register.
    pub fields: SmallVec<[(ShortBytes, RegisterDelta<ShortBytes>); 1]>,
}

impl HashDelta {
    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.fields.iter().for_each(|(_, d)| d.for_each_dot(&mut f));
    }

    /// True if the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl OrHash {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True if there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The register of `field`.
    pub fn field(&self, field: &[u8]) -> Option<&Register<ShortBytes>> {
        self.fields.get(field)
    }

    /// All fields and their registers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortBytes, &Register<ShortBytes>)> {
        self.fields.iter()
    }

    /// The greatest tag of any field.
    pub fn max_tag(&self) -> Option<Tag> {
        self.fields.values().filter_map(|r| r.max_tag()).max()
    }

    /// Every live dot.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.fields.values().for_each(|r| r.for_each_dot(&mut f));
    }

    /// Adds an assignment of `field` to `delta`. Returns true if the field is new.
    pub fn assign_to(&self, delta: &mut HashDelta, field: &[u8], value: &[u8], tag: Tag) -> bool {
        let value = ShortBytes::new(value);
        match self.fields.get_key_value(field) {
            Some((field, register)) => {
                delta.fields.push((field.clone(), register.assign(tag, value)));
                false
            }
            None => {
                let register =
                    RegisterDelta { entry: Some(crate::register::Entry { tag, value }), ..RegisterDelta::default() };
                delta.fields.push((ShortBytes::new(field), register));
                true
            }
        }
    }

    /// Adds an increment of `field` to `delta`.
    pub fn increment_to(&self, delta: &mut HashDelta, field: &[u8], tag: Tag, amount: Amount) {
        delta.fields.push((ShortBytes::new(field), Register::increment(tag, amount)));
    }

    /// Adds the removal of `field` to `delta`. Returns true if it existed.
    pub fn remove_to(&self, delta: &mut HashDelta, field: &[u8]) -> bool {
        match self.fields.get_key_value(field) {
            Some((field, register)) => {
                delta.fields.push((field.clone(), register.clear()));
                true
            }
            None => false,
        }
    }

    /// The delta removing every field observed.
    pub fn clear(&self) -> HashDelta {
        HashDelta { fields: self.fields.iter().map(|(f, r)| (f.clone(), r.clear())).collect() }
    }

    /// The state as a delta that rebuilds it from nothing, fields in byte
    /// order (snapshots).
    pub fn as_delta(&self) -> HashDelta {
        let mut fields: Vec<_> = self.fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let fields =
            fields.into_iter().flat_map(|(f, r)| r.as_deltas().into_iter().map(move |d| (f.clone(), d))).collect();
        HashDelta { fields }
    }

    /// Merges a delta; `seen` is the receiver's context before it.
    pub fn apply(&mut self, delta: &HashDelta, seen: &CausalContext) {
        for (field, change) in &delta.fields {
            match self.fields.get_mut(field.as_slice()) {
                Some(register) => {
                    register.apply(change, seen);
                    if register.is_empty() {
                        self.fields.remove(field.as_slice());
                    }
                }
                None => {
                    let mut register = Register::default();
                    register.apply(change, seen);
                    if !register.is_empty() {
                        self.fields.insert(field.clone(), register);
                    }
                }
            }
        }
    }

    /// Removes every element whose dot is in `context`.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let mut changed = false;
        self.fields.retain(|_, register| {
            changed |= register.remove_covered(context);
            !register.is_empty()
        });
        changed
    }

    /// Garbage collection (see [`Register::collect`]).
    pub fn collect(&mut self, stable: &VersionVector) -> usize {
        self.fields.values_mut().map(|r| r.collect(stable)).sum()
    }

    /// Checks invariants: no empty register is kept.
    pub fn validate(&self) -> Result<(), String> {
        match self.fields.iter().find(|(_, r)| r.is_empty()) {
            Some((field, _)) => Err(format!("hash keeps empty field {field:?}")),
            None => Ok(()),
        }
    }
}
