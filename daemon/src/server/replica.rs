//! The life of a read replica (`agentd replica`, docs/storage.md "Read replicas"): the same
//! phases as the daemon's, with a follower in place of the writer. Open, as the daemon does
//! (`open.rs`: `lay_grounds`, `Grounds::replay_for_serving`): lock the data directory, bind,
//! recover the local log, the sequencer state from the replica's own newest snapshot and the
//! records after it; the domain projections load behind.
//! Start: the local log becomes a followed log (its writer never writes), the projector tails
//! it, the sequencer runs in the replica role (adopts archived records, appends nothing, no
//! timers), and the follower copies the archive. Nothing of the replica's own is ever appended:
//! no settings record, no lease expiry, no schedule, no export record, no archiver.

use super::open::{lay_grounds, ServingState};
use super::start::{spawn_gauges, Core, CoreTasks, Projected};
use super::Serving;
use crate::archive::{ArchiveStore, StorageUrl};
use crate::config::Config;
use crate::http::{AppState, RequestLimits};
use crate::replica::{follow, Follower, ReplicaStatus};
use crate::sequencer::SequencerRole;
use crate::tasks::Tasks;
use std::sync::Arc;
use std::time::Duration;

/// What `agentd replica` follows and how.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The primary's storage URL (`--from`).
    pub from: String,
    /// Named in the 405 answers to writes (`--primary`); the archive URL when absent. An
    /// http(s) URL also lets exports and builds run here, recorded by the primary.
    pub primary: Option<String>,
    /// The CA of the primary's certificate (`--primary-ca-cert`), if not in the system roots.
    pub primary_ca_cert: Option<std::path::PathBuf>,
    /// How often the archive's manifest is read (`--poll-interval-ms`).
    pub poll_interval: Duration,
}

/// Runs a read replica until SIGTERM or Ctrl-C. `ready` receives the bound address.
pub async fn run_replica(
    mut config: Config,
    options: ReplicaOptions,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    // The exports the primary copied to the archive are listed with their URLs under it, and
    // an export or build run here (with an http(s) --primary) is copied there for the primary
    // to record. A replica archives no log and fires no schedule.
    config.storage.url = Some(options.from.clone());
    config.schedules.clear();
    let store = StorageUrl::parse(&options.from)?.open()?;
    let (serving, app_state, running) = start(config, options, store).await?;
    let grace = serving.grace;
    let served = super::serve(serving, app_state, ready).await;
    running.stop(grace).await;
    served?;
    eprintln!("agentd replica: stopped cleanly");
    Ok(())
}

/// The replica while it runs: what [`ReplicaRunning::stop`] stops, in order.
struct ReplicaRunning {
    tasks: Tasks,
    core: CoreTasks,
    lock_file: std::fs::File,
}

