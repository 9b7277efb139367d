//! Local retention (`[storage] local_retention_ms`): a task that deletes the oldest local
//! segments once the archive holds them. A segment goes only when all of these hold:
//!
//! - it is not the active segment: the log goes on in a next segment file;
//! - it is not the archive's last segment (the archiver checks the local log against that one
//!   when it starts);
//! - the archive's manifest lists it sealed, with the same first and last lsn, and the local
//!   file has exactly the manifest's length and sha256 (computed from the file), and the object
//!   is there at least that long;
//! - its last record is older than the retention (the record's own time, `ts_ms`);
//! - no read of this process may still open it (the log's read pins, `log::Eviction::InUse`).
//!
//! Only the oldest local segment is ever deleted, so the local log stays contiguous; before the
//! delete the log records durably where it now starts (`log/local-start.json`), which is what
//! lets recovery accept a log that does not start at lsn 1. Reads before it go to the archive
//! (`segment_source.rs`).

use super::location::ArchiveStore;
use super::manifest::Manifest;
use super::segments::{list_local_segments, sha256_hex, LocalSegment};
use crate::config::StorageConfig;
use crate::log::{Eviction, LogReader, Lsn};
use object_store::{GetOptions, ObjectStoreExt};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// Why a local segment is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// The log goes on in it: the active segment.
    Active,
    /// The manifest does not list it sealed with the same lsns.
    NotArchived,
    /// The manifest lists it, but its length or sha256 differs from the local file's.
    ArchivedDifferently { detail: String },
    /// Its last record is younger than the retention.
    Recent,
    /// It is the archive's last segment: the archiver checks the local log against that one at
    /// start (`uploader.rs`), so it stays until the archive holds a later segment.
    LastArchived,
}

/// What the retention decides for the oldest local segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Evict,
    Keep(Keep),
}

/// What is known of the oldest local segment before its bytes are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFacts {
    pub first_lsn: u64,
    /// The next local segment's first lsn; `None` for the last (active) segment.
    pub next_first_lsn: Option<u64>,
    pub len_bytes: u64,
    /// `ts_ms` of its last record.
    pub last_record_ms: u64,
}

/// `[storage] local_retention_ms` needs somewhere to read deleted segments back from.
pub fn check_config(config: &StorageConfig) -> Result<(), String> {
    if config.local_retention_ms > 0 && config.url.is_none() {
        return Err(format!(
            "[storage] local_retention_ms = {} needs [storage] url: segments are deleted locally only once archived there",
            config.local_retention_ms
        ));
    }
    Ok(())
}

/// The retention decision for one segment. `local_sha256` is called only when every cheaper
/// check passed (it reads the whole file).
pub fn decide<E>(
    segment: &SegmentFacts,
    manifest: &Manifest,
    now_ms: u64,
    retention_ms: u64,
    local_sha256: impl FnOnce() -> Result<String, E>,
) -> Result<Verdict, E> {
    let Some(next_first_lsn) = segment.next_first_lsn else {
        return Ok(Verdict::Keep(Keep::Active));
    };
    let last_lsn = next_first_lsn - 1;
    let Some(entry) = manifest
        .entry(segment.first_lsn)
        .filter(|entry| entry.sealed && entry.last_lsn == last_lsn && entry.first_lsn <= last_lsn)
    else {
        return Ok(Verdict::Keep(Keep::NotArchived));
    };
    if manifest.segments.last().map(|last| last.first_lsn) == Some(segment.first_lsn) {
        return Ok(Verdict::Keep(Keep::LastArchived));
    }
    if now_ms.saturating_sub(segment.last_record_ms) < retention_ms {
        return Ok(Verdict::Keep(Keep::Recent));
    }
    if entry.bytes != segment.len_bytes {
        return Ok(Verdict::Keep(Keep::ArchivedDifferently {
            detail: format!(
                "the local file is {} bytes, the archive's {}",
                segment.len_bytes, entry.bytes
            ),
        }));
    }
    let sha256 = local_sha256()?;
    if sha256 != entry.sha256 {
        return Ok(Verdict::Keep(Keep::ArchivedDifferently {
            detail: format!(
                "the local file's sha256 is {sha256}, the archive's {}",
                entry.sha256
            ),
        }));
    }
    Ok(Verdict::Evict)
}

/// Everything the retention task needs.
pub struct Retention {
    pub store: ArchiveStore,
    pub reader: LogReader,
    pub log_dir: PathBuf,
    pub retention_ms: u64,
}

/// Runs a retention pass every `interval` until `stop` turns true. A failed pass is logged and
/// retried at the next interval; nothing is deleted by a pass that failed before its checks.
pub async fn run(retention: Retention, interval: Duration, mut stop: watch::Receiver<bool>) {
    let retention = std::sync::Arc::new(retention);
    metrics::gauge!("agentd_log_local_first_lsn").set(retention.reader.local_first_lsn().0 as f64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if let Err(error) = pass(&retention).await {
            tracing::warn!(url = %retention.store.url, "local retention pass failed: {error}");
        }
    }
}

