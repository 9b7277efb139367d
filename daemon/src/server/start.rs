//! Phase 2: start what runs: the log writer, the archiver, the projector thread, the sequencer,
//! then record changed settings and start the background tasks (gauges, export runner,
//! scheduler). Returns the HTTP state and everything [`Running::stop`] needs.

use super::open::Opened;
use crate::http::{AppState, RequestLimits};
use crate::log::LogWriter;
use crate::sequencer::{
    AppendInternal, Queues, Sequencer, SequencerHandle, SequencerOptions, SequencerRole,
};
use crate::tasks::Tasks;
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The daemon while it runs: what [`Running::stop`] stops, in order.
pub struct Running {
    pub(super) tasks: Tasks,
    core: CoreTasks,
    writer: LogWriter,
    archiver: crate::archive::Archiver,
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
            grounds,
            archive_store,
            last_lsn,
            replayed,
            keeper,
            store,
            schedules,
            settings_events,
        } = self;
        let serving = super::Serving::new(
            &config,
            grounds.listener,
            grounds.tls,
            grounds.data_dir.clone(),
        );
        let writer = grounds.log.start_writer();
        let archiver = crate::archive::Archiver::start(
            archive_store,
            &config.storage,
            grounds.log_reader.clone(),
            writer.subscribe_durable(),
            grounds.paths.log.clone(),
        );
        let (core, core_tasks) = Core::start(
            &config,
            SequencerRole::Primary,
            &writer,
            &grounds.log_reader,
            replayed.queue,
            Projected {
                store: store.clone(),
                domain: grounds.domain.clone(),
                keeper,
            },
        )?;
        record_settings(&core.sequencer, settings_events).await?;

        let (tasks, exports, schedules) = start_tasks(
            &core,
            &writer,
            TaskInputs {
                metrics: grounds.metrics.clone(),
                data_dir: grounds.data_dir,
                domain: grounds.domain,
                export_settings: grounds.export_settings,
                schedules,
                ledger: replayed.ledger,
                last_lsn,
                last_record_ms: replayed.last_record_ms,
                log_reader: grounds.log_reader.clone(),
            },
        );
        let app_state = AppState {
            sequencer: core.sequencer,
            projections: store,
            applied: core.applied,
            writer: writer.clone(),
            log: grounds.log_reader,
            limits: RequestLimits::from_config(&config.server),
            metrics: grounds.metrics,
            domain: grounds.domain_api,
            authenticator: grounds.authenticator,
            exports,
            schedules,
            replica: None,
        };
        let running = Running {
            tasks,
            core: core_tasks,
            writer,
            archiver,
            lock_file: grounds.lock_file,
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
    writer: &LogWriter,
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
    spawn_gauges(&mut tasks, &core.sequencer, metrics, data_dir, &domain);
    let (exports, export_runner) = core.spawn_exports(
        writer,
        export_settings,
        (ledger, last_lsn),
        (domain, log_reader),
        None,
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

/// What every role starts over its replayed state, after the log's writer (the daemon's, or a
/// replica's followed log that never writes): the projector tailing the durable LSN, then the
/// sequencer in `role`. The daemon and `agentd replica` both start these here, so the two
/// cannot drift apart; what each adds (the archiver, the follower) is its own.
pub(super) struct Core {
    pub(super) applied: crate::projection::AppliedWatch,
    pub(super) sequencer: SequencerHandle,
}

/// What [`Core::start`] started that a stop must wait for.
pub(super) struct CoreTasks {
    sequencer_task: tokio::task::JoinHandle<()>,
    stop_projector: watch::Sender<bool>,
    projector: std::thread::JoinHandle<()>,
    /// Loading the domain projections behind the job API (after every start-up).
    domain_loader: Option<std::thread::JoinHandle<()>>,
}

/// The projections the projector applies to (see [`crate::projection::spawn_projector`]):
/// the job projection, the domain projections (loaded, or loaded by a thread of their own
/// when [`DomainProjections::is_loaded`] says not yet) and the keeper of the sequencer-state
/// snapshots, when there is one.
///
/// [`DomainProjections::is_loaded`]: crate::projection::domain::DomainProjections::is_loaded
pub(super) struct Projected {
    pub(super) store: Arc<crate::projection::ProjectionStore>,
    pub(super) domain: Arc<crate::projection::domain::DomainProjections>,
    pub(super) keeper: Option<Box<dyn crate::projection::Keeper>>,
}

impl Core {
    pub(super) fn start(
        config: &crate::config::Config,
        role: SequencerRole,
        writer: &LogWriter,
        log_reader: &crate::log::LogReader,
        queue: crate::queue::QueueState,
        projected: Projected,
    ) -> anyhow::Result<(Core, CoreTasks)> {
        let Projected {
            store,
            domain,
            keeper,
        } = projected;
        let (stop_projector, stop_rx) = watch::channel(false);
        let (applied, projector) = crate::projection::spawn_projector(
            store,
            (domain.clone(), keeper),
            log_reader.clone(),
            writer.subscribe_durable(),
            stop_rx.clone(),
            tokio::runtime::Handle::current(),
        )?;
        let domain_loader = (!domain.is_loaded())
            .then(|| domain.spawn_loader(log_reader.clone(), applied.clone(), stop_rx))
            .transpose()
            .context("cannot start the domain loader thread")?;
        let options = SequencerOptions {
            limits: config.queue.limits(),
            log: log_reader.clone(),
            lease_wait_ms_max: config.server.lease_wait_ms_max,
            lease_waiters_max: config.server.lease_waiters_max,
        };
        // `Sequencer::spawn` is `spawn_as(Primary, ..)`; it stays the primary's entry point
        // until the sequencer's owners fold it into `spawn_as`.
        let (sequencer, sequencer_task) = match role {
            SequencerRole::Primary => Sequencer::spawn(queue, writer.clone(), options),
            SequencerRole::Replica => Sequencer::spawn_as(role, queue, writer.clone(), options),
        };
        let tasks = CoreTasks {
            sequencer_task,
            stop_projector,
            projector,
            domain_loader,
        };
        Ok((Core { applied, sequencer }, tasks))
    }

    /// The export runner over the export ledger replayed up to `last_lsn`. It stops once every
    /// handle to it is gone, after the export in progress.
    pub(super) fn spawn_exports(
        &self,
        writer: &LogWriter,
        settings: crate::export::ExportSettings,
        (ledger, last_lsn): (crate::export::ledger::ExportLedger, agentd_schemas::Lsn),
        (domain, log): (
            Arc<crate::projection::domain::DomainProjections>,
            crate::log::LogReader,
        ),
        primary: Option<Arc<crate::export::primary_link::PrimaryLink>>,
    ) -> (
        crate::export::runner::ExportService,
        tokio::task::JoinHandle<()>,
    ) {
        crate::export::runner::ExportService::spawn(
            settings,
            crate::export::runner::LedgerState {
                ledger,
                applied: last_lsn,
            },
            crate::export::runner::RunnerParts {
                sequencer: self.sequencer.clone(),
                writer: writer.clone(),
                applied: self.applied.clone(),
                domain,
                log,
                primary,
            },
        )
    }
}

impl CoreTasks {
    /// Waits up to `grace` for the sequencer, which drains its in-flight work and stops once
    /// every handle to it is gone (the HTTP state and the tasks).
    pub(super) async fn drain_sequencer(&mut self, grace: Duration) {
        if tokio::time::timeout(grace, &mut self.sequencer_task)
            .await
            .is_err()
        {
            tracing::warn!("the sequencer did not drain within {grace:?}");
        }
    }

    /// Stops the projector after a final catch-up and a durable commit (and the domain loader,
    /// if it still runs, after its batch).
    pub(super) async fn stop_projector(self) {
        let _receiver_gone_is_fine = self.stop_projector.send(true);
        let (projector, loader) = (self.projector, self.domain_loader);
        let _finished = tokio::task::spawn_blocking(move || {
            let _ = projector.join();
            loader.map(std::thread::JoinHandle::join)
        })
        .await;
    }
}

/// The gauges every role publishes: queue depths and leases, data-dir space, and the domain
/// projections'.
pub(super) fn spawn_gauges(
    tasks: &mut Tasks,
    sequencer: &SequencerHandle,
    metrics: Option<PrometheusHandle>,
    data_dir: PathBuf,
    domain: &Arc<crate::projection::domain::DomainProjections>,
) {
    tasks.spawn_until_shutdown(update_gauges(sequencer.clone(), metrics, data_dir));
    tasks.spawn_until_shutdown(crate::projection::domain::gauges::publish_gauges(
        domain.clone(),
    ));
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
            mut core,
            writer,
            archiver,
            lock_file,
        } = self;
        if !tasks.shutdown(grace).await {
            tracing::warn!("background tasks did not finish within {grace:?}; aborted them");
        }
        // The HTTP state and the tasks held the sequencer's handles: it now drains and stops.
        core.drain_sequencer(grace).await;
        writer.shutdown().await;
        archiver.stop(grace).await;
        core.stop_projector().await;
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
async fn update_gauges(
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
