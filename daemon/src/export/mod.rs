//! Exports: Parquet (and JSONL) files trainers read without conversion, written from the domain
//! projections as of an LSN; dataset builds; the ledger of recorded exports; the runner that
//! serializes them in the daemon. `docs/exports.md` lists every file layout and column.
//!
//! **Determinism.** An export is a pure function of the log prefix up to its `to` LSN (plus the
//! `[datasets]`/`[exports]` settings): rows come in a fixed order (steps by task and step,
//! records in log order), record batches hold a fixed number of rows, no wall-clock time is
//! written, and the export id is derived from kind, format and LSN range. Rows are filtered by
//! LSN, so exporting from a projection that has moved past `to` gives the same bytes as one
//! stopped at `to`: the daemon exports from its live projections, `agentd rebuild` from a fresh
//! replay, and both produce byte-identical files.
//!
//! **Crash safety.** Files are written under temp names, fsynced, renamed, and the manifest is
//! written last (see [`files`]). The `export_recorded` event is appended only after that.
//!
//! **Locks.** Rows are built under the projections' read locks one batch at a time and encoded
//! with the locks released, so an export of millions of rows never stalls the projector for
//! more than one batch.

pub mod build;
mod column_writer;
mod columns;
mod copies;
pub mod fault;
pub mod files;
pub mod ledger;
pub(crate) mod named_encoding;
pub mod primary_link;
mod records;
pub mod remote_record;
pub mod replay;
pub mod runner;
pub(crate) mod steps;
pub mod upload;
mod writers;
/// A step as an export of `(after, to]` sees it (its facts logged by `to`).
pub use steps::view_at;
use writers::{export_processed_jsonl, export_records, export_steps, SplitFilter};

use crate::projection::domain::DomainProjections;
use agentd_schemas::events::{ExportFormat, ExportKind, ExportedFile};
use agentd_schemas::export_api::{ExportManifest, LsnRange, MANIFEST_VERSION};
use agentd_schemas::Lsn;
use files::{FinishedGroup, ParquetSettings};
use std::path::{Path, PathBuf};

/// Rows per record batch (and per read-lock hold). Fixed, because batch boundaries shape row
/// groups and shards, which must not depend on anything but the rows.
pub const BATCH_ROWS: usize = 4096;

impl ExportSettings {
    /// The settings of `config` for a data directory (`root` overrides the exports root, as
    /// `agentd rebuild --out DIR` does with `DIR/exports`).
    pub fn new(
        config: &crate::config::Config,
        data_dir: &Path,
        root: Option<PathBuf>,
    ) -> Result<ExportSettings, ExportError> {
        let exports = &config.exports;
        if !(1..=22).contains(&exports.zstd_level) {
            return Err(ExportError::Settings("zstd_level must be 1 to 22".into()));
        }
        if exports.shard_bytes_max == 0 || exports.row_group_bytes_max == 0 {
            return Err(ExportError::Settings(
                "shard_bytes_max and row_group_bytes_max must be positive".into(),
            ));
        }
        let storage = crate::archive::open_configured(&config.storage)
            .map_err(|error| ExportError::Settings(error.to_string()))?;
        Ok(ExportSettings {
            root: root.unwrap_or_else(|| data_dir.join(&exports.dir)),
            storage,
            shard_bytes_max: exports.shard_bytes_max,
            row_group_bytes_max: exports.row_group_bytes_max,
            zstd_level: exports.zstd_level,
            state_encoding: config.state.encoding.clone(),
        })
    }
}

/// Where and how exports are written (`[exports]`).
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The exports root; each export is a directory under it.
    pub root: PathBuf,
    /// A shard is closed once it reaches this size (so a shard exceeds it by at most one batch).
    pub shard_bytes_max: u64,
    pub row_group_bytes_max: usize,
    pub zstd_level: i32,
    /// The tiktoken encoding of agent-state token counts (`[state] encoding`), for manifests
    /// of step exports.
    pub state_encoding: String,
    /// `[storage] url` opened: finished exports and builds are copied there (see [`upload`]).
    /// Where a copy went is recorded in the log, never in the manifest, so the manifest does
    /// not depend on it (a rebuild without the daemon's config writes the same bytes).
    pub storage: Option<crate::archive::ArchiveStore>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("invalid [exports] setting: {0}")]
    Settings(String),
    #[error("{0}")]
    Invalid(String),
    /// The files are complete on the daemon's disk but their copy to object storage failed;
    /// the export is not recorded, and running it again copies the same files.
    #[error(
        "written locally but not copied to {object}: {detail}; run it again to retry the copy"
    )]
    Upload { object: String, detail: String },
}

