//! The row writers behind [`super::write_export`]: steps in (task, rollout, step) order,
//! records in log order grouped into shard series, and the processed splits as JSON Lines. Each
//! reads the projections one batch per lock hold and writes with the locks released.

use super::files::{FinishedGroup, JsonlShards, ParquetSettings, ParquetShards, PipelinedShards};
use super::records::{self, RecordRows};
use super::steps::{self, StepRows};
use super::{ExportError, ExportSettings, BATCH_ROWS};
use crate::domain::splits::ProcessedRecord;
use crate::projection::domain::DomainProjections;
use agentd_schemas::Lsn;
use arrow_schema::SchemaRef;
use std::collections::BTreeMap;
use std::path::Path;

/// Which tasks' steps an export of steps takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SplitFilter {
    All,
    /// The tasks of one split; `None`: the tasks that are not a kept dataset record.
    Only(Option<&'static str>),
}

/// Writes every step row of `R` in `(after, to]` of the tasks `filter` takes, in (task,
/// rollout, step) order, as one group (a file even when empty only for `All` and `train`).
#[allow(clippy::too_many_arguments)]
pub(super) fn export_steps<R: StepRows>(
    domain: &DomainProjections,
    settings: &ExportSettings,
    dir: &Path,
    prefix: &str,
    schema: SchemaRef,
    parquet: &ParquetSettings,
    (after, to): (Lsn, Lsn),
    (filter, inputs): (SplitFilter, &steps::ExportInputs),
) -> Result<FinishedGroup, ExportError> {
    let splits = &inputs.splits;
    let scores = std::cell::RefCell::new(steps::GroupCache::default());
    let mut shards = PipelinedShards::spawn(ParquetShards::new(
        dir,
        prefix,
        schema,
        parquet,
        settings.shard_bytes_max,
    )?)?;
    let mut cursor: Option<(String, Option<agentd_schemas::RolloutId>, u32)> = None;
    // The batch before, whose sizes size the next one's builders.
    let mut previous: Option<arrow_array::RecordBatch> = None;
    loop {
        let (batch, next) = {
            // Lock order: agent states before trajectories, as everywhere.
            let states = domain.agent_states();
            let trajectories = domain.trajectories();
            let mut rows = match &previous {
                Some(previous) => R::presized(BATCH_ROWS, previous),
                None => R::with_capacity(BATCH_ROWS),
            };
            let mut count = 0;
            let mut next = None;
            let resume = cursor
                .as_ref()
                .map(|(task, rollout, step)| (task.as_str(), *rollout, *step));
            let context = steps::StepContext {
                states: &states,
                trajectories: &trajectories,
                splits,
                scores: &scores,
                trainer: &inputs.trainer,
                record_prompts: &inputs.record_prompts,
            };
            for entry in trajectories.steps_after(resume) {
                if let SplitFilter::Only(split) = filter {
                    if splits.get(&entry.step.task_id).copied() != split {
                        continue;
                    }
                }
                if rows.push(entry, after, to, &context) {
                    count += 1;
                    if count == BATCH_ROWS {
                        let step = &entry.step;
                        next = Some((step.task_id.clone(), step.rollout_id, step.step));
                        break;
                    }
                }
            }
            (rows.finish(), next)
        };
        previous = Some(batch.clone());
        shards.write(batch)?;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let keep_empty = matches!(filter, SplitFilter::All | SplitFilter::Only(Some("train")));
    shards.finish(keep_empty)
}

/// Kept records ingested in `(after, to]`, by position in the projection's log-ordered list,
/// read one batch per lock hold.
fn for_each_record_batch<S>(
    domain: &DomainProjections,
    (after, to): (Lsn, Lsn),
    state: &mut S,
    mut visit: impl FnMut(&mut S, &ProcessedRecord),
    mut between: impl FnMut(&mut S) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut position = 0usize;
    loop {
        let scanned = {
            let datasets = domain.datasets();
            let mut scanned = 0;
            for record in datasets
                .splits()
                .kept_records()
                .skip(position)
                .take(BATCH_ROWS)
            {
                scanned += 1;
                if record.lsn > after && record.lsn <= to {
                    visit(state, record);
                }
            }
            scanned
        };
        between(state)?;
        if scanned < BATCH_ROWS {
            return Ok(());
        }
        position += scanned;
    }
}

/// One group of record rows being written: its rows so far and its shard series.
struct RecordGroup<R> {
    rows: R,
    count: usize,
    shards: ParquetShards,
}

/// What [`export_records`] carries between record batches.
struct RecordGroups<'a, R, G> {
    groups: BTreeMap<String, RecordGroup<R>>,
    /// Full batches to write once the datasets lock is released.
    ready: Vec<(String, arrow_array::RecordBatch)>,
    failed: Option<ExportError>,
    context: &'a records::TrainerContext,
    settings: &'a ExportSettings,
    dir: &'a Path,
    schema: SchemaRef,
    parquet: &'a ParquetSettings,
    group_of: G,
}

