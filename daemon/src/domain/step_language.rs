//! The language a step's action edits, for the trajectory stats by language
//! (`GET /v1/trajectories/stats`, `languages`; `agentd_teacher_precision_by_language`).
//!
//! The source is the action itself, because that is the language the sandbox parsed and ran
//! the edit with:
//! - a pattern action names it (`language`);
//! - a rule action names it in its YAML: ast-grep needs a top-level `language:` key in every
//!   rule. The daemon has no YAML parser (a rule's syntax is the sandbox's to check), so the key
//!   is read by lines, as the output-format parser finds the top-level `rule:` key: a line that
//!   starts with `language:`, its value without quotes or a trailing ` #` comment. A YAML of
//!   several rules (`---`) must name one language in all of them.
//!
//! Names are normalized with [`normalize_language`] (`py`, `Python` → `python`), so the stats
//! have at most one entry per [`Language`] plus [`UNKNOWN_LANGUAGE`]: a step without an action
//! (its raw output did not parse), a name the alias table does not know, or a rule without such
//! a line (flow-style YAML) or naming several languages.
//!
//! The task's dataset record is not consulted: task ids are free-form and only some name a
//! record, and a step's language would then depend on another projection and on whether the
//! record arrived before the step; the action's language depends on the step alone.

use super::dataset::{normalize_language, Language};
use agentd_schemas::events::Action;

/// The stats key of steps without a known language.
pub const UNKNOWN_LANGUAGE: &str = "unknown";

/// The language of a step's action; `None` when it has none this build knows (see the module
/// documentation).
pub fn action_language(action: Option<&Action>) -> Option<Language> {
    match action? {
        Action::Pattern { language, .. } => normalize_language(language),
        Action::Rule { yaml } => rule_language(yaml),
    }
}

/// The stats key of a language: its canonical name, or [`UNKNOWN_LANGUAGE`].
pub fn language_key(language: Option<Language>) -> &'static str {
    language.map_or(UNKNOWN_LANGUAGE, Language::as_str)
}

/// The language every top-level `language:` line of a rule's YAML names; `None` without such a
/// line, with an unknown name, or with lines naming different languages.
fn rule_language(yaml: &str) -> Option<Language> {
    let mut found = None;
    for line in yaml.lines() {
        let Some(value) = line.strip_prefix("language:") else {
            continue;
        };
        // `language:python` is one plain scalar in YAML, not the key.
        if !(value.is_empty() || value.starts_with([' ', '\t', '\r'])) {
            continue;
        }
        let language = normalize_language(scalar(value))?;
        if found.is_some_and(|seen| seen != language) {
            return None;
        }
        found = Some(language);
    }
    found
}

/// A one-line YAML scalar as written after a key: quoted (`"ts"`, `'ts'`) or plain, where a
/// comment starts at a `#` after whitespace.
fn scalar(value: &str) -> &str {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or(rest);
        }
    }
    let comment = value.find(" #").or_else(|| value.find("\t#"));
    comment.map_or(value, |at| value[..at].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Action {
        Action::Rule {
            yaml: yaml.to_owned(),
        }
    }

    fn pattern(language: &str) -> Action {
        Action::Pattern {
            language: language.to_owned(),
            pattern: "print($A)".to_owned(),
            rewrite: "log($A)".to_owned(),
        }
    }

    #[test]
    fn the_language_of_each_action_form() {
        let cases: &[(Option<Action>, &str)] = &[
            (Some(pattern("python")), "python"),
            (Some(pattern(" Py3 ")), "python"),
            (Some(pattern("tsx")), "typescript"),
            (Some(pattern("cobol")), "unknown"),
            (None, "unknown"),
            (Some(rule("id: a\nlanguage: Python\nrule:\n  pattern: x\n")), "python"),
            (Some(rule("id: a\r\nlanguage: Rust\r\nrule:\r\n  pattern: x\r\n")), "rust"),
            (Some(rule("language: \"ts\"\nrule: {pattern: x}\n")), "typescript"),
            (Some(rule("language: 'C++'  # headers too\nrule: {pattern: x}\n")), "cpp"),
            (Some(rule("language: go # gofmt\nrule: {pattern: x}\n")), "go"),
            (Some(rule("language:\tjava\nrule: {pattern: x}\n")), "java"),
            // The key must be top level: an indented `language:` belongs to something else.
            (Some(rule("rule:\n  language: python\n")), "unknown"),
            (Some(rule("rule: {pattern: x}\n")), "unknown"),
            (Some(rule("{id: a, language: python, rule: {pattern: x}}")), "unknown"),
            (Some(rule("language:python\nrule: {pattern: x}\n")), "unknown"),
            (Some(rule("language:\nrule: {pattern: x}\n")), "unknown"),
            (Some(rule("language: klingon\nrule: {pattern: x}\n")), "unknown"),
            // Several rules: one language for all, or none.
            (
                Some(rule("language: js\nrule: {pattern: a}\n---\nlanguage: JavaScript\nrule: {pattern: b}\n")),
                "javascript",
            ),
            (
                Some(rule("language: js\nrule: {pattern: a}\n---\nlanguage: ts\nrule: {pattern: b}\n")),
                "unknown",
            ),
        ];
        let mismatches: Vec<String> = cases
            .iter()
            .filter_map(|(action, expected)| {
                let got = language_key(action_language(action.as_ref()));
                (got != *expected).then(|| format!("{action:?}: {got}, expected {expected}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }
}
