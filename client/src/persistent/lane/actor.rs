//! One actor process of a lane: started with the protocol's environment, its hello awaited,
//! jobs and cancels written to it, its answers and output routed, and its end.

use super::pipes::{
    read_some, sleep_until_some, spawn_stdin_writer, stopping, LaneLog, LineReader, ReadLine,
};
use super::{
    refuse, Lane, LaneAnswer, LaneCommand, LaneSettings, ACTOR_EXIT_GRACE, ACTOR_TERM_GRACE,
    ERROR_TAIL_BYTES, PIPE_CLOSED_GRACE, PIPE_DRAIN_AFTER_EXIT, STDERR_CHUNK_BYTES,
};
use crate::job_log::{OutputSink, TailBuffer};
use crate::model_server;
use crate::persistent::protocol::{self, ActorLine, ACTOR_LINE_BYTES_MAX, PROTOCOL_ENV};
use crate::worker::JobOutcome;
use agentd_schemas::JobId;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, ChildStderr};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(super) enum Handshake {
    Ready,
    Failed(String),
    Stopped,
}

pub(super) enum Ended {
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
pub(super) struct ActorProcess {
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
    pub(super) fn spawn(
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

    pub(super) fn pid_text(&self) -> String {
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
    pub(super) async fn handshake(&mut self, lane: &mut Lane, log: &mut LaneLog) -> Handshake {
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
    pub(super) async fn serve(&mut self, lane: &mut Lane, log: &mut LaneLog) -> (Ended, bool) {
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
                    ReadLine::TooLong(head) => self.line_too_long(&head, &mut running, log).await,
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
                    Some(command) => {
                        if let Some(ended) = self.take_command(command, &mut running, lane) {
                            break ended;
                        }
                    }
                },
                _ = sleep_until_some(cancel_deadline) => {
                    break self.kill_after_cancel(&mut running, lane, log).await;
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
                    "the persistent {} died while running the job: {how}{}",
                    self.name,
                    self.stderr_said()
                ),
                _ => "the worker stopped the persistent actor while it ran the job".to_string(),
            };
            job.answer(LaneAnswer::Died(why));
        }
        (ended, answered_a_job)
    }

    /// A stdout line over the cap: its head goes to the log, and the running job fails (its
    /// result would have been on that line).
    async fn line_too_long(
        &mut self,
        head: &[u8],
        running: &mut Option<RunningJob>,
        log: &mut LaneLog,
    ) {
        route(running, log, head).await;
        route(running, log, b"\n").await;
        eprintln!(
            "agentctl worker: {}: a stdout line of more than {ACTOR_LINE_BYTES_MAX} bytes was dropped",
            self.name
        );
        if let Some(job) = running.take() {
            job.answer(LaneAnswer::Outcome(JobOutcome::Fail {
                error: format!("the persistent actor wrote a stdout line of more than {ACTOR_LINE_BYTES_MAX} bytes while running the job; a result must be smaller (write logs to stderr)"),
                retryable: false,
            }));
        }
    }

    /// Writes a job or a cancel to the actor; `Some` when it stopped reading its stdin.
    fn take_command(
        &mut self,
        command: LaneCommand,
        running: &mut Option<RunningJob>,
        lane: &Lane,
    ) -> Option<Ended> {
        let line = match command {
            LaneCommand::Run {
                job_id,
                line,
                output,
                reply,
            } => {
                if running.is_some() {
                    let _handler_gone = reply.send(LaneAnswer::Busy);
                    return None;
                }
                *running = Some(RunningJob {
                    job_id,
                    output,
                    reply,
                    cancel_deadline: None,
                });
                line
            }
            LaneCommand::Cancel { job_id, reason } => {
                let job = running
                    .as_mut()
                    .filter(|job| job.job_id == job_id && job.cancel_deadline.is_none())?;
                job.cancel_deadline = Some(Instant::now() + lane.settings.cancel_grace);
                protocol::cancel_line(job_id, reason)
            }
        };
        if self.send_line(line) {
            None
        } else {
            Some(Ended::Died(
                "the actor stopped reading its stdin".to_string(),
            ))
        }
    }

    /// The actor did not answer a cancel within the grace period: kill it, and tell the job.
    async fn kill_after_cancel(
        &mut self,
        running: &mut Option<RunningJob>,
        lane: &Lane,
        log: &mut LaneLog,
    ) -> Ended {
        eprintln!(
            "agentctl worker: {}: did not answer the cancel of {} within {:.1} s; killing it (pid {})",
            self.name,
            running.as_ref().map_or_else(String::new, |job| job.job_id.to_string()),
            lane.settings.cancel_grace.as_secs_f64(),
            self.pid_text()
        );
        self.kill_now(running, log).await;
        if let Some(job) = running.take() {
            job.answer(LaneAnswer::KilledAfterCancel);
        }
        Ended::KilledAfterCancel
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
    pub(super) async fn kill(mut self, log: &mut LaneLog) {
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
    pub(super) async fn shut_down(mut self, name: &str, log: &mut LaneLog) {
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
