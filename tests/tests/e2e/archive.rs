//! The log archive and restore through the real binary, on a `file://` storage URL, or on a real
//! S3 server when scripts/test-s3 sets `AGENTD_TEST_STORAGE_URL`: jobs are archived while the
//! daemon runs, the data directory is lost (SIGKILL, then deleted), `agentd restore` brings the
//! log back and the daemon started on it shows every acknowledged job as it was, with the same
//! digests as before and as an offline rebuild. Also: a point-in-time restore, a bad URL, and the
//! faults: the store unreachable for a while (appends go on, the lag grows, then the archive
//! catches up), a missing or truncated object (restore refuses it; the archiver started again
//! puts it back) and a corrupted one (restore refuses it, naming the object).

use super::storage::{lease_one, storage_config, storage_url, views, wait_until_archived};
// `exports.rs` reaches these as `super::archive::{Bucket, metric}`.
pub(crate) use super::storage::{metric, Bucket};
use agentd_client::Client;
use agentd_schemas::api::SubmitJobRequest;
use agentd_schemas::JobId;
use agentd_tests::{agentd, eventually, write_config, Daemon};
use serde_json::{json, Value};
use std::time::Duration;

/// Makes the store unreachable for a while: a `file://` root is moved away and a plain file put
/// in its place (every put fails), an S3 server is stopped with SIGSTOP (requests hang until
/// SIGCONT, as behind a network partition; scripts/test-s3 gives its pid and runs this test on
/// its own, since every test of the run shares that server).
struct Outage {
    how: Option<OutageKind>,
}

enum OutageKind {
    Dir {
        root: std::path::PathBuf,
        away: std::path::PathBuf,
    },
    Process(nix::unistd::Pid),
}

impl Outage {
    /// `None` for an S3 URL without `AGENTD_TEST_S3_PID`.
    fn begin(url: &str) -> Option<Outage> {
        let how = match Bucket::of(url) {
            Bucket::Dir(root) => {
                let away = root.with_extension("away");
                std::fs::rename(&root, &away).unwrap();
                std::fs::write(&root, b"not a directory").unwrap();
                OutageKind::Dir { root, away }
            }
            Bucket::S3 { .. } => {
                let pid = std::env::var("AGENTD_TEST_S3_PID").ok()?;
                let pid: i32 = pid.parse().ok()?;
                let pid = nix::unistd::Pid::from_raw(pid);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
                OutageKind::Process(pid)
            }
        };
        Some(Outage { how: Some(how) })
    }

    fn end(mut self) {
        match self.how.take() {
            Some(OutageKind::Dir { root, away }) => {
                std::fs::remove_file(&root).unwrap();
                std::fs::rename(away, root).unwrap();
            }
            Some(OutageKind::Process(pid)) => {
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            }
            None => {}
        }
    }
}

impl Drop for Outage {
    /// A failed assertion during the outage must not leave the S3 server stopped.
    fn drop(&mut self) {
        if let Some(OutageKind::Process(pid)) = &self.how {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGCONT);
        }
    }
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
        let lease = lease_one(client, "archive").await;
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

