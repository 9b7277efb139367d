//! `agentctl bench`: like `nats bench` or `redis-benchmark`, against a running daemon.
//!
//! Three shapes (`--shape`), each on a fresh queue (`bench-<pid>` unless `--queue` names one):
//!
//! - `single` (the default): the path `agentctl worker` and the Python `Worker` take. P producers
//!   each submit one job per `POST /v1/jobs` and wait for its acknowledgement before the next
//!   (closed loop); C consumers lease one job at a time and complete it with its own
//!   `POST /v1/leases/{id}/complete`.
//! - `batch`: producers submit `--batch` jobs per `POST /v1/jobs/batch`; consumers lease up to
//!   `--lease-batch` jobs and still complete each with its own call, as workers do.
//!   `--complete-batch` completes each lease's jobs with one `POST /v1/leases/complete` instead:
//!   the bulk path, which no worker takes.
//! - `latency`: open loop. Single submits at `--rate`/s for `--rate-seconds` while C consumers
//!   (lease 1, one complete per job) drain them: submit-acknowledgement latency, and
//!   enqueue-to-lease latency at that rate.
//!
//! `single` and `batch` run until `--jobs` jobs are completed and print a line per window of
//! `--window` completed jobs, so a slowdown as the log grows shows as falling windows.
//!
//! Enqueue-to-lease runs from the submit acknowledgement the producer saw (the job is durable and
//! leasable) to the lease response that handed the job out. A job leased before its producer
//! recorded the acknowledgement counts 0: dropping those, the fastest starts, would bias the
//! figures upward.

use super::output::print_json;
use crate::http_client::Client;
use agentd_schemas::api::{CompleteItem, LeaseGrant, LeaseRequest, SubmitJobRequest};
use agentd_schemas::JobId;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure; every printed figure names its shape
    #[arg(long, value_enum, default_value_t = Shape::Single)]
    shape: Shape,
    /// Jobs to submit and complete (single and batch shapes)
    #[arg(
        long,
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..=JOBS_MAX)
    )]
    jobs: u64,
    /// Print a line per this many completed jobs (single and batch shapes). One window when
    /// --jobs is smaller; raised so that there are at most 1000 windows
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    window: u64,
    /// Concurrent producers, each waiting for its acknowledgement before submitting again
    /// (single and batch shapes)
    #[arg(
        long,
        alias = "submitters",
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..=TASKS_MAX)
    )]
    producers: u64,
    /// Concurrent consumers leasing and completing (all shapes)
    #[arg(
        long,
        alias = "workers",
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..=TASKS_MAX)
    )]
    consumers: u64,
    /// Producers pause while this many jobs are submitted but not yet completed, so that
    /// enqueue-to-lease measures the daemon, not an ever-growing backlog; 0 for no limit
    /// (single and batch shapes; raised to --batch when smaller)
    #[arg(long, default_value_t = 1000)]
    backlog_max: u64,
    /// Jobs per submit request (batch shape)
    #[arg(
        long,
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=SUBMIT_BATCH_JOBS_MAX)
    )]
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
    /// Single submits per second (latency shape)
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=RATE_PER_S_MAX)
    )]
    rate: u64,
    /// Seconds of submitting at --rate (latency shape)
    #[arg(
        long,
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=RATE_SECONDS_MAX)
    )]
    rate_seconds: u64,
    /// Queue to use; a fresh one, or leftover jobs skew the figures [default: bench-<pid>]
    #[arg(long)]
    queue: Option<String>,
    /// Payload size in bytes
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
}

/// The traffic a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One job per POST /v1/jobs, lease 1 job, one complete call per job: the path `agentctl
    /// worker` and the Python Worker take. Reports end-to-end jobs/s and enqueue-to-lease per
    /// window
    Single,
    /// --batch jobs per POST /v1/jobs/batch, lease up to --lease-batch, still one complete call
    /// per job. Reports like single
    Batch,
    /// Single submits at a fixed --rate (open loop) while consumers drain them: submit-ack
    /// latency and enqueue-to-lease latency at that rate
    Latency,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Single => "single",
            Shape::Batch => "batch",
            Shape::Latency => "latency",
        }
    }
}

pub async fn run(client: &Client, args: BenchArgs, json: bool) -> anyhow::Result<()> {
    client.health().await?;
    let output = if json { Output::Json } else { Output::Text };
    match args.shape {
        Shape::Single | Shape::Batch => {
            let plan = ClosedLoopPlan::from_args(&args)?;
            let report = run_closed_loop(client, plan, output).await?;
            report.print(output)
        }
        Shape::Latency => {
            let plan = LatencyPlan::from_args(&args)?;
            let report = run_latency(client, plan, output).await?;
            report.print(output)?;
            report.fail_on_submit_errors()
        }
    }
}

