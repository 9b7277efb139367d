//! The follower task of a read replica: every poll interval it reads the archive's manifest,
//! copies the bytes past the local log (the rest of the last local segment, then each newer
//! segment), checks them (each object's sha256 against the manifest, the bytes the local log
//! already holds compared with the archive's, every frame's CRC and LSN), writes them durably,
//! applies their records to the queue state and the export ledger, and then publishes them as
//! durable so the projector applies them to the job and domain projections.

use super::status::ReplicaStatus;
use super::verify::{check_local_log, LocalLogCheck};
use crate::archive::manifest::{Manifest, ManifestPart, ManifestSegment};
use crate::archive::restore::{download_piece, fetch_manifest, RestoreError};
use crate::archive::{sha256_hex, ArchiveStore};
use crate::export::runner::ExportService;
use crate::log::{FollowError, FollowedLog, LogReader, Lsn};
use crate::replay::{drive, ApplyError, Projection};
use crate::sequencer::{AdoptArchived, SequencerHandle};
use crate::tasks::{shutdown_requested, ShutdownSignal};
use agentd_schemas::events::LogRecord;
use std::sync::Arc;
use std::time::Duration;

/// Records handed to the sequencer in one command: bounds the memory of decoded records in
/// flight while a large segment is applied.
const ADOPT_BATCH_RECORDS: usize = 4096;

/// Everything the follower task owns.
pub struct Follower {
    pub store: ArchiveStore,
    /// `None` only while a blocking write holds it.
    pub log: Option<FollowedLog>,
    pub reader: LogReader,
    pub sequencer: SequencerHandle,
    pub exports: ExportService,
    pub status: Arc<ReplicaStatus>,
    /// Whether every local segment held at start was found equal to the archive's (checked at
    /// the first poll that reads a manifest).
    pub verified: bool,
}

/// Why a poll stopped.
#[derive(Debug, thiserror::Error)]
enum PollError {
    /// The archive is unreachable, not there yet, or an object is damaged: the next poll
    /// tries again.
    #[error("{0}")]
    Retry(String),
    /// The archive is not the continuation of the local log: following stops for good.
    #[error("{0}")]
    Diverged(String),
}

impl From<RestoreError> for PollError {
    fn from(error: RestoreError) -> Self {
        PollError::Retry(error.to_string())
    }
}

