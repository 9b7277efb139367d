//! `/v1/queues`: depth by state and the paused flag; pause and resume.

use crate::http::auth_layer::CallerExt;
use super::{ApiResult, AppState};
use crate::sequencer::Command;
use agentd_schemas::api::{QueueChangeResponse, QueueListResponse};
use axum::extract::{Path, State};
use axum::Json;

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<QueueListResponse>> {
    let queues = state
        .sequencer
        .call(|reply| Command::Queues { reply })
        .await?;
    Ok(Json(QueueListResponse { queues }))
}

pub async fn pause(
    State(state): State<AppState>,
    caller: CallerExt,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueueChangeResponse>> {
    Ok(Json(
        state
            .sequencer
            .call(|reply| Command::SetPaused {
                queue,
                paused: true,
                actor: caller.actor(),
                reply,
            })
            .await?,
    ))
}

pub async fn resume(
    State(state): State<AppState>,
    caller: CallerExt,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueueChangeResponse>> {
    Ok(Json(
        state
            .sequencer
            .call(|reply| Command::SetPaused {
                queue,
                paused: false,
                actor: caller.actor(),
                reply,
            })
            .await?,
    ))
}
