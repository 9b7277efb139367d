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

use super::tokens::TokenCounter;
use agentd_schemas::events::{AgentState, StateForget, StateLimits};
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

/// Which list loses an item first when lists are equally long (rule 6).
const BUDGET_TIE_ORDER: [StateField; 5] = [
    StateField::Hypotheses,
    StateField::Decisions,
    StateField::OpenIssues,
    StateField::Constraints,
    StateField::Goals,
];

/// One operation of an update's `forget` (rule 0): which items it names, the field they leave,
/// and the list they move to, if any.
struct ForgetRule {
    /// The items this row takes out.
    names: ForgetNames,
    /// The field the items leave.
    from: StateField,
    /// The list field the items are appended to (unless already there); `None` when they go.
    to: Option<StateField>,
    /// Reported in [`Trimmed::reason`].
    reason: TrimReason,
}

/// How a [`ForgetRule`] names its items.
enum ForgetNames {
    /// By value: the texts listed in this part of the forget.
    Listed(fn(&StateForget) -> &[String]),
    /// Every item of the field, when this flag of the forget is set.
    Everything(fn(&StateForget) -> bool),
}

impl ForgetRule {
    /// Reported in [`Trimmed::action`]: an item that goes elsewhere moved, any other is removed.
    fn action(&self) -> TrimAction {
        match self.to {
            Some(_) => TrimAction::Moved,
            None => TrimAction::Removed,
        }
    }
}

/// Rule 0, one row per operation, applied in this order. The moving row comes before the rows
/// that remove from its target, so an item it moves and a later row removes is gone for good;
/// in the other order re-applying the update would remove what the first pass moved in.
const FORGET_RULES: [ForgetRule; 9] = [
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

/// Rule 0: `state` without the items `forget` takes out, moved items appended to their target.
fn apply_forget(
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
fn field_items(state: &AgentState, field: StateField) -> &[String] {
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

/// Rule 6. Returns the state that fits and its token count.
fn fit_budget(
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
fn drop_order(state: &AgentState) -> Vec<StateField> {
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
