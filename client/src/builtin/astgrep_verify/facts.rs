//! Writing a job's facts (its step, sandbox result and reward) to the task's trajectory or the
//! named rollout, and the checks before any sandbox work that they would land on the right
//! step. Every write is safe to repeat (see the parent module).

use super::{cut, is_retryable, with_reasons, Abort, Recorded, RecordedFacts};
use super::{POSTED_DIFF_BYTES_MAX, POSTED_OUTPUT_BYTES_MAX};
use crate::builtin::sandbox_child::RunReport;
use crate::builtin::verdict::Verdict;
use crate::builtin::verify_payload::VerifyJob;
use crate::http_client::{Client, ClientError};
use agentd_schemas::domain_api::{
    ActionRequest, RecordStepRequest, RewardRequest, SandboxResultRequest, TrajectoryStep,
};
use agentd_schemas::events::{Action, RewardSource};
use agentd_schemas::{ErrorCode, JobId, LeaseId, RolloutId};

/// Where a job's facts are recorded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Target {
    /// `/v1/tasks/{task_id}/...`: the task's default rollout.
    Task(String),
    /// `/v1/rollouts/{rollout_id}/...`.
    Rollout(RolloutId),
}

impl Target {
    /// The payload's rollout, else its task; `None`: nothing is recorded.
    pub(super) fn of(job: &VerifyJob) -> Option<Target> {
        match (&job.rollout_id, &job.task_id) {
            (Some(rollout_id), _) => Some(Target::Rollout(*rollout_id)),
            (None, Some(task_id)) => Some(Target::Task(task_id.clone())),
            (None, None) => None,
        }
    }

    /// The lease that fences a step recorded here: this job's for a task; none for a rollout,
    /// whose steps the daemon fences only with a lease of the rollout's own job (see the module
    /// doc). Sandbox results and rewards are always fenced by this job's lease.
    pub(super) fn step_fence(&self, lease_id: LeaseId) -> Option<LeaseId> {
        match self {
            Target::Task(_) => Some(lease_id),
            Target::Rollout(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Task(task_id) => format!("task {task_id}"),
            Target::Rollout(rollout_id) => format!("rollout {rollout_id}"),
        }
    }
}

/// Posts the sandbox result, then the reward, on the step.
pub(super) async fn record_facts(
    client: &Client,
    target: &Target,
    job: &VerifyJob,
    lease_id: LeaseId,
    run: &RunReport,
    verdict: &Verdict,
    step: Recorded,
) -> Result<RecordedFacts, Abort> {
    let sandbox_request = SandboxResultRequest {
        exit_code: run.exit_code,
        outcome: run.outcome,
        diff: Some(cut(&run.diff, POSTED_DIFF_BYTES_MAX)),
        stdout: Some(cut(&run.stdout, POSTED_OUTPUT_BYTES_MAX)),
        stderr: Some(cut(
            &with_reasons(
                &run.stderr,
                run.rejected_reason.as_deref(),
                &verdict.reasons,
            ),
            POSTED_OUTPUT_BYTES_MAX,
        )),
        tests_passed: run.tests_passed,
        tests_failed: run.tests_failed,
        duration_ms: Some(run.duration_ms),
        peak_rss_bytes: run.peak_rss_bytes,
        lease_id: Some(lease_id),
    };
    let answer = match target {
        Target::Task(task_id) => client
            .record_sandbox_result(task_id, job.step, &sandbox_request)
            .await
            .map(drop),
        Target::Rollout(rollout_id) => client
            .record_rollout_sandbox_result(*rollout_id, job.step, &sandbox_request)
            .await
            .map(drop),
    };
    let sandbox = record(answer, "the sandbox result")?;
    let reward_request = RewardRequest {
        value: verdict.value,
        verified: verdict.verified,
        components: verdict.components.clone(),
        source: RewardSource::Rule,
        lease_id: Some(lease_id),
    };
    let answer = match target {
        Target::Task(task_id) => client
            .record_reward(task_id, job.step, &reward_request)
            .await
            .map(drop),
        Target::Rollout(rollout_id) => client
            .record_rollout_reward(*rollout_id, job.step, &reward_request)
            .await
            .map(drop),
    };
    let reward = record(answer, "the reward")?;
    Ok(RecordedFacts {
        step,
        sandbox,
        reward,
    })
}

/// Checks, before any sandbox work, that the step exists and holds the action being verified:
/// a verdict recorded on a step whose action is another one would teach the wrong thing.
/// Answers the task the step belongs to.
pub(super) async fn check_step_action(
    client: &Client,
    target: &Target,
    job: &VerifyJob,
) -> Result<String, Abort> {
    let step = job.step;
    let page = read_step(client, target, step, job.task_id.as_deref()).await?;
    let place = target.describe();
    match &page.step {
        None => Err(Abort::Fail {
            error: format!(
                "step {step} of {place} is not recorded; post the step first, or put model and policy_version in the payload so the worker records it"
            ),
            retryable: false,
        }),
        Some(entry) if entry.action.as_ref() != Some(&job.action) => Err(Abort::Fail {
            error: format!(
                "step {step} of {place} was recorded with another action ({}) than the one to verify ({}); the verdict would be recorded against the wrong action",
                entry
                    .action
                    .as_ref()
                    .map_or_else(|| "none: its output did not parse".to_owned(), describe_action),
                describe_action(&job.action)
            ),
            retryable: false,
        }),
        Some(_) => Ok(page.task_id),
    }
}

/// One step as the daemon has it, with the task it belongs to.
pub(super) struct StepRead {
    pub(super) task_id: String,
    step: Option<TrajectoryStep>,
}

/// Reads step `step` of the target. For a rollout, also checks that it exists and belongs to
/// `expected_task_id` when the payload or the job named one.
pub(super) async fn read_step(
    client: &Client,
    target: &Target,
    step: u32,
    expected_task_id: Option<&str>,
) -> Result<StepRead, Abort> {
    let cannot_read = |error: ClientError| Abort::Fail {
        retryable: is_retryable(&error),
        error: format!("cannot read step {step} of {}: {error}", target.describe()),
    };
    let (task_id, steps) = match target {
        Target::Task(task_id) => {
            let page = client
                .trajectory(task_id, step.checked_sub(1))
                .await
                .map_err(cannot_read)?;
            (page.task_id, page.steps)
        }
        Target::Rollout(rollout_id) => {
            let view = match client.rollout(*rollout_id, step.checked_sub(1), Some(1)).await {
                Ok(view) => view,
                Err(error) if error.error_code() == Some(ErrorCode::NotFound) => {
                    return Err(Abort::Fail {
                        error: format!(
                            "rollout {rollout_id} does not exist; create it first (POST /v1/tasks/{{task_id}}/rollouts)"
                        ),
                        retryable: false,
                    })
                }
                Err(error) => return Err(cannot_read(error)),
            };
            check_rollout_task(*rollout_id, &view.task_id, expected_task_id)?;
            (view.task_id, view.steps)
        }
    };
    Ok(StepRead {
        task_id,
        step: steps.into_iter().find(|entry| entry.step == step),
    })
}

/// A rollout's facts belong to its task: a payload (or job) that names another task is a
/// mistake the verifier must not paper over.
pub(super) fn check_rollout_task(
    rollout_id: RolloutId,
    rollout_task_id: &str,
    expected_task_id: Option<&str>,
) -> Result<(), Abort> {
    match expected_task_id {
        Some(expected) if expected != rollout_task_id => Err(Abort::Fail {
            error: format!(
                "rollout {rollout_id} belongs to task {rollout_task_id:?}, not to the task_id {expected:?} of the payload or job"
            ),
            retryable: false,
        }),
        _ => Ok(()),
    }
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::Pattern {
            language,
            pattern,
            rewrite,
        } => format!("{language} pattern {pattern:?} -> {rewrite:?}"),
        Action::Rule { yaml } => format!("rule of {} bytes", yaml.len()),
    }
}

