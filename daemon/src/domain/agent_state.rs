//! The structured per-task agent state (seed 001, section 5): merging an update into the current
//! state, and rendering it as the text block that goes into prompts.
//!
//! Merge rules, in the order they apply (docs/domain.md has the same list with examples):
//!
//! 0. The update's `forget` takes items out of the current state, one row of `FORGET_RULES`
//!    after another, each seeing the result of the rows before it: `resolve` moves open issues to
//!    `decisions`, `retract` removes hypotheses, `remove.<field>` removes items of any list field,
//!    `clear_next_focus` removes the focus. A name matches an item when both are equal after
//!    rules 1 and 2 (the equality that finds duplicates); a name that matches nothing is ignored.
//!    An item the update adds back to the same field is not taken out: the additions apply after
//!    the forget, so the item ends present, where it was.
//! 1. Every text item is trimmed of surrounding whitespace; items that are then empty are dropped.
//! 2. Every item longer than `limits.item_chars_max` characters (Unicode scalar values, not bytes)
//!    is cut to `item_chars_max - 1` characters, trailing whitespace removed, plus `…`, so the
//!    result never exceeds the cap. Existing items are re-capped too, because the limits travel
//!    with each event and may have shrunk.
//! 3. List fields (`goals`, `constraints`, `decisions`, `hypotheses`, `open_issues`): the update's
//!    items are appended after the existing ones, skipping any item equal (after rules 1 and 2) to
//!    one already present. The first occurrence keeps its place.
//! 4. `history`: only the update's last `history_max` distinct entries count (earlier ones would be
//!    pushed out anyway). An entry already in the history moves to the end (it happened again,
//!    so it is recent); new entries are appended; then the oldest entries beyond `history_max` go.
//! 5. `next_focus` is replaced when the update has a non-empty one, and kept otherwise.
//! 6. If [`render`] of the result is over `limits.token_budget` tokens, items are dropped in a
//!    fixed order until it fits: history oldest first, then, one at a time, the oldest item of the
//!    list that currently has the most items (ties go to the first of `hypotheses`, `decisions`,
//!    `open_issues`, `constraints`, `goals`: speculation goes before what defines the task). If
//!    only `next_focus` is left and still too long, it is shortened (with `…`) or removed.
//!
//! Every item taken out by rule 0 and every item removed or shortened by rules 2, 4 and 6 is
//! reported in [`MergeOutcome::trimmed`]; dropping blanks and duplicates loses nothing and is not
//! reported.
//!
//! Re-applying the same update to the result changes nothing whenever the first merge needed no
//! token-budget trimming: duplicates are skipped, repeated history entries are already at the end,
//! forgotten items are already gone (the rows that move items run before the rows that remove from
//! their target, and an item the update adds back is never forgotten, so nothing comes back to be
//! forgotten again). Budget trimming has no memory of what it dropped, so re-applying an update
//! whose items were dropped adds them back and trims again (still deterministically, still within
//! budget).

mod budget;
mod forget;

use super::tokens::TokenCounter;
use agentd_schemas::events::{AgentState, StateForget, StateLimits};
#[cfg(test)]
use budget::drop_order;
use budget::fit_budget;
use forget::apply_forget;
#[cfg(test)]
use forget::{field_items, ForgetNames, FORGET_RULES};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The result of [`merge_update`] (and [`merge`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutcome {
    /// The merged state, within the limits.
    pub state: AgentState,
    /// What the merge took out, moved or shortened, in the order it happened.
    pub trimmed: Vec<Trimmed>,
    /// Exact token count of `render(&state)` in the limits' encoding.
    pub tokens: usize,
}

/// One item the merge took out, moved or shortened, so a caller can tell the agent what it lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    /// The field the item belongs to (for a move, the field it left).
    pub field: StateField,
    /// For a removal or a move, the text taken out; for a shortening, the text that was kept.
    pub item: String,
    /// Which limit or which part of the update's `forget` caused it.
    pub reason: TrimReason,
    /// Whether the item is gone, shorter, or in another field.
    pub action: TrimAction,
    /// The item's length in characters before this step.
    pub chars_before: usize,
}

/// A field of [`AgentState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateField {
    Goals,
    Constraints,
    Decisions,
    Hypotheses,
    History,
    OpenIssues,
    NextFocus,
}

