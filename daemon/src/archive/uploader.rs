//! The archiver task: every `archive_interval_ms` a pass uploads what became durable since the
//! last one: the new bytes of the active segment as one chunk object (see `chunks.rs`), a
//! rolled segment as one whole object, then the manifest, last. It follows the log from a cursor
//! it keeps in memory (segment, byte offset, last frame), reads only the new frames through a
//! clone of the daemon's reader, and lists nothing per pass. It never talks to the writer or the
//! sequencer: appends never wait for it. A failed pass is retried with backoff; everything a
//! pass does is idempotent (objects are put whole, the manifest only after them).

use super::chunks::merge_from;
use super::location::ArchiveStore;
use super::manifest::{
    part_object_name, segment_file_name, Manifest, ManifestError, ManifestPart, ManifestSegment,
};
use super::progress::SharedProgress;
use super::repair::check_objects;
use super::segments::{
    list_local_segments, read_new_frames, read_range, read_verified, sha256_hex, NewFrames,
    SegmentReadError, VerifiedSegment,
};
use crate::log::{LogReader, Lsn};
use object_store::{GetOptions, ObjectStoreExt, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
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

/// Where the archive stands in the local log: the segment being archived and how much of it the
/// manifest holds.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// First lsn (and name) of the segment.
    pub first_lsn: u64,
    pub path: PathBuf,
    /// Bytes of it the archive holds (0: none yet, not even the header).
    pub bytes: u64,
    /// Last frame the archive holds (`first_lsn - 1` when none of this segment).
    pub last_lsn: u64,
    /// sha256 state over those `bytes`, so the entry's digest needs no re-read.
    pub hasher: Sha256,
}

impl Cursor {
    /// The start of the segment that follows frame `last_lsn`.
    fn next_segment(log_dir: &std::path::Path, last_lsn: u64) -> Cursor {
        Cursor {
            first_lsn: last_lsn + 1,
            path: log_dir.join(segment_file_name(last_lsn + 1)),
            bytes: 0,
            last_lsn,
            hasher: Sha256::new(),
        }
    }
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
    /// Set together with `manifest`.
    pub cursor: Option<Cursor>,
    /// Chunk objects the manifest no longer names, deleted after it was uploaded (retried at
    /// the next pass when a delete fails).
    pub garbage: Vec<String>,
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
    /// One pass: upload what became durable since the cursor, segment by segment, each object
    /// then the manifest naming it.
    pub async fn pass(&mut self) -> Result<(), PassError> {
        let snapshot_at = Instant::now();
        let durable_lsn = self.durable.borrow().0;
        if self.manifest.is_none() {
            let (manifest, cursor) = self.load_manifest(durable_lsn).await?;
            let garbage = check_objects(&self.store, &manifest, &self.log_dir).await?;
            self.garbage.extend(garbage);
            self.publish(&manifest);
            self.manifest = Some(manifest);
            self.cursor = Some(cursor);
        }
        self.collect_garbage().await;
        while let Some(cursor) = self.cursor.clone() {
            if cursor.last_lsn >= durable_lsn {
                break;
            }
            let reader = self.reader.clone();
            let path = cursor.path.clone();
            let (first_lsn, after_bytes, after_lsn) =
                (cursor.first_lsn, cursor.bytes, cursor.last_lsn);
            let frames = tokio::task::spawn_blocking(move || {
                read_new_frames(
                    &reader,
                    first_lsn,
                    &path,
                    after_bytes,
                    after_lsn,
                    durable_lsn,
                )
            })
            .await??;
            if frames.sealed {
                self.seal(cursor, frames).await?;
                continue;
            }
            if frames.last_lsn > cursor.last_lsn {
                self.put_chunk(cursor, frames).await?;
            }
            break;
        }
        let archived_lsn = self.manifest.as_ref().map_or(0, |m| m.last_lsn);
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        progress.behind_since = (self.durable.borrow().0 > archived_lsn).then_some(snapshot_at);
        Ok(())
    }

    /// The segment rolled: put it whole as `<segment>` (its digest must equal the chunks' plus
    /// the new bytes', so nothing changed under the archive), then the manifest; its chunks
    /// become garbage. The cursor moves to the next segment.
    async fn seal(&mut self, cursor: Cursor, frames: NewFrames) -> Result<(), PassError> {
        let mut hasher = cursor.hasher.clone();
        hasher.update(&frames.bytes);
        let sha256 = hex::encode(hasher.finalize());
        let whole = if cursor.bytes == 0 {
            frames.bytes.clone()
        } else {
            let path = cursor.path.clone();
            let end = frames.end_bytes;
            tokio::task::spawn_blocking(move || read_range(&path, 0, end)).await??
        };
        if sha256_hex(&whole) != sha256 {
            return Err(SegmentReadError::Mismatch {
                path: cursor.path.clone(),
                detail: "its bytes changed since they were archived".to_owned(),
            }
            .into());
        }
        let entry = ManifestSegment {
            name: segment_file_name(cursor.first_lsn),
            first_lsn: cursor.first_lsn,
            last_lsn: frames.last_lsn,
            bytes: frames.end_bytes,
            sha256,
            sealed: true,
            parts: Vec::new(),
        };
        self.put_object(&entry.name, whole, "sealed_segment")
            .await?;
        self.record(entry).await?;
        self.cursor = Some(Cursor::next_segment(&self.log_dir, frames.last_lsn));
        Ok(())
    }

