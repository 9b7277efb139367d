//! Reading trajectories: a page of a task's steps, the trajectory stats, and the views of a step
//! and of the counters that the rollout routes share.

use super::super::{check_task_id, page_limit, page_of, settle_domain_reads};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::{ApiResult, SharedState};
use crate::projection::domain::trajectories::{
    Fact, Ignored, RewardCounters, StepEntry, TrajectoryStats, REWARD_BUCKET_UPPER_BOUNDS,
};
use agentd_schemas::domain_api::{
    IgnoredView, LanguageStatsView, ModelStatsView, PolicyStatsView, RewardBucketView,
    RewardDistributionView, RewardView, SandboxView, TrajectoryResponse, TrajectoryStatsResponse,
    TrajectoryStep,
};
use agentd_schemas::events::{RewardRecorded, SandboxResultRecorded};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Steps one trajectory page returns by default and at most (a step can carry a diff of up to
/// a MiB, so pages stay small).
pub const TRAJECTORY_PAGE_DEFAULT: usize = 100;
pub const TRAJECTORY_PAGE_MAX: usize = 1000;

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
        page_limit(self.limit, TRAJECTORY_PAGE_DEFAULT, TRAJECTORY_PAGE_MAX)
    }
}

/// The steps after `after` in step order, at most `limit`, and the `next_after` of the next
/// page (none on the last).
pub fn page<'a>(
    steps: impl Iterator<Item = &'a StepEntry>,
    after: Option<u32>,
    limit: usize,
) -> (Vec<TrajectoryStep>, Option<u32>) {
    let steps = steps
        .filter(|entry| after.is_none_or(|after| entry.step.step > after))
        .map(step_view);
    page_of(steps, limit, |step| step.step)
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
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
    ApiQuery(query): ApiQuery<TrajectoryQuery>,
) -> ApiResult<Json<TrajectoryResponse>> {
    check_task_id(&task_id)?;
    let limit = query.limit()?;
    settle_domain_reads(&state).await?;
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
pub async fn stats(State(state): State<SharedState>) -> ApiResult<Json<TrajectoryStatsResponse>> {
    settle_domain_reads(&state).await?;
    let stats = state.domain.projections.trajectories().stats();
    Ok(Json(stats_view(stats)))
}

/// A step as the API shows it, with its sandbox result and reward.
pub fn step_view(entry: &StepEntry) -> TrajectoryStep {
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
        sandbox: entry.sandbox.as_ref().map(sandbox_view),
        reward: entry.reward.as_ref().map(reward_view),
    }
}

fn sandbox_view(fact: &Fact<SandboxResultRecorded>) -> SandboxView {
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
}

fn reward_view(fact: &Fact<RewardRecorded>) -> RewardView {
    let reward = &fact.event;
    RewardView {
        lsn: fact.lsn,
        ts_ms: fact.ts_ms,
        value: reward.value,
        verified: reward.verified,
        components: reward.components.clone(),
        source: reward.source,
    }
}

fn stats_view(stats: TrajectoryStats) -> TrajectoryStatsResponse {
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
        rewards: reward_distribution_view(&stats.rewards),
        sandbox_outcomes: stats
            .sandbox_outcomes
            .iter()
            .map(|(outcome, count)| ((*outcome).to_owned(), *count))
            .collect(),
        ignored: ignored_view(stats.ignored),
    }
}

/// The reward distribution, every source listed (0 when it gave no reward).
fn reward_distribution_view(rewards: &RewardCounters) -> RewardDistributionView {
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
    let mut by_source: BTreeMap<String, u64> = ["rule", "teacher", "human"]
        .into_iter()
        .map(|source| (source.to_owned(), 0))
        .collect();
    for (source, count) in &rewards.by_source {
        by_source.insert((*source).to_owned(), *count);
    }
    RewardDistributionView {
        count: rewards.count,
        verified: rewards.verified,
        unverified: rewards.count - rewards.verified,
        by_source,
        mean: rewards.mean(),
        min: rewards.min,
        max: rewards.max,
        buckets,
    }
}

fn ignored_view(ignored: Ignored) -> IgnoredView {
    IgnoredView {
        duplicate_steps: ignored.duplicate_steps,
        duplicate_sandbox_results: ignored.duplicate_sandbox_results,
        duplicate_rewards: ignored.duplicate_rewards,
        sandbox_results_without_step: ignored.sandbox_results_without_step,
        rewards_without_step: ignored.rewards_without_step,
        duplicate_rollouts: ignored.duplicate_rollouts,
        steps_without_rollout: ignored.steps_without_rollout,
    }
}
