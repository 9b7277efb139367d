//! Trajectory routes: record a step (with its optional state update, in the same log record),
//! attach a sandbox result and a reward to a step, read a task's trajectory, and the stats
//! behind teacher precision.
//!
//! Each step index of a task is recorded once (409 `conflict` for a second), and so are a step's
//! sandbox result and reward; a sandbox result or reward for a step not recorded is 404.

use super::state::{check_update, state_event, update_answer};
use super::write_locks::WriteKey;
use super::{
    append_and_apply, check_bytes, check_chars, check_name, check_task_id, conflict,
    ACTION_TEXT_BYTES_MAX, COMPONENT_NAME_CHARS_MAX, DIFF_BYTES_MAX, OUTPUT_BYTES_MAX,
    PROMPT_BYTES_MAX, REWARD_COMPONENTS_MAX, THINK_BYTES_MAX,
};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiResult, AppState};
use crate::projection::domain::trajectories::{
    StepEntry, TrajectoryStats, REWARD_BUCKET_UPPER_BOUNDS,
};
use crate::projection::jobs as job_projection;
use agentd_schemas::domain_api::{
    ActionRequest, IgnoredView, ModelStatsView, RecordStepRequest, RecordStepResponse,
    RewardBucketView, RewardDistributionView, RewardRequest, RewardView, SandboxResultRequest,
    SandboxView, StepFactResponse, TrajectoryResponse, TrajectoryStatsResponse, TrajectoryStep,
};
use agentd_schemas::events::{Event, RewardRecorded, SandboxResultRecorded, StepRecorded};
use agentd_schemas::projection::StoredJobState;
use agentd_schemas::{JobId, LeaseId};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;
use serde::Deserialize;

/// Steps one trajectory page returns by default and at most (a step can carry a diff of up to
/// a MiB, so pages stay small).
pub const TRAJECTORY_PAGE_DEFAULT: usize = 100;
pub const TRAJECTORY_PAGE_MAX: usize = 1000;

/// `POST /v1/tasks/{task_id}/steps`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps", tag = "trajectories",
    params(("task_id" = String, Path, description = "Task id")),
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
    check_step(&request)?;
    let _task_writes = state.domain.lock(WriteKey::Task(&task_id)).await;
    state.settle_reads().await;
    if let Some(existing) = existing_step_lsn(&state, &task_id, request.step) {
        return Err(conflict(format!(
            "step {} of task {task_id} is already recorded (lsn {existing}); steps are immutable",
            request.step
        )));
    }
    let (attempt, worker_id) = lease_details(&state, request.job_id, request.lease_id).await?;
    let step = request.step;
    let lease_id = request.lease_id;
    let state_update = request
        .state_update
        .map(agentd_schemas::events::AgentState::from);
    let mut events = vec![Event::StepRecorded(StepRecorded {
        task_id: task_id.clone(),
        step,
        job_id: request.job_id,
        lease_id,
        attempt,
        worker_id,
        model: request.model,
        policy_version: request.policy_version,
        sampling: request.sampling.unwrap_or_default().into(),
        prompt_tokens: request.prompt_tokens,
        completion_tokens: request.completion_tokens,
        prompt: request.prompt,
        think: request.think,
        action: request.action.into(),
        state_update: state_update.clone(),
    })];
    // The update is merged in the same record, after the step: the step keeps the state before.
    if let Some(update) = state_update.clone() {
        events.push(state_event(&state.domain, &task_id, update, lease_id));
    }
    let lsn = append_and_apply(&state, caller.actor(), lease_id, events).await?;
    if let Some(kept) = existing_step_lsn(&state, &task_id, step).filter(|kept| *kept != lsn) {
        return Err(not_kept(
            format!("step {step} of task {task_id}"),
            kept,
            lsn,
        ));
    }
    let merged = match state_update {
        None => None,
        Some(_) => {
            let states = state.domain.projections.agent_states();
            Some(update_answer(&states, &task_id, lsn, &state.domain)?)
        }
    };
    Ok(Json(RecordStepResponse {
        task_id,
        step,
        lsn,
        state: merged,
    }))
}

