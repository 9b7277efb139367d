//! The payload of an `astgrep.verify` job, and its validation.
//!
//! This is a contract between whoever submits the job and this worker; the daemon stores the
//! payload as opaque JSON and never reads it, so the type lives here and not in
//! `agentd-schemas` (which holds what the daemon reads and writes). It is documented in
//! `docs/astgrep_verify.md`.
//!
//! Validation is strict (unknown fields are refused) because a misspelt `gold_action` would
//! otherwise silently turn a gold comparison off. Everything that makes the payload unusable is
//! a [`PayloadError`], which fails the job as not retryable: running it again cannot help.
//!
//! Where the verdict is recorded, in three rules:
//! - `rollout_id` (`"ro_N"`) given: the sandbox result and the reward go to
//!   `/v1/rollouts/{rollout_id}/steps/{step}/...`, on a step the episode recorded (a rollout's
//!   steps are written under its episode's lease, so `model` is refused: the verifier judges,
//!   it does not record steps there). `task_id` is then optional; when the
//!   payload or the job names one anyway, it must be the rollout's task (checked against the
//!   daemon before any sandbox work; a mismatch fails the job, not retryable).
//! - else a `task_id` (the payload's, else the job's; the two must agree): the facts go to
//!   `/v1/tasks/{task_id}/...`, the task's default rollout.
//! - neither: nothing is recorded, the verdict is only the job's result (and `model` is refused,
//!   since there is nowhere to record the step).

use super::test_files::{default_test_files, named_test_files};
use super::verdict::TestsReward;
use crate::sandbox::{
    is_supported_language, validate_relative_path, SandboxLimits, SUPPORTED_LANGUAGES,
};
use agentd_schemas::events::Action;
use agentd_schemas::RolloutId;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Most arguments of a test command.
pub const TEST_ARGS_MAX: usize = 64;
/// Longest model name or policy version, in characters (the daemon's limit for both).
pub const NAME_CHARS_MAX: usize = 128;

/// A validated `astgrep.verify` payload.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyJob {
    /// The payload's `task_id`, else the job's. Without `rollout_id`, where results are
    /// recorded (`None`: the verdict is only the job's result); with it, the task the rollout
    /// must belong to.
    pub task_id: Option<String>,
    /// The rollout whose step results are recorded under (`/v1/rollouts/{rollout_id}/...`);
    /// `None`: the task's default rollout.
    pub rollout_id: Option<RolloutId>,
    /// The step the results belong to (default 0).
    pub step: u32,
    pub files: BTreeMap<String, String>,
    /// The action to verify (the model's proposal).
    pub action: Action,
    /// The reference action; its diff must equal the action's for a verified reward.
    pub gold_action: Option<Action>,
    pub test_command: Option<Vec<String>>,
    /// The task's language, when given (a pattern action without one uses it).
    pub language: Option<String>,
    /// Model and policy version: when both are given the worker records the step itself.
    pub model: Option<StepModel>,
    /// The task's test files (the payload's `tests`, else the defaults of `test_files`): the
    /// action must not change them, and the tests run from their original bytes.
    pub test_files: BTreeSet<String>,
    /// The expected result, path -> text (the payload's `post`; one text stands for the one
    /// file that is not a test).
    pub post: Option<BTreeMap<String, String>>,
    /// How the tests score (all must pass, or the fraction that passed), when the payload
    /// says; `None`: as the reward settings say (`[rewards] tests`).
    pub tests_reward: Option<TestsReward>,
}

/// Who proposed the action, for recording the step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepModel {
    pub model: String,
    pub policy_version: String,
}

/// Why a payload cannot be verified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid astgrep.verify payload: {0}")]
pub struct PayloadError(pub String);

/// The payload as JSON: the same shape as the step route's action, except that a pattern may
/// leave out `language` when the payload has one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    rollout_id: Option<RolloutId>,
    #[serde(default)]
    step: Option<u32>,
    files: BTreeMap<String, String>,
    action: RawAction,
    #[serde(default)]
    gold_action: Option<RawAction>,
    #[serde(default)]
    test_command: Option<Vec<String>>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    policy_version: Option<String>,
    #[serde(default)]
    tests: Option<Vec<String>>,
    #[serde(default)]
    post: Option<RawPost>,
    #[serde(default)]
    tests_reward: Option<TestsReward>,
}

