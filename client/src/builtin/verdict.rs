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
//! `value` combines the components as the reward settings say ([`RewardSettings`], the daemon's
//! `[rewards]`; docs/astgrep_verify.md, "The reward"), and is 0 whenever the run `timed_out`,
//! was `killed_oom` or `rejected`:
//!
//! - `combine = all` (the default): the product of the components, so a binary reward unless
//!   `tests` scores a `fraction`;
//! - `combine = weighted`: 0 when a gate (`applied`, `tamper`) is 0; else the weighted mean
//!   `Σ w·c / Σ w` of the scored components present (`tests`, `gold_match`, `post_match`) whose
//!   weight is above 0, and 1 when there is none (the gates passed and nothing else applies).
//!
//! `verified` is true when the outcome is `ok` and every component is 1, whatever the settings.
//! Every failed check says why in `reasons`.

use agentd_schemas::events::SandboxOutcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use agentd_schemas::events::{RewardCombine, RewardSettings, RewardWeights, TestsReward};

/// The components that gate a weighted reward: any of them at 0 makes the value 0.
pub const GATE_COMPONENTS: [&str; 2] = ["applied", "tamper"];
/// The components a weighted reward averages, each with its weight in [`RewardWeights`].
pub const SCORED_COMPONENTS: [&str; 3] = ["tests", "gold_match", "post_match"];

/// Reward settings whose weights were checked (finite, at least 0, with a finite sum), so
/// that a weighted mean is a number in [0, 1]. Made only by [`CheckedRewardSettings::new`]
/// (or `default`), at the places settings enter: the daemon's answer, `agentctl verify
/// --rewards`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct CheckedRewardSettings(RewardSettings);

/// Why reward settings cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid reward settings: {0}")]
pub struct InvalidRewardSettings(pub String);

impl CheckedRewardSettings {
    /// Checks the weights: each finite and at least 0, and their sum finite (a sum that
    /// overflows would make every weighted value NaN).
    pub fn new(settings: RewardSettings) -> Result<CheckedRewardSettings, InvalidRewardSettings> {
        let weights = &settings.weights;
        for (name, weight) in [
            ("tests", weights.tests),
            ("gold_match", weights.gold_match),
            ("post_match", weights.post_match),
        ] {
            if !weight.is_finite() || weight < 0.0 {
                return Err(InvalidRewardSettings(format!(
                    "weights.{name} is {weight}; a weight must be a finite number, at least 0"
                )));
            }
        }
        if !(weights.tests + weights.gold_match + weights.post_match).is_finite() {
            return Err(InvalidRewardSettings(
                "the weights are too large: their sum is not a finite number".into(),
            ));
        }
        Ok(CheckedRewardSettings(settings))
    }

    pub fn settings(&self) -> &RewardSettings {
        &self.0
    }

    fn weight(&self, component: &str) -> f64 {
        let weights = &self.0.weights;
        match component {
            "tests" => weights.tests,
            "gold_match" => weights.gold_match,
            "post_match" => weights.post_match,
            // Only the scored components are weighted (SCORED_COMPONENTS).
            _ => 0.0,
        }
    }
}

impl Default for CheckedRewardSettings {
    /// `combine = all`, `tests = all`, every weight 1: valid by construction.
    fn default() -> Self {
        CheckedRewardSettings(RewardSettings::default())
    }
}

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
    /// How `tests` scores, as the payload says (`tests_reward`); `None`: as the reward
    /// settings say (`tests`).
    pub tests_reward: Option<TestsReward>,
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
    /// The settings `value` was computed with; `tests` is the one that applied (the payload's
    /// `tests_reward`, else the settings').
    pub rewards: RewardSettings,
}

/// Judges one run under `rewards`; see the module doc for the rules.
pub fn judge(evidence: &Evidence<'_>, rewards: &CheckedRewardSettings) -> Verdict {
    let tests_reward = evidence.tests_reward.unwrap_or(rewards.settings().tests);
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
        let score = tests_score(tests, tests_reward);
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
        combine(&components, rewards)
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
        rewards: RewardSettings {
            tests: tests_reward,
            ..rewards.settings().clone()
        },
    }
}

