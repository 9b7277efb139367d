//! A multipart upload that fails midway is aborted, so the store keeps no parts and no object
//! appears at the key: when the store refuses a part (seen while parts are still being sent,
//! or only by `finish`) and when reading the local file fails.

use super::*;
use crate::archive::faulty_store::{Fault, FaultyStore, Seen};
use object_store::memory::InMemory;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;

/// Parts of 1 KiB, two in flight: a 10 KiB file is ten parts, so a refused part is seen while
/// parts are still being sent, as with 16 MiB parts of a large export.
const TEST_SIZES: UploadSizes = UploadSizes {
    single_put_bytes_max: 4096,
    multipart_chunk_bytes: 1024,
    multipart_concurrency: 2,
};

const KEY: &str = "exports/exp_trajectories_0_9/part-00000.parquet";

/// An archive store over memory that fails as `fault` says, what it saw, and the memory.
fn faulty_store(fault: Fault) -> (ArchiveStore, Arc<Seen>, Arc<InMemory>) {
    let memory = Arc::new(InMemory::new());
    let faulty = FaultyStore::new(memory.clone(), fault);
    let seen = faulty.seen.clone();
    let store = ArchiveStore {
        store: Arc::new(faulty),
        root: ObjectPath::default(),
        log_prefix: ObjectPath::from("log"),
        url: "memory://bucket".to_owned(),
    };
    (store, seen, memory)
}

/// A local file of `len` bytes that differ from part to part.
fn local_file(dir: &Path, len: usize) -> std::path::PathBuf {
    let path = dir.join("part-00000.parquet");
    let bytes: Vec<u8> = (0..len).map(|at| (at % 251) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

async fn assert_no_object(memory: &InMemory, key: &ObjectPath) {
    let found = memory.head(key).await;
    assert!(
        matches!(found, Err(object_store::Error::NotFound { .. })),
        "no object may appear at {key}: {found:?}"
    );
}

#[tokio::test]
async fn a_complete_multipart_upload_puts_the_files_bytes() {
    let temp = tempfile::tempdir().unwrap();
    let local = local_file(temp.path(), 10 * 1024 + 100);
    let (store, seen, memory) = faulty_store(Fault::Nothing);
    let key = ObjectPath::from(KEY);
    upload_file_sized(&store, &local, &key, TEST_SIZES)
        .await
        .unwrap();
    assert_eq!(
        count(&seen.parts_accepted),
        11,
        "ten full parts and the rest"
    );
    assert_eq!(count(&seen.completions), 1);
    assert_eq!(count(&seen.aborts), 0);
    let stored = memory.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored.as_ref(), std::fs::read(&local).unwrap().as_slice());
}

#[tokio::test]
async fn a_part_refused_midway_aborts_the_upload_and_leaves_no_object() {
    let temp = tempfile::tempdir().unwrap();
    let local = local_file(temp.path(), 10 * 1024);
    let (store, seen, memory) = faulty_store(Fault::PartsAfter(3));
    let key = ObjectPath::from(KEY);
    let error = upload_file_sized(&store, &local, &key, TEST_SIZES)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ExportError::Upload { .. }), "{message}");
    assert!(
        message.contains(&format!("memory://bucket (object {KEY})")),
        "{message}"
    );
    assert!(message.contains("is refused"), "{message}");
    assert_eq!(count(&seen.aborts), 1, "the upload must be aborted");
    assert_eq!(count(&seen.completions), 0);
    assert_eq!(count(&seen.parts_accepted), 3);
    // Seen before the file's end: no part after the refused ones was sent.
    assert!(count(&seen.parts_refused) < 7, "{seen:?}");
    assert_no_object(&memory, &key).await;
}

#[tokio::test]
async fn a_refused_last_part_aborts_the_upload_and_leaves_no_object() {
    // Four full parts go while reading; the refused fifth is sent and awaited by `finish`.
    let temp = tempfile::tempdir().unwrap();
    let local = local_file(temp.path(), 4 * 1024 + 512);
    let (store, seen, memory) = faulty_store(Fault::PartsAfter(4));
    let key = ObjectPath::from(KEY);
    let error = upload_file_sized(&store, &local, &key, TEST_SIZES)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(KEY) && message.contains("part 5"),
        "{message}"
    );
    assert_eq!(count(&seen.aborts), 1, "the upload must be aborted");
    assert_eq!(count(&seen.completions), 0);
    assert_no_object(&memory, &key).await;
}

/// Gives `bytes_left` bytes, then fails as a disk read error would.
struct FailingReader {
    bytes_left: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.bytes_left == 0 {
            return Poll::Ready(Err(std::io::Error::other("injected read error")));
        }
        let len = buf.remaining().min(self.bytes_left);
        buf.put_slice(&vec![7; len]);
        self.bytes_left -= len;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_local_read_failure_aborts_the_upload_and_leaves_no_object() {
    let (store, seen, memory) = faulty_store(Fault::Nothing);
    let key = ObjectPath::from(KEY);
    let local = Path::new("/data/exports/exp_trajectories_0_9/part-00000.parquet");
    let mut reader = FailingReader {
        bytes_left: 3 * 1024 + 512,
    };
    let error = upload_multipart(&store, &mut reader, local, &key, TEST_SIZES)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ExportError::Io { .. }), "{message}");
    assert!(
        message.contains(&local.display().to_string()) && message.contains("injected read error"),
        "{message}"
    );
    assert!(count(&seen.parts_accepted) >= 2, "{seen:?}");
    assert_eq!(count(&seen.aborts), 1, "the upload must be aborted");
    assert_eq!(count(&seen.completions), 0);
    assert_no_object(&memory, &key).await;
}
