//! The domain routes: datasets (`/v1/datasets...`), agent state (`/v1/tasks/{task_id}/state...`,
//! `/v1/rollouts/{rollout_id}/state`), rollouts and groups (`/v1/tasks/{task_id}/rollouts`,
//! `/v1/rollouts/{rollout_id}...`, `/v1/groups/{group}`), trajectories
//! (`/v1/tasks/{task_id}/steps...`, `/v1/tasks/{task_id}/trajectory`, `/v1/trajectories/stats`).
//! `docs/domain.md` ("HTTP API") lists them with their bodies and error codes.
//!
//! One write model: a handler parses the body and checks its bounds (nothing that needs state),
//! then sends a [`DomainCommand`] to the sequencer, which decides it against everything logged
//! before it (`crate::domain::decide`) exactly as it decides job commands. A refused write never
//! reaches the log. An accepted one is answered once the projector has applied its LSN, from
//! the projection where the answer needs it (a merged state, an ingest's outcome), so the answer
//! is what a replay computes.

mod datasets;
mod rollouts;
mod settings;
mod state;
mod trajectories;

use super::auth_layer::CallerExt;
use super::error::ApiError;
use super::{AppState, SharedState};
use crate::config::Config;
use crate::domain::decide::{DomainCommand, DomainReply};
use crate::domain::tokens::{TokenCounter, UnknownEncoding};
use crate::projection::domain::DomainProjections;
use crate::sequencer::DomainOutcome;
use agentd_schemas::domain_api::SamplingRequest;
use agentd_schemas::events::StateLimits;
use agentd_schemas::ErrorCode;
use agentd_schemas::{Lsn, RolloutId};
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

// The limits the OpenAPI document states too (the same task id limit as a job's `task_id`).
pub use agentd_schemas::domain_api::{
    ACTION_TEXT_BYTES_MAX, COMPONENT_NAME_CHARS_MAX, NAME_CHARS_MAX, REWARD_ABS_MAX,
    REWARD_COMPONENTS_MAX, STATE_ITEMS_MAX, STATE_ITEM_BYTES_MAX, TASK_ID_CHARS_MAX,
};
/// Longest prompt kept with a step, in bytes.
pub const PROMPT_BYTES_MAX: usize = 256 * 1024;
/// Longest `think` text, in bytes.
pub const THINK_BYTES_MAX: usize = 64 * 1024;
/// Longest unified diff of a sandbox result, in bytes.
pub const DIFF_BYTES_MAX: usize = 1024 * 1024;
/// Longest stdout or stderr of a sandbox result, in bytes (the sandbox keeps tails far shorter).
pub const OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// How long a write waits for the projector to apply it before answering 503 `timeout` (the
/// write itself is durable by then; repeating it is refused as a conflict where the fact may be
/// written once, so read it back first).
pub const APPLY_WAIT: Duration = Duration::from_secs(10);

/// What the domain handlers need besides the rest of [`AppState`].
#[derive(Clone)]
pub struct DomainApi {
    pub projections: Arc<DomainProjections>,
    /// The limits written into every new state update (`[state]`).
    pub state_limits: StateLimits,
    /// Most records in one ingest request (`[datasets] records_per_batch_max`).
    pub records_per_batch_max: usize,
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
        })
    }
}

/// The domain routes, merged into the API router. Each handler's `#[utoipa::path]` gives its
/// path and method, and documents it in `/openapi.json`.
pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(datasets::register, datasets::list))
        .routes(routes!(datasets::stats))
        .routes(routes!(datasets::ingest))
        .routes(routes!(state::show, state::update))
        .routes(routes!(state::history))
        .routes(routes!(state::show_rollout, state::update_rollout))
        .routes(routes!(trajectories::record_step))
        .routes(routes!(trajectories::record_sandbox))
        .routes(routes!(trajectories::record_reward))
        .routes(routes!(trajectories::record_rollout_step))
        .routes(routes!(trajectories::record_rollout_sandbox))
        .routes(routes!(trajectories::record_rollout_reward))
        .routes(routes!(trajectories::show))
        .routes(routes!(trajectories::stats))
        .routes(routes!(rollouts::create, rollouts::list))
        .routes(routes!(rollouts::show))
        .routes(routes!(rollouts::group))
        .routes(routes!(settings::show))
}

