//! The driver: every record once, in order, to every projection, in bounded batches with
//! progress after each; the last projection owns the batch; a failing projection stops the
//! drive with the batches before it applied.

use super::*;
use crate::log::LogReader;
use crate::replay::tests::{write_log, RECORDS};

/// Remembers what it was given and how.
#[derive(Default)]
struct Recorder {
    lsns: Vec<u64>,
    batches: Vec<usize>,
    owned_batches: usize,
    /// Fails the batch holding this LSN.
    fail_at: Option<u64>,
}

impl Projection for Recorder {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        if let Some(fail_at) = self.fail_at {
            if records.iter().any(|(lsn, _)| lsn.0 == fail_at) {
                return Err(format!("refused lsn {fail_at}").into());
            }
        }
        for (lsn, record) in records {
            assert_eq!(record.ts_ms, lsn.0, "record of another frame");
            self.lsns.push(lsn.0);
        }
        self.batches.push(records.len());
        Ok(())
    }

    fn apply_owned(&mut self, records: Vec<(Lsn, LogRecord)>) -> Result<(), ApplyError> {
        self.owned_batches += 1;
        self.apply(&records)
    }
}

#[test]
fn every_projection_sees_every_record_once_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    let reader = LogReader::open(dir.path(), 1 << 20).unwrap();
    let (mut first, mut last) = (Recorder::default(), Recorder::default());
    let mut progress = Vec::new();
    let applied = drive(
        &reader,
        Lsn(5),
        Lsn(RECORDS),
        1000,
        &mut [&mut first, &mut last],
        |lsn| progress.push(lsn.0),
    )
    .unwrap();
    assert_eq!(applied, Lsn(RECORDS));
    let expected: Vec<u64> = (6..=RECORDS).collect();
    assert_eq!(first.lsns, expected);
    assert_eq!(last.lsns, expected);
    assert!(first.batches.iter().all(|&len| len <= 1000));
    assert_eq!(first.batches.len(), progress.len());
    assert_eq!(progress.last(), Some(&RECORDS));
    assert_eq!(
        first.owned_batches, 0,
        "only the last projection owns a batch"
    );
    assert_eq!(last.owned_batches, progress.len());
}

#[test]
fn an_empty_range_applies_nothing_and_returns_its_start() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    let reader = LogReader::open(dir.path(), 1 << 20).unwrap();
    let mut recorder = Recorder::default();
    let applied = drive(&reader, Lsn(9), Lsn(9), 10, &mut [&mut recorder], |_| {
        panic!("no batch, no progress")
    })
    .unwrap();
    assert_eq!(applied, Lsn(9));
    assert!(recorder.lsns.is_empty());
}

#[test]
fn a_failing_projection_stops_the_drive_after_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    let reader = LogReader::open(dir.path(), 1 << 20).unwrap();
    let mut failing = Recorder {
        fail_at: Some(2500),
        ..Recorder::default()
    };
    let mut after_it = Recorder::default();
    let outcome = drive(
        &reader,
        Lsn::ZERO,
        Lsn(RECORDS),
        1000,
        &mut [&mut failing, &mut after_it],
        |_| {},
    );
    match outcome {
        Err(DriveError::Apply(error)) => assert!(error.to_string().contains("2500")),
        other => panic!("expected the projection's error, got {other:?}"),
    }
    assert_eq!(failing.lsns, (1..=2000).collect::<Vec<_>>());
    assert_eq!(after_it.lsns, (1..=2000).collect::<Vec<_>>());
}

/// Skips the records of odd LSNs (their `ts_ms`), as a projection's `Undecoded` would.
fn odd_records(format_version: u8, payload: &[u8]) -> bool {
    let record = agentd_schemas::events::decode_record(format_version, payload).unwrap();
    record.ts_ms % 2 == 1
}

/// Keeps each record's LSN, `ts_ms` and event count.
#[derive(Default)]
struct Seen(Vec<(u64, u64, usize)>);

impl Projection for Seen {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        let seen = records
            .iter()
            .map(|(lsn, record)| (lsn.0, record.ts_ms, record.events.len()));
        self.0.extend(seen);
        Ok(())
    }
}

#[test]
fn skipped_records_arrive_empty_in_their_place_on_both_read_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    let reader = LogReader::open(dir.path(), 1 << 20).unwrap();
    // The whole log goes through the decoding thread; the short range stays on this one.
    for (after, up_to) in [(0, RECORDS), (40, 60)] {
        let mut seen = Seen::default();
        let applied = drive_skipping(
            &reader,
            (Lsn(after), Lsn(up_to)),
            Some(odd_records),
            1000,
            &mut [&mut seen],
            |_| {},
        )
        .unwrap();
        assert_eq!(
            applied,
            Lsn(up_to),
            "the last record counts, skipped or not"
        );
        let lsns: Vec<u64> = seen.0.iter().map(|&(lsn, _, _)| lsn).collect();
        assert_eq!(lsns, ((after + 1)..=up_to).collect::<Vec<_>>());
        for &(lsn, ts_ms, events) in &seen.0 {
            if lsn % 2 == 1 {
                assert_eq!((ts_ms, events), (0, 0), "lsn {lsn} arrives empty");
            } else {
                assert_eq!(ts_ms, lsn, "lsn {lsn} is decoded");
            }
        }
    }
}
