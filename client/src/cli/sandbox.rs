//! `agentctl sandbox run`: applies one ast-grep action to a directory's files in the sandbox,
//! optionally runs a test command, and prints the result. For debugging actions and limits
//! locally; the same code path as the `astgrep.verify` worker, without a daemon.
//!
//! `agentctl sandbox serve-job` (hidden) is the child process of the `astgrep.verify` worker:
//! see `builtin::sandbox_child`.

use super::output::print_json;
use crate::builtin::sandbox_child;
use crate::sandbox::{self, load_files_from_dir, SandboxLimits, SandboxRun, SandboxSpec};
use agentd_schemas::events::Action;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Apply an action (`--rule rule.yml`, or `--pattern P --rewrite R --language L`) to the
    /// files under `--files DIR` in a fresh sandbox, run `--test CMD` there, print the outcome,
    /// diff, test counts and output. Exits 0 whatever the outcome; `--json` for the full result.
    Run(RunArgs),
    /// Internal: one `astgrep.verify` sandbox run, request on stdin, answer on stdout.
    #[command(hide = true)]
    ServeJob,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directory whose files are the task snapshot (symlinks, special files and .git skipped)
    #[arg(long)]
    files: PathBuf,
    /// ast-grep YAML rule with a `fix` (several documents allowed)
    #[arg(long, conflicts_with_all = ["pattern", "rewrite"], required_unless_present = "pattern")]
    rule: Option<PathBuf>,
    /// ast-grep pattern, e.g. 'print($A)' (needs --rewrite and --language)
    #[arg(long, requires_all = ["rewrite", "language"])]
    pattern: Option<String>,
    /// Rewrite of --pattern, e.g. 'logger.info($A)'
    #[arg(long, requires = "pattern")]
    rewrite: Option<String>,
    /// Language of --pattern: python, javascript, typescript, tsx or java
    #[arg(long)]
    language: Option<String>,
    /// Test command run in the workspace after the action, split on whitespace (no shell, no
    /// quoting), e.g. --test 'python3 test_app.py'; its program must be in allowed_binaries
    #[arg(long)]
    test: Option<String>,
    /// Keep the workspace afterwards and print its path
    #[arg(long)]
    keep: bool,
    /// Sandbox limits and policy (TOML) [default: built-in defaults, the same as configs/sandbox.toml]
    #[arg(long)]
    limits: Option<PathBuf>,
    #[command(flatten)]
    daemon_access: UnusedDaemonAccess,
}

/// `sandbox run` is local: the global `--url`, `--token` and `--ca-cert` mean nothing to it.
/// clap does not copy a global argument into a command that has one with the same id, so these
/// hidden twins keep the global ones out of `sandbox run --help`. They are still accepted (and
/// ignored), so a shared alias or AGENTD_URL in the environment does not break the command.
#[derive(Args, Debug)]
#[allow(dead_code, reason = "parsed only to be ignored; see the doc comment")]
struct UnusedDaemonAccess {
    #[arg(long, hide = true)]
    url: Option<String>,
    #[arg(long, hide = true)]
    token: Option<String>,
    #[arg(long, hide = true)]
    ca_cert: Option<PathBuf>,
}

pub async fn run(command: SandboxCommand, json: bool) -> anyhow::Result<()> {
    match command {
        SandboxCommand::Run(args) => run_once(args, json).await,
        SandboxCommand::ServeJob => sandbox_child::serve().await,
    }
}

async fn run_once(args: RunArgs, json: bool) -> anyhow::Result<()> {
    let limits = match &args.limits {
        Some(path) => SandboxLimits::load(path)?,
        None => SandboxLimits::default(),
    };
    let files = load_files_from_dir(&args.files)?;
    if files.is_empty() {
        bail!("{} holds no files", args.files.display());
    }
    let action = match (&args.rule, &args.pattern) {
        (Some(rule), _) => Action::Rule {
            yaml: std::fs::read_to_string(rule)
                .with_context(|| format!("reading --rule {}", rule.display()))?,
        },
        // clap makes --pattern require --rewrite and --language.
        (None, Some(pattern)) => Action::Pattern {
            language: args.language.clone().unwrap_or_default(),
            pattern: pattern.clone(),
            rewrite: args.rewrite.clone().unwrap_or_default(),
        },
        (None, None) => bail!("give --rule FILE, or --pattern with --rewrite and --language"),
    };
    let test_command = match &args.test {
        None => None,
        Some(text) => {
            let argv: Vec<String> = text.split_whitespace().map(str::to_string).collect();
            if argv.is_empty() {
                bail!("--test is empty");
            }
            Some(argv)
        }
    };
    let spec = SandboxSpec {
        files,
        action,
        test_command,
        keep_workspace: args.keep,
        protected_paths: Default::default(),
        test_env: Vec::new(),
    };
    let result = tokio::task::spawn_blocking(move || sandbox::run(&spec, &limits)).await??;
    if json {
        return print_json(&result);
    }
    print_text(&result);
    Ok(())
}

fn print_text(run: &SandboxRun) {
    println!("outcome:   {}", run.outcome.as_str());
    if let Some(reason) = &run.rejected_reason {
        println!("rejected:  {reason}");
    }
    let exit = run
        .exit_code
        .map_or_else(|| "-".to_string(), |code| code.to_string());
    println!("exit code: {exit}");
    let count = |value: Option<u32>| value.map_or_else(|| "-".to_string(), |n| n.to_string());
    println!(
        "tests:     {} passed, {} failed",
        count(run.tests_passed),
        count(run.tests_failed)
    );
    let peak = run.peak_rss_bytes.map_or_else(
        || "-".to_string(),
        |bytes| format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    );
    println!("duration:  {} ms, peak memory {peak}", run.duration_ms);
    if run.files_changed.is_empty() {
        println!("changed:   nothing (the action matched nothing)");
    } else {
        println!("changed:   {}", run.files_changed.join(", "));
    }
    if let Some(workspace) = &run.workspace {
        println!("workspace: {} (kept)", workspace.display());
    }
    if !run.diff.is_empty() {
        println!("\n{}", run.diff.trim_end());
    }
    for (name, text, total) in [
        ("stdout", &run.stdout, run.stdout_bytes),
        ("stderr", &run.stderr, run.stderr_bytes),
    ] {
        if !text.trim().is_empty() {
            println!("\n--- {name} ({total} bytes)\n{}", text.trim_end());
        }
    }
}
