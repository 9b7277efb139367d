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

use super::agent_states::write_state;
use super::digest::DigestStream;
use crate::domain::dataset::Language;
use crate::domain::step_language::{action_language, language_key};
use agentd_schemas::events::{
    Action, AgentState, RewardRecorded, RewardSource, RolloutCreated, SandboxResultRecorded,
    StepRecorded,
};
use agentd_schemas::{Lsn, RolloutId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Names the layout of [`Trajectories::digest`].
const DIGEST_VERSION: &str = "agentd.trajectories.v2";

/// Inclusive upper bounds of the reward buckets; one more bucket holds everything above the last.
/// Rewards are usually in `[0, 1]`, so that range gets tenths; negative rewards (penalties) get
/// three coarse buckets.
pub const REWARD_BUCKET_UPPER_BOUNDS: [f64; 13] = [
    -1.0, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
];

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

/// A rollout's steps and reward, for lists: the default rollout has no id and no group.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSummary {
    pub rollout_id: Option<RolloutId>,
    pub task_id: String,
    pub group: Option<String>,
    pub model: String,
    pub policy_version: String,
    pub job_id: Option<agentd_schemas::JobId>,
    pub steps: u64,
    pub rewarded: u64,
    pub reward: f64,
}

/// The rollouts of a group with the group-relative advantage of each, as GRPO computes it:
/// `(reward - mean) / std`, where `std` is the sample standard deviation (n - 1, like
/// `torch.std`), and 0 when `std` is 0 (one rollout, or all rewards equal). Only **scored**
/// rollouts (at least one step rewarded) count and get an advantage: a sample still running has
/// none yet and does not move the others'.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScores {
    pub mean: f64,
    pub std: f64,
    /// Scored rollouts.
    pub scored: u64,
    /// Every rollout of the group in creation order, with its advantage when scored.
    pub rollouts: Vec<(RolloutSummary, Option<f64>)>,
}

impl GroupScores {
    /// The advantage of one of the group's rollouts (`None` when it is not scored yet).
    pub fn advantage_of(&self, rollout_id: RolloutId) -> Option<f64> {
        self.rollouts
            .iter()
            .find(|(summary, _)| summary.rollout_id == Some(rollout_id))
            .and_then(|(_, advantage)| *advantage)
    }
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

/// Steps and rewards of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelCounters {
    pub steps: u64,
    /// Steps with a reward.
    pub rewarded: u64,
    /// Steps with a verified reward.
    pub verified: u64,
}

impl ModelCounters {
    /// Verified steps over steps with a verdict (the seed's teacher precision): a step still
    /// waiting for its reward is not counted as a failure. `None` before the first verdict.
    pub fn precision(&self) -> Option<f64> {
        (self.rewarded > 0).then(|| self.verified as f64 / self.rewarded as f64)
    }
}

/// The reward distribution.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RewardCounters {
    pub count: u64,
    pub verified: u64,
    pub by_source: BTreeMap<&'static str, u64>,
    /// Sum of values in log order (so the mean is the same on every replay).
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Counts per bucket of [`REWARD_BUCKET_UPPER_BOUNDS`], plus one for values above the last.
    pub buckets: [u64; REWARD_BUCKET_UPPER_BOUNDS.len() + 1],
}

/// Events that reached the log but did not apply (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored {
    pub duplicate_steps: u64,
    pub duplicate_sandbox_results: u64,
    pub duplicate_rewards: u64,
    pub sandbox_results_without_step: u64,
    pub rewards_without_step: u64,
    /// A second `rollout_created` with an id already used.
    pub duplicate_rollouts: u64,
    /// A step naming a rollout that was never created.
    pub steps_without_rollout: u64,
}

