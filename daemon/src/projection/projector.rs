//! The projector thread: tails the durable LSN and applies new frames to every projection.

use super::{
    domain, AppliedWatch, ProjectionError, ProjectionStore, StoredJobs, DURABLE_COMMIT_INTERVAL,
    FRAMES_PER_TRANSACTION_MAX,
};
use crate::log::LogReader;
use crate::replay::{drive, Projection};
use agentd_schemas::Lsn;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Longest the projector lets durable frames gather before applying them when no reader is
/// waiting for them. One redb transaction costs far more than one frame in it (commit, table
/// roots, and a job's record rewritten once per transaction however many of its events it
/// holds), so under load fewer, larger transactions save most of the projector's CPU; a reader
/// that waits (read-your-writes, domain writes, exports) raises a demand and ends the wait.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(10);
/// Durable frames that end the coalescing wait early.
const COALESCE_FRAMES: u64 = 2048;

/// State the projector keeps beside the projections and writes out now and then (the
/// sequencer-state snapshots, `crate::snapshot`). A trait so that this module does not depend
/// on what the state is.
pub trait Keeper: Send {
    /// Applied after the job projection and before the domain projections.
    fn projection(&mut self) -> &mut dyn Projection;
    /// After each catch-up: everything up to `lsn` is applied.
    fn caught_up(&mut self, lsn: Lsn, log: &LogReader);
    /// Once, at a clean stop, after the final catch-up.
    fn stopped(&mut self, lsn: Lsn, log: &LogReader);
}

/// The projector thread's loop: tails the durable LSN and applies what it finds to the job
/// projection, the keeper's state and the domain projections (once loaded: `domain/load.rs`),
/// in that order, before publishing the applied LSN.
struct Projector {
    store: Arc<ProjectionStore>,
    domain: Arc<domain::DomainProjections>,
    keeper: Option<Box<dyn Keeper>>,
    log: LogReader,
    durable_rx: watch::Receiver<Lsn>,
    demand_rx: watch::Receiver<Lsn>,
    stop: watch::Receiver<bool>,
    applied_tx: watch::Sender<Lsn>,
    runtime: tokio::runtime::Handle,
    last_persist: Instant,
}

/// What the projector does next.
enum Step {
    Apply(Lsn),
    Gather(Lsn, Duration),
    Idle,
    Stop,
}

impl Projector {
    fn run(mut self) {
        let mut pending_since: Option<Instant> = None;
        loop {
            match self.next_step(&mut pending_since) {
                Step::Apply(durable) => {
                    pending_since = None;
                    self.apply_up_to(durable);
                }
                Step::Gather(applied, remaining) => self.gather(applied, remaining),
                Step::Idle => {
                    if !self.idle() {
                        break;
                    }
                }
                Step::Stop => break,
            }
        }
        self.finish();
    }

    fn next_step(&mut self, pending_since: &mut Option<Instant>) -> Step {
        let durable = *self.durable_rx.borrow_and_update();
        let applied = *self.applied_tx.borrow();
        if durable <= applied {
            return if *self.stop.borrow() {
                Step::Stop
            } else {
                Step::Idle
            };
        }
        let since = *pending_since.get_or_insert_with(Instant::now);
        let waited = since.elapsed();
        let wanted = *self.demand_rx.borrow_and_update();
        if wanted > applied
            || waited >= COALESCE_WINDOW
            || durable.0 - applied.0 >= COALESCE_FRAMES
            || *self.stop.borrow()
        {
            return Step::Apply(durable);
        }
        Step::Gather(applied, COALESCE_WINDOW - waited)
    }

    fn apply_up_to(&mut self, durable: Lsn) {
        if let Err(error) = self.catch_up(durable) {
            crate::fatal(&format!("projector cannot apply the log: {error}"));
        }
        if self.last_persist.elapsed() >= DURABLE_COMMIT_INTERVAL {
            self.persist();
        }
    }

    /// Lets frames gather until a reader raises its demand, [`COALESCE_FRAMES`] frames past
    /// `applied` are durable, the daemon stops, or `remaining` passes.
    fn gather(&mut self, applied: Lsn, remaining: Duration) {
        let (demand_rx, durable_rx, stop) =
            (&mut self.demand_rx, &mut self.durable_rx, &mut self.stop);
        self.runtime.block_on(async {
            let enough = durable_rx.wait_for(|durable| durable.0 >= applied.0 + COALESCE_FRAMES);
            tokio::select! {
                _ = tokio::time::sleep(remaining) => {}
                _ = demand_rx.changed() => {}
                _ = stop.changed() => {}
                _ = enough => {}
            }
        });
    }

