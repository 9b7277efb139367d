//! The archiver task: every `archive_interval_ms` a pass uploads each sealed segment not yet in
//! the archive and the active segment's durable prefix when it grew, then the manifest, last.
//! It reads the log through a clone of the daemon's reader and never talks to the writer or the
//! sequencer: appends never wait for it. A failed pass is retried with backoff; everything a
//! pass does is idempotent (objects are put whole, the manifest only after them).

use super::location::ArchiveStore;
use super::manifest::{Manifest, ManifestError};
use super::progress::SharedProgress;
use super::segments::{list_local_segments, read_verified, SegmentReadError, VerifiedSegment};
use crate::log::{LogReader, Lsn};
use object_store::{GetOptions, PutOptions, PutPayload};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// First wait after a failed pass; doubled per failure up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries, so an endpoint that comes back is used within a minute.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{0}")]
    Segment(#[from] SegmentReadError),
    #[error("{what} {}: {source}", store_url)]
    Store {
        what: String,
        store_url: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// The archive holds another history than the local log (a restore cut with --until-lsn, or
    /// another daemon's URL): uploading would overwrite it, so the archiver stops for good.
    #[error("the archive at {url} does not continue this log: {detail}; archiving stopped (point [storage] url at a new prefix)")]
    Diverged { url: String, detail: String },
    #[error("an archive task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The archiver's own state; one task owns it.
pub struct Uploader {
    pub store: ArchiveStore,
    pub reader: LogReader,
    pub log_dir: PathBuf,
    pub durable: watch::Receiver<Lsn>,
    pub progress: SharedProgress,
    /// The manifest as last uploaded (or found); `None` until the first pass read it.
    pub manifest: Option<Manifest>,
}

/// Runs passes every `interval` until `stop` turns true, then runs one last pass.
pub async fn run(mut uploader: Uploader, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = RETRY_BACKOFF_BASE;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => *stop.borrow(),
            _ = stop.changed() => true,
        };
        match uploader.pass().await {
            Ok(()) => backoff = RETRY_BACKOFF_BASE,
            Err(error @ PassError::Diverged { .. }) => {
                metrics::counter!("agentd_archive_upload_failures_total").increment(1);
                tracing::error!("{error}");
                eprintln!("agentd: {error}");
                return;
            }
            Err(error) => {
                metrics::counter!("agentd_archive_upload_failures_total").increment(1);
                tracing::warn!(
                    retry_in_s = backoff.as_secs(),
                    "log archive pass failed: {error}"
                );
                if !stopping {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

impl Uploader {
    /// One pass: upload what the archive lacks, in LSN order, each segment then the manifest.
    pub async fn pass(&mut self) -> Result<(), PassError> {
        let snapshot_at = Instant::now();
        let durable_lsn = self.durable.borrow().0;
        if self.manifest.is_none() {
            let manifest = self.load_manifest(durable_lsn).await?;
            self.publish(&manifest);
            self.manifest = Some(manifest);
        }
        let dir = self.log_dir.clone();
        let local = tokio::task::spawn_blocking(move || list_local_segments(&dir)).await??;
        for (position, segment) in local.iter().enumerate() {
            // A rolled segment ends where the next begins; the last one at the durable lsn.
            let (last_lsn, sealed) = match local.get(position + 1) {
                Some(next) => (next.first_lsn - 1, true),
                None => (durable_lsn, false),
            };
            if last_lsn < segment.first_lsn || last_lsn > durable_lsn {
                continue; // no frame yet, or not yet reported durable
            }
            if self.is_archived(segment.first_lsn, last_lsn, sealed) {
                continue;
            }
            let reader = self.reader.clone();
            let segment = segment.clone();
            let verified = tokio::task::spawn_blocking(move || {
                read_verified(&reader, &segment, last_lsn, sealed)
            })
            .await??;
            self.upload(verified).await?;
        }
        let archived_lsn = self
            .manifest
            .as_ref()
            .map_or(0, |manifest| manifest.last_lsn);
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        progress.behind_since = (self.durable.borrow().0 > archived_lsn).then_some(snapshot_at);
        Ok(())
    }

    fn is_archived(&self, first_lsn: u64, last_lsn: u64, sealed: bool) -> bool {
        let entry = self
            .manifest
            .as_ref()
            .and_then(|manifest| manifest.entry(first_lsn));
        entry.is_some_and(|entry| entry.last_lsn >= last_lsn && (entry.sealed || !sealed))
    }

    /// Puts the segment object, then the manifest naming it: a manifest never names an object
    /// that is not complete.
    async fn upload(&mut self, verified: VerifiedSegment) -> Result<(), PassError> {
        let mut manifest = self.manifest.clone().unwrap_or_default();
        manifest.record(verified.entry.clone())?;
        let segment_path = self.store.segment_path(&verified.entry.name);
        self.put(&segment_path, PutPayload::from(verified.bytes))
            .await?;
        let object = if verified.entry.sealed {
            "sealed_segment"
        } else {
            "active_segment"
        };
        metrics::counter!("agentd_archive_uploads_total", "object" => object).increment(1);
        let manifest_path = self.store.manifest_path();
        self.put(&manifest_path, PutPayload::from(manifest.to_json()))
            .await?;
        metrics::counter!("agentd_archive_uploads_total", "object" => "manifest").increment(1);
        tracing::debug!(segment = %verified.entry.name, last_lsn = verified.entry.last_lsn, "archived");
        self.publish(&manifest);
        self.manifest = Some(manifest);
        Ok(())
    }

    async fn put(
        &self,
        path: &object_store::path::Path,
        payload: PutPayload,
    ) -> Result<(), PassError> {
        self.store
            .store
            .put_opts(path, payload, PutOptions::default())
            .await
            .map(|_result| ())
            .map_err(|source| PassError::Store {
                what: format!("cannot upload {path} to"),
                store_url: self.store.url.clone(),
                source,
            })
    }

    /// Makes the manifest's coverage the shared progress the gauges read.
    fn publish(&self, manifest: &Manifest) {
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        progress.archived_lsn = manifest.last_lsn;
        progress.archived_bytes = manifest
            .segments
            .iter()
            .map(|segment| (segment.first_lsn, segment.bytes))
            .collect();
    }

    /// The archive's manifest (empty when there is none yet), after checking that its last
    /// segment is a prefix of the local log: an archive of another history is never written to.
    async fn load_manifest(&self, durable_lsn: u64) -> Result<Manifest, PassError> {
        let path = self.store.manifest_path();
        let manifest = match self
            .store
            .store
            .get_opts(&path, GetOptions::default())
            .await
        {
            Ok(found) => found.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(Manifest::default()),
            Err(error) => Err(error),
        }
        .map_err(|source| PassError::Store {
            what: format!("cannot read {path} from"),
            store_url: self.store.url.clone(),
            source,
        })?;
        let diverged = |detail: String| PassError::Diverged {
            url: self.store.url.clone(),
            detail,
        };
        let manifest = Manifest::from_json(&manifest)
            .map_err(|error| diverged(format!("its manifest cannot be used ({error})")))?;
        let Some(last) = manifest.segments.last().cloned() else {
            return Ok(manifest);
        };
        if last.last_lsn > durable_lsn {
            return Err(diverged(format!(
                "it holds frames up to lsn {} but the local log ends at lsn {durable_lsn}",
                last.last_lsn
            )));
        }
        let dir = self.log_dir.clone();
        let reader = self.reader.clone();
        let wanted = last.clone();
        let local = tokio::task::spawn_blocking(move || {
            let segments = list_local_segments(&dir)?;
            let Some(position) = segments
                .iter()
                .position(|segment| segment.first_lsn == wanted.first_lsn)
            else {
                return Ok(None);
            };
            let is_last = position + 1 == segments.len();
            read_verified(&reader, &segments[position], wanted.last_lsn, false)
                .map(|verified| Some((verified.entry.sha256, is_last)))
        })
        .await??;
        let mut manifest = manifest;
        match local {
            Some((sha256, is_last)) if sha256 == last.sha256 => {
                if is_last {
                    // A restored log goes on appending to its last segment, even one the
                    // archive holds as sealed: it becomes the growing one again (its archived
                    // bytes stay a prefix of what comes next).
                    if let Some(entry) = manifest.segments.last_mut() {
                        entry.sealed = false;
                    }
                }
                Ok(manifest)
            }
            Some(_) => Err(diverged(format!(
                "its segment {} differs from the local one up to lsn {}",
                last.name, last.last_lsn
            ))),
            None => Err(diverged(format!(
                "its segment {} is not in the local log",
                last.name
            ))),
        }
    }
}
