//! `agentctl events tail [--after LSN] [--follow]`.

use crate::http_client::Client;
use agentd_schemas::Lsn;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print events after an LSN; with --follow, keep printing new ones as they are appended
    Tail {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        follow: bool,
        /// Events per request
        #[arg(long, default_value_t = 1000)]
        limit: u64,
    },
}

pub async fn run(client: &Client, command: EventsCommand, json: bool) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        after,
        follow,
        limit,
    } = command;
    let mut after = Lsn(after);
    loop {
        let wait_ms = if follow { 20_000 } else { 0 };
        let page = client.events(after, limit, wait_ms).await?;
        for event in &page.events {
            if json {
                println!("{event}");
            } else {
                let lsn = event.get("lsn").and_then(|v| v.as_u64()).unwrap_or(0);
                let kind = event.get("type").and_then(|v| v.as_str()).unwrap_or("?");
                let job = event.get("job_id").and_then(|v| v.as_str()).unwrap_or("");
                let lease = event.get("lease_id").and_then(|v| v.as_str()).unwrap_or("");
                let task = event.get("task_id").and_then(|v| v.as_str()).unwrap_or("");
                println!("{lsn:>8} {kind:<26} {job} {lease} {task}");
            }
        }
        let caught_up = page.next_after == after;
        after = page.next_after;
        if caught_up && !follow {
            return Ok(());
        }
    }
}
