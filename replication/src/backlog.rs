//! The shard's replication backlog: recent deltas by offset, bounded in bytes.
//!
//! Every delta a master applies gets the next offset (Redis's
//! `master_repl_offset`, counted here in deltas rather than bytes). Replicas,
//! the persistence writer and the WAN syncer each read from their own offset.
//! A reader whose offset is still in the backlog resumes from it (partial
//! resync); one that fell behind the oldest retained entry must take a full
//! snapshot. The bound is in bytes, like Redis's `repl-backlog-size`, so a burst
//! of large values cannot grow memory without limit.

use std::collections::VecDeque;

/// Default backlog size: 64 MiB (Redis 7 defaults to 1 MiB; deltas carry
/// causal metadata and a WAN link tolerates longer outages with more room).
pub const BACKLOG_BYTES_DEFAULT: usize = 64 * 1024 * 1024;

/// A bounded log of items (deltas, encoded or not) numbered by offset.
#[derive(Debug)]
pub struct Backlog<T> {
    entries: VecDeque<(T, usize)>,
    /// Offset of the first retained entry.
    first_offset: u64,
    bytes: usize,
    bytes_max: usize,
}

/// What a reader at some offset can get.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFrom<'a, T> {
    /// Entries from the requested offset on (possibly none yet).
    Entries(Vec<&'a T>),
    /// The offset is older than the backlog: a full sync is needed.
    Trimmed {
        /// The oldest offset still retained.
        first_offset: u64,
    },
    /// The offset is beyond the end: the reader claims entries that were never
    /// written here (it followed another master's history).
    Ahead {
        /// The next offset this backlog will assign.
        next_offset: u64,
    },
}

impl<T> Backlog<T> {
    /// An empty backlog whose first entry will get offset `start_offset`,
    /// holding at most `bytes_max` bytes of entries (at least one entry is kept
    /// whatever its size, so the newest delta is always readable).
    pub fn new(start_offset: u64, bytes_max: usize) -> Backlog<T> {
        assert!(bytes_max > 0, "a backlog needs room");
        Backlog { entries: VecDeque::new(), first_offset: start_offset, bytes: 0, bytes_max }
    }

    /// Appends an entry of `size` bytes; returns its offset. Evicts the oldest
    /// entries beyond the byte bound.
    pub fn push(&mut self, entry: T, size: usize) -> u64 {
        let offset = self.next_offset();
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let (_, evicted) = self.entries.pop_front().expect("more than one entry");
            self.bytes -= evicted;
            self.first_offset += 1;
        }
        offset
    }

    /// The offset the next entry will get.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + self.entries.len() as u64
    }

    /// The oldest retained offset.
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Up to `max` entries from `offset`.
    pub fn read_from(&self, offset: u64, max: usize) -> ReadFrom<'_, T> {
        if offset < self.first_offset {
            return ReadFrom::Trimmed { first_offset: self.first_offset };
        }
        if offset > self.next_offset() {
            return ReadFrom::Ahead { next_offset: self.next_offset() };
        }
        let start = (offset - self.first_offset) as usize;
        ReadFrom::Entries(self.entries.iter().skip(start).take(max).map(|(e, _)| e).collect())
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The most bytes it keeps.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_resume_or_are_told_to_full_sync() {
        let mut log = Backlog::new(100, 10);
        for i in 0..5 {
            assert_eq!(log.push(i, 3), 100 + i as u64);
        }
        // 15 bytes pushed into 10: the two oldest entries were evicted.
        assert_eq!(log.first_offset(), 102);
        assert_eq!(log.bytes(), 9);
        assert_eq!(log.read_from(103, 10), ReadFrom::Entries(vec![&3, &4]));
        assert_eq!(log.read_from(105, 10), ReadFrom::Entries(vec![]));
        assert_eq!(log.read_from(101, 10), ReadFrom::Trimmed { first_offset: 102 });
        assert_eq!(log.read_from(106, 10), ReadFrom::Ahead { next_offset: 105 });
    }

    #[test]
    fn one_oversized_entry_is_still_kept() {
        let mut log = Backlog::new(0, 4);
        log.push("big", 100);
        assert_eq!(log.len(), 1);
        log.push("next", 1);
        assert_eq!(log.read_from(1, 10), ReadFrom::Entries(vec![&"next"]));
    }
}
