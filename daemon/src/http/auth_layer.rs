//! The access-control layer: maps each route to the permission it needs, authenticates the
//! bearer token, and stores the [`Caller`] in the request so handlers record its name as the
//! actor of the events they cause.

use super::error::ApiError;
use crate::auth::{AuthError, Authenticator, Caller, Permission};
use agentd_schemas::ErrorCode;
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The permission a route needs; `None` for the public ones (health, the API description, the
/// console's page and files, which hold no data: the console's script sends a token to `/v1`).
pub fn required_permission(method: &Method, route: &str) -> Option<Permission> {
    let read = *method == Method::GET || *method == Method::HEAD;
    Some(match route {
        "/healthz" | "/openapi.json" | "/ui" | "/ui/" | "/ui/assets/{file}" => return None,
        "/v1/jobs" | "/v1/jobs/batch" if !read => Permission::Submit,
        "/v1/jobs/{job_id}" => Permission::ReadOwnJobs,
        route if route.starts_with("/v1/leases") => Permission::Work,
        // Workers judge with the recorded [rewards], so they may read the settings.
        "/v1/settings" if read => Permission::ReadTasks,
        // Agent state, rollouts and their steps: actors write them under their leases.
        route if is_trajectory_route(route) && read => Permission::ReadTasks,
        route if is_trajectory_route(route) => Permission::Work,
        // Operator routes, reads included: the digest holds every write while it is computed,
        // which a dashboard polling with a read token must not be able to do.
        route if route.starts_with("/v1/admin/") => Permission::Admin,
        _ if read => Permission::Read,
        _ => Permission::Admin,
    })
}

/// Routes of tasks, rollouts and groups (state, steps, sandbox results, rewards).
fn is_trajectory_route(route: &str) -> bool {
    ["/v1/tasks/", "/v1/rollouts/", "/v1/groups/"]
        .iter()
        .any(|prefix| route.starts_with(prefix))
}

/// Authenticates every request whose route needs a permission.
pub async fn authenticate(
    authenticator: Arc<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string());
    let permission = match &route {
        Some(route) => required_permission(request.method(), route),
        // Unknown routes still need a valid token, so they reveal nothing to strangers.
        None => Some(Permission::Read),
    };
    let caller = match permission {
        None => Caller::anonymous_admin(),
        Some(permission) => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            match authenticator.authorize(header, permission) {
                Ok(caller) => caller,
                Err(error) => return auth_error(error).into_response(),
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn auth_error(error: AuthError) -> ApiError {
    match error {
        AuthError::MissingToken | AuthError::InvalidToken => {
            metrics::counter!("agentd_auth_failures_total", "reason" => "unauthorized")
                .increment(1);
            ApiError::new(ErrorCode::Unauthorized, error.to_string())
        }
        AuthError::Forbidden { .. } => {
            metrics::counter!("agentd_auth_failures_total", "reason" => "forbidden").increment(1);
            ApiError::new(ErrorCode::Forbidden, error.to_string())
        }
    }
}

/// The authenticated caller, for handlers. Falls back to the anonymous admin when the auth
/// layer is not installed (router tests).
pub struct CallerExt(pub Caller);

impl CallerExt {
    /// The name recorded as the actor of the events this request causes.
    pub fn actor(&self) -> Option<String> {
        self.0.name.clone()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerExt {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(CallerExt(
            parts
                .extensions
                .get::<Caller>()
                .cloned()
                .unwrap_or_else(Caller::anonymous_admin),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_permissions() {
        let cases = [
            (Method::GET, "/healthz", None),
            (Method::GET, "/openapi.json", None),
            (Method::GET, "/ui", None),
            (Method::GET, "/ui/", None),
            (Method::GET, "/ui/assets/{file}", None),
            (Method::GET, "/metrics", Some(Permission::Read)),
            (Method::POST, "/v1/jobs", Some(Permission::Submit)),
            (Method::POST, "/v1/jobs/batch", Some(Permission::Submit)),
            (Method::GET, "/v1/jobs", Some(Permission::Read)),
            (
                Method::GET,
                "/v1/jobs/{job_id}",
                Some(Permission::ReadOwnJobs),
            ),
            (
                Method::POST,
                "/v1/jobs/{job_id}/cancel",
                Some(Permission::Admin),
            ),
            (Method::POST, "/v1/leases", Some(Permission::Work)),
            (
                Method::POST,
                "/v1/leases/{lease_id}/complete",
                Some(Permission::Work),
            ),
            (
                Method::POST,
                "/v1/queues/{queue}/pause",
                Some(Permission::Admin),
            ),
            (Method::GET, "/v1/events", Some(Permission::Read)),
            (Method::GET, "/v1/admin/digest", Some(Permission::Admin)),
            (
                Method::POST,
                "/v1/tasks/{task_id}/steps",
                Some(Permission::Work),
            ),
            (
                Method::GET,
                "/v1/tasks/{task_id}/state",
                Some(Permission::ReadTasks),
            ),
            (
                Method::POST,
                "/v1/tasks/{task_id}/rollouts",
                Some(Permission::Work),
            ),
            (
                Method::POST,
                "/v1/rollouts/{rollout_id}/steps/{step}/reward",
                Some(Permission::Work),
            ),
            (
                Method::GET,
                "/v1/rollouts/{rollout_id}",
                Some(Permission::ReadTasks),
            ),
            (
                Method::GET,
                "/v1/groups/{group}",
                Some(Permission::ReadTasks),
            ),
            (Method::POST, "/v1/datasets", Some(Permission::Admin)),
            (Method::GET, "/v1/datasets/stats", Some(Permission::Read)),
            (Method::GET, "/v1/settings", Some(Permission::ReadTasks)),
        ];
        for (method, route, expected) in cases {
            assert_eq!(
                required_permission(&method, route),
                expected,
                "{method} {route}"
            );
        }
    }
}
