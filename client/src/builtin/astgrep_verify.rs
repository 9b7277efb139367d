//! The `astgrep.verify` job kind: run a proposed ast-grep action in the sandbox, judge it with
//! the rule-based reward, record the facts on the task's trajectory, complete the job with a
//! summary. No script on the worker box.
//!
//! Order of work for one job (see `docs/astgrep_verify.md`):
//! 1. validate the payload (an unusable one fails the job, not retryable), and read the reward
//!    settings from the daemon (`GET /v1/settings`), so that every worker judges with the
//!    `[rewards]` the daemon recorded in its log;
//! 2. record the step, when the payload names the model (`model` + `policy_version`), and
//!    check that the step exists with the action being verified;
//! 3. run the sandbox (and the gold action) in a child process the worker can kill; the
//!    task's test files are protected from the action and from the test command, and the
//!    tests run through the trusted runner (`python_runner`); then judge ([`run_and_judge`],
//!    which `agentctl verify` runs too, without a daemon);
//! 4. record the sandbox result and the reward on the step, fenced by the lease;
//! 5. complete the job with the verdict.
//!
//! The facts go to the task's trajectory (`/v1/tasks/{task_id}/...`), or, when the payload
//! names a `rollout_id`, to that rollout (`/v1/rollouts/{rollout_id}/...`; see
//! `verify_payload` for the rules). The sandbox result and the reward are fenced by this job's
//! lease either way. The verifier never records a rollout's step: a rollout's steps are its
//! episode's, written under the episode's lease (the daemon refuses any other), so a payload
//! with `rollout_id` judges a step the episode recorded.
//!
//! Every write is safe to repeat: a retried job finds its step, sandbox result or reward
//! already recorded (409 `conflict`) and goes on, and the sandbox is deterministic, so the
//! second attempt would have written the same facts.

mod facts;

use super::sandbox_child::{
    run_in_child, ChildAnswer, ChildError, ChildRequest, GoldDiff, RunReport,
};
use super::verdict::{judge, CheckedRewardSettings, Evidence, RewardSettings, Verdict};
use super::verify_payload::{self, PayloadError, VerifyJob};
use crate::http_client::{Client, ClientError};
use crate::sandbox::SandboxLimits;
use crate::worker::{Handler, JobContext, JobOutcome, StopReason};
use agentd_schemas::RolloutId;
use facts::{check_step_action, read_step, record_facts, record_step, Target};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// The daemon refuses a sandbox result whose stdout or stderr is longer (its
/// `OUTPUT_BYTES_MAX`); the head is kept, as the sandbox keeps heads.
pub const POSTED_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// The daemon refuses a longer diff (its `DIFF_BYTES_MAX`).
pub const POSTED_DIFF_BYTES_MAX: usize = 1024 * 1024;
/// Most bytes of the diff repeated in the job's result (the trajectory has it whole).
pub const RESULT_DIFF_BYTES_MAX: usize = 64 * 1024;

/// What every `astgrep.verify` job on this worker shares.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Limits of every sandbox run (`--sandbox-config`, else the defaults).
    pub limits: SandboxLimits,
    /// The `agentctl` binary started as `agentctl sandbox serve-job` per job.
    pub executable: PathBuf,
}

/// The handler for `agentctl worker --builtin astgrep.verify`.
pub fn handler(config: VerifyConfig) -> Handler {
    let config = Arc::new(config);
    Arc::new(move |context: JobContext| {
        let config = config.clone();
        Box::pin(async move { verify(&config, context).await })
    })
}

/// How one fact ended up on the trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// Written by this attempt.
    Recorded,
    /// Already there (an earlier attempt, or the actor, wrote it).
    AlreadyRecorded,
    /// Not written: no task id or rollout id, or (for the step) no model in the payload.
    NotPosted,
}

/// The job's result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// The task the facts were recorded on (with a rollout: the rollout's task).
    pub task_id: Option<String>,
    /// The rollout the facts were recorded on; absent for the task's default rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub verified: bool,
    pub reward: f64,
    pub components: BTreeMap<String, f64>,
    /// Why each failed check failed, by component name (and `outcome`).
    pub reasons: BTreeMap<String, String>,
    pub gold_match: Option<bool>,
    pub post_match: Option<bool>,
    pub outcome: agentd_schemas::events::SandboxOutcome,
    pub exit_code: Option<i32>,
    pub tests_passed: Option<u32>,
    pub tests_failed: Option<u32>,
    pub files_changed: Vec<String>,
    /// Test files the action changed (reward 0; the change was not applied).
    pub test_files_changed: Vec<String>,
    pub diff_bytes: usize,
    /// The diff, cut to [`RESULT_DIFF_BYTES_MAX`].
    pub diff: String,
    pub duration_ms: u64,
    pub rejected_reason: Option<String>,
    /// The reward settings the reward was computed with (the daemon's `[rewards]`; `tests` as
    /// the payload's `tests_reward` overrode it).
    pub rewards: RewardSettings,
    pub recorded: RecordedFacts,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordedFacts {
    pub step: Recorded,
    pub sandbox: Recorded,
    pub reward: Recorded,
}

