//! The jailed directory a run works in: task paths are validated before anything touches the
//! disk, and files are created without ever following a symlink.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SandboxError;

/// Most files one task may carry; a snapshot larger than this is not a unit of review.
pub const TASK_FILES_COUNT_MAX: usize = 10_000;
/// Most bytes of content one task may carry, all files together.
pub const TASK_FILES_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Longest task path, in bytes (Linux `PATH_MAX` less room for the workspace prefix).
const PATH_BYTES_MAX: usize = 3072;
/// Longest path component, in bytes (`NAME_MAX`).
const COMPONENT_BYTES_MAX: usize = 255;
/// Deepest nesting of a task path.
const PATH_DEPTH_MAX: usize = 64;
/// Device names Windows reserves in any directory, with or without an extension.
const WINDOWS_RESERVED_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Checks that `path` is a plain relative path that stays inside the workspace and is portable.
///
/// Refused: empty or over-long paths, absolute paths, empty, `.` and `..` components, NUL and
/// other control characters, and names Windows cannot hold (backslash, `<>:"|?*`, a trailing
/// dot or space, reserved device names). Portability matters because task snapshots are data
/// that outlives this deployment (the seed asks for Windows-incompatible path fixtures).
pub fn validate_relative_path(path: &str) -> Result<(), SandboxError> {
    let invalid = |reason: &str| SandboxError::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(invalid("empty path"));
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(invalid("path too long"));
    }
    if path.starts_with('/') {
        return Err(invalid("absolute path"));
    }
    if let Some(bad) = path.chars().find(|c| c.is_control()) {
        return Err(invalid(&format!("control character {bad:?}")));
    }
    if let Some(bad) = path.chars().find(|c| "\\<>:\"|?*".contains(*c)) {
        return Err(invalid(&format!("character {bad:?} is not portable")));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > PATH_DEPTH_MAX {
        return Err(invalid("path nested too deeply"));
    }
    for component in components {
        match component {
            "" => return Err(invalid("empty path component")),
            "." | ".." => return Err(invalid("`.` or `..` component")),
            _ => {}
        }
        if component.len() > COMPONENT_BYTES_MAX {
            return Err(invalid("path component too long"));
        }
        if component.ends_with('.') || component.ends_with(' ') {
            return Err(invalid("component ends with a dot or space"));
        }
        let stem = component.split('.').next().unwrap_or(component);
        if WINDOWS_RESERVED_NAMES
            .iter()
            .any(|name| stem.eq_ignore_ascii_case(name))
        {
            return Err(invalid("reserved device name"));
        }
    }
    Ok(())
}

/// Checks every path and the total size of a task's files.
pub fn validate_task_files(files: &BTreeMap<String, String>) -> Result<(), SandboxError> {
    if files.len() > TASK_FILES_COUNT_MAX {
        return Err(SandboxError::TooLarge(format!(
            "{} files, at most {TASK_FILES_COUNT_MAX}",
            files.len()
        )));
    }
    let total_bytes: u64 = files.values().map(|content| content.len() as u64).sum();
    if total_bytes > TASK_FILES_BYTES_MAX {
        return Err(SandboxError::TooLarge(format!(
            "{total_bytes} bytes, at most {TASK_FILES_BYTES_MAX}"
        )));
    }
    for path in files.keys() {
        validate_relative_path(path)?;
    }
    Ok(())
}

/// Reads a directory tree into a task's file map (for `agentctl sandbox run --files DIR`).
///
/// Symlinks and special files are skipped, never followed, so a snapshot cannot smuggle in
/// host files; `.git` directories are skipped; any file that is not UTF-8 is an error rather
/// than silently dropped. Paths use `/` and obey [`validate_relative_path`].
pub fn load_files_from_dir(dir: &Path) -> Result<BTreeMap<String, String>, SandboxError> {
    let mut files = BTreeMap::new();
    let mut total_bytes = 0_u64;
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((absolute, relative)) = pending.pop() {
        let mut entries = fs::read_dir(&absolute)
            .map_err(|e| SandboxError::io(format!("listing {}", absolute.display()), e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SandboxError::io(format!("listing {}", absolute.display()), e))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| SandboxError::InvalidPath {
                path: entry.path().to_string_lossy().into_owned(),
                reason: "file name is not UTF-8".to_string(),
            })?;
            let child_relative = if relative.is_empty() {
                name.to_string()
            } else {
                format!("{relative}/{name}")
            };
            // `DirEntry::file_type` does not follow symlinks.
            let file_type = entry
                .file_type()
                .map_err(|e| SandboxError::io(format!("inspecting {child_relative}"), e))?;
            if file_type.is_dir() {
                if name != ".git" {
                    pending.push((entry.path(), child_relative));
                }
                continue;
            }
            if !file_type.is_file() {
                continue;
            }
            validate_relative_path(&child_relative)?;
            if files.len() >= TASK_FILES_COUNT_MAX {
                return Err(SandboxError::TooLarge(format!(
                    "more than {TASK_FILES_COUNT_MAX} files under {}",
                    dir.display()
                )));
            }
            let bytes = fs::read(entry.path())
                .map_err(|e| SandboxError::io(format!("reading {child_relative}"), e))?;
            total_bytes += bytes.len() as u64;
            if total_bytes > TASK_FILES_BYTES_MAX {
                return Err(SandboxError::TooLarge(format!(
                    "more than {TASK_FILES_BYTES_MAX} bytes under {}",
                    dir.display()
                )));
            }
            let text = String::from_utf8(bytes).map_err(|_| SandboxError::NotUtf8 {
                path: child_relative.clone(),
            })?;
            files.insert(child_relative, text);
        }
    }
    Ok(files)
}

