//! Resolving a test command's program against the allowlist of binaries.
//!
//! The allowlist states intent ("tests run under python3"), it is not a security boundary by
//! itself: an allowed interpreter can start any other program. Containment comes from the
//! limits, the namespaces and the cgroup.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::SandboxLimits;

/// Resolves `program` (a test command's `argv[0]`) to the executable to start, or says why it
/// is refused.
///
/// A bare name must be on the allowlist and is looked up on `search_path`. An absolute path is
/// allowed when it is, after resolving symlinks, the same file as an allowed entry. Relative
/// paths with a slash (`./run.sh`) are refused: the workspace holds untrusted content.
pub(crate) fn resolve_program(program: &str, limits: &SandboxLimits) -> Result<PathBuf, String> {
    if program.is_empty() || program.contains('\0') {
        return Err(format!("invalid program name {program:?}"));
    }
    let resolved = if program.starts_with('/') {
        PathBuf::from(program)
    } else if program.contains('/') {
        return Err(format!(
            "program {program:?} is a relative path; only allowlisted binaries may run"
        ));
    } else {
        if !limits.allowed_binaries.iter().any(|entry| entry == program) {
            return Err(format!("binary {program:?} is not in allowed_binaries"));
        }
        return find_on_path(program, &limits.search_path).ok_or_else(|| {
            format!(
                "allowed binary {program:?} not found on {}",
                limits.search_path
            )
        });
    };
    let Ok(canonical) = resolved.canonicalize() else {
        return Err(format!("program {program:?} does not exist"));
    };
    let allowed = limits.allowed_binaries.iter().any(|entry| {
        let entry_path = if entry.starts_with('/') {
            Some(PathBuf::from(entry))
        } else {
            find_on_path(entry, &limits.search_path)
        };
        entry_path
            .and_then(|path| path.canonicalize().ok())
            .is_some_and(|path| path == canonical)
    });
    if allowed && is_executable(&resolved) {
        Ok(resolved)
    } else {
        Err(format!("binary {program:?} is not in allowed_binaries"))
    }
}

/// The first executable regular file named `name` in the `:`-separated `search_path`.
fn find_on_path(name: &str, search_path: &str) -> Option<PathBuf> {
    search_path
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits_allowing(binaries: &[&str]) -> SandboxLimits {
        SandboxLimits {
            allowed_binaries: binaries.iter().map(|b| b.to_string()).collect(),
            search_path: "/usr/bin:/bin".to_string(),
            ..SandboxLimits::default()
        }
    }

    #[test]
    fn bare_allowed_name_resolves_on_the_search_path() {
        let limits = limits_allowing(&["sh"]);
        let resolved = resolve_program("sh", &limits).unwrap();
        assert!(
            resolved.is_absolute() && resolved.ends_with("sh"),
            "{resolved:?}"
        );
    }

    #[test]
    fn absolute_path_of_an_allowed_name_is_allowed() {
        let limits = limits_allowing(&["sh"]);
        let resolved = resolve_program("sh", &limits).unwrap();
        let absolute = resolved.to_str().unwrap();
        assert_eq!(resolve_program(absolute, &limits).unwrap(), resolved);
    }

    #[test]
    fn other_programs_are_refused() {
        let limits = limits_allowing(&["sh"]);
        for program in ["curl", "/usr/bin/env", "./sh", "bin/sh", "", "/no/such/sh"] {
            assert!(
                resolve_program(program, &limits).is_err(),
                "{program:?} allowed"
            );
        }
    }
}
