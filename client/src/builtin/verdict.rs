//! The rule-based reward of `astgrep.verify`: a pure function of what the sandbox run showed,
//! so the rules are tested without processes and replayed by anyone who has the facts.
//!
//! Each check is a component, 1 when it passed and 0 when it failed, left out when it does not
//! apply (never counted as passed):
//!
//! - `applied`: the action applied cleanly and changed something (a non-empty diff, not
//!   `rejected`);
//! - `tamper`: the action left every test file alone (only when the task has test files);
//! - `tests`: every test the pristine test files define passed, as the trusted runner reports
//!   it (only with a test command); with `tests_reward: fraction`, the fraction that passed;
//! - `gold_match`: the diff equals the gold action's (only with a gold action);
//! - `post_match`: the result equals the expected `post` (only with `post`).
//!
//! `value` is the product of the components, and 0 when the run `timed_out`, was
//! `killed_oom` or `rejected`; `verified` is true when the outcome is `ok` and every component
//! is 1. So a binary reward, unless `tests_reward` is `fraction`, where `value` is the
//! fraction of tests passed when every other check passed. Every failed check says why in
//! `reasons`.

use agentd_schemas::events::SandboxOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use agentd_schemas::events::TestsReward;

/// What the trusted test runner established (see `python_runner`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestsEvidence {
    /// Tests of the pristine test files that passed (0 when the run was tampered with).
    pub passed: u32,
    /// Tests the pristine test files define (0 when no runner report came).
    pub expected: u32,
    /// Every expected test passed, and the runner reported completion, with no tampering.
    pub all_passed: bool,
    /// Why not all passed.
    pub reason: Option<String>,
}

/// What the verdict looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence<'a> {
    pub outcome: SandboxOutcome,
    /// The action's unified diff (test files included).
    pub diff: &'a str,
    /// Whether the task has test files (the `tamper` check applies).
    pub has_test_files: bool,
    /// Test files the action changed.
    pub protected_changed: &'a [String],
    /// The tests' result; `None` without a test command.
    pub tests: Option<&'a TestsEvidence>,
    pub tests_reward: TestsReward,
    /// The gold action's diff, when the job had one.
    pub gold_diff: Option<&'a str>,
    /// The comparison with `post`, when the job had one: `Err` says how it differs.
    pub post: Option<&'a Result<(), String>>,
}

/// The reward and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub verified: bool,
    pub value: f64,
    pub components: BTreeMap<String, f64>,
    /// Whether the diff equals the gold diff; `None` without a gold action.
    pub gold_match: Option<bool>,
    /// Whether the result equals `post`; `None` without one.
    pub post_match: Option<bool>,
    /// For each check that failed (by component name, and `outcome`), why.
    pub reasons: BTreeMap<String, String>,
}

