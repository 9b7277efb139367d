//! `agentctl` command-line definitions and dispatch. Each subcommand lives in its own module.

mod bench;
mod datasets;
mod events;
mod exports;
mod ingest;
mod jobs;
pub(crate) mod output;
mod queues;
mod rollouts;
mod sandbox;
mod schedules;
mod state;
mod submit;
mod tokens;
mod trajectories;
pub mod verify;
mod worker;

use crate::http_client::{distinct_causes, Client, ClientError, DEFAULT_URL};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// agentctl: drive an agentd daemon (submit jobs, run workers, inspect queues and events).
#[derive(Parser, Debug)]
#[command(name = "agentctl", version, about, long_about = None)]
pub struct Cli {
    /// Daemon URL, http:// or https://
    #[arg(long, global = true, env = "AGENTD_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token, when the daemon requires one
    #[arg(long, global = true, env = "AGENTD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the daemon's TLS certificate, for https:// URLs
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
    /// Submit one job, many from a JSONL file (one payload per line), or a group of episode
    /// jobs of one task (--rollouts N)
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
    #[command(after_help = worker::JOB_ENVIRONMENT_HELP)]
    Worker(worker::WorkerArgs),
    /// Run one ast-grep action in the sandbox locally and print the result
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Judge an astgrep.verify payload locally, as the worker would, and print the reward
    /// (records nothing; for reward functions: `--json`, exit 0 with a verdict, 2 invalid input)
    #[command(after_help = verify::VERIFY_HELP)]
    Verify(verify::VerifyArgs),
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
    /// List a task's rollouts, or show one rollout with its steps
    #[command(subcommand)]
    Rollouts(rollouts::RolloutsCommand),
    /// Show a group of rollouts: rewards, mean, standard deviation, advantages
    #[command(subcommand)]
    Groups(rollouts::GroupsCommand),
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
    // The local commands: no daemon, so no client either (not even reading --ca-cert).
    let command = match cli.command {
        Command::Sandbox(command) => return sandbox::run(command, json).await,
        Command::Tokens(command) => return tokens::run(command, json),
        command => command,
    };
    // `AGENTD_TOKEN=` (set but empty) means no token, not an empty bearer token.
    let token = cli.token.filter(|token| !token.is_empty());
    let mut client = Client::new(&cli.url, token.clone())?;
    let mut ca_cert = None;
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
        client = client
            .with_ca_cert(&pem)
            .with_context(|| format!("--ca-cert {}", path.display()))?;
        // Absolute, so a job's process that changes directory can still open it.
        ca_cert = Some(std::path::absolute(path)?);
    }
    match command {
        Command::Submit(args) => submit::run(&client, args, json).await,
        Command::Jobs(command) => jobs::run(&client, command, json).await,
        Command::Queues(command) => queues::run(&client, command, json).await,
        Command::Events(command) => events::run(&client, command, json).await,
        Command::Worker(args) => {
            let daemon = crate::worker::DaemonAccess {
                url: cli.url,
                token,
                ca_cert,
            };
            worker::run(client, daemon, args, json).await
        }
        Command::Bench(args) => bench::run(&client, args, json).await,
        Command::Ingest(args) => ingest::run(&client, args, json).await,
        Command::Datasets(command) => datasets::run(&client, command, json).await,
        Command::State(command) => state::run(&client, command, json).await,
        Command::Trajectories(command) => trajectories::run(&client, command, json).await,
        Command::Rollouts(command) => rollouts::run(&client, command, json).await,
        Command::Groups(command) => rollouts::run_groups(&client, command, json).await,
        Command::Exports(command) => exports::run(&client, command, json).await,
        Command::Schedules(command) => schedules::run(&client, command, json).await,
        // The first match returned for both.
        Command::Sandbox(_) | Command::Tokens(_) => unreachable!("local commands run above"),
        // `main` runs `verify` before any runtime starts: it needs the argument matches (where
        // `--url` came from), a current-thread runtime and exit statuses of its own.
        Command::Verify(_) => unreachable!("main runs verify itself (cli::verify::main)"),
    }
}

/// The text `agentctl` prints for a failed command: each distinct cause once, then a hint when
/// the failure has a usual cause (a daemon not running, an untrusted certificate, ...).
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = distinct_causes(error.as_ref());
    let hint = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>())
        .and_then(ClientError::hint);
    if let Some(hint) = hint {
        report.push_str("\nhint: ");
        report.push_str(&hint);
    }
    report
}

/// Parses `k=v` into a pair (for `--tag`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// Parses durations like `500ms`, `30s`, `5m` or `2h`. A number without a unit is refused
/// rather than guessed: `--delay 60` read as 60 ms surprised users who meant a minute.
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
        return Err(if text.parse::<u64>().is_ok() {
            format!("{text:?} has no unit: write {text}s, {text}ms, {text}m or {text}h")
        } else {
            format!("expected a duration like 500ms, 30s, 5m or 2h, got {text:?}")
        });
    };
    number
        .trim()
        .parse::<u64>()
        .map(|value| value * unit_ms)
        .map_err(|_| format!("expected a duration like 500ms, 30s, 5m or 2h, got {text:?}"))
}

#[cfg(test)]
mod tests;
