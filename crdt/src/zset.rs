//! The sorted set: add-wins members, last-writer-wins ZADD scores, ZINCRBY
//! increments that add up across regions, and the ordered index that serves
//! Redis's range queries.
//!
//! Each member owns one score [`Register`] (see `register.rs`): ZADD assigns
//! it (the greatest [`Tag`] wins among concurrent ZADDs, and the increments
//! the ZADD observed are reset), ZINCRBY adds a float increment, and ZREM
//! removes exactly the score elements it observed. The score read is the
//! winning entry's value (or nothing) followed by the live increments, added
//! in dot order. This is the Redis Enterprise Active-Active behaviour: ZADD vs
//! a concurrent ZREM keeps the member (add wins), and increments a ZREM did
//! not observe survive it together with the member.
//!
//! **Membership is the register's non-emptiness.** A member is present exactly
//! while its register holds an element; every element is added by a write of
//! the member (ZADD or ZINCRBY) and survives until a write that observed it
//! removes it, so the elements *are* the member's add-wins presence tags, and a
//! separate set of presence tags would only repeat them. Keeping both was
//! tried on paper and rejected: with presence tags that ZINCRBY replaces but
//! score elements it keeps, a delivery order that is not causal can leave a
//! member with score elements and no presence (W = ZADD, O1 = ZINCRBY that
//! saw W, O2 = ZREM at a replica that had O1 but not yet W: W's entry then
//! arrives after its presence tag was already named as removed). Those
//! stranded elements are invisible garbage no later delta can name, and
//! dropping them on apply breaks convergence (a concurrent ZINCRBY Q brings
//! the presence back; a replica that saw Q before W keeps W's entry, one that
//! saw W, O1, O2 first drops it). With membership derived from the register
//! there is nothing to strand: the state is the plain dot-kernel "added and not
//! removed", which converges under any delivery order.
//!
//! **Floats.** Scores are `f64`s compared bitwise in the state ([`F64`]), so
//! equal states are structurally equal. The fold "entry, then increments in dot
//! order" gives every replica the same bits, and it is Redis's own sequence of
//! roundings when one region does ZADD then ZINCRBYs. A score can differ in its
//! last bits from what a single Redis would compute in two ways, identically on
//! every replica: increments from several regions are added in replica order,
//! not time order; and [`OrZSet::collect`] merges a replica's stable
//! increments into one (another rounding order; a lone -0 increment becomes
//! 0), so a score may move by an ulp during garbage collection. A score can be
//! NaN only when concurrent writes combine +inf and -inf (locally Redis
//! refuses that with "resulting score is not a number"); such a member reads
//! as 0, and the next local ZADD or ZINCRBY on it assigns a fresh score
//! instead of adding to the NaN.
//!
//! **Index.** Visible members are kept in a `BTreeSet` ordered like Redis
//! (score, then member bytes; -0 and 0 are one score) beside the member map,
//! and every apply re-indexes the members it touched. Score and lex ranges cost
//! O(log n + m). Ranks cost O(rank), because a `BTreeSet` has no order
//! statistics: ZRANGE 0 10 is cheap, ZRANGE on the deep end of a huge set walks
//! it (an order-statistic tree is the upgrade if that shows up in profiles).
//! ZCOUNT and ZLEXCOUNT count the range they select: O(log n + m).

use core::borrow::Borrow;
use core::cmp::Ordering;
use core::fmt;
use core::ops::Bound;
use std::collections::BTreeSet;
use std::collections::btree_set;

use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::context::{CausalContext, VersionVector};
use crate::dot::{Dot, Tag};
use crate::error::CommandError;
use crate::register::{Amount, Increment, Register, RegisterDelta};
use crate::short_bytes::ShortBytes;

/// A score as a register stores it: an `f64` with bitwise equality, so that
/// two states compare equal exactly when they hold the same bits. NaN is never
/// stored (ZADD and ZINCRBY refuse it).
#[derive(Clone, Copy, Default)]
pub struct F64(pub f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for F64 {}

impl fmt::Debug for F64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The register behind one member's score.
pub type ScoreRegister = Register<F64>;

/// Redis's order of scores: numeric, with -0 and 0 equal (Redis compares with
/// `<`, so they tie and the member bytes decide). NaN never reaches the index;
/// should it, `total_cmp` keeps the order total instead of corrupting the tree.
#[derive(Clone, Copy, Debug)]
pub struct ScoreKey(pub f64);

impl Ord for ScoreKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or_else(|| self.0.total_cmp(&other.0))
    }
}

impl PartialOrd for ScoreKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ScoreKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ScoreKey {}

/// One entry of the ordered index.
#[derive(Clone, Debug)]
struct IndexKey {
    score: ScoreKey,
    member: ShortBytes,
}

/// A view of an index position, so the index can be searched with a borrowed
/// member (a [`Probe`]) instead of an owned copy: members longer than
/// `ShortBytes`'s inline capacity would otherwise cost an allocation per lookup.
trait IndexLookup {
    fn score_key(&self) -> ScoreKey;
    fn member_bytes(&self) -> &[u8];
}

impl IndexLookup for IndexKey {
    fn score_key(&self) -> ScoreKey {
        self.score
    }
    fn member_bytes(&self) -> &[u8] {
        &self.member
    }
}

/// A borrowed search key for the index.
#[derive(Clone, Copy)]
struct Probe<'m> {
    score: ScoreKey,
    member: &'m [u8],
}

impl<'m> Probe<'m> {
    fn new(score: f64, member: &'m [u8]) -> Probe<'m> {
        Probe { score: ScoreKey(score), member }
    }
}

impl IndexLookup for Probe<'_> {
    fn score_key(&self) -> ScoreKey {
        self.score
    }
    fn member_bytes(&self) -> &[u8] {
        self.member
    }
}

impl<'a> Ord for dyn IndexLookup + 'a {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score_key().cmp(&other.score_key()).then_with(|| self.member_bytes().cmp(other.member_bytes()))
    }
}

impl<'a> PartialOrd for dyn IndexLookup + 'a {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<'a> PartialEq for dyn IndexLookup + 'a {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<'a> Eq for dyn IndexLookup + 'a {}

// The owned key orders exactly as its borrowed view, as `Borrow` requires.
impl<'a> Borrow<dyn IndexLookup + 'a> for IndexKey {
    fn borrow(&self) -> &(dyn IndexLookup + 'a) {
        self
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        (self as &dyn IndexLookup).cmp(other as &dyn IndexLookup)
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for IndexKey {}

/// ZADD's options for one member. The caller has already refused the
/// combinations Redis refuses (NX with XX, NX with GT or LT, GT with LT, INCR
/// with several members).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZAddFlags {
    /// Only add new members.
    pub nx: bool,
    /// Only update existing members.
    pub xx: bool,
    /// Update an existing member only if the new score is greater.
    pub gt: bool,
    /// Update an existing member only if the new score is less.
    pub lt: bool,
    /// Count changed members, not only added ones (see [`ZAddReply::count`]).
    pub ch: bool,
    /// Add the score to the current one, like ZINCRBY.
    pub incr: bool,
}

/// What ZADD did to one member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZAddReply {
    /// The member was not present and now is.
    pub added: bool,
    /// The member was present and its score changed.
    pub updated: bool,
    /// The member's score after the command, or `None` if NX, XX, GT or LT
    /// aborted it (ZADD INCR then replies nil).
    pub score: Option<f64>,
}

impl ZAddReply {
    /// The reply of a member the flags skipped.
    pub const ABORTED: ZAddReply = ZAddReply { added: false, updated: false, score: None };

    /// This member's contribution to ZADD's integer reply: added members, plus
    /// updated ones with CH.
    pub fn count(&self, ch: bool) -> usize {
        usize::from(self.added || (ch && self.updated))
    }
}

/// What a multi-member ZADD did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ZAddTotals {
    /// Members added.
    pub added: usize,
    /// Members present whose score changed.
    pub updated: usize,
    /// The last pair's [`ZAddReply::score`]: the reply of ZADD INCR (one pair).
    pub score: Option<f64>,
}

impl ZAddTotals {
    /// ZADD's integer reply: added members, plus updated ones with CH.
    pub fn count(&self, ch: bool) -> usize {
        self.added + if ch { self.updated } else { 0 }
    }
}

/// One end of a score range (ZRANGEBYSCORE's `1.5`, `(1.5`, `-inf`, `+inf`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreBound {
    /// The score; ±infinity for `-inf` / `+inf`. Never NaN (the caller refuses
    /// it with "ERR min or max is not a float").
    pub value: f64,
    /// True for the `(` form.
    pub exclusive: bool,
}

impl ScoreBound {
    /// `-inf`.
    pub const NEG_INF: ScoreBound = ScoreBound { value: f64::NEG_INFINITY, exclusive: false };
    /// `+inf`.
    pub const POS_INF: ScoreBound = ScoreBound { value: f64::INFINITY, exclusive: false };

    /// A bound that includes `value`.
    pub fn inclusive(value: f64) -> ScoreBound {
        ScoreBound { value, exclusive: false }
    }

    /// A bound that excludes `value`.
    pub fn exclusive(value: f64) -> ScoreBound {
        ScoreBound { value, exclusive: true }
    }
}

/// One end of a lexicographic range (ZRANGEBYLEX's `-`, `+`, `[a`, `(a`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LexBound<'a> {
    /// `-`: below every member.
    Min,
    /// `+`: above every member.
    Max,
    /// `[member`.
    Inclusive(&'a [u8]),
    /// `(member`.
    Exclusive(&'a [u8]),
}

impl<'a> LexBound<'a> {
    /// Parses Redis's syntax; `None` is "ERR min or max not valid string range
    /// item".
    pub fn parse(arg: &'a [u8]) -> Option<LexBound<'a>> {
        match arg {
            b"-" => Some(LexBound::Min),
            b"+" => Some(LexBound::Max),
            [b'[', rest @ ..] => Some(LexBound::Inclusive(rest)),
            [b'(', rest @ ..] => Some(LexBound::Exclusive(rest)),
            _ => None,
        }
    }

    /// True if `member` is at or above this bound used as a minimum.
    fn admits_from_below(self, member: &[u8]) -> bool {
        match self {
            LexBound::Min => true,
            LexBound::Max => false,
            LexBound::Inclusive(min) => member >= min,
            LexBound::Exclusive(min) => member > min,
        }
    }

    /// True if `member` is at or below this bound used as a maximum.
    fn admits_from_above(self, member: &[u8]) -> bool {
        match self {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Inclusive(max) => member <= max,
            LexBound::Exclusive(max) => member < max,
        }
    }
}

/// Redis's emptiness test for a lex range (`zslParseLexRange` treats `-` and
/// `+` as exclusive, so `- -` and `+ +` are empty).
fn lex_range_is_empty(min: LexBound<'_>, max: LexBound<'_>) -> bool {
    match (min, max) {
        (LexBound::Max, _) | (_, LexBound::Min) => true,
        (LexBound::Min, _) | (_, LexBound::Max) => false,
        (LexBound::Inclusive(a) | LexBound::Exclusive(a), LexBound::Inclusive(b) | LexBound::Exclusive(b)) => {
            let exclusive = matches!(min, LexBound::Exclusive(_)) || matches!(max, LexBound::Exclusive(_));
            a > b || (a == b && exclusive)
        }
    }
}

/// The `LIMIT offset count` of a score or lex range, with Redis's meaning: a
/// negative offset selects nothing, a negative count means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Elements to skip.
    pub offset: i64,
    /// Elements to return at most; negative for all.
    pub count: i64,
}

impl Limit {
    /// No LIMIT clause.
    pub const ALL: Limit = Limit { offset: 0, count: -1 };

    /// (elements to skip, elements to take).
    fn window(self) -> (usize, usize) {
        if self.offset < 0 {
            return (0, 0);
        }
        let take = if self.count < 0 { usize::MAX } else { self.count as usize };
        (self.offset as usize, take)
    }
}

/// Redis's rank window for ZRANGE / ZREMRANGEBYRANK: negative indexes count
/// from the end, `stop` is inclusive and clamped. Returns (skip, take), or
/// `None` when the window is empty.
fn rank_window(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { start + len } else { start };
    let mut stop = if stop < 0 { stop + len } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, (stop - start + 1) as usize))
}

