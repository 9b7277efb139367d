//! The offset index: where frames start, so a reader that starts at an lsn seeks to a nearby
//! known frame instead of scanning its segment from the first frame.
//!
//! A mark `(lsn, byte offset)` in a segment means "the frame with this lsn starts at this offset"
//! (for one past a segment's last frame, "the segment's frames end here"). Marks are facts about
//! bytes that never change once durable, so whoever learns one may record it: recovery records
//! them while it scans every segment, the writer records the end of each durable run, and readers
//! record what they pass and where they stop. The index keeps two kinds:
//!
//! - **sparse** marks per segment, at least [`MARK_SPACING_BYTES`] apart: any read skips at most
//!   that much (or one group-commit batch, where the writer's marks are further apart);
//! - the **recent** marks: the last [`RECENT_MARKS_MAX`] furthest positions learned, so readers
//!   that follow the tail (the projector, events long-polls) seek exactly where they left off.
//!
//! A lookup returns the greatest mark at or before the wanted lsn from either kind. Memory is
//! one sparse mark (16 bytes) per `MARK_SPACING_BYTES` of log (4 KiB per 64 MiB segment) plus
//! the fixed recent ring.

use super::segment::SEGMENT_HEADER_BYTES;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Smallest distance between two sparse marks of one segment.
pub(crate) const MARK_SPACING_BYTES: u64 = 256 * 1024;
/// Furthest positions kept exactly: about two per group commit (the writer's and the projector's),
/// so a reader up to a hundred commits behind the tail still seeks exactly.
pub(crate) const RECENT_MARKS_MAX: usize = 256;

/// A known frame start: the frame with `lsn` starts at `offset` in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) lsn: u64,
    pub(crate) offset: u64,
}

/// Marks of every segment seen. Shared by the writer and every reader of one log directory.
#[derive(Debug, Default)]
pub(crate) struct OffsetIndex {
    marks: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    /// Sparse marks keyed by the segment's first lsn; sorted by lsn and offset within a segment.
    sparse: BTreeMap<u64, Vec<Mark>>,
    /// `(segment first lsn, mark)` of the furthest positions learned, in increasing lsn order.
    recent: VecDeque<(u64, Mark)>,
}

impl OffsetIndex {
    /// Records that the frame `mark.lsn` starts at `mark.offset` in the segment named
    /// `segment_first_lsn`. Callers record at most one mark per [`MARK_SPACING_BYTES`] read plus
    /// one where a read or a durable run ends, so the lock is taken rarely.
    pub(crate) fn record(&self, segment_first_lsn: u64, mark: Mark) {
        let mut marks = self.lock();
        let is_newest = marks
            .recent
            .back()
            .is_none_or(|(_, newest)| mark.lsn > newest.lsn);
        if is_newest {
            if marks.recent.len() == RECENT_MARKS_MAX {
                marks.recent.pop_front();
            }
            marks.recent.push_back((segment_first_lsn, mark));
        }
        insert_sparse(marks.sparse.entry(segment_first_lsn).or_default(), mark);
    }

    /// Where to start reading for `lsn` in the segment named `segment_first_lsn`: the greatest
    /// known mark at or before `lsn`, or the segment's first frame.
    pub(crate) fn start_for(&self, segment_first_lsn: u64, lsn: u64) -> Mark {
        let mut best = Mark {
            lsn: segment_first_lsn,
            offset: SEGMENT_HEADER_BYTES as u64,
        };
        let marks = self.lock();
        if let Some(sparse) = marks.sparse.get(&segment_first_lsn) {
            let after = sparse.partition_point(|mark| mark.lsn <= lsn);
            if let Some(found) = after.checked_sub(1) {
                best = sparse[found];
            }
        }
        let after = marks.recent.partition_point(|(_, mark)| mark.lsn <= lsn);
        if let Some(found) = after.checked_sub(1) {
            let (segment, mark) = marks.recent[found];
            if segment == segment_first_lsn && mark.lsn > best.lsn {
                best = mark;
            }
        }
        best
    }

    /// Registers a segment (with no marks yet) so lookups by lsn can find it.
    pub(crate) fn add_segment(&self, segment_first_lsn: u64) {
        self.lock().sparse.entry(segment_first_lsn).or_default();
    }

    /// The first lsn of the known segment holding `lsn`, or `None` when `lsn` is before every
    /// known segment (or none is known).
    pub(crate) fn segment_holding(&self, lsn: u64) -> Option<u64> {
        self.lock()
            .sparse
            .range(..=lsn)
            .next_back()
            .map(|(&first_lsn, _)| first_lsn)
    }

    /// First lsns of the segments the index knows, sorted.
    #[cfg(test)]
    pub(crate) fn segment_first_lsns(&self) -> Vec<u64> {
        self.lock().sparse.keys().copied().collect()
    }

