//! The one error type every handler returns: an HTTP status, a stable machine-readable `code`
//! and a human message. Internal details are logged, never sent.

use crate::log::AppendError;
use crate::queue::DecideError;
use crate::sequencer::SequencerError;
use agentd_schemas::api::ErrorBody;
use agentd_schemas::ErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// An answer with `code` and the status that code always has.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// 422 for a count or length over a limit; `code` names which (`batch_too_large`,
    /// `too_many_tags`, `too_many_items`, `string_too_long`) and the message names the field
    /// and the limit.
    pub fn over_limit(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// A failure whose details must not reach the client: logged with `context`.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {error}");
        ApiError::new(
            ErrorCode::Internal,
            format!("{context}; see the daemon log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
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
                ApiError::new(ErrorCode::PayloadTooLarge, message)
            }
            DecideError::NotFound { .. } | DecideError::NotFoundHint { .. } => {
                ApiError::not_found(message)
            }
            DecideError::LeaseLost { .. } => ApiError::new(ErrorCode::LeaseLost, message),
            DecideError::InvalidState { .. } => ApiError::new(ErrorCode::InvalidState, message),
            DecideError::Conflict { .. } => ApiError::new(ErrorCode::Conflict, message),
        }
    }
}

impl From<SequencerError> for ApiError {
    fn from(error: SequencerError) -> Self {
        match error {
            SequencerError::Rejected(error) => error.into(),
            SequencerError::Append(AppendError::DiskFull) => ApiError::new(ErrorCode::DiskFull,
                "the log's disk is full; nothing was written. Free space and retry; reads keep working",
            ),
            SequencerError::Append(AppendError::FrameTooLarge { bytes, max }) => ApiError::new(ErrorCode::PayloadTooLarge,
                format!("the request encodes to {bytes} bytes, over the log's frame limit of {max} bytes"),
            ),
            SequencerError::Append(error) => {
                tracing::warn!("append not durable: {error}");
                ApiError::new(ErrorCode::Unavailable, "the write was not made durable; retry")
            }
            SequencerError::TooManyWaiters(_) => ApiError::new(ErrorCode::TooManyWaiters, error.to_string()),
            SequencerError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, error.to_string()),
            SequencerError::ReadOnlyReplica => ApiError::new(ErrorCode::ReadOnlyReplica, error.to_string()),
            SequencerError::AdoptOnPrimary | SequencerError::AdoptOutOfSequence { .. } => {
                ApiError::internal("archived records not adopted", error)
            }
        }
    }
}
