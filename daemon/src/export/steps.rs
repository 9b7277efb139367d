//! Rows from trajectory steps: the full per-step log (`trajectories`) and the TRL SFT view
//! (`trl_sft`). Columns are listed in `docs/exports.md`; each view declares its own once, with
//! [`export_columns!`].
//!
//! A step is shown as of the export's `to` LSN: its sandbox result and reward appear only if they
//! were logged at or before `to`. So exporting from a projection that has moved past `to` gives
//! exactly the rows a projection stopped at `to` gives, which is what makes a live export and a
//! rebuild byte-identical.
//!
//! The same holds for what a step row says about its rollout and group: `rollout_reward` sums
//! the rollout's step rewards logged at or before `to`, and `advantage` scores it against the
//! group's rollouts created at or before `to`, each summed the same way ([`GroupScoresAt`]).
//! A rollout or reward logged after `to` changes neither.

use super::columns::{
    export_columns, message_list_builder, messages_type, push_message, text_builder,
    MessageListBuilder, NULLABLE, REQUIRED,
};
use super::records::{state_block, TrainerContext};
use crate::domain::agent_state::render;
use crate::projection::domain::agent_states::AgentStates;
use crate::projection::domain::trajectories::{
    advantage, mean_and_std, source_name, Fact, Rollout, StepEntry, Trajectories,
};
use agentd_schemas::domain_api::{ActionRequest, StateUpdateFields};
use agentd_schemas::events::ExportKind;
use agentd_schemas::events::{
    Action, AgentState, RewardRecorded, SandboxOutcome, SandboxResultRecorded,
};
use agentd_schemas::{Lsn, RolloutId};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Fields, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

mod trajectory;
use trajectory::append_id;
pub use trajectory::{trajectory_schema, TrajectoryRows};

/// What rows need besides the step: `states` gives the token count of the state the step saw,
/// `trajectories` its rollout and group (take both read locks in the usual order: agent states
/// first), `splits` its task's split.
pub struct StepContext<'a> {
    pub states: &'a AgentStates,
    pub trajectories: &'a Trajectories,
    pub splits: &'a TaskSplits,
    /// Shared by the batches of one export.
    pub scores: &'a std::cell::RefCell<GroupCache>,
    /// The training settings in force at `to`.
    pub trainer: &'a TrainerContext,
    /// The prompt (instruction and code) of each task that is a kept record with steps, for
    /// the SFT user turn of a step recorded without its prompt; empty for the other views.
    pub record_prompts: &'a HashMap<String, String>,
}

/// What the step views read from other projections, computed once per export as of its `to`.
pub struct ExportInputs {
    pub splits: TaskSplits,
    pub trainer: TrainerContext,
    pub record_prompts: HashMap<String, String>,
}

impl ExportInputs {
    /// `with_prompts`: also the record prompts (only the SFT view uses them).
    pub fn at(
        domain: &crate::projection::domain::DomainProjections,
        to: Lsn,
        with_prompts: bool,
    ) -> Self {
        ExportInputs {
            splits: task_splits(domain, to),
            trainer: TrainerContext::at(domain, to),
            record_prompts: if with_prompts {
                record_prompts(domain, to)
            } else {
                HashMap::new()
            },
        }
    }
}

/// The prompts of the record tasks (as of `to`) that have steps: `records::record_prompt`.
pub fn record_prompts(
    domain: &crate::projection::domain::DomainProjections,
    to: Lsn,
) -> HashMap<String, String> {
    let mut tasks = std::collections::HashSet::new();
    {
        let trajectories = domain.trajectories();
        let mut last: Option<&str> = None;
        for entry in trajectories.steps_after(None) {
            let task = entry.step.task_id.as_str();
            if last != Some(task) {
                tasks.insert(task.to_owned());
                last = Some(task);
            }
        }
    }
    domain
        .datasets()
        .splits()
        .kept_records()
        .filter(|record| record.lsn <= to)
        .filter_map(|record| {
            let task = super::records::record_task_id(record);
            tasks
                .contains(&task)
                .then(|| (task, super::records::record_prompt(record)))
        })
        .collect()
}

