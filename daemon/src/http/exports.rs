//! Export, schedule and dataset-build routes (`docs/exports.md`, "HTTP API"):
//! `GET/POST /v1/exports`, `GET /v1/exports/{export_id}`, `GET /v1/schedules`,
//! `GET/POST /v1/datasets/builds`. Reads need the read permission, runs the admin one.
//!
//! A run is handed to the export runner (one at a time); the handler waits for it up to just
//! under the request timeout and answers 202 `running` past that (the run goes on and is listed
//! once recorded).

use super::auth_layer::CallerExt;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::{ApiResult, AppState, SharedState};
use crate::export::build;
use crate::export::ledger::{RecordedBuild, RecordedExport};
use crate::export::primary_link::PrimaryError;
use crate::export::remote_record::{RemoteRecordError, RunRecord};
use crate::export::runner::{Caller, ExportService, RunError};
use agentd_schemas::export_api::{
    DatasetBuildListResponse, DatasetBuildRequest, DatasetBuildResponse, DatasetBuildView,
    ExportListResponse, ExportShowResponse, ExportView, RecordRunRequest, RecordRunResponse,
    RunExportRequest, RunExportResponse, ScheduleListResponse, ScheduleView, WatermarkView,
};
use agentd_schemas::ErrorCode;
use axum::extract::State;
use axum::http::HeaderMap;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, merged into the API router; each handler's `#[utoipa::path]` gives its path and
/// method and documents it in `/openapi.json`.
pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list, run))
        .routes(routes!(show))
        .routes(routes!(schedules))
        .routes(routes!(list_builds, build_dataset))
        .routes(routes!(record))
        .routes(routes!(super::downloads::file))
        .routes(routes!(super::downloads::latest_build))
}

fn export_view(service: &ExportService, recorded: &RecordedExport) -> ExportView {
    let event = &recorded.event;
    ExportView {
        export_id: event.export_id.clone(),
        kind: event.kind,
        format: event.format,
        after_lsn: event.after_lsn,
        to_lsn: event.to_lsn,
        dir: service.settings.root.join(&event.dir).display().to_string(),
        url: recorded.copied_to.clone(),
        rows: event.rows,
        files: event.files.clone(),
        manifest_sha256: event.manifest_sha256.clone(),
        schema_version: event.schema_version,
        schedule: event.schedule.clone(),
        recorded_lsn: recorded.lsn,
        recorded_at_ms: recorded.ts_ms,
    }
}

pub(super) fn build_view(service: &ExportService, recorded: &RecordedBuild) -> DatasetBuildView {
    let event = &recorded.event;
    DatasetBuildView {
        dataset_key: event.dataset_key.clone(),
        build_id: event.build_id.clone(),
        spec: event.spec.clone(),
        to_lsn: event.to_lsn,
        dir: service.settings.root.join(&event.dir).display().to_string(),
        url: recorded.copied_to.clone(),
        rows: event.rows,
        files: event.files.clone(),
        manifest_sha256: event.manifest_sha256.clone(),
        recorded_lsn: recorded.lsn,
        lineage: None,
    }
}

fn run_error(error: RunError) -> ApiError {
    match error {
        RunError::Invalid(message) => ApiError::invalid(message),
        RunError::Busy => ApiError::new(ErrorCode::Busy, error.to_string()),
        RunError::Sequencer(error) => error.into(),
        RunError::Stopped => ApiError::new(ErrorCode::ShuttingDown, error.to_string()),
        RunError::Lagging(_) => ApiError::new(ErrorCode::Timeout, error.to_string()),
        RunError::Refused(
            RemoteRecordError::Invalid(message) | RemoteRecordError::Conflict(message),
        ) => ApiError::new(ErrorCode::Conflict, message),
        RunError::Refused(RemoteRecordError::Store(message)) => {
            ApiError::new(ErrorCode::Unavailable, message)
        }
        // A replica's run the primary refused: the primary's code, so a caller without the
        // admin role on the primary gets 403 here too.
        RunError::Primary(PrimaryError::Refused { code, .. }) => {
            ApiError::new(code, error.to_string())
        }
        RunError::Primary(PrimaryError::Unreachable { .. }) => {
            tracing::warn!("{error}");
            ApiError::new(ErrorCode::PrimaryUnavailable, error.to_string())
        }
        RunError::Primary(PrimaryError::NotCopied(_)) => {
            ApiError::new(ErrorCode::Unavailable, error.to_string())
        }
        // An operator's route: the message (a path and an IO error) is what they need to act.
        RunError::Export(_) => {
            tracing::error!("export failed: {error}");
            ApiError::new(ErrorCode::ExportFailed, error.to_string())
        }
    }
}

