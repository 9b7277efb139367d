use super::*;
use crate::domain::tokens::{TokenCounter, DEFAULT_ENCODING};
use agentd_schemas::events::AgentStateLists;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn counter() -> Arc<TokenCounter> {
    TokenCounter::for_encoding(DEFAULT_ENCODING).unwrap()
}

fn limits(history_max: u32, item_chars_max: u32, token_budget: u32) -> StateLimits {
    StateLimits {
        history_max,
        item_chars_max,
        token_budget,
        encoding: DEFAULT_ENCODING.to_owned(),
    }
}

/// Limits that never trim, so a test sees only the rule it is about.
fn roomy() -> StateLimits {
    limits(1000, 1000, 1_000_000)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// One case of `testdata/merge_cases.json` or `testdata/forget_cases.json`; limits default to
/// [`roomy`], `forget` to nothing.
#[derive(Deserialize)]
struct MergeCase {
    name: String,
    #[serde(default)]
    limits: Value,
    state: AgentState,
    #[serde(default)]
    forget: StateForget,
    update: AgentState,
    expect_state: AgentState,
    expect_trimmed: Value,
}

fn case_limits(overrides: &Value) -> StateLimits {
    let mut limits = serde_json::to_value(roomy()).unwrap();
    if let Value::Object(fields) = overrides {
        for (key, value) in fields {
            limits[key] = value.clone();
        }
    }
    serde_json::from_value(limits).unwrap()
}

/// Whether re-applying an update may report trims again: an update longer than `history_max`
/// overflows every time, and budget trimming forgets what it dropped. Caps and forgetting do not
/// repeat: what they leave behind is already capped, or already gone.
fn trims_again(trimmed: &[Trimmed]) -> bool {
    trimmed
        .iter()
        .any(|t| matches!(t.reason, TrimReason::HistoryCap | TrimReason::TokenBudget))
}

/// Runs every case of a fixture and checks the invariants every merge must keep: the reported
/// token count is exact, `merge` is `merge_update` without a forget, and re-applying the update
/// (forget and additions) changes nothing and reports nothing unless the case overflowed the
/// history or the budget.
fn check_cases(fixture: &str) {
    let cases: Vec<MergeCase> = serde_json::from_str(fixture).unwrap();
    let counter = counter();
    let mut failures = Vec::new();
    for case in &cases {
        let limits = case_limits(&case.limits);
        let outcome = merge_update(&case.state, &case.update, &case.forget, &limits, &counter);
        let trimmed = serde_json::to_value(&outcome.trimmed).unwrap();
        if outcome.state != case.expect_state || trimmed != case.expect_trimmed {
            failures.push(format!(
                "{}:\n  state:   {}\n  trimmed: {}",
                case.name,
                serde_json::to_string(&outcome.state).unwrap(),
                trimmed
            ));
            continue;
        }
        assert_eq!(
            outcome.tokens,
            counter.count(&render(&outcome.state)),
            "{}",
            case.name
        );
        if case.forget.is_empty() {
            assert_eq!(
                merge(&case.state, &case.update, &limits, &counter),
                outcome,
                "{}",
                case.name
            );
        }
        let again = merge_update(
            &outcome.state,
            &case.update,
            &case.forget,
            &limits,
            &counter,
        );
        assert_eq!(
            again.state, outcome.state,
            "{}: re-applying changed the state",
            case.name
        );
        if !trims_again(&outcome.trimmed) {
            assert_eq!(
                again.trimmed,
                [],
                "{}: re-applying reported trims",
                case.name
            );
        }
    }
    assert!(
        failures.is_empty(),
        "cases that differ (actual shown):\n{}",
        failures.join("\n")
    );
}

#[test]
fn merge_cases() {
    check_cases(include_str!("../testdata/merge_cases.json"));
}

#[test]
fn forget_cases() {
    check_cases(include_str!("../testdata/forget_cases.json"));
}

#[test]
fn the_forget_table_has_one_row_per_operation() {
    use StateField::*;
    let rows: Vec<(StateField, Option<StateField>, TrimReason, TrimAction)> = FORGET_RULES
        .iter()
        .map(|rule| (rule.from, rule.to, rule.reason, rule.action()))
        .collect();
    let forgotten = |field| (field, None, TrimReason::Forgotten, TrimAction::Removed);
    assert_eq!(
        rows,
        [
            (
                OpenIssues,
                Some(Decisions),
                TrimReason::Resolved,
                TrimAction::Moved
            ),
            (Hypotheses, None, TrimReason::Retracted, TrimAction::Removed),
            forgotten(Goals),
            forgotten(Constraints),
            forgotten(Decisions),
            forgotten(Hypotheses),
            forgotten(History),
            forgotten(OpenIssues),
            (NextFocus, None, TrimReason::Cleared, TrimAction::Removed),
        ]
    );
    // Each `remove.<field>` row reads its own field's names, and every list field has one.
    let forget = StateForget {
        remove: AgentStateLists {
            goals: strings(&["goals"]),
            constraints: strings(&["constraints"]),
            decisions: strings(&["decisions"]),
            hypotheses: strings(&["hypotheses"]),
            history: strings(&["history"]),
            open_issues: strings(&["open_issues"]),
        },
        resolve: strings(&["resolve"]),
        retract: strings(&["retract"]),
        clear_next_focus: true,
    };
    let named: Vec<String> = FORGET_RULES
        .iter()
        .map(|rule| match rule.names {
            ForgetNames::Listed(listed) => listed(&forget).join(","),
            ForgetNames::Everything(flag) => flag(&forget).to_string(),
        })
        .collect();
    assert_eq!(
        named,
        [
            "resolve",
            "retract",
            "goals",
            "constraints",
            "decisions",
            "hypotheses",
            "history",
            "open_issues",
            "true"
        ]
    );
}

#[test]
fn forget_reports_serialize_with_their_wire_names() {
    let state = AgentState {
        open_issues: strings(&["flaky CI"]),
        ..AgentState::default()
    };
    let forget = StateForget {
        resolve: strings(&["flaky CI"]),
        ..StateForget::default()
    };
    let outcome = merge_update(
        &state,
        &AgentState::default(),
        &forget,
        &roomy(),
        &counter(),
    );
    assert_eq!(
        serde_json::to_value(&outcome.trimmed).unwrap(),
        json!([{ "field": "open_issues", "item": "flaky CI", "reason": "resolved", "action": "moved", "chars_before": 8 }])
    );
    assert_eq!(render(&outcome.state), "## Decisions\n- flaky CI\n");
}

#[test]
fn forgetting_then_running_into_the_budget_reports_both_in_order() {
    let counter = counter();
    let state = crowded_state();
    let forget = StateForget {
        retract: vec![state.hypotheses[2].clone()],
        ..StateForget::default()
    };
    // Without the retracted hypothesis and without the oldest history entry.
    let mut target = state.clone();
    let retracted = target.hypotheses.remove(2);
    let dropped = target.history.remove(0);
    let budget = counter.count(&render(&target));
    let outcome = merge_update(
        &state,
        &AgentState::default(),
        &forget,
        &limits(10, 1000, budget as u32),
        &counter,
    );
    assert_eq!(outcome.state, target);
    let reports: Vec<(StateField, &str, TrimReason)> = outcome
        .trimmed
        .iter()
        .map(|t| (t.field, t.item.as_str(), t.reason))
        .collect();
    assert_eq!(
        reports,
        [
            (
                StateField::Hypotheses,
                retracted.as_str(),
                TrimReason::Retracted
            ),
            (
                StateField::History,
                dropped.as_str(),
                TrimReason::TokenBudget
            ),
        ]
    );
}

/// Texts for generated states: whitespace variants of one item, items that the smaller caps make
/// equal, and blanks, so forgetting meets every normalization case.
const VOCABULARY: [&str; 9] = [
    "a",
    " a ",
    "b",
    "ship it",
    "ship it\n",
    "long item number one",
    "long item number two",
    "",
    "  ",
];

fn texts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        proptest::sample::select(&VOCABULARY[..]).prop_map(str::to_owned),
        0..5,
    )
}

