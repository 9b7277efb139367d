//! `/v1/datasets`: register a dataset, ingest batches of records, list datasets, stats.
//!
//! Bad-record policy: a record that fails validation is skipped and reported (its position,
//! field and message), and the batch's valid records are written as one log record, so a batch
//! is never half-applied: all its valid records become durable together or none do. Because
//! records are identified by position, fixing the bad lines and re-ingesting the whole file adds
//! exactly the missing positions and changes nothing else.

use super::{decide_and_apply, read_blocking, settle_domain_reads, DomainApi};
use crate::domain::dataset::{validate_meta, validate_record};
use crate::domain::decide::{DomainCommand, DomainReply};
use crate::domain::splits::{DatasetStats, DatasetSummary, RecordCounts, SplitCounts};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::{ApiResult, SharedState};
use crate::projection::domain::datasets::IngestOutcome;
use agentd_schemas::domain_api::{
    DatasetCountsView, DatasetListResponse, DatasetStatsResponse, DatasetView,
    IngestRecordsRequest, IngestRecordsResponse, RecordCountsView, RegisterDatasetResponse,
    RejectedRecord, SplitCountsView, FIRST_INDEX_MAX,
};
use agentd_schemas::events::DatasetRecord;
use agentd_schemas::ErrorCode;
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

