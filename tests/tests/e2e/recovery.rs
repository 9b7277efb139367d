//! Start-up recovery through the real binary: a torn tail is repaired, corruption mid-log makes
//! the daemon refuse to start with a message naming the file and offset, and a deleted or
//! damaged projection is rebuilt from the log.

use agentd_schemas::api::SubmitJobRequest;
use agentd_tests::{agentd, Daemon};
use std::io::Write;
use std::path::{Path, PathBuf};

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

async fn submit_some(daemon: &Daemon, count: usize) -> Vec<agentd_schemas::JobId> {
    let client = daemon.client();
    let mut ids = Vec::new();
    for n in 0..count {
        let job = SubmitJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            payload: serde_json::json!({"n": n}),
            ..Default::default()
        };
        ids.push(client.submit(&job).await.unwrap().job_id);
    }
    ids
}

#[tokio::test]
async fn a_torn_tail_is_repaired_and_acknowledged_jobs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, None);
    let ids = submit_some(&daemon, 5).await;
    daemon.kill9();
    // A crash mid-write leaves half a frame at the end.
    let last = segments(&data_dir).pop().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap()
        .write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe])
        .unwrap();
    let daemon = Daemon::start(&data_dir, None);
    let client = daemon.client();
    for id in ids {
        client.job(id).await.unwrap();
    }
    // Five submissions after the settings record of the first start.
    assert_eq!(client.health().await.unwrap().durable_lsn.0, 6);
    let more = submit_some(&daemon, 1).await;
    assert_eq!(client.job(more[0]).await.unwrap().job_id, more[0]);
}

#[tokio::test]
async fn corruption_mid_log_refuses_to_start_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, None);
    submit_some(&daemon, 10).await;
    daemon.stop();
    let segment = segments(&data_dir).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // Flip a byte in the payload of an early frame; valid frames follow it.
    let offset = 24 + 20 + 5;
    bytes[offset] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let lines = match Daemon::try_start(&data_dir, None) {
        Ok(_) => panic!("agentd started on a corrupt log"),
        Err(lines) => lines.join("\n"),
    };
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        lines.contains(name),
        "message should name the segment file: {lines}"
    );
    assert!(
        lines.contains("corrupt"),
        "message should say corrupt: {lines}"
    );
    assert!(
        lines.contains("24"),
        "message should give the frame's byte offset: {lines}"
    );
}

#[tokio::test]
async fn a_missing_or_damaged_projection_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start(&data_dir, None);
    let ids = submit_some(&daemon, 20).await;
    let digest: serde_json::Value = reqwest::get(format!("{}/v1/admin/digest", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(daemon.stop(), Some(0));
    let projection = data_dir.join("projections").join("jobs.redb");
    for damage in ["delete", "garbage"] {
        match damage {
            "delete" => std::fs::remove_file(&projection).unwrap(),
            _ => std::fs::write(&projection, b"this is not a redb file").unwrap(),
        }
        let mut daemon = Daemon::start(&data_dir, None);
        let client = daemon.client();
        for id in &ids {
            client.job(*id).await.unwrap();
        }
        let again: serde_json::Value = reqwest::get(format!("{}/v1/admin/digest", daemon.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again, digest, "after {damage}");
        // In place, a rebuild would replace the running daemon's projection files: refused.
        let refused = agentd(&["rebuild", "--data-dir", data_dir.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{stderr}");
        assert!(stderr.contains("an agentd is running on"), "{stderr}");
        assert!(stderr.contains("--out DIR"), "{stderr}");
        daemon.stop();
    }
    // --out naming the data directory itself would replace its projection: refused.
    let refused = agentd(&[
        "rebuild",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--out",
        data_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("is the data directory itself"), "{stderr}");
    // Offline rebuilds of the same log print the same digests every time.
    let first = agentd(&[
        "rebuild",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--json",
    ]);
    let second = agentd(&[
        "rebuild",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(first.stdout, second.stdout);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["jobs"], digest["projections"]["jobs"]);
    assert_eq!(report["queue"], digest["projections"]["queue"]);
}
