//! agentd's client side: a typed HTTP client, the worker loop, the sandbox runner and the
//! `agentctl` commands. It must not depend on the daemon crate: everything it knows about the
//! daemon comes from `agentd-schemas` and HTTP.

pub mod builtin;
pub mod cli;
pub mod domain_client;
pub mod gpu;
pub mod http_client;
pub mod job_log;
pub mod model_server;
pub mod persistent;
pub mod pipe;
pub mod sandbox;
pub mod worker;
pub mod worker_metrics;

pub use http_client::{Client, ClientError};
