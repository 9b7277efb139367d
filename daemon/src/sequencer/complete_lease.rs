//! Complete-then-lease: `POST /v1/leases/{id}/complete` with `next`. A worker whose slot just
//! finished a job completes it and leases the next in one round trip and ONE record: the
//! completion's events and the grants share a frame, so they are durable together (one fsync)
//! and the answer waits for that frame as a completion alone does.
//!
//! Why one record is sound: the lease is decided against the state before the completion is
//! applied, and a completion changes nothing a lease decision reads (the ready sets, paused
//! queues, `next_lease_id`): the completed job is leased, never ready, so it cannot be granted
//! again, and the grants take the lease ids a lease decided alone would have taken.

use super::command::{AnswerWithLsn, DecideCx, Decided, SequencerCommand};
use super::jobs::{Complete, Transition};
use super::lease::{grant, LeaseGrantCore};
use crate::queue::decide::{self, DecideError, LeaseAsk};
use agentd_schemas::api::{JobTransitionResponse, NextLeaseRequest};
use agentd_schemas::Lsn;

/// Completes a held lease and leases what is ready right now for `next`, in one record.
pub struct CompleteThenLease {
    pub complete: Complete,
    /// What to lease once the completion is decided; never waits.
    pub next: NextLeaseRequest,
}

/// The completion's answer and the leases granted with it (empty when nothing was ready).
pub type CompletedThenLeased = (JobTransitionResponse, Vec<LeaseGrantCore>);

/// The completion and the grants, answered with the record that holds both.
pub struct CompletedWithGrants {
    transition: Transition,
    grants: Vec<LeaseGrantCore>,
}

impl AnswerWithLsn for CompletedWithGrants {
    type Reply = CompletedThenLeased;

    fn with_lsn(self, lsn: Lsn) -> CompletedThenLeased {
        (self.transition.with_lsn(lsn), self.grants)
    }
}

impl SequencerCommand for CompleteThenLease {
    type Answer = CompletedWithGrants;
    const READS_READY_JOBS: bool = true;

    /// The rule for a bad `next`: it is checked first, with the lease route's own validation
    /// and codes (its fields named `next.*`), and refuses the whole command before the
    /// completion is decided. A refusal therefore never hides a completion: the lease stays
    /// held, and the caller completes again without `next` (or with a fixed one). A valid
    /// `next` that finds nothing (an unknown or paused queue, nothing ready) leases nothing and
    /// the completion goes through alone.
    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<CompletedWithGrants>, DecideError> {
        let tags = self.next.tags.unwrap_or_default();
        let ask = LeaseAsk {
            worker_id: &self.next.worker_id,
            queues: &self.next.queues,
            tags: &tags,
            max_jobs: self.next.max_jobs.unwrap_or(1),
        };
        decide::validate_lease_ask(&ask, cx.limits).map_err(under_next)?;
        let (mut events, transition) = self.complete.decide_events(cx)?;
        let grants = match grant(cx, &ask) {
            Some((lease_events, grants)) => {
                events.extend(lease_events);
                grants.into_cores()
            }
            None => Vec::new(),
        };
        Ok(Decided::Append {
            events,
            answer: CompletedWithGrants { transition, grants },
        })
    }
}

/// Names a refused field of `next` as the request body does (`next.max_jobs`), keeping its
/// code.
fn under_next(error: DecideError) -> DecideError {
    match error {
        DecideError::Invalid { field, message } => DecideError::Invalid {
            field: format!("next.{field}"),
            message,
        },
        DecideError::OverLimit {
            limit,
            field,
            message,
        } => DecideError::OverLimit {
            limit,
            field: format!("next.{field}"),
            message,
        },
        other => other,
    }
}
