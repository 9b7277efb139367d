//! Datasets: registration (`_meta.json`), record ingest and its outcome, the dataset list and
//! the processed-split stats.

use super::rules::{DatasetName, DatasetUrl, DownloadedAt, LicenseExpression};
use crate::events::DatasetMeta;
use crate::ids::Lsn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

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
