//! `agentctl verify`: judges one `astgrep.verify` payload locally and prints the verdict, for
//! reward functions of trainers (TRL, verl) that call it once per completion.
//!
//! It is the worker's path without the daemon: the same payload validation
//! (`verify_payload::parse_for_local_run`, which only adds the refusal of the fields that
//! record), the same sandbox child (`agentctl sandbox serve-job`) and the same verdict
//! (`astgrep_verify::run_and_judge`). Nothing is recorded anywhere. The reward settings come
//! from `--rewards`, from a daemon (`--url`: the settings its workers judge with), else the
//! defaults.
//!
//! Started once per completion, so it starts no multi-threaded runtime: `main.rs` hands it the
//! parsed arguments before anything else, and it runs on a current-thread runtime. Its exit
//! status is part of its contract ([`EXIT_INVALID`], [`EXIT_NO_VERDICT`]).

use crate::builtin::astgrep_verify::{run_and_judge, JudgeError, Judged};
use crate::builtin::sandbox_child::{ChildError, REQUEST_BYTES_MAX};
use crate::builtin::verdict::{CheckedRewardSettings, RewardCombine, RewardSettings, TestsReward};
use crate::builtin::verify_payload;
use crate::http_client::Client;
use crate::sandbox::SandboxLimits;
use crate::worker::StopReason;
use agentd_schemas::events::SandboxOutcome;
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::sync::watch;

/// Exit status for a payload or argument that cannot be used (the message is on stderr).
pub const EXIT_INVALID: u8 = 2;
/// Exit status when no verdict was reached for an operating reason: the sandbox could not run,
/// the run was stopped (SIGINT, SIGTERM), the daemon of `--url` could not be read.
pub const EXIT_NO_VERDICT: u8 = 1;
/// Largest `--rewards @FILE`: the settings are a few hundred bytes.
pub const REWARDS_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Shown after `agentctl verify --help`.
pub const VERIFY_HELP: &str = "\
Runs the payload as an astgrep.verify worker would (payload validation, the sandbox with the
test files protected and the trusted test runner, the rule reward), without a daemon and
without recording anything. The payload is the job payload of docs/astgrep_verify.md, less
rollout_id, model and policy_version (refused: nothing is recorded); task_id and step are
ignored.

Reward settings (docs/astgrep_verify.md, \"The reward\"): --rewards, else a daemon's with --url,
else the defaults (combine all, tests all, every weight 1). A payload's tests_reward overrides
the settings' tests.
  --rewards '{\"combine\": \"weighted\", \"tests\": \"fraction\",
              \"weights\": {\"tests\": 2, \"gold_match\": 1, \"post_match\": 1}}'

Output: a short summary; with --json one line holding one JSON object:
  reward, verified, components, reasons, gold_match, post_match, outcome, rejected_reason,
  exit_code, tests_passed, tests_failed, files_changed, test_files_changed, diff, diff_bytes,
  stdout, stderr, duration_ms, peak_rss_bytes, rewards
Exit status: 0 a verdict was reached (whatever the reward); 2 the payload or an argument is
invalid (why on stderr); 1 no verdict: the sandbox could not run, it was stopped by SIGINT or
SIGTERM, or the daemon of --url could not be read.";

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The astgrep.verify payload (JSON): a file, or - for stdin
    #[arg(long, value_name = "FILE|-")]
    payload: PathBuf,
    /// Reward settings as JSON, or @FILE holding it: {"combine": "all"|"weighted", "tests":
    /// "all"|"fraction", "weights": {"tests": W, "gold_match": W, "post_match": W}}; keys left
    /// out take their defaults [default: combine all, tests all, every weight 1]
    #[arg(long, value_name = "JSON|@FILE", conflicts_with = "url")]
    rewards: Option<String>,
    /// Take the reward settings from this daemon (GET /v1/settings: the [rewards] its workers
    /// judge with) instead of --rewards. Only this option: AGENTD_URL is not read here
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Bearer token for --url (a token that may read tasks)
    #[arg(long, env = "AGENTD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of the CA that signed the --url daemon's TLS certificate
    #[arg(long, env = "AGENTD_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Sandbox limits and policy (TOML) [default: built-in defaults, the same as
    /// configs/sandbox.toml]
    #[arg(long, value_name = "FILE")]
    sandbox_config: Option<PathBuf>,
}

