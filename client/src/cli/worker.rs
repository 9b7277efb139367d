//! `agentctl worker --queue Q [--tag k=v]... [--concurrency N | --gpus all|0,1
//! [--episodes-per-gpu N] [--serve 'CMD {gpu} {port}']] (-- CMD ARGS... | --builtin
//! astgrep.verify)`: slots (one per `--concurrency`, or `--episodes-per-gpu` per GPU), tags (the
//! user's, over the GPU ones), model servers per GPU (`crate::model_server`), and the handler (a
//! command, or a built-in job kind), and job logs (`--log-dir`, `--log-max-bytes`,
//! `--log-retention`, `--log-tail-bytes`; `crate::job_log`). With `--persistent`, one
//! long-lived actor per slot speaks the line protocol of `crate::persistent`; with
//! `--metrics-listen`, the worker's counters are served as Prometheus text
//! (`crate::worker_metrics`).

mod slots;

use super::{parse_duration_ms, parse_key_value};
use crate::builtin::{astgrep_verify, Builtin};
use crate::gpu::{self, GpuSelection};
use crate::http_client::Client;
use crate::job_log::{self, JobLogSettings};
use crate::model_server;
use crate::persistent::{ActorPool, PersistentSettings};
use crate::sandbox::SandboxLimits;
use crate::worker::{self, DaemonAccess, Handler, Slot, WorkerOptions};
use crate::worker_metrics::{self, WorkerMetrics};
use agentd_schemas::api::LOG_TAIL_BYTES_MAX;
use agentd_schemas::events::Tags;
use anyhow::{bail, Context};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[cfg(test)]
use slots::with_episodes_per_gpu;
use slots::{slots_and_tags, SupervisedServer, EPISODES_PER_GPU_MAX};

/// The end of `agentctl worker --help`: what a job's command gets.
pub const JOB_ENVIRONMENT_HELP: &str = "\
Job environment: CMD gets the leased job as JSON on stdin, and these variables:
  AGENTD_URL          the daemon URL (--url)
  AGENTD_TOKEN        the bearer token (--token / AGENTD_TOKEN), when there is one
  AGENTD_CA_CERT      absolute path of --ca-cert (or AGENTD_CA_CERT), when one is given
  AGENTD_JOB_ID       the job id (job_N)
  AGENTD_LEASE_ID     the lease id; pass it to writes so a stale job is refused
  AGENTD_ATTEMPT      the attempt number, from 1
  AGENTD_SLOT         the slot index, from 0
  AGENTD_TASK_ID      the job's task id, when it has one
  with --gpus: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID, AGENTD_GPU_INDEX,
               AGENTD_GPU_UUID, AGENTD_GPU_NAME
  with --serve:  AGENTD_MODEL_URL=http://127.0.0.1:<port of the slot's GPU's server>
