//! Read replicas through the real binary (`agentd replica`), on a `file://` storage URL, or on a
//! real S3 server when scripts/test-s3 sets `AGENTD_TEST_STORAGE_URL`: a replica follows the
//! primary's archive, answers reads exactly as the primary does (jobs, lists, queues, agent
//! state, every projection digest), holds a log byte-identical to a prefix of the primary's,
//! picks up new records at the next archive pass, refuses writes with 405
//! `read_only_replica` naming the primary, resumes on its own data directory (from the snapshot
//! its clean stop wrote) without the archive's older objects, and stops following an archive
//! that does not continue its log.

use super::storage::{
    lease_one, segment_names, storage_config, storage_url, wait_until_archived, Bucket,
};
use agentd_client::Client;
use agentd_schemas::api::{HealthResponse, SubmitJobRequest};
use agentd_schemas::domain_api::StateUpdateRequest;
use agentd_schemas::{ErrorCode, JobId};
use agentd_tests::{digest, eventually, get_json, post_json, post_refused, write_config, Daemon};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Submits `count` jobs to queue `q`, completes a third, fails a third for good.
async fn make_history(client: &Client, count: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let job = SubmitJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            payload: json!({"n": n, "text": "x".repeat(80)}),
            max_attempts: Some(1),
            ..Default::default()
        };
        ids.push(client.submit(&job).await.unwrap().job_id);
    }
    for n in 0..(count * 2 / 3) {
        let lease = lease_one(client, "q").await;
        if n % 2 == 0 {
            client
                .complete(lease.lease_id, Some(json!({"n": n})))
                .await
                .unwrap();
        } else {
            client.fail(lease.lease_id, "broken", false).await.unwrap();
        }
    }
    ids
}

/// Waits until the replica applied every record up to `lsn`; returns its health.
async fn wait_until_applied(replica: &Daemon, lsn: u64) -> HealthResponse {
    let client = replica.client();
    eventually(
        Duration::from_secs(120),
        "the replica to catch up",
        || async {
            let health = client.health().await.ok()?;
            let progress = health.replica.as_ref()?;
            (progress.applied_lsn.0 >= lsn && progress.lag_records == 0).then_some(health)
        },
    )
    .await
}

