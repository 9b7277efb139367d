//! The log archive and restore through the real binary, on a `file://` storage URL: jobs are
//! archived while the daemon runs, the data directory is lost (SIGKILL, then deleted), `agentd
//! restore` brings the log back and the daemon started on it shows every acknowledged job as it
//! was, with the same digests as before and as an offline rebuild. Also: a point-in-time restore,
//! a damaged archived segment and a bad URL are refused with messages naming what is wrong.

use agentd_client::Client;
use agentd_schemas::api::{LeaseRequest, SubmitJobRequest};
use agentd_schemas::JobId;
use agentd_tests::{agentd, eventually, write_config, Daemon};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Small segments so the log rolls many times (sealed uploads) and a short interval so the
/// active prefix is archived quickly.
fn archive_config(dir: &Path, url: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[storage]\nurl = \"{url}\"\narchive_interval_ms = 100\n\n[log]\nsegment_bytes_max = 4096\n\n\
             [queue]\nretry_backoff_base_ms = 10\nretry_backoff_max_ms = 50\n"
        ),
    )
}

/// `AGENTD_TEST_STORAGE_URL` (scripts/test-s3 sets an s3:// bucket on a local S3 server) with a
/// prefix of this run's own, else a `file://` directory under `dir`.
fn storage_url(dir: &Path) -> String {
    match std::env::var("AGENTD_TEST_STORAGE_URL") {
        Ok(base) => format!("{}/run-{}", base.trim_end_matches('/'), std::process::id()),
        Err(_) => format!("file://{}", dir.join("archive").display()),
    }
}

/// The value of an unlabelled metric in a `/metrics` scrape.
async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Submits 40 jobs, completes 15, fails 5 for good and 5 to be retried, cancels 3.
async fn make_history(client: &Client) -> Vec<JobId> {
    let mut ids = Vec::new();
    for n in 0..40 {
        let job = SubmitJobRequest {
            queue: "archive".into(),
            kind: "k".into(),
            payload: json!({"n": n, "text": "x".repeat(60)}),
            max_attempts: Some(2),
            ..Default::default()
        };
        ids.push(client.submit(&job).await.unwrap().job_id);
    }
    for n in 0..25 {
        let lease = client
            .lease(&LeaseRequest {
                worker_id: "w".into(),
                queues: vec!["archive".into()],
                tags: None,
                max_jobs: Some(1),
                wait_ms: Some(0),
            })
            .await
            .unwrap()
            .leases
            .pop()
            .expect("a queued job");
        match n % 5 {
            0 => client.fail(lease.lease_id, "flaky", true).await.map(|_| ()),
            1 => client
                .fail(lease.lease_id, "broken", false)
                .await
                .map(|_| ()),
            _ => client
                .complete(lease.lease_id, Some(json!({"n": n})))
                .await
                .map(|_| ()),
        }
        .unwrap();
    }
    for id in &ids[37..] {
        client.cancel(*id).await.unwrap();
    }
    ids
}

async fn views(client: &Client, ids: &[JobId]) -> Vec<Value> {
    let mut views = Vec::new();
    for id in ids {
        views.push(serde_json::to_value(client.job(*id).await.unwrap()).unwrap());
    }
    views
}

