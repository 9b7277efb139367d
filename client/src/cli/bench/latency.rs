//! Latency shape: open loop at a fixed rate. Single submits go out on a schedule without waiting
//! for answers, while consumers drain them; the report gives submit-ack and enqueue-to-lease
//! latency at that rate.

use super::consumer::{join_all, spawn_consumers, AckBook, ConsumerPlan, Progress};
use super::fsync::{FsyncHistogram, FsyncSummary};
use super::window::{
    accumulate, per_second, LatencySummary, WindowAccumulator, WindowReport, OBSERVATIONS_CAPACITY,
};
use super::{bench_job, queue_name, BenchArgs, Output, Shape, LATENCY_SUBMITS_MAX};
use crate::cli::output::print_json;
use crate::http_client::Client;
use agentd_schemas::api::SubmitJobRequest;
use anyhow::{bail, Context};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub(super) struct LatencyPlan {
    job: SubmitJobRequest,
    rate_per_s: u64,
    seconds: u64,
    consumer: ConsumerPlan,
}

impl LatencyPlan {
    pub(super) fn from_args(args: &BenchArgs) -> anyhow::Result<LatencyPlan> {
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
                complete_mode: super::one_call_per_job(args),
            },
        })
    }
}

#[derive(Debug, Serialize)]
pub(super) struct LatencyReport {
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
    /// The daemon's `fdatasync` calls over the run (`/metrics`), the floor under `submit_ack`.
    log_fsync: Option<FsyncSummary>,
    /// Why `log_fsync` is absent (say, a token without the `read` role).
    #[serde(skip_serializing_if = "Option::is_none")]
    log_fsync_unread: Option<String>,
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

pub(super) async fn run_latency(
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
    let fsync_before = read_fsync(client).await;
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
    let mut report = latency_report(&plan, submits, windows);
    match (fsync_before, read_fsync(client).await) {
        (Ok(before), Ok(after)) => report.log_fsync = Some(after.since(&before)),
        (Err(why), _) | (_, Err(why)) => report.log_fsync_unread = Some(why),
    }
    Ok(report)
}

/// The daemon's `fdatasync` histogram, or why it could not be read.
async fn read_fsync(client: &Client) -> Result<FsyncHistogram, String> {
    let text = client
        .get_text("/metrics")
        .await
        .map_err(|error| format!("GET /metrics: {error}"))?;
    FsyncHistogram::parse(&text).ok_or_else(|| "/metrics has no agentd_log_fsync_seconds".into())
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
        log_fsync: None,
        log_fsync_unread: None,
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
    pub(super) fn print(&self, output: Output) -> anyhow::Result<()> {
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
        print_fsync_line(self.log_fsync.as_ref(), self.log_fsync_unread.as_deref());
        println!(
            "shape latency: {} jobs completed, the last {:.2} s after the first submit",
            self.completed, self.seconds_until_all_completed
        );
        Ok(())
    }

    /// The report is printed either way; failed submits then fail the command, so a script
    /// does not take a partial run for a clean one.
    pub(super) fn fail_on_submit_errors(&self) -> anyhow::Result<()> {
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

/// The daemon's own `fdatasync` figures beside the ack percentiles: a durable ack waits for at
/// least one, so an ack p99 below their p99 cannot be had on this disk.
fn print_fsync_line(summary: Option<&FsyncSummary>, unread: Option<&str>) {
    let Some(summary) = summary else {
        println!(
            "shape latency  log fdatasync   not read ({})",
            unread.unwrap_or("-")
        );
        return;
    };
    if summary.calls == 0 {
        println!("shape latency  log fdatasync   no calls over the run");
        return;
    }
    let bound = |ms: Option<f64>| {
        ms.map_or("above the largest bucket".to_owned(), |ms| {
            format!("<= {ms} ms")
        })
    };
    println!(
        "shape latency  log fdatasync   {} calls over the run, mean {:.3} ms, p50 {}, p99 {} (the daemon's agentd_log_fsync_seconds buckets; every durable ack waits for at least one)",
        summary.calls,
        summary.mean_ms,
        bound(summary.p50_at_most_ms),
        bound(summary.p99_at_most_ms)
    );
}
