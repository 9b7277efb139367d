//! Limits on hostile or careless input, each refused with its own stable code, through the real
//! daemon with a config of small limits: body size, payload size, batch sizes (jobs,
//! completions, ingest records), number of tags, list sizes (queues, agent-state items, reward
//! components), string lengths (names, ids, step texts), long-poll wait, parked long-polls,
//! per-request timeout, requests in flight, connection count. A refusal writes nothing: the log's
//! last LSN and every projection digest are the same before and after it.

use agentd_tests::{eventually, write_config, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SMALL_LIMITS: &str = "\
[server]
body_bytes_max = 8192
request_timeout_ms = 2000
lease_wait_ms_max = 300
connections_max = 2
[queue]
payload_bytes_max = 1024
batch_jobs_max = 3
tags_max = 2
";

fn small_daemon() -> (tempfile::TempDir, Daemon) {
    daemon_with(SMALL_LIMITS)
}

fn daemon_with(config: &str) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), config);
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    // Building the agentd client installs reqwest's TLS provider for the plain client below.
    let _client = daemon.client();
    (dir, daemon)
}

/// The log's last LSN and the digest of every projection (`GET /v1/admin/digest`): equal before
/// and after a refusal, the refusal wrote nothing and changed nothing.
async fn log_and_projections(daemon: &Daemon) -> Value {
    let (status, body) = get(daemon, "/v1/admin/digest").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["lsn"].is_u64(), "{body}");
    body
}

/// POSTs `body` and returns the status and the JSON answer.
async fn post(daemon: &Daemon, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_to(&daemon.url, path, body).await
}

/// [`post`] by URL, for spawned tasks.
async fn post_to(url: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{path}: answer is not JSON ({error}): {text}"));
    (status, body)
}

