//! Commands decide without a sequencer: each test builds a state from decided records, passes a
//! [`DecideCx`] with a fixed time and jitter, and checks what the caller would be answered.

use super::command::{AnswerWithLsn, DecideCx, Decided, ReplyOf, SequencerCommand};
use super::{Cancel, Complete, CompleteThenLease, Fail, Lease, Queues, Retry, Submit};
use crate::queue::{DecideError, JobStatus, QueueLimits, QueueState};
use agentd_schemas::api::{JobStateName, LeaseRequest, NextLeaseRequest, SubmitJobRequest};
use agentd_schemas::events::LogRecord;
use agentd_schemas::{JobId, Lsn};

/// A queue state fed only with what commands decide, at a fixed time.
struct Harness {
    state: QueueState,
    limits: QueueLimits,
    now_ms: u64,
    jitter: fn() -> f64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            state: QueueState::new(),
            limits: QueueLimits {
                retry_backoff_base_ms: 1_000,
                ..QueueLimits::default()
            },
            now_ms: 1_000_000,
            jitter: || 0.0,
        }
    }

    fn cx(&self) -> DecideCx<'_> {
        DecideCx {
            state: &self.state,
            limits: &self.limits,
            now_ms: self.now_ms,
            jitter: self.jitter,
        }
    }

    /// Decides `command`; an append is applied at the next LSN and answered with it, as the
    /// sequencer does once the record is durable.
    fn run<C: SequencerCommand>(&mut self, command: C) -> Result<ReplyOf<C>, DecideError> {
        match command.decide(&self.cx())? {
            Decided::Append { events, answer } => {
                let lsn = self.state.last_lsn.next();
                let record = LogRecord {
                    ts_ms: self.now_ms,
                    actor: None,
                    events,
                };
                self.state.apply(lsn, &record);
                Ok(answer.with_lsn(lsn))
            }
            Decided::Answer(reply) => Ok(reply),
            Decided::Park(_) => panic!("parked"),
            Decided::Hold { reply, .. } => Ok(reply),
            Decided::Adopt { .. } => panic!("adopted"),
        }
    }

    fn submit(&mut self, idempotency_key: Option<&str>) -> JobId {
        let request = SubmitJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            idempotency_key: idempotency_key.map(str::to_owned),
            ..Default::default()
        };
        let answers = self.run(Submit {
            requests: vec![request],
        });
        answers.unwrap()[0].job_id
    }

    fn lease(&mut self) -> agentd_schemas::LeaseId {
        let outcome = self.run(Lease {
            request: lease_request(),
            wait_ms: 0,
        });
        outcome.unwrap().grants[0].lease_id
    }
}

fn lease_request() -> LeaseRequest {
    LeaseRequest {
        worker_id: "w".into(),
        queues: vec!["q".into()],
        ..Default::default()
    }
}

#[test]
fn a_repeated_submission_is_answered_with_the_original_record_and_appends_nothing() {
    let mut harness = Harness::new();
    let job_id = harness.submit(Some("key"));
    let request = SubmitJobRequest {
        queue: "q".into(),
        kind: "k".into(),
        idempotency_key: Some("key".into()),
        ..Default::default()
    };
    let decided = Submit {
        requests: vec![request],
    }
    .decide(&harness.cx())
    .unwrap();
    let Decided::Answer(answers) = decided else {
        panic!("a duplicate appends nothing");
    };
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].job_id, job_id);
    assert_eq!(answers[0].lsn, Lsn(1));
    assert!(answers[0].deduplicated);
}

#[test]
fn a_lease_that_finds_nothing_parks_and_one_that_finds_a_job_appends_its_grant() {
    let mut harness = Harness::new();
    let lease = || Lease {
        request: lease_request(),
        wait_ms: 5_000,
    };
    assert!(matches!(
        lease().decide(&harness.cx()),
        Ok(Decided::Park(_))
    ));
    let job_id = harness.submit(None);
    let outcome = harness.run(lease()).unwrap();
    assert_eq!(outcome.lsn, Some(Lsn(2)));
    assert_eq!(outcome.grants.len(), 1);
    assert_eq!(outcome.grants[0].job_id, job_id);
    assert_eq!(outcome.grants[0].submitted_lsn, Lsn(1));
    assert!(outcome.grants[0].job.is_some(), "answered from memory");
}

#[test]
fn a_failure_is_retried_after_a_backoff_spread_by_the_jitter_it_is_given() {
    let mut run_at = Vec::new();
    for jitter in [(|| 0.0) as fn() -> f64, || 0.5] {
        let mut harness = Harness::new();
        harness.jitter = jitter;
        harness.submit(None);
        let lease_id = harness.lease();
        let answer = harness
            .run(Fail {
                lease_id,
                error: "boom".into(),
                retryable: true,
                log_tail: None,
            })
            .unwrap();
        assert_eq!(answer.state, JobStateName::Scheduled);
        assert_eq!(answer.lsn, Lsn(3));
        run_at.push(answer.run_at_ms.unwrap() - harness.now_ms);
    }
    // Backoff 1,000 ms scaled into [50%, 100%) by the jitter.
    assert_eq!(run_at, [500, 750]);
}

