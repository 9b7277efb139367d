//! End-to-end tests: the real `agentd` and `agentctl` binaries, real sockets, real disks.
//! One test binary (fast to link); modules group features.

mod archive;
mod astgrep_verify;
mod auth;
mod bench;
mod chaos;
mod console;
mod crash;
mod domain;
mod exports;
mod help;
mod job_logs;
mod job_run_at;
mod lifecycle;
mod limits;
mod openapi;
mod recovery;
mod replica;
mod replica_exports;
mod retention;
mod rollouts;
mod snapshot;
mod startup;
mod storage;
mod tls;
mod worker;
mod worker_batch;
mod worker_gpus;
mod worker_lease_on_complete;
mod worker_persistent;
mod worker_serve;
mod worker_stop;

use agentd_tests::{write_config, Daemon};
use tempfile::TempDir;

/// A config with fast retries so lifecycle tests finish quickly.
pub const FAST_RETRY_CONFIG: &str =
    "[queue]\nretry_backoff_base_ms = 10\nretry_backoff_max_ms = 50\n";

/// A daemon on a fresh temp dir with `FAST_RETRY_CONFIG`.
pub fn fast_daemon() -> (TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), FAST_RETRY_CONFIG);
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    (dir, daemon)
}
