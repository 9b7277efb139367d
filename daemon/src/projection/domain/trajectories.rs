//! The trajectory projection: per task, its rollouts (the default one, which the task-level
//! routes record into, then the created ones in id order), each with its steps in step order,
//! each step with the agent state current when it was recorded, its sandbox result and its
//! reward; the groups of rollouts; and the counters behind teacher precision (per model, per
//! model and policy version, per language of the step's action) and the reward distribution.
//!
//! Conflicts are settled by log order: the first `step_recorded` of a (rollout, step) wins, as
//! do the first sandbox result and the first reward of a step, and a fact for a step or rollout
//! not recorded yet is ignored. The sequencer refuses all of these before they reach the log
//! (`crate::domain::decide`), so they occur only in logs written by builds before it decided
//! domain writes; each is counted in [`Ignored`], and replays decide the same.

mod counters;
mod digest;
mod groups;

pub use counters::{
    source_name, Ignored, ModelCounters, RewardCounters, TrajectoryStats,
    REWARD_BUCKET_UPPER_BOUNDS,
};
pub use groups::{advantage, mean_and_std, RolloutSummary};

use crate::domain::dataset::Language;
use crate::domain::step_language::action_language;
use agentd_schemas::events::{
    AgentState, RewardRecorded, RolloutCreated, SandboxResultRecorded, StepRecorded,
};
use agentd_schemas::{Lsn, RolloutId};
use counters::{count_language, count_model, count_policy, FactKind, Unsettled};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Every task's steps and the counters over them.
#[derive(Debug, Default)]
pub struct Trajectories {
    /// Task id to step index to step; `BTreeMap`s give step order and a fixed digest order.
    /// Steps are boxed: a B-tree leaf holds 11 values inline, and an 850-byte step inline made
    /// every task with a few steps cost a 9 KiB leaf (measured: replay of 1M steps spent a third
    /// of its time zeroing fresh pages for them).
    tasks: BTreeMap<String, TaskRollouts>,
    /// The task of each created rollout.
    rollout_tasks: HashMap<RolloutId, String>,
    /// The rollouts of each group, in creation order.
    groups: BTreeMap<String, Vec<RolloutId>>,
    steps: u64,
    sandbox_results: u64,
    models: BTreeMap<String, ModelCounters>,
    /// The same counters per (model, policy version): precision across policy versions.
    policies: BTreeMap<(String, String), ModelCounters>,
    /// The same counters per language of the step's action (`crate::domain::step_language`):
    /// canonical names and `unknown`, so at most 25 keys.
    languages: BTreeMap<&'static str, ModelCounters>,
    rewards: RewardCounters,
    sandbox_outcomes: BTreeMap<&'static str, u64>,
    ignored: Ignored,
}

/// The steps of one rollout, by step index.
pub type Steps = BTreeMap<u32, Box<StepEntry>>;

/// The rollouts of one task.
#[derive(Debug, Default)]
pub struct TaskRollouts {
    /// The default rollout: steps recorded through the task-level routes (and every step of a
    /// log written before rollouts existed).
    pub default: Steps,
    pub rollouts: BTreeMap<RolloutId, Rollout>,
}

/// One created rollout.
#[derive(Debug)]
pub struct Rollout {
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub created: RolloutCreated,
    pub steps: Steps,
    /// Sum of its step rewards, in log order.
    pub reward: f64,
    /// Steps with a reward.
    pub rewarded: u64,
}

/// Where an export resumes: after this step of this rollout (`None`: the default one).
pub type StepCursor<'a> = (&'a str, Option<RolloutId>, u32);

/// One recorded step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEntry {
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub step: StepRecorded,
    /// The task's agent state when the step was recorded (before the step's own update).
    pub state_before: Arc<AgentState>,
    /// The frame of the last update merged into `state_before`.
    pub state_before_lsn: Lsn,
    /// The language of its action (`None`: unknown), decided once when the step is applied, so
    /// its reward counts under the same language and is not read from the YAML again.
    pub language: Option<Language>,
    pub sandbox: Option<Fact<SandboxResultRecorded>>,
    pub reward: Option<Fact<RewardRecorded>>,
}

/// An event attached to a step, with where it was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact<T> {
    pub lsn: Lsn,
    pub ts_ms: u64,
    pub event: T,
}

impl Trajectories {
    /// Records a created rollout (the first with an id stands).
    pub fn apply_rollout(&mut self, lsn: Lsn, ts_ms: u64, created: RolloutCreated) {
        let id = created.rollout_id;
        if self.rollout_tasks.contains_key(&id) {
            self.ignored.duplicate_rollouts += 1;
            return;
        }
        self.rollout_tasks.insert(id, created.task_id.clone());
        self.groups
            .entry(created.group.clone())
            .or_default()
            .push(id);
        let task = self.tasks.entry(created.task_id.clone()).or_default();
        task.rollouts.insert(
            id,
            Rollout {
                lsn,
                ts_ms,
                created,
                steps: Steps::new(),
                reward: 0.0,
                rewarded: 0,
            },
        );
    }