/// `post`: one text (for a task with one file that is not a test) or path -> text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPost {
    One(String),
    ByPath(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawAction {
    Pattern {
        #[serde(default)]
        language: Option<String>,
        pattern: String,
        rewrite: String,
    },
    Rule {
        yaml: String,
    },
}

/// Parses and checks a payload. `job_task_id` is the job's own `task_id`, used when the
/// payload has none; `limits` are the sandbox's, to check the test program up front.
pub fn parse(
    payload: &serde_json::Value,
    job_task_id: Option<&str>,
    limits: &SandboxLimits,
) -> Result<VerifyJob, PayloadError> {
    let raw: RawPayload =
        serde_json::from_value(payload.clone()).map_err(|error| PayloadError(error.to_string()))?;
    let task_id = task_id(raw.task_id, job_task_id)?;
    if raw.files.is_empty() {
        return Err(PayloadError("files must hold at least one file".into()));
    }
    for path in raw.files.keys() {
        validate_relative_path(path).map_err(|error| PayloadError(format!("files: {error}")))?;
    }
    if let Some(language) = &raw.language {
        check_language("language", language)?;
    }
    let action = action(raw.action, raw.language.as_deref(), "action")?;
    let gold_action = match raw.gold_action {
        None => None,
        Some(gold) => {
            let gold = action_checked(gold, raw.language.as_deref())?;
            Some(gold)
        }
    };
    if let Some(argv) = &raw.test_command {
        check_test_command(argv, limits)?;
    }
    let model = step_model(
        raw.model,
        raw.policy_version,
        task_id.as_deref(),
        raw.rollout_id,
    )?;
    let test_files = match &raw.tests {
        None => default_test_files(&raw.files),
        Some(patterns) => named_test_files(&raw.files, patterns).map_err(PayloadError)?,
    };
    let post = match raw.post {
        None => None,
        Some(post) => Some(expected_post(post, &raw.files, &test_files)?),
    };
    Ok(VerifyJob {
        task_id,
        rollout_id: raw.rollout_id,
        step: raw.step.unwrap_or(0),
        files: raw.files,
        action,
        gold_action,
        test_command: raw.test_command,
        language: raw.language,
        model,
        test_files,
        post,
        tests_reward: raw.tests_reward,
    })
}

/// The payload's `task_id`, else the job's; they must agree when both are given.
fn task_id(own: Option<String>, job_task_id: Option<&str>) -> Result<Option<String>, PayloadError> {
    let task_id = match (own, job_task_id) {
        (Some(own), Some(job)) if own != job => {
            return Err(PayloadError(format!(
                "task_id {own:?} differs from the job's task_id {job:?}"
            )))
        }
        (Some(own), _) => Some(own),
        (None, job) => job.map(str::to_string),
    };
    if task_id.as_deref().is_some_and(|id| id.trim().is_empty()) {
        return Err(PayloadError("task_id must not be blank".into()));
    }
    Ok(task_id)
}

/// The model that proposed the step, when the worker is to record it: `model` and
/// `policy_version` together, under a task (never a rollout's step; see the module doc).
fn step_model(
    model: Option<String>,
    policy_version: Option<String>,
    task_id: Option<&str>,
    rollout_id: Option<RolloutId>,
) -> Result<Option<StepModel>, PayloadError> {
    let model =
        match (model, policy_version) {
            (None, None) => return Ok(None),
            (Some(model), Some(policy_version)) => {
                for (field, value) in [("model", &model), ("policy_version", &policy_version)] {
                    if value.trim().is_empty() || value.chars().count() > NAME_CHARS_MAX {
                        return Err(PayloadError(format!(
                            "{field} must be 1 to {NAME_CHARS_MAX} characters"
                        )));
                    }
                }
                StepModel {
                    model,
                    policy_version,
                }
            }
            _ => return Err(PayloadError(
                "model and policy_version go together: give both to record the step, or neither"
                    .into(),
            )),
        };
    if rollout_id.is_some() {
        return Err(PayloadError(
            "model is given with a rollout_id: a rollout's steps are recorded by its episode under its lease; send the verify job after the episode recorded the step, without model".into(),
        ));
    }
    if task_id.is_none() {
        return Err(PayloadError(
            "model is given but there is no task_id or rollout_id to record the step under".into(),
        ));
    }
    Ok(Some(model))
}

/// The payload fields that name where the verdict is recorded, which a local run
/// (`agentctl verify`) refuses: it records nothing, so they could only mislead.
pub const RECORDING_FIELDS: [&str; 3] = ["rollout_id", "model", "policy_version"];

/// Parses and checks a payload for a run that records nothing (`agentctl verify`): as
/// [`parse`], with no job, and refusing `rollout_id`, `model` and `policy_version`.
/// `task_id` and `step` are accepted and mean nothing here (a payload built for a job runs
/// unchanged once its recording fields are left out).
pub fn parse_for_local_run(
    payload: &serde_json::Value,
    limits: &SandboxLimits,
) -> Result<VerifyJob, PayloadError> {
    if let Some(object) = payload.as_object() {
        let given: Vec<&str> = RECORDING_FIELDS
            .into_iter()
            .filter(|field| object.contains_key(*field))
            .collect();
        if !given.is_empty() {
            return Err(PayloadError(format!(
                "{} given, but a local verification records nothing (no step, sandbox result or reward): leave out rollout_id, model and policy_version, or submit the payload as an astgrep.verify job",
                given.join(" and ")
            )));
        }
    }
    parse(payload, None, limits)
}

/// Resolves `post` to path -> text. One text needs exactly one file that is not a test: with
/// more, which one it describes would be a guess.
fn expected_post(
    post: RawPost,
    files: &BTreeMap<String, String>,
    test_files: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, PayloadError> {
    match post {
        RawPost::One(text) => {
            let code_files: Vec<&String> = files
                .keys()
                .filter(|path| !test_files.contains(*path))
                .collect();
            match code_files.as_slice() {
                [only] => Ok([((*only).clone(), text)].into()),
                _ => Err(PayloadError(format!(
                    "post is one text but the task has {} files that are not tests; give post as an object of path -> expected text",
                    code_files.len()
                ))),
            }
        }
        RawPost::ByPath(by_path) => {
            if by_path.is_empty() {
                return Err(PayloadError("post must name at least one file".into()));
            }
            if let Some(unknown) = by_path.keys().find(|path| !files.contains_key(*path)) {
                return Err(PayloadError(format!(
                    "post names {unknown:?}, which is not among the files"
                )));
            }
            Ok(by_path)
        }
    }
}

/// The model's action: its language may be anything (an unsupported one is the model's
/// mistake and ends as a `rejected` sandbox run and no reward), but it must be there.
fn action(
    raw: RawAction,
    default_language: Option<&str>,
    field: &str,
) -> Result<Action, PayloadError> {
    match raw {
        RawAction::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            let language = language
                .or_else(|| default_language.map(str::to_string))
                .ok_or_else(|| {
                    PayloadError(format!(
                        "{field}.language is missing and the payload has no language"
                    ))
                })?;
            Ok(Action::Pattern {
                language,
                pattern,
                rewrite,
            })
        }
        RawAction::Rule { yaml } => Ok(Action::Rule { yaml }),
    }
}

/// The gold action is task data, not a model proposal: an unsupported language is the
/// submitter's mistake.
fn action_checked(raw: RawAction, default_language: Option<&str>) -> Result<Action, PayloadError> {
    let gold = action(raw, default_language, "gold_action")?;
    if let Action::Pattern { language, .. } = &gold {
        check_language("gold_action.language", language)?;
    }
    Ok(gold)
}

fn check_language(field: &str, language: &str) -> Result<(), PayloadError> {
    if is_supported_language(language) {
        Ok(())
    } else {
        let names: Vec<String> = SUPPORTED_LANGUAGES
            .iter()
            .map(|lang| lang.to_string().to_lowercase())
            .collect();
        Err(PayloadError(format!(
            "{field} {language:?} is not supported (supported: {})",
            names.join(", ")
        )))
    }
}

/// The test command is task data too: a program the sandbox would refuse is the submitter's
/// mistake, not a failed verification, so a bare name must be on the allowlist. (Absolute
/// paths are resolved by the sandbox itself, which follows symlinks.)
fn check_test_command(argv: &[String], limits: &SandboxLimits) -> Result<(), PayloadError> {
    let Some(program) = argv.first() else {
        return Err(PayloadError("test_command must not be empty".into()));
    };
    if argv.len() > TEST_ARGS_MAX {
        return Err(PayloadError(format!(
            "test_command has {} arguments, over the limit of {TEST_ARGS_MAX}",
            argv.len()
        )));
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err(PayloadError(
            "test_command arguments must not contain NUL".into(),
        ));
    }
    if !program.starts_with('/')
        && !limits
            .allowed_binaries
            .iter()
            .any(|allowed| allowed == program)
    {
        return Err(PayloadError(format!(
            "test_command program {program:?} is not in the sandbox's allowed_binaries ({})",
            limits.allowed_binaries.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
