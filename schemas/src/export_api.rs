//! Export files and HTTP bodies of exports, schedules and dataset builds (`docs/exports.md`).
//!
//! [`ExportManifest`] is the `manifest.json` written next to every export's files: everything a
//! reader needs to check the files (sha256, row counts) and to say where they came from (LSN
//! range, schema version, tokenizer, agentd version). It holds no wall-clock time, so the same log
//! gives a byte-identical manifest.

use crate::events::{
    BuildSource, BuildStrategy, DatasetBuildSpec, DatasetBuilt, ExportFormat, ExportKind,
    ExportRecorded, ExportedFile, ScheduleSlot,
};
use crate::ids::Lsn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the [`ExportManifest`] layout.
pub const MANIFEST_VERSION: u32 = 1;

/// An LSN range: `after` exclusive, `to` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LsnRange {
    pub after: Lsn,
    pub to: Lsn,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportManifest {
    pub manifest_version: u32,
    /// The export id, or the build id of a dataset build.
    pub export_id: String,
    /// The row shape (a dataset build of records has the `processed` shape, of trajectories the
    /// `trajectories` shape).
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub lsn_range: LsnRange,
    pub schema_version: u32,
    /// The tokenizer (tiktoken encoding) behind the token counts in the files.
    pub tokenizer: String,
    pub agentd_version: String,
    pub rows: u64,
    pub files: Vec<ExportedFile>,
    /// Present for dataset builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetManifest>,
    // No storage URL here: the manifest is a function of the log alone (`agentd rebuild`
    // without the daemon's config writes the same bytes); where a copy went is in the log's
    // `export_recorded` / `dataset_built` / `export_copied` records and the API's views. A
    // manifest written by an earlier build with a `url` still parses (unknown fields are
    // ignored).
}

/// The dataset part of a build's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetManifest {
    pub dataset_key: String,
    pub build_id: String,
    pub request: DatasetBuildSpec,
    /// Where the rows came from and what shaped them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<BuildLineage>,
}

/// A build's lineage: all of it follows from the log and the settings, so a rebuild writes the
/// same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildLineage {
    /// The build of the same dataset key recorded before this one, if any.
    pub parent_build_id: Option<String>,
    /// The registered datasets the rows came from (a step's task names its dataset record),
    /// by source and version.
    pub sources: Vec<SourceDataset>,
    /// The settings in force that shape the files.
    pub settings: BuildSettings,
    /// The labels given at build time (also in `request`).
    pub training_run_id: Option<String>,
    pub session_id: Option<String>,
}

/// A source dataset of a build, as registered (`agentctl ingest --meta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceDataset {
    pub source: String,
    pub version: String,
    /// SPDX license expression; null for a dataset whose metadata was never registered.
    pub license: Option<String>,
    /// sha256 of the source as downloaded, as registered.
    pub sha256: Option<String>,
    pub url: Option<String>,
}

/// The `[exports]` and encoding settings a build was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildSettings {
    pub zstd_level: i32,
    pub shard_bytes_max: u64,
    pub row_group_bytes_max: u64,
    /// `[datasets] encoding`: token counts of record rows.
    pub datasets_encoding: String,
    /// `[state] encoding`: token counts of step rows.
    pub state_encoding: String,
}

// ---------------------------------------------------------------------------------------------
// Exports

/// `POST /v1/exports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunExportRequest {
    pub kind: ExportKind,
    #[serde(default)]
    pub format: ExportFormat,
    /// Export everything up to now instead of only what came after the last export of this
    /// kind and format (the watermark).
    #[serde(default)]
    pub full: bool,
}

/// A recorded export, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportView {
    pub export_id: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub after_lsn: Lsn,
    pub to_lsn: Lsn,
    /// Absolute directory of the export on the daemon's machine.
    pub dir: String,
    /// The export's folder in object storage, ending in `/` (a file's URL is this plus its
    /// `path`): present only once the log records that it was copied there (with a storage
    /// URL, when the copy succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub rows: u64,
    pub files: Vec<ExportedFile>,
    pub manifest_sha256: String,
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSlot>,
    /// The frame that recorded the export, and its time.
    pub recorded_lsn: Lsn,
    pub recorded_at_ms: u64,
}

/// `POST /v1/exports` answers with the export, or says there was nothing new to export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunExportResponse {
    /// False when this export (same kind, format and range) was already recorded, or when
    /// nothing happened since the watermark (`export` is then absent).
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportView>,
    /// The watermark after the call.
    pub watermark: Lsn,
}

/// The last exported LSN of one kind and format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatermarkView {
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub lsn: Lsn,
}

/// `GET /v1/exports`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportListResponse {
    /// Absolute path of the exports root on the daemon's machine.
    pub root: String,
    pub exports: Vec<ExportView>,
    pub watermarks: Vec<WatermarkView>,
}

/// `GET /v1/exports/{export_id}`: the recorded export and its manifest as read from disk
/// (absent if the files were removed since).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportShowResponse {
    pub export: ExportView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ExportManifest>,
}

// ---------------------------------------------------------------------------------------------
// Schedules

