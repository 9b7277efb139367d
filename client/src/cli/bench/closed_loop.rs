//! Single and batch shapes: closed loop, reported per window. Producers submit until `--jobs` are
//! claimed, each waiting for its acknowledgement (and for room under the backlog limit) before the
//! next request.

use super::consumer::{join_all, spawn_consumers, AckBook, CompleteMode, ConsumerPlan, Progress};
use super::window::{
    accumulate, per_second, round1, round3, WindowAccumulator, WindowReport, OBSERVATIONS_CAPACITY,
};
use super::{bench_job, queue_name, BenchArgs, Output, Shape};
use crate::cli::output::print_json;
use crate::http_client::Client;
use agentd_schemas::api::SubmitJobRequest;
use anyhow::{bail, Context};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};

/// A single or batch run, settled from the arguments.
#[derive(Debug, Clone)]
pub(super) struct ClosedLoopPlan {
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
    pub(super) fn from_args(args: &BenchArgs) -> anyhow::Result<ClosedLoopPlan> {
        let batch = args.shape == Shape::Batch;
        if args.complete_batch && !batch {
            bail!("--complete-batch needs --shape batch");
        }
        if args.complete_batch && args.complete_batch_max > 1 {
            bail!("--complete-batch and --complete-batch-max are two ways to complete; pick one");
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
                } else if args.complete_batch_max > 1 {
                    // At most `COMPLETE_BATCH_MAX` (10000): the parser refused more.
                    CompleteMode::Coalesced {
                        batch_max: args.complete_batch_max as usize,
                    }
                } else {
                    super::one_call_per_job(args)
                },
            },
        })
    }

    /// The shape and how it completed, in front of every printed figure.
    fn label(&self) -> String {
        format!(
            "shape {} ({})",
            self.shape.name(),
            self.consumer.complete_mode.label()
        )
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

#[derive(Debug, Serialize)]
pub(super) struct ClosedLoopReport {
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

pub(super) async fn run_closed_loop(
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
    let lines = (output == Output::Text).then(|| plan.label());
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

impl ClosedLoopReport {
    /// Window lines were printed as they closed; text output adds the total.
    pub(super) fn print(&self, output: Output) -> anyhow::Result<()> {
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
            "shape {} ({}) total: {} jobs in {:.2} s, {:.0} jobs/s end to end; {comparison}",
            self.shape.name(),
            self.complete.label(),
            self.total.jobs,
            self.total.seconds,
            self.total.end_to_end_jobs_per_s
        );
        Ok(())
    }
}

/// Windows one run reports at most: `--window` is raised to fit, so a tiny window on a large run
/// cannot print millions of lines.
const WINDOWS_MAX: u64 = 1000;

/// How producers send jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubmitMode {
    /// `POST /v1/jobs`, one job each.
    OneJobPerRequest,
    /// `POST /v1/jobs/batch` with up to this many jobs.
    Batch { jobs_per_request: u64 },
}

#[derive(Debug, Serialize)]
struct ClosedLoopTotal {
    jobs: u64,
    seconds: f64,
    end_to_end_jobs_per_s: f64,
    /// Last window's jobs/s as a percentage of the first's; absent with one window.
    last_window_percent_of_first: Option<f64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_job_count() {
        let unclaimed = AtomicU64::new(250);
        assert_eq!(claim(&unclaimed, 100), 100);
        assert_eq!(claim(&unclaimed, 100), 100);
        assert_eq!(claim(&unclaimed, 100), 50);
        assert_eq!(claim(&unclaimed, 100), 0);
    }
}
