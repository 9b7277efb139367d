//! Validation of a command's shape against the [`QueueLimits`]: names, tags, a submission's
//! fields, a lease request and a log tail. Needs no queue state; every refusal carries the field
//! it is about and its stable code.

use super::{invalid, over_limit, DecideError, LeaseAsk, Limit};
use crate::queue::limits::QueueLimits;
use agentd_schemas::api::{SubmitJobRequest, LOG_TAIL_BYTES_MAX};
use agentd_schemas::events::{JobSubmitted, Tags};
use agentd_schemas::JobId;

/// Validates names of queues, kinds and workers: 1..=max chars of `[A-Za-z0-9_.:/-]`.
pub fn validate_name(field: &str, value: &str, max_chars: usize) -> Result<(), DecideError> {
    validate_text(field, value, max_chars)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:/-".contains(*c)))
    {
        return Err(invalid(
            field,
            format!("contains {bad:?}; allowed are letters, digits and _ . : / -"),
        ));
    }
    Ok(())
}

/// Validates free text (task ids, idempotency keys): 1..=max chars.
fn validate_text(field: &str, value: &str, max_chars: usize) -> Result<(), DecideError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(over_limit(
            Limit::StringLength,
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// Validates worker or job tags (`gpu=a100`).
pub fn validate_tags(field: &str, tags: &Tags, limits: &QueueLimits) -> Result<(), DecideError> {
    if tags.len() > limits.tags_max {
        return Err(over_limit(
            Limit::Tags,
            field,
            format!(
                "at most {} tags are allowed, got {}",
                limits.tags_max,
                tags.len()
            ),
        ));
    }
    for (key, value) in tags {
        validate_name(&format!("{field}.key"), key, limits.tag_chars_max)?;
        if value.chars().count() > limits.tag_chars_max {
            return Err(over_limit(
                Limit::StringLength,
                format!("{field}.{key}"),
                format!("must be at most {} characters", limits.tag_chars_max),
            ));
        }
    }
    Ok(())
}

/// A submission's fields, checked and resolved (`run_at_ms` from `delay_ms`, defaults filled in);
/// the job id is assigned by the caller.
pub(super) fn validate_submit(
    prefix: &str,
    request: &SubmitJobRequest,
    limits: &QueueLimits,
    now_ms: u64,
) -> Result<JobSubmitted, DecideError> {
    let field = |name: &str| format!("{prefix}{name}");
    validate_name(&field("queue"), &request.queue, limits.name_chars_max)?;
    validate_name(&field("kind"), &request.kind, limits.name_chars_max)?;
    let payload_json = serde_json::to_string(&request.payload)
        .map_err(|error| invalid(field("payload"), error.to_string()))?;
    if payload_json.len() > limits.payload_bytes_max {
        return Err(DecideError::PayloadTooLarge {
            field: field("payload"),
            bytes: payload_json.len(),
            max: limits.payload_bytes_max,
        });
    }
    let run_at_ms = resolve_run_at_ms(request, limits, now_ms, &field)?;
    let max_attempts = request.max_attempts.unwrap_or(limits.max_attempts_default);
    if max_attempts == 0 || max_attempts > limits.max_attempts_max {
        return Err(invalid(
            field("max_attempts"),
            format!("must be between 1 and {}", limits.max_attempts_max),
        ));
    }
    let lease_ttl_ms = request.lease_ttl_ms.unwrap_or(limits.lease_ttl_ms_default);
    if !(limits.lease_ttl_ms_min..=limits.lease_ttl_ms_max).contains(&lease_ttl_ms) {
        return Err(invalid(
            field("lease_ttl_ms"),
            format!(
                "must be between {} and {}",
                limits.lease_ttl_ms_min, limits.lease_ttl_ms_max
            ),
        ));
    }
    let tags = request.tags.clone().unwrap_or_default();
    validate_tags(&field("tags"), &tags, limits)?;
    if let Some(task_id) = &request.task_id {
        validate_text(&field("task_id"), task_id, limits.key_chars_max)?;
        // The task routes refuse such ids, so a job naming one could never reach its task.
        if task_id.chars().any(char::is_control) {
            return Err(invalid(
                field("task_id"),
                "must not contain control characters",
            ));
        }
    }
    if let Some(key) = &request.idempotency_key {
        validate_text(&field("idempotency_key"), key, limits.key_chars_max)?;
    }
    Ok(JobSubmitted {
        job_id: JobId(0),
        queue: request.queue.clone(),
        kind: request.kind.clone(),
        payload_json,
        priority: request.priority.unwrap_or(0),
        run_at_ms,
        max_attempts,
        lease_ttl_ms,
        tags,
        task_id: request.task_id.clone(),
        idempotency_key: request.idempotency_key.clone(),
    })
}

/// When a submission becomes eligible: `delay_ms` from now, `run_at_ms` (not before now), or now.
fn resolve_run_at_ms(
    request: &SubmitJobRequest,
    limits: &QueueLimits,
    now_ms: u64,
    field: &dyn Fn(&str) -> String,
) -> Result<u64, DecideError> {
    let run_at_ms = match (request.delay_ms, request.run_at_ms) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                field("delay_ms"),
                "give either delay_ms or run_at_ms, not both",
            ))
        }
        (Some(delay_ms), None) if delay_ms > limits.delay_ms_max => {
            return Err(invalid(
                field("delay_ms"),
                format!("must be at most {} ms", limits.delay_ms_max),
            ))
        }
        (Some(delay_ms), None) => now_ms + delay_ms,
        (None, Some(run_at_ms)) if run_at_ms > now_ms + limits.delay_ms_max => {
            return Err(invalid(
                field("run_at_ms"),
                format!("must be within {} ms from now", limits.delay_ms_max),
            ))
        }
        (None, Some(run_at_ms)) => run_at_ms.max(now_ms),
        (None, None) => now_ms,
    };
    Ok(run_at_ms)
}

