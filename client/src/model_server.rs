//! Model servers per GPU slot, behind `agentctl worker --gpus ... --serve 'CMD {gpu} {port}'`:
//! one long-lived server process per selected GPU (vLLM, or anything that answers HTTP), pinned
//! with `CUDA_VISIBLE_DEVICES`, health-checked, restarted with backoff, its output kept in a
//! size-capped log file.
//!
//! The supervisor publishes a [`ServerStatus`] per slot on a watch channel. The worker loop
//! leases nothing into a slot whose server is not ready, and stops (and fails as retryable) the
//! jobs of a slot whose server went down or was restarted, because their requests would go to
//! a server that lost their state. This module never talks to the daemon.

use crate::worker::ServerStatus;
use crate::worker_metrics::ServerMetrics;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Consecutive failed health checks of a ready server before it is restarted: one slow answer
/// under load must not throw away a model that took minutes to load.
pub const HEALTH_FAILURES_MAX: u32 = 3;
/// How long one health request may take.
pub const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a starting server is asked whether it is ready (at most; less when the check
/// interval is shorter).
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// First wait before a restart; doubles per restart in a row, up to [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait before a restart.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a stopped server gets after SIGTERM before its process group is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Chunks of server output waiting for the log writer.
const LOG_CHANNEL_CHUNKS_MAX: usize = 64;

/// How to run and check one slot's server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The nvidia-smi index of the slot's GPU (`{gpu}`).
    pub gpu_index: u32,
    /// The port the server listens on (`{port}`), on 127.0.0.1.
    pub port: u16,
    /// The `--serve` command line with `{gpu}` and `{port}` filled in, run by `sh -c`.
    pub command_line: String,
    /// Environment pinning the server to its GPU (the slot's `CUDA_VISIBLE_DEVICES` etc.).
    pub env: Vec<(String, String)>,
    /// Path answered with HTTP 200 when the server is healthy, e.g. `/health`.
    pub health_path: String,
    /// How long a starting server may take to answer its health path before it is restarted.
    pub ready_timeout: Duration,
    /// How often a ready server is checked.
    pub check_interval: Duration,
    /// Where the server's stdout and stderr go.
    pub log_path: PathBuf,
    /// Size at which the log is moved to `<log>.1` (replacing an older one) and started afresh.
    pub log_bytes_max: u64,
}

impl ServerConfig {
    /// `http://127.0.0.1:{port}`, what the slot's jobs get as `AGENTD_MODEL_URL`.
    pub fn url(&self) -> String {
        model_url(self.port)
    }
}

/// `http://127.0.0.1:{port}`.
pub fn model_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Fills `{gpu}` and `{port}` into a `--serve` template.
pub fn expand_template(template: &str, gpu_index: u32, port: u16) -> String {
    template
        .replace("{gpu}", &gpu_index.to_string())
        .replace("{port}", &port.to_string())
}

