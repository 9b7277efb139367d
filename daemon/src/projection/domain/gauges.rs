//! Prometheus gauges over the trajectory projection: teacher precision and step counts per
//! model (and precision per model and policy version, and per language of the steps'
//! actions), sandbox results per outcome, reward
//! counts per source and per value bucket. A periodic task publishes them from a
//! snapshot, so the projector (which must stay pure and fast) never touches the recorder.

use super::trajectories::{TrajectoryStats, REWARD_BUCKET_UPPER_BOUNDS};
use super::DomainProjections;
use std::sync::Arc;
use std::time::Duration;

/// How often the gauges are refreshed.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(2);
/// Models with gauges, in name order: each model adds series, and model names come from clients.
/// Every model is still in `GET /v1/trajectories/stats`.
pub const MODEL_GAUGES_MAX: usize = 64;

/// Refreshes the gauges every [`GAUGE_INTERVAL`] until the task is aborted.
pub async fn publish_gauges(domain: Arc<DomainProjections>) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tick.tick().await;
        // The guard is dropped at the end of the statement, before anything awaits.
        let stats = domain.trajectories().stats();
        publish(&stats);
    }
}

/// Sets every gauge from one snapshot.
pub fn publish(stats: &TrajectoryStats) {
    for (model, counters) in stats.models.iter().take(MODEL_GAUGES_MAX) {
        let label = model.clone();
        metrics::gauge!("agentd_trajectory_steps", "model" => label.clone())
            .set(counters.steps as f64);
        metrics::gauge!("agentd_trajectory_verified_steps", "model" => label.clone())
            .set(counters.verified as f64);
        if let Some(precision) = counters.precision() {
            metrics::gauge!("agentd_teacher_precision", "model" => label).set(precision);
        }
    }
    for ((model, policy_version), counters) in stats.policies.iter().take(MODEL_GAUGES_MAX) {
        if let Some(precision) = counters.precision() {
            metrics::gauge!(
                "agentd_teacher_precision_by_policy",
                "model" => model.clone(),
                "policy_version" => policy_version.clone()
            )
            .set(precision);
        }
    }
    // Languages are canonical names plus `unknown` (at most 25), so they need no cap.
    for (language, counters) in &stats.languages {
        if let Some(precision) = counters.precision() {
            metrics::gauge!("agentd_teacher_precision_by_language", "language" => *language)
                .set(precision);
        }
    }
    for outcome in ["ok", "failed", "timed_out", "killed_oom", "rejected"] {
        let count = stats.sandbox_outcomes.get(outcome).copied().unwrap_or(0);
        metrics::gauge!("agentd_sandbox_results", "outcome" => outcome).set(count as f64);
    }
    let rewards = &stats.rewards;
    for source in ["rule", "teacher", "human"] {
        let count = rewards.by_source.get(source).copied().unwrap_or(0);
        metrics::gauge!("agentd_rewards", "source" => source).set(count as f64);
    }
    metrics::gauge!("agentd_rewards_verified").set(rewards.verified as f64);
    for (position, count) in rewards.buckets.iter().enumerate() {
        let upper = REWARD_BUCKET_UPPER_BOUNDS
            .get(position)
            .map_or_else(|| "+Inf".to_owned(), |upper| upper.to_string());
        metrics::gauge!("agentd_reward_value_bucket", "upper" => upper).set(*count as f64);
    }
}
