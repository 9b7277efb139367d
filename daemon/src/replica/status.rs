//! What a read replica knows of its own progress, shared by the follower (which writes it), the
//! `/healthz` handler and the metrics gauges (which read it).
//!
//! Lag, as an operator reads it (docs/storage.md, "What a replica may lag"): the replica is
//! *caught up* while its last poll succeeded and its projections have applied the `last_lsn` of
//! the last manifest it read. Then `lag_records` and `lag_seconds` are both 0. Otherwise
//! `lag_seconds` is the time since it was last caught up (since its start if it never was):
//! it grows while a copy is behind, while polls fail and once it stopped following, and drops
//! back to 0 as soon as it holds everything it saw in the archive. The archive's newer records
//! are seen only at the next poll, so the lag a replica can show is at least one poll interval
//! short of the truth; the archive's own lag is the primary's `agentd_archive_lag_seconds`.

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
    /// Started with an http(s) `--primary`: exports and dataset builds run here and are
    /// recorded by the primary; otherwise they answer 405 like every write.
    pub runs_exports: bool,
    applied: AppliedWatch,
    progress: Mutex<Progress>,
}

/// The follower's view of the archive and the time it was last caught up. Every change and
/// every read first notes whether the replica is caught up at that instant, so the moment it
/// stops being caught up is the moment the lag counts from.
#[derive(Debug)]
struct Progress {
    /// The `last_lsn` of the last manifest read (at the start of a poll, before the copy).
    archive_last_lsn: u64,
    last_poll_ok_ms: Option<u64>,
    last_poll_error: Option<String>,
    /// Unix ms when the replica was last seen caught up; its start time before that.
    last_caught_up_ms: u64,
    stopped_following: bool,
}

impl Progress {
    fn new(started_ms: u64) -> Self {
        Progress {
            archive_last_lsn: 0,
            last_poll_ok_ms: None,
            last_poll_error: None,
            last_caught_up_ms: started_ms,
            stopped_following: false,
        }
    }

    /// Holds everything the last manifest named, and that poll (if it ended) succeeded.
    fn caught_up(&self, applied_lsn: Lsn) -> bool {
        self.last_poll_ok_ms.is_some()
            && self.last_poll_error.is_none()
            && !self.stopped_following
            && applied_lsn.0 >= self.archive_last_lsn
    }

    /// Notes `now_ms` as a caught-up instant if it is one; called before every change.
    fn observe(&mut self, applied_lsn: Lsn, now_ms: u64) {
        if self.caught_up(applied_lsn) {
            self.last_caught_up_ms = self.last_caught_up_ms.max(now_ms);
        }
    }

    fn lag_seconds(&mut self, applied_lsn: Lsn, now_ms: u64) -> f64 {
        self.observe(applied_lsn, now_ms);
        if self.caught_up(applied_lsn) {
            return 0.0;
        }
        now_ms.saturating_sub(self.last_caught_up_ms) as f64 / 1000.0
    }
}

impl ReplicaStatus {
    pub fn new(
        archive_url: String,
        (primary, runs_exports): (String, bool),
        applied: AppliedWatch,
        now_ms: u64,
    ) -> Self {
        ReplicaStatus {
            archive_url,
            primary,
            runs_exports,
            applied,
            progress: Mutex::new(Progress::new(now_ms)),
        }
    }