/// Runs the slot's server until `stop` turns true (or its sender is dropped), restarting it when
/// it exits, never becomes ready, or fails [`HEALTH_FAILURES_MAX`] checks in a row. The
/// status's generation goes up as soon as a server is found dead or given up on (so the
/// worker stops that slot's jobs at once, not after the backoff); `ready` is true only between
/// a passed check and the next failure. On stop, the server's process group gets SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]. Its state and restarts are also counted in `metrics` (`--metrics-listen`).
pub async fn supervise(
    config: ServerConfig,
    status: watch::Sender<ServerStatus>,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<ServerMetrics>,
) {
    let Some(mut server) = Supervised::new(config, Publisher { status, metrics }) else {
        return;
    };
    let mut restarts: u64 = 0;
    loop {
        if stop_requested(&stop) {
            return;
        }
        server.status.publish(ServerStatus {
            generation: server.generation,
            ready: false,
        });
        let child = match server.command().spawn() {
            Ok(child) => child,
            Err(error) => {
                eprintln!(
                    "agentctl worker: {}: cannot start ({error}); retrying in {} s",
                    server.name,
                    server.backoff.as_secs()
                );
                server.count_restart();
                if server.back_off(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        let Some(why) = server.live(child, &mut stop).await else {
            eprintln!("agentctl worker: {}: stopped", server.name);
            return;
        };
        restarts += 1;
        server.count_restart();
        eprintln!(
            "agentctl worker: {}: {why}; restarting in {} s (restart {restarts})",
            server.name,
            server.backoff.as_secs()
        );
        if server.back_off(&mut stop).await {
            return;
        }
    }
}

/// One slot's model server, across its restarts.
struct Supervised {
    config: ServerConfig,
    /// Answers the health checks.
    http: reqwest::Client,
    health_url: String,
    status: Publisher,
    /// `model server of GPU N`, for messages.
    name: String,
    /// The server's output, to its log file.
    log: mpsc::Sender<Vec<u8>>,
    /// The log's writer task; it ends once every sender is gone.
    _log_writer: tokio::task::JoinHandle<()>,
    /// Wait before the next restart; back to the first once a server came up.
    backoff: Duration,
    /// The current life's generation (see [`ServerStatus`]).
    generation: u64,
}

impl Supervised {
    /// The supervisor's state before the first start; `None` (said on stderr) when no HTTP
    /// client can be built for the health checks: the slot stays unused.
    fn new(config: ServerConfig, status: Publisher) -> Option<Supervised> {
        let name = format!("model server of GPU {}", config.gpu_index);
        let http = match reqwest::Client::builder()
            .timeout(HEALTH_REQUEST_TIMEOUT.min(config.check_interval.max(Duration::from_secs(1))))
            .no_proxy()
            .build()
        {
            Ok(http) => http,
            Err(error) => {
                eprintln!("agentctl worker: {name}: cannot build an HTTP client ({error}); the slot stays unused");
                return None;
            }
        };
        let (log, writer) = spawn_log_writer(config.log_path.clone(), config.log_bytes_max);
        Some(Supervised {
            health_url: format!("{}{}", config.url(), config.health_path),
            config,
            http,
            status,
            name,
            log,
            _log_writer: writer,
            backoff: RESTART_BACKOFF_INITIAL,
            generation: 0,
        })
    }

    fn count_restart(&self) {
        self.status.metrics.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits the backoff before the next start, then doubles it (up to its cap); true when a
    /// stop was requested meanwhile.
    async fn back_off(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        if wait_or_stop(self.backoff, stop).await {
            return true;
        }
        self.backoff = (self.backoff * 2).min(RESTART_BACKOFF_MAX);
        false
    }

    /// `sh -c COMMAND` in its own process group, with the slot's environment.
    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(&self.config.command_line)
            .envs(self.config.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// One life of the server: its output to the log, health checks until it must be restarted
    /// (why) or a stop is requested (`None`), then its process group stopped.
    async fn live(
        &mut self,
        mut child: tokio::process::Child,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let (name, config) = (&self.name, &self.config);
        self.status.metrics.up.store(true, Ordering::Relaxed);
        let pid = child.id();
        eprintln!(
            "agentctl worker: {name}: started (pid {}) on port {}: {}",
            pid.unwrap_or(0),
            config.port,
            config.command_line
        );
        let _log_writer_gone_means_output_dropped = self
            .log
            .send(
                format!(
                    "--- agentctl worker: {name} started (pid {}, generation {}): {}\n",
                    pid.unwrap_or(0),
                    self.generation,
                    config.command_line
                )
                .into_bytes(),
            )
            .await;
        let copy_stdout = tokio::spawn(copy_to_log(child.stdout.take(), self.log.clone()));
        let copy_stderr = tokio::spawn(copy_to_log(child.stderr.take(), self.log.clone()));
        let started_at = Instant::now();
        let why = tokio::select! {
            why = watch_server(config, &self.http, &self.health_url, &self.status, self.generation, started_at, &mut child, &mut self.backoff) => Some(why),
            _ = stop.wait_for(|stop| *stop) => None,
        };
        self.generation += 1;
        self.status.publish(ServerStatus {
            generation: self.generation,
            ready: false,
        });
        stop_group(pid, &mut child).await;
        self.status.metrics.up.store(false, Ordering::Relaxed);
        // The pipes close once the whole group is gone; bounded so a grandchild that escaped
        // the group cannot hold the supervisor.
        let _copied_or_gave_up =
            tokio::time::timeout(STOP_GRACE, async { tokio::join!(copy_stdout, copy_stderr) })
                .await;
        why
    }
}

/// Waits for readiness, then checks health every interval; returns why the server must be
/// restarted.
#[allow(clippy::too_many_arguments)] // reason: one call site; the pieces are the supervisor's own state
async fn watch_server(
    config: &ServerConfig,
    http: &reqwest::Client,
    health_url: &str,
    status: &Publisher,
    generation: u64,
    started_at: Instant,
    child: &mut tokio::process::Child,
    backoff: &mut Duration,
) -> String {
    let name = format!("model server of GPU {}", config.gpu_index);
    let ready_poll = READY_POLL_INTERVAL.min(config.check_interval);
    loop {
        if healthy(http, health_url).await {
            break;
        }
        if started_at.elapsed() >= config.ready_timeout {
            return format!(
                "not ready after {} s (no HTTP 200 from {health_url})",
                config.ready_timeout.as_secs()
            );
        }
        tokio::select! {
            exited = child.wait() => return describe_exit(exited),
            _ = tokio::time::sleep(ready_poll) => {}
        }
    }
    eprintln!(
        "agentctl worker: {name}: ready after {:.1} s ({health_url} answered 200)",
        started_at.elapsed().as_secs_f64()
    );
    status.publish(ServerStatus {
        generation,
        ready: true,
    });
    // It came up: the next failure starts the backoff over.
    *backoff = RESTART_BACKOFF_INITIAL;
    let mut failures_in_a_row: u32 = 0;
    loop {
        tokio::select! {
            exited = child.wait() => return describe_exit(exited),
            _ = tokio::time::sleep(config.check_interval) => {}
        }
        if healthy(http, health_url).await {
            if failures_in_a_row > 0 {
                eprintln!("agentctl worker: {name}: healthy again; taking jobs again");
                status.publish(ServerStatus {
                    generation,
                    ready: true,
                });
            }
            failures_in_a_row = 0;
            continue;
        }
        failures_in_a_row += 1;
        status
            .metrics
            .health_check_failures
            .fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "agentctl worker: {name}: unhealthy ({health_url} did not answer 200; {failures_in_a_row}/{HEALTH_FAILURES_MAX}); no new jobs on its GPU until it answers"
        );
        // No new leases while it is in doubt; running jobs go on until it is restarted.
        status.not_ready();
        if failures_in_a_row >= HEALTH_FAILURES_MAX {
            return format!("failed {HEALTH_FAILURES_MAX} health checks in a row");
        }
    }
}

/// The server's status as the worker loop reads it, mirrored into its metrics.
struct Publisher {
    status: watch::Sender<ServerStatus>,
    metrics: Arc<ServerMetrics>,
}

impl Publisher {
    fn publish(&self, status: ServerStatus) {
        self.metrics.ready.store(status.ready, Ordering::Relaxed);
        self.status.send_replace(status);
    }

    /// Not ready, same generation (a failed check).
    fn not_ready(&self) {
        self.metrics.ready.store(false, Ordering::Relaxed);
        self.status.send_if_modified(|current| {
            let was_ready = current.ready;
            current.ready = false;
            was_ready
        });
    }
}

async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    matches!(http.get(url).send().await, Ok(response) if response.status() == reqwest::StatusCode::OK)
}

pub(crate) fn describe_exit(exited: std::io::Result<std::process::ExitStatus>) -> String {
    match exited {
        Ok(status) => format!("exited ({status})"),
        Err(error) => format!("could not be waited for ({error})"),
    }
}

fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Sleeps `wait`; true when a stop was requested meanwhile.
async fn wait_or_stop(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let slept = tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.wait_for(|stop| *stop) => false,
    };
    !slept || stop_requested(stop)
}

/// SIGTERM to the server's process group, SIGKILL after [`STOP_GRACE`].
async fn stop_group(pid: Option<u32>, child: &mut tokio::process::Child) {
    let Some(pid) = pid else { return };
    let group = nix::unistd::Pid::from_raw(pid as i32);
    // ESRCH: already gone, which is what we want.
    let _already_gone = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _already_gone = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _reaped_or_gone = child.wait().await;
    }
    // The leader is gone; children it left in the group must not outlive it.
    let _already_gone = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}

async fn copy_to_log<R: AsyncRead + Unpin>(reader: Option<R>, log: mpsc::Sender<Vec<u8>>) {
    let Some(mut reader) = reader else { return };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if log.send(buffer[..read].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One task owns the log file: appends what the server prints, and moves the file to `.1` when
/// it reaches `bytes_max`. It ends once every sender is dropped and what they sent is written;
/// await the handle to know that.
pub(crate) fn spawn_log_writer(
    path: PathBuf,
    bytes_max: u64,
) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<Vec<u8>>(LOG_CHANNEL_CHUNKS_MAX);
    let writer = tokio::spawn(async move {
        let mut file: Option<(tokio::fs::File, u64)> = None;
        let mut warned = false;
        while let Some(chunk) = receiver.recv().await {
            if file.is_none() {
                file = open_log(&path).await;
            }
            let Some((handle, size)) = file.as_mut() else {
                if !warned {
                    eprintln!(
                        "agentctl worker: cannot write the model server log {}; its output is dropped",
                        path.display()
                    );
                    warned = true;
                }
                continue;
            };
            // Flushed per chunk so that `tail -f` and a crash both see everything printed.
            if handle.write_all(&chunk).await.is_err() || handle.flush().await.is_err() {
                file = None;
                continue;
            }
            *size += chunk.len() as u64;
            if *size >= bytes_max {
                let _flushed_or_lost = handle.flush().await;
                file = None;
                let mut rotated = path.clone().into_os_string();
                rotated.push(".1");
                if let Err(error) = tokio::fs::rename(&path, &rotated).await {
                    eprintln!(
                        "agentctl worker: cannot rotate {} ({error})",
                        path.display()
                    );
                }
            }
        }
    });
    (sender, writer)
}

async fn open_log(path: &PathBuf) -> Option<(tokio::fs::File, u64)> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.ok()?;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .ok()?;
    let size = file.metadata().await.ok()?.len();
    Some((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_gets_gpu_and_port() {
        assert_eq!(
            expand_template("vllm --port {port} --tag gpu{gpu} {port}", 3, 8004),
            "vllm --port 8004 --tag gpu3 8004"
        );
    }

    #[tokio::test]
    async fn log_is_rotated_at_its_cap_keeping_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/gpu0.log");
        let (log, _writer) = spawn_log_writer(path.clone(), 10);
        log.send(b"0123456789ab".to_vec()).await.unwrap();
        log.send(b"tail".to_vec()).await.unwrap();
        drop(log);
        let rotated = dir.path().join("logs/gpu0.log.1");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let current = tokio::fs::read(&path).await.unwrap_or_default();
            if current == b"tail" {
                break;
            }
            assert!(Instant::now() < deadline, "log never got the tail");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tokio::fs::read(&rotated).await.unwrap(), b"0123456789ab");
    }
}
