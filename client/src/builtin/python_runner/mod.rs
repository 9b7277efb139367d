//! The trusted test runner of `astgrep.verify` for Python test commands: tests pass only when
//! a runner process that never runs task code says so, on a channel the code under test cannot
//! write to. Neither the test command's exit status nor anything it prints is evidence: code
//! under test can `os._exit(0)` before the tests ran, or print `TESTS passed=9 failed=0`.
//!
//! How (the whole argument, with its limits, is in `docs/astgrep_verify.md`):
//!
//! 1. The worker draws a random nonce per run and gives it, in the environment, to the
//!    runner's parent process (`parent.py`, run as `python3 -I -B -u -c`), nothing else.
//! 2. The parent makes itself non-dumpable (then no other process of its user can read its
//!    memory or `/proc/PID/environ`), takes the nonce out of its environment, lists the tests
//!    the pristine test files define (it reads them before any task code ran), and runs them in
//!    a fresh child interpreter (`child.py`) that reports one record per test over a pipe.
//! 3. The parent prints `AGENTD-TEST-REPORT <nonce> <json>` as its last stdout line. Only a
//!    line with this run's nonce counts; a test counts only if the pristine files define it.
//!
//! The report is between two programs of this crate and never stored, so its type lives here
//! and not in `agentd-schemas`.

use super::verdict::TestsEvidence;
use crate::sandbox::SandboxRun;
use rand::RngCore;
use serde::Deserialize;
use std::collections::BTreeSet;

/// The environment variable that carries the nonce to the parent process.
pub const NONCE_ENV: &str = "AGENTD_TEST_REPORT_NONCE";
/// What the report line starts with, before the nonce.
pub const REPORT_PREFIX: &str = "AGENTD-TEST-REPORT";
/// The report format the runner writes (`parent.py`'s `REPORT_VERSION`).
pub const REPORT_VERSION: u32 = 1;
/// Random bytes in a nonce (hex-encoded in the environment and the report).
const NONCE_BYTES: usize = 16;
/// Failures and problems quoted in a reason.
const REASON_ITEMS_MAX: usize = 3;
/// Characters of one failure's detail quoted in a reason.
const REASON_DETAIL_CHARS_MAX: usize = 200;

const PARENT_SOURCE: &str = include_str!("parent.py");
const CHILD_SOURCE: &str = include_str!("child.py");

/// How one verification runs its Python tests: the command for the sandbox and the nonce
/// its report must carry.
#[derive(Debug, Clone)]
pub struct RunnerPlan {
    /// The test command: the payload's interpreter running the trusted runner.
    pub argv: Vec<String>,
    /// Added to the test command's environment: the nonce.
    pub env: Vec<(String, String)>,
    nonce: String,
}

/// Plans the trusted run of `test_command`, or says why there is none: the program is not a
/// Python interpreter, or no test file is a Python test module. Test modules are the test
/// files the command names (`python3 test_app.py`), else the test files named `test_*.py`
/// or `*_test.py`.
pub fn plan(test_command: &[String], test_files: &BTreeSet<String>) -> Result<RunnerPlan, String> {
    let Some(program) = test_command.first() else {
        return Err("the test command is empty".to_string());
    };
    if !is_python(program) {
        return Err(format!(
            "no trusted test runner for {program:?}: only Python test commands are verified today (the tests' exit status and output are not evidence, and only the Python runner reports through a channel the code under test cannot forge)"
        ));
    }
    let modules = test_modules(&test_command[1..], test_files);
    if modules.is_empty() {
        return Err(
            "no Python test module among the test files (test_*.py or *_test.py, or a test file the test command names); list the tests in the payload's tests"
                .to_string(),
        );
    }
    let protected_python: Vec<&String> = test_files
        .iter()
        .filter(|path| path.ends_with(".py"))
        .collect();
    let config = serde_json::json!({"modules": modules, "protected_python": protected_python});
    let nonce = new_nonce();
    Ok(RunnerPlan {
        argv: vec![
            program.clone(),
            "-I".to_string(),
            "-B".to_string(),
            "-u".to_string(),
            "-c".to_string(),
            PARENT_SOURCE.to_string(),
            CHILD_SOURCE.to_string(),
            config.to_string(),
        ],
        env: vec![(NONCE_ENV.to_string(), nonce.clone())],
        nonce,
    })
}

