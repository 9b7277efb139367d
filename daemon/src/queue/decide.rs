//! Command validation and event decisions. Each function reads the current [`QueueState`] and
//! returns the events to append (and what to answer), or a [`DecideError`]; it never mutates
//! state. Time (`now_ms`) and randomness (`jitter`, in `[0, 1)`) come in as arguments, so the
//! decision is written into the events and replays need neither.
//!
//! Checks of a command's shape that need no state (names, tags, a submission's fields, a lease
//! request, a log tail) are in `validate.rs`.

mod validate;

pub use validate::{validate_lease_ask, validate_name};

use super::limits::QueueLimits;
use super::state::{Job, JobStatus, QueueState};
use agentd_schemas::api::{JobStateName, SubmitJobRequest};
use agentd_schemas::events::{AfterFailure, Event, JobLeased, JobSubmitted, Tags};
use agentd_schemas::{JobId, LeaseId, Lsn};
use std::collections::HashMap;
use validate::{checked_log_tail, validate_submit};

/// Why a command was refused. Each maps to one HTTP status and stable code in the API layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {bytes} bytes is over the limit of {max} bytes")]
    PayloadTooLarge {
        field: String,
        bytes: usize,
        max: usize,
    },
    /// A count or length over one of the [`QueueLimits`]; each kind has its own API code.
    #[error("{field}: {message}")]
    OverLimit {
        limit: Limit,
        field: String,
        message: String,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    /// [`DecideError::NotFound`] with what to do first (404 as well).
    #[error("{what} not found; {hint}")]
    NotFoundHint { what: String, hint: String },
    #[error("lease {lease_id} is no longer held: {reason}")]
    LeaseLost { lease_id: LeaseId, reason: String },
    /// The request contradicts a fact the log already holds (a step index already recorded).
    #[error("{message}")]
    Conflict { message: String },
    #[error("job {job_id} is {}: {message}", state.as_str())]
    InvalidState {
        job_id: JobId,
        state: JobStateName,
        message: String,
    },
}

/// Which limit a request went over (see [`DecideError::OverLimit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// More items in one batch request than allowed (`batch_jobs_max`).
    BatchSize,
    /// More tags than `tags_max`.
    Tags,
    /// More items in a list field than allowed (queues of a lease request).
    Items,
    /// A text field longer than its limit.
    StringLength,
}

impl Limit {
    /// The stable API error code of this refusal.
    pub fn code(self) -> agentd_schemas::ErrorCode {
        use agentd_schemas::ErrorCode;
        match self {
            Limit::BatchSize => ErrorCode::BatchTooLarge,
            Limit::Tags => ErrorCode::TooManyTags,
            Limit::Items => ErrorCode::TooManyItems,
            Limit::StringLength => ErrorCode::StringTooLong,
        }
    }
}

