//! Typed client methods for the job routes: submit, list, cancel and retry jobs, lease,
//! heartbeat, complete and fail them, pause and resume queues, read the event log; and for the
//! daemon's own routes, `health` and `settings`.

use crate::{Client, ClientError, REQUEST_TIMEOUT};
use agentd_schemas::api::{
    BatchSubmitRequest, BatchSubmitResponse, CompleteRequest, CompleteResponse, EventsResponse,
    FailRequest, HealthResponse, HeartbeatResponse, JobListResponse, JobTransitionResponse,
    JobView, LeaseRequest, LeaseResponse, NextLeaseRequest, QueueChangeResponse, QueueListResponse,
    SubmitJobRequest, SubmitJobResponse,
};
use agentd_schemas::domain_api::SettingsResponse;
use agentd_schemas::{JobId, LeaseId, Lsn};
use serde::Serialize;
use std::time::Duration;

/// Query of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<JobId>,
}

impl Client {
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.get("/healthz").await
    }

    /// `GET /v1/settings`: the `[rewards]` and `[training]` settings the daemon recorded in its
    /// log (`training_settings_recorded`). Needs the permission to read tasks.
    pub async fn settings(&self) -> Result<SettingsResponse, ClientError> {
        self.get("/v1/settings").await
    }

    pub async fn submit(
        &self,
        request: &SubmitJobRequest,
    ) -> Result<SubmitJobResponse, ClientError> {
        self.post("/v1/jobs", request).await
    }

    pub async fn submit_batch(
        &self,
        jobs: Vec<SubmitJobRequest>,
    ) -> Result<BatchSubmitResponse, ClientError> {
        self.post("/v1/jobs/batch", &BatchSubmitRequest { jobs })
            .await
    }

    pub async fn job(&self, job_id: JobId) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{job_id}")).await
    }

    pub async fn jobs(&self, query: &JobListQuery) -> Result<JobListResponse, ClientError> {
        self.get_query("/v1/jobs", query, REQUEST_TIMEOUT).await
    }

    pub async fn cancel(&self, job_id: JobId) -> Result<JobTransitionResponse, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/cancel"), &serde_json::json!({}))
            .await
    }

    pub async fn retry(&self, job_id: JobId) -> Result<JobTransitionResponse, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/retry"), &serde_json::json!({}))
            .await
    }

    /// Long-polls for up to `wait_ms` (capped by the daemon).
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(request.wait_ms.unwrap_or(0));
        self.post_with_timeout("/v1/leases", request, timeout).await
    }

    pub async fn heartbeat(&self, lease_id: LeaseId) -> Result<HeartbeatResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/heartbeat"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn complete(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.complete_with_log_tail(lease_id, result, None).await
    }

    /// [`Client::complete`] with the attempt's output tail (at most
    /// [`agentd_schemas::api::LOG_TAIL_BYTES_MAX`] bytes), shown as the job's `log_tail`.
    pub async fn complete_with_log_tail(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        log_tail: Option<String>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/complete"),
            &CompleteRequest {
                result,
                log_tail,
                next: None,
            },
        )
        .await
    }

    /// Completes a lease and, in the same call and durable record, leases the jobs ready right
    /// now for `next` (in `next_leases`; empty when none was ready: then long-poll
    /// [`Client::lease`]). A `next` the lease route would refuse refuses the whole call, and
    /// the lease stays held.
    pub async fn complete_then_lease(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        log_tail: Option<String>,
        next: NextLeaseRequest,
    ) -> Result<CompleteResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/complete"),
            &CompleteRequest {
                result,
                log_tail,
                next: Some(next),
            },
        )
        .await
    }

    /// Completes many leases in one durable record; each item succeeds or fails on its own.
    pub async fn complete_many(
        &self,
        completions: Vec<agentd_schemas::api::CompleteItem>,
    ) -> Result<agentd_schemas::api::CompleteManyResponse, ClientError> {
        self.post(
            "/v1/leases/complete",
            &agentd_schemas::api::CompleteManyRequest { completions },
        )
        .await
    }

    pub async fn fail(
        &self,
        lease_id: LeaseId,
        error: &str,
        retryable: bool,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.fail_with_log_tail(lease_id, error, retryable, None)
            .await
    }

    /// [`Client::fail`] with the attempt's output tail (at most
    /// [`agentd_schemas::api::LOG_TAIL_BYTES_MAX`] bytes), shown as the job's `log_tail`.
    pub async fn fail_with_log_tail(
        &self,
        lease_id: LeaseId,
        error: &str,
        retryable: bool,
        log_tail: Option<String>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/fail"),
            &FailRequest {
                error: error.to_string(),
                retryable: Some(retryable),
                log_tail,
            },
        )
        .await
    }

    pub async fn queues(&self) -> Result<QueueListResponse, ClientError> {
        self.get("/v1/queues").await
    }

    pub async fn pause(&self, queue: &str) -> Result<QueueChangeResponse, ClientError> {
        self.post(&format!("/v1/queues/{queue}/pause"), &serde_json::json!({}))
            .await
    }

    pub async fn resume(&self, queue: &str) -> Result<QueueChangeResponse, ClientError> {
        self.post(
            &format!("/v1/queues/{queue}/resume"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Events after `after`; with `wait_ms`, waits for new ones when there are none yet.
    pub async fn events(
        &self,
        after: Lsn,
        limit: u64,
        wait_ms: u64,
    ) -> Result<EventsResponse, ClientError> {
        #[derive(Serialize)]
        struct Query {
            after: u64,
            limit: u64,
            wait_ms: u64,
        }
        self.get_query(
            "/v1/events",
            &Query {
                after: after.0,
                limit,
                wait_ms,
            },
            REQUEST_TIMEOUT + Duration::from_millis(wait_ms),
        )
        .await
    }
}