/// `POST /v1/tasks/{task_id}/steps/{step}/sandbox`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/sandbox", tag = "trajectories",
    params(("task_id" = String, Path, description = "Task id"), ("step" = u32, Path, description = "Step index")),
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
    let step = parse_step(&step)?;
    let diff = request.diff.unwrap_or_default();
    let stdout = request.stdout.unwrap_or_default();
    let stderr = request.stderr.unwrap_or_default();
    check_bytes("diff", &diff, DIFF_BYTES_MAX)?;
    check_bytes("stdout", &stdout, OUTPUT_BYTES_MAX)?;
    check_bytes("stderr", &stderr, OUTPUT_BYTES_MAX)?;
    let _task_writes = state.domain.lock(WriteKey::Task(&task_id)).await;
    state.settle_reads().await;
    let existing = {
        let trajectories = state.domain.projections.trajectories();
        let entry = trajectories
            .step(&task_id, step)
            .ok_or_else(|| step_not_found(&task_id, step))?;
        entry.sandbox.as_ref().map(|fact| fact.lsn)
    };
    if let Some(existing) = existing {
        return Err(conflict(format!(
            "step {step} of task {task_id} already has a sandbox result (lsn {existing})"
        )));
    }
    let event = Event::SandboxResultRecorded(SandboxResultRecorded {
        task_id: task_id.clone(),
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
    });
    let lsn = append_and_apply(&state, caller.actor(), request.lease_id, vec![event]).await?;
    let kept = fact_lsn(&state, &task_id, step, |entry| {
        entry.sandbox.as_ref().map(|f| f.lsn)
    });
    if let Some(kept) = kept.filter(|kept| *kept != lsn) {
        let what = format!("the sandbox result of step {step} of task {task_id}");
        return Err(not_kept(what, kept, lsn));
    }
    Ok(Json(StepFactResponse { task_id, step, lsn }))
}

/// `POST /v1/tasks/{task_id}/steps/{step}/reward`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/reward", tag = "trajectories",
    params(("task_id" = String, Path, description = "Task id"), ("step" = u32, Path, description = "Step index")),
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
    let step = parse_step(&step)?;
    check_reward(&request)?;
    let _task_writes = state.domain.lock(WriteKey::Task(&task_id)).await;
    state.settle_reads().await;
    let existing = {
        let trajectories = state.domain.projections.trajectories();
        let entry = trajectories
            .step(&task_id, step)
            .ok_or_else(|| step_not_found(&task_id, step))?;
        entry.reward.as_ref().map(|fact| fact.lsn)
    };
    if let Some(existing) = existing {
        return Err(conflict(format!(
            "step {step} of task {task_id} already has a reward (lsn {existing})"
        )));
    }
    let event = Event::RewardRecorded(RewardRecorded {
        task_id: task_id.clone(),
        step,
        lease_id: request.lease_id,
        value: request.value,
        verified: request.verified,
        components: request.components,
        source: request.source,
    });
    let lsn = append_and_apply(&state, caller.actor(), request.lease_id, vec![event]).await?;
    let kept = fact_lsn(&state, &task_id, step, |entry| {
        entry.reward.as_ref().map(|f| f.lsn)
    });
    if let Some(kept) = kept.filter(|kept| *kept != lsn) {
        let what = format!("the reward of step {step} of task {task_id}");
        return Err(not_kept(what, kept, lsn));
    }
    Ok(Json(StepFactResponse { task_id, step, lsn }))
}

/// Query of `GET /v1/tasks/{task_id}/trajectory`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrajectoryQuery {
    /// Only steps with a larger index.
    #[serde(default)]
    after: Option<u32>,
    /// At most this many steps (default [`TRAJECTORY_PAGE_DEFAULT`], at most
    /// [`TRAJECTORY_PAGE_MAX`]).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /v1/tasks/{task_id}/trajectory`: steps in step order (empty for a task without steps).
#[utoipa::path(
    get, path = "/v1/tasks/{task_id}/trajectory", tag = "trajectories",
    params(("task_id" = String, Path, description = "Task id"), TrajectoryQuery),
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
    let limit = query.limit.unwrap_or(TRAJECTORY_PAGE_DEFAULT);
    if limit == 0 || limit > TRAJECTORY_PAGE_MAX {
        return Err(ApiError::invalid(format!(
            "limit: must be between 1 and {TRAJECTORY_PAGE_MAX}"
        )));
    }
    state.settle_reads().await;
    let trajectories = state.domain.projections.trajectories();
    let mut steps: Vec<TrajectoryStep> = trajectories
        .steps_of(&task_id)
        .filter(|entry| query.after.is_none_or(|after| entry.step.step > after))
        .take(limit + 1)
        .map(step_view)
        .collect();
    let next_after = if steps.len() > limit {
        steps.truncate(limit);
        steps.last().map(|step| step.step)
    } else {
        None
    };
    Ok(Json(TrajectoryResponse {
        task_id,
        steps,
        next_after,
    }))
}

