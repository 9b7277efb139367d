//! Leasing: the lease command, what a grant carries, and the long-poll: a lease that finds
//! nothing parks ([`Decided::Park`]) and is tried again, through the same decision and the same
//! append path, whenever a job may have become leasable in one of its queues.

use super::command::{answer, AnswerWithLsn, DecideCx, Decided, Reply, SequencerCommand};
use super::waiters::Waiter;
use super::{Sequencer, SequencerError};
use crate::queue::decide::{self, DecideError, LeaseAsk};
use crate::queue::state::{Job, LeaseData};
use crate::queue::QueueState;
use agentd_schemas::api::LeaseRequest;
use agentd_schemas::events::{Event, Tags};
use agentd_schemas::{JobId, LeaseId, Lsn, RolloutId};
use std::sync::Arc;

/// Leases up to `max_jobs` matching jobs, waiting up to `wait_ms` for one to appear.
pub struct Lease {
    pub request: LeaseRequest,
    /// How long to park when nothing matches (bounded again by `lease_wait_ms_max`).
    pub wait_ms: u64,
}

/// The answer to a lease request: `lsn` is `None` when nothing was leased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseOutcome {
    pub lsn: Option<Lsn>,
    pub grants: Vec<LeaseGrantCore>,
}

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
    pub rollout_id: Option<RolloutId>,
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
    pub tags: Tags,
    /// The submission's payload and task.
    pub data: Arc<LeaseData>,
}

/// The leases granted, answered with the record that holds them.
pub struct Grants(Vec<LeaseGrantCore>);

impl Grants {
    /// The grants, for an answer that carries them beside another (complete-then-lease).
    pub(super) fn into_cores(self) -> Vec<LeaseGrantCore> {
        self.0
    }
}

impl AnswerWithLsn for Grants {
    type Reply = LeaseOutcome;

    fn with_lsn(self, lsn: Lsn) -> LeaseOutcome {
        LeaseOutcome {
            lsn: Some(lsn),
            grants: self.0,
        }
    }
}

/// A lease request that found nothing and waits: what it asks for and how long it may wait.
pub struct Parked<R> {
    worker_id: String,
    queues: Vec<String>,
    tags: Tags,
    max_jobs: u32,
    wait_ms: u64,
    /// Turns the command's reply into a lease reply: only [`Parked::new`] builds a `Parked`,
    /// for `R = LeaseOutcome`, where this is the identity. It lets the generic path park a
    /// reply of its command's type without a cast.
    into_lease_reply: fn(Reply<R>) -> Reply<LeaseOutcome>,
}

impl Parked<LeaseOutcome> {
    fn new(request: LeaseRequest, tags: Tags, max_jobs: u32, wait_ms: u64) -> Self {
        Parked {
            worker_id: request.worker_id,
            queues: request.queues,
            tags,
            max_jobs,
            wait_ms,
            into_lease_reply: |reply| reply,
        }
    }
}

impl SequencerCommand for Lease {
    type Answer = Grants;
    const READS_READY_JOBS: bool = true;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Grants>, DecideError> {
        let Lease {
            mut request,
            wait_ms,
        } = self;
        let tags = request.tags.take().unwrap_or_default();
        let max_jobs = request.max_jobs.unwrap_or(1);
        let ask = LeaseAsk {
            worker_id: &request.worker_id,
            queues: &request.queues,
            tags: &tags,
            max_jobs,
        };
        decide::validate_lease_ask(&ask, cx.limits)?;
        if let Some((events, grants)) = grant(cx, &ask) {
            return Ok(Decided::Append {
                events,
                answer: grants,
            });
        }
        Ok(Decided::Park(Parked::new(request, tags, max_jobs, wait_ms)))
    }
}

/// The leases `ask` gets now and the grants to answer with; `None` when nothing matches.
pub(super) fn grant(cx: &DecideCx<'_>, ask: &LeaseAsk<'_>) -> Option<(Vec<Event>, Grants)> {
    let decision = decide::lease(cx.state, cx.limits, cx.now_ms, ask);
    if decision.events.is_empty() {
        return None;
    }
    let grants = grants_of(cx.state, &decision.events);
    Some((decision.events, Grants(grants)))
}

/// Extracts the grants from decided `JobLeased` events, before they are applied to `state`.
pub fn grants_of(state: &QueueState, events: &[Event]) -> Vec<LeaseGrantCore> {
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

/// The lease answer's view of `job`, when its payload is still in the queue state.
fn granted_job(job: &Job) -> Option<GrantedJob> {
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

impl Sequencer {
    /// Parks a lease request that found nothing, within `lease_wait_ms_max` and
    /// `lease_waiters_max`; with no time to wait it is answered empty at once.
    pub(super) fn park<R>(
        &mut self,
        now_ms: u64,
        actor: Option<String>,
        parked: Parked<R>,
        reply: Reply<R>,
    ) {
        let reply = (parked.into_lease_reply)(reply);
        let wait_ms = parked.wait_ms.min(self.lease_wait_ms_max);
        if wait_ms == 0 {
            return answer(reply, Ok(LeaseOutcome::default()));
        }
        if self.waiters.len() >= self.lease_waiters_max {
            // Long-polls whose clients went away hold places until their deadline; they are
            // dropped before a live one is refused.
            self.waiters.drop_closed();
        }
        if self.waiters.len() >= self.lease_waiters_max {
            let waiting = self.waiters.len();
            return answer(reply, Err(SequencerError::TooManyWaiters(waiting)));
        }
        self.waiters.park(Waiter {
            worker_id: parked.worker_id,
            queues: parked.queues,
            tags: parked.tags,
            max_jobs: parked.max_jobs,
            deadline_ms: now_ms + wait_ms,
            actor,
            reply,
        });
    }

    /// Tries the woken parked long-polls again, oldest first, with the lease command's own
    /// decision and append path; those that still find nothing keep their place.
    pub(super) async fn serve_waiters(&mut self) {
        let now_ms = self.now_ms();
        self.promote_due_jobs(now_ms);
        for (arrival, waiter) in self.waiters.take_woken() {
            if waiter.reply.is_closed() {
                continue;
            }
            let ask = LeaseAsk {
                worker_id: &waiter.worker_id,
                queues: &waiter.queues,
                tags: &waiter.tags,
                max_jobs: waiter.max_jobs,
            };
            let granted = grant(&self.decide_cx(now_ms), &ask);
            match granted {
                None => self.waiters.park_back(arrival, waiter),
                Some((events, grants)) => {
                    self.append(now_ms, waiter.actor, events, waiter.reply, grants)
                        .await
                }
            }
        }
    }
}