impl<R: RecordRows, G: Fn(&ProcessedRecord) -> String> RecordGroups<'_, R, G> {
    /// Adds a record to its group (opening the group's shards on first use); a full batch is
    /// set aside for [`Self::write_ready`].
    fn add(&mut self, record: &ProcessedRecord) {
        if self.failed.is_some() {
            return;
        }
        let name = (self.group_of)(record);
        if !self.groups.contains_key(&name) {
            let opened = ParquetShards::new(
                self.dir,
                &name,
                self.schema.clone(),
                self.parquet,
                self.settings.shard_bytes_max,
            );
            match opened {
                Ok(shards) => {
                    let rows = R::with_capacity(BATCH_ROWS, self.context);
                    let group = RecordGroup {
                        rows,
                        count: 0,
                        shards,
                    };
                    self.groups.insert(name.clone(), group);
                }
                Err(error) => {
                    self.failed = Some(error);
                    return;
                }
            }
        }
        let Some(group) = self.groups.get_mut(&name) else {
            return;
        };
        group.rows.push(record);
        group.count += 1;
        if group.count == BATCH_ROWS {
            let empty = R::with_capacity(BATCH_ROWS, self.context);
            let full = std::mem::replace(&mut group.rows, empty);
            group.count = 0;
            self.ready.push((name, full.finish()));
        }
    }

    fn write_ready(&mut self) -> Result<(), ExportError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        for (name, batch) in std::mem::take(&mut self.ready) {
            if let Some(group) = self.groups.get_mut(&name) {
                group.shards.write(&batch)?;
            }
        }
        Ok(())
    }
}

/// Writes the records of `(after, to]` as `R` rows, grouped by `group_of` (one shard series
/// per group), each group in log order with batches of exactly [`BATCH_ROWS`] rows.
pub(super) fn export_records<R: RecordRows>(
    domain: &DomainProjections,
    settings: &ExportSettings,
    dir: &Path,
    (schema, parquet): (SchemaRef, &ParquetSettings),
    range: (Lsn, Lsn),
    group_of: impl Fn(&ProcessedRecord) -> String,
) -> Result<Vec<FinishedGroup>, ExportError> {
    let context = records::TrainerContext::at(domain, range.1);
    let mut state: RecordGroups<'_, R, _> = RecordGroups {
        groups: BTreeMap::new(),
        ready: Vec::new(),
        failed: None,
        context: &context,
        settings,
        dir,
        schema,
        parquet,
        group_of,
    };
    for_each_record_batch(
        domain,
        range,
        &mut state,
        |state, record| state.add(record),
        |state| state.write_ready(),
    )?;
    let mut finished = Vec::with_capacity(state.groups.len());
    for (_, mut group) in state.groups {
        let rest = std::mem::replace(&mut group.rows, R::with_capacity(0, &context));
        group.shards.write(&rest.finish())?;
        finished.push(group.shards.finish(false)?);
    }
    Ok(finished)
}

/// The processed splits as JSON Lines, grouped like the Parquet files.
pub(super) fn export_processed_jsonl(
    domain: &DomainProjections,
    settings: &ExportSettings,
    dir: &Path,
    range: (Lsn, Lsn),
) -> Result<Vec<FinishedGroup>, ExportError> {
    struct State {
        groups: BTreeMap<String, JsonlShards>,
        ready: Vec<(String, Vec<u8>)>,
    }
    let mut state = State {
        groups: BTreeMap::new(),
        ready: Vec::new(),
    };
    for_each_record_batch(
        domain,
        range,
        &mut state,
        |state, record| {
            let name = format!(
                "processed/{}/{}",
                record.language.as_str(),
                record.split.as_str()
            );
            // Plain data: serializing cannot fail.
            let line = serde_json::to_vec(&records::processed_row(record)).unwrap_or_default();
            state.ready.push((name, line));
        },
        |state| {
            for (name, line) in std::mem::take(&mut state.ready) {
                state
                    .groups
                    .entry(name.clone())
                    .or_insert_with(|| JsonlShards::new(dir, &name, settings.shard_bytes_max))
                    .write_line(&line)?;
            }
            Ok(())
        },
    )?;
    let groups = state.groups;
    groups.into_values().map(JsonlShards::finish).collect()
}
