//! The sandbox's one error type.

use std::path::PathBuf;

/// Why a sandbox operation could not produce a result at all.
///
/// Problems caused by the task itself (a bad path, a disallowed binary, an invalid rule, a test
/// that loops forever) are not errors: `run` reports them as a `SandboxRun` with the matching
/// `SandboxOutcome`. These variants are operating errors of the host or programming errors of the
/// caller, which the worker must surface instead of recording a verdict about the task.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A filesystem or process operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        /// What the sandbox was doing, for the operator.
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `configs/sandbox.toml` could not be read or holds an invalid value.
    #[error("invalid sandbox config {path}: {message}")]
    Config {
        /// The config file that was loaded.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A task file path is not a plain relative path inside the workspace.
    #[error("invalid task file path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (lossy for display).
        path: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The task's files exceed a size or count limit.
    #[error("task files too large: {0}")]
    TooLarge(String),
    /// A file under a `--files` directory is not UTF-8 text.
    #[error("file {path:?} is not UTF-8 text")]
    NotUtf8 {
        /// Relative path of the offending file.
        path: String,
    },
    /// The ast-grep action is invalid (bad pattern, bad YAML, unsupported language, no `fix`).
    #[error("invalid ast-grep action: {0}")]
    InvalidAction(String),
    /// The confined apply helper did not answer: usually the binary does not call
    /// `maybe_run_internal_helper()` at the start of `main`.
    #[error("sandbox apply helper failed: {0}")]
    Helper(String),
}

impl SandboxError {
    /// Wraps an IO error with what the sandbox was doing when it happened.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}
