//! One sandbox run in a child process (`agentctl sandbox serve-job`), so that a worker can stop
//! it at once.
//!
//! Why a child: `sandbox::run` is synchronous and has no cancel switch; its processes are in
//! their own sessions and cgroups, so the worker cannot tell which of its descendants belong to
//! which job. In a child process they are exactly the child's children. On SIGTERM the child
//! kills their process groups (repeatedly, until `sandbox::run` returns, so a test command
//! started right after the first kill dies too); `sandbox::run` then sees its process end and
//! runs its own teardown (the rest of the tree, the cgroup, the workspace) before the child
//! exits. If the child does not exit within [`CANCEL_GRACE`], the worker SIGKILLs its process
//! group; the confined processes then die of `PR_SET_PDEATHSIG`.
//!
//! The request and answer are JSON on stdin and stdout between two copies of one binary, never
//! stored or sent elsewhere, so they are defined here and not in `agentd-schemas`.

use super::post_match::compare_with_post;
use super::python_runner;
use super::verdict::TestsEvidence;
use super::verify_payload::VerifyJob;
use crate::pipe::{read_keeping, Keep};
use crate::sandbox::{
    self, apply_action_in_memory, unified_diff, SandboxLimits, SandboxRun, SandboxSpec,
};
use crate::worker::StopReason;
use agentd_schemas::events::Action;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// How long a stopped child may take to tear its sandbox down before it is SIGKILLed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Largest request the child reads: the task files (at most 64 MiB) plus room for the rest.
pub const REQUEST_BYTES_MAX: u64 = 80 * 1024 * 1024;
/// Largest answer the worker reads: two captured streams (1 MiB each by default) and two
/// diffs fit many times over.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of the child's stderr kept for an error message.
const CHILD_STDERR_TAIL_BYTES: usize = 4096;
/// How often the child re-kills its sandbox processes after SIGTERM until the run returns.
const CANCEL_KILL_INTERVAL: Duration = Duration::from_millis(20);
/// The `agentctl` arguments that start the child.
pub const CHILD_ARGS: [&str; 2] = ["sandbox", "serve-job"];

/// What the child runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRequest {
    pub files: BTreeMap<String, String>,
    pub action: Action,
    pub test_command: Option<Vec<String>>,
    /// Applied in memory to compute the gold diff (in the child, so that it can be stopped too).
    pub gold_action: Option<Action>,
    pub limits: SandboxLimits,
    /// The task's test files: the action's changes to them are not applied, and the test
    /// command can neither write them nor be believed about them (see `python_runner`).
    pub test_files: BTreeSet<String>,
    /// The expected result, path -> text, compared with the action's result.
    pub post: Option<BTreeMap<String, String>>,
}

impl ChildRequest {
    /// The request for one job, under the worker's limits.
    pub fn for_job(job: &VerifyJob, limits: &SandboxLimits) -> ChildRequest {
        ChildRequest {
            files: job.files.clone(),
            action: job.action.clone(),
            test_command: job.test_command.clone(),
            gold_action: job.gold_action.clone(),
            limits: limits.clone(),
            test_files: job.test_files.clone(),
            post: job.post.clone(),
        }
    }
}

/// What the child answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildAnswer {
    pub run: RunReport,
    pub gold: Option<GoldDiff>,
    /// The tests' result as the trusted runner reported it; `None` without a test command.
    pub tests: Option<TestsEvidence>,
    /// The comparison with `post`, when the request had one: `Err` says how it differs.
    pub post: Option<Result<(), String>>,
}

/// The gold action's diff, or why it could not be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum GoldDiff {
    Diff { diff: String },
    Invalid { reason: String },
}

/// The sandbox's run as the child sends it: every field of [`SandboxRun`] except those it
/// skips on the wire (`changed_contents`, `stdout_tail`), which the child uses before it answers.
pub type RunReport = SandboxRun;

/// Why the child gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The job was stopped (lease lost or drain deadline) and the child killed.
    #[error("stopped")]
    Stopped,
    #[error("cannot start the sandbox process {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("the sandbox process failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("the sandbox process answered something unreadable: {0}")]
    Decode(String),
}

// ------------------------------------------------------------------------------------------
// Worker side

/// Runs `request` in a child `executable sandbox serve-job` and waits for its answer, or for
/// `stop` to leave `Running`, in which case the child is stopped (see the module doc).
pub async fn run_in_child(
    executable: &Path,
    request: &ChildRequest,
    stop: &mut watch::Receiver<StopReason>,
) -> Result<ChildAnswer, ChildError> {
    let request_json =
        serde_json::to_vec(request).map_err(|error| ChildError::Decode(error.to_string()))?;
    let mut command = tokio::process::Command::new(executable);
    command
        .args(CHILD_ARGS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The child needs no credentials; the sandbox clears the environment of what it runs
        // anyway, this keeps the token out of one more process.
        .env_remove("AGENTD_TOKEN")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| ChildError::Spawn {
        program: executable.display().to_string(),
        reason: error.to_string(),
    })?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A child that died early closes the pipe; its exit status says why.
            let _reported_by_exit_status = stdin.write_all(&request_json).await;
        }
    };
    // Keep draining past the cap so the child never blocks on a full pipe; an answer that
    // large fails to decode and says so.
    let read_out = async move { read_keeping(stdout.as_mut(), Keep::Head, ANSWER_BYTES_MAX).await };
    let read_err =
        async move { read_keeping(stderr.as_mut(), Keep::Tail, CHILD_STDERR_TAIL_BYTES).await };
    let finished = async {
        let ((), out, err, status) = tokio::join!(feed, read_out, read_err, child.wait());
        (out, err, status)
    };
    tokio::pin!(finished);
    let stopped = async {
        let _sender_gone_means_stop = stop.wait_for(|reason| *reason != StopReason::Running).await;
    };
    let (out, err, status) = tokio::select! {
        done = &mut finished => done,
        _ = stopped => {
            stop_child(pid, &mut finished).await;
            return Err(ChildError::Stopped);
        }
    };
    let status = status.map_err(|error| ChildError::Failed {
        status: "could not wait for it".into(),
        stderr: error.to_string(),
    })?;
    if !status.success() {
        return Err(ChildError::Failed {
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        });
    }
    serde_json::from_slice(&out).map_err(|error| ChildError::Decode(error.to_string()))
}