/// A snapshot of the counters, for the stats route and the gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryStats {
    pub tasks: u64,
    pub rollouts: u64,
    pub groups: u64,
    pub steps: u64,
    pub sandbox_results: u64,
    /// In model name order.
    pub models: Vec<(String, ModelCounters)>,
    /// Per (model, policy version), in that order.
    pub policies: Vec<((String, String), ModelCounters)>,
    /// Per language of the step's action (canonical name or `unknown`), in name order.
    pub languages: Vec<(&'static str, ModelCounters)>,
    pub rewards: RewardCounters,
    pub sandbox_outcomes: BTreeMap<&'static str, u64>,
    pub ignored: Ignored,
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
        let found = step_mut(
            &mut self.tasks,
            &self.rollout_tasks,
            &event.task_id,
            event.rollout_id,
            event.step,
        );
        let Some(entry) = found else {
            self.ignored.sandbox_results_without_step += 1;
            return;
        };
        if entry.sandbox.is_some() {
            self.ignored.duplicate_sandbox_results += 1;
            return;
        }
        *self
            .sandbox_outcomes
            .entry(event.outcome.as_str())
            .or_default() += 1;
        entry.sandbox = Some(Fact { lsn, ts_ms, event });
        self.sandbox_results += 1;
    }

    /// Attaches a reward to its step and counts it for the step's model.
    pub fn apply_reward(&mut self, lsn: Lsn, ts_ms: u64, event: RewardRecorded) {
        let found = step_mut(
            &mut self.tasks,
            &self.rollout_tasks,
            &event.task_id,
            event.rollout_id,
            event.step,
        );
        let Some(entry) = found else {
            self.ignored.rewards_without_step += 1;
            return;
        };
        if entry.reward.is_some() {
            self.ignored.duplicate_rewards += 1;
            return;
        }
        let model = count_model(&mut self.models, &entry.step.model);
        model.rewarded += 1;
        if event.verified {
            model.verified += 1;
        }
        let policy = count_policy(
            &mut self.policies,
            &entry.step.model,
            &entry.step.policy_version,
        );
        policy.rewarded += 1;
        if event.verified {
            policy.verified += 1;
        }
        let language = count_language(&mut self.languages, entry.language);
        language.rewarded += 1;
        if event.verified {
            language.verified += 1;
        }
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

    /// The rollouts of a task: the default one first (when it has steps), then the created
    /// ones in id order.
    pub fn task_rollouts(&self, task_id: &str) -> Vec<RolloutSummary> {
        let Some(task) = self.tasks.get(task_id) else {
            return Vec::new();
        };
        let default = (!task.default.is_empty()).then(|| default_summary(task_id, &task.default));
        default
            .into_iter()
            .chain(task.rollouts.values().map(summary))
            .collect()
    }

    /// The rollouts of a group with their advantages; `None` for a group without rollouts.
    pub fn group(&self, group: &str) -> Option<GroupScores> {
        let ids = self.groups.get(group)?;
        let summaries: Vec<RolloutSummary> = ids
            .iter()
            .filter_map(|id| self.rollout(*id))
            .map(summary)
            .collect();
        let rewards: Vec<f64> = summaries
            .iter()
            .filter(|summary| summary.rewarded > 0)
            .map(|summary| summary.reward)
            .collect();
        let (mean, std) = mean_and_std(&rewards);
        let rollouts = summaries
            .into_iter()
            .map(|summary| {
                let advantage =
                    (summary.rewarded > 0).then(|| advantage(summary.reward, mean, std));
                (summary, advantage)
            })
            .collect();
        Some(GroupScores {
            mean,
            std,
            scored: rewards.len() as u64,
            rollouts,
        })
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

    /// SHA-256 (hex) over every step with its state before, sandbox result and reward, and the
    /// ignored counters. The other counters are functions of the steps, so they are not hashed.
    pub fn digest(&self) -> String {
        let mut out = DigestStream::new(DIGEST_VERSION);
        let ignored = self.ignored;
        for count in [
            ignored.duplicate_steps,
            ignored.duplicate_sandbox_results,
            ignored.duplicate_rewards,
            ignored.sandbox_results_without_step,
            ignored.rewards_without_step,
            ignored.duplicate_rollouts,
            ignored.steps_without_rollout,
        ] {
            out.number(count);
        }
        out.count(self.tasks.len());
        for (task_id, task) in &self.tasks {
            out.text(task_id);
            out.count(task.default.len());
            for entry in task.default.values() {
                write_step(&mut out, entry);
            }
            out.count(task.rollouts.len());
            for (id, rollout) in &task.rollouts {
                let created = &rollout.created;
                out.number(id.0);
                out.number(rollout.lsn.0);
                out.number(rollout.ts_ms);
                out.text(&created.group);
                out.text(&created.model);
                out.text(&created.policy_version);
                write_sampling(&mut out, &created.sampling);
                out.optional(created.job_id, |out, job| out.number(job.0));
                out.optional(created.lease_id, |out, lease| out.number(lease.0));
                out.optional(created.attempt, |out, attempt| {
                    out.number(u64::from(attempt))
                });
                out.optional(created.worker_id.as_deref(), DigestStream::text);
                out.flag(created.state_from == agentd_schemas::events::StateFrom::Empty);
                out.count(rollout.steps.len());
                for entry in rollout.steps.values() {
                    write_step(&mut out, entry);
                }
            }
        }
        out.finish()
    }
}

impl RewardCounters {
    fn add(&mut self, reward: &RewardRecorded) {
        self.count += 1;
        if reward.verified {
            self.verified += 1;
        }
        *self
            .by_source
            .entry(source_name(reward.source))
            .or_default() += 1;
        let value = reward.value;
        self.sum += value;
        self.min = Some(self.min.map_or(value, |min| min.min(value)));
        self.max = Some(self.max.map_or(value, |max| max.max(value)));
        let bucket = REWARD_BUCKET_UPPER_BOUNDS
            .iter()
            .position(|&upper| value <= upper)
            .unwrap_or(REWARD_BUCKET_UPPER_BOUNDS.len());
        self.buckets[bucket] += 1;
    }

    /// The mean reward; `None` without rewards.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// The wire name of a reward source.
pub fn source_name(source: RewardSource) -> &'static str {
    match source {
        RewardSource::Rule => "rule",
        RewardSource::Teacher => "teacher",
        RewardSource::Human => "human",
    }
}

/// The counters of a model, looked up before inserting (an owned key costs an allocation).
fn count_model<'a>(
    models: &'a mut BTreeMap<String, ModelCounters>,
    model: &str,
) -> &'a mut ModelCounters {
    if !models.contains_key(model) {
        models.insert(model.to_string(), ModelCounters::default());
    }
    models.get_mut(model).expect("inserted above")
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