/// `POST /v1/jobs` over a raw socket, declaring a `Content-Length` far over the limit and
/// sending one byte of it; the status and JSON body of the answer.
async fn declared_length_over_limit(daemon: &Daemon) -> (u16, Value) {
    let address = daemon.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = "POST /v1/jobs HTTP/1.1\r\nHost: agentd\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // The answer, up to the end of its JSON body (the connection may stay open).
    let text = loop {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
            .await
            .expect("an answer to a declared length over the limit")
            .unwrap();
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if read == 0 || text.trim_end().ends_with('}') {
            break text;
        }
    };
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn get(daemon: &Daemon, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{}{path}", daemon.url)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Asserts the status and code, and that the message mentions each of `mentions`.
fn assert_refused(answer: &(u16, Value), status: u16, code: &str, mentions: &[&str]) {
    let (got, body) = answer;
    assert_eq!(
        (*got, body["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    for mention in mentions {
        assert!(
            message.contains(mention),
            "{code}: {message:?} should mention {mention:?}"
        );
    }
}

async fn job_count(daemon: &Daemon) -> usize {
    let (status, body) = get(daemon, "/v1/jobs").await;
    assert_eq!(status, 200);
    body["jobs"].as_array().unwrap().len()
}

#[tokio::test]
async fn sizes_counts_and_lengths_are_refused_with_their_own_codes() {
    let (_dir, daemon) = small_daemon();
    let before = log_and_projections(&daemon).await;

    // Body size: 413 body_too_large, as JSON, on JSON routes and on the raw-body completion.
    let huge = format!(
        r#"{{"queue":"q","kind":"k","payload":"{}"}}"#,
        "x".repeat(9000)
    );
    let answer = post(&daemon, "/v1/jobs", huge.clone()).await;
    assert_refused(&answer, 413, "body_too_large", &["8192"]);
    let answer = post(&daemon, "/v1/leases/lease_1/complete", huge).await;
    assert_refused(&answer, 413, "body_too_large", &["8192"]);

    // A declared length over the limit is refused without waiting for the bytes (they never
    // come here: a body of 1 byte under a length of 99,999,999).
    let answer = declared_length_over_limit(&daemon).await;
    assert_refused(&answer, 413, "body_too_large", &["8192"]);

    // Payload size: the body fits, the payload does not.
    let big_payload = json!({"queue": "q", "kind": "k", "payload": "x".repeat(2000)});
    let answer = post(&daemon, "/v1/jobs", big_payload.to_string()).await;
    assert_refused(&answer, 413, "payload_too_large", &["payload", "1024"]);

    // Batch size: refused whole.
    let jobs: Vec<Value> = (0..4).map(|_| json!({"queue": "q", "kind": "k"})).collect();
    let answer = post(
        &daemon,
        "/v1/jobs/batch",
        json!({ "jobs": jobs }).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "batch_too_large", &["jobs", "3"]);

    // Number of tags, on a job and on a worker's lease request.
    let tags = json!({"a": "1", "b": "2", "c": "3"});
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k", "tags": tags}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "too_many_tags", &["tags", "2"]);
    let answer = post(
        &daemon,
        "/v1/leases",
        json!({"worker_id": "w", "queues": ["q"], "tags": tags}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "too_many_tags", &["tags"]);
    let answer = post(
        &daemon,
        "/v1/leases",
        json!({"worker_id": "w", "queues": ["a", "b", "c"]}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "too_many_items", &["queues"]);

    // String lengths: the field and the limit are named.
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q".repeat(129), "kind": "k"}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "string_too_long", &["queue", "128"]);
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k", "tags": {"gpu": "a".repeat(129)}}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "string_too_long", &["tags.gpu", "128"]);
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k", "idempotency_key": "k".repeat(257)}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "string_too_long", &["idempotency_key", "256"]);
    let long_task = "t".repeat(300);
    let answer = get(&daemon, &format!("/v1/tasks/{long_task}/state")).await;
    assert_refused(&answer, 422, "string_too_long", &["task_id", "256"]);
    let answer = post(
        &daemon,
        "/v1/tasks/t/state",
        json!({ "goals": vec!["g"; 65] }).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "too_many_items", &["goals", "64"]);

    // Nothing above changed anything.
    assert_eq!(job_count(&daemon).await, 0);
    assert_eq!(log_and_projections(&daemon).await, before);

    // Within every limit, the same requests succeed.
    let jobs: Vec<Value> = (0..3).map(|_| json!({"queue": "q", "kind": "k"})).collect();
    let (status, _) = post(
        &daemon,
        "/v1/jobs/batch",
        json!({ "jobs": jobs }).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(job_count(&daemon).await, 3);
}

#[tokio::test]
async fn long_polls_are_capped_below_the_request_timeout() {
    let (_dir, daemon) = small_daemon();
    // Ask for ten minutes; `lease_wait_ms_max` (300 ms) applies and the answer is empty, not 503.
    let started = Instant::now();
    let (status, body) = post(
        &daemon,
        "/v1/leases",
        json!({"worker_id": "w", "queues": ["empty"], "wait_ms": 600_000}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leases"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let (status, body) = get(&daemon, "/v1/events?after=1000000&wait_ms=600000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Reads one HTTP response head and body from `stream` (enough for the small JSON answers).
async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(count)) => {
                buffer.extend_from_slice(&chunk[..count]);
                let text = String::from_utf8_lossy(&buffer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        return Some(text.into_owned());
                    }
                }
            }
            Ok(Err(_)) => break,
        }
    }
    (!buffer.is_empty()).then(|| String::from_utf8_lossy(&buffer).into_owned())
}

fn address(daemon: &Daemon) -> String {
    daemon.url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_gets_503_timeout() {
    let (_dir, daemon) = small_daemon();
    // A body that never finishes arriving (a slow or stuck client).
    let mut stream = TcpStream::connect(address(&daemon)).await.unwrap();
    stream
        .write_all(
            b"POST /v1/jobs HTTP/1.1\r\nhost: agentd\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"queue\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let response = read_response(&mut stream, Duration::from_secs(30))
        .await
        .expect("an answer before the client gives up");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"code\":\"timeout\""), "{response}");
    assert!(
        response.contains("2000 ms"),
        "the limit is named: {response}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The daemon is fine afterwards.
    let (status, _) = get(&daemon, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (_dir, daemon) = small_daemon();
    let request = b"GET /healthz HTTP/1.1\r\nhost: agentd\r\n\r\n";
    // Two keep-alive connections take both slots (`connections_max = 2`).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address(&daemon)).await.unwrap();
        stream.write_all(request).await.unwrap();
        let response = read_response(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        held.push(stream);
    }
    // A third connects (the kernel queues it) but is not served while both slots are taken.
    let mut waiting = TcpStream::connect(address(&daemon)).await.unwrap();
    waiting.write_all(request).await.unwrap();
    assert_eq!(
        read_response(&mut waiting, Duration::from_millis(500)).await,
        None,
        "a connection over connections_max was served"
    );
    // Closing one held connection frees a slot: the waiting one is served, nothing crashed.
    drop(held.pop());
    let response = read_response(&mut waiting, Duration::from_secs(10))
        .await
        .expect("served once a slot is free");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(held);
    drop(waiting);
    let (status, _) = get(&daemon, "/healthz").await;
    assert_eq!(status, 200);
}

/// Regressions found by hand and by schemathesis: values at the edge of their type and bytes
/// that are not UTF-8 get JSON errors, never a 500 or a plain-text answer.
#[tokio::test]
async fn edge_values_and_bad_encodings_get_json_errors() {
    let (_dir, daemon) = small_daemon();
    // The largest job id has nothing after it (`job_18446744073709551615` overflowed into a
    // 500; ids now have at most 18 digits, so it is refused like any id not spelled as the
    // daemon writes them).
    let (status, body) = get(&daemon, "/v1/jobs?after=job_999999999999999999").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!([]));
    let answer = get(&daemon, "/v1/jobs?after=job_18446744073709551615").await;
    assert_refused(
        &answer,
        422,
        "invalid_request",
        &["job_18446744073709551615"],
    );
    // A path segment that is not UTF-8 after percent-decoding (axum answered plain text).
    let answer = get(&daemon, "/v1/tasks/%FF/state").await;
    assert_refused(&answer, 422, "invalid_request", &["UTF-8"]);
    let answer = post(&daemon, "/v1/queues/%FF%FE/pause", "").await;
    assert_refused(&answer, 422, "invalid_request", &["UTF-8"]);
    // Numbers past their range are refused, not wrapped.
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k", "delay_ms": u64::MAX}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "invalid_request", &["delay_ms"]);
    let answer = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k", "run_at_ms": u64::MAX}).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "invalid_request", &["run_at_ms"]);
    let (status, body) = get(
        &daemon,
        &format!("/v1/events?after={}&wait_ms={}", u64::MAX, u64::MAX),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// The default body limit (step texts and a full completion batch need more than the 8 KiB of
/// `SMALL_LIMITS`) and two records per ingest request.
const BATCH_LIMITS: &str = "\
[datasets]
records_per_batch_max = 2
";

/// Most items in one `POST /v1/leases/complete` (fixed, not configurable).
const COMPLETIONS_PER_BATCH_MAX: usize = 10_000;

#[tokio::test]
async fn completion_and_ingest_batches_over_their_limits_are_refused_whole() {
    let (_dir, daemon) = daemon_with(BATCH_LIMITS);
    // A leased job, so the refused batch holds a completion that would succeed on its own.
    let (status, body) = post(
        &daemon,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k"}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(
        &daemon,
        "/v1/leases",
        json!({"worker_id": "w", "queues": ["q"]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lease_id = body["leases"][0]["lease_id"].as_str().unwrap().to_string();
    let meta = json!({
        "source": "limits",
        "version": "v1",
        "license": "MIT",
        "downloaded_at": "2024-05-01T12:00:00Z",
        "sha256": "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
        "num_records": 3,
        "url": "https://example.com/datasets/limits"
    });
    let (status, body) = post(&daemon, "/v1/datasets", meta.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let before = log_and_projections(&daemon).await;

    let completions = vec![json!({ "lease_id": lease_id }); COMPLETIONS_PER_BATCH_MAX + 1];
    let answer = post(
        &daemon,
        "/v1/leases/complete",
        json!({ "completions": completions }).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "batch_too_large", &["completions", "10000"]);

    let record = |n: usize| {
        json!({
            "instruction": format!("Rename `x{n}` to `total`."),
            "pre": format!("x{n} = 0\nprint(x{n})\n"),
            "post": "total = 0\nprint(total)\n",
            "language": "py"
        })
    };
    let answer = post(
        &daemon,
        "/v1/datasets/limits/v1/records",
        json!({"records": [record(0), record(1), record(2)]}).to_string(),
    )
    .await;
    assert_refused(
        &answer,
        422,
        "batch_too_large",
        &["records", "limit of 2", "records_per_batch_max"],
    );
    assert_eq!(log_and_projections(&daemon).await, before);

    // Within the limits, both go through.
    let (status, body) = post(
        &daemon,
        "/v1/leases/complete",
        json!({"completions": [{ "lease_id": lease_id }]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["job_id"], "job_1", "{body}");
    let (status, body) = post(
        &daemon,
        "/v1/datasets/limits/v1/records",
        json!({"records": [record(0), record(1)]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
}

/// `base` with the keys of `extra` set (both JSON objects).
fn with(mut base: Value, extra: Value) -> Value {
    let fields = base.as_object_mut().unwrap();
    for (key, value) in extra.as_object().unwrap() {
        fields.insert(key.clone(), value.clone());
    }
    base
}

#[tokio::test]
async fn step_texts_state_items_and_reward_components_over_their_limits_are_refused() {
    let (_dir, daemon) = daemon_with(BATCH_LIMITS);
    let step = json!({
        "step": 0,
        "model": "m",
        "policy_version": "p1",
        "action": {"kind": "pattern", "language": "python", "pattern": "print($A)", "rewrite": "log($A)"}
    });
    let text = |bytes: usize| "x".repeat(bytes);
    // A prompt exactly at its limit is kept: step 0 exists for the sandbox and reward posts.
    let (status, body) = post(
        &daemon,
        "/v1/tasks/t/steps",
        with(step.clone(), json!({ "prompt": text(256 * 1024) })).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let before = log_and_projections(&daemon).await;

    let over = [
        (
            json!({ "prompt": text(256 * 1024 + 1) }),
            "prompt",
            "262144",
        ),
        (json!({ "think": text(64 * 1024 + 1) }), "think", "65536"),
        (
            json!({"action": {"kind": "pattern", "language": "python", "pattern": text(65_537), "rewrite": "r"}}),
            "action.pattern",
            "65536",
        ),
        (
            json!({"action": {"kind": "pattern", "language": "python", "pattern": "p", "rewrite": text(65_537)}}),
            "action.rewrite",
            "65536",
        ),
        (
            json!({"action": {"kind": "rule", "yaml": text(65_537)}}),
            "action.yaml",
            "65536",
        ),
        (
            json!({"state_update": {"goals": ["ok", text(4097)]}}),
            "state_update.goals[1]",
            "4096",
        ),
        (
            json!({"state_update": {"next_focus": text(4097)}}),
            "state_update.next_focus",
            "4096",
        ),
    ];
    for (extra, field, limit) in over {
        let body = with(with(step.clone(), json!({"step": 1})), extra);
        let answer = post(&daemon, "/v1/tasks/t/steps", body.to_string()).await;
        assert_refused(&answer, 422, "string_too_long", &[field, limit]);
    }
    for (field, body, limit) in [
        ("history[0]", json!({ "history": [text(4097)] }), "4096"),
        ("next_focus", json!({ "next_focus": text(4097) }), "4096"),
    ] {
        let answer = post(&daemon, "/v1/tasks/t/state", body.to_string()).await;
        assert_refused(&answer, 422, "string_too_long", &[field, limit]);
    }
    for (field, bytes, limit) in [
        ("diff", 1024 * 1024 + 1, "1048576"),
        ("stdout", 64 * 1024 + 1, "65536"),
        ("stderr", 64 * 1024 + 1, "65536"),
    ] {
        let answer = post(
            &daemon,
            "/v1/tasks/t/steps/0/sandbox",
            json!({"outcome": "ok", field: text(bytes)}).to_string(),
        )
        .await;
        assert_refused(&answer, 422, "string_too_long", &[field, limit]);
    }
    let components = |count: usize| -> serde_json::Map<String, Value> {
        (0..count).map(|n| (format!("c{n}"), json!(0.5))).collect()
    };
    let reward = |count: usize| json!({"value": 1.0, "verified": true, "source": "rule", "components": components(count)});
    let answer = post(
        &daemon,
        "/v1/tasks/t/steps/0/reward",
        reward(33).to_string(),
    )
    .await;
    assert_refused(&answer, 422, "too_many_items", &["components", "32"]);
    // Finite but large values would sum to infinity in group means and stats.
    for (field, body) in [
        (
            "value",
            json!({"value": 1.7e308, "verified": true, "source": "rule"}),
        ),
        (
            "value",
            json!({"value": -1.000_000_001e9, "verified": true, "source": "rule"}),
        ),
        (
            "components.c",
            json!({"value": 1.0, "verified": true, "source": "rule", "components": {"c": 2e9}}),
        ),
    ] {
        let answer = post(&daemon, "/v1/tasks/t/steps/0/reward", body.to_string()).await;
        assert_refused(&answer, 422, "invalid_request", &[field, "1e9"]);
    }
    assert_eq!(log_and_projections(&daemon).await, before);

    // At the limits, each is recorded.
    let (status, body) = post(
        &daemon,
        "/v1/tasks/t/steps/0/sandbox",
        json!({"outcome": "ok", "diff": text(1024 * 1024), "stderr": text(64 * 1024)}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &daemon,
        "/v1/tasks/t/steps/0/reward",
        reward(32).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &daemon,
        "/v1/tasks/t/state",
        json!({"history": [text(4096)], "next_focus": text(4096)}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Two parked long-polls at most, each allowed to wait long enough to still be parked when the
/// third arrives.
const WAITER_LIMITS: &str = "\
[server]
lease_wait_ms_max = 20000
lease_waiters_max = 2
";

#[tokio::test]
async fn long_polls_over_the_waiter_cap_get_429_too_many_waiters() {
    let (_dir, daemon) = daemon_with(WAITER_LIMITS);
    let before = log_and_projections(&daemon).await;
    let long_poll =
        json!({"worker_id": "w", "queues": ["idle"], "max_jobs": 1, "wait_ms": 20_000}).to_string();
    // Two workers long-poll until they get a job. A probe may hold a place when one arrives,
    // which refuses the worker: it asks again.
    let parked: Vec<_> = (0..2)
        .map(|_| {
            let url = daemon.url.clone();
            let body = long_poll.clone();
            tokio::spawn(async move {
                eventually(Duration::from_secs(60), "a job for a worker", || {
                    let (url, body) = (url.clone(), body.clone());
                    async move {
                        let (status, answer) = post_to(&url, "/v1/leases", body).await;
                        match status {
                            429 => None,
                            200 if answer["leases"] == json!([]) => None,
                            _ => Some((status, answer)),
                        }
                    }
                })
                .await
            })
        })
        .collect();
    // A short poll parks too while a place is free (and answers empty after 50 ms). The probes
    // go one at a time, so a refused probe proves both workers are parked.
    let probe = json!({"worker_id": "probe", "queues": ["idle"], "wait_ms": 50}).to_string();
    let refusal = eventually(
        Duration::from_secs(30),
        "both long-polls to be parked",
        || {
            let probe = probe.clone();
            let daemon = &daemon;
            async move {
                let answer = post(daemon, "/v1/leases", probe).await;
                match answer.0 {
                    429 => Some(answer),
                    200 => None,
                    other => panic!("probe answered {other}: {}", answer.1),
                }
            }
        },
    )
    .await;
    assert_refused(&refusal, 429, "too_many_waiters", &["waiting", "2"]);
    assert_eq!(log_and_projections(&daemon).await, before);

    // Two jobs: each parked worker gets one, and the places are free again.
    let jobs: Vec<Value> = (0..2)
        .map(|_| json!({"queue": "idle", "kind": "k"}))
        .collect();
    let (status, body) = post(
        &daemon,
        "/v1/jobs/batch",
        json!({ "jobs": jobs }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for task in parked {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["leases"].as_array().unwrap().len(), 1, "{body}");
    }
    let (status, body) = post(&daemon, "/v1/leases", probe).await;
    assert_eq!((status, &body["leases"]), (200, &json!([])), "{body}");
}

/// One request in flight at a time; a timeout long enough for the held request to outlast the
/// probes.
const IN_FLIGHT_LIMITS: &str = "\
[server]
requests_in_flight_max = 1
request_timeout_ms = 20000
";

#[tokio::test]
async fn requests_over_the_in_flight_cap_wait_for_a_free_slot() {
    let (_dir, daemon) = daemon_with(IN_FLIGHT_LIMITS);
    // A submission whose body is still arriving holds the only slot.
    let job = br#"{"queue":"q","kind":"k"}"#;
    let mut holder = TcpStream::connect(address(&daemon)).await.unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nhost: agentd\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        job.len()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&job[..5]).await.unwrap();
    // Probe until a probe waits (no answer within a second): one answered at once came before
    // the holder took the slot.
    let request = b"GET /v1/queues HTTP/1.1\r\nhost: agentd\r\nconnection: close\r\n\r\n";
    let mut waiting = eventually(
        Duration::from_secs(15),
        "a request waiting for the slot",
        || {
            let address = address(&daemon);
            async move {
                let mut probe = TcpStream::connect(address).await.unwrap();
                probe.write_all(request).await.unwrap();
                match read_response(&mut probe, Duration::from_secs(1)).await {
                    None => Some(probe),
                    Some(response) => {
                        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                        None
                    }
                }
            }
        },
    )
    .await;
    // The rest of the body: the submission is answered, then the waiting request runs, after
    // it (its queue list holds the job).
    holder.write_all(&job[5..]).await.unwrap();
    let response = read_response(&mut holder, Duration::from_secs(10))
        .await
        .expect("the held submission is answered");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let response = read_response(&mut waiting, Duration::from_secs(10))
        .await
        .expect("served once the slot is free");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""queue":"q""#), "{response}");
}

/// `GET /v1/events` bounds a page by events and bytes as well as frames: three batch frames of
/// 6,000 jobs each come back one frame per page even with `limit=10000` (two would pass the
/// 10,000-event cap), and reading on from `next_after` returns every event exactly once.
#[tokio::test]
async fn an_events_page_ends_before_a_frame_that_would_pass_its_event_cap() {
    let (_dir, daemon) = daemon_with("");
    let mut expected = 0;
    for _ in 0..3 {
        let jobs: Vec<Value> = (0..6000)
            .map(|_| json!({"queue": "pages", "kind": "k"}))
            .collect();
        let (status, body) = post(
            &daemon,
            "/v1/jobs/batch",
            json!({ "jobs": jobs }).to_string(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        expected += 6000;
    }
    // From LSN 1 on: LSN 1 is the [datasets] settings the daemon records at its first start.
    let mut after = 1;
    let mut pages = Vec::new();
    loop {
        let (status, page) = get(&daemon, &format!("/v1/events?after={after}&limit=10000")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        let next = page["next_after"].as_u64().unwrap();
        if events.is_empty() {
            assert_eq!(next, after, "an empty page stays put");
            break;
        }
        assert!(
            events.len() <= 10_000,
            "{} events in one page",
            events.len()
        );
        assert_eq!(events.first().unwrap()["lsn"].as_u64().unwrap(), after + 1);
        assert_eq!(events.last().unwrap()["lsn"].as_u64().unwrap(), next);
        pages.push(events.len());
        after = next;
    }
    assert_eq!(pages, [6000, 6000, 6000], "one batch frame per page");
    assert_eq!(pages.iter().sum::<usize>(), expected);
}
