//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler's `#[utoipa::path]` attribute gives its path,
//! method, parameters and answers, and the `schemas` crate's `ToSchema` derives give the bodies.
//! Routes are registered only through utoipa-axum's `routes!` (see [`super::api_routes`]), which
//! takes the path and method from that attribute, so registering a route and documenting it are
//! one act.
//!
//! Architecture invariant: every route the daemon serves is in this document. Two tests hold
//! it: `every_registered_route_is_documented` below (no `.route(` call in `daemon/src/http`
//! bypasses `routes!`) and the end-to-end `openapi` test, which lists every route explicitly.
//!
//! The document also states every rule the handlers check on a request (patterns, lengths,
//! ranges, fields that go together): on the request types' fields where utoipa can say it, in
//! [`rules`] where it cannot. `scripts/test-schemathesis` holds both directions: a request the
//! document allows is not refused as invalid, and one it forbids is.

mod rules;

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

/// The fixed parts of the document; the paths come from the router.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "agentd",
        description = "Event-sourced job queue daemon. Every error answer is `ErrorBody` \
            (`{code, message}`) with a stable `code`; see the README's API section for the codes \
            and the limits. Authentication is a bearer token when `[auth]` tokens are \
            configured; without tokens (loopback only) every route is open.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    // The bodies' schemas come with the handlers; these are named only in path parameters.
    components(schemas(
        agentd_schemas::api::ErrorBody,
        agentd_schemas::api::SimpleName,
        agentd_schemas::domain_api::TaskIdText,
        agentd_schemas::RolloutId,
    )),
    tags(
        (name = "jobs", description = "Submit, read, cancel and retry jobs"),
        (name = "leases", description = "Workers: lease jobs (long-poll), heartbeat, complete, fail"),
        (name = "queues", description = "Queue depth; pause and resume"),
        (name = "events", description = "The log itself, as JSON"),
        (name = "datasets", description = "Dataset registration, record ingest, processed splits"),
        (name = "tasks", description = "Per-task agent state (the base state every rollout starts from)"),
        (name = "trajectories", description = "Steps, sandbox results, rewards of a task's default rollout; trajectory stats"),
        (name = "rollouts", description = "Rollouts (sampled episodes of a task), their steps, sandbox results, rewards and state; groups with GRPO advantages"),
        (name = "exports", description = "Exports, schedules, dataset builds"),
        (name = "settings", description = "The training settings recorded in the log ([rewards], system prompt, SFT threshold)"),
        (name = "ops", description = "Health, metrics, digests, this document"),
    )
)]
pub struct ApiDoc;

/// Name of the bearer security scheme in the document.
pub const BEARER_SCHEME: &str = "bearer";

/// The document as JSON text, built once (it depends on the code only, not on the config).
pub fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        // Serializing a tree of plain structs and maps cannot fail.
        document()
            .and_then(|document| serde_json::to_string(&document))
            .unwrap_or_else(|error| {
                tracing::error!("cannot serialize the OpenAPI document: {error}");
                "{}".to_owned()
            })
    })
}

/// The whole document: the router's paths plus the security scheme, the error answers and the
/// [`rules`] the derives cannot state.
pub fn document() -> Result<serde_json::Value, serde_json::Error> {
    let (_router, mut openapi) = super::api_routes().split_for_parts();
    finish(&mut openapi);
    let mut document = serde_json::to_value(&openapi)?;
    rules::apply(&mut document);
    Ok(document)
}

/// The API description (OpenAPI 3.1, JSON), generated from the code.
#[utoipa::path(
    get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "This document", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// Adds what every operation shares: optional bearer authentication, and a `default` answer
/// with [`agentd_schemas::api::ErrorBody`] for every error status not listed on the route
/// (401, 403, 400, 405, 413, 429, 500, 503, 507 can come from the layers of any route).
fn finish(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from `agentctl tokens create`; required only when `[auth]` tokens are configured",
                ))
                .build(),
        ),
    );
    let optional_bearer = vec![
        SecurityRequirement::default(),
        SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
    ];
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            finish_operation(operation, &optional_bearer);
        }
    }
}

