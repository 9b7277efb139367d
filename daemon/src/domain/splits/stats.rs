//! Counters of the processed splits and the report built from them.

use super::{DatasetId, Outcome, SplitsConfig};
use crate::domain::dataset::{Language, Split};
use agentd_schemas::events::DatasetRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// Most distinct unknown language names remembered per dataset; further names are still counted
/// in `unknown_language`, so a dataset of random names cannot grow the stats without bound.
pub const UNKNOWN_LANGUAGE_NAMES_MAX: usize = 32;

/// Longest unknown language name kept, in characters.
const UNKNOWN_LANGUAGE_NAME_CHARS_MAX: usize = 64;

/// The dataset report: counts in total and per dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStats {
    /// The encoding token counts are in.
    pub encoding: String,
    /// Records with more tokens than this were excluded.
    pub token_cap: usize,
    /// All datasets together.
    pub total: RecordCounts,
    /// One entry per dataset, in source, version order.
    pub datasets: Vec<DatasetRecordCounts>,
}

/// The counts of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetRecordCounts {
    pub source: String,
    pub version: String,
    #[serde(flatten)]
    pub counts: RecordCounts,
}

/// What happened to received records. `records = kept + duplicates + over_token_cap +
/// unknown_language`; the per-language and per-split counts are of kept records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordCounts {
    /// Distinct record positions received.
    pub records: u64,
    pub kept: u64,
    pub duplicates: u64,
    pub over_token_cap: u64,
    pub unknown_language: u64,
    /// Records received again at a position already received (ignored).
    pub resent: u64,
    /// Kept records per canonical language name.
    pub languages: BTreeMap<&'static str, u64>,
    /// Kept records per split.
    pub splits: SplitCounts,
    /// Kept records per language and split.
    pub language_splits: BTreeMap<&'static str, SplitCounts>,
    /// Sum of the token counts of kept records.
    pub total_tokens: u64,
    /// Mean token count of kept records; `None` when none were kept.
    pub avg_tokens: Option<f64>,
    /// 95th percentile token count of kept records, nearest-rank: the smallest count that at
    /// least 95% of kept records do not exceed. `None` when none were kept.
    pub p95_tokens: Option<usize>,
    /// Unknown language names (trimmed, lower-case) and how often each appeared; at most
    /// [`UNKNOWN_LANGUAGE_NAMES_MAX`] per dataset, the first ones in log order.
    pub unknown_language_names: BTreeMap<String, u64>,
}

/// Counts per split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SplitCounts {
    pub train: u64,
    pub dev: u64,
    pub test: u64,
}

impl SplitCounts {
    fn add(&mut self, split: Split, count: u64) {
        match split {
            Split::Train => self.train += count,
            Split::Dev => self.dev += count,
            Split::Test => self.test += count,
        }
    }
}

/// The running counters of one dataset: everything [`RecordCounts`] is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) records: u64,
    pub(super) kept: u64,
    pub(super) duplicates: u64,
    pub(super) over_token_cap: u64,
    pub(super) unknown_language: u64,
    pub(super) resent: u64,
    pub(super) kept_by_language_split: BTreeMap<(Language, Split), u64>,
    /// Token count of kept records to how many have it: exact percentiles without keeping a
    /// sorted copy of every count.
    pub(super) kept_tokens: BTreeMap<usize, u64>,
    pub(super) unknown_language_names: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts one newly received record.
    pub(super) fn count(&mut self, outcome: &Outcome, record: &DatasetRecord) {
        self.records += 1;
        match *outcome {
            Outcome::UnknownLanguage => {
                self.unknown_language += 1;
                let name: String = record
                    .language
                    .trim()
                    .to_lowercase()
                    .chars()
                    .take(UNKNOWN_LANGUAGE_NAME_CHARS_MAX)
                    .collect();
                let known = self.unknown_language_names.contains_key(&name);
                if known || self.unknown_language_names.len() < UNKNOWN_LANGUAGE_NAMES_MAX {
                    *self.unknown_language_names.entry(name).or_default() += 1;
                }
            }
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::OverTokenCap => self.over_token_cap += 1,
            Outcome::Kept {
                language,
                split,
                tokens,
                ..
            } => {
                self.kept += 1;
                *self
                    .kept_by_language_split
                    .entry((language, split))
                    .or_default() += 1;
                *self.kept_tokens.entry(tokens).or_default() += 1;
            }
        }
    }

    fn add(&mut self, other: &Tally) {
        self.records += other.records;
        self.kept += other.kept;
        self.duplicates += other.duplicates;
        self.over_token_cap += other.over_token_cap;
        self.unknown_language += other.unknown_language;
        self.resent += other.resent;
        for (key, count) in &other.kept_by_language_split {
            *self.kept_by_language_split.entry(*key).or_default() += count;
        }
        for (tokens, count) in &other.kept_tokens {
            *self.kept_tokens.entry(*tokens).or_default() += count;
        }
        for (name, count) in &other.unknown_language_names {
            *self.unknown_language_names.entry(name.clone()).or_default() += count;
        }
    }

    fn report(&self) -> RecordCounts {
        let mut languages = BTreeMap::new();
        let mut splits = SplitCounts::default();
        let mut language_splits: BTreeMap<&'static str, SplitCounts> = BTreeMap::new();
        for (&(language, split), &count) in &self.kept_by_language_split {
            *languages.entry(language.as_str()).or_default() += count;
            splits.add(split, count);
            language_splits
                .entry(language.as_str())
                .or_default()
                .add(split, count);
        }
        let total_tokens: u64 = self
            .kept_tokens
            .iter()
            .map(|(&tokens, &count)| tokens as u64 * count)
            .sum();
        RecordCounts {
            records: self.records,
            kept: self.kept,
            duplicates: self.duplicates,
            over_token_cap: self.over_token_cap,
            unknown_language: self.unknown_language,
            resent: self.resent,
            languages,
            splits,
            language_splits,
            total_tokens,
            avg_tokens: (self.kept > 0).then(|| total_tokens as f64 / self.kept as f64),
            p95_tokens: nearest_rank(&self.kept_tokens, 95),
            unknown_language_names: self.unknown_language_names.clone(),
        }
    }
}