/// Validates a lease request's shape (done once, before any long-poll wait).
pub fn validate_lease_ask(ask: &LeaseAsk<'_>, limits: &QueueLimits) -> Result<(), DecideError> {
    validate_name("worker_id", ask.worker_id, limits.name_chars_max)?;
    if ask.queues.is_empty() {
        return Err(invalid("queues", "must name at least one queue"));
    }
    if ask.queues.len() > limits.tags_max {
        return Err(over_limit(
            Limit::Items,
            "queues",
            format!("at most {} queues per lease request", limits.tags_max),
        ));
    }
    for (position, queue) in ask.queues.iter().enumerate() {
        validate_name(&format!("queues[{position}]"), queue, limits.name_chars_max)?;
    }
    validate_tags("tags", ask.tags, limits)?;
    if ask.max_jobs == 0 || ask.max_jobs > limits.lease_jobs_max {
        return Err(invalid(
            "max_jobs",
            format!("must be between 1 and {}", limits.lease_jobs_max),
        ));
    }
    Ok(())
}

/// A completion's or failure's `log_tail`, refused over [`LOG_TAIL_BYTES_MAX`] bytes. Unlike a
/// failure's error it is not cut here: the worker already sent a tail, and a longer one is a
/// client bug worth an answer. An empty tail is recorded as none.
pub(super) fn checked_log_tail(log_tail: Option<&str>) -> Result<Option<String>, DecideError> {
    match log_tail {
        Some(tail) if tail.len() > LOG_TAIL_BYTES_MAX => Err(over_limit(
            Limit::StringLength,
            "log_tail",
            format!(
                "{} bytes is over the limit of {LOG_TAIL_BYTES_MAX} bytes; send the last {LOG_TAIL_BYTES_MAX} bytes of the output",
                tail.len()
            ),
        )),
        Some("") | None => Ok(None),
        Some(tail) => Ok(Some(tail.to_string())),
    }
}
