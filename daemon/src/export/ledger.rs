//! The export ledger: what the log says about exports, schedules and dataset builds. Rebuilt by
//! replaying the log at start (in the same pass as the queue state) and kept current by the
//! export runner, the only writer of these events, after each of its appends is durable.
//!
//! The watermark of a kind and format is the highest `to_lsn` of its recorded exports: the log
//! is where it is stored, so a restart, a rebuild and the live daemon all agree on it.

use agentd_schemas::events::{
    DatasetBuilt, Event, ExportCopied, ExportFormat, ExportKind, ExportRecorded, LogRecord,
    ScheduleFired,
};
use agentd_schemas::Lsn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recorded export and where it was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedExport {
    #[serde(with = "crate::export::named_encoding")]
    pub event: ExportRecorded,
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// Where the log says a copy is in object storage: the record's own `copied_to`, or a
    /// later `export_copied`.
    pub copied_to: Option<String>,
}

/// A recorded dataset build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedBuild {
    #[serde(with = "crate::export::named_encoding")]
    pub event: DatasetBuilt,
    pub lsn: Lsn,
    /// As [`RecordedExport::copied_to`].
    pub copied_to: Option<String>,
}

/// The last firing of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastFired {
    #[serde(with = "crate::export::named_encoding")]
    pub event: ScheduleFired,
    pub lsn: Lsn,
}

/// Everything recorded about exports.
///
/// Serialized into sequencer snapshots (`snapshot::file`): a change of shape or meaning of this
/// type or any type in it bumps `SNAPSHOT_FORMAT_VERSION`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
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

/// Whether a record holds an event the ledger applies (an export record, in
/// [`ExportLedger::last_content_lsn`]'s sense).
pub fn is_export_record(record: &LogRecord) -> bool {
    record.events.iter().any(|event| {
        matches!(
            event,
            Event::ExportRecorded(_)
                | Event::ScheduleFired(_)
                | Event::DatasetBuilt(_)
                | Event::ExportCopied(_)
        )
    })
}

impl ExportLedger {
    /// Applies the export events of one record (others are ignored).
    pub fn apply(&mut self, lsn: Lsn, record: &LogRecord) {
        if is_export_record(record) {
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
                        copied_to: built.copied_to.clone(),
                    });
                }
                Event::ExportCopied(copied) => self.apply_copied(copied),
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
            copied_to: export.copied_to.clone(),
        });
        let watermark = self
            .watermarks
            .entry((export.kind, export.format))
            .or_insert(Lsn::ZERO);
        *watermark = (*watermark).max(export.to_lsn);
    }

    /// A later copy of a recorded export or build (an id the ledger does not hold changes
    /// nothing: the runner records a copy only after the export or build itself).
    fn apply_copied(&mut self, copied: &ExportCopied) {
        if let Some(index) = self.by_id.get(&copied.export_id) {
            self.exports[*index].copied_to = Some(copied.copied_to.clone());
        } else if let Some(index) = self.builds_by_id.get(&copied.export_id) {
            self.builds[*index].copied_to = Some(copied.copied_to.clone());
        }
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

    /// The parent of a build of `dataset_key` over the log up to `to`: the newest build of the
    /// key recorded at or before `to`. A function of the log prefix up to `to` only, like the
    /// rest of the manifest: the same build (same request, same `to`, so the same id) always
    /// names the same parent, whether the runner writes it, reuses its manifest after a failed
    /// run, or `agentd rebuild` writes it again after later builds of the key.
    pub fn parent_build_id(&self, dataset_key: &str, to: Lsn) -> Option<String> {
        self.builds()
            .iter()
            .rev()
            .filter(|recorded| recorded.lsn <= to)
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

#[cfg(test)]
mod tests {
    use super::*;
    use agentd_schemas::events::{BuildSource, BuildStrategy, DatasetBuildSpec};

    fn built(build_id: &str, to: u64) -> LogRecord {
        LogRecord {
            ts_ms: 1,
            actor: None,
            events: vec![Event::DatasetBuilt(DatasetBuilt {
                dataset_key: "py-v1".into(),
                build_id: build_id.into(),
                spec: DatasetBuildSpec {
                    name: "py".into(),
                    version: "v1".into(),
                    source: BuildSource::Records,
                    strategy: BuildStrategy::Latest,
                    seed: None,
                    limit: None,
                    filters: BTreeMap::new(),
                    view: None,
                    training_run_id: None,
                    session_id: None,
                },
                to_lsn: Lsn(to),
                dir: format!("datasets/py-v1/{build_id}"),
                rows: 1,
                files: Vec::new(),
                manifest_sha256: String::new(),
                schema_version: 1,
                copied_to: None,
            })],
        }
    }

    /// The parent is the newest build of the key recorded by the build's `to`: builds recorded
    /// later (even before the child's own record) never change it, so reusing a manifest and
    /// rebuilding the log name the same parent.
    #[test]
    fn a_builds_parent_is_the_newest_build_of_its_key_recorded_by_its_to() {
        let mut ledger = ExportLedger::default();
        ledger.apply(Lsn(5), &built("bld_a", 4));
        ledger.apply(Lsn(9), &built("bld_b", 8));
        assert_eq!(ledger.parent_build_id("py-v1", Lsn(4)), None);
        assert_eq!(
            ledger.parent_build_id("py-v1", Lsn(8)).as_deref(),
            Some("bld_a")
        );
        assert_eq!(
            ledger.parent_build_id("py-v1", Lsn(9)).as_deref(),
            Some("bld_b")
        );
        assert_eq!(ledger.parent_build_id("other-v1", Lsn(9)), None);
    }

    #[test]
    fn a_later_copy_gives_the_recorded_build_its_url() {
        let mut ledger = ExportLedger::default();
        ledger.apply(Lsn(5), &built("bld_a", 4));
        let copied = LogRecord {
            ts_ms: 2,
            actor: None,
            events: vec![Event::ExportCopied(ExportCopied {
                export_id: "bld_a".into(),
                copied_to: "file:///b/datasets/py-v1/bld_a/".into(),
            })],
        };
        ledger.apply(Lsn(6), &copied);
        let url = ledger.build("bld_a").unwrap().copied_to.as_deref();
        assert_eq!(url, Some("file:///b/datasets/py-v1/bld_a/"));
        assert_eq!(ledger.last_content_lsn(Lsn(6)), Lsn(4), "an export record");
    }
}