/// The split of each task that is a kept dataset record (`{source}/{version}/{index}`) received
/// at or before an export's `to`; a task not in it has no split (`unassigned`).
pub type TaskSplits = std::collections::HashMap<String, &'static str>;

/// The splits of the record tasks as of `to`.
pub fn task_splits(domain: &crate::projection::domain::DomainProjections, to: Lsn) -> TaskSplits {
    domain
        .datasets()
        .splits()
        .kept_records()
        .filter(|record| record.lsn <= to)
        .map(|record| {
            (
                super::records::record_task_id(record),
                record.split.as_str(),
            )
        })
        .collect()
}

/// A step as visible at some LSN.
pub struct StepView<'a> {
    pub sandbox: Option<&'a Fact<SandboxResultRecorded>>,
    pub reward: Option<&'a Fact<RewardRecorded>>,
    /// The step's own LSN and the last of its visible facts.
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
}

/// The step as of `to`, or `None` if it was logged after `to`.
pub fn view_at(entry: &StepEntry, to: Lsn) -> Option<StepView<'_>> {
    if entry.lsn > to {
        return None;
    }
    let sandbox = entry.sandbox.as_ref().filter(|fact| fact.lsn <= to);
    let reward = entry.reward.as_ref().filter(|fact| fact.lsn <= to);
    let last_lsn = entry
        .lsn
        .max(sandbox.map_or(Lsn::ZERO, |fact| fact.lsn))
        .max(reward.map_or(Lsn::ZERO, |fact| fact.lsn));
    Some(StepView {
        sandbox,
        reward,
        first_lsn: entry.lsn,
        last_lsn,
    })
}

/// Rows built from steps, one record batch at a time.
pub trait StepRows {
    fn with_capacity(rows: usize) -> Self;
    /// Room for `rows` rows of about the size of `previous`'s (an earlier batch of these rows).
    fn presized(rows: usize, previous: &RecordBatch) -> Self;
    /// Adds the step if it belongs in an export of `(after, to]`; returns whether it did.
    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, context: &StepContext) -> bool;
    fn finish(self) -> RecordBatch;
}

// ---------------------------------------------------------------------------------------------
// Rollouts and groups as of `to`

/// A rollout's reward as of `to`: the sum of its step rewards logged at or before `to`, added
/// in log order, as the projection adds them (so with nothing after `to` it is the projection's
/// own `reward`, to the bit). 0 before its first reward.
pub fn rollout_reward_at(rollout: &Rollout, to: Lsn) -> Option<f64> {
    let mut rewards: Vec<(Lsn, f64)> = rollout
        .steps
        .values()
        .filter_map(|entry| entry.reward.as_ref())
        .filter(|fact| fact.lsn <= to)
        .map(|fact| (fact.lsn, fact.event.value))
        .collect();
    if rewards.is_empty() {
        return None;
    }
    // Stable: rewards of one record stay in step order. Folded from +0.0 like the projection's
    // running sum (`Sum` of floats starts at -0.0).
    rewards.sort_by_key(|(lsn, _)| *lsn);
    Some(rewards.iter().fold(0.0, |sum, (_, value)| sum + value))
}

/// The scores of one group as of `to`: over its rollouts created at or before `to`, each with
/// its [`rollout_reward_at`], the group's mean and sample standard deviation and each rollout's
/// advantage (the projection's [`mean_and_std`] and [`advantage`], as GRPO computes them).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScoresAt {
    pub mean: f64,
    pub std: f64,
    /// Reward and advantage of each rollout.
    pub rollouts: HashMap<RolloutId, RolloutScore>,
}

/// A rollout's reward and group-relative advantage as of some LSN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutScore {
    pub reward: f64,
    pub advantage: f64,
}

