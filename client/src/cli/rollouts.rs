//! `agentctl rollouts list TASK|show RO|state RO` and `agentctl groups show GROUP`: a task's rollouts
//! with their rewards and group-relative advantages, one rollout's steps (printed as
//! `trajectories show` prints them), and a group's mean, standard deviation and advantages.

use super::output::{format_ms, print_json};
use super::trajectories::{print_step, wire_name};
use crate::http_client::Client;
use agentd_schemas::domain_api::{RolloutSummary, RolloutView};
use agentd_schemas::RolloutId;
use clap::Subcommand;

/// Most pages of steps fetched for one `rollouts show` (each holds up to
/// [`ROLLOUT_PAGE_STEPS`] steps).
const ROLLOUT_PAGES_MAX: usize = 1000;
/// Steps asked for per page (the daemon's page maximum).
const ROLLOUT_PAGE_STEPS: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum RolloutsCommand {
    /// A task's rollouts: the default one (steps posted to the task routes) first, then in
    /// creation order, each with its group, reward and advantage in the group
    List {
        /// Task id, as given to submit --task-id or the task routes
        task_id: String,
    },
    /// One rollout: who sampled it, its group and reward, then every step with its state
    /// before, sandbox result and reward
    Show {
        /// Rollout id, ro_N
        rollout_id: RolloutId,
    },
    /// A rollout's own agent state as its prompt sees it: rendered text, token count and the
    /// LSN of its last update (it starts as the task's state when the rollout was created)
    State {
        /// Rollout id, ro_N
        rollout_id: RolloutId,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// A group's rollouts with their rewards, the mean and sample standard deviation of the
    /// scored ones (a reward on some step), and each scored rollout's advantage (reward - mean) / std
    Show {
        /// Group name, as given to submit --group or to the rollout route
        group: String,
    },
}

pub async fn run(client: &Client, command: RolloutsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        RolloutsCommand::List { task_id } => {
            let answer = client.task_rollouts(&task_id).await?;
            if json {
                return print_json(&answer);
            }
            if answer.rollouts.is_empty() {
                println!("task {task_id}: no rollouts and no steps");
                return Ok(());
            }
            print_summaries(&answer.rollouts, Column::Group);
            Ok(())
        }
        RolloutsCommand::Show { rollout_id } => {
            let rollout = full_rollout(client, rollout_id).await?;
            if json {
                return print_json(&rollout);
            }
            print_rollout_header(&rollout);
            if rollout.steps.is_empty() {
                println!("\nno steps recorded");
            }
            for step in &rollout.steps {
                println!();
                print_step(step);
            }
            Ok(())
        }
        RolloutsCommand::State { rollout_id } => {
            let view = client.rollout_state(rollout_id).await?;
            if json {
                return print_json(&view);
            }
            super::state::print_view(&view);
            Ok(())
        }
    }
}

pub async fn run_groups(client: &Client, command: GroupsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        GroupsCommand::Show { group } => {
            let answer = client.group(&group).await?;
            if json {
                return print_json(&answer);
            }
            let task = answer
                .rollouts
                .first()
                .map_or("-", |rollout| rollout.task_id.as_str());
            println!(
                "group {} · task {task} · {} ({} scored) · mean reward {} · std {}\n",
                answer.group,
                count(answer.rollouts.len(), "rollout", "rollouts"),
                answer.scored,
                number(answer.mean),
                number(answer.std)
            );
            print_summaries(&answer.rollouts, Column::Task);
            Ok(())
        }
    }
}

/// Every page of the rollout's steps, as one answer of the same shape (`next_after` absent).
async fn full_rollout(client: &Client, rollout_id: RolloutId) -> anyhow::Result<RolloutView> {
    let mut all = client
        .rollout(rollout_id, None, Some(ROLLOUT_PAGE_STEPS))
        .await?;
    let mut pages = 1;
    while let Some(after) = all.next_after.take() {
        if pages >= ROLLOUT_PAGES_MAX {
            anyhow::bail!(
                "rollout {rollout_id} has more than {ROLLOUT_PAGES_MAX} pages of steps; use the API with `after`"
            );
        }
        let page = client
            .rollout(rollout_id, Some(after), Some(ROLLOUT_PAGE_STEPS))
            .await?;
        all.steps.extend(page.steps);
        all.next_after = page.next_after;
        pages += 1;
    }
    Ok(all)
}

