//! agentd: the daemon library. Owns the durable log, the sequencer (the one place state changes),
//! the projections and the HTTP API. It must not know about worker-side concerns (sandboxes, GPUs).

pub mod archive;
pub mod auth;
pub mod clock;
pub mod config;
pub mod data_dir_space;
pub mod domain;
pub mod export;
pub mod http;
pub mod limited_listener;
pub mod log;
pub mod metrics_catalog;
pub mod projection;
pub mod queue;
pub mod rebuild;
pub mod replay;
pub mod replica;
pub mod schedule;
pub mod sequencer;
pub mod server;
pub mod tls;

/// Stops the process after a broken invariant (failed fsync, unreadable own log). Recovery on the
/// next start replays the log; continuing could acknowledge writes that are not durable.
pub fn fatal(message: &str) -> ! {
    tracing::error!("fatal: {message}");
    eprintln!("agentd: fatal: {message}");
    std::process::exit(70)
}