    /// Sparse marks kept for one segment.
    #[cfg(test)]
    pub(crate) fn sparse_marks(&self, segment_first_lsn: u64) -> Vec<Mark> {
        self.lock()
            .sparse
            .get(&segment_first_lsn)
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        // Every update is a single push, pop or insert: a panic cannot leave a half-made one.
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps a segment's sparse marks sorted and at least [`MARK_SPACING_BYTES`] apart (the segment
/// start counts as an implicit mark at offset 0).
fn insert_sparse(marks: &mut Vec<Mark>, mark: Mark) {
    let at = marks.partition_point(|known| known.lsn < mark.lsn);
    if marks.get(at).is_some_and(|known| known.lsn == mark.lsn) {
        return;
    }
    let previous_offset = at
        .checked_sub(1)
        .map_or(0, |previous| marks[previous].offset);
    let far_from_previous = mark.offset - previous_offset >= MARK_SPACING_BYTES;
    let far_from_next = marks
        .get(at)
        .is_none_or(|next| next.offset - mark.offset >= MARK_SPACING_BYTES);
    if far_from_previous && far_from_next {
        marks.insert(at, mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(lsn: u64, offset: u64) -> Mark {
        Mark { lsn, offset }
    }

    #[test]
    fn lookups_return_the_greatest_mark_at_or_before_the_lsn() {
        let index = OffsetIndex::default();
        assert_eq!(index.start_for(1, 5), mark(1, SEGMENT_HEADER_BYTES as u64));
        index.record(1, mark(100, MARK_SPACING_BYTES));
        index.record(1, mark(200, 2 * MARK_SPACING_BYTES));
        assert_eq!(index.start_for(1, 99), mark(1, SEGMENT_HEADER_BYTES as u64));
        // A recent mark in another segment is not used for this one.
        index.record(300, mark(300, 24));
        assert_eq!(index.start_for(1, 299), mark(200, 2 * MARK_SPACING_BYTES));
        assert_eq!(index.start_for(1, 100), mark(100, MARK_SPACING_BYTES));
        assert_eq!(index.start_for(1, 150), mark(100, MARK_SPACING_BYTES));
        assert_eq!(
            index.start_for(1, 10_000),
            mark(200, 2 * MARK_SPACING_BYTES)
        );
        assert_eq!(
            index.start_for(7, 10_000),
            mark(7, SEGMENT_HEADER_BYTES as u64)
        );
    }

    #[test]
    fn recent_positions_are_exact_and_older_ones_sparse() {
        let index = OffsetIndex::default();
        // One mark per 100 bytes, as a writer with tiny batches would record them.
        for lsn in 2..=100_000u64 {
            index.record(1, mark(lsn, lsn * 100));
            assert_eq!(index.start_for(1, lsn), mark(lsn, lsn * 100));
        }
        // The last RECENT_MARKS_MAX positions are exact...
        let oldest_recent = 100_000 - RECENT_MARKS_MAX as u64 + 1;
        for lsn in oldest_recent..=100_000 {
            assert_eq!(index.start_for(1, lsn), mark(lsn, lsn * 100));
        }
        // ...older ones come from sparse marks, at most one spacing before.
        let found = index.start_for(1, 50_000);
        assert!(found.lsn <= 50_000 && 50_000 * 100 - found.offset < MARK_SPACING_BYTES);
        let marks = index.sparse_marks(1);
        let spacings = (100_000 * 100 / MARK_SPACING_BYTES) as usize;
        assert!(
            marks.len() <= spacings,
            "{} marks for {spacings} spacings",
            marks.len()
        );
        for pair in marks.windows(2) {
            assert!(pair[1].offset - pair[0].offset >= MARK_SPACING_BYTES);
        }
    }

    #[test]
    fn marks_learned_out_of_order_fill_gaps_only() {
        let index = OffsetIndex::default();
        index.record(1, mark(1000, 10 * MARK_SPACING_BYTES));
        index.record(1, mark(500, 5 * MARK_SPACING_BYTES));
        index.record(1, mark(501, 5 * MARK_SPACING_BYTES + 10)); // too close to 500
        index.record(1, mark(500, 5 * MARK_SPACING_BYTES)); // already known
        assert_eq!(
            index.sparse_marks(1),
            vec![
                mark(500, 5 * MARK_SPACING_BYTES),
                mark(1000, 10 * MARK_SPACING_BYTES)
            ]
        );
    }

    #[test]
    fn segments_are_found_by_lsn() {
        let index = OffsetIndex::default();
        assert_eq!(index.segment_holding(5), None);
        index.add_segment(1);
        index.add_segment(1000);
        assert_eq!(index.segment_holding(5), Some(1));
        assert_eq!(index.segment_holding(999), Some(1));
        assert_eq!(index.segment_holding(1000), Some(1000));
        assert_eq!(index.segment_holding(u64::MAX), Some(1000));
        assert_eq!(index.segment_first_lsns(), vec![1, 1000]);
    }
}
