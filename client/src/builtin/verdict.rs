//! The rule-based reward of `astgrep.verify`: a pure function of the sandbox run and the gold
//! diff, so the rules are tested without processes and replayed by anyone who has the facts.
//!
//! `verified` = the action applied cleanly (outcome `ok` and a non-empty diff) AND the tests
//! pass (when there is a test command) AND the diff equals the gold diff (when there is a gold
//! action). The value is 1.0 when verified and 0.0 otherwise: a binary reward, with the
//! partial checks reported as components (`applied`, `tests`, `gold_match`, each 0 or 1; a
//! check that does not apply is left out rather than counted as passed).

use agentd_schemas::events::SandboxOutcome;
use std::collections::BTreeMap;

/// What the verdict looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence<'a> {
    pub outcome: SandboxOutcome,
    /// The action's unified diff.
    pub diff: &'a str,
    /// Whether the job had a test command.
    pub has_tests: bool,
    pub tests_failed: Option<u32>,
    /// The gold action's diff, when the job had one.
    pub gold_diff: Option<&'a str>,
}

/// The reward and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub verified: bool,
    pub value: f64,
    pub components: BTreeMap<String, f64>,
    /// Whether the diff equals the gold diff; `None` without a gold action.
    pub gold_match: Option<bool>,
}

/// Judges one run; see the module doc for the rules.
pub fn judge(evidence: &Evidence<'_>) -> Verdict {
    // The diff is only filled in when the apply step succeeded, so a non-empty diff means
    // the action applied and changed something, whatever the tests did afterwards.
    let applied = !evidence.diff.is_empty() && evidence.outcome != SandboxOutcome::Rejected;
    let clean = evidence.outcome == SandboxOutcome::Ok && applied;
    let mut components = BTreeMap::new();
    components.insert("applied".to_string(), flag(applied));
    let mut verified = clean;
    if evidence.has_tests {
        // `ok` means the test command exited 0; a summary that still counts failures (a
        // runner that exits 0 on failure) is believed over the exit status.
        let tests_pass =
            evidence.outcome == SandboxOutcome::Ok && evidence.tests_failed.unwrap_or(0) == 0;
        components.insert("tests".to_string(), flag(tests_pass));
        verified &= tests_pass;
    }
    let gold_match = evidence.gold_diff.map(|gold| gold == evidence.diff);
    if let Some(matched) = gold_match {
        components.insert("gold_match".to_string(), flag(matched));
        verified &= matched;
    }
    Verdict {
        verified,
        value: flag(verified),
        components,
        gold_match,
    }
}

fn flag(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-print(1)\n+log(1)\n";

    fn evidence(outcome: SandboxOutcome, diff: &'static str) -> Evidence<'static> {
        Evidence {
            outcome,
            diff,
            has_tests: false,
            tests_failed: None,
            gold_diff: None,
        }
    }

    fn components(verdict: &Verdict) -> Vec<(&str, f64)> {
        verdict
            .components
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
            .collect()
    }

    #[test]
    fn a_clean_change_without_tests_or_gold_is_verified() {
        let verdict = judge(&evidence(SandboxOutcome::Ok, DIFF));
        assert!(verdict.verified);
        assert_eq!(verdict.value, 1.0);
        assert_eq!(components(&verdict), [("applied", 1.0)]);
        assert_eq!(verdict.gold_match, None);
    }

    #[test]
    fn an_action_that_changes_nothing_is_not_verified() {
        let verdict = judge(&evidence(SandboxOutcome::Ok, ""));
        assert!(!verdict.verified);
        assert_eq!(components(&verdict), [("applied", 0.0)]);
    }

    #[test]
    fn all_three_checks_must_pass() {
        let all = Evidence {
            has_tests: true,
            tests_failed: Some(0),
            gold_diff: Some(DIFF),
            ..evidence(SandboxOutcome::Ok, DIFF)
        };
        let verdict = judge(&all);
        assert!(verdict.verified);
        assert_eq!(
            components(&verdict),
            [("applied", 1.0), ("gold_match", 1.0), ("tests", 1.0)]
        );
        let wrong_gold = judge(&Evidence {
            gold_diff: Some("--- other\n"),
            ..all.clone()
        });
        assert!(!wrong_gold.verified);
        assert_eq!(wrong_gold.gold_match, Some(false));
        assert_eq!(wrong_gold.value, 0.0);
        let failing_tests = judge(&Evidence {
            outcome: SandboxOutcome::Failed,
            tests_failed: Some(2),
            ..all.clone()
        });
        assert!(!failing_tests.verified);
        assert_eq!(
            components(&failing_tests),
            [("applied", 1.0), ("gold_match", 1.0), ("tests", 0.0)]
        );
        let exit_zero_but_failures = judge(&Evidence {
            tests_failed: Some(1),
            ..all.clone()
        });
        assert!(!exit_zero_but_failures.verified);
        let timed_out = judge(&Evidence {
            outcome: SandboxOutcome::TimedOut,
            ..all
        });
        assert_eq!(timed_out.components["tests"], 0.0);
        assert!(!timed_out.verified);
    }

    #[test]
    fn a_rejected_action_gets_nothing() {
        let verdict = judge(&Evidence {
            gold_diff: Some(""),
            ..evidence(SandboxOutcome::Rejected, "")
        });
        assert!(!verdict.verified);
        assert_eq!(
            components(&verdict),
            [("applied", 0.0), ("gold_match", 1.0)]
        );
    }
}
