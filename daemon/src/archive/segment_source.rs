//! Reading archived segments back: the log's cold tier (`log::ColdSegments`) once local
//! retention deleted them from the disk. A segment is downloaded whole, checked against the
//! manifest's sha256 (the log then checks its header and every frame's CRC and lsn), and kept in
//! a small in-memory cache, so a replay that walks the log downloads each segment once.
//!
//! Downloads run on a thread of their own with its own runtime: the log's reads are
//! synchronous and come from blocking threads (start-up replay, the projector, `agentd
//! rebuild`, the events route's `spawn_blocking`), some with no runtime at all.

use super::location::{ArchiveStore, StorageUrl, StorageUrlError};
use super::manifest::{Manifest, ManifestSegment};
use super::segments::sha256_hex;
use crate::config::StorageConfig;
use crate::log::{ColdSegment, ColdSegments, LogError, LogReader};
use object_store::GetOptions;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

/// Archived segments kept in memory after a download: a replay reads each once, in order, so
/// two suffice (the one being read and the one before, for a read that started just inside
/// it). Bounds the memory to twice `[log] segment_bytes_max`.
const ARCHIVE_READ_CACHE_SEGMENTS_MAX: usize = 2;
/// Downloads waiting for the download thread; readers beyond it wait to send.
const ARCHIVE_READ_REQUESTS_MAX: usize = 16;

/// The archive at one URL as the log's cold tier.
pub struct ArchiveSegments {
    url: String,
    requests: Mutex<mpsc::SyncSender<Request>>,
    cache: Mutex<VecDeque<ColdSegment>>,
}

struct Request {
    lsn: u64,
    reply: mpsc::SyncSender<Result<ColdSegment, LogError>>,
}

/// Makes `reader` (its clones, and every reader of the same log) read the segments local
/// retention deleted back from the archive: the one `local-start.json` names when segments were
/// deleted already, else `[storage] url` when retention is configured (it may delete segments
/// while this reader runs). Returns the URL attached, or `None` when nothing can be deleted.
pub fn attach_archive(
    reader: &LogReader,
    log_dir: &Path,
    storage: &StorageConfig,
) -> Result<Option<String>, AttachError> {
    let marked = crate::log::read_local_start(log_dir)?.map(|marker| marker.archive_url);
    let configured = storage
        .url
        .clone()
        .filter(|_| storage.local_retention_ms > 0);
    let Some(url) = marked.or(configured) else {
        return Ok(None);
    };
    reader.set_cold_source(Arc::new(ArchiveSegments::open(&url)?));
    Ok(Some(url))
}

/// Why the archive could not be attached to the log.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("local retention deleted archived segments, and their archive cannot be opened: {0}")]
    Url(#[from] StorageUrlError),
    #[error("cannot start the archive reader thread: {0}")]
    Thread(std::io::Error),
}

impl ArchiveSegments {
    /// Checks and opens `url` (nothing is contacted yet) and starts the download thread.
    pub fn open(url: &str) -> Result<ArchiveSegments, AttachError> {
        let store = StorageUrl::parse(url)?.open()?;
        let (requests, received) = mpsc::sync_channel::<Request>(ARCHIVE_READ_REQUESTS_MAX);
        std::thread::Builder::new()
            .name("archive-reader".to_owned())
            .spawn(move || serve_downloads(store, received))
            .map_err(AttachError::Thread)?;
        Ok(ArchiveSegments {
            url: url.to_owned(),
            requests: Mutex::new(requests),
            cache: Mutex::new(VecDeque::new()),
        })
    }

