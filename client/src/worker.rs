//! The worker loop behind `agentctl worker`: long-polls for leases into free slots, runs a
//! handler per job, heartbeats at a fraction of the lease TTL, and reports the outcome.
//!
//! A job whose lease is lost (expired, cancelled, superseded) is stopped at once: the handler
//! sees its `JobContext::stop` change from `StopReason::Running` to `LeaseLost`, and a command
//! handler kills the job's whole process group. The same happens with `ServerLost` when the
//! slot's model server goes down or is restarted under the job. On SIGTERM the worker stops
//! leasing, lets running jobs finish until the drain deadline, then stops the rest (`Draining`)
//! and fails them as retryable so another worker picks them up.
//!
//! Each attempt's output goes to a `crate::job_log::AttemptLog` as it comes (the job's log file
//! with `--log-dir`, and the tail sent with the completion or failure as `log_tail`).
//!
//! A slot takes a lease only while its gates are open: its model server is ready (`--serve`)
//! and its persistent actor said hello (`--persistent`, `crate::persistent`). What the worker
//! does is counted in `crate::worker_metrics` (`--metrics-listen`).

mod attempt;
mod command;
mod complete_batch;
mod next_lease;
mod slot_runner;

use crate::http_client::{Client, ClientError};
use crate::job_log::{JobLogSettings, OutputSink};
use crate::worker_metrics::{JobEnd, WorkerMetrics};
use agentd_schemas::api::{LeaseGrant, LeaseRequest, NextLeaseRequest};
use agentd_schemas::events::Tags;
use attempt::Reported;
use next_lease::{LeaseBudget, NextLeases};
use slot_runner::SlotRunner;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;

pub(crate) use command::kill_group;
pub use command::{command_handler, DaemonAccess};
pub use complete_batch::{
    CompletionAnswer, CompletionCalls, CompletionCoalescer, COMPLETE_BATCH_MAX,
};

/// Most bytes of stderr kept for a failure message (the tail says the most).
pub const STDERR_TAIL_BYTES: usize = 4096;
/// Most bytes of stdout read as a job result.
pub const STDOUT_BYTES_MAX: usize = 1024 * 1024;

/// One execution slot; on a GPU box, one per GPU (or `--episodes-per-gpu` per GPU).
#[derive(Debug, Clone)]
pub struct Slot {
    pub index: usize,
    /// Extra environment for processes run in this slot (e.g. `CUDA_VISIBLE_DEVICES`).
    pub env: Vec<(String, String)>,
    /// The slot's model server (`--serve`), when there is one: no lease is taken into the slot
    /// while it is not ready, and the slot's running job is stopped and failed as retryable
    /// when it goes down or is restarted.
    pub server: Option<watch::Receiver<ServerStatus>>,
    /// The slot's persistent actor (`--persistent`), when there is one: true while it is
    /// running and said hello; no lease is taken into the slot otherwise (it is starting, or
    /// being restarted after it died).
    pub actor: Option<watch::Receiver<bool>>,
}

impl Slot {
    /// A slot without a model server or an actor is always ready.
    fn ready(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|server| server.borrow().ready)
            && self.actor.as_ref().is_none_or(|actor| *actor.borrow())
    }
}

/// One model server's state, as its supervisor publishes it (`crate::model_server`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStatus {
    /// Counts the server's lives: it goes up the moment the server is found dead or is killed
    /// for a restart. A job that began under one generation must not go on under another (the
    /// server lost whatever the job had asked it).
    pub generation: u64,
    /// Answered its health check, and has not failed one since.
    pub ready: bool,
}

/// How often the worker looks again for a slot whose model server became ready (or whose actor
/// said hello), while every free slot waits for one.
pub const SERVER_READY_POLL: Duration = Duration::from_millis(200);

/// What a handler gets for one job.
pub struct JobContext {
    pub grant: LeaseGrant,
    pub client: Client,
    pub slot: Slot,
    /// `StopReason::Running` while the job may go on; any other value means stop now, and says
    /// why: the lease was lost, the drain deadline passed, or the slot's model server was lost.
    pub stop: watch::Receiver<StopReason>,
    /// Where the job's output goes as it comes: its log file (`--log-dir`) and the tail sent
    /// with the completion or failure (`crate::job_log`).
    pub output: OutputSink,
}