fn focus() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(proptest::sample::select(&VOCABULARY[..]).prop_map(str::to_owned))
}

fn agent_states() -> impl Strategy<Value = AgentState> {
    (
        texts(),
        texts(),
        texts(),
        texts(),
        texts(),
        texts(),
        focus(),
    )
        .prop_map(
            |(goals, constraints, decisions, hypotheses, history, open_issues, next_focus)| {
                AgentState {
                    goals,
                    constraints,
                    decisions,
                    hypotheses,
                    history,
                    open_issues,
                    next_focus,
                }
            },
        )
}

fn forgets() -> impl Strategy<Value = StateForget> {
    (
        (texts(), texts(), texts(), texts(), texts(), texts()),
        texts(),
        texts(),
        any::<bool>(),
    )
        .prop_map(
            |(
                (goals, constraints, decisions, hypotheses, history, open_issues),
                resolve,
                retract,
                clear_next_focus,
            )| StateForget {
                remove: AgentStateLists {
                    goals,
                    constraints,
                    decisions,
                    hypotheses,
                    history,
                    open_issues,
                },
                resolve,
                retract,
                clear_next_focus,
            },
        )
}

/// `text` as the merge stores it under `limits`, if anything is left.
fn stored(text: &str, limits: &StateLimits) -> Option<String> {
    normalize(text, (limits.item_chars_max as usize).max(1)).map(|item| item.text)
}

