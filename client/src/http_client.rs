//! A typed client for agentd's HTTP API. Every method maps to one route; errors keep the
//! daemon's stable `code` so callers can branch on it (`lease_lost`, `disk_full`, ...).

use agentd_schemas::api::{
    BatchSubmitRequest, BatchSubmitResponse, CompleteRequest, ErrorBody, EventsResponse,
    FailRequest, HealthResponse, HeartbeatResponse, JobListResponse, JobTransitionResponse,
    JobView, LeaseRequest, LeaseResponse, QueueChangeResponse, QueueListResponse, SubmitJobRequest,
    SubmitJobResponse,
};
use agentd_schemas::domain_api::SettingsResponse;
use agentd_schemas::{JobId, LeaseId, Lsn};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// Default daemon address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";
/// Time allowed for an ordinary request; long-polls add their wait to it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole file download (an export shard is at most 256 MiB by default).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error body.
    #[error("{message} (HTTP {status}, code {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer came back: connection refused, TLS failure, timeout, a non-HTTP answer.
    ///
    /// The message already lists every distinct cause of `error` once, so `error` is not
    /// exposed as the `source()` too: `{:#}` (anyhow) would print the whole chain twice.
    #[error("cannot reach agentd at {url}: {}", distinct_causes(.error))]
    Transport {
        /// The request URL (with its query).
        url: String,
        /// reqwest's error, its URL removed (it is in `url`).
        error: reqwest::Error,
        /// Which certificates the client trusts, for the hint on a certificate failure.
        trust: TrustRoots,
    },
    /// The client could not be set up (an unreadable CA bundle, a TLS backend failure).
    #[error("{0}")]
    Setup(String),
    #[error("unexpected answer from agentd: {0}")]
    Decode(String),
}

/// Which certificate authorities a `Client` trusts for https URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustRoots {
    /// The platform's trust store.
    Platform,
    /// Only the CA bundle given to `Client::with_ca_cert` (`--ca-cert`).
    CaCert,
}

impl ClientError {
    /// The daemon's error code, if the daemon answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The daemon's error code as the shared enum; `None` without an answer, or for a code this
    /// build does not know (a newer daemon's).
    pub fn error_code(&self) -> Option<agentd_schemas::ErrorCode> {
        self.code().and_then(agentd_schemas::ErrorCode::parse)
    }

    /// True for transport failures and answers that say "try again".
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => *status == 503 || *status == 429 || *status == 507,
            ClientError::Setup(_) | ClientError::Decode(_) => false,
        }
    }

    /// What to try, for the failures with a usual cause: nothing listening at the URL, a
    /// certificate that is not trusted, plain HTTP against a TLS port and the reverse. Phrased
    /// for agentctl: it names its options (`--ca-cert`, `--url`).
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Transport { url, error, trust } => transport_hint(url, error, *trust),
            _ => None,
        }
    }

    fn transport(url: String, error: reqwest::Error, trust: TrustRoots) -> ClientError {
        // reqwest's URL is the one requested, query included; prefer it.
        let url = error.url().map_or(url, |full| full.to_string());
        ClientError::Transport {
            url,
            error: error.without_url(),
            trust,
        }
    }
}

/// `error` and its sources joined with ": ", each text once: layers often repeat the text of
/// the layer below (or above), which made messages say the same thing twice.
pub fn distinct_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        let text = text.trim();
        if !text.is_empty() && !kept.iter().any(|earlier| earlier.contains(text)) {
            kept.push(text.to_string());
        }
        cause = current.source();
    }
    kept.join(": ")
}

