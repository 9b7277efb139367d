//! Feature tests of the log against real files in temp dirs: no mocks, no sleeps.

mod cold_tier;
mod corruption;
mod disk_full;
mod preallocation;
mod reader_index;
mod segments;
mod torn_tail;
mod writer;

use super::{open, LogOptions, LogReader, LogWriter, Lsn, RawFrame, RecoveryReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Frame payload limit used by tests, small so that a damaged length is rejected early.
pub(super) const TEST_FRAME_BYTES_MAX: u32 = 64 * 1024;

/// Zeros test logs keep ahead: small, so the tiny frames of the tests grow it many times.
pub(super) const TEST_PREALLOCATE_BYTES: u64 = 4096;

/// Options for a test log: a fatal error panics the writer thread, so appends answer `Closed`
/// and the test fails loudly instead of exiting the test process.
pub(super) fn test_options(dir: &Path) -> LogOptions {
    let mut options = LogOptions::new(dir);
    options.frame_bytes_max = TEST_FRAME_BYTES_MAX;
    options.preallocate_bytes = TEST_PREALLOCATE_BYTES;
    options.on_fatal = Arc::new(|message: &str| panic!("fatal log error in a test: {message}"));
    options
}

/// A deterministic payload of varying length (0 to 40 bytes, some empty) for `lsn`.
pub(super) fn payload_for(lsn: u64) -> Vec<u8> {
    let len_bytes = (lsn * 7 % 41) as usize;
    (0..len_bytes)
        .map(|index| (lsn as u8).wrapping_mul(31).wrapping_add(index as u8))
        .collect()
}

/// A deterministic format version for `lsn`, so tests see that versions pass through.
pub(super) fn version_for(lsn: u64) -> u8 {
    (lsn % 3 + 1) as u8
}

pub(super) fn expected_frame(lsn: u64) -> RawFrame {
    RawFrame {
        lsn: Lsn(lsn),
        format_version: version_for(lsn),
        payload: payload_for(lsn),
    }
}

/// Appends `lsns` pipelined (enqueue all, then await all) and checks every acknowledgement.
pub(super) async fn append_all(writer: &LogWriter, lsns: std::ops::RangeInclusive<u64>) {
    let mut receivers = Vec::new();
    for lsn in lsns {
        let receiver = writer
            .enqueue(Lsn(lsn), version_for(lsn), payload_for(lsn))
            .await
            .unwrap();
        receivers.push((lsn, receiver));
    }
    for (lsn, receiver) in receivers {
        assert_eq!(receiver.await.unwrap(), Ok(Lsn(lsn)));
    }
}

/// Opens (recovering) the log, appends `lsns` after checking that they continue it, shuts down.
pub(super) async fn write_log(options: LogOptions, lsns: std::ops::RangeInclusive<u64>) {
    let (log, _report) = open(options).unwrap();
    assert_eq!(log.last_lsn(), Lsn(lsns.start() - 1));
    let writer = log.start_writer();
    append_all(&writer, lsns).await;
    writer.shutdown().await;
}

/// Every frame of the log in `dir`.
pub(super) fn read_all(dir: &Path) -> Vec<RawFrame> {
    LogReader::open(dir, TEST_FRAME_BYTES_MAX)
        .unwrap()
        .frames(Lsn(0), Lsn(u64::MAX))
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

pub(super) fn expected_frames(lsns: std::ops::RangeInclusive<u64>) -> Vec<RawFrame> {
    lsns.map(expected_frame).collect()
}

/// Segment files of `dir`, sorted by name (which is lsn order).
pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Recovers `dir` and checks the result holds exactly frames `1..=last_lsn`.
pub(super) fn recover_and_check(options: LogOptions, last_lsn: u64) -> RecoveryReport {
    let dir = options.dir.clone();
    let (log, report) = open(options).unwrap();
    assert_eq!(log.last_lsn(), Lsn(last_lsn));
    assert_eq!(report.last_lsn, Lsn(last_lsn));
    drop(log);
    assert_eq!(read_all(&dir), expected_frames(1..=last_lsn));
    report
}
