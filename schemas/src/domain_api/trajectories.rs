//! Trajectories: a step (its fields, or the model's raw output), its sandbox result and reward,
//! a page of steps, and the trajectory stats.

use super::rules::{ActionText, NonBlankName, RewardComponents, RewardValue};
use super::state::{StateUpdateFields, StateUpdateResponse};
use crate::events::{
    Action, AgentState, OutputFormatError, RewardSource, Sampling, SandboxOutcome,
};
use crate::ids::{JobId, LeaseId, Lsn, RolloutId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/tasks/{task_id}/steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordStepRequest {
    /// The step's index within the task; each index is recorded once.
    pub step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Refused with 409 `lease_lost` when this lease is no longer held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    #[schema(value_type = NonBlankName)]
    pub model: String,
    #[schema(value_type = NonBlankName)]
    pub policy_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingRequest>,
    /// As reported by the model server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// The prompt text, when the actor wants it kept: at most 262144 bytes of UTF-8 (`maxLength`
    /// counts characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262_144)]
    pub prompt: Option<String>,
    /// At most 65536 bytes of UTF-8 (`maxLength` counts characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65_536)]
    pub think: Option<String>,
    /// The action; required unless `raw_output` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRequest>,
    /// Merged into the agent state in the same log record as the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_update: Option<StateUpdateFields>,
    /// The model's output (`<think>/<action>/<state_update>`, `docs/output-format.md`), instead
    /// of `think`, `action` and `state_update`: the daemon parses it and stores both. An output
    /// that does not parse is recorded with its `format_error`, no action, and a reward of 0
    /// (`format` component): a negative for training. At most 262144 bytes of UTF-8
    /// (`maxLength` counts characters). Not together with `think`, `action` or `state_update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 262_144)]
    pub raw_output: Option<String>,
    /// How long the model took to generate this step, in ms, as the actor measured it
    /// (`agentd_actor_step_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_ms: Option<u64>,
}

/// Sampling parameters of the model call (strict: an unknown parameter is refused).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

impl From<SamplingRequest> for Sampling {
    fn from(request: SamplingRequest) -> Self {
        Sampling {
            temperature: request.temperature,
            top_p: request.top_p,
            max_tokens: request.max_tokens,
            seed: request.seed,
        }
    }
}

/// The proposed action: `{"kind":"pattern","language","pattern","rewrite"}` or
/// `{"kind":"rule","yaml"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionRequest {
    Pattern {
        #[schema(value_type = NonBlankName)]
        language: String,
        #[schema(value_type = ActionText)]
        pattern: String,
        /// At most 65536 bytes of UTF-8 (`maxLength` counts characters).
        #[schema(max_length = 65_536)]
        rewrite: String,
    },
    Rule {
        #[schema(value_type = ActionText)]
        yaml: String,
    },
}

impl From<ActionRequest> for Action {
    fn from(request: ActionRequest) -> Self {
        match request {
            ActionRequest::Pattern {
                language,
                pattern,
                rewrite,
            } => Action::Pattern {
                language,
                pattern,
                rewrite,
            },
            ActionRequest::Rule { yaml } => Action::Rule { yaml },
        }
    }
}

impl From<Action> for ActionRequest {
    fn from(action: Action) -> Self {
        match action {
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
}

/// `POST /v1/tasks/{task_id}/steps` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordStepResponse {
    pub task_id: String,
    /// `null` for the task's default rollout.
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub lsn: Lsn,
    /// With a `state_update`: the merged state and what was trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateUpdateResponse>,
    /// For a `raw_output` that did not parse: why (the step is recorded with reward 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_error: Option<OutputFormatError>,
}

/// `POST /v1/tasks/{task_id}/steps/{step}/sandbox`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxResultRequest {
    /// `null` when the process did not exit on its own (killed, timed out).
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub outcome: SandboxOutcome,
    /// At most 1 MiB (1048576 bytes) of UTF-8 (`maxLength` counts characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1_048_576)]
    pub diff: Option<String>,
    /// Already truncated by the sandbox: at most 65536 bytes of UTF-8 (`maxLength` counts
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65_536)]
    pub stdout: Option<String>,
    /// As `stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65_536)]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_passed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_failed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
}

/// `POST /v1/tasks/{task_id}/steps/{step}/reward`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardRequest {
    #[schema(value_type = RewardValue)]
    pub value: f64,
    pub verified: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = RewardComponents)]
    pub components: BTreeMap<String, f64>,
    pub source: RewardSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
}

/// Answer to a sandbox result or a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepFactResponse {
    pub task_id: String,
    /// `null` for the task's default rollout.
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub lsn: Lsn,
}

