//! The life of a read replica (`agentd replica`, docs/storage.md "Read replicas"): the same
//! phases as the daemon's, with a follower in place of the writer. Open: lock the data
//! directory, bind, recover the local log and replay it into every projection (as any start).
//! Start: the local log becomes a followed log (its writer never writes), the projector tails
//! it, the sequencer runs in the replica role (adopts archived records, appends nothing, no
//! timers), and the follower copies the archive. Nothing of the replica's own is ever appended:
//! no settings record, no lease expiry, no schedule, no export record, no archiver.

use super::open::{recover, replay_everything};
use super::start::{spawn_gauges, Core, CoreTasks, Projected};
use super::Serving;
use crate::archive::{ArchiveStore, StorageUrl};
use crate::config::Config;
use crate::data_dir::{lock_data_dir, DataPaths, DATA_DIR_LOCK};
use crate::http::domain::DomainApi;
use crate::http::AppState;
use crate::projection::domain::DomainProjections;
use crate::replica::{follow, Follower, ReplicaStatus};
use crate::sequencer::SequencerRole;
use crate::tasks::Tasks;
use anyhow::Context;
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

/// The replica after its local log is recovered and replayed; nothing runs yet.
struct LocalCopy {
    lock_file: std::fs::File,
    listener: tokio::net::TcpListener,
    authenticator: Arc<crate::auth::Authenticator>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    data_dir: std::path::PathBuf,
    domain: Arc<DomainProjections>,
    domain_api: DomainApi,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    log_reader: crate::log::LogReader,
    projections: Arc<crate::projection::ProjectionStore>,
    export_settings: crate::export::ExportSettings,
}

/// Locks the data directory, binds, recovers the local log (creating an empty one the first
/// time) and replays it into every projection, as any start does.
async fn open_local(
    config: &Config,
) -> anyhow::Result<(LocalCopy, crate::log::Log, crate::snapshot::SequencerState)> {
    let authenticator = Arc::new(super::build_authenticator(config)?);
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let paths = DataPaths::new(&data_dir);
    let lock_file = lock_data_dir(&data_dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another agentd is already using the data directory {} (it holds {})",
            data_dir.display(),
            data_dir.join(DATA_DIR_LOCK).display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let export_settings = crate::export::ExportSettings::new(config, &data_dir, None)?;
    let domain = Arc::new(DomainProjections::new(&config.datasets)?);
    let domain_api = DomainApi::new(config, domain.clone())?;
    let metrics = super::metrics::install();
    let (log, _report) = recover(config, &paths).await?;
    let log_reader = log.reader();
    let (projections, replayed) =
        replay_everything(&paths, &log_reader, log.last_lsn(), domain.clone()).await?;
    let local = LocalCopy {
        lock_file,
        listener,
        authenticator,
        tls,
        data_dir,
        domain,
        domain_api,
        metrics,
        log_reader,
        projections: Arc::new(projections),
        export_settings,
    };
    Ok((local, log, replayed))
}

async fn start(
    config: Config,
    options: ReplicaOptions,
    store: ArchiveStore,
) -> anyhow::Result<(Serving, AppState, ReplicaRunning)> {
    let (local, log, replayed) = open_local(&config).await?;
    tracing::info!(last_lsn = %log.last_lsn(), url = %store.url, "replica opened its local log");
    let (followed, writer) = log.into_followed()?;
    let last_lsn = followed.last_lsn();
    let (core, core_tasks) = Core::start(
        &config,
        SequencerRole::Replica,
        &writer,
        &local.log_reader,
        replayed.queue,
        Projected {
            store: local.projections.clone(),
            domain: local.domain.clone(),
            keeper: None,
        },
    )?;
    let link = primary_link(&options)?;
    let runs_exports = link.is_some();
    let (exports, export_runner) = core.spawn_exports(
        &writer,
        local.export_settings.clone(),
        (replayed.ledger, last_lsn),
        (local.domain.clone(), local.log_reader.clone()),
        link,
    );
    let status = replica_status(&options, &store, runs_exports, &core);
    let follower = Follower {
        store,
        log: Some(followed),
        reader: local.log_reader.clone(),
        sequencer: core.sequencer.clone(),
        exports: exports.clone(),
        status: status.clone(),
        verified: false,
    };
    let mut tasks = Tasks::new();
    tasks.adopt(export_runner);
    spawn_gauges(
        &mut tasks,
        &core.sequencer,
        local.metrics.clone(),
        local.data_dir.clone(),
        &local.domain,
    );
    tasks.spawn_until_shutdown(crate::replica::publish_gauges(status.clone()));
    tasks.spawn(follow(follower, options.poll_interval, tasks.signal()));
    let running = ReplicaRunning {
        tasks,
        core: core_tasks,
        lock_file: local.lock_file,
    };
    let serving = Serving {
        listener: local.listener,
        tls: local.tls,
        connections_max: config.server.connections_max,
        connection_idle_timeout: super::connection_idle_timeout(&config),
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
        data_dir: local.data_dir,
    };
    let app_state = AppState {
        sequencer: core.sequencer,
        projections: local.projections,
        applied: core.applied,
        writer,
        log: local.log_reader,
        body_bytes_max: config.server.body_bytes_max,
        lease_wait_ms_max: config.server.lease_wait_ms_max,
        request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        requests_in_flight_max: config.server.requests_in_flight_max,
        metrics: local.metrics,
        domain: local.domain_api,
        authenticator: local.authenticator,
        exports,
        schedules: Arc::new(Vec::new()),
        replica: Some(status),
    };
    Ok((serving, app_state, running))
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
