//! The processed-splits projection (seed 001, section 3.2, step 5): from `dataset_registered` and
//! `dataset_records_ingested` events, in log order, which records are kept, in which split, and
//! the counts behind the dataset report.
//!
//! Each received record lands in exactly one of four outcomes, checked in this order:
//!
//! 1. `unknown_language`: [`normalize_language`] does not know its `language`.
//! 2. `duplicates`: a record with the same [`dedup_key`] was already kept, in this dataset or any
//!    other; the first kept in log order wins. Only kept records enter the dedup index, so a
//!    record excluded for its language or length does not shadow a later good copy.
//! 3. `over_token_cap`: the token count of the *counted text* — `instruction`, a `\n`, then
//!    `pre`, exactly as stored — is above `token_cap` (the model sees the instruction and the
//!    code before the edit; the answer `post` is not part of the input budget).
//! 4. kept: it gets its split from [`assign_split`] on its dedup key.
//!
//! A batch is identified by its dataset and record positions (`first_index` onwards). Positions
//! already received for that dataset are skipped and counted as `resent`, so a client may resend
//! a batch after a timeout without changing anything.

mod digest;
mod ranges;
mod stats;

pub use stats::{DatasetStats, RecordCounts, SplitCounts};

use super::dataset::{
    assign_split, dedup_key, normalize_language, InvalidSplitWeights, Language, Split, SplitWeights,
};
use super::tokens::{TokenCounter, UnknownEncoding, DEFAULT_ENCODING};
use agentd_schemas::events::{DatasetMeta, DatasetRecord, DatasetRecordsIngested, DatasetSettings};
use agentd_schemas::Lsn;
use ranges::IndexRanges;
use serde::Serialize;
use stats::Tally;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Default for [`SplitsConfig::token_cap`]: the seed's week-1 limit of 2k input tokens.
pub const TOKEN_CAP_DEFAULT: usize = 2000;

/// How records are processed. Changing any of it changes the projection, so a rebuild with a new
/// configuration is a new set of splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitsConfig {
    /// The token encoding of the cap and the stats, e.g. `o200k_base`.
    pub encoding: String,
    /// Records whose counted text has more tokens than this are excluded.
    pub token_cap: usize,
    /// Relative sizes of train, dev and test.
    pub weights: SplitWeights,
}

impl SplitsConfig {
    /// The configuration of recorded (or configured) settings, with the counter of its
    /// encoding; the encoding name is the counter's canonical one.
    pub fn from_settings(
        settings: &DatasetSettings,
    ) -> Result<(SplitsConfig, Arc<TokenCounter>), UnknownEncoding> {
        let counter = TokenCounter::for_encoding(&settings.encoding)?;
        let config = SplitsConfig {
            encoding: counter.name().to_owned(),
            token_cap: usize::try_from(settings.token_cap).unwrap_or(usize::MAX),
            weights: SplitWeights {
                train: settings.split_train,
                dev: settings.split_dev,
                test: settings.split_test,
            },
        };
        Ok((config, counter))
    }

    /// These settings as the event records them.
    pub fn settings(&self) -> DatasetSettings {
        DatasetSettings {
            encoding: self.encoding.clone(),
            token_cap: self.token_cap as u64,
            split_train: self.weights.train,
            split_dev: self.weights.dev,
            split_test: self.weights.test,
        }
    }
}

/// What a `dataset_settings_recorded` event does to the splits ([`judge_recorded_settings`]).
pub enum SettingsVerdict {
    /// The settings are the ones in force already.
    InForce,
    /// The splits follow these from here on.
    Adopt(SplitsConfig, Arc<TokenCounter>),
    /// Nothing changes: records were received under other settings, or this build cannot use
    /// them (an unknown encoding, invalid weights).
    Ignored,
}

/// The one rule of a `dataset_settings_recorded` event, for the processed splits and for the
/// sequencer's `RecordedSettings` (start-up's config check): settings this build can use are
/// put in force unless records were received under others. `current` is the configuration in
/// force, `None` when it is the configuration the projection was built with and unknown to the
/// caller (then no settings equal it, and what changes nothing stays as it was).
pub fn judge_recorded_settings(
    current: Option<&SplitsConfig>,
    has_records: bool,
    settings: &DatasetSettings,
) -> SettingsVerdict {
    let Ok((config, counter)) = SplitsConfig::from_settings(settings) else {
        return SettingsVerdict::Ignored;
    };
    if current == Some(&config) {
        return SettingsVerdict::InForce;
    }
    if has_records || config.weights.validate().is_err() {
        return SettingsVerdict::Ignored;
    }
    SettingsVerdict::Adopt(config, counter)
}

impl Default for SplitsConfig {
    fn default() -> Self {
        SplitsConfig {
            encoding: DEFAULT_ENCODING.to_owned(),
            token_cap: TOKEN_CAP_DEFAULT,
            weights: SplitWeights::default(),
        }
    }
}