/// Polls the archive every `interval` until the shutdown signal (a poll in progress finishes).
pub async fn follow(mut follower: Follower, interval: Duration, mut shutdown: ShutdownSignal) {
    loop {
        match follower.poll().await {
            Ok(()) => follower.status.poll_succeeded(crate::clock::now_ms()),
            Err(PollError::Retry(error)) => {
                metrics::counter!("agentd_replica_poll_failures_total").increment(1);
                tracing::warn!(url = %follower.store.url, "replica poll failed: {error}");
                follower.status.poll_failed(error, crate::clock::now_ms());
            }
            Err(PollError::Diverged(error)) => {
                tracing::error!("replica stopped following: {error}");
                follower
                    .status
                    .stopped_following(error, crate::clock::now_ms());
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown_requested(&mut shutdown) => return,
        }
    }
}

impl Follower {
    fn local(&self) -> &FollowedLog {
        // Only `write` takes the log out, and it puts it back before returning.
        self.log
            .as_ref()
            .expect("the followed log is back after every write")
    }

    /// One poll: reads the manifest (the status learns how far the archive goes, so the lag
    /// counts while the copy runs), then copies everything it names past the local log.
    async fn poll(&mut self) -> Result<(), PollError> {
        let manifest = fetch_manifest(&self.store).await?;
        self.status
            .manifest_read(manifest.last_lsn, crate::clock::now_ms());
        let (active_first_lsn, active_len_bytes) = self.local().active_segment();
        let local_last_lsn = self.local().last_lsn().0;
        if manifest.segments.is_empty() && local_last_lsn == 0 {
            return Ok(());
        }
        if !self.verified {
            self.verify_local_log(&manifest).await?;
        }
        let Some(position) = manifest
            .segments
            .iter()
            .position(|segment| segment.first_lsn == active_first_lsn)
        else {
            return Err(self.diverged(
                &manifest,
                format!("it has no segment starting at lsn {active_first_lsn}, where the local log's last segment starts"),
            ));
        };
        let current = &manifest.segments[position];
        if current.bytes < active_len_bytes {
            return Err(self.diverged(
                &manifest,
                format!(
                    "it holds {} bytes of segment {}, the local log {active_len_bytes} (was the archive restored to an earlier point, or is it another daemon's?)",
                    current.bytes, current.name
                ),
            ));
        }
        self.extend_current(&manifest, current).await?;
        for next in &manifest.segments[position + 1..] {
            self.copy_segment(next).await?;
        }
        Ok(())
    }

    fn diverged(&self, manifest: &Manifest, detail: String) -> PollError {
        let local = self.local();
        PollError::Diverged(format!(
            "the archive at {} does not continue the log in {} (local lsns 1 to {}; the archive holds 1 to {}): {detail}. Point the replica at the primary's archive, or give it a new --data-dir",
            self.store.url,
            local.dir().display(),
            local.last_lsn(),
            manifest.last_lsn
        ))
    }

    /// The first poll's check of every local segment against the manifest
    /// (`verify.rs`): a mismatch stops following, naming the segment.
    async fn verify_local_log(&mut self, manifest: &Manifest) -> Result<(), PollError> {
        let log_dir = self.local().dir().to_path_buf();
        let archived = manifest.clone();
        let checked =
            tokio::task::spawn_blocking(move || check_local_log(&log_dir, &archived)).await;
        match checked {
            Ok(Ok(())) => {
                self.verified = true;
                Ok(())
            }
            Ok(Err(LocalLogCheck::Differs(detail))) => Err(self.diverged(manifest, detail)),
            Ok(Err(LocalLogCheck::Unreadable(detail))) => Err(PollError::Retry(detail)),
            Err(error) => crate::fatal(&format!("the replica's check task failed: {error}")),
        }
    }

    /// Copies the rest of the local log's last segment; where a downloaded object overlaps the
    /// bytes already held, they are compared byte by byte.
    async fn extend_current(
        &mut self,
        manifest: &Manifest,
        entry: &ManifestSegment,
    ) -> Result<(), PollError> {
        let pieces = if entry.sealed {
            vec![entry.whole_prefix_part()]
        } else {
            entry.parts.clone()
        };
        let (_, held) = self.local().active_segment();
        for piece in pieces.iter().filter(|piece| piece.to > held) {
            let (_, held) = self.local().active_segment();
            if piece.to <= held {
                continue;
            }
            let bytes = download_piece(&self.store, piece).await?;
            if piece.from < held {
                let local = self.read_local(entry.first_lsn, piece.from, held)?;
                if bytes[..local.len()] != local[..] {
                    return Err(self.diverged(
                        manifest,
                        format!(
                            "bytes {}..{held} of segment {} differ",
                            piece.from, entry.name
                        ),
                    ));
                }
            }
            let new = bytes.slice((held.saturating_sub(piece.from)) as usize..);
            self.write(move |log| log.extend(&new)).await?;
        }
        Ok(())
    }

    /// Copies a segment the local log does not have yet, whole as archived.
    async fn copy_segment(&mut self, entry: &ManifestSegment) -> Result<(), PollError> {
        let pieces: Vec<ManifestPart> = if entry.sealed {
            vec![entry.whole_prefix_part()]
        } else {
            entry.parts.clone()
        };
        let mut segment = Vec::with_capacity(entry.bytes as usize);
        for piece in &pieces {
            segment.extend_from_slice(&download_piece(&self.store, piece).await?);
        }
        if sha256_hex(&segment) != entry.sha256 {
            return Err(PollError::Retry(format!(
                "archived segment {} put together from {} part(s) does not have the manifest's sha256",
                self.store.describe(&self.store.segment_path(&entry.name)),
                pieces.len()
            )));
        }
        self.write(move |log| log.start_segment(&segment)).await
    }

    fn read_local(&self, first_lsn: u64, from: u64, to: u64) -> Result<Vec<u8>, PollError> {
        self.local()
            .read_local(first_lsn, from, to)
            .map_err(|error| PollError::Retry(format!("cannot read the local log: {error}")))
    }

    /// Runs one checked write on a blocking thread, then applies the new records to the queue
    /// state and the ledger, then publishes them as durable. Bytes refused by the check are
    /// not the archive's next frames: following stops. A failed local write or read stops the
    /// process (a partial write may sit in the file; recovery cuts it at the next start).
    async fn write(
        &mut self,
        copy: impl FnOnce(&mut FollowedLog) -> Result<Lsn, FollowError> + Send + 'static,
    ) -> Result<(), PollError> {
        let mut log = self
            .log
            .take()
            .expect("the followed log is back after every write");
        let before = log.last_lsn();
        let (log, copied) = tokio::task::spawn_blocking(move || {
            let copied = copy(&mut log);
            (log, copied)
        })
        .await
        .unwrap_or_else(|error| crate::fatal(&format!("the replica's copy task failed: {error}")));
        self.log = Some(log);
        let last = match copied {
            Ok(last) => last,
            Err(FollowError::NotTheNextFrames { detail }) => {
                return Err(PollError::Diverged(format!(
                    "the archive at {} holds bytes that do not continue the local log: {detail}",
                    self.store.url
                )))
            }
            Err(FollowError::Log(error)) => {
                crate::fatal(&format!("cannot write the replica's local log: {error}"))
            }
        };
        self.adopt(before, last).await;
        self.local().publish_durable();
        Ok(())
    }

    /// Applies records `after < lsn <= up_to` of the local log to the sequencer's queue state
    /// and the export ledger, in batches.
    async fn adopt(&self, after: Lsn, up_to: Lsn) {
        let mut adopting = Adopting {
            sequencer: self.sequencer.clone(),
            exports: self.exports.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let reader = self.reader.clone();
        let driven = tokio::task::spawn_blocking(move || {
            drive(
                &reader,
                after,
                up_to,
                ADOPT_BATCH_RECORDS,
                &mut [&mut adopting],
                |_| {},
            )
        })
        .await;
        match driven {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => crate::fatal(&format!(
                "cannot apply the replica's copied records {}..={up_to}: {error}",
                after.next()
            )),
            Err(error) => crate::fatal(&format!("the replica's apply task failed: {error}")),
        }
    }
}

/// Hands each batch of copied records to the export ledger and the sequencer.
struct Adopting {
    sequencer: SequencerHandle,
    exports: ExportService,
    runtime: tokio::runtime::Handle,
}

impl Projection for Adopting {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        self.apply_owned(records.to_vec())
    }

    fn apply_owned(&mut self, records: Vec<(Lsn, LogRecord)>) -> Result<(), ApplyError> {
        self.exports.follow(&records);
        // On a blocking thread (see `adopt`), so waiting on the runtime here is allowed.
        self.runtime
            .block_on(self.sequencer.call(AdoptArchived { records }, None))?;
        Ok(())
    }
}