impl GroupScoresAt {
    /// Reads every step of every rollout of the group once.
    pub fn compute(trajectories: &Trajectories, group: &str, to: Lsn) -> GroupScoresAt {
        let members = trajectories.group_members(group);
        // In creation order (the projection's), so the mean adds up the same way every time.
        // Only scored rollouts (a reward at or before `to`) count, as in the projection's
        // `group`: an unfinished sample has no advantage yet and does not move the others'.
        let rewards: Vec<(RolloutId, f64)> = members
            .iter()
            .filter_map(|id| trajectories.rollout(*id))
            .filter(|rollout| rollout.lsn <= to)
            .filter_map(|rollout| {
                rollout_reward_at(rollout, to).map(|reward| (rollout.created.rollout_id, reward))
            })
            .collect();
        let values: Vec<f64> = rewards.iter().map(|(_, reward)| *reward).collect();
        let (mean, std) = mean_and_std(&values);
        let rollouts = rewards
            .into_iter()
            .map(|(id, reward)| {
                let score = RolloutScore {
                    reward,
                    advantage: advantage(reward, mean, std),
                };
                (id, score)
            })
            .collect();
        GroupScoresAt {
            mean,
            std,
            rollouts,
        }
    }
}

/// Group scores as of an export's `to`, computed once per group for the whole export (they do
/// not change while it runs: every fact at or before `to` is already applied), not once per
/// row or per batch: a shuffled dataset build touches a group in many batches.
#[derive(Default)]
pub struct GroupCache {
    /// The `to` the scores are as of; a different `to` empties the cache.
    to: Lsn,
    groups: HashMap<String, GroupScoresAt>,
}

impl GroupCache {
    /// The rollout's score as of `to`; `None` while it has no reward at or before `to`.
    pub(super) fn score(
        &mut self,
        trajectories: &Trajectories,
        rollout_id: RolloutId,
        to: Lsn,
    ) -> Option<RolloutScore> {
        if self.to != to {
            self.groups.clear();
            self.to = to;
        }
        let group = trajectories.rollout(rollout_id)?.created.group.as_str();
        if !self.groups.contains_key(group) {
            let scores = GroupScoresAt::compute(trajectories, group, to);
            self.groups.insert(group.to_owned(), scores);
        }
        self.groups.get(group)?.rollouts.get(&rollout_id).copied()
    }
}

/// The group of a step's rollout; `None` for the default rollout.
fn group_of<'t>(trajectories: &'t Trajectories, entry: &StepEntry) -> Option<&'t str> {
    let rollout = trajectories.rollout(entry.step.rollout_id?)?;
    Some(rollout.created.group.as_str())
}

pub(crate) fn struct_field<T: arrow_array::builder::ArrayBuilder>(
    builder: &mut StructBuilder,
    index: usize,
) -> &mut T {
    // The struct's fields are fixed by `component_fields` / the message fields: name/role is a
    // string at 0, value/content at 1.
    builder
        .field_builder::<T>(index)
        .expect("struct field builder of the declared type")
}

// ---------------------------------------------------------------------------------------------
// trl_sft

export_columns! {
    /// The columns of the `trl_sft` view, in file order.
    pub struct SftColumns;
    capacity rows;
    messages: MessageListBuilder = message_list_builder(rows) => messages_type(), REQUIRED;
    task_id: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    step: UInt32Builder = UInt32Builder::with_capacity(rows) => DataType::UInt32, REQUIRED;
    /// `ro_<n>`; null for the task's default rollout.
    rollout_id: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The rollout's group; null for the default rollout.
    group: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    /// The split of the task's dataset record (`train`, `dev`, `test`); null for a task that is
    /// not a kept record.
    split: StringBuilder = text_builder(rows) => DataType::Utf8, NULLABLE;
    model: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
    policy_version: StringBuilder =
        StringBuilder::with_capacity(rows, rows * 8) => DataType::Utf8, REQUIRED;
    reward: Float64Builder = Float64Builder::with_capacity(rows) => DataType::Float64, REQUIRED;
    reward_source: StringBuilder =
        StringBuilder::with_capacity(rows, rows * 8) => DataType::Utf8, REQUIRED;
    step_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
    reward_lsn: UInt64Builder = UInt64Builder::with_capacity(rows) => DataType::UInt64, REQUIRED;
}

/// The columns of the `trl_sft` view.
pub fn sft_schema() -> SchemaRef {
    SftColumns::schema()
}

/// Builders of the `trl_sft` columns: steps whose reward is verified and was logged in range.
pub struct SftRows {
    columns: SftColumns,
    /// Scratch space for the `ro_N` ids.
    id_text: String,
}

