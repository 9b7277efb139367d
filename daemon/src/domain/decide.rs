//! Decisions of domain writes: rollouts, steps, sandbox results, rewards, agent-state updates,
//! dataset registrations and ingests. Shaped like `queue/decide.rs`: each function reads the
//! sequencer's state (the job state and its [`FactIndex`]) and returns the events to append and
//! what to answer, or a [`DecideError`]; it never mutates state. Time and ids come in as
//! arguments or from the state's counters, so the decision is written into the events.
//!
//! The HTTP handlers validate shapes and bounds (which need no state), then send one of these
//! commands to the sequencer, which decides it here against everything logged before it. Two
//! writers of the same step therefore cannot both be told they recorded it, and a refused write
//! never reaches the log.

use super::facts::{rollout_ref, FactIndex, StepIndex};
use crate::queue::decide::{held_lease, DecideError, Decision, Limit};
use crate::queue::{JobStatus, QueueState};
use agentd_schemas::events::{
    DatasetMeta, DatasetRecord, DatasetRecordsIngested, Event, RewardRecorded, RolloutCreated,
    Sampling, SandboxResultRecorded, StateFrom, StepRecorded, TaskStateUpdated,
};
use agentd_schemas::{JobId, LeaseId, Lsn, RolloutId};

/// Longest group name, in characters.
pub const GROUP_CHARS_MAX: usize = 128;
/// Most rollouts in one group (GRPO samples 4 to 64 per prompt).
pub const GROUP_ROLLOUTS_MAX: u64 = 1024;

/// A domain write, validated for shape by the handler and decided by the sequencer.
#[derive(Debug, Clone)]
pub enum DomainCommand {
    CreateRollout(CreateRollout),
    /// A step, and the state update logged with it. The events' `task_id` is filled in from the
    /// rollout when the target is a created rollout.
    RecordStep {
        target: Target,
        step: Box<StepRecorded>,
        state_update: Option<TaskStateUpdated>,
        /// The reward of a step whose raw output did not parse (0, `format`), in the same record.
        format_reward: Option<RewardRecorded>,
    },
    RecordSandbox {
        target: Target,
        result: Box<SandboxResultRecorded>,
    },
    RecordReward {
        target: Target,
        reward: RewardRecorded,
    },
    UpdateState {
        target: Target,
        update: TaskStateUpdated,
    },
    RegisterDataset(DatasetMeta),
    /// Valid records as runs of consecutive positions.
    IngestRecords {
        source: String,
        version: String,
        runs: Vec<(u64, Vec<DatasetRecord>)>,
    },
}

impl DomainCommand {
    /// The lease that fences the write, if any.
    pub fn lease_id(&self) -> Option<LeaseId> {
        match self {
            DomainCommand::CreateRollout(create) => create.lease_id,
            DomainCommand::RecordStep { step, .. } => step.lease_id,
            DomainCommand::RecordSandbox { result, .. } => result.lease_id,
            DomainCommand::RecordReward { reward, .. } => reward.lease_id,
            DomainCommand::UpdateState { update, .. } => update.lease_id,
            DomainCommand::RegisterDataset(_) | DomainCommand::IngestRecords { .. } => None,
        }
    }
}

/// Where a trajectory write goes: a created rollout, or a task's default rollout (the
/// task-level routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Rollout(RolloutId),
    Task(String),
}

#[derive(Debug, Clone)]
pub struct CreateRollout {
    pub task_id: String,
    pub group: Option<String>,
    pub model: String,
    pub policy_version: String,
    pub sampling: Sampling,
    pub job_id: Option<JobId>,
    pub lease_id: Option<LeaseId>,
    pub state_from: StateFrom,
}

