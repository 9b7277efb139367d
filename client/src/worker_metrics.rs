//! The worker's own metrics (`agentctl worker --metrics-listen ADDR`): jobs by queue, lease
//! losses, heartbeat failures, model servers per GPU, persistent actors; served as Prometheus
//! text on `GET /metrics`.
//!
//! Hand-written rather than the `metrics` crate the daemon uses: a worker has a dozen series,
//! all known when it starts, and a tiny exposition over a tokio listener keeps the client's
//! dependencies as they are. Every label is bounded: `queue` takes only the worker's `--queue`
//! names, `gpu` only its `--gpus`; persistent actors are counted per worker, not per slot (a box
//! can have 64 GPUs x 1024 episode lanes).
//!
//! Counters only go up; they start at 0 with the worker, and Prometheus' `rate()` handles the
//! restart. This module never talks to the daemon.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections served at once; more wait in the listen backlog.
pub const METRICS_CONNECTIONS_MAX: usize = 16;
/// Most bytes of a request head read (`GET /metrics HTTP/1.1` and a few headers).
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long one connection may take to send its request and read the answer.
pub const METRICS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the worker counts. Cheap to update from any task: atomics, and one short-held
/// lock for the per-queue table (never held across an `.await`).
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    queues: Mutex<BTreeMap<String, QueueCounters>>,
    slots: AtomicU64,
    heartbeat_failures: AtomicU64,
    servers: Mutex<Vec<(u32, Arc<ServerMetrics>)>>,
    actors: AtomicU64,
    actors_ready: AtomicI64,
    actor_restarts: AtomicU64,
    actor_cancel_kills: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct QueueCounters {
    running: u64,
    completed: u64,
    failed: u64,
    lost: u64,
}

/// How a job the worker ran ended, as far as metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    Failed,
    /// The lease was lost (or the outcome could not be reported): nothing was recorded.
    Lost,
}

/// One model server's state (`--serve`), updated by its supervisor.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Its process is running.
    pub up: AtomicBool,
    /// It answered its health check and has not failed one since.
    pub ready: AtomicBool,
    /// Times it was restarted (exited, never became ready, or failed its checks).
    pub restarts: AtomicU64,
    /// Health checks of a ready server that did not answer 200.
    pub health_check_failures: AtomicU64,
}

impl WorkerMetrics {
    /// Metrics for a worker leasing from `queues` with `slots` slots.
    pub fn new(queues: &[String], slots: usize) -> WorkerMetrics {
        let metrics = WorkerMetrics::default();
        {
            let mut table = lock(&metrics.queues);
            for queue in queues {
                table.entry(queue.clone()).or_default();
            }
        }
        metrics.slots.store(slots as u64, Ordering::Relaxed);
        metrics
    }

    /// A job of `queue` was leased and is starting.
    pub fn job_started(&self, queue: &str) {
        lock(&self.queues)
            .entry(queue.to_string())
            .or_default()
            .running += 1;
    }

    /// A job of `queue` ended.
    pub fn job_ended(&self, queue: &str, end: JobEnd) {
        let mut table = lock(&self.queues);
        let counters = table.entry(queue.to_string()).or_default();
        counters.running = counters.running.saturating_sub(1);
        match end {
            JobEnd::Completed => counters.completed += 1,
            JobEnd::Failed => counters.failed += 1,
            JobEnd::Lost => counters.lost += 1,
        }
    }

