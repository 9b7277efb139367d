//! Starting and stopping the daemon: recover the log, rebuild in-memory state, catch up the
//! projections, start the writer, projector, sequencer and HTTP server; on SIGTERM or Ctrl-C stop
//! accepting, drain in-flight requests, make the log durable and exit 0.

use crate::config::Config;
use crate::http::{self, AppState};
use crate::log::{self, LogOptions};
use crate::projection::domain::{self as domain_projection, DomainProjections};
use crate::projection::{self, OpenOutcome, ProjectionStore};
use crate::queue::QueueState;
use crate::sequencer::{AppendInternal, Queues, Sequencer, SequencerOptions};
use agentd_schemas::events::Event;
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    options
}

fn install_metrics() -> Option<PrometheusHandle> {
    let seconds_buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let size_buckets = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("agentd_log_group_commit_frames".into()),
                &size_buckets,
            )
        });
    match builder.and_then(|builder| builder.install_recorder()) {
        Ok(handle) => {
            crate::metrics_catalog::describe_and_register();
            Some(handle)
        }
        Err(error) => {
            // Only one recorder per process: a second daemon in one test process has none.
            tracing::warn!("metrics recorder not installed: {error}");
            None
        }
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C. `ready` receives the bound address.
pub async fn run(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let authenticator = Arc::new(build_authenticator(&config)?);
    // Load the certificate before anything else, so a bad path fails fast.
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    // A bad [storage] url stops the start here, before the log is touched.
    let archive_store = crate::archive::open_configured(&config.storage)?;
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let paths = DataPaths::new(&data_dir);
    // One daemon per data directory: a second writer would interleave frames.
    let Some(lock_file) = lock_data_dir(&data_dir)? else {
        anyhow::bail!(
            "another agentd is already using the data directory {} (it holds {})",
            data_dir.display(),
            data_dir.join(DATA_DIR_LOCK).display()
        );
    };
    let metrics = install_metrics();

    let mut options = log_options(&config, paths.log.clone());
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
    let last_lsn = log.last_lsn();
    // Every reader of the running daemon shares this one's offset index (filled by recovery,
    // kept current by the writer), so no read scans a segment to find where it starts.
    let log_reader = log.reader();

    // Exports and schedules: checked before anything starts, so a bad [[schedules]] entry
    // fails fast.
    let schedules = crate::schedule::parse_all(&config.schedules)?;
    let training_wanted = config
        .training_settings()
        .map_err(|message| anyhow::anyhow!(message))?;
    let export_settings = crate::export::ExportSettings::new(&config, &data_dir, None)?;
    let domain = Arc::new(DomainProjections::new(&config.datasets)?);
    let domain_api = http::domain::DomainApi::new(&config, domain.clone())?;
    let replay_reader = log_reader.clone();
    let replayed_domain = domain.clone();
    let (state, ledger, last_record_ms) = tokio::task::spawn_blocking(move || {
        let mut state = QueueState::new();
        let mut ledger = crate::export::ledger::ExportLedger::default();
        let mut last_record_ms = None;
        domain_projection::replay(&replay_reader, last_lsn, &replayed_domain, |lsn, record| {
            state.apply(lsn, record);
            ledger.apply(lsn, record);
            last_record_ms = Some(record.ts_ms);
        })
        .map(|()| (state, ledger, last_record_ms))
    })
    .await?
    .context("cannot replay the log")?;
    // The processed splits follow the [datasets] settings recorded in the log, so that any
    // replay decides the same splits whatever config it runs with; a config that would change
    // them under existing records is refused here, before anything is served.
    let datasets_settings = domain
        .settings_to_record(&config.datasets)
        .map_err(|message| anyhow::anyhow!(message))?;
    // The reward combination, system prompt and SFT threshold are recorded when they change, so
    // exports (which use those in force at their `to`) stay a function of the log.
    let training_settings = domain
        .training_to_record(&training_wanted)
        .map_err(|message| anyhow::anyhow!(message))?;

    let projections_dir = paths.projections.clone();
    let catch_up_reader = log_reader.clone();
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<ProjectionStore> {
        let (mut store, mut outcome) = ProjectionStore::open(&projections_dir)?;
        if store.applied_lsn()? > last_lsn {
            // The projection is ahead of the log (the log was replaced): it cannot be trusted.
            drop(store);
            std::fs::remove_file(projections_dir.join("jobs.redb"))?;
            (store, _) = ProjectionStore::open(&projections_dir)?;
            outcome = OpenOutcome::Recreated {
                reason: "projection was ahead of the log".into(),
            };
        }
        if let OpenOutcome::Recreated { reason } = &outcome {
            tracing::warn!("rebuilding the job projection from the log: {reason}");
        }
        store.catch_up(&catch_up_reader, last_lsn, |_| {})?;
        Ok(store)
    })
    .await??;
    let store = Arc::new(store);
    tracing::info!(%last_lsn, segments = report.segments, ms = started.elapsed().as_millis() as u64, "recovered");

    let writer = log.start_writer();
    let archiver = crate::archive::Archiver::start(
        archive_store,
        &config.storage,
        log_reader.clone(),
        writer.subscribe_durable(),
        paths.log.clone(),
    );
    let (stop_projector, stop_rx) = watch::channel(false);
    let (applied, projector) = projection::spawn_projector(
        store.clone(),
        domain.clone(),
        log_reader.clone(),
        writer.subscribe_durable(),
        stop_rx,
        tokio::runtime::Handle::current(),
    )?;
    let (sequencer, sequencer_task) = Sequencer::spawn(
        state,
        writer.clone(),
        SequencerOptions {
            limits: config.queue.limits(),
            log: log_reader.clone(),
            lease_wait_ms_max: config.server.lease_wait_ms_max,
            lease_waiters_max: config.server.lease_waiters_max,
        },
    );

    // Settings that changed since the last start, in one record (one LSN).
    let settings_events: Vec<Event> = datasets_settings
        .map(Event::DatasetSettingsRecorded)
        .into_iter()
        .chain(training_settings.map(Event::TrainingSettingsRecorded))
        .collect();
    if !settings_events.is_empty() {
        sequencer
            .call(
                AppendInternal {
                    events: settings_events,
                },
                Some("agentd".to_owned()),
            )
            .await
            .context(
                "cannot record the [datasets], [rewards] and [training] settings in the log",
            )?;
    }
    let gauges = tokio::spawn(update_gauges(
        sequencer.clone(),
        metrics.clone(),
        data_dir.clone(),
    ));
    let (exports, export_runner) = crate::export::runner::ExportService::spawn(
        export_settings,
        crate::export::runner::LedgerState {
            ledger,
            applied: last_lsn,
        },
        crate::export::runner::RunnerParts {
            sequencer: sequencer.clone(),
            writer: writer.clone(),
            applied: applied.clone(),
            domain: domain.clone(),
            log: log_reader.clone(),
        },
    );
    let (stop_scheduler, scheduler_stop_rx) = watch::channel(false);
    let schedules = Arc::new(schedules);
    let scheduler = tokio::spawn(crate::schedule::run(
        schedules.clone(),
        exports.clone(),
        last_record_ms,
        scheduler_stop_rx,
    ));
    let domain_gauges = tokio::spawn(domain_projection::gauges::publish_gauges(domain));
    let app_state = AppState {
        sequencer,
        projections: store.clone(),
        applied,
        writer: writer.clone(),
        log: log_reader.clone(),
        body_bytes_max: config.server.body_bytes_max,
        lease_wait_ms_max: config.server.lease_wait_ms_max,
        request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        requests_in_flight_max: config.server.requests_in_flight_max,
        metrics,
        domain: domain_api,
        authenticator,
        exports,
        schedules,
    };
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %data_dir.display(), "agentd listening");
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "agentd {} listening on {scheme}://{address} (data dir {})",
        env!("CARGO_PKG_VERSION"),
        data_dir.display()
    );
    if let Some(ready) = ready {
        let _ignored_if_nobody_waits = ready.send(address);
    }
    let listener = crate::limited_listener::LimitedListener::new(
        listener,
        config.server.connections_max,
        connection_idle_timeout(&config),
    );
    let router = http::app(app_state);
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    match tls {
        Some(acceptor) => {
            serve_until_shutdown(
                crate::tls::TlsListener::new(listener, acceptor)?,
                router,
                grace,
            )
            .await?
        }
        None => serve_until_shutdown(listener, router, grace).await?,
    }
    gauges.abort();
    domain_gauges.abort();
    // The scheduler and the export runner hold sequencer handles: stop them so the sequencer
    // sees its channel close. An export cut short leaves only temp files and no event; the
    // next run of it (or the resumed firing) writes it again.
    let _ignored = stop_scheduler.send(true);
    scheduler.abort();
    export_runner.abort();
    // Handlers are gone: the sequencer drains its in-flight appends and stops.
    let _sequencer_finished = tokio::time::timeout(grace, sequencer_task).await;
    writer.shutdown().await;
    archiver.stop(grace).await;
    let _ignored = stop_projector.send(true);
    let _projector_finished = tokio::task::spawn_blocking(move || projector.join()).await;
    eprintln!("agentd: stopped cleanly");
    drop(lock_file);
    Ok(())
}