/// Maps a write's answer: `conflict` means an earlier attempt (or the actor) wrote it;
/// `lease_lost` stops the job; `not_found` (no such step) cannot get better by retrying.
pub(super) fn record<T>(answer: Result<T, ClientError>, what: &str) -> Result<Recorded, Abort> {
    match answer {
        Ok(_) => Ok(Recorded::Recorded),
        Err(error) => match error.error_code() {
            Some(ErrorCode::Conflict) => Ok(Recorded::AlreadyRecorded),
            Some(ErrorCode::LeaseLost) => Err(Abort::Stopped),
            Some(ErrorCode::NotFound) => Err(Abort::Fail {
                error: format!("cannot record {what}: {error}; post the step first, or put model and policy_version in the payload so the worker records it"),
                retryable: false,
            }),
            _ => Err(Abort::Fail {
                error: format!("cannot record {what}: {error}"),
                retryable: is_retryable(&error),
            }),
        },
    }
}

/// Records the step the job verifies, when the payload names the model that proposed it.
pub(super) async fn record_step(
    client: &Client,
    target: &Target,
    job: &VerifyJob,
    job_id: JobId,
    lease_id: LeaseId,
) -> Result<Recorded, Abort> {
    let Some(model) = &job.model else {
        return Ok(Recorded::NotPosted);
    };
    let request = RecordStepRequest {
        step: job.step,
        job_id: Some(job_id),
        lease_id: target.step_fence(lease_id),
        model: model.model.clone(),
        policy_version: model.policy_version.clone(),
        sampling: None,
        prompt_tokens: None,
        completion_tokens: None,
        prompt: None,
        think: None,
        action: Some(ActionRequest::from(job.action.clone())),
        raw_output: None,
        generation_ms: None,
        state_update: None,
    };
    let answer = match target {
        Target::Task(task_id) => client.record_step(task_id, &request).await.map(drop),
        Target::Rollout(rollout_id) => client
            .record_rollout_step(*rollout_id, &request)
            .await
            .map(drop),
    };
    record(answer, "the step")
}
