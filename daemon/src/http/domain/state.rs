//! `/v1/tasks/{task_id}/state`: read a task's agent state, post an update (optionally fenced by
//! a lease), and list every update with its LSN.
//!
//! A task with no update yet has the empty state (`lsn` 0): every task starts from it, so an
//! actor's first read needs no special case.

use super::{
    append_and_apply, check_bytes, check_task_id, DomainApi, STATE_ITEMS_MAX, STATE_ITEM_BYTES_MAX,
};
use crate::domain::agent_state::{render, StateField, TrimAction, TrimReason, Trimmed};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::{ApiResult, AppState};
use crate::projection::domain::agent_states::{AgentStates, TaskState};
use agentd_schemas::domain_api::{
    StateFieldName, StateHistoryEntry, StateHistoryResponse, StateUpdateFields, StateUpdateRequest,
    StateUpdateResponse, TaskStateView, TrimActionName, TrimReasonName, TrimmedView,
};
use agentd_schemas::events::{AgentState, Event, TaskStateUpdated};
use agentd_schemas::{LeaseId, Lsn};
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
    params(("task_id" = String, Path, description = "Task id (1 to 256 characters, no control characters)")),
    responses(
        (status = 200, description = "The merged state (empty, `lsn` 0, for a task without updates)", body = agentd_schemas::domain_api::TaskStateView),
        (status = 422, description = "`invalid_request` or `string_too_long`: bad task id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<TaskStateView>> {
    check_task_id(&task_id)?;
    state.settle_reads().await;
    let api = &state.domain;
    let states = api.projections.agent_states();
    Ok(Json(state_view(
        &task_id,
        states.task(&task_id),
        &api.state_limits.encoding,
    )))
}

/// `POST /v1/tasks/{task_id}/state`: merges the update and answers with the merged state.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/state", tag = "tasks",
    params(("task_id" = String, Path, description = "Task id")),
    request_body = agentd_schemas::domain_api::StateUpdateRequest,
    responses(
        (status = 200, description = "The merged state and what the merge trimmed", body = agentd_schemas::domain_api::StateUpdateResponse),
        (status = 409, description = "`lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, `too_many_items` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: CallerExt,
    Path(task_id): Path<String>,
    ApiJson(request): ApiJson<StateUpdateRequest>,
) -> ApiResult<Json<StateUpdateResponse>> {
    check_task_id(&task_id)?;
    let fields = request.fields();
    check_update("", &fields)?;
    let lease_id = request.lease_id;
    let event = state_event(&state.domain, &task_id, fields.into(), lease_id);
    let lsn = append_and_apply(&state, caller.actor(), lease_id, vec![event]).await?;
    let states = state.domain.projections.agent_states();
    Ok(Json(update_answer(&states, &task_id, lsn, &state.domain)?))
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
    params(("task_id" = String, Path, description = "Task id"), HistoryQuery),
    responses(
        (status = 200, description = "Updates in log order", body = agentd_schemas::domain_api::StateHistoryResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<StateHistoryResponse>> {
    check_task_id(&task_id)?;
    let limit = query.limit.unwrap_or(HISTORY_PAGE_MAX);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(ApiError::invalid(format!(
            "limit: must be between 1 and {HISTORY_PAGE_MAX}"
        )));
    }
    let after = Lsn(query.after.unwrap_or(0));
    state.settle_reads().await;
    let states = state.domain.projections.agent_states();
    let mut page: Vec<StateHistoryEntry> = states
        .task(&task_id)
        .into_iter()
        .flat_map(|task| task.updates.iter())
        .filter(|update| update.lsn > after)
        .take(limit + 1)
        .map(|update| StateHistoryEntry {
            lsn: update.lsn,
            ts_ms: update.ts_ms,
            actor: update.actor.clone(),
            lease_id: update.lease_id,
            update: update.update.clone(),
            history_max: update.limits.history_max,
            item_chars_max: update.limits.item_chars_max,
            token_budget: update.limits.token_budget,
            encoding: update.limits.encoding.clone(),
            trimmed: trimmed_views(&update.trimmed),
            tokens: update.tokens as u64,
        })
        .collect();
    let next_after = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|entry| entry.lsn)
    } else {
        None
    };
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
        if items.len() > STATE_ITEMS_MAX {
            return Err(ApiError::over_limit(
                "too_many_items",
                format!(
                    "{prefix}{name}: {} items is over the limit of {STATE_ITEMS_MAX}",
                    items.len()
                ),
            ));
        }
        for (position, item) in items.iter().enumerate() {
            check_bytes(
                &format!("{prefix}{name}[{position}]"),
                item,
                STATE_ITEM_BYTES_MAX,
            )?;
        }
    }
    if let Some(focus) = &update.next_focus {
        check_bytes(&format!("{prefix}next_focus"), focus, STATE_ITEM_BYTES_MAX)?;
    }
    Ok(())
}

/// The event for an update, with the configured limits written into it.
pub(super) fn state_event(
    api: &DomainApi,
    task_id: &str,
    update: AgentState,
    lease_id: Option<LeaseId>,
) -> Event {
    Event::TaskStateUpdated(TaskStateUpdated {
        task_id: task_id.to_owned(),
        update,
        limits: api.state_limits.clone(),
        lease_id,
    })
}

/// The answer to an update logged at `lsn`: what its merge trimmed, and the state now.
pub(super) fn update_answer(
    states: &AgentStates,
    task_id: &str,
    lsn: Lsn,
    api: &DomainApi,
) -> Result<StateUpdateResponse, ApiError> {
    let task = states.task(task_id);
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
        state: state_view(task_id, task, &api.state_limits.encoding),
    })
}

/// A task's state as the API shows it; the empty state for a task without updates.
pub(super) fn state_view(
    task_id: &str,
    task: Option<&TaskState>,
    default_encoding: &str,
) -> TaskStateView {
    match task {
        Some(task) => TaskStateView {
            task_id: task_id.to_owned(),
            state: AgentState::clone(&task.state),
            rendered: render(&task.state),
            tokens: task.tokens as u64,
            encoding: task.encoding.clone(),
            lsn: task.lsn,
            updates: task.updates.len() as u64,
        },
        None => TaskStateView {
            task_id: task_id.to_owned(),
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
            },
            action: match trimmed.action {
                TrimAction::Removed => TrimActionName::Removed,
                TrimAction::Shortened => TrimActionName::Shortened,
            },
            chars_before: trimmed.chars_before as u64,
        })
        .collect()
}