/// How long a run request waits before answering 202.
fn run_wait(state: &AppState) -> Duration {
    state
        .limits
        .request_timeout
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(100))
}

fn still_running() -> ApiError {
    ApiError::new(ErrorCode::Running,
        "the run is still going; it is listed by GET /v1/exports (or /v1/datasets/builds) once recorded",
    )
}

/// `GET /v1/exports`: recorded exports, newest first, and the watermark of each kind.
#[utoipa::path(
    get, path = "/v1/exports", tag = "exports",
    responses((status = 200, description = "Recorded exports, newest first, and the watermarks", body = agentd_schemas::export_api::ExportListResponse))
)]
async fn list(State(state): State<SharedState>) -> ApiResult<Json<ExportListResponse>> {
    let service = &state.exports;
    let answer = service.with_ledger(|ledger| ExportListResponse {
        root: service.settings.root.display().to_string(),
        exports: ledger
            .exports()
            .iter()
            .rev()
            .map(|recorded| export_view(service, recorded))
            .collect(),
        watermarks: ledger
            .watermarks()
            .map(|((kind, format), lsn)| WatermarkView { kind, format, lsn })
            .collect(),
    });
    Ok(Json(answer))
}

/// `GET /v1/exports/{export_id}`: the recorded export and its manifest from disk.
#[utoipa::path(
    get, path = "/v1/exports/{export_id}", tag = "exports",
    params(("export_id" = String, Path, description = "The export id")),
    responses(
        (status = 200, description = "The export and its manifest", body = agentd_schemas::export_api::ExportShowResponse),
        (status = 404, description = "`not_found`", body = agentd_schemas::api::ErrorBody),
    )
)]
async fn show(
    State(state): State<SharedState>,
    Path(export_id): Path<String>,
) -> ApiResult<Json<ExportShowResponse>> {
    let service = state.exports.clone();
    let export = service
        .with_ledger(|ledger| {
            ledger
                .export(&export_id)
                .map(|recorded| export_view(&service, recorded))
        })
        .ok_or_else(|| ApiError::not_found(format!("no export {export_id:?} is recorded")))?;
    let manifest =
        super::downloads::read_manifest(&service, &export.dir, export.url.is_some()).await?;
    Ok(Json(ExportShowResponse { export, manifest }))
}

/// `POST /v1/exports`: runs an export now (incremental from the watermark unless `full`).
#[utoipa::path(
    post, path = "/v1/exports", tag = "exports", request_body = agentd_schemas::export_api::RunExportRequest,
    responses(
        (status = 201, description = "Exported now", body = agentd_schemas::export_api::RunExportResponse),
        (status = 200, description = "Nothing new, or already exported", body = agentd_schemas::export_api::RunExportResponse),
        (status = 202, description = "`running`: still going after the request timeout; listed once recorded", body = agentd_schemas::api::ErrorBody),
        (status = 429, description = "`busy`: the run queue is full (64 export and build runs already waiting; runs go one at a time); retry later", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
async fn run(
    State(state): State<SharedState>,
    caller: CallerExt,
    headers: HeaderMap,
    ApiJson(request): ApiJson<RunExportRequest>,
) -> ApiResult<(StatusCode, Json<RunExportResponse>)> {
    let service = state.exports.clone();
    let caller = run_caller(&caller, &headers);
    let call = service.export(request.kind, request.format, request.full, caller);
    let outcome = match tokio::time::timeout(run_wait(&state), call).await {
        Ok(outcome) => outcome.map_err(run_error)?,
        Err(_) => return Err(still_running()),
    };
    let export = outcome.export_id.as_deref().and_then(|id| {
        service.with_ledger(|ledger| {
            ledger
                .export(id)
                .map(|recorded| export_view(&service, recorded))
        })
    });
    let export = export.or_else(|| {
        let elsewhere = outcome.recorded_elsewhere.as_ref()?;
        Some(export_view(&service, elsewhere))
    });
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(RunExportResponse {
            created: outcome.created,
            export,
            watermark: outcome.watermark,
        }),
    ))
}