async fn start(
    config: Config,
    options: ReplicaOptions,
    store: ArchiveStore,
) -> anyhow::Result<(Serving, AppState, ReplicaRunning)> {
    let (grounds, ()) = lay_grounds(&config, || Ok(())).await?;
    let ServingState {
        store: projections,
        replayed,
        keeper,
    } = grounds.replay_for_serving(&config).await?;
    let projections = Arc::new(projections);
    tracing::info!(last_lsn = %grounds.log.last_lsn(), url = %store.url, "replica opened its local log");
    let (followed, writer) = grounds.log.into_followed()?;
    let last_lsn = followed.last_lsn();
    let (core, core_tasks) = Core::start(
        &config,
        SequencerRole::Replica,
        &writer,
        &grounds.log_reader,
        replayed.queue,
        Projected {
            store: projections.clone(),
            domain: grounds.domain.clone(),
            keeper,
        },
    )?;
    let link = primary_link(&options)?;
    let runs_exports = link.is_some();
    let (exports, export_runner) = core.spawn_exports(
        &writer,
        grounds.export_settings,
        (replayed.ledger, last_lsn),
        (grounds.domain.clone(), grounds.log_reader.clone()),
        link,
    );
    let status = replica_status(&options, &store, runs_exports, &core);
    let follower = Follower {
        store,
        log: Some(followed),
        reader: grounds.log_reader.clone(),
        sequencer: core.sequencer.clone(),
        exports: exports.clone(),
        status: status.clone(),
        verified: false,
    };
    let tasks = replica_tasks(
        &core,
        (follower, options.poll_interval),
        export_runner,
        (
            grounds.metrics.clone(),
            grounds.data_dir.clone(),
            &grounds.domain,
        ),
    );
    let running = ReplicaRunning {
        tasks,
        core: core_tasks,
        lock_file: grounds.lock_file,
    };
    let serving = Serving::new(&config, grounds.listener, grounds.tls, grounds.data_dir);
    let app_state = AppState {
        sequencer: core.sequencer,
        projections,
        applied: core.applied,
        writer,
        log: grounds.log_reader,
        limits: RequestLimits::from_config(&config.server),
        metrics: grounds.metrics,
        domain: grounds.domain_api,
        authenticator: grounds.authenticator,
        exports,
        schedules: Arc::new(Vec::new()),
        replica: Some(status),
    };
    Ok((serving, app_state, running))
}

/// The replica's background tasks: the export runner, the gauges (its own and the daemon's)
/// and the follower, polling the archive every `poll_interval`.
fn replica_tasks(
    core: &Core,
    (follower, poll_interval): (Follower, Duration),
    export_runner: tokio::task::JoinHandle<()>,
    (metrics, data_dir, domain): (
        Option<metrics_exporter_prometheus::PrometheusHandle>,
        std::path::PathBuf,
        &Arc<crate::projection::domain::DomainProjections>,
    ),
) -> Tasks {
    let mut tasks = Tasks::new();
    tasks.adopt(export_runner);
    spawn_gauges(&mut tasks, &core.sequencer, metrics, data_dir, domain);
    tasks.spawn_until_shutdown(crate::replica::publish_gauges(follower.status.clone()));
    tasks.spawn(follow(follower, poll_interval, tasks.signal()));
    tasks
}

/// What `/healthz` and the 405 answers tell of the replica: the primary named is `--primary`,
/// else the archive URL.
fn replica_status(
    options: &ReplicaOptions,
    store: &ArchiveStore,
    runs_exports: bool,
    core: &Core,
) -> Arc<ReplicaStatus> {
    let primary = options.primary.clone().unwrap_or_else(|| store.url.clone());
    Arc::new(ReplicaStatus::new(
        store.url.clone(),
        (primary, runs_exports),
        core.applied.clone(),
        crate::clock::now_ms(),
    ))
}

/// The line to the primary that records this replica's exports and builds: only with an
/// http(s) `--primary` (any other value is just named in the 405 answers).
fn primary_link(
    options: &ReplicaOptions,
) -> anyhow::Result<Option<Arc<crate::export::primary_link::PrimaryLink>>> {
    let Some(primary) = &options.primary else {
        return Ok(None);
    };
    if !(primary.starts_with("http://") || primary.starts_with("https://")) {
        return Ok(None);
    }
    let link =
        crate::export::primary_link::PrimaryLink::new(primary, options.primary_ca_cert.as_deref())?;
    Ok(Some(Arc::new(link)))
}

impl ReplicaRunning {
    /// Stops after the HTTP server drained: the follower finishes its poll, the sequencer
    /// stops once every handle is gone, the projector makes a last durable commit, and the
    /// data directory is unlocked. The local log needs no flush: every copied byte was synced
    /// before it was published.
    async fn stop(self, grace: Duration) {
        let ReplicaRunning {
            tasks,
            mut core,
            lock_file,
        } = self;
        if !tasks.shutdown(grace).await {
            tracing::warn!("replica tasks did not finish within {grace:?}; aborted them");
        }
        core.drain_sequencer(grace).await;
        core.stop_projector().await;
        drop(lock_file);
    }
}
