//! Commands the sequencer accepts and how each is decided, committed and answered.

use super::waiters::Waiter;
use super::Sequencer;
use crate::domain::decide::{self as domain_decide, DomainCommand, DomainReply};
use crate::log::AppendError;
use crate::queue::{decide, DecideError, JobStatus};
use agentd_schemas::api::{
    HeartbeatResponse, JobStateName, JobTransitionResponse, LeaseRequest, QueueChangeResponse,
    QueueView, SubmitJobRequest, SubmitJobResponse,
};
use agentd_schemas::events::{AfterFailure, Event};
use agentd_schemas::{JobId, LeaseId, Lsn};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a command did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SequencerError {
    #[error(transparent)]
    Rejected(#[from] DecideError),
    #[error("append failed: {0}")]
    Append(AppendError),
    #[error("too many workers are waiting for leases ({0}); retry shortly")]
    TooManyWaiters(usize),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

type Reply<T> = oneshot::Sender<Result<T, SequencerError>>;

/// One granted lease, before the job's payload is read from the job projection.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseGrantCore {
    pub lease_id: LeaseId,
    pub job_id: JobId,
    pub attempt: u32,
    pub expires_at_ms: u64,
    /// The record that submitted the job: the grant's payload is in the job projection once the
    /// projector has applied it (usually long before the lease).
    pub submitted_lsn: Lsn,
    /// The rollout an earlier attempt created under the job, to resume.
    pub rollout_id: Option<agentd_schemas::RolloutId>,
    /// The job as a lease answer shows it, when the queue state still holds its payload
    /// ([`crate::queue::state::Job::lease_data`]); `None` means: read it from the projection.
    pub job: Option<GrantedJob>,
}

/// A leased job's fields, taken from the queue state so the answer needs no projection read.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantedJob {
    pub queue: Arc<str>,
    pub kind: Arc<str>,
    pub priority: i32,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub tags: agentd_schemas::events::Tags,
    /// The submission's payload and task.
    pub data: Arc<crate::queue::state::LeaseData>,
}

/// The answer to a lease request: `lsn` is `None` when nothing was leased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseOutcome {
    pub lsn: Option<Lsn>,
    pub grants: Vec<LeaseGrantCore>,
}

/// Longest a [`Command::HoldForDigest`] keeps the sequencer from appending.
pub const DIGEST_HOLD_MAX: Duration = Duration::from_secs(10);

/// The queue state's digest ([`crate::queue::QueueState::digest`], what `agentd rebuild`
/// prints as `queue`) and the last record applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDigest {
    pub lsn: Lsn,
    pub digest: String,
}

/// The record holding a batch completion (if any item succeeded) and each item's outcome.
pub type CompleteManyOutcome = (Option<Lsn>, Vec<Result<JobId, DecideError>>);

