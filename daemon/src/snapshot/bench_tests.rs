//! Write and load times of a snapshot at the size of a 10M-event log: one job per rollout of
//! eight steps, each step with its step, sandbox result and reward facts, nearly every job
//! completed. Small by default, so the suite only checks that it works;
//! `AGENTD_SNAPSHOT_BENCH_ROLLOUTS=360000` gives the figures (about 2.9M steps, 10M events).
//! It prints figures and asserts no time (a loaded machine would make a timed assertion flaky).

use super::fixture::{self, build, record, T0_MS};
use super::*;
use agentd_schemas::events::LogRecord;
use std::time::Instant;

const STEPS_PER_ROLLOUT: u32 = 8;

/// The records of rollout `index`: its job submitted, leased and its rollout created; three
/// records per step; the job completed (one in a hundred is still leased).
fn rollout_records(index: u64) -> Vec<LogRecord> {
    let (job, ts_ms) = (index + 1, T0_MS + index * 100);
    let task = format!("task-{index:07}");
    let mut records = vec![record(
        ts_ms,
        vec![
            fixture::submitted(job, "rollouts", "episode", ts_ms, None, 0),
            fixture::leased(job, job, 1, ts_ms + 600_000),
            fixture::rollout_created(job, &task, &format!("group-{}", index / 8), Some(job)),
        ],
    )];
    for step in 0..STEPS_PER_ROLLOUT {
        let ts_ms = ts_ms + 1 + u64::from(step);
        records.push(record(ts_ms, vec![fixture::step(&task, Some(job), step)]));
        records.push(record(
            ts_ms,
            vec![fixture::sandbox(&task, Some(job), step)],
        ));
        records.push(record(ts_ms, vec![fixture::reward(&task, Some(job), step)]));
    }
    if index % 100 != 99 {
        records.push(record(ts_ms + 50, vec![fixture::completed(job, job)]));
    }
    records
}

#[test]
fn snapshot_write_and_load_times() {
    let rollouts: u64 = std::env::var("AGENTD_SNAPSHOT_BENCH_ROLLOUTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2_000);
    let started = Instant::now();
    let built = build((0..rollouts).flat_map(rollout_records));
    let apply_ms = started.elapsed().as_millis();
    let state = super::Sequencer {
        queue: built.queue,
        ledger: built.ledger,
    };
    let temp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_snapshot(temp.path(), built.last_lsn, [1; 32], &state).unwrap();
    let write_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let loaded: Loaded<super::Sequencer> = load_newest(temp.path(), super::accept_all)
        .unwrap()
        .expect("the snapshot loads");
    let load_ms = started.elapsed().as_millis();
    println!(
        "snapshot bench: {rollouts} rollouts, {} jobs, {} steps, {} records; apply (decoded \
         records, in memory) {apply_ms} ms; write {write_ms} ms; load {load_ms} ms; {} bytes",
        state.queue.jobs.len(),
        rollouts * u64::from(STEPS_PER_ROLLOUT),
        built.last_lsn.0,
        loaded.bytes,
    );
    assert_eq!(loaded.lsn, built.last_lsn);
    assert_eq!(loaded.state.queue.digest(), state.queue.digest());
    assert_eq!(loaded.state.queue.facts, state.queue.facts);
}
