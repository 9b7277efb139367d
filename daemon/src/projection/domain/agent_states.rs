//! The agent state projection: `task_state_updated` events merged in log order with
//! [`merge_update`], using the limits recorded in each event (never today's configuration), plus
//! every update with its LSN and what its merge trimmed.
//!
//! Each task has a base state (updates without a rollout: `POST /v1/tasks/{task_id}/state`, and
//! the steps of the task's default rollout), and each created rollout its own state, which
//! starts as a copy of the base state at the rollout's creation (`state_from: task`) or empty
//! (`state_from: empty`) and changes only with the rollout's own updates.

use super::digest::DigestStream;
use crate::domain::agent_state::{merge_update, StateField, TrimAction, TrimReason, Trimmed};
use crate::domain::tokens::TokenCounter;
use agentd_schemas::events::{
    AgentState, RolloutCreated, StateForget, StateFrom, StateLimits, TaskStateUpdated,
};
use agentd_schemas::{LeaseId, Lsn, RolloutId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Names the layout of [`AgentStates::digest`].
const DIGEST_VERSION: &str = "agentd.agent_state.v2";

/// Every task's and rollout's current state and update history.
#[derive(Debug, Default)]
pub struct AgentStates {
    /// By task id; a `BTreeMap` so the digest walks tasks in a fixed order.
    tasks: BTreeMap<String, TaskStates>,
    /// The task of each rollout with a state.
    rollout_tasks: BTreeMap<RolloutId, String>,
    /// Updates that named an encoding this build cannot count (only possible for a log written
    /// by a build with more encodings); they are not merged, and counted so it shows.
    unmergeable: u64,
}

/// The states of one task: its base state and its rollouts'.
#[derive(Debug, Default)]
struct TaskStates {
    base: Option<TaskState>,
    rollouts: BTreeMap<RolloutId, TaskState>,
}

/// One agent state (a task's base state or a rollout's).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// Shared with the trajectory steps recorded while it was current.
    pub state: Arc<AgentState>,
    /// Exact tokens of `render(state)` in `encoding`.
    pub tokens: usize,
    /// The encoding of the last merge.
    pub encoding: String,
    /// The frame of the last merged update.
    pub lsn: Lsn,
    /// Every merged update, in log order.
    pub updates: Vec<StateUpdateRecord>,
}

/// One merged update, as the history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdateRecord {
    pub lsn: Lsn,
    pub ts_ms: u64,
    /// The token that wrote it (`None` without access control).
    pub actor: Option<String>,
    pub lease_id: Option<LeaseId>,
    /// The update as logged.
    pub update: AgentState,
    /// What it took out before adding.
    pub forget: StateForget,
    /// The limits it was merged with, from the event.
    pub limits: StateLimits,
    pub trimmed: Vec<Trimmed>,
    /// Tokens of the state after this update.
    pub tokens: usize,
}

impl AgentStates {
    /// A rollout's state starts from its task's base state (a copy; later base updates do not
    /// reach it) or empty. Its update history holds only its own updates.
    pub fn apply_rollout(&mut self, created: &RolloutCreated) {
        // The first rollout with an id stands, as in the trajectories and the fact index.
        if self.rollout_tasks.contains_key(&created.rollout_id) {
            return;
        }
        self.rollout_tasks
            .insert(created.rollout_id, created.task_id.clone());
        let task = self.tasks.entry(created.task_id.clone()).or_default();
        let start = match (created.state_from, &task.base) {
            (StateFrom::Task, Some(base)) => Some(TaskState {
                state: Arc::clone(&base.state),
                tokens: base.tokens,
                encoding: base.encoding.clone(),
                lsn: base.lsn,
                updates: Vec::new(),
            }),
            _ => None,
        };
        if let Some(start) = start {
            task.rollouts.insert(created.rollout_id, start);
        }
    }

    /// Merges one update logged at `lsn` into the base state of its task or into its rollout's
    /// state.
    pub fn apply(&mut self, lsn: Lsn, ts_ms: u64, actor: Option<&str>, event: &TaskStateUpdated) {
        let Ok(counter) = TokenCounter::for_encoding(&event.limits.encoding) else {
            self.unmergeable += 1;
            return;
        };
        let task = self.tasks.entry(event.task_id.clone()).or_default();
        let slot = match event.rollout_id {
            Some(id) => {
                self.rollout_tasks.insert(id, event.task_id.clone());
                task.rollouts
                    .entry(id)
                    .or_insert_with(|| empty(&event.limits))
            }
            None => task.base.get_or_insert_with(|| empty(&event.limits)),
        };
        let outcome = merge_update(
            &slot.state,
            &event.update,
            &event.forget,
            &event.limits,
            &counter,
        );
        slot.state = Arc::new(outcome.state);
        slot.tokens = outcome.tokens;
        slot.encoding = event.limits.encoding.clone();
        slot.lsn = lsn;
        slot.updates.push(StateUpdateRecord {
            lsn,
            ts_ms,
            actor: actor.map(str::to_owned),
            lease_id: event.lease_id,
            update: event.update.clone(),
            forget: event.forget.clone(),
            limits: event.limits.clone(),
            trimmed: outcome.trimmed,
            tokens: outcome.tokens,
        });
    }

    /// The task's base state, `None` before its first update.
    pub fn task(&self, task_id: &str) -> Option<&TaskState> {
        self.tasks.get(task_id)?.base.as_ref()
    }

    /// A rollout's state, `None` while it is empty and never updated.
    pub fn rollout(&self, rollout_id: RolloutId) -> Option<&TaskState> {
        let task_id = self.rollout_tasks.get(&rollout_id)?;
        self.tasks.get(task_id)?.rollouts.get(&rollout_id)
    }

