//! Starting one confined process and supervising it to the end: wall-clock deadline, output
//! capture, killing the whole tree, and collecting what the kernel says about how it ended.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{sched_getaffinity, CpuSet};
use nix::sys::resource::{getrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{pipe2, Gid, Pid, Uid};

use super::capture::{Capture, CapturedStream};
use super::cgroup::Cgroup;
use super::confine::{self, Confinement, Isolation, Stage};
use super::limits::CgroupMode;
use super::{SandboxError, SandboxLimits};

/// How long we wait, after the main process ended, for the rest of its tree to disappear and
/// for its output pipes to close.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);
/// How often the fallback watchdog counts the process group when there is no `pids` cgroup.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(50);
/// Longest pause between two checks of the child; bounds how late a deadline is noticed.
const POLL_INTERVAL_MAX: Duration = Duration::from_millis(10);

/// A program to run confined.
pub(crate) struct ConfinedCommand<'a> {
    /// Absolute path of the executable (already checked against the allowlist).
    pub(crate) program: &'a Path,
    /// Arguments after `argv[0]`.
    pub(crate) args: &'a [String],
    /// The complete environment; nothing is inherited.
    pub(crate) env: Vec<(String, String)>,
    /// Working directory, and the only writable place when the host is made read-only.
    pub(crate) workdir: &'a Path,
    /// Limits and isolation policy.
    pub(crate) limits: &'a SandboxLimits,
    /// When the process tree is killed.
    pub(crate) deadline: Instant,
    /// `(uid, gid)` to run as instead of ours; `workdir` must be writable by them.
    pub(crate) run_as: Option<(u32, u32)>,
}

/// How the main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Termination {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Everything known about a finished process tree.
#[derive(Debug)]
pub(crate) struct ProcessReport {
    pub(crate) termination: Termination,
    /// The deadline passed and we killed the tree.
    pub(crate) wall_time_exceeded: bool,
    /// The fallback watchdog saw more than `processes_max` processes and killed the tree.
    pub(crate) process_limit_exceeded: bool,
    /// The cgroup's OOM killer killed a member.
    pub(crate) cgroup_oom_killed: bool,
    /// CPU time of the main process and the children it waited for.
    pub(crate) cpu_time_ms: u64,
    /// Peak memory of the tree (cgroup) or of the largest waited-for process (rusage).
    pub(crate) peak_memory_bytes: Option<u64>,
    pub(crate) stdout: CapturedStream,
    pub(crate) stderr: CapturedStream,
    /// Sandbox remarks a reader of the output should see (why it was killed, leftovers).
    pub(crate) notes: Vec<String>,
}

/// The result of trying to run a confined process.
#[derive(Debug)]
pub(crate) enum Launch {
    Finished(ProcessReport),
    /// The process could not be started as required (an isolation feature refused, the
    /// program not executable); the reason is for `rejected_reason`.
    Refused(String),
}

/// Runs `command` confined and waits for it and its whole tree to end.
pub(crate) fn run_confined(command: &ConfinedCommand<'_>) -> Result<Launch, SandboxError> {
    let limits = command.limits;
    let cgroup = match cgroup_for(limits) {
        Ok(cgroup) => cgroup,
        Err(reason) => return Ok(Launch::Refused(reason)),
    };
    let (stage_read, stage_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| SandboxError::io("creating stage pipe", e.into()))?;
    let mut process = Command::new(command.program);
    process
        .args(command.args)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(command.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    confine::install(
        &mut process,
        confinement(command, cgroup.as_ref(), stage_write)?,
    );
    let spawned = process.spawn();
    // Closes our copies of the cgroup files and the stage pipe's write end.
    drop(process);
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let stage = last_stage(&stage_read);
            return Ok(Launch::Refused(describe_spawn_failure(
                stage,
                &error,
                command.program,
            )));
        }
    };
    // `id()` is the pid, which `setsid` also made the process group and session id. Linux
    // pids fit in an i32 (`pid_max` is at most 2^22).
    let pid = child.id() as i32;
    // Until the tree is torn down normally, an early return (an error) must not leave it
    // running; without a cgroup only the group kill catches it.
    let guard = KillOnDrop { pid, armed: true };
    let stdout = start_capture("stdout", child.stdout.take(), limits)?;
    let stderr = start_capture("stderr", child.stderr.take(), limits)?;
    let mut ended = wait_within_limits(pid, command, cgroup.as_ref())?;

    // The main process is gone; nothing else of its tree may outlive the run.
    let teardown_deadline = Instant::now() + TEARDOWN_WAIT;
    if !kill_tree(pid, cgroup.as_ref(), teardown_deadline) {
        ended
            .notes
            .push("processes of the run survived SIGKILL".to_string());
    }
    // Reaped and torn down: the pid may now be reused, so it must not be signalled again.
    guard.disarm();
    let stdout = finish_capture(stdout, teardown_deadline, &mut ended.notes);
    let stderr = finish_capture(stderr, teardown_deadline, &mut ended.notes);
    let usage = ended.usage;
    let rusage_peak = u64::try_from(usage.ru_maxrss).ok().map(|kib| kib * 1024);
    let report = ProcessReport {
        termination: termination(ended.status),
        wall_time_exceeded: ended.wall_time_exceeded,
        process_limit_exceeded: ended.process_limit_exceeded,
        cgroup_oom_killed: cgroup.as_ref().is_some_and(Cgroup::oom_killed),
        cpu_time_ms: timeval_ms(usage.ru_utime) + timeval_ms(usage.ru_stime),
        peak_memory_bytes: cgroup
            .as_ref()
            .and_then(Cgroup::peak_memory_bytes)
            .or(rusage_peak),
        stdout,
        stderr,
        notes: ended.notes,
    };
    drop(cgroup);
    Ok(Launch::Finished(report))
}

