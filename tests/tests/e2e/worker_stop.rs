//! How `agentctl worker` lets go of work: a lost lease kills the job's whole process group at
//! once (no zombie work), and SIGTERM drains (no new leases, running jobs get the drain
//! deadline, then are killed and failed as retryable so another worker runs them).

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_tests::{binary, eventually, is_running};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command whose real work is a grandchild (`sleep`) in the same process group: it writes
/// the grandchild's pid to `pid_file` and waits for it.
fn sleeper_command(pid_file: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "cat >/dev/null; sleep 600 & echo $! > '{}'; wait",
            pid_file.display()
        ),
    ]
}

fn start_worker(url: &str, queue: &str, extra: &[&str], command: &[String]) -> Child {
    Command::new(binary("agentctl"))
        .args([
            "--url",
            url,
            "--json",
            "worker",
            "--queue",
            queue,
            "--wait-ms",
            "500",
        ])
        .args(extra)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentctl worker")
}

/// The pid in `pid_file`, once the job wrote it.
async fn grandchild_pid(pid_file: &Path) -> i32 {
    eventually(
        Duration::from_secs(20),
        "the job to start its grandchild",
        || async {
            std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
        },
    )
    .await
}

/// Waits for the worker to exit and returns its `--json` summary and stderr.
fn finish(worker: Child) -> (Value, String) {
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "worker failed: {stderr}");
    let summary = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stdout)));
    (summary, stderr)
}

#[tokio::test]
async fn a_lost_lease_kills_the_jobs_whole_process_group_at_once() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let job_id = client
        .submit(&SubmitJobRequest {
            queue: "lost".into(),
            kind: "shell".into(),
            payload: json!({}),
            lease_ttl_ms: Some(1500),
            max_attempts: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    let pid_file = dir.path().join("grandchild.pid");
    let worker = start_worker(
        &daemon.url,
        "lost",
        &["--max-jobs", "1"],
        &sleeper_command(&pid_file),
    );
    let pid = grandchild_pid(&pid_file).await;
    assert!(is_running(pid));
    client.cancel(job_id).await.unwrap();
    let cancelled_at = Instant::now();
    // The next heartbeat (every TTL/3 = 500 ms) hears `lease_lost`.
    eventually(
        Duration::from_secs(5),
        "the grandchild to be killed",
        || async { (!is_running(pid)).then_some(()) },
    )
    .await;
    let (summary, stderr) = finish(worker);
    assert_eq!(summary["lost"], 1, "{summary} {stderr}");
    assert!(
        stderr.contains("lost") && stderr.contains("stopping the job"),
        "{stderr}"
    );
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    assert_eq!(
        client.job(job_id).await.unwrap().state,
        JobStateName::Cancelled
    );
}

#[tokio::test]
async fn sigterm_drains_then_fails_the_running_job_as_retryable() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let job_id = client
        .submit(&SubmitJobRequest {
            queue: "drain".into(),
            kind: "shell".into(),
            payload: json!({}),
            max_attempts: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id;
    let pid_file = dir.path().join("grandchild.pid");
    let worker = start_worker(
        &daemon.url,
        "drain",
        &["--drain-timeout-s", "1"],
        &sleeper_command(&pid_file),
    );
    let pid = grandchild_pid(&pid_file).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (summary, stderr) = finish(worker);
    assert_eq!(summary["failed"], 1, "{summary} {stderr}");
    assert!(stderr.contains("draining 1 running job"), "{stderr}");
    assert!(!is_running(pid), "the job's process outlived the drain");
    let view = client.job(job_id).await.unwrap();
    assert!(
        matches!(view.state, JobStateName::Queued | JobStateName::Scheduled),
        "{:?}",
        view.state
    );
    assert_eq!(view.attempt, 1);
    assert!(
        view.last_error.unwrap().contains("shutting down"),
        "the failure says why"
    );
}
