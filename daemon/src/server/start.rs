//! Phase 2: start what runs: the log writer, the archiver, the projector thread, the sequencer,
//! then record changed settings and start the background tasks (gauges, export runner,
//! scheduler). Returns the HTTP state and everything [`Running::stop`] needs.

use super::open::Opened;
use super::tasks::Tasks;
use crate::http::AppState;
use crate::log::LogWriter;
use crate::sequencer::{AppendInternal, Queues, Sequencer, SequencerHandle, SequencerOptions};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The daemon while it runs: what [`Running::stop`] stops, in order.
pub struct Running {
    pub(super) tasks: Tasks,
    sequencer_task: tokio::task::JoinHandle<()>,
    writer: LogWriter,
    archiver: crate::archive::Archiver,
    stop_projector: watch::Sender<bool>,
    projector: std::thread::JoinHandle<()>,
    /// Released last, after the log and the projection are durable.
    lock_file: std::fs::File,
}

impl Opened {
    /// Starts every component over the replayed state. Returns what [`super::serve`] needs,
    /// the HTTP state to serve, and what [`Running::stop`] stops.
    pub async fn start(self) -> anyhow::Result<(super::Serving, AppState, Running)> {
        crate::replica::publish_on_primary();
        let Opened {
            config,
            data_dir,
            paths,
            lock_file,
            authenticator,
            archive_store,
            metrics,
            log,
            log_reader,
            last_lsn,
            replayed,
            domain,
            domain_api,
            store,
            schedules,
            export_settings,
            settings_events,
            tls,
            listener,
        } = self;
        let serving = super::Serving {
            listener,
            tls,
            connections_max: config.server.connections_max,
            connection_idle_timeout: super::connection_idle_timeout(&config),
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            data_dir: data_dir.clone(),
        };
        let core = Core::start(
            &config,
            log,
            &log_reader,
            archive_store,
            paths.log.clone(),
            replayed.queue,
            (store.clone(), domain.clone()),
        )?;
        record_settings(&core.sequencer, settings_events).await?;

        let (tasks, exports, schedules) = start_tasks(
            &core,
            TaskInputs {
                metrics: metrics.clone(),
                data_dir,
                domain,
                export_settings,
                schedules,
                ledger: replayed.ledger,
                last_lsn,
                last_record_ms: replayed.last_record_ms,
                log_reader: log_reader.clone(),
            },
        );
        let app_state = AppState {
            sequencer: core.sequencer,
            projections: store,
            applied: core.applied,
            writer: core.writer.clone(),
            log: log_reader,
            body_bytes_max: config.server.body_bytes_max,
            lease_wait_ms_max: config.server.lease_wait_ms_max,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            requests_in_flight_max: config.server.requests_in_flight_max,
            metrics,
            domain: domain_api,
            authenticator,
            exports,
            schedules,
            replica: None,
        };
        let running = Running {
            tasks,
            sequencer_task: core.sequencer_task,
            writer: core.writer,
            archiver: core.archiver,
            stop_projector: core.stop_projector,
            projector: core.projector,
            lock_file,
        };
        Ok((serving, app_state, running))
    }
}

/// What the background tasks are started with, each moved into the one that owns it.
struct TaskInputs {
    metrics: Option<PrometheusHandle>,
    data_dir: PathBuf,
    domain: Arc<crate::projection::domain::DomainProjections>,
    export_settings: crate::export::ExportSettings,
    schedules: Vec<crate::schedule::Schedule>,
    /// The export ledger replayed up to `last_lsn`.
    ledger: crate::export::ledger::ExportLedger,
    last_lsn: agentd_schemas::Lsn,
    /// The time of the log's last record: the scheduler judges missed firings by it.
    last_record_ms: Option<u64>,
    log_reader: crate::log::LogReader,
}

/// Starts the background tasks: the gauges, the export runner and the scheduler.
fn start_tasks(
    core: &Core,
    inputs: TaskInputs,
) -> (
    Tasks,
    crate::export::runner::ExportService,
    Arc<Vec<crate::schedule::Schedule>>,
) {
    let TaskInputs {
        metrics,
        data_dir,
        domain,
        export_settings,
        schedules,
        ledger,
        last_lsn,
        last_record_ms,
        log_reader,
    } = inputs;
    let mut tasks = Tasks::new();
    tasks.spawn_until_shutdown(update_gauges(core.sequencer.clone(), metrics, data_dir));
    tasks.spawn_until_shutdown(crate::projection::domain::gauges::publish_gauges(
        domain.clone(),
    ));
    let (exports, export_runner) = crate::export::runner::ExportService::spawn(
        export_settings,
        crate::export::runner::LedgerState {
            ledger,
            applied: last_lsn,
        },
        crate::export::runner::RunnerParts {
            sequencer: core.sequencer.clone(),
            writer: core.writer.clone(),
            applied: core.applied.clone(),
            domain,
            log: log_reader,
        },
    );
    // The runner stops once every handle to it is gone (the HTTP state and the scheduler),
    // after the export in progress.
    tasks.adopt(export_runner);
    let schedules = Arc::new(schedules);
    tasks.spawn(crate::schedule::run(
        schedules.clone(),
        exports.clone(),
        last_record_ms,
        tasks.signal(),
    ));
    (tasks, exports, schedules)
}