impl ExportError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A finished export or build: its manifest as written, and where it is.
#[derive(Debug, Clone)]
pub struct ExportOutcome {
    pub manifest: ExportManifest,
    pub manifest_sha256: String,
    /// The directory relative to the exports root.
    pub dir: String,
}

/// The id of an export: `exp_{kind}_{after}_{to}`, with `_jsonl` after the kind for JSONL.
pub fn export_id(kind: ExportKind, format: ExportFormat, after: Lsn, to: Lsn) -> String {
    match format {
        ExportFormat::Parquet => format!("exp_{}_{}_{}", kind.as_str(), after.0, to.0),
        ExportFormat::Jsonl => format!("exp_{}_jsonl_{}_{}", kind.as_str(), after.0, to.0),
    }
}

/// Checks that `format` is available for `kind` (JSONL: processed splits only).
pub fn check_format(kind: ExportKind, format: ExportFormat) -> Result<(), ExportError> {
    if format == ExportFormat::Jsonl && kind != ExportKind::Processed {
        return Err(ExportError::Invalid(format!(
            "format jsonl is available for the processed export only, not {}",
            kind.as_str()
        )));
    }
    Ok(())
}

/// Writes the export of `kind` over `(after, to]` from `domain`, which must have applied at
/// least up to `to`. An export whose manifest already exists is not written again.
pub fn write_export(
    domain: &DomainProjections,
    settings: &ExportSettings,
    kind: ExportKind,
    format: ExportFormat,
    after: Lsn,
    to: Lsn,
) -> Result<ExportOutcome, ExportError> {
    check_format(kind, format)?;
    let id = export_id(kind, format, after, to);
    let dir = settings.root.join(&id);
    if let Some(outcome) = read_existing(&dir, &id, &id)? {
        return Ok(outcome);
    }
    files::prepare_dir(&dir)?;
    let tokenizer = tokenizer_of(domain, settings, kind);
    let parquet = parquet_settings(settings, &id, kind, after, to, &tokenizer);
    let groups = write_groups(
        domain,
        settings,
        &dir,
        (kind, format),
        &parquet,
        (after, to),
    )?;
    let files = files::publish(&dir, groups)?;
    let head = ManifestHead {
        relative: id.clone(),
        id,
        kind,
        format,
        lsn_range: LsnRange { after, to },
        tokenizer,
        dataset: None,
    };
    finish_manifest(&dir, head, files)
}

/// The file groups of an export of `kind` and `format` over `(after, to]`.
fn write_groups(
    domain: &DomainProjections,
    settings: &ExportSettings,
    dir: &Path,
    (kind, format): (ExportKind, ExportFormat),
    parquet: &ParquetSettings,
    (after, to): (Lsn, Lsn),
) -> Result<Vec<FinishedGroup>, ExportError> {
    let groups = match (kind, format) {
        (ExportKind::Trajectories, _) => vec![export_steps::<steps::TrajectoryRows>(
            domain,
            settings,
            dir,
            "trajectories",
            steps::trajectory_schema(),
            parquet,
            (after, to),
            (
                SplitFilter::All,
                &steps::ExportInputs::at(domain, to, false),
            ),
        )?],
        // One file set per split, so a dev or test task's steps never train: `train`, `dev`,
        // `test`, and `unassigned` for tasks that are not a kept dataset record.
        (ExportKind::TrlSft, _) => {
            let inputs = steps::ExportInputs::at(domain, to, true);
            let mut groups = Vec::new();
            for split in [Some("train"), Some("dev"), Some("test"), None] {
                groups.push(export_steps::<steps::SftRows>(
                    domain,
                    settings,
                    dir,
                    &format!("trl_sft/{}", split.unwrap_or("unassigned")),
                    steps::sft_schema(),
                    parquet,
                    (after, to),
                    (SplitFilter::Only(split), &inputs),
                )?);
            }
            groups
        }
        (ExportKind::Processed, ExportFormat::Parquet) => export_records::<records::ProcessedRows>(
            domain,
            settings,
            dir,
            (records::processed_schema(), parquet),
            (after, to),
            |record| {
                format!(
                    "processed/{}/{}",
                    record.language.as_str(),
                    record.split.as_str()
                )
            },
        )?,
        (ExportKind::Processed, ExportFormat::Jsonl) => {
            export_processed_jsonl(domain, settings, dir, (after, to))?
        }
        (ExportKind::TrlGrpo, _) => export_records::<records::GrpoRows>(
            domain,
            settings,
            dir,
            (records::grpo_schema(), parquet),
            (after, to),
            |record| format!("trl_grpo/{}", record.split.as_str()),
        )?,
        (ExportKind::VerlRl, _) => export_records::<records::VerlRows>(
            domain,
            settings,
            dir,
            (records::verl_schema(), parquet),
            (after, to),
            |record| format!("verl_rl/{}", record.split.as_str()),
        )?,
    };
    Ok(groups)
}