/// The counters of a (model, policy version), looked up before inserting.
fn count_policy<'a>(
    policies: &'a mut BTreeMap<(String, String), ModelCounters>,
    model: &str,
    policy_version: &str,
) -> &'a mut ModelCounters {
    let key = (model.to_owned(), policy_version.to_owned());
    policies.entry(key).or_default()
}

/// The counters of a step language (no allocation: the keys are static names).
fn count_language<'a>(
    languages: &'a mut BTreeMap<&'static str, ModelCounters>,
    language: Option<Language>,
) -> &'a mut ModelCounters {
    languages.entry(language_key(language)).or_default()
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

fn summary(rollout: &Rollout) -> RolloutSummary {
    let created = &rollout.created;
    RolloutSummary {
        rollout_id: Some(created.rollout_id),
        task_id: created.task_id.clone(),
        group: Some(created.group.clone()),
        model: created.model.clone(),
        policy_version: created.policy_version.clone(),
        job_id: created.job_id,
        steps: rollout.steps.len() as u64,
        rewarded: rollout.rewarded,
        reward: rollout.reward,
    }
}

/// The default rollout's summary: model and policy of its first step.
fn default_summary(task_id: &str, steps: &Steps) -> RolloutSummary {
    let first = steps.values().next().map(|entry| &entry.step);
    let rewards: Vec<f64> = steps
        .values()
        .filter_map(|entry| entry.reward.as_ref().map(|fact| fact.event.value))
        .collect();
    RolloutSummary {
        rollout_id: None,
        task_id: task_id.to_owned(),
        group: None,
        model: first.map(|step| step.model.clone()).unwrap_or_default(),
        policy_version: first
            .map(|step| step.policy_version.clone())
            .unwrap_or_default(),
        job_id: first.and_then(|step| step.job_id),
        steps: steps.len() as u64,
        rewarded: rewards.len() as u64,
        // `Sum` of no floats is -0.0; a rollout without rewards has reward 0.
        reward: rewards.iter().fold(0.0, |sum, value| sum + value),
    }
}

