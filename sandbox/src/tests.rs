use super::*;

/// The entry point of the apply helper inside this test binary (see `helper`).
#[test]
fn agentd_sandbox_internal_helper() {
    maybe_run_internal_helper();
}

fn python_spec(test: Option<&str>) -> SandboxSpec {
    SandboxSpec {
        files: [("app.py".to_string(), "print('hi')\n".to_string())].into(),
        action: Action::Pattern {
            language: "python".to_string(),
            pattern: "print($A)".to_string(),
            rewrite: "logger.info($A)".to_string(),
        },
        test_command: test.map(|t| vec!["/bin/sh".to_string(), "-c".to_string(), t.to_string()]),
        keep_workspace: false,
        protected_paths: BTreeSet::new(),
        test_env: Vec::new(),
    }
}

fn fast_limits() -> SandboxLimits {
    SandboxLimits {
        wall_time_ms: 10_000,
        memory_bytes: 512 * 1024 * 1024,
        allowed_binaries: vec!["/bin/sh".to_string()],
        ..SandboxLimits::default()
    }
}

#[test]
fn applies_the_action_and_runs_the_test_in_the_workspace() {
    let run = run(
        &python_spec(Some("cat app.py; echo '2 passed, 1 failed'; exit 3")),
        &fast_limits(),
    )
    .unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Failed, "{run:#?}");
    assert_eq!(run.exit_code, Some(3));
    assert!(run.stdout.contains("logger.info('hi')"), "{run:#?}");
    assert_eq!((run.tests_passed, run.tests_failed), (Some(2), Some(1)));
    assert_eq!(run.files_changed, ["app.py"]);
    assert!(run.diff.contains("+logger.info('hi')"), "{}", run.diff);
}

#[test]
fn invalid_pattern_is_rejected_with_the_reason() {
    let mut spec = python_spec(None);
    spec.action = Action::Pattern {
        language: "klingon".to_string(),
        pattern: "x".to_string(),
        rewrite: "y".to_string(),
    };
    let run = run(&spec, &fast_limits()).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Rejected);
    assert!(run.rejected_reason.unwrap().contains("klingon"));
}

#[test]
fn file_and_directory_of_the_same_name_are_rejected() {
    let mut spec = python_spec(None);
    spec.files.insert("pkg".to_string(), "x".to_string());
    spec.files.insert("pkg/mod.py".to_string(), "y".to_string());
    let run = run(&spec, &fast_limits()).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Rejected, "{run:#?}");
}

#[test]
fn kept_workspace_holds_the_rewritten_files() {
    let mut spec = python_spec(None);
    spec.keep_workspace = true;
    let run = run(&spec, &fast_limits()).unwrap();
    let workspace = run.workspace.expect("kept");
    let content = std::fs::read_to_string(workspace.join("app.py")).unwrap();
    std::fs::remove_dir_all(&workspace).unwrap();
    assert_eq!(content, "logger.info('hi')\n");
    assert_eq!(run.outcome, SandboxOutcome::Ok);
    assert_eq!(run.exit_code, None);
}

#[test]
fn cpu_limit_ends_as_timed_out() {
    let limits = SandboxLimits {
        cpu_time_s: 1,
        ..fast_limits()
    };
    let run = run(&python_spec(Some("while :; do :; done")), &limits).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::TimedOut, "{run:#?}");
    assert!(run.duration_ms < 9_000, "{run:#?}");
}

#[test]
fn apply_step_out_of_time_is_timed_out() {
    let limits = SandboxLimits {
        wall_time_ms: 1,
        ..fast_limits()
    };
    let run = run(&python_spec(Some("exit 0")), &limits).unwrap();
    assert_eq!(run.outcome, SandboxOutcome::TimedOut, "{run:#?}");
    assert_eq!(run.diff, "");
    assert!(
        run.stderr.contains("apply step did not complete"),
        "{run:#?}"
    );
}

#[test]
fn environment_is_minimal() {
    // The test process has CARGO_* variables; none may reach the sandbox.
    let run = run(
        &python_spec(Some("env; echo quiet > /dev/null")),
        &fast_limits(),
    )
    .unwrap();
    assert_eq!(run.outcome, SandboxOutcome::Ok, "{run:#?}");
    assert!(!run.stdout.contains("CARGO"), "{}", run.stdout);
    assert!(run.stdout.contains("PYTHONHASHSEED=0"), "{}", run.stdout);
}
