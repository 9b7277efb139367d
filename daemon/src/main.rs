//! `agentd`: the daemon binary. Runs the server, or rebuilds projections offline.

mod bench_export;

use agentd::config::Config;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: replays decode records on one thread and free them on
/// another, where glibc's arenas contend (measured: a 1M-step replay took 3x longer). Built
/// with `no_thp`: zeroing fresh 2 MiB transparent huge pages dominated the replay profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// agentd: an event-sourced job queue for code-agent training fleets.
///
/// With no subcommand it runs the daemon: every change is an event in an append-only log under
/// the data directory, answered only once it is on disk.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Data directory holding the log and projections [default: ./agentd-data, or the config's server.data_dir]
    #[arg(long, global = true, env = "AGENTD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070, or the config's server.listen]
    #[arg(long, env = "AGENTD_LISTEN")]
    listen: Option<SocketAddr>,
    /// TOML config file (see configs/agentd.toml); every key is optional
    #[arg(long, global = true, env = "AGENTD_CONFIG")]
    config: Option<PathBuf>,
    /// Serve a non-loopback address without bearer tokens (anyone who can connect may do anything)
    #[arg(long)]
    insecure_no_auth: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmark replay (events/s) and a trajectory export (rows/s, MB/s) on a synthetic log,
    /// with pyarrow's JSONL-to-Parquet path side by side when --python is given
    BenchExport {
        /// Trajectory steps in the synthetic log (3 records each)
        #[arg(long, default_value_t = 1_000_000)]
        steps: u64,
        /// Directory for the temporary log and files
        #[arg(long, default_value = "target")]
        dir: PathBuf,
        /// A Python with pyarrow installed (e.g. target/py-exports/bin/python)
        #[arg(long)]
        python: Option<String>,
        /// Only write the synthetic log, into DATA_DIR/log (a new data directory agentd can
        /// start on: scripts/bench-restart times start-ups on it), and measure nothing
        #[arg(long, value_name = "DATA_DIR")]
        write_log: Option<PathBuf>,
    },
    /// Download the log archived at a storage URL ([storage] url), verify it (sha256 against
    /// the archive's manifest, every frame's CRC and LSN) and lay it out in --data-dir, which must
    /// hold no log yet; `agentd` then starts on it with every record as of the last archived LSN
    Restore {
        /// The storage URL the daemon archived to: s3://bucket/prefix, gs://..., az://..., file:///path
        #[arg(long)]
        from: String,
        /// Keep records up to this LSN only (point-in-time restore; a record boundary)
        #[arg(long)]
        until_lsn: Option<u64>,
    },
    /// Run a read replica: follow the log a primary archives at a storage URL into --data-dir
    /// and serve the read-only API from it (jobs, queues, events, tasks, rollouts, datasets,
    /// stats, exports); writes answer 405 `read_only_replica` naming the primary, and
    /// `GET /healthz` shows the replica's lag
    ///
    /// With an http(s) --primary, exports and dataset builds run on the replica: it writes the
    /// files over its copy of the log, copies them to the storage URL, and the primary checks
    /// and records them (POST /v1/exports/records, with the caller's token).
    ///
    /// The data directory is a cache: an empty one is filled from the archive, one used before
    /// resumes where it stopped (after checking that the archive continues it). Auth tokens,
    /// TLS and limits come from --config as for the daemon; its [storage] and [[schedules]] are
    /// ignored (a replica uploads nothing and fires no schedule).
    Replica {
        /// The storage URL the primary archives to ([storage] url): s3://bucket/prefix,
        /// gs://..., az://..., file:///path
        #[arg(long)]
        from: String,
        /// Address to serve the read-only API on [default: 127.0.0.1:7070, or the config's
        /// server.listen]
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The primary's address, named in the 405 answers to writes (e.g.
        /// https://agentd.internal:7070) [default: the --from URL]; an http(s) URL also lets
        /// POST /v1/exports and POST /v1/datasets/builds run here, recorded by the primary
        #[arg(long)]
        primary: Option<String>,
        /// PEM file of the CA that signed the primary's TLS certificate, if the system's roots
        /// do not hold it
        #[arg(long, requires = "primary")]
        primary_ca_cert: Option<PathBuf>,
        /// How often to read the archive's manifest and copy what is new, in milliseconds
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        poll_interval_ms: u64,
    },
    /// Replay the log into fresh projections and print a digest of each (same log, same digests)
    Rebuild {
        /// Write the rebuilt projections here instead of replacing the data directory's
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the digests as JSON
        #[arg(long)]
        json: bool,
        /// Stop after this LSN (needs --out); the exports under OUT/exports are as of it
        #[arg(long, conflicts_with = "until_time", requires = "out")]
        until_lsn: Option<u64>,
        /// Stop after the last record at or before this RFC 3339 time (needs --out)
        #[arg(long, requires = "out")]
        until_time: Option<String>,
    },
}

