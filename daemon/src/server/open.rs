//! Phase 1 of the daemon's life: check the config, lock the data directory, bind the listening
//! socket, recover the log and replay it into every projection. Nothing runs and nothing is
//! written to the log yet; a bad config, a taken port or a damaged log stops the start here.

use crate::config::Config;
use crate::data_dir::{lock_data_dir, log_options, DataPaths, DATA_DIR_LOCK};
use crate::http::domain::DomainApi;
use crate::log::{self, Log, LogReader};
use crate::projection::domain::DomainProjections;
use crate::projection::{OpenOutcome, ProjectionStore, StoredJobs, FRAMES_PER_TRANSACTION_MAX};
use crate::replay::drive;
use crate::snapshot::keeper::SnapshotKeeper;
use crate::snapshot::SequencerState;
use agentd_schemas::events::Event;
use agentd_schemas::Lsn;
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The daemon after [`open`]: its log recovered and replayed, every projection current, nothing
/// running. [`Opened::start`] (in `start.rs`) starts the tasks.
pub struct Opened {
    pub(super) config: Config,
    /// The locked data directory, the bound socket, the recovered log (its writer not started
    /// yet) and the projections' containers.
    pub(super) grounds: Grounds,
    pub(super) archive_store: Option<crate::archive::ArchiveStore>,
    pub(super) last_lsn: Lsn,
    pub(super) replayed: SequencerState,
    /// Keeps the projector's copy of `replayed` and writes the snapshots (none when
    /// `[log] snapshot_every_records` is 0).
    pub(super) keeper: Option<Box<dyn crate::projection::Keeper>>,
    pub(super) store: Arc<ProjectionStore>,
    pub(super) schedules: Vec<crate::schedule::Schedule>,
    /// Settings that changed since the last start, recorded (in one record) once started.
    pub(super) settings_events: Vec<Event>,
}

/// What every start (the daemon's and `agentd replica`'s) sets up the same way: access
/// control, TLS, the locked data directory, the bound socket, the projections' containers and
/// the recovered log, then the state to serve from (see [`ServingState`]).
pub(super) struct Grounds {
    pub(super) authenticator: Arc<crate::auth::Authenticator>,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) data_dir: PathBuf,
    pub(super) paths: DataPaths,
    /// Held for the process's whole life: one daemon per data directory.
    pub(super) lock_file: std::fs::File,
    /// Bound before the log is touched, so a taken port stops the start before anything is
    /// replayed or appended; connections wait in the backlog until [`super::serve`] accepts.
    pub(super) listener: tokio::net::TcpListener,
    pub(super) export_settings: crate::export::ExportSettings,
    /// Still loading after [`Grounds::replay_for_serving`]: their loader starts beside the
    /// projector.
    pub(super) domain: Arc<DomainProjections>,
    pub(super) domain_api: DomainApi,
    pub(super) metrics: Option<PrometheusHandle>,
    /// The recovered log; its writer (or a replica's follower) is not started yet.
    pub(super) log: Log,
    /// Shares the log's offset index, so no read scans a segment to find where it starts.
    pub(super) log_reader: LogReader,
    pub(super) report: log::RecoveryReport,
}

/// Sets up [`Grounds`], in the order that fails fastest: the tokens and the certificate first,
/// then the role's own `checks` of its config (whose answer is passed back), then the data
/// directory, the lock before the port, the port before the log is touched.
pub(super) async fn lay_grounds<Checked>(
    config: &Config,
    checks: impl FnOnce() -> anyhow::Result<Checked>,
) -> anyhow::Result<(Grounds, Checked)> {
    let authenticator = Arc::new(super::build_authenticator(config)?);
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    let checked = checks()?;
    let data_dir = config.server.data_dir.clone();
    let created_here = !data_dir.exists();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let paths = DataPaths::new(&data_dir);
    let lock_file = lock(&data_dir)?;
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            if created_here {
                // Nothing but the lock is in it yet: leave no trace of a start that never began.
                drop(lock_file);
                let _ = std::fs::remove_file(data_dir.join(DATA_DIR_LOCK));
                let _ = std::fs::remove_dir(&data_dir);
            }
            return Err(anyhow::Error::new(error)
                .context(format!("cannot listen on {}", config.server.listen)));
        }
    };
    let export_settings = crate::export::ExportSettings::new(config, &data_dir, None)?;
    let domain = Arc::new(DomainProjections::new(&config.datasets)?);
    let domain_api = DomainApi::new(config, domain.clone())?;
    let metrics = super::metrics::install();
    let (log, report) = recover(config, &paths).await?;
    let log_reader = log.reader();
    let grounds = Grounds {
        authenticator,
        tls,
        data_dir,
        paths,
        lock_file,
        listener,
        export_settings,
        domain,
        domain_api,
        metrics,
        log,
        log_reader,
        report,
    };
    Ok((grounds, checked))
}

