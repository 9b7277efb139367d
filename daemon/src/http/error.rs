//! The one error type every handler returns: an HTTP status, a stable machine-readable `code`
//! and a human message. Internal details are logged, never sent.

use crate::log::AppendError;
use crate::queue::DecideError;
use crate::sequencer::SequencerError;
use agentd_schemas::api::ErrorBody;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 422 for a count or length over a limit; `code` names which (`batch_too_large`,
    /// `too_many_tags`, `too_many_items`, `string_too_long`) and the message names the field
    /// and the limit.
    pub fn over_limit(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure whose details must not reach the client: logged with `context`.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; see the daemon log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                code: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<DecideError> for ApiError {
    fn from(error: DecideError) -> Self {
        let message = error.to_string();
        match error {
            DecideError::Invalid { .. } => ApiError::invalid(message),
            DecideError::OverLimit { limit, .. } => ApiError::over_limit(limit.code(), message),
            DecideError::PayloadTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            DecideError::NotFound { .. } => ApiError::not_found(message),
            DecideError::LeaseLost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "lease_lost", message)
            }
            DecideError::InvalidState { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            DecideError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
        }
    }
}

impl From<SequencerError> for ApiError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Rejected(error) => error.into(),
            SequencerError::Append(AppendError::DiskFull) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "disk_full",
                "the log's disk is full; nothing was written. Free space and retry; reads keep working",
            ),
            SequencerError::Append(AppendError::FrameTooLarge { bytes, max }) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request encodes to {bytes} bytes, over the log's frame limit of {max} bytes"),
            ),
            SequencerError::Append(error) => {
                tracing::warn!("append not durable: {error}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the write was not made durable; retry")
            }
            SequencerError::TooManyWaiters(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_waiters", error.to_string()),
            SequencerError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", error.to_string()),
        }
    }
}