fn transport_hint(url: &str, error: &reqwest::Error, trust: TrustRoots) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok();
    let origin = parsed.as_ref().map_or_else(
        || url.to_string(),
        |parsed| parsed.origin().ascii_serialization(),
    );
    let with_scheme = |scheme: &str| {
        origin.split_once("://").map_or_else(
            || format!("{scheme}://"),
            |(_, rest)| format!("{scheme}://{rest}"),
        )
    };
    let scheme = parsed.as_ref().map_or("", |parsed| parsed.scheme());
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = rustls_error(current) {
            use rustls::CertificateError as Cert;
            match tls {
                rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
                    return Some(match trust {
                        TrustRoots::Platform => "the server's certificate is not trusted; pass \
                            --ca-cert FILE (the CA that signed it)"
                            .to_string(),
                        TrustRoots::CaCert => "the server's certificate is not signed by the \
                            --ca-cert CA; pass the CA that signed it"
                            .to_string(),
                    });
                }
                rustls::Error::InvalidCertificate(
                    Cert::NotValidForName | Cert::NotValidForNameContext { .. },
                ) => {
                    return Some(format!(
                        "the server's certificate does not name the host of {origin}; use a \
                         host name or IP address that its subjectAltName lists"
                    ));
                }
                rustls::Error::InvalidCertificate(
                    Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet,
                ) => {
                    return Some(
                        "the server's certificate is expired or not valid yet (or one of the \
                         clocks is wrong)"
                            .to_string(),
                    );
                }
                rustls::Error::InvalidCertificate(_) => {
                    return Some(
                        "the server's certificate was refused; pass --ca-cert FILE (the CA that \
                         signed it) if it is a private CA"
                            .to_string(),
                    );
                }
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                    return Some(format!(
                        "is the daemon serving plain HTTP? use {}",
                        with_scheme("http")
                    ));
                }
                _ => {}
            }
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(format!(
                    "agentd may not be running at {origin} (nothing accepts connections there); \
                     start it, or point --url (or AGENTD_URL) at it"
                ));
            }
        }
        // hyper's parse errors are not a public type; their text is stable.
        if scheme == "http" && current.to_string().contains("invalid HTTP version") {
            return Some(format!(
                "is the daemon serving TLS? use {}",
                with_scheme("https")
            ));
        }
        cause = current.source();
    }
    None
}

/// The rustls error in a cause, directly or inside `io::Error`s (tokio-rustls wraps it in one,
/// hyper-rustls wraps that in another; `io::Error::source` skips the wrapped error itself, so
/// the source chain alone never shows it).
fn rustls_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    /// More wrapping than any TLS stack does; bounds the walk.
    const IO_WRAPPINGS_MAX: usize = 8;
    let mut current = cause;
    for _ in 0..IO_WRAPPINGS_MAX {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
    None
}

/// Query of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<JobId>,
}

/// A handle to one daemon. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct Client {
    base_url: String,
    http: reqwest::Client,
    token: Option<String>,
    trust: TrustRoots,
}

