//! `agentctl bench`: like `nats bench` or `redis-benchmark`, against a running daemon.
//!
//! Phase 1 (latency): single submits at a fixed open-loop rate; prints p50/p99 acknowledgement
//! latency (each acknowledgement means the job is fsynced). Phase 2 (throughput): submits N jobs
//! in batches while C in-process workers lease (several jobs per lease) and complete each leased
//! batch with one `POST /v1/leases/complete`;
//! prints submit throughput, end-to-end jobs/s, and enqueue-to-start latency percentiles.

use super::output::print_json;
use crate::http_client::Client;
use agentd_schemas::api::{CompleteItem, LeaseRequest, SubmitJobRequest};
use agentd_schemas::JobId;
use clap::Args;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Jobs submitted in the throughput phase
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Jobs per batch submit
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent batch submitters
    #[arg(long, default_value_t = 2)]
    submitters: usize,
    /// In-process workers leasing and completing
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Jobs per lease request
    #[arg(long, default_value_t = 100)]
    lease_batch: u32,
    /// Single submits per second in the latency phase (0 skips it)
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency phase
    #[arg(long, default_value_t = 5)]
    rate_seconds: u64,
    /// Queue to use [default: bench-<pid>]
    #[arg(long)]
    queue: Option<String>,
    /// Payload size in bytes
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarize(mut samples_ms: Vec<f64>) -> serde_json::Value {
    samples_ms.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "count": samples_ms.len(),
        "p50_ms": round3(percentile(&samples_ms, 0.50)),
        "p99_ms": round3(percentile(&samples_ms, 0.99)),
        "max_ms": round3(samples_ms.last().copied().unwrap_or(0.0)),
    })
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