/// Runs [`run`] and turns its error into one `error: ...` line (the cause chain) on stderr and
/// exit status 1. Returning `anyhow::Result` from `main` would print `Error: {:?}`, which adds a
/// full stack backtrace under `RUST_BACKTRACE=1`: noise for a config refusal.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cause_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: ` (anyhow's `{:#}`), skipping a cause whose text is
/// already printed: some library errors quote their source in their own message, because HTTP
/// answers show only that message, and it should still appear once here.
fn cause_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: a journal, a log file or a test's pipe
        // gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let config = config_of(&cli)?;
    match cli.command {
        Some(Command::BenchExport {
            steps,
            dir,
            python,
            write_log,
        }) => bench_export::run(bench_export::BenchOptions {
            steps,
            dir,
            python,
            write_log,
        }),
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(agentd::run(config, None))
        }
        Some(Command::Restore { from, until_lsn }) => restore(&config, from, until_lsn),
        Some(Command::Replica {
            from,
            listen,
            primary,
            primary_ca_cert,
            poll_interval_ms,
        }) => {
            let mut config = config;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            let options = agentd::ReplicaOptions {
                from,
                primary,
                primary_ca_cert,
                poll_interval: std::time::Duration::from_millis(poll_interval_ms),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(agentd::run_replica(config, options, None))
        }
        Some(Command::Rebuild {
            out,
            json,
            until_lsn,
            until_time,
        }) => rebuild(&config, out, json, rebuild_until(until_lsn, until_time)?),
    }
}

/// The config file (or the defaults) with the command line's settings over it.
fn config_of(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(data_dir) = &cli.data_dir {
        config.server.data_dir = data_dir.clone();
    }
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    if cli.insecure_no_auth {
        config.server.insecure_no_auth = true;
    }
    Ok(config)
}

/// Where `agentd rebuild` stops: `--until-lsn`, `--until-time`, or the end of the log.
fn rebuild_until(
    until_lsn: Option<u64>,
    until_time: Option<String>,
) -> anyhow::Result<agentd::rebuild::RebuildUntil> {
    Ok(match (until_lsn, until_time) {
        (Some(lsn), _) => agentd::rebuild::RebuildUntil::Lsn(lsn),
        (None, Some(time)) => {
            let time = chrono::DateTime::parse_from_rfc3339(&time)
                .with_context(|| format!("--until-time {time:?} is not an RFC 3339 time"))?;
            agentd::rebuild::RebuildUntil::TimeMs(
                u64::try_from(time.timestamp_millis()).unwrap_or(0),
            )
        }
        (None, None) => agentd::rebuild::RebuildUntil::End,
    })
}

/// `agentd rebuild`: every projection from the log, then its digests (as JSON with `--json`).
fn rebuild(
    config: &Config,
    out: Option<PathBuf>,
    json: bool,
    until: agentd::rebuild::RebuildUntil,
) -> anyhow::Result<()> {
    let report = agentd::rebuild::rebuild_with(
        config,
        &config.server.data_dir,
        out.as_deref(),
        agentd::rebuild::RebuildOptions { until },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print!("{}", report.to_text());
    Ok(())
}

/// `agentd restore`: the archive's log into the data directory, then one line saying what.
fn restore(config: &Config, from: String, until_lsn: Option<u64>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = config.server.data_dir.clone();
    let report = runtime.block_on(agentd::restore(agentd::RestoreOptions {
        from: from.clone(),
        data_dir: data_dir.clone(),
        until_lsn,
        frame_bytes_max: config.log.frame_bytes_max,
    }))?;
    println!(
        "restored lsn 1 to {} ({} segment{}, {} bytes; the archive holds up to lsn {}) from {from} into {}",
        report.last_lsn,
        report.segments,
        if report.segments == 1 { "" } else { "s" },
        report.bytes,
        report.archive_last_lsn,
        data_dir.join("log").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot decode the record at lsn 7: {source}")]
    struct QuotesItsSource {
        source: std::io::Error,
    }

    #[test]
    fn the_cause_chain_prints_each_cause_once() {
        let toml_error = Config::parse("[server]\nlisten = 5\n").unwrap_err();
        let toml_text = toml_error.to_string();
        let error = anyhow::Error::new(agentd::config::ConfigError::Parse {
            path: "/etc/agentd.toml".into(),
            source: toml_error,
        });
        assert_eq!(
            cause_chain(&error),
            format!("invalid config file /etc/agentd.toml: {toml_text}")
        );
        let quoting = anyhow::Error::new(QuotesItsSource {
            source: std::io::Error::other("disk on fire"),
        })
        .context("cannot start");
        assert_eq!(
            cause_chain(&quoting),
            "cannot start: cannot decode the record at lsn 7: disk on fire"
        );
    }
}
