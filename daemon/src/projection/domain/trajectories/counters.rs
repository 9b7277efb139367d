//! The counters behind teacher precision (per model, per model and policy version, per language
//! of the step's action), the reward distribution, and the events that did not apply.

use crate::domain::dataset::Language;
use crate::domain::step_language::language_key;
use agentd_schemas::events::{RewardRecorded, RewardSource};
use std::collections::BTreeMap;

/// Inclusive upper bounds of the reward buckets; one more bucket holds everything above the last.
/// Rewards are usually in `[0, 1]`, so that range gets tenths; negative rewards (penalties) get
/// three coarse buckets.
pub const REWARD_BUCKET_UPPER_BOUNDS: [f64; 13] = [
    -1.0, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
];

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

    /// Counts a reward of one of its steps.
    pub(super) fn count_reward(&mut self, verified: bool) {
        self.rewarded += 1;
        if verified {
            self.verified += 1;
        }
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

impl RewardCounters {
    pub(super) fn add(&mut self, reward: &RewardRecorded) {
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

/// Which fact of a step an event that did not apply was.
#[derive(Debug, Clone, Copy)]
pub(super) enum FactKind {
    Sandbox,
    Reward,
}

/// Why a sandbox result or reward did not apply.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unsettled {
    /// Its step was not recorded (or its rollout not created).
    NoStep,
    /// Its step already has one.
    Duplicate,
}

impl Ignored {
    /// Counts a sandbox result or reward that did not apply.
    pub(super) fn count(&mut self, kind: FactKind, why: Unsettled) {
        let counter = match (kind, why) {
            (FactKind::Sandbox, Unsettled::NoStep) => &mut self.sandbox_results_without_step,
            (FactKind::Sandbox, Unsettled::Duplicate) => &mut self.duplicate_sandbox_results,
            (FactKind::Reward, Unsettled::NoStep) => &mut self.rewards_without_step,
            (FactKind::Reward, Unsettled::Duplicate) => &mut self.duplicate_rewards,
        };
        *counter += 1;
    }
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

/// The counters of a model, looked up before inserting (an owned key costs an allocation).
pub(super) fn count_model<'a>(
    models: &'a mut BTreeMap<String, ModelCounters>,
    model: &str,
) -> &'a mut ModelCounters {
    if !models.contains_key(model) {
        models.insert(model.to_string(), ModelCounters::default());
    }
    models.get_mut(model).expect("inserted above")
}

/// The counters of a (model, policy version), looked up before inserting.
pub(super) fn count_policy<'a>(
    policies: &'a mut BTreeMap<(String, String), ModelCounters>,
    model: &str,
    policy_version: &str,
) -> &'a mut ModelCounters {
    let key = (model.to_owned(), policy_version.to_owned());
    policies.entry(key).or_default()
}

/// The counters of a step language (no allocation: the keys are static names).
pub(super) fn count_language<'a>(
    languages: &'a mut BTreeMap<&'static str, ModelCounters>,
    language: Option<Language>,
) -> &'a mut ModelCounters {
    languages.entry(language_key(language)).or_default()
}
