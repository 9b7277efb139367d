//! `agentctl trajectories show TASK|stats`: a task's steps with their state before, sandbox
//! result and reward; teacher precision per model, per model and policy version and per action
//! language, and the reward distribution. `rollouts show` prints its steps with [`print_step`]
//! too.

use super::output::print_json;
use crate::http_client::Client;
use agentd_schemas::domain_api::{
    RewardDistributionView, RewardView, SandboxView, TrajectoryResponse, TrajectoryStatsResponse,
    TrajectoryStep,
};
use agentd_schemas::events::{Action, AgentState};
use clap::Subcommand;

/// Most trajectory pages fetched for one command (each holds up to 100 steps).
const TRAJECTORY_PAGES_MAX: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum TrajectoriesCommand {
    /// A task's steps in order (its default rollout: steps posted to the task routes), each
    /// with the state before it, its sandbox result and reward; `rollouts list` shows the rest
    Show {
        /// Task id, as given to submit --task-id or the task routes
        task_id: String,
    },
    /// Teacher precision (verified / judged steps) per model, per model and policy version and
    /// per action language; reward distribution, sandbox outcomes
    Stats,
}

pub async fn run(client: &Client, command: TrajectoriesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TrajectoriesCommand::Show { task_id } => {
            let trajectory = full_trajectory(client, &task_id).await?;
            if json {
                return print_json(&trajectory);
            }
            if trajectory.steps.is_empty() {
                println!("task {task_id}: no steps recorded");
                return Ok(());
            }
            for step in &trajectory.steps {
                print_step(step);
            }
            Ok(())
        }
        TrajectoriesCommand::Stats => {
            let stats = client.trajectory_stats().await?;
            if json {
                return print_json(&stats);
            }
            print_stats(&stats);
            Ok(())
        }
    }
}

async fn full_trajectory(client: &Client, task_id: &str) -> anyhow::Result<TrajectoryResponse> {
    let mut all = client.trajectory(task_id, None).await?;
    let mut pages = 1;
    while let Some(after) = all.next_after.take() {
        if pages >= TRAJECTORY_PAGES_MAX {
            anyhow::bail!("task {task_id} has more than {TRAJECTORY_PAGES_MAX} pages of steps; use the API with `after`");
        }
        let page = client.trajectory(task_id, Some(after)).await?;
        all.steps.extend(page.steps);
        all.next_after = page.next_after;
        pages += 1;
    }
    Ok(all)
}

/// One step: a header line (step, LSN, model, job, tokens), then its action, state, sandbox
/// result and reward, indented.
pub(super) fn print_step(step: &TrajectoryStep) {
    println!("{}", step_header(step));
    print_action(step);
    if let Some(think) = &step.think {
        let first = think.lines().next().unwrap_or("");
        println!("  think: {first}");
    }
    println!(
        "  state before: {} (lsn {})",
        describe_state(&step.state_before),
        step.state_before_lsn
    );
    if let Some(update) = &step.state_update {
        println!("  state update: {}", describe_state(update));
    }
    print_sandbox(step.sandbox.as_ref());
    print_reward(step.reward.as_ref());
}

/// `step 3 · lsn 120 · model m (policy p) · rollout_1 · job_4 lease_9 attempt 1 · tokens ...`
fn step_header(step: &TrajectoryStep) -> String {
    let mut header = format!(
        "step {} · lsn {} · model {} (policy {})",
        step.step, step.lsn, step.model, step.policy_version
    );
    if let Some(rollout_id) = step.rollout_id {
        header.push_str(&format!(" · {rollout_id}"));
    }
    if let Some(job_id) = step.job_id {
        header.push_str(&format!(" · {job_id}"));
    }
    if let Some(lease_id) = step.lease_id {
        header.push_str(&format!(" {lease_id}"));
    }
    if let Some(attempt) = step.attempt {
        header.push_str(&format!(" attempt {attempt}"));
    }
    if let (Some(prompt), Some(completion)) = (step.prompt_tokens, step.completion_tokens) {
        header.push_str(&format!(" · tokens {prompt} in, {completion} out"));
    }
    header
}

fn print_action(step: &TrajectoryStep) {
    match &step.action {
        Some(Action::Pattern {
            language,
            pattern,
            rewrite,
        }) => println!("  action: pattern [{language}] {pattern:?} -> {rewrite:?}"),
        Some(Action::Rule { yaml }) => {
            println!("  action: rule ({} lines of YAML)", yaml.lines().count())
        }
        None => match &step.format_error {
            Some(error) => println!(
                "  action: none, the output did not parse ({}): {}",
                error.code, error.message
            ),
            None => println!("  action: none"),
        },
    }
}

fn print_sandbox(sandbox: Option<&SandboxView>) {
    match sandbox {
        None => println!("  sandbox: -"),
        Some(sandbox) => {
            let exit = sandbox
                .exit_code
                .map_or_else(|| "no exit code".to_owned(), |code| format!("exit {code}"));
            let mut line = format!("  sandbox: {}, {exit}", sandbox.outcome.as_str());
            if let (Some(passed), Some(failed)) = (sandbox.tests_passed, sandbox.tests_failed) {
                line.push_str(&format!(", tests {passed} passed {failed} failed"));
            }
            if let Some(duration_ms) = sandbox.duration_ms {
                line.push_str(&format!(", {duration_ms} ms"));
            }
            line.push_str(&format!(", diff {} lines", sandbox.diff.lines().count()));
            println!("{line}");
        }
    }
}

