//! Replays the encoded fixtures of every past event version under `migrations/fixtures/` through
//! the current decoder (which upcasts old versions) and checks the decoded record.
//!
//! Each fixture is a pair: `<name>.msgpack` (the exact bytes a frame payload held when that
//! version was current) and `<name>.json` (the record the current decoder must produce, as
//! JSON). To add fixtures for a new version, run with `AGENTD_WRITE_FIXTURES=1`: it writes any
//! missing pair for the current version and never overwrites an existing one.

use agentd_schemas::events::*;
use agentd_schemas::{JobId, LeaseId, RolloutId};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations/fixtures")
}

/// One record per event variant, as the current version writes it. A sample's name is the
/// fixture's file stem: the event's type name, plus `.v<N>` for a variant past its first
/// version (whose `.v1` fixture keeps the plain name).
fn current_samples() -> Vec<(&'static str, LogRecord)> {
    let record = |events: Vec<Event>| LogRecord {
        ts_ms: 1_767_225_600_000,
        actor: Some("box-3".into()),
        events,
    };
    let tags: Tags = [("gpu".to_string(), "a100".to_string())].into();
    let state = AgentState {
        goals: vec!["replace print with logging".into()],
        constraints: vec!["keep behaviour".into()],
        decisions: vec![],
        hypotheses: vec!["print is used for debugging".into()],
        history: vec!["step 0: matched 3 calls".into()],
        open_issues: vec![],
        next_focus: Some("tests".into()),
    };
    vec![
        (
            "job_submitted",
            record(vec![Event::JobSubmitted(JobSubmitted {
                job_id: JobId(1),
                queue: "actors".into(),
                kind: "astgrep.verify".into(),
                payload_json: r#"{"files":{"a.py":"print(1)"}}"#.into(),
                priority: 5,
                run_at_ms: 1_767_225_600_000,
                max_attempts: 3,
                lease_ttl_ms: 60_000,
                tags,
                task_id: Some("task-1".into()),
                idempotency_key: Some("k-1".into()),
            })]),
        ),
        (
            "job_leased",
            record(vec![Event::JobLeased(JobLeased {
                job_id: JobId(1),
                lease_id: LeaseId(1),
                worker_id: "box-3-17".into(),
                attempt: 1,
                expires_at_ms: 1_767_225_660_000,
            })]),
        ),
        (
            "lease_heartbeat",
            record(vec![Event::LeaseHeartbeat {
                job_id: JobId(1),
                lease_id: LeaseId(1),
                expires_at_ms: 1_767_225_680_000,
            }]),
        ),
        (
            "job_completed",
            record(vec![Event::JobCompleted {
                job_id: JobId(1),
                lease_id: LeaseId(1),
                result_json: Some(r#"{"ok":true}"#.into()),
                log_tail: None,
            }]),
        ),
        (
            "job_failed",
            record(vec![Event::JobFailed {
                job_id: JobId(2),
                lease_id: LeaseId(2),
                error: "exit status 1".into(),
                retryable: true,
                after: AfterFailure::Retry {
                    run_at_ms: 1_767_225_601_000,
                },
                log_tail: None,
            }]),
        ),
        (
            "lease_expired",
            record(vec![Event::LeaseExpired {
                job_id: JobId(3),
                lease_id: LeaseId(3),
                after: AfterFailure::Dead,
            }]),
        ),
        (
            "job_cancelled",
            record(vec![Event::JobCancelled { job_id: JobId(4) }]),
        ),
        (
            "job_retried",
            record(vec![Event::JobRetried {
                job_id: JobId(3),
                run_at_ms: 1_767_225_700_000,
            }]),
        ),
        (
            "queue_paused",
            record(vec![Event::QueuePaused {
                queue: "actors".into(),
            }]),
        ),
        (
            "queue_resumed",
            record(vec![Event::QueueResumed {
                queue: "actors".into(),
            }]),
        ),
        (
            "dataset_registered",
            record(vec![Event::DatasetRegistered(DatasetMeta {
                source: "commitpackft".into(),
                version: "2023-08".into(),
                license: "MIT".into(),
                downloaded_at: "2026-11-01T12:00:00Z".into(),
                sha256: "a".repeat(64),
                num_records: 2,
                url: Some("https://huggingface.co/datasets/bigcode/commitpackft".into()),
            })]),
        ),
        (
            "dataset_records_ingested",
            record(vec![Event::DatasetRecordsIngested(
                DatasetRecordsIngested {
                    source: "commitpackft".into(),
                    version: "2023-08".into(),
                    first_index: 0,
                    records: vec![DatasetRecord {
                        instruction: "Use logging".into(),
                        pre: "print(x)\n".into(),
                        post: "logger.info(x)\n".into(),
                        language: "python".into(),
                        tags: vec!["logging".into()],
                        metadata_json: r#"{"repo":"a/b","commit":"abc123"}"#.into(),
                    }],
                },
            )]),
        ),
        (
            "task_state_updated.v2",
            record(vec![Event::TaskStateUpdated(TaskStateUpdated {
                task_id: "task-1".into(),
                rollout_id: Some(RolloutId(3)),
                update: state.clone(),
                forget: StateForget {
                    remove: AgentStateLists {
                        goals: vec!["old goal".into()],
                        ..AgentStateLists::default()
                    },
                    resolve: vec!["flaky test".into()],
                    retract: vec!["print is unused".into()],
                    clear_next_focus: true,
                },
                limits: StateLimits {
                    history_max: 3,
                    item_chars_max: 256,
                    token_budget: 800,
                    encoding: "o200k_base".into(),
                },
                lease_id: Some(LeaseId(1)),
            })]),
        ),
        (
            "step_recorded.v2",
            record(vec![Event::StepRecorded(StepRecorded {
                task_id: "task-1".into(),
                rollout_id: Some(RolloutId(3)),
                step: 0,
                job_id: Some(JobId(1)),
                lease_id: Some(LeaseId(1)),
                attempt: Some(1),
                worker_id: Some("box-3-17".into()),
                model: "qwen2.5-coder-7b".into(),
                policy_version: "v12".into(),
                sampling: Sampling {
                    temperature: Some(0.7),
                    top_p: Some(0.95),
                    max_tokens: Some(1024),
                    seed: Some(7),
                },
                prompt_tokens: Some(812),
                completion_tokens: Some(97),
                prompt: Some("## Goals\n- replace print".into()),
                think: Some("print calls should become logger calls".into()),
                action: Some(Action::Pattern {
                    language: "python".into(),
                    pattern: "print($A)".into(),
                    rewrite: "logger.info($A)".into(),
                }),
                state_update: Some(state),
                raw_output: None,
                generation_ms: None,
                format_error: None,
            })]),
        ),
        (
            "sandbox_result_recorded.v2",
            record(vec![Event::SandboxResultRecorded(SandboxResultRecorded {
                task_id: "task-1".into(),
                rollout_id: Some(RolloutId(3)),
                step: 0,
                lease_id: Some(LeaseId(1)),
                exit_code: Some(0),
                outcome: SandboxOutcome::Ok,
                diff: "--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-print(x)\n+logger.info(x)\n".into(),
                stdout: "1 passed".into(),
                stderr: String::new(),
                tests_passed: Some(1),
                tests_failed: Some(0),
                duration_ms: Some(412),
                peak_rss_bytes: Some(31_457_280),
            })]),
        ),
        (
            "reward_recorded.v2",
            record(vec![Event::RewardRecorded(RewardRecorded {
                task_id: "task-1".into(),
                rollout_id: Some(RolloutId(3)),
                step: 0,
                lease_id: Some(LeaseId(1)),
                value: 1.0,
                verified: true,
                components: BTreeMap::from([
                    ("applied".to_string(), 1.0),
                    ("tests".to_string(), 1.0),
                ]),
                source: RewardSource::Rule,
            })]),
        ),
        (
            "rollout_created",
            record(vec![Event::RolloutCreated(RolloutCreated {
                rollout_id: RolloutId(3),
                task_id: "task-1".into(),
                group: "grp-task-1-a".into(),
                model: "qwen2.5-coder-7b".into(),
                policy_version: "v12".into(),
                sampling: Sampling {
                    temperature: Some(1.0),
                    top_p: None,
                    max_tokens: Some(1024),
                    seed: Some(3),
                },
                job_id: Some(JobId(1)),
                lease_id: Some(LeaseId(1)),
                attempt: Some(1),
                worker_id: Some("box-3-17".into()),
                state_from: StateFrom::Task,
            })]),
        ),
        (
            "export_recorded",
            record(vec![Event::ExportRecorded(ExportRecorded {
                export_id: "exp_trajectories_0_120".into(),
                kind: ExportKind::Trajectories,
                format: ExportFormat::Parquet,
                after_lsn: agentd_schemas::Lsn(0),
                to_lsn: agentd_schemas::Lsn(120),
                dir: "exp_trajectories_0_120".into(),
                rows: 42,
                files: vec![ExportedFile {
                    path: "trajectories-00000-of-00001.parquet".into(),
                    rows: 42,
                    bytes: 18_211,
                    sha256: "b".repeat(64),
                }],
                manifest_sha256: "c".repeat(64),
                schema_version: 1,
                schedule: Some(ScheduleSlot {
                    schedule: "nightly-trajectories".into(),
                    slot_ms: 1_767_225_600_000,
                }),
                // Added later, optional: absent here, so the fixture keeps the bytes written
                // before it existed.
                copied_to: None,
            })]),
        ),
        (
            "schedule_fired",
            record(vec![Event::ScheduleFired(ScheduleFired {
                schedule: "nightly-trajectories".into(),
                slot_ms: 1_767_225_600_000,
                kind: ExportKind::Trajectories,
                format: ExportFormat::Parquet,
                after_lsn: agentd_schemas::Lsn(0),
                to_lsn: agentd_schemas::Lsn(120),
                export_id: "exp_trajectories_0_120".into(),
            })]),
        ),
        (
            "dataset_built",
            record(vec![Event::DatasetBuilt(DatasetBuilt {
                dataset_key: "python-edits-v1".into(),
                build_id: "bld_0123456789abcdef".into(),
                spec: DatasetBuildSpec {
                    name: "python-edits".into(),
                    version: "v1".into(),
                    source: BuildSource::Records,
                    strategy: BuildStrategy::Random,
                    seed: Some(7),
                    limit: Some(1000),
                    filters: BTreeMap::from([("language".to_string(), vec!["python".to_string()])]),
                    view: None,
                    training_run_id: None,
                    session_id: None,
                },
                to_lsn: agentd_schemas::Lsn(120),
                dir: "datasets/python-edits-v1/bld_0123456789abcdef".into(),
                rows: 1000,
                files: vec![ExportedFile {
                    path: "data-00000-of-00001.parquet".into(),
                    rows: 1000,
                    bytes: 91_002,
                    sha256: "d".repeat(64),
                }],
                manifest_sha256: "e".repeat(64),
                schema_version: 1,
                copied_to: None,
            })]),
        ),
        (
            "export_copied",
            record(vec![Event::ExportCopied(ExportCopied {
                export_id: "exp_trajectories_0_120".into(),
                copied_to: "s3://bucket/agentd/exports/exp_trajectories_0_120/".into(),
            })]),
        ),
        (
            "dataset_settings_recorded",
            record(vec![Event::DatasetSettingsRecorded(DatasetSettings {
                encoding: "o200k_base".into(),
                token_cap: 2000,
                split_train: 90,
                split_dev: 5,
                split_test: 5,
            })]),
        ),
        (
            "training_settings_recorded",
            record(vec![Event::TrainingSettingsRecorded(TrainingSettings {
                rewards: RewardSettings {
                    combine: RewardCombine::Weighted,
                    tests: TestsReward::Fraction,
                    weights: RewardWeights {
                        tests: 2.0,
                        gold_match: 1.0,
                        post_match: 0.5,
                    },
                },
                system_prompt: SystemPrompt {
                    version: "astgrep-v1".into(),
                    text: "You are a code-refactoring agent.".into(),
                },
                sft: SftSettings { min_reward: 1.0 },
            })]),
        ),
    ]
}

#[test]
fn every_current_event_type_has_a_fixture_and_every_fixture_decodes() {
    let samples = current_samples();
    let version_dir = fixtures_dir().join(format!("v{RECORD_FORMAT_VERSION}"));
    let write = std::env::var_os("AGENTD_WRITE_FIXTURES").is_some();
    for (name, record) in &samples {
        assert_eq!(
            record.events[0].type_name(),
            name.split('.').next().unwrap(),
            "sample names match event type names"
        );
        let bytes_path = version_dir.join(format!("{name}.msgpack"));
        if write && !bytes_path.exists() {
            std::fs::create_dir_all(&version_dir).unwrap();
            std::fs::write(&bytes_path, encode_record(record)).unwrap();
            std::fs::write(
                version_dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(record).unwrap() + "\n",
            )
            .unwrap();
        }
        assert!(bytes_path.exists(), "no fixture for {name}: run with AGENTD_WRITE_FIXTURES=1 and commit migrations/fixtures");
    }
    // Every fixture of every version, past ones included, decodes into its expected record.
    let mut checked = 0;
    for version in std::fs::read_dir(fixtures_dir()).unwrap() {
        let version = version.unwrap().path();
        let format: u8 = version
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches('v')
            .parse()
            .unwrap();
        for entry in std::fs::read_dir(&version).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "msgpack") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let decoded = decode_record(format, &bytes)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let expected: LogRecord = serde_json::from_str(
                &std::fs::read_to_string(path.with_extension("json")).unwrap(),
            )
            .unwrap();
            assert_eq!(decoded, expected, "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= samples.len());
}

#[test]
fn current_encoding_of_the_samples_is_byte_stable() {
    // Encoding the same record twice gives the same bytes; fixtures of the current version equal
    // today's encoding, so an accidental format change fails here first.
    let version_dir = fixtures_dir().join(format!("v{RECORD_FORMAT_VERSION}"));
    for (name, record) in current_samples() {
        let path = version_dir.join(format!("{name}.msgpack"));
        if let Ok(bytes) = std::fs::read(&path) {
            assert_eq!(
                encode_record(&record),
                bytes,
                "{name}: the current encoding changed; add a new version instead"
            );
        }
    }
}

#[test]
fn unknown_format_versions_are_refused() {
    let error = decode_record(RECORD_FORMAT_VERSION + 1, &[]).unwrap_err();
    assert!(error
        .to_string()
        .contains("unsupported record format version"));
}
