use super::*;
use agentd_schemas::events::Tags;
use serde_json::json;

fn job(n: u64) -> JobId {
    format!("job_{n}").parse().unwrap()
}

#[test]
fn lines_are_classified_as_messages_or_output() {
    let cases: Vec<(&str, ActorLine)> = vec![
        (
            r#"{"type":"hello","protocol":1}"#,
            ActorLine::Hello { protocol: 1 },
        ),
        (
            r#"  {"type":"hello","protocol":2,"pid":7}  "#,
            ActorLine::Hello { protocol: 2 },
        ),
        (
            r#"{"type":"result","job_id":"job_3","result":{"ok":true}}"#,
            ActorLine::Result {
                job_id: job(3),
                result: Some(json!({"ok": true})),
            },
        ),
        (
            r#"{"type":"result","job_id":"job_3"}"#,
            ActorLine::Result {
                job_id: job(3),
                result: None,
            },
        ),
        (
            r#"{"type":"result","job_id":"job_3","result":null}"#,
            ActorLine::Result {
                job_id: job(3),
                result: None,
            },
        ),
        (
            r#"{"type":"failure","job_id":"job_4","error":"bad input","retryable":false}"#,
            ActorLine::Failure {
                job_id: job(4),
                error: "bad input".into(),
                retryable: false,
            },
        ),
        (
            r#"{"type":"failure","job_id":"job_4","error":"flaky"}"#,
            ActorLine::Failure {
                job_id: job(4),
                error: "flaky".into(),
                retryable: true,
            },
        ),
        (
            r#"{"type":"cancelled","job_id":"job_5"}"#,
            ActorLine::Cancelled { job_id: job(5) },
        ),
        (
            r#"{"type":"progress","job_id":"job_5"}"#,
            ActorLine::UnknownType {
                message_type: "progress".into(),
            },
        ),
        ("loading weights 50%", ActorLine::Output),
        ("", ActorLine::Output),
        (r#"{"no_type": 1}"#, ActorLine::Output),
        (r#"{"type": 1}"#, ActorLine::Output),
        (r#"["type","result"]"#, ActorLine::Output),
        ("\u{0}\u{1}binary", ActorLine::Output),
    ];
    for (line, expected) in cases {
        assert_eq!(classify(line.as_bytes()), expected, "{line}");
    }
}

#[test]
fn known_messages_with_wrong_fields_say_what_is_wrong() {
    for (line, expected) in [
        (r#"{"type":"hello"}"#, "no protocol version"),
        (r#"{"type":"hello","protocol":"1"}"#, "no protocol version"),
        (r#"{"type":"result","result":1}"#, "has no job_id"),
        (r#"{"type":"result","job_id":7}"#, "not a string"),
        (r#"{"type":"result","job_id":"7"}"#, "not a job id"),
        (r#"{"type":"failure","job_id":"job_1"}"#, "has no error"),
        (
            r#"{"type":"failure","job_id":"job_1","error":"x","retryable":"no"}"#,
            "not true or false",
        ),
        (r#"{"type":"cancelled"}"#, "has no job_id"),
    ] {
        match classify(line.as_bytes()) {
            ActorLine::Malformed { problem } => {
                assert!(problem.contains(expected), "{line}: {problem}")
            }
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn only_a_hello_of_this_version_opens_the_conversation() {
    assert!(check_hello(br#"{"type":"hello","protocol":1}"#).is_ok());
    let newer = check_hello(br#"{"type":"hello","protocol":2}"#).unwrap_err();
    assert!(
        newer.contains("speaks protocol 2") && newer.contains("speaks protocol 1"),
        "{newer}"
    );
    let banner = check_hello(b"Loading checkpoint shards: 100%").unwrap_err();
    assert!(
        banner.contains("does not speak the persistent-actor protocol")
            && banner.contains("Loading checkpoint shards")
            && banner.contains(HELLO_EXAMPLE),
        "{banner}"
    );
    let result = check_hello(br#"{"type":"result","job_id":"job_1"}"#).unwrap_err();
    assert!(result.contains("does not speak"), "{result}");
    let long = check_hello("x".repeat(5000).as_bytes()).unwrap_err();
    assert!(long.len() < 600, "{long}");
}

#[test]
fn a_job_line_carries_what_a_per_job_command_gets() {
    let grant = LeaseGrant {
        lease_id: "lease_9".parse().unwrap(),
        job_id: job(7),
        attempt: 2,
        expires_at_ms: 1,
        job: LeasedJob {
            job_id: job(7),
            queue: "rollouts".into(),
            kind: "episode".into(),
            payload: agentd_schemas::JsonText::from_value(&json!({"prompt": "hi\nthere"})),
            priority: 0,
            attempt: 2,
            max_attempts: 3,
            lease_ttl_ms: 30_000,
            tags: Tags::new(),
            task_id: Some("task-1".into()),
            rollout_id: None,
        },
    };
    let line = job_line(&grant, 5);
    assert_eq!(line.iter().filter(|byte| **byte == b'\n').count(), 1);
    assert_eq!(line.last(), Some(&b'\n'));
    let parsed: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(
        parsed,
        json!({
            "type": "job", "lease_id": "lease_9", "slot": 5, "job_id": "job_7",
            "queue": "rollouts", "kind": "episode", "payload": {"prompt": "hi\nthere"},
            "priority": 0, "attempt": 2, "max_attempts": 3, "lease_ttl_ms": 30000,
            "tags": {}, "task_id": "task-1"
        })
    );
    // Everything the per-job command reads on stdin is there, under the same names.
    let stdin_object = serde_json::to_value(&grant.job).unwrap();
    for (key, value) in stdin_object.as_object().unwrap() {
        assert_eq!(&parsed[key], value, "{key}");
    }
    let cancel: Value =
        serde_json::from_slice(&cancel_line(job(7), CancelReason::LeaseLost)).unwrap();
    assert_eq!(
        cancel,
        json!({"type": "cancel", "job_id": "job_7", "reason": "lease_lost"})
    );
}
