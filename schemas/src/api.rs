//! HTTP request and response bodies (JSON). Requests reject unknown fields so a typo is a 400
//! naming the field, not a silently ignored option.

use crate::events::Tags;
use crate::ids::{JobId, LeaseId, Lsn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};

/// Every error answer: a stable machine-readable `code` and a human `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One of [`crate::ErrorCode`] (a string, so an older client reads a newer daemon's codes).
    #[schema(value_type = crate::ErrorCode)]
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJobRequest {
    /// 1 to 128 of `A-Za-z0-9_.:/-` (`[queue]` name limit).
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub queue: String,
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Run no earlier than this many ms from now: at most 366 days. Not together with
    /// `run_at_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 31_622_400_000_u64)]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time (ms since the Unix epoch), at most 366 days from now; a time
    /// in the past runs now. Not together with `delay_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 86_400_000)]
    pub lease_ttl_ms: Option<u64>,
    /// The tags a worker must offer to lease the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RequestTags>)]
    pub tags: Option<Tags>,
    /// The task the job works on: 1 to 256 characters, no control characters (as the task
    /// routes require).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain_api::TaskIdText>)]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitJobResponse {
    pub job_id: JobId,
    /// The frame that recorded the submission (the original one when deduplicated).
    pub lsn: Lsn,
    pub deduplicated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSubmitRequest {
    /// 1 to `[queue] batch_jobs_max` (default 10000) jobs, submitted in one log record.
    #[schema(min_items = 1, max_items = 10000)]
    pub jobs: Vec<SubmitJobRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchSubmitResponse {
    pub jobs: Vec<SubmitJobResponse>,
}

/// Job states as users see them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobStateName {
    Scheduled,
    Queued,
    Leased,
    Completed,
    Dead,
    Cancelled,
}

impl JobStateName {
    pub const ALL: [JobStateName; 6] = [
        JobStateName::Scheduled,
        JobStateName::Queued,
        JobStateName::Leased,
        JobStateName::Completed,
        JobStateName::Dead,
        JobStateName::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStateName::Scheduled => "scheduled",
            JobStateName::Queued => "queued",
            JobStateName::Leased => "leased",
            JobStateName::Completed => "completed",
            JobStateName::Dead => "dead",
            JobStateName::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStateName::Completed | JobStateName::Dead | JobStateName::Cancelled
        )
    }
}

impl std::str::FromStr for JobStateName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobStateName::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown job state {text:?}; expected one of scheduled, queued, leased, completed, dead, cancelled"))
    }
}

/// The current lease of a leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub lease_id: LeaseId,
    pub worker_id: String,
    pub attempt: u32,
    pub expires_at_ms: u64,
}

/// One line of a job's history, taken from its events in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// The event type (`job_submitted`, `job_leased`, `lease_heartbeat`, `job_failed`, ...).
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// For failures and expiries: when the next attempt may run (absent when the job died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// A job as `GET /v1/jobs/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: JobStateName,
    /// Attempts started so far (0 before the first lease).
    pub attempt: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub payload: Value,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub tags: Tags,
    pub task_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub lease_ttl_ms: u64,
    /// When the job may next be leased, while it waits (`scheduled` or `queued`); null once it
    /// is leased or finished.
    pub run_at_ms: Option<u64>,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    pub lease: Option<LeaseView>,
    /// The output tail (at most 8192 bytes) the last completion or failure of the job carried;
    /// absent when it carried none. Present on `GET /v1/jobs/{id}`; omitted in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// Present on `GET /v1/jobs/{id}`; omitted in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobListResponse {
    pub jobs: Vec<JobView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<JobId>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub worker_id: String,
    /// 1 to `[queue] tags_max` (default 32) queue names.
    #[schema(value_type = LeaseQueues)]
    pub queues: Vec<String>,
    /// The tags the worker offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RequestTags>)]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_jobs: Option<u32>,
    /// Long-poll: wait up to this long for a job (any value; capped by `[server]
    /// lease_wait_ms_max` and kept inside the request timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// What a worker needs to run a leased job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeasedJob {
    pub job_id: JobId,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Value)]
    pub payload: crate::JsonText,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub tags: Tags,
    pub task_id: Option<String>,
    /// The rollout an earlier attempt of this job created (`POST /v1/tasks/{task_id}/rollouts`
    /// with the job), so a retried episode resumes it; absent when none was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<crate::ids::RolloutId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseGrant {
    pub lease_id: LeaseId,
    pub job_id: JobId,
    pub attempt: u32,
    pub expires_at_ms: u64,
    pub job: LeasedJob,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseResponse {
    pub leases: Vec<LeaseGrant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    pub expires_at_ms: u64,
}

