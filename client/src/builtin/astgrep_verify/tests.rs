use super::facts::{check_rollout_task, record};
use super::*;
use agentd_schemas::LeaseId;

#[test]
fn cut_keeps_the_head_within_the_limit_on_a_char_boundary() {
    assert_eq!(cut("short", 100), "short");
    let long = "é".repeat(100);
    let kept = cut(&long, 60);
    assert!(kept.len() <= 60, "{}", kept.len());
    assert!(
        kept.starts_with('é') && kept.ends_with("200 bytes in all]\n"),
        "{kept}"
    );
}

#[test]
fn write_answers_map_to_recorded_retry_or_stop() {
    let api = |status: u16, code: &str| -> Result<(), ClientError> {
        Err(ClientError::Api {
            status,
            code: code.into(),
            message: "m".into(),
        })
    };
    assert!(matches!(record(Ok(()), "x"), Ok(Recorded::Recorded)));
    assert!(matches!(
        record(api(409, "conflict"), "x"),
        Ok(Recorded::AlreadyRecorded)
    ));
    assert!(matches!(
        record(api(409, "lease_lost"), "x"),
        Err(Abort::Stopped)
    ));
    assert!(matches!(
        record(api(404, "not_found"), "x"),
        Err(Abort::Fail {
            retryable: false,
            ..
        })
    ));
    assert!(matches!(
        record(api(503, "unavailable"), "x"),
        Err(Abort::Fail {
            retryable: true,
            ..
        })
    ));
    assert!(matches!(
        record(api(422, "invalid_request"), "x"),
        Err(Abort::Fail {
            retryable: false,
            ..
        })
    ));
}

#[test]
fn a_rollout_takes_its_step_unfenced_and_must_be_of_the_named_task() {
    let job = |payload: serde_json::Value| {
        verify_payload::parse(&payload, None, &SandboxLimits::default()).unwrap()
    };
    let rule = serde_json::json!({"kind": "rule", "yaml": "id: x"});
    let files = serde_json::json!({"a.py": "x\n"});
    assert_eq!(
        Target::of(&job(
            serde_json::json!({"files": files, "action": rule, "task_id": "t", "rollout_id": "ro_2"})
        )),
        Some(Target::Rollout("ro_2".parse().unwrap()))
    );
    assert_eq!(
        Target::of(&job(
            serde_json::json!({"files": files, "action": rule, "task_id": "t"})
        )),
        Some(Target::Task("t".into()))
    );
    assert_eq!(
        Target::of(&job(serde_json::json!({"files": files, "action": rule}))),
        None
    );
    let lease_id: LeaseId = "lease_4".parse().unwrap();
    let rollout_id: RolloutId = "ro_2".parse().unwrap();
    assert_eq!(
        Target::Task("t".into()).step_fence(lease_id),
        Some(lease_id)
    );
    assert_eq!(Target::Rollout(rollout_id).step_fence(lease_id), None);
    assert!(check_rollout_task(rollout_id, "t", None).is_ok());
    assert!(check_rollout_task(rollout_id, "t", Some("t")).is_ok());
    assert!(matches!(
        check_rollout_task(rollout_id, "t", Some("u")),
        Err(Abort::Fail { retryable: false, ref error }) if error.contains("belongs to task \"t\"")
    ));
}

#[test]
fn rejection_and_verdict_reasons_are_kept_with_stderr() {
    assert_eq!(with_reasons("out", None, &BTreeMap::new()), "out");
    let reasons = [(
        "tamper".to_string(),
        "the action changed test file t.py".to_string(),
    )]
    .into();
    let text = with_reasons("out", Some("bad pattern"), &reasons);
    assert_eq!(
        text,
        "[agentd-sandbox] rejected: bad pattern\n[agentd-verify] tamper: the action changed test file t.py\nout"
    );
}
