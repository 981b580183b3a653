//! Expiry as a CRDT: which deadline a key has when regions disagree.
//!
//! EXPIRE-family commands write a deadline entry and PERSIST writes a persist
//! entry; each replaces the entries it observed, so changes in causal order
//! simply follow each other. Concurrent entries stay side by side and resolve
//! as the design requires: any persist entry beats every deadline, otherwise
//! the latest deadline (the longer TTL) wins. The replica whose entry wins is
//! the one that expires the key and ships the delete; the others only hide the
//! key from reads once the deadline has passed.

use smallvec::SmallVec;

use crate::context::CausalContext;
use crate::dot::{Dot, ReplicaId, Tag};

/// What one expiry entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deadline {
    /// Expire at this Unix time in milliseconds.
    At(u64),
    /// Keep the key forever (PERSIST).
    Persist,
}

/// The expiry entries of one key (sorted by tag).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expiry {
    entries: SmallVec<[(Tag, Deadline); 1]>,
}

/// The change one write makes to a key's expiry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpiryDelta {
    /// Dots of the observed entries this write removes.
    pub removed: Vec<Dot>,
    /// The entry this write adds.
    pub entry: Option<(Tag, Deadline)>,
}

impl ExpiryDelta {
    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.removed.iter().copied().for_each(&mut f);
        if let Some((tag, _)) = self.entry {
            f(tag.dot);
        }
    }

    /// True if the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.entry.is_none()
    }
}

/// The effective expiry of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effective {
    /// The deadline in Unix milliseconds.
    pub deadline_ms: u64,
    /// The replica whose entry set it: the one that deletes the key.
    pub owner: ReplicaId,
}

impl Expiry {
    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries (sorted by tag).
    pub fn entries(&self) -> &[(Tag, Deadline)] {
        &self.entries
    }

    /// The deadline in force, if any: none when a persist entry is present,
    /// else the latest deadline (ties broken by tag).
    pub fn effective(&self) -> Option<Effective> {
        if self.entries.iter().any(|(_, d)| *d == Deadline::Persist) {
            return None;
        }
        self.entries
            .iter()
            .filter_map(|(tag, d)| match d {
                Deadline::At(ms) => Some((*ms, *tag)),
                Deadline::Persist => None,
            })
            .max()
            .map(|(deadline_ms, tag)| Effective { deadline_ms, owner: tag.dot.replica() })
    }

    /// The delta that replaces every observed entry with `deadline`.
    pub fn assign(&self, tag: Tag, deadline: Deadline) -> ExpiryDelta {
        ExpiryDelta { removed: self.entries.iter().map(|(t, _)| t.dot).collect(), entry: Some((tag, deadline)) }
    }

    /// The delta that removes every observed entry (SET without KEEPTTL, DEL).
    pub fn clear(&self) -> ExpiryDelta {
        ExpiryDelta { removed: self.entries.iter().map(|(t, _)| t.dot).collect(), entry: None }
    }

    /// Every live dot.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.entries.iter().for_each(|(t, _)| f(t.dot));
    }

    /// The greatest tag of any entry.
    pub fn max_tag(&self) -> Option<Tag> {
        self.entries.last().map(|(t, _)| *t)
    }

    /// Merges a delta; `seen` is the receiver's context before it.
    pub fn apply(&mut self, delta: &ExpiryDelta, seen: &CausalContext) {
        if !delta.removed.is_empty() {
            self.entries.retain(|(t, _)| !delta.removed.contains(&t.dot));
        }
        if let Some((tag, deadline)) = delta.entry
            && !seen.contains(tag.dot)
        {
            let at = self.entries.partition_point(|(t, _)| *t < tag);
            if self.entries.get(at).is_none_or(|(t, _)| *t != tag) {
                self.entries.insert(at, (tag, deadline));
            }
        }
    }

    /// Removes every entry whose dot is in `context`.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(t, _)| !context.contains(t.dot));
        before != self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(replica: u16, seq: u64) -> Tag {
        Tag::new(Dot::new(ReplicaId(replica), seq), seq)
    }

    fn merged(changes: &[ExpiryDelta]) -> Expiry {
        let mut expiry = Expiry::default();
        let mut seen = CausalContext::new();
        for change in changes {
            expiry.apply(change, &seen);
            change.for_each_dot(|d| seen.insert(d));
        }
        expiry
    }

    #[test]
    fn concurrent_ttls_keep_the_longer_and_persist_beats_all() {
        let base = Expiry::default();
        let long = base.assign(tag(1, 1), Deadline::At(100_000));
        let short = base.assign(tag(2, 1), Deadline::At(50_000));
        let effective = merged(&[short.clone(), long.clone()]).effective().unwrap();
        assert_eq!(effective, Effective { deadline_ms: 100_000, owner: ReplicaId(1) });
        assert_eq!(merged(&[long.clone(), short.clone()]), merged(&[short.clone(), long.clone()]));
        let persist = base.assign(tag(3, 1), Deadline::Persist);
        assert_eq!(merged(&[long, persist, short]).effective(), None);
    }

    #[test]
    fn causal_order_lets_a_shorter_ttl_replace_a_longer_one() {
        let first = Expiry::default().assign(tag(1, 1), Deadline::At(100_000));
        let state = merged(std::slice::from_ref(&first));
        let second = state.assign(tag(2, 1), Deadline::At(50_000));
        assert_eq!(merged(&[first, second]).effective().unwrap().deadline_ms, 50_000);
    }
}
