//! The digest of the projection: SHA-256 over a canonical byte stream of its state, to prove that
//! two rebuilds are identical without comparing them field by field.
//!
//! The stream, every integer a big-endian `u64` and every string its byte length then its bytes:
//!
//! ```text
//! "agentd.processed_splits.v1"
//! config:   encoding, token_cap, weights.train, weights.dev, weights.test
//! count of datasets, then per dataset in (source, version) order:
//!   source, version
//!   meta:   0, or 1 then source, version, license, downloaded_at, sha256, num_records,
//!           url (0, or 1 then the url)
//!   count of received ranges, then start, end of each
//!   records, kept, duplicates, over_token_cap, unknown_language, resent
//!   count of (language, split) entries, then language, split, count of each
//!   count of token histogram entries, then tokens, count of each
//!   count of unknown language names, then name, count of each
//! count of kept records, then per record in log order:
//!   source, version, index, language, split, tokens, the 32 key bytes, lsn,
//!   instruction, pre, post, language as given, count of tags then each tag, metadata_json
//! ```
//!
//! Any change to this layout, or to what the projection keeps, must change the leading version.

use super::ranges::IndexRanges;
use super::stats::Tally;
use super::{DatasetId, ProcessedRecord, SplitsConfig};
use agentd_schemas::events::DatasetMeta;
use sha2::{Digest, Sha256};

const DIGEST_VERSION: &str = "agentd.processed_splits.v1";

/// The hex digest of the projection's parts.
pub(super) fn digest<'a>(
    config: &SplitsConfig,
    datasets: impl ExactSizeIterator<
        Item = (
            &'a DatasetId,
            Option<&'a DatasetMeta>,
            &'a IndexRanges,
            &'a Tally,
        ),
    >,
    kept: &[ProcessedRecord],
) -> String {
    let mut out = Stream(Sha256::new());
    out.text(DIGEST_VERSION);
    out.text(&config.encoding);
    out.usize(config.token_cap);
    for weight in [
        config.weights.train,
        config.weights.dev,
        config.weights.test,
    ] {
        out.number(u64::from(weight));
    }
    out.usize(datasets.len());
    for (id, meta, received, tally) in datasets {
        out.text(&id.source);
        out.text(&id.version);
        out.meta(meta);
        let ranges: Vec<_> = received.iter().collect();
        out.usize(ranges.len());
        for range in ranges {
            out.number(range.start);
            out.number(range.end);
        }
        out.tally(tally);
    }
    out.usize(kept.len());
    for record in kept {
        out.record(record);
    }
    hex::encode(out.0.finalize())
}

/// The hasher with the encodings of the stream's parts.
struct Stream(Sha256);

impl Stream {
    fn number(&mut self, value: u64) {
        self.0.update(value.to_be_bytes());
    }

    fn usize(&mut self, value: usize) {
        // `usize` is at most 64 bits on every supported target.
        self.number(u64::try_from(value).unwrap_or(u64::MAX));
    }

    fn text(&mut self, value: &str) {
        self.usize(value.len());
        self.0.update(value.as_bytes());
    }

    fn meta(&mut self, meta: Option<&DatasetMeta>) {
        let Some(meta) = meta else {
            self.number(0);
            return;
        };
        self.number(1);
        for text in [
            &meta.source,
            &meta.version,
            &meta.license,
            &meta.downloaded_at,
            &meta.sha256,
        ] {
            self.text(text);
        }
        self.number(meta.num_records);
        match &meta.url {
            None => self.number(0),
            Some(url) => {
                self.number(1);
                self.text(url);
            }
        }
    }

    fn tally(&mut self, tally: &Tally) {
        for count in [
            tally.records,
            tally.kept,
            tally.duplicates,
            tally.over_token_cap,
            tally.unknown_language,
            tally.resent,
        ] {
            self.number(count);
        }
        self.usize(tally.kept_by_language_split.len());
        for ((language, split), count) in &tally.kept_by_language_split {
            self.text(language.as_str());
            self.text(split.as_str());
            self.number(*count);
        }
        self.usize(tally.kept_tokens.len());
        for (tokens, count) in &tally.kept_tokens {
            self.usize(*tokens);
            self.number(*count);
        }
        self.usize(tally.unknown_language_names.len());
        for (name, count) in &tally.unknown_language_names {
            self.text(name);
            self.number(*count);
        }
    }

    fn record(&mut self, kept: &ProcessedRecord) {
        self.text(&kept.dataset.source);
        self.text(&kept.dataset.version);
        self.number(kept.index);
        self.text(kept.language.as_str());
        self.text(kept.split.as_str());
        self.usize(kept.tokens);
        self.0.update(kept.dedup_key);
        self.number(kept.lsn.0);
        let record = &kept.record;
        for text in [
            &record.instruction,
            &record.pre,
            &record.post,
            &record.language,
        ] {
            self.text(text);
        }
        self.usize(record.tags.len());
        for tag in &record.tags {
            self.text(tag);
        }
        self.text(&record.metadata_json);
    }
}
