//! Prometheus gauges over the trajectory projection: teacher precision and step counts per
//! model (and precision per model and policy version, and per language of the steps'
//! actions), sandbox results per outcome, reward
//! counts per source. A periodic task publishes them from a
//! snapshot, so the projector (which must stay pure and fast) never touches the recorder.
//!
//! The reward values are a Prometheus histogram (`agentd_reward_value`) that no recorder can
//! hold: its buckets, sum and count are the projection's own counters, replayed at start, so
//! [`render_reward_histogram`] writes them at each scrape.

use super::trajectories::{RewardCounters, TrajectoryStats, REWARD_BUCKET_UPPER_BOUNDS};
use super::DomainProjections;
use crate::metrics_catalog::{REWARD_SOURCES, REWARD_VALUE_HISTOGRAM, SANDBOX_OUTCOMES};
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
        // Partial counts while the projections load after a restart are not published.
        if !domain.is_loaded() {
            continue;
        }
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
    for outcome in SANDBOX_OUTCOMES {
        let count = stats.sandbox_outcomes.get(outcome).copied().unwrap_or(0);
        metrics::gauge!("agentd_sandbox_results", "outcome" => *outcome).set(count as f64);
    }
    let rewards = &stats.rewards;
    for source in REWARD_SOURCES {
        let count = rewards.by_source.get(source).copied().unwrap_or(0);
        metrics::gauge!("agentd_rewards", "source" => *source).set(count as f64);
    }
    metrics::gauge!("agentd_rewards_verified").set(rewards.verified as f64);
}

/// Appends the `agentd_reward_value` histogram in the Prometheus text format: cumulative
/// buckets at [`REWARD_BUCKET_UPPER_BOUNDS`] (inclusive, as `le` is) and `+Inf`, the sum of the
/// values and their count.
pub fn render_reward_histogram(rewards: &RewardCounters, out: &mut String) {
    let name = REWARD_VALUE_HISTOGRAM;
    let help = crate::metrics_catalog::family(name).map_or("", |family| family.help);
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
    let mut cumulative = 0;
    for (position, count) in rewards.buckets.iter().enumerate() {
        cumulative += count;
        let upper = REWARD_BUCKET_UPPER_BOUNDS
            .get(position)
            .map_or_else(|| "+Inf".to_owned(), |upper| upper.to_string());
        out.push_str(&format!("{name}_bucket{{le=\"{upper}\"}} {cumulative}\n"));
    }
    out.push_str(&format!(
        "{name}_sum {}\n{name}_count {}\n\n",
        rewards.sum, rewards.count
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reward_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let mut rewards = RewardCounters::default();
        // -2 (below every bound), 0 twice, 0.55 and 1.5 (above the last bound).
        rewards.buckets[0] = 1;
        rewards.buckets[2] = 2;
        rewards.buckets[8] = 1;
        rewards.buckets[13] = 1;
        rewards.sum = 0.05;
        rewards.count = 5;
        let mut text = String::new();
        render_reward_histogram(&rewards, &mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# HELP agentd_reward_value Values of the rewards"));
        assert_eq!(lines[1], "# TYPE agentd_reward_value histogram");
        assert_eq!(
            lines[2..].join("\n"),
            [
                r#"agentd_reward_value_bucket{le="-1"} 1"#,
                r#"agentd_reward_value_bucket{le="-0.5"} 1"#,
                r#"agentd_reward_value_bucket{le="0"} 3"#,
                r#"agentd_reward_value_bucket{le="0.1"} 3"#,
                r#"agentd_reward_value_bucket{le="0.2"} 3"#,
                r#"agentd_reward_value_bucket{le="0.3"} 3"#,
                r#"agentd_reward_value_bucket{le="0.4"} 3"#,
                r#"agentd_reward_value_bucket{le="0.5"} 3"#,
                r#"agentd_reward_value_bucket{le="0.6"} 4"#,
                r#"agentd_reward_value_bucket{le="0.7"} 4"#,
                r#"agentd_reward_value_bucket{le="0.8"} 4"#,
                r#"agentd_reward_value_bucket{le="0.9"} 4"#,
                r#"agentd_reward_value_bucket{le="1"} 4"#,
                r#"agentd_reward_value_bucket{le="+Inf"} 5"#,
                "agentd_reward_value_sum 0.05",
                "agentd_reward_value_count 5",
                "", // a blank line ends the family, as the exporter's do
            ]
            .join("\n")
        );
    }
}