impl RunnerPlan {
    /// Reads this run's report from `run`'s stdout (the runner's line is taken out of it) and
    /// sets `run`'s test counts from it, so that no count the tests printed is recorded.
    ///
    /// The report counts only if exactly one distinct line carries this run's nonce and the
    /// runner exited as that report says (0 when every test passed, else 1). Two lines mean
    /// the nonce leaked, and a runner killed after its line was printed, or a line without
    /// a normal exit, means someone else may have written it: either way, no report.
    pub fn take_evidence(&self, run: &mut SandboxRun) -> TestsEvidence {
        let genuine_prefix = format!("{REPORT_PREFIX} {} ", self.nonce);
        // The head and the tail of stdout overlap when it was short: a set counts a line once.
        // A head cut at its size cap may end inside the report line: its last line is then a
        // fragment of the tail's line, not a second report.
        let head_was_cut = run.stdout_bytes > run.stdout.len() as u64;
        let head_lines = run.stdout.lines();
        let head_complete_lines = if head_was_cut {
            let complete = run.stdout.lines().count().saturating_sub(1);
            head_lines.take(complete).collect::<Vec<_>>()
        } else {
            head_lines.collect::<Vec<_>>()
        };
        let genuine_lines: BTreeSet<String> = head_complete_lines
            .into_iter()
            .chain(run.stdout_tail.lines())
            .filter(|line| line.starts_with(&genuine_prefix))
            .map(str::to_string)
            .collect();
        let forged_lines = run
            .stdout
            .lines()
            .filter(|line| line.starts_with(REPORT_PREFIX) && !line.starts_with(&genuine_prefix))
            .count();
        for line in &genuine_lines {
            run.stdout = run.stdout.replace(line.as_str(), "");
        }
        let report = match genuine_lines.len() {
            1 => genuine_lines.first().and_then(|line| {
                serde_json::from_str::<RunnerReport>(&line[genuine_prefix.len()..])
                    .ok()
                    .filter(|report| report.version == REPORT_VERSION)
                    .filter(|report| run.exit_code == Some(if report.all_passed { 0 } else { 1 }))
            }),
            _ => None,
        };
        run.tests_passed = report.as_ref().map(|report| report.passed);
        run.tests_failed = report
            .as_ref()
            .map(|report| report.expected.saturating_sub(report.passed));
        match report {
            Some(report) => evidence_from_report(&report),
            None => no_report_evidence(run, genuine_lines.len(), forged_lines),
        }
    }
}

/// The evidence when no trusted run could be planned.
pub fn no_runner_evidence(reason: String) -> TestsEvidence {
    TestsEvidence {
        passed: 0,
        expected: 0,
        all_passed: false,
        reason: Some(reason),
    }
}

/// What `parent.py` prints after the nonce.
#[derive(Debug, Deserialize)]
struct RunnerReport {
    version: u32,
    /// The child reported `done` and exited 0.
    complete: bool,
    /// The child reported tampering, or broke the protocol.
    tampered: bool,
    /// Tests the pristine test files define.
    expected: u32,
    /// Of those, how many passed.
    passed: u32,
    all_passed: bool,
    failures: Vec<RunnerFailure>,
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RunnerFailure {
    test: String,
    /// `failed`, `error`, `skipped` or `not_run`.
    status: String,
    detail: String,
}

fn evidence_from_report(report: &RunnerReport) -> TestsEvidence {
    let all_passed = report.all_passed
        && report.complete
        && !report.tampered
        && report.expected > 0
        && report.passed == report.expected;
    TestsEvidence {
        // A run that was tampered with proves nothing, not even partly.
        passed: if report.tampered { 0 } else { report.passed },
        expected: report.expected,
        all_passed,
        reason: (!all_passed).then(|| report_reason(report)),
    }
}

fn report_reason(report: &RunnerReport) -> String {
    let mut parts: Vec<String> = report
        .problems
        .iter()
        .take(REASON_ITEMS_MAX)
        .cloned()
        .collect();
    parts.push(format!(
        "{} of {} tests passed",
        report.passed, report.expected
    ));
    for failure in report.failures.iter().take(REASON_ITEMS_MAX) {
        let detail = last_line(&failure.detail);
        let status = failure.status.replace('_', " ");
        if detail.is_empty() {
            parts.push(format!("{} {status}", failure.test));
        } else {
            parts.push(format!("{} {status}: {detail}", failure.test));
        }
    }
    if report.failures.len() > REASON_ITEMS_MAX {
        parts.push(format!(
            "{} more not passed",
            report.failures.len() - REASON_ITEMS_MAX
        ));
    }
    parts.join("; ")
}

fn no_report_evidence(
    run: &SandboxRun,
    genuine_lines: usize,
    forged_lines: usize,
) -> TestsEvidence {
    let ended = match run.exit_code {
        Some(code) => format!("{} with exit status {code}", run.outcome.as_str()),
        None => run.outcome.as_str().to_string(),
    };
    let mut reason = match genuine_lines {
        0 => format!(
            "the trusted test runner gave no report (the run ended {ended}); what the tests print and their exit status are not evidence"
        ),
        1 => format!(
            "the trusted test runner's report does not match how it ended ({ended}); it is not believed"
        ),
        lines => format!(
            "{lines} different reports carried this run's nonce, which only the runner knows; none is believed"
        ),
    };
    if forged_lines > 0 {
        reason.push_str(&format!(
            "; stdout held {forged_lines} report line(s) with another run's nonce (forged, ignored)"
        ));
    }
    no_runner_evidence(reason)
}

/// The last non-empty line: the exception line of a traceback.
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
        .trim();
    line.chars().take(REASON_DETAIL_CHARS_MAX).collect()
}

/// `python`, `python3`, `python3.12`, or a path ending in one of them.
fn is_python(program: &str) -> bool {
    let name = program.rsplit('/').next().unwrap_or(program);
    let Some(version) = name.strip_prefix("python") else {
        return false;
    };
    version.is_empty()
        || version
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

fn test_modules(args: &[String], test_files: &BTreeSet<String>) -> Vec<String> {
    let named: Vec<String> = args
        .iter()
        .filter(|arg| arg.ends_with(".py") && test_files.contains(*arg))
        .cloned()
        .collect();
    if !named.is_empty() {
        return named;
    }
    test_files
        .iter()
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
        })
        .cloned()
        .collect()
}

fn new_nonce() -> String {
    let mut bytes = [0_u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests;
