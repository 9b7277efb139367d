//! The [`Client`] handle: connection pool, bearer token, trusted CAs, and the request helpers
//! every route method is built on (JSON in and out, errors decoded, downloads to a file).

use crate::{distinct_causes, ClientError, TrustRoots, DOWNLOAD_TIMEOUT, REQUEST_TIMEOUT};
use agentd_schemas::api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

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
        let bytes = self.answer_bytes(builder, path).await?;
        serde_json::from_slice(bytes.as_ref())
            .map_err(|error| ClientError::Decode(format!("{path}: {error}")))
    }

    /// The body of a success answer, or the error of any other.
    async fn answer_bytes(
        &self,
        builder: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<impl AsRef<[u8]>, ClientError> {
        let transport_error =
            |error| ClientError::transport(format!("{}{}", self.base_url, path), error, self.trust);
        let response = builder.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(api_error(status, &bytes))
    }

    /// GET a path and decode its JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(
            self.request(reqwest::Method::GET, path, REQUEST_TIMEOUT),
            path,
        )
        .await
    }

    /// GET a path whose answer is text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let builder = self.request(reqwest::Method::GET, path, REQUEST_TIMEOUT);
        let bytes = self.answer_bytes(builder, path).await?;
        Ok(String::from_utf8_lossy(bytes.as_ref()).into_owned())
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

    pub(crate) async fn post_with_timeout<T: DeserializeOwned, B: Serialize>(
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
            return Err(api_error(status, &bytes));
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
}

/// The error of a non-success answer: the daemon's error body, or (from a proxy, say) the
/// first 500 characters of whatever came back, with the code `unknown`.
fn api_error(status: reqwest::StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "unknown".into(),
            message: String::from_utf8_lossy(bytes).chars().take(500).collect(),
        },
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
