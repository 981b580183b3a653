//! The set: an add-wins observed-remove set without tombstones.
//!
//! Each member carries the tags of the adds no removal has observed (usually
//! one). SADD replaces the member's observed tags with a new one; SREM removes
//! exactly the tags it observed, so an add it did not see survives — add wins.
//! Removed members leave nothing behind: the keyspace's causal context
//! remembers their dots, which is what stops a late duplicate from bringing
//! them back (the dot-kernel / ORSWOT construction).

use hashbrown::HashMap;
use smallvec::SmallVec;

use crate::context::CausalContext;
use crate::dot::{Dot, Tag};
use crate::register::Dots;
use crate::short_bytes::ShortBytes;

/// Tags of one member (sorted).
pub type Tags = SmallVec<[Tag; 1]>;

/// An add-wins set of byte strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrSet {
    members: HashMap<ShortBytes, Tags>,
}

/// The change one write makes to a set. Inline for one member (SADD and
/// SREM of one member, the common case, allocate nothing for their delta).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SetDelta {
    /// Members added, each with the tag of this add.
    pub adds: SmallVec<[(ShortBytes, Tag); 1]>,
    /// Members' observed tags that this write removes.
    pub removes: SmallVec<[(ShortBytes, Dots); 1]>,
}

impl SetDelta {
    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.adds.iter().for_each(|(_, t)| f(t.dot));
        self.removes.iter().flat_map(|(_, dots)| dots).copied().for_each(f);
    }

    /// True if the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }
}

impl OrSet {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// True if `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.members.contains_key(member)
    }

    /// The members, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = &ShortBytes> {
        self.members.keys()
    }

    /// The greatest tag of any member (the set's last surviving write).
    pub fn max_tag(&self) -> Option<Tag> {
        self.members.values().filter_map(|tags| tags.last().copied()).max()
    }

    /// Every live dot.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.members.values().flatten().for_each(|t| f(t.dot));
    }

    /// Adds `member` with `tag` to `delta`, removing its observed tags.
    /// Returns true if the member was not present (SADD's count).
    pub fn add_to(&self, delta: &mut SetDelta, member: &[u8], tag: Tag) -> bool {
        let member = ShortBytes::new(member);
        let existing = self.members.get(&member);
        if let Some(tags) = existing {
            delta.removes.push((member.clone(), tags.iter().map(|t| t.dot).collect()));
        }
        delta.adds.push((member, tag));
        existing.is_none()
    }

    /// Adds the removal of `member` to `delta`. Returns true if it was present.
    pub fn remove_to(&self, delta: &mut SetDelta, member: &[u8]) -> bool {
        match self.members.get_key_value(member) {
            Some((member, tags)) => {
                delta.removes.push((member.clone(), tags.iter().map(|t| t.dot).collect()));
                true
            }
            None => false,
        }
    }

    /// The delta removing every member observed.
    pub fn clear(&self) -> SetDelta {
        let removes =
            self.members.iter().map(|(member, tags)| (member.clone(), tags.iter().map(|t| t.dot).collect())).collect();
        SetDelta { adds: SmallVec::new(), removes }
    }

    /// The state as a delta that rebuilds it from nothing, members in byte
    /// order (snapshots).
    pub fn as_delta(&self) -> SetDelta {
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        let adds = members.into_iter().flat_map(|(m, tags)| tags.iter().map(move |t| (m.clone(), *t))).collect();
        SetDelta { adds, removes: SmallVec::new() }
    }

    /// Merges a delta; `seen` is the receiver's context before it.
    pub fn apply(&mut self, delta: &SetDelta, seen: &CausalContext) {
        for (member, dots) in &delta.removes {
            if let Some(tags) = self.members.get_mut(member.as_slice()) {
                tags.retain(|t| !dots.contains(&t.dot));
                // A member re-added by the same delta (SADD of a present
                // member) keeps its entry: no remove and re-insert.
                let readded = || delta.adds.iter().any(|(added, tag)| added == member && !seen.contains(tag.dot));
                if tags.is_empty() && !readded() {
                    self.members.remove(member.as_slice());
                }
            }
        }
        for (member, tag) in &delta.adds {
            if seen.contains(tag.dot) {
                continue;
            }
            let tags = match self.members.get_mut(member.as_slice()) {
                Some(tags) => tags,
                None => self.members.entry(member.clone()).or_default(),
            };
            let at = tags.partition_point(|t| t < tag);
            if tags.get(at) != Some(tag) {
                tags.insert(at, *tag);
            }
        }
    }

    /// Removes every tag whose dot is in `context`; returns true if anything went.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let before = self.members.len();
        let mut changed = false;
        self.members.retain(|_, tags| {
            let len = tags.len();
            tags.retain(|t| !context.contains(t.dot));
            changed |= tags.len() != len;
            !tags.is_empty()
        });
        changed || before != self.members.len()
    }

    /// Checks invariants: no member without tags, tags sorted and distinct.
    pub fn validate(&self) -> Result<(), String> {
        for (member, tags) in &self.members {
            if tags.is_empty() || tags.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("member {member:?} has bad tags {tags:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::ReplicaId;

    fn tag(replica: u16, seq: u64) -> Tag {
        Tag::new(Dot::new(ReplicaId(replica), seq), seq)
    }

    #[test]
    fn remove_only_removes_what_it_observed() {
        let mut a = OrSet::default();
        let mut context = CausalContext::new();
        let mut add = SetDelta::default();
        for (i, m) in [b"a", b"b", b"c"].iter().enumerate() {
            a.add_to(&mut add, *m, tag(1, i as u64 + 1));
        }
        a.apply(&add, &context);
        add.for_each_dot(|d| context.insert(d));
        let mut b = a.clone();
        let mut b_context = context.clone();
        // Region 1 removes a and c; region 2 concurrently adds c again.
        let mut remove = SetDelta::default();
        a.remove_to(&mut remove, b"a");
        a.remove_to(&mut remove, b"c");
        let mut readd = SetDelta::default();
        b.add_to(&mut readd, b"c", tag(2, 1));
        for (state, first, second, ctx) in
            [(&mut a, &remove, &readd, &mut context), (&mut b, &readd, &remove, &mut b_context)]
        {
            state.apply(first, ctx);
            first.for_each_dot(|d| ctx.insert(d));
            state.apply(second, ctx);
            second.for_each_dot(|d| ctx.insert(d));
        }
        assert_eq!(a, b);
        let mut members: Vec<_> = a.members().map(|m| m.to_vec()).collect();
        members.sort();
        assert_eq!(members, vec![b"b".to_vec(), b"c".to_vec()]);
    }
}
