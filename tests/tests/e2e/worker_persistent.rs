//! `agentctl worker --persistent -- python3 examples/persistent_actor.py` against the real
//! daemon: one long-lived actor per slot handles many jobs (its pid in every result, its model
//! loaded once); a lost lease is cancelled and the actor lives on, while an actor that ignores the
//! cancel is killed and replaced; an actor that dies is restarted and its job retried; every job
//! completes exactly once; SIGTERM lets the running job finish, then closes the actors' stdin; a
//! command that does not speak the protocol stops the worker before it leases anything; and
//! `--metrics-listen` shows all of it.

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, JobView, SubmitJobRequest};
use agentd_schemas::JobId;
use agentd_tests::{binary, eventually, is_running};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The example actor, run by the worker as teams would run theirs.
fn example_actor() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/persistent_actor.py")
}

/// Longest wait for anything a worker or an actor does here.
const WAIT: Duration = Duration::from_secs(60);

/// A worker running persistent actors. Dropping it kills the worker and every actor it printed
/// as started (actors lead process groups of their own, so the worker's death alone would
/// leave them to notice their stdin closing).
struct PersistentWorker {
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl PersistentWorker {
    fn start(url: &str, dir: &Path, queue: &str, extra: &[&str], command: &[&str]) -> Self {
        let stderr_path = dir.join(format!("worker-{queue}.stderr"));
        let child = Command::new(binary("agentctl"))
            .args(["--url", url, "--json", "worker", "--queue", queue])
            .args(["--wait-ms", "500", "--persistent"])
            .args(extra)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("worker-{queue}.stdout"))).unwrap())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start agentctl worker");
        PersistentWorker {
            child: Some(child),
            stderr_path,
        }
    }

    /// The example actor as the command.
    fn start_example(url: &str, dir: &Path, queue: &str, extra: &[&str]) -> Self {
        let actor = example_actor();
        PersistentWorker::start(
            url,
            dir,
            queue,
            extra,
            &["python3", actor.to_str().unwrap()],
        )
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Actor pids the worker printed as started, in order.
    fn actor_pids(&self) -> Vec<i32> {
        started_pids(&self.stderr())
    }

    async fn wait_for_stderr(&self, text: &str) {
        eventually(WAIT, text, || {
            let found = self.stderr().contains(text);
            async move { found.then_some(()) }
        })
        .await;
    }

    /// `http://127.0.0.1:PORT/metrics`, once the worker printed where it listens.
    async fn metrics_url(&self) -> String {
        eventually(WAIT, "the worker to print its metrics address", || {
            let url = self.stderr().lines().find_map(|line| {
                line.split("metrics on ")
                    .nth(1)
                    .map(|rest| rest.trim().to_string())
            });
            async move { url }
        })
        .await
    }

    /// The value of one sample line (`name{labels}`) of the worker's `/metrics`, once `wanted`
    /// accepts it.
    async fn metric_reaches(&self, sample: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        let url = self.metrics_url().await;
        let wanted = &wanted;
        eventually(WAIT, sample, || {
            let url = url.clone();
            async move {
                let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
                sample_value(&text, sample).filter(|value| wanted(*value))
            }
        })
        .await
    }

    /// SIGTERM: the worker stops leasing and drains.
    fn request_stop(&self) {
        let worker = self.child.as_ref().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// SIGTERM, and the exit status once the worker is gone.
    async fn terminate(&mut self) -> ExitStatus {
        self.request_stop();
        self.wait_for_exit().await
    }

    /// The exit status, once the worker exited (asked to or not).
    async fn wait_for_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not stop: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PersistentWorker {
    fn drop(&mut self) {
        if let Some(mut worker) = self.child.take() {
            let _already_gone = worker.kill();
            let _reaped = worker.wait();
        }
        for pid in self.actor_pids() {
            let _already_gone = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Pids of `actor of slot N: started (pid P)` lines.
fn started_pids(stderr: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter(|line| line.contains(": started (pid "))
        .filter_map(|line| line.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect()
}

/// The value of the sample line `sample` (name and labels exactly) in a text exposition.
fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

async fn submit(
    client: &agentd_client::Client,
    queue: &str,
    payload: Value,
    max_attempts: u32,
) -> JobId {
    client
        .submit(&SubmitJobRequest {
            queue: queue.into(),
            kind: "episode".into(),
            payload,
            max_attempts: Some(max_attempts),
            lease_ttl_ms: Some(1500),
            ..Default::default()
        })
        .await
        .unwrap()
        .job_id
}

async fn wait_for_state(
    client: &agentd_client::Client,
    job: JobId,
    state: JobStateName,
) -> JobView {
    eventually(WAIT, &format!("{job} to be {state:?}"), || async {
        client
            .job(job)
            .await
            .ok()
            .filter(|view| view.state == state)
    })
    .await
}

/// The pid an actor wrote into `path` when it started a job.
async fn marked_pid(path: &Path) -> i32 {
    eventually(WAIT, "the actor to start the job", || async {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    })
    .await
}

fn completions(view: &JobView) -> usize {
    view.history
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|entry| entry.event == "job_completed")
        .count()
}

#[tokio::test]
async fn one_actor_per_slot_handles_many_jobs_and_the_metrics_count_them() {
    const JOBS: usize = 12;
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let log_dir = dir.path().join("job-logs");
    let mut jobs = Vec::new();
    for n in 0..JOBS {
        jobs.push(submit(&client, "many", json!({"prompt": format!("step {n}")}), 1).await);
    }
    let mut worker = PersistentWorker::start_example(
        &daemon.url,
        dir.path(),
        "many",
        &[
            "--concurrency",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-dir",
            log_dir.to_str().unwrap(),
        ],
    );
    let mut handled_by_pid: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (n, job) in jobs.iter().enumerate() {
        let view = wait_for_state(&client, *job, JobStateName::Completed).await;
        assert_eq!(completions(&view), 1, "{job}: {view:?}");
        let result = view.result.clone().unwrap();
        assert_eq!(result["loads"], 1, "the model was loaded again: {result}");
        assert_eq!(result["job_id"], job.to_string(), "{result}");
        assert_eq!(
            result["completion"],
            format!("STEP {n} -- answered by the stub model")
        );
        handled_by_pid
            .entry(result["pid"].as_i64().unwrap())
            .or_default()
            .push(result["handled"].as_i64().unwrap());
        // What the actor printed for this job (stderr, and a stray print on stdout) is in the
        // job's log and its tail, and nothing of another job is.
        let tail = view.log_tail.clone().unwrap_or_default();
        assert!(
            tail.contains(&format!("handling {job} "))
                && tail.contains(&format!("done with {job}\n")),
            "{job}: {tail}"
        );
        assert_eq!(tail.matches("handling job_").count(), 1, "{tail}");
        let file = std::fs::read_to_string(log_dir.join(format!("{job}.log"))).unwrap();
        assert!(file.starts_with("== attempt 1, lease "), "{file}");
        assert!(
            file.trim_end().ends_with("== attempt 1 completed"),
            "{file}"
        );
    }
    // Two processes did all the work, each counting its jobs 1, 2, 3, ...
    let started = worker.actor_pids();
    assert_eq!(started.len(), 2, "{}", worker.stderr());
    let pids: BTreeSet<i64> = handled_by_pid.keys().copied().collect();
    assert!(
        pids.iter().all(|pid| started.contains(&(*pid as i32))),
        "{pids:?} vs {started:?}"
    );
    for (pid, mut handled) in handled_by_pid {
        handled.sort();
        let expected: Vec<i64> = (1..=handled.len() as i64).collect();
        assert_eq!(handled, expected, "pid {pid}");
    }

    for (sample, value) in [
        (
            "agentd_worker_jobs_completed_total{queue=\"many\"}",
            JOBS as f64,
        ),
        ("agentd_worker_jobs_running{queue=\"many\"}", 0.0),
        ("agentd_worker_jobs_failed_total{queue=\"many\"}", 0.0),
        ("agentd_worker_slots", 2.0),
        ("agentd_worker_actors", 2.0),
        ("agentd_worker_actors_ready", 2.0),
        ("agentd_worker_actor_restarts_total", 0.0),
    ] {
        worker.metric_reaches(sample, |seen| seen == value).await;
    }

    let status = worker.terminate().await;
    assert!(status.success(), "{}", worker.stderr());
    for pid in started {
        assert!(!is_running(pid), "actor {pid} outlived the worker");
    }
    // The actors saw their stdin close and exited on their own.
    let lane_log = std::fs::read_to_string(log_dir.join("actor-slot0.log")).unwrap();
    assert!(lane_log.contains("loading the stub model"), "{lane_log}");
    assert!(lane_log.contains("stdin closed after"), "{lane_log}");
    assert!(
        lane_log.contains("stopped (exited (exit status: 0))"),
        "{lane_log}"
    );
}

#[tokio::test]
async fn a_cancelled_lease_is_answered_and_an_actor_that_ignores_it_is_replaced() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let log_dir = dir.path().join("job-logs");
    let worker = PersistentWorker::start_example(
        &daemon.url,
        dir.path(),
        "cancel",
        &[
            "--persistent-cancel-grace",
            "1s",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-dir",
            log_dir.to_str().unwrap(),
        ],
    );

    // A job that works until cancelled: the cancel reaches it, the actor answers and lives on.
    let marker = dir.path().join("first.pid");
    let never = dir.path().join("never");
    let first = submit(
        &client,
        "cancel",
        json!({"mark": marker, "wait_for_file": never}),
        1,
    )
    .await;
    let actor = marked_pid(&marker).await;
    client.cancel(first).await.unwrap();
    let log = log_dir.join(format!("{first}.log"));
    eventually(WAIT, "the cancelled job's log to end", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("== attempt 1 stopped").then_some(()) }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("{first} cancelled (lease_lost); stopping")),
        "{text}"
    );
    let second = submit(&client, "cancel", json!({"prompt": "still there?"}), 1).await;
    let view = wait_for_state(&client, second, JobStateName::Completed).await;
    assert_eq!(view.result.unwrap()["pid"], actor, "the actor was replaced");

    // A job that ignores its cancel: the actor is killed after the grace period and replaced.
    let marker = dir.path().join("third.pid");
    let third = submit(
        &client,
        "cancel",
        json!({"mark": marker, "ignore_cancel": 600}),
        1,
    )
    .await;
    assert_eq!(marked_pid(&marker).await, actor);
    client.cancel(third).await.unwrap();
    worker
        .wait_for_stderr(&format!("did not answer the cancel of {third}"))
        .await;
    eventually(WAIT, "the stubborn actor to be killed", || async {
        (!is_running(actor)).then_some(())
    })
    .await;
    let fourth = submit(&client, "cancel", json!({"prompt": "new process"}), 1).await;
    let view = wait_for_state(&client, fourth, JobStateName::Completed).await;
    let result = view.result.unwrap();
    assert_ne!(result["pid"], actor, "{result}");
    assert_eq!(result["loads"], 1, "{result}");
    assert_eq!(worker.actor_pids().len(), 2, "{}", worker.stderr());

    for (sample, value) in [
        ("agentd_worker_leases_lost_total{queue=\"cancel\"}", 2.0),
        ("agentd_worker_jobs_completed_total{queue=\"cancel\"}", 2.0),
        ("agentd_worker_actor_restarts_total", 1.0),
        ("agentd_worker_actor_cancel_kills_total", 1.0),
        ("agentd_worker_actors_ready", 1.0),
    ] {
        worker.metric_reaches(sample, |seen| seen == value).await;
    }
    // Each lost lease was heard as a failed heartbeat.
    worker
        .metric_reaches("agentd_worker_heartbeat_failures_total", |seen| seen >= 2.0)
        .await;
}

#[tokio::test]
async fn a_dead_actor_is_restarted_and_its_job_retried_exactly_once() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let log_dir = dir.path().join("job-logs");
    let crashing = submit(
        &client,
        "crash",
        json!({"exit_on_attempt": 1, "prompt": "again"}),
        3,
    )
    .await;
    let after = submit(&client, "crash", json!({"prompt": "next"}), 1).await;
    let worker = PersistentWorker::start_example(
        &daemon.url,
        dir.path(),
        "crash",
        &["--log-dir", log_dir.to_str().unwrap()],
    );
    let view = wait_for_state(&client, crashing, JobStateName::Completed).await;
    let after_view = wait_for_state(&client, after, JobStateName::Completed).await;
    assert_eq!(view.attempt, 2, "{view:?}");
    assert_eq!(completions(&view), 1, "{view:?}");
    assert_eq!(completions(&after_view), 1, "{after_view:?}");
    let history = view.history.clone().unwrap();
    let failure = history
        .iter()
        .find(|entry| entry.event == "job_failed")
        .unwrap_or_else(|| panic!("{history:?}"));
    assert_eq!(failure.retryable, Some(true), "{failure:?}");
    let error = failure.error.clone().unwrap_or_default();
    assert!(
        error.contains("died while running the job")
            && error.contains("exit status: 3")
            && error.contains("crashing on purpose"),
        "{error}"
    );
    let pids = worker.actor_pids();
    assert_eq!(pids.len(), 2, "{}", worker.stderr());
    assert_eq!(view.result.unwrap()["pid"], pids[1]);
    assert_eq!(after_view.result.unwrap()["pid"], pids[1]);
    assert!(
        worker
            .stderr()
            .contains("actor of slot 0: the actor exited"),
        "{}",
        worker.stderr()
    );
    // Both attempts are in the job's log, each with how it ended.
    let file = std::fs::read_to_string(log_dir.join(format!("{crashing}.log"))).unwrap();
    assert!(file.contains("crashing on purpose"), "{file}");
    assert!(file.contains("== attempt 1 failed (retryable)"), "{file}");
    assert!(
        file.trim_end().ends_with("== attempt 2 completed"),
        "{file}"
    );
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_then_closes_the_actors_stdin() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let log_dir = dir.path().join("job-logs");
    let marker = dir.path().join("running.pid");
    let release = dir.path().join("release");
    let running = submit(
        &client,
        "drain",
        json!({"mark": marker, "wait_for_file": release}),
        1,
    )
    .await;
    let mut worker = PersistentWorker::start_example(
        &daemon.url,
        dir.path(),
        "drain",
        &[
            "--drain-timeout-s",
            "60",
            "--log-dir",
            log_dir.to_str().unwrap(),
        ],
    );
    let actor = marked_pid(&marker).await;
    let queued = submit(&client, "drain", json!({"prompt": "later"}), 1).await;
    worker.request_stop();
    worker.wait_for_stderr("stop requested").await;
    std::fs::write(&release, "").unwrap();
    let status = worker.wait_for_exit().await;
    assert!(status.success(), "{}", worker.stderr());

    let view = client.job(running).await.unwrap();
    assert_eq!(view.state, JobStateName::Completed, "{view:?}");
    assert_eq!(view.result.unwrap()["pid"], actor);
    let view = client.job(queued).await.unwrap();
    assert_eq!(view.state, JobStateName::Queued, "{view:?}");
    assert_eq!(view.attempt, 0, "{view:?}");
    assert!(!is_running(actor), "the actor outlived the worker");
    let lane_log = std::fs::read_to_string(log_dir.join("actor-slot0.log")).unwrap();
    assert!(
        lane_log.contains(&format!("stdin closed after 1 job(s) in pid {actor}")),
        "{lane_log}"
    );
}

#[tokio::test]
async fn a_command_that_does_not_speak_the_protocol_stops_the_worker_before_it_leases() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let job = submit(&client, "mute", json!({}), 1).await;
    for (command, expected) in [
        (
            // Prints a banner and then waits on its stdin, as a per-job command would.
            vec![
                "sh",
                "-c",
                "echo 'Loading checkpoint shards: 100%'; exec cat",
            ],
            vec![
                "does not speak the persistent-actor protocol",
                "Loading checkpoint shards: 100%",
                r#"{"type":"hello","protocol":1}"#,
            ],
        ),
        (
            vec!["python3", "-c", "import sys; sys.exit('no model here')"],
            vec![
                "exited (exit status: 1) before it said hello",
                "no model here",
            ],
        ),
    ] {
        let mut worker = PersistentWorker::start(
            &daemon.url,
            dir.path(),
            "mute",
            &["--persistent-ready-timeout", "60s"],
            &command,
        );
        let status = worker.wait_for_exit().await;
        let stderr = worker.stderr();
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains("agentctl: --persistent: the actor of slot 0 did not start"),
            "{stderr}"
        );
        for text in expected {
            assert!(stderr.contains(text), "{text:?} missing from {stderr}");
        }
        for pid in worker.actor_pids() {
            assert!(!is_running(pid), "{command:?} outlived the worker");
        }
    }
    let view = client.job(job).await.unwrap();
    assert_eq!(
        (view.state, view.attempt),
        (JobStateName::Queued, 0),
        "{view:?}"
    );
}