/// The run's cgroup as `limits.cgroup` asks: none, one where the host allows it, or one for
/// sure (`Err` with the reason to refuse the run when there is none).
fn cgroup_for(limits: &SandboxLimits) -> Result<Option<Cgroup>, String> {
    match limits.cgroup {
        CgroupMode::Off => Ok(None),
        CgroupMode::Auto => match Cgroup::create(limits) {
            Ok(cgroup) => Ok(Some(cgroup)),
            Err(reason) => {
                tracing::debug!(%reason, "sandbox runs without a cgroup");
                Ok(None)
            }
        },
        CgroupMode::Required => Cgroup::create(limits)
            .map(Some)
            .map_err(|reason| format!("cgroup required but unavailable: {reason}")),
    }
}

/// What the child applies to itself between `fork` and `exec` (see `confine`).
fn confinement(
    command: &ConfinedCommand<'_>,
    cgroup: Option<&Cgroup>,
    stage_pipe: OwnedFd,
) -> Result<Confinement, SandboxError> {
    let limits = command.limits;
    let cgroup_procs = match cgroup {
        Some(cgroup) => cgroup
            .procs_files()
            .map_err(|e| SandboxError::io("opening cgroup.procs", e))?,
        None => Vec::new(),
    };
    let read_only_except = if limits.read_only_host_filesystem {
        let path = std::ffi::CString::new(command.workdir.as_os_str().as_encoded_bytes())
            .map_err(|e| SandboxError::io("workspace path", io::Error::other(e)))?;
        Some(path)
    } else {
        None
    };
    Ok(Confinement {
        cgroup_procs,
        cpus: cpu_set(limits.cpu_cores)?,
        network: if limits.require_network_isolation {
            Isolation::Required
        } else {
            Isolation::BestEffort
        },
        read_only_except,
        rlimits: rlimits(limits, cgroup.is_some()),
        run_as: command
            .run_as
            .map(|(uid, gid)| (Uid::from_raw(uid), Gid::from_raw(gid))),
        stage_pipe,
    })
}

/// How the main process ended, and whether we killed it.
struct Ended {
    /// `wait4` status.
    status: i32,
    usage: libc::rusage,
    wall_time_exceeded: bool,
    process_limit_exceeded: bool,
    notes: Vec<String>,
}

/// Waits for the main process, killing its tree at the deadline or, without a cgroup, when
/// the fallback watchdog counts more than `processes_max` processes in its group.
fn wait_within_limits(
    pid: i32,
    command: &ConfinedCommand<'_>,
    cgroup: Option<&Cgroup>,
) -> Result<Ended, SandboxError> {
    let limits = command.limits;
    let mut wall_time_exceeded = false;
    let mut process_limit_exceeded = false;
    let mut notes = Vec::new();
    let mut next_watchdog = Instant::now();
    let mut pause = Duration::from_millis(1);
    let (status, usage) = loop {
        if let Some(done) = wait4(pid, libc::WNOHANG)? {
            break done;
        }
        let now = Instant::now();
        if now >= command.deadline {
            wall_time_exceeded = true;
            notes.push(format!(
                "killed: wall time limit of {} ms",
                limits.wall_time_ms
            ));
            break kill_and_reap(pid, cgroup)?;
        }
        if cgroup.is_none() && now >= next_watchdog {
            next_watchdog = now + WATCHDOG_INTERVAL;
            let count = live_group_members(pid);
            if count > limits.processes_max {
                process_limit_exceeded = true;
                notes.push(format!(
                    "killed: {count} processes, more than processes_max = {}",
                    limits.processes_max
                ));
                break kill_and_reap(pid, cgroup)?;
            }
        }
        std::thread::sleep(pause.min(command.deadline.saturating_duration_since(now)));
        pause = (pause * 2).min(POLL_INTERVAL_MAX);
    };
    Ok(Ended {
        status,
        usage,
        wall_time_exceeded,
        process_limit_exceeded,
        notes,
    })
}

