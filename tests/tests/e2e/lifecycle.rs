//! The job lifecycle through HTTP: submit, lease, heartbeat, complete, fail, expiry, fencing,
//! retries, idempotency, delays, priorities, pause/resume, cancel, tags, long-poll wake-up, and
//! the error contract.

use super::fast_daemon;
use agentd_client::Client;
use agentd_schemas::api::{JobStateName, LeaseRequest, SubmitJobRequest};
use agentd_tests::eventually;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn job(queue: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.into(),
        kind: "test".into(),
        payload: json!({"n": 1}),
        ..Default::default()
    }
}

fn ask(worker: &str, queue: &str) -> LeaseRequest {
    LeaseRequest {
        worker_id: worker.into(),
        queues: vec![queue.into()],
        tags: None,
        max_jobs: Some(1),
        wait_ms: Some(0),
    }
}

#[tokio::test]
async fn submit_lease_heartbeat_complete_and_history() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let submitted = client
        .submit(&SubmitJobRequest {
            payload: json!({"file": "a.py"}),
            ..job("q")
        })
        .await
        .unwrap();
    assert!(!submitted.deduplicated);
    let view = client.job(submitted.job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Queued);
    assert_eq!(view.payload, json!({"file": "a.py"}));

    let lease = client
        .lease(&ask("w1", "q"))
        .await
        .unwrap()
        .leases
        .pop()
        .expect("a lease");
    assert_eq!(lease.job_id, submitted.job_id);
    assert_eq!(lease.attempt, 1);
    assert_eq!(lease.job.payload.to_value(), json!({"file": "a.py"}));
    let beat = client.heartbeat(lease.lease_id).await.unwrap();
    assert!(beat.expires_at_ms >= lease.expires_at_ms);
    client
        .complete(lease.lease_id, Some(json!({"ok": true})))
        .await
        .unwrap();

    let view = client.job(submitted.job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Completed);
    assert_eq!(view.result, Some(json!({"ok": true})));
    let events: Vec<String> = view
        .history
        .unwrap()
        .into_iter()
        .map(|entry| entry.event)
        .collect();
    assert_eq!(
        events,
        [
            "job_submitted",
            "job_leased",
            "lease_heartbeat",
            "job_completed"
        ]
    );
    // A second complete with the same lease changes nothing.
    let error = client.complete(lease.lease_id, None).await.unwrap_err();
    assert_eq!(error.code(), Some("lease_lost"));
}

#[tokio::test]
async fn expired_lease_is_fenced_and_the_job_runs_again() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let submitted = client
        .submit(&SubmitJobRequest {
            lease_ttl_ms: Some(300),
            ..job("q")
        })
        .await
        .unwrap();
    let stale = client
        .lease(&ask("w1", "q"))
        .await
        .unwrap()
        .leases
        .pop()
        .unwrap();
    // The daemon notices the expiry and re-queues the job; a second worker long-polls for it.
    let fresh = eventually(
        Duration::from_secs(10),
        "the job leased again after expiry",
        || async {
            let request = LeaseRequest {
                wait_ms: Some(1000),
                ..ask("w2", "q")
            };
            client.lease(&request).await.unwrap().leases.pop()
        },
    )
    .await;
    assert_eq!(fresh.job_id, submitted.job_id);
    assert_eq!(fresh.attempt, 2);
    for error in [
        client.complete(stale.lease_id, None).await.unwrap_err(),
        client
            .heartbeat(stale.lease_id)
            .await
            .map(|_| ())
            .unwrap_err(),
        client
            .fail(stale.lease_id, "late", true)
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert_eq!(error.code(), Some("lease_lost"), "{error}");
    }
    client.complete(fresh.lease_id, None).await.unwrap();
    let view = client.job(submitted.job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Completed);
    assert!(view
        .history
        .unwrap()
        .iter()
        .any(|entry| entry.event == "lease_expired"));
}