    /// Waits for the durable LSN to move; returns false once the log writer is gone. Idle
    /// time is used to make the projection durable.
    fn idle(&mut self) -> bool {
        let (durable_rx, stop) = (&mut self.durable_rx, &mut self.stop);
        let changed = self.runtime.block_on(async {
            tokio::select! {
                changed = tokio::time::timeout(DURABLE_COMMIT_INTERVAL, durable_rx.changed()) => changed,
                _ = stop.changed() => Ok(Ok(())),
            }
        });
        match changed {
            Ok(Ok(())) => true,
            Ok(Err(_writer_gone)) => false,
            Err(_idle) => {
                self.persist();
                true
            }
        }
    }

    fn persist(&mut self) {
        if let Err(error) = self.store.persist() {
            crate::fatal(&format!("projector cannot persist: {error}"));
        }
        self.last_persist = Instant::now();
    }

    /// Applies the durable frames up to `durable` to the job projection, the keeper's state
    /// and (on the projector's turn) the domain projections, publishing the applied LSN after
    /// each batch. The turn is held until the last LSN is published, so the domain loader sees
    /// either none or all of a catch-up.
    fn catch_up(&mut self, durable: Lsn) -> Result<Lsn, ProjectionError> {
        let domain = Arc::clone(&self.domain);
        let turn = domain.projector_turn();
        let mut domain_projection = &*domain;
        let mut jobs = StoredJobs::new(&self.store)?;
        let after = jobs.applied;
        let mut projections: Vec<&mut dyn Projection> = vec![&mut jobs];
        if let Some(keeper) = self.keeper.as_mut() {
            projections.push(keeper.projection());
        }
        if *turn {
            projections.push(&mut domain_projection);
        }
        let applied_tx = &self.applied_tx;
        let lsn = drive(
            &self.log,
            after,
            durable,
            FRAMES_PER_TRANSACTION_MAX,
            &mut projections,
            |lsn| {
                applied_tx.send_replace(lsn);
            },
        )?;
        drop(projections);
        applied_tx.send_replace(lsn);
        drop(turn);
        if let Some(keeper) = self.keeper.as_mut() {
            keeper.caught_up(lsn, &self.log);
        }
        Ok(lsn)
    }

    /// Final catch-up so a graceful stop leaves the projection complete and durable, and the
    /// keeper's state written as of its last LSN.
    fn finish(mut self) {
        let durable = *self.durable_rx.borrow();
        match self.catch_up(durable) {
            Ok(lsn) => {
                if let Some(keeper) = self.keeper.as_mut() {
                    keeper.stopped(lsn, &self.log);
                }
            }
            Err(error) => tracing::error!("projector final catch-up failed: {error}"),
        }
        if let Err(error) = self.store.persist() {
            tracing::error!("projector final persist failed: {error}");
        }
    }
}

/// Starts the projector thread. It stops when `stop` turns true (after the log writer has
/// drained), with a final catch-up and a durable commit. `domain` (unless it is still loading)
/// and `keeper` must already reflect the job projection's applied LSN; each batch is applied
/// to all of them before the LSN is published.
pub fn spawn_projector(
    store: Arc<ProjectionStore>,
    (domain, keeper): (Arc<domain::DomainProjections>, Option<Box<dyn Keeper>>),
    log: LogReader,
    durable_rx: watch::Receiver<Lsn>,
    stop: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
) -> Result<(AppliedWatch, std::thread::JoinHandle<()>), ProjectionError> {
    let applied = store.applied_lsn()?;
    let (applied_tx, applied_rx) = watch::channel(applied);
    let (demand_tx, demand_rx) = watch::channel(applied);
    let projector = Projector {
        store,
        domain,
        keeper,
        log,
        durable_rx,
        demand_rx,
        stop,
        applied_tx,
        runtime,
        last_persist: Instant::now(),
    };
    let thread = std::thread::Builder::new()
        .name("projector".into())
        .spawn(move || projector.run())
        .map_err(|source| ProjectionError::Io {
            path: "projector thread".into(),
            source,
        })?;
    let watch = AppliedWatch {
        rx: applied_rx,
        demand: Arc::new(demand_tx),
    };
    Ok((watch, thread))
}