/// How a step of the job went wrong.
enum Abort {
    /// Lease lost or drain deadline: stop without reporting more.
    Stopped,
    Fail {
        error: String,
        retryable: bool,
    },
}

impl From<Abort> for JobOutcome {
    fn from(abort: Abort) -> Self {
        match abort {
            Abort::Stopped => JobOutcome::Stopped,
            Abort::Fail { error, retryable } => JobOutcome::Fail { error, retryable },
        }
    }
}

async fn verify(config: &VerifyConfig, mut context: JobContext) -> JobOutcome {
    match verify_and_record(config, &mut context).await {
        Ok(summary) => match serde_json::to_value(&summary) {
            Ok(value) => JobOutcome::Complete(Some(value)),
            Err(error) => JobOutcome::Fail {
                error: format!("cannot encode the summary: {error}"),
                retryable: false,
            },
        },
        Err(abort) => abort.into(),
    }
}

/// Steps 1 to 4 of the module doc for one job; the summary completes it.
async fn verify_and_record(
    config: &VerifyConfig,
    context: &mut JobContext,
) -> Result<VerifySummary, Abort> {
    let grant = &context.grant;
    let job = verify_payload::parse(
        &grant.job.payload.to_value(),
        grant.job.task_id.as_deref(),
        &config.limits,
    )
    .map_err(|error| Abort::Fail {
        error: error.to_string(),
        retryable: false,
    })?;
    let rewards = reward_settings(&context.client).await?;
    let (lease_id, job_id) = (grant.lease_id, grant.job_id);
    let client = &context.client;
    let target = Target::of(&job);
    let mut task_id = job.task_id.clone();
    // A verdict recorded into a rollout of another task would be wrong for good: check the
    // rollout exists and is of the named task before any sandbox work.
    if let Some(target @ Target::Rollout(_)) = &target {
        task_id = Some(
            read_step(client, target, job.step, job.task_id.as_deref())
                .await?
                .task_id,
        );
    }
    let step_recorded = match &target {
        Some(target) => record_step(client, target, &job, job_id, lease_id).await?,
        None => Recorded::NotPosted,
    };
    if let Some(target) = &target {
        task_id = Some(check_step_action(client, target, &job).await?);
    }
    let judged = run_and_judge(
        &config.executable,
        &config.limits,
        &job,
        &rewards,
        &mut context.stop,
    )
    .await;
    let Judged { run, verdict } = judged.map_err(Abort::from)?;
    let recorded = match &target {
        None => RecordedFacts {
            step: step_recorded,
            sandbox: Recorded::NotPosted,
            reward: Recorded::NotPosted,
        },
        Some(target) => {
            let client = &context.client;
            record_facts(
                client,
                target,
                &job,
                lease_id,
                &run,
                &verdict,
                step_recorded,
            )
            .await?
        }
    };
    Ok(summarize(&job, task_id, &run, verdict, recorded))
}

impl From<JudgeError> for Abort {
    fn from(error: JudgeError) -> Abort {
        match error {
            JudgeError::Sandbox(ChildError::Stopped) => Abort::Stopped,
            // The host failed (no temp dir, no process); another attempt, maybe elsewhere, can
            // help.
            error @ JudgeError::Sandbox(_) => Abort::Fail {
                error: error.to_string(),
                retryable: true,
            },
            error @ JudgeError::Payload(_) => Abort::Fail {
                error: error.to_string(),
                retryable: false,
            },
        }
    }
}

/// A sandbox run of a job and its verdict.
#[derive(Debug, Clone)]
pub struct Judged {
    pub run: RunReport,
    pub verdict: Verdict,
}