/// The `percent`th percentile, nearest-rank, of the values of a histogram (value to count): the
/// value at rank `ceil(percent / 100 * n)` of the sorted values. `None` for an empty histogram.
pub(super) fn nearest_rank(histogram: &BTreeMap<usize, u64>, percent: u64) -> Option<usize> {
    let n: u128 = histogram.values().map(|&count| u128::from(count)).sum();
    if n == 0 {
        return None;
    }
    let rank = (u128::from(percent) * n).div_ceil(100).max(1);
    let mut seen = 0u128;
    histogram.iter().find_map(|(&value, &count)| {
        seen += u128::from(count);
        (seen >= rank).then_some(value)
    })
}

/// The report over `datasets` (in the order given).
pub(super) fn build<'a>(
    config: &SplitsConfig,
    datasets: impl Iterator<Item = (&'a DatasetId, &'a Tally)>,
) -> DatasetStats {
    let mut total = Tally::default();
    let mut per_dataset = Vec::new();
    for (id, tally) in datasets {
        total.add(tally);
        per_dataset.push(DatasetRecordCounts {
            source: id.source.clone(),
            version: id.version.clone(),
            counts: tally.report(),
        });
    }
    DatasetStats {
        encoding: config.encoding.clone(),
        token_cap: config.token_cap,
        total: total.report(),
        datasets: per_dataset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[usize]) -> BTreeMap<usize, u64> {
        let mut histogram = BTreeMap::new();
        for &value in values {
            *histogram.entry(value).or_default() += 1;
        }
        histogram
    }

    /// The definition, on a sorted vector, to check the histogram walk against.
    fn nearest_rank_sorted(values: &[usize], percent: usize) -> Option<usize> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = (percent * sorted.len()).div_ceil(100).max(1);
        sorted.get(rank - 1).copied()
    }

    #[test]
    fn p95_is_nearest_rank() {
        assert_eq!(nearest_rank(&histogram(&[]), 95), None);
        assert_eq!(nearest_rank(&histogram(&[7]), 95), Some(7));
        // 20 values 1..=20: rank ceil(19.0) = 19.
        let twenty: Vec<usize> = (1..=20).collect();
        assert_eq!(nearest_rank(&histogram(&twenty), 95), Some(19));
        // 21 values: rank ceil(19.95) = 20.
        let twenty_one: Vec<usize> = (1..=21).collect();
        assert_eq!(nearest_rank(&histogram(&twenty_one), 95), Some(20));
        for values in [
            vec![5, 5, 5, 1],
            vec![3, 1, 2],
            (0..1000).map(|i| (i * 7919) % 613).collect(),
        ] {
            for percent in [1, 50, 95, 100] {
                assert_eq!(
                    nearest_rank(&histogram(&values), percent as u64),
                    nearest_rank_sorted(&values, percent),
                    "{values:?} p{percent}"
                );
            }
        }
    }
}
