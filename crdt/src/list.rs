//! The list: a replicated growable array (RGA), the sequence CRDT behind
//! Redis lists.
//!
//! Every element is named by the [`Tag`] of the write that inserted it and is
//! inserted right after an *anchor* — the element it was written after, or
//! the head. A replica integrates an insert by placing it after its anchor
//! and then skipping every element with a greater tag; because a local insert
//! always takes a tag greater than its anchor's (see [`RgaList::push_back`]),
//! this puts concurrent inserts at one position in one order everywhere —
//! the greater tag first — whatever order they arrive in, and keeps each
//! write's run of values together. Removed elements stay as *tombstones*:
//! invisible, but still there as anchors for inserts written before the
//! removal was seen. Conflicts resolve as `docs/semantics.md` states:
//!
//! - Concurrent inserts at one position all survive, greater tag first.
//! - LREM/LTRIM/POP/DEL remove exactly the elements they observed; an element
//!   inserted concurrently survives.
//! - Concurrent POPs of one element may both return it: delivery to poppers is
//!   *at least once*, as in any active-active list.
//! - LSET is last-writer-wins per element by tag; a removal concurrent with an
//!   LSET wins (the element stays removed), because the removal names the
//!   element and not its value.
//!
//! **Order of arrival.** Deltas may arrive in any order, duplicated. An insert
//! whose anchor has not arrived, and an LSET or removal whose element has not
//! arrived, wait in a `pending` buffer keyed by the missing element and run
//! the moment it is integrated. An insert whose dot the receiver has already
//! seen, but which is not here, was removed before it arrived: it is
//! integrated as a tombstone, since others may have anchored on it.
//!
//! **Removals carry a dot.** Each removing write (POP, LREM, LTRIM, DEL) takes
//! one fresh dot, `by`, shared by all its [`ListOp::Remove`]s, and a tombstone
//! keeps the smallest `by` it knows. The dot is what makes garbage collection
//! safe: a tombstone may be dropped only when no insert anchored on it can
//! still be in flight, and such inserts are exactly those written before their
//! replica applied the removal. "The element's own dot is causally stable" is
//! not enough — a region may apply the element, push after it, and only then
//! see the pop — so [`RgaList::collect`] waits for the *removal's* dot.
//!
//! **Collection keeps the order.** Dropping a tombstone must not change where
//! a later insert lands, and the skip rule compares tags with the elements
//! after the anchor, tombstones included. So each element carries `run_min`,
//! the smallest tag among itself and the collected elements that stood right
//! before it; integration compares against `run_min`, which stops exactly
//! where it would have stopped inside the collected run.
//!
//! **Duplicates after collection.** The list remembers the join of the
//! vectors it collected with: an operation naming an element that is absent
//! but covered by it is a late duplicate and changes nothing. Operations
//! pending for an element a stable vector covers are dropped by the next
//! collection (they can only be duplicates, e.g. in a list the keyspace had
//! dropped and a duplicate re-created).
//!
//! **Flush.** FLUSHDB reaches a list as [`RgaList::remove_covered`]: covered
//! elements become tombstones without a removal dot, collected once their own
//! dot is stable — one narrow race short of safe, described there.
//!
//! **Bounds.** `pending` holds only operations whose element is still in
//! flight, so it is bounded by the deltas in flight; [`RgaList::pending_len`]
//! is its gauge. Deltas from outside should pass [`ListDelta::validate`].
//!
//! **Cost per element.** 72 bytes inside the deque (checked by a test): the
//! id tag (16), `run_min` (16), and either the value (a [`ShortBytes`], 24,
//! inline up to 22 bytes) with its LSET tag (16), or for a tombstone the
//! removal's dot (8). Values over 22 bytes add their length on the heap, and
//! the deque may hold up to twice its length in capacity. A tombstone costs
//! the same 72 bytes until it is collected. A list adds 96 bytes of fixed
//! state, plus the pending buffer (empty at rest) and, once it has collected
//! something, the boxed vector it collected up to.
//!
//! **Speed.** The list counts the tombstones at each end, and how many follow
//! the first live element and precede the last one, so push and pop at either
//! end are O(1) amortised also while pops leave tombstones behind: queues
//! (RPUSH + LPOP, LPUSH + RPOP) and stacks (LPUSH + LPOP). Known limits, until
//! the tombstones are collected: RPUSH right after RPOPs lands before the
//! tail's tombstones and shifts them, O(tombstones at the tail); LINDEX,
//! LRANGE, LSET, LINSERT and LREM walk the elements, tombstones included,
//! O(n); an insert, LSET or removal that names an element in the middle finds
//! it by a walk from both ends, O(n).

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::ops::Range;

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::context::{CausalContext, VersionVector};
use crate::dot::{Dot, Tag};
use crate::error::CommandError;
use crate::short_bytes::ShortBytes;

mod snapshot;
pub use snapshot::{ElementImage, ListImage, PendingImage};

/// Removals in one delta up to which each target is looked up on its own,
/// from the ends of the list (O(1) for pops); a delta with more (LTRIM, DEL,
/// LREM 0) matches all of them in one pass.
const REMOVES_LOOKUP_MAX: usize = 8;

/// One change to a list.
#[derive(Clone, Debug, PartialEq)]
pub enum ListOp {
    /// A new element right after `anchor` (`None`: at the head).
    Insert {
        /// The element's identity and time; greater than its anchor's.
        id: Tag,
        /// The element the insert was written after, `None` for the head.
        anchor: Option<Dot>,
        /// The value.
        value: ShortBytes,
    },
    /// The removal of element `id` (POP, LREM, LTRIM, DEL).
    Remove {
        /// The element removed.
        id: Dot,
        /// The removing write's own dot (one per write): collection waits
        /// until it is causally stable.
        by: Dot,
    },
    /// LSET: a new value for element `id`, last writer wins by `tag`.
    Assign {
        /// The element assigned.
        id: Dot,
        /// The assignment's tag.
        tag: Tag,
        /// The new value.
        value: ShortBytes,
    },
}

/// The change one write makes to a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListDelta {
    /// The operations, applied in order (inserts may anchor on earlier ones).
    pub ops: SmallVec<[ListOp; 1]>,
}

impl ListDelta {
    /// Every dot the delta adds or removes: inserted elements, removed
    /// elements and the removals' own dots, assignments' tags. (An LSET does
    /// not name its element: recording it as seen would make the element, if
    /// it has not arrived yet, look removed.)
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        for op in &self.ops {
            match op {
                ListOp::Insert { id, .. } => f(id.dot),
                ListOp::Remove { id, by } => {
                    f(*id);
                    f(*by);
                }
                ListOp::Assign { tag, .. } => f(tag.dot),
            }
        }
    }

    /// True if the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks a delta from outside (decoders): no element inserted twice, none
    /// anchored on itself. Local deltas always pass.
    pub fn validate(&self) -> Result<(), String> {
        let mut inserted: HashSet<Dot> = HashSet::new();
        for op in &self.ops {
            if let ListOp::Insert { id, anchor, .. } = op {
                if *anchor == Some(id.dot) {
                    return Err(format!("insert {id:?} anchored on itself"));
                }
                if !inserted.insert(id.dot) {
                    return Err(format!("element {id:?} inserted twice"));
                }
            }
        }
        Ok(())
    }
}

/// One element, visible or not.
#[derive(Clone, Debug, PartialEq)]
struct Element {
    /// Identity and time of the insert.
    id: Tag,
    /// The smallest tag among this element and the collected elements that
    /// stood right before it (`id` if none was collected there); never above `id`.
    run_min: Tag,
    body: Body,
}

#[derive(Clone, Debug, PartialEq)]
enum Body {
    Live {
        value: ShortBytes,
        /// Tag of the write that set the value: the insert, or the last LSET.
        value_tag: Tag,
    },
    Removed {
        /// The smallest removal dot known; `None` if only a flush removed it.
        by: Option<Dot>,
    },
}

impl Element {
    #[inline]
    fn is_live(&self) -> bool {
        matches!(self.body, Body::Live { .. })
    }

    #[inline]
    fn value(&self) -> Option<&ShortBytes> {
        match &self.body {
            Body::Live { value, .. } => Some(value),
            Body::Removed { .. } => None,
        }
    }

    /// A tombstone whose insert and removal are both causally stable.
    fn is_collectable(&self, stable: &VersionVector) -> bool {
        match self.body {
            Body::Live { .. } => false,
            Body::Removed { by } => stable.contains(self.id.dot) && by.is_none_or(|by| stable.contains(by)),
        }
    }
}

/// An insert waiting for its anchor.
#[derive(Clone, Debug, PartialEq)]
struct PendingInsert {
    id: Tag,
    value: ShortBytes,
    /// Its dot was already seen when it arrived (removed before arriving), or
    /// a flush covered it while it waited: it integrates as a tombstone.
    born_dead: bool,
}

/// Everything waiting for one missing element.
#[derive(Clone, Debug, Default, PartialEq)]
struct Waiting {
    /// Inserts anchored on it, sorted by tag.
    inserts: Vec<PendingInsert>,
    /// The greatest LSET of it (none once a removal is waiting: removal wins).
    assign: Option<(Tag, ShortBytes)>,
    /// The smallest removal dot of it.
    removed_by: Option<Dot>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.inserts.len() + usize::from(self.assign.is_some()) + usize::from(self.removed_by.is_some())
    }
}

/// A replicated list of byte strings (RGA).
///
/// Equality compares the replicated content — the elements with their
/// tombstones, and what is pending — not the local record of what was
/// collected.
#[derive(Clone, Debug, Default)]
pub struct RgaList {
    /// Elements in list order, tombstones included.
    elements: VecDeque<Element>,
    /// Number of live elements.
    visible: usize,
    /// Tombstones before the first live element (all elements if none is live).
    head_dead: usize,
    /// Tombstones after the last live element (all elements if none is live).
    tail_dead: usize,
    /// Tombstones between the first live element and the next one, when
    /// known: kept by LPUSH, so that LPUSH + LPOP stays O(1) with a long run
    /// of tombstones at the head.
    after_first: GapHint,
    /// Tombstones between the last live element and the one before it, when
    /// known (the mirror of `after_first`).
    before_last: GapHint,
    /// Operations waiting for the element named by the key to arrive.
    pending: BTreeMap<Dot, Waiting>,
    /// Every vector this list collected with (joined): an element whose dot it
    /// covers has been applied here, so an op naming it that finds nothing is
    /// a late duplicate of something already collected.
    floor: Option<Box<VersionVector>>,
}

/// The list with no elements, for writes to a key that holds none: no list
/// is built (and dropped) per write.
pub static EMPTY_LIST: RgaList = RgaList {
    elements: VecDeque::new(),
    visible: 0,
    head_dead: 0,
    tail_dead: 0,
    after_first: GapHint::UNKNOWN,
    before_last: GapHint::UNKNOWN,
    pending: BTreeMap::new(),
    floor: None,
};

impl PartialEq for RgaList {
    fn eq(&self, other: &Self) -> bool {
        self.elements == other.elements && self.pending == other.pending
    }
}

/// `tag` with its HLC raised, if needed, so that it is greater than `above`.
///
/// The keyspace gives every tag of one write the write's HLC time, and a
/// remote element may carry a time ahead of ours; raising by one logical tick
/// keeps the RGA invariant (an element is greater than its anchor) and makes a
/// local insert land exactly where Redis would put it. Tags stay unique: the
/// dot is unchanged.
fn raise(tag: Tag, above: Option<Tag>) -> Tag {
    match above {
        Some(above) if tag <= above => Tag::new(tag.dot, tag.hlc.max(above.hlc.saturating_add(1))),
        _ => tag,
    }
}

/// True if `element` is live but the replica with context `seen` has seen
/// it and neither holds it nor waits to place it live (`waiting`): it was
/// removed there (and collected, or its removal waits for it).
fn removed_elsewhere(element: &Element, seen: &CausalContext, waiting: &HashSet<Dot>) -> bool {
    element.is_live() && seen.contains(element.id.dot) && !waiting.contains(&element.id.dot)
}

