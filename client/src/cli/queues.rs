//! `agentctl queues list|pause|resume`.

use super::output::print_json;
use crate::http_client::Client;
use agentd_schemas::api::QueueView;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// Depth by state and the paused flag of every queue
    List,
    /// Stop handing out leases from a queue (submits still accepted)
    Pause {
        /// Queue name, as given to submit --queue
        queue: String,
    },
    /// Hand out leases again
    Resume {
        /// Queue name, as given to submit --queue
        queue: String,
    },
}

pub async fn run(client: &Client, command: QueuesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        QueuesCommand::List => {
            let answer = client.queues().await?;
            if json {
                return print_json(&answer);
            }
            print!("{}", queue_table(&answer.queues));
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

/// Job states in the order `queues list` shows them, with their column titles.
const STATE_COLUMNS: [(&str, &str); 6] = [
    ("scheduled", "SCHEDULED"),
    ("queued", "QUEUED"),
    ("leased", "LEASED"),
    ("completed", "COMPLETED"),
    ("dead", "DEAD"),
    ("cancelled", "CANCELLED"),
];

/// The `queues list` table: each column as wide as its longest value or title, so long queue
/// names and large counts keep the columns aligned. Names left-aligned, the rest right-aligned.
pub fn queue_table(queues: &[QueueView]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(queues.len() + 1);
    let mut header = vec!["QUEUE".to_string(), "PAUSED".to_string()];
    header.extend(STATE_COLUMNS.iter().map(|(_, title)| title.to_string()));
    rows.push(header);
    for queue in queues {
        let mut row = vec![
            queue.queue.clone(),
            if queue.paused { "yes" } else { "no" }.to_string(),
        ];
        row.extend(
            STATE_COLUMNS
                .iter()
                .map(|(state, _)| queue.depth.get(*state).copied().unwrap_or(0).to_string()),
        );
        rows.push(row);
    }
    let mut widths = vec![0; rows[0].len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| {
                if column == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        table.push_str(cells.join(" ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, queued: u64) -> QueueView {
        QueueView {
            queue: name.to_string(),
            paused: false,
            depth: [("queued".to_string(), queued)].into_iter().collect(),
        }
    }

    /// Every column starts at the same offset on every line, whatever the name lengths.
    #[test]
    fn columns_stay_aligned_with_long_queue_names_and_large_counts() {
        let long_name = "rollouts-h100-eval-with-a-long-name";
        let table = queue_table(&[queue("q", 1), queue(long_name, 12_345_678_901)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[2].starts_with(long_name), "{table}");
        // Right-aligned columns end where their title ends.
        let queued_end = lines[0].find("QUEUED").unwrap() + "QUEUED".len();
        let paused_end = lines[0].find("PAUSED").unwrap() + "PAUSED".len();
        for line in &lines[1..] {
            assert_eq!(&line[paused_end - 2..paused_end], "no", "{table}");
        }
        assert_eq!(&lines[1][queued_end - 1..queued_end], "1", "{table}");
        assert_eq!(
            &lines[2][queued_end - "12345678901".len()..queued_end],
            "12345678901",
            "{table}"
        );
        // The name column is as wide as the longest name, plus one space.
        assert_eq!(lines[0].find("PAUSED"), Some(long_name.len() + 1));
    }
}
