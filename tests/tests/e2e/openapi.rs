//! `GET /openapi.json`: the API description covers every route the daemon serves, with its
//! methods, error answers and the optional bearer scheme; and every documented operation is
//! really routed.

use agentd_tests::Daemon;
use expect_test::expect;
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(daemon: &Daemon) -> Value {
    // Building the agentd client installs reqwest's TLS provider.
    let _client = daemon.client();
    let response = reqwest::get(format!("{}/openapi.json", daemon.url))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.insert((method.to_string(), path.clone()));
            }
        }
    }
    operations
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_served_routes_with_error_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let document = document(&daemon).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    // Every route of the API, as a second safeguard next to the code-level test in
    // `daemon/src/http/openapi.rs`: a route added or removed changes this list, which a
    // reviewer then sees (`UPDATE_EXPECT=1` rewrites it).
    let documented = documented_operations(&document);
    let listed: String = documented
        .iter()
        .map(|(method, path)| format!("{method} {path}\n"))
        .collect();
    expect![[r#"
        get /healthz
        get /metrics
        get /openapi.json
        get /ui
        get /ui/
        get /ui/assets/{file}
        get /v1/admin/digest
        get /v1/datasets
        get /v1/datasets/builds
        get /v1/datasets/builds/{dataset_key}/latest
        get /v1/datasets/stats
        get /v1/events
        get /v1/exports
        get /v1/exports/{export_id}
        get /v1/exports/{export_id}/files/{path}
        get /v1/groups/{group}
        get /v1/jobs
        get /v1/jobs/{job_id}
        get /v1/queues
        get /v1/rollouts/{rollout_id}
        get /v1/rollouts/{rollout_id}/state
        get /v1/schedules
        get /v1/settings
        get /v1/tasks/{task_id}/rollouts
        get /v1/tasks/{task_id}/state
        get /v1/tasks/{task_id}/state/history
        get /v1/tasks/{task_id}/trajectory
        get /v1/trajectories/stats
        post /v1/datasets
        post /v1/datasets/builds
        post /v1/datasets/{source}/{version}/records
        post /v1/exports
        post /v1/exports/records
        post /v1/jobs
        post /v1/jobs/batch
        post /v1/jobs/{job_id}/cancel
        post /v1/jobs/{job_id}/retry
        post /v1/leases
        post /v1/leases/complete
        post /v1/leases/{lease_id}/complete
        post /v1/leases/{lease_id}/fail
        post /v1/leases/{lease_id}/heartbeat
        post /v1/queues/{queue}/pause
        post /v1/queues/{queue}/resume
        post /v1/rollouts/{rollout_id}/state
        post /v1/rollouts/{rollout_id}/steps
        post /v1/rollouts/{rollout_id}/steps/{step}/reward
        post /v1/rollouts/{rollout_id}/steps/{step}/sandbox
        post /v1/tasks/{task_id}/rollouts
        post /v1/tasks/{task_id}/state
        post /v1/tasks/{task_id}/steps
        post /v1/tasks/{task_id}/steps/{step}/reward
        post /v1/tasks/{task_id}/steps/{step}/sandbox
    "#]]
    .assert_eq(&listed);

    let schemas = &document["components"]["schemas"];
    assert!(schemas["ErrorBody"]["properties"]["code"].is_object());
    assert_eq!(schemas["JobId"]["pattern"], "^job_(0|[1-9][0-9]{0,17})$");
    assert_eq!(
        schemas["LeaseId"]["pattern"],
        "^lease_(0|[1-9][0-9]{0,17})$"
    );
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (method, path) in &documented {
        let operation = &document["paths"][path][method];
        let error = &operation["responses"]["default"]["content"]["application/json"]["schema"];
        assert_eq!(
            error["$ref"], "#/components/schemas/ErrorBody",
            "{method} {path}"
        );
        assert!(
            operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|status| status.starts_with('2')),
            "{method} {path} documents no success answer"
        );
        assert!(operation["security"].is_array(), "{method} {path}");
    }
    // Request bodies reject unknown fields, and the document says so.
    assert_eq!(schemas["SubmitJobRequest"]["additionalProperties"], false);
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let document = document(&daemon).await;
    let http = reqwest::Client::new();
    for (method, path) in documented_operations(&document) {
        let concrete = path
            .replace("{job_id}", "job_1")
            .replace("{lease_id}", "lease_1")
            .replace("{queue}", "openapi-probe")
            .replace("{source}", "src")
            .replace("{version}", "v1")
            .replace("{task_id}", "task-1")
            .replace("{step}", "0")
            .replace("{export_id}", "none")
            .replace("{file}", "app.js");
        let url = format!("{}{concrete}", daemon.url);
        let request = match method.as_str() {
            "get" => http.get(&url),
            "post" => http
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"openapi_probe\":true}"),
            other => panic!("unexpected method {other} for {path}"),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_ne!(
            status, 405,
            "{method} {path} is documented but not routed: {text}"
        );
        assert!(
            !text.contains("no such route"),
            "{method} {path} is documented but not routed: {text}"
        );
        assert!(status < 500, "{method} {path} answered {status}: {text}");
    }
}

