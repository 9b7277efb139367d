//! Preallocated zeros after the last frame (`active.rs`): the writer keeps them ahead while it
//! runs, cuts them at a roll and at a clean stop, and recovery after a crash reads them as
//! space, not damage, while a torn frame in them is still cut and a valid frame behind them is
//! still refused.

use super::*;
use crate::log::frame::{check_frame, encode_frame, FrameCheck, FRAME_HEADER_BYTES};
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::LogError;

const PREALLOCATE: u64 = TEST_PREALLOCATE_BYTES;

fn options(dir: &Path) -> LogOptions {
    test_options(dir)
}

/// Where frames `1..=last` end in a single-segment log.
fn frames_end(last: u64) -> u64 {
    (SEGMENT_HEADER_BYTES
        + (1..=last)
            .map(|lsn| FRAME_HEADER_BYTES + payload_for(lsn).len())
            .sum::<usize>()) as u64
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Appends `1..=last` to a fresh log in `dir` and copies its files to `crashed` while the writer
/// still runs: the copy is what a crash (SIGKILL, power loss after the fsyncs) leaves.
async fn crash_copy(dir: &Path, crashed: &Path, last: u64) -> LogWriter {
    let (log, _) = open(options(dir)).unwrap();
    let writer = log.start_writer();
    append_all(&writer, 1..=last).await;
    std::fs::create_dir_all(crashed).unwrap();
    for path in segment_files(dir) {
        std::fs::copy(&path, crashed.join(path.file_name().unwrap())).unwrap();
    }
    writer
}

/// [`crash_copy`] of frames `1..=last` under `temp`: the crashed copy's directory, its one
/// segment and that segment's bytes.
async fn crashed_log(temp: &Path, last: u64) -> (PathBuf, PathBuf, Vec<u8>) {
    let crashed = temp.join("crashed");
    crash_copy(&temp.join("log"), &crashed, last)
        .await
        .shutdown()
        .await;
    let segment = segment_files(&crashed)[0].clone();
    let bytes = std::fs::read(&segment).unwrap();
    (crashed, segment, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_zeros_ahead_and_a_clean_stop_cuts_them() {
    let temp = tempfile::tempdir().unwrap();
    let crashed = temp.path().join("crashed");
    let writer = crash_copy(temp.path(), &crashed, 40).await;
    let segment = &segment_files(temp.path())[0];
    let bytes = std::fs::read(segment).unwrap();
    let end = frames_end(40) as usize;
    assert!(
        bytes.len() >= end + PREALLOCATE as usize / 2,
        "{} bytes",
        bytes.len()
    );
    assert!(bytes[end..].iter().all(|&byte| byte == 0));

    writer.shutdown().await;
    assert_eq!(file_len(segment), frames_end(40));
    assert_eq!(read_all(temp.path()), expected_frames(1..=40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_keeps_the_zeros_a_crash_left_and_appends_over_them() {
    let temp = tempfile::tempdir().unwrap();
    let crashed = temp.path().join("crashed");
    let writer = crash_copy(&temp.path().join("log"), &crashed, 40).await;
    writer.shutdown().await;
    let segment = segment_files(&crashed)[0].clone();
    let len_before = file_len(&segment);
    assert!(len_before > frames_end(40));

    // Read before recovery (as offline tools do): the zeros end the log.
    assert_eq!(read_all(&crashed), expected_frames(1..=40));
    let report = recover_and_check(options(&crashed), 40);
    assert_eq!(report.truncated, None, "zeros are not a torn tail");
    assert_eq!(file_len(&segment), len_before, "recovery cut nothing");

    write_log(options(&crashed), 41..=60).await;
    assert_eq!(read_all(&crashed), expected_frames(1..=60));
    assert_eq!(file_len(&segment), frames_end(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_leaves_the_sealed_segment_ending_at_its_last_frame() {
    let temp = tempfile::tempdir().unwrap();
    let mut options = options(temp.path());
    // Several frames per segment and many rolls.
    options.segment_bytes_max = (SEGMENT_HEADER_BYTES + 6 * (FRAME_HEADER_BYTES + 40)) as u64;
    let (log, _) = open(options.clone()).unwrap();
    let writer = log.start_writer();
    append_all(&writer, 1..=60).await;
    let files = segment_files(temp.path());
    assert!(files.len() > 3, "{} segments", files.len());
    for sealed in &files[..files.len() - 1] {
        let bytes = std::fs::read(sealed).unwrap();
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < bytes.len() {
            match check_frame(&bytes[offset..], TEST_FRAME_BYTES_MAX) {
                FrameCheck::Valid(header) => offset += header.frame_bytes() as usize,
                other => panic!("{} at byte {offset}: {other:?}", sealed.display()),
            }
        }
        assert_eq!(
            offset,
            bytes.len(),
            "{} ends at its last frame",
            sealed.display()
        );
    }
    let last = files.last().unwrap();
    assert!(
        file_len(last) > PREALLOCATE / 2,
        "the active segment has zeros ahead"
    );
    writer.shutdown().await;
    recover_and_check(options, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_frame_over_the_zeros_is_cut() {
    let temp = tempfile::tempdir().unwrap();
    let (crashed, segment, mut bytes) = crashed_log(temp.path(), 40).await;
    // The first 30 bytes of frame 41, then the zeros it never overwrote.
    let mut frame = Vec::new();
    encode_frame(&mut frame, 41, 1, &[7; 100]);
    let end = frames_end(40) as usize;
    bytes[end..end + 30].copy_from_slice(&frame[..30]);
    std::fs::write(&segment, &bytes).unwrap();

    let report = recover_and_check(options(&crashed), 40);
    let torn = report.truncated.expect("a torn tail");
    assert_eq!(torn.offset, frames_end(40));
    assert_eq!(file_len(&segment), frames_end(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_frame_behind_the_zeros_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let (crashed, segment, mut bytes) = crashed_log(temp.path(), 40).await;
    // Frame 42 landed, frame 41 before it did not: recovery cannot tell that from acknowledged
    // data behind damage, so it refuses rather than cut it (Protocol-Aware Recovery).
    let mut frame = Vec::new();
    encode_frame(&mut frame, 42, 1, &[7; 10]);
    let at = frames_end(40) as usize + 64;
    bytes[at..at + frame.len()].copy_from_slice(&frame);
    std::fs::write(&segment, &bytes).unwrap();

    let error = open(options(&crashed)).unwrap_err();
    assert!(
        matches!(&error, LogError::Corrupt { offset, .. } if *offset == frames_end(40)),
        "{error}"
    );
}