/// SIGTERM, then SIGKILL to the group after [`CANCEL_GRACE`].
async fn stop_child<F: std::future::Future + Unpin>(pid: Option<u32>, finished: &mut F) {
    let Some(pid) = pid else { return };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    // ESRCH: it already ended, which is what we want.
    let _already_gone = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(CANCEL_GRACE, finished).await.is_err() {
        let _already_gone = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

// ------------------------------------------------------------------------------------------
// Child side

/// The body of `agentctl sandbox serve-job`: reads a [`ChildRequest`] on stdin, runs it, and
/// prints the [`ChildAnswer`] on stdout. On SIGTERM it kills its sandbox processes, waits for
/// the sandbox's teardown, and fails without an answer.
pub async fn serve() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let work = tokio::task::spawn_blocking(|| compute(read_request()?));
    tokio::pin!(work);
    let answer = tokio::select! {
        answer = &mut work => answer,
        _ = terminate.recv() => {
            loop {
                kill_child_process_groups();
                tokio::select! {
                    _ = &mut work => break,
                    _ = tokio::time::sleep(CANCEL_KILL_INTERVAL) => {}
                }
            }
            anyhow::bail!("stopped by SIGTERM; the sandbox run was killed");
        }
    };
    let answer = answer.map_err(|error| anyhow::anyhow!("sandbox thread failed: {error}"))??;
    let bytes = serde_json::to_vec(&answer)?;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()
    })
    .await??;
    Ok(())
}

fn read_request() -> anyhow::Result<ChildRequest> {
    use std::io::Read;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(REQUEST_BYTES_MAX)
        .read_to_end(&mut input)?;
    serde_json::from_slice(&input)
        .map_err(|error| anyhow::anyhow!("bad serve-job request: {error}"))
}

/// The gold diff first (cheap, and a broken gold action is reported even if the run is slow),
/// then the sandbox run, whose tests run through the trusted runner, then the comparison with
/// `post`.
fn compute(request: ChildRequest) -> anyhow::Result<ChildAnswer> {
    let gold = request.gold_action.as_ref().map(|gold| {
        match apply_action_in_memory(&request.files, gold) {
            Ok(after) => GoldDiff::Diff {
                diff: unified_diff(&request.files, &after),
            },
            Err(error) => GoldDiff::Invalid {
                reason: error.to_string(),
            },
        }
    });
    let runner = request
        .test_command
        .as_deref()
        .map(|argv| python_runner::plan(argv, &request.test_files));
    let (test_command, test_env) = match &runner {
        Some(Ok(plan)) => (Some(plan.argv.clone()), plan.env.clone()),
        // Without a trusted runner the tests are not run: nothing they could say would count.
        Some(Err(_)) | None => (None, Vec::new()),
    };
    let spec = SandboxSpec {
        files: request.files,
        action: request.action,
        test_command,
        keep_workspace: false,
        protected_paths: request.test_files,
        test_env,
    };
    let mut run = sandbox::run(&spec, &request.limits)?;
    let tests = match runner {
        None => None,
        Some(Ok(plan)) => Some(plan.take_evidence(&mut run)),
        Some(Err(reason)) => Some(python_runner::no_runner_evidence(reason)),
    };
    let post = request.post.as_ref().map(|expected| {
        let mut after = spec.files.clone();
        after.extend(run.changed_contents.clone());
        compare_with_post(expected, &after)
    });
    Ok(ChildAnswer {
        run,
        gold,
        tests,
        post,
    })
}

/// SIGKILLs the process group of every child of this process. Sandboxed processes are session
/// leaders (`setsid`), so their group is their tree, less anything that called `setsid`
/// itself, which the sandbox's own teardown (cgroup, then group) catches after.
fn kill_child_process_groups() {
    let own_pid = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        // The process may end while we look: then there is nothing to kill.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((ppid, pgrp)) = parent_and_group(&stat) else {
            continue;
        };
        if ppid != own_pid {
            continue;
        }
        let target = nix::unistd::Pid::from_raw(pid);
        let _already_gone = if pgrp == pid {
            nix::sys::signal::killpg(target, nix::sys::signal::Signal::SIGKILL)
        } else {
            nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL)
        };
    }
}

/// `ppid` and `pgrp` from `/proc/PID/stat` (`pid (comm) state ppid pgrp …`); `comm` may hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn parent_and_group(stat: &str) -> Option<(i32, i32)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        assert_eq!(
            parent_and_group("4242 (python3 (x) y) S 17 4242 4242 0 -1"),
            Some((17, 4242))
        );
        assert_eq!(parent_and_group("garbage"), None);
    }
}
