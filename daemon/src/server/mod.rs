//! The daemon's life in four phases, each in its own module:
//!
//! 1. [`open`] (`open.rs`): check the config, lock the data directory, bind the socket,
//!    recover the log, replay it into every projection. Nothing runs yet.
//! 2. [`Opened::start`] (`start.rs`): start the log writer, archiver, projector, sequencer and
//!    the background tasks.
//! 3. [`serve`]: accept HTTP on the socket bound in phase 1 until SIGTERM or Ctrl-C, then drain in-flight requests for up to
//!    `shutdown_grace_ms`.
//! 4. [`Running::stop`] (`start.rs`): a shutdown signal to the tasks and a completion guard
//!    (`tasks.rs`), then the sequencer drains, the log is made durable, the projector finishes,
//!    and the data directory is unlocked. Exit 0.

mod metrics;
mod open;
mod replica;
mod start;

pub use open::open;
pub use replica::{run_replica, ReplicaOptions};

use crate::config::Config;
use crate::http::{self, AppState};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Runs the daemon until SIGTERM or Ctrl-C. `ready` receives the bound address.
pub async fn run(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let (serving, app_state, running) = open(config).await?.start().await?;
    let grace = serving.grace;
    let served = serve(serving, app_state, ready).await;
    // Stop in order even when serving failed: the sequencer drains, the log is durable and the
    // projection complete before the error is reported.
    running.stop(grace).await;
    served?;
    eprintln!("agentd: stopped cleanly");
    Ok(())
}

/// What [`serve`] needs: the socket bound by [`open`] and the serving limits.
pub struct Serving {
    pub(super) listener: TcpListener,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(super) connections_max: usize,
    pub(super) connection_idle_timeout: Duration,
    /// How long in-flight requests, then each stopping step, may take after a stop signal.
    pub(super) grace: Duration,
    pub(super) data_dir: PathBuf,
}

impl Serving {
    /// The bound socket with the config's connection limits, as every role serves.
    pub(super) fn new(
        config: &Config,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        data_dir: PathBuf,
    ) -> Self {
        Serving {
            listener,
            tls,
            connections_max: config.server.connections_max,
            connection_idle_timeout: connection_idle_timeout(config),
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            data_dir,
        }
    }
}

/// Announces the address (stderr and `ready`) and serves `app_state` until SIGTERM or Ctrl-C,
/// then drains in-flight requests for up to the grace period.
pub async fn serve(
    serving: Serving,
    app_state: AppState,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let address = serving.listener.local_addr()?;
    tracing::info!(%address, data_dir = %serving.data_dir.display(), "agentd listening");
    let scheme = if serving.tls.is_some() {
        "https"
    } else {
        "http"
    };
    eprintln!(
        "agentd {} listening on {scheme}://{address} (data dir {})",
        env!("CARGO_PKG_VERSION"),
        serving.data_dir.display()
    );
    if let Some(ready) = ready {
        let _ignored_if_nobody_waits = ready.send(address);
    }
    let listener = crate::limited_listener::LimitedListener::new(
        serving.listener,
        serving.connections_max,
        serving.connection_idle_timeout,
    );
    let router = http::app(app_state);
    match serving.tls {
        Some(acceptor) => {
            let listener = crate::tls::TlsListener::new(listener, acceptor)?;
            serve_until_shutdown(listener, router, serving.grace).await
        }
        None => serve_until_shutdown(listener, router, serving.grace).await,
    }
}

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

/// Serves until SIGTERM/Ctrl-C, then lets in-flight requests finish for up to `grace`.
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
