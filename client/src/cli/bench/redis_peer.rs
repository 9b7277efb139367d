//! `agentctl bench --peer redis`: the same shapes against a durable Redis queue, so that a figure
//! for agentd can be put beside a peer's measured in the same run, on the same machine.
//!
//! The queue is the reliable-queue pattern Redis documents: a producer `LPUSH`es a job onto a
//! list; a consumer leases with `BLMOVE ready processing RIGHT LEFT` (the job stays in
//! `processing` until completed, so a crashed consumer loses nothing) and completes with
//! `LREM processing -1 job`. Three round trips per job, like agentd's submit, lease and complete.
//! The batch shape pushes `--batch` jobs per `LPUSH` and leases up to `--lease-batch` (the first
//! with `BLMOVE`, the rest with one `EVAL` of `LMOVE`s), still one `LREM` per job.
//!
//! The run refuses a Redis that does not fsync every write before answering (`appendonly yes`,
//! `appendfsync always`): agentd answers only after `fdatasync`, and a figure beside it must be
//! as durable.

use super::resp::{Reply, RespConnection};
use super::window::{per_second, round1, LatencySummary};
use super::{BenchArgs, Shape};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Moves up to ARGV[1] more jobs from the ready list to the processing list, atomically.
const LEASE_MORE_SCRIPT: &str = "local out = {} \
    for i = 1, tonumber(ARGV[1]) do \
      local job = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') \
      if not job then break end \
      out[#out + 1] = job \
    end \
    return out";
/// How long one consumer's BLMOVE blocks before it checks whether the run is over, in seconds.
const LEASE_WAIT_S: &str = "0.2";

struct Keys {
    ready: String,
    processing: String,
}

/// Shared by the producers and consumers of one run.
struct RunCounters {
    claimed: AtomicU64,
    completed: AtomicU64,
    /// When each job's push was acknowledged (durable), by job id.
    acked_at: Mutex<HashMap<u64, Instant>>,
    enqueue_to_lease_ms: Mutex<Vec<f64>>,
}

pub(super) async fn run(args: &BenchArgs, addr: &str) -> anyhow::Result<()> {
    let mut admin = RespConnection::connect(addr).await?;
    check_durable(&mut admin).await?;
    let queue = super::queue_name(args);
    let keys = Arc::new(Keys {
        ready: format!("{queue}:ready"),
        processing: format!("{queue}:processing"),
    });
    admin
        .call(&[b"DEL", keys.ready.as_bytes(), keys.processing.as_bytes()])
        .await?;
    match args.shape {
        Shape::Single | Shape::Batch => run_closed_loop(args, addr, keys).await,
        Shape::Latency => run_latency(args, addr, keys).await,
        Shape::Rollouts => bail!("--peer redis measures the single, batch and latency shapes"),
    }
}

async fn check_durable(admin: &mut RespConnection) -> anyhow::Result<()> {
    let append_only = config_get(admin, "appendonly").await?;
    let append_fsync = config_get(admin, "appendfsync").await?;
    if append_only != "yes" || append_fsync != "always" {
        bail!(
            "the redis peer must fsync every write before answering, as agentd does: it has \
             appendonly {append_only}, appendfsync {append_fsync} (start it with \
             --appendonly yes --appendfsync always)"
        );
    }
    Ok(())
}

async fn config_get(admin: &mut RespConnection, name: &str) -> anyhow::Result<String> {
    match admin.call(&[b"CONFIG", b"GET", name.as_bytes()]).await? {
        Reply::Array(items) if items.len() == 2 => Ok(String::from_utf8_lossy(&items[1]).into()),
        other => bail!("CONFIG GET {name} answered {other:?}"),
    }
}

fn job_value(id: u64, payload_bytes: usize) -> Vec<u8> {
    let mut value = format!("{id}:").into_bytes();
    value.resize(value.len() + payload_bytes, b'x');
    value
}

fn job_id(value: &[u8]) -> anyhow::Result<u64> {
    let end = value.iter().position(|&byte| byte == b':');
    let id = std::str::from_utf8(&value[..end.unwrap_or(value.len())])?;
    id.parse().context("job id in a redis peer value")
}