/// Serves until SIGTERM/Ctrl-C, then lets in-flight requests finish for up to `grace`.
/// How long a connection may go without a byte either way before it is closed: twice the
/// longer of the request timeout and the long-poll cap (60 s by default), so a connection that
/// idle cannot have a request in flight.
pub fn connection_idle_timeout(config: &Config) -> Duration {
    let longest_request_ms = config
        .server
        .request_timeout_ms
        .max(config.server.lease_wait_ms_max);
    Duration::from_millis(longest_request_ms.saturating_mul(2).max(1000))
}

async fn serve_until_shutdown<L>(
    listener: L,
    router: axum::Router,
    grace: Duration,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (drain_tx, drain_rx) = watch::channel(false);
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        eprintln!(
            "agentd: shutting down (draining requests for up to {} ms)",
            grace.as_millis()
        );
        let _ignored = drain_tx.send(true);
    });
    let mut drain_started = drain_rx.clone();
    tokio::select! {
        result = server => result.context("HTTP server failed")?,
        _ = async { let _ = drain_started.wait_for(|started| *started).await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; abandoning in-flight requests");
        }
    }
    Ok(())
}

/// Builds the token checker from `[auth]`, refusing an open address without tokens.
pub fn build_authenticator(config: &Config) -> anyhow::Result<crate::auth::Authenticator> {
    let mut entries = config.auth.tokens.clone();
    if let Some(path) = &config.auth.tokens_file {
        entries.extend(crate::auth::TokenStore::load_file(path)?);
    }
    let store = crate::auth::TokenStore::new(entries)?;
    let count = store.len();
    let authenticator = crate::auth::Authenticator::new(
        store,
        config.server.listen,
        config.server.insecure_no_auth,
    )?;
    if authenticator.enabled() {
        tracing::info!(tokens = count, "bearer-token authentication enabled");
    } else if !config.server.listen.ip().is_loopback() {
        tracing::warn!("authentication is OFF on a non-loopback address (--insecure-no-auth)");
    }
    Ok(authenticator)
}

/// Publishes queue depth, active lease and data-dir space gauges every few seconds.
async fn update_gauges(
    sequencer: crate::sequencer::SequencerHandle,
    metrics: Option<PrometheusHandle>,
    data_dir: PathBuf,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        if let Some(handle) = &metrics {
            handle.run_upkeep();
        }
        crate::data_dir_space::publish(&data_dir).await;
        let Ok(queues) = sequencer.call(Queues, None).await else {
            return;
        };
        let mut leased_total = 0;
        for queue in queues {
            for (state, count) in &queue.depth {
                metrics::gauge!("agentd_queue_depth", "queue" => queue.queue.clone(), "state" => state.clone()).set(*count as f64);
            }
            leased_total += queue.depth.get("leased").copied().unwrap_or(0);
            metrics::gauge!("agentd_queue_paused", "queue" => queue.queue.clone())
                .set(if queue.paused { 1.0 } else { 0.0 });
        }
        metrics::gauge!("agentd_leases_active").set(leased_total as f64);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
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