/// Jobs one single or batch run completes at most.
const JOBS_MAX: u64 = 100_000_000;
/// Windows one run reports at most: `--window` is raised to fit, so a tiny window on a large run
/// cannot print millions of lines.
const WINDOWS_MAX: u64 = 1000;
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
/// Long-poll wait of a bench lease request: short, so an idle consumer notices soon that the run
/// is over.
const LEASE_WAIT_MS: u64 = 200;
/// Observations (leases, completions) in flight from consumers to the window accumulator.
const OBSERVATIONS_CAPACITY: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

/// How producers send jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubmitMode {
    /// `POST /v1/jobs`, one job each.
    OneJobPerRequest,
    /// `POST /v1/jobs/batch` with up to this many jobs.
    Batch { jobs_per_request: u64 },
}

/// How consumers complete the jobs of one lease response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum CompleteMode {
    /// `POST /v1/leases/{id}/complete` per job, as workers do.
    OneCallPerJob,
    /// One `POST /v1/leases/complete` for all jobs of a lease response.
    OneCallPerLease,
}

/// What consumers do, in every shape.
#[derive(Debug, Clone)]
struct ConsumerPlan {
    queue: String,
    consumers: u64,
    lease_jobs_max: u32,
    complete_mode: CompleteMode,
}

/// A single or batch run, settled from the arguments.
#[derive(Debug, Clone)]
struct ClosedLoopPlan {
    shape: Shape,
    job: SubmitJobRequest,
    jobs: u64,
    window_jobs: u64,
    producers: u64,
    submit_mode: SubmitMode,
    /// Most jobs submitted and not yet completed; `None` for no limit.
    backlog_max: Option<u64>,
    consumer: ConsumerPlan,
}

impl ClosedLoopPlan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<ClosedLoopPlan> {
        let batch = args.shape == Shape::Batch;
        if args.complete_batch && !batch {
            bail!("--complete-batch needs --shape batch");
        }
        let queue = queue_name(args);
        let window_jobs = args
            .window
            .min(args.jobs)
            .max(args.jobs.div_ceil(WINDOWS_MAX));
        Ok(ClosedLoopPlan {
            shape: args.shape,
            job: bench_job(&queue, args.payload_bytes),
            jobs: args.jobs,
            window_jobs,
            producers: args.producers,
            backlog_max: (args.backlog_max > 0).then(|| {
                let jobs_per_request = if batch { args.batch } else { 1 };
                args.backlog_max.max(jobs_per_request)
            }),
            submit_mode: if batch {
                SubmitMode::Batch {
                    jobs_per_request: args.batch,
                }
            } else {
                SubmitMode::OneJobPerRequest
            },
            consumer: ConsumerPlan {
                queue,
                consumers: args.consumers,
                lease_jobs_max: if batch { args.lease_batch } else { 1 },
                complete_mode: if args.complete_batch {
                    CompleteMode::OneCallPerLease
                } else {
                    CompleteMode::OneCallPerJob
                },
            },
        })
    }

    fn describe(&self) -> String {
        let submit = match self.submit_mode {
            SubmitMode::OneJobPerRequest => "1 job per POST /v1/jobs".to_string(),
            SubmitMode::Batch { jobs_per_request } => {
                format!("{jobs_per_request} jobs per POST /v1/jobs/batch")
            }
        };
        let backlog = match self.backlog_max {
            Some(jobs) => format!("at most {jobs} jobs submitted and not completed"),
            None => "no backlog limit".to_string(),
        };
        format!(
            "shape {}: {} jobs, windows of {}; {} producers submitting {submit}, {backlog}; {}; \
             queue {}",
            self.shape.name(),
            self.jobs,
            self.window_jobs,
            self.producers,
            self.consumer.describe(),
            self.consumer.queue
        )
    }
}

impl ConsumerPlan {
    fn describe(&self) -> String {
        let complete = match self.complete_mode {
            CompleteMode::OneCallPerJob => "each job with its own POST /v1/leases/{id}/complete",
            CompleteMode::OneCallPerLease => "each lease's jobs with one POST /v1/leases/complete",
        };
        format!(
            "{} consumers leasing up to {} (wait {LEASE_WAIT_MS} ms), completing {complete}",
            self.consumers, self.lease_jobs_max
        )
    }

