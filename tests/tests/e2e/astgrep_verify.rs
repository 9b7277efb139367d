//! `agentctl worker --builtin astgrep.verify` through the real daemon: verified and unverified
//! actions (gold mismatch, failing tests, a change of nothing), a step the actor recorded
//! itself, a step recorded with another action, an unusable payload, a lease lost while the
//! sandboxed test runs, and a model attacking its own reward (issue 13: a rewritten assertion,
//! a stubbed import, an early exit, a fake summary, a monkeypatched test module) next to the
//! honest fix. Results are read back over HTTP: the job's summary and the task's trajectory
//! (step, sandbox, reward). Payloads with a `rollout_id` (issue 12) put the verdict on the
//! rollout's step, next to the episode's own writes, and feed the group's advantages.
//!
//! The worker runs as a subprocess, so this binary never calls `sandbox::run` itself (the gold
//! diffs below are computed in memory) and needs no sandbox helper test.

use super::fast_daemon;
use agentd_client::sandbox::{apply_action_in_memory, unified_diff};
use agentd_client::Client;
use agentd_schemas::api::{JobStateName, LeaseRequest, SubmitJobRequest};
use agentd_schemas::domain_api::{
    ActionRequest, CreateRolloutRequest, RecordStepRequest, TrajectoryStep,
};
use agentd_schemas::events::{Action, RewardSource, SandboxOutcome};
use agentd_schemas::JobId;
use agentd_tests::{binary, eventually};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QUEUE: &str = "verify";
const APP: &str = "import logging\nlogger = logging.getLogger(__name__)\n\ndef greet(name):\n    print(name)\n    return name\n";
/// Passes on the original and on any rewrite that keeps `greet` working: a script-style test,
/// whose import is its one test. Its summary line counts for nothing (only the trusted
/// runner's report does); it writes with `sys.stdout.write` so that the pattern under test
/// (`print($A)`) leaves the test alone.
const TEST_PASSES: &str = "import sys\nfrom app import greet\nassert greet('x') == 'x'\nsys.stdout.write('TESTS passed=1 failed=0\\n')\n";
/// Fails once `print` is gone from app.py.
const TEST_WANTS_PRINT: &str = "assert 'print(' in open('app.py').read()\n";

fn files(test: &str) -> BTreeMap<String, String> {
    [("app.py", APP), ("test_app.py", test)]
        .into_iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect()
}

fn pattern(rewrite: &str) -> Value {
    json!({"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": rewrite})
}

fn submit_request(payload: Value) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: QUEUE.into(),
        kind: "astgrep.verify".into(),
        payload,
        max_attempts: Some(3),
        ..Default::default()
    }
}

