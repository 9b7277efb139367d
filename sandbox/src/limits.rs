//! Resource limits and policy of a sandbox run, loaded from `configs/sandbox.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SandboxError;

/// Every limit a sandboxed process runs under, and the policy switches that decide whether the
/// sandbox may run at all when the kernel refuses an isolation feature.
///
/// Defaults are the seed's: 2 CPU cores, 4 GiB of memory, 30 s of wall time, no network.
/// The same limits apply to the ast-grep apply helper and to the test command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// CPUs the process may run on (`sched_setaffinity` to the first N CPUs we may use).
    pub cpu_cores: u32,
    /// CPU seconds per process (`RLIMIT_CPU`); exceeding it ends the run as `timed_out`.
    pub cpu_time_s: u64,
    /// Address space per process (`RLIMIT_AS`) and, where cgroups are usable, memory of the
    /// whole process tree (`memory.max` / `memory.limit_in_bytes`).
    pub memory_bytes: u64,
    /// Wall-clock budget of the whole run (apply plus tests); the process group and cgroup are
    /// killed with SIGKILL when it is spent.
    pub wall_time_ms: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub open_files_max: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`).
    pub file_size_bytes_max: u64,
    /// Processes (and threads) of the tree: cgroup `pids.max` where usable, `RLIMIT_NPROC`
    /// (not enforced for root), and the process-count watchdog otherwise.
    pub processes_max: u64,
    /// Bytes kept per captured stream; the rest is drained and counted, never buffered.
    pub output_bytes_max: usize,
    /// Programs a test command may start: absolute paths, or bare names looked up on
    /// `search_path`. Anything else is `rejected`.
    pub allowed_binaries: Vec<String>,
    /// Fail closed (`rejected`) when a new network namespace cannot be created.
    pub require_network_isolation: bool,
    /// Give each process a private mount namespace in which every mount is read-only except
    /// its workspace, so it cannot write elsewhere on the host. Fails closed when refused.
    pub read_only_host_filesystem: bool,
    /// Whether to put each process tree in its own cgroup (pids and memory controllers).
    pub cgroup: CgroupMode,
    /// Where workspaces are created; the system temp dir when unset.
    pub workspace_root: Option<PathBuf>,
    /// `PATH` inside the sandbox, also used to resolve bare names of allowed binaries.
    pub search_path: String,
    /// User the test command runs as when the worker runs as root, so that task code has no
    /// capabilities (it cannot remount the read-only host, kill the worker, or read root-only
    /// files). A worker that is not root runs tests as itself.
    pub unprivileged_uid: u32,
    /// Group the test command runs as when the worker runs as root.
    pub unprivileged_gid: u32,
}

/// Whether the sandbox uses a cgroup for its process trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// Use a cgroup (v2, else v1 `pids` and `memory`) when the hierarchy is writable, and fall
    /// back to process-group kills plus a process-count watchdog when it is not.
    Auto,
    /// Refuse to run (`rejected`) without a cgroup.
    Required,
    /// Never create cgroups.
    Off,
}

/// 1 GiB, for readable defaults.
const GIB: u64 = 1024 * 1024 * 1024;
/// 1 MiB, for readable defaults.
const MIB: u64 = 1024 * 1024;
/// The conventional `nobody` user and `nogroup` group.
const NOBODY: u32 = 65_534;
/// A config file larger than this is not a config file.
const CONFIG_BYTES_MAX: u64 = MIB;

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            cpu_cores: 2,
            cpu_time_s: 60,
            memory_bytes: 4 * GIB,
            wall_time_ms: 30_000,
            open_files_max: 1024,
            file_size_bytes_max: 64 * MIB,
            processes_max: 256,
            output_bytes_max: MIB as usize,
            allowed_binaries: ["python3", "pytest", "node", "java", "javac"]
                .into_iter()
                .map(String::from)
                .collect(),
            require_network_isolation: true,
            read_only_host_filesystem: true,
            cgroup: CgroupMode::Auto,
            workspace_root: None,
            search_path: "/usr/local/bin:/usr/bin:/bin".to_string(),
            unprivileged_uid: NOBODY,
            unprivileged_gid: NOBODY,
        }
    }
}

impl SandboxLimits {
    /// Loads limits from a TOML file (`configs/sandbox.toml`); keys left out keep their default,
    /// unknown keys are an error so that a typo never silently weakens a limit.
    pub fn load(path: &Path) -> Result<Self, SandboxError> {
        let config_error = |message: String| SandboxError::Config {
            path: path.to_path_buf(),
            message,
        };
        let metadata = std::fs::metadata(path)
            .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
        if metadata.len() > CONFIG_BYTES_MAX {
            return Err(config_error(format!(
                "larger than {CONFIG_BYTES_MAX} bytes"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
        let limits: SandboxLimits =
            toml::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        limits.validate().map_err(config_error)?;
        Ok(limits)
    }

    /// Checks that every limit is usable; a zero limit would make every run fail in a
    /// confusing way, so it is refused up front.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("cpu_cores", u64::from(self.cpu_cores)),
            ("cpu_time_s", self.cpu_time_s),
            ("wall_time_ms", self.wall_time_ms),
            ("open_files_max", self.open_files_max),
            ("file_size_bytes_max", self.file_size_bytes_max),
            ("processes_max", self.processes_max),
            ("output_bytes_max", self.output_bytes_max as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be greater than 0"));
            }
        }
        if self.memory_bytes < 16 * MIB {
            return Err("memory_bytes must be at least 16 MiB".to_string());
        }
        for binary in &self.allowed_binaries {
            let is_absolute = binary.starts_with('/');
            if binary.is_empty() || binary.contains('\0') || (!is_absolute && binary.contains('/'))
            {
                return Err(format!(
                    "allowed_binaries entry {binary:?} must be an absolute path or a bare name"
                ));
            }
        }
        if self.unprivileged_uid == 0 || self.unprivileged_gid == 0 {
            return Err("unprivileged_uid and unprivileged_gid must not be 0 (root)".to_string());
        }
        if self.search_path.split(':').any(|dir| !dir.starts_with('/')) {
            return Err("search_path must list absolute directories".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/sandbox.toml");
        let loaded = SandboxLimits::load(&path).unwrap();
        assert_eq!(loaded, SandboxLimits::default());
    }

    #[test]
    fn unknown_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.toml");
        std::fs::write(&path, "memory_byte = 1\n").unwrap();
        let error = SandboxLimits::load(&path).unwrap_err().to_string();
        assert!(error.contains("memory_byte"), "{error}");
    }

    #[test]
    fn zero_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandbox.toml");
        std::fs::write(&path, "wall_time_ms = 0\n").unwrap();
        let error = SandboxLimits::load(&path).unwrap_err().to_string();
        assert!(error.contains("wall_time_ms"), "{error}");
    }

    #[test]
    fn relative_binary_path_is_refused() {
        let limits = SandboxLimits {
            allowed_binaries: vec!["bin/python3".to_string()],
            ..SandboxLimits::default()
        };
        assert!(limits.validate().is_err());
    }
}