    /// Records a step logged at `lsn`; `state_before` is its rollout's state at that moment.
    /// Returns false when the step was not kept (already recorded, or an unknown rollout).
    pub fn apply_step(
        &mut self,
        lsn: Lsn,
        ts_ms: u64,
        event: StepRecorded,
        state_before: (Arc<AgentState>, Lsn),
    ) -> bool {
        let steps = match event.rollout_id {
            Some(id) => match rollout_mut(&mut self.tasks, &self.rollout_tasks, id) {
                Some(rollout) => &mut rollout.steps,
                None => {
                    self.ignored.steps_without_rollout += 1;
                    return false;
                }
            },
            // Look up before `entry`, which needs an owned key: most steps belong to a known
            // task.
            None => match self.tasks.get_mut(&event.task_id) {
                Some(task) => &mut task.default,
                None => &mut self.tasks.entry(event.task_id.clone()).or_default().default,
            },
        };
        if steps.contains_key(&event.step) {
            self.ignored.duplicate_steps += 1;
            return false;
        }
        let (state_before, state_before_lsn) = state_before;
        count_model(&mut self.models, &event.model).steps += 1;
        count_policy(&mut self.policies, &event.model, &event.policy_version).steps += 1;
        let language = action_language(event.action.as_ref());
        count_language(&mut self.languages, language).steps += 1;
        steps.insert(
            event.step,
            Box::new(StepEntry {
                lsn,
                ts_ms,
                step: event,
                state_before,
                state_before_lsn,
                language,
                sandbox: None,
                reward: None,
            }),
        );
        self.steps += 1;
        true
    }

    /// Attaches a sandbox result to its step.
    pub fn apply_sandbox(&mut self, lsn: Lsn, ts_ms: u64, event: SandboxResultRecorded) {
        let target = (event.task_id.as_str(), event.rollout_id, event.step);
        let (tasks, ignored) = (&mut self.tasks, &mut self.ignored);
        let found = step_to_settle(
            tasks,
            &self.rollout_tasks,
            ignored,
            target,
            FactKind::Sandbox,
        );
        let Some(entry) = found else {
            return;
        };
        *self
            .sandbox_outcomes
            .entry(event.outcome.as_str())
            .or_default() += 1;
        entry.sandbox = Some(Fact { lsn, ts_ms, event });
        self.sandbox_results += 1;
    }

    /// Attaches a reward to its step and counts it for the step's model, policy and language.
    pub fn apply_reward(&mut self, lsn: Lsn, ts_ms: u64, event: RewardRecorded) {
        let target = (event.task_id.as_str(), event.rollout_id, event.step);
        let (tasks, ignored) = (&mut self.tasks, &mut self.ignored);
        let found = step_to_settle(
            tasks,
            &self.rollout_tasks,
            ignored,
            target,
            FactKind::Reward,
        );
        let Some(entry) = found else {
            return;
        };
        let (step, verified) = (&entry.step, event.verified);
        count_model(&mut self.models, &step.model).count_reward(verified);
        count_policy(&mut self.policies, &step.model, &step.policy_version).count_reward(verified);
        count_language(&mut self.languages, entry.language).count_reward(verified);
        self.rewards.add(&event);
        let (value, rollout_id) = (event.value, event.rollout_id);
        entry.reward = Some(Fact { lsn, ts_ms, event });
        if let Some(rollout) =
            rollout_id.and_then(|id| rollout_mut(&mut self.tasks, &self.rollout_tasks, id))
        {
            rollout.reward += value;
            rollout.rewarded += 1;
        }
    }

    /// The steps of a task's default rollout in step order (empty for a task without any).
    pub fn steps_of(&self, task_id: &str) -> impl Iterator<Item = &StepEntry> {
        self.tasks
            .get(task_id)
            .into_iter()
            .flat_map(|task| task.default.values())
            .map(|entry| &**entry)
    }