pub async fn run(client: &Client, args: BenchArgs, json: bool) -> anyhow::Result<()> {
    client.health().await?;
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| format!("bench-{}", std::process::id()));
    let payload = serde_json::json!({ "data": "x".repeat(args.payload_bytes) });
    let make_job = |queue: &str| SubmitJobRequest {
        queue: queue.to_string(),
        kind: "bench".into(),
        payload: payload.clone(),
        ..Default::default()
    };

    // Phase 1: acknowledgement latency at a fixed rate, open loop.
    let mut latency = serde_json::Value::Null;
    if args.rate > 0 {
        let latency_queue = format!("{queue}-latency");
        let total = args.rate * args.rate_seconds;
        let samples = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
        let mut tasks = tokio::task::JoinSet::new();
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let start = Instant::now();
        for index in 0..total {
            let due = start + interval.mul_f64(index as f64);
            tokio::time::sleep_until(due.into()).await;
            let client = client.clone();
            let job = make_job(&latency_queue);
            let samples = samples.clone();
            tasks.spawn(async move {
                let sent = Instant::now();
                let answer = client.submit(&job).await;
                let elapsed_ms = sent.elapsed().as_secs_f64() * 1000.0;
                if answer.is_ok() {
                    samples.lock().await.push(elapsed_ms);
                }
                answer.is_ok()
            });
        }
        let mut errors = 0;
        while let Some(result) = tasks.join_next().await {
            if !matches!(result, Ok(true)) {
                errors += 1;
            }
        }
        let achieved = total as f64 / start.elapsed().as_secs_f64();
        let samples = std::mem::take(&mut *samples.lock().await);
        latency = serde_json::json!({ "rate_per_s": args.rate, "achieved_per_s": achieved.round(), "errors": errors, "ack": summarize(samples) });
        if !json {
            println!(
                "latency phase: {} single submits at {}/s (achieved {:.0}/s), {errors} errors",
                total, args.rate, achieved
            );
            println!(
                "  submit ack   p50 {:>8.3} ms   p99 {:>8.3} ms",
                latency["ack"]["p50_ms"].as_f64().unwrap_or(0.0),
                latency["ack"]["p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
        // Leave nothing behind: the throughput workers also drain the latency queue.
        drain_queue(client, &latency_queue, total).await?;
    }

    // Phase 2: batched submit while workers lease and complete.
    let submitted_at: Arc<Mutex<HashMap<JobId, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(args.jobs as usize)));
    let completed = Arc::new(AtomicU64::new(0));
    let start_latencies = Arc::new(Mutex::new(Vec::with_capacity(args.jobs as usize)));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..args.workers {
        let client = client.clone();
        let queue = queue.clone();
        let completed = completed.clone();
        let start_latencies = start_latencies.clone();
        let total = args.jobs;
        let lease_batch = args.lease_batch;
        workers.spawn(async move {
            let request = LeaseRequest {
                worker_id: format!("bench-{index}"),
                queues: vec![queue],
                tags: None,
                max_jobs: Some(lease_batch),
                wait_ms: Some(200),
            };
            while completed.load(Ordering::Relaxed) < total {
                let leases = match client.lease(&request).await {
                    Ok(response) => response.leases,
                    Err(error) => return Err(error),
                };
                let now = Instant::now();
                // Matched with the submit acknowledgements at the end: a job can be leased
                // before its submitter has recorded the ack, and dropping those (the fastest
                // starts) would bias the figures upward.
                start_latencies
                    .lock()
                    .await
                    .extend(leases.iter().map(|grant| (grant.job_id, now)));
                if leases.is_empty() {
                    continue;
                }
                let completions = leases
                    .iter()
                    .map(|grant| CompleteItem {
                        lease_id: grant.lease_id,
                        result: None,
                    })
                    .collect();
                let answer = client.complete_many(completions).await?;
                let done = answer
                    .results
                    .iter()
                    .filter(|item| item.job_id.is_some())
                    .count();
                completed.fetch_add(done as u64, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let submit_start = Instant::now();
    let next_batch = Arc::new(AtomicU64::new(0));
    let batches = args.jobs.div_ceil(args.batch as u64);
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..args.submitters.max(1) {
        let client = client.clone();
        let next_batch = next_batch.clone();
        let submitted_at = submitted_at.clone();
        let jobs: Vec<SubmitJobRequest> = (0..args.batch).map(|_| make_job(&queue)).collect();
        let total = args.jobs;
        let batch_size = args.batch as u64;
        submitters.spawn(async move {
            loop {
                let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok::<(), crate::ClientError>(());
                }
                let count = batch_size.min(total - batch * batch_size) as usize;
                let answer = client.submit_batch(jobs[..count].to_vec()).await?;
                let now = Instant::now();
                let mut known = submitted_at.lock().await;
                for job in answer.jobs {
                    known.insert(job.job_id, now);
                }
            }
        });
    }
    while let Some(result) = submitters.join_next().await {
        result??;
    }
    let submit_seconds = submit_start.elapsed().as_secs_f64();
    while let Some(result) = workers.join_next().await {
        result??;
    }
    let total_seconds = start.elapsed().as_secs_f64();
    // Enqueue-to-start from the submit ack (the moment the job was durable and leasable); a
    // lease that arrived before the submitter saw its ack counts as 0.
    let start_samples: Vec<f64> = {
        let known = submitted_at.lock().await;
        std::mem::take(&mut *start_latencies.lock().await)
            .into_iter()
            .filter_map(|(job_id, leased)| {
                let acked = known.get(&job_id)?;
                Some(leased.saturating_duration_since(*acked).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    let report = serde_json::json!({
        "queue": queue,
        "latency_phase": latency,
        "throughput_phase": {
            "jobs": args.jobs,
            "batch": args.batch,
            "workers": args.workers,
            "lease_batch": args.lease_batch,
            "submit_jobs_per_s": (args.jobs as f64 / submit_seconds).round(),
            "end_to_end_jobs_per_s": (args.jobs as f64 / total_seconds).round(),
            "seconds": round3(total_seconds),
            "enqueue_to_start": summarize(start_samples),
        }
    });
    if json {
        return print_json(&report);
    }
    let phase = &report["throughput_phase"];
    println!(
        "throughput phase: {} jobs in batches of {}, {} workers leasing {} at a time",
        args.jobs, args.batch, args.workers, args.lease_batch
    );
    println!(
        "  submit        {:>10.0} jobs/s",
        phase["submit_jobs_per_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  end-to-end    {:>10.0} jobs/s  ({:.2} s)",
        phase["end_to_end_jobs_per_s"].as_f64().unwrap_or(0.0),
        total_seconds
    );
    println!(
        "  enqueue->start p50 {:>8.3} ms   p99 {:>8.3} ms",
        phase["enqueue_to_start"]["p50_ms"].as_f64().unwrap_or(0.0),
        phase["enqueue_to_start"]["p99_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// Leases and completes `count` jobs from `queue`.
async fn drain_queue(client: &Client, queue: &str, count: u64) -> anyhow::Result<()> {
    let request = LeaseRequest {
        worker_id: "bench-drain".into(),
        queues: vec![queue.to_string()],
        tags: None,
        max_jobs: Some(1000),
        wait_ms: Some(500),
    };
    let mut done = 0;
    while done < count {
        let leases = client.lease(&request).await?.leases;
        if leases.is_empty() {
            break;
        }
        let completions = leases
            .iter()
            .map(|grant| CompleteItem {
                lease_id: grant.lease_id,
                result: None,
            })
            .collect();
        let answer = client.complete_many(completions).await?;
        done += answer
            .results
            .iter()
            .filter(|item| item.job_id.is_some())
            .count() as u64;
    }
    Ok(())
}
