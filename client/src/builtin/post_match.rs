//! `post_match`: whether the action's result equals the task's expected result (the dataset
//! record's `post`), up to formatting noise.
//!
//! The normalization is the daemon's dedup normalization (`daemon/src/domain/dataset/split.rs`,
//! `normalize_for_key`), reproduced here because the client must not depend on the daemon
//! crate: CRLF becomes LF, trailing whitespace is removed from every line, and leading and
//! trailing whitespace (blank lines included) from the whole text. Indentation inside the text
//! is kept: in Python it is meaning. A unit test pins the cases the daemon's test pins.

use std::collections::BTreeMap;

/// The text as the comparison sees it.
pub fn normalize_for_comparison(text: &str) -> String {
    let unix = text.replace("\r\n", "\n");
    let lines: Vec<&str> = unix.split('\n').map(str::trim_end).collect();
    lines.join("\n").trim().to_owned()
}

/// Compares the files after the action (`after`: path -> content) with the expected ones.
/// `Ok(())` when every expected file matches; else why not, naming the first file and line
/// that differ.
pub fn compare_with_post(
    expected: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (path, expected_text) in expected {
        let Some(actual_text) = after.get(path) else {
            return Err(format!("{path} is not among the task's files"));
        };
        let expected_normalized = normalize_for_comparison(expected_text);
        let actual_normalized = normalize_for_comparison(actual_text);
        if expected_normalized != actual_normalized {
            let line = first_differing_line(&expected_normalized, &actual_normalized);
            return Err(format!(
                "{path} differs from the expected result (post) from line {line} on"
            ));
        }
    }
    Ok(())
}

/// 1-based number of the first line where the two texts differ.
fn first_differing_line(left: &str, right: &str) -> usize {
    let mut left_lines = left.split('\n');
    let mut right_lines = right.split('\n');
    let mut number = 1;
    loop {
        match (left_lines.next(), right_lines.next()) {
            (Some(a), Some(b)) if a == b => number += 1,
            _ => return number,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same cases as the daemon's `formatting_noise_does_not_change_the_key` and
    /// `meaningful_differences_change_the_key`.
    #[test]
    fn normalization_matches_the_daemons_dedup() {
        let base = normalize_for_comparison("def foo():\n    return 1\n");
        for noisy in [
            "def foo():\n    return 1",
            "def foo():\r\n    return 1\r\n",
            "\n\ndef foo():   \n    return 1\t\n\n",
        ] {
            assert_eq!(normalize_for_comparison(noisy), base, "{noisy:?}");
        }
        for different in [
            "def foo():\n  return 1",
            "def foo():\n\n    return 1",
            "def foo(): return 1",
        ] {
            assert_ne!(normalize_for_comparison(different), base, "{different:?}");
        }
    }

    #[test]
    fn a_mismatch_names_the_file_and_line() {
        let after: BTreeMap<String, String> =
            [("app.py".to_string(), "a = 1\nb = 2\n".to_string())].into();
        let expect = |text: &str| -> BTreeMap<String, String> {
            [("app.py".to_string(), text.to_string())].into()
        };
        assert_eq!(
            compare_with_post(&expect("a = 1\r\nb = 2  \n\n"), &after),
            Ok(())
        );
        let error = compare_with_post(&expect("a = 1\nb = 3\n"), &after).unwrap_err();
        assert!(
            error.contains("app.py") && error.contains("line 2"),
            "{error}"
        );
        let missing: BTreeMap<String, String> = [("other.py".to_string(), String::new())].into();
        assert!(compare_with_post(&missing, &after).is_err());
    }
}
