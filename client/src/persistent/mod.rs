//! Persistent actors (`agentctl worker --persistent -- CMD ...`): one long-lived `CMD` per slot
//! (per `--concurrency` lane, or per GPU episode lane), fed leased jobs one at a time over a
//! line protocol on its stdin and stdout (`protocol`), so a model or tokenizer is loaded once
//! per process rather than once per job.
//!
//! The worker loop (`crate::worker`) keeps doing what it does for every job: lease, heartbeat,
//! job log, report. This module is a handler that hands each job to its slot's lane and turns a
//! stop (lost lease, drain deadline, model server lost) into a `cancel` line; each lane
//! (`lane`) owns its process: start, hello, restarts with backoff, the kill of an actor that
//! ignores a cancel, and the close of its stdin when the worker stops.
//!
//! Architecture invariant: a lane runs one job at a time, and only a lane writes to its actor.
//! This module never talks to the daemon.

pub mod lane;
pub mod protocol;

use crate::worker::{DaemonAccess, Handler, JobContext, JobOutcome, Slot, StopReason};
use crate::worker_metrics::WorkerMetrics;
use lane::{Lane, LaneAnswer, LaneCommand, LaneSettings};
use protocol::CancelReason;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Commands queued for one lane: a job and its cancel at most, plus one from a handler that
/// raced a restart.
const LANE_COMMANDS_QUEUED_MAX: usize = 4;

/// How the actors of a worker are run.
#[derive(Debug, Clone)]
pub struct PersistentSettings {
    /// `-- CMD ARGS...`.
    pub argv: Vec<String>,
    pub daemon: DaemonAccess,
    /// `--persistent-ready-timeout`: how long a starting actor may take to say hello.
    pub ready_timeout: Duration,
    /// `--persistent-cancel-grace`: how long an actor may take to answer a cancel.
    pub cancel_grace: Duration,
    /// `--log-dir`: the lanes' own logs go there (`actor-slot<N>.log`), else to stderr.
    pub log_dir: Option<PathBuf>,
    /// `--log-max-bytes`: where a lane's log is rotated.
    pub log_bytes_max: u64,
}

/// Why the actors could not start.
#[derive(Debug, thiserror::Error)]
pub enum PersistentError {
    #[error("--persistent: the actor of slot {slot} did not start: {reason}")]
    Start { slot: usize, reason: String },
    #[error("--persistent: the actors stopped before they were all ready")]
    Stopped,
}

/// The lanes of a worker: one actor per slot.
pub struct ActorPool {
    lanes: Arc<Vec<mpsc::Sender<LaneCommand>>>,
    tasks: tokio::task::JoinSet<()>,
    stop: watch::Sender<bool>,
    first_starts: mpsc::Receiver<(usize, Result<(), String>)>,
}

impl ActorPool {
    /// Starts one lane per slot and gates each slot on its actor (`Slot::actor`). Slots must be
    /// numbered 0..n, as the worker numbers them.
    pub fn spawn(
        settings: PersistentSettings,
        slots: &mut [Slot],
        metrics: Arc<WorkerMetrics>,
    ) -> ActorPool {
        let lane_settings: Arc<LaneSettings> = Arc::new(settings);
        let (stop, stop_receiver) = watch::channel(false);
        let (first_start, first_starts) = mpsc::channel(slots.len().max(1));
        let mut tasks = tokio::task::JoinSet::new();
        let mut lanes = Vec::with_capacity(slots.len());
        metrics.actors_supervised(slots.len());
        for (position, slot) in slots.iter_mut().enumerate() {
            assert_eq!(slot.index, position, "slots are numbered 0..n");
            let (commands, command_receiver) = mpsc::channel(LANE_COMMANDS_QUEUED_MAX);
            let (ready, ready_receiver) = watch::channel(false);
            slot.actor = Some(ready_receiver);
            tasks.spawn(lane::run(Lane {
                index: slot.index,
                env: slot.env.clone(),
                settings: lane_settings.clone(),
                commands: command_receiver,
                ready,
                stop: stop_receiver.clone(),
                first_start: Some(first_start.clone()),
                metrics: metrics.clone(),
            }));
            lanes.push(commands);
        }
        ActorPool {
            lanes: Arc::new(lanes),
            tasks,
            stop,
            first_starts,
        }
    }

