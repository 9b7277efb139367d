//! Log records for the snapshot tests: every kind of state a snapshot must carry (jobs in every
//! status, retries, idempotency keys, a paused queue, rollouts with steps and their facts, a
//! task's default rollout, datasets with gaps, exports, schedules and builds).

use crate::export::ledger::ExportLedger;
use crate::queue::QueueState;
use agentd_schemas::events::{
    AfterFailure, BuildSource, BuildStrategy, DatasetBuildSpec, DatasetBuilt, DatasetMeta,
    DatasetRecord, DatasetRecordsIngested, Event, ExportCopied, ExportFormat, ExportKind,
    ExportRecorded, JobLeased, JobSubmitted, LogRecord, RewardRecorded, RewardSource,
    RolloutCreated, Sampling, SandboxOutcome, SandboxResultRecorded, ScheduleFired, StateFrom,
    StepRecorded,
};
use agentd_schemas::{JobId, LeaseId, Lsn, RolloutId};
use std::collections::BTreeMap;

/// Start of the fixture's clock.
pub const T0_MS: u64 = 1_767_225_600_000;

/// The states the records build, and the records (for replaying them again).
pub struct Built {
    pub queue: QueueState,
    pub ledger: ExportLedger,
    pub last_lsn: Lsn,
}

/// Applies `records` from LSN 1 on, as start-up's replay does.
pub fn build(records: impl IntoIterator<Item = LogRecord>) -> Built {
    let mut built = Built {
        queue: QueueState::new(),
        ledger: ExportLedger::default(),
        last_lsn: Lsn::ZERO,
    };
    for record in records {
        built.last_lsn = built.last_lsn.next();
        built.queue.apply(built.last_lsn, &record);
        built.ledger.apply(built.last_lsn, &record);
    }
    built
}

pub fn record(ts_ms: u64, events: Vec<Event>) -> LogRecord {
    LogRecord {
        ts_ms,
        actor: Some("test".into()),
        events,
    }
}

/// A varied log: ten jobs of two kinds in two queues in every status, two rollouts with steps
/// and facts, a default rollout, a dataset with a gap, and the export ledger's events.
pub fn varied_log() -> Vec<LogRecord> {
    let at = |offset_ms: u64| T0_MS + offset_ms;
    let mut records = Vec::new();
    let submits: Vec<Event> = (1..=10)
        .map(|job| {
            let (queue, kind) = if job % 3 == 0 {
                ("evals", "eval")
            } else {
                ("rollouts", "episode")
            };
            let key = (job % 2 == 0).then(|| format!("key-{job}"));
            // Job 9 is delayed far into the future: it stays scheduled.
            let run_at_ms = if job == 9 { at(3_600_000) } else { at(0) };
            submitted(
                job,
                queue,
                kind,
                run_at_ms,
                key.as_deref(),
                (job % 4) as i32,
            )
        })
        .collect();
    records.push(record(at(0), submits));
    let leases: Vec<Event> = (1..=6).map(|job| leased(job, job, 1, at(60_000))).collect();
    records.push(record(at(10), leases));
    records.push(record(
        at(20),
        vec![
            completed(1, 1),
            failed(2, 2, AfterFailure::Retry { run_at_ms: at(500) }),
            failed(3, 3, AfterFailure::Dead),
            Event::JobCancelled { job_id: JobId(7) },
            Event::LeaseHeartbeat {
                job_id: JobId(4),
                lease_id: LeaseId(4),
                expires_at_ms: at(90_000),
            },
            Event::QueuePaused {
                queue: "evals".into(),
            },
        ],
    ));
    // Job 2's retry is due: leased again, attempt 2.
    records.push(record(at(600), vec![leased(2, 7, 2, at(60_600))]));
    records.extend(domain_records(at(700)));
    records.extend(ledger_records(at(900)));
    records
}