/// One pass: fetch the manifest, then delete oldest segments while the decision allows.
async fn pass(retention: &std::sync::Arc<Retention>) -> Result<(), String> {
    let store = &retention.store;
    let path = store.manifest_path();
    let manifest = match store.store.get_opts(&path, GetOptions::default()).await {
        Ok(found) => found.bytes().await.map_err(|error| error.to_string())?,
        Err(object_store::Error::NotFound { .. }) => return Ok(()), // Nothing archived yet.
        Err(error) => {
            return Err(format!(
                "cannot download {}: {error}",
                store.describe(&path)
            ))
        }
    };
    let manifest = Manifest::from_json(&manifest).map_err(|error| error.to_string())?;
    let shared = retention.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || evict_while_allowed(&shared, &manifest, &handle))
        .await
        .map_err(|error| error.to_string())?
}

fn evict_while_allowed(
    retention: &Retention,
    manifest: &Manifest,
    handle: &tokio::runtime::Handle,
) -> Result<(), String> {
    loop {
        let segments = list_local_segments(&retention.log_dir).map_err(|e| e.to_string())?;
        let Some(oldest) = segments.first() else {
            return Ok(());
        };
        let facts = segment_facts(&retention.reader, oldest, segments.get(1))?;
        let now_ms = crate::clock::now_ms();
        let verdict = decide(&facts, manifest, now_ms, retention.retention_ms, || {
            std::fs::read(&oldest.path)
                .map(|bytes| sha256_hex(&bytes))
                .map_err(|error| format!("cannot read {}: {error}", oldest.path.display()))
        })?;
        match verdict {
            Verdict::Keep(Keep::ArchivedDifferently { detail }) => {
                tracing::warn!(segment = %oldest.path.display(), "keeping a local segment the archive holds differently: {detail}");
                return Ok(());
            }
            Verdict::Keep(_) => return Ok(()),
            Verdict::Evict => {}
        }
        if !object_is_there(retention, handle, manifest, oldest.first_lsn)? {
            return Ok(());
        }
        let Some(next_first_lsn) = facts.next_first_lsn else {
            return Ok(()); // `decide` keeps the active segment; this is unreachable.
        };
        let evicted = retention
            .reader
            .evict_oldest_segment(
                Lsn(oldest.first_lsn),
                Lsn(next_first_lsn),
                &retention.store.url,
            )
            .map_err(|error| error.to_string())?;
        match evicted {
            Eviction::InUse => return Ok(()),
            Eviction::Evicted { local_first_lsn } => {
                tracing::info!(segment = %oldest.path.display(), first_lsn = oldest.first_lsn, last_lsn = next_first_lsn - 1, url = %retention.store.url, "local retention deleted an archived segment");
                metrics::counter!("agentd_log_segments_evicted_total").increment(1);
                metrics::gauge!("agentd_log_local_first_lsn").set(local_first_lsn as f64);
            }
        }
    }
}

/// The facts of `oldest`, its last record's time read through the log's reader.
fn segment_facts(
    reader: &LogReader,
    oldest: &LocalSegment,
    next: Option<&LocalSegment>,
) -> Result<SegmentFacts, String> {
    let next_first_lsn = next.map(|next| next.first_lsn);
    let mut last_record_ms = u64::MAX; // Unknown (an empty segment): never old enough.
    if let Some(next_first_lsn) = next_first_lsn.filter(|&next| next > oldest.first_lsn) {
        let last_lsn = next_first_lsn - 1;
        for frame in reader.frames(Lsn(last_lsn - 1), Lsn(last_lsn)) {
            let frame = frame.map_err(|error| error.to_string())?;
            let record =
                agentd_schemas::events::decode_record(frame.format_version, &frame.payload)
                    .map_err(|error| format!("cannot decode lsn {}: {error}", frame.lsn))?;
            last_record_ms = record.ts_ms;
        }
    }
    Ok(SegmentFacts {
        first_lsn: oldest.first_lsn,
        next_first_lsn,
        len_bytes: oldest.len_bytes,
        last_record_ms,
    })
}

/// The archived object is there, at least as long as the manifest lists (a lifecycle rule or
/// a mistaken delete would otherwise leave the records nowhere).
fn object_is_there(
    retention: &Retention,
    handle: &tokio::runtime::Handle,
    manifest: &Manifest,
    first_lsn: u64,
) -> Result<bool, String> {
    let Some(entry) = manifest.entry(first_lsn) else {
        return Ok(false);
    };
    let path = retention.store.segment_path(&entry.name);
    match handle.block_on(retention.store.store.head(&path)) {
        Ok(meta) => Ok(meta.size >= entry.bytes),
        Err(object_store::Error::NotFound { .. }) => {
            tracing::warn!(object = %retention.store.describe(&path), "keeping a local segment whose archived object is missing");
            Ok(false)
        }
        Err(error) => Err(format!(
            "cannot check {}: {error}",
            retention.store.describe(&path)
        )),
    }
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
