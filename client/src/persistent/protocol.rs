//! The line protocol between `agentctl worker --persistent` and its long-lived actors, version
//! [`PROTOCOL_VERSION`] (docs/persistent-actors.md draws it with a lane's state machine).
//!
//! One JSON object per line, UTF-8, `\n`-terminated, each with a `type`:
//!
//! ```text
//! actor  -> worker   {"type":"hello","protocol":1}                        first stdout line, once ready
//! worker -> actor    {"type":"job","job_id":"job_7","lease_id":"lease_9","attempt":1,"slot":0,
//!                     "queue":"q","kind":"episode","payload":{...},"task_id":null,...}
//! actor  -> worker   {"type":"result","job_id":"job_7","result":{...}}
//!                  | {"type":"failure","job_id":"job_7","error":"...","retryable":true}
//! worker -> actor    {"type":"cancel","job_id":"job_7","reason":"lease_lost"}
//! actor  -> worker   {"type":"cancelled","job_id":"job_7"}                (or its result/failure)
//! worker -> actor    end of stdin: finish and exit
//! ```
//!
//! This module only encodes and classifies lines (no IO), so every rule is unit-tested here; the
//! process side is `super::lane`. The types are agentctl's own wire format with its child
//! processes, like the sandbox child's (`crate::builtin::sandbox_child`): they never reach the
//! daemon, so they live here rather than in `agentd-schemas`.

use agentd_schemas::api::{LeaseGrant, LeasedJob};
use agentd_schemas::{JobId, LeaseId};
use serde::Serialize;
use serde_json::Value;

/// The protocol version this worker speaks; an actor's hello must name it.
pub const PROTOCOL_VERSION: u64 = 1;
/// Environment variable that tells an actor which protocol version its worker speaks.
pub const PROTOCOL_ENV: &str = "AGENTD_PERSISTENT_PROTOCOL";
/// Longest line an actor may write on stdout. A result of a per-job command is capped at 1 MiB
/// (`crate::worker::STDOUT_BYTES_MAX`); the envelope and JSON escaping get the rest.
pub const ACTOR_LINE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Characters of an offending line quoted in an error message.
pub const QUOTED_CHARS_MAX: usize = 200;
/// The hello line, as error messages quote it.
pub const HELLO_EXAMPLE: &str = r#"{"type":"hello","protocol":1}"#;

/// A leased job as the worker writes it to an actor: the leased job object a per-job command
/// reads on stdin (job id, queue, kind, payload, attempt, task id, ...), plus what a per-job
/// command gets in its environment (`lease_id`, `slot`).
#[derive(Debug, Serialize)]
pub struct JobLine<'a> {
    #[serde(rename = "type")]
    pub message_type: &'static str,
    pub lease_id: LeaseId,
    pub slot: usize,
    #[serde(flatten)]
    pub job: &'a LeasedJob,
}

/// Why the worker asks an actor to stop a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The lease is gone (cancelled, expired, superseded): nothing the actor does counts.
    LeaseLost,
    /// The worker is shutting down and the drain deadline passed.
    Draining,
    /// The slot's model server went down or was restarted under the job.
    ServerLost,
}

#[derive(Debug, Serialize)]
struct CancelLine {
    #[serde(rename = "type")]
    message_type: &'static str,
    job_id: JobId,
    reason: CancelReason,
}

/// The `job` line for `grant` in `slot`, newline included.
pub fn job_line(grant: &LeaseGrant, slot: usize) -> Vec<u8> {
    let line = JobLine {
        message_type: "job",
        lease_id: grant.lease_id,
        slot,
        job: &grant.job,
    };
    encode(&line)
}