/// What a start serves from: the job projection current, the sequencer's state (from the newest
/// usable snapshot and the records after it), the keeper of the next snapshots, and the domain
/// projections marked loading (their loader starts with the projector).
pub(super) struct ServingState {
    pub(super) store: ProjectionStore,
    pub(super) replayed: SequencerState,
    pub(super) keeper: Option<Box<dyn crate::projection::Keeper>>,
}

impl Grounds {
    /// Replays what serving needs (see [`ServingState`]); the same for the daemon and a replica,
    /// whose local log is a prefix of the primary's, so its own snapshots identify its records.
    pub(super) async fn replay_for_serving(&self, config: &Config) -> anyhow::Result<ServingState> {
        let last_lsn = self.log.last_lsn();
        let snapshots = (config.log.snapshot_every_records > 0).then(|| {
            self.paths
                .projections
                .join(crate::snapshot::file::SNAPSHOT_DIR)
        });
        let (store, replayed, snapshot_lsn) =
            replay_sequencer_state(&self.paths, &self.log_reader, last_lsn, snapshots.clone())
                .await?;
        self.domain.mark_loading();
        let keeper = snapshots.map(|dir| {
            let cloning = Instant::now();
            let copy = replayed.clone();
            tracing::info!(
                ms = cloning.elapsed().as_millis() as u64,
                "copied the sequencer state for the snapshot keeper"
            );
            Box::new(SnapshotKeeper::new(
                copy,
                dir,
                config.log.snapshot_every_records,
                snapshot_lsn,
            )) as Box<dyn crate::projection::Keeper>
        });
        Ok(ServingState {
            store,
            replayed,
            keeper,
        })
    }
}

/// Recovers the log and replays it. Errors name what is wrong (config, lock, log, projection).
pub async fn open(config: Config) -> anyhow::Result<Opened> {
    let started = Instant::now();
    let (grounds, (archive_store, schedules, training_wanted)) = lay_grounds(&config, || {
        // A bad [storage] url stops the start here, before the log is touched.
        let archive_store = crate::archive::open_configured(&config.storage)?;
        crate::archive::retention::check_config(&config.storage).map_err(anyhow::Error::msg)?;
        // Exports and schedules: checked before anything starts, so a bad [[schedules]] entry
        // fails fast.
        let schedules = crate::schedule::parse_all(&config.schedules)?;
        let training_wanted = config
            .training_settings()
            .map_err(|message| anyhow::anyhow!(message))?;
        Ok((archive_store, schedules, training_wanted))
    })
    .await?;
    let last_lsn = grounds.log.last_lsn();
    attach_archive_below_local_log(&grounds.log_reader, &grounds.paths, &config.storage)?;
    let ServingState {
        store,
        replayed,
        keeper,
    } = grounds.replay_for_serving(&config).await?;
    // The processed splits follow the [datasets] settings recorded in the log, so that any
    // replay decides the same splits whatever config it runs with; a config that would change
    // them under existing records is refused here, before anything is served. The reward
    // combination, system prompt and SFT threshold are recorded when they change, so exports
    // (which use those in force at their `to`) stay a function of the log.
    let datasets_settings = replayed
        .settings
        .datasets_to_record(&config.datasets)
        .map_err(|message| anyhow::anyhow!(message))?;
    let training_settings = replayed
        .settings
        .training_to_record(&training_wanted)
        .map_err(|message| anyhow::anyhow!(message))?;
    let settings_events = datasets_settings
        .map(Event::DatasetSettingsRecorded)
        .into_iter()
        .chain(training_settings.map(Event::TrainingSettingsRecorded))
        .collect();
    tracing::info!(%last_lsn, segments = grounds.report.segments, ms = started.elapsed().as_millis() as u64, "recovered");
    Ok(Opened {
        config,
        grounds,
        archive_store,
        last_lsn,
        replayed,
        keeper,
        store: Arc::new(store),
        schedules,
        settings_events,
    })
}

/// One daemon per data directory: a second writer would interleave frames.
fn lock(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    lock_data_dir(data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another agentd is already using the data directory {} (it holds {})",
            data_dir.display(),
            data_dir.join(DATA_DIR_LOCK).display()
        )
    })
}

/// Opens the log, repairing a torn tail a crash left (and saying so).
pub(super) async fn recover(
    config: &Config,
    paths: &DataPaths,
) -> anyhow::Result<(Log, log::RecoveryReport)> {
    let mut options = log_options(config, paths.log.clone());
    options.on_batch = Some(Arc::new(|batch: &log::BatchObservation| {
        metrics::histogram!("agentd_log_fsync_seconds").record(batch.fsync_duration.as_secs_f64());
        metrics::histogram!("agentd_log_group_commit_frames").record(batch.frames as f64);
        metrics::counter!("agentd_log_bytes_written_total").increment(batch.bytes as u64);
        metrics::counter!("agentd_log_group_commits_total").increment(1);
    }));
    let (log, report) = tokio::task::spawn_blocking(move || log::open(options))
        .await?
        .context("cannot open the log")?;
    if let Some(torn) = &report.truncated {
        tracing::warn!(path = %torn.path.display(), offset = torn.offset, bytes = torn.bytes_removed, reason = %torn.reason, "repaired a torn tail left by a crash");
    }
    Ok((log, report))
}

