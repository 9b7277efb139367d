//! Recording a step: from its own fields or from the model's raw output, with its optional state
//! update merged in the same log record.

use super::super::state::{check_update, state_event, update_answer};
use super::super::{
    check_bytes, check_name, check_sampling, check_task_id, decide_recorded, ACTION_TEXT_BYTES_MAX,
    PROMPT_BYTES_MAX, THINK_BYTES_MAX,
};
use crate::domain::decide::{DomainCommand, Target};
use crate::domain::output_format::{self, FormatError, ParsedOutput};
use crate::http::auth_layer::CallerExt;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::{ApiResult, AppState, SharedState};
use agentd_schemas::domain_api::{
    ActionRequest, RecordStepRequest, RecordStepResponse, StateUpdateFields,
};
use agentd_schemas::events::{
    Action, AgentState, OutputFormatError, RewardRecorded, RewardSource, StepRecorded,
};
use agentd_schemas::{LeaseId, RolloutId};
use axum::extract::State;
// Path segments with the API's error shape (bad percent-encoding is a JSON 422, not plain text).
use crate::http::extract::ApiPath as Path;
use axum::Json;

/// `POST /v1/tasks/{task_id}/steps`: a step of the task's default rollout.
#[utoipa::path(
    post, path = "/v1/tasks/{task_id}/steps", tag = "trajectories",
    params(("task_id" = agentd_schemas::domain_api::TaskIdText, Path, description = "Task id (1 to 256 characters, no control characters)")),
    request_body = agentd_schemas::domain_api::RecordStepRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::RecordStepResponse),
        (status = 404, description = "`not_found`: the job or lease does not exist", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (step already recorded) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_step(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(task_id): Path<String>,
    ApiJson(request): ApiJson<RecordStepRequest>,
) -> ApiResult<Json<RecordStepResponse>> {
    check_task_id(&task_id)?;
    record_step_into(&state, caller, Target::Task(task_id), request).await
}

/// `POST /v1/rollouts/{rollout_id}/steps`.
#[utoipa::path(
    post, path = "/v1/rollouts/{rollout_id}/steps", tag = "rollouts",
    params(("rollout_id" = agentd_schemas::RolloutId, Path, description = "The rollout, `ro_<n>`")),
    request_body = agentd_schemas::domain_api::RecordStepRequest,
    responses(
        (status = 200, description = "Recorded", body = agentd_schemas::domain_api::RecordStepResponse),
        (status = 404, description = "`not_found`: the rollout, job or lease does not exist", body = agentd_schemas::api::ErrorBody),
        (status = 409, description = "`conflict` (step already recorded in this rollout) or `lease_lost`", body = agentd_schemas::api::ErrorBody),
        (status = 422, description = "`invalid_request` or `string_too_long`", body = agentd_schemas::api::ErrorBody),
    )
)]
pub async fn record_rollout_step(
    State(state): State<SharedState>,
    caller: CallerExt,
    Path(rollout_id): Path<RolloutId>,
    ApiJson(request): ApiJson<RecordStepRequest>,
) -> ApiResult<Json<RecordStepResponse>> {
    record_step_into(&state, caller, Target::Rollout(rollout_id), request).await
}

async fn record_step_into(
    state: &AppState,
    caller: CallerExt,
    target: Target,
    mut request: RecordStepRequest,
) -> ApiResult<Json<RecordStepResponse>> {
    check_step(&request)?;
    let (step, lease_id, generation_ms) = (request.step, request.lease_id, request.generation_ms);
    let output = StepOutput::take(&mut request)?;
    let format_error = output.format_error.clone();
    let state_update = output
        .state_update
        .clone()
        .map(StateUpdateFields::into_parts);
    let event = step_event(request, output);
    // The update is merged in the same record, after the step: the step keeps the state before.
    let update_event =
        state_update.map(|(update, forget)| state_event(&state.domain, update, forget, lease_id));
    let with_update = update_event.is_some();
    let command = DomainCommand::RecordStep {
        target,
        step: Box::new(event),
        state_update: update_event,
        format_reward: format_error.as_ref().map(|_| format_reward(step, lease_id)),
    };
    let (lsn, task_id, rollout_id) =
        decide_recorded(state, caller, command, "recording a trajectory fact").await?;
    if let Some(ms) = generation_ms {
        metrics::histogram!("agentd_actor_step_seconds").record(ms as f64 / 1000.0);
    }
    let merged = match with_update {
        false => None,
        true => {
            let states = state.domain.projections.agent_states();
            Some(update_answer(
                &states,
                &task_id,
                rollout_id,
                lsn,
                &state.domain,
            )?)
        }
    };
    Ok(Json(RecordStepResponse {
        task_id,
        rollout_id,
        step,
        lsn,
        state: merged,
        format_error,
    }))
}

