//! `agentctl exports list|show|run`: recorded exports (Parquet/JSONL files with a manifest),
//! and running one now. `docs/exports.md` describes the kinds and their columns.

use super::output::{format_ms, print_json};
use crate::http_client::{percent_encode, Client};
use agentd_schemas::events::{ExportFormat, ExportKind};
use agentd_schemas::export_api::{
    ExportListResponse, ExportShowResponse, ExportView, RunExportRequest, RunExportResponse,
};
use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Subcommand, Debug)]
pub enum ExportsCommand {
    /// Recorded exports, newest first, and the watermark of each kind
    List,
    /// One export: its files (sha256, rows) and manifest
    Show {
        /// Export id (`exp_trajectories_0_1200`)
        export_id: String,
    },
    /// Download the files of an export or a dataset build (`exp_...` or `bld_...`) over HTTP
    /// into DIR, each checked against the sha256 the log recorded
    Download {
        /// Export id or dataset build id
        id: String,
        /// Directory to write the files into (created; default: the id)
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Export now: from the last export's watermark of this kind, or everything with --full
    Run {
        /// trajectories, trl_sft, trl_grpo, verl_rl or processed
        #[arg(long)]
        kind: ExportKind,
        /// parquet, or jsonl (processed only)
        #[arg(long, default_value = "parquet")]
        format: ExportFormat,
        /// Export everything up to now, not only what is new since the watermark
        #[arg(long)]
        full: bool,
    },
}

pub async fn run(client: &Client, command: ExportsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ExportsCommand::List => list(client, json).await,
        ExportsCommand::Download { id, out } => download(client, &id, out, json).await,
        ExportsCommand::Show { export_id } => show(client, &export_id, json).await,
        ExportsCommand::Run { kind, format, full } => {
            run_export(client, RunExportRequest { kind, format, full }, json).await
        }
    }
}

/// `exports list`: every export, then the watermarks.
async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let answer: ExportListResponse = client.get("/v1/exports").await?;
    if json {
        return print_json(&answer);
    }
    println!("exports root: {}", answer.root);
    println!(
        "{:<40} {:<12} {:>10} {:>10} {:>10} {:>6}  SCHEDULE",
        "EXPORT", "KIND", "AFTER", "TO", "ROWS", "FILES"
    );
    for export in &answer.exports {
        println!(
            "{:<40} {:<12} {:>10} {:>10} {:>10} {:>6}  {}",
            export.export_id,
            export.kind.as_str(),
            export.after_lsn.0,
            export.to_lsn.0,
            export.rows,
            export.files.len(),
            export
                .schedule
                .as_ref()
                .map_or_else(|| "-".to_owned(), |slot| slot.schedule.clone())
        );
    }
    for watermark in &answer.watermarks {
        println!(
            "watermark {} {}: lsn {}",
            watermark.kind.as_str(),
            watermark.format.as_str(),
            watermark.lsn.0
        );
    }
    Ok(())
}

/// `exports show`: one export and its manifest.
async fn show(client: &Client, export_id: &str, json: bool) -> anyhow::Result<()> {
    let answer: ExportShowResponse = client
        .get(&format!("/v1/exports/{}", percent_encode(export_id)))
        .await?;
    if json {
        return print_json(&answer);
    }
    print_export(&answer.export);
    match &answer.manifest {
        Some(manifest) => println!(
            "manifest: schema version {}, tokenizer {}, agentd {}",
            manifest.schema_version, manifest.tokenizer, manifest.agentd_version
        ),
        None => println!("manifest: missing on disk (files removed?)"),
    }
    Ok(())
}

/// `exports run`: one export now (or what the watermark says is already exported).
async fn run_export(client: &Client, request: RunExportRequest, json: bool) -> anyhow::Result<()> {
    let Some(answer) =
        post_unless_running::<RunExportResponse, _>(client, "/v1/exports", &request, json).await?
    else {
        return Ok(());
    };
    if json {
        return print_json(&answer);
    }
    match &answer.export {
        Some(export) => {
            if !answer.created {
                println!("already recorded:");
            }
            print_export(export);
        }
        None => println!(
            "nothing new to export since lsn {} (use --full to export everything)",
            answer.watermark.0
        ),
    }
    Ok(())
}

/// POSTs `body` and decodes the answer, unless the daemon says the same work is already
/// `running` (202, an error body with a success status): then that is printed and `None`
/// returned.
async fn post_unless_running<T: DeserializeOwned, B: Serialize>(
    client: &Client,
    path: &str,
    body: &B,
    json: bool,
) -> anyhow::Result<Option<T>> {
    // 202 `running` is an error body with a success status: read it as JSON first.
    let answer: serde_json::Value = client.post(path, body).await?;
    if answer.get("code").and_then(|code| code.as_str())
        == Some(agentd_schemas::ErrorCode::Running.as_str())
    {
        if json {
            print_json(&answer)?;
        } else {
            println!("{}", answer["message"].as_str().unwrap_or("still running"));
        }
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(answer)?))
}

fn print_export(export: &ExportView) {
    println!("export   {}", export.export_id);
    println!(
        "kind     {} ({})",
        export.kind.as_str(),
        export.format.as_str()
    );
    println!(
        "lsns     ({}, {}]  recorded at lsn {} ({})",
        export.after_lsn.0,
        export.to_lsn.0,
        export.recorded_lsn.0,
        format_ms(export.recorded_at_ms)
    );
    println!("dir      {}", export.dir);
    println!("rows     {}", export.rows);
    if let Some(slot) = &export.schedule {
        println!(
            "schedule {} (slot {})",
            slot.schedule,
            format_ms(slot.slot_ms)
        );
    }
    for file in &export.files {
        println!(
            "  {}  {} rows  {} bytes  sha256 {}",
            file.path, file.rows, file.bytes, file.sha256
        );
    }
}

