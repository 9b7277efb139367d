//! The one place agentd reads the wall clock. Who may call it, and why that keeps replays
//! deterministic:
//!
//! - the **sequencer**, to stamp each record (`ts_ms`, never earlier than one already written)
//!   and decide expiries and retries: everything it decides is recorded, so a replay reads time
//!   from the log, never from here;
//! - **read views** (`GET /v1/jobs`, export listings): whether a job is `scheduled` or already
//!   `queued` is shown as of now; nothing they compute is written;
//! - the **scheduler**, to know when a cron slot is due: the firing it then asks for is
//!   recorded (`schedule_fired` with its slot), so a restart resumes from the log.
//!
//! Projections, exports, domain rules and decisions never call it (a test checks that
//! `SystemTime::now` appears nowhere else in `daemon/src`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// `SystemTime::now` is read only in this module; `Instant` (durations, timeouts) is fine
    /// anywhere.
    #[test]
    fn only_the_clock_module_reads_the_wall_clock() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs")
                    && path != root.join("clock.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains("SystemTime::now") {
                        offenders.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "read the wall clock through crate::clock::now_ms: {offenders:?}"
        );
    }
}
