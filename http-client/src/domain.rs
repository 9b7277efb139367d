//! Typed client methods for the domain routes: datasets, per-task agent state, trajectories,
//! rollouts and groups. Task ids, group names, sources and versions are percent-encoded into
//! the path, so any text the daemon accepts (a source such as `github/commitpack`) round-trips.

use crate::{percent_encode, Client, ClientError, REQUEST_TIMEOUT};
use agentd_schemas::domain_api::{
    CreateRolloutRequest, CreateRolloutResponse, DatasetListResponse, DatasetStatsResponse,
    GroupResponse, IngestRecordsRequest, IngestRecordsResponse, RecordStepRequest,
    RecordStepResponse, RegisterDatasetResponse, RewardRequest, RolloutView, SandboxResultRequest,
    StateHistoryResponse, StateUpdateRequest, StateUpdateResponse, StepFactResponse,
    TaskRolloutsResponse, TaskStateView, TrajectoryResponse, TrajectoryStatsResponse,
};
use agentd_schemas::{Lsn, RolloutId};
use serde::Serialize;

impl Client {
    /// `POST /v1/datasets` with the dataset's `_meta.json` as read from disk (the daemon
    /// validates it field by field).
    pub async fn register_dataset(
        &self,
        meta: &serde_json::Value,
    ) -> Result<RegisterDatasetResponse, ClientError> {
        self.post("/v1/datasets", meta).await
    }

    /// `POST /v1/datasets/{source}/{version}/records`: one batch.
    pub async fn ingest_records(
        &self,
        source: &str,
        version: &str,
        request: &IngestRecordsRequest,
    ) -> Result<IngestRecordsResponse, ClientError> {
        let path = format!(
            "/v1/datasets/{}/{}/records",
            percent_encode(source),
            percent_encode(version)
        );
        self.post(&path, request).await
    }

    /// `GET /v1/datasets`.
    pub async fn datasets(&self) -> Result<DatasetListResponse, ClientError> {
        self.get("/v1/datasets").await
    }

    /// `GET /v1/datasets/stats`.
    pub async fn dataset_stats(&self) -> Result<DatasetStatsResponse, ClientError> {
        self.get("/v1/datasets/stats").await
    }

    /// `GET /v1/tasks/{task_id}/state` (the empty state, `lsn` 0, before any update).
    pub async fn task_state(&self, task_id: &str) -> Result<TaskStateView, ClientError> {
        self.get(&task_path(task_id, "state")).await
    }

    /// `POST /v1/tasks/{task_id}/state`.
    pub async fn update_task_state(
        &self,
        task_id: &str,
        request: &StateUpdateRequest,
    ) -> Result<StateUpdateResponse, ClientError> {
        self.post(&task_path(task_id, "state"), request).await
    }