/// Drops the elements `gone` picks, each dropped run's smallest tag moving
/// into the next kept element's `run_min` (a run dropped at the tail needs no
/// trace: an insert reaching the end stops there either way). Returns the
/// number dropped; the list's counts are the caller's to redo.
fn drop_elements(elements: &mut VecDeque<Element>, mut gone: impl FnMut(&Element) -> bool) -> usize {
    let before = elements.len();
    let mut carried: Option<Tag> = None;
    elements.retain_mut(|element| {
        if gone(element) {
            carried = Some(carried.map_or(element.run_min, |c| c.min(element.run_min)));
            false
        } else {
            if let Some(c) = carried.take() {
                element.run_min = element.run_min.min(c);
            }
            true
        }
    });
    before - elements.len()
}

/// [`drop_elements`] for a list whose tombstones are all among its first
/// `head` and last `tail` elements, with a live element between the two runs:
/// only the runs are walked. The result is the same — a dropped run's
/// smallest tag moves into the next kept element, which for the head run's
/// last dropped elements is the first live one, and nothing carries into the
/// tail run (the element before it is live).
fn drop_end_elements(
    elements: &mut VecDeque<Element>,
    head: usize,
    tail: usize,
    mut gone: impl FnMut(&Element) -> bool,
) -> usize {
    debug_assert!(head + tail < elements.len(), "the runs must leave a live element between them");
    let before = elements.len();
    // Within a run, the kept elements move to its front, in order.
    let mut compact = |elements: &mut VecDeque<Element>, run: core::ops::Range<usize>| {
        let mut kept = run.start;
        let mut carried: Option<Tag> = None;
        for i in run {
            if gone(&elements[i]) {
                let min = elements[i].run_min;
                carried = Some(carried.map_or(min, |c| c.min(min)));
            } else {
                if let Some(c) = carried.take() {
                    elements[i].run_min = elements[i].run_min.min(c);
                }
                elements.swap(kept, i);
                kept += 1;
            }
        }
        (kept, carried)
    };
    let len = elements.len();
    let (kept, _) = compact(elements, len - tail..len);
    elements.truncate(kept);
    let (kept, carried) = compact(elements, 0..head);
    if let Some(c) = carried {
        let first_live = &mut elements[head];
        first_live.run_min = first_live.run_min.min(c);
    }
    // Removing from the front moves the few kept tombstones, not the list.
    elements.drain(kept..head);
    before - elements.len()
}

/// One element as both sides of a join hold it: a removal wins (the smaller
/// removal dot), else the later value; the smaller `run_min`.
fn join_element(ours: &Element, theirs: &Element) -> Element {
    let body = match (&ours.body, &theirs.body) {
        (Body::Live { value_tag: mine, .. }, Body::Live { value_tag: other, .. }) => {
            if other > mine {
                theirs.body.clone()
            } else {
                ours.body.clone()
            }
        }
        (Body::Removed { by: a }, Body::Removed { by: b }) => {
            Body::Removed { by: a.zip(*b).map(|(a, b)| a.min(b)).or(*a).or(*b) }
        }
        (Body::Removed { by }, Body::Live { .. }) | (Body::Live { .. }, Body::Removed { by }) => {
            Body::Removed { by: *by }
        }
    };
    Element { id: ours.id, run_min: ours.run_min.min(theirs.run_min), body }
}

/// Redis's index rules for LRANGE and LTRIM: negative indexes count from the
/// tail, the start is clamped to 0 and the stop to the last element. `None`
/// if the range is empty.
fn normalize_range(start: i64, stop: i64, len: usize) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { len + start } else { start }.max(0);
    let stop = if stop < 0 { len + stop } else { stop };
    if start > stop || start >= len {
        return None;
    }
    let stop = stop.min(len - 1);
    Some((start as usize, stop as usize))
}

/// A count of tombstones that may be unknown (the default): a cache, not
/// state, recomputed by a scan when needed.
#[derive(Clone, Copy, Debug, Default)]
struct GapHint(Option<NonZeroU32>);

impl GapHint {
    const UNKNOWN: GapHint = GapHint(None);

    fn known(count: usize) -> GapHint {
        GapHint(u32::try_from(count + 1).ok().and_then(NonZeroU32::new))
    }

    fn get(self) -> Option<usize> {
        self.0.map(|n| n.get() as usize - 1)
    }
}

impl RgaList {
    // ----- reads -----

    /// Number of visible elements (LLEN).
    pub fn len(&self) -> usize {
        self.visible
    }

    /// True if no element is visible (the key does not exist for clients).
    pub fn is_empty(&self) -> bool {
        self.visible == 0
    }

    /// True if nothing at all is left: no element, no tombstone, nothing
    /// pending. Only then may the keyspace drop the value.
    pub fn can_drop(&self) -> bool {
        self.elements.is_empty() && self.pending.is_empty()
    }

    /// Number of tombstones held (a gauge).
    pub fn tombstones(&self) -> usize {
        self.elements.len() - self.visible
    }

    /// Number of operations waiting for an element that has not arrived (a
    /// gauge: it stays near zero when each origin's deltas arrive in order).
    pub fn pending_len(&self) -> usize {
        self.pending.values().map(Waiting::len).sum()
    }