/// Why a job got no verdict.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The sandbox child gave no answer: stopped, or the host failed (no temp dir, no process).
    #[error("sandbox: {0}")]
    Sandbox(#[from] ChildError),
    /// The payload turned out unusable: its gold action cannot be applied.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// The part of a job that needs no daemon: runs `job` in a sandbox child (`executable
/// sandbox serve-job`, under `limits`; stopped when `stop` leaves `Running`) and judges the
/// run under `rewards`. The worker and `agentctl verify` both go through here, so a local
/// verdict is the worker's.
pub async fn run_and_judge(
    executable: &Path,
    limits: &SandboxLimits,
    job: &VerifyJob,
    rewards: &CheckedRewardSettings,
    stop: &mut watch::Receiver<StopReason>,
) -> Result<Judged, JudgeError> {
    let request = ChildRequest::for_job(job, limits);
    let answer = run_in_child(executable, &request, stop).await?;
    let verdict = judge_answer_with(job, &answer, rewards)?;
    Ok(Judged {
        run: answer.run,
        verdict,
    })
}

/// The verdict on a sandbox run of `job` under the default reward settings (`combine = all`,
/// `tests = all` unless the payload says `tests_reward`): what a daemon without `[rewards]`
/// would give. The worker judges with the daemon's settings ([`judge_answer_with`]).
pub fn judge_answer(job: &VerifyJob, answer: &ChildAnswer) -> Result<Verdict, PayloadError> {
    judge_answer_with(job, answer, &CheckedRewardSettings::default())
}

/// The verdict on a sandbox run of `job` under `rewards`; an error when the job's gold action
/// cannot be applied (the submitter's mistake, not the model's).
pub fn judge_answer_with(
    job: &VerifyJob,
    answer: &ChildAnswer,
    rewards: &CheckedRewardSettings,
) -> Result<Verdict, PayloadError> {
    let gold_diff = match &answer.gold {
        None => None,
        Some(GoldDiff::Diff { diff }) => Some(diff.as_str()),
        Some(GoldDiff::Invalid { reason }) => {
            return Err(PayloadError(format!("gold_action: {reason}")))
        }
    };
    Ok(judge(
        &Evidence {
            outcome: answer.run.outcome,
            diff: &answer.run.diff,
            has_test_files: !job.test_files.is_empty(),
            protected_changed: &answer.run.protected_changed,
            tests: answer.tests.as_ref(),
            tests_reward: job.tests_reward,
            gold_diff,
            post: answer.post.as_ref(),
        },
        rewards,
    ))
}

/// The reward settings the daemon recorded (`GET /v1/settings`; the defaults when its log has
/// none yet). A daemon that cannot answer now fails the job as retryable, like every other
/// daemon error here; one that refuses (no permission to read tasks, a daemon without the
/// route) or holds settings that cannot be used fails it for good: another attempt would get
/// the same answer.
async fn reward_settings(client: &Client) -> Result<CheckedRewardSettings, Abort> {
    let response = client.settings().await.map_err(|error| Abort::Fail {
        retryable: is_retryable(&error),
        error: format!("cannot read the reward settings (GET /v1/settings): {error}"),
    })?;
    let settings = response
        .training
        .map(|training| training.rewards)
        .unwrap_or_default();
    CheckedRewardSettings::new(settings).map_err(|error| Abort::Fail {
        error: format!("the daemon's reward settings: {error}"),
        retryable: false,
    })
}

/// A daemon error another attempt can get past: no answer, "try again", or a server error.
fn is_retryable(error: &ClientError) -> bool {
    error.is_transient() || matches!(error, ClientError::Api { status, .. } if *status >= 500)
}

fn summarize(
    job: &VerifyJob,
    task_id: Option<String>,
    run: &RunReport,
    verdict: Verdict,
    recorded: RecordedFacts,
) -> VerifySummary {
    VerifySummary {
        task_id,
        rollout_id: job.rollout_id,
        step: job.step,
        verified: verdict.verified,
        reward: verdict.value,
        components: verdict.components,
        reasons: verdict.reasons,
        gold_match: verdict.gold_match,
        post_match: verdict.post_match,
        outcome: run.outcome,
        exit_code: run.exit_code,
        tests_passed: run.tests_passed,
        tests_failed: run.tests_failed,
        files_changed: run.files_changed.clone(),
        test_files_changed: run.protected_changed.clone(),
        diff_bytes: run.diff.len(),
        diff: cut(&run.diff, RESULT_DIFF_BYTES_MAX),
        duration_ms: run.duration_ms,
        rejected_reason: run.rejected_reason.clone(),
        rewards: verdict.rewards,
        recorded,
    }
}

/// The sandbox's reason for `rejected` and the verdict's reasons have no field of their own in
/// the events: keep them in front of stderr, where a reader of the trajectory looks for why.
fn with_reasons(
    stderr: &str,
    rejected: Option<&str>,
    reasons: &BTreeMap<String, String>,
) -> String {
    let mut text = String::new();
    if let Some(reason) = rejected {
        text.push_str(&format!("[agentd-sandbox] rejected: {reason}\n"));
    }
    for (check, reason) in reasons {
        text.push_str(&format!("[agentd-verify] {check}: {reason}\n"));
    }
    text.push_str(stderr);
    text
}

/// The head of `text` in at most `max_bytes` bytes (on a character boundary), with a note of
/// how much was cut.
pub fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let note = format!("\n[agentd: cut, {} bytes in all]\n", text.len());
    let mut end = max_bytes.saturating_sub(note.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
mod tests;
