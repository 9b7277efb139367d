//! Log records and events, as written into the payload of a log frame (MessagePack, named fields).
//!
//! A frame holds exactly one [`LogRecord`]; a record holds the events of one append request, so a
//! multi-event request (a batch submit, a lease of several jobs) is atomic.
//!
//! Versioning: every event variant's tag carries its schema version (`job_submitted.v1`). Variants
//! are append-only. When an event's shape must change, add `..._v2`, keep the v1 variant for
//! decoding, and map it to v2 in [`upcast`]; `migrations/` keeps encoded fixtures of every version.

use crate::ids::{JobId, LeaseId, RolloutId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod exports;
mod peek;
mod training;
pub use exports::*;
pub use peek::only_events_tagged;
pub use training::*;

/// Version of the [`LogRecord`] envelope itself (the frame header carries it as its format byte).
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Tags a worker advertises or a job requires: `gpu=a100`.
pub type Tags = BTreeMap<String, String>;

/// The payload of one log frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Wall-clock time the sequencer decided this record, ms since the Unix epoch. Replays read
    /// time from here, never from a clock.
    pub ts_ms: u64,
    /// Name of the token that caused the record (audit trail); `None` for the daemon itself or an
    /// unauthenticated loopback client.
    #[serde(default)]
    pub actor: Option<String>,
    pub events: Vec<Event>,
}

/// What happens to a job after a failed attempt; decided once at failure time (including the
/// jittered backoff) and replayed as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "next", rename_all = "snake_case")]
pub enum AfterFailure {
    /// Queued again, eligible to run from `run_at_ms`.
    Retry { run_at_ms: u64 },
    /// No attempts left, or the failure was not retryable.
    Dead,
}

/// Every event agentd records. The serialized tag is `<name>.v<version>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    #[serde(rename = "job_submitted.v1")]
    JobSubmitted(JobSubmitted),
    #[serde(rename = "job_leased.v1")]
    JobLeased(JobLeased),
    #[serde(rename = "lease_heartbeat.v1")]
    LeaseHeartbeat {
        job_id: JobId,
        lease_id: LeaseId,
        expires_at_ms: u64,
    },
    #[serde(rename = "job_completed.v1")]
    JobCompleted {
        job_id: JobId,
        lease_id: LeaseId,
        result_json: Option<String>,
        /// The last bytes of the attempt's output as the worker sent them (at most
        /// [`crate::api::LOG_TAIL_BYTES_MAX`]). Added later as an optional field: absent in older
        /// records and left out when empty, so earlier records keep their exact bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_tail: Option<String>,
    },
    #[serde(rename = "job_failed.v1")]
    JobFailed {
        job_id: JobId,
        lease_id: LeaseId,
        error: String,
        retryable: bool,
        after: AfterFailure,
        /// As in `job_completed`: the last bytes of the failed attempt's output, when sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_tail: Option<String>,
    },
    #[serde(rename = "lease_expired.v1")]
    LeaseExpired {
        job_id: JobId,
        lease_id: LeaseId,
        after: AfterFailure,
    },
    #[serde(rename = "job_cancelled.v1")]
    JobCancelled { job_id: JobId },
    /// A dead job put back in its queue by an operator; attempts start again from zero.
    #[serde(rename = "job_retried.v1")]
    JobRetried { job_id: JobId, run_at_ms: u64 },
    #[serde(rename = "queue_paused.v1")]
    QueuePaused { queue: String },
    #[serde(rename = "queue_resumed.v1")]
    QueueResumed { queue: String },

    #[serde(rename = "dataset_registered.v1")]
    DatasetRegistered(DatasetMeta),
    #[serde(rename = "dataset_records_ingested.v1")]
    DatasetRecordsIngested(DatasetRecordsIngested),
    /// v2 added `rollout_id` and `forget`; a v1 event decodes as an update of the task's base
    /// state with nothing forgotten (see [`upcast`]).
    #[serde(rename = "task_state_updated.v2", alias = "task_state_updated.v1")]
    TaskStateUpdated(TaskStateUpdated),
    /// v2 added `rollout_id`; a v1 step belongs to its task's default rollout.
    #[serde(rename = "step_recorded.v2", alias = "step_recorded.v1")]
    StepRecorded(StepRecorded),
    #[serde(
        rename = "sandbox_result_recorded.v2",
        alias = "sandbox_result_recorded.v1"
    )]
    SandboxResultRecorded(SandboxResultRecorded),
    #[serde(rename = "reward_recorded.v2", alias = "reward_recorded.v1")]
    RewardRecorded(RewardRecorded),
    /// One sampled episode of a policy on a task; its steps, state, sandbox results and rewards
    /// name its `rollout_id`.
    #[serde(rename = "rollout_created.v1")]
    RolloutCreated(RolloutCreated),

    #[serde(rename = "export_recorded.v1")]
    ExportRecorded(ExportRecorded),
    #[serde(rename = "schedule_fired.v1")]
    ScheduleFired(ScheduleFired),
    #[serde(rename = "dataset_built.v1")]
    DatasetBuilt(DatasetBuilt),
    /// The `[datasets]` settings the processed splits follow, recorded at start-up so that a
    /// replay decides splits and token counts from the log, not from whatever config it runs
    /// with.
    #[serde(rename = "dataset_settings_recorded.v1")]
    DatasetSettingsRecorded(DatasetSettings),
    /// The `[rewards]` and `[training]` settings, recorded at start-up when they differ from the
    /// last recorded ones; exports use those recorded at or before their `to`.
    #[serde(rename = "training_settings_recorded.v1")]
    TrainingSettingsRecorded(TrainingSettings),
    /// An export or build recorded without its object-storage copy was copied later.
    #[serde(rename = "export_copied.v1")]
    ExportCopied(ExportCopied),
}

