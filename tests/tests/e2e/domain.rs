//! The domain features through the real binaries: `agentctl ingest` of a small dataset (with a
//! duplicate, an unknown language and an over-cap record), the dataset stats, two actor episodes
//! through the HTTP API (state updates, steps, sandbox results, rewards; a stale lease refused),
//! then a SIGKILL and restart that changes no answer and no digest, and a fresh `agentd rebuild`
//! that prints the same digests.

use agentd_client::Client;
use agentd_schemas::api::{LeaseRequest, SubmitJobRequest};
use agentd_schemas::domain_api::{
    ActionRequest, RecordStepRequest, RewardRequest, SamplingRequest, SandboxResultRequest,
    StateUpdateFields, StateUpdateRequest,
};
use agentd_schemas::events::{RewardSource, SandboxOutcome};
use agentd_schemas::{JobId, LeaseId};
use agentd_tests::{agentctl, agentd, eventually, write_config, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A small token cap, so the fixture's over-cap record stays readable.
const DOMAIN_CONFIG: &str = "[datasets]\ntoken_cap = 64\n";
const SOURCE: &str = "fixture/commitpack-mini";
const VERSION: &str = "2024-05";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/domain")
        .join(name)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs agentctl and returns (success, stdout, stderr).
fn run_agentctl(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = agentctl(url, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ingest_json(url: &str, meta: &Path, records: &Path) -> Value {
    let (ok, stdout, stderr) = run_agentctl(
        url,
        &[
            "--json",
            "ingest",
            "--meta",
            text(meta),
            "--records",
            text(records),
            "--batch-size",
            "2",
        ],
    );
    assert!(ok, "ingest failed:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// A plain HTTP client, for status codes and non-JSON bodies. reqwest is built without a
/// default TLS crypto provider; building an agentd client installs one, so do that first.
fn raw_http() -> reqwest::Client {
    Client::new("http://127.0.0.1:1", None).expect("agentd client");
    reqwest::Client::new()
}

pub(crate) async fn get_json(url: &str, path: &str) -> Value {
    let response = raw_http().get(format!("{url}{path}")).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

pub(crate) async fn post_json(url: &str, path: &str, body: Value) -> (u16, Value) {
    let response = raw_http()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Every read the domain offers, so a restart can be shown to change none of them.
async fn domain_answers(url: &str) -> Value {
    let mut answers = serde_json::Map::new();
    for path in [
        "/v1/datasets",
        "/v1/datasets/stats",
        "/v1/tasks/task-a/state",
        "/v1/tasks/task-b/state",
        "/v1/tasks/task-a/state/history",
        "/v1/tasks/task-b/state/history",
        "/v1/tasks/task-a/trajectory",
        "/v1/tasks/task-b/trajectory",
        "/v1/trajectories/stats",
    ] {
        answers.insert(path.to_owned(), get_json(url, path).await);
    }
    Value::Object(answers)
}

fn pattern(pattern: &str, rewrite: &str) -> ActionRequest {
    ActionRequest::Pattern {
        language: "python".into(),
        pattern: pattern.into(),
        rewrite: rewrite.into(),
    }
}

fn step_request(step: u32, job_id: JobId, lease_id: LeaseId, model: &str) -> RecordStepRequest {
    RecordStepRequest {
        step,
        job_id: Some(job_id),
        lease_id: Some(lease_id),
        model: model.into(),
        policy_version: "srl-poc-1".into(),
        sampling: Some(SamplingRequest {
            temperature: Some(0.7),
            top_p: Some(0.95),
            max_tokens: Some(512),
            seed: Some(7),
        }),
        prompt_tokens: Some(812),
        completion_tokens: Some(96),
        prompt: None,
        think: Some(format!("step {step}: the accumulator is badly named")),
        // Step 0 edits Python with a pattern, step 1 TypeScript with a rule: the stats count
        // each under its action's language.
        action: Some(match step {
            0 => pattern("x", "total"),
            _ => ActionRequest::Rule {
                yaml: "id: rename\nlanguage: ts\nrule:\n  pattern: x\nfix: total\n".into(),
            },
        }),
        raw_output: None,
        generation_ms: None,
        state_update: Some(StateUpdateFields {
            history: vec![format!("step {step}: proposed a rename")],
            hypotheses: vec!["renaming keeps the tests green".into()],
            ..StateUpdateFields::default()
        }),
    }
}

/// Submits an `episode` job for `task` to the `actors` queue and leases it as `worker_id`.
async fn submit_and_lease(
    client: &Client,
    task: &str,
    worker_id: &str,
) -> (JobId, agentd_schemas::api::LeaseGrant) {
    let job = SubmitJobRequest {
        queue: "actors".into(),
        kind: "episode".into(),
        task_id: Some(task.into()),
        ..SubmitJobRequest::default()
    };
    let job_id = client.submit(&job).await.unwrap().job_id;
    let ask = LeaseRequest {
        worker_id: worker_id.into(),
        queues: vec!["actors".into()],
        tags: None,
        max_jobs: Some(1),
        wait_ms: Some(0),
    };
    let grant = client.lease(&ask).await.unwrap().leases.pop().unwrap();
    (job_id, grant)
}

/// One episode: a state update, two steps (the first verified in the sandbox, the second not),
/// with their sandbox results and rewards, all under the episode's lease.
async fn episode(
    client: &Client,
    task: &str,
    job_id: JobId,
    lease_id: LeaseId,
    model: &str,
    first_verified: bool,
) {
    let update = StateUpdateRequest {
        goals: vec![format!("make {task} readable")],
        constraints: vec!["keep behaviour".into()],
        next_focus: Some("the accumulator loop".into()),
        lease_id: Some(lease_id),
        ..StateUpdateRequest::default()
    };
    let merged = client.update_task_state(task, &update).await.unwrap();
    assert_eq!(merged.state.lsn, merged.update_lsn);
    assert!(
        merged.state.rendered.contains("## Goals"),
        "{}",
        merged.state.rendered
    );
    assert!(merged.state.tokens > 0);
    assert_eq!(merged.state.encoding, "o200k_base");

    for step in 0..2u32 {
        let answer = client
            .record_step(task, &step_request(step, job_id, lease_id, model))
            .await
            .unwrap();
        let merged = answer
            .state
            .expect("a step with a state update answers the merged state");
        assert_eq!(merged.update_lsn, answer.lsn);
        assert!(merged
            .state
            .state
            .history
            .contains(&format!("step {step}: proposed a rename")));
        let passed = step == 0 && first_verified;
        let sandbox = SandboxResultRequest {
            exit_code: Some(if passed { 0 } else { 1 }),
            outcome: if passed {
                SandboxOutcome::Ok
            } else {
                SandboxOutcome::Failed
            },
            diff: Some("-x = 0\n+total = 0\n".into()),
            stdout: Some("3 passed\n".into()),
            stderr: None,
            tests_passed: Some(if passed { 3 } else { 2 }),
            tests_failed: Some(if passed { 0 } else { 1 }),
            duration_ms: Some(140),
            peak_rss_bytes: Some(48 << 20),
            lease_id: Some(lease_id),
        };
        client
            .record_sandbox_result(task, step, &sandbox)
            .await
            .unwrap();
        let reward = RewardRequest {
            value: if passed { 1.0 } else { 0.0 },
            verified: passed,
            components: [("tests".to_owned(), if passed { 1.0 } else { 0.0 })].into(),
            source: if step == 0 {
                RewardSource::Rule
            } else {
                RewardSource::Teacher
            },
            lease_id: Some(lease_id),
        };
        client.record_reward(task, step, &reward).await.unwrap();
    }
}

#[tokio::test]
async fn ingest_episodes_crash_and_rebuild_keep_every_domain_projection() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), DOMAIN_CONFIG);
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let url = daemon.url.clone();

    // Ingest in batches of two: a duplicate, an unknown language, one over the cap.
    let summary = ingest_json(&url, &fixture("_meta.json"), &fixture("normalized.jsonl"));
    assert_eq!(summary["registered"], true);
    for (field, expected) in [
        ("records_in_file", 6),
        ("accepted", 6),
        ("kept", 3),
        ("duplicate", 1),
        ("unknown_language", 1),
        ("over_token_cap", 1),
        ("rejected", 0),
        ("records_received", 6),
    ] {
        assert_eq!(summary[field], expected, "{field} in {summary:#}");
    }
    assert_eq!(summary["count_matches"], true);
    let stats_before = get_json(&url, "/v1/datasets/stats").await;

    // Ingesting the same version again changes nothing.
    let again = ingest_json(&url, &fixture("_meta.json"), &fixture("normalized.jsonl"));
    assert_eq!(
        (
            again["registered"].clone(),
            again["accepted"].clone(),
            again["resent"].clone()
        ),
        (json!(false), json!(0), json!(6))
    );
    let stats: Value = get_json(&url, "/v1/datasets/stats").await;
    let total = &stats["total"];
    assert_eq!(
        (
            total["records"].clone(),
            total["kept"].clone(),
            total["duplicates"].clone(),
            total["over_token_cap"].clone(),
            total["unknown_language"].clone()
        ),
        (json!(6), json!(3), json!(1), json!(1), json!(1))
    );
    assert_eq!(
        total["languages"],
        json!({"java": 1, "javascript": 1, "python": 1})
    );
    assert_eq!(total["unknown_language_names"], json!({"cobol": 1}));
    // Positions already received are dropped before anything is written.
    assert_eq!(total["resent"], 0);
    let splits = &total["splits"];
    assert_eq!(
        splits["train"].as_u64().unwrap()
            + splits["dev"].as_u64().unwrap()
            + splits["test"].as_u64().unwrap(),
        3
    );
    assert!(total["p95_tokens"].as_u64().unwrap() <= 64);
    assert_eq!(stats["datasets"][0]["source"], SOURCE);
    assert_eq!(stats["token_cap"], 64);
    for counts in ["languages", "splits", "records", "kept"] {
        assert_eq!(
            stats["total"][counts], stats_before["total"][counts],
            "{counts} moved on re-ingest"
        );
    }

    // `agentctl --json datasets stats` prints what the API answers; text is a Markdown table.
    let (ok, stdout, stderr) = run_agentctl(&url, &["--json", "datasets", "stats"]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), stats);
    let (ok, markdown, _) = run_agentctl(&url, &["datasets", "stats", "--format", "markdown"]);
    assert!(ok);
    assert!(
        markdown.contains(&format!("| {SOURCE} {VERSION} | 6 | 3 | 1 | 1 | 1 | 0 |")),
        "{markdown}"
    );
    assert!(markdown.contains("`cobol` (1)"), "{markdown}");
    let (ok, list, _) = run_agentctl(&url, &["datasets", "list"]);
    assert!(
        ok && list.contains(SOURCE) && list.contains("yes"),
        "{list}"
    );

    // Registration conflicts and unknown datasets.
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("_meta.json")).unwrap()).unwrap();
    meta["num_records"] = json!(7);
    let (status, body) = post_json(&url, "/v1/datasets", meta).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("num_records"),
        "{body}"
    );
    let (status, body) = post_json(
        &url,
        "/v1/datasets/nobody/1/records",
        json!({"records": []}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );

    // Two actor episodes under real leases.
    let client = daemon.client();
    let mut leases = Vec::new();
    for task in ["task-a", "task-b"] {
        let (job_id, grant) = submit_and_lease(&client, task, "actor-1").await;
        assert_eq!(grant.job_id, job_id);
        leases.push((task, job_id, grant.lease_id));
    }
    episode(&client, "task-a", leases[0].1, leases[0].2, "glm-4.6", true).await;
    episode(
        &client,
        "task-b",
        leases[1].1,
        leases[1].2,
        "minimax-m2",
        false,
    )
    .await;

    // What the API refuses: a duplicate step, facts for a missing step, unknown fields, and a
    // post under a lease that is no longer held.
    let (task, job_a, lease_a) = leases[0];
    let error = client
        .record_step(task, &step_request(1, job_a, lease_a, "glm-4.6"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("conflict"), "{error}");
    let reward = RewardRequest {
        value: 1.0,
        verified: true,
        components: Default::default(),
        source: RewardSource::Human,
        lease_id: None,
    };
    let error = client.record_reward(task, 9, &reward).await.unwrap_err();
    assert_eq!(error.code(), Some("not_found"), "{error}");
    let error = client.record_reward(task, 0, &reward).await.unwrap_err();
    assert_eq!(error.code(), Some("conflict"), "{error}");
    let (status, body) = post_json(
        &url,
        "/v1/tasks/task-a/state",
        json!({"goals": ["x"], "goal": "typo"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = post_json(
        &url,
        "/v1/tasks/task-a/steps/0/sandbox",
        json!({"outcome": "ok", "stdout": "x".repeat(70_000)}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("string_too_long")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("65536"),
        "the limit is named: {body}"
    );
    client.complete(lease_a, None).await.unwrap();
    let stale = StateUpdateRequest {
        goals: vec!["too late".into()],
        lease_id: Some(lease_a),
        ..StateUpdateRequest::default()
    };
    let error = client.update_task_state(task, &stale).await.unwrap_err();
    assert_eq!(error.code(), Some("lease_lost"), "{error}");
    let error = client
        .record_step(task, &step_request(2, job_a, lease_a, "glm-4.6"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("lease_lost"), "{error}");

    // What the projections hold.
    let state_a = client.task_state("task-a").await.unwrap();
    assert_eq!(state_a.updates, 3, "one direct update and one per step");
    assert!(!state_a.state.goals.contains(&"too late".to_owned()));
    assert_eq!(
        state_a.state.history,
        ["step 0: proposed a rename", "step 1: proposed a rename"]
    );
    let history = client.task_state_history("task-a", None).await.unwrap();
    let lsns: Vec<u64> = history.updates.iter().map(|update| update.lsn.0).collect();
    assert!(lsns.windows(2).all(|pair| pair[0] < pair[1]), "{lsns:?}");
    assert_eq!(history.updates.last().unwrap().lsn, state_a.lsn);
    let trajectory = client.trajectory("task-a", None).await.unwrap();
    assert_eq!(trajectory.steps.len(), 2);
    let (first, second) = (&trajectory.steps[0], &trajectory.steps[1]);
    assert_eq!(first.state_before.goals, ["make task-a readable"]);
    assert!(
        first.state_before.history.is_empty(),
        "the step's own update comes after it"
    );
    assert_eq!(second.state_before.history, ["step 0: proposed a rename"]);
    assert_eq!(
        (first.attempt, first.worker_id.as_deref()),
        (Some(1), Some("actor-1"))
    );
    assert_eq!(first.sandbox.as_ref().unwrap().outcome, SandboxOutcome::Ok);
    assert!(first.reward.as_ref().unwrap().verified);
    assert!(!second.reward.as_ref().unwrap().verified);
    let stats = client.trajectory_stats().await.unwrap();
    let precision: Vec<(String, Option<f64>)> = stats
        .models
        .iter()
        .map(|model| (model.model.clone(), model.teacher_precision))
        .collect();
    assert_eq!(
        precision,
        [
            ("glm-4.6".to_owned(), Some(0.5)),
            ("minimax-m2".to_owned(), Some(0.0))
        ]
    );
    assert_eq!(
        (stats.steps, stats.rewards.count, stats.rewards.verified),
        (4, 4, 1)
    );
    assert_eq!(stats.rewards.by_source.get("rule"), Some(&2));
    assert_eq!(stats.sandbox_outcomes.get("failed"), Some(&3));
    // By the language of each step's action: both steps 0 are Python patterns (task-a's
    // verified), both steps 1 rules whose YAML says `language: ts`.
    let languages: Vec<(&str, u64, u64, u64, Option<f64>)> = stats
        .languages
        .iter()
        .map(|entry| {
            let name = entry.language.as_str();
            let (steps, rewarded, verified) = (entry.steps, entry.rewarded, entry.verified);
            (name, steps, rewarded, verified, entry.teacher_precision)
        })
        .collect();
    assert_eq!(
        languages,
        [
            ("python", 2, 2, 1, Some(0.5)),
            ("typescript", 2, 2, 0, Some(0.0))
        ]
    );

    // The CLI shows the same.
    let (ok, shown, _) = run_agentctl(&url, &["state", "show", "task-a"]);
    assert!(
        ok && shown.contains("## History") && shown.contains(&format!("lsn {}", state_a.lsn)),
        "{shown}"
    );
    let (ok, listed, _) = run_agentctl(&url, &["state", "history", "task-a"]);
    assert!(
        ok && listed.contains(&lsns[0].to_string()) && listed.contains("history+1"),
        "{listed}"
    );
    let (ok, steps, _) = run_agentctl(&url, &["trajectories", "show", "task-a"]);
    assert!(
        ok && steps.contains("reward: 1 verified (rule)") && steps.contains("sandbox: failed"),
        "{steps}"
    );
    let (ok, stats_text, _) = run_agentctl(&url, &["trajectories", "stats"]);
    assert!(
        ok && stats_text.contains("glm-4.6") && stats_text.contains("0.500"),
        "{stats_text}"
    );
    let table_row = |name: &str| {
        stats_text
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        table_row("typescript"),
        Some(vec!["typescript", "2", "2", "0", "0.000"]),
        "{stats_text}"
    );
    assert!(
        stats_text.contains("glm-4.6 @ srl-poc-1"),
        "the policy table: {stats_text}"
    );
    let (ok, stats_json, _) = run_agentctl(&url, &["--json", "trajectories", "stats"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&stats_json).unwrap(),
        get_json(&url, "/v1/trajectories/stats").await
    );

    // Prometheus gauges, refreshed by a periodic task.
    eventually(
        Duration::from_secs(10),
        "teacher precision gauges",
        || async {
            let text = raw_http()
                .get(format!("{url}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("agentd_teacher_precision{model=\"glm-4.6\"} 0.5")
                && text.contains("agentd_teacher_precision_by_language{language=\"python\"} 0.5")
                && text.contains("agentd_rewards_verified 1"))
            .then_some(())
        },
    )
    .await;
    // The run time of task-a's episode job, completed above, by queue and kind.
    let metrics = raw_http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let run_time_count = metrics.lines().find(|line| {
        line.starts_with("agentd_job_start_to_finish_seconds_count{")
            && line.contains("queue=\"actors\"")
            && line.contains("kind=\"episode\"")
    });
    assert_eq!(
        run_time_count.and_then(|line| line.rsplit(' ').next()),
        Some("1"),
        "{metrics}"
    );
    // The reward histogram counts every recorded reward, as the stats do, and has HELP text.
    let stats = get_json(&url, "/v1/trajectories/stats").await;
    let reward_count = metrics
        .lines()
        .find_map(|line| line.strip_prefix("agentd_reward_value_count "));
    assert_eq!(
        reward_count,
        Some(stats["rewards"]["count"].to_string().as_str()),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE agentd_reward_value histogram")
            && metrics.contains("# HELP agentd_reward_value "),
        "{metrics}"
    );

    // SIGKILL and restart: every answer and digest is unchanged.
    let answers = domain_answers(&url).await;
    let digest = get_json(&url, "/v1/admin/digest").await;
    for name in ["datasets", "agent_state", "trajectories", "jobs", "queue"] {
        assert!(
            digest["projections"][name].is_string(),
            "{name} missing from {digest}"
        );
    }
    daemon.restart();
    let url = daemon.url.clone();
    assert_eq!(domain_answers(&url).await, answers);
    assert_eq!(get_json(&url, "/v1/admin/digest").await, digest);

    // A fresh offline rebuild of the same data dir prints the same digests.
    assert_eq!(daemon.stop(), Some(0));
    let out = dir.path().join("rebuilt");
    let output = agentd(&[
        "rebuild",
        "--config",
        text(&config),
        "--data-dir",
        text(&data_dir),
        "--out",
        text(&out),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rebuilt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rebuilt["lsn"], digest["lsn"]);
    for name in ["datasets", "agent_state", "trajectories", "jobs", "queue"] {
        assert_eq!(rebuilt[name], digest["projections"][name], "{name}");
    }

    // The splits follow the [datasets] settings recorded in the log, not the config a replay
    // runs with: a rebuild with the default config (token_cap 2000, not 64) gives the same
    // digests...
    let output = agentd(&[
        "rebuild",
        "--data-dir",
        text(&data_dir),
        "--out",
        text(&dir.path().join("rebuilt-default")),
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rebuilt: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rebuilt["datasets"], digest["projections"]["datasets"]);
    // ...and a daemon whose config would change them under existing records refuses to start.
    let refused = Daemon::try_start(&data_dir, None)
        .err()
        .expect("must refuse to start");
    let text_of_refusal = refused.join("\n");
    assert!(
        text_of_refusal
            .contains("differs from the settings the log's dataset records were processed with"),
        "{text_of_refusal}"
    );
    assert!(
        text_of_refusal.contains("token_cap 2000"),
        "{text_of_refusal}"
    );
    assert!(
        text_of_refusal.contains("token_cap 64"),
        "{text_of_refusal}"
    );
}

#[tokio::test]
async fn ingest_reports_bad_lines_and_the_count_mismatch_then_a_fixed_file_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let meta = fixture("bad_meta.json");
    let (ok, stdout, stderr) = run_agentctl(
        &daemon.url,
        &[
            "ingest",
            "--meta",
            text(&meta),
            "--records",
            text(&fixture("bad.jsonl")),
        ],
    );
    assert!(!ok, "a file with bad lines must fail:\n{stdout}\n{stderr}");
    assert!(stderr.contains("line 2: $: not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: post: is required"), "{stderr}");
    assert!(stderr.contains("record count mismatch"), "{stderr}");
    assert!(
        stderr.contains("the daemon holds 1 of the 3 records"),
        "{stderr}"
    );
    assert!(stdout.contains("MISMATCH"), "{stdout}");

    // The same command on the fixed file adds exactly the two missing records.
    let (ok, stdout, stderr) = run_agentctl(
        &daemon.url,
        &[
            "--json",
            "ingest",
            "--meta",
            text(&meta),
            "--records",
            text(&fixture("fixed.jsonl")),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            summary["accepted"].clone(),
            summary["resent"].clone(),
            summary["records_received"].clone()
        ),
        (json!(2), json!(1), json!(3))
    );
    assert_eq!(summary["count_matches"], true);

    // Over the HTTP API a batch answers per record: position and field.
    let (status, body) = post_json(
        &daemon.url,
        "/v1/datasets/fixture%2Fbad-lines/1/records",
        json!({"first_index": 10, "records": [
            {"instruction": "a", "pre": "", "post": "", "language": "go"},
            {"instruction": "b", "pre": "", "post": "", "language": "go", "tags": ["ok", " "]},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["rejected"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(body["rejected_records"][0]["index"], 11);
    assert_eq!(body["rejected_records"][0]["field"], "tags[1]");
}

/// Many clients racing to record the same step, its sandbox result, its reward and a dataset's
/// meta: exactly one of each is answered 2xx, the rest 409 `conflict`, and the log holds only
/// what was acknowledged (no ignored duplicates in the projection's counters).
#[tokio::test]
async fn racing_writers_of_one_fact_get_one_success_and_conflicts() {
    const RACERS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let url = daemon.url.clone();

    async fn race(url: &str, path: &str, bodies: Vec<Value>) -> Vec<(u16, Value)> {
        let calls = bodies.into_iter().map(|body| {
            let (url, path) = (url.to_owned(), path.to_owned());
            tokio::spawn(async move { post_json(&url, &path, body).await })
        });
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    }
    fn one_winner(what: &str, answers: &[(u16, Value)]) {
        let won = answers.iter().filter(|(status, _)| *status < 300).count();
        assert_eq!(won, 1, "{what}: exactly one 2xx expected: {answers:?}");
        for (status, body) in answers.iter().filter(|(status, _)| *status >= 300) {
            assert_eq!(*status, 409, "{what}: {body}");
            assert_eq!(body["code"], "conflict", "{what}: {body}");
        }
    }

    // Each racer's step carries its own state update: only the winner's may reach the state.
    let steps = (0..RACERS)
        .map(|racer| {
            json!({
                "step": 0, "model": format!("model-{racer}"), "policy_version": "p1",
                "action": {"kind": "pattern", "language": "python", "pattern": "x", "rewrite": "y"},
                "state_update": {"history": [format!("racer {racer}")]},
            })
        })
        .collect();
    let answers = race(&url, "/v1/tasks/race/steps", steps).await;
    one_winner("step", &answers);
    let sandboxes = (0..RACERS)
        .map(|racer| json!({"exit_code": racer, "outcome": "ok"}))
        .collect();
    one_winner(
        "sandbox",
        &race(&url, "/v1/tasks/race/steps/0/sandbox", sandboxes).await,
    );
    let rewards = (0..RACERS)
        .map(|racer| json!({"value": racer as f64 / 100.0, "verified": false, "source": "rule"}))
        .collect();
    one_winner(
        "reward",
        &race(&url, "/v1/tasks/race/steps/0/reward", rewards).await,
    );
    let metas = (0..RACERS)
        .map(|racer| {
            json!({
                "source": "race/ds", "version": "v1", "license": "MIT",
                "downloaded_at": "2024-05-01T12:00:00Z", "sha256": "0".repeat(64),
                "num_records": racer,
            })
        })
        .collect();
    one_winner("dataset", &race(&url, "/v1/datasets", metas).await);

    let trajectory = get_json(&url, "/v1/tasks/race/trajectory").await;
    let model = trajectory["steps"][0]["model"].as_str().unwrap().to_owned();
    let racer = model.strip_prefix("model-").unwrap();
    let state = get_json(&url, "/v1/tasks/race/state").await;
    assert_eq!(
        state["state"]["history"],
        json!([format!("racer {racer}")]),
        "only the recorded step's update is merged: {state}"
    );
    let stats = get_json(&url, "/v1/trajectories/stats").await;
    for (counter, value) in stats["ignored"].as_object().unwrap() {
        assert_eq!(
            value, 0,
            "{counter}: nothing duplicate reached the log: {stats}"
        );
    }
}

/// A step posted with only its `lease_id` is recorded with the lease's job, attempt and worker,
/// which the sequencer fills in from the lease it checks.
#[tokio::test]
async fn a_step_under_a_lease_alone_records_the_leases_job_attempt_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let client = daemon.client();
    let (job_id, grant) = submit_and_lease(&client, "task-l", "box-7").await;
    let body = json!({
        "step": 0, "lease_id": grant.lease_id, "model": "m", "policy_version": "p1",
        "action": {"kind": "rule", "yaml": "rule: {pattern: x}"},
    });
    let (status, answer) = post_json(&daemon.url, "/v1/tasks/task-l/steps", body).await;
    assert_eq!(status, 200, "{answer}");
    let trajectory = get_json(&daemon.url, "/v1/tasks/task-l/trajectory").await;
    let step = &trajectory["steps"][0];
    assert_eq!(step["job_id"], json!(job_id), "{step}");
    assert_eq!(step["attempt"], json!(grant.attempt), "{step}");
    assert_eq!(step["worker_id"], "box-7", "{step}");
}
