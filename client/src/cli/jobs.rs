//! `agentctl jobs list|show|cancel|retry`.

use super::output::{format_ms, print_json};
use crate::http_client::{Client, JobListQuery};
use agentd_schemas::JobId;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, oldest first
    List {
        /// Only jobs of this queue [default: every queue]
        #[arg(long)]
        queue: Option<String>,
        /// scheduled, queued, leased, completed, dead or cancelled
        #[arg(long)]
        state: Option<String>,
        /// Jobs per page (1 to 1000); the last line names the next page when there is one
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this job id (the cursor printed by the previous page)
        #[arg(long)]
        after: Option<JobId>,
    },
    /// Show one job with its full history
    Show {
        /// Job id, as submit prints it (job_42)
        job_id: JobId,
    },
    /// Cancel a scheduled, queued or leased job
    Cancel {
        /// Job id, as submit prints it (job_42)
        job_id: JobId,
    },
    /// Put a dead job back in its queue
    Retry {
        /// Job id, as submit prints it (job_42)
        job_id: JobId,
    },
}

pub async fn run(client: &Client, command: JobsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            queue,
            state,
            limit,
            after,
        } => {
            let page = client
                .jobs(&JobListQuery {
                    queue,
                    state,
                    limit: Some(limit),
                    after,
                })
                .await?;
            if json {
                return print_json(&page);
            }
            println!(
                "{:<14} {:<16} {:<20} {:<10} {:>7} {:>8}",
                "JOB", "QUEUE", "KIND", "STATE", "ATTEMPT", "PRIORITY"
            );
            for job in &page.jobs {
                println!(
                    "{:<14} {:<16} {:<20} {:<10} {:>3}/{:<3} {:>8}",
                    job.job_id.to_string(),
                    job.queue,
                    job.kind,
                    job.state.as_str(),
                    job.attempt,
                    job.max_attempts,
                    job.priority
                );
            }
            if let Some(next) = page.next_after {
                println!("more: agentctl jobs list --after {next}");
            }
            Ok(())
        }
        JobsCommand::Show { job_id } => {
            let job = client.job(job_id).await?;
            if json {
                return print_json(&job);
            }
            println!(
                "{}  {}  queue={} kind={}",
                job.job_id,
                job.state.as_str(),
                job.queue,
                job.kind
            );
            println!(
                "attempt {}/{}  priority {}  submitted {}",
                job.attempt,
                job.max_attempts,
                job.priority,
                format_ms(job.submitted_at_ms)
            );
            if let Some(lease) = &job.lease {
                println!(
                    "leased by {} ({}), expires {}",
                    lease.worker_id,
                    lease.lease_id,
                    format_ms(lease.expires_at_ms)
                );
            }
            println!("payload: {}", job.payload);
            if let Some(result) = &job.result {
                println!("result:  {result}");
            }
            if let Some(error) = &job.last_error {
                println!("last error: {error}");
            }
            println!("history:");
            for entry in job.history.unwrap_or_default() {
                let mut detail = Vec::new();
                if let Some(worker) = entry.worker_id {
                    detail.push(format!("worker={worker}"));
                }
                if let Some(lease) = entry.lease_id {
                    detail.push(format!("lease={lease}"));
                }
                if let Some(attempt) = entry.attempt {
                    detail.push(format!("attempt={attempt}"));
                }
                if let Some(error) = entry.error {
                    detail.push(format!("error={error:?}"));
                }
                if let Some(run_at) = entry.run_at_ms {
                    detail.push(format!("run_at={}", format_ms(run_at)));
                }
                println!(
                    "  lsn {:<8} {} {:<16} {}",
                    entry.lsn.0,
                    format_ms(entry.ts_ms),
                    entry.event,
                    detail.join(" ")
                );
            }
            Ok(())
        }
        JobsCommand::Cancel { job_id } => {
            let answer = client.cancel(job_id).await?;
            if json {
                return print_json(&answer);
            }
            println!("{} cancelled", answer.job_id);
            Ok(())
        }
        JobsCommand::Retry { job_id } => {
            let answer = client.retry(job_id).await?;
            if json {
                return print_json(&answer);
            }
            println!("{} queued again", answer.job_id);
            Ok(())
        }
    }
}
