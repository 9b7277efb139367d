//! State machine tests: each case drives `decide` + `apply` the way the sequencer does, with
//! explicit time, and checks what a user would see (state names, lease order, errors). A random
//! walk checks that indexes stay consistent and that replaying the same records gives the same
//! digest.

use super::decide::{self, DecideError, LeaseAsk};
use super::{JobStatus, QueueLimits, QueueState};
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_schemas::events::{Event, LogRecord, Tags};
use agentd_schemas::{JobId, LeaseId, Lsn};

/// Drives the state machine like the sequencer: decide, append (here: keep), apply.
struct Harness {
    state: QueueState,
    limits: QueueLimits,
    log: Vec<(Lsn, LogRecord)>,
    now_ms: u64,
}

impl Harness {
    fn new() -> Self {
        Harness {
            state: QueueState::new(),
            limits: QueueLimits {
                retry_backoff_base_ms: 100,
                ..QueueLimits::default()
            },
            log: Vec::new(),
            now_ms: 1_000_000,
        }
    }

    fn commit(&mut self, events: Vec<Event>) -> Lsn {
        let lsn = Lsn(self.log.len() as u64 + 1);
        let record = LogRecord {
            ts_ms: self.now_ms,
            actor: None,
            events,
        };
        self.state.apply(lsn, &record);
        self.log.push((lsn, record));
        lsn
    }

    fn submit(&mut self, request: SubmitJobRequest) -> JobId {
        let decision = decide::submit(&self.state, &self.limits, self.now_ms, &[request]).unwrap();
        let job_id = decision.reply[0].job_id;
        if !decision.events.is_empty() {
            self.commit(decision.events);
        }
        job_id
    }

    fn lease(
        &mut self,
        queues: &[&str],
        tags: &[(&str, &str)],
        max_jobs: u32,
    ) -> Vec<(JobId, LeaseId)> {
        self.state.promote_due(self.now_ms);
        let queues: Vec<String> = queues.iter().map(|queue| queue.to_string()).collect();
        let tags: Tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let decision = decide::lease(
            &self.state,
            &self.limits,
            self.now_ms,
            &LeaseAsk {
                worker_id: "w",
                queues: &queues,
                tags: &tags,
                max_jobs,
            },
        );
        let grants = decision
            .events
            .iter()
            .filter_map(|event| match event {
                Event::JobLeased(leased) => Some((leased.job_id, leased.lease_id)),
                _ => None,
            })
            .collect();
        if !decision.events.is_empty() {
            self.commit(decision.events);
        }
        grants
    }

    fn fail(&mut self, lease_id: LeaseId, retryable: bool) -> Result<(), DecideError> {
        let decision = decide::fail(
            &self.state,
            &self.limits,
            self.now_ms,
            lease_id,
            "boom",
            retryable,
            0.0,
            None,
        )?;
        self.commit(decision.events);
        Ok(())
    }

    fn complete(&mut self, lease_id: LeaseId) -> Result<(), DecideError> {
        let decision =
            decide::complete(&self.state, &self.limits, self.now_ms, lease_id, None, None)?;
        self.commit(decision.events);
        Ok(())
    }

    fn expire(&mut self) -> usize {
        let events = decide::expire_leases(&self.state, &self.limits, self.now_ms, || 0.0);
        let count = events.len();
        if count > 0 {
            self.commit(events);
        }
        count
    }

    fn state_of(&self, job_id: JobId) -> JobStateName {
        self.state.job(job_id).unwrap().state_name(self.now_ms)
    }

    fn replayed_digest(&self) -> String {
        let mut replayed = QueueState::new();
        for (lsn, record) in &self.log {
            replayed.apply(*lsn, record);
        }
        replayed.digest()
    }
}

fn job(queue: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.into(),
        kind: "k".into(),
        ..Default::default()
    }
}

