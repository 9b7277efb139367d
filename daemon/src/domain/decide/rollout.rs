//! Creating a rollout: a new one (in its own group of one, or a named group of one task), or,
//! for a job that already has one, the job's rollout to resume.

use super::{
    check_job, conflict, next_step, CreateRollout, DomainReply, LeaseDetails, RolloutAnswer,
};
use super::{GROUP_CHARS_MAX, GROUP_ROLLOUTS_MAX};
use crate::facts::{FactIndex, RolloutFacts};
use crate::queue::decide::{DecideError, Decision, Limit};
use crate::queue::QueueState;
use agentd_schemas::events::{Event, RolloutCreated};
use agentd_schemas::{JobId, RolloutId};

pub(super) fn create_rollout(
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
            return resume_rollout(job_id, existing, rollout, &create);
        }
    }
    let rollout_id = facts.next_rollout_id();
    let group = match create.group {
        Some(group) => checked_group(facts, group, &create.task_id)?,
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

/// The rollout `job_id` already runs, answered to resume (nothing appended), unless the request
/// asks for another task, group, model or policy version (`conflict`).
fn resume_rollout(
    job_id: JobId,
    existing: RolloutId,
    rollout: &RolloutFacts,
    create: &CreateRollout,
) -> Result<Decision<DomainReply>, DecideError> {
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
    Ok(Decision {
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
    })
}

/// A named group a new rollout of `task_id` may join: a valid name, of the same task, not full.
fn checked_group(facts: &FactIndex, group: String, task_id: &str) -> Result<String, DecideError> {
    check_group(&group)?;
    if let Some(existing) = facts.group(&group) {
        if existing.task_id != task_id {
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
    Ok(group)
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
