//! `agentd-sandbox`: the sandbox runner. Applies one ast-grep action to a snapshot of a task's
//! files in a fresh workspace, optionally runs a test command there, and reports the diff, the
//! output and how it ended as a `SandboxOutcome`.
//!
//! Every process it starts (the apply helper and the test command) runs confined: its own
//! session and process group, a cgroup with `pids.max` and a memory limit where the host
//! allows one, `RLIMIT_CPU`/`AS`/`NOFILE`/`FSIZE`/`NPROC`, CPU affinity, a new network
//! namespace (no interface but a downed loopback), a mount namespace in which the whole host
//! filesystem is read-only except the workspace, a minimal environment, stdin from
//! `/dev/null`, bounded output capture, and a wall-clock deadline after which the whole tree
//! is SIGKILLed. See `docs/sandbox.md` for the threat model and what each limit achieves.
//!
//! What it owns: ast-grep (the only crate of the workspace that links it), namespaces, cgroups,
//! rlimits and the confined helper process. What it must not do: talk to the daemon or know
//! about HTTP, jobs, leases or the `agentctl` command line. Callers (`agentctl sandbox run`,
//! the `astgrep.verify` worker in `agentd-client`) turn a [`SandboxRun`] into events.
//! Binaries that call [`run`] must call [`maybe_run_internal_helper`] first thing in `main`
//! (see [`helper`]).

mod action;
mod allowlist;
mod capture;
mod cgroup;
mod confine;
mod diff;
mod error;
mod helper;
mod limits;
mod process;
mod report;
mod workspace;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentd_schemas::events::{Action, SandboxOutcome};
use serde::{Deserialize, Serialize};

pub use action::{apply_action_in_memory, is_supported_language, SUPPORTED_LANGUAGES};
pub use diff::{changed_paths, unified_diff};
pub use error::SandboxError;
pub use helper::{maybe_run_internal_helper, HELPER_TEST_NAME};
pub use limits::{CgroupMode, SandboxLimits};
pub use workspace::{
    load_files_from_dir, validate_relative_path, TASK_FILES_BYTES_MAX, TASK_FILES_COUNT_MAX,
};

use helper::{apply_confined, ApplyResult};
use process::{run_confined, ConfinedCommand, Launch, ProcessReport};
use workspace::{validate_task_files, Workspace};

/// One sandbox job: the files to work on, the action to apply, and how to test the result.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Relative path -> content; paths must pass [`validate_relative_path`].
    pub files: BTreeMap<String, String>,
    /// The ast-grep action to apply.
    pub action: Action,
    /// `argv` of a test command run in the workspace after the action, if any; `argv[0]` must
    /// be allowlisted.
    pub test_command: Option<Vec<String>>,
    /// Keep the workspace on disk afterwards (its path is reported) for debugging.
    pub keep_workspace: bool,
    /// Task files the action must not change and the test command must not write: the task's
    /// tests. The action's changes to them are reported (`protected_changed`, and in the diff)
    /// but never written, so the test command sees their original bytes; they are owned by
    /// root, read-only, in root-owned sticky directories, so the unprivileged test command
    /// cannot write, replace, rename or chmod them. Needs the user switch (a root worker):
    /// without it a run with a test command is `rejected`.
    pub protected_paths: BTreeSet<String>,
    /// Variables added to the test command's environment (not the apply helper's).
    pub test_env: Vec<(String, String)>,
}

