//! The worker loop behind `agentctl worker`: long-polls for leases into free slots, runs a
//! handler per job, heartbeats at a fraction of the lease TTL, and reports the outcome.
//!
//! A job whose lease is lost (expired, cancelled, superseded) is stopped at once: the handler
//! sees `lost` turn true and a command handler kills the job's whole process group. On SIGTERM
//! the worker stops leasing, lets running jobs finish until the drain deadline, then stops the
//! rest and fails them as retryable so another worker picks them up.
//!
//! Each attempt's output goes to a `crate::job_log::AttemptLog` as it comes (the job's log file
//! with `--log-dir`, and the tail sent with the completion or failure as `log_tail`).
//!
//! A slot takes a lease only while its gates are open: its model server is ready (`--serve`)
//! and its persistent actor said hello (`--persistent`, `crate::persistent`). What the worker
//! does is counted in `crate::worker_metrics` (`--metrics-listen`).

use crate::http_client::{Client, ClientError};
use crate::job_log::{self, AttemptInfo, AttemptLog, JobLogSettings, OutputSink};
use crate::pipe::{Keep, Kept};
use crate::worker_metrics::{JobEnd, WorkerMetrics};
use agentd_schemas::api::{LeaseGrant, LeaseRequest};
use agentd_schemas::events::Tags;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Mutex};

/// Most bytes of stderr kept for a failure message (the tail says the most).
pub const STDERR_TAIL_BYTES: usize = 4096;
/// Most bytes of stdout read as a job result.
pub const STDOUT_BYTES_MAX: usize = 1024 * 1024;

/// One execution slot; on a GPU box, one per GPU (or `--episodes-per-gpu` per GPU).
#[derive(Debug, Clone)]
pub struct Slot {
    pub index: usize,
    /// Extra environment for processes run in this slot (e.g. `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(String, String)>,
    /// The slot's model server (`--serve`), when there is one: no lease is taken into the slot
    /// while it is not ready, and the slot's running job is stopped and failed as retryable
    /// when it goes down or is restarted.
    pub server: Option<watch::Receiver<ServerStatus>>,
    /// The slot's persistent actor (`--persistent`), when there is one: true while it is
    /// running and said hello; no lease is taken into the slot otherwise (it is starting, or
    /// being restarted after it died).
    pub actor: Option<watch::Receiver<bool>>,
}

impl Slot {
    /// A slot without a model server or an actor is always ready.
    fn ready(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|server| server.borrow().ready)
            && self.actor.as_ref().is_none_or(|actor| *actor.borrow())
    }
}

/// One model server's state, as its supervisor publishes it (`crate::model_server`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStatus {
    /// Counts the server's lives: it goes up the moment the server is found dead or is killed
    /// for a restart. A job that began under one generation must not go on under another (the
    /// server lost whatever the job had asked it).
    pub generation: u64,
    /// Answered its health check, and has not failed one since.
    pub ready: bool,
}

/// How often the worker looks again for a slot whose model server became ready (or whose actor
/// said hello), while every free slot waits for one.
pub const SERVER_READY_POLL: Duration = Duration::from_millis(200);

/// What a handler gets for one job.
pub struct JobContext {
    pub grant: LeaseGrant,
    pub client: Client,
    pub slot: Slot,
    /// Turns true when the lease is lost or the drain deadline passed: stop now.
    pub stop: watch::Receiver<StopReason>,
    /// Where the job's output goes as it comes: its log file (`--log-dir`) and the tail sent
    /// with the completion or failure (`crate::job_log`).
    pub output: OutputSink,
}

/// Why a running job must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Running,
    LeaseLost,
    Draining,
    /// The slot's model server went down or was restarted under the job.
    ServerLost,
}

/// How a job ended, as the handler reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Complete(Option<serde_json::Value>),
    Fail {
        error: String,
        retryable: bool,
    },
    /// Stopped because of a lost lease or the drain deadline; the worker reports what fits.
    Stopped,
}

