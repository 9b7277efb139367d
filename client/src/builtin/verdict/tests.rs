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
