//! `agentd-client`: agentd's worker side and command line (`agentctl`): the worker loop, GPU
//! slots, model servers, job logs, the `astgrep.verify` built-in and the CLI commands.
//!
//! It is built over two library crates and re-exports them under their old paths:
//! `agentd-http-client` (the typed HTTP client, as [`http_client`]) and `agentd-sandbox` (the
//! confined runner, as [`sandbox`]). Dependencies point one way: this crate uses them, they
//! never know about it. It must not depend on the daemon crate: everything it knows about the
//! daemon comes from `agentd-schemas` and HTTP.

pub mod builtin;
pub mod cli;
pub mod gpu;
pub mod job_log;
pub mod model_server;
pub mod persistent;
pub mod pipe;
pub mod worker;
pub mod worker_metrics;

/// The typed HTTP client (crate `agentd-http-client`).
pub use agentd_http_client as http_client;
/// The sandbox runner (crate `agentd-sandbox`).
pub use agentd_sandbox as sandbox;

pub use http_client::{Client, ClientError};
