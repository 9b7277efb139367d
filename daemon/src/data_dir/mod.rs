//! The data directory: where the log and the projections live inside it, the lock a daemon
//! holds on it for its whole life, the log's options from the config, and the free-space gauges
//! of its file system. Start-up, `agentd rebuild` and `agentd restore` all lay out and lock a
//! data directory through here, so none of them depends on the server.

pub mod space;

use crate::config::Config;
use crate::log::LogOptions;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Paths inside the data directory.
pub struct DataPaths {
    pub log: PathBuf,
    pub projections: PathBuf,
}

impl DataPaths {
    pub fn new(data_dir: &Path) -> Self {
        DataPaths {
            log: data_dir.join("log"),
            projections: data_dir.join("projections"),
        }
    }
}

/// Log options from the config.
pub fn log_options(config: &Config, log_dir: PathBuf) -> LogOptions {
    let mut options = LogOptions::new(log_dir);
    options.segment_bytes_max = config.log.segment_bytes_max;
    options.frame_bytes_max = config.log.frame_bytes_max;
    options.batch_frames_max = config.log.batch_frames_max;
    options.batch_bytes_max = config.log.batch_bytes_max;
    options.queue_capacity = config.log.queue_capacity;
    options.preallocate_bytes = config.log.preallocate_bytes;
    options
}

/// The lock file a daemon holds in its data directory for its whole life.
pub const DATA_DIR_LOCK: &str = "LOCK";

/// Takes the data directory's [`DATA_DIR_LOCK`]; `None` when another process holds it. The
/// kernel releases the lock when the returned file is dropped or the process exits, however it
/// exits.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let lock_path = data_dir.join(DATA_DIR_LOCK);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    Ok(lock_file.try_lock().is_ok().then_some(lock_file))
}
