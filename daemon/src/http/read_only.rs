//! A read replica answers every write with 405 `read_only_replica`, naming the primary, before
//! any handler runs: nothing a replica serves can change its log. The exception, on a replica
//! started with an http(s) `--primary`: running an export or a dataset build, which writes files
//! and has the primary record them (`export::primary_link`); the replica's log is untouched.

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

/// The routes a replica with an http(s) `--primary` serves although they are writes.
fn runs_on_replica(method: &Method, path: &str) -> bool {
    *method == Method::POST && matches!(path, "/v1/exports" | "/v1/datasets/builds")
}

/// The middleware: writes are refused, everything else goes on.
pub async fn refuse_writes(replica: Arc<ReplicaStatus>, request: Request, next: Next) -> Response {
    let runs_here = replica.runs_exports && runs_on_replica(request.method(), request.uri().path());
    if !is_write(request.method()) || runs_here {
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