/// The tiktoken encoding of the token counts in an export of `kind`: the agent-state encoding
/// for step rows, the datasets encoding for record rows.
fn tokenizer_of(domain: &DomainProjections, settings: &ExportSettings, kind: ExportKind) -> String {
    match kind {
        ExportKind::Trajectories | ExportKind::TrlSft => settings.state_encoding.clone(),
        _ => domain.datasets().splits().config().encoding.clone(),
    }
}

/// Key-value metadata of every Parquet file of an export; `agentd.tokenizer` names the
/// encoding of the file's token counts, so a file read on its own still says how they were
/// counted.
fn parquet_settings(
    settings: &ExportSettings,
    id: &str,
    kind: ExportKind,
    after: Lsn,
    to: Lsn,
    tokenizer: &str,
) -> ParquetSettings {
    ParquetSettings {
        zstd_level: settings.zstd_level,
        row_group_bytes_max: settings.row_group_bytes_max,
        metadata: vec![
            (
                "agentd.schema_version".into(),
                kind.schema_version().to_string(),
            ),
            ("agentd.export_id".into(), id.to_owned()),
            ("agentd.kind".into(), kind.as_str().to_owned()),
            ("agentd.lsn_after".into(), after.0.to_string()),
            ("agentd.lsn_to".into(), to.0.to_string()),
            ("agentd.tokenizer".into(), tokenizer.to_owned()),
        ],
    }
}

/// Reads the manifest of a complete export, if there is one.
fn read_existing(
    dir: &Path,
    relative: &str,
    id: &str,
) -> Result<Option<ExportOutcome>, ExportError> {
    let path = dir.join(files::MANIFEST_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ExportError::io(&path, error)),
    };
    let manifest: ExportManifest = serde_json::from_slice(&bytes)
        .map_err(|error| ExportError::Invalid(format!("{}: {error}", path.display())))?;
    if manifest.export_id != id {
        return Err(ExportError::Invalid(format!(
            "{} belongs to {}, not {id}",
            path.display(),
            manifest.export_id
        )));
    }
    Ok(Some(ExportOutcome {
        manifest_sha256: files::sha256_hex(&bytes),
        manifest,
        dir: relative.to_owned(),
    }))
}

/// What a manifest says besides its files.
struct ManifestHead {
    /// The directory relative to the exports root.
    relative: String,
    id: String,
    kind: ExportKind,
    format: ExportFormat,
    lsn_range: LsnRange,
    tokenizer: String,
    dataset: Option<agentd_schemas::export_api::DatasetManifest>,
}

/// Writes `manifest.json` (temp, fsync, rename) and returns the outcome.
fn finish_manifest(
    dir: &Path,
    head: ManifestHead,
    files: Vec<files::FinalFile>,
) -> Result<ExportOutcome, ExportError> {
    let files: Vec<ExportedFile> = files
        .into_iter()
        .map(|file| ExportedFile {
            path: file.path,
            rows: file.rows,
            bytes: file.bytes,
            sha256: file.sha256,
        })
        .collect();
    let manifest = ExportManifest {
        manifest_version: MANIFEST_VERSION,
        export_id: head.id,
        kind: head.kind,
        format: head.format,
        lsn_range: head.lsn_range,
        schema_version: head.kind.schema_version(),
        tokenizer: head.tokenizer,
        agentd_version: env!("CARGO_PKG_VERSION").to_owned(),
        rows: files.iter().map(|file| file.rows).sum(),
        files,
        dataset: head.dataset,
    };
    // Plain data: serializing cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    bytes.push(b'\n');
    files::write_atomically(dir, files::MANIFEST_NAME, &bytes)?;
    Ok(ExportOutcome {
        manifest_sha256: files::sha256_hex(&bytes),
        manifest,
        dir: head.relative,
    })
}

#[cfg(test)]
mod column_writer_tests;
#[cfg(test)]
mod tests;