/// What a sandbox run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRun {
    /// How the run ended; see [`run`] for the rules.
    pub outcome: SandboxOutcome,
    /// Exit status of the test command; `None` without one, or when it died by a signal.
    pub exit_code: Option<i32>,
    /// Unified diff of the action's changes (empty when it matched nothing).
    pub diff: String,
    /// Head of the test command's stdout (at most `output_bytes_max` bytes); the apply
    /// helper's when the apply step crashed.
    pub stdout: String,
    /// Head of its stderr, followed by `[agentd-sandbox]` notes (why it was killed).
    pub stderr: String,
    /// Bytes written to stdout in total, including what was cut.
    pub stdout_bytes: u64,
    /// Bytes written to stderr in total, including what was cut.
    pub stderr_bytes: u64,
    /// Tests passed, when the output held a summary we understand.
    pub tests_passed: Option<u32>,
    /// Tests failed (or errored), when the output held a summary we understand.
    pub tests_failed: Option<u32>,
    /// Wall time of the whole run, workspace setup to cleanup.
    pub duration_ms: u64,
    /// Peak memory of the last confined process tree, where measured.
    pub peak_rss_bytes: Option<u64>,
    /// Files the action changed, sorted.
    pub files_changed: Vec<String>,
    /// Why the run was `rejected`.
    pub rejected_reason: Option<String>,
    /// The kept workspace, when `keep_workspace` was set.
    pub workspace: Option<PathBuf>,
    /// Protected files (`SandboxSpec::protected_paths`) the action changed; their changes are in
    /// the diff but were not written, so the test command ran on the original bytes.
    pub protected_changed: Vec<String>,
    /// The action's new content of every file in `files_changed`, protected ones included (for
    /// comparing the result with an expected one). Not serialized: the diff says the same.
    #[serde(skip)]
    pub changed_contents: BTreeMap<String, String>,
    /// The last bytes (up to 8 KiB) of stdout; `stdout` holds the head. What a runner prints
    /// last is here even when a flood pushed it out of the head.
    #[serde(skip)]
    pub stdout_tail: String,
}

/// Applies `spec.action` to `spec.files` in a fresh workspace and runs `spec.test_command`
/// there, everything confined by `limits`.
///
/// Outcomes: `rejected` for a bad path, a disallowed binary, an invalid pattern or rule, or an
/// isolation feature the kernel refused (the sandbox fails closed); `timed_out` when the wall
/// clock (one budget for the whole run) or the CPU limit ran out; `killed_oom` when a process
/// ran out of memory (see `report::classify` for the heuristic); `failed` when the test command
/// exited non-zero or the apply helper crashed; `ok` otherwise. An action that matches
/// nothing is `ok` with an empty diff: "applied cleanly, changed nothing" is a fact about the
/// action, and the verifier decides that an empty diff is not worth accepting.
///
/// `Err` is kept for failures of the host (no temp dir, cannot spawn threads) and for a binary
/// that never calls [`maybe_run_internal_helper`].
pub fn run(spec: &SandboxSpec, limits: &SandboxLimits) -> Result<SandboxRun, SandboxError> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(limits.wall_time_ms);
    limits.validate().map_err(|message| SandboxError::Config {
        path: PathBuf::from("<limits>"),
        message,
    })?;
    let test = match TestPlan::of(spec, limits) {
        Ok(test) => test,
        Err(reason) => return Ok(SandboxRun::rejected(reason, started)),
    };
    let workspace = Workspace::create(limits.workspace_root.as_deref(), "agentd-sandbox-")?;
    if let Some(reason) = write_task_files(&workspace, &spec.files)? {
        return Ok(SandboxRun::rejected(reason, started));
    }
    let mut run = match apply_confined(&spec.files, &spec.action, limits, deadline)? {
        ApplyResult::Applied(changed) => applied(spec, changed, &workspace, started)?,
        ApplyResult::Invalid(reason) | ApplyResult::Refused(reason) => {
            SandboxRun::rejected(reason, started)
        }
        ApplyResult::Crashed(report) => apply_crashed(&report, limits, started),
    };
    if run.outcome == SandboxOutcome::Ok {
        if let Some(test) = test {
            test.run(&mut run, spec, &workspace, limits, deadline)?;
        }
    }
    if spec.keep_workspace {
        run.workspace = Some(workspace.keep());
    } else {
        drop(workspace);
    }
    run.duration_ms = started.elapsed().as_millis() as u64;
    Ok(run)
}

