//! SIGKILL the daemon repeatedly under concurrent submit/lease/complete load. After every
//! restart each acknowledged submission and completion is present exactly once, LSNs are
//! contiguous, and at the end the live projection equals a fresh rebuild.
//! `AGENTD_CRASH_CYCLES` sets the number of kills (default 20).

use agentd_client::Client;
use agentd_schemas::api::{JobStateName, LeaseRequest, SubmitJobRequest};
use agentd_schemas::{JobId, LeaseId, Lsn};
use agentd_tests::{digest, rebuild, write_config, Daemon};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Acknowledged {
    submitted: HashSet<JobId>,
    completed: HashMap<JobId, LeaseId>,
}

async fn load(client: Client, acked: Arc<Mutex<Acknowledged>>, seed: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for submitter in 0..3u64 {
        let client = client.clone();
        let acked = acked.clone();
        tasks.spawn(async move {
            for n in 0u64.. {
                let job = SubmitJobRequest {
                    queue: "crash".into(),
                    kind: "k".into(),
                    payload: serde_json::json!({"seed": seed, "submitter": submitter, "n": n}),
                    lease_ttl_ms: Some(1500),
                    max_attempts: Some(100),
                    ..Default::default()
                };
                let outcome = if n % 5 == 0 {
                    client
                        .submit_batch(vec![job.clone(), job])
                        .await
                        .map(|answer| answer.jobs)
                } else {
                    client.submit(&job).await.map(|answer| vec![answer])
                };
                match outcome {
                    Ok(answers) => acked
                        .lock()
                        .unwrap()
                        .submitted
                        .extend(answers.into_iter().map(|answer| answer.job_id)),
                    Err(_) => return,
                }
            }
        });
    }
    for worker in 0..2 {
        let client = client.clone();
        let acked = acked.clone();
        tasks.spawn(async move {
            let request = LeaseRequest {
                worker_id: format!("w{worker}"),
                queues: vec!["crash".into()],
                tags: None,
                max_jobs: Some(10),
                wait_ms: Some(100),
            };
            loop {
                let Ok(response) = client.lease(&request).await else {
                    return;
                };
                for lease in response.leases {
                    match client.complete(lease.lease_id, None).await {
                        Ok(_) => {
                            let previous = acked
                                .lock()
                                .unwrap()
                                .completed
                                .insert(lease.job_id, lease.lease_id);
                            assert!(
                                previous.is_none(),
                                "{} was acknowledged as completed twice",
                                lease.job_id
                            );
                        }
                        Err(error) if error.code() == Some("lease_lost") => {}
                        Err(_) => return,
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn verify(client: &Client, acked: &Acknowledged) {
    // Every event of the log, in order: LSNs contiguous, each submission exactly once.
    let mut after = Lsn(0);
    let mut expected_lsn = 1;
    let mut submissions: HashMap<String, u32> = HashMap::new();
    let mut completions: HashMap<String, Vec<String>> = HashMap::new();
    loop {
        let page = client.events(after, 10_000, 0).await.unwrap();
        for event in &page.events {
            let lsn = event["lsn"].as_u64().unwrap();
            assert!(
                lsn == expected_lsn || lsn + 1 == expected_lsn,
                "lsn gap: {lsn} after {}",
                expected_lsn - 1
            );
            expected_lsn = lsn + 1;
            let job = event["job_id"].as_str().unwrap_or_default().to_string();
            match event["type"].as_str().unwrap() {
                "job_submitted" => *submissions.entry(job).or_default() += 1,
                "job_completed" => completions
                    .entry(job)
                    .or_default()
                    .push(event["lease_id"].as_str().unwrap().to_string()),
                _ => {}
            }
        }
        if page.next_after == after {
            break;
        }
        after = page.next_after;
    }
    for job_id in &acked.submitted {
        assert_eq!(
            submissions.get(&job_id.to_string()),
            Some(&1),
            "acknowledged submission {job_id} must be in the log exactly once"
        );
    }
    for (job_id, lease_id) in &acked.completed {
        assert_eq!(
            completions.get(&job_id.to_string()),
            Some(&vec![lease_id.to_string()]),
            "acknowledged completion of {job_id} must be in the log exactly once"
        );
        assert_eq!(
            client.job(*job_id).await.unwrap().state,
            JobStateName::Completed
        );
    }
    for (job_id, leases) in &completions {
        assert_eq!(
            leases.len(),
            1,
            "{job_id} completed by two leases: {leases:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("AGENTD_CRASH_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[queue]\nretry_backoff_base_ms = 10\nretry_backoff_max_ms = 100\n[log]\nsnapshot_every_records = 200\n",
    );
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    for cycle in 0..cycles {
        let client = daemon.client();
        let load_task = tokio::spawn(load(client.clone(), acked.clone(), cycle as u64));
        let run_ms = rand::rng().random_range(50..300);
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        daemon.kill9();
        load_task.await.unwrap();
        daemon = Daemon::start(&data_dir, Some(&config));
        let client = daemon.client();
        let snapshot = {
            let guard = acked.lock().unwrap();
            Acknowledged {
                submitted: guard.submitted.clone(),
                completed: guard.completed.clone(),
            }
        };
        verify(&client, &snapshot).await;
    }
    let (submitted, completed) = {
        let acked = acked.lock().unwrap();
        (acked.submitted.len(), acked.completed.len())
    };
    eprintln!("crash test: {cycles} SIGKILLs, {submitted} acknowledged submissions, {completed} acknowledged completions, lost 0");
    // The live projection (built incrementally across every crash) equals a fresh rebuild.
    let live = digest(&daemon.url).await;
    assert_eq!(daemon.stop(), Some(0));
    let rebuilt = rebuild(&data_dir, None, &dir.path().join("rebuilt"));
    assert_eq!(live.projections.jobs, rebuilt.projections.jobs);
    assert_eq!(live.projections.queue, rebuilt.projections.queue);
    assert_eq!(live.lsn, rebuilt.lsn);
}
