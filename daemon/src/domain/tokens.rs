//! Token counting with the OpenAI BPE vocabularies (`tiktoken`), shared by the agent-state budget
//! and the dataset token cap.
//!
//! Building a vocabulary takes tens of milliseconds and tens of megabytes, so each encoding is
//! built once per process and shared as an `Arc`.

use std::sync::{Arc, OnceLock};
use tiktoken_rs::CoreBPE;

/// The encoding used when the configuration names none (GPT-4o and later models).
pub const DEFAULT_ENCODING: &str = "o200k_base";

/// Every encoding [`TokenCounter::for_encoding`] accepts.
pub const SUPPORTED_ENCODINGS: [&str; 4] = ["o200k_base", "cl100k_base", "p50k_base", "r50k_base"];

/// Texts longer than this are tokenized in pieces. The regex engine behind `tiktoken` gives up
/// (and `tiktoken-rs` panics) on whitespace runs of about a million bytes, and BPE cost grows
/// faster than linearly with piece length; a dataset record may hold 2 MiB of text, and a panic
/// while replaying the log would stop the daemon for good.
pub const CHUNK_BYTES_MAX: usize = 256 * 1024;

/// An encoding name that is not one of [`SUPPORTED_ENCODINGS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token encoding {name:?} (supported: {})", SUPPORTED_ENCODINGS.join(", "))]
pub struct UnknownEncoding {
    /// The name as given.
    pub name: String,
}

