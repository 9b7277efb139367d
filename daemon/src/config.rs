//! Daemon configuration: every setting has a default, so `agentd` runs with no file at all.
//! `configs/agentd.toml` documents each key; unknown keys are refused so a typo is an error.

use crate::queue::QueueLimits;
use agentd_schemas::events::{
    ExportFormat, ExportKind, RewardCombine, RewardSettings, RewardWeights, SftSettings,
    SystemPrompt, TestsReward, TrainingSettings,
};
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
    /// `[rewards]`: how rule rewards combine their checks (recorded in the log).
    pub rewards: RewardsConfig,
    /// `[training]`: the trainer views' system prompt and SFT threshold (recorded in the log).
    pub training: TrainingConfig,
    pub auth: AuthConfig,
    /// `[exports]`: where exports go and how they are encoded (docs/exports.md).
    pub exports: ExportsConfig,
    /// `[[schedules]]`: scheduled exports.
    pub schedules: Vec<ScheduleConfig>,
    /// `[storage]`: the object-storage URL the log is archived to (docs/storage.md).
    pub storage: StorageConfig,
}

/// `[storage]` in agentd.toml: where the log archive goes. Unset `url` (the default): the daemon
/// stays local-only and no archiver runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or `file:///path`;
    /// checked at start-up (`archive::StorageUrl`). Credentials come from the environment.
    pub url: Option<String>,
    /// How often the active segment's durable prefix is uploaded: the archive's recovery point
    /// objective (plus the upload's own time).
    pub archive_interval_ms: u64,
    /// Local segments whose last record is older than this, sealed and archived with the same
    /// sha256, are deleted from the data disk (`archive::retention`); reads before the local
    /// log then come from the archive. 0 (the default): keep the whole log locally.
    pub local_retention_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: None,
            archive_interval_ms: 10_000,
            local_retention_ms: 0,
        }
    }
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

/// Default of `[log] snapshot_every_records`: after a crash, start-up replays at most this
/// many records into the queue state (about a second on the machines agentd targets), or as
/// many as the last snapshot held entries when that was more.
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 500_000;

/// `[log]`: segment and group-commit sizes, and how often the sequencer state is snapshotted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub segment_bytes_max: u64,
    pub frame_bytes_max: u32,
    pub batch_frames_max: usize,
    pub batch_bytes_max: usize,
    pub queue_capacity: usize,
    /// Zeros kept written ahead of the last frame of the active segment (0: append to the end of
    /// the file); see `LogOptions::preallocate_bytes`.
    pub preallocate_bytes: u64,
    /// Records between two snapshots of the sequencer's state, which start-up loads instead of
    /// replaying the whole log (0: no snapshots), at least as many as the state holds entries;
    /// see `crate::snapshot`.
    pub snapshot_every_records: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 64 * 1024 * 1024,
            frame_bytes_max: 64 * 1024 * 1024,
            batch_frames_max: 4096,
            batch_bytes_max: 16 * 1024 * 1024,
            queue_capacity: 8192,
            preallocate_bytes: crate::log::PREALLOCATE_BYTES_DEFAULT,
            snapshot_every_records: SNAPSHOT_EVERY_RECORDS_DEFAULT,
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

/// `[exports]` in agentd.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportsConfig {
    /// The exports root; relative to the data directory unless absolute. Default: `exports`.
    pub dir: PathBuf,
    /// A shard file is closed once it reaches this size.
    pub shard_bytes_max: u64,
    /// A row group is flushed once its estimated encoded size reaches this.
    pub row_group_bytes_max: usize,
    /// zstd level of Parquet pages (1 fastest .. 22 smallest).
    pub zstd_level: i32,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            dir: PathBuf::from("exports"),
            shard_bytes_max: 256 * 1024 * 1024,
            row_group_bytes_max: 64 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

/// One `[[schedules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name, recorded in every firing (`nightly-trajectories`).
    pub name: String,
    /// `0 3 * * *`, `@daily`, or 6 fields with seconds first.
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The export to run.
    pub kind: ExportKind,
    #[serde(default)]
    pub format: ExportFormat,
    /// Export everything each time instead of only what is new since the last export.
    #[serde(default)]
    pub full: bool,
    /// Run once at start-up when slots were missed while the daemon was down.
    #[serde(default = "default_true")]
    pub run_missed_at_startup: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_true() -> bool {
    true
}

/// `[rewards]`: how the rule reward of `astgrep.verify` combines its checks
/// (docs/astgrep_verify.md, "The reward"). Recorded in the log with `[training]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardsConfig {
    pub combine: RewardCombine,
    pub tests: TestsReward,
    pub weight_tests: f64,
    pub weight_gold_match: f64,
    pub weight_post_match: f64,
}

impl Default for RewardsConfig {
    fn default() -> Self {
        let weights = RewardWeights::default();
        RewardsConfig {
            combine: RewardCombine::All,
            tests: TestsReward::All,
            weight_tests: weights.tests,
            weight_gold_match: weights.gold_match,
            weight_post_match: weights.post_match,
        }
    }
}