/// When local retention deleted archived segments (or may delete them while the daemon runs),
/// every read before the local log (this start-up's replay first) downloads them from the
/// archive.
fn attach_archive_below_local_log(
    log_reader: &LogReader,
    paths: &DataPaths,
    storage: &crate::config::StorageConfig,
) -> anyhow::Result<()> {
    let local_first_lsn = log_reader.local_first_lsn();
    metrics::gauge!("agentd_log_local_first_lsn").set(local_first_lsn.0 as f64);
    let attached = crate::archive::attach_archive(log_reader, &paths.log, storage)?;
    if let Some(url) = attached.filter(|_| local_first_lsn.0 > 1) {
        tracing::info!(%local_first_lsn, %url, "the log starts locally at this lsn; the records before it are read back from the archive (start-up downloads them)");
    }
    Ok(())
}

/// A start-up's replay: the sequencer's state from the newest usable snapshot in
/// `snapshots` (when given) and the records after it; the job projection from where it
/// stopped. The domain projections are left to their loader. Returns the snapshot's LSN (zero
/// when none was used).
async fn replay_sequencer_state(
    paths: &DataPaths,
    log_reader: &LogReader,
    last_lsn: Lsn,
    snapshots: Option<PathBuf>,
) -> anyhow::Result<(ProjectionStore, SequencerState, Lsn)> {
    let projections_dir = paths.projections.clone();
    let reader = log_reader.clone();
    tokio::task::spawn_blocking(move || {
        check_archive_readable(&reader)?;
        let store = open_job_projection(&projections_dir, last_lsn)?;
        let mut state = match snapshots {
            Some(dir) => load_snapshot(&dir, &reader, last_lsn)?,
            None => SequencerState::default(),
        };
        let from = state.lsn();
        let mut jobs = StoredJobs::new(&store)?;
        // The job projection may be behind the snapshot (rebuilt, or its last non-durable
        // commits lost in a crash): it catches up alone to the snapshot first.
        let jobs_from = store.applied_lsn()?;
        if jobs_from < from {
            replay(&reader, (jobs_from, from), &mut [&mut jobs])?;
        }
        replay(&reader, (from, last_lsn), &mut [&mut state, &mut jobs])?;
        Ok((store, state, from))
    })
    .await?
}

/// The domain projections load from the start of the log after the daemon serves; when local
/// retention deleted the first segments, their archive must answer now, so that a start that
/// cannot read them is refused (naming the archive) instead of failing once serving.
fn check_archive_readable(reader: &LogReader) -> anyhow::Result<()> {
    let local_first = reader.local_first_lsn();
    if local_first.0 <= 1 {
        return Ok(());
    }
    crate::replay::for_each_record(reader, Lsn::ZERO, Lsn(1), |_, _| Ok(())).with_context(|| {
        format!(
            "the records before lsn {local_first} are only in the archive, and it cannot be read"
        )
    })
}

fn open_job_projection(dir: &std::path::Path, last_lsn: Lsn) -> anyhow::Result<ProjectionStore> {
    let (store, outcome) = ProjectionStore::open_following(dir, last_lsn)?;
    if let OpenOutcome::Recreated { reason } = &outcome {
        tracing::warn!("rebuilding the job projection from the log: {reason}");
    }
    Ok(store)
}

fn replay(
    reader: &LogReader,
    (after, up_to): (Lsn, Lsn),
    projections: &mut [&mut dyn crate::replay::Projection],
) -> anyhow::Result<()> {
    drive(
        reader,
        after,
        up_to,
        FRAMES_PER_TRANSACTION_MAX,
        projections,
        |_| {},
    )
    .map_err(crate::projection::ProjectionError::from)
    .context("cannot replay the log")?;
    Ok(())
}

/// The newest snapshot in `dir` that this log holds the record of (or an empty state).
fn load_snapshot(
    dir: &std::path::Path,
    reader: &LogReader,
    last_lsn: Lsn,
) -> anyhow::Result<SequencerState> {
    let started = Instant::now();
    let accept = |lsn: Lsn, sha256: &[u8; 32]| {
        lsn <= last_lsn
            && crate::snapshot::file::record_sha256(reader, lsn).as_ref() == Some(sha256)
    };
    let loaded = crate::snapshot::file::load_newest::<SequencerState>(dir, accept)
        .context("cannot read the snapshot directory")?;
    metrics::gauge!("agentd_startup_snapshot_lsn")
        .set(loaded.as_ref().map_or(0.0, |loaded| loaded.lsn.0 as f64));
    Ok(match loaded {
        Some(loaded) => {
            tracing::info!(lsn = %loaded.lsn, path = %loaded.path.display(), bytes = loaded.bytes, ms = started.elapsed().as_millis() as u64, "loaded a snapshot of the sequencer state; replaying the records after it");
            loaded.state
        }
        None => SequencerState::default(),
    })
}