/// A job handler: a command to run, or a built-in.
pub type Handler =
    Arc<dyn Fn(JobContext) -> Pin<Box<dyn Future<Output = JobOutcome> + Send>> + Send + Sync>;

/// Settings of a worker.
#[derive(Clone)]
pub struct WorkerOptions {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub tags: Tags,
    pub slots: Vec<Slot>,
    /// Long-poll wait per lease request.
    pub wait_ms: u64,
    /// After SIGTERM, how long running jobs may take before they are stopped and failed.
    pub drain_timeout: Duration,
    /// Heartbeat every `lease_ttl / heartbeat_divisor`.
    pub heartbeat_divisor: u32,
    /// Stop after this many jobs (for tests and batch runs); `None` runs until SIGTERM.
    pub max_jobs: Option<u64>,
    /// Job log files and the tail sent to the daemon.
    pub job_logs: JobLogSettings,
    /// Where jobs, lease losses and heartbeat failures are counted (`--metrics-listen`).
    pub metrics: Arc<WorkerMetrics>,
}

/// Counters printed when the worker stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerSummary {
    pub completed: u64,
    pub failed: u64,
    pub lost: u64,
}

/// Runs until `shutdown` turns true (then drains) or `max_jobs` jobs were handled.
pub async fn run(
    client: Client,
    options: WorkerOptions,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) -> Result<WorkerSummary, ClientError> {
    let free_slots = Arc::new(Mutex::new(options.slots.clone()));
    let summary = Arc::new(Mutex::new(WorkerSummary::default()));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    let mut leased_total: u64 = 0;
    let (slot_freed_tx, mut slot_freed_rx) =
        tokio::sync::mpsc::channel::<()>(options.slots.len().max(1));
    let mut backoff = Duration::from_millis(100);
    let mut lease_failures_in_a_row: u64 = 0;
    loop {
        if *shutdown.borrow() || options.max_jobs.is_some_and(|max| leased_total >= max) {
            break;
        }
        let (free, waiting_for_gate) = {
            let slots = free_slots.lock().await;
            let ready = slots.iter().filter(|slot| slot.ready()).count();
            (ready, slots.len() - ready)
        };
        if free == 0 {
            // A server becoming ready (or an actor saying hello) has no channel into this loop;
            // look again shortly.
            let server_poll = async {
                if waiting_for_gate > 0 {
                    tokio::time::sleep(SERVER_READY_POLL).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = slot_freed_rx.recv() => {}
                _ = shutdown.changed() => {}
                Some(_) = running.join_next() => {}
                _ = server_poll => {}
            }
            continue;
        }
        let want = options
            .max_jobs
            .map_or(free as u64, |max| (max - leased_total).min(free as u64))
            as u32;
        let request = LeaseRequest {
            worker_id: options.worker_id.clone(),
            queues: options.queues.clone(),
            tags: Some(options.tags.clone()),
            max_jobs: Some(want),
            wait_ms: Some(options.wait_ms),
        };
        let response = tokio::select! {
            response = client.lease(&request) => response,
            _ = shutdown.changed() => continue,
        };
        let leases = match response {
            Ok(response) => {
                backoff = Duration::from_millis(100);
                lease_failures_in_a_row = 0;
                response.leases
            }
            Err(error) if error.is_transient() => {
                eprintln!(
                    "agentctl worker: lease request failed ({error}); retrying in {} ms",
                    backoff.as_millis()
                );
                // Once per streak: the retries say the same thing again.
                if lease_failures_in_a_row == 0 {
                    if let Some(hint) = error.hint() {
                        eprintln!("hint: {hint}");
                    }
                }
                lease_failures_in_a_row += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(error) => return Err(error),
        };
        for grant in leases {
            leased_total += 1;
            let slot = {
                let mut slots = free_slots.lock().await;
                let position = slots.iter().rposition(Slot::ready);
                position.map(|position| slots.swap_remove(position))
            };
            let Some(slot) = slot else {
                // The daemon never grants more than asked; answer it honestly if it did (or a
                // model server went down during the long poll). If that fails too, the lease
                // expires and the job runs again.
                let _expires_if_unanswered = client
                    .fail(grant.lease_id, "worker had no free slot", true)
                    .await;
                continue;
            };
            let context_client = client.clone();
            let handler = handler.clone();
            let free_slots = free_slots.clone();
            let summary = summary.clone();
            let slot_freed = slot_freed_tx.clone();
            let drain = drain_rx.clone();
            let metrics = options.metrics.clone();
            let queue = grant.job.queue.clone();
            metrics.job_started(&queue);
            let attempt_log = AttemptLog::start(
                &options.job_logs,
                &AttemptInfo {
                    job_id: grant.job_id,
                    lease_id: grant.lease_id,
                    attempt: grant.attempt,
                    worker_id: options.worker_id.clone(),
                    started_at_ms: job_log::now_ms(),
                },
            );
            let divisor = options.heartbeat_divisor.max(2);
            running.spawn(async move {
                let outcome = run_one(
                    context_client,
                    grant,
                    slot.clone(),
                    handler,
                    drain,
                    divisor,
                    attempt_log,
                    metrics.clone(),
                )
                .await;
                {
                    let mut summary = summary.lock().await;
                    match outcome {
                        Reported::Completed => summary.completed += 1,
                        Reported::Failed => summary.failed += 1,
                        Reported::Lost => summary.lost += 1,
                    }
                }
                metrics.job_ended(
                    &queue,
                    match outcome {
                        Reported::Completed => JobEnd::Completed,
                        Reported::Failed => JobEnd::Failed,
                        Reported::Lost => JobEnd::Lost,
                    },
                );
                free_slots.lock().await.push(slot);
                // Full means the loop already has a wake-up pending; one is enough.
                let _wake_up_pending = slot_freed.try_send(());
            });
        }
        while running.try_join_next().is_some() {}
    }
    // Finished jobs stay in the set until joined; only count the ones still running.
    while running.try_join_next().is_some() {}
    // After `max_jobs`, running jobs finish in their own time, unless a stop is requested.
    if !running.is_empty() && !*shutdown.borrow() {
        eprintln!(
            "agentctl worker: max jobs leased; waiting for {} running job(s)",
            running.len()
        );
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                // A closed channel disables this branch instead of firing it in a loop.
                Ok(()) = shutdown.changed() => if *shutdown.borrow() { break },
            }
        }
    }
    // Drain: no new leases; running jobs get until the deadline, then are stopped.
    if !running.is_empty() {
        eprintln!(
            "agentctl worker: draining {} running job(s) for up to {} s",
            running.len(),
            options.drain_timeout.as_secs()
        );
        let deadline = tokio::time::sleep(options.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    // Every job's heartbeat task holds a receiver until its job ends.
                    let _no_receivers_means_no_jobs = drain_tx.send(true);
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
    let summary = *summary.lock().await;
    Ok(summary)
}

#[derive(Clone, Copy)]
enum Reported {
    Completed,
    Failed,
    Lost,
}

#[allow(clippy::too_many_arguments)] // reason: one call site; each piece is the job's own
async fn run_one(
    client: Client,
    grant: LeaseGrant,
    slot: Slot,
    handler: Handler,
    mut drain: watch::Receiver<bool>,
    divisor: u32,
    attempt_log: AttemptLog,
    metrics: Arc<WorkerMetrics>,
) -> Reported {
    let lease_id = grant.lease_id;
    let attempt = grant.attempt;
    let (stop_tx, stop_rx) = watch::channel(StopReason::Running);
    let interval = Duration::from_millis((grant.job.lease_ttl_ms / divisor as u64).max(50));
    let heartbeat_client = client.clone();
    let heartbeat_stop = stop_tx.clone();
    let lease_ttl = Duration::from_millis(grant.job.lease_ttl_ms);
    let job_id = grant.job_id;
    let heartbeats = tokio::spawn(async move {
        // The lease was granted a moment ago; each successful heartbeat renews it for a TTL
        // from when it was sent (a conservative reading of the daemon's clock).
        let mut held_until = Instant::now() + lease_ttl;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                // A closed channel disables this branch instead of firing it in a loop.
                Ok(()) = drain.changed() => {
                    if *drain.borrow() {
                        let _receiver_gone_means_job_done = heartbeat_stop.send(StopReason::Draining);
                        return;
                    }
                }
            }
            let sent_at = Instant::now();
            // A hung daemon must not hold the heartbeat past the lease's end either.
            let answer = tokio::time::timeout(
                held_until.saturating_duration_since(sent_at),
                heartbeat_client.heartbeat(lease_id),
            )
            .await;
            if !matches!(answer, Ok(Ok(_))) {
                metrics.heartbeat_failed();
            }
            match answer {
                Ok(Ok(_)) => held_until = sent_at + lease_ttl,
                Ok(Err(error))
                    if matches!(error.code(), Some("lease_lost") | Some("not_found")) =>
                {
                    eprintln!("agentctl worker: lease {lease_id} of {job_id} lost ({error}); stopping the job");
                    let _receiver_gone_means_job_done = heartbeat_stop.send(StopReason::LeaseLost);
                    return;
                }
                // Unreachable daemon: once the lease has surely expired there, someone else may
                // already run the job; going on would be zombie work.
                Err(_) => {
                    eprintln!("agentctl worker: lease {lease_id} of {job_id} expired while the daemon did not answer; stopping the job");
                    let _receiver_gone_means_job_done = heartbeat_stop.send(StopReason::LeaseLost);
                    return;
                }
                Ok(Err(error)) if Instant::now() >= held_until => {
                    eprintln!("agentctl worker: lease {lease_id} of {job_id} expired while the daemon was unreachable ({error}); stopping the job");
                    let _receiver_gone_means_job_done = heartbeat_stop.send(StopReason::LeaseLost);
                    return;
                }
                Ok(Err(error)) => eprintln!(
                    "agentctl worker: heartbeat for {lease_id} failed ({error}); will retry"
                ),
            }
        }
    });
    let server_watch = slot.server.clone().map(|mut server| {
        let server_stop = stop_tx.clone();
        let status = *server.borrow();
        let started_under = status.generation;
        // The slot was ready when it was picked, but its server may have gone down since: a
        // job must not start against a server that is not ready (it would never be stopped).
        let down_at_start = !status.ready;
        let slot_index = slot.index;
        tokio::spawn(async move {
            // A dropped sender means the worker is stopping its servers after the drain.
            let went_down = down_at_start
                || server
                    .wait_for(|status| status.generation != started_under)
                    .await
                    .is_ok();
            if went_down {
                eprintln!("agentctl worker: the model server of slot {slot_index} went down; stopping {job_id} (retryable)");
                server_stop.send_if_modified(|reason| {
                    let running = *reason == StopReason::Running;
                    if running {
                        *reason = StopReason::ServerLost;
                    }
                    running
                });
            }
        })
    });
    let context = JobContext {
        grant,
        client: client.clone(),
        slot,
        stop: stop_rx.clone(),
        output: attempt_log.sink(),
    };
    let outcome = handler(context).await;
    heartbeats.abort();
    if let Some(server_watch) = server_watch {
        server_watch.abort();
    }
    let stop_reason = *stop_rx.borrow();
    let (end_line, silent_detail) = end_line(attempt, &outcome, stop_reason);
    let log_tail = attempt_log
        .finish(&end_line, silent_detail.as_deref())
        .await;
    let report = match (outcome, stop_reason) {
        (_, StopReason::LeaseLost) => return Reported::Lost,
        // A job that failed once its server was gone most likely failed because of it.
        (JobOutcome::Stopped | JobOutcome::Fail { .. }, StopReason::ServerLost) => client
            .fail_with_log_tail(lease_id, SERVER_LOST_ERROR, true, log_tail)
            .await
            .map(|_| Reported::Failed),
        (JobOutcome::Stopped, StopReason::Draining)
        | (JobOutcome::Stopped, StopReason::Running) => client
            .fail_with_log_tail(lease_id, SHUTDOWN_ERROR, true, log_tail)
            .await
            .map(|_| Reported::Failed),
        (JobOutcome::Complete(result), _) => client
            .complete_with_log_tail(lease_id, result, log_tail)
            .await
            .map(|_| Reported::Completed),
        (JobOutcome::Fail { error, retryable }, _) => client
            .fail_with_log_tail(lease_id, &error, retryable, log_tail)
            .await
            .map(|_| Reported::Failed),
    };
    match report {
        Ok(reported) => reported,
        Err(error) if error.code() == Some("lease_lost") => Reported::Lost,
        Err(error) => {
            eprintln!("agentctl worker: could not report {lease_id}: {error}; the lease will expire and the job run again");
            Reported::Lost
        }
    }
}

