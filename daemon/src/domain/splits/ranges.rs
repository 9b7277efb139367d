//! The set of record positions a dataset has received, as disjoint ranges, so idempotent
//! re-ingestion costs memory per batch rather than per record.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges of positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct IndexRanges {
    /// Start to end (exclusive). Touching ranges are merged, so no two ranges touch.
    by_start: BTreeMap<u64, u64>,
}

impl IndexRanges {
    /// Whether no position was received.
    pub(super) fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// Adds `start..end` and returns the parts of it that were not yet present, in order.
    pub(super) fn insert(&mut self, start: u64, end: u64) -> Vec<Range<u64>> {
        if start >= end {
            return Vec::new();
        }
        // Ranges overlapping or touching `start..end`, latest first. Ranges are disjoint, so
        // their ends grow with their starts and the scan stops at the first one ending before.
        let touching: Vec<(u64, u64)> = self
            .by_start
            .range(..=end)
            .rev()
            .take_while(|(_, &range_end)| range_end >= start)
            .map(|(&range_start, &range_end)| (range_start, range_end))
            .collect();
        let mut fresh = Vec::new();
        let mut cursor = start;
        for &(range_start, range_end) in touching.iter().rev() {
            if range_start > cursor {
                fresh.push(cursor..range_start.min(end));
            }
            cursor = cursor.max(range_end);
        }
        if cursor < end {
            fresh.push(cursor..end);
        }
        let merged_start = touching
            .last()
            .map_or(start, |&(range_start, _)| range_start.min(start));
        let merged_end = touching
            .first()
            .map_or(end, |&(_, range_end)| range_end.max(end));
        for (range_start, _) in &touching {
            self.by_start.remove(range_start);
        }
        self.by_start.insert(merged_start, merged_end);
        fresh
    }

    /// How many positions are present.
    pub(super) fn count(&self) -> u64 {
        self.by_start.iter().map(|(start, end)| end - start).sum()
    }

    /// The ranges, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.by_start.iter().map(|(&start, &end)| start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges as `(start, end)` pairs, which compare and print more plainly than `Range`s.
    fn pairs(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<(u64, u64)> {
        ranges
            .into_iter()
            .map(|range| (range.start, range.end))
            .collect()
    }

    fn ranges(set: &IndexRanges) -> Vec<(u64, u64)> {
        pairs(set.iter())
    }

    #[test]
    fn inserting_reports_only_new_positions_and_merges() {
        let mut set = IndexRanges::default();
        assert_eq!(pairs(set.insert(10, 20)), [(10, 20)]);
        assert_eq!(pairs(set.insert(10, 20)), []);
        assert_eq!(pairs(set.insert(12, 15)), []);
        assert_eq!(pairs(set.insert(30, 40)), [(30, 40)]);
        assert_eq!(pairs(set.insert(5, 45)), [(5, 10), (20, 30), (40, 45)]);
        assert_eq!(ranges(&set), [(5, 45)]);
        assert_eq!(set.count(), 40);
    }

    #[test]
    fn adjacent_ranges_merge() {
        let mut set = IndexRanges::default();
        assert_eq!(pairs(set.insert(0, 100)), [(0, 100)]);
        assert_eq!(pairs(set.insert(100, 200)), [(100, 200)]);
        assert_eq!(pairs(set.insert(300, 400)), [(300, 400)]);
        assert_eq!(ranges(&set), [(0, 200), (300, 400)]);
        assert_eq!(pairs(set.insert(200, 300)), [(200, 300)]);
        assert_eq!(ranges(&set), [(0, 400)]);
    }

    #[test]
    fn partial_overlaps_on_either_side() {
        let mut set = IndexRanges::default();
        set.insert(10, 20);
        assert_eq!(pairs(set.insert(15, 25)), [(20, 25)]);
        assert_eq!(pairs(set.insert(5, 12)), [(5, 10)]);
        assert_eq!(ranges(&set), [(5, 25)]);
        assert_eq!(pairs(set.insert(7, 7)), []);
        assert_eq!(pairs(set.insert(9, 3)), []);
        assert_eq!(
            pairs(set.insert(u64::MAX - 1, u64::MAX)),
            [(u64::MAX - 1, u64::MAX)]
        );
        assert_eq!(set.count(), 21);
    }

    /// Against a plain set of positions, on a deterministic pseudo-random sequence of inserts.
    #[test]
    fn matches_a_set_of_positions() {
        let mut set = IndexRanges::default();
        let mut model = std::collections::BTreeSet::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let start = state % 500;
            let end = start + (state >> 32) % 20;
            let fresh: Vec<u64> = set.insert(start, end).into_iter().flatten().collect();
            let expected: Vec<u64> = (start..end).filter(|i| model.insert(*i)).collect();
            assert_eq!(fresh, expected);
        }
        assert_eq!(set.count(), model.len() as u64);
    }
}