/// Starts the capture thread of one of the child's output pipes.
fn start_capture(
    name: &str,
    pipe: Option<impl io::Read + Send + 'static>,
    limits: &SandboxLimits,
) -> Result<Option<Capture>, SandboxError> {
    pipe.map(|pipe| Capture::start(name, pipe, limits.output_bytes_max))
        .transpose()
        .map_err(|e| SandboxError::io("starting output capture thread", e))
}

/// SIGKILLs the process group and reaps its leader when dropped while armed.
struct KillOnDrop {
    pid: i32,
    armed: bool,
}

impl KillOnDrop {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _maybe_already_gone = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
            // Reaps the leader so it does not stay a zombie of the worker.
            let _maybe_already_reaped = wait4(self.pid, 0);
        }
    }
}

fn finish_capture(
    capture: Option<Capture>,
    deadline: Instant,
    notes: &mut Vec<String>,
) -> CapturedStream {
    let Some(capture) = capture else {
        return CapturedStream::default();
    };
    let stream = capture.finish(deadline);
    if !stream.complete {
        notes.push("output pipe still open after the run; output may be cut".to_string());
    }
    stream
}

/// SIGKILLs the process group and the cgroup, then reaps the main process.
fn kill_and_reap(pid: i32, cgroup: Option<&Cgroup>) -> Result<(i32, libc::rusage), SandboxError> {
    let _maybe_already_gone = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    if let Some(cgroup) = cgroup {
        cgroup.kill_all(Instant::now() + TEARDOWN_WAIT);
    }
    loop {
        if let Some(done) = wait4(pid, 0)? {
            return Ok(done);
        }
    }
}