/// What a decided domain write answers (the LSN comes from the commit, when there is one).
#[derive(Debug, Clone, PartialEq)]
pub enum DomainReply {
    Rollout(RolloutAnswer),
    /// A step, sandbox result, reward or state update, recorded in the rollout (or the task's
    /// default rollout when `rollout_id` is `None`) of `task_id`.
    Recorded {
        task_id: String,
        rollout_id: Option<RolloutId>,
    },
    /// `created: false` when the same meta was registered before (nothing appended).
    DatasetRegistered {
        created: bool,
    },
    /// Valid records left out because the dataset already received their positions.
    Ingested {
        already_received: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutAnswer {
    pub rollout_id: RolloutId,
    pub task_id: String,
    pub group: String,
    /// `false` when the job already had this rollout (nothing appended; resume it).
    pub created: bool,
    /// The record that created it; `None` when it is the record being appended.
    pub created_lsn: Option<Lsn>,
    pub steps: u64,
    pub next_step: u32,
}

/// Decides one domain command at `now_ms`.
pub fn decide(
    state: &QueueState,
    now_ms: u64,
    command: DomainCommand,
) -> Result<Decision<DomainReply>, DecideError> {
    let lease = match command.lease_id() {
        Some(lease_id) => Some(LeaseDetails::of(state, now_ms, lease_id)?),
        None => None,
    };
    let facts = &state.facts;
    match command {
        DomainCommand::CreateRollout(create) => create_rollout(state, lease, create),
        DomainCommand::RecordStep {
            target,
            mut step,
            mut state_update,
            format_reward,
        } => {
            let (task_id, rollout_id, steps) = resolve(facts, &target)?;
            check_job(state, step.job_id, lease.as_ref())?;
            check_episode_write(facts, rollout_id, step.job_id, lease.as_ref())?;
            if let Some(existing) = steps.get(&step.step) {
                return Err(conflict(format!(
                    "step {} of {} is already recorded (lsn {}); steps are immutable",
                    step.step,
                    describe(&task_id, rollout_id),
                    existing.lsn
                )));
            }
            step.task_id.clone_from(&task_id);
            step.rollout_id = rollout_id;
            if let Some(lease) = &lease {
                step.job_id = Some(lease.job_id);
                step.attempt = Some(lease.attempt);
                step.worker_id = Some(lease.worker_id.clone());
            }
            let mut events = vec![Event::StepRecorded(*step)];
            if let Some(update) = state_update.as_mut() {
                update.task_id.clone_from(&task_id);
                update.rollout_id = rollout_id;
                events.push(Event::TaskStateUpdated(update.clone()));
            }
            if let Some(mut reward) = format_reward {
                reward.task_id.clone_from(&task_id);
                reward.rollout_id = rollout_id;
                events.push(Event::RewardRecorded(reward));
            }
            recorded(events, task_id, rollout_id)
        }
        DomainCommand::RecordSandbox { target, mut result } => {
            // Any held lease fences a sandbox result or a reward: they come from verifiers,
            // jobs of their own, not from the episode the rollout runs under.
            let (task_id, rollout_id, steps) = resolve(facts, &target)?;
            check_verdict_write(facts, rollout_id, lease.as_ref())?;
            let facts_of_step = steps
                .get(&result.step)
                .ok_or_else(|| step_not_found(result.step, &task_id, rollout_id))?;
            if let Some(existing) = facts_of_step.sandbox {
                return Err(conflict(format!(
                    "step {} of {} already has a sandbox result (lsn {existing})",
                    result.step,
                    describe(&task_id, rollout_id)
                )));
            }
            result.task_id.clone_from(&task_id);
            result.rollout_id = rollout_id;
            recorded(
                vec![Event::SandboxResultRecorded(*result)],
                task_id,
                rollout_id,
            )
        }
        DomainCommand::RecordReward { target, mut reward } => {
            let (task_id, rollout_id, steps) = resolve(facts, &target)?;
            check_verdict_write(facts, rollout_id, lease.as_ref())?;
            let facts_of_step = steps
                .get(&reward.step)
                .ok_or_else(|| step_not_found(reward.step, &task_id, rollout_id))?;
            if let Some(existing) = facts_of_step.reward {
                return Err(conflict(format!(
                    "step {} of {} already has a reward (lsn {existing})",
                    reward.step,
                    describe(&task_id, rollout_id)
                )));
            }
            reward.task_id.clone_from(&task_id);
            reward.rollout_id = rollout_id;
            recorded(vec![Event::RewardRecorded(reward)], task_id, rollout_id)
        }
        DomainCommand::UpdateState { target, mut update } => {
            let (task_id, rollout_id, _) = resolve(facts, &target)?;
            check_episode_write(facts, rollout_id, None, lease.as_ref())?;
            update.task_id.clone_from(&task_id);
            update.rollout_id = rollout_id;
            recorded(vec![Event::TaskStateUpdated(update)], task_id, rollout_id)
        }
        DomainCommand::RegisterDataset(meta) => register_dataset(facts, meta),
        DomainCommand::IngestRecords {
            source,
            version,
            runs,
        } => ingest(facts, source, version, runs),
    }
}

/// The job, attempt and worker of a held lease.
struct LeaseDetails {
    lease_id: LeaseId,
    job_id: JobId,
    attempt: u32,
    worker_id: String,
}

impl LeaseDetails {
    fn of(state: &QueueState, now_ms: u64, lease_id: LeaseId) -> Result<Self, DecideError> {
        let job = held_lease(state, now_ms, lease_id)?;
        let worker_id = match &job.status {
            JobStatus::Leased { worker_id, .. } => worker_id.to_string(),
            _ => String::new(),
        };
        Ok(LeaseDetails {
            lease_id,
            job_id: job.id,
            attempt: job.attempt,
            worker_id,
        })
    }
}

fn create_rollout(
    state: &QueueState,
    lease: Option<LeaseDetails>,
    create: CreateRollout,
) -> Result<Decision<DomainReply>, DecideError> {
    let facts = &state.facts;
    if create.job_id.is_some() && lease.is_none() {
        // Otherwise anyone could claim a job's rollout before its episode does, or resume it.
        return Err(DecideError::Invalid {
            field: "job_id".into(),
            message:
                "a rollout runs under a job only with a held lease of it: send the job's lease_id"
                    .into(),
        });
    }
    check_job(state, create.job_id, lease.as_ref())?;
    let job_id = lease.as_ref().map(|lease| lease.job_id);
    if let Some(job_id) = job_id {
        if let Some(existing) = facts.rollout_of_job(job_id) {
            // A retried attempt of the episode: the job's rollout, to resume.
            let rollout = facts.rollout(existing).expect("indexed rollouts exist");
            let mismatch = [
                (
                    "task",
                    rollout.task_id.as_str(),
                    Some(create.task_id.as_str()),
                ),
                ("group", rollout.group.as_str(), create.group.as_deref()),
                ("model", rollout.model.as_str(), Some(create.model.as_str())),
                (
                    "policy_version",
                    rollout.policy_version.as_str(),
                    Some(create.policy_version.as_str()),
                ),
            ]
            .into_iter()
            .find(|(_, existing, asked)| asked.is_some_and(|asked| asked != *existing));
            if let Some((field, existing_value, _)) = mismatch {
                return Err(conflict(format!(
                    "job {job_id} already runs rollout {existing} with {field} {existing_value:?}; a job has one rollout, and a resumed attempt samples it as it began"
                )));
            }
            return Ok(Decision {
                events: Vec::new(),
                reply: DomainReply::Rollout(RolloutAnswer {
                    rollout_id: existing,
                    task_id: rollout.task_id.clone(),
                    group: rollout.group.clone(),
                    created: false,
                    created_lsn: Some(rollout.lsn),
                    steps: rollout.steps.len() as u64,
                    next_step: next_step(&rollout.steps),
                }),
            });
        }
    }
    let rollout_id = facts.next_rollout_id();
    let group = match create.group {
        Some(group) => {
            check_group(&group)?;
            if let Some(existing) = facts.group(&group) {
                if existing.task_id != create.task_id {
                    return Err(conflict(format!(
                        "group {group} samples task {}; a group holds rollouts of one task",
                        existing.task_id
                    )));
                }
                if existing.rollouts >= GROUP_ROLLOUTS_MAX {
                    return Err(DecideError::OverLimit {
                        limit: Limit::Items,
                        field: "group".into(),
                        message: format!(
                            "group {group} holds {GROUP_ROLLOUTS_MAX} rollouts, the most one group may hold"
                        ),
                    });
                }
            }
            group
        }
        None => rollout_id.to_string(),
    };
    let event = RolloutCreated {
        rollout_id,
        task_id: create.task_id.clone(),
        group: group.clone(),
        model: create.model,
        policy_version: create.policy_version,
        sampling: create.sampling,
        job_id,
        lease_id: lease.as_ref().map(|lease| lease.lease_id),
        attempt: lease.as_ref().map(|lease| lease.attempt),
        worker_id: lease.map(|lease| lease.worker_id),
        state_from: create.state_from,
    };
    Ok(Decision {
        events: vec![Event::RolloutCreated(event)],
        reply: DomainReply::Rollout(RolloutAnswer {
            rollout_id,
            task_id: create.task_id,
            group,
            created: true,
            created_lsn: None,
            steps: 0,
            next_step: 0,
        }),
    })
}

/// A client-chosen group name: 1 to [`GROUP_CHARS_MAX`] characters, no control characters, and
/// not `ro_...`, which default groups (named after their rollout) use.
pub fn check_group(group: &str) -> Result<(), DecideError> {
    let invalid = |message: &str| DecideError::Invalid {
        field: "group".into(),
        message: message.into(),
    };
    if group.trim().is_empty() {
        return Err(invalid("must not be blank"));
    }
    if group.chars().count() > GROUP_CHARS_MAX {
        return Err(invalid(&format!(
            "must be at most {GROUP_CHARS_MAX} characters"
        )));
    }
    if group.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    if group.starts_with(RolloutId::PREFIX) {
        return Err(invalid(
            "must not start with `ro_` (the names of default groups of one)",
        ));
    }
    Ok(())
}

fn register_dataset(
    facts: &FactIndex,
    meta: DatasetMeta,
) -> Result<Decision<DomainReply>, DecideError> {
    let existing = facts
        .dataset(&meta.source, &meta.version)
        .and_then(|dataset| dataset.meta.as_ref());
    match existing {
        Some(existing) if *existing == meta => Ok(Decision {
            events: Vec::new(),
            reply: DomainReply::DatasetRegistered { created: false },
        }),
        Some(existing) => Err(conflict(format!(
            "dataset {} {} is already registered with a different {}; register a new version instead",
            meta.source,
            meta.version,
            differing_fields(existing, &meta).join(", ")
        ))),
        None => Ok(Decision {
            events: vec![Event::DatasetRegistered(meta)],
            reply: DomainReply::DatasetRegistered { created: true },
        }),
    }
}

/// One `dataset_records_ingested` event per stretch of positions the dataset has not received,
/// so resending a batch writes nothing.
fn ingest(
    facts: &FactIndex,
    source: String,
    version: String,
    runs: Vec<(u64, Vec<DatasetRecord>)>,
) -> Result<Decision<DomainReply>, DecideError> {
    let Some(dataset) = facts
        .dataset(&source, &version)
        .filter(|dataset| dataset.meta.is_some())
    else {
        return Err(DecideError::NotFound {
            what: format!(
                "dataset {source} {version} (not registered; POST its meta to /v1/datasets first)"
            ),
        });
    };
    let mut events = Vec::new();
    let mut already_received = 0;
    for (run_start, records) in runs {
        let run_end = run_start + records.len() as u64;
        let mut kept = 0;
        for range in dataset.positions.missing(run_start, run_end) {
            // `range` lies inside `run_start..run_end`, so the offsets index `records`.
            let (from, to) = (
                (range.start - run_start) as usize,
                (range.end - run_start) as usize,
            );
            let Some(slice) = records.get(from..to) else {
                continue;
            };
            kept += slice.len() as u64;
            events.push(Event::DatasetRecordsIngested(DatasetRecordsIngested {
                source: source.clone(),
                version: version.clone(),
                first_index: range.start,
                records: slice.to_vec(),
            }));
        }
        already_received += records.len() as u64 - kept;
    }
    Ok(Decision {
        events,
        reply: DomainReply::Ingested { already_received },
    })
}

/// The names of the meta fields that differ, for the conflict message.
fn differing_fields(old: &DatasetMeta, new: &DatasetMeta) -> Vec<&'static str> {
    [
        ("license", old.license != new.license),
        ("downloaded_at", old.downloaded_at != new.downloaded_at),
        ("sha256", old.sha256 != new.sha256),
        ("num_records", old.num_records != new.num_records),
        ("url", old.url != new.url),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

/// The task, rollout id and steps of a write's target; 404 for an unknown rollout.
fn resolve<'a>(
    facts: &'a FactIndex,
    target: &Target,
) -> Result<(String, Option<RolloutId>, &'a StepIndex), DecideError> {
    match target {
        Target::Rollout(id) => {
            let rollout = facts.rollout(*id).ok_or_else(|| DecideError::NotFound {
                what: format!("rollout {id}"),
            })?;
            Ok((rollout.task_id.clone(), Some(*id), &rollout.steps))
        }
        Target::Task(task_id) => {
            let steps = facts
                .steps(rollout_ref(None, task_id))
                .expect("a default rollout always exists");
            Ok((task_id.clone(), None, steps))
        }
    }
}

/// A named job must exist, and a lease given with it must be that job's.
fn check_job(
    state: &QueueState,
    job_id: Option<JobId>,
    lease: Option<&LeaseDetails>,
) -> Result<(), DecideError> {
    let Some(job_id) = job_id else {
        return Ok(());
    };
    if state.job(job_id).is_none() {
        return Err(DecideError::NotFound {
            what: format!("job {job_id}"),
        });
    }
    match lease {
        Some(lease) if lease.job_id != job_id => Err(DecideError::Invalid {
            field: "lease_id".into(),
            message: format!(
                "{} is a lease of {}, not of {job_id}",
                lease.lease_id, lease.job_id
            ),
        }),
        _ => Ok(()),
    }
}

/// The steps and state of a rollout created under a job are the episode's: written only under a
/// held lease of that job (another episode, or an attempt whose lease was lost, cannot), and a
/// step names no other job. A rollout created without a job takes writes fenced by any lease, or
/// none.
fn check_episode_write(
    facts: &FactIndex,
    rollout_id: Option<RolloutId>,
    named_job: Option<JobId>,
    lease: Option<&LeaseDetails>,
) -> Result<(), DecideError> {
    let Some(rollout_id) = rollout_id else {
        return Ok(());
    };
    let Some(job_id) = facts.rollout(rollout_id).and_then(|rollout| rollout.job_id) else {
        return Ok(());
    };
    let invalid = |field: &str, message: String| DecideError::Invalid {
        field: field.into(),
        message,
    };
    match lease {
        None => Err(invalid(
            "lease_id",
            format!("rollout {rollout_id} runs under {job_id}: its steps and state are written under a held lease of {job_id}"),
        )),
        Some(lease) if lease.job_id != job_id => Err(invalid(
            "lease_id",
            format!(
                "{} is a lease of {}, but rollout {rollout_id} runs under {job_id}",
                lease.lease_id, lease.job_id
            ),
        )),
        Some(_) => match named_job {
            Some(named) if named != job_id => Err(invalid(
                "job_id",
                format!("rollout {rollout_id} runs under {job_id}, not {named}"),
            )),
            _ => Ok(()),
        },
    }
}

/// A sandbox result or reward for a rollout created under a job comes from a verifier job and
/// is fenced by its held lease; without one it is refused.
fn check_verdict_write(
    facts: &FactIndex,
    rollout_id: Option<RolloutId>,
    lease: Option<&LeaseDetails>,
) -> Result<(), DecideError> {
    let job_id = rollout_id
        .and_then(|id| facts.rollout(id))
        .and_then(|rollout| rollout.job_id);
    match (job_id, lease) {
        (Some(job_id), None) => Err(DecideError::Invalid {
            field: "lease_id".into(),
            message: format!(
                "rollout {} runs under {job_id}: its sandbox results and rewards are written under a held lease (the verifier's)",
                rollout_id.map_or_else(String::new, |id| id.to_string())
            ),
        }),
        _ => Ok(()),
    }
}

fn recorded(
    events: Vec<Event>,
    task_id: String,
    rollout_id: Option<RolloutId>,
) -> Result<Decision<DomainReply>, DecideError> {
    Ok(Decision {
        events,
        reply: DomainReply::Recorded {
            task_id,
            rollout_id,
        },
    })
}

/// One past the highest recorded step index (0 for none).
pub fn next_step(steps: &StepIndex) -> u32 {
    steps
        .last_key_value()
        .map_or(0, |(step, _)| step.saturating_add(1))
}

fn describe(task_id: &str, rollout_id: Option<RolloutId>) -> String {
    match rollout_id {
        Some(id) => format!("rollout {id} (task {task_id})"),
        None => format!("task {task_id}"),
    }
}

fn step_not_found(step: u32, task_id: &str, rollout_id: Option<RolloutId>) -> DecideError {
    DecideError::NotFound {
        what: format!(
            "step {step} of {}; record the step first",
            describe(task_id, rollout_id)
        ),
    }
}

fn conflict(message: String) -> DecideError {
    DecideError::Conflict { message }
}