/// What `agentctl verify --json` prints: the verdict and the facts of the sandbox run
/// (docs/astgrep_verify.md, "agentctl verify").
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The reward's value, in [0, 1].
    pub reward: f64,
    /// The outcome is `ok` and every component is 1.
    pub verified: bool,
    /// Each check that applies, by name: 1 passed, 0 failed (`tests` may be a fraction).
    pub components: BTreeMap<String, f64>,
    /// Why each failed check failed, by component name (and `outcome`).
    pub reasons: BTreeMap<String, String>,
    pub gold_match: Option<bool>,
    pub post_match: Option<bool>,
    /// `ok`, `failed`, `timed_out`, `killed_oom` or `rejected`.
    pub outcome: SandboxOutcome,
    pub rejected_reason: Option<String>,
    /// The test command's exit code (`null`: no test command, or it did not exit).
    pub exit_code: Option<i32>,
    /// The trusted runner's counts over the tests the pristine test files define.
    pub tests_passed: Option<u32>,
    pub tests_failed: Option<u32>,
    pub files_changed: Vec<String>,
    /// Test files the action changed (the change was not applied; `tamper` is 0).
    pub test_files_changed: Vec<String>,
    /// The action's unified diff, whole.
    pub diff: String,
    pub diff_bytes: usize,
    /// The heads of the test command's output, as the sandbox kept them.
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub peak_rss_bytes: Option<u64>,
    /// The settings the reward was computed with (`tests`: the payload's `tests_reward`, if
    /// any, else the settings').
    pub rewards: RewardSettings,
}

/// Why no verdict was printed, by exit status.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The payload or an argument cannot be used: exit [`EXIT_INVALID`].
    #[error("{0}")]
    Invalid(String),
    /// No verdict for an operating reason: exit [`EXIT_NO_VERDICT`].
    #[error("{0}")]
    NoVerdict(String),
}

impl VerifyError {
    pub fn exit_code(&self) -> u8 {
        match self {
            VerifyError::Invalid(_) => EXIT_INVALID,
            VerifyError::NoVerdict(_) => EXIT_NO_VERDICT,
        }
    }
}

/// `args` with `--url` only when the command line gave it (`agentctl verify --url X` or
/// `agentctl --url X verify`). clap copies the global `--url`'s default and AGENTD_URL into
/// this command's matches; neither may turn a local verification into one that needs a daemon.
pub fn keep_url_from_command_line(mut args: VerifyArgs, matches: &clap::ArgMatches) -> VerifyArgs {
    let source = matches
        .subcommand_matches("verify")
        .and_then(|verify| verify.value_source("url"));
    if source != Some(clap::parser::ValueSource::CommandLine) {
        args.url = None;
    }
    args
}