async fn run_closed_loop(args: &BenchArgs, addr: &str, keys: Arc<Keys>) -> anyhow::Result<()> {
    let batch = args.shape == Shape::Batch;
    let jobs_per_push = if batch { args.batch } else { 1 };
    let lease_max = if batch { args.lease_batch as u64 } else { 1 };
    let backlog_max = match args.backlog_max {
        0 => u64::MAX,
        limit => limit.max(jobs_per_push),
    };
    println!(
        "peer redis (appendfsync always) shape {}: {} jobs; {} producers pushing {jobs_per_push} \
         per LPUSH, at most {} jobs submitted and not completed; {} consumers leasing up to \
         {lease_max} (BLMOVE{}), completing each job with its own LREM",
        args.shape.name(),
        args.jobs,
        args.producers,
        if backlog_max == u64::MAX {
            "unlimited".to_string()
        } else {
            backlog_max.to_string()
        },
        args.consumers,
        if batch { " + EVAL of LMOVEs" } else { "" },
    );
    let counters = Arc::new(RunCounters {
        claimed: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        acked_at: Mutex::new(HashMap::new()),
        enqueue_to_lease_ms: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.producers {
        let plan = ProducerPlan {
            jobs: args.jobs,
            jobs_per_push,
            backlog_max,
            payload_bytes: args.payload_bytes,
        };
        let connection = RespConnection::connect(addr).await?;
        tasks.push(tokio::spawn(produce(
            connection,
            keys.clone(),
            counters.clone(),
            plan,
        )));
    }
    for _ in 0..args.consumers {
        let connection = RespConnection::connect(addr).await?;
        let (keys, counters, jobs) = (keys.clone(), counters.clone(), args.jobs);
        tasks.push(tokio::spawn(consume(
            connection, keys, counters, jobs, lease_max,
        )));
    }
    for task in tasks {
        task.await.context("a redis peer task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *lock(&counters.enqueue_to_lease_ms));
    let enqueue_to_lease = LatencySummary::from_samples(samples);
    println!(
        "peer redis shape {} total: {} jobs in {:.2} s, {} jobs/s end to end; enqueue->lease \
         p50 {:.3} ms  p99 {:.3} ms",
        args.shape.name(),
        args.jobs,
        seconds,
        per_second(args.jobs, seconds),
        enqueue_to_lease.p50_ms,
        enqueue_to_lease.p99_ms
    );
    Ok(())
}

#[derive(Clone, Copy)]
struct ProducerPlan {
    jobs: u64,
    jobs_per_push: u64,
    backlog_max: u64,
    payload_bytes: usize,
}

async fn produce(
    mut connection: RespConnection,
    keys: Arc<Keys>,
    counters: Arc<RunCounters>,
    plan: ProducerPlan,
) -> anyhow::Result<()> {
    loop {
        while counters.claimed.load(Ordering::Acquire) - counters.completed.load(Ordering::Acquire)
            + plan.jobs_per_push
            > plan.backlog_max
        {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let first = counters
            .claimed
            .fetch_add(plan.jobs_per_push, Ordering::AcqRel);
        if first >= plan.jobs {
            return Ok(());
        }
        let ids: Vec<u64> = (first..(first + plan.jobs_per_push).min(plan.jobs)).collect();
        let values: Vec<Vec<u8>> = ids
            .iter()
            .map(|&id| job_value(id, plan.payload_bytes))
            .collect();
        let mut command: Vec<&[u8]> = vec![b"LPUSH", keys.ready.as_bytes()];
        command.extend(values.iter().map(Vec::as_slice));
        connection.call(&command).await.context("LPUSH")?;
        let acked = Instant::now();
        let mut acked_at = lock(&counters.acked_at);
        for id in ids {
            acked_at.insert(id, acked);
        }
    }
}

async fn consume(
    mut connection: RespConnection,
    keys: Arc<Keys>,
    counters: Arc<RunCounters>,
    jobs: u64,
    lease_max: u64,
) -> anyhow::Result<()> {
    let (ready, processing) = (keys.ready.as_bytes(), keys.processing.as_bytes());
    while counters.completed.load(Ordering::Acquire) < jobs {
        let first = connection
            .call(&[
                b"BLMOVE",
                ready,
                processing,
                b"RIGHT",
                b"LEFT",
                LEASE_WAIT_S.as_bytes(),
            ])
            .await
            .context("BLMOVE")?;
        let Reply::Bulk(Some(first)) = first else {
            continue;
        };
        let mut leased = vec![first];
        if lease_max > 1 {
            let more = (lease_max - 1).to_string();
            let script = LEASE_MORE_SCRIPT.as_bytes();
            let reply = connection
                .call(&[b"EVAL", script, b"2", ready, processing, more.as_bytes()])
                .await
                .context("EVAL (lease more)")?;
            if let Reply::Array(more) = reply {
                leased.extend(more);
            }
        }
        record_leases(&counters, &leased)?;
        for job in &leased {
            connection
                .call(&[b"LREM", processing, b"-1", job])
                .await
                .context("LREM")?;
            counters.completed.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(())
}

/// Enqueue-to-lease as `agentctl bench` counts it: from the acknowledgement the producer saw; a
/// job leased before its producer recorded the acknowledgement counts 0.
fn record_leases(counters: &RunCounters, leased: &[Vec<u8>]) -> anyhow::Result<()> {
    let now = Instant::now();
    let mut samples = Vec::with_capacity(leased.len());
    {
        let mut acked_at = lock(&counters.acked_at);
        for job in leased {
            let acked = acked_at.remove(&job_id(job)?);
            let waited = acked.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
            samples.push(waited.as_secs_f64() * 1000.0);
        }
    }
    lock(&counters.enqueue_to_lease_ms).extend(samples);
    Ok(())
}

/// Open loop: `--rate` pushes per second for `--rate-seconds`, each on a connection of a pool
/// (one command in flight per connection), while consumers drain the queue.
async fn run_latency(args: &BenchArgs, addr: &str, keys: Arc<Keys>) -> anyhow::Result<()> {
    let total = args.rate * args.rate_seconds;
    println!(
        "peer redis (appendfsync always) shape latency: {total} single LPUSHes at {}/s for {} s; \
         {} consumers leasing 1 (BLMOVE), completing each with its own LREM",
        args.rate, args.rate_seconds, args.consumers
    );
    let pool = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let counters = Arc::new(RunCounters {
        claimed: AtomicU64::new(total),
        completed: AtomicU64::new(0),
        acked_at: Mutex::new(HashMap::new()),
        enqueue_to_lease_ms: Mutex::new(Vec::new()),
    });
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let connection = RespConnection::connect(addr).await?;
        let (keys, counters) = (keys.clone(), counters.clone());
        consumers.push(tokio::spawn(consume(connection, keys, counters, total, 1)));
    }
    let ack_ms = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = tokio::time::Instant::now();
    let mut submits = Vec::with_capacity(total as usize);
    for id in 0..total {
        tokio::time::sleep_until(started + interval * id as u32).await;
        let (pool, keys, counters, ack_ms) =
            (pool.clone(), keys.clone(), counters.clone(), ack_ms.clone());
        let addr = addr.to_string();
        let value = job_value(id, args.payload_bytes);
        submits.push(tokio::spawn(async move {
            let pooled = pool.lock().await.pop();
            let mut connection = match pooled {
                Some(connection) => connection,
                None => RespConnection::connect(&addr).await?,
            };
            let sent = Instant::now();
            connection
                .call(&[b"LPUSH", keys.ready.as_bytes(), &value])
                .await?;
            let acked = Instant::now();
            lock(&counters.acked_at).insert(id, acked);
            lock(&ack_ms).push((acked - sent).as_secs_f64() * 1000.0);
            pool.lock().await.push(connection);
            anyhow::Ok(())
        }));
    }
    for submit in submits {
        submit.await.context("a redis peer submit panicked")??;
    }
    let achieved = per_second(total, started.elapsed().as_secs_f64());
    for consumer in consumers {
        consumer.await.context("a redis peer consumer panicked")??;
    }
    let ack = LatencySummary::from_samples(std::mem::take(&mut *lock(&ack_ms)));
    let samples = std::mem::take(&mut *lock(&counters.enqueue_to_lease_ms));
    let enqueue_to_lease = LatencySummary::from_samples(samples);
    println!(
        "peer redis shape latency: {total} pushes, achieved {}/s",
        round1(achieved)
    );
    for (name, summary) in [("submit ack", ack), ("enqueue->lease", enqueue_to_lease)] {
        println!(
            "peer redis shape latency  {name:<14} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
            summary.p50_ms, summary.p99_ms, summary.max_ms
        );
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking task is reported by its join; the data (samples, acks) stays usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_value_carries_its_id_and_payload() {
        let value = job_value(42, 5);
        assert_eq!(value, b"42:xxxxx");
        assert_eq!(job_id(&value).unwrap(), 42);
        assert!(job_id(b"x:1").is_err());
    }
}