/// The limit, or the part of the update's `forget`, that caused a [`Trimmed`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrimReason {
    /// The item was longer than `item_chars_max`.
    ItemCharsCap,
    /// The history held more than `history_max` entries.
    HistoryCap,
    /// The rendered state was over `token_budget`.
    TokenBudget,
    /// The update's `forget.remove` named the item.
    Forgotten,
    /// The update's `forget.resolve` resolved the open issue (it moved to `decisions`).
    Resolved,
    /// The update's `forget.retract` retracted the hypothesis.
    Retracted,
    /// The update's `forget.clear_next_focus` cleared the focus.
    Cleared,
}

/// What happened to a [`Trimmed`] item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrimAction {
    Removed,
    Shortened,
    /// Taken out of this field and added to another (a resolved issue becomes a decision).
    Moved,
}

/// Marks a shortened item; counted inside `item_chars_max`.
pub const ELLIPSIS: char = '…';

/// Merges `update` into `state` under `limits` with nothing to forget: [`merge_update`] with an
/// empty [`StateForget`].
#[cfg(test)]
pub fn merge(
    state: &AgentState,
    update: &AgentState,
    limits: &StateLimits,
    tokens: &TokenCounter,
) -> MergeOutcome {
    merge_update(state, update, &StateForget::default(), limits, tokens)
}

/// Takes `forget`'s items out of `state`, then merges `update` into the rest under `limits` (the
/// rules are in the module documentation).
///
/// `tokens` must count with `limits.encoding`: the limits are recorded in the event, so a replay
/// must count with the encoding the daemon used, not today's configuration.
pub fn merge_update(
    state: &AgentState,
    update: &AgentState,
    forget: &StateForget,
    limits: &StateLimits,
    tokens: &TokenCounter,
) -> MergeOutcome {
    assert_eq!(
        tokens.name(),
        limits.encoding,
        "agent state must be counted with the encoding recorded in its limits"
    );
    // A cap of 0 would turn every item into nothing; it is treated as 1 (every long item becomes
    // `…`). Configuration validation should refuse such limits long before this.
    let item_chars_max = usize_from(limits.item_chars_max).max(1);
    let history_max = usize_from(limits.history_max);
    let token_budget = usize_from(limits.token_budget);
    let mut trimmed = Vec::new();

    // Most updates forget nothing; they merge from the state as it is, without a copy.
    let state = if forget.is_empty() {
        Cow::Borrowed(state)
    } else {
        Cow::Owned(apply_forget(
            state,
            update,
            forget,
            item_chars_max,
            &mut trimmed,
        ))
    };
    let state = state.as_ref();
    let mut merged = AgentState::default();
    for field in LIST_FIELDS {
        let items = merge_list(
            field,
            list(state, field),
            list(update, field),
            item_chars_max,
            &mut trimmed,
        );
        *list_mut(&mut merged, field) = items;
    }
    merged.history = merge_history(
        &state.history,
        &update.history,
        item_chars_max,
        history_max,
        &mut trimmed,
    );
    merged.next_focus = merge_focus(
        &state.next_focus,
        &update.next_focus,
        item_chars_max,
        &mut trimmed,
    );

    let (state, tokens) = fit_budget(merged, token_budget, tokens, &mut trimmed);
    MergeOutcome {
        state,
        trimmed,
        tokens,
    }
}

/// The state as a Markdown block for prompts: one `## Title` section per non-empty field in a
/// fixed order (goals, constraints, decisions, hypotheses, history, open issues, next focus),
/// list items as `- item` with continuation lines indented by two spaces, sections separated by
/// a blank line. An empty state renders as the empty string.
pub fn render(state: &AgentState) -> String {
    let mut out = String::new();
    for field in RENDER_ORDER {
        let items = list(state, field);
        if items.is_empty() {
            continue;
        }
        start_section(&mut out, field);
        for item in items {
            out.push_str("- ");
            push_indented(&mut out, item);
            out.push('\n');
        }
    }
    if let Some(focus) = &state.next_focus {
        start_section(&mut out, StateField::NextFocus);
        out.push_str(focus);
        out.push('\n');
    }
    out
}

