//! Logs kept, seen from the real `agentctl` against a stand-in daemon on `127.0.0.1:0`: the
//! worker's `--log-dir` file and the `log_tail` it sends (capped file, tail still whole; no tail
//! with `--log-tail-bytes 0`; a failure's tail), and `agentctl jobs logs` choosing the local file,
//! else the daemon's tail, else a clear error.

use agentd_schemas::api::{LeaseGrant, LeaseResponse, LeasedJob};
use agentd_schemas::{JobId, LeaseId};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");

#[test]
fn jobs_logs_prints_the_local_file_without_asking_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let text = "== attempt 1, lease lease_3, 2026-01-01T00:00:00.000Z, worker w\nhello\n== attempt 1 completed\n";
    std::fs::write(dir.path().join("job_5.log"), text).unwrap();
    // Nothing listens there: the file alone answers.
    let url = format!("http://127.0.0.1:{}", free_port());
    let output = agentctl(&[
        "--url",
        &url,
        "jobs",
        "logs",
        "job_5",
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), text);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("job_5: the worker's log file"), "{said}");
}

#[test]
fn jobs_logs_falls_back_to_the_daemons_tail_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeDaemon::start(|request| match request.path.as_str() {
        "/v1/jobs/job_5" => (200, job_view("job_5", "completed", 1, Some("the end\n"))),
        "/v1/jobs/job_6" => (200, job_view("job_6", "queued", 0, None)),
        _ => (
            404,
            r#"{"code": "not_found", "message": "job job_9 not found"}"#.into(),
        ),
    });
    let url = format!("http://127.0.0.1:{}", server.port);
    let logs = |job: &str| {
        agentctl(&[
            "--url",
            &url,
            "jobs",
            "logs",
            job,
            "--log-dir",
            dir.path().to_str().unwrap(),
        ])
    };

    let output = logs("job_5");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "the end\n");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("no log file") && said.contains("the daemon recorded"),
        "{said}"
    );

    let output = logs("job_6");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("no log for job_6")
            && said.contains("job_6.log")
            && said.contains("no attempt has ended yet"),
        "{said}"
    );

    let output = logs("job_9");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("no log file") && said.contains("job job_9 not found"),
        "{said}"
    );
}

#[test]
fn a_worker_keeps_the_head_in_a_capped_file_and_sends_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs");
    // Left by a job 8 days ago: the worker deletes it when it starts (--log-retention 7d).
    std::fs::create_dir_all(&log_dir).unwrap();
    let old_log = log_dir.join("job_99.log");
    std::fs::File::create(&old_log)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400))
        .unwrap();
    // 40 lines of 100 bytes on stderr, then the result on stdout: over a 1 KiB cap.
    let script = r#"cat >/dev/null; i=0; while [ $i -lt 40 ]; do printf 'line %02d %090d\n' $i 0 >&2; i=$((i+1)); done; echo '"done"'"#;
    let (output, requests) = run_worker(&log_dir, &["--log-max-bytes", "1KiB"], script);
    assert!(output.status.success(), "{output:?}");

    let body = completion_body(&requests, "complete");
    assert_eq!(body["result"], "done");
    let tail = body["log_tail"].as_str().expect("a log_tail");
    assert!(tail.len() <= 8 * 1024);
    assert!(
        // stdout and stderr are separate pipes: their order in the log is the order they
        // were read, not necessarily the order they were written.
        tail.contains("line 39 ")
            && tail.contains("\"done\"\n")
            && tail.ends_with("\n== attempt 1 completed\n"),
        "{tail}"
    );

    let file = std::fs::read_to_string(log_dir.join("job_1.log")).unwrap();
    assert!(file.starts_with("== attempt 1, lease lease_7, "), "{file}");
    assert!(
        file.contains("line 00") && !file.contains("line 39"),
        "{file}"
    );
    assert!(file.contains("\n== log capped at 1024 bytes"), "{file}");
    assert!(file.ends_with("\n== attempt 1 completed\n"), "{file}");
    // The head, a marker and the end line: only those lines pass the cap.
    assert!(file.len() < 1024 + 400, "{} bytes", file.len());
    assert!(!old_log.exists(), "the 8-day-old log was kept");
}

