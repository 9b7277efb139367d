//! The sequencer: the one task through which every state change passes.
//!
//! For each command it validates against current state, decides the events (time, ids, lease
//! expiries and retry jitter are decided here and written into the events), assigns the next
//! LSN, applies the record to the in-memory [`QueueState`] and hands the encoded frame to the log
//! writer. The caller is answered only when the writer reports the frame durable.
//!
//! Applying before durability lets many commands share one group commit. It is safe because the
//! log is written in LSN order: an answer that depends on an earlier record is never durable
//! before that record. If an append fails (disk full), every later in-flight frame fails too;
//! the sequencer then rebuilds its state from the durable log and runs in careful mode (append,
//! wait, then apply) until an append succeeds again.

mod commands;
mod waiters;
#[cfg(test)]
mod wake_tests;

pub use commands::{
    Command, DomainOutcome, LeaseGrantCore, LeaseOutcome, QueueDigest, SequencerError,
    DIGEST_HOLD_MAX,
};

use crate::log::{AppendError, LogReader, LogWriter};
use crate::queue::{decide, QueueLimits, QueueState};
use crate::replay::{drive, DriveError};
use agentd_schemas::events::{encode_record, Event, LogRecord, RECORD_FORMAT_VERSION};
use agentd_schemas::Lsn;
use rand::Rng;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use waiters::Waiters;

/// Capacity of the command channel: handlers wait (backpressure) beyond this.
pub const COMMAND_QUEUE_CAPACITY: usize = 16_384;

/// A frame queued at the writer whose outcome is not known yet.
struct InFlight {
    rx: oneshot::Receiver<Result<Lsn, AppendError>>,
    on_durable: Box<dyn FnOnce(Result<Lsn, AppendError>) + Send>,
}

/// Handle used by HTTP handlers to talk to the sequencer.
#[derive(Clone)]
pub struct SequencerHandle {
    tx: mpsc::Sender<Command>,
}

impl SequencerHandle {
    /// Sends a command built around a reply channel and waits for the answer.
    pub async fn call<T>(
        &self,
        build: impl FnOnce(oneshot::Sender<Result<T, SequencerError>>) -> Command,
    ) -> Result<T, SequencerError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(build(reply_tx))
            .await
            .map_err(|_| SequencerError::ShuttingDown)?;
        reply_rx.await.map_err(|_| SequencerError::ShuttingDown)?
    }
}

/// Everything the sequencer task owns.
pub struct Sequencer {
    state: QueueState,
    limits: QueueLimits,
    writer: LogWriter,
    /// Reads the durable log back when state must be rebuilt after a failed append.
    log: LogReader,
    next_lsn: Lsn,
    in_flight: VecDeque<InFlight>,
    waiters: Waiters,
    /// Set after a failed append: append, wait, then apply, until one append succeeds.
    careful: bool,
    last_ts_ms: u64,
    lease_wait_ms_max: u64,
    lease_waiters_max: usize,
}

/// Settings the sequencer needs besides the state and the writer.
pub struct SequencerOptions {
    pub limits: QueueLimits,
    pub log: LogReader,
    pub lease_wait_ms_max: u64,
    pub lease_waiters_max: usize,
}