fn print_reward(reward: Option<&RewardView>) {
    match reward {
        None => println!("  reward: -"),
        Some(reward) => {
            let components: Vec<String> = reward
                .components
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            println!(
                "  reward: {} {} ({}){}",
                reward.value,
                if reward.verified {
                    "verified"
                } else {
                    "not verified"
                },
                wire_name(&reward.source),
                if components.is_empty() {
                    String::new()
                } else {
                    format!(" {}", components.join(" "))
                }
            );
        }
    }
}

/// `2 goals, 1 history, next focus`: the sizes of a state's fields.
fn describe_state(state: &AgentState) -> String {
    let mut parts = Vec::new();
    for (name, items) in [
        ("goals", &state.goals),
        ("constraints", &state.constraints),
        ("decisions", &state.decisions),
        ("hypotheses", &state.hypotheses),
        ("history", &state.history),
        ("open issues", &state.open_issues),
    ] {
        if !items.is_empty() {
            parts.push(format!("{} {name}", items.len()));
        }
    }
    if state.next_focus.is_some() {
        parts.push("next focus".to_owned());
    }
    if parts.is_empty() {
        "empty".to_owned()
    } else {
        parts.join(", ")
    }
}

fn print_stats(stats: &TrajectoryStatsResponse) {
    let rewards = &stats.rewards;
    println!(
        "{} steps in {} tasks · {} rollouts in {} groups · {} sandbox results · {} rewards ({} verified)\n",
        stats.steps,
        stats.tasks,
        stats.rollouts,
        stats.groups,
        stats.sandbox_results,
        rewards.count,
        rewards.verified
    );
    let models = stats.models.iter().map(|model| {
        let counters = (model.steps, model.rewarded, model.verified);
        (model.model.clone(), counters, model.teacher_precision)
    });
    print_counters("MODEL", models);
    if !stats.policies.is_empty() {
        println!();
        let policies = stats.policies.iter().map(|policy| {
            let name = format!("{} @ {}", policy.model, policy.policy_version);
            let counters = (policy.steps, policy.rewarded, policy.verified);
            (name, counters, policy.teacher_precision)
        });
        print_counters("MODEL @ POLICY VERSION", policies);
    }
    if !stats.languages.is_empty() {
        println!();
        let languages = stats.languages.iter().map(|language| {
            let counters = (language.steps, language.rewarded, language.verified);
            (
                language.language.clone(),
                counters,
                language.teacher_precision,
            )
        });
        print_counters("LANGUAGE", languages);
    }
    print_rewards(rewards);
    let outcomes: Vec<String> = stats
        .sandbox_outcomes
        .iter()
        .map(|(outcome, count)| format!("{outcome} {count}"))
        .collect();
    if !outcomes.is_empty() {
        println!("sandbox outcomes: {}", outcomes.join(", "));
    }
    let ignored = &stats.ignored;
    let ignored_total = ignored.duplicate_steps
        + ignored.duplicate_sandbox_results
        + ignored.duplicate_rewards
        + ignored.sandbox_results_without_step
        + ignored.rewards_without_step
        + ignored.duplicate_rollouts
        + ignored.steps_without_rollout;
    if ignored_total > 0 {
        println!("ignored (racing writers, first in log order won): {ignored:?}");
    }
}

/// The reward distribution: mean, min, max, counts by source and by bucket.
fn print_rewards(rewards: &RewardDistributionView) {
    let number = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    let sources: Vec<String> = rewards
        .by_source
        .iter()
        .map(|(source, count)| format!("{source} {count}"))
        .collect();
    println!(
        "\nrewards: mean {} min {} max {} · by source: {}",
        number(rewards.mean),
        number(rewards.min),
        number(rewards.max),
        sources.join(", ")
    );
    for bucket in &rewards.buckets {
        let lower = bucket
            .lower
            .map_or_else(|| "-inf".to_owned(), |lower| lower.to_string());
        let upper = bucket
            .upper
            .map_or_else(|| "+inf)".to_owned(), |upper| format!("{upper}]"));
        let label = format!("({lower}, {upper}");
        println!("  {label:<14} {}", bucket.count);
    }
}

/// One table of step counters: a name, then steps, rewarded and verified steps and the teacher
/// precision (`-` before the first verdict).
fn print_counters(
    heading: &str,
    rows: impl Iterator<Item = (String, (u64, u64, u64), Option<f64>)>,
) {
    println!(
        "{heading:<32} {:>8} {:>9} {:>9} {:>18}",
        "STEPS", "REWARDED", "VERIFIED", "TEACHER PRECISION"
    );
    for (name, (steps, rewarded, verified), precision) in rows {
        let precision =
            precision.map_or_else(|| "-".to_owned(), |precision| format!("{precision:.3}"));
        println!("{name:<32} {steps:>8} {rewarded:>9} {verified:>9} {precision:>18}");
    }
}

/// The name an enum has on the wire (`rule`, `teacher`), from its serde form.
pub(super) fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}