/// Members in Redis order (or reversed), with their scores.
#[derive(Clone, Debug)]
pub struct ZSetIter<'a> {
    range: btree_set::Range<'a, IndexKey>,
    rev: bool,
    /// Elements still to skip before the first one returned (LIMIT offset or
    /// a start rank), consumed on the first call.
    skip: usize,
    /// Elements still to return.
    remaining: usize,
}

impl<'a> Iterator for ZSetIter<'a> {
    type Item = (&'a ShortBytes, f64);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let skip = core::mem::take(&mut self.skip);
        let key = if self.rev { self.range.nth_back(skip) } else { self.range.nth(skip) }?;
        self.remaining -= 1;
        Some((&key.member, key.score.0))
    }
}

/// One member's part of a [`ZSetDelta`]: the member and the change to its
/// score register.
pub type MemberChange = (ShortBytes, RegisterDelta<F64>);

/// The change one write makes to a sorted set: per member, the change to its
/// score register. Changes are applied in order, so a command that touches a
/// member twice (ZADD z 1 m 2 m) may list it twice, and deltas concatenate
/// ([`ZSetDelta::append`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ZSetDelta {
    /// (member, register change), in the order the command made them.
    pub changes: SmallVec<[MemberChange; 1]>,
}

impl ZSetDelta {
    /// Every dot the delta adds or removes.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.changes.iter().for_each(|(_, change)| change.for_each_dot(&mut f));
    }

    /// True if the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Appends the changes of a later delta of the same command (the caller
    /// applied `self` before computing `later`), so a multi-member ZADD ships as
    /// one delta.
    pub fn append(&mut self, later: ZSetDelta) {
        self.changes.extend(later.changes);
    }
}

/// A sorted set: add-wins members with register scores, indexed by score.
///
/// Each member's bytes are held twice, as the map key and in the index (like
/// Redis's dict and skiplist, minus Redis's shared sds): free below
/// `ShortBytes`'s inline capacity, one more allocation above it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrZSet {
    /// Every member with its score register (never empty).
    members: HashMap<ShortBytes, ScoreRegister>,
    /// Every member by (visible score, member): the same members as `members`.
    index: BTreeSet<IndexKey>,
}

/// The value of an increment's amount as a float (ZINCRBY writes floats; an
/// integer would only come from a foreign writer and is read as its value).
fn amount_value(amount: Amount) -> f64 {
    match amount {
        Amount::Float(value) => value,
        Amount::Int(value) => value as f64,
    }
}

/// The score fold: the base entry's value, then each increment in order. With
/// no entry the first increment is the start (not `0.0 + it`, which would turn
/// an increment of -0 into 0, unlike Redis).
fn fold_score(base: Option<f64>, amounts: impl IntoIterator<Item = Amount>) -> f64 {
    let mut sum = base;
    for amount in amounts {
        let value = amount_value(amount);
        sum = Some(sum.map_or(value, |s| s + value));
    }
    sum.unwrap_or(0.0)
}

/// The register's score, NaN included.
fn raw_score(register: &ScoreRegister) -> f64 {
    fold_score(register.winner().map(|e| e.value.0), register.increments().iter().map(|i| i.amount))
}

/// The register's score once `extra` is applied: the increment goes where
/// `Register::apply` will insert it (dot order), so the reply of a local
/// ZINCRBY is bit for bit the score read afterwards.
fn raw_score_with(register: &ScoreRegister, extra: &Increment) -> f64 {
    let increments = register.increments();
    let at = increments.partition_point(|i| i.tag.dot < extra.tag.dot);
    let amounts = increments[..at]
        .iter()
        .map(|i| i.amount)
        .chain(core::iter::once(extra.amount))
        .chain(increments[at..].iter().map(|i| i.amount));
    fold_score(register.winner().map(|e| e.value.0), amounts)
}

/// What clients see of a raw score: NaN (only reachable by concurrent writes
/// of opposite infinities) reads as 0.
fn visible(raw: f64) -> f64 {
    if raw.is_nan() { 0.0 } else { raw }
}

fn score_of(register: &ScoreRegister) -> f64 {
    visible(raw_score(register))
}

/// Removes `member` at `score` from the index.
fn index_remove(index: &mut BTreeSet<IndexKey>, score: f64, member: &[u8]) {
    let removed = index.remove(&Probe::new(score, member) as &dyn IndexLookup);
    assert!(removed, "sorted-set index lacks member {:?} at {score}", member.escape_ascii().to_string());
}

/// Moves `member` from score `from` to score `to`, reusing its index entry.
fn index_move(index: &mut BTreeSet<IndexKey>, member: &[u8], from: f64, to: f64) {
    if from.to_bits() == to.to_bits() {
        return;
    }
    let mut key = index
        .take(&Probe::new(from, member) as &dyn IndexLookup)
        .unwrap_or_else(|| panic!("sorted-set index lacks member {:?} at {from}", member.escape_ascii().to_string()));
    key.score = ScoreKey(to);
    let inserted = index.insert(key);
    assert!(inserted, "sorted-set index already holds member at {to}");
}

/// ZADD's decision for one member whose register (if present) is `register`.
/// The caller has refused a NaN `score`. A tag is taken only for a change.
fn zadd_member(
    register: Option<&ScoreRegister>,
    member: &[u8],
    score: f64,
    flags: ZAddFlags,
    tags: &mut impl FnMut() -> Tag,
) -> Result<(ZAddReply, Option<MemberChange>), CommandError> {
    let Some(register) = register else {
        if flags.xx {
            return Ok((ZAddReply::ABORTED, None));
        }
        // GT and LT never stop an add. INCR on a missing member starts the
        // member at the increment itself.
        let tag = tags();
        let change = if flags.incr {
            ScoreRegister::increment(tag, Amount::Float(score))
        } else {
            ScoreRegister::default().assign(tag, F64(score))
        };
        let reply = ZAddReply { added: true, updated: false, score: Some(score) };
        return Ok((reply, Some((ShortBytes::new(member), change))));
    };
    if flags.nx {
        return Ok((ZAddReply::ABORTED, None));
    }
    let raw = raw_score(register);
    let current = visible(raw);
    let new = if flags.incr { current + score } else { score };
    if new.is_nan() {
        return Err(CommandError::ScoreNan);
    }
    if (flags.lt && new >= current) || (flags.gt && new <= current) {
        return Ok((ZAddReply::ABORTED, None));
    }
    if new == current {
        if flags.incr {
            return Ok((ZAddReply { added: false, updated: false, score: Some(current) }, None));
        }
        // The same score again still re-asserts the member: like SADD of a
        // member already present, this is what lets the ZADD win over a
        // concurrent ZREM that observed the older entry (add wins). Redis's
        // reply does not count it as changed.
        let change = register.assign(tags(), F64(current));
        return Ok((
            ZAddReply { added: false, updated: false, score: Some(current) },
            Some((ShortBytes::new(member), change)),
        ));
    }
    let tag = tags();
    // An increment on a NaN score would stay NaN forever: assign instead.
    let (change, after) = if flags.incr && !raw.is_nan() {
        let increment = Increment::new(tag, Amount::Float(score));
        let after = visible(raw_score_with(register, &increment));
        (RegisterDelta { increment: Some(increment), ..RegisterDelta::default() }, after)
    } else {
        (register.assign(tag, F64(new)), new)
    };
    let reply = ZAddReply { added: false, updated: true, score: Some(after) };
    Ok((reply, Some((ShortBytes::new(member), change))))
}

impl OrZSet {
    /// Number of members (ZCARD).
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

