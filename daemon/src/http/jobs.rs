//! `/v1/jobs`: submit (single and batch), show, list, cancel, retry.

use super::error::ApiError;
use super::extract::{parse_id, ApiJson, ApiQuery};
use super::{now_ms, ApiResult, SharedState};
use crate::auth::Role;
use crate::http::auth_layer::CallerExt;
use crate::projection::jobs::{self as job_projection, JobFilter};
use crate::sequencer::{Cancel, Retry, Submit};
use agentd_schemas::api::{
    BatchSubmitRequest, BatchSubmitResponse, JobListResponse, JobStateName, JobTransitionResponse,
    JobView, SubmitJobRequest, SubmitJobResponse,
};
use agentd_schemas::ErrorCode;
use agentd_schemas::JobId;
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

/// Most jobs one list page returns.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Most job records one list request examines.
pub const LIST_SCAN_MAX: usize = 100_000;

#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", request_body = agentd_schemas::api::SubmitJobRequest,
    responses(
        (status = 201, description = "Submitted (or deduplicated by `idempotency_key`)", body = agentd_schemas::api::SubmitJobResponse),
        (status = 413, description = "`body_too_large` or `payload_too_large` (`[queue] payload_bytes_max`)", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, `too_many_tags` or `string_too_long`, naming the field", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(request): ApiJson<SubmitJobRequest>,
) -> ApiResult<(StatusCode, Json<SubmitJobResponse>)> {
    let mut answers = state
        .sequencer
        .call(
            Submit {
                requests: vec![request],
            },
            caller.actor(),
        )
        .await?;
    let answer = answers
        .pop()
        .ok_or_else(|| ApiError::internal("submit", "no answer for the submitted job"))?;
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(
    post, path = "/v1/jobs/batch", tag = "jobs", request_body = agentd_schemas::api::BatchSubmitRequest,
    responses(
        (status = 201, description = "All jobs submitted in one log record", body = agentd_schemas::api::BatchSubmitResponse),
        (status = 413, description = "`body_too_large` or `payload_too_large`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`batch_too_large` (`[queue] batch_jobs_max`), `invalid_request`, `too_many_tags` or `string_too_long`; nothing is submitted", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn submit_batch(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(request): ApiJson<BatchSubmitRequest>,
) -> ApiResult<(StatusCode, Json<BatchSubmitResponse>)> {
    let jobs = state
        .sequencer
        .call(
            Submit {
                requests: request.jobs,
            },
            caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(BatchSubmitResponse { jobs })))
}

#[utoipa::path(
    get, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = agentd_schemas::JobId, Path, description = "The job, `job_<n>`")),
    responses(
        (status = 200, description = "The job with its history", body = agentd_schemas::api::JobView),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`: malformed id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let job_id: JobId = parse_id(&job_id)?;
    state.settle_reads().await;
    let db = state.projections.db().clone();
    let (record, history) =
        tokio::task::spawn_blocking(move || -> Result<_, job_projection::JobsError> {
            let Some(record) = job_projection::read_job(&db, job_id)? else {
                return Ok((None, Vec::new()));
            };
            Ok((Some(record), job_projection::read_history(&db, job_id)?))
        })
        .await
        .map_err(|error| ApiError::internal("reading a job", error))?
        .map_err(|error| ApiError::internal("reading a job", error))?;
    let record = record.ok_or_else(|| ApiError::not_found(format!("job {job_id} not found")))?;
    if caller.0.role == Role::Submit && record.submitted_by != caller.0.name {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a submit token may read only the jobs it submitted",
        ));
    }
    Ok(Json(job_projection::view(record, Some(history), now_ms())))
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs of this queue.
    queue: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<JobStateName>)]
    state: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only jobs after this one (the previous page's `next_after`).
    #[param(value_type = Option<JobId>)]
    after: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "One page of jobs in id order", body = agentd_schemas::api::JobListResponse),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobListResponse>> {
    let filter = JobFilter {
        queue: query.queue,
        state: query
            .state
            .as_deref()
            .map(str::parse::<JobStateName>)
            .transpose()
            .map_err(ApiError::invalid)?,
    };
    let after = match query.after.as_deref() {
        Some(text) => parse_id::<JobId>(text)?,
        None => JobId(0),
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {LIST_LIMIT_MAX}"
        )));
    }
    state.settle_reads().await;
    let db = state.projections.db().clone();
    let now = now_ms();
    let (records, next_after) = tokio::task::spawn_blocking(move || {
        job_projection::list(&db, &filter, after, limit, LIST_SCAN_MAX, now)
    })
    .await
    .map_err(|error| ApiError::internal("listing jobs", error))?
    .map_err(|error| ApiError::internal("listing jobs", error))?;
    let jobs = records
        .into_iter()
        .map(|record| {
            // Like the history, the tail (up to 8 KiB a job) is for the single-job view only.
            let mut view = job_projection::view(record, None, now);
            view.log_tail = None;
            view
        })
        .collect();
    Ok(Json(JobListResponse { jobs, next_after }))
}

#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = agentd_schemas::JobId, Path, description = "The job, `job_<n>`")),
    responses(
        (status = 200, description = "Cancelled", body = agentd_schemas::api::JobTransitionResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`invalid_state`: the job already finished", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`: malformed id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobTransitionResponse>> {
    let job_id: JobId = parse_id(&job_id)?;
    Ok(Json(
        state
            .sequencer
            .call(Cancel { job_id }, caller.actor())
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/retry", tag = "jobs",
    params(("job_id" = agentd_schemas::JobId, Path, description = "The job, `job_<n>`")),
    responses(
        (status = 200, description = "Queued again", body = agentd_schemas::api::JobTransitionResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`invalid_state`: only dead jobs can be retried", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`: malformed id", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(job_id): Path<String>,
) -> ApiResult<Json<JobTransitionResponse>> {
    let job_id: JobId = parse_id(&job_id)?;
    Ok(Json(
        state
            .sequencer
            .call(Retry { job_id }, caller.actor())
            .await?,
    ))
}
