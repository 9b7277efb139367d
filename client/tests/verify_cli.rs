//! `agentctl verify`, the real binary, as a reward function calls it: a payload in, one verdict
//! out (`--json`), exit 0 whenever a verdict was reached, 2 for input it cannot use, 1 when no
//! verdict could be reached. The task is the one of `verify_attacks.rs` (`add` subtracts; two
//! unittest tests say it should add), judged in the real sandbox through the trusted runner.
//!
//! `--url` is tested against a stand-in for the daemon's `GET /v1/settings` on `127.0.0.1:0`
//! (the client crate must not depend on the daemon).

use agentd_schemas::domain_api::SettingsResponse;
use agentd_schemas::events::{
    RewardCombine, RewardSettings, RewardWeights, SftSettings, SystemPrompt, TestsReward,
    TrainingSettings,
};
use agentd_schemas::Lsn;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");

const APP: &str = "def add(a, b):\n    return a - b\n";
const FIXED_APP: &str = "def add(a, b):\n    return a + b\n";
const TEST_APP: &str = "import unittest\nfrom app import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_small_numbers(self):\n        self.assertEqual(add(1, 2), 3)\n\n    def test_zero(self):\n        assert add(0, 5) == 5\n";

/// Generous limits: the verdicts below must not depend on how loaded the machine is.
const SANDBOX_CONFIG: &str = "wall_time_ms = 60000\nmemory_bytes = 1073741824\n";

fn pattern(pattern: &str, rewrite: &str) -> Value {
    json!({"kind": "pattern", "language": "python", "pattern": pattern, "rewrite": rewrite})
}

/// The honest fix.
fn fix() -> Value {
    pattern("return $A - $B", "return $A + $B")
}

/// Half a fix: `return b` passes `test_zero` and fails `test_small_numbers`.
fn half_fix() -> Value {
    pattern("return $A - $B", "return $B")
}

fn payload(action: Value) -> Value {
    json!({
        "files": {"app.py": APP, "test_app.py": TEST_APP},
        "action": action,
        "test_command": ["python3", "test_app.py"],
    })
}

/// A temp dir holding the sandbox config, and the payloads written there.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sandbox.toml"), SANDBOX_CONFIG).unwrap();
        Scratch { dir }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn sandbox_config(&self) -> String {
        self.dir
            .path()
            .join("sandbox.toml")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// `agentctl verify --payload FILE --sandbox-config ... ARGS`.
    fn verify(&self, payload: &Value, args: &[&str]) -> Output {
        let file = self.write("payload.json", &payload.to_string());
        let config = self.sandbox_config();
        let mut argv = vec!["verify", "--payload", &file, "--sandbox-config", &config];
        argv.extend_from_slice(args);
        agentctl(&argv, None)
    }

    /// `verify --json`, which must reach a verdict: the verdict.
    fn verdict(&self, payload: &Value, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let output = self.verify(payload, &with_json);
        verdict_of(&output)
    }
}