/// `POST /v1/datasets`: 201 when registered now, 200 when the same meta was registered before,
/// 409 `conflict` when the source and version are registered with a different meta.
#[utoipa::path(
    post, path = "/v1/datasets", tag = "datasets",
    request_body(content = agentd_schemas::domain_api::RegisterDatasetRequest, description = "The dataset's `_meta.json`"),
    responses(
        (status = 201, description = "Registered now", body = agentd_schemas::domain_api::RegisterDatasetResponse),
        (status = 200, description = "Already registered with the same meta", body = agentd_schemas::domain_api::RegisterDatasetResponse),
        (status = 409, description = "`conflict`: registered with a different meta", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, naming the field", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn register(
    State(state): State<SharedState>,
    caller: CallerExt,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<RegisterDatasetResponse>)> {
    let meta = validate_meta(&body).map_err(|error| ApiError::invalid(error.to_string()))?;
    let (source, version) = (meta.source.clone(), meta.version.clone());
    let command = DomainCommand::RegisterDataset(meta);
    let (lsn, reply) = decide_and_apply(&state, caller.actor(), command).await?;
    let DomainReply::DatasetRegistered { created } = reply else {
        return Err(ApiError::internal(
            "registering a dataset",
            format!("unexpected decision {reply:?}"),
        ));
    };
    let dataset = dataset_view(&state.domain, &source, &version).await?;
    let status = match created {
        true => StatusCode::CREATED,
        false => StatusCode::OK,
    };
    Ok((
        status,
        Json(RegisterDatasetResponse {
            created,
            lsn,
            dataset,
        }),
    ))
}

/// `POST /v1/datasets/{source}/{version}/records`: validates every record, writes the valid ones
/// (one log record), and answers with what happened to each.
#[utoipa::path(
    post, path = "/v1/datasets/{source}/{version}/records", tag = "datasets",
    params(("source" = String, Path, description = "Dataset source"), ("version" = String, Path, description = "Dataset version")),
    request_body = agentd_schemas::domain_api::IngestRecordsRequest,
    responses(
        (status = 200, description = "What happened to each record", body = agentd_schemas::domain_api::IngestRecordsResponse),
        (status = 404, description = "`not_found`: the dataset is not registered", body = agentd_schemas::api::ErrorBody),
        (status = 413, description = "`body_too_large` or `payload_too_large`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`batch_too_large` (`[datasets] records_per_batch_max`) or `invalid_request`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn ingest(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path((source, version)): Path<(String, String)>,
    ApiJson(request): ApiJson<IngestRecordsRequest>,
) -> ApiResult<Json<IngestRecordsResponse>> {
    let batch_max = state.domain.records_per_batch_max;
    if request.records.len() > batch_max {
        return Err(ApiError::over_limit(ErrorCode::BatchTooLarge,
            format!(
                "records: {} records is over the limit of {batch_max} per request ([datasets] records_per_batch_max)",
                request.records.len()
            ),
        ));
    }
    let first_index = request.first_index.unwrap_or(0);
    let received = request.records.len() as u64;
    // A bound of its own rather than "the batch must end by u64::MAX", which depends on the
    // batch's length and so cannot be stated in the OpenAPI document.
    if first_index > FIRST_INDEX_MAX {
        return Err(ApiError::invalid(format!(
            "first_index: must be at most {FIRST_INDEX_MAX}"
        )));
    }
    // Validation needs no state (it counts nothing), but a batch can be megabytes.
    let (runs, rejected_records) = read_blocking("validating records", move || {
        validate_batch(first_index, &request.records)
    })
    .await?;
    let command = DomainCommand::IngestRecords {
        source: source.clone(),
        version: version.clone(),
        runs,
    };
    let (lsn, reply) = decide_and_apply(&state, caller.actor(), command).await?;
    let DomainReply::Ingested { already_received } = reply else {
        return Err(ApiError::internal(
            "ingesting records",
            format!("unexpected decision {reply:?}"),
        ));
    };
    let outcome = match lsn {
        None => IngestOutcome::default(),
        Some(lsn) => {
            let domain = state.domain.projections.clone();
            read_blocking("reading an ingest outcome", move || {
                domain.datasets().ingest_outcome(lsn)
            })
            .await?
            .ok_or_else(|| {
                ApiError::internal(
                    "reading an ingest outcome",
                    format!("the outcome of lsn {lsn} is no longer remembered"),
                )
            })?
        }
    };
    let dataset = dataset_view(&state.domain, &source, &version).await?;
    Ok(Json(IngestRecordsResponse {
        source,
        version,
        first_index,
        received,
        accepted: outcome.accepted,
        resent: already_received + outcome.resent,
        duplicate: outcome.duplicates,
        over_token_cap: outcome.over_token_cap,
        unknown_language: outcome.unknown_language,
        kept: outcome.kept,
        rejected: rejected_records.len() as u64,
        rejected_records,
        lsn,
        dataset,
    }))
}

/// `GET /v1/datasets`.
#[utoipa::path(
    get, path = "/v1/datasets", tag = "datasets",
    responses((status = 200, description = "Every dataset with its progress", body = agentd_schemas::domain_api::DatasetListResponse))
)]
pub async fn list(State(state): State<SharedState>) -> ApiResult<Json<DatasetListResponse>> {
    settle_domain_reads(&state).await?;
    let domain = state.domain.projections.clone();
    let datasets = read_blocking("listing datasets", move || {
        domain.datasets().splits().datasets()
    })
    .await?;
    Ok(Json(DatasetListResponse {
        datasets: datasets.into_iter().map(summary_view).collect(),
    }))
}

/// `GET /v1/datasets/stats`.
#[utoipa::path(
    get, path = "/v1/datasets/stats", tag = "datasets",
    responses((status = 200, description = "Counts of the processed splits", body = agentd_schemas::domain_api::DatasetStatsResponse))
)]
pub async fn stats(State(state): State<SharedState>) -> ApiResult<Json<DatasetStatsResponse>> {
    settle_domain_reads(&state).await?;
    let domain = state.domain.projections.clone();
    let stats = read_blocking("computing dataset stats", move || {
        domain.datasets().splits().stats()
    })
    .await?;
    Ok(Json(stats_view(stats)))
}

/// Consecutive valid records: the position of the first, and the records.
type Run = (u64, Vec<DatasetRecord>);