/// A [`SplitsConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitsConfigError {
    #[error(transparent)]
    Weights(#[from] InvalidSplitWeights),
    #[error("the token counter counts {counter:?} but the configuration names {configured:?}")]
    EncodingMismatch { configured: String, counter: String },
}

/// A dataset's identity: its source name and version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DatasetId {
    pub source: String,
    pub version: String,
}

/// A kept record, with what processing decided about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedRecord {
    /// The dataset that delivered it first.
    pub dataset: Arc<DatasetId>,
    /// Its position in that dataset (0-based).
    pub index: u64,
    pub language: Language,
    pub split: Split,
    /// Tokens of its counted text (see the module documentation).
    pub tokens: usize,
    pub dedup_key: [u8; 32],
    /// The log record that ingested it.
    pub lsn: Lsn,
    /// The record as validated and logged, for exporting the splits.
    pub record: Arc<DatasetRecord>,
}

impl ProcessedRecord {
    /// The dedup key as lower-case hex, as shown in exports.
    pub fn dedup_key_hex(&self) -> String {
        hex::encode(self.dedup_key)
    }
}

/// What is known about one dataset: its registration and how much of it arrived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetSummary {
    pub source: String,
    pub version: String,
    /// The latest registration; `None` if records arrived for a dataset never registered.
    pub meta: Option<DatasetMeta>,
    /// Distinct record positions received.
    pub records_received: u64,
    /// `num_records` of the registration.
    pub records_expected: Option<u64>,
    /// Whether exactly the registered number of records arrived.
    pub complete: bool,
}

/// The projection. Feed it events in log order; it keeps every kept record, so its memory grows
/// with the kept text.
#[derive(Debug)]
pub struct ProcessedSplits {
    config: SplitsConfig,
    counter: Arc<TokenCounter>,
    datasets: BTreeMap<Arc<DatasetId>, DatasetState>,
    /// Kept records in log order.
    kept: Vec<ProcessedRecord>,
    /// Dedup keys of `kept`; only looked up, never iterated.
    kept_keys: HashSet<[u8; 32]>,
}

/// Per-dataset state.
#[derive(Debug, Default)]
struct DatasetState {
    meta: Option<DatasetMeta>,
    /// Record positions received so far.
    received: IndexRanges,
    tally: Tally,
}

impl ProcessedSplits {
    /// An empty projection. `counter` must count `config.encoding`.
    pub fn new(
        config: SplitsConfig,
        counter: Arc<TokenCounter>,
    ) -> Result<Self, SplitsConfigError> {
        config.weights.validate()?;
        if counter.name() != config.encoding {
            return Err(SplitsConfigError::EncodingMismatch {
                configured: config.encoding,
                counter: counter.name().to_owned(),
            });
        }
        Ok(ProcessedSplits {
            config,
            counter,
            datasets: BTreeMap::new(),
            kept: Vec::new(),
            kept_keys: HashSet::new(),
        })
    }

    /// The configuration the splits follow: the one built with, or the last recorded one
    /// applied ([`ProcessedSplits::apply_settings`]).
    pub fn config(&self) -> &SplitsConfig {
        &self.config
    }

    /// Whether any record position was received (settings can no longer change).
    pub fn has_records(&self) -> bool {
        self.datasets
            .values()
            .any(|state| !state.received.is_empty())
    }

    /// Applies a `dataset_settings_recorded` event: the splits follow the recorded settings
    /// from here on, provided no record was received yet (a record's split, tokens and
    /// exclusion never change once decided). Returns whether the settings are now in force:
    /// false for settings that arrive after records and differ, or that this build cannot use
    /// (an unknown encoding, invalid weights); those change nothing.
    pub fn apply_settings(&mut self, settings: &DatasetSettings) -> bool {
        match judge_recorded_settings(Some(&self.config), self.has_records(), settings) {
            SettingsVerdict::InForce => true,
            SettingsVerdict::Ignored => false,
            SettingsVerdict::Adopt(config, counter) => {
                self.config = config;
                self.counter = counter;
                true
            }
        }
    }

    /// Applies a `dataset_registered` event. The first registration of a source and version
    /// stands: a later one (the API refuses those with a different meta, so only a repeat or a
    /// lost race is ever logged) changes nothing.
    pub fn apply_registered(&mut self, meta: &DatasetMeta) {
        let id = DatasetId {
            source: meta.source.clone(),
            version: meta.version.clone(),
        };
        let dataset = self.datasets.entry(Arc::new(id)).or_default();
        if dataset.meta.is_none() {
            dataset.meta = Some(meta.clone());
        }
    }

