use super::*;
use serde_json::json;

fn parse_ok(payload: serde_json::Value) -> VerifyJob {
    parse(&payload, None, &SandboxLimits::default()).unwrap()
}

fn parse_err(payload: serde_json::Value) -> String {
    parse(&payload, None, &SandboxLimits::default())
        .unwrap_err()
        .to_string()
}

fn files() -> serde_json::Value {
    json!({"app.py": "print(1)\n"})
}

#[test]
fn a_full_payload_parses_and_a_pattern_takes_the_payload_language() {
    let job = parse_ok(json!({
        "task_id": "t1", "step": 3, "files": files(), "language": "python",
        "action": {"kind": "pattern", "pattern": "print($A)", "rewrite": "log($A)"},
        "gold_action": {"kind": "rule", "yaml": "id: x"},
        "test_command": ["python3", "test_x.py"],
        "model": "m", "policy_version": "v1"
    }));
    assert_eq!(job.task_id.as_deref(), Some("t1"));
    assert_eq!(job.step, 3);
    assert_eq!(
        job.action,
        Action::Pattern {
            language: "python".into(),
            pattern: "print($A)".into(),
            rewrite: "log($A)".into()
        }
    );
    assert_eq!(
        job.gold_action,
        Some(Action::Rule {
            yaml: "id: x".into()
        })
    );
    assert_eq!(job.model.unwrap().policy_version, "v1");
}

#[test]
fn defaults_step_zero_and_the_jobs_task_id() {
    let payload = json!({"files": files(), "action": {"kind": "rule", "yaml": "id: x"}});
    let job = parse(&payload, Some("job-task"), &SandboxLimits::default()).unwrap();
    assert_eq!((job.task_id.as_deref(), job.step), (Some("job-task"), 0));
    let other =
        json!({"task_id": "other", "files": files(), "action": {"kind": "rule", "yaml": "y"}});
    let error = parse(&other, Some("job-task"), &SandboxLimits::default()).unwrap_err();
    assert!(error.0.contains("differs"), "{error}");
}

#[test]
fn a_rollout_id_needs_no_task_id_and_takes_no_model() {
    let job = parse_ok(json!({
        "rollout_id": "ro_7", "step": 2, "files": files(),
        "action": {"kind": "rule", "yaml": "id: x"}
    }));
    assert_eq!(job.rollout_id, Some("ro_7".parse().unwrap()));
    assert_eq!((job.task_id, job.step), (None, 2));
    let error = parse(
        &json!({
            "rollout_id": "ro_7", "step": 2, "files": files(),
            "action": {"kind": "rule", "yaml": "id: x"}, "model": "m", "policy_version": "v1"
        }),
        None,
        &SandboxLimits::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("recorded by its episode"),
        "{error}"
    );
}

#[test]
fn a_rollout_id_keeps_the_task_id_to_check_against_the_rollout() {
    let payload = json!({"rollout_id": "ro_1", "files": files(), "action": {"kind": "rule", "yaml": "id: x"}});
    let job = parse(&payload, Some("job-task"), &SandboxLimits::default()).unwrap();
    assert_eq!(
        (
            job.rollout_id.map(|id| id.to_string()),
            job.task_id.as_deref()
        ),
        (Some("ro_1".to_string()), Some("job-task"))
    );
    // The payload's and the job's task ids must still agree.
    let both = json!({"rollout_id": "ro_1", "task_id": "other", "files": files(), "action": {"kind": "rule", "yaml": "id: x"}});
    let error = parse(&both, Some("job-task"), &SandboxLimits::default()).unwrap_err();
    assert!(error.0.contains("differs"), "{error}");
}

#[test]
fn unusable_payloads_say_what_is_wrong() {
    let rule = json!({"kind": "rule", "yaml": "id: x"});
    for (payload, expected) in [
        (json!({"files": files()}), "missing field `action`"),
        (json!({"files": {}, "action": rule}), "at least one file"),
        (json!({"files": {"../x.py": ""}, "action": rule}), "files:"),
        (
            json!({"files": files(), "action": rule, "gold": rule}),
            "unknown field `gold`",
        ),
        (
            json!({"files": files(), "action": {"kind": "pattern", "pattern": "a", "rewrite": "b"}}),
            "action.language is missing",
        ),
        (
            json!({"files": files(), "action": rule, "language": "cobol"}),
            "\"cobol\" is not supported",
        ),
        (
            json!({"files": files(), "action": rule, "gold_action": {"kind": "pattern", "language": "cobol", "pattern": "a", "rewrite": "b"}}),
            "gold_action.language",
        ),
        (
            json!({"files": files(), "action": rule, "test_command": []}),
            "must not be empty",
        ),
        (
            json!({"files": files(), "action": rule, "test_command": ["bash", "-c", "x"]}),
            "allowed_binaries",
        ),
        (
            json!({"files": files(), "action": rule, "model": "m"}),
            "go together",
        ),
        (
            json!({"files": files(), "action": rule, "model": "m", "policy_version": "v"}),
            "no task_id or rollout_id",
        ),
        (
            json!({"files": files(), "action": rule, "rollout_id": "ro_x"}),
            "expected ro_<number>",
        ),
        (
            json!({"files": files(), "action": rule, "rollout_id": "job_3"}),
            "expected ro_<number>",
        ),
        (
            json!({"files": files(), "action": rule, "rollout_id": 3}),
            "expected a string",
        ),
        (
            json!({"files": files(), "action": {"kind": "sed", "script": "s/a/b/"}}),
            "unknown variant `sed`",
        ),
        (json!("not an object"), "invalid type"),
    ] {
        let error = parse_err(payload.clone());
        assert!(error.contains(expected), "{payload}: {error}");
    }
}

