//! Operations endpoints: health, Prometheus metrics, projection digests.

use super::error::ApiError;
use super::{ApiResult, AppState};
use agentd_schemas::api::HealthResponse;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

#[utoipa::path(
    get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "The daemon is up", body = agentd_schemas::api::HealthResponse))
)]
pub async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        durable_lsn: state.writer.durable_lsn(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Digests of the live projections after they caught up with the durable log; equal to what
/// `agentd rebuild` prints for the same log.
#[utoipa::path(
    get, path = "/v1/admin/digest", tag = "ops",
    responses((status = 200, description = "`{lsn, projections: {jobs, datasets, agent_state, trajectories}}`: digests of the projections, equal to `agentd rebuild`'s", body = Object))
)]
pub async fn digest(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state.settle_reads().await;
    let projections = state.projections.clone();
    let domain = state.domain.projections.clone();
    let lsn = state.applied.applied_lsn();
    let (jobs, domain) = tokio::task::spawn_blocking(move || {
        projections.digest().map(|jobs| (jobs, domain.digests()))
    })
    .await
    .map_err(|error| ApiError::internal("computing digests", error))?
    .map_err(|error| ApiError::internal("computing digests", error))?;
    Ok(Json(json!({
        "lsn": lsn.0,
        "projections": {
            "jobs": jobs,
            "datasets": domain.datasets,
            "agent_state": domain.agent_state,
            "trajectories": domain.trajectories,
        }
    })))
}
