//! Job commands: submit, heartbeat, complete (one or many), fail, cancel and retry. Each decides
//! through `queue::decide` and says how it is answered once its record is durable.

use super::command::{AnswerWithLsn, DecideCx, Decided, SequencerCommand};
use crate::queue::decide::{self, DecideError, JobChange, Submitted};
use agentd_schemas::api::{
    CompleteItem, HeartbeatResponse, JobStateName, JobTransitionResponse, SubmitJobRequest,
    SubmitJobResponse,
};
use agentd_schemas::events::{AfterFailure, Event};
use agentd_schemas::{JobId, LeaseId, Lsn};
use std::collections::HashSet;

/// Submits one or more jobs in one record (`POST /v1/jobs`, `/v1/jobs/batch`).
pub struct Submit {
    pub requests: Vec<SubmitJobRequest>,
}

/// Each submission's job, and whether an idempotency key found an earlier one.
pub struct SubmitAnswer(Vec<Submitted>);

impl AnswerWithLsn for SubmitAnswer {
    type Reply = Vec<SubmitJobResponse>;

    fn with_lsn(self, lsn: Lsn) -> Vec<SubmitJobResponse> {
        self.0
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
    }
}

impl SequencerCommand for Submit {
    type Answer = SubmitAnswer;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<SubmitAnswer>, DecideError> {
        let decision = decide::submit(cx.state, cx.limits, cx.now_ms, &self.requests)?;
        let answer = SubmitAnswer(decision.reply);
        if decision.events.is_empty() {
            // Every job was a duplicate: nothing to append; answered with the originals once
            // the frames in flight (which may hold them) are durable.
            return Ok(Decided::Answer(answer.with_lsn(Lsn::ZERO)));
        }
        Ok(Decided::Append {
            events: decision.events,
            answer,
        })
    }
}

/// Extends a held lease by its job's TTL.
pub struct Heartbeat {
    pub lease_id: LeaseId,
}

/// The lease's new expiry.
pub struct Extended {
    expires_at_ms: u64,
}

impl AnswerWithLsn for Extended {
    type Reply = HeartbeatResponse;

    fn with_lsn(self, _lsn: Lsn) -> HeartbeatResponse {
        HeartbeatResponse {
            expires_at_ms: self.expires_at_ms,
        }
    }
}

impl SequencerCommand for Heartbeat {
    type Answer = Extended;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Extended>, DecideError> {
        let decision = decide::heartbeat(cx.state, cx.now_ms, self.lease_id)?;
        Ok(Decided::Append {
            events: decision.events,
            answer: Extended {
                expires_at_ms: decision.reply,
            },
        })
    }
}

/// Where a job went: answered as a [`JobTransitionResponse`] with the record's LSN.
pub struct Transition {
    job_id: JobId,
    state: JobStateName,
    run_at_ms: Option<u64>,
}

impl AnswerWithLsn for Transition {
    type Reply = JobTransitionResponse;

    fn with_lsn(self, lsn: Lsn) -> JobTransitionResponse {
        JobTransitionResponse {
            job_id: self.job_id,
            state: self.state,
            lsn,
            run_at_ms: self.run_at_ms,
        }
    }
}

/// Ends a held lease successfully.
pub struct Complete {
    pub lease_id: LeaseId,
    pub result: Option<serde_json::Value>,
    /// The attempt's output tail, checked against `LOG_TAIL_BYTES_MAX` by the decision.
    pub log_tail: Option<String>,
}

impl Complete {
    /// The completion's events and its answer; complete-then-lease appends more events to the
    /// same record (`complete_lease.rs`).
    pub(super) fn decide_events(
        self,
        cx: &DecideCx<'_>,
    ) -> Result<(Vec<Event>, Transition), DecideError> {
        let decision = decide::complete(
            cx.state,
            cx.limits,
            cx.now_ms,
            self.lease_id,
            self.result.as_ref(),
            self.log_tail.as_deref(),
        )?;
        let transition = Transition {
            job_id: decision.reply,
            state: JobStateName::Completed,
            run_at_ms: None,
        };
        Ok((decision.events, transition))
    }
}

impl SequencerCommand for Complete {
    type Answer = Transition;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Transition>, DecideError> {
        let (events, answer) = self.decide_events(cx)?;
        Ok(Decided::Append { events, answer })
    }
}

