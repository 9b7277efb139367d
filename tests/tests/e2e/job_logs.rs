//! Logs kept: `agentctl worker --log-dir` writes each job's stdout and stderr to
//! `<dir>/<job_id>.log`, the completion carries the output's tail (the job's `log_tail`), and
//! `agentctl jobs logs` prints the file on the worker's box or the daemon's tail elsewhere.

use super::fast_daemon;
use agentd_client::http_client::JobListQuery;
use agentd_schemas::api::{CompleteItem, JobStateName, LeaseRequest, SubmitJobRequest};
use agentd_schemas::Lsn;
use agentd_tests::{agentctl, agentctl_text, path_text};
use serde_json::json;

fn submit(queue: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.into(),
        kind: "shell".into(),
        payload: json!({"word": "hello"}),
        max_attempts: Some(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_successful_jobs_output_is_kept_in_its_file_and_its_tail_in_the_daemon() {
    let (dir, daemon) = fast_daemon();
    let client = daemon.client();
    let job_id = client.submit(&submit("logged")).await.unwrap().job_id;
    let log_dir = dir.path().join("job-logs");
    // Output on both streams, around the JSON result on stdout.
    let script = r#"cat >/dev/null; echo "warming up on stderr" >&2; echo '{"ok": true}'; echo "done on stderr" >&2"#;
    agentctl_text(
        &daemon.url,
        &[
            "worker",
            "--queue",
            "logged",
            "--max-jobs",
            "1",
            "--wait-ms",
            "1000",
            "--log-dir",
            path_text(&log_dir),
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    .ok();

    let view = client.job(job_id).await.unwrap();
    assert_eq!(view.state, JobStateName::Completed);
    assert_eq!(view.result, Some(json!({"ok": true})));

    let path = log_dir.join(format!("{job_id}.log"));
    let file = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let lines: Vec<&str> = file.lines().collect();
    assert!(
        lines[0].starts_with("== attempt 1, lease lease_") && lines[0].contains(", worker "),
        "{file}"
    );
    for expected in ["warming up on stderr", r#"{"ok": true}"#, "done on stderr"] {
        assert!(
            lines.contains(&expected),
            "{expected:?} missing from\n{file}"
        );
    }
    assert_eq!(lines.last(), Some(&"== attempt 1 completed"), "{file}");

    // The whole output is small, so the tail is the attempt's whole log.
    assert_eq!(view.log_tail.as_deref(), Some(file.as_str()));
    // Lists leave the tail out, like the history.
    let page = client.jobs(&JobListQuery::default()).await.unwrap();
    assert!(page.jobs.iter().all(|job| job.log_tail.is_none()));

    // On the worker's box: the file.
    let log_dir_text = log_dir.to_str().unwrap();
    let job_text = job_id.to_string();
    let from_file = agentctl(
        &daemon.url,
        &["jobs", "logs", &job_text, "--log-dir", log_dir_text],
    );
    assert!(from_file.status.success(), "{from_file:?}");
    assert_eq!(String::from_utf8_lossy(&from_file.stdout), file);
    let said = String::from_utf8_lossy(&from_file.stderr);
    assert!(said.contains("log file"), "{said}");

    // Elsewhere: the daemon's tail.
    let elsewhere = dir.path().join("another-box");
    let from_daemon = agentctl(
        &daemon.url,
        &[
            "jobs",
            "logs",
            &job_text,
            "--log-dir",
            elsewhere.to_str().unwrap(),
        ],
    );
    assert!(from_daemon.status.success(), "{from_daemon:?}");
    assert_eq!(String::from_utf8_lossy(&from_daemon.stdout), file);
    let said = String::from_utf8_lossy(&from_daemon.stderr);
    assert!(said.contains("daemon recorded"), "{said}");

    // Neither: a job that has not run yet.
    let waiting = client
        .submit(&submit("nobody-leases"))
        .await
        .unwrap()
        .job_id;
    let nothing = agentctl(
        &daemon.url,
        &[
            "jobs",
            "logs",
            &waiting.to_string(),
            "--log-dir",
            elsewhere.to_str().unwrap(),
        ],
    );
    assert!(!nothing.status.success());
    let said = String::from_utf8_lossy(&nothing.stderr);
    assert!(
        said.contains(&format!("no log for {waiting}")) && said.contains("no attempt has ended"),
        "{said}"
    );
}

#[tokio::test]
async fn the_daemon_records_a_tail_of_at_most_8_kib_per_completion_or_failure() {
    let (_dir, daemon) = fast_daemon();
    let client = daemon.client();
    for _ in 0..4 {
        client.submit(&submit("tails")).await.unwrap();
    }
    let leases = client
        .lease(&LeaseRequest {
            worker_id: "hand".into(),
            queues: vec!["tails".into()],
            max_jobs: Some(4),
            ..Default::default()
        })
        .await
        .unwrap()
        .leases;
    assert_eq!(leases.len(), 4);

    // One byte over: refused, and the lease is still held.
    let too_long = "x".repeat(8 * 1024 + 1);
    let error = client
        .complete_with_log_tail(leases[0].lease_id, None, Some(too_long.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("string_too_long"), "{error}");
    assert!(error.to_string().contains("log_tail"), "{error}");
    let error = client
        .fail_with_log_tail(leases[0].lease_id, "boom", false, Some(too_long))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("string_too_long"), "{error}");
    assert_eq!(
        client.job(leases[0].job_id).await.unwrap().state,
        JobStateName::Leased
    );

    // Exactly 8 KiB (multi-byte characters count in bytes): recorded as sent.
    let exact = "é".repeat(4 * 1024);
    client
        .complete_with_log_tail(leases[0].lease_id, None, Some(exact.clone()))
        .await
        .unwrap();
    assert_eq!(
        client.job(leases[0].job_id).await.unwrap().log_tail,
        Some(exact)
    );

    // A failure carries its tail too.
    client
        .fail_with_log_tail(
            leases[1].lease_id,
            "exit status 1",
            false,
            Some("Traceback: boom\n".into()),
        )
        .await
        .unwrap();
    let failed = client.job(leases[1].job_id).await.unwrap();
    assert_eq!(failed.state, JobStateName::Dead);
    assert_eq!(failed.log_tail.as_deref(), Some("Traceback: boom\n"));

    // Batched completions: each item carries its own tail; an over-long one fails alone.
    let answer = client
        .complete_many(vec![
            CompleteItem {
                lease_id: leases[2].lease_id,
                result: None,
                log_tail: Some("batched tail\n".into()),
            },
            CompleteItem {
                lease_id: leases[3].lease_id,
                result: None,
                log_tail: Some("y".repeat(8 * 1024 + 1)),
            },
        ])
        .await
        .unwrap();
    assert!(answer.results[0].error.is_none(), "{answer:?}");
    assert_eq!(
        answer.results[1]
            .error
            .as_ref()
            .map(|error| error.code.as_str()),
        Some("string_too_long")
    );
    assert_eq!(
        client
            .job(leases[2].job_id)
            .await
            .unwrap()
            .log_tail
            .as_deref(),
        Some("batched tail\n")
    );
    let refused = client.job(leases[3].job_id).await.unwrap();
    assert_eq!(refused.state, JobStateName::Leased);
    assert_eq!(refused.log_tail, None);

    // The events record the tail (a replay shows it again), and it survives a restart.
    let events = client.events(Lsn(0), 1000, 0).await.unwrap().events;
    let tails: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|event| Some((event["type"].as_str()?, event.get("log_tail")?.as_str()?)))
        .collect();
    assert_eq!(
        tails
            .iter()
            .map(|(kind, tail)| (*kind, tail.len()))
            .collect::<Vec<_>>(),
        [
            ("job_completed", 8 * 1024),
            ("job_failed", 16),
            ("job_completed", 13)
        ]
    );
    let mut daemon = daemon;
    daemon.restart();
    let client = daemon.client();
    assert_eq!(
        client
            .job(leases[2].job_id)
            .await
            .unwrap()
            .log_tail
            .as_deref(),
        Some("batched tail\n")
    );
}