const SERVER_LOST_ERROR: &str = "the slot's model server went down or was restarted under the job";
const SHUTDOWN_ERROR: &str = "worker stopped the job while shutting down";

/// The `==` line that ends an attempt in its log, and what to add to it when the job printed
/// nothing (a built-in's result), so even a silent job's log says what came of it.
fn end_line(
    attempt: u32,
    outcome: &JobOutcome,
    stop_reason: StopReason,
) -> (String, Option<String>) {
    let detail = |text: &str| {
        let first_line = text.lines().next().unwrap_or("");
        job_log::first_bytes_of(first_line, job_log::END_LINE_DETAIL_BYTES_MAX)
    };
    match (outcome, stop_reason) {
        (_, StopReason::LeaseLost) => (
            format!("== attempt {attempt} stopped: the lease was lost (expired or cancelled)"),
            None,
        ),
        (JobOutcome::Stopped | JobOutcome::Fail { .. }, StopReason::ServerLost) => (
            format!("== attempt {attempt} failed (retryable): {SERVER_LOST_ERROR}"),
            None,
        ),
        (JobOutcome::Stopped, _) => (
            format!("== attempt {attempt} failed (retryable): {SHUTDOWN_ERROR}"),
            None,
        ),
        (JobOutcome::Complete(result), _) => (
            format!("== attempt {attempt} completed"),
            result
                .as_ref()
                .map(|result| format!("result: {}", detail(&result.to_string()))),
        ),
        (JobOutcome::Fail { error, retryable }, _) => (
            format!(
                "== attempt {attempt} failed ({}): {}",
                if *retryable {
                    "retryable"
                } else {
                    "not retryable"
                },
                detail(error)
            ),
            None,
        ),
    }
}

