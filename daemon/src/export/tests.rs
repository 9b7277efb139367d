//! Exports written from hand-made logs and read back with the parquet crate's own reader:
//! columns, types, row counts and values of every kind; byte-identical files from a projection
//! stopped at `to` and one that moved past it; incremental exports covering exactly what a full
//! one does; shards by size; crash leftovers cleaned; dataset builds reproducible.

use super::*;
use crate::config::{Config, DatasetsConfig};
use crate::projection::domain::DomainProjections;
use agentd_schemas::events::{
    Action, AgentState, BuildSource, BuildStrategy, DatasetMeta, DatasetRecord,
    DatasetRecordsIngested, Event, LogRecord, RewardRecorded, RewardSource, RolloutCreated,
    Sampling, SandboxOutcome, SandboxResultRecorded, StateFrom, StateLimits, StepRecorded,
    TaskStateUpdated,
};
use agentd_schemas::export_api::DatasetBuildRequest;
use agentd_schemas::RolloutId;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::collections::BTreeMap;
use std::f64::consts::FRAC_1_SQRT_2;
use std::path::Path;

fn record(ts_ms: u64, events: Vec<Event>) -> LogRecord {
    LogRecord {
        ts_ms,
        actor: None,
        events,
    }
}

fn dataset_record(i: usize, language: &str) -> DatasetRecord {
    DatasetRecord {
        instruction: format!("Use logging instead of print #{i}"),
        pre: format!("print({i})\n"),
        post: format!("logger.info({i})\n"),
        language: language.into(),
        tags: vec!["logging".into(), format!("t{}", i % 3)],
        metadata_json: format!(r#"{{"repo":"a/b","n":{i}}}"#),
    }
}

/// A log: a dataset of `records` records in batches of 10 (python and java), then `tasks` tasks
/// of 2 steps each with a state update, a sandbox result and a reward (odd steps verified).
fn sample_log(records: usize, tasks: usize) -> Vec<LogRecord> {
    let mut log = vec![record(
        1_000,
        vec![Event::DatasetRegistered(DatasetMeta {
            source: "fixture/mini".into(),
            version: "v1".into(),
            license: "MIT".into(),
            downloaded_at: "2026-01-01T00:00:00Z".into(),
            sha256: "a".repeat(64),
            num_records: records as u64,
            url: None,
        })],
    )];
    for first in (0..records).step_by(10) {
        let batch = (first..(first + 10).min(records))
            .map(|i| dataset_record(i, if i % 3 == 0 { "java" } else { "python" }))
            .collect();
        log.push(record(
            2_000 + first as u64,
            vec![Event::DatasetRecordsIngested(DatasetRecordsIngested {
                source: "fixture/mini".into(),
                version: "v1".into(),
                first_index: first as u64,
                records: batch,
            })],
        ));
    }
    for task in 0..tasks {
        let task_id = format!("task-{task:03}");
        for step in 0..2u32 {
            let ts = 10_000 + (task as u64) * 100 + u64::from(step) * 10;
            log.push(record(
                ts,
                vec![
                    Event::TaskStateUpdated(TaskStateUpdated {
                        task_id: task_id.clone(),
                        rollout_id: None,
                        forget: Default::default(),
                        update: AgentState {
                            goals: vec![format!("goal of {task_id}")],
                            history: vec![format!("step {step}")],
                            ..AgentState::default()
                        },
                        limits: StateLimits {
                            history_max: 3,
                            item_chars_max: 256,
                            token_budget: 800,
                            encoding: "o200k_base".into(),
                        },
                        lease_id: None,
                    }),
                    Event::StepRecorded(StepRecorded {
                        task_id: task_id.clone(),
                        rollout_id: None,
                        step,
                        job_id: None,
                        lease_id: None,
                        attempt: Some(1),
                        worker_id: Some("w-1".into()),
                        model: "qwen".into(),
                        policy_version: "v3".into(),
                        sampling: Sampling {
                            temperature: Some(0.7),
                            top_p: None,
                            max_tokens: Some(512),
                            seed: Some(-3),
                        },
                        prompt_tokens: Some(100 + u64::from(step)),
                        completion_tokens: Some(20),
                        prompt: (step == 0).then(|| format!("fix {task_id}")),
                        think: Some("print should be logging".into()),
                        action: Some(if step == 0 {
                            Action::Pattern {
                                language: "python".into(),
                                pattern: "print($A)".into(),
                                rewrite: "logger.info($A)".into(),
                            }
                        } else {
                            Action::Rule {
                                yaml: "rule: {pattern: x}".into(),
                            }
                        }),
                        state_update: None,
                        raw_output: None,
                        generation_ms: None,
                        format_error: None,
                    }),
                ],
            ));
            log.push(record(
                ts + 1,
                vec![Event::SandboxResultRecorded(SandboxResultRecorded {
                    task_id: task_id.clone(),
                    rollout_id: None,
                    step,
                    lease_id: None,
                    exit_code: Some(0),
                    outcome: SandboxOutcome::Ok,
                    diff: "-print(1)\n+logger.info(1)\n".into(),
                    stdout: "1 passed".into(),
                    stderr: String::new(),
                    tests_passed: Some(1),
                    tests_failed: Some(0),
                    duration_ms: Some(40),
                    peak_rss_bytes: None,
                })],
            ));
            log.push(record(
                ts + 2,
                vec![Event::RewardRecorded(RewardRecorded {
                    task_id: task_id.clone(),
                    rollout_id: None,
                    step,
                    lease_id: None,
                    value: if step == 1 { 1.0 } else { 0.25 },
                    verified: step == 1,
                    components: BTreeMap::from([("tests".to_string(), 1.0)]),
                    source: RewardSource::Rule,
                })],
            ));
        }
    }
    log
}

fn projections_up_to(log: &[LogRecord], up_to: usize) -> DomainProjections {
    let domain = DomainProjections::new(&DatasetsConfig::default()).unwrap();
    for (index, record) in log.iter().take(up_to).enumerate() {
        domain.apply_record(Lsn(index as u64 + 1), record.clone());
    }
    domain
}

fn settings(root: &Path) -> ExportSettings {
    ExportSettings::new(&Config::default(), root, Some(root.to_path_buf())).unwrap()
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn key_value(path: &Path, key: &str) -> Option<String> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn trajectories_round_trip_with_every_column_and_lineage() {
    let log = sample_log(20, 3);
    let domain = projections_up_to(&log, log.len());
    let dir = tempfile::tempdir().unwrap();
    let to = Lsn(log.len() as u64);
    let outcome = write_export(
        &domain,
        &settings(dir.path()),
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    assert_eq!(outcome.manifest.rows, 6);
    assert_eq!(outcome.manifest.files.len(), 1);
    let file = &outcome.manifest.files[0];
    assert_eq!(file.path, "trajectories-00000-of-00001.parquet");
    let path = dir.path().join(&outcome.dir).join(&file.path);
    assert_eq!(
        files::sha256_hex(&std::fs::read(&path).unwrap()),
        file.sha256
    );
    assert_eq!(
        key_value(&path, "agentd.schema_version").as_deref(),
        Some("2")
    );
    assert_eq!(key_value(&path, "agentd.lsn_to"), Some(to.0.to_string()));
    assert_eq!(key_value(&path, "agentd.lsn_after").as_deref(), Some("0"));
    assert_eq!(
        key_value(&path, "agentd.tokenizer").as_deref(),
        Some("o200k_base")
    );
    let batches = read_batches(&path);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 6);
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for column in [
        "task_id",
        "step",
        "model",
        "policy_version",
        "temperature",
        "prompt",
        "think",
        "action_kind",
        "state_before",
        "state_before_tokens",
        "state_tokenizer",
        "exit_code",
        "timed_out",
        "diff",
        "reward",
        "verified",
        "reward_components",
        "step_lsn",
        "reward_lsn",
        "first_lsn",
        "last_lsn",
        "schema_version",
    ] {
        assert!(names.contains(&column), "missing {column}: {names:?}");
    }
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let task_ids = column("task_id");
    assert_eq!(task_ids.as_string::<i32>().value(0), "task-000");
    assert_eq!(column("step").as_primitive::<UInt32Type>().value(1), 1);
    assert_eq!(column("action_kind").as_string::<i32>().value(0), "pattern");
    assert_eq!(column("action_kind").as_string::<i32>().value(1), "rule");
    assert!(column("prompt").is_null(1));
    assert_eq!(column("reward").as_primitive::<Float64Type>().value(1), 1.0);
    let state = column("state_before");
    let state: AgentState = serde_json::from_str(state.as_string::<i32>().value(0)).unwrap();
    assert_eq!(state.goals, vec!["goal of task-000".to_string()]);
    assert!(
        column("state_before_tokens")
            .as_primitive::<UInt64Type>()
            .value(0)
            > 0
    );
    assert_eq!(
        column("state_tokenizer").as_string::<i32>().value(0),
        "o200k_base"
    );
    let first = column("first_lsn").as_primitive::<UInt64Type>().value(0);
    let last = column("last_lsn").as_primitive::<UInt64Type>().value(0);
    assert_eq!(last, first + 2, "step, sandbox, reward in three records");
    let components = column("reward_components");
    let components = components.as_list::<i32>().value(0);
    let components = components.as_struct();
    assert_eq!(components.column(0).as_string::<i32>().value(0), "tests");
    // The manifest on disk is the one returned, byte for byte.
    let manifest_bytes =
        std::fs::read(dir.path().join(&outcome.dir).join("manifest.json")).unwrap();
    assert_eq!(files::sha256_hex(&manifest_bytes), outcome.manifest_sha256);
}

#[test]
fn trainer_views_have_the_columns_trainers_read() {
    let log = sample_log(30, 2);
    let domain = projections_up_to(&log, log.len());
    let dir = tempfile::tempdir().unwrap();
    let to = Lsn(log.len() as u64);
    let export = |kind| {
        write_export(
            &domain,
            &settings(dir.path()),
            kind,
            ExportFormat::Parquet,
            Lsn::ZERO,
            to,
        )
        .unwrap()
    };
    // TRL SFT: the verified steps only (one per task), as a user/assistant conversation.
    let sft = export(ExportKind::TrlSft);
    assert_eq!(sft.manifest.rows, 2);
    // These tasks are not dataset records: their steps go to `unassigned`, never to `train`
    // (which is written, empty, so a trainer finds it).
    let files: Vec<(&str, u64)> = sft
        .manifest
        .files
        .iter()
        .map(|file| (file.path.as_str(), file.rows))
        .collect();
    assert_eq!(
        files,
        [
            ("trl_sft/train-00000-of-00001.parquet", 0),
            ("trl_sft/unassigned-00000-of-00001.parquet", 2)
        ]
    );
    let batch = &read_batches(&dir.path().join(&sft.dir).join(&sft.manifest.files[1].path))[0];
    let messages = batch
        .column_by_name("messages")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    let messages = messages.as_struct();
    assert_eq!(messages.column(0).as_string::<i32>().value(0), "user");
    assert_eq!(messages.column(0).as_string::<i32>().value(1), "assistant");
    // The assistant turn is the step in the actor's output format, as the parser reads it.
    let answer = messages.column(1).as_string::<i32>().value(1);
    assert_eq!(
        answer,
        "<think>\nprint should be logging\n</think>\n<action>\n{\"kind\":\"rule\",\"yaml\":\"rule: {pattern: x}\"}\n</action>"
    );
    let parsed = crate::domain::output_format::parse(answer).unwrap();
    assert_eq!(parsed.think.as_deref(), Some("print should be logging"));
    // TRL GRPO and verl: every kept record once, split into train/dev/test files.
    let grpo = export(ExportKind::TrlGrpo);
    assert_eq!(grpo.manifest.rows, 30);
    assert!(grpo
        .manifest
        .files
        .iter()
        .all(|file| file.path.starts_with("trl_grpo/")));
    let first = &grpo.manifest.files[0];
    let batch = &read_batches(&dir.path().join(&grpo.dir).join(&first.path))[0];
    for column in ["prompt", "ground_truth", "task_id", "language", "split"] {
        assert!(batch.column_by_name(column).is_some(), "{column}");
    }
    let verl = export(ExportKind::VerlRl);
    assert_eq!(verl.manifest.rows, 30);
    let batch = &read_batches(
        &dir.path()
            .join(&verl.dir)
            .join(&verl.manifest.files[0].path),
    )[0];
    let reward_model = batch.column_by_name("reward_model").unwrap().as_struct();
    assert_eq!(
        reward_model
            .column_by_name("style")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "rule"
    );
    let truth = reward_model
        .column_by_name("ground_truth")
        .unwrap()
        .as_string::<i32>()
        .value(0);
    assert!(truth.starts_with("logger.info("), "{truth}");
    let extra = batch.column_by_name("extra_info").unwrap().as_struct();
    assert!(extra.column_by_name("split").is_some() && extra.column_by_name("index").is_some());
    assert_eq!(
        batch
            .column_by_name("ability")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "code_edit"
    );
    // Processed splits: processed/{language}/{split}-i-of-n, rows per language as ingested.
    let processed = export(ExportKind::Processed);
    let java: u64 = processed
        .manifest
        .files
        .iter()
        .filter(|file| file.path.starts_with("processed/java/"))
        .map(|file| file.rows)
        .sum();
    assert_eq!(java, 10);
    assert!(processed.manifest.files.iter().all(|file| {
        let name = file.path.rsplit('/').next().unwrap();
        ["train-", "dev-", "test-"]
            .iter()
            .any(|split| name.starts_with(split))
            && name.ends_with("-of-00001.parquet")
    }));
    // JSONL on request, same grouping.
    let jsonl = write_export(
        &domain,
        &settings(dir.path()),
        ExportKind::Processed,
        ExportFormat::Jsonl,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    assert_eq!(jsonl.manifest.rows, 30);
    let text = std::fs::read_to_string(
        dir.path()
            .join(&jsonl.dir)
            .join(&jsonl.manifest.files[0].path),
    )
    .unwrap();
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["source"], "fixture/mini");
    // JSONL of another kind is refused.
    assert!(write_export(
        &domain,
        &settings(dir.path()),
        ExportKind::VerlRl,
        ExportFormat::Jsonl,
        Lsn::ZERO,
        to
    )
    .is_err());
}

#[test]
fn a_projection_past_to_exports_the_same_bytes_as_one_stopped_at_to() {
    let log = sample_log(40, 4);
    let cut = log.len() - 7; // in the middle of the trajectories: some rewards come later
    let stopped = projections_up_to(&log, cut);
    let moved_on = projections_up_to(&log, log.len());
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for kind in ExportKind::ALL {
        let to = Lsn(cut as u64);
        let one = write_export(
            &stopped,
            &settings(a.path()),
            kind,
            ExportFormat::Parquet,
            Lsn::ZERO,
            to,
        )
        .unwrap();
        let two = write_export(
            &moved_on,
            &settings(b.path()),
            kind,
            ExportFormat::Parquet,
            Lsn::ZERO,
            to,
        )
        .unwrap();
        assert_eq!(one.manifest, two.manifest, "{kind:?}");
        assert_eq!(one.manifest_sha256, two.manifest_sha256, "{kind:?}");
    }
    assert_eq!(files_of(a.path()), files_of(b.path()));
}

#[test]
fn incremental_exports_cover_what_a_full_export_does() {
    let log = sample_log(50, 3);
    let domain = projections_up_to(&log, log.len());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let cuts = [Lsn(0), Lsn(3), Lsn(9), Lsn(log.len() as u64)];
    let mut incremental_rows = 0;
    for window in cuts.windows(2) {
        let outcome = write_export(
            &domain,
            &settings,
            ExportKind::Processed,
            ExportFormat::Parquet,
            window[0],
            window[1],
        )
        .unwrap();
        incremental_rows += outcome.manifest.rows;
    }
    let full = write_export(
        &domain,
        &settings,
        ExportKind::Processed,
        ExportFormat::Parquet,
        Lsn::ZERO,
        *cuts.last().unwrap(),
    )
    .unwrap();
    assert_eq!(incremental_rows, full.manifest.rows);
    assert_eq!(full.manifest.rows, 50);
    // Steps: a step whose reward came after the first window shows again, with its reward.
    let to = Lsn(log.len() as u64);
    let mid = Lsn(log.len() as u64 - 1); // the last reward is in the last record
    let first = write_export(
        &domain,
        &settings,
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        mid,
    )
    .unwrap();
    let second = write_export(
        &domain,
        &settings,
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        mid,
        to,
    )
    .unwrap();
    assert_eq!(first.manifest.rows, 6);
    assert_eq!(second.manifest.rows, 1);
    let batch = &read_batches(
        &dir.path()
            .join(&second.dir)
            .join(&second.manifest.files[0].path),
    )[0];
    assert!(!batch.column_by_name("reward").unwrap().is_null(0));
}

#[test]
fn shards_follow_the_size_cap_and_crash_leftovers_are_removed() {
    let log = sample_log(9000, 0);
    let domain = projections_up_to(&log, log.len());
    let dir = tempfile::tempdir().unwrap();
    let mut small = settings(dir.path());
    small.shard_bytes_max = 1; // one batch per shard
    let to = Lsn(log.len() as u64);
    // A crashed earlier run left a temp file in the export's directory.
    let export_dir = dir.path().join(export_id(
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    ));
    std::fs::create_dir_all(&export_dir).unwrap();
    std::fs::write(
        export_dir.join(".tmp-trajectories-00000.parquet"),
        b"half a file",
    )
    .unwrap();
    let outcome = write_export(
        &domain,
        &small,
        ExportKind::Trajectories,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    assert_eq!(outcome.manifest.rows, 0);
    assert_eq!(
        outcome.manifest.files.len(),
        1,
        "an empty export keeps one file with the columns"
    );
    assert!(!files_of(&export_dir)
        .keys()
        .any(|name| name.starts_with(".tmp-")));
    let records = write_export(
        &domain,
        &small,
        ExportKind::TrlGrpo,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    let train: Vec<_> = records
        .manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("trl_grpo/train-"))
        .collect();
    assert!(train.len() >= 2, "{train:?}");
    let count = train.len();
    for (index, file) in train.iter().enumerate() {
        assert_eq!(
            file.path,
            format!("trl_grpo/train-{index:05}-of-{count:05}.parquet")
        );
    }
    assert_eq!(records.manifest.rows, 9000);
}

#[test]
fn dataset_builds_are_reproducible_and_filtered() {
    let log = sample_log(60, 4);
    let domain = projections_up_to(&log, log.len());
    let to = Lsn(log.len() as u64);
    let request = |strategy, seed, limit| DatasetBuildRequest {
        name: "py-edits".into(),
        version: "v1".into(),
        source: BuildSource::Records,
        strategy,
        seed,
        limit,
        filters: BTreeMap::from([("language".to_string(), vec!["python".to_string()])]),
        view: None,
        training_run_id: None,
        session_id: None,
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let spec = build::normalize(request(BuildStrategy::Random, Some(7), Some(15))).unwrap();
    let one = build::write_build(&domain, &settings(a.path()), &spec, to, None).unwrap();
    let two = build::write_build(&domain, &settings(b.path()), &spec, to, None).unwrap();
    assert_eq!(one.manifest, two.manifest);
    assert_eq!(files_of(a.path()), files_of(b.path()));
    assert_eq!(one.manifest.rows, 15);
    assert!(one.dir.starts_with("datasets/py-edits-v1/bld_"));
    let batch = &read_batches(&a.path().join(&one.dir).join(&one.manifest.files[0].path))[0];
    let languages = batch.column_by_name("language").unwrap().as_string::<i32>();
    assert!((0..batch.num_rows()).all(|row| languages.value(row) == "python"));
    // Another seed picks another order; latest is newest first.
    let other = build::normalize(request(BuildStrategy::Random, Some(8), Some(15))).unwrap();
    assert_ne!(build::build_id(&spec, to), build::build_id(&other, to));
    let latest = build::normalize(request(BuildStrategy::Latest, None, Some(3))).unwrap();
    let latest = build::write_build(&domain, &settings(a.path()), &latest, to, None).unwrap();
    let batch = &read_batches(
        &a.path()
            .join(&latest.dir)
            .join(&latest.manifest.files[0].path),
    )[0];
    let index = batch
        .column_by_name("index")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!(
        (index.value(0), index.value(1), index.value(2)),
        (59, 58, 56)
    );
    // Steps: verified only.
    let steps = build::normalize(DatasetBuildRequest {
        source: BuildSource::Trajectories,
        filters: BTreeMap::from([("verified".to_string(), vec!["true".to_string()])]),
        view: None,
        ..request(BuildStrategy::Latest, None, None)
    })
    .unwrap();
    let steps = build::write_build(&domain, &settings(a.path()), &steps, to, None).unwrap();
    assert_eq!(steps.manifest.rows, 4);
    // Unknown filter fields and a random build without a seed are refused.
    assert!(build::normalize(DatasetBuildRequest {
        filters: BTreeMap::from([("colour".to_string(), vec!["red".to_string()])]),
        view: None,
        ..request(BuildStrategy::Latest, None, None)
    })
    .is_err());
    assert!(build::normalize(request(BuildStrategy::Random, None, None)).is_err());
}

#[test]
fn step_builds_filter_by_the_split_source_and_version_of_the_task_record() {
    let mut log = sample_log(60, 0);
    // One verified step for each of the first 40 records (task id = the record's id), and one
    // for a task that is no record.
    let mut task_ids: Vec<String> = (0..40).map(|i| format!("fixture/mini/v1/{i}")).collect();
    task_ids.push("free-task".into());
    for (n, task_id) in task_ids.iter().enumerate() {
        log.push(record(
            20_000 + n as u64,
            vec![
                Event::StepRecorded(StepRecorded {
                    task_id: task_id.clone(),
                    rollout_id: None,
                    step: 0,
                    job_id: None,
                    lease_id: None,
                    attempt: None,
                    worker_id: None,
                    model: "qwen".into(),
                    policy_version: "v3".into(),
                    sampling: Sampling::default(),
                    prompt_tokens: None,
                    completion_tokens: None,
                    prompt: None,
                    think: None,
                    action: Some(Action::Pattern {
                        language: "python".into(),
                        pattern: "print($A)".into(),
                        rewrite: "logger.info($A)".into(),
                    }),
                    state_update: None,
                    raw_output: None,
                    generation_ms: None,
                    format_error: None,
                }),
                Event::RewardRecorded(RewardRecorded {
                    task_id: task_id.clone(),
                    rollout_id: None,
                    step: 0,
                    lease_id: None,
                    value: 1.0,
                    verified: true,
                    components: BTreeMap::new(),
                    source: RewardSource::Rule,
                }),
            ],
        ));
    }
    let domain = projections_up_to(&log, log.len());
    let to = Lsn(log.len() as u64);
    let train: Vec<String> = domain
        .datasets()
        .splits()
        .kept_records()
        .filter(|record| record.index < 40 && record.split.as_str() == "train")
        .map(|record| format!("fixture/mini/v1/{}", record.index))
        .collect();
    assert!(!train.is_empty() && train.len() < 40, "{train:?}");
    let build = |filters: &[(&str, &str)]| {
        let mut by_field: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (field, value) in filters {
            by_field
                .entry((*field).to_string())
                .or_default()
                .push((*value).to_string());
        }
        let spec = build::normalize(DatasetBuildRequest {
            name: "steps".into(),
            version: "v1".into(),
            source: BuildSource::Trajectories,
            strategy: BuildStrategy::Latest,
            seed: None,
            limit: None,
            filters: by_field,
            view: None,
            training_run_id: None,
            session_id: None,
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let outcome = build::write_build(&domain, &settings(dir.path()), &spec, to, None).unwrap();
        let mut tasks = Vec::new();
        for file in &outcome.manifest.files {
            for batch in read_batches(&dir.path().join(&outcome.dir).join(&file.path)) {
                let column = batch.column_by_name("task_id").unwrap().as_string::<i32>();
                tasks.extend((0..batch.num_rows()).map(|row| column.value(row).to_owned()));
            }
        }
        tasks.sort();
        tasks
    };
    // The issue's own example: language, split and verified together.
    let mut expected = train.clone();
    expected.sort();
    assert_eq!(
        build(&[
            ("language", "python"),
            ("split", "train"),
            ("verified", "true")
        ]),
        expected
    );
    assert_eq!(
        build(&[("source", "fixture/mini"), ("version", "v1")]).len(),
        40
    );
    assert!(build(&[("version", "v2")]).is_empty());
    assert_eq!(
        build(&[]).len(),
        41,
        "without those filters, the free task is in"
    );
}

fn rollout_created(id: u64, task_id: &str, group: &str) -> Event {
    Event::RolloutCreated(RolloutCreated {
        rollout_id: RolloutId(id),
        task_id: task_id.into(),
        group: group.into(),
        model: "qwen".into(),
        policy_version: "v4".into(),
        sampling: Sampling::default(),
        job_id: None,
        lease_id: None,
        attempt: None,
        worker_id: None,
        state_from: StateFrom::Task,
    })
}

fn rollout_step(task_id: &str, rollout: Option<u64>, step: u32) -> Event {
    Event::StepRecorded(StepRecorded {
        task_id: task_id.into(),
        rollout_id: rollout.map(RolloutId),
        step,
        job_id: None,
        lease_id: None,
        attempt: None,
        worker_id: None,
        model: "qwen".into(),
        policy_version: "v4".into(),
        sampling: Sampling::default(),
        prompt_tokens: None,
        completion_tokens: None,
        prompt: Some(format!("fix {task_id}")),
        think: None,
        action: Some(Action::Rule {
            yaml: "rule: {pattern: x}".into(),
        }),
        state_update: None,
        raw_output: None,
        generation_ms: None,
        format_error: None,
    })
}

fn rollout_reward(task_id: &str, rollout: Option<u64>, step: u32, value: f64) -> Event {
    Event::RewardRecorded(RewardRecorded {
        task_id: task_id.into(),
        rollout_id: rollout.map(RolloutId),
        step,
        lease_id: None,
        value,
        verified: true,
        components: BTreeMap::new(),
        source: RewardSource::Rule,
    })
}

/// Two rollouts of one group on `task-g` (ro_1 rewarded 0.0 at LSN 4, ro_2 rewarded 1.0 at
/// LSN 5; ro_2 has a second step without a reward), and a step of the task's default rollout
/// rewarded 0.5.
fn group_log() -> Vec<LogRecord> {
    let task = "task-g";
    vec![
        record(1_000, vec![rollout_created(1, task, "g-1")]),
        record(1_001, vec![rollout_created(2, task, "g-1")]),
        record(
            1_002,
            vec![
                rollout_step(task, Some(1), 0),
                rollout_step(task, Some(2), 0),
                rollout_step(task, Some(2), 1),
                rollout_step(task, None, 0),
            ],
        ),
        record(
            1_003,
            vec![
                rollout_reward(task, Some(1), 0, 0.0),
                rollout_reward(task, None, 0, 0.5),
            ],
        ),
        record(1_004, vec![rollout_reward(task, Some(2), 0, 1.0)]),
    ]
}

/// One row of a step export, as the columns a reader sees: `(rollout_id, group,
/// rollout_reward, advantage)`.
type RolloutColumns = (Option<String>, Option<String>, Option<f64>, Option<f64>);

/// Exports `kind` over `(0, to]` and reads back `(step, rollout columns)` per row, in file
/// order (`rollout_reward` and `advantage` are `None` for kinds without them).
fn rollout_rows(
    domain: &DomainProjections,
    kind: ExportKind,
    to: Lsn,
) -> Vec<(u32, RolloutColumns)> {
    let dir = tempfile::tempdir().unwrap();
    let outcome = write_export(
        domain,
        &settings(dir.path()),
        kind,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    let mut rows = Vec::new();
    for file in &outcome.manifest.files {
        for batch in read_batches(&dir.path().join(&outcome.dir).join(&file.path)) {
            let text = |name: &str, row: usize| {
                let column = batch.column_by_name(name).unwrap().as_string::<i32>();
                column.is_valid(row).then(|| column.value(row).to_owned())
            };
            let number = |name: &str, row: usize| {
                let column = batch.column_by_name(name)?.as_primitive::<Float64Type>();
                column.is_valid(row).then(|| column.value(row))
            };
            let steps = batch
                .column_by_name("step")
                .unwrap()
                .as_primitive::<UInt32Type>();
            for row in 0..batch.num_rows() {
                rows.push((
                    steps.value(row),
                    (
                        text("rollout_id", row),
                        text("group", row),
                        number("rollout_reward", row),
                        number("advantage", row),
                    ),
                ));
            }
        }
    }
    rows
}

fn close_to(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|actual| (actual - expected).abs() < 1e-12)
}

#[test]
fn step_rows_carry_their_rollout_group_and_group_relative_advantage() {
    let log = group_log();
    let domain = projections_up_to(&log, log.len());
    let rows = rollout_rows(&domain, ExportKind::Trajectories, Lsn(5));
    let ro = |id: &str| Some(id.to_owned());
    let group = Some("g-1".to_owned());
    // The default rollout first, then the rollouts by id. Rewards 0 and 1: mean 0.5, sample
    // std 1/sqrt(2), so the advantages are -+0.5 * sqrt(2) = -+1/sqrt(2) (0.7071).
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0], (0, (None, None, None, None)));
    let (step, (rollout_id, row_group, reward, advantage)) = &rows[1];
    assert_eq!((*step, rollout_id, row_group), (0, &ro("ro_1"), &group));
    assert_eq!(*reward, Some(0.0));
    assert!(close_to(*advantage, -FRAC_1_SQRT_2), "{advantage:?}");
    for (step, (rollout_id, row_group, reward, advantage)) in &rows[2..] {
        assert_eq!(
            (rollout_id, row_group),
            (&ro("ro_2"), &group),
            "step {step}"
        );
        assert_eq!(
            *reward,
            Some(1.0),
            "every step of a rollout shows its total"
        );
        assert!(close_to(*advantage, FRAC_1_SQRT_2), "{advantage:?}");
    }
    let schema = steps::trajectory_schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let position = |name: &str| names.iter().position(|n| *n == name).unwrap();
    assert_eq!(position("rollout_id"), position("step") + 1);
    assert_eq!(position("group"), position("step") + 2);
    assert_eq!(position("rollout_reward"), position("reward_ts_ms") + 1);
    assert_eq!(position("advantage"), position("reward_ts_ms") + 2);

    // As of LSN 4 ro_2's reward is not logged yet: it is not scored (null), and ro_1, the only
    // scored rollout of the group, has advantage 0.
    let rows = rollout_rows(&domain, ExportKind::Trajectories, Lsn(4));
    let scores: Vec<_> = rows
        .iter()
        .map(|(_, (_, _, reward, advantage))| (*reward, *advantage))
        .collect();
    assert_eq!(
        scores,
        [
            (None, None),
            (Some(0.0), Some(0.0)),
            (None, None),
            (None, None)
        ]
    );
    // As of LSN 1 ro_2 does not exist and ro_1 has no step: nothing to export.
    assert!(rollout_rows(&domain, ExportKind::Trajectories, Lsn(1)).is_empty());

    // TRL SFT: the verified steps, with rollout and group (null for the default rollout).
    let sft = rollout_rows(&domain, ExportKind::TrlSft, Lsn(5));
    let sft: Vec<_> = sft
        .into_iter()
        .map(|(step, (rollout_id, group, _, _))| (step, rollout_id, group))
        .collect();
    assert_eq!(
        sft,
        [
            (0, None, None),
            (0, ro("ro_1"), group.clone()),
            (0, ro("ro_2"), group.clone())
        ]
    );
}

#[test]
fn rollout_scores_are_as_of_to_in_live_and_rebuilt_exports_alike() {
    let log = group_log();
    let moved_on = projections_up_to(&log, log.len());
    for cut in 1..=log.len() {
        let stopped = projections_up_to(&log, cut);
        let to = Lsn(cut as u64);
        for kind in [ExportKind::Trajectories, ExportKind::TrlSft] {
            let a = tempfile::tempdir().unwrap();
            let b = tempfile::tempdir().unwrap();
            let export = |domain: &DomainProjections, dir: &Path| {
                write_export(
                    domain,
                    &settings(dir),
                    kind,
                    ExportFormat::Parquet,
                    Lsn::ZERO,
                    to,
                )
                .unwrap()
            };
            let one = export(&stopped, a.path());
            let two = export(&moved_on, b.path());
            assert_eq!(
                one.manifest_sha256, two.manifest_sha256,
                "{kind:?} at {cut}"
            );
            assert_eq!(files_of(a.path()), files_of(b.path()), "{kind:?} at {cut}");
        }
    }
}

#[test]
fn group_scores_as_of_to_count_rollouts_and_rewards_logged_by_then() {
    let log = group_log();
    let domain = projections_up_to(&log, log.len());
    let trajectories = domain.trajectories();
    let at = |lsn: u64| steps::GroupScoresAt::compute(&trajectories, "g-1", Lsn(lsn));
    // One rollout, not rewarded yet: not scored, so nothing to score against.
    let one = at(1);
    assert_eq!((one.mean, one.std, one.rollouts.len()), (0.0, 0.0, 0));
    let all = at(5);
    assert!((all.mean - 0.5).abs() < 1e-12 && (all.std - 0.5f64.sqrt()).abs() < 1e-12);
    assert_eq!(all.rollouts[&RolloutId(2)].reward, 1.0);
    // With everything visible it is what the projection itself says about the group.
    let live = trajectories.group("g-1").unwrap();
    assert_eq!((live.mean, live.std), (all.mean, all.std));
    for (summary, advantage) in &live.rollouts {
        let id = summary.rollout_id.unwrap();
        assert_eq!(Some(all.rollouts[&id].advantage), *advantage);
        assert_eq!(all.rollouts[&id].reward, summary.reward);
    }
    assert_eq!(all.rollouts.len(), 2);
    // A group nobody created scores nothing.
    let unknown = steps::GroupScoresAt::compute(&trajectories, "nope", Lsn(5));
    assert!(unknown.rollouts.is_empty());
}

#[test]
fn sft_writes_each_split_apart_and_never_trains_on_a_dev_or_test_task() {
    let mut log = sample_log(60, 0);
    // A verified step for each of the first 40 records (task id = the record's id), and one for
    // a task that is no record.
    let mut task_ids: Vec<String> = (0..40).map(|i| format!("fixture/mini/v1/{i}")).collect();
    task_ids.push("free-task".into());
    for (n, task_id) in task_ids.iter().enumerate() {
        log.push(record(
            20_000 + n as u64,
            vec![
                rollout_step(task_id, None, 0),
                rollout_reward(task_id, None, 0, 1.0),
            ],
        ));
    }
    let domain = projections_up_to(&log, log.len());
    let to = Lsn(log.len() as u64);
    let split_of: BTreeMap<String, &str> = domain
        .datasets()
        .splits()
        .kept_records()
        .filter(|record| record.index < 40)
        .map(|record| {
            (
                format!("fixture/mini/v1/{}", record.index),
                record.split.as_str(),
            )
        })
        .collect();
    assert!(
        split_of.values().any(|split| *split != "train"),
        "the fixture has dev or test records among the first 40"
    );
    let dir = tempfile::tempdir().unwrap();
    let sft = write_export(
        &domain,
        &settings(dir.path()),
        ExportKind::TrlSft,
        ExportFormat::Parquet,
        Lsn::ZERO,
        to,
    )
    .unwrap();
    let mut seen = 0;
    for file in &sft.manifest.files {
        let folder = file
            .path
            .split('/')
            .nth(1)
            .unwrap()
            .split('-')
            .next()
            .unwrap();
        for batch in read_batches(&dir.path().join(&sft.dir).join(&file.path)) {
            let tasks = batch
                .column_by_name("task_id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let splits = batch
                .column_by_name("split")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for row in 0..batch.num_rows() {
                let task = tasks.value(row);
                let expected = split_of.get(task).copied();
                assert_eq!(
                    folder,
                    expected.unwrap_or("unassigned"),
                    "{task} in {}",
                    file.path
                );
                assert_eq!(splits.is_null(row), expected.is_none());
                if let Some(expected) = expected {
                    assert_eq!(splits.value(row), expected);
                }
                seen += 1;
            }
        }
    }
    assert_eq!(
        seen,
        split_of.len() + 1,
        "every verified step once, free-task included"
    );
}

/// The settings as recorded, with a test prompt and an SFT threshold of 0.9.
fn training_settings() -> Event {
    Event::TrainingSettingsRecorded(agentd_schemas::events::TrainingSettings {
        rewards: Default::default(),
        system_prompt: agentd_schemas::events::SystemPrompt {
            version: "t-v1".into(),
            text: "You edit code with ast-grep.".into(),
        },
        sft: agentd_schemas::events::SftSettings { min_reward: 0.9 },
    })
}

/// `(role, content)` of each message of row `row` of a message list column.
fn conversation(batch: &RecordBatch, column: &str, row: usize) -> Vec<(String, String)> {
    let messages = batch
        .column_by_name(column)
        .unwrap()
        .as_list::<i32>()
        .value(row);
    let messages = messages.as_struct();
    (0..messages.len())
        .map(|i| {
            (
                messages.column(0).as_string::<i32>().value(i).to_owned(),
                messages.column(1).as_string::<i32>().value(i).to_owned(),
            )
        })
        .collect()
}

/// `sample_log(30, 0)`, the training settings, then one step without its prompt for record
/// tasks 1 and 2 (reward 1.0 and 0.5, both verified) and a free task; and the length of the log
/// before the settings.
fn training_log() -> (Vec<LogRecord>, usize) {
    let mut log = sample_log(30, 0);
    let without_settings = log.len();
    log.push(record(19_000, vec![training_settings()]));
    for (n, (task_id, value)) in [
        ("fixture/mini/v1/1", 1.0),
        ("fixture/mini/v1/2", 0.5),
        ("free-task", 1.0),
    ]
    .into_iter()
    .enumerate()
    {
        let Event::StepRecorded(mut step) = rollout_step(task_id, None, 0) else {
            unreachable!()
        };
        step.prompt = None;
        log.push(record(
            20_000 + n as u64,
            vec![
                Event::StepRecorded(step),
                rollout_reward(task_id, None, 0, value),
            ],
        ));
    }
    (log, without_settings)
}

#[test]
fn recorded_training_settings_shape_the_trainer_views() {
    let (log, without_settings) = training_log();
    let domain = projections_up_to(&log, log.len());
    let dir = tempfile::tempdir().unwrap();
    let export = |kind, to: usize| {
        write_export(
            &domain,
            &settings(dir.path()),
            kind,
            ExportFormat::Parquet,
            Lsn::ZERO,
            Lsn(to as u64),
        )
        .unwrap()
    };
    let rows_of = |outcome: &ExportOutcome| -> Vec<RecordBatch> {
        outcome
            .manifest
            .files
            .iter()
            .flat_map(|file| read_batches(&dir.path().join(&outcome.dir).join(&file.path)))
            .collect()
    };
    // SFT: the 0.5 reward is under the threshold; each conversation opens with the system
    // prompt, and the user turn without a recorded prompt is the record's prompt and the state.
    let sft = export(ExportKind::TrlSft, log.len());
    assert_eq!(sft.manifest.rows, 2);
    let mut users = Vec::new();
    for batch in rows_of(&sft) {
        for row in 0..batch.num_rows() {
            let turns = conversation(&batch, "messages", row);
            let roles: Vec<&str> = turns.iter().map(|(role, _)| role.as_str()).collect();
            assert_eq!(roles, ["system", "user", "assistant"]);
            assert_eq!(turns[0].1, "You edit code with ast-grep.");
            users.push(turns[1].1.clone());
        }
    }
    users.sort();
    assert_eq!(users[0], "# Agent state\n\n(empty)\n", "the free task");
    assert!(
        users[1].starts_with(
            "Use logging instead of print #1\n\n```python\nprint(1)\n```\n\n# Agent state\n"
        ),
        "{}",
        users[1]
    );
    // GRPO: system turn, user turn with the state block, and what a reward function needs.
    let grpo = export(ExportKind::TrlGrpo, log.len());
    let batch = &rows_of(&grpo)[0];
    let turns = conversation(batch, "prompt", 0);
    assert_eq!(
        turns[0],
        ("system".into(), "You edit code with ast-grep.".into())
    );
    assert!(
        turns[1].1.ends_with("# Agent state\n\n(empty)\n"),
        "{}",
        turns[1].1
    );
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_owned()
    };
    assert_eq!(text("system_prompt_version"), "t-v1");
    let rewards: serde_json::Value = serde_json::from_str(&text("reward_settings")).unwrap();
    assert_eq!(rewards["combine"], "all");
    let payload: serde_json::Value = serde_json::from_str(&text("verify_payload")).unwrap();
    let file = if text("language") == "java" {
        "Main.java"
    } else {
        "main.py"
    };
    assert_eq!(payload["files"][file], text("pre"));
    assert_eq!(payload["post"][file], text("post"));
    // verl carries the same in extra_info.
    let verl = export(ExportKind::VerlRl, log.len());
    let batch = &rows_of(&verl)[0];
    let extra = batch.column_by_name("extra_info").unwrap().as_struct();
    for name in [
        "verify_payload",
        "reward_settings",
        "system_prompt_version",
        "pre",
    ] {
        assert_eq!(
            extra.column_by_name(name).unwrap().null_count(),
            0,
            "{name}"
        );
    }
    assert_eq!(conversation(batch, "prompt", 0)[0].0, "system");
    // An export whose range ends before the settings were recorded keeps version 1's shape.
    let early = export(ExportKind::TrlGrpo, without_settings);
    let batch = &rows_of(&early)[0];
    assert_eq!(conversation(batch, "prompt", 0).len(), 1);
    assert_eq!(
        batch
            .column_by_name("system_prompt_version")
            .unwrap()
            .null_count(),
        batch.num_rows()
    );
}

#[test]
fn step_builds_filter_by_minimum_reward_and_advantage() {
    let log = group_log();
    let domain = projections_up_to(&log, log.len());
    let request = |filters: &[(&str, &str)]| DatasetBuildRequest {
        name: "steps".into(),
        version: "v1".into(),
        source: BuildSource::Trajectories,
        strategy: BuildStrategy::Latest,
        seed: None,
        limit: None,
        filters: filters
            .iter()
            .map(|(field, value)| ((*field).to_string(), vec![(*value).to_string()]))
            .collect(),
        view: None,
        training_run_id: None,
        session_id: None,
    };
    let rows = |filters: &[(&str, &str)]| {
        let spec = build::normalize(request(filters)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let outcome =
            build::write_build(&domain, &settings(dir.path()), &spec, Lsn(5), None).unwrap();
        let mut rows = Vec::new();
        for file in &outcome.manifest.files {
            for batch in read_batches(&dir.path().join(&outcome.dir).join(&file.path)) {
                let ids = batch
                    .column_by_name("rollout_id")
                    .unwrap()
                    .as_string::<i32>();
                let steps = batch
                    .column_by_name("step")
                    .unwrap()
                    .as_primitive::<UInt32Type>();
                for row in 0..batch.num_rows() {
                    let id = (!ids.is_null(row)).then(|| ids.value(row).to_owned());
                    rows.push((id, steps.value(row)));
                }
            }
        }
        rows.sort();
        rows
    };
    let ro = |id: &str| Some(id.to_owned());
    // Rewards: the default rollout's step 0.5, ro_1's 0.0, ro_2's step 0 1.0 (its step 1 has
    // none); advantages ro_1 -0.71, ro_2 +0.71.
    assert_eq!(rows(&[("reward_min", "0.5")]), [(None, 0), (ro("ro_2"), 0)]);
    assert_eq!(
        rows(&[("advantage_min", "0")]),
        [(ro("ro_2"), 0), (ro("ro_2"), 1)],
        "every step of a rollout with a high enough advantage; never the default rollout"
    );
    assert_eq!(rows(&[("advantage_min", "-1")]).len(), 3);
    assert_eq!(rows(&[("advantage_min", "-.5e+01")]).len(), 3);
    for bad in [
        ("reward_min", "high"),
        ("advantage_min", "NaN"),
        ("reward_min", "1e400"),
        ("reward_min", "1e100"),
        ("advantage_min", "."),
    ] {
        let error = build::normalize(request(&[bad])).unwrap_err().to_string();
        assert!(error.contains("one finite number"), "{error}");
    }
}

#[test]
fn builds_write_any_view_of_their_source_with_filters() {
    let (log, _) = training_log();
    let domain = projections_up_to(&log, log.len());
    let to = Lsn(log.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    let request = |source, view, filters: &[(&str, &str)]| DatasetBuildRequest {
        name: "view".into(),
        version: "v1".into(),
        source,
        strategy: BuildStrategy::Latest,
        seed: None,
        limit: None,
        filters: filters
            .iter()
            .map(|(field, value)| ((*field).to_string(), vec![(*value).to_string()]))
            .collect(),
        view,
        training_run_id: None,
        session_id: None,
    };
    let build = |request| {
        let spec = build::normalize(request).unwrap();
        let outcome = build::write_build(&domain, &settings(dir.path()), &spec, to, None).unwrap();
        let batches: Vec<RecordBatch> = outcome
            .manifest
            .files
            .iter()
            .flat_map(|file| read_batches(&dir.path().join(&outcome.dir).join(&file.path)))
            .collect();
        (outcome, batches)
    };
    // Python records as TRL GRPO rows: the trainer columns, the recorded system prompt.
    let (outcome, batches) = build(request(
        BuildSource::Records,
        Some(ExportKind::TrlGrpo),
        &[("language", "python")],
    ));
    assert_eq!(
        outcome.manifest.schema_version,
        ExportKind::TrlGrpo.schema_version()
    );
    assert_eq!(outcome.manifest.rows, 20);
    let batch = &batches[0];
    assert!(batch.column_by_name("verify_payload").is_some());
    assert_eq!(conversation(batch, "prompt", 0)[0].0, "system");
    let languages = batch.column_by_name("language").unwrap().as_string::<i32>();
    assert!(languages.iter().all(|language| language == Some("python")));
    // Steps as TRL SFT rows: the 0.5 reward is under the recorded threshold; a filter still
    // applies on top.
    let (outcome, _) = build(request(
        BuildSource::Trajectories,
        Some(ExportKind::TrlSft),
        &[],
    ));
    assert_eq!(outcome.manifest.rows, 2);
    let (outcome, _) = build(request(
        BuildSource::Trajectories,
        Some(ExportKind::TrlSft),
        &[("source", "fixture/mini")],
    ));
    assert_eq!(outcome.manifest.rows, 1, "the free task is no record");
    // The source's own kind is the default view, with the same build id; other pairs are refused.
    let plain = build::normalize(request(BuildSource::Records, None, &[])).unwrap();
    let own = build::normalize(request(
        BuildSource::Records,
        Some(ExportKind::Processed),
        &[],
    ));
    assert_eq!(
        build::build_id(&plain, to),
        build::build_id(&own.unwrap(), to)
    );
    let error = build::normalize(request(BuildSource::Records, Some(ExportKind::TrlSft), &[]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("processed, trl_grpo, verl_rl"), "{error}");
}

/// A build's lineage is read as of its `to`: a dataset registered after it (here the dataset
/// a step's task names) is not one of its sources, so the projection of the whole log (what
/// `agentd rebuild` replays) writes the manifest the live daemon wrote at `to`.
#[test]
fn a_builds_lineage_is_as_of_its_to_not_of_later_registrations() {
    let mut log = sample_log(20, 0);
    log.push(record(30_000, vec![rollout_step("late/v1/0", None, 0)]));
    let to = Lsn(log.len() as u64);
    log.push(record(
        31_000,
        vec![Event::DatasetRegistered(DatasetMeta {
            source: "late".into(),
            version: "v1".into(),
            license: "GPL-3.0".into(),
            downloaded_at: "2026-02-01T00:00:00Z".into(),
            sha256: "b".repeat(64),
            num_records: 1,
            url: None,
        })],
    ));
    log.push(record(
        32_000,
        vec![Event::DatasetRecordsIngested(DatasetRecordsIngested {
            source: "late".into(),
            version: "v1".into(),
            first_index: 0,
            records: vec![dataset_record(0, "python")],
        })],
    ));
    let spec = build::normalize(DatasetBuildRequest {
        name: "steps".into(),
        version: "v1".into(),
        source: BuildSource::Trajectories,
        strategy: BuildStrategy::Latest,
        seed: None,
        limit: None,
        filters: BTreeMap::new(),
        view: None,
        training_run_id: None,
        session_id: None,
    })
    .unwrap();
    let live_dir = tempfile::tempdir().unwrap();
    let live = projections_up_to(&log, to.0 as usize);
    let live = build::write_build(&live, &settings(live_dir.path()), &spec, to, None).unwrap();
    let rebuilt_dir = tempfile::tempdir().unwrap();
    let whole = projections_up_to(&log, log.len());
    let rebuilt =
        build::write_build(&whole, &settings(rebuilt_dir.path()), &spec, to, None).unwrap();
    let lineage = live.manifest.dataset.as_ref().unwrap().lineage.as_ref();
    assert_eq!(
        lineage.unwrap().sources,
        Vec::new(),
        "nothing registered by to"
    );
    assert_eq!(rebuilt.manifest, live.manifest);
    assert_eq!(rebuilt.manifest_sha256, live.manifest_sha256);
}