/// Judges one run; see the module doc for the rules.
pub fn judge(evidence: &Evidence<'_>) -> Verdict {
    let mut components = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    // The diff is only filled in when the apply step succeeded, so a non-empty diff means
    // the action applied and changed something, whatever the tests did afterwards.
    let applied = !evidence.diff.is_empty() && evidence.outcome != SandboxOutcome::Rejected;
    components.insert("applied".to_string(), flag(applied));
    if !applied {
        reasons.insert("applied".to_string(), not_applied_reason(evidence.outcome));
    }
    if evidence.has_test_files {
        let untouched = evidence.protected_changed.is_empty();
        components.insert("tamper".to_string(), flag(untouched));
        if !untouched {
            reasons.insert(
                "tamper".to_string(),
                tamper_reason(evidence.protected_changed),
            );
        }
    }
    if let Some(tests) = evidence.tests {
        let score = tests_score(tests, evidence.tests_reward);
        components.insert("tests".to_string(), score);
        if !tests.all_passed {
            let reason = tests
                .reason
                .clone()
                .unwrap_or_else(|| "tests failed".into());
            reasons.insert("tests".to_string(), reason);
        }
    }
    let gold_match = evidence.gold_diff.map(|gold| gold == evidence.diff);
    if let Some(matched) = gold_match {
        components.insert("gold_match".to_string(), flag(matched));
        if !matched {
            reasons.insert(
                "gold_match".to_string(),
                "the diff differs from the gold action's".to_string(),
            );
        }
    }
    let post_match = evidence.post.map(Result::is_ok);
    if let Some(Err(reason)) = evidence.post {
        reasons.insert("post_match".to_string(), reason.clone());
    }
    if let Some(matched) = post_match {
        components.insert("post_match".to_string(), flag(matched));
    }
    let outcome_counts = matches!(
        evidence.outcome,
        SandboxOutcome::Ok | SandboxOutcome::Failed
    );
    if !outcome_counts {
        reasons.insert(
            "outcome".to_string(),
            format!("the sandbox run ended {}", evidence.outcome.as_str()),
        );
    }
    let value = if outcome_counts {
        components.values().product()
    } else {
        0.0
    };
    let verified =
        evidence.outcome == SandboxOutcome::Ok && components.values().all(|score| *score == 1.0);
    Verdict {
        verified,
        value,
        components,
        gold_match,
        post_match,
        reasons,
    }
}

fn tests_score(tests: &TestsEvidence, reward: TestsReward) -> f64 {
    match reward {
        TestsReward::All => flag(tests.all_passed),
        TestsReward::Fraction if tests.all_passed => 1.0,
        TestsReward::Fraction if tests.expected == 0 => 0.0,
        TestsReward::Fraction => {
            f64::from(tests.passed.min(tests.expected)) / f64::from(tests.expected)
        }
    }
}

fn not_applied_reason(outcome: SandboxOutcome) -> String {
    if outcome == SandboxOutcome::Rejected {
        "the sandbox rejected the run (see rejected_reason)".to_string()
    } else {
        "the action changed no file".to_string()
    }
}