/// Most bytes (UTF-8) of the `log_tail` a completion or failure may carry; the daemon refuses a
/// longer one with 422 `string_too_long`. Small on purpose: the tail is written into the log
/// with every completion, while the full output stays in the worker's log directory.
pub const LOG_TAIL_BYTES_MAX: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The last lines of the attempt's output (stdout and stderr as they came), at most 8192
    /// bytes of UTF-8; shown as the job's `log_tail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 8192)]
    pub log_tail: Option<String>,
    /// Lease more jobs in the same call, once the completion is durable: the jobs ready right
    /// now (no long-poll wait) are leased and answered in `next_leases`. Checked as a lease
    /// request is: a `next` the lease route would refuse refuses the whole call, before
    /// anything is completed (the lease stays held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextLeaseRequest>,
}

/// What `next` of a completion asks for: a lease request's fields, without `wait_ms` (the
/// next lease never waits; a worker that gets none long-polls `POST /v1/leases`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextLeaseRequest {
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub worker_id: String,
    /// 1 to `[queue] tags_max` (default 32) queue names.
    #[schema(value_type = LeaseQueues)]
    pub queues: Vec<String>,
    /// The tags the worker offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RequestTags>)]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_jobs: Option<u32>,
}

/// Answer to `POST /v1/leases/{lease_id}/complete`: the job's state after the change and, when
/// the request carried `next`, the leases granted in the same record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "crate::json_text::CompleteResponseFields")]
pub struct CompleteResponse {
    #[serde(flatten)]
    pub transition: JobTransitionResponse,
    /// Present when the request carried `next`: the jobs leased with the completion (empty
    /// when none was ready), each as `POST /v1/leases` answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_leases: Option<Vec<LeaseGrant>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// Why the attempt failed. Any length is accepted; the last 16,384 characters are kept.
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// The last lines of the attempt's output, at most 8192 bytes of UTF-8; shown as the job's
    /// `log_tail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 8192)]
    pub log_tail: Option<String>,
}

/// One completion inside `POST /v1/leases/complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteItem {
    pub lease_id: LeaseId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// As in a single completion: at most 8192 bytes. A longer one fails only its item
    /// (`string_too_long` in its result), not the request, so the schema sets no `maxLength`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// `POST /v1/leases/complete`: completes many leases in one durable record. Each lease is fenced
/// on its own: a lost lease fails only its item.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteManyRequest {
    /// 1 to 10000 completions.
    #[schema(min_items = 1, max_items = 10000)]
    pub completions: Vec<CompleteItem>,
}

/// The outcome of one item of a batch completion: `job_id` on success, `error` otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompleteItemResult {
    pub lease_id: LeaseId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompleteManyResponse {
    pub results: Vec<CompleteItemResult>,
    /// The record holding the successful completions (absent when none succeeded).
    pub lsn: Option<Lsn>,
}

/// Answer to complete, fail, cancel and retry: the job's state after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobTransitionResponse {
    pub job_id: JobId,
    pub state: JobStateName,
    pub lsn: Lsn,
    /// For a retryable failure: when the next attempt may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    pub queue: String,
    pub paused: bool,
    /// Number of jobs per state name (every state present, zeros included).
    pub depth: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueListResponse {
    pub queues: Vec<QueueView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueChangeResponse {
    pub queue: String,
    pub paused: bool,
    /// The record that paused or resumed the queue; when it already was so (a queue never seen
    /// is not paused), nothing is appended and this is the log position at which it was.
    pub lsn: Lsn,
}

/// `GET /v1/events`: each event is an object with `lsn`, `index` (position inside its frame),
/// `ts_ms`, `type`, `version`, `actor` and the event's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsResponse {
    pub events: Vec<Value>,
    /// Pass as `after` to continue; equals the request's `after` when nothing new was found.
    pub next_after: Lsn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthResponse {
    pub status: String,
    /// The last record on this daemon's disk (on a replica: copied from the archive).
    pub durable_lsn: Lsn,
    pub version: String,
    /// False while the domain projections (datasets, agent state, rollouts, trajectories) load
    /// from the log after a start: the job API serves, domain routes wait and then answer 503
    /// `loading`. Absent from daemons older than this field, which load everything before
    /// they serve.
    #[serde(default = "loaded_when_absent")]
    pub domain_loaded: bool,
    /// Present only on a read replica (`agentd replica`): how far it follows the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaHealth>,
}

fn loaded_when_absent() -> bool {
    true
}

/// A read replica's progress through the primary's log archive (`GET /healthz` of
/// `agentd replica`). Reads answer as of `applied_lsn`; the archive itself is behind the primary
/// by up to its `archive_interval_ms` plus one upload (docs/storage.md, "Read replicas").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaHealth {
    /// The storage URL followed (`--from`).
    pub archive_url: String,
    /// Where writes go: `--primary`, or the archive URL when none was given.
    pub primary: String,
    /// The archive manifest's `last_lsn` as of the last manifest read.
    pub archive_last_lsn: Lsn,
    /// The last record applied to every projection: what reads answer from.
    pub applied_lsn: Lsn,
    /// `archive_last_lsn - applied_lsn` (0 once caught up).
    pub lag_records: u64,
    /// 0 while the replica has applied everything the last manifest it read names and its
    /// last poll succeeded (then `lag_records` is 0 too); otherwise seconds since it last had:
    /// it grows while a copy is behind, while polls fail and once it stopped following.
    pub lag_seconds: f64,
    /// Unix time (ms) of the last poll that read the manifest and copied what it named; absent
    /// before the first.
    pub last_poll_ok_ms: Option<u64>,
    /// Why the last poll failed; absent after a successful one.
    pub last_poll_error: Option<String>,
    /// False once the replica stopped following for good (the archive does not continue its
    /// local log); reads still answer as of `applied_lsn`.
    pub following: bool,
}