/// Why a running job must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Running,
    LeaseLost,
    Draining,
    /// The slot's model server went down or was restarted under the job.
    ServerLost,
}

/// How a job ended, as the handler reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Complete(Option<serde_json::Value>),
    Fail {
        error: String,
        retryable: bool,
    },
    /// Stopped because `JobContext::stop` left `Running` (a lost lease or model server, the
    /// drain deadline); the worker reports what fits.
    Stopped,
}

/// A job handler: a command to run, or a built-in.
pub type Handler =
    Arc<dyn Fn(JobContext) -> Pin<Box<dyn Future<Output = JobOutcome> + Send>> + Send + Sync>;

/// Settings of a worker.
#[derive(Clone)]
pub struct WorkerOptions {
    pub worker_id: String,
    pub queues: Vec<String>,
    pub tags: Tags,
    pub slots: Vec<Slot>,
    /// Long-poll wait per lease request.
    pub wait_ms: u64,
    /// After SIGTERM, how long running jobs may take before they are stopped and failed.
    pub drain_timeout: Duration,
    /// Heartbeat every `lease_ttl / heartbeat_divisor`.
    pub heartbeat_divisor: u32,
    /// Stop after this many jobs (for tests and batch runs); `None` runs until SIGTERM.
    pub max_jobs: Option<u64>,
    /// Job log files and the tail sent to the daemon.
    pub job_logs: JobLogSettings,
    /// Where jobs, lease losses and heartbeat failures are counted (`--metrics-listen`).
    pub metrics: Arc<WorkerMetrics>,
    /// Most completions per call (`--complete-batch-max`): 1 sends each job's completion with
    /// its own `POST /v1/leases/{id}/complete`; above 1, slots hand them to one
    /// [`CompletionCoalescer`], which sends those that come while a call is in flight together.
    pub complete_batch_max: usize,
    /// Whether a slot's completion asks for its next job in the same call (`next`), so a busy
    /// queue costs one round trip per job instead of two; off with `--no-lease-on-complete`.
    /// Batched completions (`complete_batch_max` above 1) never carry `next`.
    pub lease_on_complete: bool,
}

/// Counters printed when the worker stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerSummary {
    pub completed: u64,
    pub failed: u64,
    pub lost: u64,
}

/// Runs until `shutdown` turns true (then drains) or `max_jobs` jobs were handled.
pub async fn run(
    client: Client,
    options: WorkerOptions,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) -> Result<WorkerSummary, ClientError> {
    let mut worker = LeaseLoop::new(client, options, handler, shutdown.clone());
    worker.lease_until_stopped(&mut shutdown).await?;
    worker.finish(&mut shutdown).await;
    let summary = *worker.summary.lock().await;
    Ok(summary)
}

/// First wait after a failed lease request; doubled per failure in a row.
const LEASE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between lease requests that failed.
const LEASE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The state of [`run`]: the free slots, the running jobs and what they add up to.
struct LeaseLoop {
    client: Client,
    options: WorkerOptions,
    handler: Handler,
    /// Slots without a job; a job puts its slot back when it ends.
    free_slots: Arc<Mutex<Vec<Slot>>>,
    summary: Arc<Mutex<WorkerSummary>>,
    /// Turned true when the drain deadline passes: every running job stops.
    drain_tx: watch::Sender<bool>,
    running: JoinSet<()>,
    /// The leases `max_jobs` allows, shared with the slots that lease with a completion.
    budget: Arc<LeaseBudget>,
    /// What a finishing slot asks for with its completion, when it does.
    next: Option<Arc<NextLeases>>,
    /// A job that ended wakes the loop (bounded by the slot count: one pending wake-up is
    /// enough).
    slot_freed_tx: mpsc::Sender<()>,
    slot_freed_rx: mpsc::Receiver<()>,
    /// The completer the slots share, with `complete_batch_max` above 1.
    coalescer: Option<CompletionCoalescer>,
    backoff: Duration,
    lease_failures_in_a_row: u64,
}

