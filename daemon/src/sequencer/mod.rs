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
//!
//! Each command is a type implementing [`SequencerCommand`] (`jobs.rs`, `lease.rs`, `queues.rs`,
//! `domain.rs`, `internal.rs`): a pure `decide` against a [`DecideCx`] (state, limits, time, a
//! jitter source) returns a [`Decided`]: events to append and how to answer with their LSN, an
//! answer now, a long-poll to park, an answer after the frames in flight, or a digest hold.
//! `execute.rs` carries out every decision the same way; `observe.rs` counts the record's job
//! events, records its latencies and wakes the long-polls it may satisfy, once per record.
//!
//! A digest hold (`GET /v1/admin/digest`) is a state of the loop, not a wait inside it: while it
//! lasts no command is taken and no timer appends, but durability outcomes of frames already
//! in flight are still answered.

mod command;
mod complete_lease;
mod domain;
mod execute;
mod follow;
mod internal;
mod jobs;
mod lease;
mod observe;
mod queues;
mod waiters;

#[cfg(test)]
mod complete_lease_tests;
#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod hold_tests;
#[cfg(test)]
mod wake_tests;

pub use command::{Command, ReplyOf, Request, SequencerCommand, SequencerError};
pub use complete_lease::CompleteThenLease;
pub use domain::DomainOutcome;
pub use follow::{AdoptArchived, SequencerRole};
pub use internal::{AppendInternal, HoldForDigest, DIGEST_HOLD_MAX};
pub use jobs::{Cancel, Complete, CompleteMany, Fail, Heartbeat, Retry, Submit};
pub use lease::{Lease, LeaseGrantCore, LeaseOutcome};
pub use queues::{Queues, SetPaused};

use crate::log::{AppendError, LogReader, LogWriter};
use crate::queue::{decide, QueueLimits, QueueState};
use crate::replay::{drive, DriveError};
use agentd_schemas::Lsn;
use execute::{random_jitter, OnDurable};
use internal::DigestHold;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use waiters::Waiters;

/// Capacity of the command channel: handlers wait (backpressure) beyond this.
pub const COMMAND_QUEUE_CAPACITY: usize = 16_384;

/// A frame queued at the writer whose outcome is not known yet.
struct InFlight {
    rx: oneshot::Receiver<Result<Lsn, AppendError>>,
    on_durable: OnDurable,
}

/// Handle used by HTTP handlers to talk to the sequencer.
#[derive(Clone)]
pub struct SequencerHandle {
    tx: mpsc::Sender<Command>,
}

impl SequencerHandle {
    /// Sends a command on behalf of `actor` (the record's actor, if it appends one) and waits
    /// for the answer.
    pub async fn call<C>(
        &self,
        command: C,
        actor: Option<String>,
    ) -> Result<ReplyOf<C>, SequencerError>
    where
        C: SequencerCommand,
        Request<C>: Into<Command>,
    {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            command,
            actor,
            reply,
        };
        self.tx
            .send(request.into())
            .await
            .map_err(|_| SequencerError::ShuttingDown)?;
        answer.await.map_err(|_| SequencerError::ShuttingDown)?
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
    /// Set while a digest hold is in force: no command is taken and nothing is appended.
    hold: Option<DigestHold>,
    last_ts_ms: u64,
    lease_wait_ms_max: u64,
    lease_waiters_max: usize,
    /// A replica appends nothing and runs no timer (`follow.rs`).
    role: SequencerRole,
}

/// Settings the sequencer needs besides the state and the writer.
pub struct SequencerOptions {
    pub limits: QueueLimits,
    pub log: LogReader,
    pub lease_wait_ms_max: u64,
    pub lease_waiters_max: usize,
}

impl Sequencer {
    /// A sequencer over a state replayed up to the writer's durable LSN.
    fn new(state: QueueState, writer: LogWriter, options: SequencerOptions) -> Self {
        Sequencer {
            next_lsn: state.last_lsn.next(),
            last_ts_ms: state.last_ts_ms,
            state,
            limits: options.limits,
            writer,
            log: options.log,
            in_flight: VecDeque::new(),
            waiters: Waiters::default(),
            careful: false,
            hold: None,
            lease_wait_ms_max: options.lease_wait_ms_max,
            lease_waiters_max: options.lease_waiters_max,
            role: SequencerRole::Primary,
        }
    }

    /// Starts the sequencer task over a state replayed up to the writer's durable LSN.
    pub fn spawn(
        state: QueueState,
        writer: LogWriter,
        options: SequencerOptions,
    ) -> (SequencerHandle, tokio::task::JoinHandle<()>) {
        Self::spawn_as(SequencerRole::Primary, state, writer, options)
    }

    /// [`Self::spawn`] for `role`: a replica's sequencer only adopts archived records.
    pub fn spawn_as(
        role: SequencerRole,
        state: QueueState,
        writer: LogWriter,
        options: SequencerOptions,
    ) -> (SequencerHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let mut sequencer = Sequencer::new(state, writer, options);
        sequencer.role = role;
        let task = tokio::spawn(sequencer.run(rx));
        (SequencerHandle { tx }, task)
    }

    /// The loop: durability outcomes first (they answer callers), then the end of a digest
    /// hold, then commands and timers, which wait while a hold is in force.
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut closed = false;
        loop {
            let now_ms = self.now_ms();
            let wake_at = self.next_wake_ms(now_ms).map(|at_ms| {
                tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms))
            });
            let holding = self.hold.is_some();
            let has_in_flight = !self.in_flight.is_empty();
            let in_flight = self.in_flight.front_mut().map(|front| &mut front.rx);
            let hold = self.hold.as_mut();
            tokio::select! {
                biased;
                outcome = async move { in_flight.expect("guarded by the branch condition").await }, if has_in_flight => {
                    let in_flight = self.in_flight.pop_front().expect("front exists: just awaited it");
                    let outcome = outcome.unwrap_or(Err(AppendError::Closed));
                    let failed = outcome.is_err();
                    (in_flight.on_durable)(outcome);
                    if failed {
                        self.recover_from_failed_append().await;
                    }
                }
                () = async move { hold.expect("guarded by the branch condition").ended().await }, if holding => {
                    self.hold = None;
                }
                command = rx.recv(), if !closed && !holding => {
                    match command {
                        Some(command) => {
                            let now_ms = self.now_ms();
                            command.execute(&mut self, now_ms).await;
                        }
                        None => closed = true,
                    }
                }
                _ = sleep_until_opt(wake_at), if !holding => {
                    self.on_timer().await;
                }
            }
            if closed && self.in_flight.is_empty() && self.hold.is_none() {
                break;
            }
            if self.hold.is_none() && self.waiters.wake_pending() {
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
        if self.role == SequencerRole::Replica {
            // A replica decides nothing from its clock: lease expiries come from the primary.
            return None;
        }
        let mut wake = self.state.next_expiry_ms();
        if !self.waiters.is_empty() {
            wake = min_opt(wake, self.waiters.next_deadline_ms());
            wake = min_opt(wake, self.state.next_due_ms());
        }
        wake.map(|at| at.max(now_ms))
    }

    async fn on_timer(&mut self) {
        let now_ms = self.now_ms();
        let events = decide::expire_leases(&self.state, &self.limits, now_ms, random_jitter);
        if !events.is_empty() {
            let count = events.len() as u64;
            metrics::counter!("agentd_lease_expirations_total").increment(count);
            self.commit(now_ms, None, events, Box::new(|_| {})).await;
        }
        self.waiters.expire(now_ms);
        if self.state.next_due_ms().is_some_and(|due| due <= now_ms) {
            self.waiters.wake_all();
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
