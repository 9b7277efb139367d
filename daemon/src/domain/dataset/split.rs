//! The dedup key of a record and the train/dev/test split it falls in. Both are pure functions
//! of the record's text, so a record lands in the same split on every rebuild, and adding records
//! never moves an earlier one.

use sha2::{Digest, Sha256};

/// Names the key format, so a future change of normalization cannot collide with old keys.
const DEDUP_KEY_DOMAIN: &[u8] = b"agentd.dedup_key.v1\0";

/// The key under which two records count as the same task: SHA-256 over
/// `"agentd.dedup_key.v1\0"`, then for `instruction` and then `pre` the byte length of its
/// normalized form as a big-endian `u64` followed by those bytes. The length prefixes make
/// `("ab", "c")` and `("a", "bc")` different keys.
///
/// Normalization, so formatting noise does not hide a duplicate: CRLF becomes LF, trailing
/// whitespace is removed from every line, and leading and trailing whitespace (blank lines
/// included) is removed from the whole text. Indentation inside the text is kept: in Python it is
/// meaning.
pub fn dedup_key(instruction: &str, pre: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(DEDUP_KEY_DOMAIN);
    for part in [instruction, pre] {
        let normalized = normalize_for_key(part);
        hasher.update((normalized.len() as u64).to_be_bytes());
        hasher.update(normalized.as_bytes());
    }
    hasher.finalize().into()
}

/// Relative sizes of the splits. Any positive total works: 90/5/5 and 18/1/1 split alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitWeights {
    pub train: u32,
    pub dev: u32,
    pub test: u32,
}

/// Split weights that sum to zero, so no record could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("split weights must not all be zero")]
pub struct InvalidSplitWeights;

impl Default for SplitWeights {
    /// 90% train, 5% dev, 5% test.
    fn default() -> Self {
        SplitWeights {
            train: 90,
            dev: 5,
            test: 5,
        }
    }
}

impl SplitWeights {
    /// The sum of the weights (as `u64`: three `u32` cannot overflow it).
    pub fn total(&self) -> u64 {
        u64::from(self.train) + u64::from(self.dev) + u64::from(self.test)
    }

    /// Refuses weights that sum to zero.
    pub fn validate(&self) -> Result<(), InvalidSplitWeights> {
        if self.total() == 0 {
            return Err(InvalidSplitWeights);
        }
        Ok(())
    }
}

/// One of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    /// Every split, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    /// The lower-case name used in stats and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The split of the record with `key`: the first 8 bytes of the key as a big-endian `u64`,
/// modulo the weights' total, is a bucket; buckets `[0, train)` are train, the next `dev` are
/// dev, the rest test. The key is a SHA-256, so buckets are uniform (the modulo bias is below
/// 2^-30) and independent of log order. Changing the weights moves records; adding records never
/// does. Weights that sum to zero are a configuration error ([`SplitWeights::validate`]); rather
/// than divide by zero, every record then goes to train.
pub fn assign_split(key: &[u8; 32], weights: &SplitWeights) -> Split {
    let total = weights.total();
    if total == 0 {
        return Split::Train;
    }
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&key[..8]);
    let bucket = u64::from_be_bytes(prefix) % total;
    if bucket < u64::from(weights.train) {
        Split::Train
    } else if bucket < u64::from(weights.train) + u64::from(weights.dev) {
        Split::Dev
    } else {
        Split::Test
    }
}

/// The text the dedup key hashes (see [`dedup_key`]).
fn normalize_for_key(text: &str) -> String {
    let unix = text.replace("\r\n", "\n");
    let lines: Vec<&str> = unix.split('\n').map(str::trim_end).collect();
    lines.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_noise_does_not_change_the_key() {
        let base = dedup_key("Rename foo", "def foo():\n    return 1\n");
        for (instruction, pre) in [
            ("Rename foo", "def foo():\n    return 1"),
            ("  Rename foo\n", "def foo():\r\n    return 1\r\n"),
            ("Rename foo", "\n\ndef foo():   \n    return 1\t\n\n"),
        ] {
            assert_eq!(dedup_key(instruction, pre), base, "{instruction:?} {pre:?}");
        }
    }

    #[test]
    fn meaningful_differences_change_the_key() {
        let base = dedup_key("Rename foo", "def foo():\n    return 1");
        for (instruction, pre) in [
            ("rename foo", "def foo():\n    return 1"),
            ("Rename foo", "def foo():\n  return 1"),
            ("Rename foo", "def foo():\n\n    return 1"),
            ("Rename foo", "def foo(): return 1"),
            ("Rename foo\ndef foo():", "    return 1"),
        ] {
            assert_ne!(dedup_key(instruction, pre), base, "{instruction:?} {pre:?}");
        }
        // The length prefixes keep the boundary between the parts.
        assert_ne!(dedup_key("ab", "c"), dedup_key("a", "bc"));
        assert_ne!(dedup_key("", "x"), dedup_key("x", ""));
    }

    #[test]
    fn the_key_is_stable_across_builds() {
        // A regression value: changing it re-splits every dataset, so it needs a new key version.
        // Computed independently from the documented format with Python's hashlib.
        assert_eq!(
            hex::encode(dedup_key("Rename foo to bar", "def foo():\n    return 1\n")),
            "0a243e555dc9e67d6ad776d9c96d6d9ca83844915fe7f21091be9a6e37fb0f52"
        );
    }

    #[test]
    fn splits_follow_the_weights() {
        let weights = SplitWeights::default();
        let mut counts = [0u32; 3];
        for i in 0..20_000 {
            let split = assign_split(&dedup_key(&format!("task {i}"), "x = 1"), &weights);
            counts[Split::ALL.iter().position(|s| *s == split).unwrap()] += 1;
        }
        // 18000 / 1000 / 1000 expected; a deterministic sample, so exact values are stable.
        assert!((17_600..=18_400).contains(&counts[0]), "{counts:?}");
        assert!((850..=1_150).contains(&counts[1]), "{counts:?}");
        assert!((850..=1_150).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn buckets_map_to_splits_at_the_boundaries() {
        let weights = SplitWeights {
            train: 2,
            dev: 1,
            test: 1,
        };
        let key_with_prefix = |value: u64| {
            let mut key = [0xffu8; 32];
            key[..8].copy_from_slice(&value.to_be_bytes());
            key
        };
        let splits: Vec<Split> = (0..8)
            .map(|v| assign_split(&key_with_prefix(v), &weights))
            .collect();
        use Split::*;
        assert_eq!(splits, [Train, Train, Dev, Test, Train, Train, Dev, Test]);
        let only_test = SplitWeights {
            train: 0,
            dev: 0,
            test: 3,
        };
        assert!((0..8).all(|v| assign_split(&key_with_prefix(v), &only_test) == Test));
    }

    #[test]
    fn zero_weights_are_refused() {
        let zero = SplitWeights {
            train: 0,
            dev: 0,
            test: 0,
        };
        assert_eq!(zero.validate(), Err(InvalidSplitWeights));
        assert_eq!(assign_split(&[7; 32], &zero), Split::Train);
        assert_eq!(SplitWeights::default().validate(), Ok(()));
        let max = SplitWeights {
            train: u32::MAX,
            dev: u32::MAX,
            test: u32::MAX,
        };
        assert_eq!(max.total(), 3 * u64::from(u32::MAX));
    }
}
