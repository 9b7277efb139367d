//! Consumers, shared by every shape: in-process workers that lease and complete, and the book
//! that matches each job's submit acknowledgement with its lease for enqueue-to-lease.

use super::window::Observation;
use crate::http_client::Client;
use crate::worker::CompletionCoalescer;
use agentd_schemas::api::{CompleteItem, LeaseGrant, LeaseRequest, NextLeaseRequest};
use agentd_schemas::JobId;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// How consumers complete the jobs of one lease response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum CompleteMode {
    /// `POST /v1/leases/{id}/complete` per job, leasing nothing with it: workers before
    /// complete-then-lease, and `agentctl worker --no-lease-on-complete`.
    OneCallPerJob,
    /// `POST /v1/leases/{id}/complete` per job; the completion of a lease's last job carries
    /// `next` (the consumer's lease request), so a consumer long-polls only when nothing was
    /// ready: the path of `agentctl worker`.
    OneCallPerJobLeasingNext,
    /// One `POST /v1/leases/complete` for all jobs of a lease response.
    OneCallPerLease,
    /// Each job handed to the worker's own [`CompletionCoalescer`] (one for all consumers, as
    /// one per `agentctl worker`), which waits for the job's durable answer: the path of
    /// `agentctl worker --complete-batch-max`.
    Coalesced { batch_max: usize },
}

impl CompleteMode {
    /// How completions went, for every printed figure.
    pub(super) fn label(self) -> String {
        match self {
            CompleteMode::OneCallPerJob => "complete: one call per job".to_string(),
            CompleteMode::OneCallPerJobLeasingNext => {
                "complete: one call per job, leasing the next with it".to_string()
            }
            CompleteMode::OneCallPerLease => "complete: one call per lease".to_string(),
            CompleteMode::Coalesced { batch_max } => {
                format!("complete: coalesced, up to {batch_max} per call")
            }
        }
    }
}

/// What consumers do, in every shape.
#[derive(Debug, Clone)]
pub(super) struct ConsumerPlan {
    pub(super) queue: String,
    pub(super) consumers: u64,
    pub(super) lease_jobs_max: u32,
    pub(super) complete_mode: CompleteMode,
}

