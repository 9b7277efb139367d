//! Applying the ast-grep action in a confined child process.
//!
//! An action is untrusted input: a rule can be slow (deeply nested relational rules) or blow up
//! memory (a `fix` repeating a large metavariable). So the apply step runs under the same
//! limits as tests, in a copy of the current executable started with
//! `AGENTD_SANDBOX_HELPER_DIR` set: [`maybe_run_internal_helper`], called first thing in
//! `main`, sees the variable, applies the action with the ast-grep crates, and exits. Forking
//! and applying without `exec` would run allocating code after `fork` in a multi-threaded
//! process, which can deadlock on a lock held by another thread at fork time.
//!
//! The request and response are JSON files in a private control directory, the only writable
//! place of the helper. They are an exchange between two copies of one binary, never stored
//! or sent elsewhere, so they are defined here and not in `agentd-schemas`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use agentd_schemas::events::Action;
use serde::{Deserialize, Serialize};

use super::action::apply_action_in_memory;
use super::process::{run_confined, ConfinedCommand, Launch, ProcessReport};
use super::workspace::{Workspace, TASK_FILES_BYTES_MAX};
use super::{sandbox_env, SandboxError, SandboxLimits};

/// Set in the helper's environment to its control directory.
const HELPER_DIR_ENV: &str = "AGENTD_SANDBOX_HELPER_DIR";
/// Test binaries cannot run code before libtest's `main`, so the helper is started as this
/// test: every test binary that calls `sandbox::run` defines a `#[test]` with this name that
/// calls [`maybe_run_internal_helper`]. Ordinary binaries ignore the arguments.
pub const HELPER_TEST_NAME: &str = "agentd_sandbox_internal_helper";
const REQUEST_FILE: &str = "request.json";
const RESPONSE_FILE: &str = "response.json";

/// If this process was started as a sandbox apply helper, does that work and exits;
/// otherwise returns at once.
///
/// Call it first thing in `main` of every binary that calls `sandbox::run` (`agentctl`), and
/// from a `#[test] fn agentd_sandbox_internal_helper()` in every test binary that does.
pub fn maybe_run_internal_helper() {
    let Some(dir) = std::env::var_os(HELPER_DIR_ENV) else {
        return;
    };
    let code = match serve(Path::new(&dir)) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("agentd sandbox helper: {message}");
            2
        }
    };
    std::process::exit(code);
}

/// What the helper is asked to do.
#[derive(Serialize, Deserialize)]
struct HelperRequest {
    files: BTreeMap<String, String>,
    action: Action,
}

/// What the helper answers.
#[derive(Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
enum HelperResponse {
    /// The action applied; only files whose content changed are listed.
    Applied { changed: BTreeMap<String, String> },
    /// The action is invalid.
    Invalid { reason: String },
}

/// How the confined apply step ended.
#[derive(Debug)]
pub(crate) enum ApplyResult {
    /// New contents of the files the action changed (none when it matched nothing).
    Applied(BTreeMap<String, String>),
    /// The action is invalid; the reason is for `rejected_reason`.
    Invalid(String),
    /// The helper could not be started under the required isolation.
    Refused(String),
    /// The helper was killed or crashed (time, memory, a panic).
    Crashed(ProcessReport),
}

/// Applies `action` to `files` in a confined helper process.
pub(crate) fn apply_confined(
    files: &BTreeMap<String, String>,
    action: &Action,
    limits: &SandboxLimits,
    deadline: Instant,
) -> Result<ApplyResult, SandboxError> {
    let control = Workspace::create(limits.workspace_root.as_deref(), "agentd-sandbox-apply-")?;
    let request = HelperRequest {
        files: files.clone(),
        action: action.clone(),
    };
    let request_json = serde_json::to_vec(&request)
        .map_err(|e| SandboxError::Helper(format!("encoding request: {e}")))?;
    std::fs::write(control.path().join(REQUEST_FILE), request_json)
        .map_err(|e| SandboxError::io("writing helper request", e))?;

    let program = Path::new("/proc/self/exe");
    let args: Vec<String> = [HELPER_TEST_NAME, "--nocapture", "--test-threads=1", "-q"]
        .map(String::from)
        .to_vec();
    let mut env = sandbox_env(control.path(), limits);
    env.push((
        HELPER_DIR_ENV.to_string(),
        control.path().to_string_lossy().into_owned(),
    ));
    let command = ConfinedCommand {
        program,
        args: &args,
        env,
        workdir: control.path(),
        limits,
        deadline,
        // The helper runs our own code on data, never task code, and must be able to read
        // this executable wherever it lives (e.g. under a 0700 home directory).
        run_as: None,
    };
    let report = match run_confined(&command)? {
        Launch::Refused(reason) => return Ok(ApplyResult::Refused(reason)),
        Launch::Finished(report) => report,
    };
    let clean_exit = report.termination == super::process::Termination::Exited(0)
        && !report.wall_time_exceeded
        && !report.process_limit_exceeded;
    if !clean_exit {
        return Ok(ApplyResult::Crashed(report));
    }
    let response = read_response(control.path())?;
    Ok(match response {
        HelperResponse::Applied { changed } => ApplyResult::Applied(changed),
        HelperResponse::Invalid { reason } => ApplyResult::Invalid(reason),
    })
}

fn read_response(dir: &Path) -> Result<HelperResponse, SandboxError> {
    let path = dir.join(RESPONSE_FILE);
    let file = std::fs::File::open(&path).map_err(|_| {
        SandboxError::Helper(format!(
            "the helper exited without answering; does this binary call \
             sandbox::maybe_run_internal_helper() first thing in main (or, in a test binary, \
             define #[test] fn {HELPER_TEST_NAME}())?"
        ))
    })?;
    // Changed files can be at most all files, JSON-escaped; anything bigger is not ours.
    let bytes_max = TASK_FILES_BYTES_MAX * 8;
    let mut text = String::new();
    file.take(bytes_max + 1)
        .read_to_string(&mut text)
        .map_err(|e| SandboxError::io("reading helper response", e))?;
    if text.len() as u64 > bytes_max {
        return Err(SandboxError::Helper(
            "helper response too large".to_string(),
        ));
    }
    serde_json::from_str(&text)
        .map_err(|e| SandboxError::Helper(format!("decoding helper response: {e}")))
}

/// The helper side: read the request, apply, write the response atomically (write then
/// rename), so that a helper killed mid-write never leaves a truncated answer behind.
fn serve(dir: &Path) -> Result<(), String> {
    let request_text = std::fs::read_to_string(dir.join(REQUEST_FILE))
        .map_err(|e| format!("reading request: {e}"))?;
    let request: HelperRequest =
        serde_json::from_str(&request_text).map_err(|e| format!("decoding request: {e}"))?;
    let response = match apply_action_in_memory(&request.files, &request.action) {
        Ok(after) => HelperResponse::Applied {
            changed: after
                .into_iter()
                .filter(|(path, content)| request.files.get(path) != Some(content))
                .collect(),
        },
        Err(SandboxError::InvalidAction(reason)) => HelperResponse::Invalid { reason },
        Err(other) => return Err(other.to_string()),
    };
    let json = serde_json::to_vec(&response).map_err(|e| format!("encoding response: {e}"))?;
    let partial = dir.join(format!("{RESPONSE_FILE}.partial"));
    std::fs::write(&partial, json).map_err(|e| format!("writing response: {e}"))?;
    std::fs::rename(&partial, dir.join(RESPONSE_FILE))
        .map_err(|e| format!("renaming response: {e}"))
}
