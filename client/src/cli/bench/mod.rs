//! `agentctl bench`: like `nats bench` or `redis-benchmark`, against a running daemon.
//!
//! Three shapes (`--shape`), each on a fresh queue (`bench-<pid>` unless `--queue` names one):
//!
//! - `single` (the default): the path `agentctl worker` and the Python `Worker` take. P producers
//!   each submit one job per `POST /v1/jobs` and wait for its acknowledgement before the next
//!   (closed loop); C consumers lease one job at a time and complete it with its own
//!   `POST /v1/leases/{id}/complete`, which leases the consumer's next job in the same call
//!   (`next`) as `agentctl worker` does; a consumer long-polls `POST /v1/leases` only when none
//!   came back. `--no-lease-on-complete` is the three-call path (submit, lease, complete) to
//!   compare with in the same session.
//! - `batch`: producers submit `--batch` jobs per `POST /v1/jobs/batch`; consumers lease up to
//!   `--lease-batch` jobs and still complete each with its own call, as workers do.
//!   `--complete-batch` completes each lease's jobs with one `POST /v1/leases/complete` instead:
//!   the bulk path, which no worker takes.
//! - `--complete-batch-max N` (single and batch): consumers complete through the same
//!   `crate::worker::CompletionCoalescer` as `agentctl worker --complete-batch-max N`, one for
//!   all consumers as one per worker; every printed figure names its completion mode.
//! - `latency`: open loop. Single submits at `--rate`/s for `--rate-seconds` while C consumers
//!   (lease 1, one complete per job) drain them: submit-acknowledgement latency, and
//!   enqueue-to-lease latency at that rate, beside the daemon's `agentd_log_fsync_seconds`
//!   over the run (`fsync.rs`; needs a token that may read `/metrics` when access control is on).
//! - `rollouts`: the writes of RL actors. C actors (`--consumers`) create `--rollouts` rollouts,
//!   `--group-size` per task in one group, and record `--steps` steps in each, every step as
//!   three calls (step with a state update, sandbox result, reward): rollouts/s, steps/s,
//!   writes/s and the latency of each call.
//!
//! `single` and `batch` run until `--jobs` jobs are completed and print a line per window of
//! `--window` completed jobs, so a slowdown as the log grows shows as falling windows.
//!
//! Enqueue-to-lease runs from the submit acknowledgement the producer saw (the job is durable and
//! leasable) to the lease response that handed the job out. A job leased before its producer
//! recorded the acknowledgement counts 0: dropping those, the fastest starts, would bias the
//! figures upward.

mod closed_loop;
mod consumer;
mod fsync;
mod latency;
mod redis_peer;
mod resp;
mod rollouts;
mod window;

use self::closed_loop::{run_closed_loop, ClosedLoopPlan};
use self::latency::{run_latency, LatencyPlan};
use self::rollouts::{run_rollouts, RolloutPlan};
use crate::http_client::Client;
use agentd_schemas::api::SubmitJobRequest;
use clap::builder::RangedU64ValueParser;
use clap::{Args, ValueEnum};
use serde::Serialize;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure; every printed figure names its shape
    #[arg(long, value_enum, default_value_t = Shape::Single)]
    shape: Shape,
    /// Jobs to submit and complete (single and batch shapes)
    #[arg(long, default_value_t = 100_000, value_parser = from_one_to(JOBS_MAX))]
    jobs: u64,
    /// Print a line per this many completed jobs (single and batch shapes). One window when
    /// --jobs is smaller; raised so that there are at most 1000 windows
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Concurrent producers, each waiting for its acknowledgement before submitting again
    /// (single and batch shapes)
    #[arg(long, alias = "submitters", default_value_t = 8, value_parser = from_one_to(TASKS_MAX))]
    producers: u64,
    /// Concurrent consumers leasing and completing (all shapes)
    #[arg(long, alias = "workers", default_value_t = 8, value_parser = from_one_to(TASKS_MAX))]
    consumers: u64,
    /// Producers pause while this many jobs are submitted but not yet completed, so that
    /// enqueue-to-lease measures the daemon, not an ever-growing backlog; 0 for no limit
    /// (single and batch shapes; raised to --batch when smaller)
    #[arg(long, default_value_t = 1000)]
    backlog_max: u64,
    /// Jobs per submit request (batch shape)
    #[arg(long, default_value_t = 100, value_parser = from_one_to(SUBMIT_BATCH_JOBS_MAX))]
    batch: u64,
    /// Most jobs per lease request (batch shape)
    #[arg(
        long,
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=LEASE_JOBS_MAX)
    )]
    lease_batch: u32,
    /// Batch shape only: complete each lease's jobs with one POST /v1/leases/complete (the bulk
    /// path, which workers do not take) instead of one POST /v1/leases/{id}/complete per job
    #[arg(long)]
    complete_batch: bool,
    /// Single and batch shapes: consumers hand each job's completion to the completion coalescer
    /// of `agentctl worker --complete-batch-max N` (one for all consumers) and wait for its own
    /// durable answer, so the figures measure that worker path; 1 completes each job with its
    /// own call
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..=crate::worker::COMPLETE_BATCH_MAX as u64)
    )]
    complete_batch_max: u64,
    /// Single, batch and latency shapes, completing one call per job: complete with a plain
    /// POST /v1/leases/{id}/complete and lease with its own POST /v1/leases, as workers did
    /// before complete-then-lease (`agentctl worker --no-lease-on-complete`). By default the
    /// completion of each lease's last job asks for the next (`next`), as `agentctl worker`
    /// does, and a consumer long-polls only when none came back
    #[arg(long)]
    no_lease_on_complete: bool,
    /// Single submits per second (latency shape)
    #[arg(long, default_value_t = 1000, value_parser = from_one_to(RATE_PER_S_MAX))]
    rate: u64,
    /// Seconds of submitting at --rate (latency shape)
    #[arg(long, default_value_t = 5, value_parser = from_one_to(RATE_SECONDS_MAX))]
    rate_seconds: u64,
    /// Rollouts to create (rollouts shape)
    #[arg(long, default_value_t = 2000)]
    rollouts: u64,
    /// Rollouts per task, sharing one group (rollouts shape)
    #[arg(long, default_value_t = 8)]
    group_size: u64,
    /// Steps per rollout, each a step, a sandbox result and a reward (rollouts shape)
    #[arg(long, default_value_t = 3)]
    steps: u64,
    /// Queue to use; a fresh one, or leftover jobs skew the figures; the rollouts shape uses it
    /// as the prefix of its task ids and groups [default: bench-<pid>]
    #[arg(long)]
    queue: Option<String>,
    /// Payload size in bytes
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Run the shape against a peer instead of agentd, to compare in the same run: `redis`, a
    /// durable Redis queue (LPUSH, BLMOVE to a processing list, LREM; the server must run with
    /// appendonly yes and appendfsync always). Single, batch and latency shapes
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Address of the --peer server
    #[arg(long, default_value = "127.0.0.1:6379")]
    peer_addr: String,
}

