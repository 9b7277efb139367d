//! The record positions a dataset has received, as disjoint ranges, so the ingest route can drop
//! records already received before it writes anything: re-ingesting a complete dataset appends
//! nothing to the log. (The processed splits keep their own copy for their `resent` count; this
//! one serves the write path and costs one entry per gap.)

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-touching half-open ranges of positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// Start to end (exclusive).
    by_start: BTreeMap<u64, u64>,
}

impl Positions {
    /// Adds `start..end`.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut merged_start, mut merged_end) = (start, end);
        // Ranges that overlap or touch `start..end`: those starting at or before `end` and
        // ending at or after `start`. Ends grow with starts, so scanning backwards can stop at
        // the first that ends before `start`.
        let touching: Vec<(u64, u64)> = self
            .by_start
            .range(..=end)
            .rev()
            .take_while(|(_, &range_end)| range_end >= start)
            .map(|(&range_start, &range_end)| (range_start, range_end))
            .collect();
        for (range_start, range_end) in touching {
            merged_start = merged_start.min(range_start);
            merged_end = merged_end.max(range_end);
            self.by_start.remove(&range_start);
        }
        self.by_start.insert(merged_start, merged_end);
    }

    /// The parts of `start..end` not present, in order.
    pub fn missing(&self, start: u64, end: u64) -> Vec<Range<u64>> {
        let mut missing = Vec::new();
        if start >= end {
            return missing;
        }
        let mut cursor = start;
        // The range containing `start`, if any, then every range starting inside `start..end`.
        let first = self
            .by_start
            .range(..=start)
            .next_back()
            .filter(|(_, &range_end)| range_end > start);
        let inside = self.by_start.range(start + 1..end);
        for (&range_start, &range_end) in first.into_iter().chain(inside) {
            if range_start > cursor {
                missing.push(cursor..range_start.min(end));
            }
            cursor = cursor.max(range_end);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            missing.push(cursor..end);
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain set of positions, on a deterministic pseudo-random sequence.
    #[test]
    fn matches_a_set_of_positions() {
        let mut positions = Positions::default();
        let mut model = std::collections::BTreeSet::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let (start, length) = (next() % 300, next() % 15);
            let end = start + length;
            let expected: Vec<u64> = (start..end).filter(|i| !model.contains(i)).collect();
            let missing: Vec<u64> = positions
                .missing(start, end)
                .into_iter()
                .flatten()
                .collect();
            assert_eq!(missing, expected, "missing({start}, {end})");
            if next() % 2 == 0 {
                positions.insert(start, end);
                model.extend(start..end);
            }
        }
    }

    #[test]
    fn touching_ranges_merge() {
        let mut positions = Positions::default();
        positions.insert(0, 10);
        positions.insert(20, 30);
        positions.insert(10, 20);
        assert_eq!(positions.by_start.len(), 1);
        let missing: Vec<(u64, u64)> = positions
            .missing(5, 35)
            .into_iter()
            .map(|range| (range.start, range.end))
            .collect();
        assert_eq!(missing, [(30, 35)]);
        assert_eq!(positions.missing(40, 40), []);
    }
}
