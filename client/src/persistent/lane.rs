//! One lane of `agentctl worker --persistent`: a task that owns one actor process (its pipes,
//! its restarts) and runs the slot's jobs through it, one at a time.
//!
//! States (docs/persistent-actors.md draws them):
//!
//! ```text
//!   Starting --hello--> Ready --job--> Running --answer--> Ready
//!      |  ^                |              |  \--cancel--> Cancelling --answer--> Ready
//!      |  |                |              |                   \--grace passed--> (kill) Starting
//!      |  +--- Backoff <---+-- exit ------+-- exit: the job fails as retryable
//!      +-- no hello / exit: Backoff (on the worker's first start: the worker stops)
//!   stop (after the drain): stdin closed -> Exiting -> (grace) SIGTERM -> SIGKILL
//! ```
//!
//! One task reads both pipes, so output is routed without locks: while a job runs, the actor's
//! stderr and its stdout lines that are not protocol messages go to the job's log; otherwise to
//! the lane's own log (`<log-dir>/actor-slot<N>.log`, or the worker's stderr). Its `select!` is
//! biased towards stderr so that what an actor wrote on stderr before its answer lands in the
//! job's log, not in the next one's. Lines for stdin go through a writer task, so an actor that
//! stops reading its stdin cannot block the lane.

mod actor;
mod pipes;

use super::protocol::CancelReason;
use crate::job_log::OutputSink;
use crate::worker::JobOutcome;
use crate::worker_metrics::WorkerMetrics;
use actor::{ActorProcess, Ended, Handshake};
use agentd_schemas::JobId;
use pipes::{stopping, LaneLog};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// First wait before an actor that died is started again; doubles per death in a row (an actor
/// that answered a job since its start begins again from here), up to
/// [`ACTOR_RESTART_BACKOFF_MAX`].
pub const ACTOR_RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait before an actor is started again.
pub const ACTOR_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// After its stdin is closed (the worker stops), how long an actor may take to exit before its
/// process group gets SIGTERM.
pub const ACTOR_EXIT_GRACE: Duration = Duration::from_secs(10);
/// After SIGTERM, how long before SIGKILL.
pub const ACTOR_TERM_GRACE: Duration = Duration::from_secs(5);
/// After an actor exited, how long the lane keeps reading what it left in its pipes (a
/// grandchild that inherited them must not hold the lane).
pub const PIPE_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// After its stdout or stdin closed, how long an actor may live on before it is taken for dead
/// (and killed): a process that cannot answer or cannot be asked is of no use.
pub const PIPE_CLOSED_GRACE: Duration = Duration::from_secs(2);
/// Lines waiting for the stdin writer. The lane writes at most a job and its cancel before the
/// actor answers, so this only fills when the actor stopped reading.
const STDIN_LINES_QUEUED_MAX: usize = 8;
/// Bytes read from stderr at once.
const STDERR_CHUNK_BYTES: usize = 8 * 1024;
/// Bytes of recent stderr quoted when an actor dies or fails its hello.
const ERROR_TAIL_BYTES: usize = 2 * 1024;
/// Bytes of an over-long stdout line kept for the log.
const LONG_LINE_HEAD_BYTES: usize = 4 * 1024;
/// How long the lane waits for its log to be written when it ends.
const LOG_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Longest partial line held back before it is printed on the worker's stderr anyway.
const STDERR_LINE_BYTES_MAX: usize = 4 * 1024;

/// How every lane of a worker runs its actor: the worker's `--persistent` settings.
pub type LaneSettings = super::PersistentSettings;

/// What the persistent handler asks a lane.
#[derive(Debug)]
pub enum LaneCommand {
    /// Run a job: write `line` (a `job` line) to the actor, route its output to `output`, and
    /// answer on `reply`.
    Run {
        job_id: JobId,
        line: Vec<u8>,
        output: OutputSink,
        reply: oneshot::Sender<LaneAnswer>,
    },
    /// Stop the running job `job_id`.
    Cancel { job_id: JobId, reason: CancelReason },
}

/// How a job sent to a lane ended.
#[derive(Debug)]
pub enum LaneAnswer {
    /// The actor answered `result` or `failure`.
    Outcome(JobOutcome),
    /// The actor answered `cancelled` after a cancel.
    Cancelled,
    /// The actor did not answer the cancel in time; it was killed (and is being restarted).
    KilledAfterCancel,
    /// The actor is not running (starting, or restarting after a death).
    NotReady,
    /// The actor is running another job (the worker never sends two; a lane answers honestly).
    Busy,
    /// The actor died or broke the protocol while running the job: why.
    Died(String),
}

/// A lane's task and what it needs.
pub struct Lane {
    pub index: usize,
    /// The slot's environment (`CUDA_VISIBLE_DEVICES`, `AGENTD_MODEL_URL`, ...).
    pub env: Vec<(String, String)>,
    pub settings: Arc<LaneSettings>,
    pub commands: mpsc::Receiver<LaneCommand>,
    /// True while the actor said hello and runs; the worker leases into the slot only then.
    pub ready: watch::Sender<bool>,
    /// Turns true when the worker stops (after the drain).
    pub stop: watch::Receiver<bool>,
    /// Told how the first start went: `Ok` at the first hello, `Err(why)` when it failed (then
    /// the lane gives up and the worker stops, before it leased anything).
    pub first_start: Option<mpsc::Sender<(usize, Result<(), String>)>>,
    pub metrics: Arc<WorkerMetrics>,
}