#[test]
fn a_failures_tail_goes_with_the_failure_and_log_tail_bytes_0_sends_none() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("logs");
    let script = "cat >/dev/null; echo 'Traceback: boom' >&2; exit 2";
    let (output, requests) = run_worker(&log_dir, &[], script);
    assert!(output.status.success(), "{output:?}");
    let body = completion_body(&requests, "fail");
    let tail = body["log_tail"].as_str().expect("a log_tail");
    assert!(
        tail.ends_with(
            "Traceback: boom\n== attempt 1 failed (retryable): exit status 2: Traceback: boom\n"
        ),
        "{tail}"
    );

    let script = "cat >/dev/null; echo 'quiet please' >&2";
    let (output, requests) = run_worker(&log_dir, &["--log-tail-bytes", "0"], script);
    assert!(output.status.success(), "{output:?}");
    let body = completion_body(&requests, "complete");
    assert!(body.get("log_tail").is_none(), "{body}");
    // The file still has it (appended after the first attempt of the same job id).
    let file = std::fs::read_to_string(log_dir.join("job_1.log")).unwrap();
    assert!(
        file.contains("Traceback: boom") && file.contains("quiet please"),
        "{file}"
    );

    // More than the daemon accepts is refused up front.
    let output = agentctl(&[
        "worker",
        "--queue",
        "q",
        "--log-tail-bytes",
        "8193",
        "--",
        "true",
    ]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("at most 8192"), "{said}");
}

/// Runs `agentctl worker --max-jobs 1 --log-dir DIR EXTRA -- sh -c SCRIPT` against a stand-in
/// that grants one lease (`lease_7` of `job_1`) and accepts its completion or failure.
fn run_worker(log_dir: &std::path::Path, extra: &[&str], script: &str) -> (Output, Vec<Request>) {
    let leased = Arc::new(AtomicBool::new(false));
    let server = FakeDaemon::start({
        let leased = leased.clone();
        move |request| match request.path.as_str() {
            "/v1/leases" => {
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
            "/v1/leases/lease_7/complete" | "/v1/leases/lease_7/fail" => (
                200,
                r#"{"job_id": "job_1", "state": "completed", "lsn": 3}"#.into(),
            ),
            "/v1/leases/lease_7/heartbeat" => (200, r#"{"expires_at_ms": 1}"#.into()),
            _ => (
                404,
                r#"{"code": "not_found", "message": "no route"}"#.into(),
            ),
        }
    });
    let url = format!("http://127.0.0.1:{}", server.port);
    let mut args = vec![
        "--url",
        &url,
        "worker",
        "--queue",
        "q",
        "--max-jobs",
        "1",
        "--wait-ms",
        "100",
        "--log-dir",
        log_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let output = agentctl(&args);
    (output, server.requests())
}

fn completion_body(requests: &[Request], what: &str) -> serde_json::Value {
    let path = format!("/v1/leases/lease_7/{what}");
    let request = requests
        .iter()
        .find(|request| request.path == path)
        .unwrap_or_else(|| panic!("no {path} among {requests:?}"));
    serde_json::from_slice(&request.body).unwrap()
}

fn job_view(job_id: &str, state: &str, attempt: u32, log_tail: Option<&str>) -> String {
    serde_json::json!({
        "job_id": job_id, "queue": "q", "kind": "k", "state": state, "attempt": attempt,
        "max_attempts": 3, "priority": 0, "payload": {}, "result": null, "last_error": null,
        "tags": {}, "task_id": null, "idempotency_key": null, "lease_ttl_ms": 60000,
        "run_at_ms": null, "submitted_at_ms": 1, "updated_at_ms": 2, "lease": null,
        "log_tail": log_tail,
    })
    .to_string()
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

fn agentctl(args: &[&str]) -> Output {
    Command::new(AGENTCTL)
        .args(args)
        .env_remove("AGENTD_URL")
        .env_remove("AGENTD_TOKEN")
        .env_remove("AGENTD_CA_CERT")
        .env_remove("AGENTD_WORKER_LOG_DIR")
        .output()
        .expect("agentctl runs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    body: Vec<u8>,
}

type Route = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A plain-HTTP stand-in daemon: one request per connection (`connection: close`), answered by
/// `route`, every request recorded. Stops when dropped.
struct FakeDaemon {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl FakeDaemon {
    fn start(route: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> FakeDaemon {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
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
                    let (requests, route) = (requests.clone(), route.clone());
                    std::thread::spawn(move || serve(stream, &requests, &*route));
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

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, route: &Route) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let mut length = 0;
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
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Request { path, body };
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