#[tokio::test]
async fn failures_retry_with_backoff_until_dead_and_manual_retry_requeues() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let submitted = client
        .submit(&SubmitJobRequest {
            max_attempts: Some(2),
            ..job("q")
        })
        .await
        .unwrap();
    for attempt in 1..=2 {
        let lease = eventually(Duration::from_secs(10), "a lease", || async {
            client
                .lease(&LeaseRequest {
                    wait_ms: Some(500),
                    ..ask("w", "q")
                })
                .await
                .unwrap()
                .leases
                .pop()
        })
        .await;
        assert_eq!(lease.attempt, attempt);
        let answer = client
            .fail(lease.lease_id, &format!("boom {attempt}"), true)
            .await
            .unwrap();
        let expected = if attempt == 2 {
            JobStateName::Dead
        } else {
            JobStateName::Scheduled
        };
        assert_eq!(answer.state, expected);
    }
    let view = client.job(submitted.job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Dead);
    assert_eq!(view.last_error.as_deref(), Some("boom 2"));
    // A non-retryable failure kills at once; here we re-queue the dead job by hand.
    client.retry(submitted.job_id).await.unwrap();
    let lease = client
        .lease(&ask("w", "q"))
        .await
        .unwrap()
        .leases
        .pop()
        .unwrap();
    assert_eq!(
        lease.attempt, 1,
        "a manual retry starts a fresh set of attempts"
    );
    // A dead job's payload left the sequencer's lease cache; the answer reads the projection.
    assert_eq!(
        (lease.job.payload.to_value(), lease.job.kind.as_str()),
        (json!({"n": 1}), "test")
    );
    let answer = client.fail(lease.lease_id, "fatal", false).await.unwrap();
    assert_eq!(answer.state, JobStateName::Dead);
    // Only dead jobs can be retried... and this one is dead again, so retry works once more.
    let error = client.cancel(submitted.job_id).await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_state"));
}

#[tokio::test]
async fn idempotency_keys_deduplicate_per_queue() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let keyed = SubmitJobRequest {
        idempotency_key: Some("k1".into()),
        ..job("q")
    };
    let first = client.submit(&keyed).await.unwrap();
    let again = client.submit(&keyed).await.unwrap();
    assert_eq!(again.job_id, first.job_id);
    assert!(again.deduplicated);
    assert_eq!(again.lsn, first.lsn);
    let other_queue = client
        .submit(&SubmitJobRequest {
            queue: "other".into(),
            ..keyed.clone()
        })
        .await
        .unwrap();
    assert_ne!(other_queue.job_id, first.job_id);
    // Inside one batch, a repeated key maps to the first job of the batch.
    let batch = client
        .submit_batch(vec![
            SubmitJobRequest {
                idempotency_key: Some("k2".into()),
                ..job("q")
            },
            SubmitJobRequest {
                idempotency_key: Some("k2".into()),
                ..job("q")
            },
            keyed.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(batch.jobs[0].job_id, batch.jobs[1].job_id);
    assert!(!batch.jobs[0].deduplicated && batch.jobs[1].deduplicated);
    assert_eq!(batch.jobs[2].job_id, first.job_id);
    let queue = client
        .queues()
        .await
        .unwrap()
        .queues
        .into_iter()
        .find(|queue| queue.queue == "q")
        .unwrap();
    assert_eq!(
        queue.depth["queued"], 2,
        "only two distinct jobs exist in q"
    );
}

#[tokio::test]
async fn delayed_jobs_wait_and_long_polls_wake_when_due() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let submitted = client
        .submit(&SubmitJobRequest {
            delay_ms: Some(700),
            ..job("q")
        })
        .await
        .unwrap();
    assert_eq!(
        client.job(submitted.job_id).await.unwrap().state,
        JobStateName::Scheduled
    );
    assert!(client
        .lease(&ask("w", "q"))
        .await
        .unwrap()
        .leases
        .is_empty());
    let started = Instant::now();
    let lease = client
        .lease(&LeaseRequest {
            wait_ms: Some(10_000),
            ..ask("w", "q")
        })
        .await
        .unwrap()
        .leases
        .pop();
    assert_eq!(lease.map(|lease| lease.job_id), Some(submitted.job_id));
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "woken when due, not at the end of the wait"
    );
}