    /// Locks the progress after noting whether the replica is caught up at `now_ms`.
    fn progress_at(&self, now_ms: u64) -> std::sync::MutexGuard<'_, Progress> {
        let applied_lsn = self.applied.applied_lsn();
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress.observe(applied_lsn, now_ms);
        progress
    }

    /// A poll read the manifest: the archive holds records up to `archive_last_lsn`.
    pub fn manifest_read(&self, archive_last_lsn: u64, now_ms: u64) {
        self.progress_at(now_ms).archive_last_lsn = archive_last_lsn;
    }

    /// A poll copied everything the manifest it read named.
    pub fn poll_succeeded(&self, now_ms: u64) {
        let mut progress = self.progress_at(now_ms);
        progress.last_poll_ok_ms = Some(now_ms);
        progress.last_poll_error = None;
    }

    /// A poll failed; the next one retries.
    pub fn poll_failed(&self, error: String, now_ms: u64) {
        self.progress_at(now_ms).last_poll_error = Some(error);
    }

    /// The archive does not continue the local log: no poll will be made again.
    pub fn stopped_following(&self, error: String, now_ms: u64) {
        let mut progress = self.progress_at(now_ms);
        progress.last_poll_error = Some(error);
        progress.stopped_following = true;
    }

    /// The `replica` object of `GET /healthz` at `now_ms`.
    pub fn health(&self, now_ms: u64) -> ReplicaHealth {
        let applied_lsn = self.applied.applied_lsn();
        let mut progress = self.progress_at(now_ms);
        ReplicaHealth {
            archive_url: self.archive_url.clone(),
            primary: self.primary.clone(),
            archive_last_lsn: Lsn(progress.archive_last_lsn),
            applied_lsn,
            lag_records: progress.archive_last_lsn.saturating_sub(applied_lsn.0),
            lag_seconds: progress.lag_seconds(applied_lsn, now_ms),
            last_poll_ok_ms: progress.last_poll_ok_ms,
            last_poll_error: progress.last_poll_error.clone(),
            following: !progress.stopped_following,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use agentd_schemas::Lsn;

    const STARTED_MS: u64 = 1_000_000;

    /// A poll at `at_ms` that read a manifest ending at `archive_last_lsn`, then succeeded.
    fn poll(progress: &mut Progress, applied: u64, archive_last_lsn: u64, at_ms: u64) {
        progress.observe(Lsn(applied), at_ms);
        progress.archive_last_lsn = archive_last_lsn;
        progress.observe(Lsn(applied), at_ms);
        progress.last_poll_ok_ms = Some(at_ms);
        progress.last_poll_error = None;
    }

    #[test]
    fn a_replica_that_applied_everything_the_archive_holds_has_no_lag_however_long_since_its_poll()
    {
        let mut progress = Progress::new(STARTED_MS);
        poll(&mut progress, 40, 40, STARTED_MS + 100);
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 900), 0.0);
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 60_000), 0.0);
    }

    #[test]
    fn before_its_first_poll_a_replica_lags_since_its_start() {
        let mut progress = Progress::new(STARTED_MS);
        assert_eq!(progress.lag_seconds(Lsn(0), STARTED_MS + 2_500), 2.5);
    }

    #[test]
    fn new_archived_records_count_from_the_last_caught_up_instant_until_applied() {
        let mut progress = Progress::new(STARTED_MS);
        poll(&mut progress, 40, 40, STARTED_MS);
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 1_000), 0.0);
        // The next poll reads a manifest ending at 90; the copy and the projector take 1.5 s.
        progress.observe(Lsn(40), STARTED_MS + 2_000);
        progress.archive_last_lsn = 90;
        assert_eq!(progress.lag_seconds(Lsn(60), STARTED_MS + 3_500), 1.5);
        progress.last_poll_ok_ms = Some(STARTED_MS + 3_500);
        assert_eq!(progress.lag_seconds(Lsn(89), STARTED_MS + 3_600), 1.6);
        assert_eq!(progress.lag_seconds(Lsn(90), STARTED_MS + 3_700), 0.0);
    }

    #[test]
    fn failed_polls_and_a_stop_make_the_lag_grow_even_with_nothing_new_seen() {
        let mut progress = Progress::new(STARTED_MS);
        poll(&mut progress, 40, 40, STARTED_MS);
        progress.observe(Lsn(40), STARTED_MS + 1_000);
        progress.last_poll_error = Some("endpoint down".into());
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 31_000), 30.0);
        poll(&mut progress, 40, 40, STARTED_MS + 32_000);
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 32_000), 0.0);
        progress.observe(Lsn(40), STARTED_MS + 33_000);
        progress.stopped_following = true;
        assert_eq!(progress.lag_seconds(Lsn(40), STARTED_MS + 333_000), 300.0);
    }
}
