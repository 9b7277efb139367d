//! Applying an ast-grep action (a pattern with a rewrite, or a YAML rule with a `fix`) to a
//! task's files, in memory and deterministically.
//!
//! This module is pure: it reads no files and runs no processes. The sandbox calls it inside
//! a confined helper process, and gold diffs are computed by calling it directly.

use std::collections::BTreeMap;

use agentd_schemas::events::Action;
use ast_grep_config::{Fixer, GlobalRules, RuleCollection, RuleConfig, SerializableRuleConfig};
use ast_grep_core::{AstGrep, Language, Matcher, Pattern};
use ast_grep_language::SupportLang;

use super::SandboxError;

/// Languages whose tree-sitter grammars are compiled in. Other languages are refused before
/// any parsing, because ast-grep panics on a grammar that was left out of the build.
pub const SUPPORTED_LANGUAGES: [SupportLang; 5] = [
    SupportLang::Python,
    SupportLang::JavaScript,
    SupportLang::TypeScript,
    SupportLang::Tsx,
    SupportLang::Java,
];

/// Whether `name` (as in an action's `language`, e.g. `python`) is one of
/// [`SUPPORTED_LANGUAGES`], so callers can refuse a payload without knowing ast-grep.
pub fn is_supported_language(name: &str) -> bool {
    name.parse::<SupportLang>()
        .is_ok_and(|parsed| SUPPORTED_LANGUAGES.contains(&parsed))
}

/// Applies `action` to every file of its language and returns the complete file map after it.
///
/// Files are visited in path order and, for YAML, the rules that apply to a file are applied
/// one after another in rule-id order, each on the output of the previous one; a match's
/// replacement is never rescanned by the same rule. Which files a rule sees follows ast-grep:
/// the file extension picks the language (`.py`, `.js`/`.mjs`/`.cjs`/`.jsx`, `.ts`, `.tsx`,
/// `.java`), then the rule's `files`/`ignores` globs. A rule matching nothing returns the input
/// unchanged, which is not an error. An invalid pattern, rule or fix, a language not compiled
/// in, or a rule without `fix` is `SandboxError::InvalidAction`.
pub fn apply_action_in_memory(
    files: &BTreeMap<String, String>,
    action: &Action,
) -> Result<BTreeMap<String, String>, SandboxError> {
    let mut after = files.clone();
    match action {
        Action::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            let language = parse_language(language)?;
            let pattern = Pattern::try_new(pattern, language)
                .map_err(|e| invalid(format!("pattern: {}", error_chain(&e))))?;
            let fixer = Fixer::from_str(rewrite, &language)
                .map_err(|e| invalid(format!("rewrite: {}", error_chain(&e))))?;
            for (path, content) in after.iter_mut() {
                if SupportLang::from_path(path) == Some(language) {
                    *content = rewrite_source(path, content, language, &pattern, &fixer)?;
                }
            }
        }
        Action::Rule { yaml } => {
            let collection = parse_rules(yaml)?;
            for (path, content) in after.iter_mut() {
                for rule in collection.for_path(path) {
                    // `parse_rules` refuses rules without a fix, so there is a first one; the
                    // first fix is the one ast-grep applies non-interactively.
                    let Some(fixer) = rule.fixer.first() else {
                        continue;
                    };
                    *content = rewrite_source(path, content, rule.language, &rule.matcher, fixer)?;
                }
            }
        }
    }
    Ok(after)
}

/// Maps a language name (ast-grep's names and aliases, case-insensitive) to a compiled-in one.
fn parse_language(name: &str) -> Result<SupportLang, SandboxError> {
    let language: SupportLang = name
        .parse()
        .map_err(|_| invalid(format!("unknown language {name:?}")))?;
    ensure_supported(language)?;
    Ok(language)
}

fn ensure_supported(language: SupportLang) -> Result<(), SandboxError> {
    if SUPPORTED_LANGUAGES.contains(&language) {
        Ok(())
    } else {
        Err(invalid(format!(
            "language {language} is not supported by this build (supported: {})",
            SUPPORTED_LANGUAGES.map(|l| l.to_string()).join(", ")
        )))
    }
}

/// Parses a YAML rule stream (documents separated by `---`) into rules ready to apply.
fn parse_rules(yaml: &str) -> Result<RuleCollection<SupportLang>, SandboxError> {
    let serialized: Vec<SerializableRuleConfig<SupportLang>> = ast_grep_config::from_multiple(yaml)
        .map_err(|e| invalid(format!("rule YAML: {}", error_chain(&e))))?;
    if serialized.is_empty() {
        return Err(invalid("rule YAML holds no rule".to_string()));
    }
    let globals = GlobalRules::default();
    let mut rules = Vec::with_capacity(serialized.len());
    for rule in serialized {
        ensure_supported(rule.language)?;
        let id = rule.id.clone();
        let rule = RuleConfig::try_from(rule, &globals)
            .map_err(|e| invalid(format!("rule {id:?}: {}", error_chain(&e))))?;
        if rule.fixer.is_empty() {
            return Err(invalid(format!("rule {id:?} has no `fix`")));
        }
        rules.push(rule);
    }
    RuleCollection::try_new(rules).map_err(|e| invalid(format!("rule globs: {e}")))
}

/// Replaces every non-overlapping match in one file, like `ast-grep --update-all`.
fn rewrite_source(
    path: &str,
    source: &str,
    language: SupportLang,
    matcher: &impl Matcher,
    fixer: &Fixer,
) -> Result<String, SandboxError> {
    let root =
        AstGrep::try_new(source, language).map_err(|e| invalid(format!("parsing {path}: {e}")))?;
    let edits = root.root().replace_all(matcher, fixer);
    if edits.is_empty() {
        return Ok(source.to_string());
    }
    let mut bytes = source.as_bytes().to_vec();
    // Edits come in source order and do not overlap; applying them back to front keeps the
    // earlier offsets valid.
    for edit in edits.into_iter().rev() {
        let end = edit.position + edit.deleted_length;
        if end > bytes.len() {
            return Err(invalid(format!("edit past the end of {path}")));
        }
        bytes.splice(edit.position..end, edit.inserted_text);
    }
    String::from_utf8(bytes).map_err(|_| invalid(format!("rewrite of {path} is not UTF-8")))
}

fn invalid(reason: String) -> SandboxError {
    SandboxError::InvalidAction(reason)
}

/// An error and its sources on one line: ast-grep's top-level messages are generic ("Fail to
/// parse yaml as RuleConfig") and the useful part is in the source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