impl Client {
    /// A client for `base_url` (e.g. `http://127.0.0.1:7070`), with an optional bearer token.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        // Caught here, it names the URL; caught by reqwest, it is a "builder error" per request.
        let valid = reqwest::Url::parse(base_url)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !valid {
            return Err(ClientError::Setup(format!(
                "invalid daemon URL {base_url:?}: expected http://HOST:PORT or https://HOST:PORT"
            )));
        }
        let http = http_builder().build().map_err(|error| {
            ClientError::Setup(format!(
                "cannot set up the HTTP client: {}",
                distinct_causes(&error)
            ))
        })?;
        Ok(Client {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            token,
            trust: TrustRoots::Platform,
        })
    }

    /// Trusts only the CA certificate(s) in `pem` for https URLs (a private lab CA). Refuses a
    /// bundle without a certificate: trusting nothing would fail every https request later with
    /// a misleading "not trusted".
    pub fn with_ca_cert(mut self, pem: &[u8]) -> Result<Client, ClientError> {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
            ClientError::Setup(format!(
                "not a PEM certificate bundle: {}",
                distinct_causes(&error)
            ))
        })?;
        if certs.is_empty() {
            return Err(ClientError::Setup(
                "the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        self.http = http_builder()
            .tls_certs_only(certs)
            .build()
            .map_err(|error| {
                ClientError::Setup(format!(
                    "cannot set up TLS with this CA: {}",
                    distinct_causes(&error)
                ))
            })?;
        self.trust = TrustRoots::CaCert;
        Ok(self)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(method, format!("{}{}", self.base_url, path))
            .timeout(timeout);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        builder
    }

    async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
        let transport_error =
            |error| ClientError::transport(format!("{}{}", self.base_url, path), error, self.trust);
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|error| ClientError::Decode(format!("{path}: {error}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            }),
        }
    }

    /// GET a path and decode its JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, path, REQUEST_TIMEOUT),
            path,
        )
        .await
    }

    /// GET with query parameters.
    pub async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        query: &Q,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let query_text = serde_urlencode(query)?;
        let full = if query_text.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query_text}")
        };
        self.send(self.request(reqwest::Method::GET, &full, timeout), path)
            .await
    }

    /// POST a JSON body and decode the JSON answer.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.post_with_timeout(path, body, REQUEST_TIMEOUT).await
    }

    async fn post_with_timeout<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let bytes =
            serde_json::to_vec(body).map_err(|error| ClientError::Decode(error.to_string()))?;
        let builder = self
            .request(reqwest::Method::POST, path, timeout)
            .header("content-type", "application/json")
            .body(bytes);
        self.send(builder, path).await
    }

    /// GET a file and write it to `to` as it arrives, through `to` + `.part` renamed once
    /// complete; returns its size and SHA-256 (lower-case hex).
    pub async fn download(
        &self,
        path: &str,
        to: &std::path::Path,
    ) -> Result<(u64, String), ClientError> {
        use sha2::Digest;
        use std::io::Write;
        let transport_error =
            |error| ClientError::transport(format!("{}{}", self.base_url, path), error, self.trust);
        let builder = self.request(reqwest::Method::GET, path, DOWNLOAD_TIMEOUT);
        let mut response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(transport_error)?;
            let body = serde_json::from_slice::<ErrorBody>(&bytes).ok();
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: body
                    .as_ref()
                    .map_or_else(|| "unknown".into(), |b| b.code.clone()),
                message: body.map_or_else(
                    || String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                    |b| b.message,
                ),
            });
        }
        let partial = to.with_extension(match to.extension() {
            Some(extension) => format!("{}.part", extension.to_string_lossy()),
            None => "part".to_owned(),
        });
        let io_error = |error: std::io::Error| {
            ClientError::Decode(format!("cannot write {}: {error}", partial.display()))
        };
        let mut file = std::fs::File::create(&partial).map_err(io_error)?;
        let mut hasher = sha2::Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(io_error)?;
            bytes += chunk.len() as u64;
        }
        file.sync_all().map_err(io_error)?;
        std::fs::rename(&partial, to).map_err(io_error)?;
        Ok((bytes, hex::encode(hasher.finalize())))
    }

    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.get("/healthz").await
    }

    /// `GET /v1/settings`: the `[rewards]` and `[training]` settings the daemon recorded in its
    /// log (`training_settings_recorded`). Needs the permission to read tasks.
    pub async fn settings(&self) -> Result<SettingsResponse, ClientError> {
        self.get("/v1/settings").await
    }

    pub async fn submit(
        &self,
        request: &SubmitJobRequest,
    ) -> Result<SubmitJobResponse, ClientError> {
        self.post("/v1/jobs", request).await
    }

    pub async fn submit_batch(
        &self,
        jobs: Vec<SubmitJobRequest>,
    ) -> Result<BatchSubmitResponse, ClientError> {
        self.post("/v1/jobs/batch", &BatchSubmitRequest { jobs })
            .await
    }

    pub async fn job(&self, job_id: JobId) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{job_id}")).await
    }

    pub async fn jobs(&self, query: &JobListQuery) -> Result<JobListResponse, ClientError> {
        self.get_query("/v1/jobs", query, REQUEST_TIMEOUT).await
    }

    pub async fn cancel(&self, job_id: JobId) -> Result<JobTransitionResponse, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/cancel"), &serde_json::json!({}))
            .await
    }

    pub async fn retry(&self, job_id: JobId) -> Result<JobTransitionResponse, ClientError> {
        self.post(&format!("/v1/jobs/{job_id}/retry"), &serde_json::json!({}))
            .await
    }

    /// Long-polls for up to `wait_ms` (capped by the daemon).
    pub async fn lease(&self, request: &LeaseRequest) -> Result<LeaseResponse, ClientError> {
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(request.wait_ms.unwrap_or(0));
        self.post_with_timeout("/v1/leases", request, timeout).await
    }

    pub async fn heartbeat(&self, lease_id: LeaseId) -> Result<HeartbeatResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/heartbeat"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn complete(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.complete_with_log_tail(lease_id, result, None).await
    }

    /// [`Client::complete`] with the attempt's output tail (at most
    /// [`agentd_schemas::api::LOG_TAIL_BYTES_MAX`] bytes), shown as the job's `log_tail`.
    pub async fn complete_with_log_tail(
        &self,
        lease_id: LeaseId,
        result: Option<serde_json::Value>,
        log_tail: Option<String>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/complete"),
            &CompleteRequest { result, log_tail },
        )
        .await
    }

    /// Completes many leases in one durable record; each item succeeds or fails on its own.
    pub async fn complete_many(
        &self,
        completions: Vec<agentd_schemas::api::CompleteItem>,
    ) -> Result<agentd_schemas::api::CompleteManyResponse, ClientError> {
        self.post(
            "/v1/leases/complete",
            &agentd_schemas::api::CompleteManyRequest { completions },
        )
        .await
    }

    pub async fn fail(
        &self,
        lease_id: LeaseId,
        error: &str,
        retryable: bool,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.fail_with_log_tail(lease_id, error, retryable, None)
            .await
    }

    /// [`Client::fail`] with the attempt's output tail (at most
    /// [`agentd_schemas::api::LOG_TAIL_BYTES_MAX`] bytes), shown as the job's `log_tail`.
    pub async fn fail_with_log_tail(
        &self,
        lease_id: LeaseId,
        error: &str,
        retryable: bool,
        log_tail: Option<String>,
    ) -> Result<JobTransitionResponse, ClientError> {
        self.post(
            &format!("/v1/leases/{lease_id}/fail"),
            &FailRequest {
                error: error.to_string(),
                retryable: Some(retryable),
                log_tail,
            },
        )
        .await
    }

    pub async fn queues(&self) -> Result<QueueListResponse, ClientError> {
        self.get("/v1/queues").await
    }

    pub async fn pause(&self, queue: &str) -> Result<QueueChangeResponse, ClientError> {
        self.post(&format!("/v1/queues/{queue}/pause"), &serde_json::json!({}))
            .await
    }

    pub async fn resume(&self, queue: &str) -> Result<QueueChangeResponse, ClientError> {
        self.post(
            &format!("/v1/queues/{queue}/resume"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Events after `after`; with `wait_ms`, waits for new ones when there are none yet.
    pub async fn events(
        &self,
        after: Lsn,
        limit: u64,
        wait_ms: u64,
    ) -> Result<EventsResponse, ClientError> {
        #[derive(Serialize)]
        struct Query {
            after: u64,
            limit: u64,
            wait_ms: u64,
        }
        self.get_query(
            "/v1/events",
            &Query {
                after: after.0,
                limit,
                wait_ms,
            },
            REQUEST_TIMEOUT + Duration::from_millis(wait_ms),
        )
        .await
    }
}

/// The HTTP client settings every `Client` shares; https uses rustls on ring.
fn http_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Fails only if another provider was installed first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        // Below the daemon's idle-connection timeout (60 s by default), so a pooled connection
        // is dropped here before the daemon closes it under a request.
        .pool_idle_timeout(std::time::Duration::from_secs(20))
        .tcp_nodelay(true)
}

fn serde_urlencode<Q: Serialize>(query: &Q) -> Result<String, ClientError> {
    let value =
        serde_json::to_value(query).map_err(|error| ClientError::Decode(error.to_string()))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ClientError::Decode("query must be an object".into()));
    };
    let mut parts = Vec::new();
    for (key, value) in map {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        parts.push(format!(
            "{}={}",
            percent_encode(&key),
            percent_encode(&text)
        ));
    }
    Ok(parts.join("&"))
}