/// Completes many leases in one record; each item is fenced on its own.
pub struct CompleteMany {
    /// As the request carries them, like [`Submit`] its requests.
    pub items: Vec<CompleteItem>,
}

/// The record holding a batch completion (if any item succeeded) and each item's outcome.
pub type CompleteManyOutcome = (Option<Lsn>, Vec<Result<JobId, DecideError>>);

/// Each item's outcome, in order.
pub struct ItemOutcomes(Vec<Result<JobId, DecideError>>);

impl AnswerWithLsn for ItemOutcomes {
    type Reply = CompleteManyOutcome;

    fn with_lsn(self, lsn: Lsn) -> CompleteManyOutcome {
        (Some(lsn), self.0)
    }
}

impl SequencerCommand for CompleteMany {
    type Answer = ItemOutcomes;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<ItemOutcomes>, DecideError> {
        let mut events = Vec::with_capacity(self.items.len());
        let mut outcomes = Vec::with_capacity(self.items.len());
        let mut seen = HashSet::with_capacity(self.items.len());
        for CompleteItem {
            lease_id,
            result,
            log_tail,
        } in self.items
        {
            if !seen.insert(lease_id) {
                outcomes.push(Err(DecideError::LeaseLost {
                    lease_id,
                    reason: "completed earlier in this batch".into(),
                }));
                continue;
            }
            let decided = decide::complete(
                cx.state,
                cx.limits,
                cx.now_ms,
                lease_id,
                result.as_ref(),
                log_tail.as_deref(),
            );
            outcomes.push(decided.map(|decision| {
                events.extend(decision.events);
                decision.reply
            }));
        }
        if events.is_empty() {
            return Ok(Decided::Answer((None, outcomes)));
        }
        Ok(Decided::Append {
            events,
            answer: ItemOutcomes(outcomes),
        })
    }
}

/// Ends a held lease with a failure: retried after a backoff, or dead.
pub struct Fail {
    pub lease_id: LeaseId,
    pub error: String,
    /// Whether another attempt may succeed (`false`: the job dies now).
    pub retryable: bool,
    /// The attempt's output tail, checked against `LOG_TAIL_BYTES_MAX` by the decision.
    pub log_tail: Option<String>,
}

impl SequencerCommand for Fail {
    type Answer = Transition;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Transition>, DecideError> {
        let decision = decide::fail(
            cx.state,
            cx.limits,
            cx.now_ms,
            self.lease_id,
            &self.error,
            self.retryable,
            (cx.jitter)(),
            self.log_tail.as_deref(),
        )?;
        let (job_id, after) = decision.reply;
        let (state, run_at_ms) = match after {
            AfterFailure::Retry { run_at_ms } => (JobStateName::Scheduled, Some(run_at_ms)),
            AfterFailure::Dead => (JobStateName::Dead, None),
        };
        Ok(Decided::Append {
            events: decision.events,
            answer: Transition {
                job_id,
                state,
                run_at_ms,
            },
        })
    }
}

/// Cancels a scheduled, queued or leased job.
pub struct Cancel {
    pub job_id: JobId,
}

impl SequencerCommand for Cancel {
    type Answer = Transition;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Transition>, DecideError> {
        change_job(cx, self.job_id, JobChange::Cancel)
    }
}

/// Puts a dead job back in its queue.
pub struct Retry {
    pub job_id: JobId,
}

impl SequencerCommand for Retry {
    type Answer = Transition;

    fn decide(self, cx: &DecideCx<'_>) -> Result<Decided<Transition>, DecideError> {
        change_job(cx, self.job_id, JobChange::Retry)
    }
}

/// Cancel and retry: the same decision, answered with where the job went.
fn change_job(
    cx: &DecideCx<'_>,
    job_id: JobId,
    change: JobChange,
) -> Result<Decided<Transition>, DecideError> {
    let decision = decide::change_job(cx.state, cx.now_ms, job_id, change)?;
    let (state, run_at_ms) = match change {
        JobChange::Cancel => (JobStateName::Cancelled, None),
        JobChange::Retry => (JobStateName::Queued, Some(cx.now_ms)),
    };
    Ok(Decided::Append {
        events: decision.events,
        answer: Transition {
            job_id,
            state,
            run_at_ms,
        },
    })
}
