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

use super::protocol::{self, ActorLine, CancelReason, ACTOR_LINE_BYTES_MAX, PROTOCOL_ENV};
use crate::job_log::{OutputSink, TailBuffer};
use crate::model_server;
use crate::worker::JobOutcome;
use crate::worker_metrics::WorkerMetrics;
use agentd_schemas::JobId;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};
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
    let program = lane.settings.argv.first().cloned().unwrap_or_default();
    loop {
        if lane.stop_requested() {
            return;
        }
        let mut actor = match ActorProcess::spawn(&lane.settings, lane.index, &lane.env) {
            Ok(actor) => actor,
            Err(error) => {
                let why = format!("cannot start {program}: {error}");
                if lane.after_failed_start(why, "retrying", &mut backoff).await {
                    continue;
                }
                return;
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
        match actor.handshake(&mut lane, log).await {
            Handshake::Ready => {}
            Handshake::Stopped => {
                actor.shut_down(&name, log).await;
                return;
            }
            Handshake::Failed(why) => {
                actor.kill(log).await;
                if lane
                    .after_failed_start(why, "restarting", &mut backoff)
                    .await
                {
                    continue;
                }
                return;
            }
        }
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

enum Handshake {
    Ready,
    Failed(String),
    Stopped,
}

enum Ended {
    /// The worker stops: close stdin and let the actor exit.
    Stop,
    /// The process exited, closed its stdout, or stopped reading its stdin: why.
    Died(String),
    /// It did not answer a cancel in time and was killed.
    KilledAfterCancel,
}

/// The job the actor is running.
struct RunningJob {
    job_id: JobId,
    output: OutputSink,
    reply: oneshot::Sender<LaneAnswer>,
    /// Set once a cancel was written: the actor must answer by then.
    cancel_deadline: Option<Instant>,
}

impl RunningJob {
    fn answer(self, answer: LaneAnswer) {
        // The handler stopped waiting (its task was aborted): nothing to tell.
        let _handler_gone = self.reply.send(answer);
    }
}

/// One actor process and its pipes.
struct ActorProcess {
    /// `actor of slot N`, for messages.
    name: String,
    child: Child,
    pid: Option<u32>,
    /// The stdin writer's inbox; dropping it closes the actor's stdin.
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    stdout: LineReader,
    stderr: Option<ChildStderr>,
    /// The last bytes of stderr, for error messages.
    recent_stderr: TailBuffer,
    /// When its stdout hit its end, or its stdin stopped taking lines, while the process ran
    /// on: it has [`PIPE_CLOSED_GRACE`] to exit before it is killed.
    pipe_closed_at: Option<Instant>,
    warned_unknown_type: bool,
}

impl ActorProcess {
    fn spawn(
        settings: &LaneSettings,
        slot: usize,
        env: &[(String, String)],
    ) -> std::io::Result<ActorProcess> {
        let Some((program, args)) = settings.argv.split_first() else {
            return Err(std::io::Error::other("no command given"));
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("AGENTD_SLOT", slot.to_string())
            .env(PROTOCOL_ENV, protocol::PROTOCOL_VERSION.to_string())
            .envs(env.iter().cloned())
            .process_group(0)
            .kill_on_drop(true);
        // Per job, these come in the job line; a value inherited from the worker's own
        // environment would be a stale lie.
        for per_job in [
            "AGENTD_JOB_ID",
            "AGENTD_LEASE_ID",
            "AGENTD_ATTEMPT",
            "AGENTD_TASK_ID",
        ] {
            command.env_remove(per_job);
        }
        settings.daemon.apply_to(&mut command);
        let mut child = command.spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take().map(spawn_stdin_writer);
        let stdout = LineReader::new(child.stdout.take());
        let stderr = child.stderr.take();
        Ok(ActorProcess {
            name: format!("actor of slot {slot}"),
            child,
            pid,
            stdin,
            stdout,
            stderr,
            recent_stderr: TailBuffer::new(ERROR_TAIL_BYTES),
            pipe_closed_at: None,
            warned_unknown_type: false,
        })
    }

    fn pid_text(&self) -> String {
        self.pid
            .map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
    }

    /// What the actor last said on stderr, for an error message (empty when nothing).
    fn stderr_said(&self) -> String {
        match self.recent_stderr.text() {
            Some(text) if !text.trim().is_empty() => {
                format!("; its stderr ended with: {}", text.trim())
            }
            _ => String::new(),
        }
    }

    /// Waits for the hello; stderr and anything else go to the lane's log.
    async fn handshake(&mut self, lane: &mut Lane, log: &mut LaneLog) -> Handshake {
        let deadline = Instant::now() + lane.settings.ready_timeout;
        let mut buffer = vec![0u8; STDERR_CHUNK_BYTES];
        loop {
            tokio::select! {
                biased;
                read = read_some(&mut self.stderr, &mut buffer) => {
                    if let Some(bytes) = read {
                        self.recent_stderr.push(&bytes);
                        log.write(&bytes).await;
                    }
                }
                line = self.stdout.next(), if self.stdout.is_open() => match line {
                    ReadLine::Line(line) => {
                        return match protocol::check_hello(&line) {
                            Ok(()) => Handshake::Ready,
                            Err(why) => {
                                log.write(&line).await;
                                log.write(b"\n").await;
                                Handshake::Failed(why)
                            }
                        };
                    }
                    ReadLine::TooLong(head) => {
                        log.write(&head).await;
                        return Handshake::Failed(protocol::check_hello(&head).err().unwrap_or_default());
                    }
                    ReadLine::Eof => self.pipe_closed_at = Some(Instant::now()),
                },
                exited = self.child.wait() => {
                    self.drain_pipes(&mut None, log).await;
                    return Handshake::Failed(format!(
                        "the command {} before it said hello ({}){}",
                        model_server::describe_exit(exited),
                        protocol::HELLO_EXAMPLE,
                        self.stderr_said()
                    ));
                }
                command = lane.commands.recv() => match command {
                    Some(command) => refuse(command, LaneAnswer::NotReady),
                    None => return Handshake::Stopped,
                },
                _ = sleep_until_some(self.pipe_closed_at.map(|at| at + PIPE_CLOSED_GRACE)) => {
                    return Handshake::Failed(format!(
                        "the command closed its stdout without saying hello ({}){}",
                        protocol::HELLO_EXAMPLE,
                        self.stderr_said()
                    ));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Handshake::Failed(format!(
                        "the command did not say hello within {} s: a persistent actor writes {} on stdout once it is ready (is it a per-job command, waiting for its stdin to close? then drop --persistent){}",
                        lane.settings.ready_timeout.as_secs(),
                        protocol::HELLO_EXAMPLE,
                        self.stderr_said()
                    ));
                }
                _ = stopping(&mut lane.stop) => return Handshake::Stopped,
            }
        }
    }

    /// Runs jobs until the actor dies or the worker stops; says whether the actor answered a job
    /// (then a later death starts the restart backoff over).
    async fn serve(&mut self, lane: &mut Lane, log: &mut LaneLog) -> (Ended, bool) {
        let name = lane.name();
        let mut running: Option<RunningJob> = None;
        let mut answered_a_job = false;
        let mut buffer = vec![0u8; STDERR_CHUNK_BYTES];
        let ended = loop {
            let cancel_deadline = running.as_ref().and_then(|job| job.cancel_deadline);
            tokio::select! {
                biased;
                read = read_some(&mut self.stderr, &mut buffer) => {
                    if let Some(bytes) = read {
                        self.recent_stderr.push(&bytes);
                        route(&running, log, &bytes).await;
                    }
                }
                line = self.stdout.next(), if self.stdout.is_open() => match line {
                    ReadLine::Line(line) => {
                        answered_a_job |= self.handle_line(&line, &mut running, log).await;
                    }
                    ReadLine::TooLong(head) => {
                        route(&running, log, &head).await;
                        route(&running, log, b"\n").await;
                        eprintln!("agentctl worker: {name}: a stdout line of more than {ACTOR_LINE_BYTES_MAX} bytes was dropped");
                        if let Some(job) = running.take() {
                            job.answer(LaneAnswer::Outcome(JobOutcome::Fail {
                                error: format!("the persistent actor wrote a stdout line of more than {ACTOR_LINE_BYTES_MAX} bytes while running the job; a result must be smaller (write logs to stderr)"),
                                retryable: false,
                            }));
                        }
                    }
                    ReadLine::Eof => self.pipe_closed_at = Some(Instant::now()),
                },
                exited = self.child.wait() => {
                    // Its answer may have been the last thing it wrote.
                    self.drain_pipes(&mut running, log).await;
                    let how = format!("the actor {}", model_server::describe_exit(exited));
                    break Ended::Died(how);
                }
                command = lane.commands.recv() => match command {
                    None => break Ended::Stop,
                    Some(LaneCommand::Run { job_id, line, output, reply }) => {
                        if running.is_some() {
                            let _handler_gone = reply.send(LaneAnswer::Busy);
                            continue;
                        }
                        running = Some(RunningJob { job_id, output, reply, cancel_deadline: None });
                        if !self.send_line(line) {
                            break Ended::Died("the actor stopped reading its stdin".to_string());
                        }
                    }
                    Some(LaneCommand::Cancel { job_id, reason }) => {
                        let Some(job) = running.as_mut().filter(|job| job.job_id == job_id && job.cancel_deadline.is_none()) else {
                            continue;
                        };
                        job.cancel_deadline = Some(Instant::now() + lane.settings.cancel_grace);
                        if !self.send_line(protocol::cancel_line(job_id, reason)) {
                            break Ended::Died("the actor stopped reading its stdin".to_string());
                        }
                    }
                },
                _ = sleep_until_some(cancel_deadline) => {
                    eprintln!(
                        "agentctl worker: {name}: did not answer the cancel of {} within {:.1} s; killing it (pid {})",
                        running.as_ref().map_or_else(String::new, |job| job.job_id.to_string()),
                        lane.settings.cancel_grace.as_secs_f64(),
                        self.pid_text()
                    );
                    self.kill_now(&mut running, log).await;
                    if let Some(job) = running.take() {
                        job.answer(LaneAnswer::KilledAfterCancel);
                    }
                    break Ended::KilledAfterCancel;
                }
                _ = sleep_until_some(self.pipe_closed_at.map(|at| at + PIPE_CLOSED_GRACE)) => {
                    self.kill_now(&mut running, log).await;
                    break Ended::Died("the actor closed its stdout or stdin and did not exit (killed)".to_string());
                }
                _ = stopping(&mut lane.stop) => break Ended::Stop,
            }
        };
        if let Some(job) = running.take() {
            let why = match &ended {
                Ended::Died(how) => format!(
                    "the persistent {name} died while running the job: {how}{}",
                    self.stderr_said()
                ),
                _ => "the worker stopped the persistent actor while it ran the job".to_string(),
            };
            job.answer(LaneAnswer::Died(why));
        }
        (ended, answered_a_job)
    }

    /// Handles one stdout line; true when it answered the running job.
    async fn handle_line(
        &mut self,
        line: &[u8],
        running: &mut Option<RunningJob>,
        log: &mut LaneLog,
    ) -> bool {
        let name = self.name.clone();
        let message = protocol::classify(line);
        let answered = message.answered_job();
        let answer = match message {
            ActorLine::Output => None,
            ActorLine::Hello { .. } => {
                eprintln!("agentctl worker: {name}: said hello again; taken as output");
                None
            }
            ActorLine::UnknownType { message_type } => {
                if !self.warned_unknown_type {
                    self.warned_unknown_type = true;
                    eprintln!(
                        "agentctl worker: {name}: wrote a message of type {message_type:?}, which protocol {} does not have (hello, result, failure, cancelled); taken as output",
                        protocol::PROTOCOL_VERSION
                    );
                }
                None
            }
            ActorLine::Malformed { problem } => {
                eprintln!("agentctl worker: {name}: broke the protocol: {problem}");
                route(running, log, line).await;
                route(running, log, b"\n").await;
                if let Some(job) = running.take() {
                    job.answer(LaneAnswer::Outcome(JobOutcome::Fail {
                        error: format!("the persistent actor broke the protocol: {problem}"),
                        retryable: false,
                    }));
                }
                return false;
            }
            ActorLine::Result { result, .. } => {
                Some(LaneAnswer::Outcome(JobOutcome::Complete(result)))
            }
            ActorLine::Failure {
                error, retryable, ..
            } => Some(LaneAnswer::Outcome(JobOutcome::Fail { error, retryable })),
            ActorLine::Cancelled { .. } => Some(LaneAnswer::Cancelled),
        };
        let (Some(answer), Some(job_id)) = (answer, answered) else {
            route(running, log, line).await;
            route(running, log, b"\n").await;
            return false;
        };
        let Some(job) = running.take_if(|job| job.job_id == job_id) else {
            eprintln!(
                "agentctl worker: {name}: answered {job_id}, which it is not running; ignored"
            );
            log.write(line).await;
            log.write(b"\n").await;
            return false;
        };
        let answer = match answer {
            LaneAnswer::Cancelled if job.cancel_deadline.is_none() => {
                LaneAnswer::Outcome(JobOutcome::Fail {
                    error:
                        "the persistent actor answered `cancelled` though the job was not cancelled"
                            .to_string(),
                    retryable: true,
                })
            }
            answer => answer,
        };
        job.answer(answer);
        true
    }

    /// Queues a line for the actor's stdin; false when the actor stopped reading it.
    fn send_line(&mut self, line: Vec<u8>) -> bool {
        match self.stdin.as_ref().map(|stdin| stdin.try_send(line)) {
            Some(Ok(())) => true,
            // The writer ended: the actor closed its stdin or died. A death is noticed next
            // (and says how it died); a live actor that cannot be asked anything is killed.
            Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                self.pipe_closed_at.get_or_insert_with(Instant::now);
                true
            }
            Some(Err(mpsc::error::TrySendError::Full(_))) | None => false,
        }
    }

    /// SIGKILL to the actor's process group; collects what it left in its pipes.
    async fn kill_now(&mut self, running: &mut Option<RunningJob>, log: &mut LaneLog) {
        crate::worker::kill_group(self.pid);
        let _reaped_or_gone = self.child.wait().await;
        self.drain_pipes(running, log).await;
    }

    /// SIGKILL (a failed start).
    async fn kill(mut self, log: &mut LaneLog) {
        self.kill_now(&mut None, log).await;
    }

    /// After the exit: reads what is left in the pipes (bounded in time), still taking an
    /// answer to the running job.
    async fn drain_pipes(&mut self, running: &mut Option<RunningJob>, log: &mut LaneLog) {
        let deadline = Instant::now() + PIPE_DRAIN_AFTER_EXIT;
        let mut buffer = vec![0u8; STDERR_CHUNK_BYTES];
        while self.stderr.is_some() || self.stdout.is_open() {
            tokio::select! {
                biased;
                read = read_some(&mut self.stderr, &mut buffer) => {
                    if let Some(bytes) = read {
                        self.recent_stderr.push(&bytes);
                        route(running, log, &bytes).await;
                    }
                }
                line = self.stdout.next(), if self.stdout.is_open() => match line {
                    ReadLine::Line(line) => {
                        self.handle_line(&line, running, log).await;
                    }
                    ReadLine::TooLong(head) => route(running, log, &head).await,
                    ReadLine::Eof => {}
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Closes stdin and waits for the exit; SIGTERM after [`ACTOR_EXIT_GRACE`], SIGKILL after
    /// [`ACTOR_TERM_GRACE`] more.
    async fn shut_down(mut self, name: &str, log: &mut LaneLog) {
        self.stdin = None;
        let mut exited = self.wait_logging(ACTOR_EXIT_GRACE, log).await;
        if exited.is_none() {
            eprintln!(
                "agentctl worker: {name}: did not exit within {} s of its stdin closing; SIGTERM",
                ACTOR_EXIT_GRACE.as_secs()
            );
            if let Some(pid) = self.pid {
                // ESRCH: gone meanwhile, which is what we want.
                let _already_gone = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            exited = self.wait_logging(ACTOR_TERM_GRACE, log).await;
        }
        // Whatever is left of its group (or the actor itself) must not outlive the worker.
        crate::worker::kill_group(self.pid);
        let how = match exited {
            Some(status) => model_server::describe_exit(Ok(status)),
            None => {
                let status = self.child.wait().await;
                format!("killed, {}", model_server::describe_exit(status))
            }
        };
        self.drain_pipes(&mut None, log).await;
        eprintln!("agentctl worker: {name}: stopped ({how})");
        log.note(&format!("--- agentctl worker: {name} stopped ({how})\n"))
            .await;
    }

    /// Waits up to `wait` for the exit, moving output to the lane's log meanwhile.
    async fn wait_logging(
        &mut self,
        wait: Duration,
        log: &mut LaneLog,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + wait;
        let mut buffer = vec![0u8; STDERR_CHUNK_BYTES];
        loop {
            tokio::select! {
                biased;
                read = read_some(&mut self.stderr, &mut buffer) => {
                    if let Some(bytes) = read {
                        log.write(&bytes).await;
                    }
                }
                line = self.stdout.next(), if self.stdout.is_open() => match line {
                    ReadLine::Line(line) | ReadLine::TooLong(line) => {
                        log.write(&line).await;
                        log.write(b"\n").await;
                    }
                    ReadLine::Eof => {}
                },
                exited = self.child.wait() => return exited.ok(),
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }
}

/// Output goes to the running job's log, or the lane's.
async fn route(running: &Option<RunningJob>, log: &mut LaneLog, bytes: &[u8]) {
    match running {
        Some(job) => job.output.write(bytes).await,
        None => log.write(bytes).await,
    }
}

/// Reads a chunk of stderr; `None` (and the pipe dropped) at its end. Pending forever once the
/// pipe is gone, so it can sit in a `select!` loop.
async fn read_some(stderr: &mut Option<ChildStderr>, buffer: &mut [u8]) -> Option<Vec<u8>> {
    let Some(pipe) = stderr.as_mut() else {
        return std::future::pending().await;
    };
    match pipe.read(buffer).await {
        Ok(0) | Err(_) => {
            *stderr = None;
            None
        }
        Ok(read) => Some(buffer[..read].to_vec()),
    }
}

/// Resolves once the worker stops (or the sender is gone). The watch's guard stays inside, so
/// the future is `Send` whatever `select!` keeps of its output.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _stopped_or_sender_gone = stop.wait_for(|stop| *stop).await.map(|_| ());
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One task writes the actor's stdin, so a full pipe blocks only it; dropping the returned
/// sender closes the stdin once queued lines are written.
fn spawn_stdin_writer(mut stdin: tokio::process::ChildStdin) -> mpsc::Sender<Vec<u8>> {
    let (sender, mut lines) = mpsc::channel::<Vec<u8>>(STDIN_LINES_QUEUED_MAX);
    tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                // The actor closed its stdin or died; the lane notices the exit.
                return;
            }
        }
    });
    sender
}

/// What [`LineReader::next`] read.
enum ReadLine {
    /// A line, without its newline.
    Line(Vec<u8>),
    /// A line over [`ACTOR_LINE_BYTES_MAX`]: its first bytes; the rest was dropped.
    TooLong(Vec<u8>),
    Eof,
}

/// Splits stdout into lines of at most [`ACTOR_LINE_BYTES_MAX`]. Cancel-safe: the only await is
/// `fill_buf`, and a partial line lives in the reader, not in the future.
struct LineReader {
    reader: Option<BufReader<ChildStdout>>,
    partial: Vec<u8>,
    /// The line being read passed the cap: its head, while the rest is skipped.
    too_long_head: Option<Vec<u8>>,
}

impl LineReader {
    fn new(stdout: Option<ChildStdout>) -> LineReader {
        LineReader {
            reader: stdout.map(BufReader::new),
            partial: Vec::new(),
            too_long_head: None,
        }
    }

    fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    async fn next(&mut self) -> ReadLine {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return ReadLine::Eof;
            };
            let buffer = match reader.fill_buf().await {
                Ok(buffer) if !buffer.is_empty() => buffer,
                // The end (or a broken pipe): a last line without a newline still counts.
                _ => {
                    self.reader = None;
                    if let Some(head) = self.too_long_head.take() {
                        return ReadLine::TooLong(head);
                    }
                    if !self.partial.is_empty() {
                        return ReadLine::Line(std::mem::take(&mut self.partial));
                    }
                    return ReadLine::Eof;
                }
            };
            let newline = buffer.iter().position(|byte| *byte == b'\n');
            let taken = newline.unwrap_or(buffer.len());
            if self.too_long_head.is_none() {
                if self.partial.len() + taken > ACTOR_LINE_BYTES_MAX {
                    let mut head = std::mem::take(&mut self.partial);
                    head.extend_from_slice(&buffer[..taken]);
                    head.truncate(LONG_LINE_HEAD_BYTES);
                    self.too_long_head = Some(head);
                } else {
                    self.partial.extend_from_slice(&buffer[..taken]);
                }
            }
            let consumed = newline.map_or(taken, |at| at + 1);
            reader.consume(consumed);
            if newline.is_some() {
                if let Some(head) = self.too_long_head.take() {
                    return ReadLine::TooLong(head);
                }
                return ReadLine::Line(std::mem::take(&mut self.partial));
            }
        }
    }
}

/// Where an actor's output goes while it runs no job: `<log-dir>/actor-slot<N>.log` (rotated at
/// the job log cap, one old file kept), or the worker's stderr line by line.
struct LaneLog {
    prefix: String,
    file: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// A line not yet printed on the worker's stderr (no newline yet).
    partial: Vec<u8>,
}

impl LaneLog {
    fn new(settings: &LaneSettings, slot: usize) -> LaneLog {
        let (file, writer) = match &settings.log_dir {
            Some(dir) => {
                let (file, writer) = model_server::spawn_log_writer(
                    dir.join(format!("actor-slot{slot}.log")),
                    settings.log_bytes_max,
                );
                (Some(file), Some(writer))
            }
            None => (None, None),
        };
        LaneLog {
            prefix: format!("agentctl worker: actor of slot {slot}: "),
            file,
            writer,
            partial: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        if let Some(file) = &self.file {
            // The writer lives as long as the lane; gone means the output is dropped.
            let _writer_gone = file.send(bytes.to_vec()).await;
            return;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(newline) = self.partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=newline).collect();
            eprintln!(
                "{}{}",
                self.prefix,
                String::from_utf8_lossy(&line[..line.len() - 1])
            );
        }
        if self.partial.len() > STDERR_LINE_BYTES_MAX {
            self.flush_partial();
        }
    }

    /// A line of the worker's own, in the file only (the worker already printed it).
    async fn note(&mut self, line: &str) {
        if let Some(file) = &self.file {
            let _writer_gone = file.send(line.as_bytes().to_vec()).await;
        }
    }

    /// Waits (bounded) until everything sent is in the file: the worker exits right after.
    async fn close(mut self) {
        self.flush_partial();
        self.file = None;
        if let Some(writer) = self.writer.take() {
            let _written_or_gave_up = tokio::time::timeout(LOG_CLOSE_WAIT, writer).await;
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            eprintln!("{}{}", self.prefix, String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests;