/// The step's event, its action and state update as [`StepOutput`] found them. The sequencer
/// fills in the task (from the rollout), the rollout, and the job, attempt and worker of a held
/// lease.
fn step_event(request: RecordStepRequest, output: StepOutput) -> StepRecorded {
    StepRecorded {
        task_id: String::new(),
        rollout_id: None,
        step: request.step,
        job_id: request.job_id,
        lease_id: request.lease_id,
        attempt: None,
        worker_id: None,
        model: request.model,
        policy_version: request.policy_version,
        sampling: request.sampling.unwrap_or_default().into(),
        prompt_tokens: request.prompt_tokens,
        completion_tokens: request.completion_tokens,
        prompt: request.prompt,
        think: output.think,
        action: output.action,
        state_update: output.state_update.map(AgentState::from),
        raw_output: request.raw_output,
        format_error: output.format_error,
        generation_ms: request.generation_ms,
    }
}

/// An output that does not parse is a negative: rewarded 0 in the same record, no sandbox.
fn format_reward(step: u32, lease_id: Option<LeaseId>) -> RewardRecorded {
    RewardRecorded {
        task_id: String::new(),
        rollout_id: None,
        step,
        lease_id,
        value: 0.0,
        verified: false,
        components: [("format".to_owned(), 0.0)].into(),
        source: RewardSource::Rule,
    }
}

/// A step's think, action and state update, and why its raw output did not parse.
struct StepOutput {
    think: Option<String>,
    action: Option<Action>,
    state_update: Option<StateUpdateFields>,
    format_error: Option<OutputFormatError>,
}

impl StepOutput {
    /// Takes them out of the request's own fields, or parses its `raw_output`.
    fn take(request: &mut RecordStepRequest) -> Result<StepOutput, ApiError> {
        Ok(match ModelOutput::of(request)? {
            ModelOutput::Fields => StepOutput {
                think: request.think.take(),
                action: request.action.take().map(Action::from),
                state_update: request.state_update.take(),
                format_error: None,
            },
            ModelOutput::Parsed(parsed) => StepOutput {
                think: parsed.think,
                action: Some(Action::from(parsed.action)),
                state_update: parsed.state_update,
                format_error: None,
            },
            ModelOutput::Unparsed(error) => StepOutput {
                think: None,
                action: None,
                state_update: None,
                format_error: Some(OutputFormatError {
                    code: error.code.to_owned(),
                    message: error.message,
                }),
            },
        })
    }
}

/// Where a step's think, action and state update come from.
enum ModelOutput {
    /// The request's own fields.
    Fields,
    /// Its `raw_output`, parsed.
    Parsed(ParsedOutput),
    /// Its `raw_output`, which does not parse.
    Unparsed(FormatError),
}

impl ModelOutput {
    fn of(request: &RecordStepRequest) -> Result<ModelOutput, ApiError> {
        let Some(raw) = &request.raw_output else {
            if request.action.is_none() {
                return Err(ApiError::invalid(
                    "action: required unless raw_output (the model's output) is given",
                ));
            }
            return Ok(ModelOutput::Fields);
        };
        if request.action.is_some() || request.think.is_some() || request.state_update.is_some() {
            return Err(ApiError::invalid(
                "raw_output: give it alone; the daemon parses think, action and state_update out of it",
            ));
        }
        // Longer outputs are not stored (the parser would refuse them as `too_large` anyway).
        check_bytes("raw_output", raw, output_format::OUTPUT_BYTES_MAX)?;
        Ok(match output_format::parse(raw) {
            Ok(parsed) => ModelOutput::Parsed(parsed),
            Err(error) => ModelOutput::Unparsed(error),
        })
    }
}

fn check_step(request: &RecordStepRequest) -> Result<(), ApiError> {
    check_name("model", &request.model)?;
    check_name("policy_version", &request.policy_version)?;
    if let Some(prompt) = &request.prompt {
        check_bytes("prompt", prompt, PROMPT_BYTES_MAX)?;
    }
    if let Some(think) = &request.think {
        check_bytes("think", think, THINK_BYTES_MAX)?;
    }
    if let Some(sampling) = &request.sampling {
        check_sampling(sampling)?;
    }
    // A `raw_output` step has no action here: the parser bounds the one it finds.
    let Some(action) = &request.action else {
        return Ok(());
    };
    check_action(action)?;
    if let Some(update) = &request.state_update {
        check_update("state_update.", update)?;
    }
    Ok(())
}

/// Names and texts of an action: not blank, within their bounds.
fn check_action(action: &ActionRequest) -> Result<(), ApiError> {
    match action {
        ActionRequest::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            check_name("action.language", language)?;
            if pattern.trim().is_empty() {
                return Err(ApiError::invalid("action.pattern: must not be blank"));
            }
            check_bytes("action.pattern", pattern, ACTION_TEXT_BYTES_MAX)?;
            check_bytes("action.rewrite", rewrite, ACTION_TEXT_BYTES_MAX)
        }
        ActionRequest::Rule { yaml } => {
            if yaml.trim().is_empty() {
                return Err(ApiError::invalid("action.yaml: must not be blank"));
            }
            check_bytes("action.yaml", yaml, ACTION_TEXT_BYTES_MAX)
        }
    }
}