    /// The visible values, head to tail.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &ShortBytes> + '_ {
        self.live_indexes().map(|i| self.live_value(i))
    }

    /// LINDEX: the value at `index` (negative counts from the tail).
    /// O(|index| + tombstones passed), from the end the index counts from.
    pub fn get(&self, index: i64) -> Option<&ShortBytes> {
        self.locate(index).map(|i| self.live_value(i))
    }

    /// LRANGE: the values from `start` to `stop` inclusive, Redis's index
    /// rules. O(start + count + tombstones passed).
    pub fn range(&self, start: i64, stop: i64) -> impl Iterator<Item = &ShortBytes> + '_ {
        let (skip, take) = normalize_range(start, stop, self.visible).map_or((0, 0), |(s, e)| (s, e - s + 1));
        self.iter().skip(skip).take(take)
    }

    /// The index of the first element equal to `value` (LPOS without options).
    pub fn position(&self, value: &[u8]) -> Option<usize> {
        self.iter().position(|v| v.as_slice() == value)
    }

    /// The greatest tag of any visible element or of its value (the list's
    /// newest surviving write). O(n).
    pub fn max_tag(&self) -> Option<Tag> {
        self.live_indexes()
            .filter_map(|i| match self.elements[i].body {
                Body::Live { value_tag, .. } => Some(value_tag),
                Body::Removed { .. } => None,
            })
            .max()
    }

    /// Every live dot: the visible elements and their LSET tags, and the
    /// inserts waiting for their anchor that will arrive live (an element
    /// not placed yet is still held).
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        for i in self.live_indexes() {
            let element = &self.elements[i];
            if let Body::Live { value_tag, .. } = element.body {
                f(element.id.dot);
                if value_tag != element.id {
                    f(value_tag.dot);
                }
            }
        }
        for insert in self.pending.values().flat_map(|waiting| &waiting.inserts) {
            if self.waits_live(insert) {
                f(insert.id.dot);
            }
        }
    }

    /// True if a parked insert will integrate as a live element (not born
    /// dead, and no removal of it waiting).
    fn waits_live(&self, insert: &PendingInsert) -> bool {
        !insert.born_dead && self.pending.get(&insert.id.dot).is_none_or(|waiting| waiting.removed_by.is_none())
    }

    // ----- local writes: build the delta, change nothing -----
    //
    // The keyspace applies each delta right after building it. `fresh` hands
    // out new tags; it is called only for dots the delta will carry, so a
    // write that changes nothing allocates nothing.

    /// LPUSH: each value in turn goes to the head, so `a b c` gives `c b a`.
    pub fn push_front<V: AsRef<[u8]>>(
        &self,
        values: impl IntoIterator<Item = V>,
        fresh: &mut impl FnMut() -> Tag,
    ) -> ListDelta {
        let mut ops = SmallVec::new();
        // Landing at index 0 needs a tag above the first element's run.
        let mut above = self.elements.front().map(|e| e.run_min);
        for value in values {
            let id = raise(fresh(), above);
            ops.push(ListOp::Insert { id, anchor: None, value: ShortBytes::new(value.as_ref()) });
            above = Some(id);
        }
        ListDelta { ops }
    }

    /// RPUSH: the values go to the tail in order.
    ///
    /// Each value is anchored on the last visible element (or on the value
    /// before it), never on a tombstone, which is what lets collection drop
    /// tombstones. Its tag is raised above its anchor's: the RGA invariant
    /// (an element is greater than its anchor) is what makes the skip rule
    /// pass over whole runs of later inserts, so that concurrent writes
    /// neither interleave nor land in different orders on different replicas.
    pub fn push_back<V: AsRef<[u8]>>(
        &self,
        values: impl IntoIterator<Item = V>,
        fresh: &mut impl FnMut() -> Tag,
    ) -> ListDelta {
        let mut anchor = self.last_live().map(|i| self.elements[i].id);
        let mut ops = SmallVec::new();
        for value in values {
            let id = raise(fresh(), anchor);
            ops.push(ListOp::Insert { id, anchor: anchor.map(|a| a.dot), value: ShortBytes::new(value.as_ref()) });
            anchor = Some(id);
        }
        ListDelta { ops }
    }

    /// LPOP with a count: up to `count` values from the head, and the delta.
    pub fn pop_front(&self, count: usize, fresh: &mut impl FnMut() -> Tag) -> (Vec<ShortBytes>, ListDelta) {
        self.pop(self.live_indexes(), count, fresh)
    }

    /// RPOP with a count: up to `count` values from the tail (tail first).
    pub fn pop_back(&self, count: usize, fresh: &mut impl FnMut() -> Tag) -> (Vec<ShortBytes>, ListDelta) {
        self.pop(self.live_indexes().rev(), count, fresh)
    }

    fn pop(
        &self,
        live: impl Iterator<Item = usize>,
        count: usize,
        fresh: &mut impl FnMut() -> Tag,
    ) -> (Vec<ShortBytes>, ListDelta) {
        if count == 0 || self.visible == 0 {
            return (Vec::new(), ListDelta::default());
        }
        let by = fresh().dot;
        let taken = count.min(self.visible);
        let mut values = Vec::with_capacity(taken);
        let mut ops = SmallVec::with_capacity(taken);
        for i in live.take(taken) {
            values.push(self.live_value(i).clone());
            ops.push(ListOp::Remove { id: self.elements[i].id.dot, by });
        }
        (values, ListDelta { ops })
    }

    /// LINSERT BEFORE: `None` if `pivot` is not in the list.
    pub fn insert_before(&self, pivot: &[u8], value: &[u8], fresh: &mut impl FnMut() -> Tag) -> Option<ListDelta> {
        self.insert_at_pivot(pivot, value, false, fresh)
    }

    /// LINSERT AFTER: `None` if `pivot` is not in the list.
    pub fn insert_after(&self, pivot: &[u8], value: &[u8], fresh: &mut impl FnMut() -> Tag) -> Option<ListDelta> {
        self.insert_at_pivot(pivot, value, true, fresh)
    }

    fn insert_at_pivot(
        &self,
        pivot: &[u8],
        value: &[u8],
        after: bool,
        fresh: &mut impl FnMut() -> Tag,
    ) -> Option<ListDelta> {
        let at = self.live_indexes().find(|&i| self.live_value(i).as_slice() == pivot)?;
        // Before the pivot means after the previous visible element (or at
        // the head): the anchor is always a visible element.
        let anchor_index = if after { Some(at) } else { self.previous_live(at) };
        let anchor = anchor_index.map(|i| self.elements[i].id);
        // Above the anchor (the RGA invariant) and above what follows it, so
        // that the new element lands right there rather than after a newer
        // element a replica with a faster clock put next to the anchor.
        let next = self.elements.get(anchor_index.map_or(0, |i| i + 1)).map(|e| e.run_min);
        let id = raise(fresh(), anchor.max(next));
        let op = ListOp::Insert { id, anchor: anchor.map(|a| a.dot), value: ShortBytes::new(value) };
        Some(ListDelta { ops: smallvec::smallvec![op] })
    }

    /// LSET. The tag is raised above the element's current value tag, so the
    /// local write wins locally even against a remote clock running ahead.
    pub fn set(&self, index: i64, value: &[u8], fresh: &mut impl FnMut() -> Tag) -> Result<ListDelta, CommandError> {
        let i = self.locate(index).ok_or(CommandError::IndexOutOfRange)?;
        let element = &self.elements[i];
        let Body::Live { value_tag, .. } = element.body else {
            unreachable!("locate returns live elements only");
        };
        let tag = raise(fresh(), Some(value_tag));
        Ok(ListDelta {
            ops: smallvec::smallvec![ListOp::Assign { id: element.id.dot, tag, value: ShortBytes::new(value) }],
        })
    }

    /// LREM: removes up to |count| elements equal to `value`, from the head if
    /// `count > 0`, from the tail if `count < 0`, all if 0. Returns how many.
    pub fn remove(&self, count: i64, value: &[u8], fresh: &mut impl FnMut() -> Tag) -> (usize, ListDelta) {
        let limit = if count == 0 { usize::MAX } else { usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX) };
        let matches = |i: &usize| self.live_value(*i).as_slice() == value;
        let targets: Vec<usize> = if count >= 0 {
            self.live_indexes().filter(matches).take(limit).collect()
        } else {
            self.live_indexes().rev().filter(matches).take(limit).collect()
        };
        let delta = self.removal(targets.iter().copied(), fresh);
        (targets.len(), delta)
    }

    /// LTRIM: removes every visible element outside `start..=stop` (Redis's
    /// index rules; an empty range removes everything).
    pub fn trim(&self, start: i64, stop: i64, fresh: &mut impl FnMut() -> Tag) -> ListDelta {
        let keep = normalize_range(start, stop, self.visible).map_or(0..0, |(s, e)| s..e + 1);
        let outside = self.live_indexes().enumerate().filter(|(rank, _)| !keep.contains(rank)).map(|(_, i)| i);
        self.removal(outside, fresh)
    }

    /// DEL (and any write that replaces the list): removes every visible
    /// element. Empty if there is none.
    pub fn clear(&self, fresh: &mut impl FnMut() -> Tag) -> ListDelta {
        self.removal(self.live_indexes(), fresh)
    }

    /// The removal of the elements at `indexes`, with one fresh dot if any.
    fn removal(&self, indexes: impl Iterator<Item = usize>, fresh: &mut impl FnMut() -> Tag) -> ListDelta {
        let mut indexes = indexes.peekable();
        if indexes.peek().is_none() {
            return ListDelta::default();
        }
        let by = fresh().dot;
        ListDelta { ops: indexes.map(|i| ListOp::Remove { id: self.elements[i].id.dot, by }).collect() }
    }

    // ----- merging -----

    /// Merges a delta. `seen` is the receiver's context before this delta;
    /// the keyspace records the delta's dots after the call.
    pub fn apply(&mut self, delta: &ListDelta, seen: &CausalContext) {
        // Removals commute with everything else in a delta, so they run last,
        // together (one pass for a large LTRIM or DEL).
        let mut removes: SmallVec<[(Dot, Dot); 4]> = SmallVec::new();
        for op in &delta.ops {
            match op {
                ListOp::Insert { id, anchor, value } => self.apply_insert(*id, *anchor, value, seen),
                ListOp::Assign { id, tag, value } => self.apply_assign(*id, *tag, value),
                ListOp::Remove { id, by } => removes.push((*id, *by)),
            }
        }
        if !removes.is_empty() {
            self.apply_removes(&removes);
        }
    }

    fn apply_insert(&mut self, id: Tag, anchor: Option<Dot>, value: &ShortBytes, seen: &CausalContext) {
        // A dot not seen before names a new element: nothing to look up. A
        // seen dot whose removal is waiting here is not born dead: the
        // waiting removal marks it when it lands, as it would had the insert
        // come first (so the parked state does not depend on the order).
        let born_dead =
            seen.contains(id.dot) && self.pending.get(&id.dot).is_none_or(|waiting| waiting.removed_by.is_none());
        if born_dead && (self.floor_contains(id.dot) || self.find(id.dot).is_some()) {
            return; // A duplicate.
        }
        let insert = PendingInsert { id, value: value.clone(), born_dead };
        let anchor_index = match anchor {
            None => None,
            Some(anchor) => match self.find(anchor) {
                Some(i) => Some(i),
                None => {
                    debug_assert!(
                        !self.floor_contains(anchor),
                        "insert {id:?} anchored on collected {anchor:?}: collection ran before a causally stable vector"
                    );
                    self.park_insert(anchor, insert);
                    return;
                }
            },
        };
        self.integrate_all(anchor_index, insert);
    }

    /// Queues an insert until its anchor arrives (a duplicate is dropped).
    fn park_insert(&mut self, anchor: Dot, insert: PendingInsert) {
        let waiting = self.pending.entry(anchor).or_default();
        if let Err(at) = waiting.inserts.binary_search_by(|p| p.id.cmp(&insert.id)) {
            waiting.inserts.insert(at, insert);
        }
    }

    /// Integrates an insert, then everything that was waiting for it, and for
    /// those, depth first.
    ///
    /// Indexes on the stack stay valid: every integration lands after its
    /// anchor, and the anchors still on the stack precede everything inserted
    /// after they were pushed.
    fn integrate_all(&mut self, anchor_index: Option<usize>, first: PendingInsert) {
        let mut stack: SmallVec<[(Option<usize>, PendingInsert); 2]> = SmallVec::new();
        stack.push((anchor_index, first));
        while let Some((anchor_index, insert)) = stack.pop() {
            let dot = insert.id.dot;
            let at = self.integrate(anchor_index, insert);
            if let Some(waiting) = self.pending.remove(&dot) {
                if let Some((tag, value)) = waiting.assign {
                    self.assign_at(at, tag, value);
                }
                if let Some(by) = waiting.removed_by {
                    self.mark_removed(at, Some(by));
                }
                stack.extend(waiting.inserts.into_iter().map(|child| (Some(at), child)));
            }
        }
    }

    /// The RGA rule: after the anchor, skip every element whose run holds only
    /// greater tags. Returns the new element's index.
    fn integrate(&mut self, anchor_index: Option<usize>, insert: PendingInsert) -> usize {
        let mut at = anchor_index.map_or(0, |i| i + 1);
        while at < self.elements.len() && self.elements[at].run_min > insert.id {
            at += 1;
        }
        let body = if insert.born_dead {
            Body::Removed { by: None }
        } else {
            Body::Live { value: insert.value, value_tag: insert.id }
        };
        self.insert_element(at, Element { id: insert.id, run_min: insert.id, body });
        at
    }

    fn apply_assign(&mut self, target: Dot, tag: Tag, value: &ShortBytes) {
        if let Some(i) = self.find(target) {
            self.assign_at(i, tag, value.clone());
            return;
        }
        if self.floor_contains(target) {
            return; // The element was collected: a late duplicate.
        }
        let waiting = self.pending.entry(target).or_default();
        if waiting.removed_by.is_none() && waiting.assign.as_ref().is_none_or(|(t, _)| *t < tag) {
            waiting.assign = Some((tag, value.clone()));
        }
    }

    /// Last writer wins; a tombstone ignores assignments.
    fn assign_at(&mut self, i: usize, tag: Tag, new_value: ShortBytes) {
        if let Body::Live { value, value_tag } = &mut self.elements[i].body
            && tag > *value_tag
        {
            *value = new_value;
            *value_tag = tag;
        }
    }

    fn apply_removes(&mut self, removes: &[(Dot, Dot)]) {
        if removes.len() <= REMOVES_LOOKUP_MAX {
            for &(target, by) in removes {
                match self.find(target) {
                    Some(i) => self.mark_removed(i, Some(by)),
                    None => self.remove_absent(target, by),
                }
            }
            return;
        }
        let mut wanted: HashMap<Dot, Dot> = HashMap::with_capacity(removes.len());
        for &(target, by) in removes {
            wanted.entry(target).and_modify(|b| *b = (*b).min(by)).or_insert(by);
        }
        for i in 0..self.elements.len() {
            if let Some(by) = wanted.remove(&self.elements[i].id.dot) {
                self.mark_removed(i, Some(by));
                if wanted.is_empty() {
                    break;
                }
            }
        }
        for (target, by) in wanted {
            self.remove_absent(target, by);
        }
    }

    /// A removal of an element not here: it has not arrived yet (the removal
    /// waits for it, so the tombstone learns its removal dot), or it was
    /// collected (a late duplicate).
    fn remove_absent(&mut self, target: Dot, by: Dot) {
        if self.floor_contains(target) {
            return;
        }
        let waiting = self.pending.entry(target).or_default();
        waiting.removed_by = Some(waiting.removed_by.map_or(by, |b| b.min(by)));
        waiting.assign = None;
    }

    /// Removes every element whose dot is in `context` (FLUSHDB/FLUSHALL),
    /// leaving tombstones: inserts written concurrently may anchor on them.
    /// Returns true if a visible element went.
    ///
    /// A flush names no dot of its own, so its tombstones are collected once
    /// their own dot is stable. That is one race short of safe: an insert
    /// anchored on such a tombstone, written after the element was stable but
    /// before its region saw the flush, and arriving after a collection,
    /// waits forever. A dot for the flush, recorded as the removal dot of the
    /// tombstones it makes, would close it.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let mut removed = 0;
        for element in self.elements.iter_mut() {
            if element.is_live() && context.contains(element.id.dot) {
                element.body = Body::Removed { by: None };
                removed += 1;
            }
        }
        for waiting in self.pending.values_mut() {
            for insert in &mut waiting.inserts {
                insert.born_dead |= context.contains(insert.id.dot);
            }
        }
        if removed > 0 {
            self.visible -= removed;
            self.recount_ends();
        }
        removed > 0
    }

    // ----- full syncs -----

    /// Joins another replica's whole list into this one (a full sync from a
    /// peer whose log no longer covers what this replica missed). `seen` is
    /// this replica's context, `their_seen` the other's. Afterwards the list
    /// reads as if every delta the other had applied had been delivered here.
    ///
    /// RGA's order is the same everywhere, so the elements both lists hold
    /// stand in the same order in both; between two of them, each side may
    /// hold elements the other lacks. Theirs are placed as delivering their
    /// inserts would place them: each right after the element before it in
    /// their list, then past our elements whose run holds only greater tags.
    /// That is the integration rule started from a later point than the
    /// insert's anchor — every element between the anchor and the insert's
    /// place is passed over by the rule, so starting at any of them gives
    /// the same place, and the element before it in their list is one of
    /// them (or the anchor). An element of theirs this list has collected is
    /// a stable tombstone and stays collected; an element live on one side
    /// that the other has seen and neither holds nor waits to place was
    /// removed there and becomes a tombstone. Elements both hold join: a
    /// removal wins, else the later LSET; the smaller `run_min` (the other
    /// side collected a run before it). Operations waiting on either side
    /// then run against the joined elements, or keep waiting. Before any of
    /// that, our elements that their floor says they collected are collected
    /// here too (D97), and the joined list keeps both floors.
    ///
    /// Errors, changing nothing, if the elements both hold stand in
    /// different orders: the other is not a replica of this list.
    pub fn join(&mut self, seen: &CausalContext, theirs: &RgaList, their_seen: &CausalContext) -> Result<(), String> {
        let their_index: HashMap<Dot, usize> = theirs.elements.iter().enumerate().map(|(i, e)| (e.id.dot, i)).collect();
        let their_waiting = theirs.live_waiting_inserts();
        // Ours that they collected (their floor covers it, and they neither
        // hold it nor wait to place it) is collected here too before anything
        // is placed: where it stood is folded into their runs, not ours.
        let kept_here;
        let ours = match theirs.floor.as_deref() {
            Some(their_floor) => {
                let parked: HashSet<Dot> =
                    theirs.pending.values().flat_map(|w| &w.inserts).map(|insert| insert.id.dot).collect();
                let collected_there = |element: &Element| {
                    let dot = element.id.dot;
                    their_floor.contains(dot) && !their_index.contains_key(&dot) && !parked.contains(&dot)
                };
                if self.elements.iter().any(collected_there) {
                    let mut elements = self.elements.clone();
                    drop_elements(&mut elements, collected_there);
                    kept_here = elements;
                    &kept_here
                } else {
                    &self.elements
                }
            }
            None => &self.elements,
        };
        let our_waiting = self.live_waiting_inserts();
        let mut merged: Vec<Element> = Vec::with_capacity(ours.len().max(theirs.elements.len()));
        // Our elements since the last element both hold.
        let mut ours_only: Vec<Element> = Vec::new();
        let mut next_theirs = 0;
        let place = |merged: &mut Vec<Element>,
                     ours_only: &mut Vec<Element>,
                     their_run: std::collections::vec_deque::Iter<'_, Element>| {
            let mut ours = ours_only.drain(..).peekable();
            for element in their_run {
                if self.floor_contains(element.id.dot) {
                    continue; // Collected here: a stable tombstone.
                }
                let mut element = element.clone();
                if removed_elsewhere(&element, seen, &our_waiting) {
                    element.body = Body::Removed { by: None };
                }
                while let Some(mine) = ours.next_if(|mine| mine.run_min > element.id) {
                    merged.push(mine);
                }
                merged.push(element);
            }
            merged.extend(ours);
        };
        for element in ours {
            let Some(&at) = their_index.get(&element.id.dot) else {
                let mut element = element.clone();
                if removed_elsewhere(&element, their_seen, &their_waiting) {
                    element.body = Body::Removed { by: None };
                }
                ours_only.push(element);
                continue;
            };
            if at < next_theirs {
                return Err(format!("element {:?} stands in a different order in the other list", element.id));
            }
            place(&mut merged, &mut ours_only, theirs.elements.range(next_theirs..at));
            merged.push(join_element(element, &theirs.elements[at]));
            next_theirs = at + 1;
        }
        place(&mut merged, &mut ours_only, theirs.elements.range(next_theirs..));

        let our_pending = std::mem::take(&mut self.pending);
        self.elements = merged.into();
        self.recount();
        if let Some(their_floor) = &theirs.floor {
            self.floor.get_or_insert_with(Default::default).join(their_floor);
        }
        for (target, waiting) in our_pending.into_iter().chain(theirs.pending.clone()) {
            self.replay(target, waiting);
        }
        Ok(())
    }

    /// The ids of the parked inserts that will integrate live.
    fn live_waiting_inserts(&self) -> HashSet<Dot> {
        let inserts = self.pending.values().flat_map(|waiting| &waiting.inserts);
        inserts.filter(|insert| self.waits_live(insert)).map(|insert| insert.id.dot).collect()
    }

    /// Runs operations that waited for `target` in a list being joined: now,
    /// if it is here, else they wait here.
    fn replay(&mut self, target: Dot, waiting: Waiting) {
        if self.floor_contains(target) {
            return; // Late duplicates of something collected here.
        }
        for insert in waiting.inserts {
            if self.floor_contains(insert.id.dot) || self.find(insert.id.dot).is_some() {
                continue; // Joined already.
            }
            match self.find(target) {
                Some(i) => self.integrate_all(Some(i), insert),
                None => {
                    // Parked on both sides: born dead if either says so (a
                    // flush there covered it while it waited).
                    let parked = self.pending.entry(target).or_default();
                    match parked.inserts.binary_search_by(|p| p.id.cmp(&insert.id)) {
                        Ok(at) => parked.inserts[at].born_dead |= insert.born_dead,
                        Err(at) => parked.inserts.insert(at, insert),
                    }
                }
            }
        }
        if let Some((tag, value)) = waiting.assign {
            self.apply_assign(target, tag, &value);
        }
        if let Some(by) = waiting.removed_by {
            self.apply_removes(&[(target, by)]);
        }
    }

    /// Garbage collection with a causally stable vector (every write issued
    /// before any region applied a dot it covers has been applied everywhere;
    /// see `gc.rs`).
    ///
    /// - Drops each tombstone whose insert and removal dots it covers: every
    ///   insert that could anchor on it, and every removal or LSET naming it,
    ///   has then been applied here. The smallest tag of a dropped run moves
    ///   into the next kept element's `run_min`, so later inserts land where
    ///   they would have landed.
    /// - Drops pending operations that wait for an element it covers: that
    ///   element was applied here and collected, so they are late duplicates
    ///   (this also cleans a list the keyspace dropped and a duplicate
    ///   re-created).
    ///
    /// Every replica that collects the same state with the same vector reaches
    /// the same state. Returns the number of tombstones and operations dropped.
    pub fn collect(&mut self, stable: &VersionVector) -> usize {
        let mut collected = 0;
        if !self.pending.is_empty() {
            self.pending.retain(|target, waiting| {
                let keep = !stable.contains(*target);
                collected += if keep { 0 } else { waiting.len() };
                keep
            });
        }
        if self.visible == self.elements.len() {
            return collected;
        }
        let tombstones = self.elements.len() - self.visible;
        let dropped = if self.visible > 0 && self.head_dead + self.tail_dead == tombstones {
            // Every tombstone is at an end (pops, LTRIM): only the ends are
            // walked, so a long queue is collected in time proportional to
            // what was popped, not to its length.
            drop_end_elements(&mut self.elements, self.head_dead, self.tail_dead, |element| {
                element.is_collectable(stable)
            })
        } else {
            drop_elements(&mut self.elements, |element| element.is_collectable(stable))
        };
        if dropped > 0 {
            self.floor.get_or_insert_with(Default::default).join(stable);
            self.recount_ends();
        }
        collected + dropped
    }

    /// Checks the invariants (tests and debug builds): the counts and hints,
    /// unique ids, `run_min` never above the id, value tags not below it, and
    /// pending entries waiting only for elements that are not here.
    pub fn validate(&self) -> Result<(), String> {
        let live = self.elements.iter().filter(|e| e.is_live()).count();
        if live != self.visible {
            return Err(format!("visible count {} but {live} live elements", self.visible));
        }
        let head = self.elements.iter().take_while(|e| !e.is_live()).count();
        let tail = self.elements.iter().rev().take_while(|e| !e.is_live()).count();
        if (head, tail) != (self.head_dead, self.tail_dead) {
            return Err(format!("end tombstones {head}/{tail} recorded as {}/{}", self.head_dead, self.tail_dead));
        }
        if self.visible > 1 {
            let (hint_first, hint_last) = (self.after_first.get(), self.before_last.get());
            let (after_first, before_last) = (self.scan_after_first(), self.scan_before_last());
            if hint_first.is_some_and(|g| g != after_first) || hint_last.is_some_and(|g| g != before_last) {
                return Err(format!(
                    "gap hints {hint_first:?}/{hint_last:?} but {after_first}/{before_last} tombstones next to the ends"
                ));
            }
        }
        let mut ids: HashSet<Dot> = HashSet::with_capacity(self.elements.len());
        for element in &self.elements {
            if !ids.insert(element.id.dot) {
                return Err(format!("element {:?} held twice", element.id));
            }
            if element.run_min > element.id {
                return Err(format!("element {:?} has run_min {:?} above its id", element.id, element.run_min));
            }
            if let Body::Live { value_tag, .. } = element.body
                && value_tag < element.id
            {
                return Err(format!("element {:?} has value tag {value_tag:?} below its id", element.id));
            }
        }
        for (target, waiting) in &self.pending {
            if waiting.len() == 0 {
                return Err(format!("empty pending entry for {target:?}"));
            }
            if ids.contains(target) {
                return Err(format!("ops wait for {target:?}, which is here"));
            }
            if self.floor_contains(*target) {
                return Err(format!("ops wait for {target:?}, which was collected"));
            }
            if waiting.inserts.windows(2).any(|w| w[0].id >= w[1].id) {
                return Err(format!("pending inserts after {target:?} not sorted"));
            }
            if let Some(insert) = waiting.inserts.iter().find(|p| ids.contains(&p.id.dot)) {
                return Err(format!("pending insert {:?} is also integrated", insert.id));
            }
            if waiting.removed_by.is_some() && waiting.assign.is_some() {
                return Err(format!("an assignment waits for {target:?} after its removal"));
            }
        }
        Ok(())
    }

    // ----- internals -----

    /// The index range holding every live element.
    #[inline]
    fn window(&self) -> Range<usize> {
        if self.visible == 0 { 0..0 } else { self.head_dead..self.elements.len() - self.tail_dead }
    }

    /// The indexes of the live elements, in order.
    #[inline]
    fn live_indexes(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.window().filter(|&i| self.elements[i].is_live())
    }

    #[inline]
    fn live_value(&self, i: usize) -> &ShortBytes {
        self.elements[i].value().expect("a live element")
    }

    #[inline]
    fn last_live(&self) -> Option<usize> {
        (self.visible > 0).then(|| self.elements.len() - 1 - self.tail_dead)
    }

    /// The live element before index `i`, if any.
    fn previous_live(&self, i: usize) -> Option<usize> {
        (self.head_dead..i).rev().find(|&j| self.elements[j].is_live())
    }

    /// The element index of the visible element at `index` (negative from the tail).
    fn locate(&self, index: i64) -> Option<usize> {
        if index >= 0 {
            let n = usize::try_from(index).ok().filter(|&n| n < self.visible)?;
            self.live_indexes().nth(n)
        } else {
            let n = usize::try_from(index.unsigned_abs() - 1).ok().filter(|&n| n < self.visible)?;
            self.live_indexes().nth_back(n)
        }
    }

    /// The index of element `dot`, searched from both edges of the live
    /// window inwards (pops and pushes name elements there), then among the
    /// tombstones at the ends, from the window outwards.
    fn find(&self, dot: Dot) -> Option<usize> {
        let window = self.window();
        let (mut low, mut high) = (window.start, window.end);
        while low < high {
            if self.elements[low].id.dot == dot {
                return Some(low);
            }
            low += 1;
            if low < high {
                high -= 1;
                if self.elements[high].id.dot == dot {
                    return Some(high);
                }
            }
        }
        (0..window.start).rev().chain(window.end..self.elements.len()).find(|&i| self.elements[i].id.dot == dot)
    }

    fn floor_contains(&self, dot: Dot) -> bool {
        self.floor.as_ref().is_some_and(|floor| floor.contains(dot))
    }

    /// Tombstones right after the first live element (counted if not known).
    fn gap_after_first(&self) -> usize {
        self.after_first.get().unwrap_or_else(|| self.scan_after_first())
    }

    /// Tombstones right before the last live element (counted if not known).
    fn gap_before_last(&self) -> usize {
        self.before_last.get().unwrap_or_else(|| self.scan_before_last())
    }

    fn scan_after_first(&self) -> usize {
        self.elements.range(self.head_dead + 1..).take_while(|e| !e.is_live()).count()
    }

    fn scan_before_last(&self) -> usize {
        let last = self.elements.len() - 1 - self.tail_dead;
        self.elements.range(..last).rev().take_while(|e| !e.is_live()).count()
    }

    /// Inserts `element` at `at`, keeping the counts of tombstones at the
    /// ends and the gap hints. O(1) plus the deque's shift.
    fn insert_element(&mut self, at: usize, element: Element) {
        let len = self.elements.len();
        let live = element.is_live();
        self.elements.insert(at, element);
        if self.visible == 0 {
            if live {
                self.head_dead = at;
                self.tail_dead = len - at;
                self.visible = 1;
            } else {
                self.head_dead = len + 1;
                self.tail_dead = len + 1;
            }
            self.after_first = GapHint::UNKNOWN;
            self.before_last = GapHint::UNKNOWN;
            return;
        }
        if !live {
            // A tombstone arriving after its removal: rare, so the hints are
            // simply dropped.
            if at <= self.head_dead {
                self.head_dead += 1;
            }
            if at >= len - self.tail_dead {
                self.tail_dead += 1;
            }
            self.after_first = GapHint::UNKNOWN;
            self.before_last = GapHint::UNKNOWN;
            return;
        }
        let (first, last) = (self.head_dead, len - 1 - self.tail_dead);
        if at <= first {
            // A new first element (LPUSH): the head run splits around it.
            self.after_first = GapHint::known(first - at);
            if self.visible == 1 {
                self.before_last = GapHint::known(first - at);
            }
            self.head_dead = at;
        } else if at > last {
            // A new last element: the tail run splits around it.
            self.before_last = GapHint::known(at - last - 1);
            if self.visible == 1 {
                self.after_first = GapHint::known(at - last - 1);
            }
            self.tail_dead = len - at;
        } else {
            // In the middle: only a gap next to the first or the last changes.
            if let Some(gap) = self.after_first.get()
                && at <= first + 1 + gap
            {
                self.after_first = GapHint::known(at - first - 1);
            }
            if let Some(gap) = self.before_last.get()
                && at + gap >= last
            {
                self.before_last = GapHint::known(last - at);
            }
        }
        self.visible += 1;
    }

    /// Turns element `i` into a tombstone removed by `by`, or records a
    /// smaller removal dot on a tombstone. O(1) at the ends.
    fn mark_removed(&mut self, i: usize, by: Option<Dot>) {
        let element = &mut self.elements[i];
        if let Body::Removed { by: known } = &mut element.body {
            if let Some(by) = by {
                *known = Some(known.map_or(by, |k| k.min(by)));
            }
            return;
        }
        element.body = Body::Removed { by };
        let len = self.elements.len();
        let (first, last) = (self.head_dead, len - 1 - self.tail_dead);
        if self.visible == 1 {
            self.visible = 0;
            self.head_dead = len;
            self.tail_dead = len;
            self.after_first = GapHint::UNKNOWN;
            self.before_last = GapHint::UNKNOWN;
            return;
        }
        if i == first {
            self.head_dead += 1 + self.gap_after_first();
            self.after_first = GapHint::UNKNOWN;
        } else if i == last {
            self.tail_dead += 1 + self.gap_before_last();
            self.before_last = GapHint::UNKNOWN;
        } else {
            // The second or the second-to-last element joins two gaps.
            if self.after_first.get().is_some_and(|gap| i == first + 1 + gap) {
                self.after_first = GapHint::UNKNOWN;
            }
            if self.before_last.get().is_some_and(|gap| i + 1 + gap == last) {
                self.before_last = GapHint::UNKNOWN;
            }
        }
        self.visible -= 1;
        if self.visible == 1 {
            self.after_first = GapHint::UNKNOWN;
            self.before_last = GapHint::UNKNOWN;
        }
    }

    /// Recounts the live elements and the tombstones at the ends (elements
    /// replaced whole: an imported image, a join).
    fn recount(&mut self) {
        self.visible = self.elements.iter().filter(|e| e.is_live()).count();
        self.recount_ends();
    }

    /// Recounts the tombstones at the ends (after a flush or a collection).
    fn recount_ends(&mut self) {
        self.head_dead = self.elements.iter().take_while(|e| !e.is_live()).count();
        self.tail_dead = self.elements.iter().rev().take_while(|e| !e.is_live()).count();
        self.after_first = GapHint::UNKNOWN;
        self.before_last = GapHint::UNKNOWN;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;

    use super::*;
    use crate::dot::ReplicaId;

    /// A replica's dot allocator with a hybrid clock, as the keyspace has.
    #[derive(Clone, Debug)]
    struct Tags {
        replica: ReplicaId,
        seq: u64,
        hlc: u64,
    }

    impl Tags {
        fn next(&mut self) -> Tag {
            self.seq += 1;
            self.hlc += 1;
            Tag::new(Dot::new(self.replica, self.seq), self.hlc)
        }
    }

    /// One replica driven the way the keyspace drives a list.
    #[derive(Clone, Debug)]
    struct Replica {
        list: RgaList,
        seen: CausalContext,
        tags: Tags,
    }

    impl Replica {
        fn new(replica: u16, hlc: u64) -> Replica {
            Replica {
                list: RgaList::default(),
                seen: CausalContext::new(),
                tags: Tags { replica: ReplicaId(replica), seq: 0, hlc },
            }
        }

        /// Applies a delta and records its dots, as the keyspace does.
        fn apply(&mut self, delta: &ListDelta) {
            self.list.apply(delta, &self.seen);
            delta.for_each_dot(|dot| self.seen.insert(dot));
            self.list.validate().unwrap();
        }

        fn flush(&mut self, context: &CausalContext) {
            self.list.remove_covered(context);
            self.seen.join(context);
            self.list.validate().unwrap();
        }

        fn lpush(&mut self, values: &[&str]) -> ListDelta {
            let delta = self.list.push_front(values.iter().map(|v| v.as_bytes()), &mut || self.tags.next());
            self.apply(&delta);
            delta
        }

        fn rpush(&mut self, values: &[&str]) -> ListDelta {
            let delta = self.list.push_back(values.iter().map(|v| v.as_bytes()), &mut || self.tags.next());
            self.apply(&delta);
            delta
        }

        fn lpop(&mut self, count: usize) -> (Vec<String>, ListDelta) {
            let (values, delta) = self.list.pop_front(count, &mut || self.tags.next());
            self.apply(&delta);
            (strings(values.iter()), delta)
        }

        fn rpop(&mut self, count: usize) -> (Vec<String>, ListDelta) {
            let (values, delta) = self.list.pop_back(count, &mut || self.tags.next());
            self.apply(&delta);
            (strings(values.iter()), delta)
        }

        fn linsert(&mut self, before: bool, pivot: &str, value: &str) -> Option<ListDelta> {
            let (pivot, value) = (pivot.as_bytes(), value.as_bytes());
            let delta = if before {
                self.list.insert_before(pivot, value, &mut || self.tags.next())
            } else {
                self.list.insert_after(pivot, value, &mut || self.tags.next())
            }?;
            self.apply(&delta);
            Some(delta)
        }

        fn lset(&mut self, index: i64, value: &str) -> Result<ListDelta, CommandError> {
            let delta = self.list.set(index, value.as_bytes(), &mut || self.tags.next())?;
            self.apply(&delta);
            Ok(delta)
        }

        fn lrem(&mut self, count: i64, value: &str) -> (usize, ListDelta) {
            let (removed, delta) = self.list.remove(count, value.as_bytes(), &mut || self.tags.next());
            self.apply(&delta);
            (removed, delta)
        }

        fn ltrim(&mut self, start: i64, stop: i64) -> ListDelta {
            let delta = self.list.trim(start, stop, &mut || self.tags.next());
            self.apply(&delta);
            delta
        }

        fn values(&self) -> Vec<String> {
            strings(self.list.iter())
        }
    }

    fn strings<'a>(values: impl Iterator<Item = &'a ShortBytes>) -> Vec<String> {
        values.map(|v| String::from_utf8(v.to_vec()).unwrap()).collect()
    }

    fn list_of(values: &[&str]) -> Replica {
        let mut replica = Replica::new(1, 100);
        replica.rpush(values);
        replica
    }

    fn vector(entries: &[(u16, u64)]) -> VersionVector {
        VersionVector::from_entries(entries.iter().map(|&(r, s)| (ReplicaId(r), s)))
    }

    fn no_tags() -> Tag {
        panic!("a write that changes nothing must not allocate a dot")
    }

    // ----- local operations with Redis semantics -----

    #[test]
    fn lpush_and_rpush_order_like_redis() {
        let mut r = Replica::new(1, 10);
        r.lpush(&["a", "b", "c"]);
        assert_eq!(r.values(), ["c", "b", "a"]);
        r.rpush(&["d", "e"]);
        assert_eq!(r.values(), ["c", "b", "a", "d", "e"]);
        r.lpush(&["x"]);
        assert_eq!(r.values(), ["x", "c", "b", "a", "d", "e"]);
        assert_eq!(r.list.len(), 6);
    }

    #[test]
    fn pops_take_from_either_end_with_a_count() {
        let mut r = list_of(&["a", "b", "c", "d", "e"]);
        assert_eq!(r.lpop(2).0, ["a", "b"]);
        assert_eq!(r.rpop(2).0, ["e", "d"]);
        assert_eq!(r.values(), ["c"]);
        assert_eq!(r.rpop(5).0, ["c"]);
        assert!(r.list.is_empty());
        assert!(!r.list.can_drop(), "tombstones remain until collected");
        assert_eq!(r.list.tombstones(), 5);
        let (values, delta) = r.list.pop_front(1, &mut no_tags);
        assert!(values.is_empty() && delta.is_empty());
        let (values, delta) = list_of(&["a"]).list.pop_back(0, &mut no_tags);
        assert!(values.is_empty() && delta.is_empty());
    }

    #[test]
    fn one_removing_write_takes_one_dot() {
        let mut r = list_of(&["a", "b", "c"]);
        let seq = r.tags.seq;
        let (_, delta) = r.lpop(2);
        assert_eq!(r.tags.seq, seq + 1);
        let mut dots = Vec::new();
        delta.for_each_dot(|d| dots.push(d));
        assert_eq!(dots.len(), 4, "two elements and the pop's dot named twice");
        assert!(dots.contains(&Dot::new(ReplicaId(1), seq + 1)));
    }

    #[test]
    fn linsert_goes_before_or_after_the_first_pivot() {
        let mut r = list_of(&["a", "b", "a"]);
        r.linsert(true, "a", "x").unwrap();
        assert_eq!(r.values(), ["x", "a", "b", "a"]);
        r.linsert(false, "a", "y").unwrap();
        assert_eq!(r.values(), ["x", "a", "y", "b", "a"]);
        assert!(r.linsert(true, "zz", "q").is_none());
        r.lpop(1);
        r.linsert(true, "a", "n").unwrap();
        assert_eq!(r.values(), ["n", "a", "y", "b", "a"]);
        r.rpop(1);
        r.linsert(false, "b", "t").unwrap();
        assert_eq!(r.values(), ["n", "a", "y", "b", "t"]);
        assert!(Replica::new(1, 0).linsert(false, "a", "b").is_none());
    }

    #[test]
    fn lindex_and_lrange_follow_redis_indexes() {
        let r = list_of(&["a", "b", "c", "d", "e"]);
        let get = |i| r.list.get(i).map(|v| String::from_utf8(v.to_vec()).unwrap());
        assert_eq!(get(0).as_deref(), Some("a"));
        assert_eq!(get(-1).as_deref(), Some("e"));
        assert_eq!(get(-5).as_deref(), Some("a"));
        assert_eq!(get(5), None);
        assert_eq!(get(-6), None);
        assert_eq!(get(i64::MIN), None);
        let range = |s, e| strings(r.list.range(s, e));
        assert_eq!(range(0, -1), ["a", "b", "c", "d", "e"]);
        assert_eq!(range(-2, -1), ["d", "e"]);
        assert_eq!(range(1, 2), ["b", "c"]);
        assert_eq!(range(-100, 1), ["a", "b"]);
        assert_eq!(range(2, 100), ["c", "d", "e"]);
        assert!(range(3, 1).is_empty());
        assert!(range(5, 10).is_empty());
        assert!(range(-1, -2).is_empty());
        assert!(range(i64::MIN, i64::MIN).is_empty());
        assert_eq!(range(i64::MIN, i64::MAX).len(), 5);
        assert_eq!(r.list.position(b"c"), Some(2));
        assert_eq!(r.list.position(b"z"), None);
    }

    #[test]
    fn lset_takes_negative_indexes_and_refuses_out_of_range() {
        let mut r = list_of(&["a", "b", "c"]);
        r.lset(0, "x").unwrap();
        r.lset(-1, "z").unwrap();
        assert_eq!(r.values(), ["x", "b", "z"]);
        assert_eq!(r.list.set(3, b"q", &mut no_tags), Err(CommandError::IndexOutOfRange));
        assert_eq!(r.list.set(-4, b"q", &mut no_tags), Err(CommandError::IndexOutOfRange));
        assert_eq!(RgaList::default().set(0, b"q", &mut no_tags), Err(CommandError::IndexOutOfRange));
    }

    #[test]
    fn lrem_counts_from_the_head_the_tail_or_all() {
        let base = list_of(&["a", "b", "a", "c", "a"]);
        let mut r = base.clone();
        assert_eq!(r.lrem(2, "a").0, 2);
        assert_eq!(r.values(), ["b", "c", "a"]);
        let mut r = base.clone();
        assert_eq!(r.lrem(-2, "a").0, 2);
        assert_eq!(r.values(), ["a", "b", "c"]);
        let mut r = base.clone();
        assert_eq!(r.lrem(0, "a").0, 3);
        assert_eq!(r.values(), ["b", "c"]);
        let mut r = base.clone();
        assert_eq!(r.lrem(i64::MIN, "a").0, 3);
        let (removed, delta) = base.list.remove(1, b"z", &mut no_tags);
        assert_eq!(removed, 0);
        assert!(delta.is_empty());
    }

    #[test]
    fn ltrim_follows_redis_rules() {
        let base = list_of(&["a", "b", "c", "d", "e"]);
        let trimmed = |start, stop| {
            let mut r = base.clone();
            r.ltrim(start, stop);
            r.values()
        };
        assert_eq!(trimmed(1, -2), ["b", "c", "d"]);
        assert_eq!(trimmed(-2, 100), ["d", "e"]);
        assert_eq!(trimmed(-100, 0), ["a"]);
        assert!(trimmed(3, 1).is_empty());
        assert!(trimmed(10, 20).is_empty());
        assert!(trimmed(-1, -2).is_empty());
        assert!(base.list.trim(0, -1, &mut no_tags).is_empty());
        assert!(base.list.trim(-100, 100, &mut no_tags).is_empty());
    }

    #[test]
    fn clear_removes_every_visible_element() {
        let mut r = list_of(&["a", "b"]);
        let delta = r.list.clear(&mut || r.tags.next());
        r.apply(&delta);
        assert!(r.list.is_empty());
        assert_eq!(r.list.tombstones(), 2);
        assert!(r.list.clear(&mut no_tags).is_empty());
        assert_eq!(r.list.max_tag(), None);
    }

    #[test]
    fn max_tag_and_dots_cover_values_and_their_lsets() {
        let mut r = list_of(&["a", "b"]);
        let set = r.lset(0, "x").unwrap();
        let ListOp::Assign { tag, .. } = set.ops[0] else { panic!() };
        assert_eq!(r.list.max_tag(), Some(tag));
        let mut dots = Vec::new();
        r.list.for_each_dot(|d| dots.push(d));
        assert_eq!(dots.len(), 3);
        assert!(dots.contains(&tag.dot));
    }

    #[test]
    fn element_metadata_costs_what_the_module_doc_says() {
        assert_eq!(core::mem::size_of::<Element>(), 72);
        assert_eq!(core::mem::size_of::<RgaList>(), 96);
    }

    #[test]
    fn local_inserts_land_in_place_against_a_clock_ahead() {
        let mut ahead = Replica::new(2, 1_000_000);
        let mut behind = Replica::new(1, 10);
        let pushed = ahead.lpush(&["h"]);
        behind.apply(&pushed);
        behind.lpush(&["x", "y"]);
        assert_eq!(behind.values(), ["y", "x", "h"]);
        let tail = ahead.rpush(&["t"]);
        behind.apply(&tail);
        behind.linsert(true, "t", "b").unwrap();
        behind.linsert(false, "h", "a").unwrap();
        behind.rpush(&["z"]);
        assert_eq!(behind.values(), ["y", "x", "h", "a", "b", "t", "z"]);
        behind.lset(2, "H").unwrap();
        assert_eq!(behind.list.get(2).unwrap().as_slice(), b"H");
    }

    #[test]
    fn queue_and_stack_at_the_ends_stay_cheap_with_tombstones() {
        // 20 000 pushes and pops at each end, no collection in between:
        // anything quadratic in the tombstones would take minutes.
        let mut r = Replica::new(1, 0);
        let run = |r: &mut Replica, build: &dyn Fn(&RgaList, &mut Tags) -> ListDelta| {
            let delta = build(&r.list, &mut r.tags);
            r.list.apply(&delta, &r.seen);
            delta.for_each_dot(|dot| r.seen.insert(dot));
        };
        for i in 0..20_000 {
            let value = i.to_string();
            run(&mut r, &|list, tags| list.push_back([value.as_bytes()], &mut || tags.next()));
            if i % 2 == 1 {
                run(&mut r, &|list, tags| list.pop_front(1, &mut || tags.next()).1);
            }
        }
        for _ in 0..20_000 {
            run(&mut r, &|list, tags| list.push_front([b"s"], &mut || tags.next()));
            run(&mut r, &|list, tags| list.pop_front(1, &mut || tags.next()).1);
        }
        for _ in 0..20_000 {
            run(&mut r, &|list, tags| list.push_front([b"t"], &mut || tags.next()));
            run(&mut r, &|list, tags| list.pop_back(1, &mut || tags.next()).1);
        }
        r.list.validate().unwrap();
        assert_eq!(r.list.len(), 10_000);
        assert_eq!(r.list.get(0).unwrap().as_slice(), b"t");
        assert_eq!(r.list.get(-1).unwrap().as_slice(), b"t");
        assert_eq!(r.list.tombstones(), 50_000);
        assert_eq!(r.list.collect(&vector(&[(1, r.tags.seq)])), 50_000);
        assert_eq!(r.list.tombstones(), 0);
        r.list.validate().unwrap();
    }

    // ----- two replicas -----

    fn exchange(a: &mut Replica, b: &mut Replica, from_a: &[ListDelta], from_b: &[ListDelta]) {
        for delta in from_b {
            a.apply(delta);
        }
        for delta in from_a.iter().rev() {
            b.apply(delta);
        }
        a.list.validate().unwrap();
        assert_eq!(a.list, b.list);
        assert_eq!(a.values(), b.values());
    }

    #[test]
    fn concurrent_inserts_at_one_position_all_survive_in_one_order() {
        let mut a = list_of(&["p", "q"]);
        let mut b = a.clone();
        b.tags = Tags { replica: ReplicaId(2), seq: 0, hlc: 100 };
        let from_a = [a.linsert(false, "p", "x").unwrap(), a.lpush(&["h1"]), a.rpush(&["1", "2", "3"])];
        let from_b = [b.linsert(false, "p", "y").unwrap(), b.lpush(&["h2"]), b.rpush(&["7", "8", "9"])];
        exchange(&mut a, &mut b, &from_a, &from_b);
        let values = a.values();
        assert_eq!(values.len(), 12);
        let joined = values.concat();
        // Each write's values stay together; the greater tag goes first.
        assert!(joined.contains("123") && joined.contains("789"), "{values:?}");
        assert!(joined.starts_with("h2h1p") || joined.starts_with("h1h2p"), "{values:?}");
    }

    #[test]
    fn concurrent_pops_may_return_the_same_element() {
        let mut a = list_of(&["a", "b"]);
        let mut b = a.clone();
        b.tags = Tags { replica: ReplicaId(2), seq: 0, hlc: 100 };
        let (popped_a, pop_a) = a.lpop(1);
        let (popped_b, pop_b) = b.lpop(1);
        assert_eq!(popped_a, popped_b);
        exchange(&mut a, &mut b, &[pop_a], &[pop_b]);
        assert_eq!(a.values(), ["b"]);
    }

    #[test]
    fn a_removal_that_arrives_first_leaves_a_tombstone_to_anchor_on() {
        let mut origin = Replica::new(1, 10);
        let insert = origin.rpush(&["x"]);
        let mut popper = Replica::new(2, 10);
        popper.apply(&insert);
        let (_, pop) = popper.lpop(1);
        let mut pusher = Replica::new(3, 10);
        pusher.apply(&insert);
        let push = pusher.rpush(&["y"]);
        // Removal, then the insert anchored on the removed element, then the element.
        let mut late = Replica::new(4, 10);
        late.apply(&pop);
        late.apply(&push);
        assert_eq!(late.list.pending_len(), 2);
        assert!(late.list.is_empty());
        late.apply(&insert);
        assert_eq!(late.values(), ["y"]);
        assert_eq!(late.list.pending_len(), 0);
        assert_eq!(late.list.tombstones(), 1);
        let mut in_order = Replica::new(5, 10);
        for delta in [&insert, &push, &pop] {
            in_order.apply(delta);
        }
        assert_eq!(late.list, in_order.list);
    }

    #[test]
    fn an_insert_waits_for_an_anchor_not_yet_delivered() {
        let mut a = Replica::new(1, 10);
        let first = a.rpush(&["a"]);
        let second = a.rpush(&["b"]);
        let third = a.linsert(true, "b", "m").unwrap();
        let mut b = Replica::new(2, 10);
        b.apply(&third);
        b.apply(&second);
        assert_eq!(b.list.pending_len(), 2);
        assert_eq!(b.list.len(), 0);
        b.apply(&second);
        assert_eq!(b.list.pending_len(), 2, "a duplicate waits once");
        b.apply(&first);
        assert_eq!(b.values(), ["a", "m", "b"]);
        assert_eq!(a.list, b.list);
    }

    #[test]
    fn lset_is_last_writer_wins_and_loses_to_a_concurrent_removal() {
        let mut a = list_of(&["v"]);
        let mut b = a.clone();
        b.tags = Tags { replica: ReplicaId(2), seq: 0, hlc: 500 };
        let set_a = a.lset(0, "from-a").unwrap();
        let set_b = b.lset(0, "from-b").unwrap();
        exchange(&mut a, &mut b, &[set_a], &[set_b]);
        assert_eq!(a.values(), ["from-b"], "the greater tag wins");
        let set = a.lset(0, "again").unwrap();
        let (_, pop) = b.lpop(1);
        exchange(&mut a, &mut b, &[set], &[pop]);
        assert!(a.list.is_empty(), "the removal wins");
        // An LSET that arrives before its element waits for it.
        let mut origin = Replica::new(1, 10);
        let push = origin.rpush(&["old"]);
        let set = origin.lset(0, "new").unwrap();
        let mut late = Replica::new(3, 10);
        late.apply(&set);
        assert_eq!(late.list.pending_len(), 1);
        late.apply(&push);
        assert_eq!(late.values(), ["new"]);
        assert_eq!(late.list, origin.list);
    }

    // ----- flush and garbage collection -----

    #[test]
    fn a_queue_popped_at_both_ends_is_collected_by_walking_only_its_ends() {
        // Region 1 fills a queue; region 2 pops from both ends; only some
        // of the pops are stable when region 2 collects.
        let mut producer = Replica::new(1, 10);
        let values: Vec<String> = (0..1_000).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let fill = producer.rpush(&refs);
        let mut consumer = Replica::new(2, 20);
        consumer.apply(&fill);
        for _ in 0..3 {
            consumer.lpop(2);
            consumer.rpop(1);
        }
        // Removal dots 2:1..=6; the first four pops (dots 1..=4) are stable.
        let stable = vector(&[(1, 1_000), (2, 4)]);
        let list = &consumer.list;
        assert_eq!((list.head_dead, list.tail_dead), (6, 3));
        let mut walked = list.elements.clone();
        let dropped = drop_elements(&mut walked, |e| e.is_collectable(&stable));
        let mut ends = list.elements.clone();
        let mut looked_at = 0;
        let dropped_at_ends = drop_end_elements(&mut ends, 6, 3, |e| {
            looked_at += 1;
            e.is_collectable(&stable)
        });
        assert_eq!((dropped_at_ends, looked_at), (dropped, 9));
        assert_eq!(ends, walked);
        assert_eq!(consumer.list.collect(&stable), dropped);
        consumer.list.validate().unwrap();
        assert_eq!(consumer.list.elements, walked);
        assert_eq!(consumer.values(), refs[6..997]);
        // The rest once every pop is stable: no tombstone left.
        assert_eq!(consumer.list.collect(&vector(&[(1, 1_000), (2, 6)])), 9 - dropped);
        assert_eq!(consumer.list.tombstones(), 0);
        assert_eq!(consumer.values(), refs[6..997]);
    }

    #[test]
    fn collection_waits_for_the_removal_not_only_the_element() {
        // A drained queue: region 2 pops the last element while region 3,
        // which has not seen the pop, pushes after it.
        let mut producer = Replica::new(1, 10);
        let push_t = producer.rpush(&["t"]);
        let mut consumer = Replica::new(2, 10);
        consumer.apply(&push_t);
        consumer.lpop(1);
        let mut other = Replica::new(3, 10);
        other.apply(&push_t);
        let push_x = other.rpush(&["x"]);
        // The element is stable (applied everywhere); its removal is not.
        assert_eq!(consumer.list.collect(&vector(&[(1, 1)])), 0);
        consumer.apply(&push_x);
        assert_eq!(consumer.values(), ["x"]);
        // Once the pop is stable the tombstone goes, and x stays.
        assert_eq!(consumer.list.collect(&vector(&[(1, 1), (2, 1), (3, 1)])), 1);
        assert_eq!(consumer.values(), ["x"]);
        assert_eq!(consumer.list.tombstones(), 0);
    }

    #[test]
    fn collected_runs_keep_later_inserts_where_they_would_have_landed() {
        let mut r1 = Replica::new(1, 10);
        let push = r1.rpush(&["a", "t"]);
        let mut r2 = Replica::new(2, 10);
        r2.apply(&push);
        let mut r3 = Replica::new(3, 10);
        r3.apply(&push);
        let (_, remove_t) = r2.lrem(1, "t");
        // r1 has not seen the removal and, with its clock far ahead, inserts n after t.
        r1.tags.hlc = 1_000;
        let insert_n = r1.linsert(false, "t", "n").unwrap();
        // r3 saw the removal, not n, and inserts x after a with an older clock.
        r3.apply(&remove_t);
        let insert_x = r3.linsert(false, "a", "x").unwrap();
        assert_eq!(r3.values(), ["a", "x"]);
        r3.apply(&insert_n);
        r2.apply(&insert_n);
        // Stable: a, t and the removal; not n (concurrent with x, not yet at r2).
        assert_eq!(r2.list.collect(&vector(&[(1, 2), (2, 1)])), 1);
        r2.apply(&insert_x);
        assert_eq!(r2.values(), ["a", "x", "n"]);
        assert_eq!(r2.values(), r3.values());
        let all = vector(&[(1, 3), (2, 1), (3, 1)]);
        r3.list.collect(&all);
        r2.list.collect(&all);
        assert_eq!(r2.list, r3.list);
    }

    #[test]
    fn late_duplicates_after_collection_change_nothing() {
        let mut a = list_of(&["a", "b"]);
        let push = ListDelta { ops: a.list.push_back([b"c"], &mut || a.tags.next()).ops };
        a.apply(&push);
        let (_, pop) = a.rpop(1);
        let set = a.lset(0, "A").unwrap();
        let before = a.list.clone();
        assert_eq!(a.list.collect(&vector(&[(1, a.tags.seq)])), 1);
        for delta in [&push, &pop, &set] {
            a.apply(delta);
        }
        assert_eq!(a.list.pending_len(), 0);
        assert_eq!(a.values(), strings(before.iter()));
        assert_eq!(a.list.tombstones(), 0);
    }

    #[test]
    fn a_list_recreated_by_late_duplicates_is_collected_again() {
        // The keyspace drops a list once nothing is left, and with it the
        // record of what was collected; late duplicates then land in a new list.
        let mut a = Replica::new(1, 10);
        let push = a.rpush(&["x"]);
        let set = a.lset(0, "y").unwrap();
        let (_, pop) = a.lpop(1);
        let stable = vector(&[(1, a.tags.seq)]);
        assert_eq!(a.list.collect(&stable), 1);
        assert!(a.list.can_drop());
        let mut recreated = Replica { list: RgaList::default(), ..a.clone() };
        for delta in [&pop, &set, &push] {
            recreated.apply(delta);
        }
        assert!(recreated.list.is_empty());
        assert!(!recreated.list.can_drop());
        recreated.list.collect(&stable);
        assert!(recreated.list.can_drop());
    }

    #[test]
    fn a_full_sync_joins_lists_both_sides_changed() {
        let mut a = Replica::new(1, 100);
        let mut b = Replica::new(2, 100);
        let shared = a.rpush(&["m", "n"]);
        b.apply(&shared);
        // Apart: each side pushes at both ends and pops; b also LSETs.
        let from_a = [a.rpush(&["a1"]), a.lpush(&["a0"]), a.lpop(1).1];
        let from_b = [b.rpush(&["b1"]), b.lpush(&["b0"]), b.rpop(1).1, b.lset(1, "N").unwrap()];
        let (mut expected, mut other) = (a.clone(), b.clone());
        exchange(&mut expected, &mut other, &from_a, &from_b);
        // a joins b's whole list instead of receiving b's deltas.
        a.list.join(&a.seen, &b.list, &b.seen).unwrap();
        a.seen.join(&b.seen);
        a.list.validate().unwrap();
        assert_eq!(a.values(), ["b0", "N", "n", "a1"]);
        assert_eq!(a.list, expected.list);
        // Joining again changes nothing.
        a.list.join(&a.seen, &b.list, &b.seen).unwrap();
        assert_eq!(a.list, expected.list);
    }

    #[test]
    fn a_list_with_shared_elements_in_another_order_is_not_joined() {
        let mut a = list_of(&["x", "y"]);
        let mut image = a.list.image();
        image.elements.reverse();
        for element in &mut image.elements {
            element.run_min = element.id;
        }
        let reversed = RgaList::from_image(&image).unwrap();
        let before = a.list.clone();
        let seen = a.seen.clone();
        assert!(a.list.join(&seen, &reversed, &seen).is_err());
        assert_eq!(a.list, before);
        assert_eq!(a.values(), ["x", "y"]);
    }

    #[test]
    fn a_flush_leaves_tombstones_for_concurrent_pushes() {
        let mut a = Replica::new(1, 100);
        let push_a = a.rpush(&["a"]);
        let mut b = a.clone();
        b.tags = Tags { replica: ReplicaId(2), seq: 0, hlc: 100 };
        let push_b = b.rpush(&["b"]);
        let flushed = a.seen.clone();
        a.flush(&flushed);
        assert!(a.list.is_empty());
        a.apply(&push_b);
        b.flush(&flushed);
        assert_eq!(a.values(), ["b"]);
        assert_eq!(a.list, b.list);
        // An element the flush covered but that arrives after it is born dead,
        // and still anchors what was pushed after it.
        let mut late = Replica::new(3, 10);
        late.flush(&flushed);
        late.apply(&push_b);
        assert_eq!(late.list.pending_len(), 1);
        late.apply(&push_a);
        assert_eq!(late.values(), ["b"]);
        assert_eq!(late.list, a.list);
        let all = vector(&[(1, 1), (2, 1)]);
        for list in [&mut a.list, &mut b.list, &mut late.list] {
            assert_eq!(list.collect(&all), 1);
        }
        assert_eq!(a.list, late.list);
    }

    // ----- property tests -----

    /// A local command, as the proxy would issue it. Values are one letter of
    /// a small alphabet so that LREM and LINSERT find their targets.
    #[derive(Clone, Debug)]
    enum Local {
        PushFront(Vec<u8>),
        PushBack(Vec<u8>),
        PopFront(usize),
        PopBack(usize),
        InsertBefore(u8, u8),
        InsertAfter(u8, u8),
        Set(i64, u8),
        Remove(i64, u8),
        Trim(i64, i64),
        Clear,
        /// FLUSHDB (in the convergence test only).
        Flush,
    }

    /// What a command replied.
    #[derive(Clone, Debug, PartialEq)]
    enum Reply {
        Nothing,
        Values(Vec<u8>),
        Count(usize),
        Inserted(bool),
        Set(Result<(), CommandError>),
    }

    fn letter() -> impl Strategy<Value = u8> {
        (b'a'..=b'd').boxed()
    }

    fn local_command(with_flush: bool) -> BoxedStrategy<Local> {
        let command = prop_oneof![
            4 => proptest::collection::vec(letter(), 1..4).prop_map(Local::PushFront),
            4 => proptest::collection::vec(letter(), 1..4).prop_map(Local::PushBack),
            2 => (1usize..3).prop_map(Local::PopFront),
            2 => (1usize..3).prop_map(Local::PopBack),
            1 => (letter(), letter()).prop_map(|(p, v)| Local::InsertBefore(p, v)),
            1 => (letter(), letter()).prop_map(|(p, v)| Local::InsertAfter(p, v)),
            2 => (-5i64..5, letter()).prop_map(|(i, v)| Local::Set(i, v)),
            1 => (-2i64..3, letter()).prop_map(|(c, v)| Local::Remove(c, v)),
            1 => (-6i64..6, -6i64..6).prop_map(|(a, b)| Local::Trim(a, b)),
            1 => Just(Local::Clear),
        ];
        if with_flush { prop_oneof![19 => command, 1 => Just(Local::Flush)].boxed() } else { command.boxed() }
    }

    /// Runs a command through the list's local helpers: the reply and the delta.
    fn run_local(list: &RgaList, command: &Local, fresh: &mut impl FnMut() -> Tag) -> (Reply, ListDelta) {
        let one = |v: &u8| [*v];
        match command {
            Local::PushFront(values) => (Reply::Nothing, list.push_front(values.iter().map(one), fresh)),
            Local::PushBack(values) => (Reply::Nothing, list.push_back(values.iter().map(one), fresh)),
            Local::PopFront(count) | Local::PopBack(count) => {
                let (values, delta) = match command {
                    Local::PopFront(_) => list.pop_front(*count, fresh),
                    _ => list.pop_back(*count, fresh),
                };
                (Reply::Values(values.iter().map(|v| v[0]).collect()), delta)
            }
            Local::InsertBefore(pivot, value) => match list.insert_before(&[*pivot], &[*value], fresh) {
                Some(delta) => (Reply::Inserted(true), delta),
                None => (Reply::Inserted(false), ListDelta::default()),
            },
            Local::InsertAfter(pivot, value) => match list.insert_after(&[*pivot], &[*value], fresh) {
                Some(delta) => (Reply::Inserted(true), delta),
                None => (Reply::Inserted(false), ListDelta::default()),
            },
            Local::Set(index, value) => match list.set(*index, &[*value], fresh) {
                Ok(delta) => (Reply::Set(Ok(())), delta),
                Err(e) => (Reply::Set(Err(e)), ListDelta::default()),
            },
            Local::Remove(count, value) => {
                let (removed, delta) = list.remove(*count, &[*value], fresh);
                (Reply::Count(removed), delta)
            }
            Local::Trim(start, stop) => (Reply::Nothing, list.trim(*start, *stop, fresh)),
            Local::Clear => (Reply::Nothing, list.clear(fresh)),
            Local::Flush => unreachable!("a flush is not a list command"),
        }
    }

    /// Redis's own behaviour on a plain deque, for comparison.
    fn run_model(model: &mut VecDeque<u8>, command: &Local) -> Reply {
        let index = |model: &VecDeque<u8>, i: i64| {
            let len = model.len() as i64;
            let i = if i < 0 { len + i } else { i };
            (0..len).contains(&i).then_some(i as usize)
        };
        match command {
            Local::PushFront(values) => {
                values.iter().for_each(|v| model.push_front(*v));
                Reply::Nothing
            }
            Local::PushBack(values) => {
                model.extend(values);
                Reply::Nothing
            }
            Local::PopFront(count) => Reply::Values((0..*count).map_while(|_| model.pop_front()).collect()),
            Local::PopBack(count) => Reply::Values((0..*count).map_while(|_| model.pop_back()).collect()),
            Local::InsertBefore(pivot, value) | Local::InsertAfter(pivot, value) => {
                let Some(at) = model.iter().position(|v| v == pivot) else {
                    return Reply::Inserted(false);
                };
                let at = if matches!(command, Local::InsertAfter(..)) { at + 1 } else { at };
                model.insert(at, *value);
                Reply::Inserted(true)
            }
            Local::Set(i, value) => match index(model, *i) {
                Some(i) => {
                    model[i] = *value;
                    Reply::Set(Ok(()))
                }
                None => Reply::Set(Err(CommandError::IndexOutOfRange)),
            },
            Local::Remove(count, value) => {
                let limit = if *count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
                let mut positions: Vec<usize> =
                    model.iter().enumerate().filter(|(_, v)| *v == value).map(|(i, _)| i).collect();
                if *count < 0 {
                    positions.reverse();
                }
                positions.truncate(limit);
                positions.sort_unstable();
                for &at in positions.iter().rev() {
                    model.remove(at);
                }
                Reply::Count(positions.len())
            }
            Local::Trim(start, stop) => {
                *model = match normalize_range(*start, *stop, model.len()) {
                    Some((s, e)) => model.range(s..=e).copied().collect(),
                    None => VecDeque::new(),
                };
                Reply::Nothing
            }
            Local::Clear => {
                model.clear();
                Reply::Nothing
            }
            Local::Flush => unreachable!(),
        }
    }

    /// Redis's LRANGE on the model, written out independently of `normalize_range`.
    fn model_range(model: &VecDeque<u8>, start: i64, stop: i64) -> Vec<u8> {
        let len = model.len() as i64;
        let start = if start < 0 { (len + start).max(0) } else { start };
        let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
        if start > stop || start >= len {
            Vec::new()
        } else {
            model.range(start as usize..=stop as usize).copied().collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// On one replica, every command replies and leaves the list exactly as
        /// Redis would; reads with any indexes agree too.
        #[test]
        fn local_commands_behave_like_redis(
            commands in proptest::collection::vec((local_command(false), -7i64..7, -7i64..7), 1..60),
        ) {
            let mut replica = Replica::new(1, 0);
            let mut model = VecDeque::new();
            for (command, a, b) in &commands {
                let seq = replica.tags.seq;
                let (reply, delta) = run_local(&replica.list, command, &mut || replica.tags.next());
                if delta.is_empty() {
                    prop_assert_eq!(replica.tags.seq, seq, "a write with no effect allocated a dot");
                }
                replica.apply(&delta);
                prop_assert_eq!(reply, run_model(&mut model, command), "{:?}", command);
                let values: Vec<u8> = replica.list.iter().map(|v| v[0]).collect();
                prop_assert_eq!(&values, &model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(replica.list.len(), model.len());
                let read: Vec<u8> = replica.list.range(*a, *b).map(|v| v[0]).collect();
                prop_assert_eq!(read, model_range(&model, *a, *b));
                let expected = if *a < 0 { model.len().checked_sub(a.unsigned_abs() as usize) } else { Some(*a as usize) };
                prop_assert_eq!(replica.list.get(*a).map(|v| v[0]), expected.and_then(|i| model.get(i).copied()));
                let position = replica.list.position(b"a");
                prop_assert_eq!(position, model.iter().position(|v| *v == b'a'));
            }
        }
    }

    const REPLICAS: usize = 3;

    /// What a replica shipped.
    #[derive(Clone, Debug)]
    enum Shipped {
        List(ListDelta),
        Flush(CausalContext),
    }

    /// One step of a simulation.
    #[derive(Clone, Debug)]
    enum Step {
        /// A replica runs a command on its own state.
        Local(usize, Local),
        /// A replica receives some delta (possibly again, possibly its own).
        Deliver(usize, proptest::sample::Index),
        /// A replica collects with the causally stable vector of the moment.
        Collect(usize),
        /// A replica joins another's whole list (a full sync).
        Join(usize, usize),
    }

    /// Three replicas exchanging deltas in any order, the keyspace emulated.
    struct Simulation {
        replicas: Vec<Replica>,
        /// Replicas whose clock follows the tags they receive (the others'
        /// clocks are held back, as a clamped clock would be).
        observes: [bool; REPLICAS],
        /// Per replica, which deltas it has applied.
        applied: Vec<Vec<bool>>,
        deltas: Vec<Shipped>,
        /// Per delta, the deltas its origin had applied when it was written.
        pasts: Vec<Vec<bool>>,
        /// Per origin, the delta each of its dots (in sequence order) belongs to.
        dot_deltas: Vec<Vec<usize>>,
    }

    impl Simulation {
        fn new() -> Simulation {
            Simulation {
                replicas: vec![Replica::new(1, 0), Replica::new(2, 1_000), Replica::new(3, 0)],
                observes: [true, true, false],
                applied: vec![Vec::new(); REPLICAS],
                deltas: Vec::new(),
                pasts: Vec::new(),
                dot_deltas: vec![Vec::new(); REPLICAS],
            }
        }

        fn local(&mut self, r: usize, command: &Local) {
            let replica = &mut self.replicas[r];
            let seq = replica.tags.seq;
            let shipped = match command {
                Local::Flush => Shipped::Flush(replica.seen.clone()),
                command => {
                    let (_, delta) = run_local(&replica.list, command, &mut || replica.tags.next());
                    if delta.is_empty() {
                        assert_eq!(replica.tags.seq, seq, "a write with no effect allocated a dot");
                        return;
                    }
                    delta.validate().unwrap();
                    Shipped::List(delta)
                }
            };
            let k = self.deltas.len();
            if let Shipped::List(delta) = &shipped {
                let mut own = Vec::new();
                delta.for_each_dot(|dot| {
                    if dot.replica() == replica.tags.replica && dot.seq() > seq {
                        own.push(dot.seq());
                    }
                });
                own.sort_unstable();
                own.dedup();
                assert_eq!(own, (seq + 1..=replica.tags.seq).collect::<Vec<_>>(), "dots allocated but not shipped");
                self.dot_deltas[r].extend(own.iter().map(|_| k));
            }
            self.pasts.push(self.applied[r].clone());
            self.deltas.push(shipped);
            self.deliver(r, k);
        }

        fn deliver(&mut self, r: usize, k: usize) {
            let replica = &mut self.replicas[r];
            match &self.deltas[k] {
                Shipped::List(delta) => {
                    replica.apply(delta);
                    if self.observes[r] {
                        for op in &delta.ops {
                            if let ListOp::Insert { id: tag, .. } | ListOp::Assign { tag, .. } = op {
                                replica.tags.hlc = replica.tags.hlc.max(tag.hlc);
                            }
                        }
                    }
                }
                Shipped::Flush(context) => replica.flush(context),
            }
            let applied = &mut self.applied[r];
            if applied.len() <= k {
                applied.resize(k + 1, false);
            }
            applied[k] = true;
        }

        /// Replica `r` joins replica `from`'s list and context: it has then
        /// applied everything `from` had.
        fn join(&mut self, r: usize, from: usize) {
            if r == from {
                return;
            }
            let (list, seen) = (self.replicas[from].list.clone(), self.replicas[from].seen.clone());
            let replica = &mut self.replicas[r];
            replica.list.join(&replica.seen, &list, &seen).unwrap();
            replica.seen.join(&seen);
            replica.list.validate().unwrap();
            if self.observes[r] {
                let newest = list.elements.iter().map(|e| e.id.hlc).max().unwrap_or(0);
                replica.tags.hlc = replica.tags.hlc.max(newest);
            }
            let theirs = self.applied[from].clone();
            let applied = &mut self.applied[r];
            if applied.len() < theirs.len() {
                applied.resize(theirs.len(), false);
            }
            for (mine, theirs) in applied.iter_mut().zip(theirs) {
                *mine |= theirs;
            }
        }

        fn applied(&self, r: usize, k: usize) -> bool {
            self.applied[r].get(k).copied().unwrap_or(false)
        }

        /// The causally stable vector: the dots of deltas applied everywhere
        /// whose every undelivered successor was written after its origin
        /// applied them (what `gc.rs` approximates with rounds).
        fn stable(&self) -> VersionVector {
            let everywhere = |k: usize| (0..REPLICAS).all(|r| self.applied(r, k));
            let undelivered: Vec<usize> = (0..self.deltas.len()).filter(|&k| !everywhere(k)).collect();
            let stable =
                |k: usize| everywhere(k) && undelivered.iter().all(|&u| self.pasts[u].get(k).copied().unwrap_or(false));
            VersionVector::from_entries((0..REPLICAS).map(|o| {
                let run = self.dot_deltas[o].iter().take_while(|&&k| stable(k)).count();
                (self.replicas[o].tags.replica, run as u64)
            }))
        }

        fn values(&self, r: usize) -> Vec<String> {
            self.replicas[r].values()
        }
    }

    fn step(gc: bool) -> BoxedStrategy<Step> {
        let exchange = prop_oneof![
            4 => (0..REPLICAS, local_command(!gc)).prop_map(|(r, c)| Step::Local(r, c)),
            5 => (0..REPLICAS, any::<proptest::sample::Index>()).prop_map(|(r, i)| Step::Deliver(r, i)),
            1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(r, from)| Step::Join(r, from)),
        ];
        if gc {
            prop_oneof![9 => exchange, 2 => (0..REPLICAS).prop_map(Step::Collect)].boxed()
        } else {
            exchange.boxed()
        }
    }

    fn simulation() -> impl Strategy<Value = (bool, Vec<Step>, u64)> {
        any::<bool>().prop_flat_map(|gc| (Just(gc), proptest::collection::vec(step(gc), 1..100), any::<u64>()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Three replicas run random commands and receive each other's deltas
        /// in random order, duplicated, or join each other's whole lists (full
        /// syncs); half the runs also collect garbage along the way with the
        /// causally stable vector. Once everything is
        /// delivered everywhere the lists read the same, nothing is pending,
        /// and (without collection) they are equal structurally; collecting
        /// with the full vector then leaves equal lists with no tombstone.
        #[test]
        fn replicas_converge((gc, steps, seed) in simulation()) {
            let mut sim = Simulation::new();
            for step in &steps {
                match step {
                    Step::Local(r, command) => sim.local(*r, command),
                    Step::Deliver(r, pick) => {
                        if !sim.deltas.is_empty() {
                            let k = pick.index(sim.deltas.len());
                            sim.deliver(*r, k);
                        }
                    }
                    Step::Collect(r) => {
                        let stable = sim.stable();
                        // Walking only the ends, when every tombstone is
                        // there, drops what the walk of the whole list does.
                        let mut walked = sim.replicas[*r].list.elements.clone();
                        let dropped = drop_elements(&mut walked, |e| e.is_collectable(&stable));
                        let pending = sim.replicas[*r].list.pending_len();
                        let collected = sim.replicas[*r].list.collect(&stable);
                        prop_assert_eq!(&sim.replicas[*r].list.elements, &walked);
                        prop_assert!(collected >= dropped && collected <= dropped + pending);
                        sim.replicas[*r].list.validate().unwrap();
                    }
                    Step::Join(r, from) => sim.join(*r, *from),
                }
            }
            // Deliver everything everywhere, in a shuffled order, with repeats.
            let mut rng = StdRng::seed_from_u64(seed);
            let n = sim.deltas.len();
            for r in 0..REPLICAS {
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                order.extend(order.clone().iter().take(3));
                for k in order {
                    sim.deliver(r, k);
                }
            }
            for r in 0..REPLICAS {
                prop_assert_eq!(sim.replicas[r].list.pending_len(), 0);
                sim.replicas[r].list.validate().unwrap();
                // A shard snapshot carries the list as it stands.
                let image = sim.replicas[r].list.image();
                prop_assert_eq!(&RgaList::from_image(&image).unwrap(), &sim.replicas[r].list);
                prop_assert_eq!(sim.values(r), sim.values(0));
                if !gc {
                    prop_assert_eq!(&sim.replicas[r].list, &sim.replicas[0].list);
                }
            }
            let reads = sim.values(0);
            let all = sim.stable();
            for r in 0..REPLICAS {
                prop_assert_eq!(all.get(sim.replicas[r].tags.replica), sim.replicas[r].tags.seq);
                sim.replicas[r].list.collect(&all);
                sim.replicas[r].list.validate().unwrap();
                prop_assert_eq!(sim.replicas[r].list.tombstones(), 0);
                prop_assert_eq!(sim.values(r), reads.clone());
                prop_assert_eq!(&sim.replicas[r].list, &sim.replicas[0].list);
            }
        }
    }
}
