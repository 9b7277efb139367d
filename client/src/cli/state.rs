//! `agentctl state show|history TASK`: a task's agent state as the prompt sees it, and every
//! update with its LSN.

use super::output::{format_ms, print_json};
use crate::http_client::Client;
use agentd_schemas::domain_api::{
    StateHistoryEntry, StateHistoryResponse, TaskStateView, TrimmedView,
};
use agentd_schemas::events::AgentState;
use clap::Subcommand;

/// Most history pages fetched for one command (each holds up to 1000 updates).
const HISTORY_PAGES_MAX: usize = 1000;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// The current state: rendered text, token count and the LSN of the last update
    Show {
        /// Task id, as given to submit --task-id or the task routes
        task_id: String,
    },
    /// Every update in log order, with its LSN and what its merge trimmed
    History {
        /// Task id, as given to submit --task-id or the task routes
        task_id: String,
    },
}

pub async fn run(client: &Client, command: StateCommand, json: bool) -> anyhow::Result<()> {
    match command {
        StateCommand::Show { task_id } => {
            let view = client.task_state(&task_id).await?;
            if json {
                return print_json(&view);
            }
            print_view(&view);
            Ok(())
        }
        StateCommand::History { task_id } => {
            let history = full_history(client, &task_id).await?;
            if json {
                return print_json(&history);
            }
            if history.updates.is_empty() {
                println!("task {task_id}: no state updates yet");
                return Ok(());
            }
            println!(
                "{:<8} {:<24} {:<10} {:>6}  UPDATE",
                "LSN", "TIME", "LEASE", "TOKENS"
            );
            for entry in &history.updates {
                print_entry(entry);
            }
            Ok(())
        }
    }
}

/// A task's or a rollout's state: a heading line, then the rendered text the prompt sees.
pub(super) fn print_view(view: &TaskStateView) {
    let whose = match view.rollout_id {
        Some(rollout_id) => format!("rollout {rollout_id} of task {}", view.task_id),
        None => format!("task {}", view.task_id),
    };
    if view.updates == 0 {
        println!("{whose}: no state updates yet (empty state)");
        return;
    }
    println!(
        "{whose} · lsn {} · {} updates · {} tokens ({})\n",
        view.lsn, view.updates, view.tokens, view.encoding
    );
    print!("{}", view.rendered);
}

/// Every page of the history, as one answer.
async fn full_history(client: &Client, task_id: &str) -> anyhow::Result<StateHistoryResponse> {
    let mut all = client.task_state_history(task_id, None).await?;
    let mut pages = 1;
    while let Some(after) = all.next_after.take() {
        if pages >= HISTORY_PAGES_MAX {
            anyhow::bail!("task {task_id} has more than {HISTORY_PAGES_MAX} pages of history; use the API with `after`");
        }
        let page = client.task_state_history(task_id, Some(after)).await?;
        all.updates.extend(page.updates);
        all.next_after = page.next_after;
        pages += 1;
    }
    Ok(all)
}

fn print_entry(entry: &StateHistoryEntry) {
    let lease = entry
        .lease_id
        .map_or_else(|| "-".to_owned(), |lease| lease.to_string());
    println!(
        "{:<8} {:<24} {:<10} {:>6}  {}",
        entry.lsn.to_string(),
        format_ms(entry.ts_ms),
        lease,
        entry.tokens,
        describe_update(&entry.update)
    );
    for trimmed in &entry.trimmed {
        println!("{:>52}{}", "", describe_trim(trimmed));
    }
}

/// `goals+2 history+1 next_focus`: how many items each field of the update carried.
fn describe_update(update: &AgentState) -> String {
    let mut parts = Vec::new();
    for (name, items) in [
        ("goals", &update.goals),
        ("constraints", &update.constraints),
        ("decisions", &update.decisions),
        ("hypotheses", &update.hypotheses),
        ("history", &update.history),
        ("open_issues", &update.open_issues),
    ] {
        if !items.is_empty() {
            parts.push(format!("{name}+{}", items.len()));
        }
    }
    if update.next_focus.is_some() {
        parts.push("next_focus".to_owned());
    }
    if parts.is_empty() {
        "(empty)".to_owned()
    } else {
        parts.join(" ")
    }
}

fn describe_trim(trimmed: &TrimmedView) -> String {
    format!(
        "trimmed {} {:?} ({}, {})",
        wire_name(&trimmed.field),
        shorten(&trimmed.item, 60),
        wire_name(&trimmed.reason),
        wire_name(&trimmed.action)
    )
}

/// The name an enum has on the wire (`open_issues`, `history_cap`), from its serde form.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

fn shorten(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(chars_max.saturating_sub(1)).collect();
    short.push('…');
    short
}
