//! The `astgrep.verify` job kind: run a proposed ast-grep action in the sandbox, judge it with
//! the rule-based reward, record the facts on the task's trajectory, complete the job with a
//! summary. No script on the worker box.
//!
//! Order of work for one job (see `docs/astgrep_verify.md`):
//! 1. validate the payload (an unusable one fails the job, not retryable);
//! 2. record the step, when the payload names the model (`model` + `policy_version`), and
//!    check that the step exists with the action being verified;
//! 3. run the sandbox (and the gold action) in a child process the worker can kill; the
//!    task's test files are protected from the action and from the test command, and the
//!    tests run through the trusted runner (`python_runner`);
//! 4. record the sandbox result and the reward on the step, fenced by the lease;
//! 5. complete the job with the verdict.
//!
//! Every write is safe to repeat: a retried job finds its step, sandbox result or reward
//! already recorded (409 `conflict`) and goes on, and the sandbox is deterministic, so the
//! second attempt would have written the same facts.

use super::sandbox_child::{
    run_in_child, ChildAnswer, ChildError, ChildRequest, GoldDiff, RunReport,
};
use super::verdict::{judge, Evidence, Verdict};
use super::verify_payload::{self, PayloadError, VerifyJob};
use crate::http_client::{Client, ClientError};
use crate::sandbox::SandboxLimits;
use crate::worker::{Handler, JobContext, JobOutcome};
use agentd_schemas::domain_api::{
    ActionRequest, RecordStepRequest, RewardRequest, SandboxResultRequest,
};
use agentd_schemas::events::{Action, RewardSource};
use agentd_schemas::LeaseId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Not written: no task id, or (for the step) no model in the payload.
    NotPosted,
}

/// The job's result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub task_id: Option<String>,
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
    let grant = &context.grant;
    let job = match verify_payload::parse(
        &grant.job.payload,
        grant.job.task_id.as_deref(),
        &config.limits,
    ) {
        Ok(job) => job,
        Err(error) => {
            return JobOutcome::Fail {
                error: error.to_string(),
                retryable: false,
            }
        }
    };
    let lease_id = grant.lease_id;
    let job_id = grant.job_id;
    let step_recorded = match (&job.task_id, &job.model) {
        (Some(task_id), Some(model)) => {
            let request = RecordStepRequest {
                step: job.step,
                job_id: Some(job_id),
                lease_id: Some(lease_id),
                model: model.model.clone(),
                policy_version: model.policy_version.clone(),
                sampling: None,
                prompt_tokens: None,
                completion_tokens: None,
                prompt: None,
                think: None,
                action: action_request(&job.action),
                state_update: None,
            };
            match record(
                context.client.record_step(task_id, &request).await,
                "the step",
            ) {
                Ok(recorded) => recorded,
                Err(abort) => return abort.into(),
            }
        }
        _ => Recorded::NotPosted,
    };
    if let Some(task_id) = &job.task_id {
        if let Err(abort) = check_step_action(&context.client, task_id, job.step, &job.action).await
        {
            return abort.into();
        }
    }
    let request = ChildRequest::for_job(&job, &config.limits);
    let answer = match run_in_child(&config.executable, &request, &mut context.stop).await {
        Ok(answer) => answer,
        Err(ChildError::Stopped) => return JobOutcome::Stopped,
        // The host failed (no temp dir, no process); another attempt, maybe elsewhere, can help.
        Err(error) => {
            return JobOutcome::Fail {
                error: format!("sandbox: {error}"),
                retryable: true,
            }
        }
    };
    let verdict = match judge_answer(&job, &answer) {
        Ok(verdict) => verdict,
        Err(error) => {
            return JobOutcome::Fail {
                error: error.to_string(),
                retryable: false,
            }
        }
    };
    let run = answer.run;
    let facts = match &job.task_id {
        None => Ok(RecordedFacts {
            step: step_recorded,
            sandbox: Recorded::NotPosted,
            reward: Recorded::NotPosted,
        }),
        Some(task_id) => {
            record_facts(
                &context.client,
                task_id,
                &job,
                lease_id,
                &run,
                &verdict,
                step_recorded,
            )
            .await
        }
    };
    match facts {
        Ok(recorded) => {
            let summary = summarize(&job, &run, verdict, recorded);
            match serde_json::to_value(&summary) {
                Ok(value) => JobOutcome::Complete(Some(value)),
                Err(error) => JobOutcome::Fail {
                    error: format!("cannot encode the summary: {error}"),
                    retryable: false,
                },
            }
        }
        Err(abort) => abort.into(),
    }
}

/// The verdict on a sandbox run of `job`; an error when the job's gold action cannot be
/// applied (the submitter's mistake, not the model's).
pub fn judge_answer(job: &VerifyJob, answer: &ChildAnswer) -> Result<Verdict, PayloadError> {
    let gold_diff = match &answer.gold {
        None => None,
        Some(GoldDiff::Diff { diff }) => Some(diff.as_str()),
        Some(GoldDiff::Invalid { reason }) => {
            return Err(PayloadError(format!("gold_action: {reason}")))
        }
    };
    Ok(judge(&Evidence {
        outcome: answer.run.outcome,
        diff: &answer.run.diff,
        has_test_files: !job.test_files.is_empty(),
        protected_changed: &answer.run.protected_changed,
        tests: answer.tests.as_ref(),
        tests_reward: job.tests_reward,
        gold_diff,
        post: answer.post.as_ref(),
    }))
}

