//! HTTP bodies of the domain routes: datasets and their processed splits, per-task agent state,
//! trajectory steps, sandbox results and rewards (`docs/domain.md`, "HTTP API").
//!
//! Requests reject unknown fields, like every other request of the API. Where an event type of
//! [`crate::events`] is also the natural answer shape (a dataset's meta, an agent state, an
//! action), the answer reuses it, so the log and the API cannot drift apart; requests that carry
//! such a shape have their own strict copy, because the event types accept unknown fields (they
//! must keep decoding records written by newer builds).

use crate::api::{no_control_pattern, not_blank_pattern, schema_rule, CONTROL_CLASS, SPACE_CLASS};
use crate::events::{
    Action, AgentState, AgentStateLists, DatasetMeta, OutputFormatError, RewardSource, Sampling,
    SandboxOutcome, StateForget, StateFrom,
};
use crate::ids::{JobId, LeaseId, Lsn, RolloutId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

// ---------------------------------------------------------------------------------------------
// Datasets

/// `POST /v1/datasets` answers with the dataset after registration. The request body is the
/// dataset's `_meta.json` itself (validated field by field by the daemon).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterDatasetResponse {
    /// False when the same source and version were already registered with identical meta.
    pub created: bool,
    /// The frame that recorded the registration; absent when nothing was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<Lsn>,
    pub dataset: DatasetView,
}

/// A dataset as `GET /v1/datasets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetView {
    pub source: String,
    pub version: String,
    /// The registration; `None` only for records that arrived for an unregistered dataset,
    /// which the API refuses, so in practice always present.
    pub meta: Option<DatasetMeta>,
    /// Distinct record positions received so far.
    pub records_received: u64,
    /// `num_records` of the meta.
    pub records_expected: Option<u64>,
    /// Whether exactly `records_expected` positions were received.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetListResponse {
    pub datasets: Vec<DatasetView>,
}

/// `POST /v1/datasets/{source}/{version}/records`: one batch of normalized records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRecordsRequest {
    /// The records, each a JSON object `{"instruction","pre","post","language","tags"?,
    /// "metadata"?}`, validated one by one (an invalid record is reported, not refused); at
    /// most `[datasets] records_per_batch_max` (default 10000).
    #[schema(max_items = 10000)]
    pub records: Vec<Value>,
    /// Position of the first record in the dataset (0-based); default 0. Positions already
    /// received are skipped and counted as `resent`, so resending a batch is harmless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    pub first_index: Option<u64>,
}

/// What happened to one batch. `received = accepted + resent + rejected` and
/// `accepted = kept + duplicate + over_token_cap + unknown_language`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestRecordsResponse {
    pub source: String,
    pub version: String,
    pub first_index: u64,
    /// Records in the request.
    pub received: u64,
    /// Valid records at positions not received before: written to the log and processed.
    pub accepted: u64,
    /// Valid records at positions already received: ignored (idempotent re-ingest).
    pub resent: u64,
    /// Accepted records that duplicate a record kept earlier (same normalized instruction and
    /// code), in any dataset.
    pub duplicate: u64,
    /// Accepted records over the token cap, excluded from the splits.
    pub over_token_cap: u64,
    /// Accepted records whose language is not known, excluded from the splits.
    pub unknown_language: u64,
    /// Accepted records that made it into a split.
    pub kept: u64,
    /// Invalid records: skipped, not written; each is listed in `rejected_records`.
    pub rejected: u64,
    pub rejected_records: Vec<RejectedRecord>,
    /// The frame that recorded the batch; absent when nothing was written (every record was
    /// rejected, or the batch was empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<Lsn>,
    /// The dataset's progress after this batch.
    pub dataset: DatasetView,
}

/// A record refused by validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RejectedRecord {
    /// Its position in the dataset (`first_index` + its place in the batch).
    pub index: u64,
    /// The offending field (`language`, `tags[3]`, or `$` for the record itself).
    pub field: String,
    pub message: String,
}

