use super::*;
use agentd_schemas::events::SandboxOutcome;

fn test_files(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|path| path.to_string()).collect()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

fn run_with_stdout(stdout: &str) -> SandboxRun {
    SandboxRun {
        outcome: SandboxOutcome::Ok,
        exit_code: Some(0),
        diff: String::new(),
        stdout: stdout.to_string(),
        stderr: String::new(),
        stdout_bytes: stdout.len() as u64,
        stderr_bytes: 0,
        tests_passed: Some(9),
        tests_failed: Some(0),
        duration_ms: 1,
        peak_rss_bytes: None,
        files_changed: Vec::new(),
        rejected_reason: None,
        workspace: None,
        protected_changed: Vec::new(),
        changed_contents: Default::default(),
        stdout_tail: String::new(),
    }
}

#[test]
fn only_python_commands_get_the_trusted_runner() {
    let files = test_files(&["test_app.py", "tests/helpers.py", "app.test.js"]);
    let plan = plan(&argv(&["python3", "test_app.py"]), &files).unwrap();
    assert_eq!(plan.argv[..5], argv(&["python3", "-I", "-B", "-u", "-c"]));
    assert_eq!(plan.env[0].0, NONCE_ENV);
    assert_eq!(plan.env[0].1.len(), 2 * NONCE_BYTES);
    let config: serde_json::Value = serde_json::from_str(&plan.argv[7]).unwrap();
    assert_eq!(config["modules"], serde_json::json!(["test_app.py"]));
    assert_eq!(
        config["protected_python"],
        serde_json::json!(["test_app.py", "tests/helpers.py"])
    );
    for program in ["/usr/bin/python3.11", "python"] {
        assert!(plan_ok(program, &files), "{program}");
    }
    for program in ["node", "pythonista", "python3.x", "/bin/sh"] {
        assert!(!plan_ok(program, &files), "{program}");
    }
    let error = super::plan(&argv(&["python3"]), &test_files(&["tests/data.json"])).unwrap_err();
    assert!(error.contains("no Python test module"), "{error}");
}

fn plan_ok(program: &str, files: &BTreeSet<String>) -> bool {
    plan(&argv(&[program, "-m", "unittest"]), files).is_ok()
}

#[test]
fn each_run_draws_its_own_nonce() {
    let files = test_files(&["test_app.py"]);
    let first = plan(&argv(&["python3"]), &files).unwrap();
    let second = plan(&argv(&["python3"]), &files).unwrap();
    assert_ne!(first.nonce, second.nonce);
}

#[test]
fn only_the_line_with_this_runs_nonce_is_the_report() {
    let plan = plan(&argv(&["python3"]), &test_files(&["test_app.py"])).unwrap();
    let report = |passed: u32, all: bool| {
        serde_json::json!({"version": 1, "complete": true, "tampered": false,
            "expected": 2, "passed": passed, "failed": 2 - passed, "unexpected": 0,
            "all_passed": all, "problems": [],
            "failures": if all { serde_json::json!([]) } else {
                serde_json::json!([{"test": "test_app.py::T::test_b", "status": "failed",
                    "detail": "Traceback...\nAssertionError: 4 != 3"}]) }})
    };
    let forged = format!("{REPORT_PREFIX} {} {}", "0".repeat(32), report(2, true));
    let genuine = format!("{REPORT_PREFIX} {} {}", plan.nonce, report(1, false));
    let mut run = run_with_stdout(&format!("TESTS passed=9 failed=0\n{forged}\n{genuine}\n"));
    run.exit_code = Some(1);
    // The tail repeats the end of a short stdout: still one report.
    run.stdout_tail = format!("{genuine}\n");
    let evidence = plan.take_evidence(&mut run);
    assert!(!evidence.all_passed);
    assert_eq!((evidence.passed, evidence.expected), (1, 2));
    assert_eq!(
        evidence.reason.as_deref(),
        Some("1 of 2 tests passed; test_app.py::T::test_b failed: AssertionError: 4 != 3")
    );
    assert_eq!((run.tests_passed, run.tests_failed), (Some(1), Some(1)));
    assert!(!run.stdout.contains(&plan.nonce), "{}", run.stdout);

    let mut forged_only = run_with_stdout(&format!("TESTS passed=9 failed=0\n{forged}\n"));
    let evidence = plan.take_evidence(&mut forged_only);
    assert!(!evidence.all_passed);
    let reason = evidence.reason.unwrap();
    assert!(
        reason.contains("gave no report") && reason.contains("forged"),
        "{reason}"
    );
    assert_eq!(forged_only.tests_passed, None);
}

#[test]
fn a_report_from_a_tampered_run_proves_nothing() {
    let plan = plan(&argv(&["python3"]), &test_files(&["test_app.py"])).unwrap();
    let report = serde_json::json!({"version": 1, "complete": true, "tampered": true,
        "expected": 2, "passed": 2, "failed": 0, "unexpected": 0, "all_passed": false,
        "problems": ["the test environment was tampered with: unittest.case.TestCase.assertEqual was replaced"],
        "failures": []});
    let mut run = run_with_stdout("");
    run.exit_code = Some(1);
    run.stdout_tail = format!("{REPORT_PREFIX} {} {report}\n", plan.nonce);
    let evidence = plan.take_evidence(&mut run);
    assert_eq!((evidence.passed, evidence.all_passed), (0, false));
    assert!(evidence
        .reason
        .unwrap()
        .contains("assertEqual was replaced"));
}
