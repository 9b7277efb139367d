//! Loading the domain projections after a restart, behind the job API.
//!
//! **Why.** The domain projections hold the trajectory text of the whole log in memory, and
//! rebuilding them means decoding every record: about 20 s of CPU for a 10M-event log. The job
//! API (submit, lease, heartbeat, complete, job reads) needs none of it: the sequencer decides
//! against its queue state and fact index, and job reads come from the redb job projection. So
//! a primary starts serving as soon as those are current, and a loader thread replays the log
//! into the domain projections beside it.
//!
//! **States.** `Loading` (the loader applies, the projector skips the domain projections) then
//! `Loaded` (the projector applies every batch to them after the job projection, as before this
//! existed). The daemon and `agentd replica` start them `Loading`; projections built any other
//! way (`agentd rebuild`, tests) start `Loaded`.
//!
//! **Handover.** The projector holds [`LoadState::turn`] for each catch-up it runs (apply and
//! publish its applied LSN), and applies to the domain projections only when the turn says so.
//! The loader replays up to the projector's applied LSN without the turn, then takes it: if
//! the domain projections reached the projector's applied LSN (which cannot move while the
//! loader holds the turn), it hands over; otherwise it replays the difference and tries again.
//! So every record is applied exactly once, in order, by one of the two, and after the
//! handover the projector's applied LSN covers the domain projections too, as readers expect.
//!
//! **Cost.** The loader leaves undecoded the records that hold only job and queue events
//! ([`super::ignores_record`]): they reach the projections empty, so the applied LSN moves as
//! before while the payloads, results and log tails the projections would drop are never
//! decoded.
//!
//! **Readers.** While loading, the domain routes, the digest, exports and the domain gauges wait
//! for [`DomainProjections::wait_loaded`] (the routes bounded, then `503 loading`).

use super::DomainProjections;
use crate::log::LogReader;
use crate::projection::{AppliedWatch, FRAMES_PER_TRANSACTION_MAX};
use crate::replay::{drive_skipping, ApplyError, Projection};
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Nice values added to the loader thread: requests on the job API come first while it runs.
const LOADER_NICE_ADDED: i32 = 5;

/// Whether the domain projections are loaded, and whose turn it is to apply to them.
#[derive(Debug)]
pub struct LoadState {
    /// True once the projector applies each batch to the domain projections too.
    projector_applies: Mutex<bool>,
    loaded: watch::Sender<bool>,
}

impl LoadState {
    /// Loaded: the projector applies to the domain projections from the start.
    pub(super) fn loaded() -> Self {
        LoadState {
            projector_applies: Mutex::new(true),
            loaded: watch::Sender::new(true),
        }
    }
}

impl DomainProjections {
    /// Marks the projections as still to be loaded: [`Self::spawn_loader`] fills them, and the
    /// projector leaves them alone until it hands over. Called before the projector starts.
    pub fn mark_loading(&self) {
        *self.projector_turn() = false;
        self.load.loaded.send_replace(false);
        metrics::gauge!("agentd_domain_loaded").set(0.0);
    }

    /// Whether the projections hold everything the projector applied (and will keep up).
    pub fn is_loaded(&self) -> bool {
        *self.load.loaded.borrow()
    }

    /// Waits until the projections are loaded, or `timeout` passes (then returns false).
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        // Every domain request asks; once loaded, the answer needs no subscription or timer.
        if self.is_loaded() {
            return true;
        }
        let mut loaded = self.load.loaded.subscribe();
        tokio::time::timeout(timeout, loaded.wait_for(|loaded| *loaded))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// The projector's turn (see the module documentation): held while it applies a batch
    /// and publishes its applied LSN; the guard says whether to apply to these projections too.
    pub fn projector_turn(&self) -> MutexGuard<'_, bool> {
        self.load
            .projector_applies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the loader thread: it replays the log from the projections' applied LSN up to
    /// the projector's and hands over. It gives up quietly when `stop` turns true first (the
    /// daemon is stopping). A log that cannot be read stops the process, as in the projector.
    pub fn spawn_loader(
        self: &Arc<Self>,
        log: LogReader,
        projector: AppliedWatch,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let domain = Arc::clone(self);
        std::thread::Builder::new()
            .name("domain-loader".into())
            .spawn(move || {
                crate::thread_priority::lower_this_thread(LOADER_NICE_ADDED, "domain-loader");
                let started = Instant::now();
                match load(&domain, &log, &projector, &stop) {
                    Ok(true) => {
                        let lsn = domain.applied_lsn();
                        let seconds = started.elapsed().as_secs_f64();
                        metrics::gauge!("agentd_domain_load_seconds").set(seconds);
                        tracing::info!(%lsn, seconds, "domain projections loaded");
                    }
                    Ok(false) => tracing::info!("domain projections not loaded: stopping"),
                    Err(error) => crate::fatal(&format!(
                        "cannot load the domain projections from the log: {error}"
                    )),
                }
            })
    }
}

/// Replays until the handover; false when stopped first.
fn load(
    domain: &DomainProjections,
    log: &LogReader,
    projector: &AppliedWatch,
    stop: &watch::Receiver<bool>,
) -> Result<bool, crate::replay::DriveError> {
    loop {
        let target = projector.applied_lsn();
        let from = domain.applied_lsn();
        if from < target {
            let mut loading = Loading { domain, stop };
            let progress = |lsn: Lsn| {
                metrics::gauge!("agentd_domain_load_applied_lsn").set(lsn.0 as f64);
            };
            match drive_skipping(
                log,
                (from, target),
                Some(super::ignores_record),
                FRAMES_PER_TRANSACTION_MAX,
                &mut [&mut loading],
                progress,
            ) {
                Ok(_) => {}
                Err(crate::replay::DriveError::Apply(_)) if *stop.borrow() => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        let mut turn = domain.projector_turn();
        if domain.applied_lsn() >= projector.applied_lsn() {
            *turn = true;
            domain.load.loaded.send_replace(true);
            metrics::gauge!("agentd_domain_loaded").set(1.0);
            return Ok(true);
        }
    }
}

/// The domain projections as the loader's only projection, refusing further batches once the
/// daemon stops.
struct Loading<'a> {
    domain: &'a DomainProjections,
    stop: &'a watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("stopping")]
struct Stopping;

impl Projection for Loading<'_> {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        self.apply_owned(records.to_vec())
    }

    fn apply_owned(&mut self, records: Vec<(Lsn, LogRecord)>) -> Result<(), ApplyError> {
        if *self.stop.borrow() {
            return Err(Box::new(Stopping));
        }
        self.domain.apply_batch(records);
        Ok(())
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