#[tokio::test]
async fn priorities_first_then_fifo() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let mut expected = Vec::new();
    let low_1 = client
        .submit(&SubmitJobRequest {
            priority: Some(0),
            ..job("q")
        })
        .await
        .unwrap()
        .job_id;
    let high = client
        .submit(&SubmitJobRequest {
            priority: Some(10),
            ..job("q")
        })
        .await
        .unwrap()
        .job_id;
    let low_2 = client
        .submit(&SubmitJobRequest {
            priority: Some(0),
            ..job("q")
        })
        .await
        .unwrap()
        .job_id;
    let mid = client
        .submit(&SubmitJobRequest {
            priority: Some(5),
            ..job("q")
        })
        .await
        .unwrap()
        .job_id;
    expected.extend([high, mid, low_1, low_2]);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(
            client
                .lease(&ask("w", "q"))
                .await
                .unwrap()
                .leases
                .pop()
                .unwrap()
                .job_id,
        );
    }
    assert_eq!(order, expected);
}

#[tokio::test]
async fn paused_queues_hand_out_nothing_until_resumed() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let paused = client.pause("q").await.unwrap();
    // Pausing again records nothing: the same LSN, no new event.
    let again = client.pause("q").await.unwrap();
    assert!(again.paused);
    assert_eq!(again.lsn, paused.lsn, "a second pause appends no record");
    // Resuming a queue never seen records nothing and does not create it.
    client.resume("never-seen").await.unwrap();
    let submitted = client.submit(&job("q")).await.unwrap();
    assert_eq!(
        submitted.lsn.0,
        paused.lsn.0 + 1,
        "neither the second pause nor the no-op resume appended a record"
    );
    assert!(client
        .lease(&ask("w", "q"))
        .await
        .unwrap()
        .leases
        .is_empty());
    let queues = client.queues().await.unwrap();
    assert!(queues
        .queues
        .iter()
        .any(|queue| queue.queue == "q" && queue.paused));
    assert!(!queues
        .queues
        .iter()
        .any(|queue| queue.queue == "never-seen"));
    client.resume("q").await.unwrap();
    assert_eq!(
        client
            .lease(&ask("w", "q"))
            .await
            .unwrap()
            .leases
            .pop()
            .unwrap()
            .job_id,
        submitted.job_id
    );
}

#[tokio::test]
async fn cancel_queued_and_leased_jobs() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let queued = client.submit(&job("q")).await.unwrap().job_id;
    client.cancel(queued).await.unwrap();
    assert_eq!(
        client.job(queued).await.unwrap().state,
        JobStateName::Cancelled
    );
    let leased = client.submit(&job("q")).await.unwrap().job_id;
    let lease = client
        .lease(&ask("w", "q"))
        .await
        .unwrap()
        .leases
        .pop()
        .unwrap();
    assert_eq!(lease.job_id, leased);
    client.cancel(leased).await.unwrap();
    let error = client.heartbeat(lease.lease_id).await.unwrap_err();
    assert_eq!(error.code(), Some("lease_lost"));
    let error = client.cancel(leased).await.unwrap_err();
    assert_eq!(error.code(), Some("invalid_state"));
}

#[tokio::test]
async fn tags_route_jobs_to_workers_that_have_them() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let gpu_job = client
        .submit(&SubmitJobRequest {
            tags: Some([("gpu".to_string(), "a100".to_string())].into()),
            ..job("q")
        })
        .await
        .unwrap()
        .job_id;
    assert!(client
        .lease(&ask("cpu-box", "q"))
        .await
        .unwrap()
        .leases
        .is_empty());
    let wrong = LeaseRequest {
        tags: Some([("gpu".to_string(), "t4".to_string())].into()),
        ..ask("t4-box", "q")
    };
    assert!(client.lease(&wrong).await.unwrap().leases.is_empty());
    let right = LeaseRequest {
        tags: Some(
            [
                ("gpu".to_string(), "a100".to_string()),
                ("zone".to_string(), "b".to_string()),
            ]
            .into(),
        ),
        ..ask("a100-box", "q")
    };
    assert_eq!(
        client
            .lease(&right)
            .await
            .unwrap()
            .leases
            .pop()
            .unwrap()
            .job_id,
        gpu_job
    );
}