/// Rollouts of jobs 4 and 5 with steps, sandbox results and rewards; a default rollout; a
/// dataset registered with records received in two runs with a gap between them.
fn domain_records(ts_ms: u64) -> Vec<LogRecord> {
    let mut records = vec![record(
        ts_ms,
        vec![
            rollout_created(1, "task-a", "group-a", Some(4)),
            rollout_created(2, "task-a", "group-a", Some(5)),
        ],
    )];
    for step_index in 0..3 {
        records.push(record(ts_ms + 1, vec![step("task-a", Some(1), step_index)]));
        records.push(record(
            ts_ms + 2,
            vec![sandbox("task-a", Some(1), step_index)],
        ));
        records.push(record(
            ts_ms + 3,
            vec![reward("task-a", Some(1), step_index)],
        ));
    }
    records.push(record(ts_ms + 4, vec![step("task-a", Some(2), 0)]));
    records.push(record(ts_ms + 5, vec![step("task-b", None, 0)]));
    records.push(record(ts_ms + 6, vec![reward("task-b", None, 0)]));
    records.push(record(
        ts_ms + 7,
        vec![
            Event::DatasetRegistered(dataset_meta()),
            ingested(0, 5),
            ingested(8, 2),
        ],
    ));
    records
}

/// An export recorded then copied, a schedule fired, and a build whose spec leaves out a field
/// in the middle of those it may leave out (`view`) but not a later one (`training_run_id`).
fn ledger_records(ts_ms: u64) -> Vec<LogRecord> {
    vec![
        record(ts_ms, vec![Event::ScheduleFired(schedule_fired())]),
        record(ts_ms + 1, vec![Event::ExportRecorded(export_recorded())]),
        record(ts_ms + 2, vec![Event::DatasetBuilt(dataset_built())]),
        record(
            ts_ms + 3,
            vec![Event::ExportCopied(ExportCopied {
                export_id: "exp_1".into(),
                copied_to: "s3://bucket/exports/exp_1/".into(),
            })],
        ),
    ]
}