impl Sequencer {
    /// Starts the sequencer task over a state replayed up to the writer's durable LSN.
    pub fn spawn(
        state: QueueState,
        writer: LogWriter,
        options: SequencerOptions,
    ) -> (SequencerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let next_lsn = state.last_lsn.next();
        let last_ts_ms = state.last_ts_ms;
        let sequencer = Sequencer {
            state,
            limits: options.limits,
            writer,
            log: options.log,
            next_lsn,
            in_flight: VecDeque::new(),
            waiters: Waiters::default(),
            careful: false,
            last_ts_ms,
            lease_wait_ms_max: options.lease_wait_ms_max,
            lease_waiters_max: options.lease_waiters_max,
        };
        let task = tokio::spawn(sequencer.run(rx));
        (SequencerHandle { tx }, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut closed = false;
        loop {
            let now_ms = self.now_ms();
            let wake_at = self.next_wake_ms(now_ms).map(|at_ms| {
                tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms))
            });
            tokio::select! {
                biased;
                outcome = async { (&mut self.in_flight.front_mut().expect("guarded by the branch condition").rx).await }, if !self.in_flight.is_empty() => {
                    let in_flight = self.in_flight.pop_front().expect("front exists: just awaited it");
                    let outcome = outcome.unwrap_or(Err(AppendError::Closed));
                    let failed = outcome.is_err();
                    (in_flight.on_durable)(outcome);
                    if failed {
                        self.recover_from_failed_append().await;
                    }
                }
                command = rx.recv(), if !closed => {
                    match command {
                        Some(command) => self.handle(command).await,
                        None => closed = true,
                    }
                }
                _ = sleep_until_opt(wake_at) => {
                    self.on_timer().await;
                }
            }
            if closed && self.in_flight.is_empty() {
                break;
            }
            if self.waiters.wake_pending() {
                self.serve_waiters().await;
            }
        }
        self.waiters.answer_all_empty();
    }

    /// Current wall-clock time, never earlier than a time already written to the log.
    fn now_ms(&mut self) -> u64 {
        let wall_ms = crate::clock::now_ms();
        self.last_ts_ms = self.last_ts_ms.max(wall_ms);
        self.last_ts_ms
    }

    fn next_wake_ms(&self, now_ms: u64) -> Option<u64> {
        let mut wake = self.state.next_expiry_ms();
        if !self.waiters.is_empty() {
            wake = min_opt(wake, self.waiters.next_deadline_ms());
            wake = min_opt(wake, self.state.next_due_ms());
        }
        wake.map(|at| at.max(now_ms))
    }

    async fn on_timer(&mut self) {
        let now_ms = self.now_ms();
        let events = decide::expire_leases(&self.state, &self.limits, now_ms, || {
            rand::rng().random::<f64>()
        });
        if !events.is_empty() {
            let count = events.len() as u64;
            metrics::counter!("agentd_lease_expirations_total").increment(count);
            let ready = commands::queues_made_ready(&self.state, &events);
            self.commit(now_ms, None, events, Box::new(|_| {})).await;
            self.wake_waiters_of(&ready);
        }
        self.waiters.expire(now_ms);
        if self.state.next_due_ms().is_some_and(|due| due <= now_ms) {
            self.waiters.wake_all();
        }
    }

    async fn handle(&mut self, command: Command) {
        let now_ms = self.now_ms();
        commands::handle(self, now_ms, command).await;
    }

    /// Appends `events` as one record, applies it, and calls `on_durable` when the writer
    /// answers. Returns the LSN the record got.
    async fn commit(
        &mut self,
        now_ms: u64,
        actor: Option<String>,
        events: Vec<Event>,
        on_durable: Box<dyn FnOnce(Result<Lsn, AppendError>) + Send>,
    ) -> Lsn {
        let lsn = self.next_lsn;
        let record = LogRecord {
            ts_ms: now_ms,
            actor,
            events,
        };
        let payload = encode_record(&record);
        metrics::counter!("agentd_events_appended_total").increment(record.events.len() as u64);
        count_job_events(&record.events);
        if self.careful {
            let outcome = self
                .writer
                .append(lsn, RECORD_FORMAT_VERSION, payload)
                .await;
            if outcome.is_ok() {
                self.careful = false;
                self.next_lsn = lsn.next();
                self.state.apply(lsn, &record);
            }
            on_durable(outcome);
            return lsn;
        }
        match self
            .writer
            .enqueue(lsn, RECORD_FORMAT_VERSION, payload)
            .await
        {
            Ok(rx) => {
                self.next_lsn = lsn.next();
                self.state.apply(lsn, &record);
                self.in_flight.push_back(InFlight { rx, on_durable });
            }
            Err(error) => on_durable(Err(error)),
        }
        lsn
    }

    /// Calls `answer` once every frame now in flight is durable (at once when none is), with
    /// the first failure if one fails. A decision that appended nothing, or a refusal, may rest
    /// on a fact still in flight (a step recorded a moment ago); answering only after it is
    /// durable keeps a 2xx or a 409 from resting on a record a crash or a full disk could take
    /// back.
    pub(super) fn after_in_flight(
        &mut self,
        answer: Box<dyn FnOnce(Result<(), AppendError>) + Send>,
    ) {
        match self.in_flight.back_mut() {
            None => answer(Ok(())),
            Some(last) => {
                let earlier = std::mem::replace(&mut last.on_durable, Box::new(|_| {}));
                last.on_durable = Box::new(move |outcome| {
                    let for_answer = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
                    earlier(outcome);
                    answer(for_answer);
                });
            }
        }
    }

    /// After a failed append, every later frame fails too. Wait for all of them, then rebuild the
    /// state from what is durable and continue in careful mode.
    async fn recover_from_failed_append(&mut self) {
        while let Some(in_flight) = self.in_flight.pop_front() {
            let outcome = in_flight.rx.await.unwrap_or(Err(AppendError::Closed));
            (in_flight.on_durable)(outcome);
        }
        let durable_lsn = self.writer.durable_lsn();
        tracing::warn!(%durable_lsn, "an append failed; rebuilding queue state from the durable log and appending carefully");
        let log = self.log.clone();
        let rebuilt =
            tokio::task::spawn_blocking(move || replay_queue_state(&log, durable_lsn)).await;
        match rebuilt {
            Ok(Ok(state)) => {
                self.state = state;
                self.next_lsn = durable_lsn.next();
                self.careful = true;
                self.waiters.wake_all();
            }
            Ok(Err(error)) => crate::fatal(&format!(
                "cannot rebuild queue state after a failed append: {error}"
            )),
            Err(error) => crate::fatal(&format!("queue state rebuild task failed: {error}")),
        }
    }

    /// Notes that jobs may have become leasable in `queues`.
    pub(super) fn wake_waiters_of(&mut self, queues: &[std::sync::Arc<str>]) {
        for queue in queues {
            self.waiters.wake_queue(queue);
        }
    }

    /// Moves delayed jobs that are due into their queues' ready sets. Whoever promotes them
    /// also wakes the parked long-polls (every one: promotion is rare and may touch any
    /// queue), since the due-job timer will no longer see them as due.
    pub(super) fn promote_due_jobs(&mut self, now_ms: u64) {
        if self.state.next_due_ms().is_some_and(|due| due <= now_ms) {
            self.state.promote_due(now_ms);
            self.waiters.wake_all();
        }
    }

    /// Tries to satisfy the woken parked long-polls in arrival order.
    async fn serve_waiters(&mut self) {
        let now_ms = self.now_ms();
        self.promote_due_jobs(now_ms);
        for (arrival, waiter) in self.waiters.take_woken() {
            if waiter.reply.is_closed() {
                continue;
            }
            let ask = decide::LeaseAsk {
                worker_id: &waiter.worker_id,
                queues: &waiter.queues,
                tags: &waiter.tags,
                max_jobs: waiter.max_jobs,
            };
            let decision = decide::lease(&self.state, &self.limits, now_ms, &ask);
            if decision.events.is_empty() {
                self.waiters.park_back(arrival, waiter);
                continue;
            }
            let grants = commands::grants_of(&self.state, &decision.events);
            record_lease_latencies(&self.state, now_ms, &decision.events);
            let reply = waiter.reply;
            self.commit(
                now_ms,
                waiter.actor,
                decision.events,
                Box::new(move |outcome| {
                    let _ignored_if_client_left = reply.send(
                        outcome
                            .map(|lsn| LeaseOutcome {
                                lsn: Some(lsn),
                                grants,
                            })
                            .map_err(SequencerError::from),
                    );
                }),
            )
            .await;
        }
    }
}