fn tamper_reason(changed: &[String]) -> String {
    let noun = if changed.len() == 1 {
        "test file"
    } else {
        "test files"
    };
    format!(
        "the action changed {noun} {}; test files are not the action's to change (the change was not applied: the tests ran from the original)",
        changed.join(", ")
    )
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
            has_test_files: false,
            protected_changed: &[],
            tests: None,
            tests_reward: TestsReward::All,
            gold_diff: None,
            post: None,
        }
    }

    fn components(verdict: &Verdict) -> Vec<(&str, f64)> {
        verdict
            .components
            .iter()
            .map(|(name, value)| (name.as_str(), *value))
            .collect()
    }

    static ALL_PASSED: TestsEvidence = TestsEvidence {
        passed: 3,
        expected: 3,
        all_passed: true,
        reason: None,
    };

    #[test]
    fn a_clean_change_without_tests_or_gold_is_verified() {
        let verdict = judge(&evidence(SandboxOutcome::Ok, DIFF));
        assert!(verdict.verified);
        assert_eq!(verdict.value, 1.0);
        assert_eq!(components(&verdict), [("applied", 1.0)]);
        assert_eq!(verdict.gold_match, None);
        assert!(verdict.reasons.is_empty());
    }

    #[test]
    fn an_action_that_changes_nothing_is_not_verified() {
        let verdict = judge(&evidence(SandboxOutcome::Ok, ""));
        assert!(!verdict.verified);
        assert_eq!(components(&verdict), [("applied", 0.0)]);
        assert_eq!(verdict.reasons["applied"], "the action changed no file");
    }

    #[test]
    fn all_checks_must_pass() {
        let post_ok = Ok(());
        let all = Evidence {
            has_test_files: true,
            tests: Some(&ALL_PASSED),
            gold_diff: Some(DIFF),
            post: Some(&post_ok),
            ..evidence(SandboxOutcome::Ok, DIFF)
        };
        let verdict = judge(&all);
        assert!(verdict.verified);
        assert_eq!(
            components(&verdict),
            [
                ("applied", 1.0),
                ("gold_match", 1.0),
                ("post_match", 1.0),
                ("tamper", 1.0),
                ("tests", 1.0)
            ]
        );
        let wrong_gold = judge(&Evidence {
            gold_diff: Some("--- other\n"),
            ..all.clone()
        });
        assert!(!wrong_gold.verified);
        assert_eq!(wrong_gold.gold_match, Some(false));
        assert_eq!(wrong_gold.value, 0.0);
        let post_differs = Err("app.py differs".to_string());
        let wrong_post = judge(&Evidence {
            post: Some(&post_differs),
            ..all.clone()
        });
        assert_eq!(
            (wrong_post.value, wrong_post.post_match),
            (0.0, Some(false))
        );
        assert_eq!(wrong_post.reasons["post_match"], "app.py differs");
        let failing = TestsEvidence {
            passed: 1,
            all_passed: false,
            reason: Some("1 of 3 tests passed".into()),
            ..ALL_PASSED.clone()
        };
        let failing_tests = judge(&Evidence {
            outcome: SandboxOutcome::Failed,
            tests: Some(&failing),
            ..all.clone()
        });
        assert!(!failing_tests.verified);
        assert_eq!(failing_tests.components["tests"], 0.0);
        assert_eq!(failing_tests.reasons["tests"], "1 of 3 tests passed");
        let timed_out = judge(&Evidence {
            outcome: SandboxOutcome::TimedOut,
            ..all
        });
        assert_eq!(timed_out.value, 0.0);
        assert!(!timed_out.verified);
        assert!(timed_out.reasons["outcome"].contains("timed_out"));
    }

    #[test]
    fn changing_a_test_file_scores_zero_whatever_the_tests_say() {
        let changed = ["test_app.py".to_string()];
        let verdict = judge(&Evidence {
            has_test_files: true,
            protected_changed: &changed,
            tests: Some(&ALL_PASSED),
            ..evidence(SandboxOutcome::Ok, DIFF)
        });
        assert!(!verdict.verified);
        assert_eq!(verdict.value, 0.0);
        assert_eq!(verdict.components["tamper"], 0.0);
        assert!(
            verdict.reasons["tamper"].starts_with("the action changed test file test_app.py"),
            "{:?}",
            verdict.reasons
        );
    }

    #[test]
    fn fraction_scores_tests_passed_over_tests_defined() {
        let two_of_four = TestsEvidence {
            passed: 2,
            expected: 4,
            all_passed: false,
            reason: Some("2 of 4 tests passed".into()),
        };
        let partial = Evidence {
            has_test_files: true,
            tests: Some(&two_of_four),
            tests_reward: TestsReward::Fraction,
            ..evidence(SandboxOutcome::Failed, DIFF)
        };
        let verdict = judge(&partial);
        assert_eq!((verdict.value, verdict.verified), (0.5, false));
        assert_eq!(verdict.components["tests"], 0.5);
        let changed = ["test_app.py".to_string()];
        let tampered = judge(&Evidence {
            protected_changed: &changed,
            ..partial.clone()
        });
        assert_eq!(tampered.value, 0.0);
        let no_report = TestsEvidence {
            passed: 0,
            expected: 0,
            all_passed: false,
            reason: Some("no report".into()),
        };
        let verdict = judge(&Evidence {
            tests: Some(&no_report),
            ..partial
        });
        assert_eq!(verdict.value, 0.0);
    }

    #[test]
    fn a_rejected_action_gets_nothing() {
        let verdict = judge(&Evidence {
            gold_diff: Some(""),
            ..evidence(SandboxOutcome::Rejected, "")
        });
        assert!(!verdict.verified);
        assert_eq!(verdict.value, 0.0);
        assert_eq!(
            components(&verdict),
            [("applied", 0.0), ("gold_match", 1.0)]
        );
    }
}