    /// Waits until every actor said hello; the first that fails (exits, says something else,
    /// or stays silent past the ready timeout) is the error. Then stop the pool.
    pub async fn wait_until_started(&mut self) -> Result<(), PersistentError> {
        for _ in 0..self.lanes.len() {
            match self.first_starts.recv().await {
                Some((_, Ok(()))) => {}
                Some((slot, Err(reason))) => return Err(PersistentError::Start { slot, reason }),
                None => return Err(PersistentError::Stopped),
            }
        }
        Ok(())
    }

    /// The worker's handler: each job goes to its slot's actor.
    pub fn handler(&self) -> Handler {
        let lanes = self.lanes.clone();
        Arc::new(move |context: JobContext| {
            let lanes = lanes.clone();
            Box::pin(async move { run_job(&lanes, context).await })
        })
    }

    /// Closes every actor's stdin and waits for them to exit (SIGTERM, then SIGKILL, to those
    /// that do not; see `lane::ACTOR_EXIT_GRACE`). Call it after the worker drained.
    pub async fn stop(mut self) {
        let _lanes_hold_receivers_until_they_return = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn run_job(lanes: &[mpsc::Sender<LaneCommand>], context: JobContext) -> JobOutcome {
    let Some(lane) = lanes.get(context.slot.index) else {
        return JobOutcome::Fail {
            error: format!("no persistent actor for slot {}", context.slot.index),
            retryable: true,
        };
    };
    let job_id = context.grant.job_id;
    let (reply, mut answer) = oneshot::channel();
    let command = LaneCommand::Run {
        job_id,
        line: protocol::job_line(&context.grant, context.slot.index),
        output: context.output.clone(),
        reply,
    };
    if lane.send(command).await.is_err() {
        return JobOutcome::Fail {
            error: "the slot's persistent actor is stopped".to_string(),
            retryable: true,
        };
    }
    let mut stop = context.stop.clone();
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            answer = &mut answer => return outcome(answer),
            stopped = stop_reason(&mut stop), if !cancel_sent => {
                // A dropped sender means the job is over anyway: wait for the lane's answer.
                cancel_sent = true;
                let reason = match stopped {
                    Some(StopReason::LeaseLost) => CancelReason::LeaseLost,
                    Some(StopReason::Draining) => CancelReason::Draining,
                    Some(StopReason::ServerLost) => CancelReason::ServerLost,
                    Some(StopReason::Running) | None => continue,
                };
                // A lane that is gone has answered (or dropped) the job already.
                let _lane_gone = lane.send(LaneCommand::Cancel { job_id, reason }).await;
            }
        }
    }
}

/// Why the job must stop, once it must; `None` when the sender is gone. The watch's guard stays
/// inside, so the future is `Send`.
async fn stop_reason(stop: &mut watch::Receiver<StopReason>) -> Option<StopReason> {
    stop.wait_for(|reason| *reason != StopReason::Running)
        .await
        .ok()
        .map(|reason| *reason)
}

fn outcome(answer: Result<LaneAnswer, oneshot::error::RecvError>) -> JobOutcome {
    match answer {
        Ok(LaneAnswer::Outcome(outcome)) => outcome,
        // The worker reports what fits the stop: nothing for a lost lease, a retryable failure
        // for the drain deadline or a lost model server.
        Ok(LaneAnswer::Cancelled | LaneAnswer::KilledAfterCancel) => JobOutcome::Stopped,
        Ok(LaneAnswer::NotReady) => JobOutcome::Fail {
            error: "the slot's persistent actor was restarting when the job arrived".to_string(),
            retryable: true,
        },
        Ok(LaneAnswer::Busy) => JobOutcome::Fail {
            error: "the slot's persistent actor was running another job".to_string(),
            retryable: true,
        },
        Ok(LaneAnswer::Died(error)) => JobOutcome::Fail {
            error,
            retryable: true,
        },
        Err(_) => JobOutcome::Fail {
            error: "the slot's persistent actor stopped while it ran the job".to_string(),
            retryable: true,
        },
    }
}
