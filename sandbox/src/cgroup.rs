//! A throw-away cgroup per sandboxed process tree: `pids.max` stops fork bombs even for root
//! (which `RLIMIT_NPROC` does not), the memory limit covers the whole tree, and killing every
//! member catches processes that left the process group with `setsid`.
//!
//! Both layouts are supported: cgroup v2 (one directory with the `pids` and `memory`
//! controllers) and v1 (separate `pids` and `memory` hierarchies, as on hosts that mount
//! `/sys/fs/cgroup` as a tmpfs of v1 hierarchies). Sandboxed processes join by writing `0` to
//! the pre-opened `cgroup.procs` files right after `fork`, before they run any task code.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::SandboxLimits;

/// How long teardown keeps killing and retrying `rmdir` before giving up.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// One cgroup directory per controller layout; removed on drop.
pub(crate) struct Cgroup {
    layout: Layout,
}

enum Layout {
    /// One directory with both controllers.
    V2 { dir: PathBuf },
    /// A directory in the `pids` hierarchy and, where mounted and writable, in `memory`.
    V1 {
        pids: PathBuf,
        memory: Option<PathBuf>,
    },
}

/// Distinguishes concurrent sandboxes of one process.
static NEXT_CGROUP_ID: AtomicU64 = AtomicU64::new(0);