/// `PROPTEST_RNG_SEED` when set (proptest reads it), else a fixed seed.
fn fixed_seed_unless_set() -> RngSeed {
    match ProptestConfig::default().rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x6167_656e_7464),
        chosen => chosen,
    }
}

proptest! {
    // Failures are shrunk and printed; nothing is written next to the sources. A fixed seed, so
    // every run draws the same cases (`PROPTEST_RNG_SEED=<n>` draws others).
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        rng_seed: fixed_seed_unless_set(),
        ..ProptestConfig::default()
    })]

    /// For any state, update and forget within the budget: the merge is deterministic, re-applying
    /// the whole update changes nothing (and reports nothing unless the history overflowed), what
    /// was taken out is gone from its field, and what was resolved is a decision.
    #[test]
    fn forgetting_is_deterministic_and_idempotent(
        state in agent_states(),
        update in agent_states(),
        forget in forgets(),
        history_max in 0u32..6,
        item_chars_max in 1u32..12,
    ) {
        let counter = counter();
        let limits = limits(history_max, item_chars_max, 1_000_000);
        let first = merge_update(&state, &update, &forget, &limits, &counter);
        prop_assert_eq!(&merge_update(&state, &update, &forget, &limits, &counter), &first);
        prop_assert_eq!(first.tokens, counter.count(&render(&first.state)));

        let again = merge_update(&first.state, &update, &forget, &limits, &counter);
        prop_assert_eq!(&again.state, &first.state);
        if !trims_again(&first.trimmed) {
            prop_assert_eq!(&again.trimmed, &[]);
        }

        for (position, report) in first.trimmed.iter().enumerate() {
            let Some(key) = stored(&report.item, &limits) else {
                return Err(TestCaseError::fail(format!("a blank item was reported: {report:?}")));
            };
            match report.reason {
                TrimReason::Forgotten | TrimReason::Retracted | TrimReason::Cleared => {
                    prop_assert_eq!(report.action, TrimAction::Removed);
                    prop_assert!(
                        !field_items(&first.state, report.field).contains(&key),
                        "{:?} is still there", report
                    );
                }
                TrimReason::Resolved => {
                    prop_assert_eq!(report.action, TrimAction::Moved);
                    prop_assert_eq!(report.field, StateField::OpenIssues);
                    prop_assert!(!first.state.open_issues.contains(&key));
                    let removed_later = first.trimmed[position..].iter().any(|later| {
                        later.field == StateField::Decisions
                            && stored(&later.item, &limits).as_ref() == Some(&key)
                    });
                    prop_assert!(removed_later || first.state.decisions.contains(&key));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn render_is_a_stable_markdown_block() {
    let state = AgentState {
        goals: strings(&["make `parse` total"]),
        constraints: strings(&["no new dependencies"]),
        decisions: strings(&["rewrite with ast-grep"]),
        hypotheses: strings(&["the lexer drops CR"]),
        history: strings(&["ran tests: 2 failing", "edited lexer.rs\nand parser.rs"]),
        open_issues: strings(&["flaky CI"]),
        next_focus: Some("rerun the tests".to_owned()),
    };
    let expected = "\
## Goals
- make `parse` total

## Constraints
- no new dependencies

## Decisions
- rewrite with ast-grep

## Hypotheses
- the lexer drops CR

## History
- ran tests: 2 failing
- edited lexer.rs
  and parser.rs

## Open issues
- flaky CI

## Next focus
rerun the tests
";
    assert_eq!(render(&state), expected);
}

#[test]
fn render_omits_empty_sections() {
    assert_eq!(render(&AgentState::default()), "");
    let state = AgentState {
        open_issues: strings(&["x"]),
        ..AgentState::default()
    };
    assert_eq!(render(&state), "## Open issues\n- x\n");
}

#[test]
fn drop_order_takes_history_then_the_longest_list_with_fixed_ties() {
    let state = AgentState {
        goals: strings(&["g1"]),
        constraints: strings(&["c1", "c2", "c3"]),
        decisions: strings(&["d1", "d2"]),
        hypotheses: strings(&["h1", "h2", "h3"]),
        history: strings(&["s1", "s2"]),
        open_issues: Vec::new(),
        next_focus: Some("f".to_owned()),
    };
    use StateField::*;
    assert_eq!(
        drop_order(&state),
        [
            History,
            History,
            Hypotheses,
            Constraints,
            Hypotheses,
            Decisions,
            Constraints,
            Hypotheses,
            Decisions,
            Constraints,
            Goals
        ]
    );
}

/// A state whose every item is distinct and several tokens long, so each drop lowers the count.
fn crowded_state() -> AgentState {
    let items = |prefix: &str, n: usize| -> Vec<String> {
        (1..=n)
            .map(|i| format!("{prefix} number {i} with a few more words"))
            .collect()
    };
    AgentState {
        goals: items("goal", 1),
        constraints: items("constraint", 3),
        decisions: items("decision", 2),
        hypotheses: items("hypothesis", 3),
        history: items("step", 2),
        open_issues: Vec::new(),
        next_focus: Some("look at the parser next".to_owned()),
    }
}

#[test]
fn budget_drops_oldest_history_first() {
    let counter = counter();
    let state = crowded_state();
    let mut target = state.clone();
    let dropped = target.history.remove(0);
    let budget = counter.count(&render(&target));
    let outcome = merge(
        &state,
        &AgentState::default(),
        &limits(10, 1000, budget as u32),
        &counter,
    );
    assert_eq!(outcome.state, target);
    assert_eq!(outcome.tokens, budget);
    assert_eq!(
        serde_json::to_value(&outcome.trimmed).unwrap(),
        json!([{ "field": "history", "item": dropped, "reason": "token_budget", "action": "removed", "chars_before": dropped.chars().count() }])
    );
}

#[test]
fn budget_then_drops_the_oldest_item_of_the_longest_list() {
    let counter = counter();
    let state = crowded_state();
    // All history, then hypotheses (tied longest with constraints, first in the tie order), then
    // constraints (now the only list of three).
    let mut target = state.clone();
    target.history.clear();
    let first = target.hypotheses.remove(0);
    let second = target.constraints.remove(0);
    let budget = counter.count(&render(&target));
    let outcome = merge(
        &state,
        &AgentState::default(),
        &limits(10, 1000, budget as u32),
        &counter,
    );
    assert_eq!(outcome.state, target);
    let removed: Vec<(StateField, &str)> = outcome
        .trimmed
        .iter()
        .map(|t| (t.field, t.item.as_str()))
        .collect();
    assert_eq!(
        removed,
        [
            (StateField::History, state.history[0].as_str()),
            (StateField::History, state.history[1].as_str()),
            (StateField::Hypotheses, first.as_str()),
            (StateField::Constraints, second.as_str()),
        ]
    );
    assert!(outcome
        .trimmed
        .iter()
        .all(|t| t.reason == TrimReason::TokenBudget && t.action == TrimAction::Removed));
}

#[test]
fn budget_shortens_next_focus_last() {
    let counter = counter();
    let focus =
        "read every failing test, then bisect the lexer change that broke CRLF handling".to_owned();
    let state = AgentState {
        goals: strings(&["fix the lexer"]),
        next_focus: Some(focus.clone()),
        ..AgentState::default()
    };
    let budget = 12;
    let outcome = merge(
        &state,
        &AgentState::default(),
        &limits(10, 1000, budget),
        &counter,
    );
    assert!(outcome.state.goals.is_empty());
    let kept = outcome.state.next_focus.clone().unwrap();
    assert!(kept.ends_with(ELLIPSIS) && focus.starts_with(kept.trim_end_matches(ELLIPSIS)));
    assert!(outcome.tokens <= budget as usize);
    assert_eq!(outcome.tokens, counter.count(&render(&outcome.state)));
    // The longest prefix that fits: one more character would not.
    let longer = AgentState {
        next_focus: Some(shorten(&focus, kept.chars().count() + 1)),
        ..AgentState::default()
    };
    assert!(counter.count(&render(&longer)) > budget as usize);
    let last = outcome.trimmed.last().unwrap();
    assert_eq!(
        (last.field, last.action, last.reason),
        (
            StateField::NextFocus,
            TrimAction::Shortened,
            TrimReason::TokenBudget
        )
    );
    assert_eq!(last.chars_before, focus.chars().count());
}

#[test]
fn a_zero_budget_leaves_an_empty_state() {
    let counter = counter();
    let outcome = merge(
        &crowded_state(),
        &AgentState::default(),
        &limits(10, 1000, 0),
        &counter,
    );
    assert_eq!(outcome.state, AgentState::default());
    assert_eq!(outcome.tokens, 0);
    let last = outcome.trimmed.last().unwrap();
    assert_eq!(
        (last.field, last.action),
        (StateField::NextFocus, TrimAction::Removed)
    );
    // 2 history + 9 list items + the focus.
    assert_eq!(outcome.trimmed.len(), 12);
}

#[test]
fn budget_trimming_is_deterministic_and_stays_within_budget_on_reapply() {
    let counter = counter();
    let update = AgentState {
        hypotheses: (0..40)
            .map(|i| format!("hypothesis {i}: the bug is in module {i}"))
            .collect(),
        history: (0..5).map(|i| format!("step {i}")).collect(),
        ..AgentState::default()
    };
    let limits = limits(3, 256, 150);
    let first = merge(&AgentState::default(), &update, &limits, &counter);
    assert_eq!(
        first,
        merge(&AgentState::default(), &update, &limits, &counter)
    );
    assert!(first.tokens <= 150);
    let again = merge(&first.state, &update, &limits, &counter);
    assert!(again.tokens <= 150);
    assert_eq!(again.tokens, counter.count(&render(&again.state)));
}

#[test]
fn long_states_trim_with_few_token_counts() {
    // Ten thousand items: a linear scan would count tokens ten thousand times.
    let counter = counter();
    let update = AgentState {
        goals: (0..10_000).map(|i| format!("goal {i}")).collect(),
        ..AgentState::default()
    };
    let outcome = merge(
        &AgentState::default(),
        &update,
        &limits(3, 256, 100),
        &counter,
    );
    assert!(outcome.tokens <= 100);
    assert_eq!(
        outcome.state.goals.last().map(String::as_str),
        Some("goal 9999")
    );
    assert_eq!(outcome.trimmed.len(), 10_000 - outcome.state.goals.len());
}

#[test]
fn long_history_updates_merge_in_linear_time() {
    // A hundred thousand entries with repeats; a quadratic dedupe would take minutes.
    let counter = counter();
    let update = AgentState {
        history: (0..100_000)
            .map(|i| format!("step {}", i % 50_000))
            .collect(),
        ..AgentState::default()
    };
    let outcome = merge(
        &AgentState::default(),
        &update,
        &limits(3, 256, 1_000_000),
        &counter,
    );
    assert_eq!(
        outcome.state.history,
        strings(&["step 49997", "step 49998", "step 49999"])
    );
    assert_eq!(outcome.trimmed.len(), 50_000 - 3);
}

#[test]
#[should_panic(expected = "encoding recorded in its limits")]
fn counting_with_another_encoding_is_a_bug() {
    let cl100k = TokenCounter::for_encoding("cl100k_base").unwrap();
    merge(
        &AgentState::default(),
        &AgentState::default(),
        &roomy(),
        &cl100k,
    );
}