    /// Every step in (task id, rollout, step) order, the default rollout of a task first,
    /// starting after `cursor` (from the first step without one). Exports read in batches and
    /// resume from the last step they read.
    pub fn steps_after<'a>(
        &'a self,
        cursor: Option<StepCursor<'_>>,
    ) -> Box<dyn Iterator<Item = &'a StepEntry> + 'a> {
        use std::ops::Bound::{Excluded, Unbounded};
        let Some((task_id, rollout_id, step)) = cursor else {
            return Box::new(self.tasks.values().flat_map(task_steps));
        };
        let rest_of_task: Box<dyn Iterator<Item = &'a StepEntry> + 'a> = match self
            .tasks
            .get(task_id)
        {
            None => Box::new(std::iter::empty()),
            Some(task) => match rollout_id {
                None => Box::new(
                    task.default
                        .range((Excluded(step), Unbounded))
                        .map(|(_, entry)| &**entry)
                        .chain(task.rollouts.values().flat_map(rollout_steps)),
                ),
                Some(id) => Box::new(
                    task.rollouts
                        .get(&id)
                        .into_iter()
                        .flat_map(move |rollout| rollout.steps.range((Excluded(step), Unbounded)))
                        .map(|(_, entry)| &**entry)
                        .chain(
                            task.rollouts
                                .range((Excluded(id), Unbounded))
                                .flat_map(|(_, rollout)| rollout_steps(rollout)),
                        ),
                ),
            },
        };
        let later_tasks = self
            .tasks
            .range::<str, _>((Excluded(task_id), Unbounded))
            .flat_map(|(_, task)| task_steps(task));
        Box::new(rest_of_task.chain(later_tasks))
    }

    /// One step of a rollout (`None`: the task's default rollout).
    pub fn step(
        &self,
        task_id: &str,
        rollout_id: Option<RolloutId>,
        step: u32,
    ) -> Option<&StepEntry> {
        let task = self.tasks.get(task_id)?;
        let steps = match rollout_id {
            Some(id) => &task.rollouts.get(&id)?.steps,
            None => &task.default,
        };
        steps.get(&step).map(|entry| &**entry)
    }

    /// A created rollout.
    pub fn rollout(&self, id: RolloutId) -> Option<&Rollout> {
        let task_id = self.rollout_tasks.get(&id)?;
        self.tasks.get(task_id)?.rollouts.get(&id)
    }

    /// The rollouts of a group in creation order (empty for an unknown group).
    pub fn group_members(&self, group: &str) -> &[RolloutId] {
        self.groups.get(group).map_or(&[], Vec::as_slice)
    }

    /// The reward distribution alone (what `GET /metrics` renders at each scrape), without the
    /// per-model copies [`Trajectories::stats`] makes.
    pub fn rewards(&self) -> &RewardCounters {
        &self.rewards
    }

    pub fn stats(&self) -> TrajectoryStats {
        TrajectoryStats {
            tasks: self.tasks.len() as u64,
            rollouts: self.rollout_tasks.len() as u64,
            groups: self.groups.len() as u64,
            steps: self.steps,
            sandbox_results: self.sandbox_results,
            models: self
                .models
                .iter()
                .map(|(model, counters)| (model.clone(), *counters))
                .collect(),
            policies: self
                .policies
                .iter()
                .map(|(key, counters)| (key.clone(), *counters))
                .collect(),
            languages: self
                .languages
                .iter()
                .map(|(language, counters)| (*language, *counters))
                .collect(),
            rewards: self.rewards.clone(),
            sandbox_outcomes: self.sandbox_outcomes.clone(),
            ignored: self.ignored,
        }
    }
}

fn rollout_mut<'a>(
    tasks: &'a mut BTreeMap<String, TaskRollouts>,
    rollout_tasks: &HashMap<RolloutId, String>,
    id: RolloutId,
) -> Option<&'a mut Rollout> {
    tasks
        .get_mut(rollout_tasks.get(&id)?)?
        .rollouts
        .get_mut(&id)
}

/// The step a sandbox result or reward attaches to, when it has none of that kind yet; one for
/// a step not recorded (or a rollout not created), or for a step that has one, is counted in
/// `ignored` instead.
fn step_to_settle<'a>(
    tasks: &'a mut BTreeMap<String, TaskRollouts>,
    rollout_tasks: &HashMap<RolloutId, String>,
    ignored: &mut Ignored,
    (task_id, rollout_id, step): (&str, Option<RolloutId>, u32),
    kind: FactKind,
) -> Option<&'a mut StepEntry> {
    let Some(entry) = step_mut(tasks, rollout_tasks, task_id, rollout_id, step) else {
        ignored.count(kind, Unsettled::NoStep);
        return None;
    };
    let settled = match kind {
        FactKind::Sandbox => entry.sandbox.is_some(),
        FactKind::Reward => entry.reward.is_some(),
    };
    if settled {
        ignored.count(kind, Unsettled::Duplicate);
        return None;
    }
    Some(entry)
}

fn step_mut<'a>(
    tasks: &'a mut BTreeMap<String, TaskRollouts>,
    rollout_tasks: &HashMap<RolloutId, String>,
    task_id: &str,
    rollout_id: Option<RolloutId>,
    step: u32,
) -> Option<&'a mut StepEntry> {
    let steps = match rollout_id {
        Some(id) => &mut rollout_mut(tasks, rollout_tasks, id)?.steps,
        None => &mut tasks.get_mut(task_id)?.default,
    };
    steps.get_mut(&step).map(|entry| &mut **entry)
}

fn task_steps(task: &TaskRollouts) -> impl Iterator<Item = &StepEntry> {
    task.default
        .values()
        .map(|entry| &**entry)
        .chain(task.rollouts.values().flat_map(rollout_steps))
}

fn rollout_steps(rollout: &Rollout) -> impl Iterator<Item = &StepEntry> {
    rollout.steps.values().map(|entry| &**entry)
}
