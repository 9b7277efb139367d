//! `agentctl worker --complete-batch-max`: completions that come while a call is in flight go
//! together in one `POST /v1/leases/complete`, and every job is still completed exactly once,
//! with its own result.

use super::fast_daemon;
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_schemas::{JobId, Lsn};
use agentd_tests::{binary, eventually};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Slots of the worker, and jobs per round: every round fills every slot.
const SLOTS: usize = 8;
/// Rounds of jobs; each round's jobs finish together, when the test releases the round.
const ROUNDS: usize = 3;

/// Kills the worker if the test fails before it exits, so no process outlives the test.
struct WorkerProcess(Option<Child>);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _already_exited = child.kill();
            let _reaped = child.wait();
        }
    }
}

/// The command of every job: says it arrived (`arrived-<round>-<job>`), waits until the test
/// releases its round (a shared lock on `go-<round>`, which the test holds exclusively until
/// every slot's job of the round arrived), then answers `{"job": <its id>}`. The rounds make
/// the slots' completions come at once, several times, without any timing in the test.
fn barrier_command(dir: &Path) -> Vec<String> {
    let dir = dir.display();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "round=$(sed -n 's/.*\"round\":\\([0-9]*\\).*/\\1/p'); \
             touch '{dir}'/arrived-$round-$AGENTD_JOB_ID; \
             flock -s '{dir}'/go-$round true; \
             echo \"{{\\\"job\\\": \\\"$AGENTD_JOB_ID\\\"}}\""
        ),
    ]
}

fn arrived(dir: &Path, round: usize) -> usize {
    std::fs::read_dir(dir)
        .expect("barrier dir")
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("arrived-{round}-"))
        })
        .count()
}

#[tokio::test]
async fn a_worker_with_complete_batch_max_completes_every_job_once_in_fewer_records() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let barrier = dir.path().join("barrier");
    std::fs::create_dir(&barrier).unwrap();
    // Held until each round's jobs all arrived; dropping a file releases its lock.
    let mut round_locks: Vec<Option<File>> = (0..ROUNDS)
        .map(|round| {
            let file = File::create(barrier.join(format!("go-{round}"))).unwrap();
            file.lock().unwrap();
            Some(file)
        })
        .collect();
    let mut jobs = Vec::new();
    for round in 0..ROUNDS {
        for _ in 0..SLOTS {
            let submitted = client
                .submit(&SubmitJobRequest {
                    queue: "batched".into(),
                    kind: "shell".into(),
                    payload: json!({ "round": round }),
                    max_attempts: Some(1),
                    ..Default::default()
                })
                .await
                .unwrap();
            jobs.push(submitted.job_id);
        }
    }
    let total = (SLOTS * ROUNDS).to_string();
    let slots = SLOTS.to_string();
    let mut worker = WorkerProcess(Some(
        Command::new(binary("agentctl"))
            .args([
                "--url",
                &daemon.url,
                "--json",
                "worker",
                "--queue",
                "batched",
            ])
            .args(["--concurrency", &slots, "--complete-batch-max", &slots])
            .args(["--max-jobs", &total, "--wait-ms", "500", "--"])
            .args(barrier_command(&barrier))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agentctl worker"),
    ));
    for (round, lock) in round_locks.iter_mut().enumerate() {
        eventually(
            Duration::from_secs(30),
            "every slot's job of the round to arrive",
            || async { (arrived(&barrier, round) == SLOTS).then_some(()) },
        )
        .await;
        drop(lock.take());
    }
    let output = worker.0.take().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "worker failed: {stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (&summary["completed"], &summary["failed"], &summary["lost"]),
        (&json!(SLOTS * ROUNDS), &json!(0), &json!(0)),
        "{stderr}"
    );
    for job_id in &jobs {
        let view = client.job(*job_id).await.unwrap();
        assert_eq!(view.state, JobStateName::Completed, "{job_id}");
        assert_eq!(view.attempt, 1, "{job_id}");
        assert_eq!(view.result, Some(json!({ "job": job_id.to_string() })));
    }
    let completions = completion_records(&client, &jobs).await;
    let completed: Vec<JobId> = completions.values().flatten().copied().collect();
    assert_eq!(completed.len(), jobs.len(), "one completion per job");
    assert_eq!(completed.iter().collect::<HashSet<_>>().len(), jobs.len());
    // Only `POST /v1/leases/complete` puts several completions in one record.
    assert!(
        completions.len() < jobs.len(),
        "no completion was batched: {completions:?}"
    );
}

/// The `job_completed` events of `jobs`, by the record (LSN) holding them.
async fn completion_records(
    client: &agentd_client::Client,
    jobs: &[JobId],
) -> BTreeMap<Lsn, Vec<JobId>> {
    let wanted: HashSet<String> = jobs.iter().map(ToString::to_string).collect();
    let mut records: BTreeMap<Lsn, Vec<JobId>> = BTreeMap::new();
    let mut after = Lsn(0);
    loop {
        let page = client.events(after, 1000, 0).await.unwrap();
        if page.events.is_empty() {
            return records;
        }
        for event in &page.events {
            let job = event["job_id"].as_str().unwrap_or_default();
            if event["type"] == "job_completed" && wanted.contains(job) {
                let lsn = Lsn(event["lsn"].as_u64().unwrap());
                records.entry(lsn).or_default().push(job.parse().unwrap());
            }
        }
        after = page.next_after;
    }
}
