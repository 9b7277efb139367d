//! The per-task agent state projection: `task_state_updated` events merged in log order with
//! [`merge`], using the limits recorded in each event (never today's configuration), plus every
//! update with its LSN and what its merge trimmed.

use super::digest::DigestStream;
use crate::domain::agent_state::{merge, StateField, TrimAction, TrimReason, Trimmed};
use crate::domain::tokens::TokenCounter;
use agentd_schemas::events::{AgentState, StateLimits, TaskStateUpdated};
use agentd_schemas::{LeaseId, Lsn};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Names the layout of [`AgentStates::digest`].
const DIGEST_VERSION: &str = "agentd.agent_state.v1";

/// Every task's current state and update history.
#[derive(Debug, Default)]
pub struct AgentStates {
    /// By task id; a `BTreeMap` so the digest walks tasks in a fixed order.
    tasks: BTreeMap<String, TaskState>,
    /// Updates that named an encoding this build cannot count (only possible for a log written
    /// by a build with more encodings); they are not merged, and counted so it shows.
    unmergeable: u64,
}

/// One task's agent state.
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
    /// The limits it was merged with, from the event.
    pub limits: StateLimits,
    pub trimmed: Vec<Trimmed>,
    /// Tokens of the state after this update.
    pub tokens: usize,
}

impl AgentStates {
    /// Merges one update logged at `lsn`.
    pub fn apply(&mut self, lsn: Lsn, ts_ms: u64, actor: Option<&str>, event: &TaskStateUpdated) {
        let Ok(counter) = TokenCounter::for_encoding(&event.limits.encoding) else {
            self.unmergeable += 1;
            return;
        };
        let task = self
            .tasks
            .entry(event.task_id.clone())
            .or_insert_with(|| TaskState {
                state: Arc::new(AgentState::default()),
                tokens: 0,
                encoding: event.limits.encoding.clone(),
                lsn: Lsn::ZERO,
                updates: Vec::new(),
            });
        let outcome = merge(&task.state, &event.update, &event.limits, &counter);
        task.state = Arc::new(outcome.state);
        task.tokens = outcome.tokens;
        task.encoding = event.limits.encoding.clone();
        task.lsn = lsn;
        task.updates.push(StateUpdateRecord {
            lsn,
            ts_ms,
            actor: actor.map(str::to_owned),
            lease_id: event.lease_id,
            update: event.update.clone(),
            limits: event.limits.clone(),
            trimmed: outcome.trimmed,
            tokens: outcome.tokens,
        });
    }

    /// The task's state, `None` before its first update.
    pub fn task(&self, task_id: &str) -> Option<&TaskState> {
        self.tasks.get(task_id)
    }

    /// The current state of a task and the LSN of its last update (the empty state and LSN 0
    /// before the first update).
    pub fn state_of(&self, task_id: &str) -> (Arc<AgentState>, Lsn) {
        match self.tasks.get(task_id) {
            Some(task) => (Arc::clone(&task.state), task.lsn),
            None => (Arc::new(AgentState::default()), Lsn::ZERO),
        }
    }

    /// Tasks with at least one update.
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
            write_state(&mut out, &task.state);
            out.count(task.tokens);
            out.text(&task.encoding);
            out.number(task.lsn.0);
            out.count(task.updates.len());
            for update in &task.updates {
                out.number(update.lsn.0);
                out.number(update.ts_ms);
                out.optional(update.actor.as_deref(), DigestStream::text);
                out.optional(update.lease_id, |out, lease| out.number(lease.0));
                write_state(&mut out, &update.update);
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
        out.finish()
    }
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
    }
}

fn action_name(action: TrimAction) -> &'static str {
    match action {
        TrimAction::Removed => "removed",
        TrimAction::Shortened => "shortened",
    }
}