#[test]
fn lease_order_is_priority_then_eligibility_then_submission() {
    // (priority, delay_ms) per submission; expected lease order by submission index.
    // (priority, delay_ms) per submission, then the expected lease order by submission index.
    type Case = (&'static [(i32, u64)], &'static [usize]);
    let cases: &[Case] = &[
        (&[(0, 0), (0, 0), (0, 0)], &[0, 1, 2]),
        (&[(0, 0), (5, 0), (1, 0)], &[1, 2, 0]),
        (&[(0, 50), (0, 0)], &[1, 0]),
        (&[(-1, 0), (0, 0), (-1, 0)], &[1, 0, 2]),
        (&[(9, 500), (0, 0)], &[1]),
    ];
    for (submissions, expected) in cases {
        let mut harness = Harness::new();
        let ids: Vec<JobId> = submissions
            .iter()
            .map(|(priority, delay_ms)| {
                harness.submit(SubmitJobRequest {
                    priority: Some(*priority),
                    delay_ms: (*delay_ms > 0).then_some(*delay_ms),
                    ..job("q")
                })
            })
            .collect();
        harness.now_ms += 100;
        let leased: Vec<JobId> = harness
            .lease(&["q"], &[], 10)
            .into_iter()
            .map(|(job_id, _)| job_id)
            .collect();
        let expected: Vec<JobId> = expected.iter().map(|index| ids[*index]).collect();
        assert_eq!(leased, expected, "case {submissions:?}");
    }
}

#[test]
fn failures_back_off_then_die_and_expiry_counts_as_a_failure() {
    let mut harness = Harness::new();
    let job_id = harness.submit(SubmitJobRequest {
        max_attempts: Some(3),
        lease_ttl_ms: Some(1000),
        ..job("q")
    });
    let (_, first) = harness.lease(&["q"], &[], 1)[0];
    harness.fail(first, true).unwrap();
    // Jitter 0 gives half the base backoff: 50 ms after attempt 1.
    assert_eq!(harness.state_of(job_id), JobStateName::Scheduled);
    assert!(harness.lease(&["q"], &[], 1).is_empty());
    harness.now_ms += 50;
    let (_, second) = harness.lease(&["q"], &[], 1)[0];
    harness.now_ms += 1000;
    assert_eq!(harness.expire(), 1);
    assert_eq!(
        harness.complete(second),
        Err(DecideError::LeaseLost {
            lease_id: second,
            reason: "it expired, was cancelled, or the job finished under another lease".into()
        })
    );
    harness.now_ms += 100;
    let (_, third) = harness.lease(&["q"], &[], 1)[0];
    assert_eq!(harness.state.job(job_id).unwrap().attempt, 3);
    harness.fail(third, true).unwrap();
    assert_eq!(
        harness.state_of(job_id),
        JobStateName::Dead,
        "no attempts left"
    );
    assert_eq!(harness.state.digest(), harness.replayed_digest());
}

#[test]
fn fencing_refuses_expired_superseded_and_unknown_leases() {
    let mut harness = Harness::new();
    harness.submit(SubmitJobRequest {
        lease_ttl_ms: Some(1000),
        ..job("q")
    });
    let (_, lease) = harness.lease(&["q"], &[], 1)[0];
    harness.now_ms += 1000;
    // Expired but not yet noticed by the timer: still refused.
    assert!(matches!(
        decide::heartbeat(&harness.state, harness.now_ms, lease),
        Err(DecideError::LeaseLost { .. })
    ));
    assert!(matches!(
        decide::heartbeat(&harness.state, harness.now_ms, LeaseId(999)),
        Err(DecideError::NotFound { .. })
    ));
    harness.expire();
    harness.now_ms += 1000;
    let (_, newer) = harness.lease(&["q"], &[], 1)[0];
    assert!(matches!(
        harness.complete(lease),
        Err(DecideError::LeaseLost { .. })
    ));
    harness.complete(newer).unwrap();
}

