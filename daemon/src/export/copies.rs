//! Copies of recorded exports and dataset builds to object storage that failed, retried with
//! backoff by the runner between its jobs. A failed copy never fails the export: the files are
//! complete on the daemon's disk and recorded in the log without `copied_to`; a later copy is
//! recorded as `export_copied`, so the views show the URL only once the copy is whole.

use super::upload::{copy_to_store, url_of};
use super::ExportSettings;
use agentd_schemas::events::ExportedFile;
use std::time::Duration;
use tokio::time::Instant;

/// The wait before the first retry of a failed copy; each failure doubles it.
const COPY_RETRY_FIRST_MS: u64 = 1_000;
/// The longest wait between two retries of a copy.
const COPY_RETRY_MAX_MS: u64 = 60_000;
/// Tries of one copy before it is given up (about an hour at the longest wait); requesting the
/// same export or build again queues it once more.
const COPY_ATTEMPTS_MAX: u32 = 64;
/// Failed copies waiting for a retry; past this the oldest is given up (logged).
const PENDING_COPIES_MAX: usize = 64;

/// A copy waiting for its next try.
#[derive(Debug)]
struct PendingCopy {
    /// The export or build id.
    id: String,
    copy: CopyOf,
    attempts: u32,
    due: Instant,
}

/// The failed copies, each with the time of its next try.
#[derive(Debug, Default)]
pub(super) struct PendingCopies {
    queue: Vec<PendingCopy>,
}

impl PendingCopies {
    /// Queues a copy that failed `attempts` times (0: queue it to run now).
    pub(super) fn add(&mut self, id: String, copy: CopyOf, attempts: u32) {
        if self.queue.iter().any(|pending| pending.id == id) {
            return;
        }
        if attempts >= COPY_ATTEMPTS_MAX {
            tracing::error!(id = %id, attempts, "giving up copying to object storage; run the export or build again to retry");
            return;
        }
        if self.queue.len() >= PENDING_COPIES_MAX {
            let dropped = self.queue.remove(0);
            tracing::error!(id = %dropped.id, "too many copies to object storage failing; giving this one up (run it again to retry)");
        }
        let due = Instant::now() + backoff(attempts);
        self.queue.push(PendingCopy {
            id,
            copy,
            attempts,
            due,
        });
    }

    /// When the next copy is due, if any is waiting.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.queue.iter().map(|pending| pending.due).min()
    }

    /// Takes the copies due by `now`: `(id, what, failures so far)`.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<(String, CopyOf, u32)> {
        let (due, waiting) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|pending| pending.due <= now);
        self.queue = waiting;
        due.into_iter()
            .map(|pending: PendingCopy| (pending.id, pending.copy, pending.attempts))
            .collect()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.queue.iter().any(|pending| pending.id == id)
    }
}

/// The wait after `failures` failed tries: none before the first try, then 1 s doubling to 60 s.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doubled = COPY_RETRY_FIRST_MS.saturating_mul(1 << (failures - 1).min(16));
    Duration::from_millis(doubled.min(COPY_RETRY_MAX_MS))
}

/// What a copy puts: an export's or build's folder and the files its manifest lists.
#[derive(Debug, Clone)]
pub(super) struct CopyOf {
    /// Relative to the exports root.
    pub(super) dir: String,
    pub(super) files: Vec<ExportedFile>,
}

/// Copies to the store of `settings`, if one is set: the folder's URL when the copy is whole;
/// a failure is counted in `agentd_export_copy_failures_total` and logged (the caller queues a
/// retry).
pub(super) async fn try_copy(settings: &ExportSettings, copy: &CopyOf) -> CopyResult {
    let Some(store) = &settings.storage else {
        return CopyResult::NoStore;
    };
    match copy_to_store(store, &settings.root, &copy.dir, &copy.files).await {
        Ok(()) => CopyResult::Copied(url_of(&store.url, &copy.dir)),
        Err(error) => {
            metrics::counter!("agentd_export_copy_failures_total").increment(1);
            tracing::warn!(dir = %copy.dir, "copy to object storage failed, will retry: {error}");
            CopyResult::Failed
        }
    }
}

/// What [`try_copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CopyResult {
    /// No storage URL is set: nothing to copy.
    NoStore,
    /// Copied whole: the folder's URL, ending in `/`.
    Copied(String),
    /// The copy failed; retry it.
    Failed,
}

impl CopyResult {
    /// The URL to record, if copied.
    pub(super) fn url(&self) -> Option<String> {
        match self {
            CopyResult::Copied(url) => Some(url.clone()),
            CopyResult::NoStore | CopyResult::Failed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_a_minute() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(7), Duration::from_secs(60));
        assert_eq!(backoff(60), Duration::from_secs(60));
    }
}
