//! Rule 6 of the merge: dropping items, oldest first in a fixed order, until the rendered state
//! fits the token budget.

use super::RENDER_ORDER;
use super::{
    list, list_mut, removed, render, shorten, StateField, TrimAction, TrimReason, Trimmed,
};
use crate::domain::tokens::TokenCounter;
use agentd_schemas::events::AgentState;

/// Which list loses an item first when lists are equally long (rule 6).
const BUDGET_TIE_ORDER: [StateField; 5] = [
    StateField::Hypotheses,
    StateField::Decisions,
    StateField::OpenIssues,
    StateField::Constraints,
    StateField::Goals,
];

/// Rule 6. Returns the state that fits and its token count.
pub(super) fn fit_budget(
    state: AgentState,
    token_budget: usize,
    tokens: &TokenCounter,
    trimmed: &mut Vec<Trimmed>,
) -> (AgentState, usize) {
    let count = |candidate: &AgentState| tokens.count(&render(candidate));
    let fits = |candidate: &AgentState| count(candidate) <= token_budget;
    let whole = count(&state);
    if whole <= token_budget {
        return (state, whole);
    }
    let order = drop_order(&state);
    // The smallest prefix of the drop order after which the state fits, by bisection: each probe
    // renders and counts once, so a long state costs a few dozen counts, not one per item.
    // Dropping lines only shortens the text; the answer is deterministic and fits either way.
    let mut dropped_count = order.len();
    if fits(&without_oldest(&state, &order)) {
        let mut lacking = 0;
        while dropped_count - lacking > 1 {
            let middle = lacking + (dropped_count - lacking) / 2;
            if fits(&without_oldest(&state, &order[..middle])) {
                dropped_count = middle;
            } else {
                lacking = middle;
            }
        }
    }
    let mut cursors: Vec<(StateField, usize)> =
        RENDER_ORDER.iter().map(|&field| (field, 0)).collect();
    for &field in &order[..dropped_count] {
        let Some((_, cursor)) = cursors.iter_mut().find(|(slot, _)| *slot == field) else {
            continue;
        };
        if let Some(item) = list(&state, field).get(*cursor) {
            trimmed.push(removed(field, item.clone(), TrimReason::TokenBudget));
        }
        *cursor += 1;
    }
    let mut result = without_oldest(&state, &order[..dropped_count]);
    if !fits(&result) {
        shorten_focus(&mut result, &fits, trimmed);
    }
    let result_tokens = count(&result);
    (result, result_tokens)
}

/// `state` without the items `drops` names: for each field, as many of its oldest items as the
/// field appears in `drops` (a prefix of [`drop_order`], so never more than the field holds).
fn without_oldest(state: &AgentState, drops: &[StateField]) -> AgentState {
    let mut candidate = state.clone();
    for field in RENDER_ORDER {
        let items = list_mut(&mut candidate, field);
        let dropped = drops
            .iter()
            .filter(|f| **f == field)
            .count()
            .min(items.len());
        items.drain(..dropped);
    }
    candidate
}

/// The order rule 6 drops items in: one entry per item, naming the field whose oldest item goes.
pub(super) fn drop_order(state: &AgentState) -> Vec<StateField> {
    let mut order = vec![StateField::History; state.history.len()];
    let mut lengths: Vec<(StateField, usize)> = BUDGET_TIE_ORDER
        .iter()
        .map(|&field| (field, list(state, field).len()))
        .collect();
    loop {
        // `max_by_key` keeps the last maximum; reversing makes the tie order's first one win.
        let longest = lengths.iter_mut().rev().max_by_key(|(_, length)| *length);
        match longest {
            Some((field, length)) if *length > 0 => {
                order.push(*field);
                *length -= 1;
            }
            _ => return order,
        }
    }
}

/// The last step of rule 6: the longest prefix of `next_focus` (with `…`) that fits, or none.
fn shorten_focus(
    state: &mut AgentState,
    fits: &dyn Fn(&AgentState) -> bool,
    trimmed: &mut Vec<Trimmed>,
) {
    let Some(focus) = state.next_focus.take() else {
        return;
    };
    let chars_before = focus.chars().count();
    let with_chars = |chars_max: usize| {
        let mut candidate = state.clone();
        candidate.next_focus = Some(shorten(&focus, chars_max)).filter(|text| !text.is_empty());
        candidate
    };
    // Largest length that fits; 0 (no focus) always fits because the lists are empty by now.
    let (mut fitting, mut too_long) = (0, chars_before);
    while too_long - fitting > 1 {
        let middle = fitting + (too_long - fitting) / 2;
        if fits(&with_chars(middle)) {
            fitting = middle;
        } else {
            too_long = middle;
        }
    }
    let kept = shorten(&focus, fitting);
    if kept.is_empty() {
        trimmed.push(removed(
            StateField::NextFocus,
            focus,
            TrimReason::TokenBudget,
        ));
    } else {
        trimmed.push(Trimmed {
            field: StateField::NextFocus,
            item: kept.clone(),
            reason: TrimReason::TokenBudget,
            action: TrimAction::Shortened,
            chars_before,
        });
        state.next_focus = Some(kept);
    }
}
