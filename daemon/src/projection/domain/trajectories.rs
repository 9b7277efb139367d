//! The trajectory projection: per task, the recorded steps in step order, each with the agent
//! state current when it was recorded, its sandbox result and its reward; and the counters behind
//! teacher precision and the reward distribution.
//!
//! Conflicts are settled by log order, never by arrival at the API: the first `step_recorded` of
//! a (task, step) wins, as do the first sandbox result and the first reward of a step, and a
//! sandbox result or reward for a step not recorded yet is ignored. The API refuses all of these
//! before writing (409 `conflict`, 404, under a per-task write lock), so they reach the log only
//! from older logs or a write whose apply timed out; each is counted in [`Ignored`], and replays
//! decide the same. The state update logged with an ignored step is ignored with it (see
//! `DomainProjections::apply_record`): a task's state only holds updates of steps it kept.

use super::agent_states::write_state;
use super::digest::DigestStream;
use agentd_schemas::events::{
    Action, AgentState, RewardRecorded, RewardSource, SandboxResultRecorded, StepRecorded,
};
use agentd_schemas::Lsn;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Names the layout of [`Trajectories::digest`].
const DIGEST_VERSION: &str = "agentd.trajectories.v1";

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
    tasks: BTreeMap<String, TaskSteps>,
    steps: u64,
    sandbox_results: u64,
    models: BTreeMap<String, ModelCounters>,
    rewards: RewardCounters,
    sandbox_outcomes: BTreeMap<&'static str, u64>,
    ignored: Ignored,
}

/// The steps of one task, by step index.
type TaskSteps = BTreeMap<u32, Box<StepEntry>>;

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
    /// Verified steps over all steps (the seed's teacher precision); `None` without steps.
    pub fn precision(&self) -> Option<f64> {
        (self.steps > 0).then(|| self.verified as f64 / self.steps as f64)
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
}

/// A snapshot of the counters, for the stats route and the gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryStats {
    pub tasks: u64,
    pub steps: u64,
    pub sandbox_results: u64,
    /// In model name order.
    pub models: Vec<(String, ModelCounters)>,
    pub rewards: RewardCounters,
    pub sandbox_outcomes: BTreeMap<&'static str, u64>,
    pub ignored: Ignored,
}

impl Trajectories {
    /// Records a step logged at `lsn`; `state_before` is the task's state at that moment.
    /// Returns false when the step was already recorded (the later record is ignored).
    pub fn apply_step(
        &mut self,
        lsn: Lsn,
        ts_ms: u64,
        event: StepRecorded,
        state_before: (Arc<AgentState>, Lsn),
    ) -> bool {
        // Look up before `entry`, which needs an owned key: most steps belong to a known task.
        let steps = match self.tasks.get_mut(&event.task_id) {
            Some(steps) => steps,
            None => self.tasks.entry(event.task_id.clone()).or_default(),
        };
        if steps.contains_key(&event.step) {
            self.ignored.duplicate_steps += 1;
            return false;
        }
        let (state_before, state_before_lsn) = state_before;
        count_model(&mut self.models, &event.model).steps += 1;
        steps.insert(
            event.step,
            Box::new(StepEntry {
                lsn,
                ts_ms,
                step: event,
                state_before,
                state_before_lsn,
                sandbox: None,
                reward: None,
            }),
        );
        self.steps += 1;
        true
    }

    /// Attaches a sandbox result to its step.
    pub fn apply_sandbox(&mut self, lsn: Lsn, ts_ms: u64, event: SandboxResultRecorded) {
        let Some(entry) = step_mut(&mut self.tasks, &event.task_id, event.step) else {
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
        let Some(entry) = step_mut(&mut self.tasks, &event.task_id, event.step) else {
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
        self.rewards.add(&event);
        entry.reward = Some(Fact { lsn, ts_ms, event });
    }

    /// The steps of a task in step order (empty for a task without steps).
    pub fn steps_of(&self, task_id: &str) -> impl Iterator<Item = &StepEntry> {
        self.tasks
            .get(task_id)
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|entry| &**entry)
    }

    /// Every step in (task id, step) order, starting after `cursor` (from the first step
    /// without one). Exports read in batches and resume from the last step they read.
    pub fn steps_after<'a>(
        &'a self,
        cursor: Option<(&str, u32)>,
    ) -> Box<dyn Iterator<Item = &'a StepEntry> + 'a> {
        use std::ops::Bound::{Excluded, Unbounded};
        match cursor {
            None => Box::new(
                self.tasks
                    .values()
                    .flat_map(BTreeMap::values)
                    .map(|entry| &**entry),
            ),
            Some((task_id, step)) => {
                let rest_of_task = self
                    .tasks
                    .get(task_id)
                    .into_iter()
                    .flat_map(move |steps| steps.range((Excluded(step), Unbounded)))
                    .map(|(_, entry)| &**entry);
                let later_tasks = self
                    .tasks
                    .range::<str, _>((Excluded(task_id), Unbounded))
                    .flat_map(|(_, steps)| steps.values())
                    .map(|entry| &**entry);
                Box::new(rest_of_task.chain(later_tasks))
            }
        }
    }

    /// One step of a task.
    pub fn step(&self, task_id: &str, step: u32) -> Option<&StepEntry> {
        self.tasks.get(task_id)?.get(&step).map(|entry| &**entry)
    }

    pub fn stats(&self) -> TrajectoryStats {
        TrajectoryStats {
            tasks: self.tasks.len() as u64,
            steps: self.steps,
            sandbox_results: self.sandbox_results,
            models: self
                .models
                .iter()
                .map(|(model, counters)| (model.clone(), *counters))
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
        ] {
            out.number(count);
        }
        out.count(self.tasks.len());
        for (task_id, steps) in &self.tasks {
            out.text(task_id);
            out.count(steps.len());
            for entry in steps.values() {
                write_step(&mut out, entry);
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

fn step_mut<'a>(
    tasks: &'a mut BTreeMap<String, TaskSteps>,
    task_id: &str,
    step: u32,
) -> Option<&'a mut StepEntry> {
    tasks
        .get_mut(task_id)?
        .get_mut(&step)
        .map(|entry| &mut **entry)
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
    out.optional(step.sampling.temperature, DigestStream::float);
    out.optional(step.sampling.top_p, DigestStream::float);
    out.optional(step.sampling.max_tokens, DigestStream::number);
    out.optional(step.sampling.seed, DigestStream::signed);
    out.optional(step.prompt_tokens, DigestStream::number);
    out.optional(step.completion_tokens, DigestStream::number);
    out.optional(step.prompt.as_deref(), DigestStream::text);
    out.optional(step.think.as_deref(), DigestStream::text);
    match &step.action {
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