/// Everything that can change state, plus reads of the sequencer's in-memory state.
pub enum Command {
    Submit {
        requests: Vec<SubmitJobRequest>,
        actor: Option<String>,
        reply: Reply<Vec<SubmitJobResponse>>,
    },
    Lease {
        request: LeaseRequest,
        wait_ms: u64,
        actor: Option<String>,
        reply: Reply<LeaseOutcome>,
    },
    Heartbeat {
        lease_id: LeaseId,
        actor: Option<String>,
        reply: Reply<HeartbeatResponse>,
    },
    Complete {
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        /// The attempt's output tail, checked against `LOG_TAIL_BYTES_MAX` by the decision.
        log_tail: Option<String>,
        actor: Option<String>,
        reply: Reply<JobTransitionResponse>,
    },
    /// Completes many leases in one record; each item is fenced on its own.
    CompleteMany {
        /// As the request carries them, like `Submit` its requests.
        items: Vec<agentd_schemas::api::CompleteItem>,
        actor: Option<String>,
        reply: Reply<CompleteManyOutcome>,
    },
    Fail {
        lease_id: LeaseId,
        error: String,
        retryable: bool,
        /// The attempt's output tail, checked against `LOG_TAIL_BYTES_MAX` by the decision.
        log_tail: Option<String>,
        actor: Option<String>,
        reply: Reply<JobTransitionResponse>,
    },
    Cancel {
        job_id: JobId,
        actor: Option<String>,
        reply: Reply<JobTransitionResponse>,
    },
    Retry {
        job_id: JobId,
        actor: Option<String>,
        reply: Reply<JobTransitionResponse>,
    },
    SetPaused {
        queue: String,
        paused: bool,
        actor: Option<String>,
        reply: Reply<QueueChangeResponse>,
    },
    Queues {
        reply: Reply<Vec<QueueView>>,
    },
    /// Answers the queue state's digest, then appends nothing until `release` fires or is
    /// dropped (at most [`DIGEST_HOLD_MAX`]), so the caller can digest the projections at
    /// exactly that LSN (`GET /v1/admin/digest`). Every write waits meanwhile, which is why only
    /// admins may ask.
    HoldForDigest {
        reply: Reply<QueueDigest>,
        release: oneshot::Receiver<()>,
    },
    /// A domain write (rollout, step, sandbox result, reward, state update, dataset), decided
    /// against the fact index by [`crate::domain::decide`].
    Domain {
        command: DomainCommand,
        actor: Option<String>,
        reply: Reply<DomainOutcome>,
    },
    /// Appends events the daemon decided itself (export records, schedule firings, dataset
    /// builds, the `[datasets]` settings at start-up); no client write goes this way.
    AppendInternal {
        events: Vec<Event>,
        actor: Option<String>,
        reply: Reply<Lsn>,
    },
}

/// A decided domain write: the record holding it (`None` when nothing had to be appended: a
/// dataset registered again with the same meta, records all received before, a rollout
/// resumed) and what to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainOutcome {
    pub lsn: Option<Lsn>,
    /// The last record the decision could depend on: the record itself, or for a decision that
    /// appended nothing, the last record applied to the sequencer's state, which may still be
    /// in flight. Answer only once it is applied, so a 2xx never rests on a fact a crash could
    /// take back.
    pub depends_on: Lsn,
    pub reply: DomainReply,
}

/// Queues in which `events` may make a job leasable (a submission, a retry, a resumed queue), so
/// that only the waiters listening there are tried. A delayed job counts too: trying its
/// waiters early only parks them again; the due-job timer wakes them when it is leasable.
pub fn queues_made_ready(
    state: &crate::queue::QueueState,
    events: &[Event],
) -> Vec<std::sync::Arc<str>> {
    let queue_of = |job_id: &JobId| state.job(*job_id).map(|job| job.queue.clone());
    events
        .iter()
        .filter_map(|event| match event {
            Event::JobSubmitted(submitted) => Some(submitted.queue.as_str().into()),
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
            Event::QueueResumed { queue } => Some(queue.as_str().into()),
            _ => None,
        })
        .collect()
}

/// The lease answer's view of `job`, when its payload is still in the queue state.
fn granted_job(job: &crate::queue::state::Job) -> Option<GrantedJob> {
    Some(GrantedJob {
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        lease_ttl_ms: job.lease_ttl_ms,
        tags: job.tags.clone(),
        data: job.lease_data.clone()?,
    })
}

/// Extracts the grants from decided `JobLeased` events, before they are applied to `state`.
pub fn grants_of(state: &crate::queue::QueueState, events: &[Event]) -> Vec<LeaseGrantCore> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::JobLeased(leased) => Some(LeaseGrantCore {
                lease_id: leased.lease_id,
                job_id: leased.job_id,
                attempt: leased.attempt,
                expires_at_ms: leased.expires_at_ms,
                // A lease is decided only for a job in the state.
                submitted_lsn: state
                    .job(leased.job_id)
                    .map_or(Lsn::ZERO, |job| job.submitted_lsn),
                rollout_id: state.facts.rollout_of_job(leased.job_id),
                job: state.job(leased.job_id).and_then(granted_job),
            }),
            _ => None,
        })
        .collect()
}