fn over_limit(limit: Limit, field: impl Into<String>, message: impl Into<String>) -> DecideError {
    DecideError::OverLimit {
        limit,
        field: field.into(),
        message: message.into(),
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DecideError {
    DecideError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Events to append plus the data the caller answers with once they are durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<R> {
    pub events: Vec<Event>,
    pub reply: R,
}

/// The outcome of one submission inside a (possibly batched) submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub job_id: JobId,
    /// `Some(lsn)` of the original submission when an idempotency key matched.
    pub deduplicated_lsn: Option<Lsn>,
}

/// Decides a submit of one or more jobs (one atomic record). Idempotency keys are per queue; a
/// key repeated inside the batch maps to the first job of the batch that used it.
pub fn submit(
    state: &QueueState,
    limits: &QueueLimits,
    now_ms: u64,
    requests: &[SubmitJobRequest],
) -> Result<Decision<Vec<Submitted>>, DecideError> {
    if requests.is_empty() {
        return Err(invalid("jobs", "must contain at least one job"));
    }
    if requests.len() > limits.batch_jobs_max {
        return Err(over_limit(
            Limit::BatchSize,
            "jobs",
            format!(
                "at most {} jobs per batch, got {}",
                limits.batch_jobs_max,
                requests.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(requests.len());
    let mut outcomes = Vec::with_capacity(requests.len());
    let mut keys_in_batch: HashMap<(&str, &str), JobId> = HashMap::new();
    let mut next_job_id = state.next_job_id;
    for (position, request) in requests.iter().enumerate() {
        let prefix = if requests.len() > 1 {
            format!("jobs[{position}].")
        } else {
            String::new()
        };
        let submitted = validate_submit(&prefix, request, limits, now_ms)?;
        if let Some(key) = request.idempotency_key.as_deref() {
            if let Some(existing) = state
                .idempotency
                .get(&(request.queue.as_str().into(), key.to_string()))
            {
                outcomes.push(Submitted {
                    job_id: existing.job_id,
                    deduplicated_lsn: Some(existing.lsn),
                });
                continue;
            }
            if let Some(&job_id) = keys_in_batch.get(&(request.queue.as_str(), key)) {
                // Same frame, so the lsn is this record's; the caller fills it in.
                outcomes.push(Submitted {
                    job_id,
                    deduplicated_lsn: Some(Lsn::ZERO),
                });
                continue;
            }
        }
        let job_id = JobId(next_job_id);
        next_job_id += 1;
        if let Some(key) = request.idempotency_key.as_deref() {
            keys_in_batch.insert((request.queue.as_str(), key), job_id);
        }
        events.push(Event::JobSubmitted(JobSubmitted {
            job_id,
            ..submitted
        }));
        outcomes.push(Submitted {
            job_id,
            deduplicated_lsn: None,
        });
    }
    Ok(Decision {
        events,
        reply: outcomes,
    })
}

/// What a worker asks for when it leases.
#[derive(Debug, Clone)]
pub struct LeaseAsk<'a> {
    pub worker_id: &'a str,
    pub queues: &'a [String],
    pub tags: &'a Tags,
    pub max_jobs: u32,
}

/// Decides which ready jobs a worker gets: best first across its (unpaused) queues, by priority,
/// then eligibility time, then submission order; only jobs whose required tags the worker has.
/// Call `state.promote_due(now_ms)` first. An empty event list means nothing matched.
pub fn lease(
    state: &QueueState,
    limits: &QueueLimits,
    now_ms: u64,
    ask: &LeaseAsk<'_>,
) -> Decision<()> {
    let mut candidates: Vec<(super::state::ReadyKey, &Job)> = Vec::new();
    for queue in ask.queues {
        let Some(index) = state.queue(queue) else {
            continue;
        };
        if index.paused {
            continue;
        }
        let matching = index
            .ready
            .iter()
            .take(limits.lease_scan_max)
            .filter_map(|key| state.job(key.2).map(|job| (*key, job)))
            .filter(|(key, job)| key.1 <= now_ms && job.tags_satisfied_by(ask.tags))
            .take(ask.max_jobs as usize);
        candidates.extend(matching);
    }
    candidates.sort_by_key(|(key, _)| *key);
    candidates.dedup_by_key(|(key, _)| key.2);
    let events = candidates
        .into_iter()
        .take(ask.max_jobs as usize)
        .enumerate()
        .map(|(offset, (_, job))| {
            Event::JobLeased(JobLeased {
                job_id: job.id,
                lease_id: LeaseId(state.next_lease_id + offset as u64),
                worker_id: ask.worker_id.to_string(),
                attempt: job.attempt + 1,
                expires_at_ms: now_ms + job.lease_ttl_ms,
            })
        })
        .collect();
    Decision { events, reply: () }
}

/// Finds the job a lease belongs to, refusing expired or superseded leases (fencing).
pub fn held_lease(state: &QueueState, now_ms: u64, lease_id: LeaseId) -> Result<&Job, DecideError> {
    let lost = |reason: &str| DecideError::LeaseLost {
        lease_id,
        reason: reason.to_string(),
    };
    if lease_id.0 == 0 || lease_id.0 >= state.next_lease_id {
        return Err(DecideError::NotFound {
            what: format!("lease {lease_id}"),
        });
    }
    let Some(job) = state
        .leases
        .get(&lease_id)
        .and_then(|job_id| state.job(*job_id))
    else {
        return Err(lost(
            "it expired, was cancelled, or the job finished under another lease",
        ));
    };
    match &job.status {
        JobStatus::Leased {
            lease_id: current,
            expires_at_ms,
            ..
        } if *current == lease_id => {
            if *expires_at_ms <= now_ms {
                Err(lost("it expired"))
            } else {
                Ok(job)
            }
        }
        _ => Err(lost("a newer attempt holds the job")),
    }
}

/// Extends a held lease by the job's lease TTL from now.
pub fn heartbeat(
    state: &QueueState,
    now_ms: u64,
    lease_id: LeaseId,
) -> Result<Decision<u64>, DecideError> {
    let job = held_lease(state, now_ms, lease_id)?;
    let expires_at_ms = now_ms + job.lease_ttl_ms;
    Ok(Decision {
        events: vec![Event::LeaseHeartbeat {
            job_id: job.id,
            lease_id,
            expires_at_ms,
        }],
        reply: expires_at_ms,
    })
}

/// Ends a held lease successfully with an optional JSON result and output tail.
pub fn complete(
    state: &QueueState,
    limits: &QueueLimits,
    now_ms: u64,
    lease_id: LeaseId,
    result: Option<&serde_json::Value>,
    log_tail: Option<&str>,
) -> Result<Decision<JobId>, DecideError> {
    let job = held_lease(state, now_ms, lease_id)?;
    let log_tail = checked_log_tail(log_tail)?;
    let result_json = match result {
        Some(value) => {
            let text = serde_json::to_string(value)
                .map_err(|error| invalid("result", error.to_string()))?;
            if text.len() > limits.payload_bytes_max {
                return Err(DecideError::PayloadTooLarge {
                    field: "result".into(),
                    bytes: text.len(),
                    max: limits.payload_bytes_max,
                });
            }
            Some(text)
        }
        None => None,
    };
    Ok(Decision {
        events: vec![Event::JobCompleted {
            job_id: job.id,
            lease_id,
            result_json,
            log_tail,
        }],
        reply: job.id,
    })
}

/// What follows a failed attempt: a retry after exponential backoff with jitter, or death when
/// attempts are used up or the failure is not retryable.
pub fn after_failure(
    job: &Job,
    limits: &QueueLimits,
    now_ms: u64,
    retryable: bool,
    jitter: f64,
) -> AfterFailure {
    if !retryable || job.attempt >= job.max_attempts {
        return AfterFailure::Dead;
    }
    let exponent = job.attempt.saturating_sub(1).min(32);
    let backoff_ms = limits
        .retry_backoff_base_ms
        .saturating_mul(1u64 << exponent)
        .min(limits.retry_backoff_max_ms);
    // Full backoff scaled into [50%, 100%): spreads retries of jobs that failed together.
    let jittered_ms = (backoff_ms as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as u64;
    AfterFailure::Retry {
        run_at_ms: now_ms + jittered_ms,
    }
}

/// Ends a held lease with a failure (and an optional output tail).
#[allow(clippy::too_many_arguments)] // reason: the decision's inputs, all plain data; a struct would only rename them
pub fn fail(
    state: &QueueState,
    limits: &QueueLimits,
    now_ms: u64,
    lease_id: LeaseId,
    error: &str,
    retryable: bool,
    jitter: f64,
    log_tail: Option<&str>,
) -> Result<Decision<(JobId, AfterFailure)>, DecideError> {
    let job = held_lease(state, now_ms, lease_id)?;
    let log_tail = checked_log_tail(log_tail)?;
    // Keep the tail of long errors: the last lines of a stack trace say the most.
    let error_text: String = if error.chars().count() > limits.error_chars_max {
        let skip = error.chars().count() - limits.error_chars_max;
        error.chars().skip(skip).collect()
    } else {
        error.to_string()
    };
    let after = after_failure(job, limits, now_ms, retryable, jitter);
    Ok(Decision {
        events: vec![Event::JobFailed {
            job_id: job.id,
            lease_id,
            error: error_text,
            retryable,
            after: after.clone(),
            log_tail,
        }],
        reply: (job.id, after),
    })
}

/// Expires every lease whose time is up at `now_ms`. `jitter` is called once per expired lease.
pub fn expire_leases(
    state: &QueueState,
    limits: &QueueLimits,
    now_ms: u64,
    mut jitter: impl FnMut() -> f64,
) -> Vec<Event> {
    state
        .lease_expiries
        .iter()
        .take_while(|(expires_at_ms, _)| *expires_at_ms <= now_ms)
        .filter_map(|(_, lease_id)| {
            let job = state.job(*state.leases.get(lease_id)?)?;
            Some(Event::LeaseExpired {
                job_id: job.id,
                lease_id: *lease_id,
                after: after_failure(job, limits, now_ms, true, jitter()),
            })
        })
        .collect()
}

fn existing_job(state: &QueueState, job_id: JobId) -> Result<&Job, DecideError> {
    state.job(job_id).ok_or_else(|| DecideError::NotFound {
        what: format!("job {job_id}"),
    })
}

/// A change an operator makes to one job (`POST /v1/jobs/{job_id}/cancel` or `.../retry`): the
/// same decision, with its own states it applies to and its own event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobChange {
    /// Ends a scheduled, queued or leased job; its worker's next call gets `lease_lost`.
    Cancel,
    /// Puts a dead job back in its queue with a fresh set of attempts.
    Retry,
}

impl JobChange {
    fn applies_to(self, status: &JobStatus) -> bool {
        match self {
            JobChange::Cancel => {
                matches!(status, JobStatus::Waiting { .. } | JobStatus::Leased { .. })
            }
            JobChange::Retry => matches!(status, JobStatus::Dead),
        }
    }

    fn event(self, job_id: JobId, now_ms: u64) -> Event {
        match self {
            JobChange::Cancel => Event::JobCancelled { job_id },
            JobChange::Retry => Event::JobRetried {
                job_id,
                run_at_ms: now_ms,
            },
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            JobChange::Cancel => "only scheduled, queued or leased jobs can be cancelled",
            JobChange::Retry => "only dead jobs can be retried",
        }
    }
}

/// Decides an operator's [`JobChange`] of `job_id`, refused (`invalid_state`) for a job in a
/// state the change does not apply to.
pub fn change_job(
    state: &QueueState,
    now_ms: u64,
    job_id: JobId,
    change: JobChange,
) -> Result<Decision<()>, DecideError> {
    let job = existing_job(state, job_id)?;
    if !change.applies_to(&job.status) {
        return Err(DecideError::InvalidState {
            job_id,
            state: job.state_name(now_ms),
            message: change.refusal().into(),
        });
    }
    Ok(Decision {
        events: vec![change.event(job_id, now_ms)],
        reply: (),
    })
}

/// Pauses (`paused = true`) or resumes a queue. Leases stop or restart; submits always work.
pub fn set_paused(
    limits: &QueueLimits,
    queue: &str,
    paused: bool,
) -> Result<Decision<()>, DecideError> {
    validate_name("queue", queue, limits.name_chars_max)?;
    let event = if paused {
        Event::QueuePaused {
            queue: queue.to_string(),
        }
    } else {
        Event::QueueResumed {
            queue: queue.to_string(),
        }
    };
    Ok(Decision {
        events: vec![event],
        reply: (),
    })
}
