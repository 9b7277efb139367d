//! Chunk objects no manifest names are collected: those a restart's listing finds (left by a
//! pass stopped between its manifest and its deletes), while every object the manifest names,
//! and anything under `log/` that is not a chunk, stays.

use super::*;
use crate::archive::faulty_store::{Fault, FaultyStore};
use crate::archive::progress::Progress;
use crate::archive::StorageUrl;
use crate::log::{self, LogOptions, LogWriter};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A local log being written, and the durable lsn as the uploader sees it.
struct TestLog {
    writer: LogWriter,
    reader: LogReader,
    dir: PathBuf,
    durable: watch::Sender<Lsn>,
    last_lsn: u64,
}

impl TestLog {
    fn open(dir: &Path, segment_bytes_max: u64) -> TestLog {
        let mut options = LogOptions::new(dir);
        options.segment_bytes_max = segment_bytes_max;
        let (log, _) = log::open(options).unwrap();
        let reader = log.reader();
        TestLog {
            writer: log.start_writer(),
            reader,
            dir: dir.to_path_buf(),
            durable: watch::channel(Lsn(0)).0,
            last_lsn: 0,
        }
    }

    /// Appends `frames` frames; each is durable once `append` returns.
    async fn append(&mut self, frames: u64) {
        for _ in 0..frames {
            self.last_lsn += 1;
            let payload = format!("payload {}", self.last_lsn).into_bytes();
            self.writer
                .append(Lsn(self.last_lsn), 1, payload)
                .await
                .unwrap();
        }
        self.durable.send_replace(Lsn(self.last_lsn));
    }

    /// A freshly started archiver's state: no manifest read yet, as after a restart.
    fn uploader(&self, store: ArchiveStore) -> Uploader {
        Uploader {
            store,
            reader: self.reader.clone(),
            log_dir: self.dir.clone(),
            durable: self.durable.subscribe(),
            progress: Arc::new(Mutex::new(Progress::default())),
            manifest: None,
            cursor: None,
            garbage: Vec::new(),
        }
    }
}

fn file_store(root: &Path) -> ArchiveStore {
    let url = format!("file://{}", root.join("archive").display());
    StorageUrl::parse(&url).unwrap().open().unwrap()
}

/// The object names under `log/`.
async fn log_objects(store: &ArchiveStore) -> BTreeSet<String> {
    let mut listing = store.store.list(Some(&store.log_prefix));
    let mut names = BTreeSet::new();
    while let Some(meta) = listing.next().await {
        names.insert(meta.unwrap().location.filename().unwrap().to_owned());
    }
    names
}

/// The manifest as uploaded.
async fn stored_manifest(store: &ArchiveStore) -> Manifest {
    let found = store.store.get(&store.manifest_path()).await.unwrap();
    Manifest::from_json(&found.bytes().await.unwrap()).unwrap()
}

/// Every object the manifest names, and the manifest itself.
fn named_objects(manifest: &Manifest) -> BTreeSet<String> {
    manifest
        .segments
        .iter()
        .flat_map(ManifestSegment::objects)
        .map(str::to_owned)
        .chain([crate::archive::manifest::MANIFEST_NAME.to_owned()])
        .collect()
}

async fn put(store: &ArchiveStore, name: &str) {
    store
        .store
        .put(
            &store.segment_path(name),
            PutPayload::from_static(b"left over"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_chunks_are_deleted_at_start_and_named_objects_stay() {
    let temp = tempfile::tempdir().unwrap();
    // Small segments: several sealed ones and an active one held as chunks.
    let mut log = TestLog::open(&temp.path().join("log"), 200);
    log.append(30).await;
    let store = file_store(temp.path());
    log.uploader(store.clone()).pass().await.unwrap();
    let manifest = stored_manifest(&store).await;
    let active = manifest.segments.last().unwrap();
    assert!(!active.sealed && !active.parts.is_empty(), "{manifest:?}");
    let sealed = &manifest.segments[0];
    assert!(sealed.sealed, "{manifest:?}");

    // What a pass stopped before its deletes leaves: a chunk of the active segment that a
    // merge replaced, and a chunk of a segment since put whole. And an object that is no chunk.
    let orphans = [
        part_object_name(&active.name, 5, 9),
        part_object_name(&sealed.name, 0, 40),
    ];
    for orphan in &orphans {
        put(&store, orphan).await;
    }
    put(&store, "notes.txt").await;
    assert!(log_objects(&store)
        .await
        .is_superset(&orphans.iter().cloned().collect()));

    // A restart: its first pass lists `log/` and deletes the chunks nothing names.
    log.uploader(store.clone()).pass().await.unwrap();
    let mut expected = named_objects(&manifest);
    expected.insert("notes.txt".to_owned());
    assert_eq!(log_objects(&store).await, expected);
    assert_eq!(stored_manifest(&store).await, manifest);
    log.writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_left_by_a_pass_stopped_before_its_deletes_are_deleted_by_the_next_start() {
    let temp = tempfile::tempdir().unwrap();
    // One segment, never rolled: each pass puts a chunk, merged with the previous one.
    let mut log = TestLog::open(&temp.path().join("log"), 1 << 20);
    let store = file_store(temp.path());
    // Deletes refused: the pass stops, as far as the bucket sees, between its manifest and
    // its deletes (a crash there leaves the same objects).
    let faulty = FaultyStore::new(store.store.clone(), Fault::Deletes);
    let seen = faulty.seen.clone();
    let mut stopped = log.uploader(ArchiveStore {
        store: Arc::new(faulty),
        ..store.clone()
    });
    log.append(5).await;
    stopped.pass().await.unwrap();
    let first_chunks: BTreeSet<String> = named_objects(&stored_manifest(&store).await);
    log.append(5).await;
    stopped.pass().await.unwrap();
    drop(stopped);

    let manifest = stored_manifest(&store).await;
    assert_eq!(manifest.last_lsn, 10);
    let named = named_objects(&manifest);
    let superseded: BTreeSet<String> = first_chunks.difference(&named).cloned().collect();
    assert!(!superseded.is_empty(), "the second chunk merges the first");
    assert!(seen.deletes_refused.load(Ordering::SeqCst) >= superseded.len());
    assert_eq!(
        log_objects(&store).await,
        named.union(&superseded).cloned().collect(),
        "the superseded chunks are left in the bucket"
    );

    log.uploader(store.clone()).pass().await.unwrap();
    assert_eq!(log_objects(&store).await, named);
    assert_eq!(stored_manifest(&store).await, manifest);
    log.writer.shutdown().await;
}