#[test]
fn tags_paused_queues_and_cancel() {
    let mut harness = Harness::new();
    let gpu = harness.submit(SubmitJobRequest {
        tags: Some([("gpu".to_string(), "h100".to_string())].into()),
        ..job("q")
    });
    let plain = harness.submit(job("q"));
    assert_eq!(
        harness
            .lease(&["q"], &[], 5)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![plain]
    );
    let pause = decide::set_paused(&harness.limits, "q", true).unwrap();
    harness.commit(pause.events);
    assert!(harness.lease(&["q"], &[("gpu", "h100")], 5).is_empty());
    let resume = decide::set_paused(&harness.limits, "q", false).unwrap();
    harness.commit(resume.events);
    let cancelled = decide::change_job(
        &harness.state,
        harness.now_ms,
        gpu,
        decide::JobChange::Cancel,
    )
    .unwrap();
    harness.commit(cancelled.events);
    assert!(harness.lease(&["q"], &[("gpu", "h100")], 5).is_empty());
    assert_eq!(harness.state_of(gpu), JobStateName::Cancelled);
    assert!(matches!(
        decide::change_job(
            &harness.state,
            harness.now_ms,
            gpu,
            decide::JobChange::Retry
        ),
        Err(DecideError::InvalidState { .. })
    ));
}

/// The kind labels the run-time metric; jobs of one kind share one copy of its name, so keeping
/// it costs a job a pointer, whatever the kind's length.
#[test]
fn jobs_keep_their_kind_and_jobs_of_a_kind_share_its_name() {
    let mut harness = Harness::new();
    let long_kind = "k".repeat(128);
    let ids: Vec<JobId> = [long_kind.as_str(), "verify", long_kind.as_str()]
        .into_iter()
        .map(|kind| {
            harness.submit(SubmitJobRequest {
                kind: kind.into(),
                ..job("q")
            })
        })
        .collect();
    let kind_of = |id: JobId| harness.state.job(id).unwrap().kind.clone();
    assert_eq!(&*kind_of(ids[0]), long_kind);
    assert_eq!(&*kind_of(ids[1]), "verify");
    assert!(std::sync::Arc::ptr_eq(&kind_of(ids[0]), &kind_of(ids[2])));
    assert_eq!(harness.state.kinds.len(), 2);
}

#[test]
fn validation_names_the_field() {
    let harness = Harness::new();
    let cases: Vec<(SubmitJobRequest, &str)> = vec![
        (job(""), "queue"),
        (job("has space"), "queue"),
        (
            SubmitJobRequest {
                kind: String::new(),
                ..job("q")
            },
            "kind",
        ),
        (
            SubmitJobRequest {
                max_attempts: Some(0),
                ..job("q")
            },
            "max_attempts",
        ),
        (
            SubmitJobRequest {
                lease_ttl_ms: Some(1),
                ..job("q")
            },
            "lease_ttl_ms",
        ),
        (
            SubmitJobRequest {
                delay_ms: Some(1),
                run_at_ms: Some(1),
                ..job("q")
            },
            "delay_ms",
        ),
        (
            SubmitJobRequest {
                payload: serde_json::json!("x".repeat(2 << 20)),
                ..job("q")
            },
            "payload",
        ),
        (
            SubmitJobRequest {
                idempotency_key: Some(String::new()),
                ..job("q")
            },
            "idempotency_key",
        ),
        (
            SubmitJobRequest {
                task_id: Some("a\nb".into()),
                ..job("q")
            },
            "task_id",
        ),
    ];
    for (request, field) in cases {
        let error = decide::submit(&harness.state, &harness.limits, harness.now_ms, &[request])
            .unwrap_err();
        assert!(error.to_string().starts_with(field), "{field}: {error}");
    }
}