/// `GET /v1/schedules`: each schedule with its next and last run.
#[utoipa::path(
    get, path = "/v1/schedules", tag = "exports",
    responses((status = 200, description = "Each schedule with its next and last run", body = agentd_schemas::export_api::ScheduleListResponse))
)]
async fn schedules(State(state): State<SharedState>) -> ApiResult<Json<ScheduleListResponse>> {
    let service = &state.exports;
    let now_ms = super::now_ms();
    let schedules = state
        .schedules
        .iter()
        .map(|schedule| {
            let config = &schedule.config;
            let last = service.with_ledger(|ledger| {
                ledger.last_fired(&config.name).map(|fired| {
                    let completed = ledger.export(&fired.event.export_id).is_some();
                    (
                        fired.event.slot_ms,
                        fired.event.export_id.clone(),
                        completed,
                    )
                })
            });
            let next =
                crate::schedule::next_slot(schedule, last.as_ref().map(|last| last.0), now_ms);
            ScheduleView {
                name: config.name.clone(),
                cron: config.cron.clone(),
                timezone: config.timezone.clone(),
                kind: config.kind,
                format: config.format,
                full: config.full,
                run_missed_at_startup: config.run_missed_at_startup,
                next_run_ms: next,
                last_run_ms: last.as_ref().map(|last| last.0),
                last_export_id: last.as_ref().map(|last| last.1.clone()),
                last_completed: last.as_ref().is_some_and(|last| last.2),
            }
        })
        .collect();
    Ok(Json(ScheduleListResponse { schedules }))
}

/// Query of `GET /v1/datasets/builds`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BuildListQuery {
    /// Only builds of this dataset key (`name-version`).
    dataset_key: Option<String>,
    /// Only this build (`bld_...`), with its lineage read from its manifest.
    build_id: Option<String>,
}

/// `GET /v1/datasets/builds`: recorded builds in log order.
#[utoipa::path(
    get, path = "/v1/datasets/builds", tag = "exports", params(BuildListQuery),
    responses((status = 200, description = "Recorded dataset builds in log order", body = agentd_schemas::export_api::DatasetBuildListResponse))
)]
async fn list_builds(
    State(state): State<SharedState>,
    ApiQuery(query): ApiQuery<BuildListQuery>,
) -> ApiResult<Json<DatasetBuildListResponse>> {
    let service = &state.exports;
    let builds = service.with_ledger(|ledger| {
        ledger
            .builds()
            .iter()
            .filter(|recorded| {
                let event = &recorded.event;
                query
                    .dataset_key
                    .as_ref()
                    .is_none_or(|key| event.dataset_key == *key)
                    && query
                        .build_id
                        .as_ref()
                        .is_none_or(|id| event.build_id == *id)
            })
            .map(|recorded| build_view(service, recorded))
            .collect::<Vec<_>>()
    });
    // One build asked for: one manifest read (a list reads none, so its cost stays the ledger's).
    let builds = match (query.build_id.is_some(), builds.as_slice()) {
        (true, [one]) => vec![with_lineage(service, one.clone()).await?],
        _ => builds,
    };
    Ok(Json(DatasetBuildListResponse { builds }))
}

