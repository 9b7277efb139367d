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
    /// Starts every component over the replayed state. Returns the HTTP state to serve.
    pub async fn start(self) -> anyhow::Result<(AppState, Running)> {
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
            tls: _served_by_the_caller,
        } = self;
        let writer = log.start_writer();
        let archiver = crate::archive::Archiver::start(
            archive_store,
            &config.storage,
            log_reader.clone(),
            writer.subscribe_durable(),
            paths.log.clone(),
        );
        let (stop_projector, stop_rx) = watch::channel(false);
        let (applied, projector) = crate::projection::spawn_projector(
            store.clone(),
            domain.clone(),
            log_reader.clone(),
            writer.subscribe_durable(),
            stop_rx,
            tokio::runtime::Handle::current(),
        )?;
        let (sequencer, sequencer_task) = Sequencer::spawn(
            replayed.queue,
            writer.clone(),
            SequencerOptions {
                limits: config.queue.limits(),
                log: log_reader.clone(),
                lease_wait_ms_max: config.server.lease_wait_ms_max,
                lease_waiters_max: config.server.lease_waiters_max,
            },
        );
        record_settings(&sequencer, settings_events).await?;

        let tasks = Tasks::new();
        tasks.spawn_until_shutdown(update_gauges(sequencer.clone(), metrics.clone(), data_dir));
        tasks.spawn_until_shutdown(crate::projection::domain::gauges::publish_gauges(
            domain.clone(),
        ));
        let (exports, export_runner) = crate::export::runner::ExportService::spawn(
            export_settings,
            crate::export::runner::LedgerState {
                ledger: replayed.ledger,
                applied: last_lsn,
            },
            crate::export::runner::RunnerParts {
                sequencer: sequencer.clone(),
                writer: writer.clone(),
                applied: applied.clone(),
                domain,
                log: log_reader.clone(),
            },
        );
        // The runner stops once every handle to it is gone (the HTTP state and the scheduler),
        // after the export in progress.
        tasks.adopt(export_runner);
        let schedules = Arc::new(schedules);
        tasks.spawn(crate::schedule::run(
            schedules.clone(),
            exports.clone(),
            replayed.last_record_ms,
            tasks.signal(),
        ));
        let app_state = AppState {
            sequencer,
            projections: store,
            applied,
            writer: writer.clone(),
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
        };
        let running = Running {
            tasks,
            sequencer_task,
            writer,
            archiver,
            stop_projector,
            projector,
            lock_file,
        };
        Ok((app_state, running))
    }
}

impl Running {
    /// Stops everything after the HTTP server has drained, each step bounded by `grace`:
    /// background tasks (signal, then wait for their guards), the sequencer (it drains its
    /// in-flight appends once every handle is gone), the log writer, the archiver, and the
    /// projector (a final catch-up and a durable commit).
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
            tracing::warn!("background tasks did not finish within {grace:?}; leaving them");
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