    /// A heartbeat got no renewal (an error answer, or none in time).
    pub fn heartbeat_failed(&self) {
        self.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers the model server of GPU `gpu` and returns what its supervisor updates.
    pub fn server(&self, gpu: u32) -> Arc<ServerMetrics> {
        let server = Arc::new(ServerMetrics::default());
        lock(&self.servers).push((gpu, server.clone()));
        server
    }

    /// `count` persistent actors (one per slot) are supervised.
    pub fn actors_supervised(&self, count: usize) {
        self.actors.store(count as u64, Ordering::Relaxed);
    }

    /// An actor said hello (`true`) or stopped being ready (`false`).
    pub fn actor_ready(&self, ready: bool) {
        self.actors_ready
            .fetch_add(if ready { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// An actor process is being replaced; `after_ignored_cancel` when it was killed for not
    /// answering a cancel in time.
    pub fn actor_restarted(&self, after_ignored_cancel: bool) {
        self.actor_restarts.fetch_add(1, Ordering::Relaxed);
        if after_ignored_cancel {
            self.actor_cancel_kills.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of everything above.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_jobs(&mut out);
        self.render_model_servers(&mut out);
        self.render_actors(&mut out);
        out
    }

    /// Jobs by queue, slots and heartbeat failures: present on every worker.
    fn render_jobs(&self, out: &mut String) {
        let queues: Vec<(String, QueueCounters)> = lock(&self.queues)
            .iter()
            .map(|(queue, counters)| (queue.clone(), *counters))
            .collect();
        let per_queue = |out: &mut String,
                         name: &str,
                         kind: &str,
                         help: &str,
                         value: fn(&QueueCounters) -> u64| {
            header(out, name, kind, help);
            for (queue, counters) in &queues {
                let _infallible = writeln!(
                    out,
                    "{name}{{queue=\"{}\"}} {}",
                    escape_label(queue),
                    value(counters)
                );
            }
        };
        per_queue(
            out,
            "agentd_worker_jobs_running",
            "gauge",
            "Jobs this worker is running now, by queue.",
            |counters| counters.running,
        );
        per_queue(
            out,
            "agentd_worker_jobs_completed_total",
            "counter",
            "Jobs this worker completed, by queue.",
            |counters| counters.completed,
        );
        per_queue(
            out,
            "agentd_worker_jobs_failed_total",
            "counter",
            "Jobs this worker reported as failed (retryable or not), by queue.",
            |counters| counters.failed,
        );
        per_queue(
            out,
            "agentd_worker_leases_lost_total",
            "counter",
            "Jobs stopped because their lease was lost (cancelled, expired, or the daemon unreachable until it expired), by queue.",
            |counters| counters.lost,
        );
        single(
            out,
            "agentd_worker_slots",
            "gauge",
            "Slots of this worker (jobs it runs at once).",
            self.slots.load(Ordering::Relaxed),
        );
        single(
            out,
            "agentd_worker_heartbeat_failures_total",
            "counter",
            "Heartbeats that did not renew their lease (an error answer or no answer in time).",
            self.heartbeat_failures.load(Ordering::Relaxed),
        );
    }

    /// The model servers' metrics, when the worker has any (`--serve`).
    fn render_model_servers(&self, out: &mut String) {
        let servers: Vec<(u32, Arc<ServerMetrics>)> = lock(&self.servers).clone();
        if !servers.is_empty() {
            let per_gpu = |out: &mut String,
                           name: &str,
                           kind: &str,
                           help: &str,
                           value: fn(&ServerMetrics) -> u64| {
                header(out, name, kind, help);
                for (gpu, server) in &servers {
                    let _infallible = writeln!(out, "{name}{{gpu=\"{gpu}\"}} {}", value(server));
                }
            };
            per_gpu(
                out,
                "agentd_worker_model_server_up",
                "gauge",
                "1 while the GPU's model server process runs (--serve).",
                |server| server.up.load(Ordering::Relaxed) as u64,
            );
            per_gpu(
                out,
                "agentd_worker_model_server_ready",
                "gauge",
                "1 while the GPU's model server answers its health check; its slots take leases only then.",
                |server| server.ready.load(Ordering::Relaxed) as u64,
            );
            per_gpu(
                out,
                "agentd_worker_model_server_restarts_total",
                "counter",
                "Restarts of the GPU's model server (it exited, was not ready in time, or failed its checks).",
                |server| server.restarts.load(Ordering::Relaxed),
            );
            per_gpu(
                out,
                "agentd_worker_model_server_health_check_failures_total",
                "counter",
                "Health checks of the GPU's ready model server that did not answer 200.",
                |server| server.health_check_failures.load(Ordering::Relaxed),
            );
        }
    }

    /// The persistent actors' metrics, when the worker has any (`--persistent`).
    fn render_actors(&self, out: &mut String) {
        let actors = self.actors.load(Ordering::Relaxed);
        if actors > 0 {
            single(
                out,
                "agentd_worker_actors",
                "gauge",
                "Persistent actor processes supervised (one per slot, --persistent).",
                actors,
            );
            single(
                out,
                "agentd_worker_actors_ready",
                "gauge",
                "Persistent actors that said hello and are taking jobs.",
                self.actors_ready.load(Ordering::Relaxed).max(0) as u64,
            );
            single(
                out,
                "agentd_worker_actor_restarts_total",
                "counter",
                "Persistent actor processes replaced (died, failed their hello, or killed after ignoring a cancel).",
                self.actor_restarts.load(Ordering::Relaxed),
            );
            single(
                out,
                "agentd_worker_actor_cancel_kills_total",
                "counter",
                "Persistent actors killed because they did not answer a cancel within the grace period.",
                self.actor_cancel_kills.load(Ordering::Relaxed),
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _infallible = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    header(out, name, kind, help);
    let _infallible = writeln!(out, "{name} {value}");
}

/// Label values escape backslash, double quote and newline (the text format's rules).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A poisoned lock only means a panic elsewhere mid-update of a counter: the counts are still
/// the best there are.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Answers `GET /metrics` on `listener` until the task is dropped: HTTP/1.1, one request per
/// connection, at most [`METRICS_CONNECTIONS_MAX`] at once, each within
/// [`METRICS_CONNECTION_TIMEOUT`].
pub async fn serve(listener: TcpListener, metrics: Arc<WorkerMetrics>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // EMFILE and friends: say so, and do not spin on them.
                eprintln!("agentctl worker: metrics listener: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _answered_or_gave_up =
                tokio::time::timeout(METRICS_CONNECTION_TIMEOUT, answer(stream, &metrics)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &WorkerMetrics) {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n")
        && !head.windows(2).any(|window| window == b"\n\n")
    {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > METRICS_REQUEST_BYTES_MAX {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
            return;
        }
    }
    let request_line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &metrics.render(),
            )
            .await
        }
        (_, "/metrics") => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "the worker serves GET /metrics only\n",
            )
            .await
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that went away misses its answer; nothing else depends on it.
    let _client_may_be_gone = stream.write_all(response.as_bytes()).await;
    let _client_may_be_gone = stream.shutdown().await;
}

#[cfg(test)]
mod tests;
