//! The domain decisions against hand-made states: what each command appends, answers or
//! refuses.

use super::decide::{decide, CreateRollout, DomainCommand, DomainReply, Target};
use crate::queue::decide::DecideError;
use crate::queue::QueueState;
use agentd_schemas::events::{
    Action, DatasetMeta, DatasetRecord, Event, JobLeased, JobSubmitted, LogRecord, RewardRecorded,
    RewardSource, Sampling, SandboxOutcome, SandboxResultRecorded, StateFrom, StepRecorded,
};
use agentd_schemas::{JobId, LeaseId, RolloutId};
use std::collections::BTreeMap;

const NOW: u64 = 1_000_000;

/// Applies each decision's events as the next record, as the sequencer does.
struct Harness {
    state: QueueState,
}

impl Harness {
    fn new() -> Self {
        Harness {
            state: QueueState::new(),
        }
    }

    fn apply(&mut self, events: Vec<Event>) {
        let lsn = self.state.last_lsn.next();
        self.state.apply(
            lsn,
            &LogRecord {
                ts_ms: NOW,
                actor: None,
                events,
            },
        );
    }

    /// Decides and, when accepted, applies.
    fn run(&mut self, command: DomainCommand) -> Result<DomainReply, DecideError> {
        let decision = decide(&self.state, NOW, command)?;
        if !decision.events.is_empty() {
            self.apply(decision.events);
        }
        Ok(decision.reply)
    }

    /// Submits job `n` and leases it (lease `n`, attempt `attempt`).
    fn leased_job(&mut self, n: u64, attempt: u32) {
        if self.state.job(JobId(n)).is_none() {
            self.apply(vec![Event::JobSubmitted(JobSubmitted {
                job_id: JobId(n),
                queue: "episodes".into(),
                kind: "episode".into(),
                payload_json: "{}".into(),
                priority: 0,
                run_at_ms: 0,
                max_attempts: 3,
                lease_ttl_ms: 60_000,
                tags: BTreeMap::new(),
                task_id: Some("t".into()),
                idempotency_key: None,
            })]);
        }
        let lease_id = LeaseId(self.state.next_lease_id);
        self.apply(vec![Event::JobLeased(JobLeased {
            job_id: JobId(n),
            lease_id,
            worker_id: "w".into(),
            attempt,
            expires_at_ms: NOW + 60_000,
        })]);
    }
}

fn create(task_id: &str, group: Option<&str>, lease_id: Option<LeaseId>) -> DomainCommand {
    DomainCommand::CreateRollout(CreateRollout {
        task_id: task_id.into(),
        group: group.map(str::to_owned),
        model: "m".into(),
        policy_version: "p".into(),
        sampling: Sampling::default(),
        job_id: None,
        lease_id,
        state_from: StateFrom::Task,
    })
}

fn rollout_of(reply: DomainReply) -> super::decide::RolloutAnswer {
    match reply {
        DomainReply::Rollout(answer) => answer,
        other => panic!("not a rollout: {other:?}"),
    }
}

fn step(target: Target, index: u32, lease_id: Option<LeaseId>) -> DomainCommand {
    DomainCommand::RecordStep {
        target,
        step: Box::new(StepRecorded {
            task_id: String::new(),
            rollout_id: None,
            step: index,
            job_id: None,
            lease_id,
            attempt: None,
            worker_id: None,
            model: "m".into(),
            policy_version: "p".into(),
            sampling: Sampling::default(),
            prompt_tokens: None,
            completion_tokens: None,
            prompt: None,
            think: None,
            action: Some(Action::Rule { yaml: "r".into() }),
            state_update: None,
            raw_output: None,
            generation_ms: None,
            format_error: None,
        }),
        state_update: None,
        format_reward: None,
    }
}

fn sandbox(target: Target, index: u32) -> DomainCommand {
    DomainCommand::RecordSandbox {
        target,
        result: Box::new(SandboxResultRecorded {
            task_id: String::new(),
            rollout_id: None,
            step: index,
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
        }),
    }
}

fn reward(target: Target, index: u32) -> DomainCommand {
    DomainCommand::RecordReward {
        target,
        reward: RewardRecorded {
            task_id: String::new(),
            rollout_id: None,
            step: index,
            lease_id: None,
            value: 1.0,
            verified: true,
            components: BTreeMap::new(),
            source: RewardSource::Rule,
        },
    }
}

#[test]
fn step_indexes_are_unique_per_rollout_not_per_task() {
    let mut harness = Harness::new();
    let first = rollout_of(harness.run(create("t", Some("g"), None)).unwrap());
    let second = rollout_of(harness.run(create("t", Some("g"), None)).unwrap());
    assert_eq!(
        (first.rollout_id, second.rollout_id),
        (RolloutId(1), RolloutId(2))
    );
    for target in [
        Target::Rollout(first.rollout_id),
        Target::Rollout(second.rollout_id),
        Target::Task("t".into()),
    ] {
        let reply = harness.run(step(target.clone(), 0, None)).unwrap();
        let expected_rollout = match &target {
            Target::Rollout(id) => Some(*id),
            Target::Task(_) => None,
        };
        assert_eq!(
            reply,
            DomainReply::Recorded {
                task_id: "t".into(),
                rollout_id: expected_rollout
            }
        );
        assert!(matches!(
            harness.run(step(target, 0, None)),
            Err(DecideError::Conflict { .. })
        ));
    }
}

