//! A canonical byte stream hashed with SHA-256, for the digests of the domain projections.
//!
//! Every integer is written as a big-endian `u64`, every string as its byte length then its
//! bytes, every optional value as `0`, or `1` then the value, and every float as the big-endian
//! bits of its `f64`. Each digest starts with a versioned name (`agentd.agent_state.v1`): a
//! change to what a projection keeps, or to the order it is written in, must change that name.

use sha2::{Digest, Sha256};

/// The hasher and the encodings of the stream's parts.
pub(super) struct DigestStream(Sha256);

impl DigestStream {
    /// A stream that starts with `version`, the name of the layout.
    pub(super) fn new(version: &str) -> Self {
        let mut stream = DigestStream(Sha256::new());
        stream.text(version);
        stream
    }

    pub(super) fn number(&mut self, value: u64) {
        self.0.update(value.to_be_bytes());
    }

    pub(super) fn count(&mut self, value: usize) {
        // `usize` is at most 64 bits on every supported target.
        self.number(u64::try_from(value).unwrap_or(u64::MAX));
    }

    pub(super) fn signed(&mut self, value: i64) {
        self.0.update(value.to_be_bytes());
    }

    pub(super) fn float(&mut self, value: f64) {
        self.number(value.to_bits());
    }

    pub(super) fn flag(&mut self, value: bool) {
        self.number(u64::from(value));
    }

    pub(super) fn text(&mut self, value: &str) {
        self.count(value.len());
        self.0.update(value.as_bytes());
    }

    pub(super) fn texts(&mut self, values: &[String]) {
        self.count(values.len());
        for value in values {
            self.text(value);
        }
    }

    /// `0` for `None`; `1` then whatever `write` writes for `Some`.
    pub(super) fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.number(0),
            Some(value) => {
                self.number(1);
                write(self, value);
            }
        }
    }

    /// The hex digest.
    pub(super) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}
