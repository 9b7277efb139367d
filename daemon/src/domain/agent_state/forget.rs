//! Rule 0 of the merge: what an update's `forget` takes out of the current state, one row of
//! [`FORGET_RULES`] after another.

use super::{list, list_mut, normalize, StateField, TrimAction, TrimReason, Trimmed};
use agentd_schemas::events::{AgentState, StateForget};
use std::collections::HashSet;

/// One operation of an update's `forget` (rule 0): which items it names, the field they leave,
/// and the list they move to, if any.
pub(super) struct ForgetRule {
    /// The items this row takes out.
    pub(super) names: ForgetNames,
    /// The field the items leave.
    pub(super) from: StateField,
    /// The list field the items are appended to (unless already there); `None` when they go.
    pub(super) to: Option<StateField>,
    /// Reported in [`Trimmed::reason`].
    pub(super) reason: TrimReason,
}

/// How a [`ForgetRule`] names its items.
pub(super) enum ForgetNames {
    /// By value: the texts listed in this part of the forget.
    Listed(fn(&StateForget) -> &[String]),
    /// Every item of the field, when this flag of the forget is set.
    Everything(fn(&StateForget) -> bool),
}

impl ForgetRule {
    /// Reported in [`Trimmed::action`]: an item that goes elsewhere moved, any other is removed.
    pub(super) fn action(&self) -> TrimAction {
        match self.to {
            Some(_) => TrimAction::Moved,
            None => TrimAction::Removed,
        }
    }
}

/// Rule 0, one row per operation, applied in this order. The moving row comes before the rows
/// that remove from its target, so an item it moves and a later row removes is gone for good;
/// in the other order re-applying the update would remove what the first pass moved in.
pub(super) const FORGET_RULES: [ForgetRule; 9] = [
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.resolve),
        from: StateField::OpenIssues,
        to: Some(StateField::Decisions),
        reason: TrimReason::Resolved,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.retract),
        from: StateField::Hypotheses,
        to: None,
        reason: TrimReason::Retracted,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.goals),
        from: StateField::Goals,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.constraints),
        from: StateField::Constraints,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.decisions),
        from: StateField::Decisions,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.hypotheses),
        from: StateField::Hypotheses,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.history),
        from: StateField::History,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Listed(|forget| &forget.remove.open_issues),
        from: StateField::OpenIssues,
        to: None,
        reason: TrimReason::Forgotten,
    },
    ForgetRule {
        names: ForgetNames::Everything(|forget| forget.clear_next_focus),
        from: StateField::NextFocus,
        to: None,
        reason: TrimReason::Cleared,
    },
];

/// Rule 0: `state` without the items `forget` takes out, moved items appended to their target.
pub(super) fn apply_forget(
    state: &AgentState,
    update: &AgentState,
    forget: &StateForget,
    item_chars_max: usize,
    trimmed: &mut Vec<Trimmed>,
) -> AgentState {
    let mut remaining = state.clone();
    // Items compare by their normalized text (rules 1 and 2), as duplicates do. The sets are only
    // looked up, never iterated, so their order cannot leak into the result.
    let key = |text: &str| normalize(text, item_chars_max).map(|item| item.text);
    for rule in &FORGET_RULES {
        let names: HashSet<String> = match rule.names {
            ForgetNames::Listed(listed) => listed(forget).iter().filter_map(|n| key(n)).collect(),
            ForgetNames::Everything(flag) if flag(forget) => field_items(&remaining, rule.from)
                .iter()
                .filter_map(|item| key(item))
                .collect(),
            ForgetNames::Everything(_) => continue,
        };
        if names.is_empty() {
            continue;
        }
        // The update adds these back: forgetting them would only move them (and re-applying the
        // update would move them again), so they stay where they are.
        let added_back: HashSet<String> = field_items(update, rule.from)
            .iter()
            .filter_map(|item| key(item))
            .collect();
        let mut taken_keys = HashSet::new();
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for item in take_field_items(&mut remaining, rule.from) {
            match key(&item) {
                Some(text) if names.contains(&text) && !added_back.contains(&text) => {
                    // Unnormalized copies ("a", " a ") all go; only the first is reported, as
                    // losing a duplicate loses nothing.
                    if taken_keys.insert(text) {
                        taken.push(item.trim().to_owned());
                    }
                }
                _ => kept.push(item),
            }
        }
        put_field_items(&mut remaining, rule.from, kept);
        for item in taken {
            if let Some(target) = rule.to {
                // Appended as an existing item of the target: rule 3 then skips it if the target
                // already has it, as it skips a duplicate addition.
                list_mut(&mut remaining, target).push(item.clone());
            }
            let chars_before = item.chars().count();
            trimmed.push(Trimmed {
                field: rule.from,
                item,
                reason: rule.reason,
                action: rule.action(),
                chars_before,
            });
        }
    }
    remaining
}

/// The items of any field, `next_focus` as a list of at most one.
pub(super) fn field_items(state: &AgentState, field: StateField) -> &[String] {
    match field {
        StateField::NextFocus => state.next_focus.as_slice(),
        _ => list(state, field),
    }
}

/// Moves the items of any field out of `state`, leaving it empty.
fn take_field_items(state: &mut AgentState, field: StateField) -> Vec<String> {
    match field {
        StateField::NextFocus => state.next_focus.take().into_iter().collect(),
        _ => std::mem::take(list_mut(state, field)),
    }
}

/// Puts back what [`take_field_items`] took, less what was forgotten (at most one `next_focus`).
fn put_field_items(state: &mut AgentState, field: StateField, items: Vec<String>) {
    match field {
        StateField::NextFocus => state.next_focus = items.into_iter().next(),
        _ => *list_mut(state, field) = items,
    }
}
