//! The HTTP API (JSON). Handlers translate requests into sequencer commands or projection reads
//! and answer with `agentd_schemas::api` bodies; errors always use [`error::ApiError`].
//!
//! Limits are layers: a connection cap in the accept loop (see `server`), a concurrency limit on
//! requests in flight, a per-request timeout (long-polls are capped below it), and bounded bodies.

pub mod auth_layer;
pub mod domain;
mod downloads;
pub mod error;
mod events;
mod exports;
pub mod extract;
mod jobs;
mod leases;
pub mod openapi;
mod ops;
mod queues;
pub mod read_only;
mod request_metrics;
mod ui;

use crate::log::LogWriter;
use crate::projection::{AppliedWatch, ProjectionStore};
use crate::sequencer::SequencerHandle;
use agentd_schemas::ErrorCode;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The router's state: one allocation shared by every request, so that extracting it costs one
/// reference count, not a clone of every handle (that was about 1.5% of the daemon's CPU under
/// the single shape).
pub type SharedState = Arc<AppState>;

/// What every handler can reach, behind [`SharedState`].
#[derive(Clone)]
pub struct AppState {
    pub sequencer: SequencerHandle,
    pub projections: Arc<ProjectionStore>,
    pub applied: AppliedWatch,
    pub writer: LogWriter,
    /// Reads the durable log (the events route); shares the daemon's offset index.
    pub log: crate::log::LogReader,
    /// Body size, long-poll and timeout limits from `[server]`.
    pub limits: RequestLimits,
    pub metrics: Option<PrometheusHandle>,
    /// The domain projections and the settings of domain writes.
    pub domain: domain::DomainApi,
    /// Checks bearer tokens and roles (a no-op when no tokens are configured).
    pub authenticator: Arc<crate::auth::Authenticator>,
    /// Exports, schedules and dataset builds (the runner's handle and the ledger).
    pub exports: crate::export::runner::ExportService,
    /// The configured schedules, for `GET /v1/schedules`.
    pub schedules: Arc<Vec<crate::schedule::Schedule>>,
    /// Set on a read replica (`agentd replica`): writes answer 405 and `/healthz` shows how
    /// far it follows the archive.
    pub replica: Option<Arc<crate::replica::ReplicaStatus>>,
}

/// The `[server]` settings every request is held to, the same for the daemon and a replica.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub body_bytes_max: usize,
    pub lease_wait_ms_max: u64,
    pub request_timeout: Duration,
    pub requests_in_flight_max: usize,
}

impl RequestLimits {
    pub fn from_config(server: &crate::config::ServerConfig) -> RequestLimits {
        RequestLimits {
            body_bytes_max: server.body_bytes_max,
            lease_wait_ms_max: server.lease_wait_ms_max,
            request_timeout: Duration::from_millis(server.request_timeout_ms),
            requests_in_flight_max: server.requests_in_flight_max,
        }
    }
}

impl AppState {
    /// Waits until the projections reflect everything durable now (read-your-writes), bounded.
    pub async fn settle_reads(&self) {
        let durable = self.writer.durable_lsn();
        if !self.applied.wait_for(durable, Duration::from_secs(5)).await {
            tracing::warn!(%durable, "projection is lagging; answering from a slightly older state");
        }
    }
}

/// Every route with its OpenAPI description. Routes are added only with `routes!(handler)`,
/// which reads the path and method from the handler's `#[utoipa::path]`, so a route cannot be
/// served without being documented (`openapi` holds the test).
pub fn api_routes() -> OpenApiRouter<SharedState> {
    use utoipa::OpenApi as _;
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::health))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::digest))
        .routes(routes!(openapi::serve))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::submit_batch))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(leases::lease))
        .routes(routes!(leases::complete_many))
        .routes(routes!(leases::heartbeat))
        .routes(routes!(leases::complete))
        .routes(routes!(leases::fail))
        .routes(routes!(queues::list))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(events::list))
        .merge(domain::routes())
        .merge(exports::routes())
        .routes(routes!(ui::page))
        .routes(routes!(ui::page_with_slash))
        .routes(routes!(ui::asset))
}

/// The whole API as a router (tested with `oneshot`, served by `server`).
pub fn app(state: AppState) -> Router {
    let request_timeout = state.limits.request_timeout;
    let authenticator = state.authenticator.clone();
    let in_flight_max = state.limits.requests_in_flight_max.max(1);
    let request_metrics = Arc::new(request_metrics::RequestMetrics::default());
    let (routes, _openapi) = api_routes().split_for_parts();
    let mut routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    if let Some(replica) = state.replica.clone() {
        // Inside the auth layer: a caller without a valid token learns nothing, not even that
        // this is a replica.
        routes = routes.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                read_only::refuse_writes(replica.clone(), request, next)
            },
        ));
    }
    routes
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                auth_layer::authenticate(authenticator.clone(), request, next)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                request_metrics::record_request(request_metrics.clone(), request, next)
            },
        ))
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| timeout(request, next, request_timeout),
        ))
        // `Router::layer` layers each route on its own, and `ConcurrencyLimitLayer` makes a
        // semaphore per service it wraps, which made the cap per route; the global layer shares
        // one semaphore across every route.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            in_flight_max,
        ))
        .with_state(Arc::new(state))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /openapi.json for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method",
    )
}

async fn timeout(request: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// Shared by read views: the current wall-clock time in ms (see `crate::clock`).
pub fn now_ms() -> u64 {
    crate::clock::now_ms()
}

/// Lets a handler use `State(state)` and `?` on sequencer results.
pub type ApiResult<T> = Result<T, ApiError>;
