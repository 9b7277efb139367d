//! Restarts behind a snapshot of the sequencer state, through the real binary: a clean stop and
//! a SIGKILL both restart from the newest snapshot plus the log after it, into the state a full
//! replay (`agentd rebuild`) gives; a damaged or foreign snapshot is skipped and the log replayed
//! whole. The domain projections load behind the job API and answer once loaded.

use agentd_schemas::api::SubmitJobRequest;
use agentd_schemas::JobId;
use agentd_tests::{digest, eventually, post_json, rebuild, write_config, Daemon};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Small enough that a few dozen requests write several snapshots.
const CONFIG: &str = "[log]\nsnapshot_every_records = 5\n";

fn snapshots(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("projections/snapshots")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
        .collect();
    files.sort();
    files
}

/// The snapshot start-up loaded (0: none), from `agentd_startup_snapshot_lsn`.
async fn loaded_snapshot_lsn(daemon: &Daemon) -> u64 {
    crate::storage::metric(&daemon.url, "agentd_startup_snapshot_lsn")
        .await
        .expect("the gauge is published") as u64
}

/// Jobs in every state, and domain facts (steps of one task), for `rounds`.
async fn work(daemon: &Daemon, rounds: std::ops::Range<u64>) -> Vec<JobId> {
    let client = daemon.client();
    let mut ids = Vec::new();
    for round in rounds {
        let job = SubmitJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            payload: json!({ "round": round }),
            idempotency_key: Some(format!("key-{round}")),
            ..Default::default()
        };
        ids.push(client.submit(&job).await.unwrap().job_id);
        if round % 3 == 0 {
            let grants = client
                .lease(&agentd_schemas::api::LeaseRequest {
                    worker_id: "w".into(),
                    queues: vec!["q".into()],
                    tags: None,
                    max_jobs: Some(1),
                    wait_ms: None,
                })
                .await
                .unwrap();
            for grant in grants.leases {
                client
                    .complete(grant.lease_id, Some(json!({ "ok": round })))
                    .await
                    .unwrap();
            }
        }
        let body = json!({
            "step": round, "model": "m", "policy_version": "p1",
            "action": {"kind": "rule", "yaml": "rule: {pattern: x}"},
        });
        let (status, answer) = post_json(&daemon.url, "/v1/tasks/task-s/steps", body).await;
        assert_eq!(status, 200, "{answer}");
    }
    ids
}

/// The live digests after a restart equal a full replay's, and the restarted daemon goes on
/// numbering jobs where the log left off and recognizes old idempotency keys.
async fn assert_restarted_state_is_the_logs(daemon: &mut Daemon, data_dir: &Path, out: &Path) {
    let live = digest(&daemon.url).await;
    let client = daemon.client();
    // The digest answers only once the domain projections are loaded; health says so too.
    assert!(client.health().await.unwrap().domain_loaded);
    let repeat = SubmitJobRequest {
        queue: "q".into(),
        kind: "k".into(),
        payload: json!({ "round": 0 }),
        idempotency_key: Some("key-0".into()),
        ..Default::default()
    };
    assert_eq!(client.submit(&repeat).await.unwrap().job_id, JobId(1));
    assert_eq!(daemon.stop(), Some(0));
    let rebuilt = rebuild(data_dir, None, out);
    assert_eq!(live.lsn, rebuilt.lsn);
    assert_eq!(live.projections, rebuilt.projections);
}

#[tokio::test]
async fn a_clean_restart_loads_the_snapshot_of_the_stop_and_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    assert_eq!(
        crate::storage::metric(&daemon.url, "agentd_snapshot_lsn").await,
        Some(0.0),
        "a fresh daemon exposes agentd_snapshot_lsn 0 before its first snapshot"
    );
    let ids = work(&daemon, 0..12).await;
    let before = digest(&daemon.url).await;
    assert_eq!(daemon.stop(), Some(0));
    let newest = snapshots(&data_dir)
        .pop()
        .expect("a snapshot at the clean stop");
    assert!(
        newest
            .to_string_lossy()
            .ends_with(&format!("{:020}.snap", before.lsn.0)),
        "the stop's snapshot is at the last lsn {}: {newest:?}",
        before.lsn
    );
    assert!(
        snapshots(&data_dir).len() <= 2,
        "older snapshots are removed"
    );

    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let after = digest(&daemon.url).await;
    assert_eq!(after.projections, before.projections);
    assert_eq!(loaded_snapshot_lsn(&daemon).await, before.lsn.0);
    let next = daemon
        .client()
        .submit(&SubmitJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            payload: json!({}),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.job_id.0, ids.last().unwrap().0 + 1, "job ids go on");
    assert_restarted_state_is_the_logs(&mut daemon, &data_dir, &dir.path().join("rebuilt")).await;
}

#[tokio::test]
async fn after_a_sigkill_the_newest_periodic_snapshot_and_the_log_after_it_give_the_full_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    work(&daemon, 0..15).await;
    eventually(Duration::from_secs(10), "a periodic snapshot", || async {
        (!snapshots(&data_dir).is_empty()).then_some(())
    })
    .await;
    work(&daemon, 15..17).await;
    daemon.kill9();

    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let loaded = loaded_snapshot_lsn(&daemon).await;
    assert!(loaded > 0, "a periodic snapshot was loaded");
    work(&daemon, 17..18).await;
    assert_restarted_state_is_the_logs(&mut daemon, &data_dir, &dir.path().join("rebuilt")).await;
}

#[tokio::test]
async fn damaged_and_foreign_snapshots_are_skipped_and_the_log_is_replayed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    // Another data directory's snapshot, at an lsn this log also holds (another record there).
    let other_dir = dir.path().join("other");
    let mut other = Daemon::start(&other_dir, Some(&config));
    work(&other, 0..2).await;
    assert_eq!(other.stop(), Some(0));
    let foreign = snapshots(&other_dir).pop().unwrap();

    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    work(&daemon, 0..6).await;
    let before = digest(&daemon.url).await;
    assert_eq!(daemon.stop(), Some(0));
    for snapshot in snapshots(&data_dir) {
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&snapshot, bytes).unwrap();
    }
    let foreign_name = foreign.file_name().unwrap();
    std::fs::copy(
        &foreign,
        data_dir.join("projections/snapshots").join(foreign_name),
    )
    .unwrap();

    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let after = digest(&daemon.url).await;
    assert_eq!(after.projections, before.projections);
    assert_eq!(
        loaded_snapshot_lsn(&daemon).await,
        0,
        "every snapshot was skipped"
    );
    let stderr = daemon.stderr_text();
    assert!(
        stderr.matches("snapshot skipped").count() >= 3,
        "the skipped files are named: {stderr}"
    );
    assert_restarted_state_is_the_logs(&mut daemon, &data_dir, &dir.path().join("rebuilt")).await;
}