impl StateField {
    /// The section title used by [`render`].
    pub fn title(self) -> &'static str {
        match self {
            StateField::Goals => "Goals",
            StateField::Constraints => "Constraints",
            StateField::Decisions => "Decisions",
            StateField::Hypotheses => "Hypotheses",
            StateField::History => "History",
            StateField::OpenIssues => "Open issues",
            StateField::NextFocus => "Next focus",
        }
    }
}

/// The list fields merged by rule 3, in field order.
const LIST_FIELDS: [StateField; 5] = [
    StateField::Goals,
    StateField::Constraints,
    StateField::Decisions,
    StateField::Hypotheses,
    StateField::OpenIssues,
];

/// The list sections of [`render`], in the order of the schema.
const RENDER_ORDER: [StateField; 6] = [
    StateField::Goals,
    StateField::Constraints,
    StateField::Decisions,
    StateField::Hypotheses,
    StateField::History,
    StateField::OpenIssues,
];

/// A normalized item: trimmed, capped, and how long it was if the cap shortened it.
struct Normalized {
    text: String,
    capped_from_chars: Option<usize>,
}

/// Rules 1 and 2 for one item; `None` when nothing is left.
fn normalize(raw: &str, item_chars_max: usize) -> Option<Normalized> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let chars = trimmed.chars().count();
    if chars <= item_chars_max {
        return Some(Normalized {
            text: trimmed.to_owned(),
            capped_from_chars: None,
        });
    }
    Some(Normalized {
        text: shorten(trimmed, item_chars_max),
        capped_from_chars: Some(chars),
    })
}

/// `text` (longer than `chars_max` characters) cut to at most `chars_max` characters including
/// the trailing [`ELLIPSIS`]; empty when `chars_max` is 0.
fn shorten(text: &str, chars_max: usize) -> String {
    if chars_max == 0 {
        return String::new();
    }
    let kept: String = text.chars().take(chars_max - 1).collect();
    let mut out = kept.trim_end().to_owned();
    out.push(ELLIPSIS);
    out
}

/// Takes a normalized item into the state, reporting the cap if it shortened the item. Callers
/// pass items that are new to their field; an item equal to one already there is not reported,
/// so re-applying an update reports nothing.
fn keep_reporting(field: StateField, item: Normalized, trimmed: &mut Vec<Trimmed>) -> String {
    if let Some(chars_before) = item.capped_from_chars {
        trimmed.push(Trimmed {
            field,
            item: item.text.clone(),
            reason: TrimReason::ItemCharsCap,
            action: TrimAction::Shortened,
            chars_before,
        });
    }
    item.text
}

/// Rule 3 for one list field.
fn merge_list(
    field: StateField,
    existing: &[String],
    update: &[String],
    item_chars_max: usize,
    trimmed: &mut Vec<Trimmed>,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut merged = Vec::new();
    for raw in existing.iter().chain(update) {
        let Some(item) = normalize(raw, item_chars_max) else {
            continue;
        };
        if seen.contains(&item.text) {
            continue;
        }
        seen.insert(item.text.clone());
        merged.push(keep_reporting(field, item, trimmed));
    }
    merged
}

