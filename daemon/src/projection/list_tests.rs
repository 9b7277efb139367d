//! Filtered job lists read the secondary indexes: every filter, page by page, returns exactly the
//! jobs a scan of every record would, as jobs move between states.

use super::jobs::{list, JobFilter};
use super::*;
use agentd_schemas::api::JobStateName;
use agentd_schemas::events::{AfterFailure, Event, JobLeased, JobSubmitted};
use agentd_schemas::{JobId, LeaseId};

const NOW_MS: u64 = 1_767_225_600_000;
const JOBS: u64 = 300;

fn record(ts_ms: u64, events: Vec<Event>) -> LogRecord {
    LogRecord {
        ts_ms,
        actor: None,
        events,
    }
}

fn submitted(job: u64) -> Event {
    Event::JobSubmitted(JobSubmitted {
        job_id: JobId(job),
        queue: ["alpha", "beta", "gamma"][(job % 3) as usize].into(),
        kind: "test".into(),
        payload_json: "{}".into(),
        priority: 0,
        // Every seventh job is scheduled for later than the time lists are read at.
        run_at_ms: if job.is_multiple_of(7) {
            NOW_MS + 60_000
        } else {
            NOW_MS
        },
        max_attempts: 3,
        lease_ttl_ms: 60_000,
        tags: Default::default(),
        task_id: None,
        idempotency_key: None,
    })
}

/// Events moving job `job` on from waiting, by its number: some stay waiting, some are leased,
/// completed, dead, cancelled, or failed and back to waiting.
fn later_events(job: u64) -> Vec<Event> {
    let lease_id = LeaseId(job);
    let leased = Event::JobLeased(JobLeased {
        job_id: JobId(job),
        lease_id,
        worker_id: "w".into(),
        attempt: 1,
        expires_at_ms: NOW_MS + 60_000,
    });
    let job_id = JobId(job);
    match job % 6 {
        0 | 1 if !job.is_multiple_of(7) => vec![leased],
        2 => vec![
            leased,
            Event::JobCompleted {
                job_id,
                lease_id,
                result_json: None,
                log_tail: None,
            },
        ],
        3 => vec![
            leased,
            Event::JobFailed {
                job_id,
                lease_id,
                error: "boom".into(),
                retryable: false,
                after: AfterFailure::Dead,
                log_tail: None,
            },
        ],
        4 => vec![Event::JobCancelled { job_id }],
        5 => vec![
            leased,
            Event::JobFailed {
                job_id,
                lease_id,
                error: "again".into(),
                retryable: true,
                after: AfterFailure::Retry { run_at_ms: NOW_MS },
                log_tail: None,
            },
        ],
        _ => Vec::new(),
    }
}

fn every_job(store: &ProjectionStore) -> Vec<agentd_schemas::projection::JobRecord> {
    list(
        store.db(),
        &JobFilter::default(),
        JobId(0),
        10_000,
        10_000,
        NOW_MS,
    )
    .unwrap()
    .0
}

/// Pages through `filter` with small pages and a small scan bound.
fn paged(store: &ProjectionStore, filter: &JobFilter) -> Vec<JobId> {
    let mut ids = Vec::new();
    let mut after = JobId(0);
    loop {
        let (jobs, next) = list(store.db(), filter, after, 7, 20, NOW_MS).unwrap();
        ids.extend(jobs.iter().map(|job| job.job_id));
        match next {
            Some(next) => after = next,
            None => return ids,
        }
    }
}

#[test]
fn every_filter_lists_what_a_full_scan_finds_as_jobs_change_state() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = ProjectionStore::open(dir.path()).unwrap();
    let mut records = Vec::new();
    // Submissions in one transaction, transitions in later ones, some jobs touched twice in a
    // transaction: the indexes must follow in every case.
    for job in 1..=JOBS {
        records.push(record(NOW_MS, vec![submitted(job)]));
    }
    for job in 1..=JOBS {
        records.push(record(NOW_MS, later_events(job)));
    }
    let numbered: Vec<(Lsn, LogRecord)> = records
        .into_iter()
        .enumerate()
        .map(|(index, record)| (Lsn(index as u64 + 1), record))
        .collect();
    for chunk in numbered.chunks(97) {
        store.apply(chunk, redb::Durability::None).unwrap();
    }
    let all = every_job(&store);
    assert_eq!(all.len(), JOBS as usize);
    let states = [
        JobStateName::Queued,
        JobStateName::Scheduled,
        JobStateName::Leased,
        JobStateName::Completed,
        JobStateName::Dead,
        JobStateName::Cancelled,
    ];
    let mut listed_by_state = 0;
    for queue in [
        None,
        Some("alpha"),
        Some("beta"),
        Some("gamma"),
        Some("none"),
    ] {
        for state in states.iter().copied().map(Some).chain([None]) {
            let filter = JobFilter {
                queue: queue.map(str::to_owned),
                state,
            };
            let expected: Vec<JobId> = all
                .iter()
                .filter(|job| queue.is_none_or(|queue| job.queue == queue))
                .filter(|job| {
                    state.is_none_or(|state| jobs::state_name(&job.state, NOW_MS) == state)
                })
                .map(|job| job.job_id)
                .collect();
            assert_eq!(paged(&store, &filter), expected, "{filter:?}");
            if queue.is_none() && state.is_some() {
                assert!(
                    !expected.is_empty(),
                    "no job is {state:?}: the test data is thin"
                );
                listed_by_state += expected.len();
            }
        }
    }
    // Each job is in exactly one state.
    assert_eq!(listed_by_state, JOBS as usize);
}
