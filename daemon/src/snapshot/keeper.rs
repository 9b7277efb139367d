//! The projector's copy of the sequencer's state, written out as snapshots.
//!
//! Written from the projector (not the sequencer) because the projector already applies every
//! durable record in order off the request path, and a snapshot must only ever hold durable
//! records. A periodic snapshot clones the state on the projector thread (the one pause: tens
//! of milliseconds for hundreds of thousands of jobs) and encodes and writes it on a thread of
//! its own; at a clean stop the final state is written directly.

use super::{file, SequencerState};
use crate::log::LogReader;
use crate::projection::Keeper;
use crate::replay::Projection;
use agentd_schemas::Lsn;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

/// See the module documentation.
pub struct SnapshotKeeper {
    state: SequencerState,
    dir: PathBuf,
    every_records: u64,
    /// The LSN of the newest snapshot on disk (or being written).
    last_written: Lsn,
    writing: Option<JoinHandle<()>>,
}

impl SnapshotKeeper {
    /// A keeper over `state` (which must be as of the job projection's applied LSN), writing
    /// to `dir` every `every_records` records; `last_written` is the LSN of the snapshot start-up
    /// loaded (zero when none), so a long replay at start-up is snapshotted at once.
    pub fn new(state: SequencerState, dir: PathBuf, every_records: u64, last_written: Lsn) -> Self {
        SnapshotKeeper {
            state,
            dir,
            every_records: every_records.max(1),
            last_written,
            writing: None,
        }
    }

    fn write_in_background(&mut self, log: &LogReader) {
        let lsn = self.state.lsn();
        let Some(record_sha256) = file::record_sha256(log, lsn) else {
            tracing::warn!(%lsn, "no snapshot: cannot read the record at its lsn back");
            return;
        };
        let started = Instant::now();
        let state = self.state.clone();
        let cloned_ms = started.elapsed().as_millis() as u64;
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                crate::thread_priority::lower_this_thread(SNAPSHOT_NICE_ADDED, "snapshot");
                write(&dir, lsn, record_sha256, &state, cloned_ms);
            });
        match spawned {
            Ok(handle) => {
                self.writing = Some(handle);
                self.last_written = lsn;
            }
            Err(error) => tracing::warn!(%error, "no snapshot: cannot start its thread"),
        }
    }

    fn wait_for_writer(&mut self) {
        if let Some(handle) = self.writing.take() {
            let _panicked_is_logged = handle.join();
        }
    }
}

/// Nice values added to the thread encoding a snapshot: nothing waits on it.
const SNAPSHOT_NICE_ADDED: i32 = 10;

fn write(
    dir: &std::path::Path,
    lsn: Lsn,
    record_sha256: [u8; 32],
    state: &SequencerState,
    cloned_ms: u64,
) {
    let started = Instant::now();
    match file::write_snapshot(dir, lsn, record_sha256, state) {
        Ok(path) => {
            metrics::gauge!("agentd_snapshot_lsn").set(lsn.0 as f64);
            tracing::info!(%lsn, path = %path.display(), cloned_ms, ms = started.elapsed().as_millis() as u64, "wrote a snapshot of the sequencer state");
        }
        Err(error) => {
            tracing::warn!(%lsn, %error, "could not write a snapshot (start-up replays more of the log instead)")
        }
    }
}

impl Keeper for SnapshotKeeper {
    fn projection(&mut self) -> &mut dyn Projection {
        &mut self.state
    }

    fn caught_up(&mut self, lsn: Lsn, log: &LogReader) {
        if lsn.0.saturating_sub(self.last_written.0) < self.every_records {
            return;
        }
        if self
            .writing
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
        {
            return;
        }
        self.wait_for_writer();
        self.write_in_background(log);
    }

    fn stopped(&mut self, _lsn: Lsn, log: &LogReader) {
        self.wait_for_writer();
        let lsn = self.state.lsn();
        if lsn == self.last_written || lsn == Lsn::ZERO {
            return;
        }
        let Some(record_sha256) = file::record_sha256(log, lsn) else {
            tracing::warn!(%lsn, "no snapshot at stop: cannot read the record at its lsn back");
            return;
        };
        write(&self.dir, lsn, record_sha256, &self.state, 0);
    }
}