/// The whole command, from parsed arguments (with `--url` as [`keep_url_from_command_line`]
/// left it) to exit status, on a current-thread runtime.
pub fn main(args: VerifyArgs, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentctl verify: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_NO_VERDICT);
        }
    };
    match runtime.block_on(run(args, json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agentctl verify: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Judges the payload and prints the verdict.
pub async fn run(args: VerifyArgs, json: bool) -> Result<(), VerifyError> {
    let limits = match &args.sandbox_config {
        Some(path) => SandboxLimits::load(path)
            .map_err(|error| VerifyError::Invalid(format!("--sandbox-config: {error}")))?,
        None => SandboxLimits::default(),
    };
    let payload = read_payload(&args.payload)?;
    let job = verify_payload::parse_for_local_run(&payload, &limits)
        .map_err(|error| VerifyError::Invalid(error.to_string()))?;
    let rewards = reward_settings(&args).await?;
    // The sandbox child is this very binary (`agentctl sandbox serve-job`), as for the worker.
    let executable = std::env::current_exe().map_err(|error| {
        VerifyError::NoVerdict(format!(
            "cannot find the agentctl executable to run the sandbox: {error}"
        ))
    })?;
    let mut stop = stop_on_signals()?;
    let judged = run_and_judge(&executable, &limits, &job, &rewards, &mut stop)
        .await
        .map_err(|error| match error {
            JudgeError::Payload(error) => VerifyError::Invalid(error.to_string()),
            JudgeError::Sandbox(ChildError::Stopped) => VerifyError::NoVerdict(
                "stopped by a signal; the sandbox run was killed, no verdict".into(),
            ),
            error @ JudgeError::Sandbox(_) => VerifyError::NoVerdict(error.to_string()),
        })?;
    let report = VerifyReport::from(judged);
    let printed = if json {
        print_json_line(&report)
    } else {
        print_text(&report)
    };
    printed.map_err(|error| VerifyError::NoVerdict(format!("cannot write the verdict: {error}")))
}

impl From<Judged> for VerifyReport {
    fn from(judged: Judged) -> Self {
        let Judged { run, verdict } = judged;
        VerifyReport {
            reward: verdict.value,
            verified: verdict.verified,
            components: verdict.components,
            reasons: verdict.reasons,
            gold_match: verdict.gold_match,
            post_match: verdict.post_match,
            outcome: run.outcome,
            rejected_reason: run.rejected_reason,
            exit_code: run.exit_code,
            tests_passed: run.tests_passed,
            tests_failed: run.tests_failed,
            files_changed: run.files_changed,
            test_files_changed: run.protected_changed,
            diff_bytes: run.diff.len(),
            diff: run.diff,
            stdout: run.stdout,
            stderr: run.stderr,
            duration_ms: run.duration_ms,
            peak_rss_bytes: run.peak_rss_bytes,
            rewards: verdict.rewards,
        }
    }
}

/// The payload from a file or stdin (`-`), at most [`REQUEST_BYTES_MAX`] bytes (what the
/// sandbox child reads).
fn read_payload(source: &Path) -> Result<serde_json::Value, VerifyError> {
    let name = if source == Path::new("-") {
        "stdin".to_string()
    } else {
        source.display().to_string()
    };
    let bytes = if source == Path::new("-") {
        read_capped(std::io::stdin().lock(), REQUEST_BYTES_MAX)
    } else {
        std::fs::File::open(source).and_then(|file| read_capped(file, REQUEST_BYTES_MAX))
    }
    .map_err(|error| VerifyError::Invalid(format!("--payload: cannot read {name}: {error}")))?;
    let Some(bytes) = bytes else {
        return Err(VerifyError::Invalid(format!(
            "--payload: {name} holds more than {REQUEST_BYTES_MAX} bytes"
        )));
    };
    serde_json::from_slice(&bytes).map_err(|error| {
        VerifyError::Invalid(format!(
            "invalid astgrep.verify payload: {name} is not JSON: {error}"
        ))
    })
}

/// Up to `max_bytes` of `reader`; `None` when it holds more.
fn read_capped(reader: impl Read, max_bytes: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader.take(max_bytes + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max_bytes).then_some(bytes))
}

/// `--rewards`, else the daemon's of `--url`, else the defaults; checked either way.
async fn reward_settings(args: &VerifyArgs) -> Result<CheckedRewardSettings, VerifyError> {
    if let Some(text) = &args.rewards {
        let settings = parse_rewards(text)?;
        return CheckedRewardSettings::new(settings)
            .map_err(|error| VerifyError::Invalid(format!("--rewards: {error}")));
    }
    let Some(url) = &args.url else {
        return Ok(CheckedRewardSettings::default());
    };
    let client = daemon_client(url, args)?;
    let response = client.settings().await.map_err(|error| {
        let mut message = format!(
            "cannot read the reward settings of {url} (GET /v1/settings): {}",
            crate::http_client::distinct_causes(&error)
        );
        if let Some(hint) = error.hint() {
            // The hints are worded for the daemon commands; this one does not read AGENTD_URL.
            message.push_str("\nhint: ");
            message.push_str(&hint.replace(" (or AGENTD_URL)", ""));
        }
        VerifyError::NoVerdict(message)
    })?;
    let settings = response
        .training
        .map(|training| training.rewards)
        .unwrap_or_default();
    CheckedRewardSettings::new(settings)
        .map_err(|error| VerifyError::NoVerdict(format!("the reward settings of {url}: {error}")))
}

/// `--rewards JSON` or `--rewards @FILE`, as [`RewardSettings`] (unknown keys refused).
fn parse_rewards(text: &str) -> Result<RewardSettings, VerifyError> {
    let (json, origin) = match text.strip_prefix('@') {
        Some(path) => {
            let bytes = std::fs::File::open(path)
                .and_then(|file| read_capped(file, REWARDS_FILE_BYTES_MAX))
                .map_err(|error| {
                    VerifyError::Invalid(format!("--rewards: cannot read {path}: {error}"))
                })?
                .ok_or_else(|| {
                    VerifyError::Invalid(format!(
                        "--rewards: {path} holds more than {REWARDS_FILE_BYTES_MAX} bytes"
                    ))
                })?;
            (bytes, format!(" ({path})"))
        }
        None => (text.as_bytes().to_vec(), String::new()),
    };
    serde_json::from_slice(&json).map_err(|error| {
        VerifyError::Invalid(format!(
            "--rewards{origin}: {error}; expected {{\"combine\": \"all\"|\"weighted\", \"tests\": \"all\"|\"fraction\", \"weights\": {{\"tests\": W, \"gold_match\": W, \"post_match\": W}}}}"
        ))
    })
}

fn daemon_client(url: &str, args: &VerifyArgs) -> Result<Client, VerifyError> {
    // `AGENTD_TOKEN=` (set but empty) means no token, as for the other commands.
    let token = args.token.clone().filter(|token| !token.is_empty());
    let client =
        Client::new(url, token).map_err(|error| VerifyError::Invalid(format!("--url: {error}")))?;
    match &args.ca_cert {
        None => Ok(client),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|error| {
                VerifyError::Invalid(format!("cannot read --ca-cert {}: {error}", path.display()))
            })?;
            client.with_ca_cert(&pem).map_err(|error| {
                VerifyError::Invalid(format!("--ca-cert {}: {error}", path.display()))
            })
        }
    }
}