/// Percent-encodes everything outside the unreserved set of RFC 3986.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose text repeats its source's, as reqwest's did with its URL.
    #[derive(Debug)]
    struct Layer {
        text: &'static str,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str(self.text)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source
                .as_deref()
                .map(|layer| layer as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn each_cause_is_named_once() {
        let chain = Layer {
            text: "error sending request for url (http://h/x)",
            source: Some(Box::new(Layer {
                text: "error sending request for url (http://h/x)",
                source: Some(Box::new(Layer {
                    text: "client error (Connect)",
                    source: Some(Box::new(Layer {
                        text: "Connection refused",
                        source: None,
                    })),
                })),
            })),
        };
        assert_eq!(
            distinct_causes(&chain),
            "error sending request for url (http://h/x): client error (Connect): Connection refused"
        );
    }

    #[test]
    fn a_url_without_scheme_or_host_is_refused_up_front() {
        for url in [
            "",
            "127.0.0.1:7070",
            "localhost:7070",
            "ftp://h:1",
            "http://",
        ] {
            let error = Client::new(url, None).err().unwrap();
            assert!(
                error.to_string().contains("expected http://HOST:PORT"),
                "{url}: {error}"
            );
        }
        for url in ["http://127.0.0.1:7070", "https://agentd.lab:7443/"] {
            let client = Client::new(url, None).unwrap();
            assert_eq!(client.base_url(), url.trim_end_matches('/'));
        }
    }
}
