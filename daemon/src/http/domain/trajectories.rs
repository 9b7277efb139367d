//! Trajectory routes: record a step (with its optional state update, in the same log record),
//! attach a sandbox result and a reward to a step, read a trajectory, and the stats behind
//! teacher precision.
//!
//! Every write exists twice: under a rollout (`/v1/rollouts/{rollout_id}/steps...`) and under a
//! task (`/v1/tasks/{task_id}/steps...`), which records into the task's default rollout (the
//! one a task had before rollouts existed). Both parse and bound-check the body here and let the
//! sequencer decide ([`crate::domain::decide`]): each step index of a rollout is recorded once
//! (409 `conflict` for a second), and so are a step's sandbox result and reward; a sandbox result
//! or reward for a step not recorded is 404, as is an unknown rollout.

use super::state::{check_update, state_event, update_answer};
use super::{
    check_bytes, check_chars, check_name, check_task_id, decide_and_apply, ACTION_TEXT_BYTES_MAX,
    COMPONENT_NAME_CHARS_MAX, DIFF_BYTES_MAX, OUTPUT_BYTES_MAX, PROMPT_BYTES_MAX,
    REWARD_COMPONENTS_MAX, THINK_BYTES_MAX,
};
use crate::domain::decide::{DomainCommand, DomainReply, Target};
use crate::domain::output_format::{self, FormatError, ParsedOutput};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiResult, AppState};
use crate::projection::domain::trajectories::{
    StepEntry, TrajectoryStats, REWARD_BUCKET_UPPER_BOUNDS,
};
use agentd_schemas::domain_api::{
    ActionRequest, IgnoredView, LanguageStatsView, ModelStatsView, PolicyStatsView,
    RecordStepRequest, RecordStepResponse, RewardBucketView, RewardDistributionView, RewardRequest,
    RewardView, SamplingRequest, SandboxResultRequest, SandboxView, StepFactResponse,
    TrajectoryResponse, TrajectoryStatsResponse, TrajectoryStep,
};
use agentd_schemas::events::{
    Action, OutputFormatError, RewardRecorded, RewardSource, SandboxResultRecorded, StepRecorded,
};
use agentd_schemas::ErrorCode;
use agentd_schemas::RolloutId;
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;
use serde::Deserialize;

/// Steps one trajectory page returns by default and at most (a step can carry a diff of up to
/// a MiB, so pages stay small).
pub const TRAJECTORY_PAGE_DEFAULT: usize = 100;
pub const TRAJECTORY_PAGE_MAX: usize = 1000;