/// Mean and sample standard deviation (n - 1); the deviation is 0 for fewer than two values.
pub fn mean_and_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let variance = values
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    (mean, variance.sqrt())
}

/// `(reward - mean) / std`, 0 when `std` is 0.
pub fn advantage(reward: f64, mean: f64, std: f64) -> f64 {
    if std == 0.0 {
        0.0
    } else {
        (reward - mean) / std
    }
}

fn write_action(out: &mut DigestStream, action: &Action) {
    match action {
        Action::Pattern {
            language,
            pattern,
            rewrite,
        } => {
            out.text("pattern");
            out.text(language);
            out.text(pattern);
            out.text(rewrite);
        }
        Action::Rule { yaml } => {
            out.text("rule");
            out.text(yaml);
        }
    }
}

fn write_sampling(out: &mut DigestStream, sampling: &agentd_schemas::events::Sampling) {
    out.optional(sampling.temperature, DigestStream::float);
    out.optional(sampling.top_p, DigestStream::float);
    out.optional(sampling.max_tokens, DigestStream::number);
    out.optional(sampling.seed, DigestStream::signed);
}

fn write_step(out: &mut DigestStream, entry: &StepEntry) {
    let step = &entry.step;
    out.number(u64::from(step.step));
    out.number(entry.lsn.0);
    out.number(entry.ts_ms);
    out.optional(step.job_id, |out, job| out.number(job.0));
    out.optional(step.lease_id, |out, lease| out.number(lease.0));
    out.optional(step.attempt, |out, attempt| out.number(u64::from(attempt)));
    out.optional(step.worker_id.as_deref(), DigestStream::text);
    out.text(&step.model);
    out.text(&step.policy_version);
    write_sampling(out, &step.sampling);
    out.optional(step.prompt_tokens, DigestStream::number);
    out.optional(step.completion_tokens, DigestStream::number);
    out.optional(step.prompt.as_deref(), DigestStream::text);
    out.optional(step.think.as_deref(), DigestStream::text);
    out.optional(step.action.as_ref(), write_action);
    out.optional(step.raw_output.as_deref(), DigestStream::text);
    out.optional(step.format_error.as_ref(), |out, error| {
        out.text(&error.code);
        out.text(&error.message);
    });
    out.optional(step.state_update.as_ref(), write_state);
    write_state(out, &entry.state_before);
    out.number(entry.state_before_lsn.0);
    out.optional(entry.sandbox.as_ref(), |out, fact| {
        let result = &fact.event;
        out.number(fact.lsn.0);
        out.number(fact.ts_ms);
        out.optional(result.lease_id, |out, lease| out.number(lease.0));
        out.optional(result.exit_code, |out, code| out.signed(i64::from(code)));
        out.text(result.outcome.as_str());
        out.text(&result.diff);
        out.text(&result.stdout);
        out.text(&result.stderr);
        out.optional(result.tests_passed, |out, n| out.number(u64::from(n)));
        out.optional(result.tests_failed, |out, n| out.number(u64::from(n)));
        out.optional(result.duration_ms, DigestStream::number);
        out.optional(result.peak_rss_bytes, DigestStream::number);
    });
    out.optional(entry.reward.as_ref(), |out, fact| {
        let reward = &fact.event;
        out.number(fact.lsn.0);
        out.number(fact.ts_ms);
        out.optional(reward.lease_id, |out, lease| out.number(lease.0));
        out.float(reward.value);
        out.flag(reward.verified);
        out.count(reward.components.len());
        for (name, value) in &reward.components {
            out.text(name);
            out.float(*value);
        }
        out.text(source_name(reward.source));
    });
}