    /// Applies a `dataset_records_ingested` event logged at `lsn` (rules in the module
    /// documentation). Records of a dataset never registered are processed all the same and show
    /// up with no meta. Positions past `u64::MAX` cannot exist and are ignored.
    pub fn apply_ingested(&mut self, lsn: Lsn, batch: &DatasetRecordsIngested) {
        let id = DatasetId {
            source: batch.source.clone(),
            version: batch.version.clone(),
        };
        // Reuse the map's `Arc` so every kept record of a dataset shares one id.
        let dataset = match self.datasets.get_key_value(&id) {
            Some((existing, _)) => Arc::clone(existing),
            None => Arc::new(id),
        };
        let state = self.datasets.entry(Arc::clone(&dataset)).or_default();
        let first = batch.first_index;
        let end = first.saturating_add(u64::try_from(batch.records.len()).unwrap_or(u64::MAX));
        let fresh = state.received.insert(first, end);
        let fresh_count: u64 = fresh.iter().map(|range| range.end - range.start).sum();
        state.tally.resent += (end - first) - fresh_count;
        for index in fresh.into_iter().flatten() {
            // `index` lies in `first..end`, and `end - first` is at most the batch length.
            let Some(record) = usize::try_from(index - first)
                .ok()
                .and_then(|offset| batch.records.get(offset))
            else {
                continue;
            };
            let outcome = Processing {
                config: &self.config,
                counter: &self.counter,
                kept_keys: &mut self.kept_keys,
            }
            .process(record);
            state.tally.count(&outcome, record);
            if let Outcome::Kept {
                language,
                split,
                tokens,
                key,
            } = outcome
            {
                self.kept.push(ProcessedRecord {
                    dataset: Arc::clone(&dataset),
                    index,
                    language,
                    split,
                    tokens,
                    dedup_key: key,
                    lsn,
                    record: Arc::new(record.clone()),
                });
            }
        }
    }

    /// Counts per dataset (in source, version order) and in total.
    pub fn stats(&self) -> DatasetStats {
        stats::build(
            &self.config,
            self.datasets
                .iter()
                .map(|(id, state)| (id.as_ref(), &state.tally)),
        )
    }

    /// Every dataset seen, registered or not, in source, version order.
    pub fn datasets(&self) -> Vec<DatasetSummary> {
        self.datasets
            .iter()
            .map(|(id, state)| {
                let records_received = state.received.count();
                let records_expected = state.meta.as_ref().map(|meta| meta.num_records);
                DatasetSummary {
                    source: id.source.clone(),
                    version: id.version.clone(),
                    meta: state.meta.clone(),
                    records_received,
                    records_expected,
                    complete: records_expected == Some(records_received),
                }
            })
            .collect()
    }

    /// Kept records in log order (by LSN, then position within the batch).
    pub fn kept_records(&self) -> impl Iterator<Item = &ProcessedRecord> {
        self.kept.iter()
    }

    /// SHA-256 (hex) over a canonical serialization of the whole projection: two builds from the
    /// same events with the same configuration give the same digest, on any machine.
    pub fn digest(&self) -> String {
        digest::digest(
            &self.config,
            self.datasets.iter().map(|(id, state)| {
                (
                    id.as_ref(),
                    state.meta.as_ref(),
                    &state.received,
                    &state.tally,
                )
            }),
            &self.kept,
        )
    }
}

/// What processing decided for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    UnknownLanguage,
    Duplicate,
    OverTokenCap,
    Kept {
        language: Language,
        split: Split,
        tokens: usize,
        key: [u8; 32],
    },
}

/// The parts of the projection that deciding one record needs.
struct Processing<'a> {
    config: &'a SplitsConfig,
    counter: &'a TokenCounter,
    kept_keys: &'a mut HashSet<[u8; 32]>,
}

impl Processing<'_> {
    /// The outcome of one newly received record; a kept record's key enters the dedup index.
    fn process(self, record: &DatasetRecord) -> Outcome {
        let Some(language) = normalize_language(&record.language) else {
            return Outcome::UnknownLanguage;
        };
        let key = dedup_key(&record.instruction, &record.pre);
        if self.kept_keys.contains(&key) {
            return Outcome::Duplicate;
        }
        let tokens = self.counter.count(&counted_text(record));
        if tokens > self.config.token_cap {
            return Outcome::OverTokenCap;
        }
        self.kept_keys.insert(key);
        Outcome::Kept {
            language,
            split: assign_split(&key, &self.config.weights),
            tokens,
            key,
        }
    }
}

/// The text whose tokens the cap limits: `instruction`, `\n`, `pre`.
pub fn counted_text(record: &DatasetRecord) -> String {
    let mut text = String::with_capacity(record.instruction.len() + 1 + record.pre.len());
    text.push_str(&record.instruction);
    text.push('\n');
    text.push_str(&record.pre);
    text
}

#[cfg(test)]
mod tests;
