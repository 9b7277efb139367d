//! `agentctl ingest --meta _meta.json --records normalized.jsonl`: registers a dataset and
//! streams its records in batches, with a progress bar and line-numbered errors.
//!
//! What happens to a bad line: it is skipped and reported with its line number and field (a
//! line that is not JSON is reported with field `$`), and the other records are still sent. Each
//! batch is written whole or not at all. Records are identified by their position (the n-th
//! non-blank line is position n - 1), so after fixing the reported lines, running the same
//! command again adds exactly the missing records and changes nothing else. The command ends
//! with the count check: the file, `num_records` of the meta and what the daemon holds must
//! agree, otherwise it says how they differ and exits non-zero.

use super::output::print_json;
use crate::http_client::{Client, ClientError};
use agentd_schemas::domain_api::{IngestRecordsRequest, IngestRecordsResponse};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Largest batch body, in bytes of record JSON: well under the daemon's default body limit
/// (32 MiB), so a batch of large records is split early instead of refused.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Rejected lines listed in the summary; the count includes every one.
pub const REJECTED_SHOWN_MAX: usize = 1000;
/// Tries per batch when the daemon answers "try again" or cannot be reached (resending a batch
/// is harmless: positions already received are skipped).
const BATCH_ATTEMPTS_MAX: u32 = 5;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// The dataset's metadata contract (`_meta.json`: source, version, license, downloaded_at,
    /// sha256, num_records, url)
    #[arg(long)]
    meta: PathBuf,
    /// Normalized records, one JSON object per line
    #[arg(long)]
    records: PathBuf,
    /// Records per request
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
}

/// What the ingest did, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
pub struct IngestSummary {
    pub source: String,
    pub version: String,
    /// Whether this run registered the dataset (false: it was registered with identical meta).
    pub registered: bool,
    /// Non-blank lines of the records file.
    pub records_in_file: u64,
    pub sent: u64,
    pub accepted: u64,
    pub resent: u64,
    pub kept: u64,
    pub duplicate: u64,
    pub over_token_cap: u64,
    pub unknown_language: u64,
    pub rejected: u64,
    /// The first [`REJECTED_SHOWN_MAX`] rejected lines.
    pub rejected_lines: Vec<RejectedLine>,
    pub num_records: u64,
    /// Record positions the daemon holds for this dataset after the ingest.
    pub records_received: u64,
    /// True when the file, `num_records` and the daemon agree.
    pub count_matches: bool,
}

/// One bad line.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedLine {
    pub line: u64,
    pub index: u64,
    pub field: String,
    pub message: String,
}

pub async fn run(client: &Client, args: IngestArgs, json: bool) -> anyhow::Result<()> {
    let mut summary = register(client, &args, json).await?;
    send_records(client, &args, &mut summary).await?;
    let after = client.datasets().await?;
    summary.records_received = after
        .datasets
        .iter()
        .find(|dataset| dataset.source == summary.source && dataset.version == summary.version)
        .map_or(0, |dataset| dataset.records_received);
    let num_records = summary.num_records;
    summary.count_matches = summary.records_in_file == num_records
        && summary.records_received == num_records
        && summary.rejected == 0;
    if json {
        print_json(&summary)?;
    } else {
        print_summary(&summary, &args);
    }
    if !summary.count_matches {
        bail!("{}", mismatch_message(&summary, &args));
    }
    Ok(())
}

/// Registers the dataset with its `_meta.json` (again, which is fine with the same meta) and
/// starts the summary.
async fn register(client: &Client, args: &IngestArgs, json: bool) -> anyhow::Result<IngestSummary> {
    let meta_text = tokio::fs::read_to_string(&args.meta)
        .await
        .with_context(|| format!("cannot read {}", args.meta.display()))?;
    let meta: Value = serde_json::from_str(&meta_text)
        .with_context(|| format!("{}: not valid JSON", args.meta.display()))?;
    let registration = client
        .register_dataset(&meta)
        .await
        .with_context(|| format!("{}: the daemon refused the meta", args.meta.display()))?;
    let dataset = &registration.dataset;
    let summary = IngestSummary {
        source: dataset.source.clone(),
        version: dataset.version.clone(),
        registered: registration.created,
        num_records: dataset.records_expected.unwrap_or(0),
        ..IngestSummary::default()
    };
    if !json {
        let verb = if registration.created {
            "registered"
        } else {
            "already registered (same meta)"
        };
        eprintln!("{} {}: {verb}", summary.source, summary.version);
    }
    Ok(summary)
}