/// Posts the sandbox result, then the reward, on the step.
async fn record_facts(
    client: &Client,
    task_id: &str,
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
    let sandbox = record(
        client
            .record_sandbox_result(task_id, job.step, &sandbox_request)
            .await,
        "the sandbox result",
    )?;
    let reward_request = RewardRequest {
        value: verdict.value,
        verified: verdict.verified,
        components: verdict.components.clone(),
        source: RewardSource::Rule,
        lease_id: Some(lease_id),
    };
    let reward = record(
        client
            .record_reward(task_id, job.step, &reward_request)
            .await,
        "the reward",
    )?;
    Ok(RecordedFacts {
        step,
        sandbox,
        reward,
    })
}

/// Checks, before any sandbox work, that the step exists and holds the action being verified:
/// a verdict recorded on a step whose action is another one would teach the wrong thing.
async fn check_step_action(
    client: &Client,
    task_id: &str,
    step: u32,
    action: &Action,
) -> Result<(), Abort> {
    let page = client
        .trajectory(task_id, step.checked_sub(1))
        .await
        .map_err(|error| Abort::Fail {
            retryable: error.is_transient()
                || matches!(error, ClientError::Api { status, .. } if status >= 500),
            error: format!("cannot read step {step} of task {task_id}: {error}"),
        })?;
    match page.steps.iter().find(|entry| entry.step == step) {
        None => Err(Abort::Fail {
            error: format!(
                "step {step} of task {task_id} is not recorded; post the step first, or put model and policy_version in the payload so the worker records it"
            ),
            retryable: false,
        }),
        Some(entry) if entry.action != *action => Err(Abort::Fail {
            error: format!(
                "step {step} of task {task_id} was recorded with another action ({}) than the one to verify ({}); the verdict would be recorded against the wrong action",
                describe_action(&entry.action),
                describe_action(action)
            ),
            retryable: false,
        }),
        Some(_) => Ok(()),
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
fn record<T>(answer: Result<T, ClientError>, what: &str) -> Result<Recorded, Abort> {
    match answer {
        Ok(_) => Ok(Recorded::Recorded),
        Err(error) => match error.code() {
            Some("conflict") => Ok(Recorded::AlreadyRecorded),
            Some("lease_lost") => Err(Abort::Stopped),
            Some("not_found") => Err(Abort::Fail {
                error: format!("cannot record {what}: {error}; post the step first, or put model and policy_version in the payload so the worker records it"),
                retryable: false,
            }),
            _ => Err(Abort::Fail {
                error: format!("cannot record {what}: {error}"),
                retryable: error.is_transient() || matches!(error, ClientError::Api { status, .. } if status >= 500),
            }),
        },
    }
}

fn summarize(
    job: &VerifyJob,
    run: &RunReport,
    verdict: Verdict,
    recorded: RecordedFacts,
) -> VerifySummary {
    VerifySummary {
        task_id: job.task_id.clone(),
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

fn action_request(action: &Action) -> ActionRequest {
    match action.clone() {
        Action::Pattern {
            language,
            pattern,
            rewrite,
        } => ActionRequest::Pattern {
            language,
            pattern,
            rewrite,
        },
        Action::Rule { yaml } => ActionRequest::Rule { yaml },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_the_head_within_the_limit_on_a_char_boundary() {
        assert_eq!(cut("short", 100), "short");
        let long = "é".repeat(100);
        let kept = cut(&long, 60);
        assert!(kept.len() <= 60, "{}", kept.len());
        assert!(
            kept.starts_with('é') && kept.ends_with("200 bytes in all]\n"),
            "{kept}"
        );
    }

    #[test]
    fn write_answers_map_to_recorded_retry_or_stop() {
        let api = |status: u16, code: &str| -> Result<(), ClientError> {
            Err(ClientError::Api {
                status,
                code: code.into(),
                message: "m".into(),
            })
        };
        assert!(matches!(record(Ok(()), "x"), Ok(Recorded::Recorded)));
        assert!(matches!(
            record(api(409, "conflict"), "x"),
            Ok(Recorded::AlreadyRecorded)
        ));
        assert!(matches!(
            record(api(409, "lease_lost"), "x"),
            Err(Abort::Stopped)
        ));
        assert!(matches!(
            record(api(404, "not_found"), "x"),
            Err(Abort::Fail {
                retryable: false,
                ..
            })
        ));
        assert!(matches!(
            record(api(503, "unavailable"), "x"),
            Err(Abort::Fail {
                retryable: true,
                ..
            })
        ));
        assert!(matches!(
            record(api(422, "invalid_request"), "x"),
            Err(Abort::Fail {
                retryable: false,
                ..
            })
        ));
    }

    #[test]
    fn rejection_and_verdict_reasons_are_kept_with_stderr() {
        assert_eq!(with_reasons("out", None, &BTreeMap::new()), "out");
        let reasons = [(
            "tamper".to_string(),
            "the action changed test file t.py".to_string(),
        )]
        .into();
        let text = with_reasons("out", Some("bad pattern"), &reasons);
        assert_eq!(
            text,
            "[agentd-sandbox] rejected: bad pattern\n[agentd-verify] tamper: the action changed test file t.py\nout"
        );
    }
}
