//! `agentctl schedules list`: the configured schedules with their next and last run.

use super::output::{format_ms, print_json};
use crate::http_client::Client;
use agentd_schemas::export_api::ScheduleListResponse;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Each schedule: cron, time zone, export, next run, last run and its export
    List,
}

pub async fn run(client: &Client, command: SchedulesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SchedulesCommand::List => {
            let answer: ScheduleListResponse = client.get("/v1/schedules").await?;
            if json {
                return print_json(&answer);
            }
            if answer.schedules.is_empty() {
                println!("no schedules configured ([[schedules]] in agentd.toml)");
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:<16} {:<14} {:<26} {:<26} LAST EXPORT",
                "NAME", "CRON", "TIMEZONE", "KIND", "NEXT RUN", "LAST RUN"
            );
            for schedule in &answer.schedules {
                let last_export = match (&schedule.last_export_id, schedule.last_completed) {
                    (Some(id), true) => id.clone(),
                    (Some(id), false) => format!("{id} (not recorded yet)"),
                    (None, _) => "-".into(),
                };
                println!(
                    "{:<24} {:<16} {:<16} {:<14} {:<26} {:<26} {}",
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    schedule.kind.as_str(),
                    schedule.next_run_ms.map_or_else(|| "-".into(), format_ms),
                    schedule.last_run_ms.map_or_else(|| "-".into(), format_ms),
                    last_export
                );
            }
            Ok(())
        }
    }
}
