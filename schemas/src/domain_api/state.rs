//! Agent state: an update (with what it forgets), the merged state, what a merge trimmed, and
//! the history of updates.

use super::rules::StateItems;
use crate::events::{AgentState, AgentStateLists, StateForget};
use crate::ids::{LeaseId, Lsn, RolloutId};
use serde::{Deserialize, Serialize};

/// `POST /v1/tasks/{task_id}/state`: the update's fields at top level, each optional, plus an
/// optional lease that must still be held.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateUpdateRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub goals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub decisions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub hypotheses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub history: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub open_issues: Vec<String>,
    /// At most 4096 bytes of UTF-8 (`maxLength` counts characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub next_focus: Option<String>,
    /// What the update takes out before adding its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<ForgetRequest>,
    /// Refused with 409 `lease_lost` when this lease is no longer held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
}

/// What an update takes out of the state, applied before its additions: items removed by value
/// from any list, open issues resolved (moved to `decisions`), hypotheses retracted, and the
/// focus cleared.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<StateListsRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub resolve: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub retract: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_next_focus: bool,
}

/// Items per list field (strict copy of [`AgentStateLists`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateListsRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub goals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub decisions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub hypotheses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub history: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub open_issues: Vec<String>,
}

impl From<ForgetRequest> for StateForget {
    fn from(request: ForgetRequest) -> Self {
        let remove = request.remove.unwrap_or_default();
        StateForget {
            remove: AgentStateLists {
                goals: remove.goals,
                constraints: remove.constraints,
                decisions: remove.decisions,
                hypotheses: remove.hypotheses,
                history: remove.history,
                open_issues: remove.open_issues,
            },
            resolve: request.resolve,
            retract: request.retract,
            clear_next_focus: request.clear_next_focus,
        }
    }
}

/// The update fields of a step's `state_update` (the same as [`StateUpdateRequest`] without
/// the lease, which the step carries).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateUpdateFields {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub goals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub constraints: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub decisions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub hypotheses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub history: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = StateItems)]
    pub open_issues: Vec<String>,
    /// At most 4096 bytes of UTF-8 (`maxLength` counts characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub next_focus: Option<String>,
    /// What the update takes out before adding its items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<ForgetRequest>,
}

impl StateUpdateRequest {
    /// The update without the lease.
    pub fn fields(&self) -> StateUpdateFields {
        StateUpdateFields {
            goals: self.goals.clone(),
            constraints: self.constraints.clone(),
            decisions: self.decisions.clone(),
            hypotheses: self.hypotheses.clone(),
            history: self.history.clone(),
            open_issues: self.open_issues.clone(),
            next_focus: self.next_focus.clone(),
            forget: self.forget.clone(),
        }
    }
}

impl StateUpdateFields {
    /// The additions and what is forgotten, as the event carries them.
    pub fn into_parts(self) -> (AgentState, StateForget) {
        let forget = self
            .forget
            .clone()
            .map(StateForget::from)
            .unwrap_or_default();
        (AgentState::from(self), forget)
    }
}

impl From<StateUpdateFields> for AgentState {
    fn from(fields: StateUpdateFields) -> Self {
        AgentState {
            goals: fields.goals,
            constraints: fields.constraints,
            decisions: fields.decisions,
            hypotheses: fields.hypotheses,
            history: fields.history,
            open_issues: fields.open_issues,
            next_focus: fields.next_focus,
        }
    }
}

impl From<AgentState> for StateUpdateFields {
    /// The additions of an update (a step's recorded `state_update` carries no `forget`).
    fn from(state: AgentState) -> Self {
        StateUpdateFields {
            goals: state.goals,
            constraints: state.constraints,
            decisions: state.decisions,
            hypotheses: state.hypotheses,
            history: state.history,
            open_issues: state.open_issues,
            next_focus: state.next_focus,
            forget: None,
        }
    }
}

/// `GET /v1/tasks/{task_id}/state`. A task with no update yet has the empty state, `lsn` 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskStateView {
    pub task_id: String,
    /// Set for a rollout's state; absent for the task's base state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<RolloutId>,
    pub state: AgentState,
    /// The text block for prompts (`render(state)`).
    pub rendered: String,
    /// Exact token count of `rendered` in `encoding`.
    pub tokens: u64,
    pub encoding: String,
    /// The frame of the last update merged into this state.
    pub lsn: Lsn,
    /// Updates merged so far.
    pub updates: u64,
}

/// `POST /v1/tasks/{task_id}/state` answers with the merged state and what the merge trimmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateUpdateResponse {
    /// The frame that recorded this update.
    pub update_lsn: Lsn,
    /// Items this update's merge removed or shortened, in order.
    pub trimmed: Vec<TrimmedView>,
    /// The state after the merge. Its `lsn` equals `update_lsn` unless another update of the
    /// same task was merged right after this one.
    #[serde(flatten)]
    pub state: TaskStateView,
}

/// One item a merge removed or shortened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrimmedView {
    pub field: StateFieldName,
    /// For a removal, the removed text; for a shortening, the text kept.
    pub item: String,
    pub reason: TrimReasonName,
    pub action: TrimActionName,
    /// The item's length in characters before the trim.
    pub chars_before: u64,
}

/// A field of the agent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFieldName {
    Goals,
    Constraints,
    Decisions,
    Hypotheses,
    History,
    OpenIssues,
    NextFocus,
}

/// The limit that caused a trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrimReasonName {
    ItemCharsCap,
    HistoryCap,
    TokenBudget,
    Forgotten,
    Resolved,
    Retracted,
    Cleared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrimActionName {
    Removed,
    Shortened,
    Moved,
}

/// `GET /v1/tasks/{task_id}/state/history?after=&limit=`: updates in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateHistoryResponse {
    pub task_id: String,
    pub updates: Vec<StateHistoryEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<Lsn>,
}

/// One merged update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateHistoryEntry {
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// The token that wrote the update (absent without access control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    /// The update as sent.
    pub update: AgentState,
    /// What the update took out, when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget: Option<StateForget>,
    /// The limits it was merged with (recorded in the event).
    pub history_max: u32,
    pub item_chars_max: u32,
    pub token_budget: u32,
    pub encoding: String,
    pub trimmed: Vec<TrimmedView>,
    /// Tokens of the rendered state after this update.
    pub tokens: u64,
}
