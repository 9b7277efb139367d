//! The log archive on object storage (`[storage] url`, docs/storage.md): a background task
//! uploads sealed segments and, every `archive_interval_ms`, the active segment's new durable bytes
//! as a chunk object,
//! each checked frame by frame by the log's reader, with a checksum manifest uploaded last; and
//! `agentd restore`, which downloads, verifies and lays the log out in an empty data directory.
//!
//! Architecture invariants:
//! - The archiver only reads the log (a clone of the daemon's reader, up to the durable LSN);
//!   it never sends anything to the writer or the sequencer, so no append waits for an upload.
//! - An object named in the manifest is complete: objects are put whole (atomic per object),
//!   and the manifest is put after the objects it names. Objects are immutable once named,
//!   except a sealed segment's, put again only with the same bytes; superseded chunks are
//!   deleted only after a manifest that no longer names them is up.
//! - The archiver never writes to an archive whose last segment is not a prefix of the local
//!   log; restore never writes into a data directory that already holds a log.

mod chunks;
#[cfg(test)]
pub(crate) mod faulty_store;
mod location;
pub mod manifest;
mod progress;
mod repair;
pub mod restore;
pub mod retention;
mod segment_source;
mod segments;
mod uploader;

pub use location::{ArchiveStore, StorageUrl, StorageUrlError};
pub use segment_source::attach_archive;
pub use segments::{list_local_segments, sha256_hex, LocalSegment};

use crate::config::StorageConfig;
use crate::log::{LogReader, Lsn};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Checks `[storage]` and opens the store; `None` when no URL is set. Called before anything
/// starts, so a bad URL stops the start with an error naming it.
pub fn open_configured(config: &StorageConfig) -> Result<Option<ArchiveStore>, StorageUrlError> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    if config.archive_interval_ms == 0 {
        return Err(StorageUrlError::Invalid {
            url: url.clone(),
            detail: "[storage] archive_interval_ms must be at least 1".to_owned(),
        });
    }
    StorageUrl::parse(url)?.open().map(Some)
}

/// The running archiver (or nothing, when no URL is configured).
pub struct Archiver {
    running: Option<Running>,
}

struct Running {
    stop: watch::Sender<bool>,
    uploader: JoinHandle<()>,
    gauges: JoinHandle<()>,
    /// Local retention (`[storage] local_retention_ms`), when configured.
    retention: Option<JoinHandle<()>>,
}

impl Archiver {
    /// Starts the archiver task and its gauge task; with no store, publishes the gauges at zero.
    pub fn start(
        store: Option<ArchiveStore>,
        config: &StorageConfig,
        reader: LogReader,
        durable: watch::Receiver<Lsn>,
        log_dir: PathBuf,
    ) -> Archiver {
        let Some(store) = store else {
            progress::publish_disabled();
            return Archiver { running: None };
        };
        tracing::info!(url = %store.url, interval_ms = config.archive_interval_ms, "archiving the log");
        let progress = Arc::new(std::sync::Mutex::new(progress::Progress::default()));
        let (stop, stop_rx) = watch::channel(false);
        let gauges = tokio::spawn(progress::publish_gauges(
            progress.clone(),
            log_dir.clone(),
            reader.clone(),
            durable.clone(),
            stop_rx.clone(),
        ));
        let interval = Duration::from_millis(config.archive_interval_ms);
        // Retention passes follow the archiver's rhythm: a segment becomes evictable when a
        // pass put it sealed, and not before its records are old enough.
        let retention = (config.local_retention_ms > 0).then(|| {
            let retention = retention::Retention {
                store: store.clone(),
                reader: reader.clone(),
                log_dir: log_dir.clone(),
                retention_ms: config.local_retention_ms,
            };
            tokio::spawn(retention::run(retention, interval, stop_rx.clone()))
        });
        let uploader = uploader::Uploader {
            store,
            reader,
            log_dir,
            durable,
            progress,
            manifest: None,
            cursor: None,
            garbage: Vec::new(),
        };
        let uploader = tokio::spawn(uploader::run(uploader, interval, stop_rx));
        Archiver {
            running: Some(Running {
                stop,
                uploader,
                gauges,
                retention,
            }),
        }
    }

    /// Runs a last pass (so a clean shutdown leaves everything durable in the archive), waiting
    /// for it at most `deadline`, then stops.
    pub async fn stop(self, deadline: Duration) {
        let Some(running) = self.running else { return };
        let _receivers_gone_is_fine = running.stop.send(true);
        let uploader = running.uploader;
        let abort = uploader.abort_handle();
        if tokio::time::timeout(deadline, uploader).await.is_err() {
            tracing::warn!("the last archive pass did not finish within {deadline:?}; the next start continues it");
            abort.abort();
        }
        running.gauges.abort();
        if let Some(retention) = running.retention {
            // It saw the stop signal; a pass in progress leaves the log consistent at every
            // step (marker first, then the delete), so it need not be waited for.
            retention.abort();
        }
    }
}