/// A stop switch for the sandbox child, thrown by SIGINT or SIGTERM: the child then kills its
/// sandbox and tears it down, instead of being left running when this process dies.
fn stop_on_signals() -> Result<watch::Receiver<StopReason>, VerifyError> {
    use tokio::signal::unix::{signal, SignalKind};
    let cannot = |error: std::io::Error| {
        VerifyError::NoVerdict(format!("cannot handle SIGINT and SIGTERM: {error}"))
    };
    let mut interrupt = signal(SignalKind::interrupt()).map_err(cannot)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(cannot)?;
    let (stop_sender, stop) = watch::channel(StopReason::Running);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        // No receiver left means the run is over: nothing to stop.
        let _run_already_over = stop_sender.send(StopReason::Draining);
    });
    Ok(stop)
}

fn print_json_line(report: &VerifyReport) -> std::io::Result<()> {
    let line = serde_json::to_string(report).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

fn print_text(report: &VerifyReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let verified = if report.verified { "yes" } else { "no" };
    writeln!(
        out,
        "reward:   {} ({})",
        report.reward,
        describe_rewards(&report.rewards)
    )?;
    writeln!(out, "verified: {verified}")?;
    let exit = report
        .exit_code
        .map_or_else(String::new, |code| format!(", exit code {code}"));
    writeln!(out, "outcome:  {}{exit}", report.outcome.as_str())?;
    if let Some(reason) = &report.rejected_reason {
        writeln!(out, "rejected: {reason}")?;
    }
    if let (Some(passed), Some(failed)) = (report.tests_passed, report.tests_failed) {
        writeln!(out, "tests:    {passed} passed, {failed} failed")?;
    }
    let checks: Vec<String> = report
        .components
        .iter()
        .map(|(name, score)| format!("{name} {score}"))
        .collect();
    writeln!(out, "checks:   {}", checks.join(", "))?;
    for (check, reason) in &report.reasons {
        writeln!(out, "  {check}: {reason}")?;
    }
    if report.files_changed.is_empty() {
        writeln!(out, "changed:  nothing")?;
    } else {
        writeln!(out, "changed:  {}", report.files_changed.join(", "))?;
    }
    writeln!(out, "duration: {} ms", report.duration_ms)?;
    if !report.diff.is_empty() {
        writeln!(out, "\n{}", report.diff.trim_end())?;
    }
    out.flush()
}

/// `weighted; tests fraction; weights tests 2, gold_match 1, post_match 1`.
fn describe_rewards(rewards: &RewardSettings) -> String {
    let tests = match rewards.tests {
        TestsReward::All => "all",
        TestsReward::Fraction => "fraction",
    };
    match rewards.combine {
        RewardCombine::All => format!("combine all; tests {tests}"),
        RewardCombine::Weighted => format!(
            "combine weighted; tests {tests}; weights tests {}, gold_match {}, post_match {}",
            rewards.weights.tests, rewards.weights.gold_match, rewards.weights.post_match
        ),
    }
}

#[cfg(test)]
mod tests;