/// The test command of a run, checked before any work: its program resolved against the
/// allowlist, and the user it runs as.
struct TestPlan {
    program: PathBuf,
    args: Vec<String>,
    /// `(uid, gid)` of the unprivileged user when we are root; `None` runs it as ourselves.
    run_as: Option<(u32, u32)>,
}

impl TestPlan {
    /// `Ok(None)` without a test command; `Err` with the reason to reject the run (invalid task
    /// files, an empty or disallowed command, protected files that cannot be protected).
    fn of(spec: &SandboxSpec, limits: &SandboxLimits) -> Result<Option<TestPlan>, String> {
        validate_task_files(&spec.files).map_err(|error| error.to_string())?;
        let Some(argv) = &spec.test_command else {
            return Ok(None);
        };
        let Some(program) = argv.first() else {
            return Err("empty test command".to_string());
        };
        let program = allowlist::resolve_program(program, limits)?;
        // The test command runs as the unprivileged user when we are root; only then can the
        // protected files be kept out of its reach.
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then_some((limits.unprivileged_uid, limits.unprivileged_gid));
        if !spec.protected_paths.is_empty() && run_as.is_none() {
            return Err(
                "the test files cannot be kept read-only for the test command: that needs the \
                 switch to unprivileged_uid, which only a worker running as root makes"
                    .to_string(),
            );
        }
        Ok(Some(TestPlan {
            program,
            args: argv[1..].to_vec(),
            run_as,
        }))
    }

    /// Runs the test command, confined, in the workspace the action was applied to, and adds
    /// how it ended to `run`.
    fn run(
        self,
        run: &mut SandboxRun,
        spec: &SandboxSpec,
        workspace: &Workspace,
        limits: &SandboxLimits,
        deadline: Instant,
    ) -> Result<(), SandboxError> {
        if let Some((uid, gid)) = self.run_as {
            workspace.hand_over(uid, gid, &spec.protected_paths)?;
        }
        let mut env = sandbox_env(workspace.path(), limits);
        env.extend(spec.test_env.iter().cloned());
        let command = ConfinedCommand {
            program: &self.program,
            args: &self.args,
            env,
            workdir: workspace.path(),
            limits,
            deadline,
            run_as: self.run_as,
        };
        match run_confined(&command)? {
            Launch::Refused(reason) => {
                run.outcome = SandboxOutcome::Rejected;
                run.rejected_reason = Some(reason);
            }
            Launch::Finished(report) => run.absorb(&report, limits),
        }
        Ok(())
    }
}