/// Every local segment of the replica equals the primary's file of the same name, but the last,
/// which is a prefix of it.
fn assert_log_is_a_prefix(replica_log: &Path, primary_log: &Path) {
    let names = segment_names(replica_log);
    assert!(names.len() > 3, "the log rolled: {names:?}");
    for (position, name) in names.iter().enumerate() {
        let copied = std::fs::read(replica_log.join(name)).unwrap();
        let original = std::fs::read(primary_log.join(name)).unwrap();
        if position + 1 < names.len() {
            assert!(copied == original, "{name:?} differs from the primary's");
        } else {
            assert!(
                original.starts_with(&copied),
                "{name:?} is not a prefix of the primary's"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_the_archive_serves_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
    let mut primary = Daemon::start(&dir.path().join("primary"), Some(&config));
    let client = primary.client();
    let ids = make_history(&client, 30).await;
    let update = StateUpdateRequest {
        goals: vec!["follow the archive".into()],
        ..StateUpdateRequest::default()
    };
    client.update_task_state("task-1", &update).await.unwrap();
    let (status, export) = post_json(
        &primary.url,
        "/v1/exports",
        json!({"kind": "trajectories", "full": true}),
    )
    .await;
    assert!(
        status < 300 && export["created"] == json!(true),
        "{status} {export}"
    );
    let archived = wait_until_archived(&primary).await;

    let replica_dir = dir.path().join("replica");
    let mut replica = Daemon::start_replica(
        &replica_dir,
        &url,
        &["--poll-interval-ms", "50", "--primary", &primary.url],
    );
    let health = wait_until_applied(&replica, archived).await;
    let progress = health.replica.unwrap();
    assert_eq!(progress.archive_url, url);
    assert_eq!(progress.primary, primary.url);
    assert!(
        progress.following && progress.last_poll_error.is_none(),
        "{progress:?}"
    );
    assert_eq!(
        progress.lag_seconds, 0.0,
        "caught up means no lag, however long since the last poll: {progress:?}"
    );
    assert_eq!(health.durable_lsn.0, archived);

    // Reads answer as on the primary: every job, the lists, the queues, agent state, and a
    // digest of every projection at the same LSN.
    let views = |url: String| async move {
        let mut views = Vec::new();
        for id in [1, 7, 15, 29] {
            views.push(get_json(&url, &format!("/v1/jobs/job_{id}")).await);
        }
        for path in [
            "/v1/jobs?limit=1000",
            "/v1/jobs?state=completed&limit=1000",
            "/v1/queues",
            "/v1/tasks/task-1/state",
        ] {
            views.push(get_json(&url, path).await);
        }
        // The export the primary recorded is listed (its files stay on the primary's disk:
        // `root` and each export's `dir` are each daemon's own).
        let mut exports = get_json(&url, "/v1/exports").await;
        let listed = exports["exports"].as_array_mut().unwrap();
        assert_eq!(listed.len(), 1, "the primary's export is listed");
        for export in listed {
            export.as_object_mut().unwrap().remove("dir");
        }
        views.push(exports["exports"].clone());
        views.push(exports["watermarks"].clone());
        views
    };
    let (on_replica, on_primary) = (
        views(replica.url.clone()).await,
        views(primary.url.clone()).await,
    );
    for (seen, wanted) in on_replica.iter().zip(&on_primary) {
        assert_eq!(seen, wanted);
    }
    assert_eq!(on_replica.len(), on_primary.len());
    assert_eq!(ids.len(), 30);
    let on_primary = digest(&primary.url).await;
    let on_replica = digest(&replica.url).await;
    assert_eq!(on_replica.lsn.0, archived);
    assert_eq!(on_replica, on_primary);
    assert_log_is_a_prefix(&replica_dir.join("log"), &dir.path().join("primary/log"));

    // Writes are refused before any handler runs, naming the primary.
    let refused = post_refused(
        &replica.url,
        "/v1/jobs",
        json!({"queue": "q", "kind": "k"}),
        ErrorCode::ReadOnlyReplica,
    )
    .await;
    assert!(
        refused.message.contains(&primary.url),
        "{}",
        refused.message
    );
    let refused = post_refused(
        &replica.url,
        "/v1/leases",
        json!({"worker_id": "w", "queues": ["q"]}),
        ErrorCode::ReadOnlyReplica,
    )
    .await;
    assert!(
        refused.message.contains("POST /v1/leases"),
        "{}",
        refused.message
    );

    // New jobs reach the replica with the next archive pass.
    let later = make_history(&client, 6).await;
    let archived = wait_until_archived(&primary).await;
    wait_until_applied(&replica, archived).await;
    let job = get_json(&replica.url, &format!("/v1/jobs/{}", later[5])).await;
    assert_eq!(
        job,
        get_json(&primary.url, &format!("/v1/jobs/{}", later[5])).await
    );
    assert_eq!(digest(&replica.url).await, digest(&primary.url).await);
    assert_eq!(replica.stop(), Some(0));

    // Restarted on its own data directory, it resumes from its local log: the archive's
    // sealed segments are gone, so a copy from lsn 1 would fail.
    let bucket = Bucket::of(&url);
    let manifest = bucket.manifest().await;
    let segments = manifest["segments"].as_array().unwrap();
    for segment in &segments[..segments.len() - 1] {
        bucket
            .delete(&format!("log/{}", segment["name"].as_str().unwrap()))
            .await;
    }
    let more = make_history(&client, 3).await;
    let archived = wait_until_archived(&primary).await;
    let replica = Daemon::start_replica(&replica_dir, &url, &["--poll-interval-ms", "50"]);
    let health = wait_until_applied(&replica, archived).await;
    // It started from the snapshot of the sequencer state its clean stop wrote (as a primary
    // does), not from a replay of its whole log; the digests below show nothing differs.
    let snapshot_lsn = crate::storage::metric(&replica.url, "agentd_startup_snapshot_lsn")
        .await
        .expect("the gauge is published");
    assert!(snapshot_lsn >= 1.0, "no snapshot loaded: {snapshot_lsn}");
    assert_eq!(
        health.replica.unwrap().primary,
        url,
        "without --primary, the archive is named"
    );
    let job = get_json(&replica.url, &format!("/v1/jobs/{}", more[2])).await;
    assert_eq!(
        job,
        get_json(&primary.url, &format!("/v1/jobs/{}", more[2])).await
    );
    assert_eq!(digest(&replica.url).await, digest(&primary.url).await);
    drop(replica);

    // Pointed at another daemon's archive, it refuses to follow and says why.
    let other_url = storage_url(dir.path(), "other-archive");
    let other_config_dir = dir.path().join("other-config");
    std::fs::create_dir_all(&other_config_dir).unwrap();
    let other_config = write_config(
        &other_config_dir,
        &format!("[storage]\nurl = \"{other_url}\"\narchive_interval_ms = 100\n"),
    );
    let other = Daemon::start(&dir.path().join("other"), Some(&other_config));
    make_history(&other.client(), 3).await;
    wait_until_archived(&other).await;
    let misled = Daemon::start_replica(&replica_dir, &other_url, &["--poll-interval-ms", "50"]);
    let client = misled.client();
    let error = eventually(
        Duration::from_secs(60),
        "the replica to stop following",
        || async {
            let progress = client.health().await.ok()?.replica?;
            (!progress.following).then_some(progress.last_poll_error?)
        },
    )
    .await;
    assert!(error.contains("does not continue"), "{error}");
    // Not caught up since it started: its lag counts from there and keeps growing.
    eventually(Duration::from_secs(60), "the lag to grow", || async {
        let progress = client.health().await.ok()?.replica?;
        (progress.lag_seconds > 0.0).then_some(())
    })
    .await;
    assert!(error.contains(&other_url), "{error}");
    assert!(error.contains(replica_dir.to_str().unwrap()), "{error}");
    // The start-up check of every local segment names the first one that differs.
    assert!(
        error.contains("local segment") && error.contains("00000000000000000001.seg"),
        "{error}"
    );
    primary.stop();
}
