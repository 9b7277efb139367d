//! `/v1/datasets`: register a dataset, ingest batches of records, list datasets, stats.
//!
//! Bad-record policy: a record that fails validation is skipped and reported (its position,
//! field and message), and the batch's valid records are written as one log record, so a batch
//! is never half-applied: all its valid records become durable together or none do. Because
//! records are identified by position, fixing the bad lines and re-ingesting the whole file adds
//! exactly the missing positions and changes nothing else.

use super::write_locks::WriteKey;
use super::{append_and_apply, conflict, read_blocking, DomainApi};
use crate::domain::dataset::{validate_meta, validate_record};
use crate::domain::splits::{DatasetStats, DatasetSummary, RecordCounts, SplitCounts};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::{ApiResult, AppState};
use crate::projection::domain::datasets::IngestOutcome;
use agentd_schemas::domain_api::{
    DatasetCountsView, DatasetListResponse, DatasetStatsResponse, DatasetView,
    IngestRecordsRequest, IngestRecordsResponse, RecordCountsView, RegisterDatasetResponse,
    RejectedRecord, SplitCountsView,
};
use agentd_schemas::events::{DatasetMeta, DatasetRecord, DatasetRecordsIngested, Event};
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
    request_body(content = agentd_schemas::events::DatasetMeta, description = "The dataset's `_meta.json`"),
    responses(
        (status = 201, description = "Registered now", body = agentd_schemas::domain_api::RegisterDatasetResponse),
        (status = 200, description = "Already registered with the same meta", body = agentd_schemas::domain_api::RegisterDatasetResponse),
        (status = 409, description = "`conflict`: registered with a different meta", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request`, naming the field", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    caller: CallerExt,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<RegisterDatasetResponse>)> {
    let meta = validate_meta(&body).map_err(|error| ApiError::invalid(error.to_string()))?;
    let _dataset_writes = state
        .domain
        .lock(WriteKey::Dataset {
            source: &meta.source,
            version: &meta.version,
        })
        .await;
    state.settle_reads().await;
    let existing = dataset_meta(&state.domain, &meta.source, &meta.version).await?;
    if let Some(existing) = existing {
        if existing != meta {
            return Err(conflict(format!(
                "dataset {} {} is already registered with a different {}; register a new version instead",
                meta.source,
                meta.version,
                differing_fields(&existing, &meta).join(", ")
            )));
        }
        let dataset = dataset_view(&state.domain, &meta.source, &meta.version).await?;
        let answer = RegisterDatasetResponse {
            created: false,
            lsn: None,
            dataset,
        };
        return Ok((StatusCode::OK, Json(answer)));
    }
    let (source, version) = (meta.source.clone(), meta.version.clone());
    let lsn = append_and_apply(
        &state,
        caller.actor(),
        None,
        vec![Event::DatasetRegistered(meta.clone())],
    )
    .await?;
    // The projection keeps the first registration; an earlier writer that left the lock before
    // its record was applied (apply timed out, request cancelled) can be it.
    if let Some(kept) = dataset_meta(&state.domain, &source, &version).await? {
        if kept != meta {
            return Err(conflict(format!(
                "dataset {source} {version} was registered with a different {} just before this write (lsn {lsn}); the earlier one stands",
                differing_fields(&kept, &meta).join(", ")
            )));
        }
    }
    let dataset = dataset_view(&state.domain, &source, &version).await?;
    let answer = RegisterDatasetResponse {
        created: true,
        lsn: Some(lsn),
        dataset,
    };
    Ok((StatusCode::CREATED, Json(answer)))
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
    State(state): State<AppState>,
    caller: CallerExt,
    Path((source, version)): Path<(String, String)>,
    ApiJson(request): ApiJson<IngestRecordsRequest>,
) -> ApiResult<Json<IngestRecordsResponse>> {
    let batch_max = state.domain.records_per_batch_max;
    if request.records.len() > batch_max {
        return Err(ApiError::over_limit(
            "batch_too_large",
            format!(
                "records: {} records is over the limit of {batch_max} per request ([datasets] records_per_batch_max)",
                request.records.len()
            ),
        ));
    }
    let first_index = request.first_index.unwrap_or(0);
    let received = request.records.len() as u64;
    if first_index.checked_add(received).is_none() {
        return Err(ApiError::invalid(
            "first_index: the batch would end past the largest position",
        ));
    }
    let _dataset_writes = state
        .domain
        .lock(WriteKey::Dataset {
            source: &source,
            version: &version,
        })
        .await;
    state.settle_reads().await;
    if dataset_meta(&state.domain, &source, &version)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "dataset {source} {version} is not registered; POST its meta to /v1/datasets first"
        )));
    }
    let (batch_source, batch_version) = (source.clone(), version.clone());
    let domain = state.domain.projections.clone();
    let (events, already_received, rejected_records) =
        read_blocking("validating records", move || {
            let (runs, rejected) = validate_batch(first_index, &request.records);
            let datasets = domain.datasets();
            let (events, already_received) =
                unreceived_events(&batch_source, &batch_version, runs, |start, end| {
                    datasets.not_received(&batch_source, &batch_version, start, end)
                });
            (events, already_received, rejected)
        })
        .await?;
    let (lsn, outcome) = if events.is_empty() {
        (None, IngestOutcome::default())
    } else {
        let lsn = append_and_apply(&state, caller.actor(), None, events).await?;
        let domain = state.domain.projections.clone();
        let outcome = read_blocking("reading an ingest outcome", move || {
            domain.datasets().ingest_outcome(lsn)
        })
        .await?
        .ok_or_else(|| {
            ApiError::internal(
                "reading an ingest outcome",
                format!("the outcome of lsn {lsn} is no longer remembered"),
            )
        })?;
        (Some(lsn), outcome)
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
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<DatasetListResponse>> {
    state.settle_reads().await;
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
pub async fn stats(State(state): State<AppState>) -> ApiResult<Json<DatasetStatsResponse>> {
    state.settle_reads().await;
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

/// One `dataset_records_ingested` event per stretch of positions the dataset has not received
/// (`not_received(start, end)` lists them), and how many valid records were already received
/// and are left out, so resending a batch writes nothing.
fn unreceived_events(
    source: &str,
    version: &str,
    runs: Vec<Run>,
    not_received: impl Fn(u64, u64) -> Vec<std::ops::Range<u64>>,
) -> (Vec<Event>, u64) {
    let mut events = Vec::new();
    let mut already_received = 0;
    for (run_start, records) in runs {
        let run_end = run_start + records.len() as u64;
        let mut kept = 0;
        for range in not_received(run_start, run_end) {
            // `range` lies inside `run_start..run_end`, so the offsets index `records`.
            let (from, to) = (
                (range.start - run_start) as usize,
                (range.end - run_start) as usize,
            );
            let Some(slice) = records.get(from..to) else {
                continue;
            };
            kept += slice.len() as u64;
            events.push(Event::DatasetRecordsIngested(DatasetRecordsIngested {
                source: source.to_owned(),
                version: version.to_owned(),
                first_index: range.start,
                records: slice.to_vec(),
            }));
        }
        already_received += records.len() as u64 - kept;
    }
    (events, already_received)
}

/// The names of the meta fields that differ, for the conflict message.
fn differing_fields(old: &DatasetMeta, new: &DatasetMeta) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if old.license != new.license {
        fields.push("license");
    }
    if old.downloaded_at != new.downloaded_at {
        fields.push("downloaded_at");
    }
    if old.sha256 != new.sha256 {
        fields.push("sha256");
    }
    if old.num_records != new.num_records {
        fields.push("num_records");
    }
    if old.url != new.url {
        fields.push("url");
    }
    fields
}

async fn dataset_meta(
    api: &DomainApi,
    source: &str,
    version: &str,
) -> Result<Option<DatasetMeta>, ApiError> {
    let domain = api.projections.clone();
    let (source, version) = (source.to_owned(), version.to_owned());
    read_blocking("reading a dataset", move || {
        domain.datasets().meta(&source, &version)
    })
    .await
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
    use crate::projection::domain::positions::Positions;
    use serde_json::json;

    fn record(instruction: &str) -> Value {
        json!({"instruction": instruction, "pre": "a", "post": "b", "language": "python"})
    }

    /// (first_index, instructions) of each event.
    fn shape(events: &[Event]) -> Vec<(u64, Vec<String>)> {
        events
            .iter()
            .map(|event| match event {
                Event::DatasetRecordsIngested(batch) => (
                    batch.first_index,
                    batch
                        .records
                        .iter()
                        .map(|r| r.instruction.clone())
                        .collect(),
                ),
                other => panic!("unexpected event {other:?}"),
            })
            .collect()
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

    #[test]
    fn positions_already_received_are_left_out_before_writing() {
        let (runs, _) = validate_batch(0, &[record("a"), record("b"), record("c"), record("d")]);
        let mut received = Positions::default();
        received.insert(1, 3);
        let (events, already) =
            unreceived_events("s", "v", runs, |start, end| received.missing(start, end));
        assert_eq!(already, 2);
        assert_eq!(
            shape(&events),
            [(0, vec!["a".to_owned()]), (3, vec!["d".to_owned()])]
        );
        let (runs, _) = validate_batch(1, &[record("b"), record("c")]);
        let (events, already) =
            unreceived_events("s", "v", runs, |start, end| received.missing(start, end));
        assert_eq!(
            (events.len(), already),
            (0, 2),
            "a resent batch writes nothing"
        );
    }
}