/// A small deterministic pseudo-random generator, so the walk is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn random_walks_keep_indexes_consistent_and_replay_to_the_same_digest() {
    for seed in 0..20 {
        let mut rng = SplitMix(seed);
        let mut harness = Harness::new();
        let mut leases: Vec<LeaseId> = Vec::new();
        for _ in 0..400 {
            harness.now_ms += rng.next() % 200;
            match rng.next() % 6 {
                0 | 1 => {
                    let queue = ["a", "b"][(rng.next() % 2) as usize];
                    let delay = rng.next().is_multiple_of(3).then_some(rng.next() % 500 + 1);
                    harness.submit(SubmitJobRequest {
                        delay_ms: delay,
                        lease_ttl_ms: Some(300),
                        max_attempts: Some(2),
                        priority: Some((rng.next() % 3) as i32),
                        ..job(queue)
                    });
                }
                2 => leases.extend(
                    harness
                        .lease(&["a", "b"], &[], (rng.next() % 3 + 1) as u32)
                        .into_iter()
                        .map(|(_, lease)| lease),
                ),
                3 if !leases.is_empty() => {
                    let lease = leases.swap_remove((rng.next() as usize) % leases.len());
                    let _ = harness.complete(lease);
                }
                4 if !leases.is_empty() => {
                    let lease = leases.swap_remove((rng.next() as usize) % leases.len());
                    let _ = harness.fail(lease, rng.next().is_multiple_of(2));
                }
                _ => {
                    harness.expire();
                }
            }
            check_indexes(&harness.state);
        }
        assert_eq!(
            harness.state.digest(),
            harness.replayed_digest(),
            "seed {seed}"
        );
    }
}

fn check_indexes(state: &QueueState) {
    let mut leased = 0;
    for job in state.jobs.values() {
        let index = state.queue(&job.queue).unwrap();
        match &job.status {
            JobStatus::Waiting { run_at_ms } => {
                let ready =
                    index
                        .ready
                        .contains(&(std::cmp::Reverse(job.priority), *run_at_ms, job.id));
                let delayed = state.delayed.contains(&(*run_at_ms, job.id));
                assert!(
                    ready ^ delayed,
                    "{} is in exactly one of ready/delayed",
                    job.id
                );
            }
            JobStatus::Leased {
                lease_id,
                expires_at_ms,
                ..
            } => {
                leased += 1;
                assert_eq!(state.leases.get(lease_id), Some(&job.id));
                assert!(state.lease_expiries.contains(&(*expires_at_ms, *lease_id)));
            }
            _ => {}
        }
    }
    assert_eq!(state.leases.len(), leased);
    let counted: u64 = state.queues.values().map(|index| index.leased_count).sum();
    assert_eq!(counted, leased as u64);
    check_lease_cache(state);
}

/// The lease cache holds unfinished jobs' data only (a job retried after it died, or one past
/// the budget, has none and is answered from the projection), and its byte count is their sum.
fn check_lease_cache(state: &QueueState) {
    let mut bytes = 0;
    for job in state.jobs.values() {
        let finished = matches!(
            job.status,
            JobStatus::Completed | JobStatus::Dead | JobStatus::Cancelled
        );
        if let Some(data) = &job.lease_data {
            assert!(!finished, "{} is finished but keeps its lease data", job.id);
            bytes += data.cost();
        }
    }
    assert_eq!(state.lease_cache_bytes, bytes);
    assert!(bytes <= super::state::LEASE_CACHE_BYTES_MAX);
}

/// A lease is answered from the queue state: a job keeps its submission's payload and task
/// while it can still be leased, and a finished job gives its bytes back.
#[test]
fn unfinished_jobs_keep_their_payload_for_lease_answers() {
    let mut harness = Harness::new();
    let job_id = harness.submit(SubmitJobRequest {
        payload: serde_json::json!({"file": "a.py"}),
        task_id: Some("task-1".into()),
        ..job("q")
    });
    let cancelled = harness.submit(job("q"));
    let data = harness
        .state
        .job(job_id)
        .unwrap()
        .lease_data
        .clone()
        .unwrap();
    assert_eq!(&*data.payload_json, r#"{"file":"a.py"}"#);
    assert_eq!(data.task_id.as_deref(), Some("task-1"));
    let leases = harness.lease(&["q"], &[], 1);
    assert_eq!(leases[0].0, job_id);
    assert!(harness.state.job(job_id).unwrap().lease_data.is_some());
    check_lease_cache(&harness.state);
    let cancel = decide::change_job(
        &harness.state,
        harness.now_ms,
        cancelled,
        decide::JobChange::Cancel,
    )
    .unwrap();
    harness.commit(cancel.events);
    harness.complete(leases[0].1).unwrap();
    assert!(harness.state.job(job_id).unwrap().lease_data.is_none());
    assert_eq!(harness.state.lease_cache_bytes, 0);
    check_lease_cache(&harness.state);
}