#[test]
fn test_files_come_from_tests_else_from_the_defaults() {
    let two = json!({"app.py": "x\n", "test_app.py": "t\n", "check.py": "c\n"});
    let rule = json!({"kind": "rule", "yaml": "id: x"});
    let job = parse_ok(json!({"files": two, "action": rule}));
    assert_eq!(job.test_files, ["test_app.py".to_string()].into());
    let job = parse_ok(json!({"files": two, "action": rule, "tests": ["check.py", "test_*.py"]}));
    assert_eq!(
        job.test_files,
        ["check.py".to_string(), "test_app.py".to_string()].into()
    );
    let job = parse_ok(json!({"files": two, "action": rule, "tests": []}));
    assert!(job.test_files.is_empty());
    let error = parse_err(json!({"files": two, "action": rule, "tests": ["tset_app.py"]}));
    assert!(error.contains("matches none"), "{error}");
}

#[test]
fn post_is_one_text_for_the_one_code_file_or_a_map() {
    let rule = json!({"kind": "rule", "yaml": "id: x"});
    let files = json!({"app.py": "x\n", "test_app.py": "t\n"});
    let job = parse_ok(json!({"files": files, "action": rule, "post": "y\n"}));
    assert_eq!(
        job.post,
        Some([("app.py".to_string(), "y\n".to_string())].into())
    );
    assert_eq!(job.tests_reward, None, "left to the reward settings");
    let job = parse_ok(
        json!({"files": files, "action": rule, "post": {"test_app.py": "t"},
        "tests_reward": "fraction"}),
    );
    assert_eq!(job.tests_reward, Some(TestsReward::Fraction));
    assert!(job.post.unwrap().contains_key("test_app.py"));
    let two_code_files = json!({"a.py": "", "b.py": ""});
    for (payload, expected) in [
        (
            json!({"files": two_code_files, "action": rule, "post": "y"}),
            "2 files that are not tests",
        ),
        (
            json!({"files": files, "action": rule, "post": {"nope.py": "y"}}),
            "not among the files",
        ),
        (
            json!({"files": files, "action": rule, "tests_reward": "most"}),
            "unknown variant",
        ),
    ] {
        let error = parse_err(payload.clone());
        assert!(error.contains(expected), "{payload}: {error}");
    }
}

#[test]
fn a_models_action_in_an_unsupported_language_is_left_to_the_sandbox() {
    let job = parse_ok(
        json!({"files": files(), "action": {"kind": "pattern", "language": "cobol", "pattern": "a", "rewrite": "b"}}),
    );
    assert!(matches!(job.action, Action::Pattern { ref language, .. } if language == "cobol"));
}

#[test]
fn a_local_run_refuses_the_fields_that_record() {
    let rule = json!({"kind": "rule", "yaml": "id: x"});
    let limits = SandboxLimits::default();
    let job = parse_for_local_run(
        &json!({"task_id": "t", "step": 2, "files": files(), "action": rule}),
        &limits,
    )
    .unwrap();
    assert_eq!((job.task_id.as_deref(), job.step), (Some("t"), 2));
    for (payload, expected) in [
        (
            json!({"files": files(), "action": rule, "rollout_id": "ro_1"}),
            "rollout_id given, but a local verification records nothing",
        ),
        (
            json!({"files": files(), "action": rule, "model": "m", "policy_version": "v"}),
            "model and policy_version given",
        ),
        (
            json!({"files": files(), "action": rule, "model": "m"}),
            "model given",
        ),
        (json!({"files": files()}), "missing field `action`"),
    ] {
        let error = parse_for_local_run(&payload, &limits)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{payload}: {error}");
    }
}