fn answer<T: Send + 'static>(
    reply: Reply<T>,
    make: impl FnOnce(Lsn) -> T + Send + 'static,
) -> Box<dyn FnOnce(Result<Lsn, AppendError>) + Send> {
    Box::new(move |outcome| {
        let _ignored_if_client_left = reply.send(outcome.map(make).map_err(SequencerError::Append));
    })
}

fn refuse<T>(reply: Reply<T>, error: impl Into<SequencerError>) {
    let _ignored_if_client_left = reply.send(Err(error.into()));
}

/// Decides one command and commits its events (or answers at once when there are none).
pub async fn handle(sequencer: &mut Sequencer, now_ms: u64, command: Command) {
    match command {
        Command::Submit {
            requests,
            actor,
            reply,
        } => {
            let decision =
                match decide::submit(&sequencer.state, &sequencer.limits, now_ms, &requests) {
                    Ok(decision) => decision,
                    Err(error) => return refuse(reply, error),
                };
            let outcomes = decision.reply;
            let make = move |lsn: Lsn| {
                outcomes
                    .iter()
                    .map(|outcome| SubmitJobResponse {
                        job_id: outcome.job_id,
                        lsn: match outcome.deduplicated_lsn {
                            Some(Lsn::ZERO) | None => lsn,
                            Some(original) => original,
                        },
                        deduplicated: outcome.deduplicated_lsn.is_some(),
                    })
                    .collect()
            };
            if decision.events.is_empty() {
                // Every job was a duplicate: nothing to append, answer with the originals.
                let _ignored_if_client_left = reply.send(Ok(make(Lsn::ZERO)));
                return;
            }
            let ready = queues_made_ready(&sequencer.state, &decision.events);
            sequencer
                .commit(now_ms, actor, decision.events, answer(reply, make))
                .await;
            sequencer.wake_waiters_of(&ready);
        }
        Command::Lease {
            request,
            wait_ms,
            actor,
            reply,
        } => {
            let tags = request.tags.clone().unwrap_or_default();
            let ask = decide::LeaseAsk {
                worker_id: &request.worker_id,
                queues: &request.queues,
                tags: &tags,
                max_jobs: request.max_jobs.unwrap_or(1),
            };
            if let Err(error) = decide::validate_lease_ask(&ask, &sequencer.limits) {
                return refuse(reply, error);
            }
            sequencer.promote_due_jobs(now_ms);
            let decision = decide::lease(&sequencer.state, &sequencer.limits, now_ms, &ask);
            if !decision.events.is_empty() {
                let grants = grants_of(&sequencer.state, &decision.events);
                super::record_lease_latencies(&sequencer.state, now_ms, &decision.events);
                sequencer
                    .commit(
                        now_ms,
                        actor,
                        decision.events,
                        answer(reply, move |lsn| LeaseOutcome {
                            lsn: Some(lsn),
                            grants,
                        }),
                    )
                    .await;
                return;
            }
            let wait_ms = wait_ms.min(sequencer.lease_wait_ms_max);
            if wait_ms == 0 {
                let _ignored_if_client_left = reply.send(Ok(LeaseOutcome::default()));
                return;
            }
            if sequencer.waiters.len() >= sequencer.lease_waiters_max {
                // Long-polls whose clients went away hold places until their deadline; they
                // are dropped before a live one is refused.
                sequencer.waiters.drop_closed();
            }
            if sequencer.waiters.len() >= sequencer.lease_waiters_max {
                return refuse(
                    reply,
                    SequencerError::TooManyWaiters(sequencer.waiters.len()),
                );
            }
            let max_jobs = ask.max_jobs;
            sequencer.waiters.park(Waiter {
                worker_id: request.worker_id,
                queues: request.queues,
                tags,
                max_jobs,
                deadline_ms: now_ms + wait_ms,
                actor,
                reply,
            });
        }
        Command::Heartbeat {
            lease_id,
            actor,
            reply,
        } => match decide::heartbeat(&sequencer.state, now_ms, lease_id) {
            Ok(decision) => {
                let expires_at_ms = decision.reply;
                sequencer
                    .commit(
                        now_ms,
                        actor,
                        decision.events,
                        answer(reply, move |_| HeartbeatResponse { expires_at_ms }),
                    )
                    .await;
            }
            Err(error) => refuse(reply, error),
        },
        Command::Complete {
            lease_id,
            result,
            log_tail,
            actor,
            reply,
        } => {
            match decide::complete(
                &sequencer.state,
                &sequencer.limits,
                now_ms,
                lease_id,
                result.as_ref(),
                log_tail.as_deref(),
            ) {
                Ok(decision) => {
                    let job_id = decision.reply;
                    record_start_to_finish(sequencer, now_ms, job_id);
                    let make = move |lsn| JobTransitionResponse {
                        job_id,
                        state: JobStateName::Completed,
                        lsn,
                        run_at_ms: None,
                    };
                    sequencer
                        .commit(now_ms, actor, decision.events, answer(reply, make))
                        .await;
                }
                Err(error) => refuse(reply, error),
            }
        }
        Command::CompleteMany {
            items,
            actor,
            reply,
        } => {
            let mut events = Vec::with_capacity(items.len());
            let mut outcomes = Vec::with_capacity(items.len());
            let mut seen = std::collections::HashSet::with_capacity(items.len());
            for agentd_schemas::api::CompleteItem {
                lease_id,
                result,
                log_tail,
            } in items
            {
                if !seen.insert(lease_id) {
                    outcomes.push(Err(DecideError::LeaseLost {
                        lease_id,
                        reason: "completed earlier in this batch".into(),
                    }));
                    continue;
                }
                match decide::complete(
                    &sequencer.state,
                    &sequencer.limits,
                    now_ms,
                    lease_id,
                    result.as_ref(),
                    log_tail.as_deref(),
                ) {
                    Ok(decision) => {
                        record_start_to_finish(sequencer, now_ms, decision.reply);
                        events.extend(decision.events);
                        outcomes.push(Ok(decision.reply));
                    }
                    Err(error) => outcomes.push(Err(error)),
                }
            }
            if events.is_empty() {
                let _ignored_if_client_left = reply.send(Ok((None, outcomes)));
                return;
            }
            sequencer
                .commit(
                    now_ms,
                    actor,
                    events,
                    answer(reply, move |lsn| (Some(lsn), outcomes)),
                )
                .await;
        }
        Command::Fail {
            lease_id,
            error,
            retryable,
            log_tail,
            actor,
            reply,
        } => {
            let jitter = rand::rng().random::<f64>();
            match decide::fail(
                &sequencer.state,
                &sequencer.limits,
                now_ms,
                lease_id,
                &error,
                retryable,
                jitter,
                log_tail.as_deref(),
            ) {
                Ok(decision) => {
                    let (job_id, after) = decision.reply;
                    record_start_to_finish(sequencer, now_ms, job_id);
                    let (state, run_at_ms) = match after {
                        AfterFailure::Retry { run_at_ms } => {
                            (JobStateName::Scheduled, Some(run_at_ms))
                        }
                        AfterFailure::Dead => (JobStateName::Dead, None),
                    };
                    let make = move |lsn| JobTransitionResponse {
                        job_id,
                        state,
                        lsn,
                        run_at_ms,
                    };
                    let ready = queues_made_ready(&sequencer.state, &decision.events);
                    sequencer
                        .commit(now_ms, actor, decision.events, answer(reply, make))
                        .await;
                    sequencer.wake_waiters_of(&ready);
                }
                Err(error) => refuse(reply, error),
            }
        }
        Command::Cancel {
            job_id,
            actor,
            reply,
        } => match decide::cancel(&sequencer.state, now_ms, job_id) {
            Ok(decision) => {
                let make = move |lsn| JobTransitionResponse {
                    job_id,
                    state: JobStateName::Cancelled,
                    lsn,
                    run_at_ms: None,
                };
                sequencer
                    .commit(now_ms, actor, decision.events, answer(reply, make))
                    .await;
            }
            Err(error) => refuse(reply, error),
        },
        Command::Retry {
            job_id,
            actor,
            reply,
        } => match decide::retry(&sequencer.state, now_ms, job_id) {
            Ok(decision) => {
                let make = move |lsn| JobTransitionResponse {
                    job_id,
                    state: JobStateName::Queued,
                    lsn,
                    run_at_ms: Some(now_ms),
                };
                let ready = queues_made_ready(&sequencer.state, &decision.events);
                sequencer
                    .commit(now_ms, actor, decision.events, answer(reply, make))
                    .await;
                sequencer.wake_waiters_of(&ready);
            }
            Err(error) => refuse(reply, error),
        },
        Command::SetPaused {
            queue,
            paused,
            actor,
            reply,
        } => match decide::set_paused(&sequencer.limits, &queue, paused) {
            Ok(decision) => {
                let ready = queues_made_ready(&sequencer.state, &decision.events);
                let make = move |lsn| QueueChangeResponse { queue, paused, lsn };
                sequencer
                    .commit(now_ms, actor, decision.events, answer(reply, make))
                    .await;
                sequencer.wake_waiters_of(&ready);
            }
            Err(error) => refuse(reply, error),
        },
        Command::Queues { reply } => {
            sequencer.promote_due_jobs(now_ms);
            let views = sequencer
                .state
                .queues
                .iter()
                .map(|(name, index)| QueueView {
                    queue: name.to_string(),
                    paused: index.paused,
                    depth: index.depth(),
                })
                .collect();
            let _ignored_if_client_left = reply.send(Ok(views));
        }
        Command::HoldForDigest { reply, release } => {
            let digest = QueueDigest {
                lsn: sequencer.state.last_lsn,
                digest: sequencer.state.digest(),
            };
            if reply.send(Ok(digest)).is_ok() {
                // Released or dropped: either way the hold is over; the bound keeps a stuck
                // caller from stopping every write.
                let _released_or_timed_out = tokio::time::timeout(DIGEST_HOLD_MAX, release).await;
            }
        }
        Command::Domain {
            command,
            actor,
            reply,
        } => match domain_decide::decide(&sequencer.state, now_ms, command) {
            Ok(decision) if decision.events.is_empty() => {
                let outcome = DomainOutcome {
                    lsn: None,
                    depends_on: sequencer.state.last_lsn,
                    reply: decision.reply,
                };
                sequencer.after_in_flight(Box::new(move |durable| {
                    let answer = durable.map(|()| outcome).map_err(SequencerError::Append);
                    let _ignored_if_client_left = reply.send(answer);
                }));
            }
            Ok(decision) => {
                let answer_reply = decision.reply;
                let make = move |lsn| DomainOutcome {
                    lsn: Some(lsn),
                    depends_on: lsn,
                    reply: answer_reply,
                };
                sequencer
                    .commit(now_ms, actor, decision.events, answer(reply, make))
                    .await;
            }
            // A refusal (a step already recorded, a reward already given) may rest on a fact
            // still in flight, too.
            Err(error) => sequencer.after_in_flight(Box::new(move |durable| {
                let answer = match durable {
                    Ok(()) => Err(SequencerError::Rejected(error)),
                    Err(failed) => Err(SequencerError::Append(failed)),
                };
                let _ignored_if_client_left = reply.send(answer);
            })),
        },
        Command::AppendInternal {
            events,
            actor,
            reply,
        } => {
            sequencer
                .commit(now_ms, actor, events, answer(reply, |lsn| lsn))
                .await;
        }
    }
}

/// A job's run time (lease to completion or failure), per queue and kind. Both are names
/// clients choose (up to 128 characters each), so the series grow with the distinct
/// (queue, kind) pairs in use: a handful in a normal deployment (README, "Metrics"). The
/// labels are the job's shared names (`Arc<str>`), so recording allocates no label text.
fn record_start_to_finish(sequencer: &Sequencer, now_ms: u64, job_id: JobId) {
    let Some(job) = sequencer.state.job(job_id) else {
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