/// Counts tokens of one encoding. Cheap to share: get it from [`TokenCounter::for_encoding`].
pub struct TokenCounter {
    /// The canonical encoding name, e.g. `o200k_base`.
    name: &'static str,
    /// The vocabulary and the pre-tokenization regex.
    bpe: CoreBPE,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TokenCounter {
    /// The shared counter for `name` (exact, case-sensitive: `o200k_base`, `cl100k_base`,
    /// `p50k_base`, `r50k_base`), built on first use and cached for the life of the process.
    pub fn for_encoding(name: &str) -> Result<Arc<TokenCounter>, UnknownEncoding> {
        static O200K: OnceLock<Arc<TokenCounter>> = OnceLock::new();
        static CL100K: OnceLock<Arc<TokenCounter>> = OnceLock::new();
        static P50K: OnceLock<Arc<TokenCounter>> = OnceLock::new();
        static R50K: OnceLock<Arc<TokenCounter>> = OnceLock::new();
        // `anyhow::Result` is only the return type of the tiktoken-rs builders; it never escapes.
        type Build = fn() -> anyhow::Result<CoreBPE>;
        let (cell, build, canonical_name): (_, Build, _) = match name {
            "o200k_base" => (&O200K, tiktoken_rs::o200k_base, "o200k_base"),
            "cl100k_base" => (&CL100K, tiktoken_rs::cl100k_base, "cl100k_base"),
            "p50k_base" => (&P50K, tiktoken_rs::p50k_base, "p50k_base"),
            "r50k_base" => (&R50K, tiktoken_rs::r50k_base, "r50k_base"),
            _ => {
                return Err(UnknownEncoding {
                    name: name.to_owned(),
                })
            }
        };
        let counter = cell.get_or_init(|| {
            // The vocabularies are compiled into the binary, so building one fails only if the
            // tiktoken-rs build itself is broken; the tests build every supported encoding.
            let bpe = build().expect("embedded tiktoken vocabulary must parse");
            Arc::new(TokenCounter {
                name: canonical_name,
                bpe,
            })
        });
        Ok(Arc::clone(counter))
    }

    /// The canonical encoding name, as written into events and stats.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The number of tokens of `text`, with special-token text such as `<|endoftext|>` counted as
    /// plain text (dataset records and agent state are data, never control tokens).
    ///
    /// Exact for texts up to [`CHUNK_BYTES_MAX`] (256 KiB), and for longer texts in which every
    /// stretch of that size holds a line that starts with an ASCII letter or digit after a
    /// non-blank line: such line starts are token boundaries in all four encodings, and the text
    /// is cut there. Text without one (a quarter MiB of whitespace or of a single symbol) is cut
    /// at a character boundary and its count may be off by a token or two per cut; this keeps
    /// counting total (no panic) and bounded in time (about a second for 2 MiB of such text).
    pub fn count(&self, text: &str) -> usize {
        split_for_counting(text, CHUNK_BYTES_MAX)
            .map(|piece| self.bpe.encode_ordinary(piece).len())
            .sum()
    }
}

/// Cuts `text` into pieces of at most `piece_bytes_max` bytes (a piece may be longer only when
/// `piece_bytes_max` is smaller than one character), preferring cuts at token boundaries.
fn split_for_counting(text: &str, piece_bytes_max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= piece_bytes_max {
            return Some(std::mem::take(&mut rest));
        }
        let cut =
            last_safe_cut(rest, piece_bytes_max).unwrap_or_else(|| char_cut(rest, piece_bytes_max));
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The last position in `2..=limit` where [`is_safe_cut`] holds.
fn last_safe_cut(text: &str, limit: usize) -> Option<usize> {
    let top = limit.min(text.len().saturating_sub(1));
    (2..=top).rev().find(|&p| is_safe_cut(text, p))
}

/// Whether `text[p-1]` is `\n`, the character before it is not whitespace, and `text[p]` is an
/// ASCII letter or digit. Every supported pre-tokenization regex then ends a piece at `p` (the
/// `\n` is a piece of its own or ends a punctuation piece), no piece's match depends on the text
/// past `p`, and none looks behind, so tokenizing `text[..p]` and `text[p..]` gives exactly the
/// tokens of `text`. The tests check this at every such position of a mixed text.
fn is_safe_cut(text: &str, p: usize) -> bool {
    let bytes = text.as_bytes();
    p >= 2
        && p < bytes.len()
        && bytes[p - 1] == b'\n'
        && bytes[p].is_ascii_alphanumeric()
        // `p - 1` is the start of the ASCII `\n`, so it is a char boundary.
        && text[..p - 1].chars().next_back().is_some_and(|before| !before.is_whitespace())
}

/// The largest char boundary in `1..=limit`, or the end of the first character when `limit` is
/// smaller than it, so every piece makes progress.
fn char_cut(text: &str, limit: usize) -> usize {
    let mut cut = limit.min(text.len());
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        cut = text.chars().next().map_or(text.len(), char::len_utf8);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// One row of `testdata/token_counts.json`.
    #[derive(Deserialize)]
    struct TokenCase {
        text: String,
        o200k_base: usize,
        cl100k_base: usize,
        p50k_base: usize,
        r50k_base: usize,
    }

    #[test]
    fn token_counts_match_the_regression_table() {
        let cases: Vec<TokenCase> =
            serde_json::from_str(include_str!("testdata/token_counts.json")).unwrap();
        let counters: Vec<_> = SUPPORTED_ENCODINGS
            .iter()
            .map(|name| TokenCounter::for_encoding(name).unwrap())
            .collect();
        let mut failures = Vec::new();
        for case in &cases {
            let expected = [
                case.o200k_base,
                case.cl100k_base,
                case.p50k_base,
                case.r50k_base,
            ];
            let actual: Vec<usize> = counters.iter().map(|c| c.count(&case.text)).collect();
            if actual != expected {
                failures.push(format!(
                    "{{\"text\": {}, \"o200k_base\": {}, \"cl100k_base\": {}, \"p50k_base\": {}, \"r50k_base\": {}}}",
                    serde_json::to_string(&case.text).unwrap(),
                    actual[0],
                    actual[1],
                    actual[2],
                    actual[3]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "rows that differ (actual counts):\n{}",
            failures.join(",\n")
        );
    }

    #[test]
    fn counters_are_cached_per_encoding() {
        let first = TokenCounter::for_encoding("cl100k_base").unwrap();
        let second = TokenCounter::for_encoding("cl100k_base").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.name(), "cl100k_base");
        assert_eq!(
            TokenCounter::for_encoding(DEFAULT_ENCODING).unwrap().name(),
            "o200k_base"
        );
    }

    #[test]
    fn unknown_encodings_are_refused() {
        for name in ["", "O200K_BASE", "gpt2", "p50k_edit", "o200k_harmony"] {
            let err = TokenCounter::for_encoding(name).unwrap_err();
            assert_eq!(err.name, name);
        }
    }

    #[test]
    fn special_token_text_counts_as_plain_text() {
        let counter = TokenCounter::for_encoding("cl100k_base").unwrap();
        // `<|endoftext|>` as one special token would count 1; as text it is several tokens.
        assert!(counter.count("<|endoftext|>") > 1);
    }

    /// Text that mixes code, prose, unicode, contractions and blank lines, with line starts that
    /// are safe cuts and many that look close to one but are not.
    fn mixed_text(repeats: usize) -> String {
        let mut text = String::new();
        for i in 0..repeats {
            text.push_str(&format!(
                "def f{i}(x):\n    return x + {i}  # ünïcödé ✓ 日本語\n\n  \t\nclass C{i}: pass\n;\n/* c */\n"
            ));
            text.push_str("It's a test, isn't it?\r\ndon'\nt x=1\n2 é\nb 日\n本 foo/\nbar a;\nb \u{3000}\nb tab\t\nx\n");
            text.push_str("'\ns ...\n\nz !!\n/x A\nB 9\n9 \u{300}\nq\n\r\nk END\nok");
        }
        text
    }

    #[test]
    fn every_safe_cut_keeps_counts_exact() {
        let text = mixed_text(3);
        let cuts: Vec<usize> = (0..text.len()).filter(|&p| is_safe_cut(&text, p)).collect();
        assert!(cuts.len() > 30, "the text must offer many cuts");
        for name in SUPPORTED_ENCODINGS {
            let counter = TokenCounter::for_encoding(name).unwrap();
            let whole = counter.bpe.encode_ordinary(&text);
            for &p in &cuts {
                let mut halves = counter.bpe.encode_ordinary(&text[..p]);
                halves.extend(counter.bpe.encode_ordinary(&text[p..]));
                assert_eq!(
                    halves,
                    whole,
                    "{name} cut at {p}: {:?}",
                    &text[p.saturating_sub(8)..p + 1]
                );
            }
        }
    }

    #[test]
    fn long_texts_are_cut_only_at_safe_points_when_they_can_be() {
        let text = mixed_text(200);
        for name in SUPPORTED_ENCODINGS {
            let counter = TokenCounter::for_encoding(name).unwrap();
            let whole = counter.bpe.encode_ordinary(&text).len();
            for piece_bytes_max in [300, 1000, 4096] {
                let pieces: Vec<&str> = split_for_counting(&text, piece_bytes_max).collect();
                assert!(pieces.len() > 1, "{name}: the text must actually be cut");
                assert_eq!(pieces.concat(), text);
                let summed: usize = pieces
                    .iter()
                    .map(|p| counter.bpe.encode_ordinary(p).len())
                    .sum();
                assert_eq!(
                    summed, whole,
                    "{name} with pieces of {piece_bytes_max} bytes"
                );
            }
        }
    }

    #[test]
    fn pieces_respect_the_size_limit_and_char_boundaries() {
        let text = "é".repeat(1000) + &" ".repeat(1000);
        let pieces: Vec<&str> = split_for_counting(&text, 101).collect();
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 101));
        // A limit below one character still makes progress.
        let tiny: Vec<&str> = split_for_counting("日本", 1).collect();
        assert_eq!(tiny, ["日", "本"]);
    }

    #[test]
    fn pathological_whitespace_does_not_panic() {
        // tiktoken-rs panics on about a million spaces in one piece.
        let counter = TokenCounter::for_encoding(DEFAULT_ENCODING).unwrap();
        let text = " ".repeat(2 * 1024 * 1024);
        assert!(counter.count(&text) > 0);
    }
}
