//! `agentctl submit`: one job, a JSONL file of payloads sent in batches, or (`--rollouts G`) a
//! group of G episode jobs of one task that share a group name for group-relative scoring.

use super::output::print_json;
use super::{parse_duration_ms, parse_key_value};
use crate::http_client::Client;
use agentd_schemas::api::{SubmitJobRequest, SubmitJobResponse};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::io::BufRead;
use std::path::PathBuf;

/// Most jobs one `--rollouts` submission makes: they go in one batch request, well under the
/// daemon's default `[queue] batch_jobs_max` (10000), and a GRPO group is 4 to 64 samples.
pub const ROLLOUTS_PER_GROUP_MAX: u32 = 1024;
/// Longest group name, in characters (the daemon's `GROUP_CHARS_MAX`).
pub const GROUP_CHARS_MAX: usize = 128;
/// The payload field that carries the group to the episode worker, which names it when it
/// creates its rollout (`POST /v1/tasks/{task_id}/rollouts` with `group`).
pub const GROUP_PAYLOAD_FIELD: &str = "group";

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
    /// Resubmitting with the same key (per queue) returns the original job; with --rollouts,
    /// job i gets the key KEY#i (and --group is required, so a re-run names the same group)
    #[arg(long, conflicts_with = "file")]
    idempotency_key: Option<String>,
    /// Task this job belongs to
    #[arg(long)]
    task_id: Option<String>,
    /// Submit N episode jobs of --task-id in one group (one batch): each payload object gets
    /// "group": NAME, and each episode creates its rollout in that group
    #[arg(long, value_name = "N", requires = "task_id", conflicts_with = "file",
          value_parser = clap::value_parser!(u32).range(1..=ROLLOUTS_PER_GROUP_MAX as i64))]
    rollouts: Option<u32>,
    /// Group name for --rollouts (1 to 128 characters, not starting with ro_); default: a new
    /// grp-<16 hex digits>
    #[arg(long, value_name = "NAME", requires = "rollouts")]
    group: Option<String>,
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
    let payload = read_payload(args.payload.as_deref())?;
    if let Some(count) = args.rollouts {
        return submit_group(client, &args, payload, count, json).await;
    }
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

/// `--payload`: inline JSON, `@path`, or `{}` when absent.
fn read_payload(payload: Option<&str>) -> anyhow::Result<serde_json::Value> {
    match payload {
        None => Ok(serde_json::Value::Object(Default::default())),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read payload file {path}"))?,
                None => text.to_string(),
            };
            serde_json::from_str(&text).context("--payload is not valid JSON")
        }
    }
}

/// What `submit --rollouts --json` prints.
#[derive(Debug, Serialize)]
struct GroupSubmitted {
    group: String,
    task_id: String,
    /// In submission order: job i has the idempotency key `KEY#i`, when a key was given.
    jobs: Vec<SubmitJobResponse>,
}

/// `--rollouts N`: N copies of the job, the group written into each payload, in one batch.
async fn submit_group(
    client: &Client,
    args: &SubmitArgs,
    payload: serde_json::Value,
    count: u32,
    json: bool,
) -> anyhow::Result<()> {
    let Some(task_id) = args.task_id.clone() else {
        // clap's `requires` guarantees it; kept as an error, not a panic, for other callers.
        bail!("--rollouts needs --task-id: a group samples one task");
    };
    if args.idempotency_key.is_some() && args.group.is_none() {
        bail!("--rollouts with --idempotency-key needs --group: a re-run must name the same group as the jobs it finds");
    }
    let group = match &args.group {
        Some(group) => {
            check_group_name(group)?;
            check_group_task(client, group, &task_id).await?;
            group.clone()
        }
        None => generated_group_name(),
    };
    let payload = payload_with_group(payload, &group)?;
    let jobs: Vec<SubmitJobRequest> = (0..count)
        .map(|index| SubmitJobRequest {
            idempotency_key: args
                .idempotency_key
                .as_ref()
                .map(|key| format!("{key}#{index}")),
            ..args.request(payload.clone())
        })
        .collect();
    let answer = client.submit_batch(jobs).await?;
    let submitted = GroupSubmitted {
        group,
        task_id,
        jobs: answer.jobs,
    };
    if json {
        return print_json(&submitted);
    }
    let deduplicated = submitted.jobs.iter().filter(|job| job.deduplicated).count();
    let mut header = format!(
        "group {} · {} episode jobs of task {}",
        submitted.group,
        submitted.jobs.len(),
        submitted.task_id
    );
    if deduplicated > 0 {
        header.push_str(&format!(
            " ({deduplicated} deduplicated: earlier submissions had their idempotency keys)"
        ));
    }
    println!("{header}");
    for job in &submitted.jobs {
        println!("{}", job.job_id);
    }
    Ok(())
}

