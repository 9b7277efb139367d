//! Unified diffs between two file maps, in the form `git apply` and reviewers read.

use std::collections::BTreeMap;

use similar::TextDiff;

/// Lines of context around each hunk, as `diff -u` and `git diff` use.
const CONTEXT_LINES: usize = 3;

/// Renders the change from `before` to `after` as a unified diff.
///
/// Deterministic: files in path order, identical inputs give identical bytes, unchanged files
/// produce nothing, so an empty string means "no change". Headers follow git (`a/` and `b/`
/// prefixes, `/dev/null` for an added or removed file) and a missing final newline is marked.
pub fn unified_diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> String {
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = String::new();
    for path in paths {
        let old = before.get(path);
        let new = after.get(path);
        if old == new {
            continue;
        }
        let old_header = match old {
            Some(_) => format!("a/{path}"),
            None => "/dev/null".to_string(),
        };
        let new_header = match new {
            Some(_) => format!("b/{path}"),
            None => "/dev/null".to_string(),
        };
        let old_text = old.map(String::as_str).unwrap_or("");
        let new_text = new.map(String::as_str).unwrap_or("");
        let diff = TextDiff::from_lines(old_text, new_text);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(CONTEXT_LINES)
                .header(&old_header, &new_header)
                .to_string(),
        );
    }
    out
}

/// Paths whose content differs between the two maps (added, removed or changed), sorted.
pub fn changed_paths(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut paths: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .cloned()
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(path, content)| (path.to_string(), content.to_string()))
            .collect()
    }

    #[test]
    fn identical_maps_give_an_empty_diff() {
        let files = map(&[("a.py", "x\n")]);
        assert_eq!(unified_diff(&files, &files), "");
        assert!(changed_paths(&files, &files).is_empty());
    }

    #[test]
    fn changed_added_and_removed_files() {
        let before = map(&[("a.py", "one\ntwo\n"), ("gone.py", "bye\n")]);
        let after = map(&[("a.py", "one\n2\n"), ("new.py", "hi")]);
        let expected = "\
--- a/a.py
+++ b/a.py
@@ -1,2 +1,2 @@
 one
-two
+2
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-bye
--- /dev/null
+++ b/new.py
@@ -0,0 +1 @@
+hi
\\ No newline at end of file
";
        assert_eq!(unified_diff(&before, &after), expected);
        assert_eq!(
            changed_paths(&before, &after),
            ["a.py", "gone.py", "new.py"]
        );
    }
}