/// Counts the job events of a record by kind (`agentd_job_events_total`): a batch of 1000
/// submissions costs one counter update, not 1000.
fn count_job_events(events: &[Event]) {
    use crate::metrics_catalog::JOB_EVENTS;
    let mut counts = [0u64; JOB_EVENTS.len()];
    for event in events {
        let name = match event {
            Event::JobSubmitted(_) => "job_submitted",
            Event::JobLeased(_) => "job_leased",
            Event::JobCompleted { .. } => "job_completed",
            Event::JobFailed { .. } => "job_failed",
            Event::JobCancelled { .. } => "job_cancelled",
            Event::JobRetried { .. } => "job_retried",
            _ => continue,
        };
        // Every name above is in JOB_EVENTS (the series registered at zero at start-up).
        if let Some(position) = JOB_EVENTS.iter().position(|known| *known == name) {
            counts[position] += 1;
        }
    }
    for (name, count) in JOB_EVENTS.iter().zip(counts) {
        if count > 0 {
            metrics::counter!("agentd_job_events_total", "event" => *name).increment(count);
        }
    }
}

/// Records enqueue-to-start latency for jobs about to be leased.
fn record_lease_latencies(state: &QueueState, now_ms: u64, events: &[Event]) {
    for event in events {
        if let Event::JobLeased(leased) = event {
            if let Some(crate::queue::JobStatus::Waiting { run_at_ms }) =
                state.job(leased.job_id).map(|job| &job.status)
            {
                metrics::histogram!("agentd_job_enqueue_to_start_seconds")
                    .record(now_ms.saturating_sub(*run_at_ms) as f64 / 1000.0);
            }
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Replays the log up to `up_to` into a fresh queue state.
pub fn replay_queue_state(log: &LogReader, up_to: Lsn) -> Result<QueueState, DriveError> {
    /// Memory only: the batch size just bounds how many decoded records wait at once.
    const BATCH_RECORDS: usize = 512;
    let mut state = QueueState::new();
    drive(
        log,
        Lsn::ZERO,
        up_to,
        BATCH_RECORDS,
        &mut [&mut state],
        |_| {},
    )?;
    Ok(state)
}

impl From<AppendError> for SequencerError {
    fn from(error: AppendError) -> Self {
        SequencerError::Append(error)
    }
}
