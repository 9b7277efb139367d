//! `agentctl datasets list|stats|build|builds|latest`: registered datasets, the processed-splits
//! report, dataset builds (`build` in `exports.rs`), and `builds list|show|latest|download`.

use super::output::print_json;
use crate::http_client::Client;
use agentd_schemas::domain_api::{DatasetStatsResponse, RecordCountsView};
use agentd_schemas::export_api::{BuildLineage, DatasetBuildListResponse, DatasetBuildView};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand, Debug)]
pub enum DatasetsCommand {
    /// Registered datasets: license, records expected and received
    List,
    /// Counts per dataset, language and split; duplicates, over-cap and unknown-language
    /// records; average and p95 tokens
    Stats {
        /// `json` prints exactly what `GET /v1/datasets/stats` answers (as does `--json`)
        #[arg(long, value_enum, default_value_t = StatsFormat::Markdown)]
        format: StatsFormat,
    },
    /// Build a dataset: select records (or trajectory steps), write Parquet and a manifest
    /// under `name-version/build_id` (same request over the same log, same rows in the same order)
    Build(super::exports::BuildArgs),
    /// Dataset builds: `builds list|show|latest|download` (`builds [--dataset-key K]` lists)
    Builds {
        #[command(subcommand)]
        command: Option<BuildsCommand>,
        /// Only builds of this dataset key (`name-version`), when listing without a subcommand.
        /// Before a subcommand (`builds --dataset-key K list`) it is refused: give the
        /// subcommand's own, `builds list --dataset-key K`
        #[arg(long)]
        dataset_key: Option<String>,
    },
    /// The newest build of a dataset key (`name-version`), and with --download its files
    /// (also `datasets builds latest KEY`)
    Latest {
        /// The dataset key, `name-version` (as `datasets build --name N --version V` made it)
        dataset_key: String,
        /// Download its files into this directory (checked against their recorded sha256)
        #[arg(long, value_name = "DIR")]
        download: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildsCommand {
    /// Recorded dataset builds, oldest first
    List {
        /// Only builds of this dataset key (`name-version`)
        #[arg(long)]
        dataset_key: Option<String>,
    },
    /// One build: its request, files, and where it is (local dir, object storage URL)
    Show {
        /// The build id (`bld_...`)
        build_id: String,
    },
    /// The newest build of a dataset key (`name-version`)
    Latest {
        /// The dataset key, `name-version` (as `datasets build --name N --version V` made it)
        dataset_key: String,
        /// Download its files into this directory (checked against their recorded sha256)
        #[arg(long, value_name = "DIR")]
        download: Option<std::path::PathBuf>,
    },
    /// Download a build's files over HTTP, each checked against its recorded sha256
    Download {
        /// The build id (`bld_...`)
        build_id: String,
        /// Directory to write the files into (created; default: the build id)
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    Markdown,
    Json,
}

pub async fn run(client: &Client, command: DatasetsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        DatasetsCommand::List => {
            let answer = client.datasets().await?;
            if json {
                return print_json(&answer);
            }
            println!(
                "{:<32} {:<12} {:<16} {:>10} {:>10} {:>8}",
                "SOURCE", "VERSION", "LICENSE", "EXPECTED", "RECEIVED", "COMPLETE"
            );
            for dataset in answer.datasets {
                let license = dataset
                    .meta
                    .as_ref()
                    .map_or("-", |meta| meta.license.as_str());
                let expected = dataset
                    .records_expected
                    .map_or_else(|| "-".to_owned(), |count| count.to_string());
                println!(
                    "{:<32} {:<12} {:<16} {:>10} {:>10} {:>8}",
                    dataset.source,
                    dataset.version,
                    license,
                    expected,
                    dataset.records_received,
                    if dataset.complete { "yes" } else { "no" }
                );
            }
            Ok(())
        }
        DatasetsCommand::Build(args) => super::exports::build(client, args, json).await,
        DatasetsCommand::Builds {
            command,
            dataset_key,
        } => match builds_command(command, dataset_key)? {
            BuildsCommand::List { dataset_key } => list_builds(client, dataset_key, json).await,
            BuildsCommand::Show { build_id } => {
                let answer: DatasetBuildListResponse = client
                    .get(&format!(
                        "/v1/datasets/builds?build_id={}",
                        crate::http_client::percent_encode(&build_id)
                    ))
                    .await?;
                let build = answer
                    .builds
                    .into_iter()
                    .find(|build| build.build_id == build_id)
                    .ok_or_else(|| anyhow::anyhow!("no dataset build {build_id}"))?;
                if json {
                    return print_json(&build);
                }
                print_build(&build);
                Ok(())
            }
            BuildsCommand::Latest {
                dataset_key,
                download,
            } => latest(client, &dataset_key, download, json).await,
            BuildsCommand::Download { build_id, out } => {
                super::exports::download(client, &build_id, out, json).await
            }
        },
        DatasetsCommand::Latest {
            dataset_key,
            download,
        } => latest(client, &dataset_key, download, json).await,
        DatasetsCommand::Stats { format } => {
            if json || format == StatsFormat::Json {
                // The answer as the daemon sent it, so no field is lost in a round trip.
                let answer: serde_json::Value = client.get("/v1/datasets/stats").await?;
                return print_json(&answer);
            }
            let stats = client.dataset_stats().await?;
            print!("{}", markdown(&stats));
            Ok(())
        }
    }
}

/// What `datasets builds [--dataset-key K] [SUBCOMMAND]` runs: `builds --dataset-key K` alone
/// lists that key's builds. With a subcommand the outer `--dataset-key` is refused rather than
/// dropped (`builds --dataset-key K list` would otherwise list every build). A check here, not
/// clap's `args_conflicts_with_subcommands`, which would also refuse the global options
/// (`builds --json list`).
pub(super) fn builds_command(
    command: Option<BuildsCommand>,
    dataset_key: Option<String>,
) -> anyhow::Result<BuildsCommand> {
    match (command, dataset_key) {
        (None, dataset_key) => Ok(BuildsCommand::List { dataset_key }),
        (Some(command), None) => Ok(command),
        (Some(command), Some(key)) => {
            let hint = match command {
                BuildsCommand::List { .. } => {
                    format!("write `agentctl datasets builds list --dataset-key {key}`")
                }
                _ => "it only applies to `datasets builds` without a subcommand".to_owned(),
            };
            anyhow::bail!(
                "--dataset-key before a `datasets builds` subcommand is not applied; {hint}"
            )
        }
    }
}

async fn builds(
    client: &Client,
    dataset_key: Option<&str>,
) -> anyhow::Result<DatasetBuildListResponse> {
    let path = match dataset_key {
        Some(key) => format!(
            "/v1/datasets/builds?dataset_key={}",
            crate::http_client::percent_encode(key)
        ),
        None => "/v1/datasets/builds".to_owned(),
    };
    Ok(client.get(&path).await?)
}

async fn list_builds(
    client: &Client,
    dataset_key: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let answer = builds(client, dataset_key.as_deref()).await?;
    if json {
        return print_json(&answer);
    }
    println!(
        "{:<32} {:<22} {:<14} {:>8} {:>10}  WHERE",
        "DATASET", "BUILD", "VIEW", "LSN", "ROWS"
    );
    for build in &answer.builds {
        let view = build.spec.view.map_or("-", |view| view.as_str());
        println!(
            "{:<32} {:<22} {:<14} {:>8} {:>10}  {}",
            build.dataset_key,
            build.build_id,
            view,
            build.to_lsn.0,
            build.rows,
            build.url.as_deref().unwrap_or(&build.dir)
        );
    }
    Ok(())
}

async fn latest(
    client: &Client,
    dataset_key: &str,
    download: Option<std::path::PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let build: DatasetBuildView = client
        .get(&format!(
            "/v1/datasets/builds/{}/latest",
            crate::http_client::percent_encode(dataset_key)
        ))
        .await?;
    match download {
        Some(dir) => super::exports::download(client, &build.build_id, Some(dir), json).await,
        None if json => print_json(&build),
        None => {
            println!(
                "{} {} (lsn {}, {} rows) {}",
                build.dataset_key,
                build.build_id,
                build.to_lsn.0,
                build.rows,
                build.url.as_deref().unwrap_or(&build.dir)
            );
            Ok(())
        }
    }
}

fn print_build(build: &DatasetBuildView) {
    println!("build:    {}", build.build_id);
    println!("dataset:  {}", build.dataset_key);
    println!(
        "to lsn:   {} (recorded at lsn {})",
        build.to_lsn.0, build.recorded_lsn.0
    );
    println!("rows:     {}", build.rows);
    println!("dir:      {}", build.dir);
    if let Some(url) = &build.url {
        println!("url:      {url}");
    }
    println!("manifest: sha256 {}", build.manifest_sha256);
    let spec = &build.spec;
    for (label, value) in [
        ("run:     ", &spec.training_run_id),
        ("session: ", &spec.session_id),
    ] {
        if let Some(value) = value {
            println!("{label} {value}");
        }
    }
    if let Some(lineage) = &build.lineage {
        print_lineage(lineage);
    }
    for file in &build.files {
        println!(
            "  {}  {} rows  {} bytes  sha256 {}",
            file.path, file.rows, file.bytes, file.sha256
        );
    }
}

/// A build's parent and source datasets (with license and sha256), as its manifest names them.
fn print_lineage(lineage: &BuildLineage) {
    println!(
        "parent:   {}",
        lineage
            .parent_build_id
            .as_deref()
            .unwrap_or("- (first build of its key)")
    );
    if lineage.sources.is_empty() {
        println!("sources:  -");
    }
    for (index, source) in lineage.sources.iter().enumerate() {
        println!(
            "{} {} {}  license {}  sha256 {}",
            if index == 0 { "sources: " } else { "         " },
            source.source,
            source.version,
            source.license.as_deref().unwrap_or("-"),
            source.sha256.as_deref().unwrap_or("-"),
        );
    }
}

/// The stats as Markdown tables: one row per dataset plus the total, then kept records per
/// language and split.
pub fn markdown(stats: &DatasetStatsResponse) -> String {
    let mut out = format!(
        "## Datasets\n\nToken counts in `{}`; records over {} tokens are excluded.\n\n",
        stats.encoding, stats.token_cap
    );
    out.push_str("| dataset | records | kept | duplicates | over token cap | unknown language | resent | train | dev | test | avg tokens | p95 tokens |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for dataset in &stats.datasets {
        out.push_str(&row(
            &format!("{} {}", dataset.source, dataset.version),
            &dataset.counts,
        ));
    }
    out.push_str(&row("**total**", &stats.total));
    out.push_str("\n## Kept records per language\n\n");
    out.push_str("| language | train | dev | test | total |\n|---|---:|---:|---:|---:|\n");
    for (language, splits) in &stats.total.language_splits {
        let total = splits.train + splits.dev + splits.test;
        out.push_str(&format!(
            "| {language} | {} | {} | {} | {total} |\n",
            splits.train, splits.dev, splits.test
        ));
    }
    let unknown: Vec<String> = stats
        .total
        .unknown_language_names
        .iter()
        .map(|(name, count)| format!("`{name}` ({count})"))
        .collect();
    if !unknown.is_empty() {
        out.push_str(&format!("\nUnknown languages: {}\n", unknown.join(", ")));
    }
    out
}

fn row(name: &str, counts: &RecordCountsView) -> String {
    let avg = counts
        .avg_tokens
        .map_or_else(|| "-".to_owned(), |avg| format!("{avg:.1}"));
    let p95 = counts
        .p95_tokens
        .map_or_else(|| "-".to_owned(), |p95| p95.to_string());
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {avg} | {p95} |\n",
        counts.records,
        counts.kept,
        counts.duplicates,
        counts.over_token_cap,
        counts.unknown_language,
        counts.resent,
        counts.splits.train,
        counts.splits.dev,
        counts.splits.test
    )
}