/// A rule of a request as `/openapi.json` states it (the value at `pointer`), and a request
/// that breaks it, which the daemon refuses with 422 `invalid_request`.
struct StatedRule {
    pointer: &'static str,
    stated: Value,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
}

#[tokio::test]
async fn the_document_states_the_rules_the_daemon_checks() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let document = document(&daemon).await;
    let control_free = format!("^[^{}]*$", agentd_schemas::api::CONTROL_CLASS);
    let rules = [
        StatedRule {
            pointer: "/paths/~1v1~1events/get/parameters/2/schema/maximum",
            stated: json!(u64::MAX),
            method: "GET",
            path: "/v1/events?wait_ms=18446744073709551616",
            body: None,
        },
        StatedRule {
            pointer:
                "/paths/~1v1~1tasks~1{task_id}~1state~1history/get/parameters/1/schema/maximum",
            stated: json!(u64::MAX),
            method: "GET",
            path: "/v1/tasks/t/state/history?after=18446744073709551616",
            body: None,
        },
        StatedRule {
            pointer: "/paths/~1v1~1tasks~1{task_id}~1trajectory/get/parameters/1/schema/maximum",
            stated: json!(u32::MAX),
            method: "GET",
            path: "/v1/tasks/t/trajectory?after=4294967296",
            body: None,
        },
        StatedRule {
            pointer: "/components/schemas/TaskIdText/pattern",
            stated: json!(control_free),
            method: "GET",
            path: "/v1/tasks/a%01b/state",
            body: None,
        },
        StatedRule {
            pointer: "/paths/~1v1~1rollouts~1{rollout_id}~1state/get/parameters/0/schema/$ref",
            stated: json!("#/components/schemas/RolloutId"),
            method: "GET",
            path: "/v1/rollouts/0/state",
            body: None,
        },
        StatedRule {
            pointer: "/components/schemas/IngestRecordsRequest/properties/first_index/maximum",
            stated: json!(i64::MAX),
            method: "POST",
            path: "/v1/datasets/src/v1/records",
            body: Some(json!({"records": [], "first_index": 9_223_372_036_854_775_808_u64})),
        },
        StatedRule {
            pointer: "/components/schemas/CreateRolloutRequest/properties/model/$ref",
            stated: json!("#/components/schemas/NonBlankName"),
            method: "POST",
            path: "/v1/tasks/t/rollouts",
            body: Some(json!({"model": " \t", "policy_version": "p"})),
        },
        StatedRule {
            pointer: "/components/schemas/SubmitJobRequest/allOf/0/not/allOf/1/required/0",
            stated: json!("run_at_ms"),
            method: "POST",
            path: "/v1/jobs",
            body: Some(json!({"queue": "q", "kind": "k", "delay_ms": 1, "run_at_ms": 1})),
        },
        StatedRule {
            pointer: "/components/schemas/RunExportRequest/allOf/0/anyOf/1/properties/kind/const",
            stated: json!("processed"),
            method: "POST",
            path: "/v1/exports",
            body: Some(json!({"kind": "verl_rl", "format": "jsonl"})),
        },
        StatedRule {
            pointer: "/components/schemas/RecordStepRequest/allOf/0/anyOf/0/allOf/0/required/0",
            stated: json!("action"),
            method: "POST",
            path: "/v1/tasks/t/steps",
            body: Some(json!({"step": 0, "model": "m", "policy_version": "p"})),
        },
        StatedRule {
            // Structs are JSON objects only: serde would also read `[result, log_tail]`.
            pointer: "/components/schemas/CompleteRequest/type",
            stated: json!("object"),
            method: "POST",
            path: "/v1/leases/lease_1/complete",
            body: Some(json!([null, null])),
        },
    ];
    let http = reqwest::Client::new();
    for rule in rules {
        assert_eq!(
            document.pointer(rule.pointer),
            Some(&rule.stated),
            "{}",
            rule.pointer
        );
        let url = format!("{}{}", daemon.url, rule.path);
        let request = match rule.method {
            "GET" => http.get(&url),
            _ => http.post(&url).json(&rule.body),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid_request")),
            "{} {}: {body}",
            rule.method,
            rule.path
        );
    }

    // The largest values the document allows are taken.
    for path in [
        "/v1/events?wait_ms=18446744073709551615",
        "/v1/tasks/t/state/history?after=18446744073709551615",
        "/v1/tasks/t/trajectory?after=4294967295",
    ] {
        let response = http
            .get(format!("{}{path}", daemon.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}
