//! Limits on hostile or careless input, each refused with its own stable code, through the real
//! daemon with a config of small limits: body size, payload size, batch size, number of tags,
//! list sizes, string lengths, long-poll wait, per-request timeout, connection count.

use agentd_tests::{write_config, Daemon};
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
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SMALL_LIMITS);
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    // Building the agentd client installs reqwest's TLS provider for the plain client below.
    let _client = daemon.client();
    (dir, daemon)
}

/// POSTs `body` and returns the status and the JSON answer.
async fn post(daemon: &Daemon, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", daemon.url))
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

    // Body size: 413 body_too_large, as JSON, on JSON routes and on the raw-body completion.
    let huge = format!(
        r#"{{"queue":"q","kind":"k","payload":"{}"}}"#,
        "x".repeat(9000)
    );
    let answer = post(&daemon, "/v1/jobs", huge.clone()).await;
    assert_refused(&answer, 413, "body_too_large", &["8192"]);
    let answer = post(&daemon, "/v1/leases/lease_1/complete", huge).await;
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
    // The largest job id has nothing after it (this overflowed into a 500).
    let (status, body) = get(&daemon, "/v1/jobs?after=job_18446744073709551615").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!([]));
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
