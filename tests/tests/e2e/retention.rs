//! Local retention through the real binary on a `file://` storage URL: with a tiny
//! `local_retention_ms` and small segments, archived segments are deleted from the data disk
//! while the daemon runs; after a SIGKILL and after a clean stop the daemon replays them from
//! the archive and shows every acknowledged job as it was, `agentd rebuild` gives the live
//! digests, and `GET /v1/events?after=0` still returns the first records. With the archive
//! gone, the start is refused with an error naming the URL; retention without a URL is refused.

use super::storage::{lease_one, metric, segment_names, storage_config, views};
use agentd_client::Client;
use agentd_schemas::api::{EventsResponse, SubmitJobRequest};
use agentd_schemas::JobId;
use agentd_tests::{eventually, get_typed, write_config, Daemon};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Submits 120 jobs (about 30 segments of log) and completes a third of them.
async fn make_history(client: &Client) -> Vec<JobId> {
    let mut ids = Vec::new();
    for n in 0..120 {
        let job = SubmitJobRequest {
            queue: "retained".into(),
            kind: "k".into(),
            payload: json!({"n": n, "text": "x".repeat(200)}),
            ..Default::default()
        };
        ids.push(client.submit(&job).await.unwrap().job_id);
    }
    for n in 0..40 {
        let lease = lease_one(client, "retained").await;
        client
            .complete(lease.lease_id, Some(json!({"n": n})))
            .await
            .unwrap();
    }
    ids
}

async fn first_events(url: &str) -> EventsResponse {
    get_typed(url, "/v1/events?after=0&limit=20").await
}

/// Waits until retention deleted at least `count` segments (the metric and the directory agree).
async fn wait_for_evictions(daemon: &Daemon, data_dir: &Path, count: f64) -> u64 {
    eventually(
        Duration::from_secs(120),
        "archived segments to be deleted locally",
        || async {
            let evicted = metric(&daemon.url, "agentd_log_segments_evicted_total").await?;
            let first = metric(&daemon.url, "agentd_log_local_first_lsn").await?;
            let oldest = segment_names(&data_dir.join("log")).first()?.clone();
            (evicted >= count && first > 1.0 && oldest == format!("{:020}.seg", first as u64))
                .then_some(first as u64)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_segments_leave_the_disk_and_are_read_back_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("archive").display());
    // Every archived segment older than 1 ms goes; 4 KiB segments roll every few jobs.
    let config = storage_config(dir.path(), &url, "local_retention_ms = 1\n");
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let client = daemon.client();
    let ids = make_history(&client).await;
    let local_first_lsn = wait_for_evictions(&daemon, &data_dir, 3.0).await;
    assert!(!segment_names(&data_dir.join("log")).contains(&format!("{:020}.seg", 1)));
    assert!(data_dir.join("log/local-start.json").exists());
    let before = views(&client, &ids).await;
    let live = agentd_tests::digest(&daemon.url).await;
    // The first records come back from the archive.
    let events = first_events(&daemon.url).await;
    assert_eq!(events.events[0]["lsn"], json!(1), "{:?}", events.events[0]);
    assert!(local_first_lsn > 1, "lsn 1 was read back from the archive");

    // SIGKILL, then a start that replays the archived segments first.
    daemon.kill9();
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let client = daemon.client();
    assert_eq!(views(&client, &ids).await, before);
    assert_eq!(agentd_tests::digest(&daemon.url).await, live);
    assert_eq!(first_events(&daemon.url).await, events);
    let downloaded = metric(&daemon.url, "agentd_archive_segments_read_total").await;
    assert!(
        downloaded.is_some_and(|segments| segments >= 3.0),
        "{downloaded:?}"
    );

    // An offline rebuild reads the archive the log's marker names.
    let rebuilt = agentd_tests::rebuild(&data_dir, Some(&config), &dir.path().join("rebuilt"));
    assert_eq!(rebuilt.lsn, live.lsn);
    assert_eq!(rebuilt.projections, live.projections);

    // A clean stop and start: the same.
    assert_eq!(daemon.stop(), Some(0));
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    assert_eq!(views(&daemon.client(), &ids).await, before);
    assert_eq!(daemon.stop(), Some(0));

    // The archive unreachable: the start is refused, naming the URL, and nothing is served.
    let moved = dir.path().join("archive.moved");
    std::fs::rename(dir.path().join("archive"), &moved).unwrap();
    let refused = Daemon::try_start(&data_dir, Some(&config))
        .err()
        .expect("a start without the archived segments must fail")
        .join("\n");
    assert!(refused.contains(&url), "{refused}");
    assert!(refused.contains("manifest"), "{refused}");
    std::fs::remove_dir_all(dir.path().join("archive")).ok();
    std::fs::rename(&moved, dir.path().join("archive")).unwrap();
    let daemon = Daemon::start(&data_dir, Some(&config));
    assert_eq!(views(&daemon.client(), &ids).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_without_a_storage_url_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[storage]\nlocal_retention_ms = 60000\n");
    let refused = Daemon::try_start(&dir.path().join("data"), Some(&config))
        .err()
        .expect("retention needs a url")
        .join("\n");
    assert!(refused.contains("needs [storage] url"), "{refused}");
}
