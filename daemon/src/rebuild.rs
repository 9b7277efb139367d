//! `agentd rebuild`: replays the log into fresh projections offline and prints a digest of each.
//! The same log always prints the same digests. With `--out DIR` it also writes the exports as of
//! the last replayed LSN under `DIR/exports` (see `export::replay`); `--until-lsn` and
//! `--until-time` stop the replay earlier ("the dataset as it was on the 3rd").

use crate::config::Config;
use crate::data_dir::{lock_data_dir, DataPaths};
use crate::projection::domain::DomainProjections;
use crate::projection::{ProjectionStore, StoredJobs, FRAMES_PER_TRANSACTION_MAX};
use crate::queue::QueueState;
use crate::replay::drive;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The digests of every projection after a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    pub lsn: u64,
    /// Where the full exports of `--out` are cut and named (`exp_<kind>_0_<exports_lsn>`): the
    /// last record at or before `lsn` that is not an export record, as the live daemon cuts.
    pub exports_lsn: u64,
    pub queue: String,
    pub jobs: String,
    /// The in-memory domain projections (processed splits, agent state, trajectories), under
    /// the names `GET /v1/admin/digest` uses.
    pub datasets: String,
    pub agent_state: String,
    pub trajectories: String,
    /// Exports written under `--out DIR/exports` (none when rebuilding in place).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<crate::export::replay::RebuiltExport>,
}

impl RebuildReport {
    /// The report as `agentd rebuild` prints it without `--json`: one digest a line, names
    /// padded to one column, then one line per export written.
    pub fn to_text(&self) -> String {
        let mut text = format!("rebuilt projections up to lsn {}\n", self.lsn);
        let digests = [
            ("queue", &self.queue),
            ("jobs", &self.jobs),
            ("datasets", &self.datasets),
            ("agent_state", &self.agent_state),
            ("trajectories", &self.trajectories),
        ];
        let width = digests
            .iter()
            .map(|(name, _)| name.len())
            .max()
            .unwrap_or(0);
        for (name, digest) in digests {
            text.push_str(&format!("{name:<width$}  {digest}\n"));
        }
        for export in &self.exports {
            text.push_str(&format!(
                "export {} rows {} manifest {}{}\n",
                export.dir,
                export.rows,
                export.manifest_sha256,
                match export.matches_recorded {
                    Some(true) => " (identical to the recorded export)",
                    Some(false) => " (DIFFERS from the recorded export)",
                    None => "",
                }
            ));
        }
        text
    }
}

/// Where a rebuild stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RebuildUntil {
    /// The last complete frame.
    #[default]
    End,
    /// This LSN (or the last frame, if the log is shorter).
    Lsn(u64),
    /// The last frame recorded at or before this time (ms since the Unix epoch).
    TimeMs(u64),
}

/// Options of [`rebuild_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RebuildOptions {
    pub until: RebuildUntil,
}

/// Rebuilds projections from `data_dir`'s log into `out` (or in place when `out` is `None`).
pub fn rebuild(
    config: &Config,
    data_dir: &Path,
    out: Option<&Path>,
) -> anyhow::Result<RebuildReport> {
    rebuild_with(config, data_dir, out, RebuildOptions::default())
}

/// [`rebuild`], stopping where `options` says; with `out`, also writes the exports.
pub fn rebuild_with(
    config: &Config,
    data_dir: &Path,
    out: Option<&Path>,
    options: RebuildOptions,
) -> anyhow::Result<RebuildReport> {
    let paths = check_dirs(data_dir, out, options)?;
    // In place, the projection files are the daemon's own: refuse while one runs. The lock is
    // the daemon's (`LOCK`, held for its lifetime) and is released when this process exits.
    let _data_dir_lock = match out {
        Some(_) => None,
        None => Some(lock_data_dir(data_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "an agentd is running on {} (it holds {}); stop it before rebuilding in place, or rebuild into another directory with --out DIR",
                data_dir.display(),
                data_dir.join(crate::data_dir::DATA_DIR_LOCK).display()
            )
        })?),
    };
    let reader = crate::log::LogReader::open(&paths.log, config.log.frame_bytes_max)
        .context("cannot open the log")?;
    // Segments local retention deleted are read back from the archive.
    crate::archive::attach_archive(&reader, &paths.log, &config.storage)?;
    // Read-only: with --out the daemon may be running; only durable frames are read (the reader
    // stops at the first incomplete frame).
    let end_lsn = last_lsn(&reader);
    let last_lsn = match options.until {
        RebuildUntil::End => end_lsn,
        RebuildUntil::Lsn(lsn) => agentd_schemas::Lsn(lsn.min(end_lsn.0)),
        RebuildUntil::TimeMs(ms) => last_lsn_at(&reader, end_lsn, ms)?,
    };
    let projections_dir: PathBuf = match out {
        Some(out) => out.join("projections"),
        None => paths.projections.clone(),
    };
    let rebuilt = replay_into_fresh(config, &reader, &projections_dir, last_lsn)?;
    let exports = match out {
        Some(out) => {
            let settings =
                crate::export::ExportSettings::new(config, data_dir, Some(out.join("exports")))?;
            crate::export::replay::rebuild_exports(
                &rebuilt.domain,
                &settings,
                &rebuilt.ledger,
                last_lsn,
            )?
        }
        None => Vec::new(),
    };
    let domain = rebuilt.domain.digests();
    Ok(RebuildReport {
        lsn: last_lsn.0,
        exports_lsn: rebuilt.ledger.last_content_lsn(last_lsn).0,
        queue: rebuilt.queue.digest(),
        jobs: rebuilt.store.digest()?,
        datasets: domain.datasets,
        agent_state: domain.agent_state,
        trajectories: domain.trajectories,
        exports,
    })
}

