//! Daemon configuration: every setting has a default, so `agentd` runs with no file at all.
//! `configs/agentd.toml` documents each key; unknown keys are refused so a typo is an error.

use crate::queue::QueueLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub queue: QueueConfig,
    pub state: StateConfig,
    pub datasets: DatasetsConfig,
    pub auth: AuthConfig,
    /// `[exports]`: where exports go and how they are encoded (docs/exports.md).
    pub exports: crate::export::ExportsConfig,
    /// `[[schedules]]`: scheduled exports.
    pub schedules: Vec<crate::schedule::ScheduleConfig>,
}

/// `[auth]`: bearer tokens. Empty (the default) means no authentication, which the daemon only
/// accepts on a loopback address (or with `--insecure-no-auth`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Inline tokens: `{ name = "box-3", role = "worker", sha256 = "<hex>" }`, as printed by
    /// `agentctl tokens create`.
    pub tokens: Vec<crate::auth::TokenEntry>,
    /// A TOML file with more `[[tokens]]` entries (kept out of the main config, e.g. mode 0600).
    pub tokens_file: Option<std::path::PathBuf>,
}

/// `[server]`: where to listen and the HTTP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Concurrent connections served; more wait in the accept queue.
    pub connections_max: usize,
    /// Requests in flight at once across all connections.
    pub requests_in_flight_max: usize,
    /// A request that takes longer (long-polls excluded up to their wait) gets 503 `timeout`.
    pub request_timeout_ms: u64,
    pub body_bytes_max: usize,
    /// Cap on a lease long-poll's `wait_ms`.
    pub lease_wait_ms_max: u64,
    /// Workers parked in long-polls at once; more are answered 429 `too_many_waiters`.
    pub lease_waiters_max: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Allow a non-loopback listen address without any `[auth]` tokens (anyone who can reach
    /// the port can do anything). Also `agentd --insecure-no-auth`.
    pub insecure_no_auth: bool,
    /// `[server.tls]`: serve HTTPS with this certificate chain and key (PEM).
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("./agentd-data"),
            connections_max: 1024,
            requests_in_flight_max: 4096,
            request_timeout_ms: 30_000,
            body_bytes_max: 32 * 1024 * 1024,
            lease_wait_ms_max: 30_000,
            lease_waiters_max: 10_000,
            shutdown_grace_ms: 10_000,
            insecure_no_auth: false,
            tls: None,
        }
    }
}

/// `[log]`: segment and group-commit sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub segment_bytes_max: u64,
    pub frame_bytes_max: u32,
    pub batch_frames_max: usize,
    pub batch_bytes_max: usize,
    pub queue_capacity: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 * 1024 * 1024,
            frame_bytes_max: 64 * 1024 * 1024,
            batch_frames_max: 4096,
            batch_bytes_max: 16 * 1024 * 1024,
            queue_capacity: 8192,
        }
    }
}

/// `[queue]`: job defaults and limits (see [`QueueLimits`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    pub payload_bytes_max: usize,
    pub batch_jobs_max: usize,
    pub tags_max: usize,
    pub max_attempts_default: u32,
    pub lease_ttl_ms_default: u64,
    pub lease_ttl_ms_min: u64,
    pub lease_ttl_ms_max: u64,
    pub lease_jobs_max: u32,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let limits = QueueLimits::default();
        QueueConfig {
            payload_bytes_max: limits.payload_bytes_max,
            batch_jobs_max: limits.batch_jobs_max,
            tags_max: limits.tags_max,
            max_attempts_default: limits.max_attempts_default,
            lease_ttl_ms_default: limits.lease_ttl_ms_default,
            lease_ttl_ms_min: limits.lease_ttl_ms_min,
            lease_ttl_ms_max: limits.lease_ttl_ms_max,
            lease_jobs_max: limits.lease_jobs_max,
            retry_backoff_base_ms: limits.retry_backoff_base_ms,
            retry_backoff_max_ms: limits.retry_backoff_max_ms,
        }
    }
}

impl QueueConfig {
    pub fn limits(&self) -> QueueLimits {
        QueueLimits {
            payload_bytes_max: self.payload_bytes_max,
            batch_jobs_max: self.batch_jobs_max,
            tags_max: self.tags_max,
            max_attempts_default: self.max_attempts_default,
            lease_ttl_ms_default: self.lease_ttl_ms_default,
            lease_ttl_ms_min: self.lease_ttl_ms_min,
            lease_ttl_ms_max: self.lease_ttl_ms_max,
            lease_jobs_max: self.lease_jobs_max,
            retry_backoff_base_ms: self.retry_backoff_base_ms,
            retry_backoff_max_ms: self.retry_backoff_max_ms,
            ..QueueLimits::default()
        }
    }
}

/// `[state]`: per-task agent state merge limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    pub history_max: u32,
    pub item_chars_max: u32,
    pub token_budget: u32,
    pub encoding: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            history_max: 3,
            item_chars_max: 256,
            token_budget: 800,
            encoding: "o200k_base".into(),
        }
    }
}

/// `[datasets]`: processed-split rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetsConfig {
    pub encoding: String,
    pub token_cap: usize,
    pub split_train: u32,
    pub split_dev: u32,
    pub split_test: u32,
    /// Records per ingest request.
    pub records_per_batch_max: usize,
}

impl DatasetsConfig {
    /// The settings the processed splits follow, as `dataset_settings_recorded` records them.
    pub fn settings(&self) -> agentd_schemas::events::DatasetSettings {
        agentd_schemas::events::DatasetSettings {
            encoding: self.encoding.clone(),
            token_cap: self.token_cap as u64,
            split_train: self.split_train,
            split_dev: self.split_dev,
            split_test: self.split_test,
        }
    }
}

impl Default for DatasetsConfig {
    fn default() -> Self {
        DatasetsConfig {
            encoding: "o200k_base".into(),
            token_cap: 2000,
            split_train: 90,
            split_dev: 5,
            split_test: 5,
            records_per_batch_max: 10_000,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The IO error is the `source`, not part of the message, so a cause chain prints it once.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML error (line, column, snippet) is the `source`, printed once by a cause chain.
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Config {
    /// Loads a TOML file; every missing key keeps its default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_unknown_keys_are_refused() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.queue.max_attempts_default, 3);
        let error = Config::parse("[server]\nlisten_on = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("listen_on"), "{error}");
    }

    #[test]
    fn shipped_config_file_parses_and_matches_defaults() {
        let text = include_str!("../../configs/agentd.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.server.listen, Config::default().server.listen);
        assert_eq!(config.queue.lease_ttl_ms_default, 60_000);
    }
}
