//! `/v1/queues`: depth by state and the paused flag; pause and resume.

use super::{ApiResult, SharedState};
use crate::http::auth_layer::CallerExt;
use crate::sequencer::{Queues, SetPaused};
use agentd_schemas::api::{QueueChangeResponse, QueueListResponse};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;

#[utoipa::path(
    get, path = "/v1/queues", tag = "queues",
    responses((status = 200, description = "Every queue with its depth per state", body = agentd_schemas::api::QueueListResponse))
)]
pub async fn list(State(state): State<SharedState>) -> ApiResult<Json<QueueListResponse>> {
    let queues = state.sequencer.call(Queues, None).await?;
    Ok(Json(QueueListResponse { queues }))
}

#[utoipa::path(
    post, path = "/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = agentd_schemas::api::SimpleName, Path, description = "Queue name")),
    responses(
        (status = 200, description = "Paused: no new leases from it", body = agentd_schemas::api::QueueChangeResponse),
        (status = 422, description = "`invalid_request` or `string_too_long`: bad queue name", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueueChangeResponse>> {
    Ok(Json(
        state
            .sequencer
            .call(
                SetPaused {
                    queue,
                    paused: true,
                },
                caller.actor(),
            )
            .await?,
    ))
}

#[utoipa::path(
    post, path = "/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = agentd_schemas::api::SimpleName, Path, description = "Queue name")),
    responses(
        (status = 200, description = "Resumed", body = agentd_schemas::api::QueueChangeResponse),
        (status = 422, description = "`invalid_request` or `string_too_long`: bad queue name", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueueChangeResponse>> {
    Ok(Json(
        state
            .sequencer
            .call(
                SetPaused {
                    queue,
                    paused: false,
                },
                caller.actor(),
            )
            .await?,
    ))
}