/// Sends the records file in batches of consecutive positions, with a progress bar; a line
/// that is not JSON is rejected here and counted.
async fn send_records(
    client: &Client,
    args: &IngestArgs,
    summary: &mut IngestSummary,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&args.records)
        .await
        .with_context(|| format!("cannot open {}", args.records.display()))?;
    let total_bytes = file.metadata().await.map(|meta| meta.len()).unwrap_or(0);
    let progress = ProgressBar::new(total_bytes);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut batch = Batch::default();
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut line_number = 0u64;
    let batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("cannot read {}", args.records.display()))?
    {
        line_number += 1;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let index = summary.records_in_file;
        summary.records_in_file += 1;
        match serde_json::from_str::<Value>(&line) {
            Ok(record) => {
                if batch.is_empty() {
                    batch.first_index = index;
                }
                batch.bytes += line.len();
                batch.records.push(record);
                batch.lines.push(line_number);
            }
            Err(error) => {
                // A gap in positions: what is pending goes first, so each batch stays
                // contiguous.
                send(client, &mut batch, summary, &progress).await?;
                reject(
                    summary,
                    &progress,
                    RejectedLine {
                        line: line_number,
                        index,
                        field: "$".to_owned(),
                        message: format!("not valid JSON: {error}"),
                    },
                );
            }
        }
        if batch.records.len() >= batch_size || batch.bytes >= BATCH_BYTES_MAX {
            send(client, &mut batch, summary, &progress).await?;
        }
    }
    send(client, &mut batch, summary, &progress).await?;
    progress.finish_and_clear();
    Ok(())
}

/// Records waiting to be sent: consecutive positions from `first_index`.
#[derive(Default)]
struct Batch {
    first_index: u64,
    records: Vec<Value>,
    /// The file line of each record, to report rejections by line.
    lines: Vec<u64>,
    bytes: usize,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Sends the pending batch (if any), counts its outcome and reports its rejected records.
async fn send(
    client: &Client,
    batch: &mut Batch,
    summary: &mut IngestSummary,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let request = IngestRecordsRequest {
        records: std::mem::take(&mut batch.records),
        first_index: Some(batch.first_index),
    };
    let lines = std::mem::take(&mut batch.lines);
    batch.bytes = 0;
    let (first_line, last_line) = (
        lines.first().copied().unwrap_or(0),
        lines.last().copied().unwrap_or(0),
    );
    let answer = send_with_retries(client, &summary.source, &summary.version, &request)
        .await
        .with_context(|| format!("lines {first_line}-{last_line} were not ingested"))?;
    summary.sent += answer.received;
    summary.accepted += answer.accepted;
    summary.resent += answer.resent;
    summary.kept += answer.kept;
    summary.duplicate += answer.duplicate;
    summary.over_token_cap += answer.over_token_cap;
    summary.unknown_language += answer.unknown_language;
    for rejected in answer.rejected_records {
        let line = rejected
            .index
            .checked_sub(answer.first_index)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| lines.get(offset).copied())
            .unwrap_or(0);
        reject(
            summary,
            progress,
            RejectedLine {
                line,
                index: rejected.index,
                field: rejected.field,
                message: rejected.message,
            },
        );
    }
    progress.set_message(format!(
        "{} records sent, {} rejected",
        summary.sent, summary.rejected
    ));
    Ok(())
}

async fn send_with_retries(
    client: &Client,
    source: &str,
    version: &str,
    request: &IngestRecordsRequest,
) -> Result<IngestRecordsResponse, ClientError> {
    let mut attempt = 1;
    loop {
        match client.ingest_records(source, version, request).await {
            Err(error) if error.is_transient() && attempt < BATCH_ATTEMPTS_MAX => {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Counts a bad line and prints it at once (above the progress bar).
fn reject(summary: &mut IngestSummary, progress: &ProgressBar, rejected: RejectedLine) {
    summary.rejected += 1;
    progress.suspend(|| {
        eprintln!(
            "line {}: {}: {}",
            rejected.line, rejected.field, rejected.message
        )
    });
    if summary.rejected_lines.len() < REJECTED_SHOWN_MAX {
        summary.rejected_lines.push(rejected);
    }
}

fn print_summary(summary: &IngestSummary, args: &IngestArgs) {
    println!(
        "{} {}: {} records in {}, {} accepted, {} already ingested, {} rejected",
        summary.source,
        summary.version,
        summary.records_in_file,
        args.records.display(),
        summary.accepted,
        summary.resent,
        summary.rejected
    );
    println!(
        "  processed: {} kept, {} duplicate, {} over token cap, {} unknown language",
        summary.kept, summary.duplicate, summary.over_token_cap, summary.unknown_language
    );
    let verdict = if summary.count_matches {
        "ok"
    } else {
        "MISMATCH"
    };
    println!(
        "  count check: num_records {}, file {}, daemon {}: {verdict}",
        summary.num_records, summary.records_in_file, summary.records_received
    );
}

/// Says which counts disagree, and what to do.
fn mismatch_message(summary: &IngestSummary, args: &IngestArgs) -> String {
    let mut problems = Vec::new();
    if summary.rejected > 0 {
        problems.push(format!(
            "{} line(s) rejected (listed above); fix them and run the same command again",
            summary.rejected
        ));
    }
    if summary.records_in_file != summary.num_records {
        problems.push(format!(
            "{} has {} records but {} says num_records = {}",
            args.records.display(),
            summary.records_in_file,
            args.meta.display(),
            summary.num_records
        ));
    }
    if summary.records_received != summary.num_records {
        problems.push(format!(
            "the daemon holds {} of the {} records of {} {}",
            summary.records_received, summary.num_records, summary.source, summary.version
        ));
    }
    format!("record count mismatch: {}", problems.join("; "))
}