    fn lease_request(&self, index: u64) -> LeaseRequest {
        LeaseRequest {
            worker_id: format!("bench-{index}"),
            queues: vec![self.queue.clone()],
            tags: None,
            max_jobs: Some(self.lease_jobs_max),
            wait_ms: Some(LEASE_WAIT_MS),
        }
    }
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

// ---------------------------------------------------------------------------------------------
// Single and batch shapes: closed loop, reported per window.

#[derive(Debug, Serialize)]
struct ClosedLoopReport {
    shape: Shape,
    queue: String,
    jobs: u64,
    window_jobs: u64,
    producers: u64,
    submit_jobs_per_request: u64,
    consumers: u64,
    lease_jobs_max: u32,
    complete: CompleteMode,
    windows: Vec<WindowReport>,
    total: ClosedLoopTotal,
}

#[derive(Debug, Serialize)]
struct ClosedLoopTotal {
    jobs: u64,
    seconds: f64,
    end_to_end_jobs_per_s: f64,
    /// Last window's jobs/s as a percentage of the first's; absent with one window.
    last_window_percent_of_first: Option<f64>,
}

async fn run_closed_loop(
    client: &Client,
    plan: ClosedLoopPlan,
    output: Output,
) -> anyhow::Result<ClosedLoopReport> {
    if output == Output::Text {
        println!("{}", plan.describe());
    }
    let run_start = Instant::now();
    let acks = Arc::new(AckBook::default());
    let progress = Arc::new(Progress::new(plan.jobs));
    let (observations, received) = mpsc::channel(OBSERVATIONS_CAPACITY);
    let accumulator = WindowAccumulator::new(plan.window_jobs, run_start);
    let lines = (output == Output::Text).then_some(plan.shape);
    let accumulating = tokio::spawn(accumulate(received, accumulator, lines));
    let backlog = plan.backlog_max.map(|jobs| {
        Arc::new(Semaphore::new(
            jobs.min(Semaphore::MAX_PERMITS as u64) as usize
        ))
    });
    let mut tasks = spawn_consumers(
        client,
        &plan.consumer,
        &acks,
        &progress,
        &observations,
        backlog.clone(),
    );
    drop(observations);
    let unclaimed = Arc::new(AtomicU64::new(plan.jobs));
    for _ in 0..plan.producers {
        let producer = produce(
            client.clone(),
            plan.job.clone(),
            plan.submit_mode,
            unclaimed.clone(),
            acks.clone(),
            backlog.clone(),
        );
        tasks.spawn(producer);
    }
    join_all(tasks).await?;
    let windows = accumulating.await.context("window accumulator")?;
    Ok(closed_loop_report(&plan, windows))
}

fn closed_loop_report(plan: &ClosedLoopPlan, windows: Vec<WindowReport>) -> ClosedLoopReport {
    let jobs = windows.iter().map(|window| window.jobs).sum();
    let seconds: f64 = windows.iter().map(|window| window.seconds).sum();
    let last_window_percent_of_first = match (windows.first(), windows.last()) {
        (Some(first), Some(last)) if windows.len() > 1 && first.jobs_per_s > 0.0 => {
            Some(round1(100.0 * last.jobs_per_s / first.jobs_per_s))
        }
        _ => None,
    };
    ClosedLoopReport {
        shape: plan.shape,
        queue: plan.consumer.queue.clone(),
        jobs: plan.jobs,
        window_jobs: plan.window_jobs,
        producers: plan.producers,
        submit_jobs_per_request: match plan.submit_mode {
            SubmitMode::OneJobPerRequest => 1,
            SubmitMode::Batch { jobs_per_request } => jobs_per_request,
        },
        consumers: plan.consumer.consumers,
        lease_jobs_max: plan.consumer.lease_jobs_max,
        complete: plan.consumer.complete_mode,
        total: ClosedLoopTotal {
            jobs,
            seconds: round3(seconds),
            end_to_end_jobs_per_s: per_second(jobs, seconds),
            last_window_percent_of_first,
        },
        windows,
    }
}

impl ClosedLoopReport {
    /// Window lines were printed as they closed; text output adds the total.
    fn print(&self, output: Output) -> anyhow::Result<()> {
        if output == Output::Json {
            return print_json(self);
        }
        let comparison = match self.total.last_window_percent_of_first {
            Some(percent) => format!(
                "last window = {percent:.1}% of first ({} windows)",
                self.windows.len()
            ),
            None => "one window, nothing to compare".to_string(),
        };
        println!(
            "shape {} total: {} jobs in {:.2} s, {:.0} jobs/s end to end; {comparison}",
            self.shape.name(),
            self.total.jobs,
            self.total.seconds,
            self.total.end_to_end_jobs_per_s
        );
        Ok(())
    }
}

/// Submits jobs until none are left to claim, each request waiting for its acknowledgement.
async fn produce(
    client: Client,
    job: SubmitJobRequest,
    mode: SubmitMode,
    unclaimed: Arc<AtomicU64>,
    acks: Arc<AckBook>,
    backlog: Option<Arc<Semaphore>>,
) -> anyhow::Result<()> {
    loop {
        match mode {
            SubmitMode::OneJobPerRequest => {
                if claim(&unclaimed, 1) == 0 {
                    return Ok(());
                }
                wait_for_backlog(backlog.as_deref(), 1).await?;
                let answer = client.submit(&job).await.context("POST /v1/jobs")?;
                acks.record_ack(answer.job_id, Instant::now());
            }
            SubmitMode::Batch { jobs_per_request } => {
                let count = claim(&unclaimed, jobs_per_request);
                if count == 0 {
                    return Ok(());
                }
                wait_for_backlog(backlog.as_deref(), count).await?;
                // Within SUBMIT_BATCH_JOBS_MAX, so it fits a usize.
                let jobs = vec![job.clone(); count as usize];
                let answer = client
                    .submit_batch(jobs)
                    .await
                    .context("POST /v1/jobs/batch")?;
                let acked_at = Instant::now();
                for submitted in answer.jobs {
                    acks.record_ack(submitted.job_id, acked_at);
                }
            }
        }
    }
}

/// Waits until `jobs` more may be submitted without passing the backlog limit, and takes them
/// (consumers give them back as they complete jobs).
async fn wait_for_backlog(backlog: Option<&Semaphore>, jobs: u64) -> anyhow::Result<()> {
    if let Some(backlog) = backlog {
        // `jobs` is at most SUBMIT_BATCH_JOBS_MAX, and the limit is raised to at least that.
        let permits = backlog
            .acquire_many(jobs as u32)
            .await
            .context("backlog limit closed")?;
        permits.forget();
    }
    Ok(())
}

/// Takes up to `wanted` of the jobs left to submit; returns how many it got.
fn claim(unclaimed: &AtomicU64, wanted: u64) -> u64 {
    let update = unclaimed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
        Some(left.saturating_sub(wanted))
    });
    // The closure always answers Some, so this is always Ok; both hold the previous value.
    let left = update.unwrap_or_else(|left| left);
    left.min(wanted)
}

