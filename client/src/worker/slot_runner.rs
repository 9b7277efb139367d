//! One busy slot: runs its job, reports it, and, when the completion leased the slot's next
//! job (`next_lease.rs`), runs that one too, until a report brings no next job; then the slot
//! goes back to the lease loop's free slots.

use super::attempt::Attempt;
use super::next_lease::NextLeases;
use super::{CompletionCoalescer, Handler, Slot, WorkerOptions, WorkerSummary};
use crate::http_client::Client;
use crate::job_log::{self, AttemptInfo, AttemptLog};
use agentd_schemas::api::LeaseGrant;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Mutex};

/// What a slot's task needs from the lease loop.
pub(super) struct SlotRunner {
    pub(super) client: Client,
    pub(super) coalescer: Option<CompletionCoalescer>,
    pub(super) handler: Handler,
    /// Turns true when the drain deadline passed.
    pub(super) drain: watch::Receiver<bool>,
    pub(super) options: WorkerOptions,
    /// Set when completions ask for the slot's next job.
    pub(super) next: Option<Arc<NextLeases>>,
    pub(super) free_slots: Arc<Mutex<Vec<Slot>>>,
    pub(super) summary: Arc<Mutex<WorkerSummary>>,
    /// Wakes the lease loop once the slot is free again.
    pub(super) slot_freed: mpsc::Sender<()>,
}

impl SlotRunner {
    /// Runs `grant` in `slot`, then every job leased for the slot with a completion.
    pub(super) async fn run(self, grant: LeaseGrant, slot: Slot) {
        let metrics = self.options.metrics.clone();
        let mut grant = Some(grant);
        while let Some(current) = grant.take() {
            let queue = current.job.queue.clone();
            metrics.job_started(&queue);
            let (outcome, next) = self.attempt(&current).run(current, slot.clone()).await;
            self.summary.lock().await.count(outcome);
            metrics.job_ended(&queue, outcome.into());
            grant = next;
        }
        self.free_slots.lock().await.push(slot);
        // Full means the loop already has a wake-up pending; one is enough.
        let _wake_up_pending = self.slot_freed.try_send(());
    }

    fn attempt(&self, grant: &LeaseGrant) -> Attempt {
        Attempt {
            client: self.client.clone(),
            coalescer: self.coalescer.clone(),
            handler: self.handler.clone(),
            drain: self.drain.clone(),
            heartbeat_divisor: self.options.heartbeat_divisor.max(2),
            log: AttemptLog::start(
                &self.options.job_logs,
                &AttemptInfo {
                    job_id: grant.job_id,
                    lease_id: grant.lease_id,
                    attempt: grant.attempt,
                    worker_id: self.options.worker_id.clone(),
                    started_at_ms: job_log::now_ms(),
                },
            ),
            metrics: self.options.metrics.clone(),
            next: self.next.clone(),
        }
    }
}
