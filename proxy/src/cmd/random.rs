//! Random picks from one collection: SRANDMEMBER, SPOP and HRANDFIELD.
//!
//! A collection lives in a hash map that cannot be indexed, so a pick is made
//! in two steps: first the indices to return (distinct or with repetition, in
//! reply order), then one pass over the collection that resolves them — O(n)
//! for the pass plus O(k log k) for k picks, and no copy of the collection.

use rand::Rng;

/// The most elements a pick with repetition (a negative count) may return.
/// Redis has no bound and would build a reply of any size the client asks
/// for (tens of bytes per element); Meridian refuses more than this with
/// Redis's `ERR value is out of range` instead of filling its memory.
pub const REPEATED_MAX: u64 = 1_000_000;

/// The error Redis gives for a count outside `-i64::MAX ..= i64::MAX`.
pub const COUNT_RANGE_ERROR: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";

/// Parses the count of SRANDMEMBER/HRANDFIELD as Redis does
/// (`getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX)`).
pub fn parse_count(arg: &[u8]) -> Result<i64, String> {
    match super::parse_int(arg) {
        Ok(i64::MIN) => Err(COUNT_RANGE_ERROR.to_string()),
        Ok(count) => Ok(count),
        Err(e) => Err(e.to_string()),
    }
}

/// The indices into a collection of `len` elements that a pick of `count`
/// returns, in reply order: `count >= 0` picks `min(count, len)` distinct
/// elements (all of them, in the collection's order, when `count >= len`);
/// a negative count picks `|count|` elements with repetition. Refuses a
/// repeated pick larger than [`REPEATED_MAX`] from a non-empty collection.
pub fn indices(len: usize, count: i64, rng: &mut impl Rng) -> Result<Vec<usize>, &'static str> {
    if len == 0 || count == 0 {
        return Ok(Vec::new());
    }
    if count > 0 {
        let wanted = usize::try_from(count).unwrap_or(usize::MAX);
        if wanted >= len {
            return Ok((0..len).collect());
        }
        return Ok(rand::seq::index::sample(rng, len, wanted).into_vec());
    }
    let repeats = count.unsigned_abs();
    if repeats > REPEATED_MAX {
        return Err("ERR value is out of range");
    }
    Ok((0..repeats).map(|_| rng.random_range(0..len)).collect())
}

/// The items of `items` at `indices` (each below the number of items), in the
/// order of `indices`, found in one pass.
pub fn resolve<T: Clone>(items: impl Iterator<Item = T>, indices: &[usize]) -> Vec<T> {
    let mut order: Vec<(usize, usize)> = indices.iter().enumerate().map(|(slot, &index)| (index, slot)).collect();
    // A whole-collection pick comes in order already: no sort for it.
    if !indices.is_sorted() {
        order.sort_unstable();
    }
    let mut found: Vec<Option<T>> = vec![None; indices.len()];
    let mut wanted = order.into_iter().peekable();
    for (index, item) in items.enumerate() {
        while let Some(&(_, slot)) = wanted.peek().filter(|(at, _)| *at == index) {
            found[slot] = Some(item.clone());
            wanted.next();
        }
        if wanted.peek().is_none() {
            break;
        }
    }
    found.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_picks_are_distinct_and_repeated_picks_are_bounded() {
        let mut rng = super::super::rng();
        let picked = indices(10, 5, &mut rng).expect("a pick");
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        assert!(picked.iter().all(|&i| i < 10));
        assert_eq!(indices(3, 10, &mut rng), Ok(vec![0, 1, 2]));
        assert_eq!(indices(3, i64::MAX, &mut rng), Ok(vec![0, 1, 2]));
        assert_eq!(indices(0, -5, &mut rng), Ok(vec![]));
        assert_eq!(indices(2, -7, &mut rng).expect("a pick").len(), 7);
        assert!(indices(2, -(REPEATED_MAX as i64) - 1, &mut rng).is_err());
        assert!(indices(0, -(REPEATED_MAX as i64) - 1, &mut rng).is_ok(), "nothing to pick from");
    }

    #[test]
    fn resolve_keeps_the_order_of_the_indices_and_repeats() {
        let items = ["a", "b", "c", "d"];
        assert_eq!(resolve(items.iter().copied(), &[3, 0, 3, 1]), vec!["d", "a", "d", "b"]);
        assert_eq!(resolve(items.iter().copied(), &[]), Vec::<&str>::new());
    }

    #[test]
    fn counts_parse_like_redis() {
        assert_eq!(parse_count(b"-5"), Ok(-5));
        assert_eq!(parse_count(b"-9223372036854775808"), Err(COUNT_RANGE_ERROR.to_string()));
        assert_eq!(parse_count(b"x"), Err("ERR value is not an integer or out of range".to_string()));
    }
}
