//! A read replica answers every write with 405 `read_only_replica`, naming the primary, before
//! any handler runs: nothing a replica serves can change its log.

use super::error::ApiError;
use crate::replica::ReplicaStatus;
use agentd_schemas::ErrorCode;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Whether `method` may change state: the API's writes are POST, PUT, PATCH and DELETE.
pub fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The middleware: writes are refused, everything else goes on.
pub async fn refuse_writes(replica: Arc<ReplicaStatus>, request: Request, next: Next) -> Response {
    if !is_write(request.method()) {
        return next.run(request).await;
    }
    ApiError::new(
        ErrorCode::ReadOnlyReplica,
        format!(
            "this agentd is a read-only replica of the log archived at {}; send {} {} to the primary: {}",
            replica.archive_url,
            request.method(),
            request.uri().path(),
            replica.primary
        ),
    )
    .into_response()
}
