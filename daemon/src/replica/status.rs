//! What a read replica knows of its own progress, shared by the follower (which writes it), the
//! `/healthz` handler and the metrics gauges (which read it).

use crate::projection::AppliedWatch;
use agentd_schemas::api::ReplicaHealth;
use agentd_schemas::Lsn;
use std::sync::{Mutex, PoisonError};

/// The replica's progress. Cheap to lock: every field is small and no lock is held across an
/// await.
pub struct ReplicaStatus {
    /// The storage URL followed.
    pub archive_url: String,
    /// Named in every 405 answer: `--primary`, or the archive URL.
    pub primary: String,
    applied: AppliedWatch,
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    archive_last_lsn: u64,
    last_poll_ok_ms: Option<u64>,
    last_poll_error: Option<String>,
    /// Unix ms when the replica last held everything the archive held; `None` before.
    caught_up_at_ms: Option<u64>,
    /// When the replica started: the lag of one that never caught up counts from here.
    started_ms: u64,
    stopped_following: bool,
}

impl ReplicaStatus {
    pub fn new(archive_url: String, primary: String, applied: AppliedWatch, now_ms: u64) -> Self {
        ReplicaStatus {
            archive_url,
            primary,
            applied,
            progress: Mutex::new(Progress {
                started_ms: now_ms,
                ..Progress::default()
            }),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A poll read the manifest (`archive_last_lsn`) and copied everything it named up to
    /// `local_last_lsn`.
    pub fn poll_succeeded(&self, archive_last_lsn: u64, local_last_lsn: Lsn, now_ms: u64) {
        let mut progress = self.progress();
        progress.archive_last_lsn = archive_last_lsn;
        progress.last_poll_ok_ms = Some(now_ms);
        progress.last_poll_error = None;
        if local_last_lsn.0 >= archive_last_lsn {
            progress.caught_up_at_ms = Some(now_ms);
        }
    }

    /// A poll failed; the next one retries.
    pub fn poll_failed(&self, error: String) {
        self.progress().last_poll_error = Some(error);
    }

    /// The archive does not continue the local log: no poll will be made again.
    pub fn stopped_following(&self, error: String) {
        let mut progress = self.progress();
        progress.last_poll_error = Some(error);
        progress.stopped_following = true;
    }

    /// The `replica` object of `GET /healthz` at `now_ms`.
    pub fn health(&self, now_ms: u64) -> ReplicaHealth {
        let applied_lsn = self.applied.applied_lsn();
        let progress = self.progress();
        let behind_since_ms = progress.caught_up_at_ms.unwrap_or(progress.started_ms);
        ReplicaHealth {
            archive_url: self.archive_url.clone(),
            primary: self.primary.clone(),
            archive_last_lsn: Lsn(progress.archive_last_lsn),
            applied_lsn,
            lag_records: progress.archive_last_lsn.saturating_sub(applied_lsn.0),
            lag_seconds: now_ms.saturating_sub(behind_since_ms) as f64 / 1000.0,
            last_poll_ok_ms: progress.last_poll_ok_ms,
            last_poll_error: progress.last_poll_error.clone(),
            following: !progress.stopped_following,
        }
    }
}
