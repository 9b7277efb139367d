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
//!
//! By concern: `rollout.rs` (creating or resuming a rollout, group rules), `trajectory.rs`
//! (steps, the verdicts on a step, state updates, and who may write them), `dataset.rs`
//! (registrations and record ingests).

mod dataset;
mod rollout;
mod trajectory;

use crate::facts::StepIndex;
use crate::queue::decide::{held_lease, DecideError, Decision};
use crate::queue::{JobStatus, QueueState};
use agentd_schemas::events::{
    DatasetMeta, DatasetRecord, RewardRecorded, Sampling, SandboxResultRecorded, StateFrom,
    StepRecorded, TaskStateUpdated,
};
use agentd_schemas::{JobId, LeaseId, Lsn, RolloutId};
use dataset::{ingest, register_dataset};
use rollout::create_rollout;
use trajectory::{record_step, record_verdict, update_state, StepWrite, Verdict};

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
            step,
            state_update,
            format_reward,
        } => record_step(
            state,
            lease.as_ref(),
            &target,
            StepWrite {
                step,
                state_update,
                format_reward,
            },
        ),
        DomainCommand::RecordSandbox { target, result } => {
            record_verdict(facts, lease.as_ref(), &target, Verdict::Sandbox(result))
        }
        DomainCommand::RecordReward { target, reward } => {
            record_verdict(facts, lease.as_ref(), &target, Verdict::Reward(reward))
        }
        DomainCommand::UpdateState { target, update } => {
            update_state(facts, lease.as_ref(), &target, update)
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

/// One past the highest recorded step index (0 for none).
pub fn next_step(steps: &StepIndex) -> u32 {
    steps
        .last_key_value()
        .map_or(0, |(step, _)| step.saturating_add(1))
}

fn conflict(message: String) -> DecideError {
    DecideError::Conflict { message }
}
