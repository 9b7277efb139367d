//! Optional TLS (rustls on ring). When `[server.tls]` names a certificate chain and a key, the
//! daemon serves HTTPS: a background task accepts connections from the connection-capped
//! listener, runs each handshake concurrently (bounded by a timeout, so a slow client cannot
//! stall others), and hands finished streams to the HTTP server.

use crate::limited_listener::{LimitedListener, LimitedStream};
use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake that takes longer than this is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server.
const READY_QUEUE_CAPACITY: usize = 64;

/// `[server.tls]`: PEM files for the certificate chain and its private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Builds the rustls server configuration from PEM files.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", config.cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", config.cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", config.cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .with_context(|| format!("cannot read TLS private key {}", config.key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match or are unsupported")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A listener yielding TLS streams whose handshakes completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<LimitedStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(mut inner: LimitedListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        use axum::serve::Listener;
        let local_addr = inner.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE_CAPACITY);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, address) = inner.accept().await;
                let acceptor = acceptor.clone();
                let ready_tx = ready_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _server_gone = ready_tx.send((tls, address)).await;
                        }
                        Ok(Err(error)) => {
                            metrics::counter!("agentd_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%address, "TLS handshake failed: {error}");
                        }
                        Err(_) => {
                            metrics::counter!("agentd_tls_handshake_failures_total").increment(1);
                            tracing::debug!(%address, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local_addr,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<LimitedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