    /// The member's score (ZSCORE).
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        self.members.get(member).map(score_of)
    }

    /// The member's score register (for encoders and diagnostics).
    pub fn register(&self, member: &[u8]) -> Option<&ScoreRegister> {
        self.members.get(member)
    }

    /// All members in Redis order: by score, ties by member bytes.
    pub fn iter(&self) -> ZSetIter<'_> {
        self.iter_over(Some(self.index.range::<IndexKey, _>(..)), false, 0, usize::MAX)
    }

    fn iter_over<'a>(
        &'a self,
        range: Option<btree_set::Range<'a, IndexKey>>,
        rev: bool,
        skip: usize,
        take: usize,
    ) -> ZSetIter<'a> {
        match range {
            Some(range) => ZSetIter { range, rev, skip, remaining: take },
            None => ZSetIter { range: self.index.range::<IndexKey, _>(..), rev, skip: 0, remaining: 0 },
        }
    }

    /// ZRANGE start stop [REV]: ranks from 0, negative ranks count from the
    /// end, `stop` inclusive. With `rev`, rank 0 is the greatest member.
    /// Costs O(start + returned): see the module notes on ranks.
    pub fn range_by_rank(&self, start: i64, stop: i64, rev: bool) -> ZSetIter<'_> {
        match rank_window(self.len(), start, stop) {
            Some((skip, take)) => self.iter_over(Some(self.index.range::<IndexKey, _>(..)), rev, skip, take),
            None => self.iter_over(None, rev, 0, 0),
        }
    }

    /// The index range of scores in [min, max] (each end possibly exclusive).
    fn score_range(&self, min: ScoreBound, max: ScoreBound) -> Option<btree_set::Range<'_, IndexKey>> {
        if min.value.is_nan() || max.value.is_nan() {
            debug_assert!(false, "NaN score bound");
            return None;
        }
        // Every bound becomes a probe with the empty member, the least member
        // of its score: "> x" is ">= next float after x", "<= x" is "< next
        // float after x".
        let low_score = if min.exclusive {
            if min.value == f64::INFINITY {
                return None;
            }
            min.value.next_up()
        } else {
            min.value
        };
        let low = Probe::new(low_score, b"");
        let high_probe;
        let high: Bound<&dyn IndexLookup> = if max.exclusive {
            high_probe = Probe::new(max.value, b"");
            Bound::Excluded(&high_probe)
        } else if max.value == f64::INFINITY {
            Bound::Unbounded
        } else {
            high_probe = Probe::new(max.value.next_up(), b"");
            Bound::Excluded(&high_probe)
        };
        let low: &dyn IndexLookup = &low;
        if let Bound::Excluded(high) = high
            && low > high
        {
            return None;
        }
        Some(self.index.range::<dyn IndexLookup, _>((Bound::Included(low), high)))
    }

    /// ZRANGEBYSCORE min max [LIMIT offset count]; with `rev`, the same range
    /// from the top (ZREVRANGEBYSCORE max min: the caller swaps its arguments).
    pub fn range_by_score(&self, min: ScoreBound, max: ScoreBound, rev: bool, limit: Limit) -> ZSetIter<'_> {
        let (skip, take) = limit.window();
        self.iter_over(self.score_range(min, max), rev, skip, take)
    }

    /// ZCOUNT min max. O(log n + m).
    pub fn count_in_score_range(&self, min: ScoreBound, max: ScoreBound) -> usize {
        self.score_range(min, max).map_or(0, |range| range.count())
    }

    /// The index range a lex query selects.
    ///
    /// Redis defines lex ranges only when all members have one score. Then
    /// the range is a plain O(log n + m) search. Otherwise this reproduces
    /// what Redis does for small (listpack) sets: walk in index order (from the
    /// top with `rev`) to the first member inside the near bound and take the
    /// run that follows while it stays inside the far bound; an O(n) scan for a
    /// query whose answer Redis calls unspecified.
    fn lex_range(&self, min: LexBound<'_>, max: LexBound<'_>, rev: bool) -> Option<btree_set::Range<'_, IndexKey>> {
        if lex_range_is_empty(min, max) {
            return None;
        }
        let first = self.index.first()?;
        let last = self.index.last()?;
        if first.score != last.score {
            return self.lex_run_scan(min, max, rev, 0);
        }
        let score = first.score.0;
        let (low_probe, high_probe);
        let low: Bound<&dyn IndexLookup> = match min {
            LexBound::Min => Bound::Unbounded,
            LexBound::Max => return None,
            LexBound::Inclusive(bytes) => {
                low_probe = Probe::new(score, bytes);
                Bound::Included(&low_probe)
            }
            LexBound::Exclusive(bytes) => {
                low_probe = Probe::new(score, bytes);
                Bound::Excluded(&low_probe)
            }
        };
        let high: Bound<&dyn IndexLookup> = match max {
            LexBound::Max => Bound::Unbounded,
            LexBound::Min => return None,
            LexBound::Inclusive(bytes) => {
                high_probe = Probe::new(score, bytes);
                Bound::Included(&high_probe)
            }
            LexBound::Exclusive(bytes) => {
                high_probe = Probe::new(score, bytes);
                Bound::Excluded(&high_probe)
            }
        };
        // `lex_range_is_empty` ruled out low > high and equal bounds with an
        // exclusive end, the cases `BTreeSet::range` refuses.
        Some(self.index.range::<dyn IndexLookup, _>((low, high)))
    }

    /// The listpack walk for sets of several scores (see `lex_range`).
    /// Like Redis's `zzlIsInLexRange`, it first requires the last member in
    /// index order to be at or above `min` and the first at or below `max`.
    /// Then it starts at the first member inside the near bound (which must
    /// be inside the far bound too), steps over `skip` members without
    /// looking at them (Redis's LIMIT offset), and runs while members stay
    /// inside the far bound.
    fn lex_run_scan(
        &self,
        min: LexBound<'_>,
        max: LexBound<'_>,
        rev: bool,
        skip: usize,
    ) -> Option<btree_set::Range<'_, IndexKey>> {
        if !min.admits_from_below(&self.index.last()?.member) || !max.admits_from_above(&self.index.first()?.member) {
            return None;
        }
        fn walk<'k>(
            mut keys: impl Iterator<Item = &'k IndexKey>,
            near: impl Fn(&[u8]) -> bool,
            far: impl Fn(&[u8]) -> bool,
            skip: usize,
        ) -> Option<(&'k IndexKey, Option<&'k IndexKey>)> {
            let start = keys.by_ref().find(|k| near(&k.member))?;
            if !far(&start.member) {
                return None;
            }
            let first = if skip == 0 { start } else { keys.by_ref().nth(skip - 1)? };
            if !far(&first.member) {
                return None;
            }
            Some((first, keys.find(|k| !far(&k.member))))
        }
        let (low, high): (Bound<&IndexKey>, Bound<&IndexKey>) = if rev {
            let near = |m: &[u8]| max.admits_from_above(m);
            let far = |m: &[u8]| min.admits_from_below(m);
            let (first, end) = walk(self.index.iter().rev(), near, far, skip)?;
            (end.map_or(Bound::Unbounded, Bound::Excluded), Bound::Included(first))
        } else {
            let near = |m: &[u8]| min.admits_from_below(m);
            let far = |m: &[u8]| max.admits_from_above(m);
            let (first, end) = walk(self.index.iter(), near, far, skip)?;
            (Bound::Included(first), end.map_or(Bound::Unbounded, Bound::Excluded))
        };
        Some(self.index.range::<IndexKey, _>((low, high)))
    }

    /// ZRANGEBYLEX min max [LIMIT offset count]; with `rev`, from the top
    /// (ZREVRANGEBYLEX max min: the caller swaps its arguments).
    ///
    /// Redis steps over the LIMIT offset without checking the far bound.
    /// With one score the range is contiguous and that is the same as
    /// skipping inside it; with several scores (a walk, see `lex_range`) the
    /// offset may step over members outside the range, as in Redis.
    pub fn range_by_lex(&self, min: LexBound<'_>, max: LexBound<'_>, rev: bool, limit: Limit) -> ZSetIter<'_> {
        let (skip, take) = limit.window();
        let several_scores = match (self.index.first(), self.index.last()) {
            (Some(first), Some(last)) => first.score != last.score,
            _ => false,
        };
        if skip > 0 && take > 0 && several_scores && !lex_range_is_empty(min, max) {
            return self.iter_over(self.lex_run_scan(min, max, rev, skip), rev, 0, take);
        }
        self.iter_over(self.lex_range(min, max, rev), rev, skip, take)
    }

    /// ZLEXCOUNT min max.
    pub fn count_in_lex_range(&self, min: LexBound<'_>, max: LexBound<'_>) -> usize {
        self.lex_range(min, max, false).map_or(0, |range| range.count())
    }

    /// ZRANK / ZREVRANK (WITHSCORE): the member's rank and score. O(rank).
    pub fn rank(&self, member: &[u8], rev: bool) -> Option<(usize, f64)> {
        let score = self.score(member)?;
        let probe = Probe::new(score, member);
        let below = self
            .index
            .range::<dyn IndexLookup, _>((Bound::Unbounded, Bound::Excluded(&probe as &dyn IndexLookup)))
            .count();
        let rank = if rev { self.len() - 1 - below } else { below };
        Some((rank, score))
    }

    /// The greatest tag of any live element (the set's last surviving write).
    pub fn max_tag(&self) -> Option<Tag> {
        self.members.values().filter_map(Register::max_tag).max()
    }

    /// Every live dot.
    pub fn for_each_dot(&self, mut f: impl FnMut(Dot)) {
        self.members.values().for_each(|register| register.for_each_dot(&mut f));
    }

    /// ZADD of one member with Redis 7's flag semantics. Returns what happened
    /// and the delta, if any; a tag is taken only when a delta is made. No
    /// delta when the flags abort the member or the score does not change
    /// (Redis does not propagate those either).
    ///
    /// A plain ZADD assigns the register (it wins over concurrent ZADDs with
    /// smaller tags and resets the increments it observed); ZADD INCR adds an
    /// increment, like ZINCRBY. The conditions (GT, LT, "changed") compare the
    /// current score with `current + increment`, as Redis does; the score
    /// returned is the one read after the delta is applied, which differs from
    /// that sum only in the last bits when other regions' increments are live.
    ///
    /// For several members use [`OrZSet::zadd_many`], which also handles a
    /// member named twice without applying in between.
    ///
    /// Errors: `NotFloat` for a NaN argument (the parser should have refused
    /// it), `ScoreNan` when INCR would make the score NaN (+inf plus -inf).
    pub fn zadd(
        &self,
        member: &[u8],
        score: f64,
        flags: ZAddFlags,
        tags: &mut impl FnMut() -> Tag,
    ) -> Result<(ZAddReply, Option<ZSetDelta>), CommandError> {
        if score.is_nan() {
            return Err(CommandError::NotFloat);
        }
        let (reply, change) = zadd_member(self.members.get(member), member, score, flags, tags)?;
        Ok((reply, change.map(|change| ZSetDelta { changes: smallvec::smallvec![change] })))
    }

    /// ZADD of several (score, member) pairs, in order, as one delta. A member
    /// named again sees the result of its earlier pair (ZADD z 1 m 2 m adds m
    /// and then updates it, as in Redis). Returns the totals and the delta, or
    /// `None` if nothing changed.
    ///
    /// Errors as [`OrZSet::zadd`]; a NaN score is refused before any tag is
    /// taken. INCR takes a single pair (the caller refuses more, as Redis does).
    pub fn zadd_many<'m>(
        &self,
        items: &[(f64, &'m [u8])],
        flags: ZAddFlags,
        tags: &mut impl FnMut() -> Tag,
    ) -> Result<(ZAddTotals, Option<ZSetDelta>), CommandError> {
        debug_assert!(!flags.incr || items.len() <= 1, "ZADD INCR with several pairs");
        if items.iter().any(|(score, _)| score.is_nan()) {
            return Err(CommandError::NotFloat);
        }
        let mut totals = ZAddTotals::default();
        let mut delta = ZSetDelta::default();
        // Members already met in this command; only allocated for several pairs.
        let mut met: HashSet<&'m [u8]> = HashSet::new();
        for &(score, member) in items {
            let pending;
            let register = if items.len() > 1 && !met.insert(member) {
                // A repeat: replay this command's earlier changes of the member
                // on a copy (its new elements are unseen by construction).
                let mut replay = self.members.get(member).cloned().unwrap_or_default();
                let unseen = CausalContext::new();
                for (_, change) in delta.changes.iter().filter(|(m, _)| m.as_slice() == member) {
                    replay.apply(change, &unseen);
                }
                pending = replay;
                Some(&pending).filter(|r| !r.is_empty())
            } else {
                self.members.get(member)
            };
            let (reply, change) = zadd_member(register, member, score, flags, tags)?;
            totals.added += usize::from(reply.added);
            totals.updated += usize::from(reply.updated);
            totals.score = reply.score;
            delta.changes.extend(change);
        }
        Ok((totals, Some(delta).filter(|d| !d.is_empty())))
    }

    /// ZINCRBY: the new score and the delta (empty when the score does not
    /// change, as with an increment of 0). `ScoreNan` if the result would be
    /// NaN, `NotFloat` for a NaN increment.
    pub fn zincrby(
        &self,
        member: &[u8],
        increment: f64,
        tags: &mut impl FnMut() -> Tag,
    ) -> Result<(f64, ZSetDelta), CommandError> {
        let flags = ZAddFlags { incr: true, ..ZAddFlags::default() };
        let (reply, delta) = self.zadd(member, increment, flags, tags)?;
        let score = reply.score.expect("ZINCRBY without conditions always has a score");
        Ok((score, delta.unwrap_or_default()))
    }

    /// ZREM: removes the members present (each once) with every score element
    /// observed. Returns how many were present.
    pub fn zrem<'m>(&self, members: impl IntoIterator<Item = &'m [u8]>) -> (usize, ZSetDelta) {
        let mut delta = ZSetDelta::default();
        let mut removed: HashSet<&[u8]> = HashSet::new();
        for member in members {
            if let Some((key, register)) = self.members.get_key_value(member)
                && removed.insert(member)
            {
                delta.changes.push((key.clone(), register.clear()));
            }
        }
        (delta.changes.len(), delta)
    }

    /// The delta removing every element observed of `members` (all present).
    fn removal_delta<'m>(&self, members: impl Iterator<Item = &'m ShortBytes>) -> ZSetDelta {
        let changes = members
            .map(|member| {
                let register = self.members.get(member.as_slice()).expect("indexed member is in the member map");
                (member.clone(), register.clear())
            })
            .collect();
        ZSetDelta { changes }
    }

    fn pop(&self, count: usize, rev: bool) -> (Vec<(ShortBytes, f64)>, ZSetDelta) {
        let popped: Vec<(ShortBytes, f64)> = self
            .iter_over(Some(self.index.range::<IndexKey, _>(..)), rev, 0, count)
            .map(|(m, s)| (m.clone(), s))
            .collect();
        let delta = self.removal_delta(popped.iter().map(|(member, _)| member));
        (popped, delta)
    }

    /// ZPOPMIN count: the `count` lowest members, lowest first, and the delta
    /// removing them. (Two regions popping concurrently may pop the same
    /// member; the removals merge.)
    pub fn pop_min(&self, count: usize) -> (Vec<(ShortBytes, f64)>, ZSetDelta) {
        self.pop(count, false)
    }

    /// ZPOPMAX count: the `count` greatest members, greatest first.
    pub fn pop_max(&self, count: usize) -> (Vec<(ShortBytes, f64)>, ZSetDelta) {
        self.pop(count, true)
    }

    /// ZREMRANGEBYRANK start stop (ZRANGE's index rules).
    pub fn remove_range_by_rank(&self, start: i64, stop: i64) -> (usize, ZSetDelta) {
        let delta = self.removal_delta(self.range_by_rank(start, stop, false).map(|(member, _)| member));
        (delta.changes.len(), delta)
    }

    /// ZREMRANGEBYSCORE min max.
    pub fn remove_range_by_score(&self, min: ScoreBound, max: ScoreBound) -> (usize, ZSetDelta) {
        let range = self.range_by_score(min, max, false, Limit::ALL);
        let delta = self.removal_delta(range.map(|(member, _)| member));
        (delta.changes.len(), delta)
    }

    /// ZREMRANGEBYLEX min max.
    pub fn remove_range_by_lex(&self, min: LexBound<'_>, max: LexBound<'_>) -> (usize, ZSetDelta) {
        let range = self.range_by_lex(min, max, false, Limit::ALL);
        let delta = self.removal_delta(range.map(|(member, _)| member));
        (delta.changes.len(), delta)
    }

    /// The delta removing every member observed (DEL, or the loser of a type
    /// conflict), in index order.
    pub fn clear(&self) -> ZSetDelta {
        self.removal_delta(self.iter().map(|(member, _)| member))
    }

    /// The state as a delta that rebuilds it from nothing, members in byte
    /// order (snapshots).
    pub fn as_delta(&self) -> ZSetDelta {
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        let changes = members
            .into_iter()
            .flat_map(|(member, register)| register.as_deltas().into_iter().map(move |d| (member.clone(), d)))
            .collect();
        ZSetDelta { changes }
    }

    /// Merges a delta; `seen` is the receiver's context before it.
    pub fn apply(&mut self, delta: &ZSetDelta, seen: &CausalContext) {
        for (member, change) in &delta.changes {
            self.apply_change(member, change, seen);
        }
    }

    fn apply_change(&mut self, member: &ShortBytes, change: &RegisterDelta<F64>, seen: &CausalContext) {
        if let Some(register) = self.members.get_mut(member.as_slice()) {
            let before = score_of(register);
            register.apply(change, seen);
            if register.is_empty() {
                self.members.remove(member.as_slice());
                index_remove(&mut self.index, before, member);
            } else {
                index_move(&mut self.index, member, before, score_of(register));
            }
            return;
        }
        // An absent member is only (re)created by an element not seen yet: the
        // removals name elements that are gone here already or will be skipped.
        let adds_unseen = change.entry.as_ref().is_some_and(|e| !seen.contains(e.tag.dot))
            || change.increment.as_ref().is_some_and(|i| !seen.contains(i.tag.dot));
        if !adds_unseen {
            return;
        }
        let mut register = ScoreRegister::default();
        register.apply(change, seen);
        debug_assert!(!register.is_empty(), "register apply dropped an unseen element");
        let inserted = self.index.insert(IndexKey { score: ScoreKey(score_of(&register)), member: member.clone() });
        assert!(inserted, "sorted-set index holds a member the map lacks");
        self.members.insert(member.clone(), register);
    }

    /// Removes every element whose dot is in `context` (a flush that observed
    /// them); a member loses only those elements. Returns true if anything went.
    pub fn remove_covered(&mut self, context: &CausalContext) -> bool {
        let mut changed = false;
        let index = &mut self.index;
        self.members.retain(|member, register| {
            let mut covered = false;
            register.for_each_dot(|dot| covered |= context.contains(dot));
            if !covered {
                return true;
            }
            changed = true;
            let before = score_of(register);
            register.remove_covered(context);
            if register.is_empty() {
                index_remove(index, before, member);
                false
            } else {
                index_move(index, member, before, score_of(register));
                true
            }
        });
        changed
    }

    /// Garbage collection with a causally stable vector, delegated to each
    /// member's [`Register::collect`]. Merging stable increments may change
    /// the last bits of a score (another rounding order); every replica that
    /// collects with the same vector gets the same bits, and the index follows.
    /// Returns the number of elements collected.
    pub fn collect(&mut self, stable: &VersionVector) -> usize {
        let mut collected = 0;
        for (member, register) in self.members.iter_mut() {
            if register.entries().len() < 2 && register.increments().len() < 2 {
                continue;
            }
            let before = score_of(register);
            collected += register.collect(stable);
            // Even with nothing collected the bits may move: a lone stable
            // increment of -0 is rewritten as 0 (the merge starts from 0).
            index_move(&mut self.index, member, before, score_of(register));
        }
        collected
    }

    /// Checks the invariants: no empty register; entries sorted by tag and
    /// increments by dot, all distinct; no NaN stored; only float increments;
    /// the index holds exactly the members, each at its current score (bits).
    pub fn validate(&self) -> Result<(), String> {
        if self.members.len() != self.index.len() {
            return Err(format!("{} members but {} index entries", self.members.len(), self.index.len()));
        }
        for (member, register) in &self.members {
            if register.is_empty() {
                return Err(format!("member {member:?} has an empty register"));
            }
            let entries = register.entries();
            if entries.windows(2).any(|w| w[0].tag >= w[1].tag) {
                return Err(format!("member {member:?} has unsorted entries {entries:?}"));
            }
            if let Some(entry) = entries.iter().find(|e| e.value.0.is_nan()) {
                return Err(format!("member {member:?} stores NaN in {entry:?}"));
            }
            let increments = register.increments();
            if increments.windows(2).any(|w| w[0].tag.dot >= w[1].tag.dot) {
                return Err(format!("member {member:?} has unsorted increments {increments:?}"));
            }
            if let Some(increment) =
                increments.iter().find(|i| !matches!(i.amount, Amount::Float(value) if !value.is_nan()))
            {
                return Err(format!("member {member:?} has a bad increment {increment:?}"));
            }
            let score = score_of(register);
            match self.index.get(&Probe::new(score, member) as &dyn IndexLookup) {
                Some(key) if key.score.0.to_bits() == score.to_bits() => {}
                found => return Err(format!("member {member:?} at {score} indexed as {found:?}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot::ReplicaId;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use rand::seq::SliceRandom;
    use std::collections::BTreeMap;

    /// Allocates tags like the keyspace: one replica, contiguous sequence.
    struct Source {
        replica: u16,
        seq: u64,
        hlc: u64,
    }

    impl Source {
        fn next(&mut self) -> Tag {
            self.seq += 1;
            self.hlc += 1;
            Tag::new(Dot::new(ReplicaId(self.replica), self.seq), self.hlc)
        }
    }

    /// One replica's sorted set and causal context, applying deltas the way
    /// the keyspace does: `apply(delta, seen)`, then every dot into `seen`.
    struct Node {
        zset: OrZSet,
        seen: CausalContext,
        source: Source,
    }

    impl Node {
        fn new(replica: u16) -> Node {
            Node { zset: OrZSet::default(), seen: CausalContext::new(), source: Source { replica, seq: 0, hlc: 0 } }
        }

        fn deliver(&mut self, delta: &ZSetDelta) {
            self.zset.apply(delta, &self.seen);
            delta.for_each_dot(|d| self.seen.insert(d));
            self.zset.validate().unwrap();
        }

        fn zadd(&mut self, member: &str, score: f64, flags: ZAddFlags) -> (ZAddReply, Option<ZSetDelta>) {
            let (reply, delta) = self.zset.zadd(member.as_bytes(), score, flags, &mut || self.source.next()).unwrap();
            if let Some(delta) = &delta {
                self.deliver(delta);
            }
            (reply, delta)
        }

        fn add(&mut self, member: &str, score: f64) -> ZSetDelta {
            self.zadd(member, score, ZAddFlags::default()).1.unwrap()
        }

        fn incr(&mut self, member: &str, by: f64) -> (f64, ZSetDelta) {
            let (score, delta) = self.zset.zincrby(member.as_bytes(), by, &mut || self.source.next()).unwrap();
            self.deliver(&delta);
            assert_eq!(self.zset.score(member.as_bytes()).map(f64::to_bits), Some(score.to_bits()));
            (score, delta)
        }

        fn rem(&mut self, members: &[&str]) -> (usize, ZSetDelta) {
            let (count, delta) = self.zset.zrem(members.iter().map(|m| m.as_bytes()));
            self.deliver(&delta);
            (count, delta)
        }
    }

    fn listing(zset: &OrZSet) -> Vec<(Vec<u8>, u64)> {
        zset.iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect()
    }

    fn members(iter: ZSetIter<'_>) -> Vec<String> {
        iter.map(|(m, _)| String::from_utf8(m.to_vec()).unwrap()).collect()
    }

    fn with_scores(iter: ZSetIter<'_>) -> Vec<(String, f64)> {
        iter.map(|(m, s)| (String::from_utf8(m.to_vec()).unwrap(), s)).collect()
    }

    fn flags(f: impl FnOnce(&mut ZAddFlags)) -> ZAddFlags {
        let mut flags = ZAddFlags::default();
        f(&mut flags);
        flags
    }

    /// a=1 b=2 c=3 d=4 e=5.
    fn abcde() -> Node {
        let mut node = Node::new(1);
        for (i, m) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            node.add(m, (i + 1) as f64);
        }
        node
    }

    #[test]
    fn zadd_adds_updates_and_counts_with_ch() {
        let mut node = Node::new(1);
        let (reply, delta) = node.zadd("m", 1.0, ZAddFlags::default());
        assert_eq!(reply, ZAddReply { added: true, updated: false, score: Some(1.0) });
        assert!(delta.is_some());
        assert_eq!((reply.count(false), reply.count(true)), (1, 1));
        let (reply, delta) = node.zadd("m", 2.0, ZAddFlags::default());
        assert_eq!(reply, ZAddReply { added: false, updated: true, score: Some(2.0) });
        assert!(delta.is_some());
        assert_eq!((reply.count(false), reply.count(true)), (0, 1));
        // The same score is not counted as a change, but re-asserts the
        // member with a new entry (so it wins over a concurrent ZREM).
        let seq = node.source.seq;
        let (reply, delta) = node.zadd("m", 2.0, ZAddFlags::default());
        assert_eq!(reply, ZAddReply { added: false, updated: false, score: Some(2.0) });
        assert_eq!((reply.count(false), reply.count(true)), (0, 0));
        assert!(delta.is_some());
        assert_eq!(node.source.seq, seq + 1, "one tag for the re-assertion");
        assert_eq!(node.zset.score(b"m"), Some(2.0));
        assert_eq!(node.zset.len(), 1);
    }

    #[test]
    fn zadd_of_an_unchanged_score_wins_over_a_concurrent_zrem() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        let first = a.add("m", 1.0);
        b.deliver(&first);
        let (_, readd) = a.zadd("m", 1.0, ZAddFlags::default());
        let (_, remove) = b.zset.zrem([&b"m"[..]]);
        let readd = readd.unwrap();
        b.deliver(&remove);
        a.deliver(&remove);
        b.deliver(&readd);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(1.0));
    }

    #[test]
    fn zadd_nx_and_xx() {
        let mut node = Node::new(1);
        node.add("m", 1.0);
        let seq = node.source.seq;
        assert_eq!(node.zadd("m", 5.0, flags(|f| f.nx = true)), (ZAddReply::ABORTED, None));
        assert_eq!(node.zadd("x", 5.0, flags(|f| f.xx = true)), (ZAddReply::ABORTED, None));
        assert_eq!(node.source.seq, seq);
        assert!(!node.zset.contains(b"x"));
        assert!(node.zadd("n", 5.0, flags(|f| f.nx = true)).0.added);
        let (reply, _) = node.zadd("m", 3.0, flags(|f| f.xx = true));
        assert_eq!(reply, ZAddReply { added: false, updated: true, score: Some(3.0) });
        assert_eq!(node.zset.score(b"m"), Some(3.0));
    }

    #[test]
    fn zadd_gt_and_lt_with_ch() {
        let mut node = Node::new(1);
        node.add("m", 5.0);
        let gt_ch = flags(|f| {
            f.gt = true;
            f.ch = true
        });
        assert_eq!(node.zadd("m", 4.0, gt_ch).0, ZAddReply::ABORTED);
        assert_eq!(node.zadd("m", 5.0, gt_ch).0, ZAddReply::ABORTED);
        let (reply, _) = node.zadd("m", 6.0, gt_ch);
        assert_eq!(reply.count(true), 1);
        assert_eq!(reply.count(false), 0);
        assert_eq!(node.zset.score(b"m"), Some(6.0));
        let lt = flags(|f| f.lt = true);
        assert_eq!(node.zadd("m", 7.0, lt).0, ZAddReply::ABORTED);
        assert!(node.zadd("m", 2.0, lt).0.updated);
        assert_eq!(node.zset.score(b"m"), Some(2.0));
        // GT and LT do not prevent adding new members.
        assert!(node.zadd("n", -100.0, flags(|f| f.gt = true)).0.added);
        // XX with GT on a missing member adds nothing.
        let xx_gt = flags(|f| {
            f.xx = true;
            f.gt = true
        });
        assert_eq!(node.zadd("o", 1.0, xx_gt).0, ZAddReply::ABORTED);
    }

    #[test]
    fn zadd_incr_returns_the_new_score_or_nil() {
        let mut node = Node::new(1);
        let incr = flags(|f| f.incr = true);
        assert_eq!(node.zadd("m", 2.5, incr).0, ZAddReply { added: true, updated: false, score: Some(2.5) });
        assert_eq!(node.zadd("m", 1.0, incr).0, ZAddReply { added: false, updated: true, score: Some(3.5) });
        assert_eq!(node.zset.score(b"m"), Some(3.5));
        let nx_incr = flags(|f| {
            f.nx = true;
            f.incr = true
        });
        assert_eq!(node.zadd("m", 1.0, nx_incr).0.score, None);
        let xx_incr = flags(|f| {
            f.xx = true;
            f.incr = true
        });
        assert_eq!(node.zadd("missing", 1.0, xx_incr).0.score, None);
        let gt_incr = flags(|f| {
            f.gt = true;
            f.incr = true
        });
        assert_eq!(node.zadd("m", -1.0, gt_incr).0.score, None);
        assert_eq!(node.zadd("m", 1.0, gt_incr).0.score, Some(4.5));
        // The increment is an increment element, not an assignment.
        let register = node.zset.register(b"m").unwrap();
        assert_eq!(register.entries().len(), 0);
        assert_eq!(register.increments().len(), 3);
    }

    #[test]
    fn zincrby_refuses_nan_without_taking_a_tag() {
        let mut node = Node::new(1);
        node.add("m", f64::INFINITY);
        let seq = node.source.seq;
        let result = node.zset.zincrby(b"m", f64::NEG_INFINITY, &mut || node.source.next());
        assert_eq!(result, Err(CommandError::ScoreNan));
        assert_eq!(CommandError::ScoreNan.to_string(), "ERR resulting score is not a number (NaN)");
        let result = node.zset.zincrby(b"m", f64::NAN, &mut || node.source.next());
        assert_eq!(result, Err(CommandError::NotFloat));
        assert_eq!(node.source.seq, seq);
        // Infinity plus a finite increment stays infinite, as in Redis.
        assert_eq!(node.incr("m", -5.0).0, f64::INFINITY);
        // ZINCRBY on a missing member starts from the increment (even -0).
        assert_eq!(node.incr("new", -0.0).0.to_bits(), (-0.0f64).to_bits());
        // An increment of 0 changes nothing and ships nothing.
        let (score, delta) = node.zset.zincrby(b"new", 0.0, &mut || node.source.next()).unwrap();
        assert_eq!(score.to_bits(), (-0.0f64).to_bits());
        assert!(delta.is_empty());
    }

    #[test]
    fn zadd_many_sees_its_own_earlier_pairs() {
        let mut node = Node::new(1);
        let first_x = node.add("x", 7.0);
        let items: [(f64, &[u8]); 4] = [(1.0, b"m"), (2.0, b"m"), (7.0, b"x"), (3.0, b"n")];
        let (totals, delta) = node.zset.zadd_many(&items, ZAddFlags::default(), &mut || node.source.next()).unwrap();
        assert_eq!(totals.added, 2);
        assert_eq!(totals.updated, 1);
        assert_eq!((totals.count(false), totals.count(true)), (2, 3));
        let delta = delta.unwrap();
        // m added, m updated, x re-asserted with its unchanged score, n added.
        assert_eq!(delta.changes.len(), 4);
        let mut remote = Node::new(2);
        remote.deliver(&delta);
        remote.deliver(&first_x);
        node.deliver(&delta);
        assert_eq!(node.zset, remote.zset);
        assert_eq!(node.zset.score(b"m"), Some(2.0));
        assert_eq!(node.zset.register(b"m").unwrap().entries().len(), 1);
        // A NaN anywhere refuses the whole command before taking a tag.
        let seq = node.source.seq;
        let items: [(f64, &[u8]); 2] = [(1.0, b"p"), (f64::NAN, b"q")];
        let result = node.zset.zadd_many(&items, ZAddFlags::default(), &mut || node.source.next());
        assert_eq!(result, Err(CommandError::NotFloat));
        assert_eq!(node.source.seq, seq);
        // NX on a repeated new member: added once, the repeat aborted.
        let items: [(f64, &[u8]); 2] = [(1.0, b"r"), (2.0, b"r")];
        let nx = flags(|f| f.nx = true);
        let (totals, delta) = node.zset.zadd_many(&items, nx, &mut || node.source.next()).unwrap();
        assert_eq!((totals.added, totals.updated, totals.score), (1, 0, None));
        node.deliver(&delta.unwrap());
        assert_eq!(node.zset.score(b"r"), Some(1.0));
    }

    #[test]
    fn range_by_rank_follows_redis_indexes() {
        let node = abcde();
        let z = &node.zset;
        assert_eq!(members(z.range_by_rank(0, -1, false)), ["a", "b", "c", "d", "e"]);
        assert_eq!(members(z.range_by_rank(-2, -1, false)), ["d", "e"]);
        assert_eq!(members(z.range_by_rank(1, 1, false)), ["b"]);
        assert_eq!(members(z.range_by_rank(3, 1, false)), Vec::<String>::new());
        assert_eq!(members(z.range_by_rank(5, 10, false)), Vec::<String>::new());
        assert_eq!(members(z.range_by_rank(-100, 1, false)), ["a", "b"]);
        assert_eq!(members(z.range_by_rank(3, 100, false)), ["d", "e"]);
        assert_eq!(members(z.range_by_rank(-1, -2, false)), Vec::<String>::new());
        assert_eq!(members(z.range_by_rank(0, 1, true)), ["e", "d"]);
        assert_eq!(members(z.range_by_rank(-1, -1, true)), ["a"]);
        assert_eq!(members(z.range_by_rank(i64::MIN, i64::MAX, false)).len(), 5);
        assert_eq!(members(OrZSet::default().range_by_rank(0, -1, false)), Vec::<String>::new());
    }

    #[test]
    fn range_by_score_bounds_and_limit() {
        let mut node = abcde();
        node.add("low", f64::NEG_INFINITY);
        node.add("high", f64::INFINITY);
        let z = &node.zset;
        let all = Limit::ALL;
        let range = |min, max| members(z.range_by_score(min, max, false, all));
        use ScoreBound as B;
        assert_eq!(range(B::inclusive(2.0), B::inclusive(4.0)), ["b", "c", "d"]);
        assert_eq!(range(B::exclusive(2.0), B::inclusive(4.0)), ["c", "d"]);
        assert_eq!(range(B::inclusive(2.0), B::exclusive(4.0)), ["b", "c"]);
        assert_eq!(range(B::exclusive(2.0), B::exclusive(3.0)), Vec::<String>::new());
        assert_eq!(range(B::exclusive(2.0), B::exclusive(2.0)), Vec::<String>::new());
        assert_eq!(range(B::inclusive(3.0), B::inclusive(3.0)), ["c"]);
        assert_eq!(range(B::inclusive(4.0), B::inclusive(2.0)), Vec::<String>::new());
        assert_eq!(range(B::NEG_INF, B::POS_INF), ["low", "a", "b", "c", "d", "e", "high"]);
        assert_eq!(range(B::exclusive(f64::NEG_INFINITY), B::exclusive(f64::INFINITY)), ["a", "b", "c", "d", "e"]);
        assert_eq!(range(B::POS_INF, B::POS_INF), ["high"]);
        assert_eq!(range(B::exclusive(f64::INFINITY), B::POS_INF), Vec::<String>::new());
        assert_eq!(range(B::NEG_INF, B::NEG_INF), ["low"]);
        assert_eq!(range(B::inclusive(4.5), B::POS_INF), ["e", "high"]);
        let limited = |rev, offset, count| {
            members(z.range_by_score(B::inclusive(1.0), B::inclusive(5.0), rev, Limit { offset, count }))
        };
        assert_eq!(limited(false, 1, 2), ["b", "c"]);
        assert_eq!(limited(false, 3, -1), ["d", "e"]);
        assert_eq!(limited(false, 0, 0), Vec::<String>::new());
        assert_eq!(limited(false, -1, 2), Vec::<String>::new());
        assert_eq!(limited(false, 10, 2), Vec::<String>::new());
        assert_eq!(limited(true, 1, 2), ["d", "c"]);
        assert_eq!(
            with_scores(z.range_by_score(B::inclusive(5.0), B::POS_INF, true, all)),
            [("high".to_string(), f64::INFINITY), ("e".to_string(), 5.0)]
        );
        assert_eq!(z.count_in_score_range(B::exclusive(1.0), B::inclusive(5.0)), 4);
        assert_eq!(z.count_in_score_range(B::NEG_INF, B::POS_INF), 7);
        assert_eq!(z.count_in_score_range(B::inclusive(9.0), B::inclusive(1.0)), 0);
    }

    #[test]
    fn ties_order_by_member_bytes_and_negative_zero_ties_zero() {
        let mut node = Node::new(1);
        let long = "a member name longer than the inline capacity";
        for m in ["b", "", "ab", long, "B"] {
            node.add(m, 1.0);
        }
        node.add("z0", 0.0);
        node.add("n0", -0.0);
        let z = &node.zset;
        assert_eq!(members(z.iter()), ["n0", "z0", "", "B", long, "ab", "b"]);
        assert_eq!(z.score(b"n0").unwrap().to_bits(), (-0.0f64).to_bits());
        // -0 and 0 are one score: both in [0, 0] and neither in (0, 1).
        assert_eq!(
            members(z.range_by_score(ScoreBound::inclusive(0.0), ScoreBound::inclusive(-0.0), false, Limit::ALL)),
            ["n0", "z0"]
        );
        assert_eq!(z.count_in_score_range(ScoreBound::exclusive(-0.0), ScoreBound::exclusive(1.0)), 0);
        assert_eq!(z.rank(long.as_bytes(), false), Some((4, 1.0)));
        assert_eq!(z.rank(long.as_bytes(), true), Some((2, 1.0)));
        assert_eq!(z.rank(b"n0", true), Some((6, -0.0)));
        assert_eq!(z.rank(b"missing", false), None);
    }

    #[test]
    fn range_by_lex_follows_redis_bounds() {
        let mut node = Node::new(1);
        for m in ["a", "b", "c", "d", "e"] {
            node.add(m, 0.0);
        }
        let z = &node.zset;
        let parse = |arg: &'static str| LexBound::parse(arg.as_bytes()).unwrap();
        let range = |min, max| members(z.range_by_lex(parse(min), parse(max), false, Limit::ALL));
        assert_eq!(range("[b", "[d"), ["b", "c", "d"]);
        assert_eq!(range("(b", "(d"), ["c"]);
        assert_eq!(range("(b", "[d"), ["c", "d"]);
        assert_eq!(range("-", "+"), ["a", "b", "c", "d", "e"]);
        assert_eq!(range("-", "(c"), ["a", "b"]);
        assert_eq!(range("[c", "+"), ["c", "d", "e"]);
        assert_eq!(range("+", "-"), Vec::<String>::new());
        assert_eq!(range("-", "-"), Vec::<String>::new());
        assert_eq!(range("+", "+"), Vec::<String>::new());
        assert_eq!(range("[b", "(b"), Vec::<String>::new());
        assert_eq!(range("[b", "[b"), ["b"]);
        assert_eq!(range("[d", "[b"), Vec::<String>::new());
        assert_eq!(range("[bb", "[cc"), ["c"]);
        assert_eq!(range("[", "[c"), ["a", "b", "c"]);
        let rev = members(z.range_by_lex(parse("[b"), parse("+"), true, Limit { offset: 1, count: 2 }));
        assert_eq!(rev, ["d", "c"]);
        assert_eq!(members(z.range_by_lex(parse("-"), parse("+"), false, Limit { offset: 2, count: 1 })), ["c"]);
        assert_eq!(z.count_in_lex_range(parse("(a"), parse("[c")), 2);
        assert_eq!(LexBound::parse(b"b"), None);
        assert_eq!(LexBound::parse(b""), None);
        assert_eq!(LexBound::parse(b"("), Some(LexBound::Exclusive(b"")));
        let (count, delta) = z.remove_range_by_lex(parse("(a"), parse("[c"));
        assert_eq!(count, 2);
        node.deliver(&delta);
        assert_eq!(members(node.zset.iter()), ["a", "d", "e"]);
    }

    #[test]
    fn lex_ranges_of_mixed_scores_walk_like_a_listpack() {
        // Redis leaves these unspecified; for small sets it walks in score
        // order from the first member inside `min` while members stay <= max.
        let mut node = Node::new(1);
        for (m, s) in [("b", 1.0), ("z", 2.0), ("c", 3.0), ("a", 4.0)] {
            node.add(m, s);
        }
        let z = &node.zset;
        let range = |min: &'static str, max: &'static str, rev| {
            members(z.range_by_lex(
                LexBound::parse(min.as_bytes()).unwrap(),
                LexBound::parse(max.as_bytes()).unwrap(),
                rev,
                Limit::ALL,
            ))
        };
        assert_eq!(range("[a", "[c", false), ["b"]);
        // The last member in score order (a) is below `[c`: Redis's
        // `zzlIsInLexRange` calls the whole range empty (checked on 7.0).
        assert_eq!(range("[c", "+", false), Vec::<String>::new());
        assert_eq!(range("(a", "[z", false), Vec::<String>::new());
        assert_eq!(range("[a", "+", false), ["b", "z", "c", "a"]);
        assert_eq!(range("[c", "[d", false), Vec::<String>::new());
        assert_eq!(range("-", "[c", true), ["a", "c", "z", "b"]);
        assert_eq!(range("[y", "[y", false), Vec::<String>::new());
        assert_eq!(z.count_in_lex_range(LexBound::Min, LexBound::Max), 4);
        // LIMIT's offset is stepped over without checking the far bound
        // (checked on Redis 7.0 over b z c a).
        let limited = |min: &'static str, max: &'static str, rev, offset| {
            members(z.range_by_lex(
                LexBound::parse(min.as_bytes()).unwrap(),
                LexBound::parse(max.as_bytes()).unwrap(),
                rev,
                Limit { offset, count: -1 },
            ))
        };
        assert_eq!(range("[a", "(c", false), ["b"]);
        assert_eq!(limited("[a", "(c", false, 1), Vec::<String>::new());
        assert_eq!(limited("[a", "(c", false, 3), ["a"]);
        assert_eq!(limited("[a", "(c", true, 1), ["c", "z", "b"]);
        assert_eq!(limited("[a", "+", true, 2), ["z", "b"]);
    }

    #[test]
    fn lex_fast_path_matches_the_listpack_walk_on_one_score() {
        let mut node = Node::new(1);
        for m in ["", "a", "aa", "b", "ba", "c"] {
            node.add(m, 2.0);
        }
        let z = &node.zset;
        let words: [&[u8]; 7] = [b"", b"a", b"ab", b"b", b"bz", b"c", b"d"];
        let mut bounds = vec![LexBound::Min, LexBound::Max];
        for w in words {
            bounds.push(LexBound::Inclusive(w));
            bounds.push(LexBound::Exclusive(w));
        }
        let keys = |range: Option<btree_set::Range<'_, IndexKey>>| -> Vec<Vec<u8>> {
            range.map(|r| r.map(|k| k.member.to_vec()).collect()).unwrap_or_default()
        };
        for &min in &bounds {
            for &max in &bounds {
                let fast = keys(z.lex_range(min, max, false));
                let scan =
                    if lex_range_is_empty(min, max) { Vec::new() } else { keys(z.lex_run_scan(min, max, false, 0)) };
                let scan_rev =
                    if lex_range_is_empty(min, max) { Vec::new() } else { keys(z.lex_run_scan(min, max, true, 0)) };
                assert_eq!(fast, scan, "{min:?} {max:?}");
                assert_eq!(fast, scan_rev, "{min:?} {max:?}");
            }
        }
    }

    #[test]
    fn pops_and_range_removals() {
        let mut node = abcde();
        let (popped, delta) = node.zset.pop_min(2);
        assert_eq!(popped, vec![(ShortBytes::from("a"), 1.0), (ShortBytes::from("b"), 2.0)]);
        node.deliver(&delta);
        let (popped, delta) = node.zset.pop_max(1);
        assert_eq!(popped, vec![(ShortBytes::from("e"), 5.0)]);
        node.deliver(&delta);
        let (popped, delta) = node.zset.pop_max(10);
        assert_eq!(popped.len(), 2);
        node.deliver(&delta);
        assert!(node.zset.is_empty());
        let (popped, delta) = node.zset.pop_min(1);
        assert!(popped.is_empty() && delta.is_empty());

        let mut node = abcde();
        let (count, delta) = node.zset.remove_range_by_rank(-2, -1);
        assert_eq!(count, 2);
        node.deliver(&delta);
        assert_eq!(members(node.zset.iter()), ["a", "b", "c"]);
        let (count, delta) = node.zset.remove_range_by_score(ScoreBound::exclusive(1.0), ScoreBound::POS_INF);
        assert_eq!(count, 2);
        node.deliver(&delta);
        assert_eq!(members(node.zset.iter()), ["a"]);
        assert_eq!(node.zset.remove_range_by_rank(5, 6).0, 0);
        let delta = node.zset.clear();
        node.deliver(&delta);
        assert!(node.zset.is_empty());
        assert_eq!(node.zset.max_tag(), None);
    }

    #[test]
    fn zrem_counts_each_present_member_once() {
        let mut node = abcde();
        let (count, delta) = node.rem(&["a", "a", "x", "c"]);
        assert_eq!(count, 2);
        assert_eq!(delta.changes.len(), 2);
        assert_eq!(members(node.zset.iter()), ["b", "d", "e"]);
        let (count, delta) = node.rem(&["a"]);
        assert_eq!(count, 0);
        assert!(delta.is_empty());
    }

    /// ZADD z 1.1 m everywhere; region A does ZINCRBY z 1 m twice (reads 3.1);
    /// region B concurrently does ZREM z m. After merging both read m = 2.
    #[test]
    fn two_region_increments_survive_a_concurrent_zrem() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        let add = a.add("m", 1.1);
        b.deliver(&add);
        let (score1, incr1) = a.incr("m", 1.0);
        let (score2, incr2) = a.incr("m", 1.0);
        assert_eq!((score1, score2), (2.1, 3.1));
        let (count, rem) = b.rem(&["m"]);
        assert_eq!(count, 1);
        assert!(!b.zset.contains(b"m"));
        a.deliver(&rem);
        b.deliver(&incr2);
        b.deliver(&incr1);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(2.0));
        assert_eq!(b.zset.score(b"m"), Some(2.0));
        assert_eq!(members(a.zset.iter()), ["m"]);
    }

    #[test]
    fn concurrent_zadds_the_greater_tag_wins() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        b.source.hlc = 10; // B's write is later.
        let from_a = a.add("m", 1.0);
        let from_b = b.add("m", 2.0);
        a.deliver(&from_b);
        b.deliver(&from_a);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(2.0));
        assert_eq!(a.zset.register(b"m").unwrap().entries().len(), 2);
        // Equal HLC: the greater replica id wins.
        let mut c = Node::new(3);
        let mut d = Node::new(4);
        let from_c = c.add("m", 3.0);
        let from_d = d.add("m", 4.0);
        c.deliver(&from_d);
        d.deliver(&from_c);
        assert_eq!(c.zset.score(b"m"), Some(4.0));
        assert_eq!(c.zset, d.zset);
    }

    #[test]
    fn zadd_wins_over_a_concurrent_zrem() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        let add = a.add("m", 1.0);
        b.deliver(&add);
        let readd = a.add("m", 5.0);
        let (_, rem) = b.rem(&["m"]);
        a.deliver(&rem);
        b.deliver(&readd);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(5.0));
        // A ZADD concurrent with ZINCRBY keeps the increment it did not see.
        let incr = a.incr("m", 2.0).1;
        let assign = b.add("m", 10.0);
        a.deliver(&assign);
        b.deliver(&incr);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(12.0));
    }

    #[test]
    fn opposite_infinities_merge_to_a_score_read_as_zero() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        let add = a.add("m", 1.0);
        b.deliver(&add);
        let up = a.incr("m", f64::INFINITY).1;
        let down = b.incr("m", f64::NEG_INFINITY).1;
        a.deliver(&down);
        b.deliver(&up);
        assert_eq!(a.zset, b.zset);
        assert_eq!(a.zset.score(b"m"), Some(0.0));
        assert_eq!(a.zset.rank(b"m", false), Some((0, 0.0)));
        // The next increment restarts from the visible 0 instead of adding to NaN.
        let (score, _) = a.incr("m", 2.0);
        assert_eq!(score, 2.0);
        assert_eq!(a.zset.register(b"m").unwrap().increments().len(), 0);
    }

    /// A delivery order that is not causal: O1 (ZINCRBY that saw W) and O2
    /// (ZREM that saw O1 but not W) arrive before W, and Q is concurrent.
    #[test]
    fn non_causal_delivery_converges() {
        let mut w_node = Node::new(1);
        let mut o_node = Node::new(2);
        let mut q_node = Node::new(3);
        let w = w_node.add("m", 1.0);
        o_node.deliver(&w);
        let o1 = o_node.incr("m", 1.0).1;
        let mut third = Node::new(4);
        third.deliver(&o1);
        let o2 = third.rem(&["m"]).1;
        let q = q_node.incr("m", 5.0).1;
        let orders: [[&ZSetDelta; 4]; 3] = [[&o1, &o2, &w, &q], [&q, &w, &o1, &o2], [&w, &q, &o2, &o1]];
        let mut states = Vec::new();
        for order in orders {
            let mut node = Node::new(9);
            for delta in order {
                node.deliver(delta);
            }
            states.push(node.zset);
        }
        assert_eq!(states[0], states[1]);
        assert_eq!(states[0], states[2]);
        // Nobody observed both W's entry and Q's increment: both remain.
        assert_eq!(states[0].score(b"m"), Some(6.0));
    }

    #[test]
    fn collect_merges_increments_and_moves_the_index() {
        let mut node = Node::new(1);
        node.add("m", 0.1);
        node.incr("m", 0.2);
        let (score, _) = node.incr("m", 0.3);
        assert_eq!(score, (0.1 + 0.2) + 0.3);
        let collected = node.zset.collect(node.seen.vector());
        assert_eq!(collected, 1);
        node.zset.validate().unwrap();
        // Redis's rounding order is lost once increments merge (documented).
        assert_eq!(node.zset.score(b"m"), Some(0.1 + (0.2 + 0.3)));
        assert_eq!(node.zset.register(b"m").unwrap().increments().len(), 1);
        assert_eq!(node.zset.collect(node.seen.vector()), 0);
    }

    #[test]
    fn remove_covered_removes_only_what_the_flush_saw() {
        let mut a = Node::new(1);
        let mut b = Node::new(2);
        for m in ["x", "y"] {
            let d = a.add(m, 1.0);
            b.deliver(&d);
        }
        let flush_context = b.seen.clone();
        let unseen = a.incr("x", 2.0).1;
        b.deliver(&unseen);
        assert!(b.zset.remove_covered(&flush_context));
        b.zset.validate().unwrap();
        assert_eq!(members(b.zset.iter()), ["x"]);
        assert_eq!(b.zset.score(b"x"), Some(2.0));
        assert!(!b.zset.remove_covered(&flush_context));
    }

    #[test]
    fn appended_deltas_apply_like_their_parts() {
        let mut a = Node::new(1);
        let first = a.add("m", 1.0);
        let second = a.add("m", 2.0);
        let mut joined = first.clone();
        joined.append(second.clone());
        let mut b = Node::new(2);
        b.deliver(&joined);
        b.deliver(&first);
        assert_eq!(a.zset, b.zset);
        let mut count = 0;
        joined.for_each_dot(|_| count += 1);
        assert_eq!(count, 3);
    }

    // ----- property tests -----

    const MEMBERS: [&str; 6] = ["", "a", "b", "c", "d", "a member longer than twenty-two bytes"];
    const SCORES: [f64; 11] = [f64::NEG_INFINITY, -2.5, -1.0, -0.0, 0.0, 0.5, 1.0, 1.1, 3.0, 1e308, f64::INFINITY];
    const LEX_WORDS: [&[u8]; 4] = [b"", b"a", b"b", b"c"];

    fn lex_bound(i: usize) -> LexBound<'static> {
        match i % 10 {
            0 => LexBound::Min,
            1 => LexBound::Max,
            n if n % 2 == 0 => LexBound::Inclusive(LEX_WORDS[(n - 2) / 2]),
            n => LexBound::Exclusive(LEX_WORDS[(n - 3) / 2]),
        }
    }

    fn score_bound(i: usize, exclusive: bool) -> ScoreBound {
        ScoreBound { value: SCORES[i % SCORES.len()], exclusive }
    }

    /// Valid ZADD flag combinations from a few random bits.
    fn zadd_flags(bits: u8) -> ZAddFlags {
        let mut flags = ZAddFlags { ch: bits & 8 != 0, incr: bits & 16 != 0, ..ZAddFlags::default() };
        match bits % 8 {
            1 => flags.nx = true,
            2 => flags.xx = true,
            3 => flags.gt = true,
            4 => flags.lt = true,
            5 => (flags.xx, flags.gt) = (true, true),
            6 => (flags.xx, flags.lt) = (true, true),
            _ => {}
        }
        flags
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add(Vec<(usize, usize)>, u8),
        Incr(usize, usize),
        Rem(Vec<usize>),
        PopMin(usize),
        PopMax(usize),
        RemRank(i64, i64),
        RemScore(usize, bool, usize, bool),
        RemLex(usize, usize),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (proptest::collection::vec((0..MEMBERS.len(), 0..SCORES.len()), 1..4), any::<u8>())
                .prop_map(|(items, bits)| Op::Add(items, bits)),
            4 => (0..MEMBERS.len(), 0..SCORES.len()).prop_map(|(m, s)| Op::Incr(m, s)),
            2 => proptest::collection::vec(0..MEMBERS.len(), 1..3).prop_map(Op::Rem),
            1 => (0usize..3).prop_map(Op::PopMin),
            1 => (0usize..3).prop_map(Op::PopMax),
            1 => (-4i64..4, -4i64..4).prop_map(|(a, b)| Op::RemRank(a, b)),
            1 => (0..SCORES.len(), any::<bool>(), 0..SCORES.len(), any::<bool>())
                .prop_map(|(a, x, b, y)| Op::RemScore(a, x, b, y)),
            1 => (0usize..10, 0usize..10).prop_map(|(a, b)| Op::RemLex(a, b)),
            1 => Just(Op::Clear),
        ]
    }

    /// What a local op replied, in a comparable form.
    #[derive(Debug, PartialEq)]
    enum Reply {
        Add(Result<(usize, usize, Option<u64>), CommandError>),
        Incr(Result<u64, CommandError>),
        Count(usize),
        Popped(Vec<(Vec<u8>, u64)>),
        Done,
    }

    /// Runs `op` on `zset` with tags from `tags`; returns the reply and delta.
    fn run(zset: &OrZSet, op: &Op, tags: &mut impl FnMut() -> Tag) -> (Reply, Option<ZSetDelta>) {
        match op {
            Op::Add(items, bits) => {
                let mut flags = zadd_flags(*bits);
                let items: Vec<(f64, &[u8])> = items.iter().map(|&(m, s)| (SCORES[s], MEMBERS[m].as_bytes())).collect();
                flags.incr &= items.len() == 1;
                match zset.zadd_many(&items, flags, tags) {
                    Ok((totals, delta)) => {
                        (Reply::Add(Ok((totals.added, totals.updated, totals.score.map(f64::to_bits)))), delta)
                    }
                    Err(e) => (Reply::Add(Err(e)), None),
                }
            }
            Op::Incr(m, s) => match zset.zincrby(MEMBERS[*m].as_bytes(), SCORES[*s], tags) {
                Ok((score, delta)) => (Reply::Incr(Ok(score.to_bits())), Some(delta)),
                Err(e) => (Reply::Incr(Err(e)), None),
            },
            Op::Rem(ms) => {
                let (count, delta) = zset.zrem(ms.iter().map(|&m| MEMBERS[m].as_bytes()));
                (Reply::Count(count), Some(delta))
            }
            Op::PopMin(n) | Op::PopMax(n) => {
                let (popped, delta) = if matches!(op, Op::PopMin(_)) { zset.pop_min(*n) } else { zset.pop_max(*n) };
                let popped = popped.into_iter().map(|(m, s)| (m.to_vec(), s.to_bits())).collect();
                (Reply::Popped(popped), Some(delta))
            }
            Op::RemRank(a, b) => {
                let (count, delta) = zset.remove_range_by_rank(*a, *b);
                (Reply::Count(count), Some(delta))
            }
            Op::RemScore(a, x, b, y) => {
                let (count, delta) = zset.remove_range_by_score(score_bound(*a, *x), score_bound(*b, *y));
                (Reply::Count(count), Some(delta))
            }
            Op::RemLex(a, b) => {
                let (count, delta) = zset.remove_range_by_lex(lex_bound(*a), lex_bound(*b));
                (Reply::Count(count), Some(delta))
            }
            Op::Clear => (Reply::Done, Some(zset.clear())),
        }
    }

    /// A plain map with Redis's single-node semantics, for comparison.
    #[derive(Default)]
    struct Model {
        scores: BTreeMap<Vec<u8>, f64>,
    }

    impl Model {
        fn listing(&self) -> Vec<(Vec<u8>, f64)> {
            let mut all: Vec<(Vec<u8>, f64)> = self.scores.iter().map(|(m, s)| (m.clone(), *s)).collect();
            all.sort_by(|x, y| ScoreKey(x.1).cmp(&ScoreKey(y.1)).then_with(|| x.0.cmp(&y.0)));
            all
        }

        fn zadd_one(&mut self, member: &[u8], score: f64, flags: ZAddFlags) -> Result<ZAddReply, CommandError> {
            let Some(&current) = self.scores.get(member) else {
                if flags.xx {
                    return Ok(ZAddReply::ABORTED);
                }
                self.scores.insert(member.to_vec(), score);
                return Ok(ZAddReply { added: true, updated: false, score: Some(score) });
            };
            if flags.nx {
                return Ok(ZAddReply::ABORTED);
            }
            let new = if flags.incr { current + score } else { score };
            if new.is_nan() {
                return Err(CommandError::ScoreNan);
            }
            if (flags.lt && new >= current) || (flags.gt && new <= current) {
                return Ok(ZAddReply::ABORTED);
            }
            if new == current {
                return Ok(ZAddReply { added: false, updated: false, score: Some(current) });
            }
            self.scores.insert(member.to_vec(), new);
            Ok(ZAddReply { added: false, updated: true, score: Some(new) })
        }

        fn remove(&mut self, doomed: Vec<Vec<u8>>) -> usize {
            doomed.iter().for_each(|m| {
                self.scores.remove(m);
            });
            doomed.len()
        }

        fn run(&mut self, op: &Op) -> Reply {
            let listing = self.listing();
            match op {
                Op::Add(items, bits) => {
                    let mut flags = zadd_flags(*bits);
                    flags.incr &= items.len() == 1;
                    let backup = self.scores.clone();
                    let (mut added, mut updated, mut score) = (0, 0, None);
                    for &(m, s) in items {
                        match self.zadd_one(MEMBERS[m].as_bytes(), SCORES[s], flags) {
                            Ok(reply) => {
                                added += usize::from(reply.added);
                                updated += usize::from(reply.updated);
                                score = reply.score.map(f64::to_bits);
                            }
                            Err(e) => {
                                self.scores = backup;
                                return Reply::Add(Err(e));
                            }
                        }
                    }
                    Reply::Add(Ok((added, updated, score)))
                }
                Op::Incr(m, s) => {
                    let flags = ZAddFlags { incr: true, ..ZAddFlags::default() };
                    Reply::Incr(
                        self.zadd_one(MEMBERS[*m].as_bytes(), SCORES[*s], flags).map(|r| r.score.unwrap().to_bits()),
                    )
                }
                Op::Rem(ms) => {
                    let mut doomed: Vec<Vec<u8>> = ms.iter().map(|&m| MEMBERS[m].as_bytes().to_vec()).collect();
                    doomed.sort();
                    doomed.dedup();
                    doomed.retain(|m| self.scores.contains_key(m));
                    Reply::Count(self.remove(doomed))
                }
                Op::PopMin(n) | Op::PopMax(n) => {
                    let mut order = listing;
                    if matches!(op, Op::PopMax(_)) {
                        order.reverse();
                    }
                    order.truncate(*n);
                    self.remove(order.iter().map(|(m, _)| m.clone()).collect());
                    Reply::Popped(order.into_iter().map(|(m, s)| (m, s.to_bits())).collect())
                }
                Op::RemRank(a, b) => {
                    let doomed = match rank_window(listing.len(), *a, *b) {
                        Some((skip, take)) => listing.into_iter().skip(skip).take(take).map(|(m, _)| m).collect(),
                        None => Vec::new(),
                    };
                    Reply::Count(self.remove(doomed))
                }
                Op::RemScore(a, x, b, y) => {
                    let doomed = model_score_range(&listing, score_bound(*a, *x), score_bound(*b, *y));
                    Reply::Count(self.remove(doomed.into_iter().map(|(m, _)| m).collect()))
                }
                Op::RemLex(a, b) => {
                    let doomed = model_lex_range(&listing, lex_bound(*a), lex_bound(*b), false);
                    Reply::Count(self.remove(doomed.into_iter().map(|(m, _)| m).collect()))
                }
                Op::Clear => {
                    self.scores.clear();
                    Reply::Done
                }
            }
        }
    }

    fn model_score_range(listing: &[(Vec<u8>, f64)], min: ScoreBound, max: ScoreBound) -> Vec<(Vec<u8>, f64)> {
        let above = |s: f64| if min.exclusive { s > min.value } else { s >= min.value };
        let below = |s: f64| if max.exclusive { s < max.value } else { s <= max.value };
        listing.iter().filter(|(_, s)| above(*s) && below(*s)).cloned().collect()
    }

    /// Redis's listpack walk: empty unless the last member is at or above
    /// `min` and the first at or below `max` (`zzlIsInLexRange`); then from
    /// the first member inside the near bound, while members stay inside the
    /// far bound.
    fn model_lex_range(
        listing: &[(Vec<u8>, f64)],
        min: LexBound<'_>,
        max: LexBound<'_>,
        rev: bool,
    ) -> Vec<(Vec<u8>, f64)> {
        if lex_range_is_empty(min, max) {
            return Vec::new();
        }
        match (listing.first(), listing.last()) {
            (Some((first, _)), Some((last, _))) if min.admits_from_below(last) && max.admits_from_above(first) => {}
            _ => return Vec::new(),
        }
        let mut order = listing.to_vec();
        if rev {
            order.reverse();
        }
        let near = |m: &[u8]| if rev { max.admits_from_above(m) } else { min.admits_from_below(m) };
        let far = |m: &[u8]| if rev { min.admits_from_below(m) } else { max.admits_from_above(m) };
        order.into_iter().skip_while(|(m, _)| !near(m)).take_while(|(m, _)| far(m)).collect()
    }

    /// ZRANGEBYLEX with LIMIT as Redis runs it: the walk of
    /// `model_lex_range`, except that the offset is stepped over without
    /// checking the far bound.
    fn model_lex_limited(
        listing: &[(Vec<u8>, f64)],
        min: LexBound<'_>,
        max: LexBound<'_>,
        rev: bool,
        limit: Limit,
    ) -> Vec<(Vec<u8>, u64)> {
        let (skip, take) = limit.window();
        if take == 0 || model_lex_range(listing, min, max, rev).is_empty() {
            return Vec::new();
        }
        let mut order = listing.to_vec();
        if rev {
            order.reverse();
        }
        let near = |m: &[u8]| if rev { max.admits_from_above(m) } else { min.admits_from_below(m) };
        let far = |m: &[u8]| if rev { min.admits_from_below(m) } else { max.admits_from_above(m) };
        order
            .into_iter()
            .skip_while(|(m, _)| !near(m))
            .skip(skip)
            .take_while(|(m, _)| far(m))
            .take(take)
            .map(|(m, s)| (m, s.to_bits()))
            .collect()
    }

    fn model_limit(items: Vec<(Vec<u8>, f64)>, rev: bool, limit: Limit) -> Vec<(Vec<u8>, u64)> {
        let (skip, take) = limit.window();
        let mut items = items;
        if rev {
            items.reverse();
        }
        items.into_iter().skip(skip).take(take).map(|(m, s)| (m, s.to_bits())).collect()
    }

    fn bits(iter: ZSetIter<'_>) -> Vec<(Vec<u8>, u64)> {
        iter.map(|(m, s)| (m.to_vec(), s.to_bits())).collect()
    }

    /// Every read of `zset` against the model's listing.
    fn check_reads(
        zset: &OrZSet,
        model: &Model,
        probe: (usize, usize, bool, bool, i64, i64),
    ) -> Result<(), TestCaseError> {
        let sorted = model.listing();
        let expected: Vec<(Vec<u8>, u64)> = sorted.iter().map(|(m, s)| (m.clone(), s.to_bits())).collect();
        prop_assert_eq!(listing(zset), expected.clone());
        prop_assert_eq!(zset.len(), sorted.len());
        let (a, b, x, y, offset, count) = probe;
        for (i, (member, score)) in sorted.iter().enumerate() {
            prop_assert_eq!(zset.rank(member, false), Some((i, *score)));
            prop_assert_eq!(zset.rank(member, true), Some((sorted.len() - 1 - i, *score)));
        }
        let (start, stop) = (a as i64 - 4, b as i64 - 4);
        for rev in [false, true] {
            let mut window: Vec<(Vec<u8>, u64)> = expected.clone();
            if rev {
                window.reverse();
            }
            let window = match rank_window(window.len(), start, stop) {
                Some((skip, take)) => window.into_iter().skip(skip).take(take).collect(),
                None => Vec::new(),
            };
            prop_assert_eq!(bits(zset.range_by_rank(start, stop, rev)), window);
            let limit = Limit { offset, count };
            let (min, max) = (score_bound(a, x), score_bound(b, y));
            let by_score = model_score_range(&sorted, min, max);
            prop_assert_eq!(zset.count_in_score_range(min, max), by_score.len());
            prop_assert_eq!(bits(zset.range_by_score(min, max, rev, limit)), model_limit(by_score, rev, limit));
            let (min, max) = (lex_bound(a), lex_bound(b));
            let by_lex = model_lex_range(&sorted, min, max, rev);
            if !rev {
                prop_assert_eq!(zset.count_in_lex_range(min, max), by_lex.len());
            }
            let mut by_lex = by_lex;
            if rev {
                by_lex.reverse(); // model_limit reverses again
            }
            prop_assert_eq!(bits(zset.range_by_lex(min, max, rev, Limit::ALL)), model_limit(by_lex, rev, Limit::ALL));
            prop_assert_eq!(
                bits(zset.range_by_lex(min, max, rev, limit)),
                model_lex_limited(&sorted, min, max, rev, limit)
            );
        }
        Ok(())
    }

    fn probe() -> impl Strategy<Value = (usize, usize, bool, bool, i64, i64)> {
        (0usize..11, 0usize..11, any::<bool>(), any::<bool>(), -1i64..3, -1i64..3)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// One replica alone behaves like Redis: every reply and every read
        /// matches a plain map model.
        #[test]
        fn local_ops_match_a_redis_model(steps in proptest::collection::vec((op(), probe()), 1..40)) {
            let mut node = Node::new(1);
            let mut model = Model::default();
            for (op, probe) in &steps {
                let seq = node.source.seq;
                let (reply, delta) = run(&node.zset, op, &mut || node.source.next());
                prop_assert_eq!(&reply, &model.run(op));
                let mut fresh = std::collections::BTreeSet::new();
                if let Some(delta) = &delta {
                    delta.for_each_dot(|d| {
                        if !node.seen.contains(d) {
                            fresh.insert(d);
                        }
                    });
                    node.deliver(delta);
                }
                prop_assert_eq!(node.source.seq - seq, fresh.len() as u64, "every tag taken is shipped");
                check_reads(&node.zset, &model, *probe)?;
            }
        }

        /// Three replicas operate on their own states while deltas reach the
        /// others in any order, duplicated; once everything is delivered
        /// everywhere the states are equal, before and after collection.
        #[test]
        fn replicas_converge_under_any_delivery(
            steps in proptest::collection::vec(
                prop_oneof![
                    3 => (0usize..3, op()).prop_map(|(r, op)| (r, Some(op), 0usize)),
                    2 => (0usize..3, any::<usize>()).prop_map(|(r, pick)| (r, None, pick)),
                ],
                1..60,
            ),
            seed in any::<u64>(),
        ) {
            let mut nodes: Vec<Node> = (1..=3).map(Node::new).collect();
            let mut log: Vec<ZSetDelta> = Vec::new();
            for (step, (r, op, pick)) in steps.iter().enumerate() {
                let node = &mut nodes[*r];
                match op {
                    Some(op) => {
                        // Several regions' clocks: coarse, so equal HLCs happen.
                        node.source.hlc = node.source.hlc.max(step as u64 / 3);
                        let (reply, delta) = run(&node.zset, op, &mut || node.source.next());
                        if let Some(delta) = delta.filter(|d| !d.is_empty()) {
                            node.deliver(&delta);
                            log.push(delta);
                        }
                        if let (Op::Incr(m, _), Reply::Incr(Ok(score))) = (op, reply) {
                            let read = node.zset.score(MEMBERS[*m].as_bytes()).map(f64::to_bits);
                            prop_assert_eq!(read, Some(score));
                        }
                    }
                    None if !log.is_empty() => node.deliver(&log[pick % log.len()]),
                    None => {}
                }
            }
            let mut rng = SmallRng::seed_from_u64(seed);
            for node in &mut nodes {
                let mut order: Vec<usize> = (0..log.len()).collect();
                order.extend((0..log.len() / 3).map(|i| (i * 7) % log.len()));
                order.shuffle(&mut rng);
                for i in order {
                    node.deliver(&log[i]);
                }
            }
            for node in &nodes[1..] {
                prop_assert_eq!(&node.seen, &nodes[0].seen);
                prop_assert_eq!(&node.zset, &nodes[0].zset);
                prop_assert_eq!(listing(&node.zset), listing(&nodes[0].zset));
            }
            prop_assert_eq!(nodes[0].seen.cloud_len(), 0);
            let stable = nodes[0].seen.vector().clone();
            for node in &mut nodes {
                node.zset.collect(&stable);
                node.zset.validate().map_err(TestCaseError::fail)?;
            }
            for node in &nodes[1..] {
                prop_assert_eq!(&node.zset, &nodes[0].zset);
                prop_assert_eq!(listing(&node.zset), listing(&nodes[0].zset));
            }
            // A snapshot rebuilds the state exactly.
            let mut rebuilt = OrZSet::default();
            rebuilt.apply(&nodes[0].zset.as_delta(), &CausalContext::new());
            prop_assert_eq!(&rebuilt, &nodes[0].zset);
        }
    }
}
