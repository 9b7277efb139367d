//! `for_each_record` on both of its paths (inline for short ranges, a decoding thread for long
//! ones): every record once and in order, a consumer that stops early, and a record that does
//! not decode.

use super::*;
use crate::config::Config;
use crate::log::LogReader;
use agentd_schemas::events::{encode_record, RECORD_FORMAT_VERSION};

/// Longer than `PIPELINE_MIN_FRAMES`, and not a multiple of the batch size.
pub(super) const RECORDS: u64 = PIPELINE_MIN_FRAMES + 3 * PIPELINE_BATCH_RECORDS as u64 + 17;

/// Writes `RECORDS` records whose `ts_ms` is their LSN; the one at `garbage_at` (if any) is a
/// frame with a valid CRC whose payload is not a record.
pub(super) fn write_log(dir: &std::path::Path, garbage_at: Option<u64>) {
    let options = crate::data_dir::log_options(&Config::default(), dir.to_path_buf());
    let (log, _) = crate::log::open(options).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let writer = log.start_writer();
        let mut pending = Vec::new();
        for lsn in 1..=RECORDS {
            let payload = if garbage_at == Some(lsn) {
                vec![0xc1; 16] // 0xc1 is never used in MessagePack
            } else {
                encode_record(&LogRecord {
                    ts_ms: lsn,
                    actor: None,
                    events: Vec::new(),
                })
            };
            pending.push(
                writer
                    .enqueue(Lsn(lsn), RECORD_FORMAT_VERSION, payload)
                    .await
                    .unwrap(),
            );
        }
        for rx in pending {
            rx.await.unwrap().unwrap();
        }
        writer.shutdown().await;
    });
}

fn visited(dir: &std::path::Path, after: u64, up_to: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    for_each_record(
        &LogReader::open(dir, 1 << 20).unwrap(),
        Lsn(after),
        Lsn(up_to),
        |lsn, record| {
            assert_eq!(record.ts_ms, lsn.0, "record of another frame");
            seen.push(lsn.0);
            Ok(())
        },
    )
    .unwrap();
    seen
}

#[test]
fn every_record_once_in_order_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    for (after, up_to) in [
        (0, RECORDS),
        (7, RECORDS - 5),
        (RECORDS - 100, RECORDS),
        (0, 0),
        (40, 41),
    ] {
        let expected: Vec<u64> = (after + 1..=up_to).collect();
        assert_eq!(
            visited(dir.path(), after, up_to),
            expected,
            "({after}, {up_to}]"
        );
    }
}

#[test]
fn a_consumer_that_stops_ends_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), None);
    let mut seen = 0;
    let outcome = for_each_record(
        &LogReader::open(dir.path(), 1 << 20).unwrap(),
        Lsn::ZERO,
        Lsn(RECORDS),
        |lsn, _| {
            seen += 1;
            if lsn.0 == 1000 {
                return Err(ReplayError::Stopped);
            }
            Ok(())
        },
    );
    assert!(matches!(outcome, Err(ReplayError::Stopped)));
    assert_eq!(seen, 1000);
}

#[test]
fn an_undecodable_record_stops_the_replay_at_its_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let garbage_at = PIPELINE_MIN_FRAMES + 10;
    write_log(dir.path(), Some(garbage_at));
    for after in [0, garbage_at - 20] {
        let mut seen = Vec::new();
        let outcome = for_each_record(
            &LogReader::open(dir.path(), 1 << 20).unwrap(),
            Lsn(after),
            Lsn(RECORDS),
            |lsn, _| {
                seen.push(lsn.0);
                Ok(())
            },
        );
        match outcome {
            Err(ReplayError::Decode { lsn, .. }) => assert_eq!(lsn, Lsn(garbage_at)),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(seen, (after + 1..garbage_at).collect::<Vec<_>>());
    }
}