#[test]
fn sandbox_results_and_rewards_need_their_step_and_are_written_once() {
    let mut harness = Harness::new();
    let rollout = rollout_of(harness.run(create("t", None, None)).unwrap()).rollout_id;
    let target = Target::Rollout(rollout);
    match harness.run(sandbox(target.clone(), 0)) {
        Err(error @ DecideError::NotFoundHint { .. }) => assert_eq!(
            error.to_string(),
            format!("step 0 of rollout {rollout} (task t) not found; record the step first")
        ),
        other => panic!("expected a missing step, got {other:?}"),
    }
    harness.run(step(target.clone(), 0, None)).unwrap();
    harness.run(sandbox(target.clone(), 0)).unwrap();
    harness.run(reward(target.clone(), 0)).unwrap();
    assert!(matches!(
        harness.run(sandbox(target.clone(), 0)),
        Err(DecideError::Conflict { .. })
    ));
    assert!(matches!(
        harness.run(reward(target, 0)),
        Err(DecideError::Conflict { .. })
    ));
    assert!(matches!(
        harness.run(step(Target::Rollout(RolloutId(77)), 0, None)),
        Err(DecideError::NotFound { .. })
    ));
}

#[test]
fn a_retried_job_gets_its_rollout_back_to_resume() {
    let mut harness = Harness::new();
    harness.leased_job(1, 1);
    let lease_1 = LeaseId(1);
    let created = rollout_of(harness.run(create("t", None, Some(lease_1))).unwrap());
    assert!(created.created);
    assert_eq!(
        created.group, "ro_1",
        "a default group of one is named after it"
    );
    let target = Target::Rollout(created.rollout_id);
    harness.run(step(target.clone(), 0, Some(lease_1))).unwrap();
    harness.run(step(target.clone(), 1, Some(lease_1))).unwrap();
    // The lease is lost and the job leased again: attempt 2 asks for a rollout and resumes.
    harness.leased_job(1, 2);
    let lease_2 = LeaseId(2);
    assert!(matches!(
        harness.run(step(target.clone(), 2, Some(lease_1))),
        Err(DecideError::LeaseLost { .. })
    ));
    let resumed = rollout_of(harness.run(create("t", None, Some(lease_2))).unwrap());
    assert_eq!(resumed.rollout_id, created.rollout_id);
    assert!(!resumed.created);
    assert_eq!((resumed.steps, resumed.next_step), (2, 2));
    assert!(matches!(
        harness.run(step(target.clone(), 1, Some(lease_2))),
        Err(DecideError::Conflict { .. })
    ));
    harness.run(step(target, 2, Some(lease_2))).unwrap();
    // The job's rollout is visible on its next lease.
    assert_eq!(
        harness.state.facts.rollout_of_job(JobId(1)),
        Some(created.rollout_id)
    );
}

#[test]
fn a_lease_of_another_job_cannot_write_a_jobs_steps_but_a_verifiers_lease_fences_its_verdict() {
    let mut harness = Harness::new();
    harness.leased_job(1, 1);
    harness.leased_job(2, 1);
    let rollout = rollout_of(harness.run(create("t", None, Some(LeaseId(1)))).unwrap());
    let target = Target::Rollout(rollout.rollout_id);
    assert!(matches!(
        harness.run(step(target.clone(), 0, Some(LeaseId(2)))),
        Err(DecideError::Invalid { .. })
    ));
    assert!(matches!(
        harness.run(step(target.clone(), 0, Some(LeaseId(9)))),
        Err(DecideError::NotFound { .. })
    ));
    harness
        .run(step(target.clone(), 0, Some(LeaseId(1))))
        .unwrap();
    // Job 2 is the verifier: its held lease fences the sandbox result and the reward.
    let mut verdict = sandbox(target.clone(), 0);
    if let DomainCommand::RecordSandbox { result, .. } = &mut verdict {
        result.lease_id = Some(LeaseId(2));
    }
    harness.run(verdict).unwrap();
    let mut stale = reward(target, 0);
    if let DomainCommand::RecordReward { reward, .. } = &mut stale {
        reward.lease_id = Some(LeaseId(9));
    }
    assert!(matches!(
        harness.run(stale),
        Err(DecideError::NotFound { .. })
    ));
}

