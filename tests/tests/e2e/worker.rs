//! `agentctl worker` runs a real command per job; a killed worker's job runs again elsewhere.

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_tests::{agentctl_text, binary, eventually};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn submit(queue: &str, payload: serde_json::Value, lease_ttl_ms: Option<u64>) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.into(),
        kind: "shell".into(),
        payload,
        lease_ttl_ms,
        max_attempts: Some(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn worker_runs_a_command_and_reports_stdout_or_stderr() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let good = client
        .submit(&submit("shell", json!({"word": "hello"}), None))
        .await
        .unwrap()
        .job_id;
    let bad = client
        .submit(&submit("shell", json!({"word": "fail"}), None))
        .await
        .unwrap()
        .job_id;
    // The command reads the job JSON on stdin and answers with JSON on stdout, or fails.
    let script = r#"job=$(cat); case "$job" in *fail*) echo "it broke: bad word" >&2; exit 3;; esac; echo "{\"echo\": $job, \"job\": \"$AGENTD_JOB_ID\"}""#;
    agentctl_text(
        &daemon.url,
        &[
            "worker",
            "--queue",
            "shell",
            "--max-jobs",
            "2",
            "--wait-ms",
            "1000",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .ok();
    let good_view = client.job(good).await.unwrap();
    assert_eq!(good_view.state, JobStateName::Completed);
    let result = good_view.result.unwrap();
    assert_eq!(result["job"], good.to_string());
    assert_eq!(result["echo"]["payload"], json!({"word": "hello"}));
    let bad_view = client.job(bad).await.unwrap();
    assert_eq!(bad_view.state, JobStateName::Dead);
    let error = bad_view.last_error.unwrap();
    assert!(
        error.contains("exit status 3") && error.contains("it broke"),
        "{error}"
    );
}

#[tokio::test]
async fn a_killed_workers_job_is_leased_again_after_expiry() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    let job_id = client
        .submit(&SubmitJobRequest {
            max_attempts: Some(3),
            ..submit("slow", json!({}), Some(1000))
        })
        .await
        .unwrap()
        .job_id;
    // The first worker hangs on its job; run it in its own process group so the test can kill
    // the worker and its child together, like a machine dying.
    let mut doomed = Command::new(binary("agentctl"))
        .args([
            "--url",
            &daemon.url,
            "worker",
            "--queue",
            "slow",
            "--worker-id",
            "doomed",
            "--",
            "sleep",
            "600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the first worker to lease the job",
        || async {
            (client.job(job_id).await.unwrap().state == JobStateName::Leased).then_some(())
        },
    )
    .await;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(doomed.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    doomed.wait().unwrap();
    agentctl_text(
        &daemon.url,
        &[
            "worker",
            "--queue",
            "slow",
            "--worker-id",
            "rescuer",
            "--max-jobs",
            "1",
            "--",
            "sh",
            "-c",
            "cat >/dev/null; echo '\"rescued\"'",
        ],
    )
    .ok();
    let view = client.job(job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Completed);
    assert_eq!(view.result, Some(json!("rescued")));
    assert_eq!(view.attempt, 2);
    let workers: Vec<String> = view
        .history
        .unwrap()
        .into_iter()
        .filter_map(|entry| entry.worker_id)
        .collect();
    assert_eq!(workers, ["doomed", "rescuer"]);
}
