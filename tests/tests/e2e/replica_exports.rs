//! Exports and dataset builds run on a read replica, through the real binaries (docs/storage.md,
//! "Exports and builds on a replica"): the replica writes the files over its copy of the log,
//! copies them to the storage URL, and the primary checks and records them. The primary then
//! lists the run, serves its manifest and files from the store (they are not on its disk),
//! resolves a replica's build as the latest of its key, and treats the same export asked of
//! itself as already recorded; the replica lists the run once it followed the archive past the
//! record. Refusals: a record whose manifest the store does not hold (409), an incremental
//! export that overlaps a later one (409), a replica without an http(s) `--primary` (405), and
//! a primary that cannot be reached (502 `primary_unavailable`). The caller's token goes on to
//! the primary, which decides for itself.

use super::exports::{ctl_json, ingest};
use super::storage::{storage_config, storage_url, wait_until_archived, Bucket};
use agentd_schemas::ErrorCode;
use agentd_tests::{eventually, get_json, post_json, post_refused, Daemon};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Waits until the replica applied the primary's log up to `lsn`.
async fn wait_until_applied(replica: &Daemon, lsn: u64) {
    let client = replica.client();
    eventually(
        Duration::from_secs(120),
        "the replica to catch up",
        || async {
            let progress = client.health().await.ok()?.replica?;
            (progress.applied_lsn.0 >= lsn && progress.lag_records == 0).then_some(())
        },
    )
    .await
}

