//! `/v1/leases`: long-poll for jobs, heartbeat, complete, fail.

use super::error::ApiError;
use super::extract::{parse_id, ApiJson};
use super::{ApiResult, AppState, SharedState};
use crate::http::auth_layer::CallerExt;
use crate::projection::jobs as job_projection;
use crate::sequencer::LeaseGrantCore;
use crate::sequencer::{Complete, CompleteMany, CompleteThenLease, Fail, Heartbeat, Lease};
use agentd_schemas::api::{
    CompleteItemResult, CompleteManyRequest, CompleteManyResponse, CompleteRequest,
    CompleteResponse, ErrorBody, FailRequest, HeartbeatResponse, JobTransitionResponse, LeaseGrant,
    LeaseRequest, LeaseResponse, LeasedJob,
};
use agentd_schemas::LeaseId;
use agentd_schemas::{ErrorCode, JsonText};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;
use std::time::Duration;

#[utoipa::path(
    post, path = "/v1/leases", tag = "leases", request_body = agentd_schemas::api::LeaseRequest,
    responses(
        (status = 200, description = "Granted leases; empty when nothing was ready within `wait_ms` (capped by `[server] lease_wait_ms_max` and the request timeout)", body = agentd_schemas::api::LeaseResponse),
        (status = 422, description = "`invalid_request`, `too_many_tags` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
        (status = 429, description = "`too_many_waiters` (`[server] lease_waiters_max`)", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn lease(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(request): ApiJson<LeaseRequest>,
) -> ApiResult<Json<LeaseResponse>> {
    // Keep the long-poll inside the request timeout, with room to answer.
    let timeout_cap_ms = (state.limits.request_timeout.as_millis() as u64).saturating_sub(1000);
    let wait_ms = request
        .wait_ms
        .unwrap_or(0)
        .min(state.limits.lease_wait_ms_max)
        .min(timeout_cap_ms);
    let outcome = state
        .sequencer
        .call(Lease { request, wait_ms }, caller.actor())
        .await?;
    if outcome.lsn.is_none() {
        return Ok(Json(LeaseResponse { leases: Vec::new() }));
    }
    let leases = answer_grants(&state, outcome.grants).await?;
    Ok(Json(LeaseResponse { leases }))
}

/// The answers for durable grants. What an answer adds to a grant (payload, kind, tags...)
/// never changes after submission: the queue state usually still holds it; otherwise it is
/// read from the job projection.
async fn answer_grants(
    state: &AppState,
    grants: Vec<LeaseGrantCore>,
) -> Result<Vec<LeaseGrant>, ApiError> {
    match grants
        .iter()
        .map(grant_from_memory)
        .collect::<Option<Vec<_>>>()
    {
        Some(leases) => Ok(leases),
        None => grants_from_projection(state, grants).await,
    }
}

/// The answer for a grant whose job the queue state still holds in full.
fn grant_from_memory(grant: &LeaseGrantCore) -> Option<LeaseGrant> {
    let job = grant.job.as_ref()?;
    Some(LeaseGrant {
        lease_id: grant.lease_id,
        job_id: grant.job_id,
        attempt: grant.attempt,
        expires_at_ms: grant.expires_at_ms,
        job: LeasedJob {
            job_id: grant.job_id,
            queue: job.queue.to_string(),
            kind: job.kind.to_string(),
            payload: stored_payload(job.data.payload_json.to_string()),
            priority: job.priority,
            attempt: grant.attempt,
            max_attempts: job.max_attempts,
            lease_ttl_ms: job.lease_ttl_ms,
            tags: job.tags.clone(),
            task_id: job.data.task_id.clone(),
            rollout_id: grant.rollout_id,
        },
    })
}

/// The answers for grants read from the job projection, once it has applied the submissions
/// (not the lease record: the answer does not wait for the projector to catch up).
async fn grants_from_projection(
    state: &AppState,
    grants: Vec<LeaseGrantCore>,
) -> Result<Vec<LeaseGrant>, ApiError> {
    let submitted = grants
        .iter()
        .map(|grant| grant.submitted_lsn)
        .max()
        .unwrap_or_default();
    if !state
        .applied
        .wait_for(submitted, Duration::from_secs(10))
        .await
    {
        tracing::warn!(%submitted, "projection lagging while answering a lease");
    }
    let db = state.projections.db().clone();
    tokio::task::spawn_blocking(
        move || -> Result<Vec<LeaseGrant>, job_projection::JobsError> {
            let mut leases = Vec::with_capacity(grants.len());
            let txn = redb::ReadableDatabase::begin_read(&*db).map_err(job_projection::storage)?;
            for grant in grants {
                let Some(job) = job_projection::read_job_in(&txn, grant.job_id)? else {
                    return Err(job_projection::JobsError::Corrupt {
                        job_id: grant.job_id,
                        detail: "leased job missing from projection".into(),
                    });
                };
                leases.push(LeaseGrant {
                    lease_id: grant.lease_id,
                    job_id: grant.job_id,
                    attempt: grant.attempt,
                    expires_at_ms: grant.expires_at_ms,
                    job: LeasedJob {
                        job_id: job.job_id,
                        queue: job.queue,
                        kind: job.kind,
                        payload: stored_payload(job.payload_json),
                        priority: job.priority,
                        attempt: grant.attempt,
                        max_attempts: job.max_attempts,
                        lease_ttl_ms: job.lease_ttl_ms,
                        tags: job.tags,
                        task_id: job.task_id,
                        rollout_id: grant.rollout_id,
                    },
                });
            }
            Ok(leases)
        },
    )
    .await
    .map_err(|error| ApiError::internal("answering a lease", error))?
    .map_err(|error| ApiError::internal("answering a lease", error))
}

/// A stored payload, answered as its text (it was made from JSON when submitted; `null` should
/// it ever not be JSON).
fn stored_payload(payload_json: String) -> JsonText {
    JsonText::from_text(payload_json)
        .unwrap_or_else(|_| JsonText::from_value(&serde_json::Value::Null))
}

#[utoipa::path(
    post, path = "/v1/leases/{lease_id}/heartbeat", tag = "leases",
    params(("lease_id" = agentd_schemas::LeaseId, Path, description = "The lease, `lease_<n>`")),
    responses(
        (status = 200, description = "Extended", body = agentd_schemas::api::HeartbeatResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`lease_lost`: expired or superseded", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`: malformed id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn heartbeat(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(lease_id): Path<String>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let lease_id: LeaseId = parse_id(&lease_id)?;
    Ok(Json(
        state
            .sequencer
            .call(Heartbeat { lease_id }, caller.actor())
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/leases/{lease_id}/complete", tag = "leases",
    params(("lease_id" = agentd_schemas::LeaseId, Path, description = "The lease, `lease_<n>`")),
    request_body(content = Option<agentd_schemas::api::CompleteRequest>, description = "Optional: an empty body completes without a result. With `next`, the jobs ready now for that lease request are leased in the same durable record and answered in `next_leases` (no long-poll wait)"),
    responses(
        (status = 200, description = "Completed; with `next`, `next_leases` holds the jobs leased with the completion (empty when none was ready)", body = agentd_schemas::api::CompleteResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 413, description = "`body_too_large` or `payload_too_large`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, or `string_too_long`: `log_tail` over 8192 bytes; or a `next` the lease route would refuse (`invalid_request`, `too_many_tags`, `too_many_items`, `string_too_long` on `next.*`), in which case nothing is completed and the lease stays held", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn complete(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(lease_id): Path<String>,
    super::extract::ApiBody(body): super::extract::ApiBody,
) -> ApiResult<Json<CompleteResponse>> {
    let lease_id: LeaseId = parse_id(&lease_id)?;
    // An empty body means "no result".
    let request: CompleteRequest = if body.is_empty() {
        CompleteRequest::default()
    } else {
        super::extract::parse_json(&body)?
    };
    let complete = Complete {
        lease_id,
        result: request.result,
        log_tail: request.log_tail,
    };
    let Some(next) = request.next else {
        let transition = state.sequencer.call(complete, caller.actor()).await?;
        return Ok(Json(CompleteResponse {
            transition,
            next_leases: None,
        }));
    };
    let (transition, grants) = state
        .sequencer
        .call(CompleteThenLease { complete, next }, caller.actor())
        .await?;
    let next_leases = answer_next_leases(&state, grants).await;
    Ok(Json(CompleteResponse {
        transition,
        next_leases: Some(next_leases),
    }))
}

/// The answers for the leases granted with a completion. The completion is durable by now, so
/// a failure to read a grant's job back (only possible past the lease cache's budget) must not
/// turn its answer into an error: the worker would take the completion for lost. The grants are
/// answered empty instead; unanswered, they expire and their jobs are leased again.
async fn answer_next_leases(state: &AppState, grants: Vec<LeaseGrantCore>) -> Vec<LeaseGrant> {
    if grants.is_empty() {
        return Vec::new();
    }
    let lease_ids: Vec<LeaseId> = grants.iter().map(|grant| grant.lease_id).collect();
    match answer_grants(state, grants).await {
        Ok(leases) => leases,
        Err(error) => {
            tracing::warn!(
                ?lease_ids,
                code = %error.code,
                "leases granted with a completion could not be answered; they will expire"
            );
            Vec::new()
        }
    }
}

#[utoipa::path(
    post, path = "/v1/leases/{lease_id}/fail", tag = "leases",
    params(("lease_id" = agentd_schemas::LeaseId, Path, description = "The lease, `lease_<n>`")),
    request_body = agentd_schemas::api::FailRequest,
    responses(
        (status = 200, description = "Failed: queued for a retry, scheduled, or dead", body = agentd_schemas::api::JobTransitionResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, or `string_too_long`: `log_tail` over 8192 bytes", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn fail(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(lease_id): Path<String>,
    ApiJson(request): ApiJson<FailRequest>,
) -> ApiResult<Json<JobTransitionResponse>> {
    let lease_id: LeaseId = parse_id(&lease_id)?;
    let retryable = request.retryable.unwrap_or(true);
    Ok(Json(
        state
            .sequencer
            .call(
                Fail {
                    lease_id,
                    error: request.error,
                    retryable,
                    log_tail: request.log_tail,
                },
                caller.actor(),
            )
            .await?,
    ))
}

/// Most completions in one `POST /v1/leases/complete`.
pub const COMPLETE_MANY_MAX: usize = 10_000;

#[utoipa::path(
    post, path = "/v1/leases/complete", tag = "leases", request_body = agentd_schemas::api::CompleteManyRequest,
    responses(
        (status = 200, description = "One result per completion, in order; each lease is fenced on its own, and an item whose `log_tail` is over 8192 bytes fails alone (`string_too_long`)", body = agentd_schemas::api::CompleteManyResponse),
        (status = 413, description = "`body_too_large` or `payload_too_large`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`batch_too_large` or `invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn complete_many(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(request): ApiJson<CompleteManyRequest>,
) -> ApiResult<Json<CompleteManyResponse>> {
    if request.completions.is_empty() {
        return Err(ApiError::invalid(
            "completions: must contain at least one item",
        ));
    }
    if request.completions.len() > COMPLETE_MANY_MAX {
        return Err(ApiError::over_limit(
            ErrorCode::BatchTooLarge,
            format!(
                "completions: {} items is over the limit of {COMPLETE_MANY_MAX} per request",
                request.completions.len()
            ),
        ));
    }
    let items = request.completions;
    let lease_ids: Vec<LeaseId> = items.iter().map(|item| item.lease_id).collect();
    let (lsn, outcomes) = state
        .sequencer
        .call(CompleteMany { items }, caller.actor())
        .await?;
    let results = lease_ids
        .into_iter()
        .zip(outcomes)
        .map(|(lease_id, outcome)| match outcome {
            Ok(job_id) => CompleteItemResult {
                lease_id,
                job_id: Some(job_id),
                error: None,
            },
            Err(error) => {
                let api_error = ApiError::from(error);
                CompleteItemResult {
                    lease_id,
                    job_id: None,
                    error: Some(ErrorBody {
                        code: api_error.code.to_string(),
                        message: api_error.message,
                    }),
                }
            }
        })
        .collect();
    Ok(Json(CompleteManyResponse { results, lsn }))
}
