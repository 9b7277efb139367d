//! Rollouts and groups: creating a rollout (or resuming its job's), a rollout with a page of
//! its steps, the rollouts of a task, and a group with its GRPO statistics.

use super::rules::{GroupName, NonBlankName};
use super::trajectories::{SamplingRequest, TrajectoryStep};
use crate::events::{Sampling, StateFrom};
use crate::ids::{JobId, LeaseId, Lsn, RolloutId};
use serde::{Deserialize, Serialize};

/// `POST /v1/tasks/{task_id}/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutRequest {
    #[schema(value_type = NonBlankName)]
    pub model: String,
    #[schema(value_type = NonBlankName)]
    pub policy_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingRequest>,
    /// The set of rollouts sampled together for group scoring (1 to 128 characters, not
    /// starting with `ro_`); default: a new group of one, named after the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<GroupName>)]
    pub group: Option<String>,
    /// The episode job this rollout runs under; needs `lease_id`, a held lease of it (the lease
    /// alone names the job too). A job has at most one rollout: creating again under a lease of
    /// the same job (a retried attempt) answers the existing one, to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// Fences the creation (and names the job when `job_id` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<LeaseId>,
    /// `task` (default): start from the task's base agent state; `empty`: from nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_from: Option<StateFrom>,
}

/// Answer to `POST /v1/tasks/{task_id}/rollouts`: 201 when created, 200 when the job already
/// had a rollout (`created: false`; continue at `next_step`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateRolloutResponse {
    pub rollout_id: RolloutId,
    pub task_id: String,
    pub group: String,
    /// The record that created the rollout.
    pub lsn: Lsn,
    pub created: bool,
    /// Steps already recorded (0 for a new rollout).
    pub steps: u64,
    /// The step index to record next: one past the highest recorded, 0 for none.
    pub next_step: u32,
}

/// `GET /v1/rollouts/{rollout_id}`: the rollout and a page of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutView {
    pub rollout_id: RolloutId,
    pub task_id: String,
    pub group: String,
    pub model: String,
    pub policy_version: String,
    pub sampling: Sampling,
    pub job_id: Option<JobId>,
    pub lease_id: Option<LeaseId>,
    pub attempt: Option<u32>,
    pub worker_id: Option<String>,
    pub state_from: StateFrom,
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// Sum of the rollout's step rewards.
    pub reward: f64,
    pub steps: Vec<TrajectoryStep>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<u32>,
}

/// One rollout in a task's or a group's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutSummary {
    /// `null` for the task's default rollout (steps recorded through the task-level routes).
    pub rollout_id: Option<RolloutId>,
    pub task_id: String,
    pub group: Option<String>,
    pub model: String,
    pub policy_version: String,
    pub job_id: Option<JobId>,
    pub steps: u64,
    /// Steps with a reward.
    pub rewarded: u64,
    /// Sum of the step rewards (0 without any).
    pub reward: f64,
    /// In a group: `(reward - group mean) / group standard deviation`, 0 when that is 0; `null`
    /// for a rollout without a rewarded step yet (not scored) and for the default rollout.
    pub advantage: Option<f64>,
}

/// `GET /v1/tasks/{task_id}/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRolloutsResponse {
    pub task_id: String,
    /// The default rollout first (when it has steps), then rollouts in creation order.
    pub rollouts: Vec<RolloutSummary>,
}

/// `GET /v1/groups/{group}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupResponse {
    pub group: String,
    /// Mean of the scored rollouts' rewards (a rollout is scored once a step has a reward).
    pub mean: f64,
    /// Sample standard deviation (n - 1) of those rewards, as GRPO computes it; 0 for fewer than
    /// two.
    pub std: f64,
    /// Rollouts with at least one rewarded step; only they have an advantage.
    pub scored: u64,
    /// In creation order, each with its advantage.
    pub rollouts: Vec<RolloutSummary>,
}
