//! A log written before rollouts existed (`tests/fixtures/legacy_v1/`, by the build of commit
//! 7fd5cd0, with the six exports that build produced) rebuilds with this build to the same
//! exports: the kinds whose columns did not change byte for byte, and the step kinds with every
//! old column equal and the new columns null (each old step belongs to its task's default
//! rollout and was recorded with a structured action, not from a raw output).

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every export of the fixture covers (0, 37]; the records after it are the export records.
const EXPORTED_TO: &str = "37";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/legacy_v1")
}

/// Copies the fixture's log into a fresh data dir and rebuilds it to (0, 37] under `out`.
fn rebuild(dir: &Path) -> (PathBuf, serde_json::Value) {
    let log = dir.join("data/log");
    std::fs::create_dir_all(&log).unwrap();
    for entry in std::fs::read_dir(fixture().join("log")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, log.join(path.file_name().unwrap())).unwrap();
    }
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_agentd"))
        .args(["rebuild", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--until-lsn", EXPORTED_TO, "--out"])
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_slice(&output.stdout).unwrap();
    (out.join("exports"), report)
}

/// Relative paths of every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    // The fixture is small: every file is one batch.
    assert_eq!(batches.len(), 1, "{}: one batch", path.display());
    batches.remove(0)
}

/// Version 2 of `trl_sft` writes the assistant turn in the actor's output format (tags), where
/// version 1 wrote `<think>` and the action as bare JSON: the same user turns, and assistant
/// turns with the same think and action.
fn same_turns_in_the_output_format(old: &ArrayRef, new: &ArrayRef) {
    let (old, new) = (old.as_list::<i32>(), new.as_list::<i32>());
    for row in 0..old.len() {
        let (old, new) = (old.value(row), new.value(row));
        let (old, new) = (old.as_struct(), new.as_struct());
        let turn = |turns: &arrow_array::StructArray, index: usize| {
            turns.column(1).as_string::<i32>().value(index).to_owned()
        };
        assert_eq!(turn(old, 0), turn(new, 0), "row {row}: the user turn");
        let (old_answer, new_answer) = (turn(old, 1), turn(new, 1));
        let parsed = agentd::fuzz_api::parse_model_output(&new_answer)
            .unwrap_or_else(|error| panic!("row {row}: {error}: {new_answer}"));
        let old_action = old_answer.rsplit("</think>\n").next().unwrap();
        let old_action: serde_json::Value = serde_json::from_str(old_action).unwrap();
        assert_eq!(
            serde_json::to_value(&parsed.action).unwrap(),
            old_action,
            "row {row}"
        );
        if let Some(think) = &parsed.think {
            assert!(
                old_answer.starts_with(&format!("<think>\n{think}\n</think>\n")),
                "row {row}"
            );
        }
    }
}

#[test]
fn kinds_whose_columns_did_not_change_rebuild_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (exports, report) = rebuild(dir.path());
    // The dataset and job projections are unchanged by rollouts: the same digests as the
    // build that wrote the log (tests/fixtures/legacy_v1/README.md).
    assert_eq!(
        report["datasets"],
        "764e1ac7616ebd28a675752e96b17cfbc6379be23a4c4ff8760dc339badc1e72"
    );
    assert_eq!(
        report["jobs"],
        "800ae88179e13ca53124cc577bd3ca19c60f253590c3650b5b0fdcee9601d95c"
    );
    for kind in ["processed"] {
        let old = fixture().join(format!("exports/{kind}-parquet"));
        let new = exports.join(format!("exp_{kind}_0_{EXPORTED_TO}"));
        assert_eq!(files(&old), files(&new), "{kind}");
        for file in files(&old) {
            assert!(
                std::fs::read(old.join(&file)).unwrap() == std::fs::read(new.join(&file)).unwrap(),
                "{kind}: {} differs",
                file.display()
            );
        }
    }
}

/// Version 2 of `verl_rl` added fields to `extra_info`: every old field is unchanged.
fn same_old_struct_fields(old: &ArrayRef, new: &ArrayRef) {
    let (old, new) = (old.as_struct(), new.as_struct());
    for (index, field) in old.fields().iter().enumerate() {
        let new_field = new
            .column_by_name(field.name())
            .unwrap_or_else(|| panic!("extra_info.{} is gone", field.name()));
        assert!(
            old.column(index).as_ref() == new_field.as_ref(),
            "extra_info.{}: values differ",
            field.name()
        );
    }
}