/// `GET /v1/datasets/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetStatsResponse {
    /// The encoding of every token count below.
    pub encoding: String,
    /// Records with more tokens than this were excluded.
    pub token_cap: u64,
    /// All datasets together.
    pub total: RecordCountsView,
    /// One entry per dataset, in source, version order.
    pub datasets: Vec<DatasetCountsView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetCountsView {
    pub source: String,
    pub version: String,
    #[serde(flatten)]
    pub counts: RecordCountsView,
}

/// What happened to received records: `records = kept + duplicates + over_token_cap +
/// unknown_language`; the per-language and per-split counts are of kept records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordCountsView {
    /// Distinct record positions received.
    pub records: u64,
    pub kept: u64,
    pub duplicates: u64,
    pub over_token_cap: u64,
    pub unknown_language: u64,
    /// Records received again at a position already received (ignored).
    pub resent: u64,
    /// Kept records per canonical language name.
    pub languages: BTreeMap<String, u64>,
    /// Kept records per split.
    pub splits: SplitCountsView,
    /// Kept records per language and split.
    pub language_splits: BTreeMap<String, SplitCountsView>,
    /// Sum of the token counts of kept records.
    pub total_tokens: u64,
    /// Mean token count of kept records; `None` when none were kept.
    pub avg_tokens: Option<f64>,
    /// Nearest-rank 95th percentile token count of kept records.
    pub p95_tokens: Option<u64>,
    /// Unknown language names (trimmed, lower case) and how often each appeared.
    pub unknown_language_names: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SplitCountsView {
    pub train: u64,
    pub dev: u64,
    pub test: u64,
}

// ---------------------------------------------------------------------------------------------
// Agent state

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

// ---------------------------------------------------------------------------------------------
// Trajectories

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

// ---------------------------------------------------------------------------------------------
// Rollouts

/// `POST /v1/tasks/{task_id}/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutRequest {
    #[schema(value_type = NonBlankName)]
    pub model: String,
    #[schema(value_type = NonBlankName)]
    pub policy_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingRequest>,
    /// The set of rollouts sampled together for group scoring (1 to 128 characters, not
    /// starting with `ro_`); default: a new group of one, named after the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GroupName>)]
    pub group: Option<String>,
    /// The episode job this rollout runs under; needs `lease_id`, a held lease of it (the lease
    /// alone names the job too). A job has at most one rollout: creating again under a lease of
    /// the same job (a retried attempt) answers the existing one, to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Fences the creation (and names the job when `job_id` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    /// `task` (default): start from the task's base agent state; `empty`: from nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_from: Option<StateFrom>,
}

/// Answer to `POST /v1/tasks/{task_id}/rollouts`: 201 when created, 200 when the job already
/// had a rollout (`created: false`; continue at `next_step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateRolloutResponse {
    pub rollout_id: RolloutId,
    pub task_id: String,
    pub group: String,
    /// The record that created the rollout.
    pub lsn: Lsn,
    pub created: bool,
    /// Steps already recorded (0 for a new rollout).
    pub steps: u64,
    /// The step index to record next: one past the highest recorded, 0 for none.
    pub next_step: u32,
}

/// `GET /v1/rollouts/{rollout_id}`: the rollout and a page of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub rollout_id: RolloutId,
    pub task_id: String,
    pub group: String,
    pub model: String,
    pub policy_version: String,
    pub sampling: Sampling,
    pub job_id: Option<JobId>,
    pub lease_id: Option<LeaseId>,
    pub attempt: Option<u32>,
    pub worker_id: Option<String>,
    pub state_from: StateFrom,
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// Sum of the rollout's step rewards.
    pub reward: f64,
    pub steps: Vec<TrajectoryStep>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u32>,
}