On exit 0, stdout (JSON, or text taken as a JSON string) is the job's result; otherwise the
job fails with the tail of stderr. A lost lease kills the job's whole process group.
Output: stdout and stderr, as they come, also go to --log-dir/<job_id>.log (when given), and
the last --log-tail-bytes of each attempt go with its completion or failure (the job's
log_tail; `agentctl jobs logs job_N` prints either).
With --persistent: CMD starts once per slot (with AGENTD_URL, AGENTD_TOKEN, AGENTD_CA_CERT,
AGENTD_SLOT, the GPU and model server variables, and AGENTD_PERSISTENT_PROTOCOL=1), writes
{\"type\":\"hello\",\"protocol\":1} on stdout when ready, then reads one job per line on stdin
({\"type\":\"job\",\"job_id\",\"lease_id\",\"attempt\",\"slot\",\"payload\",...: the job JSON above
plus the lease and slot}) and answers each with {\"type\":\"result\",\"job_id\",\"result\"} or
{\"type\":\"failure\",\"job_id\",\"error\",\"retryable\"}; {\"type\":\"cancel\",\"job_id\"} asks it to stop a
job (answer {\"type\":\"cancelled\",\"job_id\"}). Its stderr goes to the running job's log. End of
stdin: exit. docs/persistent-actors.md has the whole protocol.";

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Queue to lease from (repeatable)
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// Tag this worker advertises, k=v (repeatable); jobs requiring tags only go to workers with
    /// them. A --tag overrides a tag --gpus derives (e.g. --tag gpu=H100-SXM)
    #[arg(long = "tag", value_parser = parse_key_value)]
    tags: Vec<(String, String)>,
    /// Jobs run at once (without --gpus)
    #[arg(long, default_value_t = 1, conflicts_with = "gpus")]
    concurrency: usize,
    /// Run one slot per NVIDIA GPU: `all` or indices like 0,1,2 (as nvidia-smi numbers them).
    /// Each job's process gets CUDA_VISIBLE_DEVICES=<index> (with CUDA_DEVICE_ORDER=PCI_BUS_ID)
    /// and AGENTD_GPU_UUID; the worker advertises gpu=<model> (e.g. H100), gpu_mem_gib=<GiB>
    /// and gpu_count=<n>. Fails when nvidia-smi is missing or lists no GPU
    #[arg(long, value_parser = parse_gpu_selection)]
    gpus: Option<GpuSelection>,
    /// With --gpus: jobs run at once on each GPU, all pinned to it (and pointed at its --serve
    /// server). Each job keeps its own lease and heartbeats
    #[arg(long, default_value_t = 1, requires = "gpus")]
    episodes_per_gpu: usize,
    /// With --gpus: a long-lived model server per GPU, run by `sh -c` with {gpu} (the GPU index)
    /// and {port} (--serve-port-base + the GPU's position in --gpus) filled in, pinned with
    /// CUDA_VISIBLE_DEVICES. No job is leased for a GPU until its server answers HTTP 200 on
    /// --serve-health; it is checked every --serve-check-interval and restarted with backoff
    /// when it exits or fails 3 checks in a row, failing that GPU's running jobs as retryable.
    /// Jobs get AGENTD_MODEL_URL. Stopped after the drain on SIGTERM
    #[arg(long, requires = "gpus")]
    serve: Option<String>,
    /// Port of the first GPU's --serve server; the next GPU gets the next port
    #[arg(long, default_value_t = 8001, requires = "serve")]
    serve_port_base: u16,
    /// Path on the server that answers HTTP 200 when it is ready
    #[arg(long, default_value = "/health", requires = "serve")]
    serve_health: String,
    /// How long a starting server may take to answer its health path (e.g. 600s, 20m)
    #[arg(long, default_value = "600s", value_parser = parse_duration_ms, requires = "serve")]
    serve_ready_timeout: u64,
    /// How often a ready server's health path is checked (e.g. 15s)
    #[arg(long, default_value = "15s", value_parser = parse_duration_ms, requires = "serve")]
    serve_check_interval: u64,
    /// Directory for the servers' output, one gpu<N>.log per GPU (moved to gpu<N>.log.1 at
    /// --serve-log-mib)
    #[arg(long, default_value = "agentd-serve-logs", requires = "serve")]
    serve_log_dir: PathBuf,
    /// Size of a server log, in MiB, at which it is rotated (one old file is kept)
    #[arg(long, default_value_t = 100, requires = "serve")]
    serve_log_mib: u64,
    /// nvidia-smi to run for --gpus
    #[arg(long, env = "AGENTD_NVIDIA_SMI", default_value = "nvidia-smi")]
    nvidia_smi: String,
    /// Handle jobs with a built-in instead of a command: `astgrep.verify` runs the payload's
    /// ast-grep action in the sandbox and records the sandbox result and a rule-based reward on
    /// the task's trajectory (docs/astgrep_verify.md)
    #[arg(long, value_parser = parse_builtin, conflicts_with = "command")]
    builtin: Option<Builtin>,
    /// Sandbox limits (TOML) for --builtin astgrep.verify [default: built-in defaults, the same
    /// as configs/sandbox.toml]
    #[arg(long, requires = "builtin")]
    sandbox_config: Option<PathBuf>,
    /// Worker id shown in leases and job history [default: <hostname>-<pid>]
    #[arg(long)]
    worker_id: Option<String>,
    /// Long-poll wait per lease request, in ms
    #[arg(long, default_value_t = 20_000)]
    wait_ms: u64,
    /// After SIGTERM, seconds running jobs may take before they are stopped and failed as retryable
    #[arg(long, default_value_t = 30)]
    drain_timeout_s: u64,
    /// Exit after this many jobs
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Keep each job's stdout and stderr, as they come, in DIR/<job_id>.log (one `== attempt`
    /// header per attempt; successful jobs' logs too). Recommended: /var/log/agentd-worker.
    /// Read one with `agentctl jobs logs job_N` on this box [default: no files]
    #[arg(long, env = "AGENTD_WORKER_LOG_DIR")]
    log_dir: Option<PathBuf>,
    /// Cap of one job's log file (e.g. 16MiB, 512KiB, or bytes): the first part is kept, then a
    /// `== log capped` line; the last bytes still go to the daemon
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes, requires = "log_dir")]
    log_max_bytes: u64,
    /// Job log files last changed longer ago than this are deleted at start and every hour
    /// (e.g. 7d, 12h)
    #[arg(long, default_value = "7d", value_parser = job_log::parse_retention, requires = "log_dir")]
    log_retention: Duration,
    /// Bytes of the end of each attempt's output sent with its completion or failure (shown as
    /// the job's log_tail); 0 sends none
    #[arg(long, default_value_t = LOG_TAIL_BYTES_MAX, value_parser = parse_log_tail_bytes)]
    log_tail_bytes: usize,
    /// Run one long-lived CMD per slot (per --concurrency lane, or per GPU episode lane) and
    /// give it the slot's jobs one at a time as JSON lines on its stdin; it answers each with a
    /// JSON line on stdout, so a model is loaded once per process. Its first stdout line must be
    /// {"type":"hello","protocol":1}. A dead actor is restarted (its job retried); one that
    /// ignores a cancel is killed and restarted (docs/persistent-actors.md)
    #[arg(long, conflicts_with = "builtin")]
    persistent: bool,
    /// With --persistent: how long a starting actor may take to say hello (e.g. 600s, 20m). At
    /// the worker's start, an actor that exits, says something else first, or stays silent this
    /// long stops the worker before it leases anything
    #[arg(long, default_value = "600s", value_parser = parse_duration_ms, requires = "persistent")]
    persistent_ready_timeout: u64,
    /// With --persistent: how long an actor may take to answer a cancel (lost lease, drain
    /// deadline, lost model server) before it is killed and a new one started (e.g. 10s)
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms, requires = "persistent")]
    persistent_cancel_grace: u64,
    /// Serve the worker's metrics as Prometheus text on http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464 (port 0 picks a free port; the address is printed at start): jobs by
    /// queue, lease losses, heartbeat failures, model servers per GPU, persistent actors
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Most job completions sent in one call. 1 completes each job with its own POST
    /// /v1/leases/{id}/complete. Above 1, the slots' completions go through one completer: a
    /// completion that comes while no call is in flight is sent at once, alone; those that come
    /// while a call is in flight go together in the next POST /v1/leases/complete (at most N,
    /// and at most 10000). Each job is still reported done, and its slot freed, only once its
    /// own completion is durable; failures and heartbeats keep their own calls
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..=worker::COMPLETE_BATCH_MAX as u64)
    )]
    complete_batch_max: u64,
    /// Complete each job with a plain POST /v1/leases/{id}/complete and lease the next with
    /// its own POST /v1/leases. By default a slot's completion also asks for the slot's next
    /// job (`next`), which the daemon leases in the same durable record when one is ready, so a
    /// busy queue costs one round trip per job instead of two; with none ready the slot
    /// long-polls as before. Completions batched by --complete-batch-max never ask
    #[arg(long)]
    no_lease_on_complete: bool,
    /// Command run per job: the job JSON on stdin, stdout (JSON) is the result on exit 0 (its
    /// environment is listed below); with --persistent, the long-lived actor of each slot
    #[arg(last = true, required_unless_present = "builtin")]
    command: Vec<String>,
}