impl ConsumerPlan {
    pub(super) fn describe(&self) -> String {
        let complete = match self.complete_mode {
            CompleteMode::OneCallPerJob => {
                "each job with its own POST /v1/leases/{id}/complete".to_string()
            }
            CompleteMode::OneCallPerJobLeasingNext => {
                "each job with its own POST /v1/leases/{id}/complete, the last of a lease \
                 asking for the next (`next`), long-polling only when none came"
                    .to_string()
            }
            CompleteMode::OneCallPerLease => {
                "each lease's jobs with one POST /v1/leases/complete".to_string()
            }
            CompleteMode::Coalesced { batch_max } => format!(
                "each job through the worker's completion coalescer (alone when no call is in \
                 flight, else up to {batch_max} per POST /v1/leases/complete)"
            ),
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

/// How far a run is: consumers stop once `completed` reaches `target`.
#[derive(Debug)]
pub(super) struct Progress {
    completed: AtomicU64,
    /// Jobs to complete; `u64::MAX` until known.
    target: AtomicU64,
}

impl Progress {
    pub(super) fn new(target: u64) -> Progress {
        Progress {
            completed: AtomicU64::new(0),
            target: AtomicU64::new(target),
        }
    }

    pub(super) fn set_target(&self, target: u64) {
        self.target.store(target, Ordering::Relaxed);
    }

    fn is_done(&self) -> bool {
        self.completed.load(Ordering::Relaxed) >= self.target.load(Ordering::Relaxed)
    }
}

pub(super) fn spawn_consumers(
    client: &Client,
    plan: &ConsumerPlan,
    acks: &Arc<AckBook>,
    progress: &Arc<Progress>,
    observations: &mpsc::Sender<Observation>,
    backlog: Option<Arc<Semaphore>>,
) -> JoinSet<anyhow::Result<()>> {
    let mut consumers = JoinSet::new();
    let coalescer = match plan.complete_mode {
        CompleteMode::Coalesced { batch_max } => {
            Some(CompletionCoalescer::start(client.clone(), batch_max))
        }
        CompleteMode::OneCallPerJob
        | CompleteMode::OneCallPerJobLeasingNext
        | CompleteMode::OneCallPerLease => None,
    };
    for index in 0..plan.consumers {
        let consumer = Consumer {
            client: client.clone(),
            request: plan.lease_request(index),
            complete_mode: plan.complete_mode,
            coalescer: coalescer.clone(),
            acks: acks.clone(),
            progress: progress.clone(),
            observations: observations.clone(),
            backlog: backlog.clone(),
        };
        consumers.spawn(consumer.run());
    }
    consumers
}

/// Waits for every task; the first failure is returned and the rest are aborted (dropping the
/// set aborts them), so a consumer that failed cannot leave the others waiting for jobs that
/// will never be completed.
pub(super) async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(result) = tasks.join_next().await {
        result.context("bench task panicked")??;
    }
    Ok(())
}

/// Submit acknowledgements not yet matched with their lease, and leases that came first. An
/// entry leaves once both sides are seen, so the book holds only jobs in flight.
#[derive(Debug, Default)]
pub(super) struct AckBook {
    entries: Mutex<HashMap<JobId, AckEntry>>,
}

#[derive(Debug, Clone, Copy)]
enum AckEntry {
    Acknowledged(Instant),
    LeasedFirst,
}

impl AckBook {
    pub(super) fn record_ack(&self, job_id: JobId, acked_at: Instant) {
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

/// Long-poll wait of a bench lease request: short, so an idle consumer notices soon that the run
/// is over.
const LEASE_WAIT_MS: u64 = 200;

/// One in-process worker: leases, records each job's enqueue-to-lease, completes.
struct Consumer {
    client: Client,
    request: LeaseRequest,
    complete_mode: CompleteMode,
    /// The shared completer, in `CompleteMode::Coalesced`.
    coalescer: Option<CompletionCoalescer>,
    acks: Arc<AckBook>,
    progress: Arc<Progress>,
    observations: mpsc::Sender<Observation>,
    /// Given back one permit per completed job, so producers may submit again.
    backlog: Option<Arc<Semaphore>>,
}

impl Consumer {
    async fn run(self) -> anyhow::Result<()> {
        // Jobs leased with a completion, to run before leasing again.
        let mut held = Vec::new();
        loop {
            let leases = if held.is_empty() {
                if self.progress.is_done() {
                    return Ok(());
                }
                let leases = self
                    .client
                    .lease(&self.request)
                    .await
                    .context("POST /v1/leases")?
                    .leases;
                self.leased(&leases).await?;
                leases
            } else {
                std::mem::take(&mut held)
            };
            match (self.complete_mode, &self.coalescer) {
                (CompleteMode::OneCallPerLease, _) => self.complete_together(&leases).await?,
                (CompleteMode::Coalesced { .. }, Some(coalescer)) => {
                    self.complete_coalesced(coalescer, &leases).await?
                }
                (CompleteMode::OneCallPerJobLeasingNext, _) => {
                    held = self.complete_each_leasing_next(leases).await?
                }
                _ => self.complete_each(&leases).await?,
            }
        }
    }

    /// Records each job's enqueue-to-lease.
    async fn leased(&self, leases: &[LeaseGrant]) -> anyhow::Result<()> {
        let leased_at = Instant::now();
        for grant in leases {
            let enqueue_to_lease_ms = self.acks.enqueue_to_lease_ms(grant.job_id, leased_at);
            self.observe(Observation::Leased {
                enqueue_to_lease_ms,
            })
            .await?;
        }
        Ok(())
    }

    /// As an `agentctl worker` slot does: the last completion asks for the next jobs (unless
    /// the run is over), which are returned to run next.
    async fn complete_each_leasing_next(
        &self,
        mut leases: Vec<LeaseGrant>,
    ) -> anyhow::Result<Vec<LeaseGrant>> {
        let Some(last) = leases.pop() else {
            return Ok(Vec::new());
        };
        self.complete_each(&leases).await?;
        if self.progress.is_done() {
            self.complete_each(std::slice::from_ref(&last)).await?;
            return Ok(Vec::new());
        }
        let next = NextLeaseRequest {
            worker_id: self.request.worker_id.clone(),
            queues: self.request.queues.clone(),
            tags: self.request.tags.clone(),
            max_jobs: self.request.max_jobs,
        };
        let answer = self
            .client
            .complete_then_lease(last.lease_id, None, None, next)
            .await
            .with_context(|| format!("POST /v1/leases/{}/complete with next", last.lease_id))?;
        self.completed(1).await?;
        let next_leases = answer.next_leases.unwrap_or_default();
        self.leased(&next_leases).await?;
        Ok(next_leases)
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

    /// As a worker slot does with `--complete-batch-max`: hands each completion to the
    /// coalescer and waits for its own durable answer.
    async fn complete_coalesced(
        &self,
        coalescer: &CompletionCoalescer,
        leases: &[LeaseGrant],
    ) -> anyhow::Result<()> {
        for grant in leases {
            if let Err(error) = coalescer.complete(grant.lease_id, None, None).await {
                bail!(
                    "completing {} through the coalescer: {error}",
                    grant.lease_id
                );
            }
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
                log_tail: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
