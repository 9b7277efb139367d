//! Typed client methods for the domain routes: datasets, per-task agent state, trajectories.
//! Task ids, sources and versions are percent-encoded into the path, so any text the daemon
//! accepts (a source such as `github/commitpack`) round-trips.

use crate::http_client::{percent_encode, Client, ClientError, REQUEST_TIMEOUT};
use agentd_schemas::domain_api::{
    DatasetListResponse, DatasetStatsResponse, IngestRecordsRequest, IngestRecordsResponse,
    RecordStepRequest, RecordStepResponse, RegisterDatasetResponse, RewardRequest,
    SandboxResultRequest, StateHistoryResponse, StateUpdateRequest, StateUpdateResponse,
    StepFactResponse, TaskStateView, TrajectoryResponse, TrajectoryStatsResponse,
};
use agentd_schemas::Lsn;
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
}

/// `/v1/tasks/{task_id}/{rest}` with the task id percent-encoded.
fn task_path(task_id: &str, rest: &str) -> String {
    format!("/v1/tasks/{}/{rest}", percent_encode(task_id))
}