async fn digest(url: &str) -> Value {
    reqwest::get(format!("{url}/v1/admin/digest"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let client = daemon.client();
    let ids = make_history(&client).await;
    let archived_lsn = wait_until_archived(&daemon).await;
    let before = views(&client, &ids).await;
    let live_digest = digest(&daemon.url).await;
    assert_eq!(live_digest["lsn"], json!(archived_lsn));
    daemon.kill9();
    // The 4 KiB segments rolled: sealed segments are whole objects; the active one is held as
    // chunk objects, and no chunk of a sealed segment is left.
    let bucket = Bucket::of(&url);
    let manifest = bucket.manifest().await;
    let segments = manifest["segments"].as_array().unwrap();
    assert!(segments.len() > 3, "{manifest:#}");
    let active = segments.last().unwrap();
    let objects = bucket.log_objects().await;
    for segment in &segments[..segments.len() - 1] {
        assert_eq!(segment["sealed"], json!(true), "{manifest:#}");
        assert!(segment.get("parts").is_none(), "{manifest:#}");
        let name = segment["name"].as_str().unwrap();
        assert!(objects.contains(&name.to_owned()), "{objects:?}");
    }
    for object in objects.iter().filter(|object| object.contains(".part-")) {
        assert!(
            object.starts_with(active["name"].as_str().unwrap()),
            "chunks of sealed segments are deleted: {objects:?}"
        );
    }
    if active["sealed"] == json!(false) {
        assert!(
            !active["parts"].as_array().unwrap().is_empty(),
            "{active:#}"
        );
    }

    std::fs::remove_dir_all(&data_dir).unwrap();
    let data = data_dir.to_str().unwrap();
    let printed = run_ok(&["restore", "--from", &url, "--data-dir", data]);
    assert!(
        printed.contains(&format!("restored lsn 1 to {archived_lsn}")),
        "{printed}"
    );
    let refused = run_refused(&["restore", "--from", &url, "--data-dir", data]);
    assert!(refused.contains("already holds a log"), "{refused}");
    // A point in time inside the last (chunked) segment: the chunks are joined, then cut.
    let cut = archived_lsn - 1;
    let printed = run_ok(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        dir.path().join("cut").to_str().unwrap(),
        "--until-lsn",
        &cut.to_string(),
    ]);
    assert!(
        printed.contains(&format!("restored lsn 1 to {cut}")),
        "{printed}"
    );

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
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
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
    // The byte count is the restored log's, after the cut.
    let on_disk: u64 = std::fs::read_dir(until.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        printed.contains(&format!(" {on_disk} bytes;")),
        "{printed} (the log holds {on_disk} bytes)"
    );
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
    // A refused restore leaves nothing behind: the directory it created is gone.
    assert!(
        !dir.path().join("past").exists(),
        "no directory holding only a LOCK"
    );
    let zero = run_refused(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        dir.path().join("zero").to_str().unwrap(),
        "--until-lsn",
        "0",
    ]);
    assert!(zero.contains("--until-lsn 0 keeps no record"), "{zero}");
    assert!(!dir.path().join("zero").exists());
    // A directory that existed keeps exactly what it held.
    let kept = dir.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("notes.txt"), b"mine").unwrap();
    run_refused(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        kept.to_str().unwrap(),
        "--until-lsn",
        &(archived_lsn + 1).to_string(),
    ]);
    let left: Vec<String> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["notes.txt".to_owned()]);

    // A corrupted archived segment: restore refuses it, naming the object.
    let bucket = Bucket::of(&url);
    let first = "log/00000000000000000001.seg";
    let original = bucket.get(first).await.unwrap();
    let mut bytes = original.clone();
    bytes[60] ^= 0xff;
    bucket.put(first, bytes).await;
    let damaged = run_refused(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        dir.path().join("damaged").to_str().unwrap(),
    ]);
    assert!(
        damaged.contains("(object ")
            && damaged.contains("log/00000000000000000001.seg) is damaged"),
        "{damaged}"
    );
    assert!(damaged.contains("sha256"), "{damaged}");
    assert!(
        !dir.path().join("damaged").exists(),
        "the staging directory and the LOCK are cleaned up"
    );
    bucket.put(first, original).await;

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