impl Event {
    /// The stable type name shown by `GET /v1/events` (the tag without its version).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::JobSubmitted(_) => "job_submitted",
            Event::JobLeased(_) => "job_leased",
            Event::LeaseHeartbeat { .. } => "lease_heartbeat",
            Event::JobCompleted { .. } => "job_completed",
            Event::JobFailed { .. } => "job_failed",
            Event::LeaseExpired { .. } => "lease_expired",
            Event::JobCancelled { .. } => "job_cancelled",
            Event::JobRetried { .. } => "job_retried",
            Event::QueuePaused { .. } => "queue_paused",
            Event::QueueResumed { .. } => "queue_resumed",
            Event::DatasetRegistered(_) => "dataset_registered",
            Event::DatasetRecordsIngested(_) => "dataset_records_ingested",
            Event::TaskStateUpdated(_) => "task_state_updated",
            Event::StepRecorded(_) => "step_recorded",
            Event::SandboxResultRecorded(_) => "sandbox_result_recorded",
            Event::RewardRecorded(_) => "reward_recorded",
            Event::RolloutCreated(_) => "rollout_created",
            Event::ExportRecorded(_) => "export_recorded",
            Event::ScheduleFired(_) => "schedule_fired",
            Event::DatasetBuilt(_) => "dataset_built",
            Event::DatasetSettingsRecorded(_) => "dataset_settings_recorded",
            Event::TrainingSettingsRecorded(_) => "training_settings_recorded",
            Event::ExportCopied(_) => "export_copied",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSubmitted {
    pub job_id: JobId,
    pub queue: String,
    pub kind: String,
    /// The payload exactly as the client sent it, as JSON text.
    pub payload_json: String,
    pub priority: i32,
    /// The job may not be leased before this time (equal to the record time when not delayed).
    pub run_at_ms: u64,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub tags: Tags,
    pub task_id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLeased {
    pub job_id: JobId,
    pub lease_id: LeaseId,
    pub worker_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub expires_at_ms: u64,
}

/// The settings of the processed splits (`[datasets]` in agentd.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSettings {
    /// tiktoken encoding of token counts and the cap.
    pub encoding: String,
    /// Records over this many tokens are excluded.
    pub token_cap: u64,
    /// Relative split sizes.
    pub split_train: u32,
    pub split_dev: u32,
    pub split_test: u32,
}

/// The metadata contract of a dataset (`_meta.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetMeta {
    pub source: String,
    pub version: String,
    /// SPDX license expression.
    pub license: String,
    /// RFC 3339 time the source was downloaded.
    pub downloaded_at: String,
    pub sha256: String,
    pub num_records: u64,
    pub url: Option<String>,
}

