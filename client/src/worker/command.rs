//! The command handler (`agentctl worker -- CMD ...`): runs a command per job, the job as JSON
//! on its stdin, its stdout as the result, its output into the job's log.

use super::{Handler, JobContext, JobOutcome, StopReason, STDERR_TAIL_BYTES, STDOUT_BYTES_MAX};
use crate::job_log::OutputSink;
use crate::pipe::{Keep, Kept};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the worker reaches the daemon; a command handler passes it on to each job's process
/// (`AGENTD_URL`, `AGENTD_TOKEN`, `AGENTD_CA_CERT`) so the job can call the daemon the same way.
#[derive(Debug, Clone)]
pub struct DaemonAccess {
    pub url: String,
    /// Bearer token, when the daemon requires one.
    pub token: Option<String>,
    /// Absolute path of the PEM file of the CA to trust for https URLs.
    pub ca_cert: Option<PathBuf>,
}

impl DaemonAccess {
    /// Sets `AGENTD_URL`, and sets or removes `AGENTD_TOKEN` and `AGENTD_CA_CERT`: never
    /// inherited, so a job sees what this worker uses, not a stale value from the worker's own
    /// environment.
    pub fn apply_to(&self, command: &mut tokio::process::Command) {
        command.env("AGENTD_URL", &self.url);
        match &self.token {
            Some(token) => command.env("AGENTD_TOKEN", token),
            None => command.env_remove("AGENTD_TOKEN"),
        };
        match &self.ca_cert {
            Some(path) => command.env("AGENTD_CA_CERT", path),
            None => command.env_remove("AGENTD_CA_CERT"),
        };
    }
}

/// A handler that runs `argv` per job: the leased job as JSON on stdin, stdout (JSON, or text
/// wrapped as a string) becomes the result on exit 0; otherwise the tail of stderr is the error.
pub fn command_handler(argv: Vec<String>, daemon: DaemonAccess) -> Handler {
    let argv = Arc::new(argv);
    let daemon = Arc::new(daemon);
    Arc::new(move |context: JobContext| {
        let argv = argv.clone();
        let daemon = daemon.clone();
        Box::pin(async move { run_command(&argv, &daemon, context).await })
    })
}

async fn run_command(
    argv: &[String],
    daemon: &DaemonAccess,
    mut context: JobContext,
) -> JobOutcome {
    let Some((program, args)) = argv.split_first() else {
        return JobOutcome::Fail {
            error: "worker has no command to run".into(),
            retryable: false,
        };
    };
    let mut command = job_command(program, args, &context, daemon);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return JobOutcome::Fail {
                error: format!("cannot start {program}: {error}"),
                retryable: false,
            }
        }
    };
    let job_json = serde_json::to_vec(&context.grant.job).unwrap_or_default();
    let pid = child.id();
    let output = context.output.clone();
    let run = feed_and_collect(&mut child, job_json, &output);
    tokio::pin!(run);
    let stop = async {
        // A dropped sender means the job is over either way.
        let _sender_gone = context
            .stop
            .wait_for(|reason| *reason != StopReason::Running)
            .await;
    };
    let (stdout, stderr, status) = tokio::select! {
        finished = &mut run => finished,
        _ = stop => {
            kill_group(pid);
            return JobOutcome::Stopped;
        }
    };
    match status {
        Ok(status) if status.success() => JobOutcome::Complete(result_of_stdout(&stdout)),
        Ok(status) => failure_of_exit(status, &stderr),
        Err(error) => JobOutcome::Fail {
            error: format!("waiting for the command failed: {error}"),
            retryable: true,
        },
    }
}

/// The job's process: `program args`, its own process group, pipes for all three streams,
/// and the job's environment (`AGENTD_JOB_ID` ..., the slot's, the daemon's address).
fn job_command(
    program: &str,
    args: &[String],
    context: &JobContext,
    daemon: &DaemonAccess,
) -> tokio::process::Command {
    let grant = &context.grant;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("AGENTD_JOB_ID", grant.job_id.to_string())
        .env("AGENTD_LEASE_ID", grant.lease_id.to_string())
        .env("AGENTD_ATTEMPT", grant.attempt.to_string())
        .env("AGENTD_SLOT", context.slot.index.to_string())
        .envs(context.slot.env.iter().cloned())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(task_id) = &grant.job.task_id {
        command.env("AGENTD_TASK_ID", task_id);
    }
    daemon.apply_to(&mut command);
    command
}

/// Writes the job to the child's stdin, reads its stdout (head) and stderr (tail) into the
/// job's log as they come, and waits for it to exit.
async fn feed_and_collect(
    child: &mut tokio::process::Child,
    job_json: Vec<u8>,
    output: &OutputSink,
) -> (Vec<u8>, Vec<u8>, std::io::Result<std::process::ExitStatus>) {
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read stdin closes it early; that is fine.
            let _command_may_ignore_stdin = stdin.write_all(&job_json).await;
        }
        drop(stdin);
    };
    let read_stdout = read_logged(stdout.as_mut(), Keep::Head, STDOUT_BYTES_MAX, output);
    let read_stderr = read_logged(stderr.as_mut(), Keep::Tail, STDERR_TAIL_BYTES, output);
    let ((), out, err, status) = tokio::join!(feed, read_stdout, read_stderr, child.wait());
    (out, err, status)
}

/// A successful job's result: its stdout as JSON, or as a JSON string when it is not JSON;
/// nothing when it printed nothing.
fn result_of_stdout(stdout: &[u8]) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(trimmed)
            .unwrap_or_else(|_| serde_json::Value::String(trimmed.to_string())),
    )
}

/// A failed job's error: how it exited, then the tail of its stderr; always retryable.
fn failure_of_exit(status: std::process::ExitStatus, stderr: &[u8]) -> JobOutcome {
    let tail = String::from_utf8_lossy(stderr).trim().to_string();
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!(
            "killed by signal {}",
            std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        ),
    };
    JobOutcome::Fail {
        error: if tail.is_empty() {
            how
        } else {
            format!("{how}: {tail}")
        },
        retryable: true,
    }
}

/// Kills a job's whole process group (the command was started as its leader).
pub(crate) fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // ESRCH: the group is already gone, which is what we want.
        let _already_gone = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Reads a pipe to its end, keeping `keep` of it (at most `max_bytes`) and handing every chunk
/// to the job's log as it comes.
async fn read_logged<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<&mut R>,
    keep: Keep,
    max_bytes: usize,
    output: &OutputSink,
) -> Vec<u8> {
    let mut kept = Kept::new(keep, max_bytes);
    let Some(reader) = reader else {
        return kept.into_bytes();
    };
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept.into_bytes(),
            Ok(read) => {
                output.write(&buffer[..read]).await;
                kept.push(&buffer[..read]);
            }
        }
    }
}
