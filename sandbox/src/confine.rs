//! What a sandboxed process does to itself between `fork` and `exec`: join its cgroup, start
//! a new session, pin to its CPUs, enter new network and mount namespaces, make the host
//! filesystem read-only except its workspace, and lower its resource limits.
//!
//! Everything here runs in the forked child of a possibly multi-threaded parent, so it may only
//! make async-signal-safe system calls: no allocation, no locks. All paths and buffers are
//! prepared by the parent in [`Confinement`] before the fork.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{sched_setaffinity, unshare, CloneFlags, CpuSet};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{chdir, setgroups, setresgid, setresuid, setsid, write, Gid, Pid, Uid};

/// The step the child was taking, reported to the parent through a pipe so that a failed
/// spawn can say which isolation feature the kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stage {
    JoinCgroup = 1,
    NewSession = 2,
    CpuAffinity = 3,
    NetworkNamespace = 4,
    MountNamespace = 5,
    ReadOnlyFilesystem = 6,
    ResourceLimits = 7,
    ProcessFlags = 8,
    Exec = 9,
    DropPrivileges = 10,
}

impl Stage {
    /// Decodes the last byte the child wrote.
    pub(crate) fn from_byte(byte: u8) -> Option<Stage> {
        [
            Stage::JoinCgroup,
            Stage::NewSession,
            Stage::CpuAffinity,
            Stage::NetworkNamespace,
            Stage::MountNamespace,
            Stage::ReadOnlyFilesystem,
            Stage::ResourceLimits,
            Stage::ProcessFlags,
            Stage::Exec,
            Stage::DropPrivileges,
        ]
        .into_iter()
        .find(|stage| *stage as u8 == byte)
    }
}

/// Everything the child needs, prepared before `fork`.
pub(crate) struct Confinement {
    /// `cgroup.procs` files to write `0` to (empty without a cgroup).
    pub(crate) cgroup_procs: Vec<File>,
    /// CPUs the process may run on.
    pub(crate) cpus: CpuSet,
    /// Whether to enter a new network namespace, and whether failing to is fatal.
    pub(crate) network: Isolation,
    /// The one writable directory when the host filesystem is made read-only.
    pub(crate) read_only_except: Option<CString>,
    /// Resource limits, applied after setup so that setup itself is not starved.
    pub(crate) rlimits: Vec<(Resource, u64, u64)>,
    /// User and group to switch to after setup (which needs root), dropping all capabilities.
    pub(crate) run_as: Option<(Uid, Gid)>,
    /// Write end of the stage pipe (close-on-exec, non-blocking).
    pub(crate) stage_pipe: OwnedFd,
}

/// Whether an isolation feature is attempted and whether its failure stops the spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    Required,
    BestEffort,
}

/// Installs the confinement as `command`'s pre-exec hook.
#[allow(unsafe_code)]
pub(crate) fn install(command: &mut Command, confinement: Confinement) {
    // SAFETY: `pre_exec` requires the closure to be safe to run between fork and exec in a
    // process that may have had other threads. `Confinement::enter` only performs raw system
    // calls (write, setsid, sched_setaffinity, unshare, mount, mount_setattr, chdir,
    // setrlimit, prctl) on data allocated before the fork; it does not allocate, lock, or touch
    // state shared with other threads. `io::Error::from_raw_os_error` does not allocate.
    unsafe {
        command.pre_exec(move || confinement.enter());
    }
}

impl Confinement {
    fn enter(&self) -> io::Result<()> {
        self.stage(Stage::JoinCgroup);
        for procs in &self.cgroup_procs {
            write(procs, b"0")?;
        }
        self.stage(Stage::NewSession);
        setsid()?;
        self.stage(Stage::CpuAffinity);
        sched_setaffinity(Pid::from_raw(0), &self.cpus)?;
        self.stage(Stage::NetworkNamespace);
        match (unshare(CloneFlags::CLONE_NEWNET), self.network) {
            (Ok(()), _) | (Err(_), Isolation::BestEffort) => {}
            (Err(errno), Isolation::Required) => return Err(errno.into()),
        }
        if let Some(writable) = &self.read_only_except {
            self.stage(Stage::MountNamespace);
            unshare(CloneFlags::CLONE_NEWNS)?;
            self.stage(Stage::ReadOnlyFilesystem);
            make_host_read_only(writable)?;
        }
        self.stage(Stage::ResourceLimits);
        for (resource, soft, hard) in &self.rlimits {
            setrlimit(*resource, *soft, *hard)?;
        }
        if let Some((uid, gid)) = self.run_as {
            self.stage(Stage::DropPrivileges);
            setgroups(&[])?;
            setresgid(gid, gid, gid)?;
            // With every uid non-zero the kernel clears all capabilities.
            setresuid(uid, uid, uid)?;
        }
        self.stage(Stage::ProcessFlags);
        // Set after the uid change, which clears it. Dies with the supervising thread, so a
        // crashed worker leaves no sandbox behind.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        nix::sys::prctl::set_no_new_privs()?;
        self.stage(Stage::Exec);
        Ok(())
    }

    fn stage(&self, stage: Stage) {
        // Best effort: the byte only improves the error message of a failed spawn.
        let _diagnostic_only = write(&self.stage_pipe, &[stage as u8]);
    }
}

/// Inside a fresh mount namespace: stop propagation to the host, keep `writable` writable
/// through a bind mount, make every other mount read-only recursively, and move into it.
fn make_host_read_only(writable: &CStr) -> io::Result<()> {
    let no_path: Option<&CStr> = None;
    mount(
        no_path,
        c"/",
        no_path,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        no_path,
    )?;
    mount(
        Some(writable),
        writable,
        no_path,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        no_path,
    )?;
    mount_setattr_recursive(c"/", MOUNT_ATTR_RDONLY, 0)?;
    mount_setattr_recursive(writable, 0, MOUNT_ATTR_RDONLY)?;
    // The working directory still points into the mount that is now read-only.
    chdir(writable)?;
    Ok(())
}

/// `MOUNT_ATTR_RDONLY` from `<linux/mount.h>`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `struct mount_attr` from `<linux/mount.h>` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(2)` with `AT_RECURSIVE` (Linux 5.12): the only way to make a whole mount
/// tree read-only in one call, without walking /proc/self/mountinfo (which would allocate).
#[allow(unsafe_code)]
fn mount_setattr_recursive(path: &CStr, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a valid `struct mount_attr`
    // whose size is passed along; the kernel only reads both during the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(Errno::last().into())
    }
}
