//! `/v1/tasks/{task_id}/state` and `/v1/rollouts/{rollout_id}/state`: read a task's base agent
//! state or a rollout's, post an update (optionally fenced by a lease), and list a task's base
//! updates with their LSNs.
//!
//! A task with no update yet has the empty state (`lsn` 0): every task starts from it, so an
//! actor's first read needs no special case. A rollout starts from a copy of its task's base
//! state (or empty) and from then on changes only with its own updates.

use super::{
    check_bytes, check_task_id, decide_recorded, page_limit, page_of, settle_domain_reads,
    DomainApi, STATE_ITEMS_MAX, STATE_ITEM_BYTES_MAX,
};
use crate::domain::agent_state::{render, StateField, TrimAction, TrimReason, Trimmed};
use crate::domain::decide::{DomainCommand, Target};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiResult, AppState, SharedState};
use crate::projection::domain::agent_states::{AgentStates, TaskState};
use agentd_schemas::domain_api::{
    StateFieldName, StateHistoryEntry, StateHistoryResponse, StateUpdateFields, StateUpdateRequest,
    StateUpdateResponse, TaskStateView, TrimActionName, TrimReasonName, TrimmedView,
};
use agentd_schemas::events::{AgentState, StateForget, TaskStateUpdated};
use agentd_schemas::ErrorCode;
use agentd_schemas::{LeaseId, Lsn, RolloutId};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;
use serde::Deserialize;

/// Most updates one history page returns.
pub const HISTORY_PAGE_MAX: usize = 1000;