/// How long a domain request waits for the domain projections to finish loading after a
/// restart before it is answered 503 `loading`.
pub const DOMAIN_LOAD_WAIT: Duration = Duration::from_secs(5);

/// Waits (bounded) until the domain projections are loaded (`projection/domain/load.rs`):
/// after a restart the job API serves at once while they load from the log, and a domain
/// request before then is answered 503 `loading` instead of from a partial state.
pub(super) async fn domain_loaded(state: &AppState) -> Result<(), ApiError> {
    let projections = &state.domain.projections;
    if projections.wait_loaded(DOMAIN_LOAD_WAIT).await {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Loading,
        format!(
            "the domain projections are still loading from the log after a restart (lsn {} of {}); the job API is serving. Retry shortly",
            projections.applied_lsn(),
            state.applied.applied_lsn()
        ),
    ))
}

/// A domain read's wait: for the domain projections to be loaded, then for them to reflect
/// everything durable now (read-your-writes).
pub(super) async fn settle_domain_reads(state: &AppState) -> Result<(), ApiError> {
    domain_loaded(state).await?;
    state.settle_reads().await;
    Ok(())
}

/// Has the sequencer decide a domain write and, when it appended a record, waits until the
/// projections applied it. Nothing is written while the domain projections load (the answers
/// read them). A refusal is the sequencer's error (404, 409 `conflict` or
/// `lease_lost`, 422).
async fn decide_and_apply(
    state: &AppState,
    actor: Option<String>,
    command: DomainCommand,
) -> Result<(Option<Lsn>, DomainReply), ApiError> {
    domain_loaded(state).await?;
    let DomainOutcome {
        lsn,
        depends_on,
        reply,
    } = state.sequencer.call(command, actor).await?;
    if !state.applied.wait_for(depends_on, APPLY_WAIT).await {
        return Err(ApiError::new(ErrorCode::Timeout,
            format!(
                "the decision rests on lsn {depends_on}, which is durable but not applied within {} ms; read the fact back before repeating the write",
                APPLY_WAIT.as_millis()
            ),
        ));
    }
    Ok((lsn, reply))
}

/// Has the sequencer decide a write that records one fact (a step, a sandbox result, a reward,
/// a state update) and waits until it is applied: its LSN, task and rollout. `what` names the
/// write in the daemon log should the sequencer answer anything else.
async fn decide_recorded(
    state: &AppState,
    caller: CallerExt,
    command: DomainCommand,
    what: &'static str,
) -> Result<(Lsn, String, Option<RolloutId>), ApiError> {
    match decide_and_apply(state, caller.actor(), command).await? {
        (
            Some(lsn),
            DomainReply::Recorded {
                task_id,
                rollout_id,
            },
        ) => Ok((lsn, task_id, rollout_id)),
        other => Err(ApiError::internal(
            what,
            format!("unexpected decision {other:?}"),
        )),
    }
}

/// The first `limit` items and, when more follow, the key of the last one kept: the
/// `next_after` of the next page (none on the last).
fn page_of<T, K>(
    items: impl Iterator<Item = T>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<K>) {
    let mut page: Vec<T> = items.take(limit + 1).collect();
    let next_after = if page.len() > limit {
        page.truncate(limit);
        page.last().map(key)
    } else {
        None
    };
    (page, next_after)
}

/// A page size asked for (`default` when absent), between 1 and `max`.
fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!(
            "limit: must be between 1 and {max}"
        )));
    }
    Ok(limit)
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

/// Temperature and top-p are finite and at least 0.
fn check_sampling(sampling: &SamplingRequest) -> Result<(), ApiError> {
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
    Ok(())
}

fn check_chars(field: &str, value: &str, chars_max: usize) -> Result<(), ApiError> {
    if value.chars().count() > chars_max {
        return Err(ApiError::over_limit(
            ErrorCode::StringTooLong,
            format!("{field}: must be at most {chars_max} characters"),
        ));
    }
    Ok(())
}

fn check_bytes(field: &str, value: &str, bytes_max: usize) -> Result<(), ApiError> {
    if value.len() > bytes_max {
        return Err(ApiError::over_limit(
            ErrorCode::StringTooLong,
            format!(
                "{field}: {} bytes is over the limit of {bytes_max} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
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
