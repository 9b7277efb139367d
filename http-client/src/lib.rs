//! `agentd-http-client`: a typed client for agentd's HTTP API. Every method maps to one route;
//! errors keep the daemon's stable `code` so callers can branch on it (`lease_lost`,
//! `disk_full`, ...).
//!
//! What it owns: the connection pool, bearer tokens, trusted CAs (`--ca-cert`), request
//! timeouts, and decoding answers into `agentd-schemas` types. What it must not do: know about
//! the sandbox, workers, or the daemon crate, or parse `agentctl`'s command line (no clap);
//! everything it knows about the daemon comes from `agentd-schemas` and HTTP. One exception
//! in wording only: [`ClientError::hint`] is phrased for agentctl and names its flags and
//! environment variable (`--url`, `AGENTD_URL`, `--ca-cert`); other callers ignore the hint or
//! word their own from the error.

mod client;
mod domain;
mod error;
mod jobs;

use std::time::Duration;

pub use client::{percent_encode, Client};
pub use error::{distinct_causes, ClientError};
pub use jobs::JobListQuery;

/// Default daemon address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";
/// Time allowed for an ordinary request; long-polls add their wait to it.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole file download (an export shard is at most 256 MiB by default).
pub(crate) const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which certificate authorities a `Client` trusts for https URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustRoots {
    /// The platform's trust store.
    Platform,
    /// Only the CA bundle given to `Client::with_ca_cert` (`--ca-cert`).
    CaCert,
}

#[cfg(test)]
mod tests;
