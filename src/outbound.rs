//! The one outbound HTTP client: commit statuses and notifications go through it.
//!
//! hyper-util's pooled client (keep-alive) over the hyper already serving webhooks, with
//! rustls: the system's root certificates, plus `server.ca_file` for hosts with a private CA.
//! Every request has a time limit, and an answer's body is read up to a limit. An error never
//! repeats the URL: some URLs (Slack's, Discord's) are credentials.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use tokio::sync::OnceCell;

/// Time to connect (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole exchange, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer's body read (its start says what went wrong).
const ANSWER_LIMIT: usize = 64 * 1024;

/// The client; cheap to clone (one pool). It is built at its first request: a daemon that
/// never reports anything never reads the system's root certificates (nor keeps them, nor the
/// TLS code's pages, in memory).
#[derive(Clone)]
pub struct Outbound {
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
    client: Arc<OnceCell<HttpsClient>>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request got no good answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    /// The server answered, but not with success: `body` is the start of its answer.
    #[error("answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// Not sent: what to send is wrong (a bad URL, a target that cannot take it).
    #[error("{0}")]
    Invalid(String),
}

impl SendError {
    /// Whether trying again may help: not when the server says the request itself is wrong
    /// (400, 405, 413, 422), nor when it could not be built.
    pub fn is_permanent(&self) -> bool {
        match self {
            SendError::Status { status, .. } => matches!(status.as_u16(), 400 | 405 | 413 | 422),
            SendError::Invalid(_) => true,
            _ => false,
        }
    }
}

impl Outbound {
    /// A client trusting the system's roots and the certificates of `ca_file` (read now: a
    /// mistaken file is an error at start, not at the first status).
    pub fn new(ca_file: Option<&Path>) -> Result<Outbound, String> {
        let extra_roots = match ca_file {
            Some(path) => read_ca_file(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        let mut check = rustls::RootCertStore::empty();
        for cert in &extra_roots {
            check.add(cert.clone()).map_err(|e| format!("ca_file: {e}"))?;
        }
        Ok(Outbound { extra_roots: Arc::new(extra_roots), client: Arc::new(OnceCell::new()) })
    }

    /// The pooled client, built at the first call (the system's roots are read off the async
    /// threads).
    async fn client(&self) -> Result<&HttpsClient, SendError> {
        self.client
            .get_or_try_init(|| {
                let extra = self.extra_roots.clone();
                async move {
                    tokio::task::spawn_blocking(move || build(&extra))
                        .await
                        .map_err(|e| SendError::Transport(format!("cannot set up HTTPS: {e}")))?
                        .map_err(|e| SendError::Transport(format!("cannot set up HTTPS: {e}")))
                }
            })
            .await
    }

    /// Sends `request`; a 2xx answer is `Ok`, anything else an error with the answer's start.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Reply, SendError> {
        let client = self.client().await?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| SendError::Transport(chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), ANSWER_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>(Reply { status, body })
        };
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| SendError::Timeout(REQUEST_TIMEOUT))??;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            let text = String::from_utf8_lossy(&reply.body);
            let mut start: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            if start.is_empty() {
                start = "(no body)".into();
            }
            Err(SendError::Status { status: reply.status, body: start })
        }
    }
}

/// The client: the system's root certificates and `extra` ones.
fn build(extra: &[CertificateDer<'static>]) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots.add(cert.clone()).map_err(|e| format!("ca_file: {e}"))?;
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificate found (system store: {added}; install ca-certificates, or set \
             server.ca_file): HTTPS statuses and messages will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4)
        .build(https))
}

/// An error and its causes, on one line (hyper's own message is only "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The certificates of a PEM file (at least one).
pub fn read_ca_file(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}