async fn digest(url: &str) -> Value {
    reqwest::get(format!("{url}/v1/admin/digest"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the archive holds the whole durable log and nothing is pending.
async fn wait_until_archived(daemon: &Daemon) -> u64 {
    let client = daemon.client();
    eventually(
        Duration::from_secs(30),
        "the archive to catch up",
        || async {
            let durable = client.health().await.ok()?.durable_lsn.0;
            let archived = metric(&daemon.url, "agentd_archive_last_lsn").await?;
            let pending = metric(&daemon.url, "agentd_archive_pending_bytes").await?;
            let segments = metric(&daemon.url, "agentd_archive_pending_segments").await?;
            let lag = metric(&daemon.url, "agentd_archive_lag_seconds").await?;
            (archived as u64 == durable && pending == 0.0 && segments == 0.0 && lag == 0.0)
                .then_some(durable)
        },
    )
    .await
}

fn run_ok(args: &[&str]) -> String {
    let output = agentd(args);
    assert!(
        output.status.success(),
        "agentd {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_refused(args: &[&str]) -> String {
    let output = agentd(args);
    assert!(
        !output.status.success(),
        "agentd {args:?} should have failed"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_dir_is_restored_from_the_archive_with_every_acknowledged_job() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path());
    let config = archive_config(dir.path(), &url);
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let client = daemon.client();
    let ids = make_history(&client).await;
    let archived_lsn = wait_until_archived(&daemon).await;
    let before = views(&client, &ids).await;
    let live_digest = digest(&daemon.url).await;
    assert_eq!(live_digest["lsn"], json!(archived_lsn));
    if let Some(archive) = url.strip_prefix("file://") {
        let objects = std::fs::read_dir(Path::new(archive).join("log"))
            .unwrap()
            .count();
        assert!(objects > 3, "the 4 KiB segments rolled: {objects} objects");
    }

    daemon.kill9();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let data = data_dir.to_str().unwrap();
    let printed = run_ok(&["restore", "--from", &url, "--data-dir", data]);
    assert!(
        printed.contains(&format!("restored lsn 1 to {archived_lsn}")),
        "{printed}"
    );
    let refused = run_refused(&["restore", "--from", &url, "--data-dir", data]);
    assert!(refused.contains("already holds a log"), "{refused}");

    let rebuilt: Value = serde_json::from_str(&run_ok(&[
        "rebuild",
        "--data-dir",
        data,
        "--out",
        dir.path().join("rebuilt").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(rebuilt["lsn"], live_digest["lsn"]);
    assert_eq!(rebuilt["jobs"], live_digest["projections"]["jobs"]);
    assert_eq!(rebuilt["queue"], live_digest["projections"]["queue"]);

    // The same config: the archiver finds its manifest continuing the restored log.
    let daemon = Daemon::start(&data_dir, Some(&config));
    let client = daemon.client();
    assert_eq!(client.health().await.unwrap().durable_lsn.0, archived_lsn);
    assert_eq!(views(&client, &ids).await, before);
    assert_eq!(digest(&daemon.url).await, live_digest);
    let more = client
        .submit(&SubmitJobRequest {
            queue: "archive".into(),
            kind: "k".into(),
            payload: json!({"after": "restore"}),
            ..Default::default()
        })
        .await
        .unwrap();
    let after = wait_until_archived(&daemon).await;
    assert!(after > archived_lsn, "archiving went on after the restore");
    assert!(
        !daemon.stderr_text().contains("does not continue"),
        "{}",
        daemon.stderr_text()
    );
    assert_eq!(client.job(more.job_id).await.unwrap().job_id, more.job_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_damage_and_bad_urls_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let url = format!("file://{}", archive.display());
    let config = archive_config(dir.path(), &url);
    let mut daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let client = daemon.client();
    let ids = make_history(&client).await;
    let archived_lsn = wait_until_archived(&daemon).await;
    assert_eq!(daemon.stop(), Some(0));

    // Up to the 20th submission (the settings record is lsn 1): the later jobs do not exist,
    // and the restored log ends exactly there.
    let until = dir.path().join("until");
    let printed = run_ok(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        until.to_str().unwrap(),
        "--until-lsn",
        "21",
    ]);
    assert!(printed.contains("restored lsn 1 to 21"), "{printed}");
    let restored = Daemon::start(&until, None);
    let client = restored.client();
    assert_eq!(client.health().await.unwrap().durable_lsn.0, 21);
    assert!(client.job(ids[19]).await.is_ok());
    assert!(
        client.job(ids[20]).await.is_err(),
        "job 21 was submitted after lsn 21"
    );
    drop(restored);

    let past = run_refused(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        dir.path().join("past").to_str().unwrap(),
        "--until-lsn",
        &(archived_lsn + 1).to_string(),
    ]);
    assert!(
        past.contains(&format!("holds lsns 1 to {archived_lsn}")),
        "{past}"
    );

    let first = archive.join("log/00000000000000000001.seg");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[60] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();
    let damaged = run_refused(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        dir.path().join("damaged").to_str().unwrap(),
    ]);
    assert!(
        damaged.contains("(object log/00000000000000000001.seg) is damaged"),
        "{damaged}"
    );
    assert!(damaged.contains("sha256"), "{damaged}");

    let empty = format!("file://{}", dir.path().join("nothing").display());
    let missing = run_refused(&[
        "restore",
        "--from",
        &empty,
        "--data-dir",
        dir.path().join("d2").to_str().unwrap(),
    ]);
    assert!(missing.contains("no log archive at"), "{missing}");

    let bad = write_config(dir.path(), "[storage]\nurl = \"ftp://host/x\"\n");
    let lines = match Daemon::try_start(&dir.path().join("data3"), Some(&bad)) {
        Ok(_) => panic!("agentd started with an ftp:// storage URL"),
        Err(lines) => lines.join("\n"),
    };
    assert!(lines.contains("unsupported scheme \"ftp\""), "{lines}");
}