/// Validates a batch: the valid records as runs of consecutive positions, and the invalid ones.
fn validate_batch(first_index: u64, records: &[Value]) -> (Vec<Run>, Vec<RejectedRecord>) {
    let mut runs: Vec<Run> = Vec::new();
    let mut rejected = Vec::new();
    let mut run_open = false;
    for (index, value) in (first_index..).zip(records) {
        match validate_record(value) {
            Ok(record) => match runs.last_mut() {
                Some((_, run)) if run_open => run.push(record),
                _ => {
                    runs.push((index, vec![record]));
                    run_open = true;
                }
            },
            Err(error) => {
                run_open = false;
                rejected.push(RejectedRecord {
                    index,
                    field: error.field,
                    message: error.message,
                });
            }
        }
    }
    (runs, rejected)
}

async fn dataset_view(
    api: &DomainApi,
    source: &str,
    version: &str,
) -> Result<DatasetView, ApiError> {
    let domain = api.projections.clone();
    let (wanted_source, wanted_version) = (source.to_owned(), version.to_owned());
    let summary = read_blocking("reading a dataset", move || {
        domain
            .datasets()
            .splits()
            .datasets()
            .into_iter()
            .find(|dataset| dataset.source == wanted_source && dataset.version == wanted_version)
    })
    .await?;
    summary.map(summary_view).ok_or_else(|| {
        ApiError::internal(
            "reading a dataset",
            format!("dataset {source} {version} missing after its write was applied"),
        )
    })
}

fn summary_view(summary: DatasetSummary) -> DatasetView {
    DatasetView {
        source: summary.source,
        version: summary.version,
        meta: summary.meta,
        records_received: summary.records_received,
        records_expected: summary.records_expected,
        complete: summary.complete,
    }
}

fn stats_view(stats: DatasetStats) -> DatasetStatsResponse {
    DatasetStatsResponse {
        encoding: stats.encoding,
        token_cap: stats.token_cap as u64,
        total: counts_view(stats.total),
        datasets: stats
            .datasets
            .into_iter()
            .map(|dataset| DatasetCountsView {
                source: dataset.source,
                version: dataset.version,
                counts: counts_view(dataset.counts),
            })
            .collect(),
    }
}

fn counts_view(counts: RecordCounts) -> RecordCountsView {
    RecordCountsView {
        records: counts.records,
        kept: counts.kept,
        duplicates: counts.duplicates,
        over_token_cap: counts.over_token_cap,
        unknown_language: counts.unknown_language,
        resent: counts.resent,
        languages: counts
            .languages
            .into_iter()
            .map(|(language, count)| (language.to_owned(), count))
            .collect(),
        splits: split_view(counts.splits),
        language_splits: counts
            .language_splits
            .into_iter()
            .map(|(language, splits)| (language.to_owned(), split_view(splits)))
            .collect(),
        total_tokens: counts.total_tokens,
        avg_tokens: counts.avg_tokens,
        p95_tokens: counts.p95_tokens.map(|tokens| tokens as u64),
        unknown_language_names: counts.unknown_language_names,
    }
}

fn split_view(splits: SplitCounts) -> SplitCountsView {
    SplitCountsView {
        train: splits.train,
        dev: splits.dev,
        test: splits.test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(instruction: &str) -> Value {
        json!({"instruction": instruction, "pre": "a", "post": "b", "language": "python"})
    }

    #[test]
    fn bad_records_split_the_batch_into_runs_and_are_reported_by_position() {
        let records = [
            record("a"),
            record("b"),
            json!({"instruction": "c", "pre": "a", "post": "b"}),
            record("d"),
            json!("not an object"),
        ];
        let (runs, rejected) = validate_batch(10, &records);
        let starts: Vec<(u64, usize)> = runs
            .iter()
            .map(|(start, run)| (*start, run.len()))
            .collect();
        assert_eq!(starts, [(10, 2), (13, 1)]);
        let fields: Vec<(u64, &str)> = rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(fields, [(12, "language"), (14, "$")]);
    }
}
