//! Rollouts and groups: create a rollout of a task (or resume the one its job already has), read
//! a rollout with its steps, list a task's rollouts, and read a group with each rollout's
//! group-relative advantage.

use super::trajectories::{page, TrajectoryQuery};
use super::{check_name, check_sampling, check_task_id, decide_and_apply, settle_domain_reads};
use crate::domain::decide::{CreateRollout, DomainCommand, DomainReply};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiResult, SharedState};
use crate::projection::domain::trajectories::RolloutSummary;
use agentd_schemas::domain_api::{
    CreateRolloutRequest, CreateRolloutResponse, GroupResponse, RolloutSummary as SummaryView,
    RolloutView, TaskRolloutsResponse,
};
use agentd_schemas::RolloutId;
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::Json;

/// `POST /v1/tasks/{task_id}/rollouts`: 201 with a new rollout, or 200 with the rollout the job
/// already has (a retried attempt resumes it at `next_step`).
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/rollouts", tag = "rollouts",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    request_body = agentd_schemas::domain_api::CreateRolloutRequest,
    responses(
        (status = 201, description = "Created", body = agentd_schemas::domain_api::CreateRolloutResponse),
        (status = 200, description = "The job's existing rollout, to resume", body = agentd_schemas::domain_api::CreateRolloutResponse),
        (status = 404, description = "`not_found`: the job or lease does not exist", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (the group samples another task; the job runs a rollout of another task) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(task_id): Path<String>,
    ApiJson(request): ApiJson<CreateRolloutRequest>,
) -> ApiResult<(StatusCode, Json<CreateRolloutResponse>)> {
    check_task_id(&task_id)?;
    check_name("model", &request.model)?;
    check_name("policy_version", &request.policy_version)?;
    if let Some(sampling) = &request.sampling {
        check_sampling(sampling)?;
    }
    let command = DomainCommand::CreateRollout(CreateRollout {
        task_id,
        group: request.group,
        model: request.model,
        policy_version: request.policy_version,
        sampling: request.sampling.unwrap_or_default().into(),
        job_id: request.job_id,
        lease_id: request.lease_id,
        state_from: request.state_from.unwrap_or_default(),
    });
    let (lsn, reply) = decide_and_apply(&state, caller.actor(), command).await?;
    let DomainReply::Rollout(answer) = reply else {
        return Err(ApiError::internal(
            "creating a rollout",
            format!("unexpected decision {reply:?}"),
        ));
    };
    let created_lsn = answer.created_lsn.or(lsn).unwrap_or_default();
    let status = match answer.created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((
        status,
        Json(CreateRolloutResponse {
            rollout_id: answer.rollout_id,
            task_id: answer.task_id,
            group: answer.group,
            lsn: created_lsn,
            created: answer.created,
            steps: answer.steps,
            next_step: answer.next_step,
        }),
    ))
}

/// `GET /v1/tasks/{task_id}/rollouts`.
#[utoipa::path(
    get, path = "/v1/tasks/{task_id}/rollouts", tag = "rollouts",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    responses(
        (status = 200, description = "The task's rollouts (empty for an unknown task)", body = agentd_schemas::domain_api::TaskRolloutsResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskRolloutsResponse>> {
    check_task_id(&task_id)?;
    settle_domain_reads(&state).await?;
    let trajectories = state.domain.projections.trajectories();
    // Each group is scored once, however many of its rollouts the task lists.
    let mut scores = std::collections::HashMap::new();
    let rollouts = trajectories
        .task_rollouts(&task_id)
        .into_iter()
        .map(|summary| {
            let advantage = summary.group.as_deref().and_then(|group| {
                let scores = scores
                    .entry(group.to_owned())
                    .or_insert_with(|| trajectories.group(group));
                scores.as_ref()?.advantage_of(summary.rollout_id?)
            });
            summary_view(summary, advantage)
        })
        .collect();
    Ok(Json(TaskRolloutsResponse { task_id, rollouts }))
}

/// `GET /v1/rollouts/{rollout_id}`: the rollout and a page of its steps.
#[utoipa::path(
    get, path = "/v1/rollouts/{rollout_id}", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`"), TrajectoryQuery),
    responses(
        (status = 200, description = "The rollout with its steps in step order", body = agentd_schemas::domain_api::RolloutView),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<SharedState>,
    Path(rollout_id): Path<RolloutId>,
    ApiQuery(query): ApiQuery<TrajectoryQuery>,
) -> ApiResult<Json<RolloutView>> {
    let limit = query.limit()?;
    settle_domain_reads(&state).await?;
    let trajectories = state.domain.projections.trajectories();
    let rollout = trajectories
        .rollout(rollout_id)
        .ok_or_else(|| ApiError::not_found(format!("rollout {rollout_id} not found")))?;
    let steps = rollout.steps.values().map(|entry| &**entry);
    let (steps, next_after) = page(steps, query.after, limit);
    let created = &rollout.created;
    Ok(Json(RolloutView {
        rollout_id,
        task_id: created.task_id.clone(),
        group: created.group.clone(),
        model: created.model.clone(),
        policy_version: created.policy_version.clone(),
        sampling: created.sampling.clone(),
        job_id: created.job_id,
        lease_id: created.lease_id,
        attempt: created.attempt,
        worker_id: created.worker_id.clone(),
        state_from: created.state_from,
        lsn: rollout.lsn,
        ts_ms: rollout.ts_ms,
        reward: rollout.reward,
        steps,
        next_after,
    }))
}

/// `GET /v1/groups/{group}`.
#[utoipa::path(
    get, path = "/v1/groups/{group}", tag = "rollouts",
    params(("group" = String, Path, description = "Group name")),
    responses(
        (status = 200, description = "The group's rollouts with their advantages", body = agentd_schemas::domain_api::GroupResponse),
        (status = 404, description = "`not_found`: no rollout names this group", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn group(
    State(state): State<SharedState>,
    Path(group): Path<String>,
) -> ApiResult<Json<GroupResponse>> {
    settle_domain_reads(&state).await?;
    let scores = state
        .domain
        .projections
        .trajectories()
        .group(&group)
        .ok_or_else(|| ApiError::not_found(format!("group {group} not found")))?;
    Ok(Json(GroupResponse {
        group,
        mean: scores.mean,
        std: scores.std,
        scored: scores.scored,
        rollouts: scores
            .rollouts
            .into_iter()
            .map(|(summary, advantage)| summary_view(summary, advantage))
            .collect(),
    }))
}

fn summary_view(summary: RolloutSummary, advantage: Option<f64>) -> SummaryView {
    SummaryView {
        rollout_id: summary.rollout_id,
        task_id: summary.task_id,
        group: summary.group,
        model: summary.model,
        policy_version: summary.policy_version,
        job_id: summary.job_id,
        steps: summary.steps,
        rewarded: summary.rewarded,
        reward: summary.reward,
        advantage,
    }
}