/// Whether a step is a `trl_sft` row of `(after, to]`: logged by `to`, its reward verified,
/// logged in range and, with training settings, at least `sft_min_reward` (a human reward of
/// 0.5 marked verified is not a demonstration).
pub fn sft_eligible(entry: &StepEntry, after: Lsn, to: Lsn, trainer: &TrainerContext) -> bool {
    let Some(reward) = entry.reward.as_ref() else {
        return false;
    };
    let in_range = reward.lsn > after && reward.lsn <= to && entry.lsn <= to;
    let enough = trainer
        .training
        .as_ref()
        .is_none_or(|settings| reward.event.value >= settings.sft.min_reward);
    reward.event.verified && in_range && enough
}

/// What the model is trained to answer: the step in the actor's output format, rendered
/// canonically (`docs/output-format.md`): its reasoning (if recorded) in `<think>`, the action
/// in `<action>`, the state update (if any) in `<state_update>`. So the model learns the tags
/// and the state updates the parser reads, not a JSON transcription of them.
pub fn assistant_text(
    think: Option<&str>,
    action: &Action,
    state_update: Option<&AgentState>,
) -> String {
    let update = state_update.map(|update| StateUpdateFields::from(update.clone()));
    crate::domain::output_format::render(
        think.filter(|think| !think.is_empty()),
        &ActionRequest::from(action.clone()),
        update.as_ref(),
    )
}

impl StepRows for SftRows {
    fn with_capacity(rows: usize) -> Self {
        SftRows {
            columns: SftColumns::with_capacity(rows),
            id_text: String::new(),
        }
    }

    fn presized(rows: usize, previous: &RecordBatch) -> Self {
        SftRows {
            columns: SftColumns::presized(rows, previous),
            id_text: String::new(),
        }
    }

    fn push(&mut self, entry: &StepEntry, after: Lsn, to: Lsn, context: &StepContext) -> bool {
        let trajectories = context.trajectories;
        if !sft_eligible(entry, after, to, context.trainer) {
            return false;
        }
        let Some(reward) = entry.reward.as_ref() else {
            return false;
        };
        let training = context.trainer.training.as_deref();
        let step = &entry.step;
        let prompt = match (&step.prompt, training) {
            // The prompt the model saw.
            (Some(prompt), _) => prompt.clone(),
            // Without one: the task's instruction and code (a record task) and the state the
            // step acted on, as the system prompt describes the turn.
            (None, Some(_)) => match context.record_prompts.get(&step.task_id) {
                Some(record) => format!("{record}\n\n{}", state_block(&entry.state_before)),
                None => state_block(&entry.state_before),
            },
            // A log without settings keeps version 1's turn: the rendered state alone.
            (None, None) => render(&entry.state_before),
        };
        // A step without an action (a raw output that did not parse) is rewarded 0, never
        // verified, so it never gets here; a verified reward on one is not a demonstration.
        let Some(action) = &step.action else {
            return false;
        };
        let answer = assistant_text(step.think.as_deref(), action, step.state_update.as_ref());
        let columns = &mut self.columns;
        let mut turns = context.trainer.conversation(&prompt);
        turns.push(("assistant", &answer));
        push_message(&mut columns.messages, &turns);
        columns.task_id.append_value(&step.task_id);
        columns.step.append_value(step.step);
        append_id(&mut columns.rollout_id, &mut self.id_text, step.rollout_id);
        // A rollout's group is fixed when it is created, before any of its steps.
        columns.group.append_option(group_of(trajectories, entry));
        columns
            .split
            .append_option(context.splits.get(&step.task_id).copied());
        columns.model.append_value(&step.model);
        columns.policy_version.append_value(&step.policy_version);
        columns.reward.append_value(reward.event.value);
        columns
            .reward_source
            .append_value(source_name(reward.event.source));
        columns.step_lsn.append_value(entry.lsn.0);
        columns.reward_lsn.append_value(reward.lsn.0);
        true
    }

    fn finish(self) -> RecordBatch {
        self.columns.finish()
    }
}