pub fn submitted(
    job: u64,
    queue: &str,
    kind: &str,
    run_at_ms: u64,
    idempotency_key: Option<&str>,
    priority: i32,
) -> Event {
    Event::JobSubmitted(JobSubmitted {
        job_id: JobId(job),
        queue: queue.into(),
        kind: kind.into(),
        payload_json: format!(r#"{{"n":{job}}}"#),
        priority,
        run_at_ms,
        max_attempts: 3,
        lease_ttl_ms: 60_000,
        tags: BTreeMap::from([("gpu".to_string(), (job % 2).to_string())]),
        task_id: Some(format!("task-{job}")),
        idempotency_key: idempotency_key.map(str::to_string),
    })
}

pub fn leased(job: u64, lease: u64, attempt: u32, expires_at_ms: u64) -> Event {
    Event::JobLeased(JobLeased {
        job_id: JobId(job),
        lease_id: LeaseId(lease),
        worker_id: format!("worker-{}", lease % 3),
        attempt,
        expires_at_ms,
    })
}

pub fn completed(job: u64, lease: u64) -> Event {
    Event::JobCompleted {
        job_id: JobId(job),
        lease_id: LeaseId(lease),
        result_json: None,
        log_tail: None,
    }
}

fn failed(job: u64, lease: u64, after: AfterFailure) -> Event {
    Event::JobFailed {
        job_id: JobId(job),
        lease_id: LeaseId(lease),
        error: "boom".into(),
        retryable: matches!(after, AfterFailure::Retry { .. }),
        after,
        log_tail: None,
    }
}

pub fn rollout_created(id: u64, task_id: &str, group: &str, job: Option<u64>) -> Event {
    Event::RolloutCreated(RolloutCreated {
        rollout_id: RolloutId(id),
        task_id: task_id.into(),
        group: group.into(),
        model: "m".into(),
        policy_version: "v1".into(),
        sampling: Sampling::default(),
        job_id: job.map(JobId),
        lease_id: job.map(LeaseId),
        attempt: job.map(|_| 1),
        worker_id: None,
        state_from: StateFrom::Task,
    })
}

pub fn step(task_id: &str, rollout: Option<u64>, step: u32) -> Event {
    Event::StepRecorded(StepRecorded {
        task_id: task_id.into(),
        rollout_id: rollout.map(RolloutId),
        step,
        job_id: None,
        lease_id: None,
        attempt: None,
        worker_id: None,
        model: "m".into(),
        policy_version: "v1".into(),
        sampling: Sampling::default(),
        prompt_tokens: None,
        completion_tokens: None,
        prompt: None,
        think: None,
        action: None,
        state_update: None,
        raw_output: None,
        format_error: None,
        generation_ms: None,
    })
}

pub fn sandbox(task_id: &str, rollout: Option<u64>, step: u32) -> Event {
    Event::SandboxResultRecorded(SandboxResultRecorded {
        task_id: task_id.into(),
        rollout_id: rollout.map(RolloutId),
        step,
        lease_id: None,
        exit_code: Some(0),
        outcome: SandboxOutcome::Ok,
        diff: String::new(),
        stdout: String::new(),
        stderr: String::new(),
        tests_passed: None,
        tests_failed: None,
        duration_ms: None,
        peak_rss_bytes: None,
    })
}

pub fn reward(task_id: &str, rollout: Option<u64>, step: u32) -> Event {
    Event::RewardRecorded(RewardRecorded {
        task_id: task_id.into(),
        rollout_id: rollout.map(RolloutId),
        step,
        lease_id: None,
        value: 1.0,
        verified: true,
        components: BTreeMap::new(),
        source: RewardSource::Rule,
    })
}

pub fn dataset_meta() -> DatasetMeta {
    DatasetMeta {
        source: "py".into(),
        version: "v1".into(),
        license: "MIT".into(),
        downloaded_at: "2026-01-01T00:00:00Z".into(),
        sha256: "00".repeat(32),
        num_records: 10,
        url: None,
    }
}

fn ingested(first_index: u64, count: usize) -> Event {
    let record = DatasetRecord {
        instruction: "i".into(),
        pre: "a".into(),
        post: "b".into(),
        language: "python".into(),
        tags: Vec::new(),
        metadata_json: "{}".into(),
    };
    Event::DatasetRecordsIngested(DatasetRecordsIngested {
        source: "py".into(),
        version: "v1".into(),
        first_index,
        records: vec![record; count],
    })
}

pub fn schedule_fired() -> ScheduleFired {
    ScheduleFired {
        schedule: "nightly".into(),
        slot_ms: T0_MS,
        kind: ExportKind::Trajectories,
        format: ExportFormat::Parquet,
        after_lsn: Lsn(0),
        to_lsn: Lsn(20),
        export_id: "exp_1".into(),
    }
}

pub fn export_recorded() -> ExportRecorded {
    ExportRecorded {
        export_id: "exp_1".into(),
        kind: ExportKind::Trajectories,
        format: ExportFormat::Parquet,
        after_lsn: Lsn(0),
        to_lsn: Lsn(20),
        dir: "exports/exp_1".into(),
        rows: 4,
        files: Vec::new(),
        manifest_sha256: "11".repeat(32),
        schema_version: 1,
        schedule: None,
        copied_to: None,
    }
}

pub fn dataset_built() -> DatasetBuilt {
    DatasetBuilt {
        dataset_key: "py-v1".into(),
        build_id: "bld_1".into(),
        spec: DatasetBuildSpec {
            name: "py".into(),
            version: "v1".into(),
            source: BuildSource::Records,
            strategy: BuildStrategy::Latest,
            seed: None,
            limit: None,
            filters: BTreeMap::new(),
            view: None,
            training_run_id: Some("run-7".into()),
            session_id: None,
        },
        to_lsn: Lsn(21),
        dir: "datasets/py-v1/bld_1".into(),
        rows: 10,
        files: Vec::new(),
        manifest_sha256: "22".repeat(32),
        schema_version: 1,
        copied_to: None,
    }
}
