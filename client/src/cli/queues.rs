//! `agentctl queues list|pause|resume`.

use super::output::print_json;
use crate::http_client::Client;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// Depth by state and the paused flag of every queue
    List,
    /// Stop handing out leases from a queue (submits still accepted)
    Pause { queue: String },
    /// Hand out leases again
    Resume { queue: String },
}

pub async fn run(client: &Client, command: QueuesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        QueuesCommand::List => {
            let answer = client.queues().await?;
            if json {
                return print_json(&answer);
            }
            println!(
                "{:<20} {:>6} {:>9} {:>8} {:>8} {:>9} {:>6} {:>9}",
                "QUEUE",
                "PAUSED",
                "SCHEDULED",
                "QUEUED",
                "LEASED",
                "COMPLETED",
                "DEAD",
                "CANCELLED"
            );
            for queue in answer.queues {
                let depth = |state: &str| queue.depth.get(state).copied().unwrap_or(0);
                println!(
                    "{:<20} {:>6} {:>9} {:>8} {:>8} {:>9} {:>6} {:>9}",
                    queue.queue,
                    if queue.paused { "yes" } else { "no" },
                    depth("scheduled"),
                    depth("queued"),
                    depth("leased"),
                    depth("completed"),
                    depth("dead"),
                    depth("cancelled")
                );
            }
            Ok(())
        }
        QueuesCommand::Pause { queue } => {
            let answer = client.pause(&queue).await?;
            if json {
                return print_json(&answer);
            }
            println!("{} paused", answer.queue);
            Ok(())
        }
        QueuesCommand::Resume { queue } => {
            let answer = client.resume(&queue).await?;
            if json {
                return print_json(&answer);
            }
            println!("{} resumed", answer.queue);
            Ok(())
        }
    }
}
