//! Events of exports, schedules and dataset builds (`docs/exports.md`).
//!
//! An export is a pure function of the log prefix up to its `to_lsn`, so these events record
//! what was decided (kind, LSN range, dataset request) and what came out (files with their
//! sha256), never wall-clock time: `agentd rebuild` re-creates every recorded export byte for byte
//! from the same log.

use crate::ids::Lsn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an export contains (its row shape and its layout on disk).
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
pub enum ExportKind {
    /// The full per-step trajectory log, one row per step.
    Trajectories,
    /// TRL SFT: verified steps as `messages`.
    TrlSft,
    /// TRL GRPO: processed records as `prompt` plus flat `ground_truth`, `task_id`, `language`.
    TrlGrpo,
    /// verl RL: processed records with `data_source`, `prompt`, `ability`, `reward_model`,
    /// `extra_info`.
    VerlRl,
    /// The processed splits: `processed/{language}/{split}-{i:05}-of-{n:05}`.
    Processed,
}

impl ExportKind {
    pub const ALL: [ExportKind; 5] = [
        ExportKind::Trajectories,
        ExportKind::TrlSft,
        ExportKind::TrlGrpo,
        ExportKind::VerlRl,
        ExportKind::Processed,
    ];

    /// Version of this kind's columns (also in each Parquet file's key-value metadata as
    /// `agentd.schema_version`, in the manifest and in the export record). A column's meaning
    /// never changes in place: a change bumps its kind's version.
    /// - 1: every kind as first released.
    /// - 2 (`trajectories`, `trl_sft`): rows carry `rollout_id` and `group`; `trajectories` also
    ///   `rollout_reward` and `advantage` (`docs/exports.md`).
    /// - 3 (`trl_sft`), 2 (`trl_grpo`, `verl_rl`): with training settings recorded, the
    ///   conversations open with the system prompt and the user turn carries the agent state;
    ///   SFT takes steps by reward; the record views carry what a reward function needs.
    pub fn schema_version(self) -> u32 {
        match self {
            ExportKind::TrlSft => 3,
            ExportKind::Trajectories | ExportKind::TrlGrpo | ExportKind::VerlRl => 2,
            ExportKind::Processed => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Trajectories => "trajectories",
            ExportKind::TrlSft => "trl_sft",
            ExportKind::TrlGrpo => "trl_grpo",
            ExportKind::VerlRl => "verl_rl",
            ExportKind::Processed => "processed",
        }
    }
}

impl std::str::FromStr for ExportKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ExportKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                format!("unknown export kind {text:?}; expected one of trajectories, trl_sft, trl_grpo, verl_rl, processed")
            })
    }
}

/// The file format of an export.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Apache Parquet, zstd-compressed.
    #[default]
    Parquet,
    /// JSON Lines (processed splits only).
    Jsonl,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Jsonl => "jsonl",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "parquet" => Ok(ExportFormat::Parquet),
            "jsonl" => Ok(ExportFormat::Jsonl),
            _ => Err(format!(
                "unknown export format {text:?}; expected parquet or jsonl"
            )),
        }
    }
}

/// One file of an export, relative to the export's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportedFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// The schedule slot that caused an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleSlot {
    pub schedule: String,
    /// The cron occurrence, ms since the Unix epoch.
    pub slot_ms: u64,
}

/// An export is complete: its files are under their final names and `manifest.json` is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportRecorded {
    /// Derived from kind, format and range (`exp_trajectories_0_1200`), so the same export of
    /// the same log always has the same id.
    pub export_id: String,
    pub kind: ExportKind,
    pub format: ExportFormat,
    /// Exclusive lower bound of the LSN range (0 for a full export).
    pub after_lsn: Lsn,
    /// Inclusive upper bound of the LSN range.
    pub to_lsn: Lsn,
    /// The export's directory, relative to the exports root.
    pub dir: String,
    pub rows: u64,
    pub files: Vec<ExportedFile>,
    pub manifest_sha256: String,
    pub schema_version: u32,
    /// Set when a schedule fired it.
    pub schedule: Option<ScheduleSlot>,
    /// With a storage URL: the folder the export was copied to before it was recorded, ending
    /// in `/` (a file's URL is this plus its `path`); absent when no URL was set or the copy
    /// failed (a later copy is an [`ExportCopied`]). Not part of the manifest, which stays a
    /// function of the log. Added later: left out when absent, so older records keep their
    /// bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_to: Option<String>,
}

/// A recorded export or dataset build whose copy to object storage failed when it was recorded
/// was copied later (the runner retries with backoff): its folder in the store, ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCopied {
    /// The export id (`exp_...`) or build id (`bld_...`).
    pub export_id: String,
    pub copied_to: String,
}

/// A schedule fired: the export it runs is decided here (kind, range, id), so a restart resumes
/// exactly this export instead of running the slot again or skipping it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleFired {
    pub schedule: String,
    /// The cron occurrence, ms since the Unix epoch.
    pub slot_ms: u64,
    pub kind: ExportKind,
    pub format: ExportFormat,
    pub after_lsn: Lsn,
    pub to_lsn: Lsn,
    pub export_id: String,
}

/// Which rows a dataset build selects from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BuildSource {
    /// Kept processed records.
    #[default]
    Records,
    /// Trajectory steps.
    Trajectories,
}

/// How a dataset build orders rows before `limit`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BuildStrategy {
    /// Newest first (highest LSN first).
    #[default]
    Latest,
    /// A seeded shuffle (SHA-256 of the seed and the row's key).
    Random,
}

/// A dataset build request, as recorded (normalized: filter values sorted and unique).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetBuildSpec {
    pub name: String,
    pub version: String,
    pub source: BuildSource,
    pub strategy: BuildStrategy,
    pub seed: Option<u64>,
    pub limit: Option<u64>,
    /// Field name to accepted values (a row matches when every field matches one value).
    pub filters: BTreeMap<String, Vec<String>>,
    /// The rows' shape, when not the source's own kind (left out then, so a build recorded
    /// before views existed keeps its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<ExportKind>,
    /// A label given at build time: the training run the build is for (left out when absent,
    /// so an unlabelled build keeps the id it had before labels existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_run_id: Option<String>,
    /// A label given at build time: the session (notebook, sweep) that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A dataset build is complete (files renamed, manifest written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetBuilt {
    /// `name-version`.
    pub dataset_key: String,
    /// Derived from the request and `to_lsn` (`bld_` and 16 hex digits).
    pub build_id: String,
    pub spec: DatasetBuildSpec,
    /// The log prefix the build selected from.
    pub to_lsn: Lsn,
    /// The build's directory, relative to the exports root.
    pub dir: String,
    pub rows: u64,
    pub files: Vec<ExportedFile>,
    pub manifest_sha256: String,
    pub schema_version: u32,
    /// As in [`ExportRecorded::copied_to`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_to: Option<String>,
}
