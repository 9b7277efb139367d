//! Dataset builds (seed 002): select kept records or trajectory steps with filters, order them
//! (newest first, or a seeded shuffle), keep the first `limit`, and write them as Parquet with a
//! manifest under `datasets/{name}-{version}/{build_id}/`.
//!
//! The same request over the same log prefix selects the same rows in the same order: the order
//! is a function of the rows (LSN, position, or SHA-256 of seed and key), never of arrival or a
//! random generator, and the build id is derived from the request and the LSN it read up to.

use super::files::{self, ParquetShards};
use super::records::{self, RecordRows};
use super::steps::{self, StepRows};
use super::{ExportError, ExportOutcome, ExportSettings, BATCH_ROWS};
use crate::domain::splits::{DatasetId, ProcessedRecord};
use crate::projection::domain::trajectories::{source_name, StepEntry, Trajectories};
use crate::projection::domain::DomainProjections;
use agentd_schemas::events::{
    Action, BuildSource, BuildStrategy, DatasetBuildSpec, ExportFormat, ExportKind,
};
use agentd_schemas::export_api::{
    BuildLineage, BuildSettings, DatasetBuildRequest, DatasetManifest, LsnRange, SourceDataset,
};
use agentd_schemas::Lsn;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

mod rows;
use rows::{lineage, write_record_rows, write_step_rows, BuildTarget};

/// Longest dataset name or version, in characters.
pub const NAME_CHARS_MAX: usize = 64;
/// Most filter fields, and values per field.
pub const FILTERS_MAX: usize = 16;

/// Filter fields of a build over records.
pub const RECORD_FILTERS: [&str; 5] = ["language", "split", "source", "version", "tag"];
/// Filter fields of a build over trajectory steps. `split`, `source` and `version` are those of
/// the dataset record the step's task was made from (its task id is the record's
/// `{source}/{version}/{index}`, as the processed and trainer exports name it); a step of a task
/// that is no kept record matches none of them.
/// `reward_min` and `advantage_min` take one number: the step's reward, and its rollout's
/// group-relative advantage (as of the build's LSN), must be at least it; a step without one
/// (no reward yet; the default rollout, or a rollout not scored yet) does not match.
pub const STEP_FILTERS: [&str; 12] = [
    "verified",
    "reward_min",
    "advantage_min",
    "model",
    "policy_version",
    "language",
    "task_id",
    "reward_source",
    "sandbox_outcome",
    "split",
    "source",
    "version",
];

/// The step filters that take a lower bound.
const NUMERIC_FILTERS: [&str; 2] = ["reward_min", "advantage_min"];

/// The value of a numeric filter: a decimal number of at most 20 digits before and after the
/// point, with an exponent of at most 2 digits (`0.5`, `-1`, `2.5e-3`). Every such number is a
/// finite `f64`, so the OpenAPI document can state the rule with this pattern (a bare
/// "`parse::<f64>()` is finite" also takes `1e400`, which no pattern can tell apart).
pub const FILTER_NUMBER_PATTERN: &str =
    r"^[+-]?(?:[0-9]{1,20}(?:[.][0-9]{0,20})?|[.][0-9]{1,20})(?:[eE][+-]?[0-9]{1,2})?$";

/// Whether `text` matches [`FILTER_NUMBER_PATTERN`].
fn is_filter_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut position = 0;
    let digits = |position: &mut usize| {
        let start = *position;
        while bytes.get(*position).is_some_and(u8::is_ascii_digit) {
            *position += 1;
        }
        *position - start
    };
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        position += 1;
    }
    let whole = digits(&mut position);
    let (point, fraction) = match bytes.get(position) {
        Some(b'.') => {
            position += 1;
            (true, digits(&mut position))
        }
        _ => (false, 0),
    };
    if whole > 20 || fraction > 20 || (whole == 0 && !(point && fraction > 0)) {
        return false;
    }
    if matches!(bytes.get(position), Some(b'e' | b'E')) {
        position += 1;
        if matches!(bytes.get(position), Some(b'+' | b'-')) {
            position += 1;
        }
        if !(1..=2).contains(&digits(&mut position)) {
            return false;
        }
    }
    position == bytes.len()
}

