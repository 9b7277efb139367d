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
mod tests;