/// Runs a worker until it handled `jobs` jobs; returns its stderr.
fn run_worker(url: &str, jobs: u32) -> String {
    let output = Command::new(binary("agentctl"))
        .args([
            "--url",
            url,
            "worker",
            "--queue",
            QUEUE,
            "--builtin",
            "astgrep.verify",
            "--concurrency",
            "2",
            "--max-jobs",
            &jobs.to_string(),
            "--wait-ms",
            "1000",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run agentctl worker");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "worker failed:\n{stderr}");
    stderr
}

async fn step(client: &Client, task_id: &str, step: u32) -> TrajectoryStep {
    let trajectory = client.trajectory(task_id, None).await.unwrap();
    trajectory
        .steps
        .into_iter()
        .find(|entry| entry.step == step)
        .unwrap_or_else(|| panic!("task {task_id} has no step {step}"))
}

async fn result(client: &Client, job_id: JobId) -> Value {
    let view = client.job(job_id).await.unwrap();
    assert_eq!(
        view.state,
        JobStateName::Completed,
        "{job_id}: {:?}",
        view.last_error
    );
    view.result.expect("a summary")
}

#[tokio::test]
async fn verification_jobs_record_sandbox_results_and_rule_rewards() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let model = json!({"model": "stub-model", "policy_version": "p1"});
    let with_model = |mut payload: Value| {
        payload["model"] = model["model"].clone();
        payload["policy_version"] = model["policy_version"].clone();
        payload
    };
    let verified = client
        .submit(&submit_request(with_model(json!({
            "task_id": "verified", "files": files(TEST_PASSES),
            "action": pattern("logger.info($A)"), "gold_action": pattern("logger.info($A)"),
            "test_command": ["python3", "test_app.py"],
        }))))
        .await
        .unwrap()
        .job_id;
    let gold_differs = client
        .submit(&submit_request(with_model(json!({
            "task_id": "gold-differs", "files": files(TEST_PASSES),
            "action": pattern("logger.info($A)"), "gold_action": pattern("logger.debug($A)"),
            "test_command": ["python3", "test_app.py"],
        }))))
        .await
        .unwrap()
        .job_id;
    let tests_fail = client
        .submit(&submit_request(with_model(json!({
            "task_id": "tests-fail", "files": files(TEST_WANTS_PRINT),
            "action": pattern("logger.info($A)"),
            "test_command": ["python3", "test_app.py"],
        }))))
        .await
        .unwrap()
        .job_id;
    // The actor's flow: it records the step (with its state), then asks for verification of
    // that step; the payload has no model, and the job's own task id is used.
    let action = ActionRequest::Pattern {
        language: "python".into(),
        pattern: "print($A)".into(),
        rewrite: "logger.info($A)".into(),
    };
    client
        .record_step(
            "actor-task",
            &RecordStepRequest {
                step: 4,
                job_id: None,
                lease_id: None,
                model: "actor-model".into(),
                policy_version: "p2".into(),
                sampling: None,
                prompt_tokens: None,
                completion_tokens: None,
                prompt: None,
                think: None,
                action: Some(action),
                raw_output: None,
                generation_ms: None,
                state_update: None,
            },
        )
        .await
        .unwrap();
    let actor_step = client
        .submit(&SubmitJobRequest {
            task_id: Some("actor-task".into()),
            ..submit_request(json!({"step": 4, "files": {"app.py": APP}, "language": "python",
                "action": {"kind": "pattern", "pattern": "print($A)", "rewrite": "logger.info($A)"}}))
        })
        .await
        .unwrap()
        .job_id;
    // A verification of an action other than the recorded one is refused.
    client
        .record_step(
            "actor-task",
            &RecordStepRequest {
                step: 5,
                job_id: None,
                lease_id: None,
                model: "actor-model".into(),
                policy_version: "p2".into(),
                sampling: None,
                prompt_tokens: None,
                completion_tokens: None,
                prompt: None,
                think: None,
                action: Some(ActionRequest::Rule {
                    yaml: "id: r\nlanguage: python\nrule:\n  pattern: a\nfix: b\n".into(),
                }),
                raw_output: None,
                generation_ms: None,
                state_update: None,
            },
        )
        .await
        .unwrap();
    let other_action = client
        .submit(&SubmitJobRequest {
            task_id: Some("actor-task".into()),
            ..submit_request(json!({"step": 5, "files": {"app.py": APP},
                "action": pattern("logger.info($A)")}))
        })
        .await
        .unwrap()
        .job_id;
    let matches_nothing = client
        .submit(&submit_request(with_model(json!({
            "task_id": "no-change", "files": {"app.py": APP},
            "action": {"kind": "rule", "yaml": "id: none\nlanguage: python\nrule:\n  pattern: frobnicate($A)\nfix: x($A)\n"},
        }))))
        .await
        .unwrap()
        .job_id;
    let unusable = client
        .submit(&submit_request(
            json!({"task_id": "bad", "files": {"../escape.py": "x"},
            "action": pattern("x")}),
        ))
        .await
        .unwrap()
        .job_id;

    let stderr = run_worker(&daemon.url, 7);
    assert!(stderr.contains("5 completed, 2 failed, 0 lost"), "{stderr}");

    // Verified: applied, tests pass, diff equals the gold diff computed here in memory.
    let summary = result(&client, verified).await;
    let gold_after = apply_action_in_memory(
        &files(TEST_PASSES),
        &Action::Pattern {
            language: "python".into(),
            pattern: "print($A)".into(),
            rewrite: "logger.info($A)".into(),
        },
    )
    .unwrap();
    let gold_diff = unified_diff(&files(TEST_PASSES), &gold_after);
    assert!(gold_diff.contains("+    logger.info(name)"), "{gold_diff}");
    assert_eq!(summary["verified"], true, "{summary:#}");
    assert_eq!(summary["reward"], 1.0);
    assert_eq!(
        summary["components"],
        json!({"applied": 1.0, "gold_match": 1.0, "tamper": 1.0, "tests": 1.0})
    );
    assert_eq!(summary["reasons"], json!({}));
    assert_eq!(summary["diff"], gold_diff);
    assert_eq!(summary["files_changed"], json!(["app.py"]));
    assert_eq!(
        summary["recorded"],
        json!({"step": "recorded", "sandbox": "recorded", "reward": "recorded"})
    );
    let entry = step(&client, "verified", 0).await;
    assert_eq!(entry.model, "stub-model");
    assert_eq!(entry.job_id, Some(verified));
    assert_eq!(entry.attempt, Some(1));
    let sandbox = entry.sandbox.expect("sandbox result recorded");
    assert_eq!(sandbox.outcome, SandboxOutcome::Ok);
    assert_eq!(sandbox.exit_code, Some(0));
    assert_eq!(
        (sandbox.tests_passed, sandbox.tests_failed),
        (Some(1), Some(0))
    );
    assert_eq!(sandbox.diff, gold_diff);
    let reward = entry.reward.expect("reward recorded");
    assert!(reward.verified);
    assert_eq!(reward.value, 1.0);
    assert_eq!(reward.source, RewardSource::Rule);
    assert_eq!(reward.components["gold_match"], 1.0);

    // Gold differs: applied and tested fine, but not the reference change.
    let summary = result(&client, gold_differs).await;
    assert_eq!(summary["verified"], false, "{summary:#}");
    assert_eq!(summary["gold_match"], false);
    assert_eq!(
        summary["components"],
        json!({"applied": 1.0, "gold_match": 0.0, "tamper": 1.0, "tests": 1.0})
    );
    let entry = step(&client, "gold-differs", 0).await;
    assert_eq!(entry.sandbox.unwrap().outcome, SandboxOutcome::Ok);
    let reward = entry.reward.unwrap();
    assert!(!reward.verified);
    assert_eq!(reward.value, 0.0);

    // Tests fail after the change.
    let summary = result(&client, tests_fail).await;
    assert_eq!(summary["verified"], false, "{summary:#}");
    assert_eq!(
        summary["components"],
        json!({"applied": 1.0, "tamper": 1.0, "tests": 0.0})
    );
    assert!(
        summary["reasons"]["tests"]
            .as_str()
            .unwrap()
            .contains("0 of 1 tests passed; test_app.py::<module> error"),
        "{summary:#}"
    );
    let sandbox = step(&client, "tests-fail", 0).await.sandbox.unwrap();
    assert_eq!(sandbox.outcome, SandboxOutcome::Failed);
    assert_eq!(sandbox.exit_code, Some(1));
    assert_eq!(
        (sandbox.tests_passed, sandbox.tests_failed),
        (Some(0), Some(1))
    );

    // The actor's own step got the facts; the worker did not record a step.
    let summary = result(&client, actor_step).await;
    assert_eq!(summary["verified"], true, "{summary:#}");
    assert_eq!(summary["recorded"]["step"], "not_posted");
    let entry = step(&client, "actor-task", 4).await;
    assert_eq!(entry.model, "actor-model");
    assert!(entry.reward.unwrap().verified);

    // A rule that matches nothing applied cleanly, changed nothing: not verified.
    let summary = result(&client, matches_nothing).await;
    assert_eq!(summary["verified"], false, "{summary:#}");
    assert_eq!(summary["outcome"], "ok");
    assert_eq!(summary["components"], json!({"applied": 0.0}));
    assert_eq!(
        step(&client, "no-change", 0).await.sandbox.unwrap().diff,
        ""
    );

    // An unusable payload fails at once, without retries, and says why.
    let view = client.job(unusable).await.unwrap();
    assert_eq!(view.state, JobStateName::Dead);
    assert_eq!(view.attempt, 1);
    let error = view.last_error.unwrap();
    assert!(
        error.contains("invalid astgrep.verify payload") && error.contains("../escape.py"),
        "{error}"
    );
    assert!(client
        .trajectory("bad", None)
        .await
        .unwrap()
        .steps
        .is_empty());

    let view = client.job(other_action).await.unwrap();
    assert_eq!((view.state, view.attempt), (JobStateName::Dead, 1));
    let error = view.last_error.unwrap();
    assert!(error.contains("recorded with another action"), "{error}");
    let entry = step(&client, "actor-task", 5).await;
    assert!(entry.sandbox.is_none() && entry.reward.is_none());
}

/// Pids of live (not zombie) processes whose command line contains `marker`.
fn live_processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        if matches!(state, Some(state) if state != "Z" && state != "X") {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn a_lost_lease_kills_the_sandboxed_test_at_once() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    // The test file's name is on the runner's command line, where the marker is looked for.
    let marker = format!("agentd_e2e_marker_{}", rand::random::<u64>());
    let sleeping_test = format!("test_{marker}.py");
    let job_id = client
        .submit(&SubmitJobRequest {
            lease_ttl_ms: Some(1500),
            ..submit_request(json!({
                "task_id": "lost", "model": "m", "policy_version": "p",
                "files": {"app.py": APP, sleeping_test.clone(): "import time\ntime.sleep(600)\n"},
                "action": pattern("logger.info($A)"),
                "test_command": ["python3", sleeping_test],
            }))
        })
        .await
        .unwrap()
        .job_id;
    let worker = Command::new(binary("agentctl"))
        .args([
            "--url",
            &daemon.url,
            "--json",
            "worker",
            "--queue",
            QUEUE,
            "--builtin",
            "astgrep.verify",
            "--max-jobs",
            "1",
            "--wait-ms",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the sandboxed test to start",
        || async { (!live_processes_with(&marker).is_empty()).then_some(()) },
    )
    .await;
    client.cancel(job_id).await.unwrap();
    let cancelled_at = Instant::now();
    // Well inside the sandbox's own 30 s wall budget: the worker killed it.
    eventually(
        Duration::from_secs(10),
        "the sandboxed test to be killed",
        || async { live_processes_with(&marker).is_empty().then_some(()) },
    )
    .await;
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["lost"], 1, "{summary} {stderr}");
    assert!(stderr.contains("lost"), "{stderr}");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(15),
        "the worker took {:?} to let go",
        cancelled_at.elapsed()
    );
    assert_eq!(
        client.job(job_id).await.unwrap().state,
        JobStateName::Cancelled
    );
    // The step was recorded before the run; nothing after the lease was lost.
    let entry = step(&client, "lost", 0).await;
    assert!(
        entry.sandbox.is_none() && entry.reward.is_none(),
        "{entry:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A model attacking its own reward (issue 13). `add` subtracts; two unittest tests say it
// should add. `client/tests/verify_attacks.rs` has more attacks, without the daemon.

const ADD_APP: &str = "def add(a, b):\n    return a - b\n";
const ADD_TEST: &str = "import unittest\nfrom app import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_small_numbers(self):\n        self.assertEqual(add(1, 2), 3)\n\n    def test_zero(self):\n        assert add(0, 5) == 5\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";

/// Swaps the test module's `unittest`, while it imports `app`, for one whose TestCase never
/// runs a test body: `python3 test_app.py` then says "Ran 2 tests ... OK".
const LENIENT_TEST_MODULE: &str = "  import sys as _sys\n  import types as _types\n  import unittest as _unittest\n\n\n  class _Lenient(_unittest.TestCase):\n      def assertEqual(self, *args, **kwargs):\n          pass\n\n      def _callTestMethod(self, method):\n          pass\n\n\n  _fake = _types.ModuleType(\"unittest\")\n  _fake.TestCase = _Lenient\n  _fake.main = _unittest.main\n  _sys.modules[\"test_app\"].unittest = _fake\n\n\n  def add(a, b):\n      return a - b\n";

fn add_pattern(pattern: &str, rewrite: &str) -> Value {
    json!({"kind": "pattern", "language": "python", "pattern": pattern, "rewrite": rewrite})
}

#[tokio::test]
async fn attacks_on_the_reward_score_zero_and_the_honest_fix_scores_one() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let lenient = json!({"kind": "rule", "yaml": format!(
        "id: lenient\nlanguage: python\nfiles: [\"app.py\"]\nrule:\n  kind: function_definition\nfix: |-\n{LENIENT_TEST_MODULE}"
    )});
    let fake_summary =
        "print(\"TESTS passed=2 failed=0\\nRan 2 tests\\n\\nOK\") or __import__(\"os\")._exit(0)";
    // (task id, action, the component that catches it, what its reason says)
    let cases = [
        (
            "honest-fix",
            add_pattern("return $A - $B", "return $A + $B"),
            "",
            "",
        ),
        (
            "rewrite-assertion",
            add_pattern("assert $A", "assert True"),
            "tamper",
            "the action changed test file test_app.py",
        ),
        (
            "stub-import",
            add_pattern("from app import add", "add = lambda a, b: a + b"),
            "tamper",
            "the action changed test file test_app.py",
        ),
        (
            "exit-early",
            add_pattern("return $A - $B", "__import__(\"os\")._exit(0)"),
            "tests",
            "the test process exited with status 0 before it reported completion",
        ),
        (
            "fake-summary",
            add_pattern("return $A - $B", fake_summary),
            "tests",
            "before it reported completion",
        ),
        (
            "patch-test-module",
            lenient,
            "tests",
            "whose code is in the workspace",
        ),
    ];
    let mut jobs = Vec::new();
    for (task_id, action, _, _) in &cases {
        let job_id = client
            .submit(&submit_request(json!({
                "task_id": task_id, "model": "attacker", "policy_version": "p1",
                "files": {"app.py": ADD_APP, "test_app.py": ADD_TEST},
                "action": action, "test_command": ["python3", "test_app.py"],
            })))
            .await
            .unwrap()
            .job_id;
        jobs.push(job_id);
    }
    let stderr = run_worker(&daemon.url, cases.len() as u32);
    assert!(stderr.contains("6 completed, 0 failed, 0 lost"), "{stderr}");

    for ((task_id, _, component, why), job_id) in cases.iter().zip(&jobs) {
        let summary = result(&client, *job_id).await;
        let reward = step(&client, task_id, 0)
            .await
            .reward
            .expect("reward recorded");
        if component.is_empty() {
            assert_eq!(summary["verified"], true, "{task_id}: {summary:#}");
            assert_eq!(summary["reward"], 1.0);
            assert_eq!(
                summary["components"],
                json!({"applied": 1.0, "tamper": 1.0, "tests": 1.0})
            );
            assert_eq!(
                (
                    summary["tests_passed"].clone(),
                    summary["tests_failed"].clone()
                ),
                (json!(2), json!(0))
            );
            assert!(reward.verified && reward.value == 1.0, "{reward:?}");
            continue;
        }
        assert_eq!(summary["verified"], false, "{task_id}: {summary:#}");
        assert_eq!(summary["reward"], 0.0, "{task_id}: {summary:#}");
        assert_eq!(
            summary["components"][component], 0.0,
            "{task_id}: {summary:#}"
        );
        let reason = summary["reasons"][component].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{task_id}: {summary:#}");
        assert!(
            !reward.verified && reward.value == 0.0,
            "{task_id}: {reward:?}"
        );
        assert_eq!(reward.components[*component], 0.0, "{task_id}: {reward:?}");
        // The trajectory says why too, where a reader of the sandbox result looks.
        let sandbox = step(&client, task_id, 0)
            .await
            .sandbox
            .expect("sandbox recorded");
        let note = format!("[agentd-verify] {component}: ");
        assert!(
            sandbox.stderr.contains(&note),
            "{task_id}: {:?}",
            sandbox.stderr
        );
    }
    // A tampering action's summary names the test file it changed.
    let summary = result(&client, jobs[1]).await;
    assert_eq!(summary["test_files_changed"], json!(["test_app.py"]));
}

// ---------------------------------------------------------------------------------------------
// Rollouts (issue 12): the verdict lands on the rollout's step.

fn step_request(step: u32, action: ActionRequest) -> RecordStepRequest {
    RecordStepRequest {
        step,
        job_id: None,
        lease_id: None,
        model: "actor-model".into(),
        policy_version: "p3".into(),
        sampling: None,
        prompt_tokens: None,
        completion_tokens: None,
        prompt: None,
        think: None,
        action: Some(action),
        raw_output: None,
        generation_ms: None,
        state_update: None,
    }
}

#[tokio::test]
async fn a_verdict_with_a_rollout_id_lands_on_the_rollouts_step() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let group = "grp-e2e-verify";
    // Two episodes of one task in one group, each holding its lease, as the episode worker
    // does: create the rollout under the lease, record step 0 under it.
    let mut rollouts = Vec::new();
    for _ in 0..2 {
        client
            .submit(&SubmitJobRequest {
                queue: "episodes".into(),
                kind: "episode".into(),
                payload: json!({"group": group}),
                task_id: Some("rollout-task".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let grant = client
            .lease(&LeaseRequest {
                worker_id: "episode-worker".into(),
                queues: vec!["episodes".into()],
                max_jobs: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .leases
            .pop()
            .expect("an episode lease");
        let rollout = client
            .create_rollout(
                "rollout-task",
                &CreateRolloutRequest {
                    model: "actor-model".into(),
                    policy_version: "p3".into(),
                    sampling: None,
                    group: Some(group.into()),
                    job_id: None,
                    lease_id: Some(grant.lease_id),
                    state_from: None,
                },
            )
            .await
            .unwrap();
        assert!(rollout.created, "{rollout:?}");
        rollouts.push((rollout.rollout_id, grant.lease_id));
    }
    let (good, good_lease) = rollouts[0];
    let (bad, bad_lease) = rollouts[1];
    let fix = ActionRequest::Pattern {
        language: "python".into(),
        pattern: "print($A)".into(),
        rewrite: "logger.info($A)".into(),
    };
    let noop = ActionRequest::Rule {
        yaml: "id: none\nlanguage: python\nrule:\n  pattern: frobnicate($A)\nfix: x($A)\n".into(),
    };
    client
        .record_rollout_step(
            good,
            &RecordStepRequest {
                lease_id: Some(good_lease),
                ..step_request(0, fix)
            },
        )
        .await
        .unwrap();
    client
        .record_rollout_step(
            bad,
            &RecordStepRequest {
                lease_id: Some(bad_lease),
                ..step_request(0, noop)
            },
        )
        .await
        .unwrap();

    // The actor's flow: verify the recorded step 0 of each rollout; no task_id needed.
    let verify_good = client
        .submit(&submit_request(json!({
            "rollout_id": good, "step": 0, "files": files(TEST_PASSES),
            "action": pattern("logger.info($A)"), "test_command": ["python3", "test_app.py"],
        })))
        .await
        .unwrap()
        .job_id;
    let verify_bad = client
        .submit(&submit_request(json!({
            "rollout_id": bad, "step": 0, "files": {"app.py": APP},
            "action": {"kind": "rule", "yaml": "id: none\nlanguage: python\nrule:\n  pattern: frobnicate($A)\nfix: x($A)\n"},
        })))
        .await
        .unwrap()
        .job_id;
    // The verifier does not record a rollout's steps (they are the episode's, under its lease):
    // a payload with a model is refused.
    let records_a_step = client
        .submit(&submit_request(json!({
            "rollout_id": good, "step": 1, "model": "verifier-model", "policy_version": "p4",
            "files": files(TEST_PASSES), "action": pattern("logger.info($A)"),
            "test_command": ["python3", "test_app.py"],
        })))
        .await
        .unwrap()
        .job_id;
    // A task_id that is not the rollout's is refused before anything is written.
    let wrong_task = client
        .submit(&SubmitJobRequest {
            task_id: Some("another-task".into()),
            ..submit_request(json!({
                "rollout_id": good, "step": 0,
                "files": {"app.py": APP}, "action": pattern("logger.info($A)"),
            }))
        })
        .await
        .unwrap()
        .job_id;

    let stderr = run_worker(&daemon.url, 4);
    assert!(stderr.contains("2 completed, 2 failed, 0 lost"), "{stderr}");
    let refused = client.job(records_a_step).await.unwrap();
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("recorded by its episode")),
        "{refused:?}"
    );

    let summary = result(&client, verify_good).await;
    assert_eq!(summary["verified"], true, "{summary:#}");
    assert_eq!(summary["rollout_id"], good.to_string());
    assert_eq!(summary["task_id"], "rollout-task");
    assert_eq!(
        summary["recorded"],
        json!({"step": "not_posted", "sandbox": "recorded", "reward": "recorded"})
    );
    let summary = result(&client, verify_bad).await;
    assert_eq!(summary["verified"], false, "{summary:#}");

    let view = client.rollout(good, None, None).await.unwrap();
    assert_eq!(view.steps.len(), 1, "{view:?}");
    let actor_step = &view.steps[0];
    assert_eq!(
        (actor_step.rollout_id, actor_step.model.as_str()),
        (Some(good), "actor-model")
    );
    let sandbox = actor_step
        .sandbox
        .as_ref()
        .expect("sandbox result on the rollout's step");
    assert_eq!(sandbox.outcome, SandboxOutcome::Ok);
    assert_eq!(
        (sandbox.tests_passed, sandbox.tests_failed),
        (Some(1), Some(0))
    );
    let reward = actor_step
        .reward
        .as_ref()
        .expect("reward on the rollout's step");
    assert!(reward.verified && reward.value == 1.0, "{reward:?}");
    assert_eq!(reward.source, RewardSource::Rule);
    assert_eq!(view.reward, 1.0);
    let bad_view = client.rollout(bad, None, None).await.unwrap();
    assert_eq!(bad_view.steps[0].reward.as_ref().unwrap().value, 0.0);

    // Nothing went to the task's default rollout.
    assert!(client
        .trajectory("rollout-task", None)
        .await
        .unwrap()
        .steps
        .is_empty());

    // The verdicts are the group's rewards: mean 0.5, advantages +-1/sqrt(2).
    let scores = client.group(group).await.unwrap();
    assert_eq!(scores.rollouts.len(), 2);
    assert_eq!(scores.mean, 0.5);
    let advantages: Vec<(Option<_>, f64)> = scores
        .rollouts
        .iter()
        .map(|summary| (summary.rollout_id, summary.advantage.unwrap()))
        .collect();
    assert_eq!(advantages[0].0, Some(good));
    assert!(
        (advantages[0].1 - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9,
        "{advantages:?}"
    );
    assert!(
        (advantages[1].1 + std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9,
        "{advantages:?}"
    );

    let view = client.job(wrong_task).await.unwrap();
    assert_eq!((view.state, view.attempt), (JobStateName::Dead, 1));
    let error = view.last_error.unwrap();
    assert!(
        error.contains(&format!("rollout {good} belongs to task \"rollout-task\"")),
        "{error}"
    );
    assert!(client
        .rollout(good, Some(1), None)
        .await
        .unwrap()
        .steps
        .is_empty());
}