/// `agentctl datasets build`.
#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Dataset name (A-Z a-z 0-9 . _ -)
    #[arg(long)]
    pub name: String,
    /// Dataset version; the dataset key is `name-version`
    #[arg(long)]
    pub version: String,
    /// Select kept dataset records or trajectory steps
    #[arg(long, value_enum, default_value_t = BuildFrom::Records)]
    pub from: BuildFrom,
    /// latest (newest first) or random (a seeded shuffle; needs --seed)
    #[arg(long, value_enum, default_value_t = Strategy::Latest)]
    pub strategy: Strategy,
    /// Seed of the random strategy's order (required with --strategy random, refused with
    /// latest); the same seed over the same log gives the same rows in the same order
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep at most this many rows
    #[arg(long)]
    pub limit: Option<u64>,
    /// field=value; repeat a field to accept several values. Records: language, split, source,
    /// version, tag. Steps: verified, model, policy_version, language, task_id, reward_source,
    /// sandbox_outcome, reward_min=N, advantage_min=N (the step's reward, its rollout's group
    /// advantage, at least N), and split, source, version of the dataset record the step's task
    /// came from (task id `{source}/{version}/{index}`)
    #[arg(long = "filter", value_parser = super::parse_key_value)]
    pub filters: Vec<(String, String)>,
    /// Write the rows as this export kind: records as processed (default), trl_grpo or
    /// verl_rl; steps as trajectories (default) or trl_sft (verified steps rewarded at least
    /// the recorded sft_min_reward)
    #[arg(long)]
    pub view: Option<agentd_schemas::events::ExportKind>,
    /// Label the build with the training run it is for (in its manifest's lineage)
    #[arg(long)]
    pub training_run_id: Option<String>,
    /// Label the build with the session that asked for it
    #[arg(long)]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildFrom {
    Records,
    Trajectories,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    Latest,
    Random,
}

pub async fn build(client: &Client, args: BuildArgs, json: bool) -> anyhow::Result<()> {
    use agentd_schemas::events::{BuildSource, BuildStrategy};
    use agentd_schemas::export_api::{DatasetBuildRequest, DatasetBuildResponse};
    let mut filters: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (field, value) in args.filters {
        filters.entry(field).or_default().push(value);
    }
    let request = DatasetBuildRequest {
        name: args.name,
        version: args.version,
        source: match args.from {
            BuildFrom::Records => BuildSource::Records,
            BuildFrom::Trajectories => BuildSource::Trajectories,
        },
        strategy: match args.strategy {
            Strategy::Latest => BuildStrategy::Latest,
            Strategy::Random => BuildStrategy::Random,
        },
        seed: args.seed,
        limit: args.limit,
        filters,
        view: args.view,
        training_run_id: args.training_run_id,
        session_id: args.session_id,
    };
    let Some(answer) = post_unless_running::<DatasetBuildResponse, _>(
        client,
        "/v1/datasets/builds",
        &request,
        json,
    )
    .await?
    else {
        return Ok(());
    };
    if json {
        return print_json(&answer);
    }
    let build = &answer.build;
    if !answer.created {
        println!("already built (same request over the same log):");
    }
    println!("dataset_key {}", build.dataset_key);
    println!("build_id    {}", build.build_id);
    println!("lsn         {}", build.to_lsn.0);
    println!("rows        {}", build.rows);
    println!("dir         {}", build.dir);
    for file in &build.files {
        println!(
            "  {}  {} rows  {} bytes  sha256 {}",
            file.path, file.rows, file.bytes, file.sha256
        );
    }
    Ok(())
}

/// The files an export or a build recorded, and where its manifest is on the daemon.
async fn recorded_files(
    client: &Client,
    id: &str,
) -> anyhow::Result<Vec<agentd_schemas::events::ExportedFile>> {
    if id.starts_with("bld_") {
        let answer: agentd_schemas::export_api::DatasetBuildListResponse =
            client.get("/v1/datasets/builds").await?;
        return answer
            .builds
            .into_iter()
            .find(|build| build.build_id == id)
            .map(|build| build.files)
            .ok_or_else(|| anyhow::anyhow!("no dataset build {id} is recorded"));
    }
    let answer: ExportShowResponse = client
        .get(&format!("/v1/exports/{}", percent_encode(id)))
        .await?;
    Ok(answer.export.files)
}

/// `agentctl exports download ID [--out DIR]`: every file, checked against its recorded sha256.
pub async fn download(
    client: &Client,
    id: &str,
    out: Option<std::path::PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let files = recorded_files(client, id).await?;
    let out = out.unwrap_or_else(|| std::path::PathBuf::from(id));
    let mut written = Vec::new();
    for file in &files {
        let to = out.join(&file.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let route = format!(
            "/v1/exports/{}/files/{}",
            percent_encode(id),
            percent_encode(&file.path)
        );
        let (bytes, sha256) = client.download(&route, &to).await?;
        if sha256 != file.sha256 || bytes != file.bytes {
            anyhow::bail!(
                "{}: got {bytes} bytes with sha256 {sha256}, the log recorded {} bytes with sha256 {}",
                to.display(),
                file.bytes,
                file.sha256
            );
        }
        if !json {
            println!("{}  {bytes} bytes  sha256 ok", to.display());
        }
        written.push(
            serde_json::json!({"path": to.display().to_string(), "bytes": bytes, "sha256": sha256}),
        );
    }
    if json {
        return print_json(
            &serde_json::json!({"id": id, "dir": out.display().to_string(), "files": written}),
        );
    }
    Ok(())
}