#[tokio::test]
async fn a_waiting_worker_is_woken_by_a_submit() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let waiter_client = client.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        waiter_client
            .lease(&LeaseRequest {
                wait_ms: Some(20_000),
                ..ask("w", "q")
            })
            .await
    });
    // Give the long-poll a head start measured by the daemon's own parked state, not a sleep:
    // whether or not it is parked yet, it must get the job far sooner than its 20 s wait.
    let submitted = client.submit(&job("q")).await.unwrap();
    let leases = waiter.await.unwrap().unwrap().leases;
    assert_eq!(
        leases.first().map(|lease| lease.job_id),
        Some(submitted.job_id)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn bad_input_gets_specific_errors_and_changes_nothing() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let http = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        http.post(format!("{}{path}", daemon.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let check = |response: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
        body["message"].as_str().unwrap().to_string()
    };
    check(
        post("/v1/jobs", "{not json").await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    let message = check(
        post("/v1/jobs", r#"{"queue":"q","kind":"k","colour":1}"#)
            .await
            .unwrap(),
        422,
        "invalid_request",
    )
    .await;
    assert!(message.contains("colour"), "{message}");
    let message = check(
        post("/v1/jobs", r#"{"queue":"q","kind":"k","priority":"high"}"#)
            .await
            .unwrap(),
        422,
        "invalid_request",
    )
    .await;
    assert!(
        message.contains("priority") || message.contains("i32"),
        "{message}"
    );
    check(
        post("/v1/jobs", r#"{"queue":"bad queue","kind":"k"}"#)
            .await
            .unwrap(),
        422,
        "invalid_request",
    )
    .await;
    // A batch with one bad job is refused whole.
    let batch = r#"{"jobs":[{"queue":"q","kind":"k"},{"queue":"q","kind":"k","max_attempts":0}]}"#;
    let message = check(
        post("/v1/jobs/batch", batch).await.unwrap(),
        422,
        "invalid_request",
    )
    .await;
    assert!(message.contains("jobs[1].max_attempts"), "{message}");
    let big = format!(
        r#"{{"queue":"q","kind":"k","payload":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let response = http
        .post(format!("{}/v1/jobs", daemon.url))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    check(response, 413, "payload_too_large").await;
    let response = http
        .get(format!("{}/v1/jobs/job_999999", daemon.url))
        .send()
        .await
        .unwrap();
    check(response, 404, "not_found").await;
    let response = http
        .get(format!("{}/v1/jobs/nonsense", daemon.url))
        .send()
        .await
        .unwrap();
    check(response, 422, "invalid_request").await;
    check(
        post("/v1/leases/lease_424242/complete", "{}")
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert!(
        client.queues().await.unwrap().queues.is_empty(),
        "nothing was written by refused requests"
    );
    // Only what the daemon recorded at its first start: its settings.
    let events = client.events(agentd_schemas::Lsn(0), 100, 0).await.unwrap();
    let types: Vec<&Value> = events.events.iter().map(|event| &event["type"]).collect();
    assert_eq!(
        types,
        [
            &Value::from("dataset_settings_recorded"),
            &Value::from("training_settings_recorded")
        ]
    );
}

#[tokio::test]
async fn events_are_listed_from_any_lsn() {
    let (_dir, daemon) = fast_daemon();
    let client: Client = daemon.client();
    for _ in 0..3 {
        client.submit(&job("q")).await.unwrap();
    }
    // LSN 1 is the settings the daemon records at its first start ([datasets], then
    // [rewards] and [training]), two events of one record.
    let all = client.events(agentd_schemas::Lsn(0), 100, 0).await.unwrap();
    assert_eq!(all.events.len(), 5);
    assert_eq!(all.events[0]["type"], "dataset_settings_recorded");
    assert_eq!(all.events[1]["type"], "training_settings_recorded");
    assert_eq!(all.events[2]["type"], "job_submitted");
    assert_eq!(all.events[2]["queue"], "q");
    let later = client.events(agentd_schemas::Lsn(3), 100, 0).await.unwrap();
    assert_eq!(later.events.len(), 1);
    assert_eq!(later.events[0]["lsn"], 4);
    assert_eq!(later.next_after.0, 4);
}
