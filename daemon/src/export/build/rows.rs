//! The rows of a dataset build: records or steps selected by the request's filters, in its
//! order, written as one file set; and the build's lineage (parent, source datasets, settings,
//! labels).

use super::*;

/// Where and how a build's rows are written.
pub(super) struct BuildTarget<'a> {
    pub(super) dir: &'a std::path::Path,
    pub(super) parquet: &'a files::ParquetSettings,
    pub(super) shard_bytes_max: u64,
    pub(super) kind: ExportKind,
    pub(super) to: Lsn,
}

/// The (source, version) of the datasets a build's rows came from.
pub(super) type SourceSet = BTreeSet<(String, String)>;

/// The lineage of a build over the log up to `to`: its parent, its source datasets as
/// registered by `to` (never a registration logged later: the manifest is a function of the
/// log prefix, so a rebuild after more records writes the same), the settings in force and its
/// labels.
pub(super) fn lineage(
    domain: &DomainProjections,
    settings: &ExportSettings,
    (spec, to): (&DatasetBuildSpec, Lsn),
    parent_build_id: Option<String>,
    sources: SourceSet,
) -> BuildLineage {
    let datasets = domain.datasets();
    let sources = sources
        .into_iter()
        .map(|(source, version)| {
            let meta = datasets.meta_at(&source, &version, to);
            SourceDataset {
                license: meta.as_ref().map(|meta| meta.license.clone()),
                sha256: meta.as_ref().map(|meta| meta.sha256.clone()),
                url: meta.and_then(|meta| meta.url),
                source,
                version,
            }
        })
        .collect();
    BuildLineage {
        parent_build_id,
        sources,
        settings: BuildSettings {
            zstd_level: settings.zstd_level,
            shard_bytes_max: settings.shard_bytes_max,
            row_group_bytes_max: settings.row_group_bytes_max as u64,
            datasets_encoding: datasets.splits().config().encoding.clone(),
            state_encoding: settings.state_encoding.clone(),
        },
        training_run_id: spec.training_run_id.clone(),
        session_id: spec.session_id.clone(),
    }
}

/// Kept records matching the filters, in the spec's order, as positions in the kept list.
pub(super) fn record_positions(
    domain: &DomainProjections,
    spec: &DatasetBuildSpec,
    to: Lsn,
) -> Vec<usize> {
    // Candidates in log order: (lsn, position in the kept list, key).
    let candidates: Vec<(Lsn, usize, String)> = {
        let datasets = domain.datasets();
        datasets
            .splits()
            .kept_records()
            .enumerate()
            .filter(|(_, record)| record.lsn <= to && record_matches(&spec.filters, record))
            .map(|(position, record)| (record.lsn, position, records::record_task_id(record)))
            .collect()
    };
    order(spec, candidates)
}

pub(super) fn write_record_rows(
    domain: &DomainProjections,
    spec: &DatasetBuildSpec,
    target: &BuildTarget,
) -> Result<(files::FinishedGroup, SourceSet), ExportError> {
    let positions = record_positions(domain, spec, target.to);
    let schema = match target.kind {
        ExportKind::TrlGrpo => records::grpo_schema(),
        ExportKind::VerlRl => records::verl_schema(),
        _ => records::processed_schema(),
    };
    let mut shards = ParquetShards::new(
        target.dir,
        "data",
        schema,
        target.parquet,
        target.shard_bytes_max,
    )?;
    let context = records::TrainerContext::at(domain, target.to);
    let mut sources = SourceSet::new();
    for chunk in positions.chunks(BATCH_ROWS) {
        let batch = {
            let datasets = domain.datasets();
            let kept = datasets.splits();
            let chosen: Vec<&ProcessedRecord> = chunk
                .iter()
                .filter_map(|&position| kept.kept_records().nth(position))
                .collect();
            for record in &chosen {
                let dataset = &record.dataset;
                sources.insert((dataset.source.clone(), dataset.version.clone()));
            }
            let chosen = chosen.into_iter();
            match target.kind {
                ExportKind::TrlGrpo => {
                    record_batch::<records::GrpoRows>(&context, chunk.len(), chosen)
                }
                ExportKind::VerlRl => {
                    record_batch::<records::VerlRows>(&context, chunk.len(), chosen)
                }
                _ => record_batch::<records::ProcessedRows>(&context, chunk.len(), chosen),
            }
        };
        shards.write(&batch)?;
    }
    Ok((shards.finish(true)?, sources))
}

/// A step's key: task, rollout, step.
pub(super) type StepKey = (String, Option<agentd_schemas::RolloutId>, u32);