/// A fresh private directory holding only the task's files; removed on drop unless kept.
pub(crate) struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// Creates an empty workspace (mode 0700) under `root`, or the system temp dir.
    pub(crate) fn create(root: Option<&Path>, prefix: &str) -> Result<Self, SandboxError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        let dir = match root {
            Some(root) => {
                fs::create_dir_all(root)
                    .map_err(|e| SandboxError::io(format!("creating {}", root.display()), e))?;
                builder.tempdir_in(root)
            }
            None => builder.tempdir(),
        }
        .map_err(|e| SandboxError::io("creating sandbox workspace", e))?;
        Ok(Workspace { dir })
    }

    /// The workspace directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes one file given by a validated relative path, creating parent directories.
    ///
    /// No component may be a symlink: parents are checked with `symlink_metadata` and the file
    /// is opened with `O_NOFOLLOW`. Nothing else runs in the workspace while we write, so the
    /// checks cannot race with a sandboxed process.
    pub(crate) fn write_file(&self, relative: &str, content: &str) -> Result<(), SandboxError> {
        validate_relative_path(relative)?;
        let io_error = |e| SandboxError::io(format!("writing workspace file {relative}"), e);
        let mut target = self.dir.path().to_path_buf();
        let mut components = relative.split('/').peekable();
        while let Some(component) = components.next() {
            target.push(component);
            if components.peek().is_none() {
                break;
            }
            match fs::symlink_metadata(&target) {
                Ok(metadata) if metadata.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(SandboxError::InvalidPath {
                        path: relative.to_string(),
                        reason: "a parent component is not a directory".to_string(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir(&target).map_err(io_error)?
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
            .map_err(io_error)?;
        file.write_all(content.as_bytes()).map_err(io_error)
    }

    /// Gives the workspace and everything in it to `uid:gid`, so that a test command running
    /// as that unprivileged user can write there (and nowhere else), except the `protected`
    /// files (relative paths) and the directories above them.
    ///
    /// A protected file stays root's with mode 0444: the user can neither write it nor chmod
    /// it. A directory above one (the workspace itself included) stays root's, with group
    /// `gid` and mode 01770: the user can still create scratch files there, but the sticky bit
    /// stops it from removing or renaming an entry it does not own, so a protected file (or a
    /// directory holding one) cannot be swapped for another.
    pub(crate) fn hand_over(
        &self,
        uid: u32,
        gid: u32,
        protected: &BTreeSet<String>,
    ) -> Result<(), SandboxError> {
        let protected_dirs = directories_above(protected);
        let mut pending = vec![(self.dir.path().to_path_buf(), String::new())];
        while let Some((path, relative)) = pending.pop() {
            let metadata = fs::symlink_metadata(&path)
                .map_err(|e| SandboxError::io(format!("inspecting {}", path.display()), e))?;
            let chown = |owner: u32, group: u32| {
                // `lchown`: a symlink is re-owned itself, never the file it points to.
                std::os::unix::fs::lchown(&path, Some(owner), Some(group))
                    .map_err(|e| SandboxError::io(format!("chown {}", path.display()), e))
            };
            let chmod = |mode: u32| {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| SandboxError::io(format!("chmod {}", path.display()), e))
            };
            if protected.contains(&relative) {
                chown(0, 0)?;
                chmod(0o444)?;
            } else if protected_dirs.contains(&relative) {
                chown(0, gid)?;
                chmod(0o1770)?;
            } else {
                chown(uid, gid)?;
            }
            if metadata.file_type().is_dir() {
                for entry in fs::read_dir(&path)
                    .map_err(|e| SandboxError::io(format!("listing {}", path.display()), e))?
                {
                    let entry = entry
                        .map_err(|e| SandboxError::io(format!("listing {}", path.display()), e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if relative.is_empty() {
                        name
                    } else {
                        format!("{relative}/{name}")
                    };
                    pending.push((entry.path(), child));
                }
            }
        }
        Ok(())
    }

    /// Keeps the directory on disk (for `keep_workspace`) and returns its path.
    pub(crate) fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// Every directory above a path of `paths`, as relative paths, the workspace itself (`""`)
/// included when `paths` is not empty.
fn directories_above(paths: &BTreeSet<String>) -> BTreeSet<String> {
    let mut directories = BTreeSet::new();
    for path in paths {
        directories.insert(String::new());
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind('/') {
            directories.insert(path[..slash].to_string());
            end = slash;
        }
    }
    directories
}

#[cfg(test)]
mod tests;
