//! Per-route request counters and timers, with their metric handles kept.
//!
//! `metrics::counter!` with owned labels allocates the label strings and looks the series up in
//! the recorder's registry on every call; a request would pay that twice (the counter and the
//! duration histogram) plus three string allocations. The handles of a (route, method, status)
//! series never change once registered, so they are looked up once and kept here, behind a
//! read-mostly lock keyed by the matched route's text.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// The handles of one route, created at its first request.
struct RouteSeries {
    duration: Histogram,
    /// Per method and status: a route sees a handful.
    requests: Vec<(Method, u16, Counter)>,
}

/// The kept handles of every route seen. Built with the router, after the daemon installed its
/// recorder, so no handle is a no-op left over from before.
#[derive(Default)]
pub(super) struct RequestMetrics {
    routes: RwLock<HashMap<String, RouteSeries>>,
}

impl RequestMetrics {
    fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        if self.record_known(route, method, status, seconds) {
            return;
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let series = routes
            .entry(route.to_string())
            .or_insert_with(|| RouteSeries {
                duration: metrics::histogram!(
                    "agentd_http_request_duration_seconds",
                    "route" => route.to_string()
                ),
                requests: Vec::new(),
            });
        if !series
            .requests
            .iter()
            .any(|(m, s, _)| m == method && *s == status)
        {
            let counter = metrics::counter!(
                "agentd_http_requests_total",
                "route" => route.to_string(),
                "method" => method.to_string(),
                "status" => status.to_string()
            );
            series.requests.push((method.clone(), status, counter));
        }
        drop(routes);
        // Registered above: this records it.
        self.record_known(route, method, status, seconds);
    }

    /// Records with kept handles; false when this series has none yet.
    fn record_known(&self, route: &str, method: &Method, status: u16, seconds: f64) -> bool {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let Some(series) = routes.get(route) else {
            return false;
        };
        let Some((_, _, counter)) = series
            .requests
            .iter()
            .find(|(m, s, _)| m == method && *s == status)
        else {
            return false;
        };
        counter.increment(1);
        series.duration.record(seconds);
        true
    }
}

/// Counts requests by route, method and status, and times them by route.
pub(super) async fn record_request(
    metrics: Arc<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let seconds = started.elapsed().as_secs_f64();
    metrics.record(route, &method, response.status().as_u16(), seconds);
    response
}