// ---------------------------------------------------------------------------------------------
// Latency shape: open loop at a fixed rate.

#[derive(Debug, Clone)]
struct LatencyPlan {
    job: SubmitJobRequest,
    rate_per_s: u64,
    seconds: u64,
    consumer: ConsumerPlan,
}

impl LatencyPlan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<LatencyPlan> {
        if args.complete_batch {
            bail!("--complete-batch needs --shape batch");
        }
        let submits = args.rate * args.rate_seconds;
        if submits > LATENCY_SUBMITS_MAX {
            bail!("--rate times --rate-seconds is {submits}; at most {LATENCY_SUBMITS_MAX}");
        }
        let queue = queue_name(args);
        Ok(LatencyPlan {
            job: bench_job(&queue, args.payload_bytes),
            rate_per_s: args.rate,
            seconds: args.rate_seconds,
            consumer: ConsumerPlan {
                queue,
                consumers: args.consumers,
                lease_jobs_max: 1,
                complete_mode: CompleteMode::OneCallPerJob,
            },
        })
    }
}

#[derive(Debug, Serialize)]
struct LatencyReport {
    shape: Shape,
    queue: String,
    rate_per_s: u64,
    rate_seconds: u64,
    submits: u64,
    achieved_per_s: f64,
    errors: u64,
    first_error: Option<String>,
    consumers: u64,
    /// Jobs the consumers leased and completed: every acknowledged submit.
    completed: u64,
    /// From the first submit to the last completion.
    seconds_until_all_completed: f64,
    submit_ack: LatencySummary,
    enqueue_to_lease: LatencySummary,
}

