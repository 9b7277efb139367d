//! Local retention's side of the log: the oldest segments deleted once archived, the marker
//! that lets recovery accept a log that does not start at lsn 1, and reads that go to the cold
//! tier below the local first lsn, checked frame by frame.

use super::*;
use crate::log::local_start::{local_start_path, read_local_start};
use crate::log::segment::{list_segments, parse_segment_file_name};
use crate::log::{ColdSegment, ColdSegments, Eviction, LogError};

/// About six frames a segment, so 60 frames make some ten segments.
const SEGMENT_BYTES_MAX: u64 = 24 + 6 * 60;
const ARCHIVE_URL: &str = "file:///archive/for/tests";

fn small_segments(dir: &Path) -> LogOptions {
    let mut options = test_options(dir);
    options.segment_bytes_max = SEGMENT_BYTES_MAX;
    options
}

/// Segments kept in memory, as an archive would hold them.
struct MemoryCold(Vec<ColdSegment>);

impl MemoryCold {
    /// Every sealed segment of `dir` (all but the last), as they are now.
    fn copy_sealed(dir: &Path) -> MemoryCold {
        let segments = list_segments(dir).unwrap();
        let sealed = segments
            .windows(2)
            .map(|pair| ColdSegment {
                first_lsn: pair[0].first_lsn,
                last_lsn: pair[1].first_lsn - 1,
                bytes: std::fs::read(&pair[0].path).unwrap().into(),
                origin: format!("memory:{}", pair[0].first_lsn),
            })
            .collect();
        MemoryCold(sealed)
    }
}

impl ColdSegments for MemoryCold {
    fn segment_holding(&self, lsn: u64) -> Result<ColdSegment, LogError> {
        self.0
            .iter()
            .find(|segment| (segment.first_lsn..=segment.last_lsn).contains(&lsn))
            .cloned()
            .ok_or_else(|| LogError::Archived {
                origin: "memory".to_owned(),
                detail: format!("no segment holds lsn {lsn}"),
            })
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

fn first_lsns(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|path| parse_segment_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect()
}

/// Deletes the `count` oldest segments through `reader`; returns the new local first lsn.
fn evict(reader: &LogReader, dir: &Path, count: usize) -> u64 {
    let mut local_first_lsn = 0;
    for _ in 0..count {
        let lsns = first_lsns(dir);
        match reader
            .evict_oldest_segment(Lsn(lsns[0]), Lsn(lsns[1]), ARCHIVE_URL)
            .unwrap()
        {
            Eviction::Evicted {
                local_first_lsn: first,
            } => local_first_lsn = first,
            Eviction::InUse => panic!("nothing reads the log"),
        }
    }
    local_first_lsn
}

fn read_range(reader: &LogReader, after: u64, up_to: u64) -> Result<Vec<RawFrame>, LogError> {
    reader.frames(Lsn(after), Lsn(up_to)).collect()
}

#[tokio::test]
async fn reads_below_the_local_log_come_from_the_cold_tier_in_order() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let cold = Arc::new(MemoryCold::copy_sealed(dir));
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    let local_first_lsn = evict(&reader, dir, 3);
    assert_eq!(first_lsns(dir)[0], local_first_lsn);
    assert_eq!(reader.local_first_lsn(), Lsn(local_first_lsn));
    let marker = read_local_start(dir).unwrap().unwrap();
    assert_eq!(
        (marker.first_lsn, marker.archive_url.as_str()),
        (local_first_lsn, ARCHIVE_URL)
    );

    let error = read_range(&reader, 0, 60).unwrap_err().to_string();
    assert!(error.contains("no archive is open"), "{error}");

    reader.set_cold_source(cold);
    assert_eq!(read_range(&reader, 0, 60).unwrap(), expected_frames(1..=60));
    // Ranges starting inside a cold segment, crossing into the local files, or wholly cold.
    for (after, up_to) in [
        (4, 60),
        (local_first_lsn - 2, local_first_lsn + 3),
        (2, 5),
        (30, 40),
    ] {
        assert_eq!(
            read_range(&reader, after, up_to).unwrap(),
            expected_frames(after + 1..=up_to),
            "after {after} up to {up_to}"
        );
    }
    // A reader of another process (opened afresh) reads the same once given the archive.
    let fresh = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    fresh.set_cold_source(Arc::new(MemoryCold::copy_sealed(temp.path())));
    assert_eq!(fresh.local_first_lsn(), Lsn(local_first_lsn));
}

#[tokio::test]
async fn recovery_accepts_a_later_first_segment_only_with_the_marker() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    let local_first_lsn = evict(&reader, dir, 2);