/// The columns version 2 of the record views added, with whether each is null in a log that
/// recorded no training settings (the text columns are the record's own; `None`: it depends on
/// the record's metadata).
const GRPO_ADDED: &[(&str, Option<bool>)] = &[
    ("pre", Some(false)),
    ("post", Some(false)),
    ("metadata_json", Some(false)),
    ("tests", None),
    ("test_command", None),
    ("verify_payload", Some(false)),
    ("reward_settings", Some(true)),
    ("system_prompt_version", Some(true)),
];

#[test]
fn record_views_rebuild_with_every_old_column_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (exports, _) = rebuild(dir.path());
    for (kind, added) in [("trl_grpo", GRPO_ADDED), ("verl_rl", &[][..])] {
        let file = format!("{kind}-parquet/{kind}/train-00000-of-00001.parquet");
        let old = read_parquet(&fixture().join("exports").join(&file));
        let new_file = format!("exp_{kind}_0_{EXPORTED_TO}/{kind}/train-00000-of-00001.parquet");
        let new = read_parquet(&exports.join(new_file));
        assert_eq!(old.num_rows(), new.num_rows(), "{kind}");
        assert!(old.num_rows() > 0);
        for field in old.schema().fields() {
            let name = field.name();
            let (old_column, new_column) = (
                old.column_by_name(name).unwrap(),
                new.column_by_name(name).unwrap(),
            );
            if (kind, name.as_str()) == ("verl_rl", "extra_info") {
                same_old_struct_fields(old_column, new_column);
                continue;
            }
            // No training settings in this log: no system turn, the same prompt.
            assert!(
                old_column.as_ref() == new_column.as_ref(),
                "{kind}.{name}: values differ"
            );
        }
        for (name, null) in added {
            let column = new.column_by_name(name).unwrap();
            if let Some(null) = null {
                let expected = if *null { new.num_rows() } else { 0 };
                assert_eq!(column.null_count(), expected, "{kind}.{name}");
            }
        }
        assert_eq!(new.num_columns(), old.num_columns() + added.len(), "{kind}");
    }
}

#[test]
fn step_kinds_rebuild_with_every_old_column_unchanged_and_null_rollout_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (exports, _) = rebuild(dir.path());
    for (kind, file, added) in [
        (
            "trajectories",
            "trajectories-00000-of-00001.parquet",
            &[
                "rollout_id",
                "group",
                "split",
                "raw_output",
                "format_error",
                "generation_ms",
                "rollout_reward",
                "advantage",
            ][..],
        ),
        (
            "trl_sft",
            "trl_sft/train-00000-of-00001.parquet",
            &["rollout_id", "group", "split"][..],
        ),
    ] {
        let old = read_parquet(&fixture().join(format!("exports/{kind}-parquet/{file}")));
        let new = read_parquet(&exports.join(format!("exp_{kind}_0_{EXPORTED_TO}/{file}")));
        assert_eq!(old.num_rows(), new.num_rows(), "{kind}");
        assert!(old.num_rows() > 0);
        for field in old.schema().fields() {
            let name = field.name();
            let old_column = old.column_by_name(name).unwrap();
            let new_column = new
                .column_by_name(name)
                .unwrap_or_else(|| panic!("{kind}: column {name} is gone"));
            if name == "schema_version" {
                continue; // 1 then, 2 or 3 now: the one value that must differ.
            }
            if (kind, name.as_str()) == ("trl_sft", "messages") {
                same_turns_in_the_output_format(old_column, new_column);
                continue;
            }
            // Types are unchanged (`action_kind` became nullable: a raw output that does not
            // parse has no action; nullability is the field's, not the type's).
            assert_eq!(
                old_column.data_type(),
                new_column.data_type(),
                "{kind}.{name}"
            );
            assert!(
                old_column.as_ref() == new_column.as_ref(),
                "{kind}.{name}: values differ"
            );
        }
        for name in added {
            let column = new
                .column_by_name(name)
                .unwrap_or_else(|| panic!("{kind}: no column {name}"));
            if *name == "split" {
                // Every task of the fixture is a kept record of the train split.
                let splits = column.as_any().downcast_ref::<StringArray>().unwrap();
                assert!(splits.iter().all(|split| split == Some("train")), "{kind}");
                continue;
            }
            assert_eq!(column.null_count(), new.num_rows(), "{kind}.{name}");
        }
        assert_eq!(
            new.num_columns(),
            old.num_columns() + added.len(),
            "{kind}: only the rollout columns are new"
        );
    }
}