/// What the open-loop submitter saw.
#[derive(Debug, Default)]
struct OpenLoopSubmits {
    sent: u64,
    acknowledged: u64,
    ack_ms: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

async fn run_latency(
    client: &Client,
    plan: LatencyPlan,
    output: Output,
) -> anyhow::Result<LatencyReport> {
    if output == Output::Text {
        println!(
            "shape latency: {} single submits (POST /v1/jobs) at {}/s for {} s; {}; queue {}",
            plan.rate_per_s * plan.seconds,
            plan.rate_per_s,
            plan.seconds,
            plan.consumer.describe(),
            plan.consumer.queue
        );
    }
    let run_start = Instant::now();
    let acks = Arc::new(AckBook::default());
    // Known once submitting ends: only acknowledged submits are waited for.
    let progress = Arc::new(Progress::new(u64::MAX));
    let (observations, received) = mpsc::channel(OBSERVATIONS_CAPACITY);
    // One window holding the whole run.
    let accumulator = WindowAccumulator::new(u64::MAX, run_start);
    let accumulating = tokio::spawn(accumulate(received, accumulator, None));
    let consumers = spawn_consumers(
        client,
        &plan.consumer,
        &acks,
        &progress,
        &observations,
        None,
    );
    drop(observations);
    let submits = submit_at_rate(client, &plan, &acks).await?;
    progress.set_target(submits.acknowledged);
    join_all(consumers).await?;
    let windows = accumulating.await.context("window accumulator")?;
    Ok(latency_report(&plan, submits, windows))
}

fn latency_report(
    plan: &LatencyPlan,
    submits: OpenLoopSubmits,
    windows: Vec<WindowReport>,
) -> LatencyReport {
    let (completed, seconds, enqueue_to_lease) = match windows.into_iter().next() {
        Some(window) => (window.jobs, window.seconds, window.enqueue_to_lease),
        None => (0, 0.0, LatencySummary::from_samples(Vec::new())),
    };
    LatencyReport {
        shape: Shape::Latency,
        queue: plan.consumer.queue.clone(),
        rate_per_s: plan.rate_per_s,
        rate_seconds: plan.seconds,
        submits: submits.sent,
        achieved_per_s: per_second(submits.sent, submits.seconds),
        errors: submits.errors,
        first_error: submits.first_error,
        consumers: plan.consumer.consumers,
        completed,
        seconds_until_all_completed: seconds,
        submit_ack: LatencySummary::from_samples(submits.ack_ms),
        enqueue_to_lease,
    }
}

/// Sends single submits on a fixed schedule, not waiting for answers (open loop), so a slow
/// answer shows as latency instead of lowering the rate.
async fn submit_at_rate(
    client: &Client,
    plan: &LatencyPlan,
    acks: &Arc<AckBook>,
) -> anyhow::Result<OpenLoopSubmits> {
    let total = plan.rate_per_s * plan.seconds;
    let interval = Duration::from_secs_f64(1.0 / plan.rate_per_s as f64);
    let mut submits = OpenLoopSubmits {
        ack_ms: Vec::with_capacity(total as usize),
        ..Default::default()
    };
    let mut in_flight = JoinSet::new();
    let start = Instant::now();
    for index in 0..total {
        tokio::time::sleep_until((start + interval.mul_f64(index as f64)).into()).await;
        in_flight.spawn(submit_timed(client.clone(), plan.job.clone(), acks.clone()));
        submits.sent += 1;
        while let Some(answer) = in_flight.try_join_next() {
            submits.record(answer?);
        }
    }
    while let Some(answer) = in_flight.join_next().await {
        submits.record(answer?);
    }
    submits.seconds = start.elapsed().as_secs_f64();
    Ok(submits)
}

/// One submit; answers its acknowledgement latency in milliseconds.
async fn submit_timed(
    client: Client,
    job: SubmitJobRequest,
    acks: Arc<AckBook>,
) -> anyhow::Result<f64> {
    let sent_at = Instant::now();
    let answer = client.submit(&job).await.context("POST /v1/jobs")?;
    let acked_at = Instant::now();
    acks.record_ack(answer.job_id, acked_at);
    Ok(acked_at.duration_since(sent_at).as_secs_f64() * 1000.0)
}

impl OpenLoopSubmits {
    fn record(&mut self, answer: anyhow::Result<f64>) {
        match answer {
            Ok(ack_ms) => {
                self.acknowledged += 1;
                self.ack_ms.push(ack_ms);
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
}

impl LatencyReport {
    fn print(&self, output: Output) -> anyhow::Result<()> {
        if output == Output::Json {
            return print_json(self);
        }
        println!(
            "shape latency: {} submits, achieved {:.0}/s, {} errors{}",
            self.submits,
            self.achieved_per_s,
            self.errors,
            self.first_error
                .as_ref()
                .map(|error| format!(" (first: {error})"))
                .unwrap_or_default()
        );
        print_latency_line("submit ack", &self.submit_ack);
        print_latency_line("enqueue->lease", &self.enqueue_to_lease);
        println!(
            "shape latency: {} jobs completed, the last {:.2} s after the first submit",
            self.completed, self.seconds_until_all_completed
        );
        Ok(())
    }

    /// The report is printed either way; failed submits then fail the command, so a script
    /// does not take a partial run for a clean one.
    fn fail_on_submit_errors(&self) -> anyhow::Result<()> {
        if self.errors > 0 {
            bail!(
                "{} of {} submits failed; first: {}",
                self.errors,
                self.submits,
                self.first_error.as_deref().unwrap_or("-")
            );
        }
        Ok(())
    }
}

fn print_latency_line(what: &str, summary: &LatencySummary) {
    println!(
        "shape latency  {what:<15} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  ({} samples)",
        summary.p50_ms, summary.p99_ms, summary.max_ms, summary.count
    );
}

// ---------------------------------------------------------------------------------------------
// Consumers, shared by every shape.

/// How far a run is: consumers stop once `completed` reaches `target`.
#[derive(Debug)]
struct Progress {
    completed: AtomicU64,
    /// Jobs to complete; `u64::MAX` until known.
    target: AtomicU64,
}

impl Progress {
    fn new(target: u64) -> Progress {
        Progress {
            completed: AtomicU64::new(0),
            target: AtomicU64::new(target),
        }
    }

    fn set_target(&self, target: u64) {
        self.target.store(target, Ordering::Relaxed);
    }

    fn is_done(&self) -> bool {
        self.completed.load(Ordering::Relaxed) >= self.target.load(Ordering::Relaxed)
    }
}

fn spawn_consumers(
    client: &Client,
    plan: &ConsumerPlan,
    acks: &Arc<AckBook>,
    progress: &Arc<Progress>,
    observations: &mpsc::Sender<Observation>,
    backlog: Option<Arc<Semaphore>>,
) -> JoinSet<anyhow::Result<()>> {
    let mut consumers = JoinSet::new();
    for index in 0..plan.consumers {
        let consumer = Consumer {
            client: client.clone(),
            request: plan.lease_request(index),
            complete_mode: plan.complete_mode,
            acks: acks.clone(),
            progress: progress.clone(),
            observations: observations.clone(),
            backlog: backlog.clone(),
        };
        consumers.spawn(consumer.run());
    }
    consumers
}

/// One in-process worker: leases, records each job's enqueue-to-lease, completes.
struct Consumer {
    client: Client,
    request: LeaseRequest,
    complete_mode: CompleteMode,
    acks: Arc<AckBook>,
    progress: Arc<Progress>,
    observations: mpsc::Sender<Observation>,
    /// Given back one permit per completed job, so producers may submit again.
    backlog: Option<Arc<Semaphore>>,
}

impl Consumer {
    async fn run(self) -> anyhow::Result<()> {
        while !self.progress.is_done() {
            let leases = self
                .client
                .lease(&self.request)
                .await
                .context("POST /v1/leases")?
                .leases;
            let leased_at = Instant::now();
            for grant in &leases {
                let enqueue_to_lease_ms = self.acks.enqueue_to_lease_ms(grant.job_id, leased_at);
                self.observe(Observation::Leased {
                    enqueue_to_lease_ms,
                })
                .await?;
            }
            match self.complete_mode {
                CompleteMode::OneCallPerJob => self.complete_each(&leases).await?,
                CompleteMode::OneCallPerLease => self.complete_together(&leases).await?,
            }
        }
        Ok(())
    }

    async fn complete_each(&self, leases: &[LeaseGrant]) -> anyhow::Result<()> {
        for grant in leases {
            self.client
                .complete(grant.lease_id, None)
                .await
                .with_context(|| format!("POST /v1/leases/{}/complete", grant.lease_id))?;
            self.completed(1).await?;
        }
        Ok(())
    }

    async fn complete_together(&self, leases: &[LeaseGrant]) -> anyhow::Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let completions = leases
            .iter()
            .map(|grant| CompleteItem {
                lease_id: grant.lease_id,
                result: None,
            })
            .collect();
        let answer = self
            .client
            .complete_many(completions)
            .await
            .context("POST /v1/leases/complete")?;
        if let Some(failed) = answer.results.iter().find(|item| item.job_id.is_none()) {
            let reason = failed
                .error
                .as_ref()
                .map_or("no reason given", |error| &error.message);
            bail!(
                "POST /v1/leases/complete: {} failed: {reason}",
                failed.lease_id
            );
        }
        self.completed(leases.len() as u64).await
    }

    async fn completed(&self, jobs: u64) -> anyhow::Result<()> {
        self.progress.completed.fetch_add(jobs, Ordering::Relaxed);
        if let Some(backlog) = &self.backlog {
            backlog.add_permits(jobs as usize);
        }
        let at = Instant::now();
        self.observe(Observation::Completed { jobs, at }).await
    }

    async fn observe(&self, observation: Observation) -> anyhow::Result<()> {
        self.observations
            .send(observation)
            .await
            .context("the window accumulator stopped")
    }
}

/// Waits for every task; the first failure is returned and the rest are aborted (dropping the
/// set aborts them), so a consumer that failed cannot leave the others waiting for jobs that
/// will never be completed.
async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(result) = tasks.join_next().await {
        result.context("bench task panicked")??;
    }
    Ok(())
}

/// Submit acknowledgements not yet matched with their lease, and leases that came first. An
/// entry leaves once both sides are seen, so the book holds only jobs in flight.
#[derive(Debug, Default)]
struct AckBook {
    entries: Mutex<HashMap<JobId, AckEntry>>,
}

#[derive(Debug, Clone, Copy)]
enum AckEntry {
    Acknowledged(Instant),
    LeasedFirst,
}

impl AckBook {
    fn record_ack(&self, job_id: JobId, acked_at: Instant) {
        let mut entries = self.lock();
        // A lease seen first already counted 0 for this job; nothing more to keep.
        if entries.remove(&job_id).is_none() {
            entries.insert(job_id, AckEntry::Acknowledged(acked_at));
        }
    }

