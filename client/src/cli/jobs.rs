//! `agentctl jobs list|show|cancel|retry|logs`.

use super::output::{format_ms, print_json};
use crate::http_client::{Client, JobListQuery};
use crate::job_log::{self, RECOMMENDED_LOG_DIR};
use agentd_schemas::api::HistoryEntry;
use agentd_schemas::JobId;
use anyhow::Context;
use clap::Subcommand;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// `jobs list --limit` when not given.
const DEFAULT_LIST_LIMIT: usize = 50;

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
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
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
    /// Print a job's output: the worker's log file DIR/<job_id>.log when it is on this machine
    /// (run it on the worker's box), else the tail the daemon recorded with the job's last
    /// completion or failure. Says on stderr which one it printed
    Logs {
        /// Job id, as submit prints it (job_42)
        job_id: JobId,
        /// The worker's --log-dir
        #[arg(long, env = "AGENTD_WORKER_LOG_DIR", default_value = RECOMMENDED_LOG_DIR)]
        log_dir: PathBuf,
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
            let query = JobListQuery {
                queue,
                state,
                limit: Some(limit),
                after,
            };
            list(client, &query, json).await
        }
        JobsCommand::Show { job_id } => show(client, job_id, json).await,
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
        JobsCommand::Logs { job_id, log_dir } => print_logs(client, job_id, &log_dir, json).await,
    }
}

/// `jobs list`: one page of jobs as a table, and the cursor of the next page.
async fn list(client: &Client, query: &JobListQuery, json: bool) -> anyhow::Result<()> {
    let page = client.jobs(query).await?;
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
        println!("more: {}", next_page_command(query, next));
    }
    Ok(())
}

/// The `agentctl jobs list` line for the page after `next`: the same filters and page size as
/// `query` (without them the next page would list every queue and state).
fn next_page_command(query: &JobListQuery, next: JobId) -> String {
    let mut command = String::from("agentctl jobs list");
    if let Some(queue) = &query.queue {
        command.push_str(&format!(" --queue {}", shell_word(queue)));
    }
    if let Some(state) = &query.state {
        command.push_str(&format!(" --state {}", shell_word(state)));
    }
    if let Some(limit) = query.limit.filter(|limit| *limit != DEFAULT_LIST_LIMIT) {
        command.push_str(&format!(" --limit {limit}"));
    }
    command.push_str(&format!(" --after {next}"));
    command
}

/// `text` as one shell word: as it is when it has no special characters, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/@,+=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// `jobs show`: the job, its lease, result and error, then its history.
async fn show(client: &Client, job_id: JobId, json: bool) -> anyhow::Result<()> {
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
        "attempt {}/{}  priority {}  lease ttl {} ms  submitted {}",
        job.attempt,
        job.max_attempts,
        job.priority,
        job.lease_ttl_ms,
        format_ms(job.submitted_at_ms)
    );
    if !job.tags.is_empty() {
        let tags: Vec<String> = job.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("tags: {}", tags.join(" "));
    }
    if let Some(task_id) = &job.task_id {
        println!("task: {task_id}");
    }
    if let Some(key) = &job.idempotency_key {
        println!("idempotency key: {key}");
    }
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
    if let Some(tail) = &job.log_tail {
        println!(
            "log tail: {} bytes of the last attempt's output (agentctl jobs logs {})",
            tail.len(),
            job.job_id
        );
    }
    println!("history:");
    for entry in job.history.unwrap_or_default() {
        print_history_entry(entry);
    }
    Ok(())
}

fn print_history_entry(entry: HistoryEntry) {
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

/// Prints the job's log file if it exists here; `false` when there is none.
fn print_log_file(path: &Path, job_id: JobId, json: bool) -> std::io::Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if json {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        print_json(&serde_json::json!({
            "job_id": job_id,
            "source": "file",
            "path": path,
            "log": String::from_utf8_lossy(&bytes),
        }))
        .map_err(std::io::Error::other)?;
        return Ok(true);
    }
    eprintln!(
        "agentctl: {job_id}: the worker's log file {}",
        path.display()
    );
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)?;
    stdout.flush()?;
    Ok(true)
}

/// `agentctl jobs logs`: the local file first (all of the output kept on this box), else the
/// daemon's tail (the last bytes of the last attempt, wherever it ran).
async fn print_logs(
    client: &Client,
    job_id: JobId,
    log_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let path = job_log::log_path(log_dir, job_id);
    let read_path = path.clone();
    // Blocking file IO off the async workers; streamed, as a file may hold --log-max-bytes.
    let printed = tokio::task::spawn_blocking(move || print_log_file(&read_path, job_id, json))
        .await
        .context("reading the log file")?
        .with_context(|| format!("cannot read {}", path.display()))?;
    if printed {
        return Ok(());
    }
    let job = client.job(job_id).await.with_context(|| {
        format!(
            "no log file {} on this machine, and the daemon's copy could not be read",
            path.display()
        )
    })?;
    let Some(tail) = job.log_tail else {
        anyhow::bail!(
            "no log for {job_id}: no file {} on this machine (run this on the worker's box, or pass its --log-dir), and the daemon recorded no log tail ({}: {})",
            path.display(),
            job.state.as_str(),
            if job.state.is_terminal() || job.attempt > 0 {
                "its last completion or failure carried none"
            } else {
                "no attempt has ended yet"
            }
        );
    };
    if json {
        return print_json(&serde_json::json!({
            "job_id": job_id,
            "source": "daemon",
            "log": tail,
        }));
    }
    eprintln!(
        "agentctl: {job_id}: no log file {} here; the last {} bytes the daemon recorded with the job's last completion or failure",
        path.display(),
        tail.len()
    );
    print!("{tail}");
    if !tail.ends_with('\n') {
        println!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(queue: Option<&str>, state: Option<&str>, limit: usize) -> JobListQuery {
        JobListQuery {
            queue: queue.map(str::to_owned),
            state: state.map(str::to_owned),
            limit: Some(limit),
            after: None,
        }
    }

    #[test]
    fn the_next_page_command_repeats_the_filters_and_page_size() {
        let next = JobId(2);
        assert_eq!(
            next_page_command(&query(Some("demo"), Some("queued"), 1), next),
            "agentctl jobs list --queue demo --state queued --limit 1 --after job_2"
        );
        assert_eq!(
            next_page_command(&query(None, None, DEFAULT_LIST_LIMIT), next),
            "agentctl jobs list --after job_2"
        );
        assert_eq!(
            next_page_command(&query(Some("it's a queue"), None, 10), next),
            r"agentctl jobs list --queue 'it'\''s a queue' --limit 10 --after job_2"
        );
    }
}
