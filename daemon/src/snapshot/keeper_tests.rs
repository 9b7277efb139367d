//! The keeper writes every `every_records` records and at a stop, and the records applied while
//! a snapshot thread holds the state reach it: the last snapshot equals a replay of the log.

use super::*;
use agentd_schemas::events::{encode_record, Event, JobSubmitted, RECORD_FORMAT_VERSION};
use agentd_schemas::JobId;

const RECORDS: u64 = 60;

fn submit(job: u64) -> LogRecord {
    LogRecord {
        ts_ms: 1_767_225_600_000 + job,
        actor: None,
        events: vec![Event::JobSubmitted(JobSubmitted {
            job_id: JobId(job),
            queue: "q".into(),
            kind: "k".into(),
            payload_json: "{}".into(),
            priority: 0,
            run_at_ms: 1_767_225_600_000 + job,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: Default::default(),
            task_id: None,
            idempotency_key: None,
        })],
    }
}

async fn log_of(dir: &std::path::Path) -> (LogReader, Vec<(Lsn, LogRecord)>) {
    let options = crate::data_dir::log_options(&crate::config::Config::default(), dir.join("log"));
    let (log, _) = crate::log::open(options).unwrap();
    let reader = log.reader();
    let writer = log.start_writer();
    let mut records = Vec::new();
    for n in 1..=RECORDS {
        let record = submit(n);
        writer
            .enqueue(Lsn(n), RECORD_FORMAT_VERSION, encode_record(&record))
            .await
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        records.push((Lsn(n), record));
    }
    writer.shutdown().await;
    (reader, records)
}

#[tokio::test]
async fn records_applied_while_a_snapshot_is_written_reach_the_state_and_a_stop_writes_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, records) = log_of(dir.path()).await;
    let snapshots = dir.path().join("snapshots");
    let mut keeper = SnapshotKeeper::new(SequencerState::default(), snapshots.clone(), 10, Lsn(0));
    let mut periodic = Vec::new();
    for (n, batch) in records.chunks(3).enumerate() {
        // Right after a write started, batches wait for the state (the write takes an fsync).
        keeper.projection().apply(batch).unwrap();
        if n % 4 == 3 {
            // A slow projector: the write finished before the next catch-up.
            keeper.take_back(true);
        }
        let lsn = batch.last().unwrap().0;
        keeper.caught_up(lsn, &reader);
        periodic.push(keeper.last_written);
    }
    periodic.dedup();
    assert!(
        periodic.len() >= 4,
        "a snapshot about every 10 records: {periodic:?}"
    );
    keeper.stopped(Lsn(RECORDS), &reader);

    let mut replayed = SequencerState::default();
    replayed.apply(&records).unwrap();
    let loaded = file::load_newest::<SequencerState>(&snapshots, |_, _| true)
        .unwrap()
        .expect("the stop's snapshot");
    assert_eq!(loaded.lsn, Lsn(RECORDS));
    assert_eq!(loaded.state.queue.digest(), replayed.queue.digest());
    assert_eq!(loaded.state.queue.next_job_id, RECORDS + 1);
    assert_eq!(loaded.state.last_record_ms, replayed.last_record_ms);
    let Held::Here(kept) = &keeper.held else {
        panic!("the state is back with the keeper");
    };
    assert_eq!(kept.queue.digest(), replayed.queue.digest());
}

#[tokio::test]
async fn a_stop_with_nothing_new_since_the_last_snapshot_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, records) = log_of(dir.path()).await;
    let snapshots = dir.path().join("snapshots");
    let mut state = SequencerState::default();
    state.apply(&records).unwrap();
    let mut keeper = SnapshotKeeper::new(state, snapshots.clone(), 1_000, Lsn(RECORDS));
    keeper.caught_up(Lsn(RECORDS), &reader);
    keeper.stopped(Lsn(RECORDS), &reader);
    assert!(
        !snapshots.exists(),
        "the snapshot start-up loaded is still the newest"
    );
}

#[tokio::test]
async fn a_state_with_more_entries_than_the_interval_waits_as_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_reader, records) = log_of(dir.path()).await;
    let mut state = SequencerState::default();
    state.apply(&records).unwrap();
    assert_eq!(state.entries(), RECORDS, "one entry per job");
    let keeper = SnapshotKeeper::new(state, dir.path().join("snapshots"), 10, Lsn(RECORDS));
    assert_eq!(keeper.next_due, Lsn(2 * RECORDS));
    let small = SnapshotKeeper::new(SequencerState::default(), dir.path().join("s"), 10, Lsn(5));
    assert_eq!(small.next_due, Lsn(15));
}