impl LeaseLoop {
    fn new(
        client: Client,
        options: WorkerOptions,
        handler: Handler,
        shutdown: watch::Receiver<bool>,
    ) -> LeaseLoop {
        let (slot_freed_tx, slot_freed_rx) = mpsc::channel::<()>(options.slots.len().max(1));
        let budget = Arc::new(LeaseBudget::new(options.max_jobs));
        let next = (options.lease_on_complete && options.complete_batch_max <= 1).then(|| {
            Arc::new(NextLeases {
                request: NextLeaseRequest {
                    worker_id: options.worker_id.clone(),
                    queues: options.queues.clone(),
                    tags: Some(options.tags.clone()),
                    max_jobs: Some(1),
                },
                budget: budget.clone(),
                shutdown,
            })
        });
        LeaseLoop {
            budget,
            next,
            coalescer: (options.complete_batch_max > 1)
                .then(|| CompletionCoalescer::start(client.clone(), options.complete_batch_max)),
            client,
            free_slots: Arc::new(Mutex::new(options.slots.clone())),
            options,
            handler,
            summary: Arc::new(Mutex::new(WorkerSummary::default())),
            drain_tx: watch::channel(false).0,
            running: JoinSet::new(),
            slot_freed_tx,
            slot_freed_rx,
            backoff: LEASE_BACKOFF_FIRST,
            lease_failures_in_a_row: 0,
        }
    }