impl Cgroup {
    /// Creates a cgroup limited to `processes_max` tasks and `memory_bytes`, or says why none
    /// can be made on this host (no writable hierarchy with a `pids` controller).
    pub(crate) fn create(limits: &SandboxLimits) -> Result<Cgroup, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let name = format!(
            "agentd-sandbox-{}-{}",
            std::process::id(),
            NEXT_CGROUP_ID.fetch_add(1, Ordering::Relaxed)
        );
        let v2_error = match create_v2(&mountinfo, &own, &name, limits) {
            Ok(cgroup) => return Ok(cgroup),
            Err(e) => e,
        };
        create_v1(&mountinfo, &own, &name, limits)
            .map_err(|v1_error| format!("cgroup v2: {v2_error}; cgroup v1: {v1_error}"))
    }

    /// The `cgroup.procs` files a new process writes `0` to, opened close-on-exec.
    pub(crate) fn procs_files(&self) -> std::io::Result<Vec<File>> {
        self.dirs()
            .iter()
            .map(|dir| {
                OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))
            })
            .collect()
    }

    /// Whether the kernel's OOM killer killed a member.
    pub(crate) fn oom_killed(&self) -> bool {
        let (dir, file) = match &self.layout {
            Layout::V2 { dir } => (dir, "memory.events"),
            Layout::V1 {
                memory: Some(dir), ..
            } => (dir, "memory.oom_control"),
            Layout::V1 { memory: None, .. } => return false,
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .is_some_and(|kills| kills > 0)
    }

    /// The tree's peak memory use, where the kernel records it.
    pub(crate) fn peak_memory_bytes(&self) -> Option<u64> {
        let path = match &self.layout {
            Layout::V2 { dir } => dir.join("memory.peak"),
            Layout::V1 {
                memory: Some(dir), ..
            } => dir.join("memory.max_usage_in_bytes"),
            Layout::V1 { memory: None, .. } => return None,
        };
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// SIGKILLs every member until none is left or `deadline` passes; true when empty.
    pub(crate) fn kill_all(&self, deadline: Instant) -> bool {
        if let Layout::V2 { dir } = &self.layout {
            // `cgroup.kill` (Linux 5.14) kills atomically, forks included; older kernels lack
            // the file and fall through to the loop.
            let _ignored_old_kernel = fs::write(dir.join("cgroup.kill"), "1");
        }
        loop {
            let members = self.members();
            if members.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            for pid in members {
                // ESRCH only means it already exited.
                let _already_gone = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs()
            .iter()
            .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn dirs(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V2 { dir } => vec![dir],
            Layout::V1 { pids, memory } => {
                let mut dirs = vec![pids.as_path()];
                dirs.extend(memory.as_deref());
                dirs
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + TEARDOWN_WAIT;
        self.kill_all(deadline);
        for dir in self.dirs() {
            // Exiting members leave the cgroup a moment after SIGKILL; rmdir fails with EBUSY
            // until then.
            while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The leaf cgroup this process moves itself into on cgroup v2 when its own cgroup holds
/// processes: v2's "no internal processes" rule forbids enabling controllers for children of a
/// cgroup that has members, so the worker steps aside into `agentd-worker` and the sandboxes
/// are created beside it.
const WORKER_LEAF: &str = "agentd-worker";

/// Serializes the one-time move into [`WORKER_LEAF`] between concurrent sandboxes.
static V2_SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn create_v2(
    mountinfo: &str,
    own: &str,
    name: &str,
    limits: &SandboxLimits,
) -> Result<Cgroup, String> {
    let mount = mounts(mountinfo)
        .find(|mount| mount.fstype == "cgroup2")
        .ok_or("no cgroup2 mount")?;
    let own_path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("no cgroup2 entry in /proc/self/cgroup")?;
    // Once moved into the leaf, sandboxes still go beside it, under the delegated cgroup.
    let delegated = delegated_path(own_path);
    let parent = mount.join(delegated);
    let available = fs::read_to_string(parent.join("cgroup.controllers"))
        .map_err(|e| format!("reading cgroup.controllers: {e}"))?;
    for controller in ["pids", "memory"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(format!(
                "controller {controller} not available in {} (its parent does not delegate it: \
                 run the worker in a delegated cgroup, e.g. systemd Delegate=yes or \
                 `systemd-run --scope -p Delegate=yes agentctl worker ...`)",
                parent.display()
            ));
        }
    }
    enable_controllers(&parent)?;
    remove_stale_cgroups(&parent);
    let dir = parent.join(name);
    fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let cgroup = Cgroup {
        layout: Layout::V2 { dir: dir.clone() },
    };
    write_limit(&dir, "pids.max", limits.processes_max)?;
    write_limit(&dir, "memory.max", limits.memory_bytes)?;
    // Without this the tree could swap instead of hitting the limit; absent without swap.
    let _no_swap_accounting = fs::write(dir.join("memory.swap.max"), "0");
    Ok(cgroup)
}

/// The cgroup (as in /proc/self/cgroup) under which sandboxes are created: this process's own,
/// or the one above [`WORKER_LEAF`] once the process moved itself there.
fn delegated_path(own_path: &str) -> &str {
    match own_path.strip_suffix(WORKER_LEAF) {
        Some(rest) if rest.ends_with('/') => match rest.trim_end_matches('/') {
            "" => "/",
            above => above,
        },
        _ => own_path,
    }
}

/// Enables `pids` and `memory` for the children of `parent`. When `parent` holds this process
/// (EBUSY: "no internal processes"), moves the process into the `agentd-worker` leaf first.
fn enable_controllers(parent: &Path) -> Result<(), String> {
    let enabled = || {
        let control = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
        ["pids", "memory"]
            .iter()
            .all(|c| control.split_whitespace().any(|e| e == *c))
    };
    if enabled() {
        return Ok(());
    }
    let _setup = V2_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if enabled() {
        return Ok(());
    }
    let control = parent.join("cgroup.subtree_control");
    match fs::write(&control, "+pids +memory") {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => {
            return Err(format!(
                "enabling pids and memory in {}: {e}",
                control.display()
            ))
        }
    }
    let leaf = parent.join(WORKER_LEAF);
    if let Err(e) = fs::create_dir(&leaf) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("creating {}: {e}", leaf.display()));
        }
    }
    fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("moving the worker into {}: {e}", leaf.display()))?;
    fs::write(&control, "+pids +memory").map_err(|e| {
        format!(
            "enabling pids and memory in {}: {e} (other processes share the worker's cgroup; \
             give the worker a cgroup of its own, e.g. systemd Delegate=yes)",
            control.display()
        )
    })
}

fn create_v1(
    mountinfo: &str,
    own: &str,
    name: &str,
    limits: &SandboxLimits,
) -> Result<Cgroup, String> {
    let pids_parent = v1_parent(mountinfo, own, "pids").ok_or("no pids hierarchy")?;
    remove_stale_cgroups(&pids_parent);
    let pids = pids_parent.join(name);
    fs::create_dir(&pids).map_err(|e| format!("creating {}: {e}", pids.display()))?;
    let mut cgroup = Cgroup {
        layout: Layout::V1 {
            pids: pids.clone(),
            memory: None,
        },
    };
    write_limit(&pids, "pids.max", limits.processes_max)?;
    if let Some(memory_parent) = v1_parent(mountinfo, own, "memory") {
        remove_stale_cgroups(&memory_parent);
        let memory = memory_parent.join(name);
        if fs::create_dir(&memory).is_ok() {
            cgroup.layout = Layout::V1 {
                pids,
                memory: Some(memory.clone()),
            };
            write_limit(&memory, "memory.limit_in_bytes", limits.memory_bytes)?;
            // Only present with swap accounting; must not be below memory.limit_in_bytes.
            let _no_swap_accounting = fs::write(
                memory.join("memory.memsw.limit_in_bytes"),
                limits.memory_bytes.to_string(),
            );
        }
    }
    Ok(cgroup)
}

/// Removes empty cgroups left behind by a worker that died before its `Drop` ran (their name
/// carries the pid of a process that no longer exists). Best effort: `rmdir` of a cgroup that
/// still has members fails and it stays, to be retried next time.
fn remove_stale_cgroups(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix("agentd-sandbox-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let owner_alive = Path::new("/proc").join(owner.to_string()).exists();
        if !owner_alive {
            let _retried_next_time = fs::remove_dir(entry.path());
        }
    }
}

/// Our own cgroup directory in the v1 hierarchy that carries `controller`.
fn v1_parent(mountinfo: &str, own: &str, controller: &str) -> Option<PathBuf> {
    let mount = mounts(mountinfo).find(|mount| {
        mount.fstype == "cgroup" && mount.super_options.split(',').any(|o| o == controller)
    })?;
    let own_path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _hierarchy_id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })?;
    Some(mount.join(own_path))
}

fn write_limit(dir: &Path, file: &str, value: u64) -> Result<(), String> {
    fs::write(dir.join(file), value.to_string())
        .map_err(|e| format!("writing {}: {e}", dir.join(file).display()))
}

/// `key value` lines as in `memory.events` and `memory.oom_control`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

struct Mount<'a> {
    root: &'a str,
    mount_point: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

impl Mount<'_> {
    /// The directory of cgroup `path` (as listed in /proc/self/cgroup) under this mount.
    fn join(&self, path: &str) -> PathBuf {
        let relative = path
            .strip_prefix(self.root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(self.mount_point).join(relative)
    }
}

/// Parses /proc/self/mountinfo: `id parent dev root mount_point options [optional...] -
/// fstype source super_options`.
fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut left = before.split(' ');
        let root = left.nth(3)?;
        let mount_point = left.next()?;
        let mut right = after.split(' ');
        let fstype = right.next()?;
        let _source = right.next()?;
        let super_options = right.next()?;
        Some(Mount {
            root,
            mount_point,
            fstype,
            super_options,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "8:pids:/\n4:memory:/process_api/abc\n0::/\n";

    #[test]
    fn finds_v1_directories_of_our_own_cgroup() {
        assert_eq!(
            v1_parent(MOUNTINFO, OWN, "pids").unwrap(),
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            v1_parent(MOUNTINFO, OWN, "memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert!(v1_parent(MOUNTINFO, OWN, "cpu").is_none());
    }

    #[test]
    fn reads_oom_kill_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(2));
        let v2 = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(v2, "oom_kill"), Some(1));
    }

    #[test]
    fn sandboxes_go_beside_the_worker_leaf() {
        assert_eq!(delegated_path("/process_api/x"), "/process_api/x");
        assert_eq!(
            delegated_path("/process_api/x/agentd-worker"),
            "/process_api/x"
        );
        assert_eq!(delegated_path("/agentd-worker"), "/");
        assert_eq!(delegated_path("/"), "/");
        assert_eq!(delegated_path("/foo-agentd-worker"), "/foo-agentd-worker");
    }
}