/// A queue to measure beside agentd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// Redis with every write fsynced before its answer (appendfsync always)
    Redis,
}

/// The traffic a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One job per POST /v1/jobs, lease 1 job, one complete call per job that leases the
    /// consumer's next job (unless --no-lease-on-complete): the path `agentctl worker` and the
    /// Python Worker take. Reports end-to-end jobs/s and enqueue-to-lease per window
    Single,
    /// --batch jobs per POST /v1/jobs/batch, lease up to --lease-batch, still one complete call
    /// per job. Reports like single
    Batch,
    /// Single submits at a fixed --rate (open loop) while consumers drain them: submit-ack
    /// latency and enqueue-to-lease latency at that rate, beside the daemon's own fdatasync
    /// times over the run (from /metrics: the floor under a durable ack)
    Latency,
    /// Actors create rollouts in groups and record steps with sandbox results and rewards:
    /// rollouts/s, steps/s, writes/s and per-call latency. These are real trajectories (tasks
    /// `<queue>-task-N`, model `bench-model`) that stats and exports include: run it against a
    /// scratch daemon, not one whose data trains a model
    Rollouts,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Single => "single",
            Shape::Batch => "batch",
            Shape::Latency => "latency",
            Shape::Rollouts => "rollouts",
        }
    }
}

pub async fn run(client: &Client, args: BenchArgs, json: bool) -> anyhow::Result<()> {
    if let Some(Peer::Redis) = args.peer {
        anyhow::ensure!(!json, "--peer prints text only");
        return redis_peer::run(&args, &args.peer_addr).await;
    }
    client.health().await?;
    let output = if json { Output::Json } else { Output::Text };
    match args.shape {
        Shape::Single | Shape::Batch => {
            let plan = ClosedLoopPlan::from_args(&args)?;
            let report = run_closed_loop(client, plan, output).await?;
            report.print(output)
        }
        Shape::Latency | Shape::Rollouts if args.complete_batch_max > 1 => {
            anyhow::bail!("--complete-batch-max needs --shape single or batch")
        }
        Shape::Latency => {
            let plan = LatencyPlan::from_args(&args)?;
            let report = run_latency(client, plan, output).await?;
            report.print(output)?;
            report.fail_on_submit_errors()
        }
        Shape::Rollouts => {
            let plan = RolloutPlan::from_args(&args)?;
            run_rollouts(client, plan).await?.print(output)
        }
    }
}

/// Jobs one single or batch run completes at most.
const JOBS_MAX: u64 = 100_000_000;
/// Producers or consumers at most: each is a task with its own request in flight.
const TASKS_MAX: u64 = 1024;
/// The daemon's default `[queue] batch_jobs_max`.
const SUBMIT_BATCH_JOBS_MAX: u64 = 10_000;
/// The most jobs one lease request may ask for.
const LEASE_JOBS_MAX: i64 = 1000;
/// Latency shape limits: each submit is a task and keeps one latency sample.
const RATE_PER_S_MAX: u64 = 100_000;
const RATE_SECONDS_MAX: u64 = 600;
const LATENCY_SUBMITS_MAX: u64 = 2_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

fn queue_name(args: &BenchArgs) -> String {
    args.queue
        .clone()
        .unwrap_or_else(|| format!("bench-{}", std::process::id()))
}

fn bench_job(queue: &str, payload_bytes: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        queue: queue.to_string(),
        kind: "bench".into(),
        payload: serde_json::json!({ "data": "x".repeat(payload_bytes) }),
        ..Default::default()
    }
}

/// How consumers complete one job per call: leasing the next with the completion (the path of
/// `agentctl worker`) unless `--no-lease-on-complete`.
fn one_call_per_job(args: &BenchArgs) -> consumer::CompleteMode {
    if args.no_lease_on_complete {
        consumer::CompleteMode::OneCallPerJob
    } else {
        consumer::CompleteMode::OneCallPerJobLeasingNext
    }
}

/// Parses a count flag that must lie in `1..=max`.
fn from_one_to(max: u64) -> RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=max)
}