/// The daemon's rule for a client-chosen group, checked before any job is submitted: 1 to
/// [`GROUP_CHARS_MAX`] characters, no control characters, not `ro_...` (the names of the
/// default groups of one).
pub fn check_group_name(group: &str) -> anyhow::Result<()> {
    if group.is_empty() || group.chars().count() > GROUP_CHARS_MAX {
        bail!("--group must be 1 to {GROUP_CHARS_MAX} characters");
    }
    if group.chars().any(char::is_control) {
        bail!("--group must not contain control characters");
    }
    if group.starts_with("ro_") {
        bail!("--group must not start with ro_ (the names of default groups of one rollout)");
    }
    Ok(())
}

/// A group holds rollouts of one task. A named group that already samples another task would
/// make every episode fail when it creates its rollout; say so now. A token that may not read
/// groups (a `submit` token) cannot check: the daemon still refuses at rollout creation.
async fn check_group_task(client: &Client, group: &str, task_id: &str) -> anyhow::Result<()> {
    match client.group(group).await {
        Ok(existing) => {
            if let Some(other) = existing
                .rollouts
                .iter()
                .find(|rollout| rollout.task_id != task_id)
            {
                bail!(
                    "group {group} already samples task {}, not {task_id}; a group holds rollouts of one task",
                    other.task_id
                );
            }
            Ok(())
        }
        Err(error)
            if matches!(
                error.error_code(),
                Some(agentd_schemas::ErrorCode::NotFound | agentd_schemas::ErrorCode::Forbidden)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!("cannot read group {group}"))),
    }
}

/// `grp-` and 16 random hex digits: never `ro_...`, and unlikely to meet another group.
pub fn generated_group_name() -> String {
    format!("grp-{:016x}", rand::random::<u64>())
}

/// The payload object with `"group": group` added. Anything but an object has nowhere to put
/// it; a payload that names another group is a contradiction.
pub fn payload_with_group(
    payload: serde_json::Value,
    group: &str,
) -> anyhow::Result<serde_json::Value> {
    let serde_json::Value::Object(mut fields) = payload else {
        bail!("--rollouts writes \"{GROUP_PAYLOAD_FIELD}\" into the payload, so --payload must be a JSON object, not {}", json_kind(&payload));
    };
    match fields.get(GROUP_PAYLOAD_FIELD) {
        None => {}
        Some(serde_json::Value::String(existing)) if existing == group => {}
        Some(existing) => bail!(
            "the payload already has \"{GROUP_PAYLOAD_FIELD}\": {existing}, which is not the group {group:?}; drop it from the payload or pass it as --group"
        ),
    }
    fields.insert(
        GROUP_PAYLOAD_FIELD.to_string(),
        serde_json::Value::String(group.to_string()),
    );
    Ok(serde_json::Value::Object(fields))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_group_goes_into_an_object_payload_and_nowhere_else() {
        assert_eq!(
            payload_with_group(json!({"prompt": "p"}), "g1").unwrap(),
            json!({"prompt": "p", "group": "g1"})
        );
        assert_eq!(
            payload_with_group(json!({"group": "g1"}), "g1").unwrap(),
            json!({"group": "g1"})
        );
        for (payload, expected) in [
            (json!([1]), "must be a JSON object, not an array"),
            (json!("x"), "not a string"),
            (json!(null), "not null"),
            (json!({"group": "other"}), "not the group \"g1\""),
            (json!({"group": 3}), "already has \"group\": 3"),
        ] {
            let error = payload_with_group(payload.clone(), "g1")
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{payload}: {error}");
        }
    }

    #[test]
    fn group_names_follow_the_daemons_rule() {
        assert!(check_group_name("grpo-step-17").is_ok());
        assert!(check_group_name(&"g".repeat(GROUP_CHARS_MAX)).is_ok());
        for (name, expected) in [
            ("", "1 to 128"),
            (&*"g".repeat(GROUP_CHARS_MAX + 1), "1 to 128"),
            ("ro_1", "must not start with ro_"),
            ("a\nb", "control characters"),
        ] {
            let error = check_group_name(name).unwrap_err().to_string();
            assert!(error.contains(expected), "{name:?}: {error}");
        }
        let generated = generated_group_name();
        assert!(check_group_name(&generated).is_ok(), "{generated}");
        assert!(
            generated.len() == 20
                && generated.starts_with("grp-")
                && generated[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{generated}"
        );
        assert_ne!(generated, generated_group_name());
    }
}