/// One normalized dataset record, validated before it is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub instruction: String,
    pub pre: String,
    pub post: String,
    pub language: String,
    pub tags: Vec<String>,
    /// Structured extras (tests, provenance, smell type) as JSON object text.
    pub metadata_json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecordsIngested {
    pub source: String,
    pub version: String,
    /// Position of the first record of this batch in the dataset (0-based), so re-sent batches
    /// are recognised and ingestion stays idempotent.
    pub first_index: u64,
    pub records: Vec<DatasetRecord>,
}

/// The structured per-task agent state (seed 001, section 5). Also the shape of an update.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentState {
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub decisions: Vec<String>,
    #[serde(default)]
    pub hypotheses: Vec<String>,
    #[serde(default)]
    pub history: Vec<String>,
    #[serde(default)]
    pub open_issues: Vec<String>,
    #[serde(default)]
    pub next_focus: Option<String>,
}

/// Limits applied when an update was merged; written into the event so a replay merges exactly
/// as the daemon did, even if the configuration changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateLimits {
    pub history_max: u32,
    pub item_chars_max: u32,
    pub token_budget: u32,
    pub encoding: String,
}

/// What an update takes out of a state, applied before its additions (`docs/domain.md`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateForget {
    /// Items removed by value (compared after trimming whitespace), per list field.
    #[serde(default)]
    pub remove: AgentStateLists,
    /// Open issues resolved: moved from `open_issues` to `decisions`.
    #[serde(default)]
    pub resolve: Vec<String>,
    /// Hypotheses retracted: removed from `hypotheses`.
    #[serde(default)]
    pub retract: Vec<String>,
    /// Clears `next_focus`.
    #[serde(default)]
    pub clear_next_focus: bool,
}

impl StateForget {
    /// Whether it takes nothing out.
    pub fn is_empty(&self) -> bool {
        self == &StateForget::default()
    }
}

/// The list fields of an agent state (items to remove from each).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentStateLists {
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub decisions: Vec<String>,
    #[serde(default)]
    pub hypotheses: Vec<String>,
    #[serde(default)]
    pub history: Vec<String>,
    #[serde(default)]
    pub open_issues: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStateUpdated {
    pub task_id: String,
    /// The rollout whose state this updates; `None` is the task's base state (which is also the
    /// state of its default rollout, the one the task-level step routes record into).
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub update: AgentState,
    /// What the update takes out before adding `update`'s items.
    #[serde(default)]
    pub forget: StateForget,
    pub limits: StateLimits,
    pub lease_id: Option<LeaseId>,
}

/// Where a new rollout's agent state starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFrom {
    /// A copy of the task's base state at creation (goals, constraints set for the task).
    #[default]
    Task,
    /// The empty state.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutCreated {
    /// Assigned by the sequencer, counting rollouts in log order.
    pub rollout_id: RolloutId,
    pub task_id: String,
    /// The set of rollouts sampled together for group scoring; a new group of one (named after
    /// the rollout) unless the creator named one.
    pub group: String,
    pub model: String,
    pub policy_version: String,
    pub sampling: Sampling,
    /// The episode job it was created under, with the lease's attempt and worker.
    pub job_id: Option<JobId>,
    pub lease_id: Option<LeaseId>,
    pub attempt: Option<u32>,
    pub worker_id: Option<String>,
    pub state_from: StateFrom,
}

