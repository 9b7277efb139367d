//! The export ledger: what the log says about exports, schedules and dataset builds. Rebuilt by
//! replaying the log at start (in the same pass as the queue state) and kept current by the
//! export runner, the only writer of these events, after each of its appends is durable.
//!
//! The watermark of a kind and format is the highest `to_lsn` of its recorded exports: the log
//! is where it is stored, so a restart, a rebuild and the live daemon all agree on it.

use agentd_schemas::events::{
    DatasetBuilt, Event, ExportFormat, ExportKind, ExportRecorded, LogRecord, ScheduleFired,
};
use agentd_schemas::Lsn;
use std::collections::BTreeMap;

/// A recorded export and where it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedExport {
    pub event: ExportRecorded,
    pub lsn: Lsn,
    pub ts_ms: u64,
}

/// A recorded dataset build.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedBuild {
    pub event: DatasetBuilt,
    pub lsn: Lsn,
}

/// The last firing of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LastFired {
    pub event: ScheduleFired,
    pub lsn: Lsn,
}

/// Everything recorded about exports.
#[derive(Debug, Default)]
pub struct ExportLedger {
    /// In log order.
    exports: Vec<RecordedExport>,
    by_id: BTreeMap<String, usize>,
    watermarks: BTreeMap<(ExportKind, ExportFormat), Lsn>,
    fired: BTreeMap<String, LastFired>,
    builds: Vec<RecordedBuild>,
    builds_by_id: BTreeMap<String, usize>,
    /// LSNs of the records holding export events (see [`ExportLedger::last_content_lsn`]).
    export_records: std::collections::BTreeSet<Lsn>,
}

impl ExportLedger {
    /// Applies the export events of one record (others are ignored).
    pub fn apply(&mut self, lsn: Lsn, record: &LogRecord) {
        let ours = record.events.iter().any(|event| {
            matches!(
                event,
                Event::ExportRecorded(_) | Event::ScheduleFired(_) | Event::DatasetBuilt(_)
            )
        });
        if ours {
            self.export_records.insert(lsn);
        }
        for event in &record.events {
            match event {
                Event::ExportRecorded(export) => self.apply_export(lsn, record.ts_ms, export),
                Event::ScheduleFired(fired) => {
                    self.fired.insert(
                        fired.schedule.clone(),
                        LastFired {
                            event: fired.clone(),
                            lsn,
                        },
                    );
                }
                Event::DatasetBuilt(built) if !self.builds_by_id.contains_key(&built.build_id) => {
                    self.builds_by_id
                        .insert(built.build_id.clone(), self.builds.len());
                    self.builds.push(RecordedBuild {
                        event: built.clone(),
                        lsn,
                    });
                }
                _ => {}
            }
        }
    }

    fn apply_export(&mut self, lsn: Lsn, ts_ms: u64, export: &ExportRecorded) {
        // The same export recorded twice (a resumed schedule racing a manual run) keeps the first.
        if self.by_id.contains_key(&export.export_id) {
            return;
        }
        self.by_id
            .insert(export.export_id.clone(), self.exports.len());
        self.exports.push(RecordedExport {
            event: export.clone(),
            lsn,
            ts_ms,
        });
        let watermark = self
            .watermarks
            .entry((export.kind, export.format))
            .or_insert(Lsn::ZERO);
        *watermark = (*watermark).max(export.to_lsn);
    }

    /// The highest `to_lsn` exported for a kind and format (0 before the first export).
    pub fn watermark(&self, kind: ExportKind, format: ExportFormat) -> Lsn {
        self.watermarks
            .get(&(kind, format))
            .copied()
            .unwrap_or(Lsn::ZERO)
    }

    pub fn watermarks(&self) -> impl Iterator<Item = ((ExportKind, ExportFormat), Lsn)> + '_ {
        self.watermarks.iter().map(|(key, lsn)| (*key, *lsn))
    }

    /// The last LSN at or before `to` that is not an export record: exports and builds read up
    /// to it, so recording an export does not by itself make the next run see something new
    /// (the same request over the same content gets the same id).
    pub fn last_content_lsn(&self, to: Lsn) -> Lsn {
        let mut lsn = to;
        while lsn > Lsn::ZERO && self.export_records.contains(&lsn) {
            lsn = Lsn(lsn.0 - 1);
        }
        lsn
    }

    /// Recorded exports in log order.
    pub fn exports(&self) -> &[RecordedExport] {
        &self.exports
    }

    pub fn export(&self, export_id: &str) -> Option<&RecordedExport> {
        self.by_id.get(export_id).map(|index| &self.exports[*index])
    }

    /// The last firing of a schedule.
    pub fn last_fired(&self, schedule: &str) -> Option<&LastFired> {
        self.fired.get(schedule)
    }

    /// Firings whose export has not been recorded yet (a crash or stop in between), by schedule
    /// name.
    pub fn pending_fired(&self) -> Vec<ScheduleFired> {
        self.fired
            .values()
            .filter(|fired| !self.by_id.contains_key(&fired.event.export_id))
            .map(|fired| fired.event.clone())
            .collect()
    }

    /// Recorded builds in log order.
    pub fn builds(&self) -> &[RecordedBuild] {
        &self.builds
    }

    /// The newest recorded build of a dataset key: the parent of the next one.
    pub fn latest_build_id(&self, dataset_key: &str) -> Option<String> {
        self.builds()
            .iter()
            .rev()
            .find(|recorded| recorded.event.dataset_key == dataset_key)
            .map(|recorded| recorded.event.build_id.clone())
    }

    pub fn build(&self, build_id: &str) -> Option<&RecordedBuild> {
        self.builds_by_id
            .get(build_id)
            .map(|index| &self.builds[*index])
    }
}

impl crate::replay::Projection for ExportLedger {
    fn apply(&mut self, records: &[(Lsn, LogRecord)]) -> Result<(), crate::replay::ApplyError> {
        for (lsn, record) in records {
            ExportLedger::apply(self, *lsn, record);
        }
        Ok(())
    }
}