fn print_rollout_header(rollout: &RolloutView) {
    println!(
        "rollout {} · task {} · group {}",
        rollout.rollout_id, rollout.task_id, rollout.group
    );
    let sampling = &rollout.sampling;
    let mut sampled = Vec::new();
    if let Some(temperature) = sampling.temperature {
        sampled.push(format!("temperature {temperature}"));
    }
    if let Some(top_p) = sampling.top_p {
        sampled.push(format!("top_p {top_p}"));
    }
    if let Some(max_tokens) = sampling.max_tokens {
        sampled.push(format!("max_tokens {max_tokens}"));
    }
    if let Some(seed) = sampling.seed {
        sampled.push(format!("seed {seed}"));
    }
    let mut line = format!(
        "  model {} (policy {})",
        rollout.model, rollout.policy_version
    );
    if !sampled.is_empty() {
        line.push_str(&format!(" · {}", sampled.join(", ")));
    }
    println!("{line}");
    let mut line = format!(
        "  created {} · lsn {} · state from {}",
        format_ms(rollout.ts_ms),
        rollout.lsn,
        wire_name(&rollout.state_from)
    );
    if let Some(job_id) = rollout.job_id {
        line.push_str(&format!(" · {job_id}"));
    }
    if let Some(lease_id) = rollout.lease_id {
        line.push_str(&format!(" {lease_id}"));
    }
    if let Some(attempt) = rollout.attempt {
        line.push_str(&format!(" attempt {attempt}"));
    }
    if let Some(worker_id) = &rollout.worker_id {
        line.push_str(&format!(" on {worker_id}"));
    }
    println!("{line}");
    let rewarded = rollout
        .steps
        .iter()
        .filter(|step| step.reward.is_some())
        .count();
    println!(
        "  {} ({rewarded} rewarded) · reward {}",
        count(rollout.steps.len(), "step", "steps"),
        number(rollout.reward)
    );
}

/// The second column of a rollout table: the group (a task's list) or the task (a group's).
#[derive(Debug, Clone, Copy)]
enum Column {
    Group,
    Task,
}

fn print_summaries(rollouts: &[RolloutSummary], second: Column) {
    let second_name = match second {
        Column::Group => "GROUP",
        Column::Task => "TASK",
    };
    println!(
        "{:<12} {:<24} {:<24} {:<12} {:<12} {:>6} {:>9} {:>9} {:>10}",
        "ROLLOUT",
        second_name,
        "MODEL",
        "POLICY",
        "JOB",
        "STEPS",
        "REWARDED",
        "REWARD",
        "ADVANTAGE"
    );
    for rollout in rollouts {
        let id = rollout
            .rollout_id
            .map_or_else(|| "(default)".to_owned(), |id| id.to_string());
        let second_value = match second {
            Column::Group => rollout.group.clone().unwrap_or_else(|| "-".to_owned()),
            Column::Task => rollout.task_id.clone(),
        };
        let job = rollout
            .job_id
            .map_or_else(|| "-".to_owned(), |job| job.to_string());
        let advantage = rollout.advantage.map_or_else(|| "-".to_owned(), number);
        // The daemon answers 0 for a rollout without rewards; "-" tells it from a reward of 0.
        let reward = match rollout.rewarded {
            0 => "-".to_owned(),
            _ => number(rollout.reward),
        };
        println!(
            "{:<12} {:<24} {:<24} {:<12} {:<12} {:>6} {:>9} {:>9} {:>10}",
            id,
            second_value,
            rollout.model,
            rollout.policy_version,
            job,
            rollout.steps,
            rollout.rewarded,
            reward,
            advantage
        );
    }
}

/// A reward, mean or advantage with three decimals (`1.000`, `-0.707`). Adding 0.0 turns a
/// negative zero (an empty float sum is -0.0) into 0.0, so it does not print as `-0.000`.
fn number(value: f64) -> String {
    format!("{:.3}", value + 0.0)
}

/// `1 step`, `3 steps`.
fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        _ => format!("{n} {many}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_three_decimals_and_no_negative_zero() {
        assert_eq!(number(-0.0), "0.000");
        assert_eq!(number(std::f64::consts::FRAC_1_SQRT_2), "0.707");
        assert_eq!(number(-1.0), "-1.000");
        assert_eq!(count(1, "step", "steps"), "1 step");
        assert_eq!(count(0, "step", "steps"), "0 steps");
    }
}
