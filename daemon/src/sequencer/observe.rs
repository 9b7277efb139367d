//! What the sequencer notes about a record just before applying it, in one pass over its events:
//! the job event counters, the latencies the record ends, and which parked long-polls it may
//! satisfy. It runs before the record is applied because it reads what the record changes: a
//! job's queue, when it became eligible, when it was leased.

use super::waiters::Waiters;
use crate::metrics_catalog::JOB_EVENTS;
use crate::queue::{JobStatus, QueueState};
use agentd_schemas::events::{AfterFailure, Event};
use agentd_schemas::JobId;

/// Counts the record's job events by kind (`agentd_job_events_total`: a batch of 1000
/// submissions costs one counter update, not 1000), records the latencies it ends, and wakes
/// the waiters of every queue where it may make a job leasable.
pub(super) fn note_events(
    state: &QueueState,
    waiters: &mut Waiters,
    now_ms: u64,
    events: &[Event],
) {
    let mut counts = [0u64; JOB_EVENTS.len()];
    for event in events {
        if let Some(queue) = queue_made_ready(state, event) {
            waiters.wake_queue(queue);
        }
        record_latency(state, now_ms, event);
        // Every name `job_event_name` gives is in JOB_EVENTS (the series registered at zero at
        // start-up).
        if let Some(position) = job_event_name(event)
            .and_then(|name| JOB_EVENTS.iter().position(|known| *known == name))
        {
            counts[position] += 1;
        }
    }
    for (name, count) in JOB_EVENTS.iter().zip(counts) {
        if count > 0 {
            metrics::counter!("agentd_job_events_total", "event" => *name).increment(count);
        }
    }
}

/// The queue in which `event` may make a job leasable (a submission, a retry, a resumed queue),
/// so that only the waiters listening there are tried. A delayed job counts too: trying its
/// waiters early only parks them again; the due-job timer wakes them when it is leasable.
fn queue_made_ready<'a>(state: &'a QueueState, event: &'a Event) -> Option<&'a str> {
    let queue_of = |job_id: &JobId| state.job(*job_id).map(|job| &*job.queue);
    match event {
        Event::JobSubmitted(submitted) => Some(&submitted.queue),
        Event::JobFailed {
            job_id,
            after: AfterFailure::Retry { .. },
            ..
        }
        | Event::LeaseExpired {
            job_id,
            after: AfterFailure::Retry { .. },
            ..
        }
        | Event::JobRetried { job_id, .. } => queue_of(job_id),
        Event::QueueResumed { queue } => Some(queue),
        _ => None,
    }
}

/// The `event` label of a job event in `agentd_job_events_total`.
fn job_event_name(event: &Event) -> Option<&'static str> {
    Some(match event {
        Event::JobSubmitted(_) => "job_submitted",
        Event::JobLeased(_) => "job_leased",
        Event::JobCompleted { .. } => "job_completed",
        Event::JobFailed { .. } => "job_failed",
        Event::JobCancelled { .. } => "job_cancelled",
        Event::JobRetried { .. } => "job_retried",
        _ => return None,
    })
}

/// A lease ends a job's wait (enqueue to start); a completion or failure ends its run (start to
/// finish).
fn record_latency(state: &QueueState, now_ms: u64, event: &Event) {
    match event {
        Event::JobLeased(leased) => record_enqueue_to_start(state, now_ms, leased.job_id),
        Event::JobCompleted { job_id, .. } | Event::JobFailed { job_id, .. } => {
            record_start_to_finish(state, now_ms, *job_id)
        }
        _ => {}
    }
}

fn record_enqueue_to_start(state: &QueueState, now_ms: u64, job_id: JobId) {
    if let Some(JobStatus::Waiting { run_at_ms }) = state.job(job_id).map(|job| &job.status) {
        metrics::histogram!("agentd_job_enqueue_to_start_seconds")
            .record(now_ms.saturating_sub(*run_at_ms) as f64 / 1000.0);
    }
}

/// A job's run time (lease to completion or failure), per queue and kind. Both are names
/// clients choose (up to 128 characters each), so the series grow with the distinct
/// (queue, kind) pairs in use: a handful in a normal deployment (README, "Metrics"). The
/// labels are the job's shared names (`Arc<str>`), so recording allocates no label text.
fn record_start_to_finish(state: &QueueState, now_ms: u64, job_id: JobId) {
    let Some(job) = state.job(job_id) else {
        return;
    };
    if let JobStatus::Leased { leased_at_ms, .. } = &job.status {
        metrics::histogram!(
            "agentd_job_start_to_finish_seconds",
            "queue" => job.queue.clone(),
            "kind" => job.kind.clone()
        )
        .record(now_ms.saturating_sub(*leased_at_ms) as f64 / 1000.0);
    }
}
