//! A full disk is an operating error: appends are rejected with `DiskFull`, no partial frame is
//! left behind, reads keep working, and appends succeed again once space returns.
//!
//! Needs root to mount a small tmpfs; without it the test says why and passes.

use super::*;
use crate::log::AppendError;
use std::process::Command;

const TMPFS_BYTES: usize = 256 * 1024;
const FILLER_BYTES: usize = 64 * 1024;
const PAYLOAD_BYTES: usize = 1000;

/// A tmpfs mounted for the test, unmounted on drop even when the test panics.
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, size_bytes: usize) -> Result<TmpfsMount, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file open (a panicking test): detach lazily instead.
            let lazily = Command::new("umount").arg("-l").arg(&self.path).status();
            eprintln!("disk_full test: plain umount failed, lazy umount: {lazily:?}");
        }
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

fn frame_payload(lsn: u64) -> Vec<u8> {
    vec![lsn as u8; PAYLOAD_BYTES]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_rejects_appends_without_partial_frames_and_recovers_when_space_returns() {
    if effective_uid() != Some(0) {
        println!("skipping disk_full test: mounting a tmpfs needs root");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let mount = match TmpfsMount::mount(temp.path(), TMPFS_BYTES) {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipping disk_full test: {why}");
            return;
        }
    };
    fill_the_disk_then_free_it(&mount.path).await;
    drop(mount);
}

async fn fill_the_disk_then_free_it(mount: &Path) {
    let dir = mount.join("log");
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0xFF; FILLER_BYTES]).unwrap();
    let options = || {
        let mut options = test_options(&dir);
        // Small segments, so the disk also fills up while rolling.
        options.segment_bytes_max = 16 * 1024;
        options
    };
    let (log, _) = open(options()).unwrap();
    let writer = log.start_writer();

    // Append one at a time until the disk is full.
    let mut last_acknowledged = 0;
    loop {
        let lsn = last_acknowledged + 1;
        match writer.append(Lsn(lsn), 1, frame_payload(lsn)).await {
            Ok(acknowledged) => {
                assert_eq!(acknowledged, Lsn(lsn));
                last_acknowledged = lsn;
            }
            Err(AppendError::DiskFull) => break,
            Err(other) => panic!("append {lsn}: {other}"),
        }
        assert!(lsn < 1000, "a {TMPFS_BYTES}-byte tmpfs never filled up");
    }
    let next_lsn = last_acknowledged + 1;
    println!("disk full after {last_acknowledged} frames");
    assert!(last_acknowledged > 10);
    assert_eq!(writer.durable_lsn(), Lsn(last_acknowledged));

    // Still full: the same lsn is rejected again; the writer still expects it.
    let payload = frame_payload(next_lsn);
    assert_eq!(
        writer.append(Lsn(next_lsn), 1, payload.clone()).await,
        Err(AppendError::DiskFull)
    );
    assert_eq!(
        writer.append(Lsn(next_lsn + 1), 1, payload.clone()).await,
        Err(AppendError::OutOfSequence {
            expected: Lsn(next_lsn),
            got: Lsn(next_lsn + 1)
        })
    );
    // A pipelined burst: the batch that hits the full disk answers DiskFull, frames queued
    // behind it answer OutOfSequence (the writer went back to the batch's first lsn).
    let mut receivers = Vec::new();
    for lsn in next_lsn..next_lsn + 20 {
        receivers.push(
            writer
                .enqueue(Lsn(lsn), 1, frame_payload(lsn))
                .await
                .unwrap(),
        );
    }
    for receiver in receivers {
        let outcome = receiver.await.unwrap();
        assert!(
            matches!(
                outcome,
                Err(AppendError::DiskFull | AppendError::OutOfSequence { .. })
            ),
            "{outcome:?}"
        );
    }

    // Reads keep working while the disk is full.
    let expected: Vec<RawFrame> = (1..=last_acknowledged)
        .map(|lsn| RawFrame {
            lsn: Lsn(lsn),
            format_version: 1,
            payload: frame_payload(lsn),
        })
        .collect();
    assert_eq!(read_all(&dir), expected);

    // No partial frame: recovery finds exactly the acknowledged frames and nothing torn.
    writer.shutdown().await;
    let (log, report) = open(options()).unwrap();
    assert_eq!(report.last_lsn, Lsn(last_acknowledged));
    assert_eq!(report.truncated, None);

    // Space returns: appends go on from the next lsn.
    std::fs::remove_file(&filler).unwrap();
    let writer = log.start_writer();
    for lsn in next_lsn..next_lsn + 10 {
        assert_eq!(
            writer.append(Lsn(lsn), 1, frame_payload(lsn)).await,
            Ok(Lsn(lsn))
        );
    }
    writer.shutdown().await;
    let (_log, report) = open(options()).unwrap();
    assert_eq!(report.last_lsn, Lsn(next_lsn + 9));
    assert_eq!(report.truncated, None);
    assert_eq!(read_all(&dir).len() as u64, next_lsn + 9);
}