#[test]
fn a_group_samples_one_task_and_group_names_are_checked() {
    let mut harness = Harness::new();
    harness.run(create("t", Some("g"), None)).unwrap();
    assert!(matches!(
        harness.run(create("u", Some("g"), None)),
        Err(DecideError::Conflict { .. })
    ));
    for bad in ["", "  ", "ro_7", "a\nb"] {
        assert!(
            matches!(
                harness.run(create("t", Some(bad), None)),
                Err(DecideError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        harness.run(create("t", Some(&"x".repeat(129)), None)),
        Err(DecideError::Invalid { .. })
    ));
}

fn meta(sha: char) -> DatasetMeta {
    DatasetMeta {
        source: "s".into(),
        version: "v".into(),
        license: "MIT".into(),
        downloaded_at: "2026-01-01T00:00:00Z".into(),
        sha256: sha.to_string().repeat(64),
        num_records: 4,
        url: None,
    }
}

fn records(instructions: &[&str]) -> Vec<DatasetRecord> {
    instructions
        .iter()
        .map(|instruction| DatasetRecord {
            instruction: (*instruction).into(),
            pre: "a".into(),
            post: "b".into(),
            language: "python".into(),
            tags: Vec::new(),
            metadata_json: "{}".into(),
        })
        .collect()
}

#[test]
fn a_dataset_registers_once_and_records_are_written_once_per_position() {
    let mut harness = Harness::new();
    let ingest = |runs: Vec<(u64, Vec<DatasetRecord>)>| DomainCommand::IngestRecords {
        source: "s".into(),
        version: "v".into(),
        runs,
    };
    match harness.run(ingest(vec![(0, records(&["a"]))])) {
        Err(error @ DecideError::NotFoundHint { .. }) => assert_eq!(
            error.to_string(),
            "dataset s v not found; register it first: POST its meta to /v1/datasets"
        ),
        other => panic!("expected an unregistered dataset, got {other:?}"),
    }
    assert_eq!(
        harness
            .run(DomainCommand::RegisterDataset(meta('0')))
            .unwrap(),
        DomainReply::DatasetRegistered { created: true }
    );
    let again = decide(
        &harness.state,
        NOW,
        DomainCommand::RegisterDataset(meta('0')),
    )
    .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(
        again.reply,
        DomainReply::DatasetRegistered { created: false }
    );
    assert!(matches!(
        harness.run(DomainCommand::RegisterDataset(meta('1'))),
        Err(DecideError::Conflict { message }) if message.contains("sha256")
    ));
    harness
        .run(ingest(vec![(1, records(&["b", "c"]))]))
        .unwrap();
    let decision = decide(
        &harness.state,
        NOW,
        ingest(vec![(0, records(&["a", "b", "c", "d"]))]),
    )
    .unwrap();
    let shape: Vec<(u64, usize)> = decision
        .events
        .iter()
        .map(|event| match event {
            Event::DatasetRecordsIngested(batch) => (batch.first_index, batch.records.len()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(shape, [(0, 1), (3, 1)]);
    assert_eq!(
        decision.reply,
        DomainReply::Ingested {
            already_received: 2
        }
    );
    let resent = decide(&harness.state, NOW, ingest(vec![(1, records(&["b", "c"]))])).unwrap();
    assert!(resent.events.is_empty(), "a resent batch writes nothing");
}

#[test]
fn an_episodes_rollout_takes_steps_only_under_its_lease_and_verdicts_only_under_a_lease() {
    let mut harness = Harness::new();
    harness.leased_job(1, 1);
    // Claiming a job's rollout without holding its lease is refused: nobody can take over an
    // episode's rollout before it starts, or resume it.
    let mut claim = create("t", None, None);
    if let DomainCommand::CreateRollout(create) = &mut claim {
        create.job_id = Some(JobId(1));
    }
    assert!(matches!(
        harness.run(claim),
        Err(DecideError::Invalid { field, .. }) if field == "job_id"
    ));
    let rollout = rollout_of(
        harness
            .run(create("t", Some("g"), Some(LeaseId(1))))
            .unwrap(),
    );
    let target = Target::Rollout(rollout.rollout_id);
    // Without a lease, the episode's steps, state and verdicts are refused.
    assert!(matches!(
        harness.run(step(target.clone(), 0, None)),
        Err(DecideError::Invalid { field, .. }) if field == "lease_id"
    ));
    harness
        .run(step(target.clone(), 0, Some(LeaseId(1))))
        .unwrap();
    assert!(matches!(
        harness.run(sandbox(target.clone(), 0)),
        Err(DecideError::Invalid { field, .. }) if field == "lease_id"
    ));
    // A resumed attempt samples the rollout as it began: another group or policy is refused.
    let mut other_policy = create("t", Some("g"), Some(LeaseId(1)));
    if let DomainCommand::CreateRollout(create) = &mut other_policy {
        create.policy_version = "p2".into();
    }
    assert!(matches!(
        harness.run(other_policy),
        Err(DecideError::Conflict { message }) if message.contains("policy_version")
    ));
    assert!(matches!(
        harness.run(create("t", Some("other"), Some(LeaseId(1)))),
        Err(DecideError::Conflict { message }) if message.contains("group")
    ));
    assert!(!rollout_of(harness.run(create("t", None, Some(LeaseId(1)))).unwrap()).created);
}

#[test]
fn a_group_holds_at_most_group_rollouts_max() {
    let mut harness = Harness::new();
    for _ in 0..super::decide::GROUP_ROLLOUTS_MAX {
        harness.run(create("t", Some("big"), None)).unwrap();
    }
    assert!(matches!(
        harness.run(create("t", Some("big"), None)),
        Err(DecideError::OverLimit { .. })
    ));
}