impl Lane {
    fn name(&self) -> String {
        format!("actor of slot {}", self.index)
    }

    fn stop_requested(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Waits `wait` before a restart, answering jobs that arrive meanwhile as not ready; false
    /// when the worker stops meanwhile.
    async fn rest(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return !self.stop_requested(),
                _ = stopping(&mut self.stop) => return false,
                command = self.commands.recv() => match command {
                    Some(command) => refuse(command, LaneAnswer::NotReady),
                    None => return false,
                },
            }
        }
    }

    /// After an actor failed to start: the worker's first start fails with `why` (false: the
    /// lane is done); later, a restart after `backoff`, which doubles up to its cap (false when
    /// the worker stops meanwhile). `then` says what comes next, for the message.
    async fn after_failed_start(
        &mut self,
        why: String,
        then: &str,
        backoff: &mut Duration,
    ) -> bool {
        if self.first_start.is_some() {
            self.report_first_start(Err(why)).await;
            return false;
        }
        eprintln!(
            "agentctl worker: {}: {why}; {then} in {} s",
            self.name(),
            backoff.as_secs()
        );
        self.metrics.actor_restarted(false);
        if !self.rest(*backoff).await {
            return false;
        }
        *backoff = (*backoff * 2).min(ACTOR_RESTART_BACKOFF_MAX);
        true
    }

    async fn report_first_start(&mut self, outcome: Result<(), String>) {
        if let Some(first_start) = self.first_start.take() {
            // The worker waits for every lane's first start; gone means it stopped already.
            let _worker_gone = first_start.send((self.index, outcome)).await;
        }
    }
}

/// Answers a command that cannot be run now.
fn refuse(command: LaneCommand, answer: LaneAnswer) {
    if let LaneCommand::Run { reply, .. } = command {
        // The handler stopped waiting: its job is over either way.
        let _handler_gone = reply.send(answer);
    }
}

/// Runs the lane until the worker stops (or its first start fails); returns once the lane's log
/// is written.
pub async fn run(lane: Lane) {
    let mut log = LaneLog::new(&lane.settings, lane.index);
    supervise(lane, &mut log).await;
    log.close().await;
}

async fn supervise(mut lane: Lane, log: &mut LaneLog) {
    let name = lane.name();
    let mut backoff = ACTOR_RESTART_BACKOFF_INITIAL;
    loop {
        if lane.stop_requested() {
            return;
        }
        let mut actor = match start(&mut lane, log, &mut backoff).await {
            Started::Ready(actor) => actor,
            Started::Retry => continue,
            Started::Done => return,
        };
        eprintln!(
            "agentctl worker: {name}: ready (pid {} said hello)",
            actor.pid_text()
        );
        lane.report_first_start(Ok(())).await;
        lane.ready.send_replace(true);
        lane.metrics.actor_ready(true);
        let (ended, answered_a_job) = actor.serve(&mut lane, log).await;
        lane.ready.send_replace(false);
        lane.metrics.actor_ready(false);
        if answered_a_job {
            backoff = ACTOR_RESTART_BACKOFF_INITIAL;
        }
        match ended {
            Ended::Stop => {
                actor.shut_down(&name, log).await;
                return;
            }
            Ended::KilledAfterCancel => {
                // Not a crash: the new process starts at once.
                actor.kill(log).await;
                lane.metrics.actor_restarted(true);
                eprintln!("agentctl worker: {name}: starting a new actor");
            }
            Ended::Died(how) => {
                // Whatever it started in its group goes with it; one that stopped reading its
                // stdin is still running.
                actor.kill(log).await;
                log.note(&format!("--- agentctl worker: {name}: {how}\n"))
                    .await;
                eprintln!(
                    "agentctl worker: {name}: {how}; restarting in {} s",
                    backoff.as_secs()
                );
                lane.metrics.actor_restarted(false);
                if !lane.rest(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(ACTOR_RESTART_BACKOFF_MAX);
            }
        }
    }
}

/// How a start of the lane's actor went.
enum Started {
    /// It said hello.
    Ready(ActorProcess),
    /// It failed and the backoff passed: start another.
    Retry,
    /// It failed on the worker's first start, or the worker stops: the lane is done.
    Done,
}

/// Starts the lane's actor and waits for its hello.
async fn start(lane: &mut Lane, log: &mut LaneLog, backoff: &mut Duration) -> Started {
    let name = lane.name();
    let mut actor = match ActorProcess::spawn(&lane.settings, lane.index, &lane.env) {
        Ok(actor) => actor,
        Err(error) => {
            let program = lane.settings.argv.first().cloned().unwrap_or_default();
            let why = format!("cannot start {program}: {error}");
            return match lane.after_failed_start(why, "retrying", backoff).await {
                true => Started::Retry,
                false => Started::Done,
            };
        }
    };
    let command_line = lane.settings.argv.join(" ");
    eprintln!(
        "agentctl worker: {name}: started (pid {}): {command_line}",
        actor.pid_text()
    );
    log.note(&format!(
        "--- agentctl worker: {name} started (pid {}): {command_line}\n",
        actor.pid_text()
    ))
    .await;
    match actor.handshake(lane, log).await {
        Handshake::Ready => Started::Ready(actor),
        Handshake::Stopped => {
            actor.shut_down(&name, log).await;
            Started::Done
        }
        Handshake::Failed(why) => {
            actor.kill(log).await;
            match lane.after_failed_start(why, "restarting", backoff).await {
                true => Started::Retry,
                false => Started::Done,
            }
        }
    }
}