/// Writes the task's files into the workspace; `Some(reason)` to reject the run.
fn write_task_files(
    workspace: &Workspace,
    files: &BTreeMap<String, String>,
) -> Result<Option<String>, SandboxError> {
    for (path, content) in files {
        match workspace.write_file(path, content) {
            Ok(()) => {}
            // E.g. both `a` and `a/b`: valid paths that cannot coexist.
            Err(error @ SandboxError::InvalidPath { .. }) => return Ok(Some(error.to_string())),
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// The run after the helper applied the action: the changed files written (except protected
/// ones), the diff and the lists of changed files.
fn applied(
    spec: &SandboxSpec,
    changed: BTreeMap<String, String>,
    workspace: &Workspace,
    started: Instant,
) -> Result<SandboxRun, SandboxError> {
    let mut after = spec.files.clone();
    for (path, content) in changed {
        // The helper may only change files it was given.
        if !spec.files.contains_key(&path) {
            return Err(SandboxError::Helper(format!(
                "helper invented file {path:?}"
            )));
        }
        // A protected file keeps its original bytes on disk: the tests run as given.
        if !spec.protected_paths.contains(&path) {
            workspace.write_file(&path, &content)?;
        }
        after.insert(path, content);
    }
    let mut run = SandboxRun::empty(SandboxOutcome::Ok, started);
    run.diff = unified_diff(&spec.files, &after);
    run.files_changed = changed_paths(&spec.files, &after);
    run.protected_changed = run
        .files_changed
        .iter()
        .filter(|path| spec.protected_paths.contains(*path))
        .cloned()
        .collect();
    run.changed_contents = run
        .files_changed
        .iter()
        .filter_map(|path| Some((path.clone(), after.remove(path)?)))
        .collect();
    Ok(run)
}

/// The run when the apply helper did not complete (killed, out of memory, crashed).
fn apply_crashed(report: &ProcessReport, limits: &SandboxLimits, started: Instant) -> SandboxRun {
    let mut run = SandboxRun::empty(SandboxOutcome::Failed, started);
    run.absorb(report, limits);
    // What ended is the helper, not a test command: its exit status and libtest's "1 passed"
    // say nothing about the task's tests.
    if run.outcome == SandboxOutcome::Ok {
        run.outcome = SandboxOutcome::Failed;
    }
    run.exit_code = None;
    run.tests_passed = None;
    run.tests_failed = None;
    run.stderr
        .push_str("\n[agentd-sandbox] the ast-grep apply step did not complete\n");
    run
}

/// The whole environment of a sandboxed process: nothing is inherited from the worker (no
/// tokens, no proxies), and what is set makes runs reproducible.
fn sandbox_env(workdir: &Path, limits: &SandboxLimits) -> Vec<(String, String)> {
    let workdir = workdir.to_string_lossy().into_owned();
    [
        ("PATH", limits.search_path.as_str()),
        ("HOME", workdir.as_str()),
        ("TMPDIR", workdir.as_str()),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("TZ", "UTC"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONHASHSEED", "0"),
        // Output written before a kill is not lost in a buffer.
        ("PYTHONUNBUFFERED", "1"),
        ("CI", "true"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

impl SandboxRun {
    fn rejected(reason: String, started: Instant) -> SandboxRun {
        let mut run = SandboxRun::empty(SandboxOutcome::Rejected, started);
        run.rejected_reason = Some(reason);
        run
    }

    fn empty(outcome: SandboxOutcome, started: Instant) -> SandboxRun {
        SandboxRun {
            outcome,
            exit_code: None,
            diff: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            tests_passed: None,
            tests_failed: None,
            duration_ms: started.elapsed().as_millis() as u64,
            peak_rss_bytes: None,
            files_changed: Vec::new(),
            rejected_reason: None,
            workspace: None,
            protected_changed: Vec::new(),
            changed_contents: BTreeMap::new(),
            stdout_tail: String::new(),
        }
    }

    /// Takes the outcome, output and measurements of a finished process.
    fn absorb(&mut self, report: &ProcessReport, limits: &SandboxLimits) {
        self.outcome = report::classify(report, limits);
        self.exit_code = match report.termination {
            process::Termination::Exited(code) => Some(code),
            process::Termination::Signaled(_) => None,
        };
        self.stdout = report.stdout.head_text();
        self.stdout_tail = report.stdout.tail_text();
        self.stderr = report.stderr.head_text();
        if let process::Termination::Signaled(signal) = report.termination {
            self.stderr.push_str(&format!(
                "\n[agentd-sandbox] terminated by signal {signal}\n"
            ));
        }
        for note in &report.notes {
            self.stderr
                .push_str(&format!("\n[agentd-sandbox] {note}\n"));
        }
        self.stdout_bytes = report.stdout.total_bytes;
        self.stderr_bytes = report.stderr.total_bytes;
        let counts =
            report::parse_test_counts(&report.stdout.tail_text(), &report.stderr.tail_text());
        self.tests_passed = counts.map(|(passed, _)| passed);
        self.tests_failed = counts.map(|(_, failed)| failed);
        self.peak_rss_bytes = report.peak_memory_bytes;
    }
}

#[cfg(test)]
mod tests;
