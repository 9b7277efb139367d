//! Commands decide without a sequencer: each test builds a state from decided records, passes a
//! [`DecideCx`] with a fixed time and jitter, and checks what the caller would be answered.

use super::command::{AnswerWithLsn, DecideCx, Decided, ReplyOf, SequencerCommand};
use super::{Cancel, Fail, Lease, Queues, Retry, Submit};
use crate::queue::{DecideError, QueueLimits, QueueState};
use agentd_schemas::api::{JobStateName, LeaseRequest, SubmitJobRequest};
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