/// The write path and its followers: the log writer, the archiver and the projector (both
/// tail the durable LSN), and the sequencer over the replayed queue state.
struct Core {
    writer: LogWriter,
    archiver: crate::archive::Archiver,
    stop_projector: watch::Sender<bool>,
    projector: std::thread::JoinHandle<()>,
    applied: crate::projection::AppliedWatch,
    sequencer: SequencerHandle,
    sequencer_task: tokio::task::JoinHandle<()>,
}

impl Core {
    fn start(
        config: &crate::config::Config,
        log: crate::log::Log,
        log_reader: &crate::log::LogReader,
        archive_store: Option<crate::archive::ArchiveStore>,
        log_dir: PathBuf,
        queue: crate::queue::QueueState,
        (store, domain): (
            Arc<crate::projection::ProjectionStore>,
            Arc<crate::projection::domain::DomainProjections>,
        ),
    ) -> anyhow::Result<Core> {
        let writer = log.start_writer();
        let archiver = crate::archive::Archiver::start(
            archive_store,
            &config.storage,
            log_reader.clone(),
            writer.subscribe_durable(),
            log_dir,
        );
        let (stop_projector, stop_rx) = watch::channel(false);
        let (applied, projector) = crate::projection::spawn_projector(
            store,
            domain,
            log_reader.clone(),
            writer.subscribe_durable(),
            stop_rx,
            tokio::runtime::Handle::current(),
        )?;
        let (sequencer, sequencer_task) = Sequencer::spawn(
            queue,
            writer.clone(),
            SequencerOptions {
                limits: config.queue.limits(),
                log: log_reader.clone(),
                lease_wait_ms_max: config.server.lease_wait_ms_max,
                lease_waiters_max: config.server.lease_waiters_max,
            },
        );
        Ok(Core {
            writer,
            archiver,
            stop_projector,
            projector,
            applied,
            sequencer,
            sequencer_task,
        })
    }
}

impl Running {
    /// Stops everything after the HTTP server has drained: background tasks (signal, wait up
    /// to `grace` for their guards, then abort the rest), the sequencer (it drains its
    /// in-flight appends once every handle is gone; up to `grace`), the log writer (its last
    /// batch made durable), the archiver (a last pass, up to `grace`), and the projector (a
    /// final catch-up and a durable commit).
    pub async fn stop(self, grace: Duration) {
        let Running {
            tasks,
            sequencer_task,
            writer,
            archiver,
            stop_projector,
            projector,
            lock_file,
        } = self;
        if !tasks.shutdown(grace).await {
            tracing::warn!("background tasks did not finish within {grace:?}; aborted them");
        }
        // The HTTP state and the tasks held the sequencer's handles: it now drains and stops.
        if tokio::time::timeout(grace, sequencer_task).await.is_err() {
            tracing::warn!("the sequencer did not drain within {grace:?}");
        }
        writer.shutdown().await;
        archiver.stop(grace).await;
        let _receiver_gone_is_fine = stop_projector.send(true);
        let _projector_finished = tokio::task::spawn_blocking(move || projector.join()).await;
        drop(lock_file);
    }
}

/// Settings that changed since the last start, in one record (one LSN).
async fn record_settings(
    sequencer: &SequencerHandle,
    events: Vec<agentd_schemas::events::Event>,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sequencer
        .call(AppendInternal { events }, Some("agentd".to_owned()))
        .await
        .context("cannot record the [datasets], [rewards] and [training] settings in the log")?;
    Ok(())
}

/// How often the queue and data-dir gauges are published.
const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// Publishes queue depth, active lease and data-dir space gauges every [`GAUGE_INTERVAL`].
pub(super) async fn update_gauges(
    sequencer: SequencerHandle,
    metrics: Option<PrometheusHandle>,
    data_dir: PathBuf,
) {
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tick.tick().await;
        if let Some(handle) = &metrics {
            handle.run_upkeep();
        }
        crate::data_dir::space::publish(&data_dir).await;
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