    /// The base state of a task (`rollout_id` `None`) or a rollout's state.
    pub fn of(&self, task_id: &str, rollout_id: Option<RolloutId>) -> Option<&TaskState> {
        match rollout_id {
            Some(id) => self.tasks.get(task_id)?.rollouts.get(&id),
            None => self.task(task_id),
        }
    }

    /// The current state and the LSN of its last update (the empty state and LSN 0 before the
    /// first update).
    pub fn state_of(&self, task_id: &str, rollout_id: Option<RolloutId>) -> (Arc<AgentState>, Lsn) {
        match self.of(task_id, rollout_id) {
            Some(state) => (Arc::clone(&state.state), state.lsn),
            None => (Arc::new(AgentState::default()), Lsn::ZERO),
        }
    }

    /// The update merged at `lsn` into this state or, for a rollout whose state started from
    /// its task's, into the task's base state before the rollout was created.
    pub fn update_at(
        &self,
        task_id: &str,
        rollout_id: Option<RolloutId>,
        lsn: Lsn,
    ) -> Option<&StateUpdateRecord> {
        let find = |state: &'_ TaskState| {
            state
                .updates
                .binary_search_by_key(&lsn, |update| update.lsn)
                .ok()
        };
        if let Some(state) = self.of(task_id, rollout_id) {
            if let Some(index) = find(state) {
                return state.updates.get(index);
            }
        }
        let base = self.task(task_id)?;
        base.updates.get(find(base)?)
    }

    /// Tasks with at least one state (base or rollout).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Updates that could not be merged (unknown encoding).
    pub fn unmergeable(&self) -> u64 {
        self.unmergeable
    }

    /// SHA-256 (hex) over every task's state, token count, encoding, LSN and full history.
    pub fn digest(&self) -> String {
        let mut out = DigestStream::new(DIGEST_VERSION);
        out.number(self.unmergeable);
        out.count(self.tasks.len());
        for (task_id, task) in &self.tasks {
            out.text(task_id);
            out.optional(task.base.as_ref(), write_task_state);
            out.count(task.rollouts.len());
            for (id, state) in &task.rollouts {
                out.number(id.0);
                write_task_state(&mut out, state);
            }
        }
        out.finish()
    }
}

fn empty(limits: &StateLimits) -> TaskState {
    TaskState {
        state: Arc::new(AgentState::default()),
        tokens: 0,
        encoding: limits.encoding.clone(),
        lsn: Lsn::ZERO,
        updates: Vec::new(),
    }
}

fn write_task_state(out: &mut DigestStream, task: &TaskState) {
    write_state(out, &task.state);
    out.count(task.tokens);
    out.text(&task.encoding);
    out.number(task.lsn.0);
    out.count(task.updates.len());
    for update in &task.updates {
        out.number(update.lsn.0);
        out.number(update.ts_ms);
        out.optional(update.actor.as_deref(), DigestStream::text);
        out.optional(update.lease_id, |out, lease| out.number(lease.0));
        write_state(out, &update.update);
        write_forget(out, &update.forget);
        out.number(u64::from(update.limits.history_max));
        out.number(u64::from(update.limits.item_chars_max));
        out.number(u64::from(update.limits.token_budget));
        out.text(&update.limits.encoding);
        out.count(update.trimmed.len());
        for trimmed in &update.trimmed {
            out.text(field_name(trimmed.field));
            out.text(&trimmed.item);
            out.text(reason_name(trimmed.reason));
            out.text(action_name(trimmed.action));
            out.count(trimmed.chars_before);
        }
        out.count(update.tokens);
    }
}

fn write_forget(out: &mut DigestStream, forget: &StateForget) {
    let remove = &forget.remove;
    for list in [
        &remove.goals,
        &remove.constraints,
        &remove.decisions,
        &remove.hypotheses,
        &remove.history,
        &remove.open_issues,
        &forget.resolve,
        &forget.retract,
    ] {
        out.texts(list);
    }
    out.flag(forget.clear_next_focus);
}

/// Writes a state's fields in schema order (shared with the trajectory digest).
pub(super) fn write_state(out: &mut DigestStream, state: &AgentState) {
    for list in [
        &state.goals,
        &state.constraints,
        &state.decisions,
        &state.hypotheses,
        &state.history,
        &state.open_issues,
    ] {
        out.texts(list);
    }
    out.optional(state.next_focus.as_deref(), DigestStream::text);
}

/// The wire name of a state field (as in the API and the docs).
pub fn field_name(field: StateField) -> &'static str {
    match field {
        StateField::Goals => "goals",
        StateField::Constraints => "constraints",
        StateField::Decisions => "decisions",
        StateField::Hypotheses => "hypotheses",
        StateField::History => "history",
        StateField::OpenIssues => "open_issues",
        StateField::NextFocus => "next_focus",
    }
}

fn reason_name(reason: TrimReason) -> &'static str {
    match reason {
        TrimReason::ItemCharsCap => "item_chars_cap",
        TrimReason::HistoryCap => "history_cap",
        TrimReason::TokenBudget => "token_budget",
        TrimReason::Forgotten => "forgotten",
        TrimReason::Resolved => "resolved",
        TrimReason::Retracted => "retracted",
        TrimReason::Cleared => "cleared",
    }
}

fn action_name(action: TrimAction) -> &'static str {
    match action {
        TrimAction::Removed => "removed",
        TrimAction::Shortened => "shortened",
        TrimAction::Moved => "moved",
    }
}