fn parse_gpu_selection(text: &str) -> Result<GpuSelection, String> {
    text.parse()
        .map_err(|error: gpu::GpuError| error.to_string())
}

fn parse_builtin(text: &str) -> Result<Builtin, String> {
    text.parse()
}

fn parse_log_tail_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("expected a number of bytes, got {text:?}"))?;
    if bytes > LOG_TAIL_BYTES_MAX {
        return Err(format!(
            "at most {LOG_TAIL_BYTES_MAX} (the daemon refuses a longer log_tail)"
        ));
    }
    Ok(bytes)
}

/// Parses sizes like `16MiB`, `512KiB`, `1GiB` or plain bytes (at least 1 KiB, so a header and
/// some output fit).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, unit)))
        .unwrap_or((text, 1));
    let bytes = number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(unit))
        .ok_or_else(|| format!("expected a size like 16MiB, 512KiB or 1048576, got {text:?}"))?;
    if bytes < 1024 {
        return Err(format!("{text:?} is under the minimum of 1KiB"));
    }
    Ok(bytes)
}

pub async fn run(
    client: Client,
    daemon: DaemonAccess,
    args: WorkerArgs,
    json: bool,
) -> anyhow::Result<()> {
    check_args(&args)?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let (mut slots, tags, servers) = slots_and_tags(&args).await?;
    let slot_count = slots.len();
    let metrics = Arc::new(WorkerMetrics::new(&args.queues, slot_count));
    // Dropped (and so stopped) when the worker returns.
    let _metrics_server = match args.metrics_listen {
        Some(address) => Some(serve_metrics(address, &metrics).await?),
        None => None,
    };
    let mut actors = args.persistent.then(|| {
        ActorPool::spawn(
            PersistentSettings {
                argv: args.command.clone(),
                daemon: daemon.clone(),
                ready_timeout: Duration::from_millis(args.persistent_ready_timeout),
                cancel_grace: Duration::from_millis(args.persistent_cancel_grace),
                log_dir: args.log_dir.clone(),
                log_bytes_max: args.log_max_bytes,
            },
            &mut slots,
            metrics.clone(),
        )
    });
    let handler = match &actors {
        Some(actors) => actors.handler(),
        None => handler(&args, daemon)?,
    };
    let options = worker_options(&args, worker_id.clone(), tags.clone(), slots, &metrics);
    // Dropped (and so stopped) when the worker returns.
    let _retention = match &args.log_dir {
        Some(dir) => Some(keep_log_retention(dir, &args).await),
        None => None,
    };
    let mut shutdown_rx = shutdown_on_stop_signal();
    eprintln!(
        "agentctl worker {worker_id}: leasing from {} with {slot_count} slot(s), tags [{}]",
        args.queues.join(","),
        tags.iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let supervisors = ServerSupervisors::start(servers, &metrics);
    // No lease before every actor said hello: an actor that cannot start stops the worker here,
    // with its reason, instead of failing jobs one by one.
    let started = match actors.as_mut() {
        None => Ok(true),
        Some(actors) => wait_for_actors(actors, slot_count, &mut shutdown_rx).await,
    };
    let summary = match started {
        Ok(true) => worker::run(client, options, handler, shutdown_rx)
            .await
            .map_err(anyhow::Error::from),
        Ok(false) => Ok(worker::WorkerSummary::default()),
        Err(error) => Err(error),
    };
    // After the drain (or a fatal error): the actors' stdin is closed and they exit; the servers
    // go last, so no job or actor loses its server.
    if let Some(actors) = actors {
        eprintln!("agentctl worker: stopping {slot_count} persistent actor(s)");
        actors.stop().await;
    }
    supervisors.stop().await;
    print_summary(&worker_id, &summary?, json);
    Ok(())
}

/// Refuses settings that cannot work, before anything starts.
fn check_args(args: &WorkerArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.episodes_per_gpu == 0 || args.episodes_per_gpu > EPISODES_PER_GPU_MAX {
        bail!("--episodes-per-gpu must be between 1 and {EPISODES_PER_GPU_MAX}");
    }
    if args.serve_check_interval == 0 {
        bail!("--serve-check-interval must be more than 0");
    }
    if !args.serve_health.starts_with('/') {
        bail!("--serve-health must be a path starting with /, e.g. /health");
    }
    if args.persistent_ready_timeout == 0 {
        bail!("--persistent-ready-timeout must be more than 0");
    }
    Ok(())
}

/// Serves the worker's counters on `address` (`--metrics-listen`) until dropped.
async fn serve_metrics(
    address: SocketAddr,
    metrics: &Arc<WorkerMetrics>,
) -> anyhow::Result<AbortOnDrop> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--metrics-listen {address}: cannot listen"))?;
    let bound = listener.local_addr()?;
    eprintln!("agentctl worker: metrics on http://{bound}/metrics");
    Ok(AbortOnDrop(tokio::spawn(worker_metrics::serve(
        listener,
        metrics.clone(),
    ))))
}

