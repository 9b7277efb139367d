//! Turning how a sandboxed process ended into a `SandboxOutcome`, and reading test counts from
//! what common test runners print.

use agentd_schemas::events::SandboxOutcome;

use super::process::{ProcessReport, Termination};
use super::SandboxLimits;

/// Fraction of the memory limit at which a crash by signal is blamed on memory (percent).
const NEAR_MEMORY_LIMIT_PERCENT: u64 = 90;

/// Messages runtimes print when an allocation fails under `RLIMIT_AS`: Python, Rust, C++,
/// glibc `perror`, Node and the JVM.
const ALLOCATION_FAILURE_MARKERS: [&str; 7] = [
    "MemoryError",
    "memory allocation of",
    "std::bad_alloc",
    "Cannot allocate memory",
    "out of memory",
    "JavaScript heap out of memory",
    "java.lang.OutOfMemoryError",
];

/// Classifies a finished process.
///
/// - `timed_out`: the wall clock ran out, or the CPU limit did (SIGXCPU, or SIGKILL once the
///   CPU time reached `cpu_time_s`).
/// - `killed_oom`: the cgroup's OOM killer fired; or, with `RLIMIT_AS`, where allocations fail
///   instead of the process being killed: a non-zero end together with an allocation-failure
///   message in the stderr tail (Python's `MemoryError`, Rust's "memory allocation of N bytes
///   failed", `std::bad_alloc`, ...) or a death by SIGKILL/SIGSEGV/SIGABRT/SIGBUS with the
///   peak memory at 90 % of the limit or more. This is a heuristic: a program can print
///   "MemoryError" on purpose, which only turns one failing verdict into another.
/// - `ok` for exit status 0, `failed` for anything else.
pub(crate) fn classify(report: &ProcessReport, limits: &SandboxLimits) -> SandboxOutcome {
    if report.wall_time_exceeded {
        return SandboxOutcome::TimedOut;
    }
    if report.cgroup_oom_killed {
        return SandboxOutcome::KilledOom;
    }
    let cpu_limit_ms = limits.cpu_time_s.saturating_mul(1000);
    match report.termination {
        Termination::Signaled(signal) if signal == libc::SIGXCPU => {
            return SandboxOutcome::TimedOut
        }
        Termination::Signaled(signal)
            if signal == libc::SIGKILL && report.cpu_time_ms >= cpu_limit_ms =>
        {
            return SandboxOutcome::TimedOut
        }
        Termination::Exited(0) => return SandboxOutcome::Ok,
        _ => {}
    }
    let stderr_tail = report.stderr.tail_text();
    let says_allocation_failed = ALLOCATION_FAILURE_MARKERS
        .iter()
        .any(|marker| stderr_tail.contains(marker));
    let near_limit = report.peak_memory_bytes.is_some_and(|peak| {
        peak.saturating_mul(100)
            >= limits
                .memory_bytes
                .saturating_mul(NEAR_MEMORY_LIMIT_PERCENT)
    });
    let crash_signal = matches!(
        report.termination,
        Termination::Signaled(signal)
            if [libc::SIGKILL, libc::SIGSEGV, libc::SIGABRT, libc::SIGBUS].contains(&signal)
    );
    if says_allocation_failed || (crash_signal && near_limit) {
        SandboxOutcome::KilledOom
    } else {
        SandboxOutcome::Failed
    }
}

/// Test counts from a runner's summary, searched from the end of stdout, then stderr.
///
/// Understood: the generic `TESTS passed=N failed=M` line; summaries listing `N passed` and
/// `N failed` (pytest `3 passed, 1 failed in 0.2s`, whose `errors` count as failed; cargo
/// `test result: ok. 3 passed; 0 failed`; Jest `Tests: 1 failed, 4 passed`; the plain
/// `N passed, N failed`); and unittest's `Ran N tests` with `OK` or `FAILED (failures=a,
/// errors=b)`. Returns `(passed, failed)`; `None` when no summary was found.
pub(crate) fn parse_test_counts(stdout: &str, stderr: &str) -> Option<(u32, u32)> {
    [stdout, stderr].into_iter().find_map(|text| {
        let lines: Vec<&str> = text.lines().collect();
        lines.iter().enumerate().rev().find_map(|(index, line)| {
            generic_counts(line)
                .or_else(|| summary_counts(line))
                .or_else(|| unittest_counts(&lines[index..]))
        })
    })
}

