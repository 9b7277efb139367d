//! The stable error codes of every error answer (`ErrorBody.code`), with the HTTP status each
//! is answered with. The daemon answers only these; clients match on them instead of on string
//! literals, and the Python client's list is tested against [`ErrorCode::ALL`].
//!
//! A code, once released, keeps its name and status; a new condition gets a new code.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$meta:meta])* $variant:ident = $name:literal, $status:literal;)+) => {
        /// A stable error code; see the module documentation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$meta])* $variant,)+
        }

        impl ErrorCode {
            /// Every code, in the order of their statuses.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                }
            }

            /// The HTTP status an answer with this code has.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }

            /// The code of a wire name; `None` for a code this build does not know (a newer
            /// daemon's).
            pub fn parse(name: &str) -> Option<ErrorCode> {
                match name {
                    $($name => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// Not an error: an export or build still running near the request timeout (202), in the
    /// error body's shape; ask again.
    Running = "running", 202;
    /// The body is not JSON, or not of the route's shape.
    InvalidJson = "invalid_json", 400;
    /// No valid bearer token.
    Unauthorized = "unauthorized", 401;
    /// The token's role may not do this.
    Forbidden = "forbidden", 403;
    NotFound = "not_found", 404;
    MethodNotAllowed = "method_not_allowed", 405;
    /// A write sent to a read replica (`agentd replica`); the message names the primary.
    ReadOnlyReplica = "read_only_replica", 405;
    /// The lease expired or was replaced: the attempt must stop.
    LeaseLost = "lease_lost", 409;
    /// The job is not in a state that allows this (cancel a finished job).
    InvalidState = "invalid_state", 409;
    /// It exists already with other content, or contradicts a recorded fact.
    Conflict = "conflict", 409;
    BodyTooLarge = "body_too_large", 413;
    /// A `Range` that starts past the end of the file.
    RangeNotSatisfiable = "range_not_satisfiable", 416;
    PayloadTooLarge = "payload_too_large", 413;
    InvalidRequest = "invalid_request", 422;
    BatchTooLarge = "batch_too_large", 422;
    TooManyTags = "too_many_tags", 422;
    TooManyItems = "too_many_items", 422;
    StringTooLong = "string_too_long", 422;
    TooManyWaiters = "too_many_waiters", 429;
    /// The export runner's queue is full.
    Busy = "busy", 429;
    Internal = "internal", 500;
    ExportFailed = "export_failed", 500;
    /// A read replica could not reach the primary to record an export or build it wrote (or
    /// the primary's answer was not agentd's); nothing was recorded, the files may be in the
    /// store. Retry.
    PrimaryUnavailable = "primary_unavailable", 502;
    /// The request ran past the request timeout (or the projections lag behind it).
    Timeout = "timeout", 503;
    Unavailable = "unavailable", 503;
    /// The domain projections (datasets, agent state, rollouts, trajectories) are still
    /// loading from the log after a restart; the job API already serves. Retry shortly.
    Loading = "loading", 503;
    ShuttingDown = "shutting_down", 503;
    /// The log's disk is full: nothing was written.
    DiskFull = "disk_full", 507;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serialize_as_their_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(code == &ErrorCode::Running || (400..600).contains(&code.status()));
        }
        assert_eq!(ErrorCode::parse("from_the_future"), None);
    }
}