fn worker_options(
    args: &WorkerArgs,
    worker_id: String,
    tags: Tags,
    slots: Vec<Slot>,
    metrics: &Arc<WorkerMetrics>,
) -> WorkerOptions {
    WorkerOptions {
        worker_id,
        queues: args.queues.clone(),
        tags,
        slots,
        wait_ms: args.wait_ms,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        heartbeat_divisor: 3,
        max_jobs: args.max_jobs,
        job_logs: JobLogSettings {
            dir: args.log_dir.clone(),
            file_bytes_max: args.log_max_bytes,
            tail_bytes: args.log_tail_bytes,
        },
        metrics: metrics.clone(),
        // At most `COMPLETE_BATCH_MAX` (10000): the parser refused more.
        complete_batch_max: args.complete_batch_max as usize,
        lease_on_complete: !args.no_lease_on_complete,
    }
}

/// Deletes old job logs in `dir` now and every hour after, until dropped.
async fn keep_log_retention(dir: &Path, args: &WorkerArgs) -> AbortOnDrop {
    eprintln!(
        "agentctl worker: job logs in {} (at most {} bytes per job, deleted after {})",
        dir.display(),
        args.log_max_bytes,
        job_log::format_retention(args.log_retention)
    );
    job_log::sweep_and_report(dir, args.log_retention).await;
    AbortOnDrop(tokio::spawn(job_log::keep_retention(
        dir.to_path_buf(),
        args.log_retention,
    )))
}

