//! Values stored in the daemon's redb projections. They are derived data: a change here bumps
//! the projection version in the daemon, which rebuilds the projection from the log. Every value
//! is stored behind a one-byte version prefix.

use crate::events::Tags;
use crate::ids::{JobId, LeaseId, Lsn};
use serde::{Deserialize, Serialize};

/// Version byte in front of every stored [`JobRecord`].
pub const JOB_RECORD_VERSION: u8 = 1;

/// A job's lifecycle state as stored in the job projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StoredJobState {
    Waiting {
        run_at_ms: u64,
    },
    Leased {
        lease_id: LeaseId,
        worker_id: String,
        attempt: u32,
        expires_at_ms: u64,
    },
    Completed,
    Dead,
    Cancelled,
}

/// Everything about one job that `GET /v1/jobs/{id}` shows, except its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload_json: String,
    pub priority: i32,
    pub max_attempts: u32,
    pub lease_ttl_ms: u64,
    pub tags: Tags,
    pub task_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub submitted_lsn: Lsn,
    pub submitted_at_ms: u64,
    pub updated_at_ms: u64,
    pub attempt: u32,
    pub state: StoredJobState,
    pub result_json: Option<String>,
    pub last_error: Option<String>,
    /// Name of the token that submitted the job (`None` without authentication); a `submit`
    /// token may read only the jobs it submitted.
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// The output tail of the job's last completion or failure, when it carried one. Added
    /// without a projection version bump: every record stored before it was derived from events
    /// that had no tail, so `None` is what a rebuild would store for them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// Encodes a stored value with its version byte.
pub fn encode_versioned<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut bytes = vec![version];
    // Plain data of strings, numbers and maps always serializes.
    rmp_serde::encode::write_named(&mut bytes, value).expect("projection values always serialize");
    bytes
}

/// Decodes a stored value, checking its version byte.
pub fn decode_versioned<T: for<'de> Deserialize<'de>>(
    version: u8,
    bytes: &[u8],
) -> Result<T, String> {
    match bytes.split_first() {
        Some((&found, rest)) if found == version => {
            rmp_serde::from_slice(rest).map_err(|error| error.to_string())
        }
        Some((&found, _)) => Err(format!("stored value version {found}, expected {version}")),
        None => Err("empty stored value".into()),
    }
}