impl RewardsConfig {
    /// The settings, once every weight is checked (finite and not negative).
    pub fn settings(&self) -> Result<RewardSettings, String> {
        for (key, weight) in [
            ("weight_tests", self.weight_tests),
            ("weight_gold_match", self.weight_gold_match),
            ("weight_post_match", self.weight_post_match),
        ] {
            if !weight.is_finite() || weight < 0.0 {
                return Err(format!(
                    "[rewards] {key} = {weight}: a weight must be a finite number of at least 0"
                ));
            }
        }
        let sum = self.weight_tests + self.weight_gold_match + self.weight_post_match;
        if !sum.is_finite() {
            return Err("[rewards] the weights' sum must be a finite number".into());
        }
        Ok(RewardSettings {
            combine: self.combine,
            tests: self.tests,
            weights: RewardWeights {
                tests: self.weight_tests,
                gold_match: self.weight_gold_match,
                post_match: self.weight_post_match,
            },
        })
    }
}

/// The default system prompt, `configs/system_prompt.toml`, embedded.
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("../../configs/system_prompt.toml");

/// `[training]`: what the trainer views are built with. Recorded in the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// A TOML file with `version` and `text`; unset: the embedded `configs/system_prompt.toml`.
    pub system_prompt_file: Option<PathBuf>,
    /// A verified step goes to `trl_sft` only with a reward at least this.
    pub sft_min_reward: f64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            system_prompt_file: None,
            sft_min_reward: SftSettings::default().min_reward,
        }
    }
}

impl Config {
    /// The `[rewards]` and `[training]` settings as `training_settings_recorded` records them
    /// (the system prompt file is read here).
    pub fn training_settings(&self) -> Result<TrainingSettings, String> {
        let rewards = self.rewards.settings()?;
        let min_reward = self.training.sft_min_reward;
        if !min_reward.is_finite() {
            return Err(format!(
                "[training] sft_min_reward = {min_reward}: must be a finite number"
            ));
        }
        let (origin, text) = match &self.training.system_prompt_file {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|error| {
                    format!(
                        "[training] system_prompt_file: cannot read {}: {error}",
                        path.display()
                    )
                })?,
            ),
            None => (
                "the embedded configs/system_prompt.toml".to_string(),
                DEFAULT_SYSTEM_PROMPT.to_string(),
            ),
        };
        let system_prompt = parse_system_prompt(&text)
            .map_err(|error| format!("[training] system prompt in {origin}: {error}"))?;
        Ok(TrainingSettings {
            rewards,
            system_prompt,
            sft: SftSettings { min_reward },
        })
    }
}

/// A system prompt file: `version` (1 to 128 characters) and a non-blank `text`.
pub fn parse_system_prompt(text: &str) -> Result<SystemPrompt, String> {
    let prompt: SystemPrompt = toml::from_str(text).map_err(|error| error.to_string())?;
    let version_ok = !prompt.version.trim().is_empty() && prompt.version.chars().count() <= 128;
    if !version_ok {
        return Err("`version` must be 1 to 128 characters".into());
    }
    if prompt.text.trim().is_empty() {
        return Err("`text` is empty".into());
    }
    Ok(prompt)
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
        assert_eq!(
            config.training_settings().unwrap(),
            Config::default().training_settings().unwrap()
        );
        assert_eq!(config.storage, StorageConfig::default());
        assert_eq!(
            config.log.preallocate_bytes,
            crate::log::PREALLOCATE_BYTES_DEFAULT
        );
        assert_eq!(
            config.log.snapshot_every_records,
            SNAPSHOT_EVERY_RECORDS_DEFAULT
        );
    }

    #[test]
    fn storage_section_parses_and_refuses_unknown_keys() {
        let config =
            Config::parse("[storage]\nurl = \"s3://bucket/agentd\"\narchive_interval_ms = 500\n")
                .unwrap();
        assert_eq!(config.storage.url.as_deref(), Some("s3://bucket/agentd"));
        assert_eq!(config.storage.archive_interval_ms, 500);
        assert_eq!(config.storage.local_retention_ms, 0);
        let config =
            Config::parse("[storage]\nurl = \"file:///a\"\nlocal_retention_ms = 3600000\n")
                .unwrap();
        assert_eq!(config.storage.local_retention_ms, 3_600_000);
        let error = Config::parse("[storage]\nurll = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("urll"), "{error}");
    }

    #[test]
    fn training_settings_check_weights_and_the_prompt_file() {
        let settings = Config::default().training_settings().unwrap();
        assert_eq!(settings.system_prompt.version, "astgrep-v1");
        assert!(settings.system_prompt.text.contains("<action>"));
        assert_eq!(settings.sft.min_reward, 1.0);
        let config =
            Config::parse("[rewards]\ncombine = \"weighted\"\nweight_tests = -1\n").unwrap();
        let error = config.training_settings().unwrap_err();
        assert!(error.contains("weight_tests"), "{error}");
        let config =
            Config::parse("[training]\nsystem_prompt_file = \"/nonexistent/prompt.toml\"\n")
                .unwrap();
        let error = config.training_settings().unwrap_err();
        assert!(
            error.contains("cannot read /nonexistent/prompt.toml"),
            "{error}"
        );
        assert!(parse_system_prompt("version = \"\"\ntext = \"x\"").is_err());
        assert!(parse_system_prompt("version = \"v\"\ntext = \" \"").is_err());
        assert!(parse_system_prompt("version = \"v\"\ntext = \"x\"\nextra = 1").is_err());
    }
}