/// The lower bound of a numeric filter (checked by [`normalize`]).
fn lower_bound(filters: &BTreeMap<String, Vec<String>>, field: &str) -> Option<f64> {
    filters.get(field)?.first()?.parse().ok()
}

/// The step filters answered by the task's dataset record.
const STEP_RECORD_FILTERS: [&str; 3] = ["split", "source", "version"];

/// Split and dataset of the kept record behind each record task id (owned, so the datasets
/// lock is not held while the steps are scanned).
type RecordsByTask = HashMap<String, (&'static str, Arc<DatasetId>)>;

/// Checks a request and normalizes it (filter values sorted and unique).
pub fn normalize(request: DatasetBuildRequest) -> Result<DatasetBuildSpec, ExportError> {
    let invalid = |message: String| Err(ExportError::Invalid(message));
    for (field, value) in [("name", &request.name), ("version", &request.version)] {
        let ok = !value.is_empty()
            && value.chars().count() <= NAME_CHARS_MAX
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !value.starts_with('.');
        if !ok {
            return invalid(format!(
                "{field}: 1 to {NAME_CHARS_MAX} characters of A-Z a-z 0-9 . _ -, not starting with '.'"
            ));
        }
    }
    if request.strategy == BuildStrategy::Random && request.seed.is_none() {
        return invalid("strategy random needs a seed".into());
    }
    if request.strategy == BuildStrategy::Latest && request.seed.is_some() {
        return invalid("seed is only used by strategy random".into());
    }
    let known: &[&str] = match request.source {
        BuildSource::Records => &RECORD_FILTERS,
        BuildSource::Trajectories => &STEP_FILTERS,
    };
    if request.filters.len() > FILTERS_MAX {
        return invalid(format!("at most {FILTERS_MAX} filter fields"));
    }
    let mut filters = BTreeMap::new();
    for (field, mut values) in request.filters {
        if !known.contains(&field.as_str()) {
            return invalid(format!(
                "unknown filter field {field:?} for this source; expected one of {}",
                known.join(", ")
            ));
        }
        if values.is_empty() || values.len() > FILTERS_MAX {
            return invalid(format!("filter {field}: 1 to {FILTERS_MAX} values"));
        }
        if field == "verified"
            && values
                .iter()
                .any(|value| value != "true" && value != "false")
        {
            return invalid("filter verified: true or false".into());
        }
        if NUMERIC_FILTERS.contains(&field.as_str())
            && (values.len() != 1 || !is_filter_number(&values[0]))
        {
            return invalid(format!(
                "filter {field}: one finite number, of at most 20 digits before and after the \
                 point and a 2-digit exponent (0.5, -1, 2.5e-3)"
            ));
        }
        values.sort();
        values.dedup();
        filters.insert(field, values);
    }
    Ok(DatasetBuildSpec {
        name: request.name,
        version: request.version,
        source: request.source,
        strategy: request.strategy,
        seed: request.seed,
        limit: request.limit,
        filters,
        view: normalize_view(request.source, request.view)?,
        training_run_id: normalize_label("training_run_id", request.training_run_id)?,
        session_id: normalize_label("session_id", request.session_id)?,
    })
}

/// Longest build label.
const LABEL_CHARS_MAX: usize = 128;

/// A label is 1 to 128 of `A-Za-z0-9._:/-` (an id from a tracker: W&B, MLflow, a job name).
fn normalize_label(field: &str, label: Option<String>) -> Result<Option<String>, ExportError> {
    let Some(label) = label else {
        return Ok(None);
    };
    let ok = !label.is_empty()
        && label.chars().count() <= LABEL_CHARS_MAX
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'));
    if !ok {
        return Err(ExportError::Invalid(format!(
            "{field}: 1 to {LABEL_CHARS_MAX} characters of A-Z a-z 0-9 . _ : / -"
        )));
    }
    Ok(Some(label))
}

/// The views a source can be written as; the source's own kind is `None` (so its build id is
/// the one it had before views existed).
fn normalize_view(
    source: BuildSource,
    view: Option<ExportKind>,
) -> Result<Option<ExportKind>, ExportError> {
    let (own, others): (ExportKind, &[ExportKind]) = match source {
        BuildSource::Records => (
            ExportKind::Processed,
            &[ExportKind::TrlGrpo, ExportKind::VerlRl],
        ),
        BuildSource::Trajectories => (ExportKind::Trajectories, &[ExportKind::TrlSft]),
    };
    match view {
        None => Ok(None),
        Some(view) if view == own => Ok(None),
        Some(view) if others.contains(&view) => Ok(Some(view)),
        Some(view) => Err(ExportError::Invalid(format!(
            "view {}: a build from {} is written as {}",
            view.as_str(),
            source_name_of(source),
            std::iter::once(own)
                .chain(others.iter().copied())
                .map(ExportKind::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn source_name_of(source: BuildSource) -> &'static str {
    match source {
        BuildSource::Records => "records",
        BuildSource::Trajectories => "trajectories",
    }
}

/// The kind a build's rows have: its view, else its source's own kind.
pub fn build_kind(spec: &DatasetBuildSpec) -> ExportKind {
    spec.view.unwrap_or(match spec.source {
        BuildSource::Records => ExportKind::Processed,
        BuildSource::Trajectories => ExportKind::Trajectories,
    })
}

/// One batch of step rows of `R` over the whole log up to `to`.
fn step_batch<'e, R: StepRows>(
    context: &steps::StepContext<'_>,
    rows: usize,
    to: Lsn,
    chosen: impl Iterator<Item = &'e StepEntry>,
) -> arrow_array::RecordBatch {
    let mut batch = R::with_capacity(rows);
    for entry in chosen {
        batch.push(entry, Lsn::ZERO, to, context);
    }
    batch.finish()
}

/// One batch of record rows of `R`.
fn record_batch<'r, R: RecordRows>(
    context: &records::TrainerContext,
    rows: usize,
    chosen: impl Iterator<Item = &'r ProcessedRecord>,
) -> arrow_array::RecordBatch {
    let mut batch = R::with_capacity(rows, context);
    for record in chosen {
        batch.push(record);
    }
    batch.finish()
}

/// `name-version`.
pub fn dataset_key(spec: &DatasetBuildSpec) -> String {
    format!("{}-{}", spec.name, spec.version)
}

/// `bld_` and the first 16 hex digits of SHA-256 over the normalized request and the LSN.
pub fn build_id(spec: &DatasetBuildSpec, to: Lsn) -> String {
    // Plain data: serializing cannot fail; field order is the struct's, maps are sorted.
    let canonical = serde_json::to_vec(spec).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(b"agentd.dataset_build.v1\0");
    hasher.update(&canonical);
    hasher.update(to.0.to_be_bytes());
    format!("bld_{}", &hex::encode(hasher.finalize())[..16])
}

/// The build's directory relative to the exports root.
pub fn build_dir(spec: &DatasetBuildSpec, build_id: &str) -> String {
    format!("datasets/{}/{build_id}", dataset_key(spec))
}

fn matches(filters: &BTreeMap<String, Vec<String>>, field: &str, value: Option<&str>) -> bool {
    match filters.get(field) {
        None => true,
        Some(accepted) => value.is_some_and(|value| accepted.iter().any(|a| a == value)),
    }
}

fn record_matches(filters: &BTreeMap<String, Vec<String>>, record: &ProcessedRecord) -> bool {
    matches(filters, "language", Some(record.language.as_str()))
        && matches(filters, "split", Some(record.split.as_str()))
        && matches(filters, "source", Some(&record.dataset.source))
        && matches(filters, "version", Some(&record.dataset.version))
        && filters
            .get("tag")
            .is_none_or(|accepted| record.record.tags.iter().any(|tag| accepted.contains(tag)))
}

fn step_matches(
    filters: &BTreeMap<String, Vec<String>>,
    records: &RecordsByTask,
    (trajectories, scores): (&Trajectories, &mut steps::GroupCache),
    entry: &StepEntry,
    to: Lsn,
) -> bool {
    let Some(view) = steps::view_at(entry, to) else {
        return false;
    };
    if let Some(min) = lower_bound(filters, "reward_min") {
        if !view.reward.is_some_and(|fact| fact.event.value >= min) {
            return false;
        }
    }
    if let Some(min) = lower_bound(filters, "advantage_min") {
        let score = entry
            .step
            .rollout_id
            .and_then(|rollout| scores.score(trajectories, rollout, to));
        if !score.is_some_and(|score| score.advantage >= min) {
            return false;
        }
    }
    let record = records.get(&entry.step.task_id);
    let record_ok = matches(filters, "split", record.map(|r| r.0))
        && matches(filters, "source", record.map(|r| r.1.source.as_str()))
        && matches(filters, "version", record.map(|r| r.1.version.as_str()));
    if !record_ok {
        return false;
    }
    let verified = view.reward.is_some_and(|fact| fact.event.verified);
    let language = match &entry.step.action {
        Some(Action::Pattern { language, .. }) => Some(language.as_str()),
        Some(Action::Rule { .. }) | None => None,
    };
    matches(
        filters,
        "verified",
        Some(if verified { "true" } else { "false" }),
    ) && matches(filters, "model", Some(&entry.step.model))
        && matches(filters, "policy_version", Some(&entry.step.policy_version))
        && matches(filters, "language", language)
        && matches(filters, "task_id", Some(&entry.step.task_id))
        && matches(
            filters,
            "reward_source",
            view.reward.map(|fact| source_name(fact.event.source)),
        )
        && matches(
            filters,
            "sandbox_outcome",
            view.sandbox.map(|fact| fact.event.outcome.as_str()),
        )
}

/// The shuffle key of a row: SHA-256 of the seed and the row's key text.
fn shuffle_key(seed: u64, key: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_be_bytes());
    hasher.update(key.as_bytes());
    hasher.finalize().into()
}

/// Orders candidates `(lsn, position, key)` by the strategy and applies the limit.
fn order<T: Clone>(spec: &DatasetBuildSpec, mut candidates: Vec<(Lsn, T, String)>) -> Vec<T> {
    match spec.strategy {
        // Newest first; rows of one log record keep their reverse position order.
        BuildStrategy::Latest => candidates.reverse(),
        BuildStrategy::Random => {
            let seed = spec.seed.unwrap_or(0);
            candidates.sort_by_cached_key(|(_, _, key)| (shuffle_key(seed, key), key.clone()));
        }
    }
    let limit = spec.limit.map_or(candidates.len(), |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX)
    });
    candidates.truncate(limit);
    candidates
        .into_iter()
        .map(|(_, position, _)| position)
        .collect()
}

/// Writes the build of `spec` over the log prefix up to `to` (`domain` must have applied it).
/// `parent_build_id`: the newest build of the same dataset key recorded at or before `to`
/// (`ExportLedger::parent_build_id`; the runner and a rebuild both take it from the ledger, so
/// both write the same lineage).
pub fn write_build(
    domain: &DomainProjections,
    settings: &ExportSettings,
    spec: &DatasetBuildSpec,
    to: Lsn,
    parent_build_id: Option<String>,
) -> Result<ExportOutcome, ExportError> {
    let id = build_id(spec, to);
    let relative = build_dir(spec, &id);
    let dir = settings.root.join(&relative);
    if let Some(outcome) = super::read_existing(&dir, &relative, &id)? {
        return Ok(outcome);
    }
    files::prepare_dir(&dir)?;
    let kind = build_kind(spec);
    let tokenizer = super::tokenizer_of(domain, settings, kind);
    let parquet = super::parquet_settings(settings, &id, kind, Lsn::ZERO, to, &tokenizer);
    let target = BuildTarget {
        dir: &dir,
        parquet: &parquet,
        shard_bytes_max: settings.shard_bytes_max,
        kind,
        to,
    };
    let (group, sources) = match spec.source {
        BuildSource::Records => write_record_rows(domain, spec, &target)?,
        BuildSource::Trajectories => write_step_rows(domain, spec, &target)?,
    };
    let files = files::publish(&dir, vec![group])?;
    let lineage = lineage(domain, settings, (spec, to), parent_build_id, sources);
    let head = super::ManifestHead {
        relative,
        id: id.clone(),
        kind,
        format: ExportFormat::Parquet,
        lsn_range: LsnRange {
            after: Lsn::ZERO,
            to,
        },
        tokenizer,
        dataset: Some(DatasetManifest {
            dataset_key: dataset_key(spec),
            build_id: id,
            request: spec.clone(),
            lineage: Some(lineage),
        }),
    };
    super::finish_manifest(&dir, head, files)
}