    /// `GET /v1/tasks/{task_id}/state/history`: one page of updates after `after`.
    pub async fn task_state_history(
        &self,
        task_id: &str,
        after: Option<Lsn>,
    ) -> Result<StateHistoryResponse, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u64>,
        }
        let query = Query {
            after: after.map(|lsn| lsn.0),
        };
        self.get_query(
            &task_path(task_id, "state/history"),
            &query,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `POST /v1/tasks/{task_id}/steps`.
    pub async fn record_step(
        &self,
        task_id: &str,
        request: &RecordStepRequest,
    ) -> Result<RecordStepResponse, ClientError> {
        self.post(&task_path(task_id, "steps"), request).await
    }

    /// `POST /v1/tasks/{task_id}/steps/{step}/sandbox`.
    pub async fn record_sandbox_result(
        &self,
        task_id: &str,
        step: u32,
        request: &SandboxResultRequest,
    ) -> Result<StepFactResponse, ClientError> {
        self.post(
            &task_path(task_id, &format!("steps/{step}/sandbox")),
            request,
        )
        .await
    }

    /// `POST /v1/tasks/{task_id}/steps/{step}/reward`.
    pub async fn record_reward(
        &self,
        task_id: &str,
        step: u32,
        request: &RewardRequest,
    ) -> Result<StepFactResponse, ClientError> {
        self.post(
            &task_path(task_id, &format!("steps/{step}/reward")),
            request,
        )
        .await
    }

    /// `GET /v1/tasks/{task_id}/trajectory`: one page of steps after step `after`.
    pub async fn trajectory(
        &self,
        task_id: &str,
        after: Option<u32>,
    ) -> Result<TrajectoryResponse, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u32>,
        }
        self.get_query(
            &task_path(task_id, "trajectory"),
            &Query { after },
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/trajectories/stats`.
    pub async fn trajectory_stats(&self) -> Result<TrajectoryStatsResponse, ClientError> {
        self.get("/v1/trajectories/stats").await
    }

    /// `POST /v1/tasks/{task_id}/rollouts`: a new rollout, or (`created: false`) the one the
    /// request's job already has.
    pub async fn create_rollout(
        &self,
        task_id: &str,
        request: &CreateRolloutRequest,
    ) -> Result<CreateRolloutResponse, ClientError> {
        self.post(&task_path(task_id, "rollouts"), request).await
    }

    /// `GET /v1/tasks/{task_id}/rollouts`: the default rollout (when it has steps), then the
    /// task's rollouts in creation order.
    pub async fn task_rollouts(&self, task_id: &str) -> Result<TaskRolloutsResponse, ClientError> {
        self.get(&task_path(task_id, "rollouts")).await
    }

    /// `GET /v1/rollouts/{rollout_id}?after=&limit=`: the rollout and one page of its steps
    /// after step `after` (`limit`: the daemon's default page when `None`).
    pub async fn rollout(
        &self,
        rollout_id: RolloutId,
        after: Option<u32>,
        limit: Option<usize>,
    ) -> Result<RolloutView, ClientError> {
        #[derive(Serialize)]
        struct Query {
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<usize>,
        }
        self.get_query(
            &rollout_path(rollout_id, ""),
            &Query { after, limit },
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /v1/groups/{group}`: the group's rollouts with mean, sample std and advantages.
    pub async fn group(&self, group: &str) -> Result<GroupResponse, ClientError> {
        self.get(&format!("/v1/groups/{}", percent_encode(group)))
            .await
    }

    /// `POST /v1/rollouts/{rollout_id}/steps`.
    pub async fn record_rollout_step(
        &self,
        rollout_id: RolloutId,
        request: &RecordStepRequest,
    ) -> Result<RecordStepResponse, ClientError> {
        self.post(&rollout_path(rollout_id, "/steps"), request)
            .await
    }

    /// `POST /v1/rollouts/{rollout_id}/steps/{step}/sandbox`.
    pub async fn record_rollout_sandbox_result(
        &self,
        rollout_id: RolloutId,
        step: u32,
        request: &SandboxResultRequest,
    ) -> Result<StepFactResponse, ClientError> {
        self.post(
            &rollout_path(rollout_id, &format!("/steps/{step}/sandbox")),
            request,
        )
        .await
    }

    /// `POST /v1/rollouts/{rollout_id}/steps/{step}/reward`.
    pub async fn record_rollout_reward(
        &self,
        rollout_id: RolloutId,
        step: u32,
        request: &RewardRequest,
    ) -> Result<StepFactResponse, ClientError> {
        self.post(
            &rollout_path(rollout_id, &format!("/steps/{step}/reward")),
            request,
        )
        .await
    }

    /// `GET /v1/rollouts/{rollout_id}/state`: the rollout's agent state.
    pub async fn rollout_state(&self, rollout_id: RolloutId) -> Result<TaskStateView, ClientError> {
        self.get(&rollout_path(rollout_id, "/state")).await
    }

    /// `POST /v1/rollouts/{rollout_id}/state`.
    pub async fn update_rollout_state(
        &self,
        rollout_id: RolloutId,
        request: &StateUpdateRequest,
    ) -> Result<StateUpdateResponse, ClientError> {
        self.post(&rollout_path(rollout_id, "/state"), request)
            .await
    }
}

/// `/v1/tasks/{task_id}/{rest}` with the task id percent-encoded.
fn task_path(task_id: &str, rest: &str) -> String {
    format!("/v1/tasks/{}/{rest}", percent_encode(task_id))
}

/// `/v1/rollouts/{rollout_id}{rest}` (`rest` empty or starting with `/`; a rollout id is
/// `ro_<number>` and needs no encoding).
fn rollout_path(rollout_id: RolloutId, rest: &str) -> String {
    format!("/v1/rollouts/{rollout_id}{rest}")
}
