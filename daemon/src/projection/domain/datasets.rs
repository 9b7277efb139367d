//! The datasets projection: the processed splits ([`ProcessedSplits`], which holds all the
//! rules) plus, for the few most recent ingest records, what happened to their records, so the
//! ingest route can answer with exact counts for its own batch even while other batches land.

use crate::domain::splits::{ProcessedSplits, RecordCounts};
use crate::facts::positions::Positions;
use agentd_schemas::events::{DatasetMeta, DatasetRecordsIngested, DatasetSettings};
use agentd_schemas::Lsn;
use std::collections::BTreeMap;
use std::ops::Range;

/// Ingest outcomes remembered, most recent first out of the window. The ingest route reads its
/// outcome right after the projector applied it, so a small window is plenty; an answer whose
/// outcome fell out (more than this many ingest records applied in between) says so.
pub const INGEST_OUTCOMES_MAX: usize = 1024;

/// The processed splits and recent ingest outcomes.
#[derive(Debug)]
pub struct Datasets {
    splits: ProcessedSplits,
    /// By the LSN of the record that carried the batch (a batch split around rejected records
    /// is several events in one record).
    recent_ingests: BTreeMap<Lsn, IngestOutcome>,
    /// Positions received per dataset (source, version), for the write path.
    received: BTreeMap<(String, String), Positions>,
    /// Whether a `dataset_settings_recorded` event was applied.
    settings_recorded: bool,
    /// The LSN of each dataset's first registration (the one that counts: a registration is
    /// never changed), so a build's lineage reads a source's meta as of the build's `to`.
    registered_at: BTreeMap<(String, String), Lsn>,
}

/// What happened to the records of one ingest record (all its events together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Positions not received before, processed now.
    pub accepted: u64,
    /// Positions already received, ignored.
    pub resent: u64,
    pub kept: u64,
    pub duplicates: u64,
    pub over_token_cap: u64,
    pub unknown_language: u64,
}

impl Datasets {
    pub fn new(splits: ProcessedSplits) -> Self {
        Datasets {
            splits,
            recent_ingests: BTreeMap::new(),
            received: BTreeMap::new(),
            settings_recorded: false,
            registered_at: BTreeMap::new(),
        }
    }

    /// Applies a registration logged at `lsn` (the first one of a dataset wins).
    pub fn apply_registered(&mut self, lsn: Lsn, meta: &DatasetMeta) {
        self.registered_at
            .entry((meta.source.clone(), meta.version.clone()))
            .or_insert(lsn);
        self.splits.apply_registered(meta);
    }

    /// Applies recorded `[datasets]` settings (see `ProcessedSplits::apply_settings`).
    pub fn apply_settings(&mut self, settings: &DatasetSettings) {
        self.settings_recorded = true;
        self.splits.apply_settings(settings);
    }

    /// Whether the log recorded `[datasets]` settings so far.
    pub fn settings_recorded(&self) -> bool {
        self.settings_recorded
    }

    /// Applies one batch logged at `lsn` and remembers its outcome (the difference of the
    /// totals, exact because the projector applies one event at a time).
    pub fn apply_ingested(&mut self, lsn: Lsn, batch: &DatasetRecordsIngested) {
        let before = self.splits.stats().total;
        self.splits.apply_ingested(lsn, batch);
        let after = self.splits.stats().total;
        let end = batch
            .first_index
            .saturating_add(u64::try_from(batch.records.len()).unwrap_or(u64::MAX));
        self.received
            .entry((batch.source.clone(), batch.version.clone()))
            .or_default()
            .insert(batch.first_index, end);
        let outcome = self.recent_ingests.entry(lsn).or_default();
        outcome.add_difference(&before, &after);
        while self.recent_ingests.len() > INGEST_OUTCOMES_MAX {
            self.recent_ingests.pop_first();
        }
    }

    /// The outcome of the ingest record at `lsn`, if it is still remembered.
    pub fn ingest_outcome(&self, lsn: Lsn) -> Option<IngestOutcome> {
        self.recent_ingests.get(&lsn).copied()
    }

    /// The positions of `start..end` that the dataset has not received, in order.
    pub fn not_received(
        &self,
        source: &str,
        version: &str,
        start: u64,
        end: u64,
    ) -> Vec<Range<u64>> {
        match self.received.get(&(source.to_owned(), version.to_owned())) {
            Some(positions) => positions.missing(start, end),
            None => Positions::default().missing(start, end),
        }
    }

    pub fn splits(&self) -> &ProcessedSplits {
        &self.splits
    }

    /// The registration of a dataset, if any.
    pub fn meta(&self, source: &str, version: &str) -> Option<DatasetMeta> {
        self.splits
            .datasets()
            .into_iter()
            .find(|dataset| dataset.source == source && dataset.version == version)
            .and_then(|dataset| dataset.meta)
    }

    /// The registration of a dataset as the log up to `to` had it: `None` when it was
    /// registered after `to` (or never).
    pub fn meta_at(&self, source: &str, version: &str, to: Lsn) -> Option<DatasetMeta> {
        let registered = self
            .registered_at
            .get(&(source.to_owned(), version.to_owned()))?;
        if *registered > to {
            return None;
        }
        self.meta(source, version)
    }

    /// The processed splits' digest: the recent outcomes are a window of answers, derived from
    /// the same events, and not part of the state.
    pub fn digest(&self) -> String {
        self.splits.digest()
    }
}

impl IngestOutcome {
    fn add_difference(&mut self, before: &RecordCounts, after: &RecordCounts) {
        let delta = |after: u64, before: u64| after.saturating_sub(before);
        self.accepted += delta(after.records, before.records);
        self.resent += delta(after.resent, before.resent);
        self.kept += delta(after.kept, before.kept);
        self.duplicates += delta(after.duplicates, before.duplicates);
        self.over_token_cap += delta(after.over_token_cap, before.over_token_cap);
        self.unknown_language += delta(after.unknown_language, before.unknown_language);
    }
}