/// `GET /v1/trajectories/stats`.
#[utoipa::path(
    get, path = "/v1/trajectories/stats", tag = "trajectories",
    responses((status = 200, description = "Counts, per-model teacher precision, reward distribution", body = agentd_schemas::domain_api::TrajectoryStatsResponse))
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
    }
    match &request.action {
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

fn check_reward(request: &RewardRequest) -> Result<(), ApiError> {
    if !request.value.is_finite() {
        return Err(ApiError::invalid("value: must be a finite number"));
    }
    if request.components.len() > REWARD_COMPONENTS_MAX {
        return Err(ApiError::over_limit(
            "too_many_items",
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

fn step_not_found(task_id: &str, step: u32) -> ApiError {
    ApiError::not_found(format!(
        "step {step} of task {task_id} not found; record it with POST /v1/tasks/{{task_id}}/steps first"
    ))
}

fn existing_step_lsn(state: &AppState, task_id: &str, step: u32) -> Option<agentd_schemas::Lsn> {
    fact_lsn(state, task_id, step, |entry| Some(entry.lsn))
}

/// An LSN of a recorded step (its own, its sandbox result's, its reward's) as the projection
/// holds it.
fn fact_lsn(
    state: &AppState,
    task_id: &str,
    step: u32,
    fact: impl FnOnce(&StepEntry) -> Option<agentd_schemas::Lsn>,
) -> Option<agentd_schemas::Lsn> {
    fact(
        state
            .domain
            .projections
            .trajectories()
            .step(task_id, step)?,
    )
}

/// 409 for a write that is in the log but that the projection did not keep, because an earlier
/// record of the same fact won (possible only when an earlier writer left the lock before its
/// record was applied: its apply timed out, or its request was cancelled after the append).
fn not_kept(what: String, kept: agentd_schemas::Lsn, lsn: agentd_schemas::Lsn) -> ApiError {
    conflict(format!(
        "{what} was recorded at lsn {kept}, before this write (lsn {lsn}); the earlier one stands"
    ))
}

/// The attempt and worker of the lease a step is recorded under, from the job projection. The
/// lease itself is checked again, atomically, by the fenced append (a stale lease gets
/// `lease_lost` there); this refuses a lease that was never one of the job's, which the fenced
/// append alone would let through while that other lease is held.
async fn lease_details(
    state: &AppState,
    job_id: Option<JobId>,
    lease_id: Option<LeaseId>,
) -> Result<(Option<u32>, Option<String>), ApiError> {
    let Some(job_id) = job_id else {
        return Ok((None, None));
    };
    let db = state.projections.db().clone();
    let (job, history) = tokio::task::spawn_blocking(move || {
        let job = job_projection::read_job(&db, job_id)?;
        let history = match &job {
            Some(_) => job_projection::read_history(&db, job_id)?,
            None => Vec::new(),
        };
        Ok::<_, job_projection::JobsError>((job, history))
    })
    .await
    .map_err(|error| ApiError::internal("reading a job", error))?
    .map_err(|error| ApiError::internal("reading a job", error))?;
    let job = job.ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))?;
    let Some(lease_id) = lease_id else {
        return Ok((None, None));
    };
    if let StoredJobState::Leased {
        lease_id: current,
        worker_id,
        attempt,
        ..
    } = job.state
    {
        if current == lease_id {
            return Ok((Some(attempt), Some(worker_id)));
        }
    }
    let leased_before = history
        .iter()
        .any(|entry| entry.event == "job_leased" && entry.lease_id == Some(lease_id));
    if !leased_before {
        return Err(ApiError::invalid(format!(
            "lease_id: {lease_id} is not a lease of {job_id}"
        )));
    }
    Ok((None, None))
}

fn step_view(entry: &StepEntry) -> TrajectoryStep {
    let step = &entry.step;
    TrajectoryStep {
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
        },
    }
}
