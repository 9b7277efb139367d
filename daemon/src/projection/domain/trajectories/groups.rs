//! Rollouts as lists show them, and groups with the group-relative advantage of each rollout.

use super::{Rollout, Steps, Trajectories};
use agentd_schemas::RolloutId;

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

impl Trajectories {
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