/// Kills what is left of the tree and waits until none of it is alive; true when nothing is.
///
/// Members other than the main process are not our children: once killed they are zombies
/// until init reaps them, which some init processes do only every second or so. A zombie holds
/// no memory, CPU or files, so we wait for death, not for reaping: until the group is unknown
/// to the kernel (`kill(-pgid, 0)` fails with ESRCH) or has only zombies left, and the cgroup
/// is empty.
fn kill_tree(pid: i32, cgroup: Option<&Cgroup>, deadline: Instant) -> bool {
    let group = Pid::from_raw(pid);
    let cgroup_empty = cgroup.is_none_or(|cgroup| cgroup.kill_all(deadline));
    loop {
        if killpg(group, Signal::SIGKILL) == Err(Errno::ESRCH) || live_group_members(pid) == 0 {
            return cgroup_empty;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc. This is also the
/// fallback watchdog's view: a process that calls `setsid` escapes it, which only a cgroup
/// catches.
fn live_group_members(pgid: i32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| parse_stat(&stat))
        .filter(|(state, group)| *group == pgid && !matches!(state, 'Z' | 'X'))
        .count() as u64
}

/// State (field 3) and process group (field 5) of /proc/PID/stat. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// The first `cores` CPUs among those we may run on.
fn cpu_set(cores: u32) -> Result<CpuSet, SandboxError> {
    let allowed = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| SandboxError::io("reading CPU affinity", e.into()))?;
    let mut chosen = CpuSet::new();
    let mut count = 0;
    for cpu in 0..CpuSet::count() {
        if count >= cores {
            break;
        }
        if allowed.is_set(cpu).unwrap_or(false) && chosen.set(cpu).is_ok() {
            count += 1;
        }
    }
    Ok(if count == 0 { allowed } else { chosen })
}

/// `(resource, soft, hard)` for the child, never above our own hard limits (raising them
/// needs privileges we may not have).
///
/// `RLIMIT_NPROC` counts every process of the user, not of the run: with several runs as the
/// same unprivileged user, one run's fork bomb would make the others' forks fail. So it is only
/// set when no cgroup (whose `pids.max` counts exactly this run) is in use.
fn rlimits(limits: &SandboxLimits, in_pids_cgroup: bool) -> Vec<(Resource, u64, u64)> {
    let mut wanted = vec![
        // SIGXCPU at the soft limit, SIGKILL one second later if it is caught.
        (
            Resource::RLIMIT_CPU,
            limits.cpu_time_s,
            limits.cpu_time_s.saturating_add(1),
        ),
        (
            Resource::RLIMIT_AS,
            limits.memory_bytes,
            limits.memory_bytes,
        ),
        (
            Resource::RLIMIT_NOFILE,
            limits.open_files_max,
            limits.open_files_max,
        ),
        (
            Resource::RLIMIT_FSIZE,
            limits.file_size_bytes_max,
            limits.file_size_bytes_max,
        ),
        // No core dumps of task code into the workspace.
        (Resource::RLIMIT_CORE, 0, 0),
    ];
    if !in_pids_cgroup {
        wanted.push((
            Resource::RLIMIT_NPROC,
            limits.processes_max,
            limits.processes_max,
        ));
    }
    wanted
        .into_iter()
        .map(|(resource, soft, hard)| {
            let our_hard = getrlimit(resource).map_or(u64::MAX, |(_, hard)| hard);
            (resource, soft.min(our_hard), hard.min(our_hard))
        })
        .collect()
}

/// The last stage byte the child wrote before failing.
fn last_stage(pipe: &OwnedFd) -> Option<Stage> {
    let mut buffer = [0_u8; 16];
    let mut last = None;
    while let Ok(read) = nix::unistd::read(pipe, &mut buffer) {
        if read == 0 {
            break;
        }
        last = buffer[..read].last().copied().or(last);
    }
    last.and_then(Stage::from_byte)
}

fn describe_spawn_failure(stage: Option<Stage>, error: &io::Error, program: &Path) -> String {
    match stage {
        Some(Stage::NetworkNamespace) => format!(
            "network isolation unavailable: unshare(CLONE_NEWNET) failed: {error}; \
             refusing to run with network access (require_network_isolation = true)"
        ),
        Some(Stage::MountNamespace | Stage::ReadOnlyFilesystem) => format!(
            "filesystem isolation unavailable: {error}; refusing to run with a writable host \
             filesystem (read_only_host_filesystem = true)"
        ),
        Some(Stage::JoinCgroup) => format!("joining the sandbox cgroup failed: {error}"),
        Some(Stage::DropPrivileges) => {
            format!("switching to the unprivileged user failed: {error}")
        }
        Some(Stage::Exec) => format!("cannot execute {}: {error}", program.display()),
        Some(stage) => format!("sandbox setup failed at {stage:?}: {error}"),
        None => format!("cannot start {}: {error}", program.display()),
    }
}

fn termination(status: i32) -> Termination {
    if libc::WIFSIGNALED(status) {
        Termination::Signaled(libc::WTERMSIG(status))
    } else {
        Termination::Exited(libc::WEXITSTATUS(status))
    }
}

fn timeval_ms(time: libc::timeval) -> u64 {
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let micros = u64::try_from(time.tv_usec).unwrap_or(0);
    seconds * 1000 + micros / 1000
}

/// `wait4(2)`: like `waitpid` but also returns the resource usage of the process and the
/// children it reaped, which gives CPU time and peak RSS without a cgroup. `Ok(None)` when
/// `WNOHANG` was given and the process is still running.
#[allow(unsafe_code)]
fn wait4(pid: i32, options: i32) -> Result<Option<(i32, libc::rusage)>, SandboxError> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is a plain struct of integers, for which all zeroes is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers refer to live, writable locals of the right types.
        let result = unsafe { libc::wait4(pid, &mut status, options, &mut usage) };
        if result == pid {
            return Ok(Some((status, usage)));
        }
        if result == 0 {
            return Ok(None);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(SandboxError::io("waiting for sandboxed process", error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_process_group_from_stat() {
        let stat = "123 (odd) name)) S 1 456 457 0 -1 4194560 100";
        assert_eq!(parse_stat(stat), Some(('S', 456)));
        assert_eq!(parse_stat("9 (zombie) Z 1 77 77 0"), Some(('Z', 77)));
    }

    #[test]
    fn cpu_set_has_at_most_the_requested_cores() {
        let set = cpu_set(1).unwrap();
        let count = (0..CpuSet::count())
            .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
            .count();
        assert_eq!(count, 1);
    }
}