/// Every file of the export or build `id`, downloaded from `url`, has its recorded sha256.
async fn assert_files_download(url: &str, id: &str, files: &Value) {
    let files = files.as_array().unwrap();
    assert!(!files.is_empty(), "{id} has files");
    for file in files {
        let path = file["path"].as_str().unwrap();
        let route = format!("{url}/v1/exports/{id}/files/{}", path.replace('/', "%2F"));
        let response = agentd_tests::http().get(&route).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{route}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file["sha256"].as_str().unwrap(),
            "{path} of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_builds_run_on_a_replica_and_the_primary_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
    let mut primary = Daemon::start(&dir.path().join("primary"), Some(&config));
    ingest(&primary.url);
    let archived = wait_until_archived(&primary).await;
    let replica = Daemon::start_replica(
        &dir.path().join("replica"),
        &url,
        &["--poll-interval-ms", "50", "--primary", &primary.url],
    );
    wait_until_applied(&replica, archived).await;

    // An export run on the replica is recorded in the primary's log, copied to the store.
    let (status, run) = post_json(
        &replica.url,
        "/v1/exports",
        json!({"kind": "trl_grpo", "full": true}),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let export = &run["export"];
    let export_id = export["export_id"].as_str().unwrap().to_owned();
    assert_eq!(export["to_lsn"].as_u64(), Some(archived), "{export}");
    let folder = format!("{}/exports/{export_id}/", url.trim_end_matches('/'));
    assert_eq!(export["url"].as_str(), Some(folder.as_str()), "{export}");
    let on_primary = get_json(&primary.url, &format!("/v1/exports/{export_id}")).await;
    assert_eq!(on_primary["export"]["url"], export["url"]);
    assert_eq!(on_primary["export"]["files"], export["files"]);
    assert_eq!(
        on_primary["export"]["recorded_lsn"], export["recorded_lsn"],
        "{on_primary}"
    );
    // The files are not on the primary's disk: manifest and files come from the store.
    let primary_dir = on_primary["export"]["dir"].as_str().unwrap();
    assert!(!std::path::Path::new(primary_dir).exists(), "{primary_dir}");
    assert_eq!(on_primary["manifest"]["export_id"], json!(export_id));
    assert_files_download(&primary.url, &export_id, &export["files"]).await;
    // The same export asked of the primary is the one recorded.
    let (status, again) = post_json(
        &primary.url,
        "/v1/exports",
        json!({"kind": "trl_grpo", "full": true}),
    )
    .await;
    assert_eq!(
        (status, &again["created"], &again["export"]["export_id"]),
        (200, &json!(false), &json!(export_id)),
        "{again}"
    );

    // A build run on the replica is the latest build of its key on the primary.
    let (status, built) = post_json(
        &replica.url,
        "/v1/datasets/builds",
        json!({"name": "py", "version": "v1", "view": "trl_grpo", "limit": 2}),
    )
    .await;
    assert_eq!(status, 201, "{built}");
    let build_id = built["build"]["build_id"].as_str().unwrap().to_owned();
    let latest = ctl_json(&primary.url, &["datasets", "latest", "py-v1"]);
    assert_eq!(latest["build_id"], json!(build_id), "{latest}");
    assert_eq!(latest["rows"], 2, "{latest}");
    assert_files_download(&primary.url, &build_id, &built["build"]["files"]).await;

    // The replica lists both once it followed the archive past their records.
    let archived = wait_until_archived(&primary).await;
    wait_until_applied(&replica, archived).await;
    let listed = get_json(&replica.url, &format!("/v1/exports/{export_id}")).await;
    assert_eq!(listed["export"]["url"], export["url"]);
    let builds = get_json(&replica.url, "/v1/datasets/builds?dataset_key=py-v1").await;
    assert_eq!(builds["builds"][0]["build_id"], json!(build_id), "{builds}");

    refusals(&primary, dir.path(), &url, export).await;
    // No primary to record it: 502, nothing recorded.
    assert_eq!(primary.stop(), Some(0));
    let refused = post_refused(
        &replica.url,
        "/v1/exports",
        json!({"kind": "trl_sft", "full": true}),
        ErrorCode::PrimaryUnavailable,
    )
    .await;
    assert!(
        refused.message.contains("cannot reach the primary"),
        "{}",
        refused.message
    );
}

/// What the primary refuses to record, and a replica that cannot run exports.
async fn refusals(primary: &Daemon, dir: &std::path::Path, url: &str, export: &Value) {
    // A record naming a manifest the store does not hold (another range, same files).
    let mut forged = export.clone();
    let event = json!({
        "export_id": "exp_trl_grpo_0_2",
        "kind": "trl_grpo",
        "format": export["format"],
        "after_lsn": 0,
        "to_lsn": 2,
        "dir": "exp_trl_grpo_0_2",
        "rows": forged["rows"].take(),
        "files": forged["files"].take(),
        "manifest_sha256": forged["manifest_sha256"].take(),
        "schema_version": export["schema_version"],
        "schedule": null,
    });
    let refused = post_refused(
        &primary.url,
        "/v1/exports/records",
        json!({"export": event}),
        ErrorCode::Conflict,
    )
    .await;
    assert!(
        refused.message.contains("not in the store"),
        "{}",
        refused.message
    );
    // An incremental export that starts before this kind's watermark.
    let mut overlapping = event.clone();
    overlapping["after_lsn"] = json!(1);
    overlapping["export_id"] = json!("exp_trl_grpo_1_2");
    overlapping["dir"] = json!("exp_trl_grpo_1_2");
    post_refused(
        &primary.url,
        "/v1/exports/records",
        json!({"export": overlapping}),
        ErrorCode::Conflict,
    )
    .await;
    // Not one of the two kinds of record.
    post_refused(
        &primary.url,
        "/v1/exports/records",
        json!({"neither": event}),
        ErrorCode::InvalidRequest,
    )
    .await;
    // The bucket still holds what the replica copied, and nothing the refusals named.
    let bucket = Bucket::of(url);
    assert!(bucket
        .get("exports/exp_trl_grpo_0_2/manifest.json")
        .await
        .is_none());
    // A replica whose --primary is not an http(s) URL refuses exports like every write.
    let replica = Daemon::start_replica(&dir.join("replica-2"), url, &["--poll-interval-ms", "50"]);
    post_refused(
        &replica.url,
        "/v1/exports",
        json!({"kind": "trl_grpo", "full": true}),
        ErrorCode::ReadOnlyReplica,
    )
    .await;
}

/// What `agentctl --json tokens create` prints (the part read here).
#[derive(serde::Deserialize)]
struct CreatedToken {
    token: String,
    config_line: String,
}

fn admin_token(name: &str) -> CreatedToken {
    agentd_tests::agentctl_typed(
        "http://127.0.0.1:1",
        &["tokens", "create", "--role", "admin", "--name", name],
    )
}

/// The caller's token goes on to the primary: one the primary holds records the run; one only
/// the replica holds gets the primary's 401, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_passes_the_callers_token_on_to_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path(), "archive");
    let (shared, replica_only) = (admin_token("ops"), admin_token("replica-ops"));
    for config_dir in ["primary-config", "replica-config"] {
        std::fs::create_dir_all(dir.path().join(config_dir)).unwrap();
    }
    let primary_config = agentd_tests::write_config(
        &dir.path().join("primary-config"),
        &format!(
            "[auth]\ntokens = [\n{}\n]\n[storage]\nurl = \"{url}\"\narchive_interval_ms = 100\n",
            shared.config_line
        ),
    );
    let replica_config = agentd_tests::write_config(
        &dir.path().join("replica-config"),
        &format!(
            "[auth]\ntokens = [\n{}\n{}\n]\n",
            shared.config_line, replica_only.config_line
        ),
    );
    let primary = Daemon::start(&dir.path().join("primary"), Some(&primary_config));
    let ops = agentd_client::Client::new(&primary.url, Some(shared.token.clone())).unwrap();
    let update = agentd_schemas::domain_api::StateUpdateRequest {
        goals: vec!["export me".into()],
        ..Default::default()
    };
    ops.update_task_state("task-1", &update).await.unwrap();
    // `/metrics`, which `wait_until_archived` reads, needs a token here: `/healthz` does not.
    let durable = ops.health().await.unwrap().durable_lsn.0;
    let replica = Daemon::start_replica(
        &dir.path().join("replica"),
        &url,
        &[
            "--poll-interval-ms",
            "50",
            "--primary",
            &primary.url,
            "--config",
            replica_config.to_str().unwrap(),
        ],
    );
    let watcher = agentd_client::Client::new(&replica.url, Some(shared.token.clone())).unwrap();
    eventually(
        Duration::from_secs(60),
        "the replica to catch up",
        || async {
            let progress = watcher.health().await.ok()?.replica?;
            (progress.applied_lsn.0 >= durable).then_some(())
        },
    )
    .await;
    let export = |token: String| {
        let route = format!("{}/v1/exports", replica.url);
        async move {
            let response = agentd_tests::http()
                .post(route)
                .bearer_auth(token)
                .json(&json!({"kind": "trajectories", "full": true}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, refused) = export(replica_only.token.clone()).await;
    assert_eq!(
        (status, &refused["code"]),
        (401, &json!("unauthorized")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("the primary at"),
        "{refused}"
    );
    let (status, run) = export(shared.token.clone()).await;
    assert_eq!(status, 201, "{run}");
    let listed: Value = agentd_tests::http()
        .get(format!("{}/v1/exports", primary.url))
        .bearer_auth(&shared.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["exports"].as_array().unwrap().len(), 1, "{listed}");
}
