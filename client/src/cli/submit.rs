//! `agentctl submit`: one job, or a JSONL file of payloads sent in batches.

use super::output::print_json;
use super::{parse_duration_ms, parse_key_value};
use crate::http_client::Client;
use agentd_schemas::api::SubmitJobRequest;
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Queue to submit to
    #[arg(long)]
    queue: String,
    /// Job kind (what the worker should do)
    #[arg(long)]
    kind: String,
    /// JSON payload, or @path to read it from a file
    #[arg(long, conflicts_with = "file")]
    payload: Option<String>,
    /// JSONL file: one payload per line, submitted in batches
    #[arg(long)]
    file: Option<PathBuf>,
    /// Jobs per batch request with --file
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Higher runs first
    #[arg(long)]
    priority: Option<i32>,
    /// Do not run before this delay (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration_ms)]
    delay: Option<u64>,
    /// Attempts before the job is dead
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Lease time-to-live (e.g. 60s)
    #[arg(long, value_parser = parse_duration_ms)]
    lease_ttl: Option<u64>,
    /// Resubmitting with the same key (per queue) returns the original job
    #[arg(long, conflicts_with = "file")]
    idempotency_key: Option<String>,
    /// Task this job belongs to
    #[arg(long)]
    task_id: Option<String>,
    /// Tag the worker must have, k=v (repeatable)
    #[arg(long = "tag", value_parser = parse_key_value)]
    tags: Vec<(String, String)>,
}

impl SubmitArgs {
    fn request(&self, payload: serde_json::Value) -> SubmitJobRequest {
        SubmitJobRequest {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            payload,
            priority: self.priority,
            delay_ms: self.delay,
            run_at_ms: None,
            max_attempts: self.max_attempts,
            lease_ttl_ms: self.lease_ttl,
            tags: if self.tags.is_empty() {
                None
            } else {
                Some(self.tags.iter().cloned().collect())
            },
            task_id: self.task_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

pub async fn run(client: &Client, args: SubmitArgs, json: bool) -> anyhow::Result<()> {
    if let Some(file) = &args.file {
        return submit_file(client, &args, file, json).await;
    }
    let payload = match args.payload.as_deref() {
        None => serde_json::Value::Object(Default::default()),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read payload file {path}"))?,
                None => text.to_string(),
            };
            serde_json::from_str(&text).context("--payload is not valid JSON")?
        }
    };
    let answer = client.submit(&args.request(payload)).await?;
    if json {
        print_json(&answer)?;
    } else if answer.deduplicated {
        println!(
            "{} (deduplicated: an earlier submission had this idempotency key)",
            answer.job_id
        );
    } else {
        println!("{}", answer.job_id);
    }
    Ok(())
}

async fn submit_file(
    client: &Client,
    args: &SubmitArgs,
    path: &PathBuf,
    json: bool,
) -> anyhow::Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total_bytes = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut batch = Vec::with_capacity(args.batch_size);
    let mut submitted = Vec::new();
    let mut deduplicated = 0usize;
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("cannot read {} line {}", path.display(), number + 1))?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let payload = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not valid JSON", path.display(), number + 1))?;
        batch.push(args.request(payload));
        if batch.len() == args.batch_size {
            let answer = client.submit_batch(std::mem::take(&mut batch)).await?;
            deduplicated += answer.jobs.iter().filter(|job| job.deduplicated).count();
            submitted.extend(answer.jobs);
            progress.set_message(format!("{} jobs", submitted.len()));
        }
    }
    if !batch.is_empty() {
        let answer = client.submit_batch(batch).await?;
        deduplicated += answer.jobs.iter().filter(|job| job.deduplicated).count();
        submitted.extend(answer.jobs);
    }
    progress.finish_and_clear();
    if json {
        print_json(&serde_json::json!({ "jobs": submitted }))?;
    } else {
        let first = submitted
            .first()
            .map(|job| job.job_id.to_string())
            .unwrap_or_default();
        let last = submitted
            .last()
            .map(|job| job.job_id.to_string())
            .unwrap_or_default();
        println!(
            "submitted {} jobs ({first} .. {last}), {deduplicated} deduplicated",
            submitted.len()
        );
    }
    Ok(())
}
