//! Facts about a recorded step: its sandbox result and its reward, each recorded once. The four
//! routes (task or rollout, sandbox result or reward) share one path, [`record_fact`]; what
//! differs is how a request is checked and turned into its command ([`StepFact`]).

use super::super::{
    check_bytes, check_chars, check_task_id, decide_recorded, COMPONENT_NAME_CHARS_MAX,
    DIFF_BYTES_MAX, OUTPUT_BYTES_MAX, REWARD_ABS_MAX, REWARD_COMPONENTS_MAX,
};
use crate::domain::decide::{DomainCommand, Target};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::{ApiResult, AppState, SharedState};
use agentd_schemas::domain_api::{RewardRequest, SandboxResultRequest, StepFactResponse};
use agentd_schemas::events::{RewardRecorded, SandboxResultRecorded};
use agentd_schemas::ErrorCode;
use agentd_schemas::RolloutId;
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;

/// `POST /v1/tasks/{task_id}/steps/{step}/sandbox`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/sandbox", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::SandboxResultRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_sandbox(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path((task_id, step)): Path<(String, String)>,
    ApiJson(request): ApiJson<SandboxResultRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    check_task_id(&task_id)?;
    record_fact(&state, caller, Target::Task(task_id), &step, request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps/{step}/sandbox`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps/{step}/sandbox", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::SandboxResultRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such rollout or step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_sandbox(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path((rollout_id, step)): Path<(RolloutId, String)>,
    ApiJson(request): ApiJson<SandboxResultRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    record_fact(&state, caller, Target::Rollout(rollout_id), &step, request).await
}

/// `POST /v1/tasks/{task_id}/steps/{step}/reward`.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps/{step}/reward", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::RewardRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_reward(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path((task_id, step)): Path<(String, String)>,
    ApiJson(request): ApiJson<RewardRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    check_task_id(&task_id)?;
    record_fact(&state, caller, Target::Task(task_id), &step, request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps/{step}/reward`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps/{step}/reward", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`"), ("step" = u32, Path, description = "Step index")),
    request_body = agentd_schemas::domain_api::RewardRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::StepFactResponse),
        (status = 404, description = "`not_found`: no such rollout or step", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_reward(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path((rollout_id, step)): Path<(RolloutId, String)>,
    ApiJson(request): ApiJson<RewardRequest>,
) -> ApiResult<Json<StepFactResponse>> {
    record_fact(&state, caller, Target::Rollout(rollout_id), &step, request).await
}

/// A request that records one fact about a step.
trait StepFact {
    /// Checks the request's bounds and turns it into the command that records it at `step`.
    fn command(self, target: Target, step: u32) -> Result<DomainCommand, ApiError>;
}

/// Parses the step index, checks the request, has the sequencer decide it and answers once it
/// is applied.
async fn record_fact(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    step: &str,
    request: impl StepFact,
) -> ApiResult<Json<StepFactResponse>> {
    let step = parse_step(step)?;
    let command = request.command(target, step)?;
    let (lsn, task_id, rollout_id) =
        decide_recorded(state, caller, command, "recording a trajectory fact").await?;
    Ok(Json(StepFactResponse {
        task_id,
        rollout_id,
        step,
        lsn,
    }))
}

impl StepFact for SandboxResultRequest {
    fn command(self, target: Target, step: u32) -> Result<DomainCommand, ApiError> {
        let diff = self.diff.unwrap_or_default();
        let stdout = self.stdout.unwrap_or_default();
        let stderr = self.stderr.unwrap_or_default();
        check_bytes("diff", &diff, DIFF_BYTES_MAX)?;
        check_bytes("stdout", &stdout, OUTPUT_BYTES_MAX)?;
        check_bytes("stderr", &stderr, OUTPUT_BYTES_MAX)?;
        let result = SandboxResultRecorded {
            task_id: String::new(),
            rollout_id: None,
            step,
            lease_id: self.lease_id,
            exit_code: self.exit_code,
            outcome: self.outcome,
            diff,
            stdout,
            stderr,
            tests_passed: self.tests_passed,
            tests_failed: self.tests_failed,
            duration_ms: self.duration_ms,
            peak_rss_bytes: self.peak_rss_bytes,
        };
        Ok(DomainCommand::RecordSandbox {
            target,
            result: Box::new(result),
        })
    }
}

impl StepFact for RewardRequest {
    fn command(self, target: Target, step: u32) -> Result<DomainCommand, ApiError> {
        check_reward(&self)?;
        // `+ 0.0` turns -0.0 into 0.0: the same reward, one representation in every sum and
        // export.
        let reward = RewardRecorded {
            task_id: String::new(),
            rollout_id: None,
            step,
            lease_id: self.lease_id,
            value: self.value + 0.0,
            verified: self.verified,
            components: self
                .components
                .into_iter()
                .map(|(name, value)| (name, value + 0.0))
                .collect(),
            source: self.source,
        };
        Ok(DomainCommand::RecordReward { target, reward })
    }
}

fn check_reward(request: &RewardRequest) -> Result<(), ApiError> {
    check_reward_number("value", request.value)?;
    if request.components.len() > REWARD_COMPONENTS_MAX {
        return Err(ApiError::over_limit(
            ErrorCode::TooManyItems,
            format!(
                "components: {} entries is over the limit of {REWARD_COMPONENTS_MAX}",
                request.components.len()
            ),
        ));
    }
    for (name, value) in &request.components {
        if name.trim().is_empty() {
            return Err(ApiError::invalid("components: names must not be blank"));
        }
        check_chars(
            &format!("components.{name}"),
            name,
            COMPONENT_NAME_CHARS_MAX,
        )?;
        check_reward_number(&format!("components.{name}"), *value)?;
    }
    Ok(())
}

/// A reward value or component: finite and within ±[`REWARD_ABS_MAX`], so the sums built from
/// many of them stay finite.
fn check_reward_number(field: &str, value: f64) -> Result<(), ApiError> {
    if value.is_finite() && value.abs() <= REWARD_ABS_MAX {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "{field}: must be a finite number from -{REWARD_ABS_MAX:e} to {REWARD_ABS_MAX:e}, got {value}"
    )))
}

fn parse_step(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(format!(
            "step: {text:?} is not a step index (0 to {})",
            u32::MAX
        ))
    })
}