    fn enqueue_to_lease_ms(&self, job_id: JobId, leased_at: Instant) -> f64 {
        let mut entries = self.lock();
        match entries.remove(&job_id) {
            Some(AckEntry::Acknowledged(acked_at)) => {
                leased_at.saturating_duration_since(acked_at).as_secs_f64() * 1000.0
            }
            Some(AckEntry::LeasedFirst) | None => {
                entries.insert(job_id, AckEntry::LeasedFirst);
                0.0
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, AckEntry>> {
        // Each critical section is one map insert or remove, so a panic elsewhere cannot leave
        // the map half-changed: a poisoned lock is safe to use.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// ---------------------------------------------------------------------------------------------
// Windows.

/// What consumers tell the window accumulator.
#[derive(Debug)]
enum Observation {
    /// A lease response handed out a job.
    Leased { enqueue_to_lease_ms: f64 },
    /// The daemon acknowledged the completion of `jobs` jobs.
    Completed { jobs: u64, at: Instant },
}

#[derive(Debug, Clone, Serialize)]
struct WindowReport {
    index: u64,
    /// Jobs completed before this window began.
    completed_before: u64,
    /// Jobs completed in it: the window size, fewer in a last partial window, a few more when a
    /// bulk completion crosses the boundary.
    jobs: u64,
    seconds: f64,
    jobs_per_s: f64,
    /// Of the jobs leased in this window.
    enqueue_to_lease: LatencySummary,
}

/// Cuts the stream of observations into windows of `window_jobs` completed jobs.
#[derive(Debug)]
struct WindowAccumulator {
    window_jobs: u64,
    window_start: Instant,
    /// The latest completion seen: the end of the window when it closes.
    last_completion_at: Instant,
    completed_before: u64,
    completed_in_window: u64,
    /// Bounded by the window size plus the jobs leased but not yet completed.
    enqueue_to_lease_ms: Vec<f64>,
    windows: Vec<WindowReport>,
}

impl WindowAccumulator {
    fn new(window_jobs: u64, run_start: Instant) -> WindowAccumulator {
        WindowAccumulator {
            window_jobs,
            window_start: run_start,
            last_completion_at: run_start,
            completed_before: 0,
            completed_in_window: 0,
            enqueue_to_lease_ms: Vec::new(),
            windows: Vec::new(),
        }
    }

    /// Takes one observation; answers the window it closed, if any.
    fn observe(&mut self, observation: Observation) -> Option<&WindowReport> {
        match observation {
            Observation::Leased {
                enqueue_to_lease_ms,
            } => {
                self.enqueue_to_lease_ms.push(enqueue_to_lease_ms);
                None
            }
            Observation::Completed { jobs, at } => {
                self.completed_in_window += jobs;
                self.last_completion_at = self.last_completion_at.max(at);
                if self.completed_in_window < self.window_jobs {
                    return None;
                }
                Some(self.close_window())
            }
        }
    }

    /// Closes the last window if it has completions; answers it.
    fn close_partial_window(&mut self) -> Option<&WindowReport> {
        if self.completed_in_window == 0 {
            return None;
        }
        Some(self.close_window())
    }

    fn close_window(&mut self) -> &WindowReport {
        let seconds = self
            .last_completion_at
            .duration_since(self.window_start)
            .as_secs_f64();
        let jobs = self.completed_in_window;
        let samples = std::mem::take(&mut self.enqueue_to_lease_ms);
        self.windows.push(WindowReport {
            index: self.windows.len() as u64,
            completed_before: self.completed_before,
            jobs,
            seconds: round3(seconds),
            jobs_per_s: per_second(jobs, seconds),
            enqueue_to_lease: LatencySummary::from_samples(samples),
        });
        self.completed_before += jobs;
        self.completed_in_window = 0;
        self.window_start = self.last_completion_at;
        // Just pushed, so there is a last one.
        &self.windows[self.windows.len() - 1]
    }
}

/// Runs the accumulator until every consumer has dropped its sender; prints each window as it
/// closes when `lines` names the shape to print them for.
async fn accumulate(
    mut received: mpsc::Receiver<Observation>,
    mut accumulator: WindowAccumulator,
    lines: Option<Shape>,
) -> Vec<WindowReport> {
    while let Some(observation) = received.recv().await {
        if let (Some(window), Some(shape)) = (accumulator.observe(observation), lines) {
            print_window_line(shape, window);
        }
    }
    if let (Some(window), Some(shape)) = (accumulator.close_partial_window(), lines) {
        print_window_line(shape, window);
    }
    accumulator.windows
}

fn print_window_line(shape: Shape, window: &WindowReport) {
    println!(
        "shape {} window {:>3}: after {:>9} done, {:>7} jobs in {:>6.2} s = {:>7.0} jobs/s; \
         enqueue->lease ({:>7} leased) p50 {:>8.3} ms  p99 {:>8.3} ms",
        shape.name(),
        window.index,
        window.completed_before,
        window.jobs,
        window.seconds,
        window.jobs_per_s,
        window.enqueue_to_lease.count,
        window.enqueue_to_lease.p50_ms,
        window.enqueue_to_lease.p99_ms
    );
}

#[derive(Debug, Clone, Serialize)]
struct LatencySummary {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl LatencySummary {
    fn from_samples(mut samples_ms: Vec<f64>) -> LatencySummary {
        samples_ms.sort_by(|a, b| a.total_cmp(b));
        LatencySummary {
            count: samples_ms.len(),
            p50_ms: round3(percentile(&samples_ms, 0.50)),
            p99_ms: round3(percentile(&samples_ms, 0.99)),
            max_ms: round3(samples_ms.last().copied().unwrap_or(0.0)),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    (count as f64 / seconds).round()
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_every_window_jobs_and_the_rest_closes_at_the_end() {
        let start = Instant::now();
        let mut accumulator = WindowAccumulator::new(2, start);
        let at = |ms| start + Duration::from_millis(ms);
        let leased = |ms| Observation::Leased {
            enqueue_to_lease_ms: ms,
        };
        assert!(accumulator.observe(leased(1.0)).is_none());
        assert!(accumulator.observe(leased(3.0)).is_none());
        let done = |ms| Observation::Completed {
            jobs: 1,
            at: at(ms),
        };
        assert!(accumulator.observe(done(100)).is_none());
        let first = accumulator.observe(done(500)).cloned().unwrap();
        assert_eq!((first.index, first.completed_before, first.jobs), (0, 0, 2));
        assert_eq!(first.jobs_per_s, 4.0);
        assert_eq!(first.enqueue_to_lease.p99_ms, 3.0);
        accumulator.observe(leased(7.0));
        accumulator.observe(done(1500));
        let last = accumulator.close_partial_window().cloned().unwrap();
        assert_eq!((last.index, last.completed_before, last.jobs), (1, 2, 1));
        assert_eq!(last.seconds, 1.0);
        assert_eq!(last.enqueue_to_lease.p50_ms, 7.0);
        assert!(accumulator.close_partial_window().is_none());
    }

    #[test]
    fn a_lease_before_the_ack_counts_zero_and_leaves_nothing_behind() {
        let book = AckBook::default();
        let start = Instant::now();
        book.record_ack(JobId(1), start);
        let leased = start + Duration::from_millis(5);
        assert_eq!(book.enqueue_to_lease_ms(JobId(1), leased), 5.0);
        assert_eq!(book.enqueue_to_lease_ms(JobId(2), leased), 0.0);
        book.record_ack(JobId(2), leased + Duration::from_millis(1));
        assert!(book.lock().is_empty());
    }

    #[test]
    fn claims_stop_at_the_job_count() {
        let unclaimed = AtomicU64::new(250);
        assert_eq!(claim(&unclaimed, 100), 100);
        assert_eq!(claim(&unclaimed, 100), 100);
        assert_eq!(claim(&unclaimed, 100), 50);
        assert_eq!(claim(&unclaimed, 100), 0);
    }
}