/// One configured schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub full: bool,
    pub run_missed_at_startup: bool,
    /// The next slot, ms since the Unix epoch (`None` if the expression never matches again).
    pub next_run_ms: Option<u64>,
    /// The last slot that fired, from the log.
    pub last_run_ms: Option<u64>,
    pub last_export_id: Option<String>,
    /// Whether the last fired export has been recorded (false while it runs, or after a crash
    /// until the daemon resumes it).
    pub last_completed: bool,
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleListResponse {
    pub schedules: Vec<ScheduleView>,
}

// ---------------------------------------------------------------------------------------------
// Dataset builds

/// `POST /v1/datasets/builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetBuildRequest {
    /// 1 to 64 of `A-Za-z0-9._-`, not starting with `.` (it names a directory).
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// As `name`.
    #[schema(pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")]
    pub version: String,
    #[serde(default)]
    pub source: BuildSource,
    #[serde(default)]
    pub strategy: BuildStrategy,
    /// Required by strategy `random`, refused with `latest`.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub limit: Option<u64>,
    /// `field -> accepted values`: at most 16 fields of the source (see `docs/exports.md`), each
    /// with 1 to 16 values; `verified` takes `true` or `false`, `reward_min` and
    /// `advantage_min` one finite number.
    #[serde(default)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// The rows' shape: an export kind of the source (records: `processed` (default),
    /// `trl_grpo`, `verl_rl`; trajectories: `trajectories` (default), `trl_sft`).
    #[serde(default)]
    pub view: Option<crate::events::ExportKind>,
    /// A label: the training run the build is for (1 to 128 of `A-Za-z0-9._:/-`). Labels are
    /// part of the request: the same request with another label is another build.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub training_run_id: Option<String>,
    /// A label: the session that asked for the build (as `training_run_id`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.:/-]{1,128}$")]
    pub session_id: Option<String>,
}

/// A recorded dataset build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetBuildView {
    pub dataset_key: String,
    pub build_id: String,
    pub spec: DatasetBuildSpec,
    pub to_lsn: Lsn,
    /// Absolute directory of the build on the daemon's machine.
    pub dir: String,
    /// The build's folder in object storage, ending in `/` (a file's URL is this plus its
    /// `path`): present only once the log records that it was copied there (with a storage
    /// URL, when the copy succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub rows: u64,
    pub files: Vec<ExportedFile>,
    pub manifest_sha256: String,
    pub recorded_lsn: Lsn,
    /// The lineage from the build's manifest on the daemon's disk (parent, sources, settings,
    /// labels): given only when one build is asked for (`GET /v1/datasets/builds?build_id=`),
    /// and absent if its manifest is gone from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<BuildLineage>,
}

/// `POST /v1/datasets/builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetBuildResponse {
    /// False when the same request over the same log was already built.
    pub created: bool,
    pub build: DatasetBuildView,
}

/// `POST /v1/exports/records` (admin): a read replica asks its primary to record an export or a
/// dataset build it wrote and copied to the storage URL they share (docs/storage.md, "Exports
/// and builds on a replica"): `{"export": {...}}` or `{"build": {...}}`, the event the primary
/// would have appended had it run the same request over the same log prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordRunRequest {
    /// An `export_recorded` event (its fields as in the log).
    Export(ExportRecorded),
    /// A `dataset_built` event (its fields as in the log).
    Build(DatasetBuilt),
}

/// Written by hand: the derived schema of an externally tagged enum lets each variant's object
/// hold other keys, which serde refuses (`{"export": ..., "build": ...}` is not a request).
impl utoipa::PartialSchema for RecordRunRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref};
        let variant = |key: &str, event: &str, description: &str| {
            ObjectBuilder::new()
                .property(key, Ref::from_schema_name(event))
                .required(key)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
                .description(Some(description))
        };
        OneOfBuilder::new()
            .item(variant("export", "ExportRecorded", "An `export_recorded` event (its fields as in the log)."))
            .item(variant("build", "DatasetBuilt", "A `dataset_built` event (its fields as in the log)."))
            .description(Some("`{\"export\": {...}}` or `{\"build\": {...}}`: the record a read replica asks its primary to append."))
            .into()
    }
}

impl utoipa::ToSchema for RecordRunRequest {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            ExportRecorded::name().into_owned(),
            ExportRecorded::schema(),
        ));
        <ExportRecorded as utoipa::ToSchema>::schemas(schemas);
        schemas.push((DatasetBuilt::name().into_owned(), DatasetBuilt::schema()));
        <DatasetBuilt as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `POST /v1/exports/records`: where the primary's log holds the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordRunResponse {
    /// False when the log already held a record of this export or build (same id).
    pub created: bool,
    /// The LSN of the record in the primary's log; a replica lists the export once it applied it.
    pub recorded_lsn: Lsn,
}

/// `GET /v1/datasets/builds`: in log order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetBuildListResponse {
    pub builds: Vec<DatasetBuildView>,
}

// ---------------------------------------------------------------------------------------------
// Rows

/// One line of a processed-splits JSONL export (the same columns as the Parquet files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessedRecordRow {
    pub source: String,
    pub version: String,
    pub index: u64,
    pub language: String,
    pub split: String,
    pub instruction: String,
    pub pre: String,
    pub post: String,
    pub tags: Vec<String>,
    pub metadata_json: String,
    pub tokens: u64,
    pub dedup_key: String,
    pub lsn: Lsn,
}
