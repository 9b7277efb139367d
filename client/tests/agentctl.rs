//! The real `agentctl` binary against small stand-ins for the daemon on `127.0.0.1:0`: what a
//! user sees when it cannot reach the daemon (each cause once, and a hint), the environment a
//! worker gives a job's command, `events tail --limit`, `submit --rollouts` (one batch of jobs
//! sharing a group) and the rollout views (`rollouts list|show`, `groups show`).
//!
//! The client crate must not depend on the daemon, so these tests answer the few routes they
//! need themselves, in the shapes `agentd-schemas` defines (the end-to-end tests in `tests/` run
//! the real daemon).

use agentd_schemas::api::{EventsResponse, LeaseGrant, LeaseResponse, LeasedJob};
use agentd_schemas::{JobId, LeaseId, Lsn};
use std::collections::BTreeMap;
use std::f64::consts::FRAC_1_SQRT_2;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");

// ---------------------------------------------------------------------------------------------
// Unreachable daemons: each cause once, and a hint.

#[test]
fn connection_refused_names_each_cause_once_and_hints_the_daemon_is_not_running() {
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let output = agentctl(&["--url", &url, "jobs", "list"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_causes_distinct(&stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        stderr.contains(&format!("hint: agentd may not be running at {url}")),
        "{stderr}"
    );
}

#[test]
fn an_untrusted_certificate_hints_ca_cert_and_plain_http_to_tls_hints_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let server = FakeDaemon::start(Some(&pki), |request| {
        assert_eq!(request.path, "/v1/queues");
        (200, r#"{"queues": []}"#.to_string())
    });
    let https = format!("https://127.0.0.1:{}", server.port);

    let output = agentctl(&["--url", &https, "queues", "list"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_causes_distinct(&stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        stderr.contains(
            "hint: the server's certificate is not trusted; pass --ca-cert FILE (the CA that signed it)"
        ),
        "{stderr}"
    );

    // Following the hint works.
    let ca = pki.ca_cert.to_str().unwrap();
    let output = agentctl(&["--url", &https, "--ca-cert", ca, "queues", "list"], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("QUEUE "));

    // A CA that did not sign it: the hint says so instead of "pass --ca-cert".
    let leaf = pki.server_cert.to_str().unwrap();
    let output = agentctl(
        &["--url", &https, "--ca-cert", leaf, "queues", "list"],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hint: the server's certificate is not signed by the --ca-cert CA"),
        "{stderr}"
    );

    let http = format!("http://127.0.0.1:{}", server.port);
    let output = agentctl(&["--url", &http, "queues", "list"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_causes_distinct(&stderr);
    assert!(
        stderr.contains(&format!(
            "hint: is the daemon serving TLS? use https://127.0.0.1:{}",
            server.port
        )),
        "{stderr}"
    );
}

#[test]
fn a_ca_cert_file_without_a_certificate_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let output = agentctl(
        &[
            "--url",
            "https://127.0.0.1:9",
            "--ca-cert",
            not_pem.to_str().unwrap(),
            "queues",
            "list",
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    assert!(stderr.contains(not_pem.to_str().unwrap()), "{stderr}");
}

/// The message before the hint, split on ": ", must not say anything twice.
fn assert_causes_distinct(stderr: &str) {
    let message = stderr.lines().next().unwrap_or_default();
    assert!(
        message.starts_with("agentctl: cannot reach agentd at "),
        "{stderr}"
    );
    let parts: Vec<&str> = message.split(": ").collect();
    for (index, part) in parts.iter().enumerate() {
        assert!(
            !parts[..index].contains(part),
            "{part:?} is repeated in {message:?}"
        );
    }
    assert_eq!(
        message.matches("error sending request").count(),
        1,
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// The worker passes how it reaches the daemon on to the job.

#[test]
fn a_job_command_gets_the_url_token_and_ca_cert_of_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let leased = Arc::new(AtomicBool::new(false));
    let server = FakeDaemon::start(None, {
        let leased = leased.clone();
        move |request| match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/v1/leases") => {
                let leases = if leased.swap(true, Ordering::SeqCst) {
                    Vec::new()
                } else {
                    vec![grant()]
                };
                (
                    200,
                    serde_json::to_string(&LeaseResponse { leases }).unwrap(),
                )
            }
            ("POST", "/v1/leases/lease_7/complete") => {
                (200, r#"{"job_id": "job_1", "lsn": 3}"#.to_string())
            }
            ("POST", "/v1/leases/lease_7/heartbeat") => {
                (200, r#"{"expires_at_ms": 1}"#.to_string())
            }
            _ => (
                404,
                r#"{"code": "not_found", "message": "no route"}"#.to_string(),
            ),
        }
    });
    let url = format!("http://127.0.0.1:{}", server.port);
    let script = r#"printf '{"url":"%s","token":"%s","ca_cert":"%s","job":"%s"}' "$AGENTD_URL" "$AGENTD_TOKEN" "$AGENTD_CA_CERT" "$AGENTD_JOB_ID""#;
    // A relative --ca-cert: the job gets it absolute (it may run in another directory).
    std::fs::copy(&pki.ca_cert, dir.path().join("relative-ca.pem")).unwrap();
    let output = agentctl(
        &[
            "--url",
            &url,
            "--token",
            "secret-token",
            "--ca-cert",
            "relative-ca.pem",
            "worker",
            "--queue",
            "q",
            "--max-jobs",
            "1",
            "--wait-ms",
            "100",
            "--",
            "sh",
            "-c",
            script,
        ],
        Some(dir.path()),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = server.requests();
    let lease = requests.iter().find(|r| r.path == "/v1/leases").unwrap();
    assert_eq!(
        lease.headers.get("authorization").map(String::as_str),
        Some("Bearer secret-token")
    );
    let complete = requests
        .iter()
        .find(|r| r.path == "/v1/leases/lease_7/complete")
        .expect("the job was completed");
    let body: serde_json::Value = serde_json::from_slice(&complete.body).unwrap();
    let expected_ca = dir.path().canonicalize().unwrap().join("relative-ca.pem");
    assert_eq!(
        body["result"],
        serde_json::json!({
            "url": url,
            "token": "secret-token",
            "ca_cert": expected_ca.to_str().unwrap(),
            "job": "job_1",
        })
    );
}

fn grant() -> LeaseGrant {
    let job_id: JobId = "job_1".parse().unwrap();
    LeaseGrant {
        lease_id: "lease_7".parse::<LeaseId>().unwrap(),
        job_id,
        attempt: 1,
        expires_at_ms: u64::MAX / 2,
        job: LeasedJob {
            job_id,
            queue: "q".into(),
            kind: "k".into(),
            payload: agentd_schemas::JsonText::from_value(&serde_json::json!({})),
            priority: 0,
            attempt: 1,
            max_attempts: 3,
            lease_ttl_ms: 60_000,
            tags: Default::default(),
            task_id: None,
            rollout_id: None,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// `events tail --limit N` prints N events in all.

/// A log of 6 frames (LSN 1 to 6) of 2 events each, paged like the daemon's `GET /v1/events`:
/// `limit` counts frames, `next_after` is the last frame returned (or `after` when none).
fn events_route(request: &Request) -> (u16, String) {
    const FRAMES: u64 = 6;
    assert_eq!(request.path, "/v1/events");
    let after: u64 = request.query["after"].parse().unwrap();
    let limit: u64 = request.query["limit"].parse().unwrap();
    assert!((1..=10_000).contains(&limit), "limit {limit}");
    let up_to = FRAMES.min(after + limit);
    let events = (after + 1..=up_to)
        .flat_map(|lsn| {
            (0..2).map(move |index| {
                serde_json::json!({"lsn": lsn, "index": index, "type": "job_submitted", "job_id": format!("job_{}", lsn * 10 + index)})
            })
        })
        .collect();
    let answer = EventsResponse {
        events,
        next_after: Lsn(up_to.max(after)),
    };
    (200, serde_json::to_string(&answer).unwrap())
}

#[test]
fn events_tail_limit_is_the_number_of_events_printed_in_all() {
    let server = FakeDaemon::start(None, events_route);
    let url = format!("http://127.0.0.1:{}", server.port);
    let tail = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "events", "tail"];
        all.extend_from_slice(args);
        let output = agentctl(&all, None);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let lines = |output: &Output| String::from_utf8_lossy(&output.stdout).lines().count();

    // The limit falls inside frame 3: five events, and where to go on from. Every frame holds
    // an event at least, so no more frames are asked for than events are still wanted.
    let output = tail(&["--limit", "5"]);
    assert_eq!(lines(&output), 5);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("more with --after 2"), "{stderr}");
    let limits = |requests: &[Request]| -> Vec<String> {
        requests.iter().map(|r| r.query["limit"].clone()).collect()
    };
    assert_eq!(limits(&server.requests()), ["5"]);

    // Paging on: the second request asks for what is still missing, and finds the end.
    let before = server.requests().len();
    assert_eq!(lines(&tail(&["--after", "4", "--limit", "5"])), 4);
    assert_eq!(limits(&server.requests()[before..]), ["5", "1"]);

    let output = tail(&["--limit", "4", "--json"]);
    let printed: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let lsns: Vec<u64> = printed.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, [1, 1, 2, 2]);

    // More than the log holds: all of it, then stop.
    assert_eq!(lines(&tail(&["--limit", "100"])), 12);
    assert_eq!(lines(&tail(&[])), 12);
    // --follow stops once the limit is printed.
    assert_eq!(lines(&tail(&["--follow", "--limit", "3"])), 3);
}

// ---------------------------------------------------------------------------------------------
// `submit --rollouts N`: one batch of N jobs whose payloads share a group.

/// Answers a batch submit with one new job per submitted job, and `GET /v1/groups/{group}`
/// with a group of task `other-task` for `taken`, 404 for any other name.
fn submit_route(request: &Request) -> (u16, String) {
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1/jobs/batch") => {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let jobs: Vec<serde_json::Value> = (1..=body["jobs"].as_array().unwrap().len())
                .map(|n| serde_json::json!({"job_id": format!("job_{n}"), "lsn": 9, "deduplicated": false}))
                .collect();
            (200, serde_json::json!({ "jobs": jobs }).to_string())
        }
        ("GET", "/v1/groups/taken") => (
            200,
            serde_json::json!({"group": "taken", "mean": 0.0, "std": 0.0, "scored": 0,
                "rollouts": [summary_json(Some("ro_1"), "other-task", None)]})
            .to_string(),
        ),
        _ => (
            404,
            r#"{"code": "not_found", "message": "no such thing"}"#.to_string(),
        ),
    }
}

fn batches(server: &FakeDaemon) -> Vec<serde_json::Value> {
    server
        .requests()
        .iter()
        .filter(|request| request.path == "/v1/jobs/batch")
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect()
}

#[test]
fn submit_rollouts_sends_one_batch_of_jobs_that_share_a_group() {
    let server = FakeDaemon::start(None, submit_route);
    let url = format!("http://127.0.0.1:{}", server.port);
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "--url", &url, "submit", "--queue", "episodes", "--kind", "episode",
        ];
        args.extend_from_slice(extra);
        agentctl(&args, None)
    };
    let output = submit(&[
        "--task-id",
        "task-1",
        "--rollouts",
        "3",
        "--group",
        "grpo-7",
        "--payload",
        r#"{"prompt": "p"}"#,
        "--idempotency-key",
        "k",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "group grpo-7 · 3 episode jobs of task task-1\njob_1\njob_2\njob_3\n"
    );
    let sent = batches(&server);
    assert_eq!(sent.len(), 1, "one batch request");
    let jobs = sent[0]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    for (index, job) in jobs.iter().enumerate() {
        assert_eq!(
            job["payload"],
            serde_json::json!({"prompt": "p", "group": "grpo-7"})
        );
        assert_eq!(job["task_id"], "task-1");
        assert_eq!(job["kind"], "episode");
        assert_eq!(job["idempotency_key"], format!("k#{index}"));
    }
    // A named group is looked up first: it must not sample another task.
    assert!(server
        .requests()
        .iter()
        .any(|r| r.path == "/v1/groups/grpo-7"));

    // No --group: a fresh grp-<16 hex> name, the same in every payload and in the answer.
    let before = server.requests().len();
    let output = submit(&["--task-id", "task-1", "--rollouts", "2", "--json"]);
    assert!(output.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let group = printed["group"].as_str().unwrap().to_string();
    assert!(
        group.len() == 20
            && group.starts_with("grp-")
            && group[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{group}"
    );
    assert_eq!(printed["task_id"], "task-1");
    assert_eq!(printed["jobs"].as_array().unwrap().len(), 2);
    let sent = batches(&server).pop().unwrap();
    for job in sent["jobs"].as_array().unwrap() {
        assert_eq!(job["payload"], serde_json::json!({"group": group}));
        assert!(
            job.get("idempotency_key").is_none_or(|key| key.is_null()),
            "{job}"
        );
    }
    assert!(!server.requests()[before..]
        .iter()
        .any(|r| r.path.starts_with("/v1/groups/")));

    // Refused before anything is submitted.
    let batches_before = batches(&server).len();
    for (extra, expected) in [
        (
            &["--task-id", "t", "--rollouts", "2", "--payload", "[1, 2]"][..],
            "--payload must be a JSON object, not an array",
        ),
        (
            &[
                "--task-id",
                "t",
                "--rollouts",
                "2",
                "--payload",
                r#"{"group": "x"}"#,
            ][..],
            "the payload already has \"group\"",
        ),
        (
            &["--task-id", "t", "--rollouts", "2", "--group", "ro_3"][..],
            "must not start with ro_",
        ),
        (
            &["--task-id", "t", "--rollouts", "2", "--group", "taken"][..],
            "group taken already samples task other-task, not t",
        ),
        (
            &[
                "--task-id",
                "t",
                "--rollouts",
                "2",
                "--idempotency-key",
                "k",
            ][..],
            "needs --group",
        ),
        (&["--rollouts", "2"][..], "--task-id <TASK_ID>"),
        (
            &["--task-id", "t", "--rollouts", "2", "--file", "jobs.jsonl"][..],
            "cannot be used with",
        ),
        (
            &["--task-id", "t", "--rollouts", "0"][..],
            "0 is not in 1..=1024",
        ),
        (&["--task-id", "t", "--group", "g"][..], "--rollouts <N>"),
    ] {
        let output = submit(extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
    }
    assert_eq!(batches(&server).len(), batches_before);
}

// ---------------------------------------------------------------------------------------------
// `rollouts list|show` and `groups show`.

fn summary_json(
    rollout_id: Option<&str>,
    task_id: &str,
    advantage: Option<f64>,
) -> serde_json::Value {
    serde_json::json!({
        "rollout_id": rollout_id, "task_id": task_id,
        "group": rollout_id.map(|_| "g"), "model": "m", "policy_version": "p1",
        "job_id": rollout_id.map(|_| "job_4"), "steps": 2, "rewarded": 1,
        "reward": 1.0, "advantage": advantage,
    })
}

fn step_json(step: u32) -> serde_json::Value {
    let empty_state = serde_json::json!({"goals": [], "constraints": [], "decisions": [],
        "hypotheses": [], "history": [], "open_issues": [], "next_focus": null});
    serde_json::json!({
        "rollout_id": "ro_5", "step": step, "lsn": 10 + step, "ts_ms": 1_700_000_000_000u64,
        "job_id": "job_4", "lease_id": "lease_2", "attempt": 1, "worker_id": "w",
        "model": "m", "policy_version": "p1",
        "sampling": {"temperature": null, "top_p": null, "max_tokens": null, "seed": null},
        "prompt_tokens": null, "completion_tokens": null, "prompt": null, "think": null,
        "action": {"kind": "rule", "yaml": "id: x"}, "state_update": null,
        "state_before": empty_state, "state_before_lsn": 0,
        "sandbox": null,
        "reward": {"lsn": 20, "ts_ms": 1_700_000_000_000u64, "value": 1.0, "verified": true,
            "components": {"applied": 1.0}, "source": "rule"},
    })
}

/// A task with a default rollout and `ro_5`; `ro_5` has two steps, served one per page; group
/// `g` has `ro_5` and `ro_6`.
fn rollouts_route(request: &Request) -> (u16, String) {
    let answer = match request.path.as_str() {
        "/v1/tasks/task-1/rollouts" => serde_json::json!({"task_id": "task-1", "rollouts": [
            summary_json(None, "task-1", None),
            summary_json(Some("ro_5"), "task-1", Some(FRAC_1_SQRT_2)),
        ]}),
        "/v1/rollouts/ro_5" => {
            let after = request.query.get("after").map(String::as_str);
            let (steps, next_after) = match after {
                None => (vec![step_json(0)], serde_json::json!(0)),
                Some("0") => (vec![step_json(1)], serde_json::Value::Null),
                Some(other) => panic!("after {other}"),
            };
            serde_json::json!({
                "rollout_id": "ro_5", "task_id": "task-1", "group": "g", "model": "m",
                "policy_version": "p1",
                "sampling": {"temperature": 0.7, "top_p": null, "max_tokens": null, "seed": 3},
                "job_id": "job_4", "lease_id": "lease_2", "attempt": 1, "worker_id": "w",
                "state_from": "task", "lsn": 9, "ts_ms": 1_700_000_000_000u64, "reward": 2.0,
                "steps": steps, "next_after": next_after,
            })
        }
        "/v1/groups/g" => {
            serde_json::json!({"group": "g", "mean": 0.5, "std": FRAC_1_SQRT_2, "scored": 2,
            "rollouts": [
                summary_json(Some("ro_5"), "task-1", Some(FRAC_1_SQRT_2)),
                summary_json(Some("ro_6"), "task-1", Some(-FRAC_1_SQRT_2)),
            ]})
        }
        _ => {
            return (
                404,
                r#"{"code": "not_found", "message": "rollout ro_9 not found"}"#.to_string(),
            )
        }
    };
    (200, answer.to_string())
}

#[test]
fn rollouts_and_groups_print_tables_and_follow_pages() {
    let server = FakeDaemon::start(None, rollouts_route);
    let url = format!("http://127.0.0.1:{}", server.port);
    let run = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str()];
        all.extend_from_slice(args);
        let output = agentctl(&all, None);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, stdout, stderr) = run(&["rollouts", "list", "task-1"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("ROLLOUT ") && lines[0].ends_with("ADVANTAGE"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("(default) "), "{stdout}");
    assert!(lines[1].trim_end().ends_with('-'), "no advantage: {stdout}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        row,
        ["ro_5", "g", "m", "p1", "job_4", "2", "1", "1.000", "0.707"]
    );

    // Every page of steps, each printed as `trajectories show` prints a step.
    let (ok, stdout, stderr) = run(&["rollouts", "show", "ro_5"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("rollout ro_5 · task task-1 · group g\n"),
        "{stdout}"
    );
    assert!(stdout.contains("temperature 0.7, seed 3"), "{stdout}");
    assert!(
        stdout.contains("2 steps (2 rewarded) · reward 2.000"),
        "{stdout}"
    );
    for step in ["step 0 · lsn 10", "step 1 · lsn 11"] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    assert!(
        stdout.contains("  reward: 1 verified (rule) applied=1"),
        "{stdout}"
    );
    let pages: Vec<(Option<String>, Option<String>)> = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/rollouts/ro_5")
        .map(|r| (r.query.get("after").cloned(), r.query.get("limit").cloned()))
        .collect();
    assert_eq!(
        pages,
        [
            (None, Some("1000".into())),
            (Some("0".into()), Some("1000".into()))
        ]
    );
    let (ok, stdout, _) = run(&["--json", "rollouts", "show", "ro_5"]);
    assert!(ok);
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["steps"].as_array().unwrap().len(), 2);
    assert!(printed["next_after"].is_null());

    let (ok, stdout, stderr) = run(&["groups", "show", "g"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(
            "group g · task task-1 · 2 rollouts (2 scored) · mean reward 0.500 · std 0.707\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("-0.707"), "{stdout}");
    // --json is the daemon's answer as it came.
    let (ok, stdout, _) = run(&["--json", "groups", "show", "g"]);
    assert!(ok);
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (_, answer) = rollouts_route(&Request {
        method: "GET".into(),
        path: "/v1/groups/g".into(),
        query: BTreeMap::new(),
        headers: BTreeMap::new(),
        body: Vec::new(),
    });
    assert_eq!(
        printed,
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    );

    let (ok, _, stderr) = run(&["rollouts", "show", "ro_9"]);
    assert!(!ok && stderr.contains("rollout ro_9 not found"), "{stderr}");
    let (ok, _, stderr) = run(&["rollouts", "show", "job_9"]);
    assert!(!ok && stderr.contains("expected ro_<number>"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn agentctl(args: &[&str], dir: Option<&Path>) -> Output {
    let mut command = Command::new(AGENTCTL);
    command
        .args(args)
        .env_remove("AGENTD_URL")
        .env_remove("AGENTD_TOKEN")
        .env_remove("AGENTD_CA_CERT");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.output().expect("agentctl runs")
}

/// Paths of a private CA and a server certificate for 127.0.0.1 it signed (made with the
/// `openssl` command line, as the TLS end-to-end test does).
struct Pki {
    ca_cert: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca_key, ca_cert, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("server.csr"),
        path("cert.pem"),
        path("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject_ca = ["-days", "1", "-subj", "/CN=agentctl test CA"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &subject_ca,
            &["-keyout", &ca_key, "-out", &ca_cert],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_cert,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    Pki {
        ca_cert: ca_cert.into(),
        server_cert: cert.into(),
        server_key: key.into(),
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (README: the machine needs openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One request as the stand-in daemon saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    /// Header names in lower case.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

type Route = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A stand-in daemon: answers each request with `route`, one request per connection
/// (`connection: close`), over TLS when given a certificate. Stops when dropped.
struct FakeDaemon {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl FakeDaemon {
    fn start(
        tls: Option<&Pki>,
        route: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tls = tls.map(server_config);
        let route: Arc<Route> = Arc::new(route);
        std::thread::spawn({
            let requests = requests.clone();
            let stop = stop.clone();
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, route, tls) = (requests.clone(), route.clone(), tls.clone());
                    std::thread::spawn(move || match tls {
                        None => serve(stream, &requests, &*route),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            serve(
                                rustls::StreamOwned::new(connection, stream),
                                &requests,
                                &*route,
                            )
                        }
                    });
                }
            }
        });
        FakeDaemon {
            port,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _listener_may_be_gone = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Arc::new(config)
}

/// Reads one request, records it, answers it. A failed TLS handshake (plain HTTP on the TLS
/// port) ends in the read: rustls has sent its alert by then.
fn serve<S: Read + Write>(stream: S, requests: &Mutex<Vec<Request>>, route: &Route) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|length| length.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query_text) = target.split_once('?').unwrap_or((&target, ""));
    let query = query_text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let request = Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    };
    let (status, answer) = route(&request);
    requests.lock().unwrap().push(request);
    let mut stream = reader.into_inner();
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _client_may_have_gone = stream
        .write_all(response.as_bytes())
        .and_then(|()| stream.flush());
}
