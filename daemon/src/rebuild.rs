//! `agentd rebuild`: replays the log into fresh projections offline and prints a digest of each.
//! The same log always prints the same digests.

use crate::config::Config;
use crate::projection::domain::DomainProjections;
use crate::projection::ProjectionStore;
use crate::sequencer::replay_queue_state;
use crate::server::DataPaths;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The digests of every projection after a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    pub lsn: u64,
    pub queue: String,
    pub jobs: String,
    /// The in-memory domain projections (processed splits, agent state, trajectories), under
    /// the names `GET /v1/admin/digest` uses.
    pub datasets: String,
    pub agent_state: String,
    pub trajectories: String,
}

/// Rebuilds projections from `data_dir`'s log into `out` (or in place when `out` is `None`).
pub fn rebuild(
    config: &Config,
    data_dir: &Path,
    out: Option<&Path>,
) -> anyhow::Result<RebuildReport> {
    let paths = DataPaths::new(data_dir);
    if !paths.log.is_dir() {
        anyhow::bail!(
            "{} has no log directory; is this an agentd data directory?",
            data_dir.display()
        );
    }
    let reader = crate::log::LogReader::open(&paths.log, config.log.frame_bytes_max)
        .context("cannot open the log")?;
    drop(reader);
    // Read-only: the daemon may be running; only durable frames are read (the reader stops at
    // the first incomplete frame).
    let last_lsn = last_lsn(&paths.log, config.log.frame_bytes_max)?;
    let projections_dir: PathBuf = match out {
        Some(out) => out.join("projections"),
        None => paths.projections.clone(),
    };
    let jobs_file = projections_dir.join("jobs.redb");
    if jobs_file.exists() {
        std::fs::remove_file(&jobs_file)
            .with_context(|| format!("cannot remove {}", jobs_file.display()))?;
    }
    let progress = ProgressBar::new(last_lsn.0);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} frames {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (store, _) = ProjectionStore::open(&projections_dir)?;
    let domain = DomainProjections::new(&config.datasets)?;
    store.catch_up_with(
        &paths.log,
        config.log.frame_bytes_max,
        last_lsn,
        |batch| domain.apply_batch(batch),
        |lsn| progress.set_position(lsn.0),
    )?;
    store.persist()?;
    progress.finish_and_clear();
    let queue = replay_queue_state(&paths.log, config.log.frame_bytes_max, last_lsn)?;
    let domain = domain.digests();
    Ok(RebuildReport {
        lsn: last_lsn.0,
        queue: queue.digest(),
        jobs: store.digest()?,
        datasets: domain.datasets,
        agent_state: domain.agent_state,
        trajectories: domain.trajectories,
    })
}

/// The last complete frame's LSN, read without modifying anything.
pub fn last_lsn(log_dir: &Path, frame_bytes_max: u32) -> anyhow::Result<agentd_schemas::Lsn> {
    let reader = crate::log::LogReader::open(log_dir, frame_bytes_max)?;
    let mut last = agentd_schemas::Lsn::ZERO;
    for frame in reader.frames(agentd_schemas::Lsn::ZERO, agentd_schemas::Lsn(u64::MAX)) {
        match frame {
            Ok(frame) => last = frame.lsn,
            // A torn tail at the end of a live or crashed log: stop at the complete prefix.
            Err(_) => break,
        }
    }
    Ok(last)
}