/// A receiver that turns true on SIGTERM or Ctrl-C.
fn shutdown_on_stop_signal() -> watch::Receiver<bool> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        eprintln!("agentctl worker: stop requested; no new leases, finishing running jobs");
        // The worker loop holds the receiver until it returns; after that nobody cares.
        let _loop_already_done = shutdown_tx.send(true);
    });
    shutdown_rx
}

/// The supervisors of the slots' model servers (`--serve`).
struct ServerSupervisors {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl ServerSupervisors {
    fn start(servers: Vec<SupervisedServer>, metrics: &WorkerMetrics) -> ServerSupervisors {
        let (stop, servers_stop) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for (config, status) in servers {
            let server_metrics = metrics.server(config.gpu_index);
            tasks.spawn(model_server::supervise(
                config,
                status,
                servers_stop.clone(),
                server_metrics,
            ));
        }
        ServerSupervisors { stop, tasks }
    }

    /// Stops every server and waits for their supervisors to return.
    async fn stop(mut self) {
        if self.tasks.is_empty() {
            return;
        }
        eprintln!(
            "agentctl worker: stopping {} model server(s)",
            self.tasks.len()
        );
        let _supervisors_hold_receivers_until_they_return = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Waits until every persistent actor said hello (`true`) or a stop was requested (`false`).
async fn wait_for_actors(
    actors: &mut ActorPool,
    slot_count: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<bool> {
    eprintln!("agentctl worker: waiting for {slot_count} persistent actor(s) to say hello");
    tokio::select! {
        started = actors.wait_until_started() => Ok(started.map(|()| true)?),
        _ = shutdown.wait_for(|stop| *stop) => Ok(false),
    }
}

fn print_summary(worker_id: &str, summary: &worker::WorkerSummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"worker_id": worker_id, "completed": summary.completed, "failed": summary.failed, "lost": summary.lost})
        );
    } else {
        eprintln!(
            "agentctl worker {worker_id}: stopped; {} completed, {} failed, {} lost",
            summary.completed, summary.failed, summary.lost
        );
    }
}

/// The command handler, or the built-in one.
fn handler(args: &WorkerArgs, daemon: DaemonAccess) -> anyhow::Result<Handler> {
    match args.builtin {
        None => Ok(worker::command_handler(args.command.clone(), daemon)),
        Some(Builtin::AstgrepVerify) => {
            let limits = match &args.sandbox_config {
                Some(path) => SandboxLimits::load(path)?,
                None => SandboxLimits::default(),
            };
            // The sandbox child is this very binary (`agentctl sandbox serve-job`).
            let executable = std::env::current_exe()
                .context("cannot find the agentctl executable to run the sandbox")?;
            Ok(astgrep_verify::handler(astgrep_verify::VerifyConfig {
                limits,
                executable,
            }))
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `<hostname>-<pid>`, unique per process on a box.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", std::process::id())
}

/// SIGTERM or Ctrl-C.
pub async fn wait_for_stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests;
