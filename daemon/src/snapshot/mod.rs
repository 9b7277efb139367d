//! Snapshots of the sequencer's state: a cache that lets start-up skip replaying the whole log.
//!
//! **What.** [`SequencerState`]: everything a primary needs before it serves the job API (the
//! queue state with its fact index, the export ledger, the time of the last record, the
//! recorded settings), as of one LSN. No trajectory text: the domain projections load from the
//! log behind the job API (`projection/domain/load.rs`), so a snapshot stays small (tens of
//! bytes per job and per step) however much text the log holds.
//!
//! **Who writes.** The projector keeps its own copy ([`keeper::SnapshotKeeper`]), applied from
//! the same batches as the job projection, and writes it every
//! `[log] snapshot_every_records` records, or as many records as the state holds entries when
//! that is more (the state moves to a thread of its own for the write and back), and at a
//! clean stop, under `<data-dir>/projections/snapshots/` (`file.rs` draws the format).
//!
//! **Who reads.** Start-up loads the newest snapshot whose LSN the log holds with the same
//! record there (the sha256 of that record's payload is the log's identity), then replays only
//! the records after it. A missing, damaged, foreign or stale snapshot, or one written by a
//! build with another format version, is skipped with a warning: the log is replayed from the
//! start, as without snapshots. A snapshot is never a source of truth: deleting
//! `projections/` (or only `snapshots/`) costs one full replay.

pub mod file;
pub mod keeper;
pub mod settings;

use crate::export::ledger::ExportLedger;
use crate::queue::QueueState;
use crate::replay::{ApplyError, Projection};
use agentd_schemas::events::LogRecord;
use agentd_schemas::Lsn;
use serde::{Deserialize, Serialize};
pub use settings::RecordedSettings;

/// The state a primary needs before serving, as of [`SequencerState::lsn`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequencerState {
    pub queue: QueueState,
    pub ledger: ExportLedger,
    /// The time of the last record: the scheduler judges missed firings by it.
    pub last_record_ms: Option<u64>,
    pub settings: RecordedSettings,
}

impl Default for SequencerState {
    fn default() -> Self {
        SequencerState {
            queue: QueueState::new(),
            ledger: ExportLedger::default(),
            last_record_ms: None,
            settings: RecordedSettings::default(),
        }
    }
}

impl file::SnapshotState for SequencerState {
    fn after_load(&mut self) {
        self.queue.after_load();
        self.ledger.after_load();
    }
}

impl file::SnapshotState for QueueState {
    fn after_load(&mut self) {
        self.reintern_after_load();
    }
}

/// Nothing is shared between entries, so nothing to restore after a load.
impl file::SnapshotState for ExportLedger {
    fn after_load(&mut self) {}
}

impl SequencerState {
    /// The last record applied.
    pub fn lsn(&self) -> Lsn {
        self.queue.last_lsn
    }

    /// About how many entries a snapshot of this state encodes (jobs and domain facts): what
    /// writing one costs, in passes over an entry. O(rollouts); called once per snapshot.
    pub fn entries(&self) -> u64 {
        self.queue.jobs.len() as u64 + self.queue.facts.entries()
    }
}

/// Records at or below [`SequencerState::lsn`] are skipped: the projector's catch-up starts
/// from the job projection's applied LSN, which a snapshot may be ahead of.
impl Projection for SequencerState {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), ApplyError> {
        let held = records.partition_point(|(lsn, _)| *lsn <= self.lsn());
        for (lsn, record) in &records[held..] {
            self.queue.apply(*lsn, record);
            self.ledger.apply(*lsn, record);
            self.settings.apply(*lsn, record);
            self.last_record_ms = Some(record.ts_ms);
        }
        Ok(())
    }
}
