//! A read replica's line to its primary (`agentd replica --primary URL`): the replica runs an
//! export or a dataset build over its copy of the log, copies the files to the storage URL it
//! shares with the primary, then asks the primary to record the run with
//! `POST /v1/exports/records`, passing on the caller's `Authorization` header. The primary
//! checks the run against its own log and the store (`remote_record`) and appends the record;
//! the replica lists the run once it followed the archive past it.

use agentd_schemas::api::ErrorBody;
use agentd_schemas::export_api::{RecordRunRequest, RecordRunResponse};
use agentd_schemas::ErrorCode;
use std::path::Path;
use std::time::Duration;

/// How long the primary may take to check and record a run (it reads the manifest and asks
/// the store for each file's size).
const RECORD_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a replica's run was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// The copy to object storage failed (the runner logged why): nothing was asked.
    #[error("the files of {0} could not be copied to the storage URL, so the primary was not asked to record them; run it again (the copy is retried then)")]
    NotCopied(String),
    /// No answer, or an answer that is not agentd's.
    #[error("cannot reach the primary at {url} to record the run: {detail}")]
    Unreachable { url: String, detail: String },
    /// The primary answered with an error: its code and message.
    #[error("the primary at {url} refused to record the run: {message}")]
    Refused {
        url: String,
        code: ErrorCode,
        message: String,
    },
}

/// The primary's base URL and a client for it.
#[derive(Debug)]
pub struct PrimaryLink {
    base: String,
    client: reqwest::Client,
}

impl PrimaryLink {
    /// `primary` is `http://` or `https://` host and port; `ca_cert` a PEM file of the CA that
    /// signed the primary's certificate, when it is not in the system's roots.
    pub fn new(primary: &str, ca_cert: Option<&Path>) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(primary)
            .map_err(|error| anyhow::anyhow!("--primary {primary:?} is not a URL: {error}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--primary {primary:?} must be an http:// or https:// URL of the primary agentd to record exports and builds run on this replica");
        }
        let mut builder = reqwest::Client::builder().timeout(RECORD_TIMEOUT);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|error| {
                anyhow::anyhow!("cannot read --primary-ca-cert {}: {error}", path.display())
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
                anyhow::anyhow!("--primary-ca-cert {}: {error}", path.display())
            })?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the client for --primary: {error}"))?;
        Ok(PrimaryLink {
            base: primary.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// Asks the primary to record a run; `authorization` is the caller's header, passed on.
    pub async fn record(
        &self,
        request: &RecordRunRequest,
        authorization: Option<&str>,
    ) -> Result<RecordRunResponse, PrimaryError> {
        let url = format!("{}/v1/exports/records", self.base);
        let unreachable = |detail: String| PrimaryError::Unreachable {
            url: self.base.clone(),
            detail,
        };
        let body = serde_json::to_vec(request).map_err(|error| unreachable(error.to_string()))?;
        let mut call = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = authorization {
            call = call.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = call
            .send()
            .await
            .map_err(|error| unreachable(causes(&error)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| unreachable(causes(&error)))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| {
                unreachable(format!("a {status} answer that is not agentd's: {error}"))
            });
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| {
            unreachable(format!(
                "{status} with a body that is not agentd's error: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        let code = ErrorCode::parse(&body.code).unwrap_or(ErrorCode::Internal);
        Err(PrimaryError::Refused {
            url: self.base.clone(),
            code,
            message: body.message,
        })
    }
}

/// An error and its sources on one line (reqwest's own message hides the cause: "error sending
/// request" without "connection refused").
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