#[test]
fn cancel_and_retry_answer_where_the_job_went_and_refuse_jobs_in_other_states() {
    let mut harness = Harness::new();
    let job_id = harness.submit(None);
    let refused = harness.run(Retry { job_id });
    assert!(matches!(
        refused,
        Err(DecideError::InvalidState {
            state: JobStateName::Queued,
            ..
        })
    ));
    let cancelled = harness.run(Cancel { job_id }).unwrap();
    assert_eq!(
        (cancelled.state, cancelled.run_at_ms, cancelled.lsn),
        (JobStateName::Cancelled, None, Lsn(2))
    );
    assert!(matches!(
        harness.run(Cancel { job_id }),
        Err(DecideError::InvalidState {
            state: JobStateName::Cancelled,
            ..
        })
    ));
    let dead = harness.submit(None);
    let lease_id = harness.lease();
    let failed = harness
        .run(Fail {
            lease_id,
            error: "fatal".into(),
            retryable: false,
            log_tail: None,
        })
        .unwrap();
    assert_eq!((failed.job_id, failed.state), (dead, JobStateName::Dead));
    let retried = harness.run(Retry { job_id: dead }).unwrap();
    assert_eq!(
        (retried.state, retried.run_at_ms),
        (JobStateName::Queued, Some(harness.now_ms))
    );
    let queues = harness.run(Queues).unwrap();
    assert_eq!(queues[0].depth["cancelled"], 1);
    assert_eq!(queues[0].depth["queued"], 1);
}

fn complete_then_lease(
    lease_id: agentd_schemas::LeaseId,
    next: NextLeaseRequest,
) -> CompleteThenLease {
    CompleteThenLease {
        complete: Complete {
            lease_id,
            result: Some(serde_json::json!({"ok": true})),
            log_tail: None,
        },
        next,
    }
}

fn next_on(queue: &str, max_jobs: Option<u32>) -> NextLeaseRequest {
    NextLeaseRequest {
        worker_id: "w".into(),
        queues: vec![queue.into()],
        tags: None,
        max_jobs,
    }
}

fn is_completed(harness: &Harness, job_id: JobId) -> bool {
    matches!(
        harness.state.job(job_id).unwrap().status,
        JobStatus::Completed
    )
}

#[test]
fn a_completion_with_next_completes_and_leases_the_next_ready_job_in_one_record() {
    let mut harness = Harness::new();
    let first = harness.submit(None);
    let second = harness.submit(None);
    let third = harness.submit(None);
    let lease_id = harness.lease();
    let (transition, grants) = harness
        .run(complete_then_lease(lease_id, next_on("q", Some(1))))
        .unwrap();
    // One record: the completion and the grant share its lsn (`Harness::run` applies one).
    assert_eq!(
        (transition.job_id, transition.state, transition.lsn),
        (first, JobStateName::Completed, Lsn(5))
    );
    assert!(is_completed(&harness, first));
    assert_eq!(grants.len(), 1, "max_jobs 1 leases one of the two ready");
    assert_eq!(grants[0].job_id, second);
    assert_eq!(grants[0].lease_id, agentd_schemas::LeaseId(lease_id.0 + 1));
    assert!(grants[0].job.is_some(), "answered from memory");
    let JobStatus::Leased { lease_id: held, .. } = harness.state.job(second).unwrap().status else {
        panic!("the next job is leased");
    };
    assert_eq!(held, grants[0].lease_id);
    // The grant is a lease like any other: it completes, and the last ready job follows.
    let (_, grants) = harness
        .run(complete_then_lease(held, next_on("q", None)))
        .unwrap();
    assert!(is_completed(&harness, second));
    assert_eq!(
        grants.iter().map(|grant| grant.job_id).collect::<Vec<_>>(),
        [third]
    );
}

#[test]
fn a_completion_with_next_and_nothing_ready_completes_and_leases_nothing() {
    for queue in ["q", "never-used"] {
        let mut harness = Harness::new();
        let job_id = harness.submit(None);
        let lease_id = harness.lease();
        let (transition, grants) = harness
            .run(complete_then_lease(lease_id, next_on(queue, Some(5))))
            .unwrap();
        assert_eq!(
            (transition.job_id, transition.lsn),
            (job_id, Lsn(3)),
            "{queue}"
        );
        assert!(grants.is_empty(), "{queue}");
        assert!(is_completed(&harness, job_id), "{queue}");
        assert_eq!(harness.state.next_lease_id, lease_id.0 + 1, "{queue}");
    }
}

#[test]
fn a_next_the_lease_route_refuses_refuses_the_call_and_the_lease_stays_held() {
    let mut harness = Harness::new();
    let job_id = harness.submit(None);
    harness.submit(None);
    let lease_id = harness.lease();
    let bad_name = next_on("no spaces", None);
    let refusals = [
        (next_on("q", Some(0)), "next.max_jobs"),
        (next_on("q", Some(1001)), "next.max_jobs"),
        (bad_name, "next.queues[0]"),
        (
            NextLeaseRequest {
                queues: Vec::new(),
                ..next_on("q", None)
            },
            "next.queues",
        ),
    ];
    for (next, expected_field) in refusals {
        let refused = complete_then_lease(lease_id, next).decide(&harness.cx());
        let Err(DecideError::Invalid { field, .. }) = refused else {
            panic!("{expected_field}: refused as the lease route refuses it");
        };
        assert_eq!(field, expected_field);
    }
    // Nothing was appended: the lease is still held and completes without `next`.
    assert_eq!(harness.state.last_lsn, Lsn(3));
    let completed = harness
        .run(Complete {
            lease_id,
            result: None,
            log_tail: None,
        })
        .unwrap();
    assert_eq!((completed.job_id, completed.lsn), (job_id, Lsn(4)));
}

#[test]
fn a_lost_lease_with_next_is_refused_and_leases_nothing() {
    let mut harness = Harness::new();
    harness.submit(None);
    let waiting = harness.submit(None);
    let lease_id = harness.lease();
    harness.run(Cancel { job_id: JobId(1) }).unwrap();
    let refused = harness.run(complete_then_lease(lease_id, next_on("q", None)));
    assert!(matches!(refused, Err(DecideError::LeaseLost { .. })));
    assert!(matches!(
        harness.state.job(waiting).unwrap().status,
        JobStatus::Waiting { .. }
    ));
}