    /// The active segment grew: put one chunk holding the new bytes merged with the trailing
    /// chunks `merge_from` picks, then the manifest listing the chunks.
    async fn put_chunk(&mut self, cursor: Cursor, frames: NewFrames) -> Result<(), PassError> {
        let name = segment_file_name(cursor.first_lsn);
        let previous = self
            .manifest
            .as_ref()
            .and_then(|manifest| manifest.entry(cursor.first_lsn))
            .filter(|entry| !entry.sealed)
            .map(|entry| entry.parts.clone())
            .unwrap_or_default();
        let first_merged = merge_from(&previous, frames.bytes.len() as u64);
        let mut parts = previous[..first_merged].to_vec();
        let merged = &previous[first_merged..];
        let chunk = match merged.first() {
            None => frames.bytes.clone(),
            Some(first) => {
                let (path, from, to) = (cursor.path.clone(), first.from, frames.end_bytes);
                let bytes =
                    tokio::task::spawn_blocking(move || read_range(&path, from, to)).await??;
                check_unchanged(&cursor, merged, &bytes)?;
                bytes
            }
        };
        let from = frames.end_bytes - chunk.len() as u64;
        let part = ManifestPart {
            object: part_object_name(&name, from, frames.end_bytes),
            from,
            to: frames.end_bytes,
            sha256: sha256_hex(&chunk),
        };
        let mut hasher = cursor.hasher.clone();
        hasher.update(&frames.bytes);
        self.put_object(&part.object, chunk, "active_segment")
            .await?;
        let chunk_object = part.object.clone();
        parts.push(part);
        let entry = ManifestSegment {
            name,
            first_lsn: cursor.first_lsn,
            last_lsn: frames.last_lsn,
            bytes: frames.end_bytes,
            sha256: hex::encode(hasher.clone().finalize()),
            sealed: false,
            parts,
        };
        if let Err(error) = self.record(entry).await {
            // The chunk is up but no manifest names it: the next pass puts another chunk (or
            // this one again), so this one is garbage unless a manifest names it by then
            // (`collect_garbage` skips named objects). Without this it stayed until a restart's
            // listing (`repair.rs`) found it.
            self.garbage.push(chunk_object);
            return Err(error);
        }
        self.cursor = Some(Cursor {
            bytes: frames.end_bytes,
            last_lsn: frames.last_lsn,
            hasher,
            ..cursor
        });
        Ok(())
    }