/// Runs agentctl with `args` (stdin: `input`, else nothing) and waits for it. No daemon
/// environment: a stray AGENTD_URL must not change what these tests see.
fn agentctl(args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(AGENTCTL)
        .args(args)
        .env_remove("AGENTD_URL")
        .env_remove("AGENTD_TOKEN")
        .env_remove("AGENTD_CA_CERT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The one JSON line of a successful `verify --json`.
fn verdict_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// Exit 2, nothing on stdout, and `expected` in the message on stderr.
fn assert_invalid(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
}

fn components(verdict: &Value) -> Vec<(String, f64)> {
    verdict["components"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, score)| (name.clone(), score.as_f64().unwrap()))
        .collect()
}

fn scores(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs
        .iter()
        .map(|(name, score)| (name.to_string(), *score))
        .collect()
}

#[test]
fn the_honest_fix_scores_one_with_every_documented_field() {
    let scratch = Scratch::new();
    let verdict = scratch.verdict(&payload(fix()), &[]);
    assert_eq!(verdict["reward"], 1.0, "{verdict:#}");
    assert_eq!(verdict["verified"], true);
    assert_eq!(
        components(&verdict),
        scores(&[("applied", 1.0), ("tamper", 1.0), ("tests", 1.0)])
    );
    assert_eq!(verdict["reasons"], json!({}));
    assert_eq!(verdict["outcome"], "ok");
    assert_eq!(
        (
            verdict["tests_passed"].as_u64(),
            verdict["tests_failed"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert_eq!(verdict["files_changed"], json!(["app.py"]));
    assert_eq!(verdict["test_files_changed"], json!([]));
    assert!(
        verdict["diff"]
            .as_str()
            .unwrap()
            .contains("+    return a + b"),
        "{verdict:#}"
    );
    assert_eq!(
        verdict["diff_bytes"].as_u64(),
        Some(verdict["diff"].as_str().unwrap().len() as u64)
    );
    assert_eq!(
        verdict["rewards"],
        json!({"combine": "all", "tests": "all",
               "weights": {"tests": 1.0, "gold_match": 1.0, "post_match": 1.0}})
    );
    // The contract of docs/astgrep_verify.md, "agentctl verify": these fields, no others.
    let mut fields: Vec<&str> = verdict
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "components",
            "diff",
            "diff_bytes",
            "duration_ms",
            "exit_code",
            "files_changed",
            "gold_match",
            "outcome",
            "peak_rss_bytes",
            "post_match",
            "reasons",
            "rejected_reason",
            "reward",
            "rewards",
            "stderr",
            "stdout",
            "test_files_changed",
            "tests_failed",
            "tests_passed",
            "verified",
        ]
    );
}

#[test]
fn rewriting_the_test_file_scores_zero_and_says_tamper() {
    let scratch = Scratch::new();
    let verdict = scratch.verdict(&payload(pattern("assert $A", "assert True")), &[]);
    assert_eq!(verdict["reward"], 0.0, "{verdict:#}");
    assert_eq!(verdict["verified"], false);
    assert_eq!(verdict["components"]["tamper"], 0.0);
    assert!(
        verdict["reasons"]["tamper"]
            .as_str()
            .unwrap()
            .starts_with("the action changed test file test_app.py"),
        "{verdict:#}"
    );
    assert_eq!(verdict["test_files_changed"], json!(["test_app.py"]));
    // Weights cannot buy a tampering action any credit: tamper is a gate.
    let verdict = scratch.verdict(
        &payload(pattern("assert $A", "assert True")),
        &[
            "--rewards",
            r#"{"combine": "weighted", "tests": "fraction"}"#,
        ],
    );
    assert_eq!(verdict["reward"], 0.0, "{verdict:#}");
}

#[test]
fn weighted_rewards_give_partial_credit() {
    let scratch = Scratch::new();
    let mut half = payload(half_fix());
    half["post"] = json!(FIXED_APP);
    // All checks must pass: 0.
    let verdict = scratch.verdict(&half, &[]);
    assert_eq!(verdict["reward"], 0.0, "{verdict:#}");
    assert_eq!(
        components(&verdict),
        scores(&[
            ("applied", 1.0),
            ("post_match", 0.0),
            ("tamper", 1.0),
            ("tests", 0.0)
        ])
    );
    // tests 1 of 2 = 0.5 weighing 3, post_match 0 weighing 1: (3 × 0.5 + 1 × 0) / 4.
    let rewards =
        r#"{"combine": "weighted", "tests": "fraction", "weights": {"tests": 3, "post_match": 1}}"#;
    let verdict = scratch.verdict(&half, &["--rewards", rewards]);
    assert_eq!(verdict["reward"], 0.375, "{verdict:#}");
    assert_eq!(verdict["verified"], false);
    assert_eq!(verdict["components"]["tests"], 0.5);
    assert_eq!(verdict["tests_passed"], 1);
    assert_eq!(verdict["rewards"]["combine"], "weighted");
    assert_eq!(verdict["rewards"]["weights"]["tests"], 3.0);
    // The same settings from a file.
    let file = scratch.write("rewards.json", rewards);
    let verdict = scratch.verdict(&half, &["--rewards", &format!("@{file}")]);
    assert_eq!(verdict["reward"], 0.375, "{verdict:#}");
    // The payload's tests_reward overrides the settings' tests: tests 0, so (3 × 0 + 0) / 4.
    let mut all_tests = half.clone();
    all_tests["tests_reward"] = json!("all");
    let verdict = scratch.verdict(&all_tests, &["--rewards", rewards]);
    assert_eq!(
        (
            verdict["reward"].as_f64(),
            verdict["rewards"]["tests"].as_str()
        ),
        (Some(0.0), Some("all")),
        "{verdict:#}"
    );
    // The honest fix with a post it does not meet: tests 1, post_match 0, default weights.
    let mut other_post = payload(fix());
    other_post["post"] = json!("def add(a, b):\n    return b + a\n");
    let verdict = scratch.verdict(&other_post, &["--rewards", r#"{"combine": "weighted"}"#]);
    assert_eq!(verdict["reward"], 0.5, "{verdict:#}");
}

#[test]
fn unusable_input_exits_2_with_a_message() {
    let scratch = Scratch::new();
    let config = scratch.sandbox_config();
    let from_stdin = |input: &str, args: &[&str]| {
        let mut argv = vec!["verify", "--payload", "-", "--sandbox-config", &config];
        argv.extend_from_slice(args);
        agentctl(&argv, Some(input))
    };
    assert_invalid(
        &from_stdin("{\"files\":", &[]),
        "invalid astgrep.verify payload: stdin is not JSON",
    );
    assert_invalid(
        &from_stdin(&json!({"files": {"app.py": APP}}).to_string(), &["--json"]),
        "missing field `action`",
    );
    let mut misspelt = payload(fix());
    misspelt["gold"] = fix();
    assert_invalid(
        &scratch.verify(&misspelt, &["--json"]),
        "unknown field `gold`",
    );
    let mut with_model = payload(fix());
    with_model["model"] = json!("qwen-7b");
    with_model["policy_version"] = json!("p3");
    with_model["task_id"] = json!("task-1");
    assert_invalid(
        &scratch.verify(&with_model, &["--json"]),
        "model and policy_version given, but a local verification records nothing",
    );
    let mut with_rollout = payload(fix());
    with_rollout["rollout_id"] = json!("ro_3");
    assert_invalid(&scratch.verify(&with_rollout, &[]), "rollout_id given");
    // A gold action ast-grep cannot apply is the submitter's mistake too.
    let mut bad_gold = payload(fix());
    bad_gold["gold_action"] = json!({"kind": "rule", "yaml": "not: [a rule"});
    assert_invalid(&scratch.verify(&bad_gold, &[]), "gold_action");
    for (rewards, expected) in [
        (r#"{"combine": "mean"}"#, "unknown variant `mean`"),
        (r#"{"weights": {"tests": -1}}"#, "weights.tests is -1"),
        (r#"{"weight_tests": 2}"#, "unknown field `weight_tests`"),
    ] {
        assert_invalid(
            &scratch.verify(&payload(fix()), &["--rewards", rewards]),
            expected,
        );
    }
    let output = agentctl(&["verify", "--payload", "/nonexistent/payload.json"], None);
    assert_invalid(&output, "cannot read /nonexistent/payload.json");
    // clap's own usage errors are 2 as well.
    let output = agentctl(&["verify"], None);
    assert_invalid(&output, "--payload");
}

#[test]
fn a_payload_on_stdin_gets_a_human_summary_without_json() {
    let scratch = Scratch::new();
    let config = scratch.sandbox_config();
    let output = agentctl(
        &["verify", "--payload", "-", "--sandbox-config", &config],
        Some(&payload(half_fix()).to_string()),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "reward:   0 (combine all; tests all)",
        "verified: no",
        "tests:    1 passed, 1 failed",
        "checks:   applied 1, tamper 1, tests 0",
        "  tests: 1 of 2 tests passed",
        "+    return b",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
}

#[test]
fn url_takes_the_reward_settings_from_the_daemon() {
    let scratch = Scratch::new();
    let rewards = RewardSettings {
        combine: RewardCombine::Weighted,
        tests: TestsReward::Fraction,
        weights: RewardWeights {
            tests: 3.0,
            gold_match: 1.0,
            post_match: 1.0,
        },
    };
    let daemon = SettingsDaemon::start(SettingsResponse {
        training: Some(TrainingSettings {
            rewards,
            system_prompt: SystemPrompt {
                version: "v1".into(),
                text: "You fix code with ast-grep.".into(),
            },
            sft: SftSettings::default(),
        }),
        training_lsn: Some(Lsn(7)),
    });
    let mut half = payload(half_fix());
    half["post"] = json!(FIXED_APP);
    let verdict = scratch.verdict(&half, &["--url", &daemon.url, "--token", "reader-token"]);
    assert_eq!(verdict["reward"], 0.375, "{verdict:#}");
    let request = daemon.request();
    assert!(
        request.starts_with("GET /v1/settings HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer reader-token\r\n"),
        "{request}"
    );

    // A daemon whose log holds no settings yet: the defaults.
    let daemon = SettingsDaemon::start(SettingsResponse {
        training: None,
        training_lsn: None,
    });
    let verdict = scratch.verdict(&half, &["--url", &daemon.url]);
    assert_eq!(verdict["reward"], 0.0, "{verdict:#}");
    assert_eq!(verdict["rewards"]["combine"], "all");

    // Nothing listening: no verdict, exit 1.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = scratch.verify(&half, &["--json", "--url", &url]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("cannot read the reward settings of"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("AGENTD_URL"),
        "verify does not read it: {stderr}"
    );

    // --rewards and --url are two answers to one question.
    assert_invalid(
        &scratch.verify(&half, &["--url", &url, "--rewards", "{}"]),
        "cannot be used with",
    );
}

#[test]
fn the_url_of_the_environment_is_not_a_daemon_to_ask() {
    let scratch = Scratch::new();
    let file = scratch.write("payload.json", &payload(fix()).to_string());
    // Nothing listens there; the verdict comes all the same, under the default settings.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(AGENTCTL)
        .args([
            "verify",
            "--json",
            "--payload",
            &file,
            "--sandbox-config",
            &scratch.sandbox_config(),
        ])
        .env("AGENTD_URL", format!("http://127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let verdict = verdict_of(&output);
    assert_eq!(verdict["reward"], 1.0, "{verdict:#}");
}

/// Answers one `GET /v1/settings` on `127.0.0.1:0` and hands its request text to the test.
struct SettingsDaemon {
    url: String,
    request: mpsc::Receiver<String>,
}

impl SettingsDaemon {
    fn start(response: SettingsResponse) -> SettingsDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = serde_json::to_string(&response).unwrap();
        let (sender, request) = mpsc::channel();
        std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut text = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                text.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut stream = reader.into_inner();
            let _client_may_have_left = stream.write_all(answer.as_bytes());
            let _test_may_have_ended = sender.send(text);
        });
        SettingsDaemon { url, request }
    }

    /// The request it answered (it was answered before agentctl printed its verdict, so it
    /// is there; the deadline only bounds a broken run).
    fn request(&self) -> String {
        self.request
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon stand-in was asked")
    }
}
