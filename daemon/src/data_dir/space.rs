//! The free-space gauges of the data directory's file system (`agentd_data_dir_free_bytes`,
//! `agentd_data_dir_size_bytes`), read with statvfs by the periodic gauge task, so an alert can
//! see the disk filling before appends fail with `disk_full`.

use std::path::{Path, PathBuf};

/// Reads the file system's space off the async workers (statvfs can block on a network file
/// system) and sets both gauges; on an error the gauges keep their last value.
pub async fn publish(data_dir: &Path) {
    let path: PathBuf = data_dir.to_owned();
    match tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&path)).await {
        Ok(Ok(stats)) => {
            let fragment = stats.fragment_size() as f64;
            metrics::gauge!("agentd_data_dir_free_bytes")
                .set(stats.blocks_available() as f64 * fragment);
            metrics::gauge!("agentd_data_dir_size_bytes").set(stats.blocks() as f64 * fragment);
        }
        Ok(Err(error)) => tracing::debug!("statvfs of the data directory failed: {error}"),
        Err(error) => tracing::debug!("statvfs task failed: {error}"),
    }
}