/// How the worker reaches the daemon; a command handler passes it on to each job's process
/// (`AGENTD_URL`, `AGENTD_TOKEN`, `AGENTD_CA_CERT`) so the job can call the daemon the same way.
#[derive(Debug, Clone)]
pub struct DaemonAccess {
    pub url: String,
    /// Bearer token, when the daemon requires one.
    pub token: Option<String>,
    /// Absolute path of the PEM file of the CA to trust for https URLs.
    pub ca_cert: Option<PathBuf>,
}

impl DaemonAccess {
    /// Sets `AGENTD_URL`, and sets or removes `AGENTD_TOKEN` and `AGENTD_CA_CERT`: never
    /// inherited, so a job sees what this worker uses, not a stale value from the worker's own
    /// environment.
    pub fn apply_to(&self, command: &mut tokio::process::Command) {
        command.env("AGENTD_URL", &self.url);
        match &self.token {
            Some(token) => command.env("AGENTD_TOKEN", token),
            None => command.env_remove("AGENTD_TOKEN"),
        };
        match &self.ca_cert {
            Some(path) => command.env("AGENTD_CA_CERT", path),
            None => command.env_remove("AGENTD_CA_CERT"),
        };
    }
}

/// A handler that runs `argv` per job: the leased job as JSON on stdin, stdout (JSON, or text
/// wrapped as a string) becomes the result on exit 0; otherwise the tail of stderr is the error.
pub fn command_handler(argv: Vec<String>, daemon: DaemonAccess) -> Handler {
    let argv = Arc::new(argv);
    let daemon = Arc::new(daemon);
    Arc::new(move |context: JobContext| {
        let argv = argv.clone();
        let daemon = daemon.clone();
        Box::pin(async move { run_command(&argv, &daemon, context).await })
    })
}

