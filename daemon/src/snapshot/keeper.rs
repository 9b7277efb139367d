//! The projector's copy of the sequencer's state, written out as snapshots.
//!
//! Written from the projector (not the sequencer) because the projector already applies every
//! durable record in order off the request path, and a snapshot must only ever hold durable
//! records. A periodic snapshot moves the state to a thread of its own, which encodes and writes
//! it and hands it back; meanwhile the projector keeps the batches it applies (copies of their
//! records) and applies them to the state once it is back. So the projector never waits for a
//! snapshot: cloning a 10M-event log's state took 0.2-2.5 s, a pause every job read would feel.
//! At a clean stop the final state is written directly.

use super::{file, SequencerState};
use crate::log::LogReader;
use crate::projection::Keeper;
use crate::replay::{ApplyError, Projection};
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

/// See the module documentation.
pub struct SnapshotKeeper {
    held: Held,
    dir: PathBuf,
    every_records: u64,
    /// The LSN of the newest snapshot on disk (or being written).
    last_written: Lsn,
    /// The LSN from which the next snapshot is written ([`next_due`]).
    next_due: Lsn,
}

/// Where the state is.
enum Held {
    Here(SequencerState),
    /// With the snapshot thread, which gives it back; the batches applied meanwhile wait here.
    Writing {
        thread: JoinHandle<SequencerState>,
        pending: Vec<(Lsn, LogRecord)>,
    },
    /// Only while moving between the two.
    Moving,
}

impl SnapshotKeeper {
    /// A keeper over `state` (which must be as of the job projection's applied LSN), writing
    /// to `dir` every `every_records` records; `last_written` is the LSN of the snapshot start-up
    /// loaded (zero when none), so a long replay at start-up is snapshotted at once.
    pub fn new(state: SequencerState, dir: PathBuf, every_records: u64, last_written: Lsn) -> Self {
        let every_records = every_records.max(1);
        // Present from the start (0: none written yet), so a scrape can tell "no snapshot yet"
        // from "no such metric".
        metrics::gauge!("agentd_snapshot_lsn").set(0.0);
        SnapshotKeeper {
            next_due: next_due(last_written, every_records, &state),
            held: Held::Here(state),
            dir,
            every_records,
            last_written,
        }
    }

    /// Takes the state back from the snapshot thread (waiting for it when `wait`), applying
    /// the batches kept meanwhile. False while the thread still runs.
    fn take_back(&mut self, wait: bool) -> bool {
        match &self.held {
            Held::Here(_) => return true,
            Held::Writing { thread, .. } if !wait && !thread.is_finished() => return false,
            _ => {}
        }
        let Held::Writing { thread, pending } = std::mem::replace(&mut self.held, Held::Moving)
        else {
            unreachable!("checked above");
        };
        let mut state = match thread.join() {
            Ok(state) => state,
            Err(_) => crate::fatal("the snapshot thread panicked with the sequencer state"),
        };
        if let Err(error) = Projection::apply(&mut state, &pending) {
            crate::fatal(&format!(
                "cannot apply kept records to the sequencer state: {error}"
            ));
        }
        self.held = Held::Here(state);
        true
    }

    fn write_in_background(&mut self, log: &LogReader) {
        let Held::Here(state) = &self.held else {
            return;
        };
        let lsn = state.lsn();
        let Some(record_sha256) = file::record_sha256(log, lsn) else {
            tracing::warn!(%lsn, "no snapshot: cannot read the record at its lsn back");
            return;
        };
        let Held::Here(state) = std::mem::replace(&mut self.held, Held::Moving) else {
            unreachable!("checked above");
        };
        let dir = self.dir.clone();
        let (state_tx, state_rx) = std::sync::mpsc::channel::<SequencerState>();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let state = state_rx.recv().expect("the keeper sends the state");
                crate::thread_priority::lower_this_thread(SNAPSHOT_NICE_ADDED, "snapshot");
                write(&dir, lsn, record_sha256, &state);
                state
            });
        match spawned {
            Ok(thread) => {
                self.next_due = next_due(lsn, self.every_records, &state);
                state_tx
                    .send(state)
                    .expect("the snapshot thread waits for it");
                self.held = Held::Writing {
                    thread,
                    pending: Vec::new(),
                };
                self.last_written = lsn;
            }
            Err(error) => {
                self.held = Held::Here(state);
                tracing::warn!(%error, "no snapshot: cannot start its thread");
            }
        }
    }
}

/// The snapshot after one at `written` is due `every_records` records later, or later still
/// for a state holding more entries than that (jobs, rollouts, steps, ...): writing costs about
/// one pass over the state, so waiting at least as many records keeps the cost per record
/// constant however much history the state holds (a start-up then replays at most as many
/// records as the snapshot holds entries). Counted once per snapshot, never per batch.
fn next_due(written: Lsn, every_records: u64, state: &SequencerState) -> Lsn {
    Lsn(written.0.saturating_add(every_records.max(state.entries())))
}

/// Nice values added to the thread encoding a snapshot: nothing waits on it.
const SNAPSHOT_NICE_ADDED: i32 = 10;

fn write(dir: &std::path::Path, lsn: Lsn, record_sha256: [u8; 32], state: &SequencerState) {
    let started = Instant::now();
    match file::write_snapshot(dir, lsn, record_sha256, state) {
        Ok(path) => {
            metrics::gauge!("agentd_snapshot_lsn").set(lsn.0 as f64);
            tracing::info!(%lsn, path = %path.display(), ms = started.elapsed().as_millis() as u64, "wrote a snapshot of the sequencer state");
        }
        Err(error) => {
            tracing::warn!(%lsn, %error, "could not write a snapshot (start-up replays more of the log instead)")
        }
    }
}

/// Applied to the state, or kept for it while a snapshot thread holds it.
impl Projection for SnapshotKeeper {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        match &mut self.held {
            Held::Here(state) => state.apply(records),
            Held::Writing { pending, .. } => {
                pending.extend(records.iter().cloned());
                Ok(())
            }
            Held::Moving => unreachable!("the state is never left moving"),
        }
    }
}

impl Keeper for SnapshotKeeper {
    fn projection(&mut self) -> &mut dyn Projection {
        self
    }

    fn caught_up(&mut self, lsn: Lsn, log: &LogReader) {
        if !self.take_back(false) {
            return;
        }
        if lsn >= self.next_due {
            self.write_in_background(log);
        }
    }

    fn stopped(&mut self, _lsn: Lsn, log: &LogReader) {
        self.take_back(true);
        let Held::Here(state) = &self.held else {
            return;
        };
        let lsn = state.lsn();
        if lsn == self.last_written || lsn == Lsn::ZERO {
            return;
        }
        let Some(record_sha256) = file::record_sha256(log, lsn) else {
            tracing::warn!(%lsn, "no snapshot at stop: cannot read the record at its lsn back");
            return;
        };
        write(&self.dir, lsn, record_sha256, state);
    }
}

#[cfg(test)]
#[path = "keeper_tests.rs"]
mod tests;
