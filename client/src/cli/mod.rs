//! `agentctl` command-line definitions and dispatch. Each subcommand lives in its own module.

mod bench;
mod datasets;
mod events;
mod exports;
mod ingest;
mod jobs;
mod output;
mod queues;
mod sandbox;
mod schedules;
mod state;
mod submit;
mod tokens;
mod trajectories;
mod worker;

use crate::http_client::{Client, DEFAULT_URL};
use clap::{Parser, Subcommand};

/// agentctl: drive an agentd daemon (submit jobs, run workers, inspect queues and events).
#[derive(Parser, Debug)]
#[command(name = "agentctl", version, about, long_about = None)]
pub struct Cli {
    /// Daemon URL
    #[arg(long, global = true, env = "AGENTD_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token (when the daemon requires one)
    #[arg(long, global = true, env = "AGENTD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the daemon's TLS certificate (for https:// URLs)
    #[arg(long, global = true, env = "AGENTD_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Submit one job, or many from a JSONL file (one payload per line)
    Submit(submit::SubmitArgs),
    /// List, show, cancel or retry jobs
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// List queues, pause or resume one
    #[command(subcommand)]
    Queues(queues::QueuesCommand),
    /// Read the event log
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Lease jobs and run a command (`-- ./handle.sh`) or a built-in (`--builtin astgrep.verify`)
    /// for each; `--gpus all` runs one slot per GPU
    Worker(worker::WorkerArgs),
    /// Run one ast-grep action in the sandbox locally and print the result
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Create bearer tokens for the daemon's access control
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Register a dataset and stream its normalized records (`--meta _meta.json --records x.jsonl`)
    Ingest(ingest::IngestArgs),
    /// List datasets, or report counts per dataset, language and split
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Show a task's agent state or its update history
    #[command(subcommand)]
    State(state::StateCommand),
    /// Show a task's trajectory, or teacher precision and reward stats
    #[command(subcommand)]
    Trajectories(trajectories::TrajectoriesCommand),
    /// List recorded exports, show one, or run one now (Parquet for trainers; docs/exports.md)
    #[command(subcommand)]
    Exports(exports::ExportsCommand),
    /// List scheduled exports with their next and last run
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Measure submit throughput, end-to-end jobs/s and latencies against a running daemon
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    // Building a client does not connect, so `tokens create` works without a daemon.
    let mut client = Client::new(&cli.url, cli.token.clone())?;
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path).map_err(|error| {
            anyhow::anyhow!("cannot read --ca-cert {}: {error}", path.display())
        })?;
        client = client.with_ca_cert(&pem)?;
    }
    match cli.command {
        Command::Submit(args) => submit::run(&client, args, json).await,
        Command::Jobs(command) => jobs::run(&client, command, json).await,
        Command::Queues(command) => queues::run(&client, command, json).await,
        Command::Events(command) => events::run(&client, command, json).await,
        Command::Worker(args) => worker::run(client, &cli.url, args, json).await,
        Command::Sandbox(command) => sandbox::run(command, json).await,
        Command::Bench(args) => bench::run(&client, args, json).await,
        Command::Tokens(command) => tokens::run(command, json),
        Command::Ingest(args) => ingest::run(&client, args, json).await,
        Command::Datasets(command) => datasets::run(&client, command, json).await,
        Command::State(command) => state::run(&client, command, json).await,
        Command::Trajectories(command) => trajectories::run(&client, command, json).await,
        Command::Exports(command) => exports::run(&client, command, json).await,
        Command::Schedules(command) => schedules::run(&client, command, json).await,
    }
}

/// Parses `k=v` into a pair (for `--tag`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// Parses durations like `500ms`, `30s`, `5m`, `2h` or plain milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000)
    } else if let Some(number) = text.strip_suffix('h') {
        (number, 3_600_000)
    } else {
        (text, 1)
    };
    number
        .trim()
        .parse::<u64>()
        .map(|value| value * unit_ms)
        .map_err(|_| format!("expected a duration like 500ms, 30s, 5m or 2h, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_tags_parse() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("250", 250),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(
            parse_key_value("gpu=a100"),
            Ok(("gpu".into(), "a100".into()))
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