    let (log, report) = open(small_segments(dir)).unwrap();
    assert_eq!(report.last_lsn, Lsn(60));
    assert_eq!(report.local_first_lsn, Lsn(local_first_lsn));
    // The log goes on after recovery as before.
    let writer = log.start_writer();
    append_all(&writer, 61..=70).await;
    writer.shutdown().await;

    // One more segment missing after the marker's lsn: refused, naming the gap.
    let lsns = first_lsns(dir);
    std::fs::remove_file(dir.join(crate::log::segment::segment_file_name(lsns[0]))).unwrap();
    let error = open(small_segments(dir)).unwrap_err().to_string();
    assert!(error.contains("a segment is missing"), "{error}");

    // Without the marker, a log that does not start at lsn 1 is refused as it always was.
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    evict(&reader, dir, 1);
    std::fs::remove_file(local_start_path(dir)).unwrap();
    let error = open(small_segments(dir)).unwrap_err().to_string();
    assert!(error.contains("lsn gap"), "{error}");
}

#[tokio::test]
async fn a_crash_between_the_marker_and_the_delete_leaves_a_log_recovery_accepts() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let lsns = first_lsns(dir);
    // The marker is written first; the segments it covers are still there.
    crate::log::local_start::write_local_start(
        dir,
        &crate::log::local_start::LocalStart::new(lsns[2], ARCHIVE_URL),
    )
    .unwrap();
    let (log, report) = open(small_segments(dir)).unwrap();
    assert_eq!(report.local_first_lsn, Lsn(1));
    let reader = log.reader();
    assert_eq!(read_range(&reader, 0, 60).unwrap(), expected_frames(1..=60));
}

#[tokio::test]
async fn eviction_spares_the_active_segment_and_segments_being_read() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let (log, _) = open(small_segments(dir)).unwrap();
    let reader = log.reader();
    let lsns = first_lsns(dir);

    // A read that started at lsn 1 holds the first segments until it is dropped.
    let mut reading = reader.frames(Lsn(0), Lsn(60));
    assert_eq!(reading.next().unwrap().unwrap(), expected_frame(1));
    let refused = reader.evict_oldest_segment(Lsn(lsns[0]), Lsn(lsns[1]), ARCHIVE_URL);
    assert_eq!(refused.unwrap(), Eviction::InUse);
    assert_eq!(first_lsns(dir), lsns, "nothing was deleted");
    drop(reading);
    let evicted = reader.evict_oldest_segment(Lsn(lsns[0]), Lsn(lsns[1]), ARCHIVE_URL);
    assert_eq!(
        evicted.unwrap(),
        Eviction::Evicted {
            local_first_lsn: lsns[1]
        }
    );

    // The last segment has no next one: the log goes on in it.
    let last = *lsns.last().unwrap();
    let error = reader
        .evict_oldest_segment(Lsn(last), Lsn(61), ARCHIVE_URL)
        .unwrap_err()
        .to_string();
    assert!(error.contains("delete older segments first"), "{error}");
    // Nor can a segment be deleted out of order.
    let error = reader
        .evict_oldest_segment(Lsn(lsns[2]), Lsn(lsns[3]), ARCHIVE_URL)
        .unwrap_err()
        .to_string();
    assert!(error.contains("delete older segments first"), "{error}");
}

#[tokio::test]
async fn a_damaged_cold_segment_is_refused_naming_its_origin() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    write_log(small_segments(dir), 1..=60).await;
    let mut cold = MemoryCold::copy_sealed(dir);
    let mut bytes = cold.0[0].bytes.to_vec();
    bytes[24 + 20 + 1] ^= 0xff; // Inside frame 1's payload (or CRC): the CRC no longer matches.
    cold.0[0].bytes = bytes.into();
    let reader = LogReader::open(dir, TEST_FRAME_BYTES_MAX).unwrap();
    evict(&reader, dir, 1);
    reader.set_cold_source(Arc::new(cold));
    let error = read_range(&reader, 0, 60).unwrap_err().to_string();
    assert!(error.contains("archived log segment memory:1"), "{error}");
}