/// The error response's description: every stable code with its status, from
/// [`ErrorCode::ALL`], so the document cannot miss one.
fn error_codes_description() -> String {
    let codes: Vec<String> = agentd_schemas::ErrorCode::ALL
        .iter()
        .filter(|code| code.status() >= 400)
        .map(|code| format!("`{}` ({})", code.as_str(), code.status()))
        .collect();
    format!("An error. `code` is stable: {}", codes.join(", "))
}

fn finish_operation(operation: &mut Operation, optional_bearer: &[SecurityRequirement]) {
    // Routes marked `security(())` are public: they keep their single empty requirement.
    if operation.security.is_none() {
        operation.security = Some(optional_bearer.to_vec());
    }
    let error = ResponseBuilder::new()
        .description(error_codes_description())
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .entry("default".to_owned())
        .or_insert(error.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.route(` call in `daemon/src/http` would register a route without documenting it
    /// (`routes!` registers through the handler's `#[utoipa::path]`), so there must be none, and
    /// the document must hold the paths that appear as route literals anywhere in the module.
    #[test]
    fn every_registered_route_is_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        // Built here so this file does not match itself.
        let needles =
            ["route", "route_service", "nest", "nest_service"].map(|name| format!(".{name}("));
        let mut offenders = Vec::new();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (number, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    if needles.iter().any(|needle| code.contains(needle.as_str())) {
                        offenders.push(format!("{}:{}: {}", path.display(), number + 1, code));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "register routes with utoipa-axum's routes!(handler) and a #[utoipa::path] on the \
             handler, so /openapi.json documents them:\n{}",
            offenders.join("\n")
        );
    }

    #[test]
    fn document_has_every_operation_with_error_answers_and_security() {
        let document: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(
            paths.contains_key("/openapi.json"),
            "the document describes itself"
        );
        assert!(paths.contains_key("/v1/jobs/{job_id}"));
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key("default"),
                    "{method} {path} lacks error answers"
                );
                assert!(
                    operation.get("security").is_some(),
                    "{method} {path} lacks security"
                );
            }
        }
        assert_eq!(
            document["components"]["securitySchemes"][BEARER_SCHEME]["scheme"],
            "bearer"
        );
        assert_eq!(
            document["components"]["schemas"]["JobId"]["pattern"],
            "^job_(0|[1-9][0-9]{0,17})$"
        );
    }

    /// The limits the document states are the ones the handlers check (the document's numbers
    /// are literals in attributes, the checks use named constants).
    #[test]
    fn the_documents_limits_are_the_handlers_limits() {
        use crate::http::domain as limits;
        let document: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let schemas = &document["components"]["schemas"];
        let queue = crate::queue::limits::QueueLimits::default();
        let cases: [(&serde_json::Value, u64); 23] = [
            (
                &schemas["SubmitJobRequest"]["properties"]["delay_ms"]["maximum"],
                queue.delay_ms_max,
            ),
            (
                &schemas["SubmitJobRequest"]["properties"]["max_attempts"]["maximum"],
                queue.max_attempts_max.into(),
            ),
            (
                &schemas["SubmitJobRequest"]["properties"]["lease_ttl_ms"]["minimum"],
                queue.lease_ttl_ms_min,
            ),
            (
                &schemas["SubmitJobRequest"]["properties"]["lease_ttl_ms"]["maximum"],
                queue.lease_ttl_ms_max,
            ),
            (
                &schemas["TaskIdText"]["maxLength"],
                queue.key_chars_max as u64,
            ),
            (
                &schemas["BatchSubmitRequest"]["properties"]["jobs"]["maxItems"],
                queue.batch_jobs_max as u64,
            ),
            (
                &schemas["RequestTags"]["maxProperties"],
                queue.tags_max as u64,
            ),
            (
                &schemas["RequestTags"]["additionalProperties"]["maxLength"],
                queue.tag_chars_max as u64,
            ),
            (&schemas["LeaseQueues"]["maxItems"], queue.tags_max as u64),
            (
                &schemas["LeaseRequest"]["properties"]["max_jobs"]["maximum"],
                queue.lease_jobs_max.into(),
            ),
            (
                &schemas["NextLeaseRequest"]["properties"]["max_jobs"]["maximum"],
                queue.lease_jobs_max.into(),
            ),
            (
                &schemas["CompleteRequest"]["properties"]["log_tail"]["maxLength"],
                agentd_schemas::api::LOG_TAIL_BYTES_MAX as u64,
            ),
            (
                &schemas["IngestRecordsRequest"]["properties"]["records"]["maxItems"],
                crate::config::Config::default()
                    .datasets
                    .records_per_batch_max as u64,
            ),
            (
                &schemas["IngestRecordsRequest"]["properties"]["first_index"]["maximum"],
                agentd_schemas::domain_api::FIRST_INDEX_MAX,
            ),
            (
                &schemas["StateUpdateRequest"]["properties"]["next_focus"]["maxLength"],
                limits::STATE_ITEM_BYTES_MAX as u64,
            ),
            (
                &schemas["RecordStepRequest"]["properties"]["prompt"]["maxLength"],
                limits::PROMPT_BYTES_MAX as u64,
            ),
            (
                &schemas["RecordStepRequest"]["properties"]["think"]["maxLength"],
                limits::THINK_BYTES_MAX as u64,
            ),
            (
                &schemas["RecordStepRequest"]["properties"]["raw_output"]["maxLength"],
                crate::domain::output_format::OUTPUT_BYTES_MAX as u64,
            ),
            (
                &schemas["SandboxResultRequest"]["properties"]["diff"]["maxLength"],
                limits::DIFF_BYTES_MAX as u64,
            ),
            (
                &schemas["SandboxResultRequest"]["properties"]["stdout"]["maxLength"],
                limits::OUTPUT_BYTES_MAX as u64,
            ),
            (
                &schemas["ActionRequest"]["oneOf"][0]["properties"]["rewrite"]["maxLength"],
                limits::ACTION_TEXT_BYTES_MAX as u64,
            ),
            (
                &schemas["GroupName"]["maxLength"],
                crate::domain::decide::GROUP_CHARS_MAX as u64,
            ),
            (
                &schemas["DatasetBuildRequest"]["properties"]["filters"]["maxProperties"],
                crate::export::build::FILTERS_MAX as u64,
            ),
        ];
        for (position, (stated, checked)) in cases.iter().enumerate() {
            assert_eq!(stated.as_u64(), Some(*checked), "case {position}");
        }
        // A job's task id is held to the task routes' rule.
        let task_id = schemas["SubmitJobRequest"]["properties"]["task_id"].to_string();
        assert!(
            task_id.contains("#/components/schemas/TaskIdText"),
            "{task_id}"
        );
        assert_eq!(
            schemas["DatasetBuildRequest"]["properties"]["name"]["pattern"],
            format!(
                "^[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{}}}$",
                crate::export::build::NAME_CHARS_MAX - 1
            )
        );
    }

    /// Every `$ref` names a schema the document holds (a type named only in a path parameter is
    /// not collected by utoipa unless `ApiDoc` lists it).
    #[test]
    fn every_reference_resolves() {
        fn references(value: &serde_json::Value, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(object) => {
                    if let Some(serde_json::Value::String(target)) = object.get("$ref") {
                        found.push(target.clone());
                    }
                    object.values().for_each(|value| references(value, found));
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|value| references(value, found))
                }
                _ => {}
            }
        }
        let document: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let pointer = target.trim_start_matches('#');
            assert!(
                document.pointer(pointer).is_some(),
                "{target} is not in the document"
            );
        }
    }
}
