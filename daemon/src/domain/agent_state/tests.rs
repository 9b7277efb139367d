use super::*;
use crate::domain::tokens::{TokenCounter, DEFAULT_ENCODING};
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

/// One case of `testdata/merge_cases.json`; limits default to [`roomy`].
#[derive(Deserialize)]
struct MergeCase {
    name: String,
    #[serde(default)]
    limits: Value,
    state: AgentState,
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

/// Runs every fixture case and checks the invariants every merge must keep: the reported token
/// count is exact, and re-applying the update changes nothing and reports nothing unless the
/// case overflowed the history or the budget.
#[test]
fn merge_cases() {
    let cases: Vec<MergeCase> =
        serde_json::from_str(include_str!("../testdata/merge_cases.json")).unwrap();
    let counter = counter();
    let mut failures = Vec::new();
    for case in &cases {
        let limits = case_limits(&case.limits);
        let outcome = merge(&case.state, &case.update, &limits, &counter);
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
        let again = merge(&outcome.state, &case.update, &limits, &counter);
        assert_eq!(
            again.state, outcome.state,
            "{}: re-applying changed the state",
            case.name
        );
        let overflowed = outcome
            .trimmed
            .iter()
            .any(|t| t.reason != TrimReason::ItemCharsCap);
        if !overflowed {
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
