//! Which of a task's files are its tests: the payload's `tests` (paths or globs), else the
//! conventions of the languages agentd verifies. The verifier protects these files: an action
//! that changes one scores 0 (`tamper`), and the test command runs them from their original
//! bytes, unable to write them.
//!
//! Globs: `*` and `?` stay within one path component, `**` spans any number of them,
//! `{a,b}` and `[abc]` as usual; an entry ending in `/` is the whole directory. Matching is on
//! the task's relative paths, case-sensitive.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, BTreeSet};

/// Test files when the payload does not name them. Wide on purpose: protecting a file that
/// is not a test costs a task that must edit it an explicit `tests` list; leaving a test
/// unprotected lets an action rewrite it.
pub const DEFAULT_TEST_PATTERNS: [&str; 11] = [
    "**/test_*.py",
    "**/*_test.py",
    "**/conftest.py",
    "**/tests/**",
    "**/test/**",
    "**/__tests__/**",
    "**/src/test/**",
    "**/*.test.{js,jsx,mjs,cjs,ts,tsx}",
    "**/*.spec.{js,jsx,mjs,cjs,ts,tsx}",
    "**/*Test.java",
    "**/*Tests.java",
];

/// Most entries in a payload's `tests`.
pub const TEST_PATTERNS_MAX: usize = 256;
/// Longest entry in a payload's `tests`, in bytes.
pub const TEST_PATTERN_BYTES_MAX: usize = 1024;

/// The task files that `DEFAULT_TEST_PATTERNS` match.
pub fn default_test_files(files: &BTreeMap<String, String>) -> BTreeSet<String> {
    let patterns: Vec<String> = DEFAULT_TEST_PATTERNS.map(String::from).to_vec();
    // The defaults are constants that compile (a unit test proves it).
    match glob_set(&patterns) {
        Ok(set) => matching(files, &set),
        Err(_) => BTreeSet::new(),
    }
}

/// The task files that the payload's `tests` entries name. Every entry must match at least one
/// file: a misspelt entry would otherwise leave a test unprotected without a word.
pub fn named_test_files(
    files: &BTreeMap<String, String>,
    patterns: &[String],
) -> Result<BTreeSet<String>, String> {
    if patterns.len() > TEST_PATTERNS_MAX {
        return Err(format!(
            "tests has {} entries, over the limit of {TEST_PATTERNS_MAX}",
            patterns.len()
        ));
    }
    let mut found = BTreeSet::new();
    for pattern in patterns {
        if pattern.len() > TEST_PATTERN_BYTES_MAX {
            return Err(format!(
                "tests entry of {} bytes is over the limit of {TEST_PATTERN_BYTES_MAX}",
                pattern.len()
            ));
        }
        let set = glob_set(std::slice::from_ref(pattern))?;
        let matched = matching(files, &set);
        if matched.is_empty() {
            return Err(format!("tests entry {pattern:?} matches none of the files"));
        }
        found.extend(matched);
    }
    Ok(found)
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let expanded = match pattern.strip_suffix('/') {
            Some(directory) => format!("{directory}/**"),
            None => pattern.clone(),
        };
        let glob = GlobBuilder::new(&expanded)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|error| format!("tests entry {pattern:?} is not a valid glob: {error}"))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|error| format!("tests globs cannot be compiled: {error}"))
}

fn matching(files: &BTreeMap<String, String>, set: &GlobSet) -> BTreeSet<String> {
    files
        .keys()
        .filter(|path| set.is_match(path.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