/// `GET /v1/tasks/{task_id}/trajectory?after=&limit=`: steps in step order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrajectoryResponse {
    pub task_id: String,
    pub steps: Vec<TrajectoryStep>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u32>,
}

/// One step with the state before it, its sandbox result and its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrajectoryStep {
    /// `null` for the task's default rollout.
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub job_id: Option<JobId>,
    pub lease_id: Option<LeaseId>,
    pub attempt: Option<u32>,
    pub worker_id: Option<String>,
    pub model: String,
    pub policy_version: String,
    pub sampling: Sampling,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub prompt: Option<String>,
    pub think: Option<String>,
    /// `null` for a raw output that did not parse.
    pub action: Option<Action>,
    pub state_update: Option<AgentState>,
    /// The model's output as recorded, when the step came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_error: Option<OutputFormatError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_ms: Option<u64>,
    /// The task's agent state when the step was recorded (before its own `state_update`).
    pub state_before: AgentState,
    /// The frame of the last update merged into `state_before` (0: empty state).
    pub state_before_lsn: Lsn,
    pub sandbox: Option<SandboxView>,
    pub reward: Option<RewardView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxView {
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub exit_code: Option<i32>,
    pub outcome: SandboxOutcome,
    pub diff: String,
    pub stdout: String,
    pub stderr: String,
    pub tests_passed: Option<u32>,
    pub tests_failed: Option<u32>,
    pub duration_ms: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RewardView {
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub value: f64,
    pub verified: bool,
    pub components: BTreeMap<String, f64>,
    pub source: RewardSource,
}

/// `GET /v1/trajectories/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrajectoryStatsResponse {
    /// Tasks with at least one step or rollout.
    pub tasks: u64,
    /// Rollouts created (a task's default rollout is not counted).
    pub rollouts: u64,
    pub groups: u64,
    pub steps: u64,
    pub sandbox_results: u64,
    /// Per model, in name order.
    pub models: Vec<ModelStatsView>,
    /// Per model and policy version, in that order: how precision moves across versions.
    pub policies: Vec<PolicyStatsView>,
    /// Per language of the steps' actions, in name order (absent from daemons before it, hence
    /// the default).
    #[serde(default)]
    pub languages: Vec<LanguageStatsView>,
    pub rewards: RewardDistributionView,
    /// Sandbox results per outcome (`ok`, `failed`, `timed_out`, `killed_oom`, `rejected`).
    pub sandbox_outcomes: BTreeMap<String, u64>,
    /// Posts that reached the log but did not apply (a race between two writers of the same
    /// step): the first in log order won.
    pub ignored: IgnoredView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyStatsView {
    pub model: String,
    pub policy_version: String,
    pub steps: u64,
    pub rewarded: u64,
    pub verified: u64,
    /// `verified / rewarded`, as for a model.
    pub teacher_precision: Option<f64>,
}

/// The counters of the steps whose action is in one language: a pattern action's `language`,
/// or the top-level `language:` key of a rule's YAML, normalized (`py` counts as `python`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LanguageStatsView {
    /// The canonical name (`python`, `typescript`, ...), or `unknown` for steps without an
    /// action, with a language name agentd does not know, or with a rule naming none (or
    /// several).
    pub language: String,
    pub steps: u64,
    pub rewarded: u64,
    pub verified: u64,
    /// `verified / rewarded`, as for a model.
    pub teacher_precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelStatsView {
    pub model: String,
    pub steps: u64,
    /// Steps with a reward.
    pub rewarded: u64,
    /// Steps with a verified reward.
    pub verified: u64,
    /// `verified / rewarded` (the seed's teacher precision over steps with a verdict: a step
    /// still waiting for its reward is no failure); `None` before the first verdict.
    pub teacher_precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RewardDistributionView {
    pub count: u64,
    pub verified: u64,
    pub unverified: u64,
    /// Rewards per source (`rule`, `teacher`, `human`).
    pub by_source: BTreeMap<String, u64>,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Counts of reward values per bucket `(lower, upper]`; `null` is unbounded.
    pub buckets: Vec<RewardBucketView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RewardBucketView {
    /// Exclusive lower bound; `None` for the first bucket.
    pub lower: Option<f64>,
    /// Inclusive upper bound; `None` for the last bucket.
    pub upper: Option<f64>,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IgnoredView {
    pub duplicate_steps: u64,
    pub duplicate_sandbox_results: u64,
    pub duplicate_rewards: u64,
    pub sandbox_results_without_step: u64,
    pub rewards_without_step: u64,
    pub duplicate_rollouts: u64,
    pub steps_without_rollout: u64,
}
