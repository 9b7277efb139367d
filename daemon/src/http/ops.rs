//! Operations endpoints: health, Prometheus metrics, projection digests.

use super::error::ApiError;
use super::{ApiResult, SharedState};
use crate::sequencer::{HoldForDigest, DIGEST_HOLD_MAX};
use agentd_schemas::api::{DigestResponse, HealthResponse, ProjectionDigests};
use agentd_schemas::ErrorCode;
use agentd_schemas::Lsn;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long `GET /v1/admin/digest` waits for the projector to reach the queue state's LSN
/// (well inside [`DIGEST_HOLD_MAX`], which also has to cover the digests).
const DIGEST_APPLY_WAIT: Duration = Duration::from_secs(5);

#[utoipa::path(
    get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "The daemon is up and its job API serves; `domain_loaded` is false while the domain projections still load after a start", body = agentd_schemas::api::HealthResponse))
)]
pub async fn health(State(state): State<SharedState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        durable_lsn: state.writer.durable_lsn(),
        version: env!("CARGO_PKG_VERSION").into(),
        domain_loaded: state.domain.projections.is_loaded(),
        replica: state
            .replica
            .as_ref()
            .map(|replica| replica.health(crate::clock::now_ms())),
    })
}

#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    let mut body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    // While the domain projections load after a restart, their counters are partial: the
    // histogram is left out rather than shown growing from zero.
    if state.metrics.is_some() && state.domain.projections.is_loaded() {
        // The guard is dropped at the end of the statement: the copy is taken under the read
        // lock, the text written after it.
        let rewards = state.domain.projections.trajectories().rewards().clone();
        crate::projection::domain::gauges::render_reward_histogram(&rewards, &mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Digests of the live queue state and projections, all at one LSN; equal to what
/// `agentd rebuild` prints for the same log. The sequencer answers its queue digest and LSN and
/// then holds every write while the projector reaches exactly that LSN and the projections are
/// digested, so the answer is a consistent snapshot even under load (writes pause for it).
#[utoipa::path(
    get, path = "/v1/admin/digest", tag = "ops",
    responses(
        (status = 200, description = "Digests of every projection at one LSN, equal to `agentd rebuild`'s for the same log. Writes pause while they are computed (a fraction of a second per 100,000 jobs), so only admins may ask", body = agentd_schemas::api::DigestResponse),
        (status = 503, description = "`timeout`: the projections did not catch up with the log in time; `loading`: the domain projections are still loading after a restart; retry", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn digest(State(state): State<SharedState>) -> ApiResult<Json<DigestResponse>> {
    if !state
        .domain
        .projections
        .wait_loaded(DIGEST_APPLY_WAIT)
        .await
    {
        return Err(ApiError::new(
            ErrorCode::Loading,
            "the domain projections are still loading from the log after a restart; retry shortly",
        ));
    }
    let (release, released) = oneshot::channel::<()>();
    let queue = state
        .sequencer
        .call(HoldForDigest { release: released }, None)
        .await?;
    // Nothing is appended past `queue.lsn` until `release` is sent or dropped.
    if !state.applied.wait_for(queue.lsn, DIGEST_APPLY_WAIT).await {
        return Err(lagging(queue.lsn));
    }
    let projections = state.projections.clone();
    let domain = state.domain.projections.clone();
    let (jobs_lsn, jobs, domain, settled_lsn) = tokio::task::spawn_blocking(move || {
        let (jobs_lsn, jobs) = projections.digest_with_applied_lsn()?;
        let domain = domain.digests();
        // The projector commits a batch to redb before it applies the batch to the domain
        // projections, so a redb LSN unchanged after the domain digests proves that they
        // reflect that LSN too (in case the hold ran out).
        let settled_lsn = projections.applied_lsn()?;
        Ok::<_, crate::projection::ProjectionError>((jobs_lsn, jobs, domain, settled_lsn))
    })
    .await
    .map_err(|error| ApiError::internal("computing digests", error))?
    .map_err(|error| ApiError::internal("computing digests", error))?;
    let _ignored_if_the_hold_ran_out = release.send(());
    if jobs_lsn != queue.lsn || settled_lsn != queue.lsn {
        return Err(lagging(queue.lsn));
    }
    Ok(Json(DigestResponse {
        lsn: queue.lsn,
        projections: ProjectionDigests {
            queue: queue.digest,
            jobs,
            datasets: domain.datasets,
            agent_state: domain.agent_state,
            trajectories: domain.trajectories,
        },
    }))
}

fn lagging(lsn: Lsn) -> ApiError {
    ApiError::new(
        ErrorCode::Timeout,
        format!(
            "the projections were not at lsn {lsn} within {} ms (writes are held for at most {} \
             ms); retry",
            DIGEST_APPLY_WAIT.as_millis(),
            DIGEST_HOLD_MAX.as_millis()
        ),
    )
}