/// The value of a run whose outcome counts, from its components.
fn combine(components: &BTreeMap<String, f64>, rewards: &CheckedRewardSettings) -> f64 {
    match rewards.settings().combine {
        RewardCombine::All => components.values().product(),
        RewardCombine::Weighted => {
            let gates_passed = GATE_COMPONENTS
                .iter()
                .all(|gate| components.get(*gate).is_none_or(|score| *score == 1.0));
            if !gates_passed {
                return 0.0;
            }
            let (weighted_sum, weight_sum) = SCORED_COMPONENTS
                .iter()
                .filter_map(|name| {
                    let weight = rewards.weight(name);
                    let score = components.get(*name)?;
                    (weight > 0.0).then_some((weight * score, weight))
                })
                .fold((0.0, 0.0), |(sum, weights), (weighted, weight)| {
                    (sum + weighted, weights + weight)
                });
            if weight_sum > 0.0 {
                weighted_sum / weight_sum
            } else {
                // The gates passed and no scored check applies (or all weigh 0).
                1.0
            }
        }
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
            tests_reward: None,
            gold_diff: None,
            post: None,
        }
    }

    /// The verdict under the default settings (`combine = all`, `tests = all`).
    fn judge_default(evidence: &Evidence<'_>) -> Verdict {
        judge(evidence, &CheckedRewardSettings::default())
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
        let verdict = judge_default(&evidence(SandboxOutcome::Ok, DIFF));
        assert!(verdict.verified);
        assert_eq!(verdict.value, 1.0);
        assert_eq!(components(&verdict), [("applied", 1.0)]);
        assert_eq!(verdict.gold_match, None);
        assert!(verdict.reasons.is_empty());
    }

    #[test]
    fn an_action_that_changes_nothing_is_not_verified() {
        let verdict = judge_default(&evidence(SandboxOutcome::Ok, ""));
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
        let verdict = judge_default(&all);
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
        let wrong_gold = judge_default(&Evidence {
            gold_diff: Some("--- other\n"),
            ..all.clone()
        });
        assert!(!wrong_gold.verified);
        assert_eq!(wrong_gold.gold_match, Some(false));
        assert_eq!(wrong_gold.value, 0.0);
        let post_differs = Err("app.py differs".to_string());
        let wrong_post = judge_default(&Evidence {
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
        let failing_tests = judge_default(&Evidence {
            outcome: SandboxOutcome::Failed,
            tests: Some(&failing),
            ..all.clone()
        });
        assert!(!failing_tests.verified);
        assert_eq!(failing_tests.components["tests"], 0.0);
        assert_eq!(failing_tests.reasons["tests"], "1 of 3 tests passed");
        let timed_out = judge_default(&Evidence {
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
        let verdict = judge_default(&Evidence {
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
            tests_reward: Some(TestsReward::Fraction),
            ..evidence(SandboxOutcome::Failed, DIFF)
        };
        let verdict = judge_default(&partial);
        assert_eq!((verdict.value, verdict.verified), (0.5, false));
        assert_eq!(verdict.components["tests"], 0.5);
        let changed = ["test_app.py".to_string()];
        let tampered = judge_default(&Evidence {
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
        let verdict = judge_default(&Evidence {
            tests: Some(&no_report),
            ..partial
        });
        assert_eq!(verdict.value, 0.0);
    }

    #[test]
    fn a_rejected_action_gets_nothing() {
        let verdict = judge_default(&Evidence {
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

    /// One run of the worked examples in docs/astgrep_verify.md ("The reward"): a task with
    /// four tests in `test_app.py`, a gold action and `post`.
    struct Example {
        outcome: SandboxOutcome,
        diff: &'static str,
        changed_tests: bool,
        tests_passed: u32,
        gold_match: bool,
        post_match: bool,
    }

    const FIXED: Example = Example {
        outcome: SandboxOutcome::Ok,
        diff: DIFF,
        changed_tests: false,
        tests_passed: 4,
        gold_match: true,
        post_match: true,
    };

    fn judge_example(
        example: &Example,
        tests_reward: Option<TestsReward>,
        rewards: &CheckedRewardSettings,
    ) -> Verdict {
        let tests = TestsEvidence {
            passed: example.tests_passed,
            expected: 4,
            all_passed: example.tests_passed == 4,
            reason: (example.tests_passed < 4)
                .then(|| format!("{} of 4 tests passed", example.tests_passed)),
        };
        let changed = ["test_app.py".to_string()];
        let post = if example.post_match {
            Ok(())
        } else {
            Err("app.py differs".to_string())
        };
        judge(
            &Evidence {
                outcome: example.outcome,
                diff: example.diff,
                has_test_files: true,
                protected_changed: if example.changed_tests { &changed } else { &[] },
                tests: Some(&tests),
                tests_reward,
                gold_diff: Some(if example.gold_match {
                    example.diff
                } else {
                    "other"
                }),
                post: Some(&post),
            },
            rewards,
        )
    }

    fn weighted(tests: TestsReward, weights: [f64; 3]) -> CheckedRewardSettings {
        CheckedRewardSettings::new(RewardSettings {
            combine: RewardCombine::Weighted,
            tests,
            weights: RewardWeights {
                tests: weights[0],
                gold_match: weights[1],
                post_match: weights[2],
            },
        })
        .unwrap()
    }

    /// Every component of an [`Example`], in the order of the table's columns.
    const COMPONENT_NAMES: [&str; 5] = ["applied", "tamper", "tests", "gold_match", "post_match"];

    /// A fix of `add` other than the gold action's (`b + a`), so neither the gold diff nor
    /// `post` match.
    const FIXED_OTHERWISE: Example = Example {
        gold_match: false,
        post_match: false,
        ..FIXED
    };

    /// A fix of three of the four cases.
    const THREE_OF_FOUR: Example = Example {
        outcome: SandboxOutcome::Failed,
        tests_passed: 3,
        gold_match: false,
        post_match: false,
        ..FIXED
    };

    /// The table of docs/astgrep_verify.md ("The reward"): the same runs under `combine = all`
    /// and under `combine = weighted` with `tests = fraction` and weights tests 2,
    /// gold_match 1, post_match 1.
    #[test]
    fn weighted_rewards_give_partial_credit_as_documented() {
        let all = CheckedRewardSettings::default();
        let weighted_2_1_1 = weighted(TestsReward::Fraction, [2.0, 1.0, 1.0]);
        let two_of_four = Example {
            tests_passed: 2,
            ..THREE_OF_FOUR
        };
        let tampered = Example {
            changed_tests: true,
            ..FIXED_OTHERWISE
        };
        let matched_nothing = Example {
            diff: "",
            outcome: SandboxOutcome::Failed,
            tests_passed: 0,
            post_match: false,
            ..FIXED
        };
        let timed_out = Example {
            outcome: SandboxOutcome::TimedOut,
            tests_passed: 0,
            ..FIXED_OTHERWISE
        };
        // (run, its components, value under all, value under weighted 2/1/1)
        let table: [(&Example, [f64; 5], f64, f64); 7] = [
            // applied, tamper, tests, gold_match, post_match
            (&FIXED, [1.0, 1.0, 1.0, 1.0, 1.0], 1.0, 1.0),
            // (2·1 + 1·0 + 1·0) / 4
            (&FIXED_OTHERWISE, [1.0, 1.0, 1.0, 0.0, 0.0], 0.0, 0.5),
            // (2·0.75 + 0 + 0) / 4
            (&THREE_OF_FOUR, [1.0, 1.0, 0.75, 0.0, 0.0], 0.0, 0.375),
            // (2·0.5 + 0 + 0) / 4
            (&two_of_four, [1.0, 1.0, 0.5, 0.0, 0.0], 0.0, 0.25),
            // a gate at 0
            (&tampered, [1.0, 0.0, 1.0, 0.0, 0.0], 0.0, 0.0),
            (&matched_nothing, [0.0, 1.0, 0.0, 1.0, 0.0], 0.0, 0.0),
            // the outcome does not count
            (&timed_out, [1.0, 1.0, 0.0, 0.0, 0.0], 0.0, 0.0),
        ];
        for (index, (example, scores, all_value, weighted_value)) in table.into_iter().enumerate() {
            let under_all = judge_example(example, None, &all);
            let under_weighted = judge_example(example, None, &weighted_2_1_1);
            let expected: BTreeMap<String, f64> = COMPONENT_NAMES
                .iter()
                .map(|name| name.to_string())
                .zip(scores)
                .collect();
            assert_eq!(under_weighted.components, expected, "row {index}");
            assert_eq!(
                (under_all.value, under_weighted.value),
                (all_value, weighted_value),
                "row {index}: {under_weighted:#?}"
            );
            // The settings change the value, never what counts as verified.
            assert_eq!(under_all.verified, under_weighted.verified, "row {index}");
            assert_eq!(under_weighted.verified, index == 0, "row {index}");
        }
    }

    #[test]
    fn the_payloads_tests_reward_overrides_the_settings() {
        let weighted_2_1_1 = weighted(TestsReward::Fraction, [2.0, 1.0, 1.0]);
        // tests 0 (not every test passed): (2·0 + 1·0 + 1·0) / 4.
        let verdict = judge_example(&THREE_OF_FOUR, Some(TestsReward::All), &weighted_2_1_1);
        assert_eq!(verdict.value, 0.0);
        assert_eq!(verdict.components["tests"], 0.0);
        assert_eq!(verdict.rewards.tests, TestsReward::All);
        assert_eq!(verdict.rewards.combine, RewardCombine::Weighted);
        // Without the payload's word, the settings' fraction applies.
        let verdict = judge_example(&THREE_OF_FOUR, None, &weighted_2_1_1);
        assert_eq!(
            (verdict.value, verdict.rewards.tests),
            (0.375, TestsReward::Fraction)
        );
        // And a payload's fraction applies under settings that say all.
        let weighted_all_tests = weighted(TestsReward::All, [2.0, 1.0, 1.0]);
        let verdict = judge_example(&THREE_OF_FOUR, None, &weighted_all_tests);
        assert_eq!(verdict.value, 0.0);
        let verdict = judge_example(
            &THREE_OF_FOUR,
            Some(TestsReward::Fraction),
            &weighted_all_tests,
        );
        assert_eq!(verdict.value, 0.375);
        assert_eq!(verdict.rewards.tests, TestsReward::Fraction);
    }

    #[test]
    fn a_weight_of_zero_leaves_its_check_out_of_the_mean() {
        // gold_match weighs 0: (2·0.75 + 1·0) / 3.
        let verdict = judge_example(
            &THREE_OF_FOUR,
            None,
            &weighted(TestsReward::Fraction, [2.0, 0.0, 1.0]),
        );
        assert_eq!(verdict.value, 0.5);
        // The check is still reported, and still keeps the run from being verified.
        assert_eq!(verdict.components["gold_match"], 0.0);
        assert!(verdict.reasons.contains_key("gold_match"));
        // Every scored check weighs 0: the gates passed, so 1; but not verified.
        let verdict = judge_example(
            &THREE_OF_FOUR,
            None,
            &weighted(TestsReward::Fraction, [0.0, 0.0, 0.0]),
        );
        assert_eq!((verdict.value, verdict.verified), (1.0, false));
    }

    #[test]
    fn weighted_without_scored_checks_is_the_gates() {
        let settings = weighted(TestsReward::All, [1.0, 1.0, 1.0]);
        let verdict = judge(&evidence(SandboxOutcome::Ok, DIFF), &settings);
        assert_eq!((verdict.value, verdict.verified), (1.0, true));
        let verdict = judge(&evidence(SandboxOutcome::Ok, ""), &settings);
        assert_eq!((verdict.value, verdict.verified), (0.0, false));
        let verdict = judge(&evidence(SandboxOutcome::Rejected, DIFF), &settings);
        assert_eq!(verdict.value, 0.0);
    }

    #[test]
    fn weights_must_be_finite_and_not_negative() {
        let with = |weights: [f64; 3]| {
            CheckedRewardSettings::new(RewardSettings {
                combine: RewardCombine::Weighted,
                tests: TestsReward::All,
                weights: RewardWeights {
                    tests: weights[0],
                    gold_match: weights[1],
                    post_match: weights[2],
                },
            })
        };
        assert!(with([0.0, 0.5, 1e9]).is_ok());
        for (weights, expected) in [
            ([-1.0, 1.0, 1.0], "weights.tests is -1"),
            ([1.0, f64::NAN, 1.0], "weights.gold_match is NaN"),
            ([1.0, 1.0, f64::INFINITY], "weights.post_match is inf"),
            (
                [f64::MAX, f64::MAX, 1.0],
                "their sum is not a finite number",
            ),
        ] {
            let error = with(weights).unwrap_err().to_string();
            assert!(error.contains(expected), "{weights:?}: {error}");
        }
    }
}
