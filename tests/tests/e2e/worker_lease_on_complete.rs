//! Complete-then-lease: `POST /v1/leases/{id}/complete` with `next` leases the next ready job
//! in the same call, and `agentctl worker` uses it by default, so a busy queue costs one round
//! trip per job instead of two. Checked through the route itself (answers, refusals, a client
//! that sends no `next` sees no change) and through the real worker, counting lease calls on
//! the daemon's `/metrics`.

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, LeaseRequest, SubmitJobRequest};
use agentd_schemas::JobId;
use agentd_tests::{binary, get_text, http};
use serde_json::{json, Value};
use std::process::{Command, Stdio};

fn job(queue: &str, n: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.into(),
        kind: "shell".into(),
        payload: json!({ "n": n }),
        max_attempts: Some(1),
        ..Default::default()
    }
}

/// `POST /v1/leases/{lease_id}/complete` with `body`: the status and the JSON answer.
async fn complete(url: &str, lease_id: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!("{url}/v1/leases/{lease_id}/complete"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_completion_with_next_leases_what_is_ready_and_a_bad_next_completes_nothing() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let first = client.submit(&job("q", 1)).await.unwrap().job_id;
    let second = client.submit(&job("q", 2)).await.unwrap().job_id;
    let lease = LeaseRequest {
        worker_id: "w1".into(),
        queues: vec!["q".into()],
        ..Default::default()
    };
    let held = client.lease(&lease).await.unwrap().leases.remove(0);
    assert_eq!(held.job_id, first);
    let lease_id = held.lease_id.to_string();
    let next = json!({"worker_id": "w1", "queues": ["q"], "max_jobs": 1});

    // A `next` the lease route would refuse, or with a field it does not know, refuses the
    // call before anything is completed: the lease is still held afterwards.
    for (bad_next, code, field) in [
        (
            json!({"worker_id": "w1", "queues": ["q"], "max_jobs": 0}),
            "invalid_request",
            "next.max_jobs",
        ),
        (
            json!({"worker_id": "w1", "queues": ["a b"]}),
            "invalid_request",
            "next.queues[0]",
        ),
        (
            json!({"worker_id": "w1", "queues": ["q"], "wait_ms": 10}),
            "invalid_request",
            "wait_ms",
        ),
    ] {
        let (status, answer) = complete(
            &daemon.url,
            &lease_id,
            json!({"result": 1, "next": bad_next}),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (422, Some(code)),
            "{answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    let view = client.job(first).await.unwrap();
    assert_eq!(view.state, JobStateName::Leased, "nothing was completed");

    let (status, answer) = complete(
        &daemon.url,
        &lease_id,
        json!({"result": {"n": 1}, "next": next}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["job_id"], json!(first.to_string()));
    assert_eq!(answer["state"], json!("completed"));
    let next_leases = answer["next_leases"].as_array().unwrap();
    assert_eq!(next_leases.len(), 1, "{answer}");
    assert_eq!(next_leases[0]["job_id"], json!(second.to_string()));
    assert_eq!(next_leases[0]["job"]["payload"], json!({"n": 2}));
    let first_view = client.job(first).await.unwrap();
    assert_eq!(
        (first_view.state, first_view.result),
        (JobStateName::Completed, Some(json!({"n": 1})))
    );
    let second_view = client.job(second).await.unwrap();
    assert_eq!(second_view.state, JobStateName::Leased);
    assert_eq!(second_view.lease.unwrap().worker_id, "w1");

    // Nothing ready: completed all the same, with an empty `next_leases`.
    let next_lease_id = next_leases[0]["lease_id"].as_str().unwrap().to_string();
    let (status, answer) = complete(&daemon.url, &next_lease_id, json!({"next": next})).await;
    assert_eq!(
        (status, &answer["next_leases"]),
        (200, &json!([])),
        "{answer}"
    );
    assert_eq!(
        client.job(second).await.unwrap().state,
        JobStateName::Completed
    );

    // A client that sends no `next` sees the answer it always saw.
    let third = client.submit(&job("q", 3)).await.unwrap().job_id;
    let held = client.lease(&lease).await.unwrap().leases.remove(0);
    let (status, answer) = complete(&daemon.url, &held.lease_id.to_string(), json!({})).await;
    assert_eq!(status, 200);
    let mut fields: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["job_id", "lsn", "state"], "{answer}");
    assert_eq!(answer["job_id"], json!(third.to_string()));
}

/// Jobs each worker run completes.
const JOBS: usize = 20;

/// The daemon's count of answered `POST` calls to `route`, from `/metrics`.
async fn post_calls(url: &str, route: &str) -> u64 {
    let text = get_text(url, "/metrics").await;
    let route_label = format!("route=\"{route}\"");
    text.lines()
        .filter(|line| line.starts_with("agentd_http_requests_total{"))
        .filter(|line| line.contains(&route_label) && line.contains("method=\"POST\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs `agentctl worker` over `JOBS` ready jobs of `queue` with `extra` arguments; returns the
/// jobs and the lease calls the run made.
async fn run_worker(
    daemon: &agentd_tests::Daemon,
    queue: &str,
    extra: &[&str],
) -> (Vec<JobId>, u64) {
    let client = daemon.client();
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(client.submit(&job(queue, n)).await.unwrap().job_id);
    }
    let leases_before = post_calls(&daemon.url, "/v1/leases").await;
    let total = JOBS.to_string();
    let output = Command::new(binary("agentctl"))
        .args(["--url", &daemon.url, "--json", "worker", "--queue", queue])
        .args([
            "--concurrency",
            "2",
            "--max-jobs",
            &total,
            "--wait-ms",
            "500",
        ])
        .args(extra)
        .args(["--", "sh", "-c"])
        .arg("cat >/dev/null; echo \"{\\\"job\\\": \\\"$AGENTD_JOB_ID\\\"}\"")
        .stdin(Stdio::null())
        .output()
        .expect("run agentctl worker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "worker failed: {stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&summary["completed"], &summary["failed"], &summary["lost"]),
        (&json!(JOBS), &json!(0), &json!(0)),
        "{stderr}"
    );
    for job_id in &jobs {
        let view = client.job(*job_id).await.unwrap();
        assert_eq!(view.state, JobStateName::Completed, "{job_id}");
        assert_eq!(view.attempt, 1, "{job_id}: run exactly once");
        assert_eq!(view.result, Some(json!({ "job": job_id.to_string() })));
    }
    let leases = post_calls(&daemon.url, "/v1/leases").await - leases_before;
    (jobs, leases)
}

#[tokio::test]
async fn agentctl_worker_leases_with_its_completions_and_runs_every_job_once() {
    let (_dir, daemon) = fast_daemon();
    let (_, leases) = run_worker(&daemon, "chained", &[]).await;
    // Two slots: the first lease call fills them, then each completion brings the next job.
    assert!(
        leases < (JOBS / 2) as u64,
        "{leases} lease calls for {JOBS} jobs"
    );
    // The three-call path, for contrast: every job needs a lease call of its own (or a
    // share of one that leased both slots).
    let (_, leases) = run_worker(&daemon, "plain", &["--no-lease-on-complete"]).await;
    assert!(
        leases >= (JOBS / 2) as u64,
        "{leases} lease calls for {JOBS} jobs without lease-on-complete"
    );
    // Every job ran exactly once: JOBS completions per queue in the log, none twice.
    let completes = post_calls(&daemon.url, "/v1/leases/{lease_id}/complete").await;
    assert_eq!(completes, 2 * JOBS as u64);
}