    fn cached(&self, lsn: u64) -> Option<ColdSegment> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .iter()
            .find(|segment| (segment.first_lsn..=segment.last_lsn).contains(&lsn))
            .cloned()
    }

    fn download(&self, lsn: u64) -> Result<ColdSegment, LogError> {
        let stopped = || LogError::Archived {
            origin: self.url.clone(),
            detail: "the archive reader thread stopped".to_owned(),
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        requests
            .send(Request { lsn, reply })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl ColdSegments for ArchiveSegments {
    fn segment_holding(&self, lsn: u64) -> Result<ColdSegment, LogError> {
        if let Some(segment) = self.cached(lsn) {
            return Ok(segment);
        }
        let segment = self.download(lsn)?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= ARCHIVE_READ_CACHE_SEGMENTS_MAX {
            cache.pop_front();
        }
        cache.push_back(segment.clone());
        metrics::counter!("agentd_archive_segments_read_total").increment(1);
        Ok(segment)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The download thread: one request at a time, the manifest kept between them (fetched again
/// when it does not list the lsn asked for).
fn serve_downloads(store: ArchiveStore, requests: mpsc::Receiver<Request>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the archive reader's runtime: {error}");
            return; // Dropping `requests` answers every reader with "stopped".
        }
    };
    let mut manifest: Option<Manifest> = None;
    for request in requests {
        let result = runtime.block_on(fetch_segment(&store, &mut manifest, request.lsn));
        // The reader may have given up (its thread ended); nothing waits for this answer then.
        let _reader_gone_is_fine = request.reply.send(result);
    }
}

async fn fetch_segment(
    store: &ArchiveStore,
    manifest: &mut Option<Manifest>,
    lsn: u64,
) -> Result<ColdSegment, LogError> {
    let holding = |manifest: &Manifest| {
        manifest
            .segments
            .iter()
            .find(|entry| entry.sealed && (entry.first_lsn..=entry.last_lsn).contains(&lsn))
            .cloned()
    };
    let entry = match manifest.as_ref().and_then(holding) {
        Some(entry) => entry,
        None => {
            let fresh = fetch_manifest(store, lsn).await?;
            let entry = holding(&fresh).ok_or_else(|| LogError::Archived {
                origin: store.describe(&store.manifest_path()),
                detail: format!(
                    "lsn {lsn} was deleted locally by retention, but the archive's manifest (up to lsn {}) holds no sealed segment with it",
                    fresh.last_lsn
                ),
            })?;
            *manifest = Some(fresh);
            entry
        }
    };
    download_sealed(store, &entry).await
}

async fn fetch_manifest(store: &ArchiveStore, lsn: u64) -> Result<Manifest, LogError> {
    let path = store.manifest_path();
    let failed = |detail: String| LogError::Archived {
        origin: store.describe(&path),
        detail: format!(
            "cannot read lsn {lsn}, which local retention deleted after archiving it: {detail}"
        ),
    };
    let bytes = match store.store.get_opts(&path, GetOptions::default()).await {
        Ok(found) => found.bytes().await,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(failed("the manifest does not exist".to_owned()))
        }
        Err(error) => Err(error),
    }
    .map_err(|error| failed(format!("cannot download the manifest: {error}")))?;
    Manifest::from_json(&bytes).map_err(|error| failed(error.to_string()))
}

/// A sealed segment's object, checked against the manifest's length and sha256.
async fn download_sealed(
    store: &ArchiveStore,
    entry: &ManifestSegment,
) -> Result<ColdSegment, LogError> {
    let path = store.segment_path(&entry.name);
    let origin = store.describe(&path);
    let failed = |detail: String| LogError::Archived {
        origin: origin.clone(),
        detail,
    };
    let object = match store.store.get_opts(&path, GetOptions::default()).await {
        Ok(found) => found.bytes().await,
        Err(object_store::Error::NotFound { .. }) => return Err(failed(
            "it is missing but the manifest lists it, and the local copy was deleted by retention"
                .to_owned(),
        )),
        Err(error) => Err(error),
    }
    .map_err(|error| failed(format!("cannot download it: {error}")))?;
    let Some(prefix) = object.get(..entry.bytes as usize) else {
        return Err(failed(format!(
            "it is {} bytes but the manifest lists {}",
            object.len(),
            entry.bytes
        )));
    };
    let sha256 = sha256_hex(prefix);
    if sha256 != entry.sha256 {
        return Err(failed(format!(
            "sha256 of its {} bytes is {sha256}, the manifest says {}",
            entry.bytes, entry.sha256
        )));
    }
    Ok(ColdSegment {
        first_lsn: entry.first_lsn,
        last_lsn: entry.last_lsn,
        bytes: object.slice(..entry.bytes as usize),
        origin,
    })
}