/// `POST /v1/tasks/{task_id}/steps`: a step of the task's default rollout.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    request_body = agentd_schemas::domain_api::RecordStepRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::RecordStepResponse),
        (status = 404, description = "`not_found`: the job or lease does not exist", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (step already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_step(
    State(state): State<AppState>,
    caller: CallerExt,
    Path(task_id): Path<String>,
    ApiJson(request): ApiJson<RecordStepRequest>,
) -> ApiResult<Json<RecordStepResponse>> {
    check_task_id(&task_id)?;
    record_step_into(&state, caller, Target::Task(task_id), request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`")),
    request_body = agentd_schemas::domain_api::RecordStepRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::RecordStepResponse),
        (status = 404, description = "`not_found`: the rollout, job or lease does not exist", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (step already recorded in this rollout) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_step(
    State(state): State<AppState>,
    caller: CallerExt,
    Path(rollout_id): Path<RolloutId>,
    ApiJson(request): ApiJson<RecordStepRequest>,
) -> ApiResult<Json<RecordStepResponse>> {
    record_step_into(&state, caller, Target::Rollout(rollout_id), request).await
}

async fn record_step_into(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    request: RecordStepRequest,
) -> ApiResult<Json<RecordStepResponse>> {
    check_step(&request)?;
    let step = request.step;
    let lease_id = request.lease_id;
    let model_output = ModelOutput::of(&request)?;
    let (think, action, state_update) = match &model_output {
        ModelOutput::Fields => (
            request.think,
            request.action.map(Action::from),
            request.state_update,
        ),
        ModelOutput::Parsed(parsed) => (
            parsed.think.clone(),
            Some(Action::from(parsed.action.clone())),
            parsed.state_update.clone(),
        ),
        ModelOutput::Unparsed(_) => (None, None, None),
    };
    let state_update = state_update.map(|fields| fields.into_parts());
    let format_error = match &model_output {
        ModelOutput::Unparsed(error) => Some(OutputFormatError {
            code: error.code.to_owned(),
            message: error.message.clone(),
        }),
        _ => None,
    };
    // The sequencer fills in the task (from the rollout), the rollout, and the job, attempt and
    // worker of a held lease.
    let event = StepRecorded {
        task_id: String::new(),
        rollout_id: None,
        step,
        job_id: request.job_id,
        lease_id,
        attempt: None,
        worker_id: None,
        model: request.model,
        policy_version: request.policy_version,
        sampling: request.sampling.unwrap_or_default().into(),
        prompt_tokens: request.prompt_tokens,
        completion_tokens: request.completion_tokens,
        prompt: request.prompt,
        think,
        action,
        state_update: state_update.as_ref().map(|(update, _)| update.clone()),
        raw_output: request.raw_output,
        format_error: format_error.clone(),
        generation_ms: request.generation_ms,
    };
    let generation_ms = request.generation_ms;
    // The update is merged in the same record, after the step: the step keeps the state before.
    let update_event =
        state_update.map(|(update, forget)| state_event(&state.domain, update, forget, lease_id));
    let with_update = update_event.is_some();
    // An output that does not parse is a negative: rewarded 0 in the same record, no sandbox.
    let format_reward = format_error.as_ref().map(|_| RewardRecorded {
        task_id: String::new(),
        rollout_id: None,
        step,
        lease_id,
        value: 0.0,
        verified: false,
        components: [("format".to_owned(), 0.0)].into(),
        source: RewardSource::Rule,
    });
    let command = DomainCommand::RecordStep {
        target,
        step: Box::new(event),
        state_update: update_event,
        format_reward,
    };
    let (lsn, task_id, rollout_id) = record(state, caller, command).await?;
    if let Some(ms) = generation_ms {
        metrics::histogram!("agentd_actor_step_seconds").record(ms as f64 / 1000.0);
    }
    let merged = match with_update {
        false => None,
        true => {
            let states = state.domain.projections.agent_states();
            Some(update_answer(
                &states,
                &task_id,
                rollout_id,
                lsn,
                &state.domain,
            )?)
        }
    };
    Ok(Json(RecordStepResponse {
        task_id,
        rollout_id,
        step,
        lsn,
        state: merged,
        format_error,
    }))
}

/// Where a step's think, action and state update come from.
enum ModelOutput {
    /// The request's own fields.
    Fields,
    /// Its `raw_output`, parsed.
    Parsed(ParsedOutput),
    /// Its `raw_output`, which does not parse.
    Unparsed(FormatError),
}

impl ModelOutput {
    fn of(request: &RecordStepRequest) -> Result<ModelOutput, ApiError> {
        let Some(raw) = &request.raw_output else {
            if request.action.is_none() {
                return Err(ApiError::invalid(
                    "action: required unless raw_output (the model's output) is given",
                ));
            }
            return Ok(ModelOutput::Fields);
        };
        if request.action.is_some() || request.think.is_some() || request.state_update.is_some() {
            return Err(ApiError::invalid(
                "raw_output: give it alone; the daemon parses think, action and state_update out of it",
            ));
        }
        // Longer outputs are not stored (the parser would refuse them as `too_large` anyway).
        check_bytes("raw_output", raw, output_format::OUTPUT_BYTES_MAX)?;
        Ok(match output_format::parse(raw) {
            Ok(parsed) => ModelOutput::Parsed(parsed),
            Err(error) => ModelOutput::Unparsed(error),
        })
    }
}

/// Sends a trajectory write to the sequencer and waits until it is applied: its LSN, task and
/// rollout.
async fn record(
    state: &AppState,
    caller: CallerExt,
    command: DomainCommand,
) -> Result<(agentd_schemas::Lsn, String, Option<RolloutId>), ApiError> {
    match decide_and_apply(state, caller.actor(), command).await? {
        (
            Some(lsn),
            DomainReply::Recorded {
                task_id,
                rollout_id,
            },
        ) => Ok((lsn, task_id, rollout_id)),
        other => Err(ApiError::internal(
            "recording a trajectory fact",
            format!("unexpected decision {other:?}"),
        )),
    }
}

/// `POST /v1/tasks/{task_id}/steps/{step}/sandbox`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/sandbox", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::SandboxResultRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_sandbox(
    State(state): State<AppState>,
    caller: CallerExt,
    Path((task_id, step)): Path<(String, String)>,
    ApiJson(request): ApiJson<SandboxResultRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    check_task_id(&task_id)?;
    record_sandbox_into(&state, caller, Target::Task(task_id), &step, request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps/{step}/sandbox`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps/{step}/sandbox", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::SandboxResultRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such rollout or step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_sandbox(
    State(state): State<AppState>,
    caller: CallerExt,
    Path((rollout_id, step)): Path<(RolloutId, String)>,
    ApiJson(request): ApiJson<SandboxResultRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    record_sandbox_into(&state, caller, Target::Rollout(rollout_id), &step, request).await
}

async fn record_sandbox_into(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    step: &str,
    request: SandboxResultRequest,
) -> ApiResult<Json<StepFactResponse>> {
    let step = parse_step(step)?;
    let diff = request.diff.unwrap_or_default();
    let stdout = request.stdout.unwrap_or_default();
    let stderr = request.stderr.unwrap_or_default();
    check_bytes("diff", &diff, DIFF_BYTES_MAX)?;
    check_bytes("stdout", &stdout, OUTPUT_BYTES_MAX)?;
    check_bytes("stderr", &stderr, OUTPUT_BYTES_MAX)?;
    let result = SandboxResultRecorded {
        task_id: String::new(),
        rollout_id: None,
        step,
        lease_id: request.lease_id,
        exit_code: request.exit_code,
        outcome: request.outcome,
        diff,
        stdout,
        stderr,
        tests_passed: request.tests_passed,
        tests_failed: request.tests_failed,
        duration_ms: request.duration_ms,
        peak_rss_bytes: request.peak_rss_bytes,
    };
    let command = DomainCommand::RecordSandbox {
        target,
        result: Box::new(result),
    };
    let (lsn, task_id, rollout_id) = record(state, caller, command).await?;
    Ok(Json(StepFactResponse {
        task_id,
        rollout_id,
        step,
        lsn,
    }))
}

/// `POST /v1/tasks/{task_id}/steps/{step}/reward`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/reward", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::RewardRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_reward(
    State(state): State<AppState>,
    caller: CallerExt,
    Path((task_id, step)): Path<(String, String)>,
    ApiJson(request): ApiJson<RewardRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    check_task_id(&task_id)?;
    record_reward_into(&state, caller, Target::Task(task_id), &step, request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps/{step}/reward`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps/{step}/reward", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::RewardRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such rollout or step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_reward(
    State(state): State<AppState>,
    caller: CallerExt,
    Path((rollout_id, step)): Path<(RolloutId, String)>,
    ApiJson(request): ApiJson<RewardRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    record_reward_into(&state, caller, Target::Rollout(rollout_id), &step, request).await
}

async fn record_reward_into(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    step: &str,
    request: RewardRequest,
) -> ApiResult<Json<StepFactResponse>> {
    let step = parse_step(step)?;
    check_reward(&request)?;
    // `+ 0.0` turns -0.0 into 0.0: the same reward, one representation in every sum and export.
    let reward = RewardRecorded {
        task_id: String::new(),
        rollout_id: None,
        step,
        lease_id: request.lease_id,
        value: request.value + 0.0,
        verified: request.verified,
        components: request
            .components
            .into_iter()
            .map(|(name, value)| (name, value + 0.0))
            .collect(),
        source: request.source,
    };
    let command = DomainCommand::RecordReward { target, reward };
    let (lsn, task_id, rollout_id) = record(state, caller, command).await?;
    Ok(Json(StepFactResponse {
        task_id,
        rollout_id,
        step,
        lsn,
    }))
}

/// Query of a page of steps (`GET /v1/tasks/{task_id}/trajectory`, `GET /v1/rollouts/{id}`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrajectoryQuery {
    /// Only steps with a larger index.
    #[serde(default)]
    pub after: Option<u32>,
    /// At most this many steps (default 100: `TRAJECTORY_PAGE_DEFAULT`; at most 1000:
    /// `TRAJECTORY_PAGE_MAX`).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

impl TrajectoryQuery {
    /// The page size asked for, checked.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(TRAJECTORY_PAGE_DEFAULT);
        if limit == 0 || limit > TRAJECTORY_PAGE_MAX {
            return Err(ApiError::invalid(format!(
                "limit: must be between 1 and {TRAJECTORY_PAGE_MAX}"
            )));
        }
        Ok(limit)
    }
}

/// The steps after `after` in step order, at most `limit`, and the `next_after` of the next
/// page (none on the last).
pub(super) fn page<'a>(
    steps: impl Iterator<Item = &'a StepEntry>,
    after: Option<u32>,
    limit: usize,
) -> (Vec<TrajectoryStep>, Option<u32>) {
    let mut page: Vec<TrajectoryStep> = steps
        .filter(|entry| after.is_none_or(|after| entry.step.step > after))
        .take(limit + 1)
        .map(step_view)
        .collect();
    let next_after = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|step| step.step)
    } else {
        None
    };
    (page, next_after)
}

/// `GET /v1/tasks/{task_id}/trajectory`: steps in step order (empty for a task without steps).
#[utoipa::path(
    get, path = "/v1/tasks/{task_id}/trajectory", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), TrajectoryQuery),
    responses(
        (status = 200, description = "Steps in step order", body = agentd_schemas::domain_api::TrajectoryResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiQuery(query): ApiQuery<TrajectoryQuery>,
) -> ApiResult<Json<TrajectoryResponse>> {
    check_task_id(&task_id)?;
    let limit = query.limit()?;
    state.settle_reads().await;
    let trajectories = state.domain.projections.trajectories();
    let (steps, next_after) = page(trajectories.steps_of(&task_id), query.after, limit);
    Ok(Json(TrajectoryResponse {
        task_id,
        steps,
        next_after,
    }))
}

/// `GET /v1/trajectories/stats`.
#[utoipa::path(
    get, path = "/v1/trajectories/stats", tag = "trajectories",
    responses((status = 200, description = "Counts, teacher precision per model, per model and policy version and per action language, reward distribution", body = agentd_schemas::domain_api::TrajectoryStatsResponse))
)]
pub async fn stats(State(state): State<AppState>) -> ApiResult<Json<TrajectoryStatsResponse>> {
    state.settle_reads().await;
    let stats = state.domain.projections.trajectories().stats();
    Ok(Json(stats_view(stats)))
}

fn check_step(request: &RecordStepRequest) -> Result<(), ApiError> {
    check_name("model", &request.model)?;
    check_name("policy_version", &request.policy_version)?;
    if let Some(prompt) = &request.prompt {
        check_bytes("prompt", prompt, PROMPT_BYTES_MAX)?;
    }
    if let Some(think) = &request.think {
        check_bytes("think", think, THINK_BYTES_MAX)?;
    }
    if let Some(sampling) = &request.sampling {
        check_sampling(sampling)?;
    }
    // A `raw_output` step has no action here: the parser bounds the one it finds.
    let Some(action) = &request.action else {
        return Ok(());
    };
    match action {
        ActionRequest::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            check_name("action.language", language)?;
            if pattern.trim().is_empty() {
                return Err(ApiError::invalid("action.pattern: must not be blank"));
            }
            check_bytes("action.pattern", pattern, ACTION_TEXT_BYTES_MAX)?;
            check_bytes("action.rewrite", rewrite, ACTION_TEXT_BYTES_MAX)?;
        }
        ActionRequest::Rule { yaml } => {
            if yaml.trim().is_empty() {
                return Err(ApiError::invalid("action.yaml: must not be blank"));
            }
            check_bytes("action.yaml", yaml, ACTION_TEXT_BYTES_MAX)?;
        }
    }
    if let Some(update) = &request.state_update {
        check_update("state_update.", update)?;
    }
    Ok(())
}

/// Temperature and top-p are finite and at least 0.
pub(super) fn check_sampling(sampling: &SamplingRequest) -> Result<(), ApiError> {
    for (field, value) in [
        ("sampling.temperature", sampling.temperature),
        ("sampling.top_p", sampling.top_p),
    ] {
        if value.is_some_and(|value| !(value.is_finite() && value >= 0.0)) {
            return Err(ApiError::invalid(format!(
                "{field}: must be a finite number of at least 0"
            )));
        }
    }
    Ok(())
}

fn check_reward(request: &RewardRequest) -> Result<(), ApiError> {
    if !request.value.is_finite() {
        return Err(ApiError::invalid("value: must be a finite number"));
    }
    if request.components.len() > REWARD_COMPONENTS_MAX {
        return Err(ApiError::over_limit(
            ErrorCode::TooManyItems,
            format!(
                "components: {} entries is over the limit of {REWARD_COMPONENTS_MAX}",
                request.components.len()
            ),
        ));
    }
    for (name, value) in &request.components {
        if name.trim().is_empty() {
            return Err(ApiError::invalid("components: names must not be blank"));
        }
        check_chars(
            &format!("components.{name}"),
            name,
            COMPONENT_NAME_CHARS_MAX,
        )?;
        if !value.is_finite() {
            return Err(ApiError::invalid(format!(
                "components.{name}: must be a finite number"
            )));
        }
    }
    Ok(())
}

fn parse_step(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(format!(
            "step: {text:?} is not a step index (0 to {})",
            u32::MAX
        ))
    })
}

pub(super) fn step_view(entry: &StepEntry) -> TrajectoryStep {
    let step = &entry.step;
    TrajectoryStep {
        rollout_id: step.rollout_id,
        step: step.step,
        lsn: entry.lsn,
        ts_ms: entry.ts_ms,
        job_id: step.job_id,
        lease_id: step.lease_id,
        attempt: step.attempt,
        worker_id: step.worker_id.clone(),
        model: step.model.clone(),
        policy_version: step.policy_version.clone(),
        sampling: step.sampling.clone(),
        prompt_tokens: step.prompt_tokens,
        completion_tokens: step.completion_tokens,
        prompt: step.prompt.clone(),
        think: step.think.clone(),
        action: step.action.clone(),
        state_update: step.state_update.clone(),
        raw_output: step.raw_output.clone(),
        format_error: step.format_error.clone(),
        generation_ms: step.generation_ms,
        state_before: agentd_schemas::events::AgentState::clone(&entry.state_before),
        state_before_lsn: entry.state_before_lsn,
        sandbox: entry.sandbox.as_ref().map(|fact| {
            let result = &fact.event;
            SandboxView {
                lsn: fact.lsn,
                ts_ms: fact.ts_ms,
                exit_code: result.exit_code,
                outcome: result.outcome,
                diff: result.diff.clone(),
                stdout: result.stdout.clone(),
                stderr: result.stderr.clone(),
                tests_passed: result.tests_passed,
                tests_failed: result.tests_failed,
                duration_ms: result.duration_ms,
                peak_rss_bytes: result.peak_rss_bytes,
            }
        }),
        reward: entry.reward.as_ref().map(|fact| {
            let reward = &fact.event;
            RewardView {
                lsn: fact.lsn,
                ts_ms: fact.ts_ms,
                value: reward.value,
                verified: reward.verified,
                components: reward.components.clone(),
                source: reward.source,
            }
        }),
    }
}

fn stats_view(stats: TrajectoryStats) -> TrajectoryStatsResponse {
    let rewards = &stats.rewards;
    let buckets = rewards
        .buckets
        .iter()
        .enumerate()
        .map(|(position, &count)| RewardBucketView {
            lower: position
                .checked_sub(1)
                .and_then(|below| REWARD_BUCKET_UPPER_BOUNDS.get(below).copied()),
            upper: REWARD_BUCKET_UPPER_BOUNDS.get(position).copied(),
            count,
        })
        .collect();
    let mut by_source: std::collections::BTreeMap<String, u64> = ["rule", "teacher", "human"]
        .into_iter()
        .map(|source| (source.to_owned(), 0))
        .collect();
    for (source, count) in &rewards.by_source {
        by_source.insert((*source).to_owned(), *count);
    }
    TrajectoryStatsResponse {
        tasks: stats.tasks,
        rollouts: stats.rollouts,
        groups: stats.groups,
        steps: stats.steps,
        sandbox_results: stats.sandbox_results,
        models: stats
            .models
            .iter()
            .map(|(model, counters)| ModelStatsView {
                model: model.clone(),
                steps: counters.steps,
                rewarded: counters.rewarded,
                verified: counters.verified,
                teacher_precision: counters.precision(),
            })
            .collect(),
        policies: stats
            .policies
            .iter()
            .map(|((model, policy_version), counters)| PolicyStatsView {
                model: model.clone(),
                policy_version: policy_version.clone(),
                steps: counters.steps,
                rewarded: counters.rewarded,
                verified: counters.verified,
                teacher_precision: counters.precision(),
            })
            .collect(),
        languages: stats
            .languages
            .iter()
            .map(|(language, counters)| LanguageStatsView {
                language: (*language).to_owned(),
                steps: counters.steps,
                rewarded: counters.rewarded,
                verified: counters.verified,
                teacher_precision: counters.precision(),
            })
            .collect(),
        rewards: RewardDistributionView {
            count: rewards.count,
            verified: rewards.verified,
            unverified: rewards.count - rewards.verified,
            by_source,
            mean: rewards.mean(),
            min: rewards.min,
            max: rewards.max,
            buckets,
        },
        sandbox_outcomes: stats
            .sandbox_outcomes
            .iter()
            .map(|(outcome, count)| ((*outcome).to_owned(), *count))
            .collect(),
        ignored: IgnoredView {
            duplicate_steps: stats.ignored.duplicate_steps,
            duplicate_sandbox_results: stats.ignored.duplicate_sandbox_results,
            duplicate_rewards: stats.ignored.duplicate_rewards,
            sandbox_results_without_step: stats.ignored.sandbox_results_without_step,
            rewards_without_step: stats.ignored.rewards_without_step,
            duplicate_rollouts: stats.ignored.duplicate_rollouts,
            steps_without_rollout: stats.ignored.steps_without_rollout,
        },
    }
}