/// `GET /v1/admin/digest`: a sha256 of every projection, all taken at the same LSN, so they can
/// be compared with what `agentd rebuild` prints for the same log (equal when nothing diverged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DigestResponse {
    /// The last log record every digest reflects (`agentd rebuild`'s `lsn`).
    pub lsn: Lsn,
    pub projections: ProjectionDigests,
}

/// One hex sha256 per projection, named as `agentd rebuild` names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectionDigests {
    /// The sequencer's in-memory queue state (jobs, their states and attempts, paused queues,
    /// idempotency keys): what leases and transitions are decided from.
    pub queue: String,
    /// The redb job projection (job records, histories, idempotency keys): what reads answer.
    pub jobs: String,
    /// Registered datasets and their processed splits.
    pub datasets: String,
    /// Per-task agent state.
    pub agent_state: String,
    /// Steps, sandbox results and rewards.
    pub trajectories: String,
}

// ---------------------------------------------------------------------------------------------
// Rules of request fields
//
// Request fields that are plain strings, maps or lists in Rust, but that the daemon checks
// further. Each type below is a schema only (named in a field's `value_type` or a handler's
// `params`), never serialized: it states the check in `GET /openapi.json`, so schema-driven
// clients and test tools (`scripts/test-schemathesis`) know what the daemon accepts. The regexes
// spell their character classes out instead of using `\s`, `\d` or `.`, whose meaning differs
// between regex engines: the classes below are exactly what Rust's `char::is_control` and
// `char::is_whitespace` (and so `str::trim`) are true for.

/// Control characters (Unicode category Cc, `char::is_control`), as the body of a regex class.
pub const CONTROL_CLASS: &str = r"\u0000-\u001F\u007F-\u009F";
/// White space that is not a control character, as the body of a regex class.
pub const SPACE_CLASS: &str = r" \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// Every white-space character (`char::is_whitespace`), as the body of a regex class.
pub const WHITESPACE_CLASS: &str =
    r"\u0009-\u000D\u0085 \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// The pattern of queue, kind, worker and tag names: 1 to 128 of `A-Za-z0-9_.:/-`.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.:/-]{1,128}$";

/// A regex that matches text with at least one character that is not white space ("not
/// blank", `!text.trim().is_empty()`); unanchored, as JSON Schema patterns are.
pub fn not_blank_pattern() -> String {
    format!("[^{WHITESPACE_CLASS}]")
}

/// A regex that matches text without control characters.
pub fn no_control_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*$")
}

/// Declares a schema-only type: `$name` is documented by the schema `$schema` builds.
macro_rules! schema_rule {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let schema: utoipa::openapi::schema::Schema = $schema.into();
                schema.into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use schema_rule;

fn simple_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("1 to 128 of `A-Za-z0-9_.:/-`"))
        .pattern(Some(NAME_PATTERN))
}

schema_rule!(
    /// A queue, kind, worker or tag name.
    SimpleName,
    simple_name()
);

schema_rule!(
    /// Tags of a job (required by it) or of a worker (offered by it).
    RequestTags,
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "At most `[queue] tags_max` (default 32) tags; keys are names (1 to 128 of \
             `A-Za-z0-9_.:/-`), values at most 128 characters",
        ))
        .max_properties(Some(32))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NAME_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(128)),
        ))
);

schema_rule!(
    /// The queues of a lease request.
    LeaseQueues,
    ArrayBuilder::new()
        .description(Some("1 to 32 queue names"))
        .items(simple_name())
        .min_items(Some(1))
        .max_items(Some(32))
);