/// `GET /v1/tasks/{task_id}/state`.
#[utoipa::path(
    get, path = "/v1/tasks/{task_id}/state", tag = "tasks",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    responses(
        (status = 200, description = "The merged state (empty, `lsn` 0, for a task without updates)", body = agentd_schemas::domain_api::TaskStateView),
        (status = 422, description = "`invalid_request` or `string_too_long`: bad task id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStateView>> {
    check_task_id(&task_id)?;
    settle_domain_reads(&state).await?;
    let api = &state.domain;
    let states = api.projections.agent_states();
    Ok(Json(state_view(
        &task_id,
        None,
        states.task(&task_id),
        &api.state_limits.encoding,
    )))
}

/// `GET /v1/rollouts/{rollout_id}/state`.
#[utoipa::path(
    get, path = "/v1/rollouts/{rollout_id}/state", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`")),
    responses(
        (status = 200, description = "The rollout's merged state", body = agentd_schemas::domain_api::TaskStateView),
        (status = 404, description = "`not_found`: no such rollout", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show_rollout(
    State(state): State<SharedState>,
    Path(rollout_id): Path<RolloutId>,
) -> ApiResult<Json<TaskStateView>> {
    settle_domain_reads(&state).await?;
    let api = &state.domain;
    let task_id = api
        .projections
        .trajectories()
        .rollout(rollout_id)
        .map(|rollout| rollout.created.task_id.clone())
        .ok_or_else(|| ApiError::not_found(format!("rollout {rollout_id} not found")))?;
    let states = api.projections.agent_states();
    Ok(Json(state_view(
        &task_id,
        Some(rollout_id),
        states.rollout(rollout_id),
        &api.state_limits.encoding,
    )))
}

/// `POST /v1/rollouts/{rollout_id}/state`: merges the update into the rollout's state.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/state", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`")),
    request_body = agentd_schemas::domain_api::StateUpdateRequest,
    responses(
        (status = 200, description = "The merged state and what the merge trimmed", body = agentd_schemas::domain_api::StateUpdateResponse),
        (status = 404, description = "`not_found`: no such rollout", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, `too_many_items` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn update_rollout(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(rollout_id): Path<RolloutId>,
    ApiJson(request): ApiJson<StateUpdateRequest>,
) -> ApiResult<Json<StateUpdateResponse>> {
    update_into(&state, caller, Target::Rollout(rollout_id), request).await
}

async fn update_into(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    request: StateUpdateRequest,
) -> ApiResult<Json<StateUpdateResponse>> {
    let fields = request.fields();
    check_update("", &fields)?;
    let (update, forget) = fields.into_parts();
    let event = state_event(&state.domain, update, forget, request.lease_id);
    let command = DomainCommand::UpdateState {
        target,
        update: event,
    };
    let (lsn, task_id, rollout_id) =
        decide_recorded(state, caller, command, "recording a state update").await?;
    let states = state.domain.projections.agent_states();
    Ok(Json(update_answer(
        &states,
        &task_id,
        rollout_id,
        lsn,
        &state.domain,
    )?))
}

/// `POST /v1/tasks/{task_id}/state`: merges the update and answers with the merged state.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/state", tag = "tasks",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    request_body = agentd_schemas::domain_api::StateUpdateRequest,
    responses(
        (status = 200, description = "The merged state and what the merge trimmed", body = agentd_schemas::domain_api::StateUpdateResponse),
        (status = 409, description = "`lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, `too_many_items` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn update(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(task_id): Path<String>,
    ApiJson(request): ApiJson<StateUpdateRequest>,
) -> ApiResult<Json<StateUpdateResponse>> {
    check_task_id(&task_id)?;
    update_into(&state, caller, Target::Task(task_id), request).await
}

/// Query of `GET /v1/tasks/{task_id}/state/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only updates after this LSN.
    #[serde(default)]
    after: Option<u64>,
    /// At most this many (default and maximum [`HISTORY_PAGE_MAX`]).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /v1/tasks/{task_id}/state/history`: every update in log order, with its LSN.
#[utoipa::path(
    get, path = "/v1/tasks/{task_id}/state/history", tag = "tasks",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), HistoryQuery),
    responses(
        (status = 200, description = "Updates in log order", body = agentd_schemas::domain_api::StateHistoryResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn history(
    State(state): State<SharedState>,
    Path(task_id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<StateHistoryResponse>> {
    check_task_id(&task_id)?;
    let limit = page_limit(query.limit, HISTORY_PAGE_MAX, HISTORY_PAGE_MAX)?;
    let after = Lsn(query.after.unwrap_or(0));
    settle_domain_reads(&state).await?;
    let states = state.domain.projections.agent_states();
    let updates = states
        .task(&task_id)
        .into_iter()
        .flat_map(|task| task.updates.iter())
        .filter(|update| update.lsn > after)
        .map(|update| StateHistoryEntry {
            lsn: update.lsn,
            ts_ms: update.ts_ms,
            actor: update.actor.clone(),
            lease_id: update.lease_id,
            update: update.update.clone(),
            forget: (!update.forget.is_empty()).then(|| update.forget.clone()),
            history_max: update.limits.history_max,
            item_chars_max: update.limits.item_chars_max,
            token_budget: update.limits.token_budget,
            encoding: update.limits.encoding.clone(),
            trimmed: trimmed_views(&update.trimmed),
            tokens: update.tokens as u64,
        });
    let (page, next_after) = page_of(updates, limit, |entry| entry.lsn);
    Ok(Json(StateHistoryResponse {
        task_id,
        updates: page,
        next_after,
    }))
}

/// Checks the bounds of an update; `prefix` names where it sits (`state_update.` in a step).
pub(super) fn check_update(prefix: &str, update: &StateUpdateFields) -> Result<(), ApiError> {
    for (name, items) in [
        ("goals", &update.goals),
        ("constraints", &update.constraints),
        ("decisions", &update.decisions),
        ("hypotheses", &update.hypotheses),
        ("history", &update.history),
        ("open_issues", &update.open_issues),
    ] {
        check_items(&format!("{prefix}{name}"), items)?;
    }
    if let Some(focus) = &update.next_focus {
        check_bytes(&format!("{prefix}next_focus"), focus, STATE_ITEM_BYTES_MAX)?;
    }
    if let Some(forget) = &update.forget {
        let remove = forget.remove.clone().unwrap_or_default();
        for (name, items) in [
            ("remove.goals", &remove.goals),
            ("remove.constraints", &remove.constraints),
            ("remove.decisions", &remove.decisions),
            ("remove.hypotheses", &remove.hypotheses),
            ("remove.history", &remove.history),
            ("remove.open_issues", &remove.open_issues),
            ("resolve", &forget.resolve),
            ("retract", &forget.retract),
        ] {
            check_items(&format!("{prefix}forget.{name}"), items)?;
        }
    }
    Ok(())
}

/// At most [`STATE_ITEMS_MAX`] items of at most [`STATE_ITEM_BYTES_MAX`] bytes.
fn check_items(field: &str, items: &[String]) -> Result<(), ApiError> {
    if items.len() > STATE_ITEMS_MAX {
        return Err(ApiError::over_limit(
            ErrorCode::TooManyItems,
            format!(
                "{field}: {} items is over the limit of {STATE_ITEMS_MAX}",
                items.len()
            ),
        ));
    }
    for (position, item) in items.iter().enumerate() {
        check_bytes(&format!("{field}[{position}]"), item, STATE_ITEM_BYTES_MAX)?;
    }
    Ok(())
}

/// The event for an update, with the configured limits written into it; the sequencer fills in
/// its task and rollout.
pub(super) fn state_event(
    api: &DomainApi,
    update: AgentState,
    forget: StateForget,
    lease_id: Option<LeaseId>,
) -> TaskStateUpdated {
    TaskStateUpdated {
        task_id: String::new(),
        rollout_id: None,
        update,
        forget,
        limits: api.state_limits.clone(),
        lease_id,
    }
}

/// The answer to an update logged at `lsn`: what its merge trimmed, and the state now.
pub(super) fn update_answer(
    states: &AgentStates,
    task_id: &str,
    rollout_id: Option<RolloutId>,
    lsn: Lsn,
    api: &DomainApi,
) -> Result<StateUpdateResponse, ApiError> {
    let task = states.of(task_id, rollout_id);
    let trimmed = task
        .and_then(|task| task.updates.iter().rev().find(|update| update.lsn == lsn))
        .map(|update| trimmed_views(&update.trimmed))
        .ok_or_else(|| {
            ApiError::internal(
                "reading a state update",
                format!("the update of {task_id} at lsn {lsn} is missing after it was applied"),
            )
        })?;
    Ok(StateUpdateResponse {
        update_lsn: lsn,
        trimmed,
        state: state_view(task_id, rollout_id, task, &api.state_limits.encoding),
    })
}

/// A task's or rollout's state as the API shows it; the empty state without updates.
pub(super) fn state_view(
    task_id: &str,
    rollout_id: Option<RolloutId>,
    task: Option<&TaskState>,
    default_encoding: &str,
) -> TaskStateView {
    match task {
        Some(task) => TaskStateView {
            task_id: task_id.to_owned(),
            rollout_id,
            state: AgentState::clone(&task.state),
            rendered: render(&task.state),
            tokens: task.tokens as u64,
            encoding: task.encoding.clone(),
            lsn: task.lsn,
            updates: task.updates.len() as u64,
        },
        None => TaskStateView {
            task_id: task_id.to_owned(),
            rollout_id,
            state: AgentState::default(),
            rendered: String::new(),
            tokens: 0,
            encoding: default_encoding.to_owned(),
            lsn: Lsn::ZERO,
            updates: 0,
        },
    }
}

fn trimmed_views(trimmed: &[Trimmed]) -> Vec<TrimmedView> {
    trimmed
        .iter()
        .map(|trimmed| TrimmedView {
            field: match trimmed.field {
                StateField::Goals => StateFieldName::Goals,
                StateField::Constraints => StateFieldName::Constraints,
                StateField::Decisions => StateFieldName::Decisions,
                StateField::Hypotheses => StateFieldName::Hypotheses,
                StateField::History => StateFieldName::History,
                StateField::OpenIssues => StateFieldName::OpenIssues,
                StateField::NextFocus => StateFieldName::NextFocus,
            },
            item: trimmed.item.clone(),
            reason: match trimmed.reason {
                TrimReason::ItemCharsCap => TrimReasonName::ItemCharsCap,
                TrimReason::HistoryCap => TrimReasonName::HistoryCap,
                TrimReason::TokenBudget => TrimReasonName::TokenBudget,
                TrimReason::Forgotten => TrimReasonName::Forgotten,
                TrimReason::Resolved => TrimReasonName::Resolved,
                TrimReason::Retracted => TrimReasonName::Retracted,
                TrimReason::Cleared => TrimReasonName::Cleared,
            },
            action: match trimmed.action {
                TrimAction::Removed => TrimActionName::Removed,
                TrimAction::Shortened => TrimActionName::Shortened,
                TrimAction::Moved => TrimActionName::Moved,
            },
            chars_before: trimmed.chars_before as u64,
        })
        .collect()
}
