//! The domain routes: datasets (`/v1/datasets...`), per-task agent state
//! (`/v1/tasks/{task_id}/state...`), trajectories (`/v1/tasks/{task_id}/steps...`,
//! `/v1/tasks/{task_id}/trajectory`, `/v1/trajectories/stats`). `docs/domain.md` ("HTTP API")
//! lists them with their bodies and error codes.
//!
//! Writes take the lock of their task or dataset ([`write_locks`]), validate against the domain
//! projections (after `settle_reads`), append through the sequencer's `AppendFenced` (so a stale
//! lease is refused with `lease_lost`), then wait until the projector applied their LSN and
//! answer from the projection: the answer is what replay computes, never a second computation
//! in the handler. The lock makes check and write one step per key, so two writers of the same
//! step or dataset cannot both be told they recorded it; as a second line, a write whose record
//! the projection did not keep (first in log order wins) is answered 409 `conflict`, never 2xx.

mod datasets;
mod state;
mod trajectories;
pub mod write_locks;

use super::error::ApiError;
use super::AppState;
use crate::config::Config;
use crate::domain::tokens::{TokenCounter, UnknownEncoding};
use crate::projection::domain::DomainProjections;
use crate::sequencer::Command;
use agentd_schemas::events::{Event, StateLimits};
use agentd_schemas::{LeaseId, Lsn};
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest task id, in characters (the same limit as a job's `task_id`).
pub const TASK_ID_CHARS_MAX: usize = 256;
/// Longest model name, policy version or action language, in characters.
pub const NAME_CHARS_MAX: usize = 128;
/// Most items per list field in one state update.
pub const STATE_ITEMS_MAX: usize = 64;
/// Longest item of a state update before the merge caps it, in bytes.
pub const STATE_ITEM_BYTES_MAX: usize = 4096;
/// Longest prompt kept with a step, in bytes.
pub const PROMPT_BYTES_MAX: usize = 256 * 1024;
/// Longest `think` text, in bytes.
pub const THINK_BYTES_MAX: usize = 64 * 1024;
/// Longest ast-grep pattern, rewrite or YAML rule, in bytes.
pub const ACTION_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Longest unified diff of a sandbox result, in bytes.
pub const DIFF_BYTES_MAX: usize = 1024 * 1024;
/// Longest stdout or stderr of a sandbox result, in bytes (the sandbox keeps tails far shorter).
pub const OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Most named components of a reward.
pub const REWARD_COMPONENTS_MAX: usize = 32;
/// Longest reward component name, in characters.
pub const COMPONENT_NAME_CHARS_MAX: usize = 64;
/// How long a write waits for the projector to apply it before answering 503 `timeout` (the
/// write itself is durable by then, and every domain write is safe to repeat).
pub const APPLY_WAIT: Duration = Duration::from_secs(10);

/// What the domain handlers need besides the rest of [`AppState`].
#[derive(Clone)]
pub struct DomainApi {
    pub projections: Arc<DomainProjections>,
    /// The limits written into every new state update (`[state]`).
    pub state_limits: StateLimits,
    /// Most records in one ingest request (`[datasets] records_per_batch_max`).
    pub records_per_batch_max: usize,
    /// Serialises check-then-append per task and per dataset.
    pub write_locks: Arc<write_locks::WriteLocks>,
}

/// A `[state]` or `[datasets]` setting the domain writes cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum DomainSettingsError {
    #[error("[state] encoding: {0}")]
    Encoding(#[from] UnknownEncoding),
    #[error("[state] item_chars_max must be at least 1")]
    ItemCharsMax,
    #[error("[datasets] records_per_batch_max must be at least 1")]
    RecordsPerBatchMax,
}

impl DomainApi {
    /// Takes the write lock of a task or dataset ([`write_locks`]); hold it from the conflict
    /// check until the write is applied.
    async fn lock(&self, key: write_locks::WriteKey<'_>) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_locks.lock(key).await
    }

    /// Checks the settings once at start, so no request (and no replay) meets a bad one.
    pub fn new(
        config: &Config,
        projections: Arc<DomainProjections>,
    ) -> Result<Self, DomainSettingsError> {
        let state = &config.state;
        let counter = TokenCounter::for_encoding(&state.encoding)?;
        if state.item_chars_max == 0 {
            return Err(DomainSettingsError::ItemCharsMax);
        }
        if config.datasets.records_per_batch_max == 0 {
            return Err(DomainSettingsError::RecordsPerBatchMax);
        }
        Ok(DomainApi {
            projections,
            state_limits: StateLimits {
                history_max: state.history_max,
                item_chars_max: state.item_chars_max,
                token_budget: state.token_budget,
                encoding: counter.name().to_owned(),
            },
            records_per_batch_max: config.datasets.records_per_batch_max,
            write_locks: Arc::default(),
        })
    }
}

/// The domain routes, merged into the API router. Each handler's `#[utoipa::path]` gives its
/// path and method, and documents it in `/openapi.json`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(datasets::register, datasets::list))
        .routes(routes!(datasets::stats))
        .routes(routes!(datasets::ingest))
        .routes(routes!(state::show, state::update))
        .routes(routes!(state::history))
        .routes(routes!(trajectories::record_step))
        .routes(routes!(trajectories::record_sandbox))
        .routes(routes!(trajectories::record_reward))
        .routes(routes!(trajectories::show))
        .routes(routes!(trajectories::stats))
}

/// Appends already-validated events as one record (refused with `lease_lost` when `lease_id`
/// is no longer held) and waits until the projections applied it.
async fn append_and_apply(
    state: &AppState,
    actor: Option<String>,
    lease_id: Option<LeaseId>,
    events: Vec<Event>,
) -> Result<Lsn, ApiError> {
    let lsn = state
        .sequencer
        .call(|reply| Command::AppendFenced {
            lease_id,
            events,
            actor,
            reply,
        })
        .await?;
    if !state.applied.wait_for(lsn, APPLY_WAIT).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the write is durable at lsn {lsn} but not applied within {} ms; repeating it is safe",
                APPLY_WAIT.as_millis()
            ),
        ));
    }
    Ok(lsn)
}

/// Task ids come from clients (and jobs' `task_id`): non-empty, at most [`TASK_ID_CHARS_MAX`]
/// characters, no control characters.
fn check_task_id(task_id: &str) -> Result<(), ApiError> {
    if task_id.is_empty() {
        return Err(ApiError::invalid("task_id: must not be empty"));
    }
    check_chars("task_id", task_id, TASK_ID_CHARS_MAX)?;
    if task_id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "task_id: must not contain control characters",
        ));
    }
    Ok(())
}

/// A short required name (model, policy version, language).
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be blank")));
    }
    check_chars(field, value, NAME_CHARS_MAX)
}

fn check_chars(field: &str, value: &str, chars_max: usize) -> Result<(), ApiError> {
    if value.chars().count() > chars_max {
        return Err(ApiError::over_limit(
            "string_too_long",
            format!("{field}: must be at most {chars_max} characters"),
        ));
    }
    Ok(())
}

fn check_bytes(field: &str, value: &str, bytes_max: usize) -> Result<(), ApiError> {
    if value.len() > bytes_max {
        return Err(ApiError::over_limit(
            "string_too_long",
            format!(
                "{field}: {} bytes is over the limit of {bytes_max} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// 409 `conflict`: the request contradicts what the log already holds.
fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

/// Runs a projection read off the async workers: a reader may wait for a writer's lock.
async fn read_blocking<T: Send + 'static>(
    what: &'static str,
    read: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|error| ApiError::internal(what, error))
}