/// Rule 4.
fn merge_history(
    existing: &[String],
    update: &[String],
    item_chars_max: usize,
    history_max: usize,
    trimmed: &mut Vec<Trimmed>,
) -> Vec<String> {
    let existing: Vec<Normalized> = existing
        .iter()
        .filter_map(|raw| normalize(raw, item_chars_max))
        .collect();
    // The update's distinct entries, each at its last occurrence, oldest first. Sets and maps
    // here are only looked up, never iterated, so their order cannot leak into the result.
    let mut incoming_texts = HashSet::new();
    let mut incoming: Vec<Normalized> = Vec::new();
    for raw in update.iter().rev() {
        let Some(entry) = normalize(raw, item_chars_max) else {
            continue;
        };
        if incoming_texts.insert(entry.text.clone()) {
            incoming.push(entry);
        }
    }
    incoming.reverse();
    let overflow = incoming.len().saturating_sub(history_max);
    let mut history: Vec<String> = Vec::new();
    // Existing entries the update repeats: they move to the update's position.
    let mut moving: HashMap<String, Normalized> = HashMap::new();
    for entry in existing {
        if incoming_texts.contains(&entry.text) {
            moving.entry(entry.text.clone()).or_insert(entry);
        } else {
            history.push(keep_reporting(StateField::History, entry, trimmed));
        }
    }
    for (position, entry) in incoming.into_iter().enumerate() {
        // An entry already in the history keeps its own (possibly re-capped) report.
        let entry = moving.remove(&entry.text).unwrap_or(entry);
        if position < overflow {
            trimmed.push(removed(
                StateField::History,
                entry.text,
                TrimReason::HistoryCap,
            ));
        } else {
            history.push(keep_reporting(StateField::History, entry, trimmed));
        }
    }
    let evicted = history.len().saturating_sub(history_max);
    for entry in history.drain(..evicted) {
        trimmed.push(removed(StateField::History, entry, TrimReason::HistoryCap));
    }
    history
}

/// Rule 5: the update's focus if it has a non-empty one, else the existing focus.
fn merge_focus(
    existing: &Option<String>,
    update: &Option<String>,
    item_chars_max: usize,
    trimmed: &mut Vec<Trimmed>,
) -> Option<String> {
    let existing = existing
        .as_deref()
        .and_then(|text| normalize(text, item_chars_max));
    let update = update
        .as_deref()
        .and_then(|text| normalize(text, item_chars_max));
    let chosen = match (existing, update) {
        (Some(old), Some(new)) if old.text == new.text => old,
        (_, Some(new)) => new,
        (Some(old), None) => old,
        (None, None) => return None,
    };
    Some(keep_reporting(StateField::NextFocus, chosen, trimmed))
}

fn removed(field: StateField, item: String, reason: TrimReason) -> Trimmed {
    let chars_before = item.chars().count();
    Trimmed {
        field,
        item,
        reason,
        action: TrimAction::Removed,
        chars_before,
    }
}

fn start_section(out: &mut String, field: StateField) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("## ");
    out.push_str(field.title());
    out.push('\n');
}

/// Pushes `item`, indenting continuation lines so a multi-line item stays inside its bullet.
fn push_indented(out: &mut String, item: &str) {
    for (number, line) in item.split('\n').enumerate() {
        if number > 0 {
            out.push_str("\n  ");
        }
        out.push_str(line);
    }
}

fn list(state: &AgentState, field: StateField) -> &[String] {
    match field {
        StateField::Goals => &state.goals,
        StateField::Constraints => &state.constraints,
        StateField::Decisions => &state.decisions,
        StateField::Hypotheses => &state.hypotheses,
        StateField::History => &state.history,
        StateField::OpenIssues => &state.open_issues,
        StateField::NextFocus => &[],
    }
}

fn list_mut(state: &mut AgentState, field: StateField) -> &mut Vec<String> {
    match field {
        StateField::Goals => &mut state.goals,
        StateField::Constraints => &mut state.constraints,
        StateField::Decisions => &mut state.decisions,
        StateField::Hypotheses => &mut state.hypotheses,
        StateField::History => &mut state.history,
        StateField::OpenIssues => &mut state.open_issues,
        // Only list fields reach here: callers iterate LIST_FIELDS, RENDER_ORDER or drop_order,
        // or pass a `ForgetRule::to`, which is always a list.
        StateField::NextFocus => unreachable!("next_focus is not a list"),
    }
}

/// Limits are `u32` in the event; every supported target has at least 32-bit `usize`.
fn usize_from(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