/// One rollout in a task's or a group's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutSummary {
    /// `null` for the task's default rollout (steps recorded through the task-level routes).
    pub rollout_id: Option<RolloutId>,
    pub task_id: String,
    pub group: Option<String>,
    pub model: String,
    pub policy_version: String,
    pub job_id: Option<JobId>,
    pub steps: u64,
    /// Steps with a reward.
    pub rewarded: u64,
    /// Sum of the step rewards (0 without any).
    pub reward: f64,
    /// In a group: `(reward - group mean) / group standard deviation`, 0 when that is 0; `null`
    /// for a rollout without a rewarded step yet (not scored) and for the default rollout.
    pub advantage: Option<f64>,
}

/// `GET /v1/tasks/{task_id}/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRolloutsResponse {
    pub task_id: String,
    /// The default rollout first (when it has steps), then rollouts in creation order.
    pub rollouts: Vec<RolloutSummary>,
}

/// `GET /v1/groups/{group}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupResponse {
    pub group: String,
    /// Mean of the scored rollouts' rewards (a rollout is scored once a step has a reward).
    pub mean: f64,
    /// Sample standard deviation (n - 1) of those rewards, as GRPO computes it; 0 for fewer than
    /// two.
    pub std: f64,
    /// Rollouts with at least one rewarded step; only they have an advantage.
    pub scored: u64,
    /// In creation order, each with its advantage.
    pub rollouts: Vec<RolloutSummary>,
}

/// `GET /v1/settings`: the training settings in force, as the log recorded them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingsResponse {
    /// The `[rewards]` and `[training]` settings last recorded (`training_settings_recorded`);
    /// null only in a log no daemon of this version has started on yet.
    pub training: Option<crate::events::TrainingSettings>,
    /// The LSN of the record that holds them.
    #[schema(value_type = Option<u64>)]
    pub training_lsn: Option<crate::Lsn>,
}

// ---------------------------------------------------------------------------------------------
// Rules of request fields (see `crate::api`'s section of the same name)

/// Longest task id, in characters.
pub const TASK_ID_CHARS_MAX: usize = 256;
/// Longest model name, policy version, action language or group, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Most items of one list field of a state update.
pub const STATE_ITEMS_MAX: usize = 64;
/// Longest item of a state update (and `next_focus`), in bytes.
pub const STATE_ITEM_BYTES_MAX: usize = 4096;
/// Longest ast-grep pattern, rewrite or YAML rule of an action, in bytes.
pub const ACTION_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Most named components of a reward.
pub const REWARD_COMPONENTS_MAX: usize = 32;
/// Longest reward component name, in characters.
pub const COMPONENT_NAME_CHARS_MAX: usize = 64;
/// Largest `first_index` of an ingest batch: positions stay far from `u64::MAX`, so a batch
/// can never end past the largest position (and stay exact as JSON numbers of 64-bit signed
/// integers).
pub const FIRST_INDEX_MAX: u64 = i64::MAX as u64;

schema_rule!(
    /// A task id: 1 to [`TASK_ID_CHARS_MAX`] characters, no control characters.
    TaskIdText,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A task id: 1 to 256 characters, no control characters"))
        .min_length(Some(1))
        .max_length(Some(TASK_ID_CHARS_MAX))
        .pattern(Some(no_control_pattern()))
);

schema_rule!(
    /// A model name, policy version or action language: not blank, at most
    /// [`NAME_CHARS_MAX`] characters.
    NonBlankName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Not blank, at most 128 characters"))
        .max_length(Some(NAME_CHARS_MAX))
        .pattern(Some(not_blank_pattern()))
);

schema_rule!(
    /// A client-chosen rollout group: not blank, at most [`NAME_CHARS_MAX`] characters, no
    /// control characters, not starting with `ro_` (the names of default groups of one).
    GroupName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Not blank, at most 128 characters, no control characters, not starting with `ro_`",
        ))
        .max_length(Some(NAME_CHARS_MAX))
        .pattern(Some(format!(
            "^(?!ro_)[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}][^{CONTROL_CLASS}]*$"
        )))
);