/// What the actor proposed to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// An ast-grep pattern and its rewrite for one language.
    Pattern {
        language: String,
        pattern: String,
        rewrite: String,
    },
    /// An ast-grep YAML rule with a `fix`.
    Rule { yaml: String },
}

/// Sampling parameters of the model call; unknown extra parameters are kept in `extra_json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    pub seed: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecorded {
    pub task_id: String,
    /// The rollout the step belongs to; `None` is the task's default rollout (every step a v1
    /// event recorded).
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
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
    /// `None` only for a step recorded from a `raw_output` that did not parse (`format_error`).
    pub action: Option<Action>,
    pub state_update: Option<AgentState>,
    /// The model's output as it came, when the step was recorded from it
    /// (`docs/output-format.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
    /// Why `raw_output` did not parse; such a step has no action and a reward of 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_error: Option<OutputFormatError>,
    /// How long the model took to generate the step, as the actor measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_ms: Option<u64>,
}

/// Why a model's output did not parse: a stable code from `docs/output-format.md` and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputFormatError {
    pub code: String,
    pub message: String,
}

/// How a sandbox run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxOutcome {
    Ok,
    Failed,
    TimedOut,
    KilledOom,
    Rejected,
}

impl SandboxOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxOutcome::Ok => "ok",
            SandboxOutcome::Failed => "failed",
            SandboxOutcome::TimedOut => "timed_out",
            SandboxOutcome::KilledOom => "killed_oom",
            SandboxOutcome::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxResultRecorded {
    pub task_id: String,
    /// The rollout the step belongs to; `None` is the task's default rollout (every step a v1
    /// event recorded).
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub lease_id: Option<LeaseId>,
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

/// Who assigned a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardSource {
    Rule,
    Teacher,
    Human,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRecorded {
    pub task_id: String,
    /// The rollout the step belongs to; `None` is the task's default rollout (every step a v1
    /// event recorded).
    #[serde(default)]
    pub rollout_id: Option<RolloutId>,
    pub step: u32,
    pub lease_id: Option<LeaseId>,
    pub value: f64,
    pub verified: bool,
    pub components: BTreeMap<String, f64>,
    pub source: RewardSource,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported record format version {0} (this build reads {RECORD_FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("malformed record: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
}

/// Encodes a record for the log (MessagePack with field names, so added optional fields stay
/// readable by older and newer builds).
pub fn encode_record(record: &LogRecord) -> Vec<u8> {
    // Serializing plain data structures into a Vec cannot fail: every type here is a tree of
    // strings, numbers, maps and sequences with string keys.
    rmp_serde::to_vec_named(record).expect("log records always serialize")
}

/// How deeply a log record may nest when decoded (rmp-serde's own default is 1024).
pub const MAX_RECORD_DEPTH: usize = 32;

/// Decodes a frame payload written with `format_version`, upcasting old event versions.
pub fn decode_record(format_version: u8, payload: &[u8]) -> Result<LogRecord, DecodeError> {
    if format_version != RECORD_FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(format_version));
    }
    // A legitimate record is under 10 levels deep (client JSON is stored as text, not as nested
    // MessagePack), so a tight depth limit keeps a hostile frame from using megabytes of stack.
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(payload);
    deserializer.set_max_depth(MAX_RECORD_DEPTH);
    let record = LogRecord::deserialize(&mut deserializer)?;
    Ok(upcast(record))
}

/// Maps old event versions to the current ones.
///
/// The v2 trajectory events (`step_recorded`, `sandbox_result_recorded`, `reward_recorded`,
/// `task_state_updated`) added `rollout_id` and, for state updates, `forget`. Their v1 tags are
/// decoded into the same types by serde aliases, with `rollout_id: None` (the task's default
/// rollout: before rollouts existed a task had exactly one trajectory) and nothing forgotten,
/// which is exactly what the v1 events meant. So the conversion happens while decoding and this
/// function is still the identity; it stays the place a conversion that needs more than defaults
/// goes.
pub fn upcast(record: LogRecord) -> LogRecord {
    record
}
