//! A job's `run_at_ms` is when it may next be leased while it waits (`scheduled`, `queued`), and
//! `null`, not `0`, once it is leased or finished (regression: it read 0).

use super::fast_daemon;
use agentd_tests::Daemon;
use serde_json::{json, Value};

async fn post(daemon: &Daemon, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", daemon.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// The job's state and its `run_at_ms`, which must be present (a number or `null`).
async fn state_and_run_at(daemon: &Daemon, job_id: &str) -> (String, Value) {
    let response = reqwest::get(format!("{}/v1/jobs/{job_id}", daemon.url))
        .await
        .unwrap();
    let view: Value = response.json().await.unwrap();
    let run_at = view
        .get("run_at_ms")
        .unwrap_or_else(|| panic!("run_at_ms missing: {view}"))
        .clone();
    (view["state"].as_str().unwrap().to_string(), run_at)
}

fn lease_one(queue: &str) -> Value {
    json!({"worker_id": "w", "queues": [queue], "max_jobs": 1})
}

#[tokio::test]
async fn run_at_ms_is_set_while_waiting_and_null_once_leased_or_finished() {
    let (_dir, daemon) = fast_daemon();
    // Building the agentd client installs reqwest's TLS provider for the plain client below.
    let _client = daemon.client();
    let queued = post(&daemon, "/v1/jobs", json!({"queue": "q", "kind": "k"})).await;
    let queued = queued["job_id"].as_str().unwrap().to_string();
    let (state, run_at) = state_and_run_at(&daemon, &queued).await;
    assert_eq!(state, "queued");
    let submitted_at = run_at.as_u64().expect("a time while queued");
    assert!(submitted_at > 0);
    let later = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "later", "kind": "k", "delay_ms": 3_600_000}),
    )
    .await;
    let later = later["job_id"].as_str().unwrap().to_string();
    let (state, run_at) = state_and_run_at(&daemon, &later).await;
    assert_eq!(state, "scheduled");
    assert!(
        run_at.as_u64().unwrap() >= submitted_at + 3_600_000,
        "{run_at}"
    );

    // Leased, then completed: null.
    let leases = post(&daemon, "/v1/leases", lease_one("q")).await;
    let lease_id = leases["leases"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        state_and_run_at(&daemon, &queued).await,
        ("leased".into(), Value::Null)
    );
    post(
        &daemon,
        &format!("/v1/leases/{lease_id}/complete"),
        json!({}),
    )
    .await;
    assert_eq!(
        state_and_run_at(&daemon, &queued).await,
        ("completed".into(), Value::Null)
    );

    // Cancelled: null.
    post(&daemon, &format!("/v1/jobs/{later}/cancel"), json!({})).await;
    assert_eq!(
        state_and_run_at(&daemon, &later).await,
        ("cancelled".into(), Value::Null)
    );

    // Dead: null; retried: a time again.
    let dying = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "d", "kind": "k", "max_attempts": 1}),
    )
    .await;
    let dying = dying["job_id"].as_str().unwrap().to_string();
    let leases = post(&daemon, "/v1/leases", lease_one("d")).await;
    let lease_id = leases["leases"][0]["lease_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &daemon,
        &format!("/v1/leases/{lease_id}/fail"),
        json!({"error": "boom", "retryable": false}),
    )
    .await;
    assert_eq!(
        state_and_run_at(&daemon, &dying).await,
        ("dead".into(), Value::Null)
    );
    post(&daemon, &format!("/v1/jobs/{dying}/retry"), json!({})).await;
    let (state, run_at) = state_and_run_at(&daemon, &dying).await;
    assert_eq!(state, "queued");
    assert!(run_at.as_u64().unwrap() >= submitted_at, "{run_at}");

    // Lists say the same.
    let page: Value = reqwest::get(format!("{}/v1/jobs", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_ats: Vec<(&str, &Value)> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (job["state"].as_str().unwrap(), &job["run_at_ms"]))
        .collect();
    assert_eq!(run_ats.len(), 3);
    assert_eq!(run_ats[0], ("completed", &Value::Null));
    assert_eq!(run_ats[1], ("cancelled", &Value::Null));
    assert_eq!(run_ats[2].0, "queued");
    assert!(run_ats[2].1.is_u64());
}