schema_rule!(
    /// An ast-grep pattern or YAML rule: not blank, at most [`ACTION_TEXT_BYTES_MAX`] bytes.
    ActionText,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Not blank, at most 65536 bytes of UTF-8 (`maxLength` counts characters)",
        ))
        .max_length(Some(ACTION_TEXT_BYTES_MAX))
        .pattern(Some(not_blank_pattern()))
);

schema_rule!(
    /// One list field of a state update.
    StateItems,
    ArrayBuilder::new()
        .description(Some(
            "At most 64 items, each at most 4096 bytes of UTF-8 (`maxLength` counts characters)",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(STATE_ITEM_BYTES_MAX)),
        )
        .max_items(Some(STATE_ITEMS_MAX))
);

schema_rule!(
    /// A reward's named components.
    RewardComponents,
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "At most 32 components; names not blank, at most 64 characters; values finite",
        ))
        .max_properties(Some(REWARD_COMPONENTS_MAX))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(COMPONENT_NAME_CHARS_MAX))
                .pattern(Some(not_blank_pattern())),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Double,
                ))),
        ))
);

schema_rule!(
    /// A dataset's `source` or `version`: 1 to 128 characters, no control characters, not
    /// starting or ending with white space.
    DatasetName,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "1 to 128 characters, no control characters, no white space at either end",
        ))
        .max_length(Some(128))
        .pattern(Some(format!(
            "^[^{CONTROL_CLASS}{SPACE_CLASS}](?:[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}])?$"
        )))
);

schema_rule!(
    /// An SPDX license expression (checked for its shape, not against the license list).
    LicenseExpression,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An SPDX license expression (SPDX 2.3 annex D): identifiers of `A-Za-z0-9.+-` \
             other than `AND`, `OR`, `WITH`, joined by ` AND ` and ` OR `, an identifier after \
             ` WITH `, parentheses nested at most 16 deep; at most 256 characters. Identifiers \
             are not looked up, so `LicenseRef-...` and new SPDX identifiers are accepted. No \
             regex can state the grammar, hence the format.",
        ))
        .format(Some(utoipa::openapi::SchemaFormat::Custom(
            "spdx-license-expression".to_owned(),
        )))
        .min_length(Some(1))
        .max_length(Some(256))
);

/// RFC 3339 date-times with a time zone whose day exists (leap years included); seconds may be
/// 60. `[Tt]` and `[Zz]`: RFC 3339 allows either case.
const RFC3339_PATTERN: &str = concat!(
    "^(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[048]|[2468][048]|[13579][26])00)-02-29)",
    "[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:[.][0-9]{1,9})?",
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
);

schema_rule!(
    /// When a dataset was downloaded: an RFC 3339 date-time with a time zone.
    DownloadedAt,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An RFC 3339 date-time with a time zone (`2024-05-01T12:00:00Z`), a day that \
             exists, at most 9 fractional digits",
        ))
        .pattern(Some(RFC3339_PATTERN))
);

schema_rule!(
    /// Where a dataset came from.
    DatasetUrl,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "`scheme://...`, at most 2048 characters, no white space or control characters",
        ))
        .max_length(Some(2048))
        .pattern(Some(format!(
            "^[A-Za-z][A-Za-z0-9+.-]*://[^{CONTROL_CLASS}{SPACE_CLASS}]+$"
        )))
);

/// `POST /v1/datasets`: the dataset's `_meta.json`. The daemon reads the body as JSON and checks
/// it field by field (so its errors name the field); this type documents that check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDatasetRequest {
    #[schema(value_type = DatasetName)]
    pub source: String,
    #[schema(value_type = DatasetName)]
    pub version: String,
    #[schema(value_type = LicenseExpression)]
    pub license: String,
    #[schema(value_type = DownloadedAt)]
    pub downloaded_at: String,
    /// 64 hexadecimal digits (stored lower case).
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub sha256: String,
    pub num_records: u64,
    /// `null` is the same as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DatasetUrl>)]
    pub url: Option<String>,
}
