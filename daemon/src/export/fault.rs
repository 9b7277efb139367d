//! A test-only fault hook: `AGENTD_EXPORT_FAULT=before_rename` (or `after_first_rename`) makes
//! the process abort at that point of an export, as a crash or a SIGKILL would, so the end-to-end
//! tests can check that no half file is left under a final name and that the next run completes.
//! Unset (always, outside those tests) it does nothing.

/// Where an export can be made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Every file is written and fsynced under its temp name; nothing is renamed yet.
    BeforeRename,
    /// One file is under its final name, the others and the manifest are not.
    AfterFirstRename,
}

/// The environment variable naming the fault point.
pub const FAULT_ENV: &str = "AGENTD_EXPORT_FAULT";

/// Aborts the process if `AGENTD_EXPORT_FAULT` names `point`.
pub fn maybe_abort(point: Point) {
    let Ok(wanted) = std::env::var(FAULT_ENV) else {
        return;
    };
    let name = match point {
        Point::BeforeRename => "before_rename",
        Point::AfterFirstRename => "after_first_rename",
    };
    if wanted == name {
        eprintln!("agentd: {FAULT_ENV}={name}: aborting in the middle of an export");
        std::process::abort();
    }
}