    /// Records `entry` in the manifest and uploads it; the objects the replaced entry named and
    /// the new one does not become garbage, deleted once the manifest is up.
    async fn record(&mut self, entry: ManifestSegment) -> Result<(), PassError> {
        let mut manifest = self.manifest.clone().unwrap_or_default();
        let replaced: Vec<String> = manifest
            .entry(entry.first_lsn)
            .map(|old| old.objects().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        manifest.record(entry.clone())?;
        let path = self.store.manifest_path();
        self.put(&path, PutPayload::from(manifest.to_json()))
            .await?;
        metrics::counter!("agentd_archive_uploads_total", "object" => "manifest").increment(1);
        tracing::debug!(segment = %entry.name, last_lsn = entry.last_lsn, "archived");
        let kept = entry.objects();
        self.garbage.extend(
            replaced
                .into_iter()
                .filter(|object| !kept.contains(&object.as_str())),
        );
        self.publish(&manifest);
        self.manifest = Some(manifest);
        self.collect_garbage().await;
        Ok(())
    }

    /// Deletes the chunk objects the manifest no longer names. A failure only logs: the object
    /// is kept for the next pass (and the next start finds any left over by listing `log/`).
    async fn collect_garbage(&mut self) {
        let Some(manifest) = &self.manifest else {
            return;
        };
        let named: std::collections::HashSet<&str> = manifest
            .segments
            .iter()
            .flat_map(ManifestSegment::objects)
            .collect();
        let mut kept = Vec::new();
        for object in std::mem::take(&mut self.garbage) {
            if named.contains(object.as_str()) {
                continue; // named again (a segment sealed under the name of an old prefix)
            }
            let path = self.store.segment_path(&object);
            match self.store.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    tracing::warn!(object = %path, "cannot delete a superseded archive chunk: {error}");
                    kept.push(object);
                }
            }
        }
        self.garbage = kept;
    }

    async fn put_object(
        &self,
        name: &str,
        bytes: bytes::Bytes,
        kind: &'static str,
    ) -> Result<(), PassError> {
        let path = self.store.segment_path(name);
        self.put(&path, PutPayload::from(bytes)).await?;
        metrics::counter!("agentd_archive_uploads_total", "object" => kind).increment(1);
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

    /// The archive's manifest (empty when there is none yet) and the cursor after it, once its
    /// last segment is checked to be a prefix of the local log: an archive of another history is
    /// never written to.
    async fn load_manifest(&self, durable_lsn: u64) -> Result<(Manifest, Cursor), PassError> {
        let path = self.store.manifest_path();
        let manifest = match self
            .store
            .store
            .get_opts(&path, GetOptions::default())
            .await
        {
            Ok(found) => found.bytes().await,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok((Manifest::default(), Cursor::next_segment(&self.log_dir, 0)))
            }
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
        let mut manifest = Manifest::from_json(&manifest)
            .map_err(|error| diverged(format!("its manifest cannot be used ({error})")))?;
        let Some(last) = manifest.segments.last().cloned() else {
            return Ok((manifest, Cursor::next_segment(&self.log_dir, 0)));
        };
        if last.last_lsn > durable_lsn {
            return Err(diverged(format!(
                "it holds frames up to lsn {} but the local log ends at lsn {durable_lsn}",
                last.last_lsn
            )));
        }
        let Some((verified, is_last, path)) = self.read_local_prefix(&last).await? else {
            return Err(diverged(format!(
                "its segment {} is not in the local log",
                last.name
            )));
        };
        if verified.entry.sha256 != last.sha256 {
            return Err(diverged(format!(
                "its segment {} differs from the local one up to lsn {}",
                last.name, last.last_lsn
            )));
        }
        if last.sealed && !is_last {
            return Ok((manifest, Cursor::next_segment(&self.log_dir, last.last_lsn)));
        }
        if let Some(entry) = manifest.last_entry_mut().filter(|entry| entry.sealed) {
            // A restored log goes on appending to its last segment, even one the archive holds
            // as sealed: it becomes the growing one again, its object the first part (its
            // archived bytes stay a prefix of what comes next).
            entry.sealed = false;
            entry.parts = vec![entry.whole_prefix_part()];
        }
        let mut hasher = Sha256::new();
        hasher.update(&verified.bytes);
        let cursor = Cursor {
            first_lsn: last.first_lsn,
            path,
            bytes: last.bytes,
            last_lsn: last.last_lsn,
            hasher,
        };
        Ok((manifest, cursor))
    }
}

impl Uploader {
    /// The local segment holding `wanted`'s frames read up to its last one (checked by the
    /// log's reader), whether it is the local log's last segment, and its path; `None` when the
    /// local log has no such segment. Listing the directory here, once at start, is fine.
    async fn read_local_prefix(
        &self,
        wanted: &ManifestSegment,
    ) -> Result<Option<(VerifiedSegment, bool, PathBuf)>, PassError> {
        let dir = self.log_dir.clone();
        let reader = self.reader.clone();
        let (first_lsn, last_lsn) = (wanted.first_lsn, wanted.last_lsn);
        let local = tokio::task::spawn_blocking(move || {
            let segments = list_local_segments(&dir)?;
            let Some(position) = segments
                .iter()
                .position(|segment| segment.first_lsn == first_lsn)
            else {
                return Ok::<_, SegmentReadError>(None);
            };
            let is_last = position + 1 == segments.len();
            let path = segments[position].path.clone();
            read_verified(&reader, &segments[position], last_lsn, false)
                .map(|verified| Some((verified, is_last, path)))
        })
        .await??;
        Ok(local)
    }
}

/// The merged chunks' bytes, re-read from the local file, must be the ones archived.
fn check_unchanged(
    cursor: &Cursor,
    merged: &[ManifestPart],
    bytes: &bytes::Bytes,
) -> Result<(), PassError> {
    let base = merged.first().map_or(0, |part| part.from);
    for part in merged {
        let range = (part.from - base) as usize..(part.to - base) as usize;
        if sha256_hex(&bytes[range]) != part.sha256 {
            return Err(SegmentReadError::Mismatch {
                path: cursor.path.clone(),
                detail: format!(
                    "bytes {} to {} changed since they were archived as {}",
                    part.from, part.to, part.object
                ),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "uploader_tests.rs"]
mod tests;