/// The build with the lineage its manifest gives (none if the manifest is gone).
async fn with_lineage(
    service: &ExportService,
    mut build: DatasetBuildView,
) -> Result<DatasetBuildView, ApiError> {
    let manifest =
        super::downloads::read_manifest(service, &build.dir, build.url.is_some()).await?;
    build.lineage = manifest.and_then(|manifest| manifest.dataset?.lineage);
    Ok(build)
}

/// `POST /v1/datasets/builds`: 201 with the new build, 200 when the same request over the same
/// log was built before.
#[utoipa::path(
    post, path = "/v1/datasets/builds", tag = "exports", request_body = agentd_schemas::export_api::DatasetBuildRequest,
    responses(
        (status = 201, description = "Built now", body = agentd_schemas::export_api::DatasetBuildResponse),
        (status = 200, description = "The same request over the same log was built before", body = agentd_schemas::export_api::DatasetBuildResponse),
        (status = 202, description = "`running`: still going after the request timeout", body = agentd_schemas::api::ErrorBody),
        (status = 429, description = "`busy`: the run queue is full (64 export and build runs already waiting; runs go one at a time); retry later", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
async fn build_dataset(
    State(state): State<SharedState>,
    caller: CallerExt,
    headers: HeaderMap,
    ApiJson(request): ApiJson<DatasetBuildRequest>,
) -> ApiResult<(StatusCode, Json<DatasetBuildResponse>)> {
    let spec = build::normalize(request).map_err(|error| ApiError::invalid(error.to_string()))?;
    let service = state.exports.clone();
    let call = service.build(spec, run_caller(&caller, &headers));
    let outcome = match tokio::time::timeout(run_wait(&state), call).await {
        Ok(outcome) => outcome.map_err(run_error)?,
        Err(_) => return Err(still_running()),
    };
    let build = service
        .with_ledger(|ledger| {
            ledger
                .build(&outcome.build_id)
                .map(|recorded| build_view(&service, recorded))
        })
        .or_else(|| {
            let elsewhere = outcome.recorded_elsewhere.as_ref()?;
            Some(build_view(&service, elsewhere))
        })
        .ok_or_else(|| {
            ApiError::internal("a finished build is not in the ledger", &outcome.build_id)
        })?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(DatasetBuildResponse {
            created: outcome.created,
            build,
        }),
    ))
}

/// Who asked for a run: the actor, and the `Authorization` header a replica passes on to its
/// primary.
fn run_caller(caller: &CallerExt, headers: &HeaderMap) -> Caller {
    Caller {
        actor: caller.actor(),
        authorization: headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    }
}

/// `POST /v1/exports/records`: a read replica asks this primary to record an export or build
/// it ran and copied to the storage URL they share (docs/storage.md, "Exports and builds on a
/// replica"). Checked against this log and the store before it is appended.
#[utoipa::path(
    post, path = "/v1/exports/records", tag = "exports", request_body = agentd_schemas::export_api::RecordRunRequest,
    responses(
        (status = 201, description = "Recorded now", body = agentd_schemas::export_api::RecordRunResponse),
        (status = 200, description = "The log already records it", body = agentd_schemas::export_api::RecordRunResponse),
        (status = 409, description = "`conflict`: not a record this log could hold (id, folder or range), an incremental export that overlaps the last one, a manifest or file in the store that disagrees, or no storage URL set here", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`: not `{\"export\": ...}` or `{\"build\": ...}` with the event's fields", body = agentd_schemas::api::ErrorBody),
        (status = 503, description = "`unavailable`: the store could not be read; retry", body = agentd_schemas::api::ErrorBody),
    )
)]
async fn record(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(request): ApiJson<RecordRunRequest>,
) -> ApiResult<(StatusCode, Json<RecordRunResponse>)> {
    let record = RunRecord::from_request(request);
    let call = state.exports.record(record, caller.actor());
    let answer = match tokio::time::timeout(run_wait(&state), call).await {
        Ok(answer) => answer.map_err(run_error)?,
        Err(_) => return Err(still_running()),
    };
    let status = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)))
}