/// A partial upload: an object the manifest names is gone, another is cut short. Restore
/// refuses both, naming the object; the archiver, started again on the original data
/// directory, puts them back from the local log, and restore then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_truncated_object_is_refused_then_repaired_by_the_archiver() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, Some(&config));
    let ids = make_history(&daemon.client()).await;
    let archived_lsn = wait_until_archived(&daemon).await;
    assert_eq!(daemon.stop(), Some(0));

    let bucket = Bucket::of(&url);
    let manifest = bucket.manifest().await;
    let second = format!("log/{}", manifest["segments"][1]["name"].as_str().unwrap());
    let third = format!("log/{}", manifest["segments"][2]["name"].as_str().unwrap());
    bucket.delete(&second).await;
    let restore = |name: &str| {
        let target = dir.path().join(name);
        agentd(&[
            "restore",
            "--from",
            &url,
            "--data-dir",
            target.to_str().unwrap(),
        ])
    };
    let refused = String::from_utf8_lossy(&restore("missing").stderr).into_owned();
    assert!(
        refused.contains(&format!("{second}) is damaged: it is missing")),
        "{refused}"
    );
    let third_bytes = bucket.get(&third).await.unwrap();
    bucket.put(&third, third_bytes[..100].to_vec()).await;
    bucket.put(&second, b"x".to_vec()).await;
    let refused = String::from_utf8_lossy(&restore("short").stderr).into_owned();
    assert!(
        refused.contains(&format!("{second}) is damaged: it is 1 bytes"))
            && refused.contains("partial upload"),
        "{refused}"
    );

    let daemon = Daemon::start(&data_dir, Some(&config));
    let archived_lsn = wait_until_archived(&daemon).await.max(archived_lsn);
    eventually(
        Duration::from_secs(30),
        "the archiver to put the objects back",
        || async {
            let second_len = bucket.get(&second).await?.len();
            let third_len = bucket.get(&third).await?.len();
            (second_len > 1 && third_len == third_bytes.len()).then_some(())
        },
    )
    .await;
    assert!(
        daemon.stderr_text().contains("repaired an archived object"),
        "{}",
        daemon.stderr_text()
    );
    drop(daemon);
    let restored = restore("repaired");
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let daemon = Daemon::start(&dir.path().join("repaired"), None);
    assert_eq!(
        daemon.client().health().await.unwrap().durable_lsn.0,
        archived_lsn
    );
    assert_eq!(views(&daemon.client(), &ids).await.len(), ids.len());
}

/// The store unreachable for a while: appends go on, the lag and the pending bytes grow, and
/// once the store is back the archive catches up with everything, which a restore then shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_while_the_store_is_down_and_the_archive_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = storage_url(dir.path(), "archive");
    let config = storage_config(dir.path(), &url, "");
    let mut daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let client = daemon.client();
    let mut ids = make_history(&client).await;
    let before = wait_until_archived(&daemon).await;

    let Some(outage) = Outage::begin(&url) else {
        eprintln!("skipped: no AGENTD_TEST_S3_PID to stop the S3 server with");
        return;
    };
    for n in 0..30 {
        let job = SubmitJobRequest {
            queue: "archive".into(),
            kind: "k".into(),
            payload: json!({"during": n, "text": "y".repeat(200)}),
            ..Default::default()
        };
        let submitted = tokio::time::timeout(Duration::from_secs(10), client.submit(&job))
            .await
            .expect("appends do not wait for the archive");
        ids.push(submitted.unwrap().job_id);
    }
    let durable = client.health().await.unwrap().durable_lsn.0;
    eventually(Duration::from_secs(60), "the lag to show", || async {
        let lag = metric(&daemon.url, "agentd_archive_lag_seconds").await?;
        let pending = metric(&daemon.url, "agentd_archive_pending_bytes").await?;
        let archived = metric(&daemon.url, "agentd_archive_last_lsn").await?;
        (lag >= 1.0 && pending > 0.0 && (archived as u64) < durable).then_some(())
    })
    .await;
    assert!(
        (metric(&daemon.url, "agentd_archive_last_lsn")
            .await
            .unwrap() as u64)
            <= before + 1,
        "nothing reached the store while it was down"
    );
    outage.end();
    let after = wait_until_archived(&daemon).await;
    assert!(after >= durable);
    daemon.kill9();

    let restored_dir = dir.path().join("restored");
    run_ok(&[
        "restore",
        "--from",
        &url,
        "--data-dir",
        restored_dir.to_str().unwrap(),
    ]);
    let restored = Daemon::start(&restored_dir, None);
    assert_eq!(
        restored.client().health().await.unwrap().durable_lsn.0,
        after
    );
    for id in &ids {
        assert!(restored.client().job(*id).await.is_ok(), "job {id} is back");
    }
}