async fn run_command(
    argv: &[String],
    daemon: &DaemonAccess,
    mut context: JobContext,
) -> JobOutcome {
    let Some((program, args)) = argv.split_first() else {
        return JobOutcome::Fail {
            error: "worker has no command to run".into(),
            retryable: false,
        };
    };
    let grant = &context.grant;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("AGENTD_JOB_ID", grant.job_id.to_string())
        .env("AGENTD_LEASE_ID", grant.lease_id.to_string())
        .env("AGENTD_ATTEMPT", grant.attempt.to_string())
        .env("AGENTD_SLOT", context.slot.index.to_string())
        .envs(context.slot.env.iter().cloned())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(task_id) = &grant.job.task_id {
        command.env("AGENTD_TASK_ID", task_id);
    }
    daemon.apply_to(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return JobOutcome::Fail {
                error: format!("cannot start {program}: {error}"),
                retryable: false,
            }
        }
    };
    let job_json = serde_json::to_vec(&grant.job).unwrap_or_default();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read stdin closes it early; that is fine.
            let _command_may_ignore_stdin = stdin.write_all(&job_json).await;
        }
        drop(stdin);
    };
    let stdout_log = context.output.clone();
    let stderr_log = context.output.clone();
    let read_stdout = async move {
        read_logged(stdout.as_mut(), Keep::Head, STDOUT_BYTES_MAX, &stdout_log).await
    };
    let read_stderr = async move {
        read_logged(stderr.as_mut(), Keep::Tail, STDERR_TAIL_BYTES, &stderr_log).await
    };
    let pid = child.id();
    let run = async {
        let ((), out, err, status) = tokio::join!(feed, read_stdout, read_stderr, child.wait());
        (out, err, status)
    };
    tokio::pin!(run);
    let stop = async {
        // A dropped sender means the job is over either way.
        let _sender_gone = context
            .stop
            .wait_for(|reason| *reason != StopReason::Running)
            .await;
    };
    let (stdout, stderr, status) = tokio::select! {
        finished = &mut run => finished,
        _ = stop => {
            kill_group(pid);
            return JobOutcome::Stopped;
        }
    };
    match status {
        Ok(status) if status.success() => {
            let text = String::from_utf8_lossy(&stdout);
            let trimmed = text.trim();
            let result = if trimmed.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str(trimmed)
                        .unwrap_or_else(|_| serde_json::Value::String(trimmed.to_string())),
                )
            };
            JobOutcome::Complete(result)
        }
        Ok(status) => {
            let tail = String::from_utf8_lossy(&stderr).trim().to_string();
            let how = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => format!(
                    "killed by signal {}",
                    std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                ),
            };
            JobOutcome::Fail {
                error: if tail.is_empty() {
                    how
                } else {
                    format!("{how}: {tail}")
                },
                retryable: true,
            }
        }
        Err(error) => JobOutcome::Fail {
            error: format!("waiting for the command failed: {error}"),
            retryable: true,
        },
    }
}

/// Kills a job's whole process group (the command was started as its leader).
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // ESRCH: the group is already gone, which is what we want.
        let _already_gone = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Reads a pipe to its end, keeping `keep` of it (at most `max_bytes`) and handing every chunk
/// to the job's log as it comes.
async fn read_logged<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<&mut R>,
    keep: Keep,
    max_bytes: usize,
    output: &OutputSink,
) -> Vec<u8> {
    let mut kept = Kept::new(keep, max_bytes);
    let Some(reader) = reader else {
        return kept.into_bytes();
    };
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept.into_bytes(),
            Ok(read) => {
                output.write(&buffer[..read]).await;
                kept.push(&buffer[..read]);
            }
        }
    }
}
