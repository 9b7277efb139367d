//! The offset index: a read that starts at an lsn costs the bytes of the frames it returns plus a
//! bounded skip, never a scan from the start of a large segment. Costs are counted by
//! `LogReader::bytes_read`, not timed.

use super::super::index::MARK_SPACING_BYTES;
use super::super::segment::SEGMENT_HEADER_BYTES;
use super::*;

/// Frames in the test segment: about 1 MiB of frames of 0 to 40 bytes each, many spacings long.
const FRAMES: u64 = 40_000;
/// A `BufReader` refill reads at most this much past what a read needs.
const READ_AHEAD_BYTES_MAX: u64 = 256 * 1024;

fn segment_len(dir: &Path) -> u64 {
    let files = segment_files(dir);
    assert_eq!(files.len(), 1, "the test wants one large segment");
    std::fs::metadata(&files[0]).unwrap().len()
}

/// Reads `(after, up_to]` through `reader` and returns the bytes that cost.
fn cost_of_read(reader: &LogReader, after: u64, up_to: u64) -> u64 {
    let before = reader.bytes_read();
    let frames = reader
        .frames(Lsn(after), Lsn(up_to))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(frames, expected_frames(after + 1..=up_to));
    reader.bytes_read() - before
}

#[tokio::test]
async fn a_reader_of_a_running_log_reads_only_the_new_frames_at_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(test_options(dir.path())).unwrap();
    let reader = log.reader();
    let writer = log.start_writer();
    append_all(&writer, 1..=FRAMES).await;
    // A tailing reader (the projector) catches up a few frames at a time.
    let mut read_up_to = FRAMES;
    for round in 0..50u64 {
        let next = read_up_to + 1 + round % 7;
        let written_before = writer.stats().bytes;
        append_all(&writer, read_up_to + 1..=next).await;
        let new_frame_bytes = writer.stats().bytes - written_before;
        let cost = cost_of_read(&reader, read_up_to, next);
        // The writer recorded where the previous frames end: the read opens the segment, reads
        // its header and exactly the new frames.
        assert!(
            cost <= new_frame_bytes + SEGMENT_HEADER_BYTES as u64,
            "round {round}: read {cost} bytes for {new_frame_bytes} bytes of new frames"
        );
        read_up_to = next;
    }
    writer.shutdown().await;
    assert!(segment_len(dir.path()) > 20 * (MARK_SPACING_BYTES + READ_AHEAD_BYTES_MAX) / 10);
}

#[tokio::test]
async fn reads_from_any_lsn_after_recovery_skip_at_most_one_mark_spacing() {
    let dir = tempfile::tempdir().unwrap();
    write_log(test_options(dir.path()), 1..=FRAMES).await;
    let segment_bytes = segment_len(dir.path());
    // Recovery scanned every frame and left marks; a reader of the recovered log seeks with them.
    let (log, _) = open(test_options(dir.path())).unwrap();
    let reader = log.reader();
    for after in [FRAMES / 3, FRAMES / 2, FRAMES - 10, FRAMES - 1, 17] {
        let cost = cost_of_read(&reader, after, (after + 5).min(FRAMES));
        assert!(
            cost <= SEGMENT_HEADER_BYTES as u64 + MARK_SPACING_BYTES + READ_AHEAD_BYTES_MAX,
            "from lsn {after}: read {cost} bytes of a {segment_bytes}-byte segment"
        );
    }
}

#[tokio::test]
async fn a_reader_without_an_index_learns_one_as_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    write_log(test_options(dir.path()), 1..=FRAMES).await;
    let segment_bytes = segment_len(dir.path());
    let reader = LogReader::open(dir.path(), TEST_FRAME_BYTES_MAX).unwrap();
    // The first read near the end must scan the segment: nothing says where frames start.
    let first = cost_of_read(&reader, FRAMES - 10, FRAMES - 5);
    assert!(first >= segment_bytes / 2, "first read cost {first} bytes");
    // It left marks on the way and where it stopped; later reads seek.
    let again = cost_of_read(&reader, FRAMES - 5, FRAMES);
    assert!(
        again <= SEGMENT_HEADER_BYTES as u64 + READ_AHEAD_BYTES_MAX,
        "{again}"
    );
    let middle = cost_of_read(&reader, FRAMES / 2, FRAMES / 2 + 3);
    assert!(
        middle <= SEGMENT_HEADER_BYTES as u64 + MARK_SPACING_BYTES + READ_AHEAD_BYTES_MAX,
        "{middle}"
    );
}
