//! What the archive holds compared with the local log, published as the `agentd_archive_*`
//! gauges every second: lag, pending bytes and segments, last archived LSN. A gauge task of its
//! own, so the figures keep moving while an upload hangs on a slow or absent endpoint.

use super::manifest::SEGMENT_HEADER_BYTES;
use super::segments::list_local_segments;
use crate::log::{LogReader, Lsn};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// The archiver's view of what is uploaded, shared with the gauge task.
#[derive(Debug, Default)]
pub struct Progress {
    /// Last LSN the uploaded manifest covers.
    pub archived_lsn: u64,
    /// Bytes archived per segment, by first LSN.
    pub archived_bytes: BTreeMap<u64, u64>,
    /// Since when durable frames have been waiting for the archive (`None`: caught up). Set by
    /// the gauge task when it first sees the lag and by each pass to the moment it read the
    /// durable LSN it archived up to (everything after that became durable later).
    pub behind_since: Option<Instant>,
}

/// Shared progress: a plain mutex, never held across an await.
pub type SharedProgress = Arc<Mutex<Progress>>;

/// Publishes zeros when no archive is configured, so the families exist from start-up and the
/// alert sees "no lag" rather than "no data".
pub fn publish_disabled() {
    metrics::gauge!("agentd_archive_lag_seconds").set(0.0);
    metrics::gauge!("agentd_archive_pending_bytes").set(0.0);
    metrics::gauge!("agentd_archive_pending_segments").set(0.0);
    metrics::gauge!("agentd_archive_last_lsn").set(0.0);
}

/// Refreshes the gauges until the archiver stops.
pub async fn publish_gauges(
    progress: SharedProgress,
    log_dir: PathBuf,
    reader: LogReader,
    durable: watch::Receiver<Lsn>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(GAUGE_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let dir = log_dir.clone();
        let listed = tokio::task::spawn_blocking(move || list_local_segments(&dir)).await;
        let Ok(Ok(mut local)) = listed else {
            continue; // a listing error shows as stale gauges; the pass logs the cause
        };
        let durable_lsn = durable.borrow().0;
        // The active segment's file may end in preallocated zeros (`log/active.rs`): count its
        // bytes only to the end of the durable frames.
        if let Some((segment, end)) = reader.durable_end(Lsn(durable_lsn)) {
            for local in local.iter_mut().filter(|local| local.first_lsn == segment) {
                local.len_bytes = local.len_bytes.min(end);
            }
        }
        let figures = {
            // A panic elsewhere while holding the lock leaves data that is still a valid view.
            let mut progress = progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            figures(&mut progress, &local, durable_lsn, Instant::now())
        };
        metrics::gauge!("agentd_archive_lag_seconds").set(figures.lag.as_secs_f64());
        metrics::gauge!("agentd_archive_pending_bytes").set(figures.pending_bytes as f64);
        metrics::gauge!("agentd_archive_pending_segments").set(figures.pending_segments as f64);
        metrics::gauge!("agentd_archive_last_lsn").set(figures.archived_lsn as f64);
    }
}

/// The gauge values at one moment.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    lag: Duration,
    pending_bytes: u64,
    pending_segments: u64,
    archived_lsn: u64,
}

/// Pending: local bytes past what the archive holds of each segment (a segment holding only its
/// header has nothing to archive). Lag: how long the oldest unarchived durable frame has waited.
fn figures(
    progress: &mut Progress,
    local: &[super::segments::LocalSegment],
    durable_lsn: u64,
    now: Instant,
) -> Figures {
    let mut pending_bytes = 0;
    let mut pending_segments = 0;
    for segment in local {
        let archived = progress
            .archived_bytes
            .get(&segment.first_lsn)
            .copied()
            .unwrap_or(0);
        if segment.len_bytes > SEGMENT_HEADER_BYTES && segment.len_bytes > archived {
            pending_bytes += segment.len_bytes - archived;
            pending_segments += 1;
        }
    }
    let lag = if durable_lsn <= progress.archived_lsn {
        progress.behind_since = None;
        Duration::ZERO
    } else {
        now.saturating_duration_since(*progress.behind_since.get_or_insert(now))
    };
    Figures {
        lag,
        pending_bytes,
        pending_segments,
        archived_lsn: progress.archived_lsn,
    }
}

#[cfg(test)]
mod tests {
    use super::super::segments::LocalSegment;
    use super::*;

    fn segment(first_lsn: u64, len_bytes: u64) -> LocalSegment {
        LocalSegment {
            first_lsn,
            path: PathBuf::from(format!("{first_lsn}")),
            len_bytes,
        }
    }

    #[test]
    fn pending_counts_unarchived_bytes_and_lag_ages_from_the_first_sighting() {
        let start = Instant::now();
        let mut progress = Progress::default();
        let local = [segment(1, 1000), segment(40, 24)];
        let first = figures(&mut progress, &local, 39, start);
        assert_eq!(
            first,
            Figures {
                lag: Duration::ZERO,
                pending_bytes: 1000,
                pending_segments: 1,
                archived_lsn: 0
            }
        );
        let later = figures(&mut progress, &local, 39, start + Duration::from_secs(5));
        assert_eq!(later.lag, Duration::from_secs(5));
        progress.archived_lsn = 39;
        progress.archived_bytes.insert(1, 1000);
        let caught_up = figures(&mut progress, &local, 39, start + Duration::from_secs(6));
        assert_eq!(caught_up.lag, Duration::ZERO);
        assert_eq!(
            (caught_up.pending_bytes, caught_up.pending_segments),
            (0, 0)
        );
        assert_eq!(progress.behind_since, None);
    }
}
