//! Trajectory writes: a rollout's (or a task's default rollout's) steps, the verdicts on a step
//! (its sandbox result and its reward, each once), and agent-state updates.

use super::{check_job, conflict, DomainReply, LeaseDetails, Target};
use crate::facts::{rollout_ref, FactIndex, StepFacts, StepIndex};
use crate::queue::decide::{DecideError, Decision};
use crate::queue::QueueState;
use agentd_schemas::events::{
    Event, RewardRecorded, SandboxResultRecorded, StepRecorded, TaskStateUpdated,
};
use agentd_schemas::{JobId, Lsn, RolloutId};

/// A step and what is logged with it.
pub(super) struct StepWrite {
    pub step: Box<StepRecorded>,
    pub state_update: Option<TaskStateUpdated>,
    /// The reward of a step whose raw output did not parse (0, `format`), in the same record.
    pub format_reward: Option<RewardRecorded>,
}

/// A verdict on a recorded step: its sandbox result or its reward. Each is given once, and comes
/// from a verifier job, so any held lease fences it (not only the episode's).
pub(super) enum Verdict {
    Sandbox(Box<SandboxResultRecorded>),
    Reward(RewardRecorded),
}

impl Verdict {
    fn step(&self) -> u32 {
        match self {
            Verdict::Sandbox(result) => result.step,
            Verdict::Reward(reward) => reward.step,
        }
    }

    /// The record that gave the step this verdict already, if one did.
    fn recorded_lsn(&self, step: &StepFacts) -> Option<Lsn> {
        match self {
            Verdict::Sandbox(_) => step.sandbox,
            Verdict::Reward(_) => step.reward,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Verdict::Sandbox(_) => "a sandbox result",
            Verdict::Reward(_) => "a reward",
        }
    }

    fn into_event(self, task_id: &str, rollout_id: Option<RolloutId>) -> Event {
        match self {
            Verdict::Sandbox(mut result) => {
                result.task_id = task_id.to_owned();
                result.rollout_id = rollout_id;
                Event::SandboxResultRecorded(*result)
            }
            Verdict::Reward(mut reward) => {
                reward.task_id = task_id.to_owned();
                reward.rollout_id = rollout_id;
                Event::RewardRecorded(reward)
            }
        }
    }
}

/// Records a new step of the target (steps are immutable: a recorded index is a `conflict`),
/// filled in with the lease's job, attempt and worker.
pub(super) fn record_step(
    state: &QueueState,
    lease: Option<&LeaseDetails>,
    target: &Target,
    write: StepWrite,
) -> Result<Decision<DomainReply>, DecideError> {
    let StepWrite {
        mut step,
        mut state_update,
        format_reward,
    } = write;
    let facts = &state.facts;
    let (task_id, rollout_id, steps) = resolve(facts, target)?;
    check_job(state, step.job_id, lease)?;
    check_episode_write(facts, rollout_id, step.job_id, lease)?;
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
    if let Some(lease) = lease {
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

/// Records a step's sandbox result or reward: the step must be recorded, and have no such
/// verdict yet (`conflict`).
pub(super) fn record_verdict(
    facts: &FactIndex,
    lease: Option<&LeaseDetails>,
    target: &Target,
    verdict: Verdict,
) -> Result<Decision<DomainReply>, DecideError> {
    let (task_id, rollout_id, steps) = resolve(facts, target)?;
    check_verdict_write(facts, rollout_id, lease)?;
    let step = verdict.step();
    let facts_of_step = steps
        .get(&step)
        .ok_or_else(|| step_not_found(step, &task_id, rollout_id))?;
    if let Some(existing) = verdict.recorded_lsn(facts_of_step) {
        return Err(conflict(format!(
            "step {step} of {} already has {} (lsn {existing})",
            describe(&task_id, rollout_id),
            verdict.name()
        )));
    }
    let event = verdict.into_event(&task_id, rollout_id);
    recorded(vec![event], task_id, rollout_id)
}

/// Records an agent-state update of the target, fenced like its steps.
pub(super) fn update_state(
    facts: &FactIndex,
    lease: Option<&LeaseDetails>,
    target: &Target,
    mut update: TaskStateUpdated,
) -> Result<Decision<DomainReply>, DecideError> {
    let (task_id, rollout_id, _) = resolve(facts, target)?;
    check_episode_write(facts, rollout_id, None, lease)?;
    update.task_id.clone_from(&task_id);
    update.rollout_id = rollout_id;
    recorded(vec![Event::TaskStateUpdated(update)], task_id, rollout_id)
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

fn describe(task_id: &str, rollout_id: Option<RolloutId>) -> String {
    match rollout_id {
        Some(id) => format!("rollout {id} (task {task_id})"),
        None => format!("task {task_id}"),
    }
}

fn step_not_found(step: u32, task_id: &str, rollout_id: Option<RolloutId>) -> DecideError {
    DecideError::NotFoundHint {
        what: format!("step {step} of {}", describe(task_id, rollout_id)),
        hint: "record the step first".into(),
    }
}