    /// Leases into free, ready slots until a stop is requested or `max_jobs` were leased.
    async fn lease_until_stopped(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ClientError> {
        loop {
            if *shutdown.borrow() || self.budget.exhausted() {
                return Ok(());
            }
            let (free, waiting_for_gate) = {
                let slots = self.free_slots.lock().await;
                let ready = slots.iter().filter(|slot| slot.ready()).count();
                (ready, slots.len() - ready)
            };
            if free == 0 {
                self.wait_for_a_slot(waiting_for_gate > 0, shutdown).await;
                continue;
            }
            let Some(leases) = self.lease(free, shutdown).await? else {
                continue;
            };
            for grant in leases {
                self.start(grant).await;
            }
            while self.running.try_join_next().is_some() {}
        }
    }

    /// Waits until a job ends, a stop is requested, or (with slots waiting for their model
    /// server or actor) a moment passes.
    async fn wait_for_a_slot(&mut self, gates_closed: bool, shutdown: &mut watch::Receiver<bool>) {
        // A server becoming ready (or an actor saying hello) has no channel into this loop;
        // look again shortly.
        let server_poll = async {
            if gates_closed {
                tokio::time::sleep(SERVER_READY_POLL).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = self.slot_freed_rx.recv() => {}
            _ = shutdown.changed() => {}
            Some(_) = self.running.join_next() => {}
            _ = server_poll => {}
        }
    }

    /// One lease request for up to `free` jobs; `None` when it was cut short by a stop request
    /// or failed transiently (after a backoff).
    async fn lease(
        &mut self,
        free: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<LeaseGrant>>, ClientError> {
        let want = self.budget.reserve(free as u64);
        if want == 0 {
            // What `max_jobs` leaves is reserved by slots asking with their completions; their
            // answers either run in their slots or free them.
            self.wait_for_a_slot(false, shutdown).await;
            return Ok(None);
        }
        let options = &self.options;
        let request = LeaseRequest {
            worker_id: options.worker_id.clone(),
            queues: options.queues.clone(),
            tags: Some(options.tags.clone()),
            // At most the free slots, at most a few thousand.
            max_jobs: Some(want as u32),
            wait_ms: Some(options.wait_ms),
        };
        let response = tokio::select! {
            response = self.client.lease(&request) => response,
            _ = shutdown.changed() => {
                self.budget.settle(want, 0);
                return Ok(None);
            }
        };
        let granted = response
            .as_ref()
            .map_or(0, |answer| answer.leases.len() as u64);
        self.budget.settle(want, granted);
        match response {
            Ok(response) => {
                self.backoff = LEASE_BACKOFF_FIRST;
                self.lease_failures_in_a_row = 0;
                Ok(Some(response.leases))
            }
            Err(error) if error.is_transient() => {
                self.back_off(&error, shutdown).await;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Says why a lease request failed and waits before the next one.
    async fn back_off(&mut self, error: &ClientError, shutdown: &mut watch::Receiver<bool>) {
        eprintln!(
            "agentctl worker: lease request failed ({error}); retrying in {} ms",
            self.backoff.as_millis()
        );
        // Once per streak: the retries say the same thing again.
        if self.lease_failures_in_a_row == 0 {
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
        }
        self.lease_failures_in_a_row += 1;
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            _ = shutdown.changed() => {}
        }
        self.backoff = (self.backoff * 2).min(LEASE_BACKOFF_MAX);
    }

    /// Runs `grant` in a free, ready slot, or gives it back when there is none.
    async fn start(&mut self, grant: LeaseGrant) {
        let slot = {
            let mut slots = self.free_slots.lock().await;
            let position = slots.iter().rposition(Slot::ready);
            position.map(|position| slots.swap_remove(position))
        };
        let Some(slot) = slot else {
            // The daemon never grants more than asked; answer it honestly if it did (or a
            // model server went down during the long poll). If that fails too, the lease
            // expires and the job runs again.
            let _expires_if_unanswered = self
                .client
                .fail(grant.lease_id, "worker had no free slot", true)
                .await;
            return;
        };
        let runner = SlotRunner {
            client: self.client.clone(),
            coalescer: self.coalescer.clone(),
            handler: self.handler.clone(),
            drain: self.drain_tx.subscribe(),
            options: self.options.clone(),
            next: self.next.clone(),
            free_slots: self.free_slots.clone(),
            summary: self.summary.clone(),
            slot_freed: self.slot_freed_tx.clone(),
        };
        self.running.spawn(runner.run(grant, slot));
    }

    /// After the leasing stopped: waits for the running jobs (after `max_jobs`, unless a stop
    /// is requested), then drains them until the deadline and stops the rest.
    async fn finish(&mut self, shutdown: &mut watch::Receiver<bool>) {
        // Finished jobs stay in the set until joined; only count the ones still running.
        while self.running.try_join_next().is_some() {}
        // After `max_jobs`, running jobs finish in their own time, unless a stop is requested.
        if !self.running.is_empty() && !*shutdown.borrow() {
            eprintln!(
                "agentctl worker: max jobs leased; waiting for {} running job(s)",
                self.running.len()
            );
            loop {
                tokio::select! {
                    next = self.running.join_next() => if next.is_none() { break },
                    // A closed channel disables this branch instead of firing it in a loop.
                    Ok(()) = shutdown.changed() => if *shutdown.borrow() { break },
                }
            }
        }
        if !self.running.is_empty() {
            self.drain().await;
        }
    }

    /// No new leases; running jobs get until the drain deadline, then are stopped.
    async fn drain(&mut self) {
        eprintln!(
            "agentctl worker: draining {} running job(s) for up to {} s",
            self.running.len(),
            self.options.drain_timeout.as_secs()
        );
        let deadline = tokio::time::sleep(self.options.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.running.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    // Every job's heartbeat task holds a receiver until its job ends.
                    let _no_receivers_means_no_jobs = self.drain_tx.send(true);
                    while self.running.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
}

impl WorkerSummary {
    fn count(&mut self, reported: Reported) {
        match reported {
            Reported::Completed => self.completed += 1,
            Reported::Failed => self.failed += 1,
            Reported::Lost => self.lost += 1,
        }
    }
}

impl From<Reported> for JobEnd {
    fn from(reported: Reported) -> JobEnd {
        match reported {
            Reported::Completed => JobEnd::Completed,
            Reported::Failed => JobEnd::Failed,
            Reported::Lost => JobEnd::Lost,
        }
    }
}
