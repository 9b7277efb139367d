//! `agentctl worker --queue Q [--tag k=v]... [--concurrency N] -- CMD ARGS...`

use super::parse_key_value;
use crate::http_client::Client;
use crate::worker::{self, Slot, WorkerOptions};
use anyhow::bail;
use clap::Args;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Queue to lease from (repeatable)
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// Tag this worker advertises, k=v (repeatable); jobs requiring tags only go to workers with them
    #[arg(long = "tag", value_parser = parse_key_value)]
    tags: Vec<(String, String)>,
    /// Jobs run at once
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
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
    /// Command run per job: the job JSON on stdin, stdout (JSON) is the result on exit 0
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(client: Client, url: &str, args: WorkerArgs, json: bool) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let slots = (0..args.concurrency).map(|index| Slot { index, env: Vec::new() }).collect();
    let options = WorkerOptions {
        worker_id: worker_id.clone(),
        queues: args.queues.clone(),
        tags: args.tags.iter().cloned().collect(),
        slots,
        wait_ms: args.wait_ms,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        heartbeat_divisor: 3,
        max_jobs: args.max_jobs,
    };
    let handler = worker::command_handler(args.command.clone(), url.to_string());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        eprintln!("agentctl worker: stop requested; no new leases, finishing running jobs");
        let _ = shutdown_tx.send(true);
    });
    eprintln!("agentctl worker {worker_id}: leasing from {} with {} slot(s)", args.queues.join(","), args.concurrency);
    let summary = worker::run(client, options, handler, shutdown_rx).await?;
    if json {
        println!("{}", serde_json::json!({"worker_id": worker_id, "completed": summary.completed, "failed": summary.failed, "lost": summary.lost}));
    } else {
        eprintln!("agentctl worker {worker_id}: stopped; {} completed, {} failed, {} lost", summary.completed, summary.failed, summary.lost);
    }
    Ok(())
}

/// `<hostname>-<pid>`, unique per process on a box.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|name| name.trim().to_string()).ok().filter(|name| !name.is_empty()).unwrap_or_else(|| "worker".into());
    let host: String = host.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
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