/// Refuses what a rebuild cannot do before anything is touched; returns the data dir's paths.
fn check_dirs(
    data_dir: &Path,
    out: Option<&Path>,
    options: RebuildOptions,
) -> anyhow::Result<DataPaths> {
    if out.is_none() && options.until != RebuildUntil::End {
        anyhow::bail!("--until-lsn and --until-time need --out: the data directory's own projections always follow the whole log");
    }
    let paths = DataPaths::new(data_dir);
    if !paths.log.is_dir() {
        anyhow::bail!(
            "{} has no log directory; is this an agentd data directory?",
            data_dir.display()
        );
    }
    if let Some(out) = out {
        if same_dir(out, data_dir) {
            anyhow::bail!(
                "--out {} is the data directory itself; leave --out off to rebuild in place, or give another directory",
                out.display()
            );
        }
    }
    Ok(paths)
}

/// Every projection, rebuilt from the log.
struct Rebuilt {
    store: ProjectionStore,
    domain: DomainProjections,
    ledger: crate::export::ledger::ExportLedger,
    queue: QueueState,
}

/// One pass over the log up to `last_lsn` feeds every projection, as start-up does; the job
/// projection in `projections_dir` starts empty and is made durable at the end.
fn replay_into_fresh(
    config: &Config,
    reader: &crate::log::LogReader,
    projections_dir: &Path,
    last_lsn: agentd_schemas::Lsn,
) -> anyhow::Result<Rebuilt> {
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
    let (store, _) = ProjectionStore::open(projections_dir)?;
    let domain = DomainProjections::new(&config.datasets)?;
    let mut ledger = crate::export::ledger::ExportLedger::default();
    let mut queue = QueueState::new();
    let mut jobs = StoredJobs::new(&store)?;
    let mut domain_projection = &domain;
    drive(
        reader,
        agentd_schemas::Lsn::ZERO,
        last_lsn,
        FRAMES_PER_TRANSACTION_MAX,
        &mut [&mut ledger, &mut queue, &mut jobs, &mut domain_projection],
        |lsn| progress.set_position(lsn.0),
    )
    .map_err(crate::projection::ProjectionError::from)?;
    store.persist()?;
    progress.finish_and_clear();
    Ok(Rebuilt {
        store,
        domain,
        ledger,
        queue,
    })
}

/// Whether two paths name the same directory (an `--out` that does not exist yet is not the
/// data directory).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The last complete frame's LSN, read without modifying anything.
fn last_lsn(reader: &crate::log::LogReader) -> agentd_schemas::Lsn {
    // From the local log's start: records before it (deleted locally by retention) need not
    // be downloaded from the archive to find the end.
    let mut last = agentd_schemas::Lsn(reader.local_first_lsn().0 - 1);
    for frame in reader.frames(last, agentd_schemas::Lsn(u64::MAX)) {
        match frame {
            Ok(frame) => last = frame.lsn,
            // A torn tail at the end of a live or crashed log: stop at the complete prefix.
            Err(_) => break,
        }
    }
    last
}

/// The last frame whose record time is at or before `ms` (record times never decrease).
fn last_lsn_at(
    reader: &crate::log::LogReader,
    end: agentd_schemas::Lsn,
    ms: u64,
) -> anyhow::Result<agentd_schemas::Lsn> {
    let mut last = agentd_schemas::Lsn::ZERO;
    let outcome =
        crate::replay::for_each_record(reader, agentd_schemas::Lsn::ZERO, end, |lsn, record| {
            if record.ts_ms > ms {
                return Err(crate::replay::ReplayError::Stopped);
            }
            last = lsn;
            Ok(())
        });
    match outcome {
        Ok(()) | Err(crate::replay::ReplayError::Stopped) => Ok(last),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_aligns_digests_in_one_column() {
        let report = RebuildReport {
            lsn: 7,
            exports_lsn: 7,
            queue: "q".into(),
            jobs: "j".into(),
            datasets: "d".into(),
            agent_state: "a".into(),
            trajectories: "t".into(),
            exports: Vec::new(),
        };
        let text = report.to_text();
        let columns: Vec<usize> = text.lines().skip(1).map(|line| line.len() - 1).collect();
        assert_eq!(columns, vec![14; 5], "{text}");
        assert!(
            text.starts_with("rebuilt projections up to lsn 7\nqueue         q\n"),
            "{text}"
        );
    }
}
