//! Why a call failed ([`ClientError`]) and what to try about it (`ClientError::hint`).

use crate::TrustRoots;

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
    /// certificate that is not trusted, plain HTTP against a TLS port and the reverse, a missing
    /// or wrong token. Phrased
    /// for agentctl: it names its options and environment variable (`--ca-cert`, `--url`,
    /// `AGENTD_URL`), which other callers ignore.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Transport { url, error, trust } => transport_hint(url, error, *trust),
            ClientError::Api { code, .. } if code == "unauthorized" => Some(
                "pass the daemon's bearer token with --token or AGENTD_TOKEN (a token from its \
                 [auth] tokens)"
                    .to_string(),
            ),
            _ => None,
        }
    }

    pub(crate) fn transport(url: String, error: reqwest::Error, trust: TrustRoots) -> ClientError {
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

/// The hint for the first cause in `error`'s chain that has a usual explanation.
fn transport_hint(url: &str, error: &reqwest::Error, trust: TrustRoots) -> Option<String> {
    let target = HintTarget::of(url);
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(hint) = rustls_error(current).and_then(|tls| tls_hint(tls, trust, &target)) {
            return Some(hint);
        }
        if let Some(hint) = plain_cause_hint(current, &target) {
            return Some(hint);
        }
        cause = current.source();
    }
    None
}

/// The daemon a hint talks about: its origin and the scheme that was used to reach it.
struct HintTarget {
    /// `scheme://host:port`, or the URL as given when it does not parse.
    origin: String,
    /// `http`, `https`, or empty when the URL does not parse.
    scheme: String,
}

impl HintTarget {
    fn of(url: &str) -> HintTarget {
        let parsed = reqwest::Url::parse(url).ok();
        HintTarget {
            origin: parsed.as_ref().map_or_else(
                || url.to_string(),
                |parsed| parsed.origin().ascii_serialization(),
            ),
            scheme: parsed.map_or_else(String::new, |parsed| parsed.scheme().to_string()),
        }
    }

    /// The origin with another scheme.
    fn with_scheme(&self, scheme: &str) -> String {
        self.origin.split_once("://").map_or_else(
            || format!("{scheme}://"),
            |(_, rest)| format!("{scheme}://{rest}"),
        )
    }
}

/// The hint for a TLS failure: an untrusted, misnamed or expired certificate, or a TLS
/// handshake answered in plain HTTP.
fn tls_hint(tls: &rustls::Error, trust: TrustRoots, target: &HintTarget) -> Option<String> {
    use rustls::CertificateError as Cert;
    let hint = match tls {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            match trust {
                TrustRoots::Platform => "the server's certificate is not trusted; pass \
                    --ca-cert FILE (the CA that signed it)"
                    .to_string(),
                TrustRoots::CaCert => "the server's certificate is not signed by the \
                    --ca-cert CA; pass the CA that signed it"
                    .to_string(),
            }
        }
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate does not name the host of {}; use a \
             host name or IP address that its subjectAltName lists",
            target.origin
        ),
        rustls::Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet,
        ) => "the server's certificate is expired or not valid yet (or one of the \
              clocks is wrong)"
            .to_string(),
        rustls::Error::InvalidCertificate(_) => "the server's certificate was refused; pass \
            --ca-cert FILE (the CA that signed it) if it is a private CA"
            .to_string(),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => format!(
            "is the daemon serving plain HTTP? use {}",
            target.with_scheme("http")
        ),
        _ => return None,
    };
    Some(hint)
}

/// The hint for a failure below TLS: nothing listening, or a TLS port answered in plain HTTP.
fn plain_cause_hint(
    cause: &(dyn std::error::Error + 'static),
    target: &HintTarget,
) -> Option<String> {
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return Some(format!(
                "agentd may not be running at {} (nothing accepts connections there); \
                 start it, or point --url (or AGENTD_URL) at it",
                target.origin
            ));
        }
    }
    // hyper's parse errors are not a public type; their text is stable.
    if target.scheme == "http" && cause.to_string().contains("invalid HTTP version") {
        return Some(format!(
            "is the daemon serving TLS? use {}",
            target.with_scheme("https")
        ));
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
