//! `GET /v1/settings`: the training settings in force, as the log recorded them. Workers read
//! it to judge with the daemon's `[rewards]` (docs/astgrep_verify.md), so it needs only the
//! permission to read tasks, which worker tokens have.

use super::settle_domain_reads;
use crate::http::{ApiResult, SharedState};
use agentd_schemas::domain_api::SettingsResponse;
use axum::extract::State;
use axum::Json;

/// `GET /v1/settings`.
#[utoipa::path(
    get, path = "/v1/settings", tag = "settings",
    responses((status = 200, description = "The training settings last recorded in the log", body = SettingsResponse))
)]
pub async fn show(State(state): State<SharedState>) -> ApiResult<Json<SettingsResponse>> {
    settle_domain_reads(&state).await?;
    let latest = state.domain.projections.training().latest();
    Ok(Json(SettingsResponse {
        training_lsn: latest.as_ref().map(|(lsn, _)| *lsn),
        training: latest.map(|(_, settings)| (*settings).clone()),
    }))
}