/// Steps matching the filters (and, for an SFT view, eligible), in the spec's order.
pub(super) fn step_keys(
    domain: &DomainProjections,
    spec: &DatasetBuildSpec,
    target: &BuildTarget,
    inputs: &steps::ExportInputs,
) -> Vec<StepKey> {
    let to = target.to;
    // Built only when a filter needs it (a map over every kept record).
    let needs_records = STEP_RECORD_FILTERS
        .iter()
        .any(|f| spec.filters.contains_key(*f));
    let records: RecordsByTask = if needs_records {
        domain
            .datasets()
            .splits()
            .kept_records()
            .filter(|record| record.lsn <= to)
            .map(|record| {
                let row = (record.split.as_str(), Arc::clone(&record.dataset));
                (records::record_task_id(record), row)
            })
            .collect()
    } else {
        HashMap::new()
    };
    let trajectories = domain.trajectories();
    let mut scores = steps::GroupCache::default();
    // An SFT view takes only the steps its rows are made of, so `limit` counts rows.
    let sft = (target.kind == ExportKind::TrlSft).then(|| inputs.trainer.clone());
    let mut candidates: Vec<(Lsn, StepKey, String)> = trajectories
        .steps_after(None)
        .filter(|entry| {
            sft.as_ref()
                .is_none_or(|trainer| steps::sft_eligible(entry, Lsn::ZERO, to, trainer))
        })
        .filter(|entry| {
            let groups = (&*trajectories, &mut scores);
            step_matches(&spec.filters, &records, groups, entry, to)
        })
        .map(|entry| {
            let step = &entry.step;
            // A default-rollout step keeps the key it had before rollouts existed, so an old
            // log builds the same shuffle.
            let key = match step.rollout_id {
                None => format!("{}\u{0}{}", step.task_id, step.step),
                Some(id) => format!("{}\u{0}{id}\u{0}{}", step.task_id, step.step),
            };
            let step_key = (step.task_id.clone(), step.rollout_id, step.step);
            (entry.lsn, step_key, key)
        })
        .collect();
    // Log order first, so "latest" is a plain reversal.
    candidates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    order(spec, candidates)
}

/// The dataset registered by `to` that a step's task is a record of (task id
/// `{source}/{version}/{index}`).
pub(super) fn dataset_of_task(
    domain: &DomainProjections,
    task_id: &str,
    to: Lsn,
) -> Option<(String, String)> {
    let mut parts = task_id.rsplitn(3, '/');
    let index = parts.next()?;
    let version = parts.next()?;
    let source = parts.next()?;
    index.parse::<u64>().ok()?;
    domain
        .datasets()
        .meta_at(source, version, to)
        .map(|_| (source.to_owned(), version.to_owned()))
}

pub(super) fn write_step_rows(
    domain: &DomainProjections,
    spec: &DatasetBuildSpec,
    target: &BuildTarget,
) -> Result<(files::FinishedGroup, SourceSet), ExportError> {
    let to = target.to;
    let inputs = steps::ExportInputs::at(domain, to, target.kind == ExportKind::TrlSft);
    let keys = step_keys(domain, spec, target, &inputs);
    let mut sources = SourceSet::new();
    let mut tasks: Vec<&str> = keys.iter().map(|key| key.0.as_str()).collect();
    tasks.sort_unstable();
    tasks.dedup();
    sources.extend(
        tasks
            .into_iter()
            .filter_map(|task| dataset_of_task(domain, task, to)),
    );
    let schema = match target.kind {
        ExportKind::TrlSft => steps::sft_schema(),
        _ => steps::trajectory_schema(),
    };
    let mut shards = ParquetShards::new(
        target.dir,
        "data",
        schema,
        target.parquet,
        target.shard_bytes_max,
    )?;
    let scores = std::cell::RefCell::new(steps::GroupCache::default());
    for chunk in keys.chunks(BATCH_ROWS) {
        let batch = {
            let states = domain.agent_states();
            let trajectories = domain.trajectories();
            let context = steps::StepContext {
                states: &states,
                trajectories: &trajectories,
                splits: &inputs.splits,
                scores: &scores,
                trainer: &inputs.trainer,
                record_prompts: &inputs.record_prompts,
            };
            let chosen = chunk.iter().filter_map(|(task_id, rollout_id, step)| {
                trajectories.step(task_id, *rollout_id, *step)
            });
            match target.kind {
                ExportKind::TrlSft => {
                    step_batch::<steps::SftRows>(&context, chunk.len(), to, chosen)
                }
                _ => step_batch::<steps::TrajectoryRows>(&context, chunk.len(), to, chosen),
            }
        };
        shards.write(&batch)?;
    }
    Ok((shards.finish(true)?, sources))
}