/// `TESTS passed=N failed=M`.
fn generic_counts(line: &str) -> Option<(u32, u32)> {
    let rest = line.trim().strip_prefix("TESTS ")?;
    let mut passed = None;
    let mut failed = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("passed", n)) => passed = n.parse().ok(),
            Some(("failed", n)) => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// A line with `N passed` and/or `N failed` (and `N error(s)`, counted as failed).
fn summary_counts(line: &str) -> Option<(u32, u32)> {
    // `=` stays inside words so that unittest's `failures=1, errors=1` is not read as
    // "1 errors".
    let words: Vec<&str> = line
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '=')
        .filter(|word| !word.is_empty())
        .collect();
    let mut passed = 0_u32;
    let mut failed = 0_u32;
    let mut found = false;
    for pair in words.windows(2) {
        let Ok(count) = pair[0].parse::<u32>() else {
            continue;
        };
        match pair[1] {
            "passed" => passed = passed.saturating_add(count),
            "failed" | "error" | "errors" => failed = failed.saturating_add(count),
            _ => continue,
        }
        found = true;
    }
    found.then_some((passed, failed))
}

/// unittest: `Ran N tests in ...` followed (on a later line) by `OK` or `FAILED (...)`.
fn unittest_counts(lines: &[&str]) -> Option<(u32, u32)> {
    let ran: u32 = lines
        .first()?
        .strip_prefix("Ran ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let verdict = lines[1..]
        .iter()
        .map(|line| line.trim())
        .find(|line| !line.is_empty())?;
    if verdict.starts_with("OK") {
        return Some((ran, 0));
    }
    let details = verdict.strip_prefix("FAILED")?;
    let mut failed = 0_u32;
    for field in details.split(['(', ')', ',', ' ']) {
        if let Some(("failures" | "errors", n)) = field.split_once('=') {
            failed = failed.saturating_add(n.parse().unwrap_or(0));
        }
    }
    Some((ran.saturating_sub(failed), failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_runner_summaries() {
        let cases = [
            ("===== 3 passed, 1 failed in 0.12s =====", Some((3, 1))),
            ("== 1 failed, 2 passed, 1 error in 1.0s ==", Some((2, 2))),
            ("5 passed in 0.01s", Some((5, 0))),
            ("TESTS passed=7 failed=0", Some((7, 0))),
            (
                "test result: ok. 12 passed; 0 failed; 0 ignored",
                Some((12, 0)),
            ),
            ("Tests:       1 failed, 4 passed, 5 total", Some((4, 1))),
            ("summary: 2 passed, 3 failed", Some((2, 3))),
            ("nothing to see", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_test_counts(text, ""), expected, "{text:?}");
        }
    }

    #[test]
    fn last_summary_wins_and_stderr_is_a_fallback() {
        let stdout = "1 passed\nlots of output\n== 4 passed, 1 failed ==\ntrailing\n";
        assert_eq!(parse_test_counts(stdout, ""), Some((4, 1)));
        assert_eq!(parse_test_counts("", "3 passed\n"), Some((3, 0)));
    }

    #[test]
    fn parses_unittest_summaries() {
        let failing = "....F\n------\nRan 5 tests in 0.001s\n\nFAILED (failures=1, errors=1)\n";
        assert_eq!(parse_test_counts("", failing), Some((3, 2)));
        let passing = "Ran 4 tests in 0.001s\n\nOK\n";
        assert_eq!(parse_test_counts("", passing), Some((4, 0)));
    }
}