/// The `cancel` line for `job_id`, newline included.
pub fn cancel_line(job_id: JobId, reason: CancelReason) -> Vec<u8> {
    encode(&CancelLine {
        message_type: "cancel",
        job_id,
        reason,
    })
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Proven not to fail: the types above are plain structs of strings, numbers and JSON values
    // with string keys, which serde_json always serializes.
    let mut bytes = serde_json::to_vec(message).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// What one line an actor wrote on stdout is.
#[derive(Debug, Clone, PartialEq)]
pub enum ActorLine {
    /// `{"type":"hello","protocol":N}`.
    Hello { protocol: u64 },
    /// `{"type":"result","job_id":...,"result":...}`; a missing or null result completes the job
    /// without one.
    Result {
        job_id: JobId,
        result: Option<Value>,
    },
    /// `{"type":"failure","job_id":...,"error":"...","retryable":bool}`; `retryable` defaults
    /// to true, as for a per-job command that exits non-zero.
    Failure {
        job_id: JobId,
        error: String,
        retryable: bool,
    },
    /// `{"type":"cancelled","job_id":...}`: the actor stopped the job after a `cancel`.
    Cancelled { job_id: JobId },
    /// A protocol message type this worker does not know (a later version, or a typo): logged as
    /// output, with a warning.
    UnknownType { message_type: String },
    /// A known message type with missing or wrong fields.
    Malformed { problem: String },
    /// Anything else (not a JSON object with a string `type`): the actor's output, kept in the
    /// running job's log.
    Output,
}

impl ActorLine {
    /// The job an answer is about.
    pub fn answered_job(&self) -> Option<JobId> {
        match self {
            ActorLine::Result { job_id, .. }
            | ActorLine::Failure { job_id, .. }
            | ActorLine::Cancelled { job_id } => Some(*job_id),
            _ => None,
        }
    }
}

/// Classifies one stdout line (without its newline; surrounding whitespace is ignored).
pub fn classify(line: &[u8]) -> ActorLine {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(line.trim_ascii()) else {
        return ActorLine::Output;
    };
    let message_type = match fields.get("type") {
        Some(Value::String(message_type)) => message_type.clone(),
        _ => return ActorLine::Output,
    };
    let malformed = |problem: String| ActorLine::Malformed {
        problem: format!("a {message_type:?} message {problem}"),
    };
    let job_id = |fields: &serde_json::Map<String, Value>| -> Result<JobId, String> {
        match fields.get("job_id") {
            Some(Value::String(text)) => text
                .parse::<JobId>()
                .map_err(|_| format!("has job_id {text:?}, which is not a job id (job_N)")),
            Some(_) => Err("has a job_id that is not a string".to_string()),
            None => Err("has no job_id".to_string()),
        }
    };
    match message_type.as_str() {
        "hello" => match fields.get("protocol").and_then(Value::as_u64) {
            Some(protocol) => ActorLine::Hello { protocol },
            None => malformed("has no protocol version (a whole number)".to_string()),
        },
        "result" => match job_id(&fields) {
            Ok(job_id) => ActorLine::Result {
                job_id,
                result: fields.remove("result").filter(|result| !result.is_null()),
            },
            Err(problem) => malformed(problem),
        },
        "failure" => {
            let job_id = match job_id(&fields) {
                Ok(job_id) => job_id,
                Err(problem) => return malformed(problem),
            };
            let error = match fields.get("error") {
                Some(Value::String(error)) => error.clone(),
                _ => return malformed("has no error (a string)".to_string()),
            };
            let retryable = match fields.get("retryable") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(retryable)) => *retryable,
                Some(_) => return malformed("has a retryable that is not true or false".into()),
            };
            ActorLine::Failure {
                job_id,
                error,
                retryable,
            }
        }
        "cancelled" => match job_id(&fields) {
            Ok(job_id) => ActorLine::Cancelled { job_id },
            Err(problem) => malformed(problem),
        },
        _ => ActorLine::UnknownType { message_type },
    }
}

/// Why a process is not a persistent actor, judged from its first stdout line.
pub fn check_hello(first_line: &[u8]) -> Result<(), String> {
    match classify(first_line) {
        ActorLine::Hello {
            protocol: PROTOCOL_VERSION,
        } => Ok(()),
        ActorLine::Hello { protocol } => Err(format!(
            "the actor speaks protocol {protocol}, but this agentctl speaks protocol {PROTOCOL_VERSION}: its first line must be {HELLO_EXAMPLE}"
        )),
        _ => Err(format!(
            "the command does not speak the persistent-actor protocol: its first line on stdout was {}, not {HELLO_EXAMPLE} (write logs to stderr; a per-job command needs no --persistent; docs/persistent-actors.md)",
            quote(first_line)
        )),
    }
}

/// A line for an error message: its first [`QUOTED_CHARS_MAX`] characters, quoted.
pub fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line.trim_ascii());
    let mut quoted: String = text.chars().take(QUOTED_CHARS_MAX).collect();
    if quoted.len() < text.len() {
        quoted.push_str("...");
    }
    format!("{quoted:?}")
}

#[cfg(test)]
mod tests;
