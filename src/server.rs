//! The HTTP front: hyper 1, HTTP/1 only (a reverse proxy in front does TLS).
//!
//! Routes: `POST {path}/{entry}` (one entry), `POST {path}` (every entry whose matcher fits and
//! whose secret authenticates), `GET /health`. A webhook reads top to bottom in [`hook`]:
//! receive (size limit) → detect provider → authenticate (raw bytes) → normalise → match →
//! record and queue → answer. A routed request is normalised first, to authenticate it only
//! against the entries for its repository: its cost does not grow with the number of entries.
//! The answer never waits for actions. Limits: body size (refused before reading past it),
//! header read timeout, body read timeout, a cap on connections.
//! [`HookError::answer`] is the one place that maps errors to statuses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{field, info, info_span, warn, Instrument};

use crate::daemon::{blocking, App, EnqueueError, Enqueued};
use crate::event::{Event, EventKind, Trigger};
use crate::matcher;
use crate::providers::{self, AuthError, PayloadError};
use crate::settings::Entry;
use crate::store::NewJob;

/// How long a client may take to send the body once the headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish when the daemon stops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Suggested wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 10;

/// Serves until `shutdown` resolves, then lets open connections finish (briefly).
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let settings = app.settings();
    let limit = Arc::new(Semaphore::new(settings.server.max_connections));
    let header_timeout = settings.server.header_timeout;
    drop(settings);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Wait for room before accepting: excess connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, req, peer).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown()).await.is_err() {
        warn!("connections still open after the close grace period; dropping them");
    }
}

type Answer = Response<Full<Bytes>>;

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

async fn route(app: Arc<App>, req: Request<Incoming>, peer: std::net::SocketAddr) -> Answer {
    let settings = app.settings();
    let path = req.uri().path();
    if path == "/health" {
        return if req.method() == Method::GET || req.method() == Method::HEAD {
            health(&app)
        } else {
            HookError::Method.answer()
        };
    }
    let prefix = settings.server.path.as_str();
    let target = if path == prefix || path.strip_suffix('/') == Some(prefix) {
        None
    } else {
        match path.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('/')) {
            Some(name) if !name.is_empty() && !name.contains('/') => Some(name.to_string()),
            _ => {
                return HookError::NoRoute(format!(
                    "no route {path}: webhooks go to POST {prefix} or {prefix}/<entry>"
                ))
                .answer()
            }
        }
    };
    if req.method() != Method::POST {
        return HookError::Method.answer();
    }
    drop(settings);
    let span =
        info_span!("delivery", %peer, delivery = field::Empty, provider = field::Empty, repo = field::Empty);
    match hook(app, req, target).instrument(span.clone()).await {
        Ok(answer) => answer,
        Err(e) => {
            span.in_scope(|| info!(status = e.status().as_u16(), reason = %e, "refused"));
            e.answer()
        }
    }
}

/// Why a webhook was not queued, as an answer.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("{0}")]
    NoRoute(String),
    #[error("no entry \"{0}\" in the settings")]
    NoEntry(String),
    #[error("method not allowed: webhooks are POST, /health is GET")]
    Method,
    #[error("body larger than max_body ({0} bytes)")]
    TooLarge(u64),
    #[error("the body took too long to arrive")]
    SlowBody,
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the job queue is full; try again later")]
    Full,
    #[error("cannot record the job: {0}")]
    Internal(String),
}

impl HookError {
    fn status(&self) -> StatusCode {
        match self {
            HookError::NoRoute(_) | HookError::NoEntry(_) => StatusCode::NOT_FOUND,
            HookError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            HookError::Body(_) | HookError::Payload(_) => StatusCode::BAD_REQUEST,
            HookError::Auth(_) => StatusCode::UNAUTHORIZED,
            HookError::Full => StatusCode::SERVICE_UNAVAILABLE,
            HookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn answer(&self) -> Answer {
        let mut res = json_answer(self.status(), &json!({ "error": self.to_string() }));
        if let HookError::Full = self {
            res.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        }
        if let HookError::TooLarge(_) | HookError::SlowBody = self {
            // The rest of the body is not read: this connection cannot be reused.
            res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        res
    }
}

async fn read_body(body: Incoming, headers: &HeaderMap, max: u64) -> Result<Bytes, HookError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(HookError::TooLarge(max));
    }
    let limited = Limited::new(body, max as usize);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(HookError::SlowBody),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(HookError::TooLarge(max)),
        Ok(Err(e)) => Err(HookError::Body(e.to_string())),
    }
}

/// Authenticates against each entry's secret, computing each distinct secret only once.
fn authenticate<'a>(
    candidates: &[&'a Arc<Entry>],
    provider: crate::event::Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<&'a Arc<Entry>>, AuthError> {
    let mut cache: HashMap<(&[u8], bool), Result<(), AuthError>> = HashMap::new();
    let mut authentic = Vec::new();
    let mut first_error = None;
    let mut same_error = true;
    for entry in candidates {
        let result = match &entry.secret {
            None => Ok(()),
            Some(secret) => cache
                .entry((secret.expose(), entry.allow_sha1))
                .or_insert_with(|| providers::authenticate(provider, headers, body, secret, entry.allow_sha1))
                .clone(),
        };
        match result {
            Ok(()) => authentic.push(*entry),
            Err(e) => match &first_error {
                None => first_error = Some(e),
                Some(f) if *f != e => same_error = false,
                Some(_) => {}
            },
        }
    }
    if authentic.is_empty() {
        return Err(match first_error {
            Some(e) if same_error || candidates.len() == 1 => e,
            _ => AuthError::NoEntry,
        });
    }
    Ok(authentic)
}

async fn hook(app: Arc<App>, req: Request<Incoming>, target: Option<String>) -> Result<Answer, HookError> {
    let settings = app.settings();
    let (parts, body) = req.into_parts();

    // Receive, within the limits.
    let body = read_body(body, &parts.headers, settings.server.max_body).await?;
    let provider = providers::detect(&parts.headers).ok_or(PayloadError::UnknownProvider)?;
    let span = tracing::Span::current();
    span.record("provider", provider.as_str());
    let delivery = providers::delivery_id(provider, &parts.headers);
    if let Some(d) = &delivery {
        span.record("delivery", d.as_str());
    }

    let (authentic, events) = match &target {
        // One entry: authenticate over the raw bytes before any parsing.
        Some(name) => {
            let entry = settings.entry(name).ok_or_else(|| HookError::NoEntry(name.clone()))?;
            let authentic = authenticate(&[entry], provider, &parts.headers, &body)?;
            (authentic, providers::parse(provider, &parts.headers, &body)?)
        }
        // Routed: the repository in the payload says which entries to authenticate against, so
        // the work per request does not grow with the number of entries. An entry for another
        // repository never sees the request, and the answer is the same 401 whether no entry
        // is for this repository or none of their secrets fits (nothing about the settings leaks).
        None => {
            let events = providers::parse(provider, &parts.headers, &body)?;
            // A ping (sent when a webhook is created) is answered for any entry of the provider.
            let ping = events.iter().any(|e| e.kind == EventKind::Ping);
            let repo = match events.first() {
                Some(e) if !ping => e.repo.as_str(),
                _ => "",
            };
            let candidates: Vec<&Arc<Entry>> = if repo.is_empty() {
                settings.entries.iter().collect()
            } else {
                settings.entries_for_repo(repo)
            };
            let candidates: Vec<&Arc<Entry>> =
                candidates.into_iter().filter(|e| matcher::fits_source(e, provider, repo)).collect();
            if candidates.is_empty() {
                return Err(AuthError::NoEntry.into());
            }
            (authenticate(&candidates, provider, &parts.headers, &body)?, events)
        }
    };
    if let Some(e) = events.first() {
        span.record("repo", e.repo.as_str());
    }

    // Match.
    let mut jobs = Vec::new();
    let mut reasons: Vec<(String, String)> = Vec::new();
    for event in &events {
        for entry in &authentic {
            match matcher::check(entry, event) {
                Ok(()) => jobs.push(NewJob {
                    entry: entry.name.clone(),
                    trigger: Trigger::Webhook,
                    event: event.clone(),
                }),
                Err(reason) => reasons.push((entry.name.clone(), reason)),
            }
        }
    }
    if jobs.is_empty() {
        if events.iter().any(|e| e.kind == EventKind::Ping) {
            info!("ping answered");
            return Ok(json_answer(StatusCode::OK, &json!({ "status": "pong" })));
        }
        return Ok(ignored(&events, &reasons));
    }

    // Record durably, then queue; answer.
    let key = delivery.map(|d| format!("{provider}:{d}"));
    let app2 = app.clone();
    let enqueued =
        blocking(move || app2.enqueue(key.as_deref(), &body, jobs)).await.map_err(|e| match e {
            EnqueueError::Full => HookError::Full,
            EnqueueError::Store(e) => HookError::Internal(e.to_string()),
        })?;
    let (status, code, list) = match enqueued {
        Enqueued::Queued(list) => ("queued", StatusCode::ACCEPTED, list),
        Enqueued::Duplicate(list) => ("duplicate", StatusCode::OK, list),
    };
    let jobs: Vec<Value> = list.iter().map(|(id, entry)| json!({ "id": id, "entry": entry })).collect();
    info!(status, jobs = %jobs.iter().map(|j| j["id"].to_string()).collect::<Vec<_>>().join(","), "answered");
    Ok(json_answer(code, &json!({ "status": status, "jobs": jobs })))
}

fn ignored(events: &[Event], reasons: &[(String, String)]) -> Answer {
    let what = events
        .first()
        .map(|e| {
            let r = if e.git_ref.is_empty() { String::new() } else { format!(" {}", e.git_ref) };
            format!("{} {}{r}", e.provider, e.name())
        })
        .unwrap_or_default();
    let reason = if reasons.len() == 1 {
        format!("{what}: entry \"{}\": {}", reasons[0].0, reasons[0].1)
    } else {
        let each: Vec<String> = reasons.iter().map(|(n, r)| format!("entry \"{n}\": {r}")).collect();
        format!("{what}: no entry matches ({})", each.join("; "))
    };
    info!(reason = %reason, "ignored");
    let entries: serde_json::Map<String, Value> =
        reasons.iter().map(|(n, r)| (n.clone(), Value::String(r.clone()))).collect();
    json_answer(StatusCode::OK, &json!({ "status": "ignored", "reason": reason, "entries": entries }))
}

fn health(app: &App) -> Answer {
    let status = app.status();
    let (waiting, running) = app.queue.depth();
    let capacity = app.settings().server.queue;
    json_answer(
        StatusCode::OK,
        &json!({
            "status": if status.state == "loaded" { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "settings": status,
            "queue": { "waiting": waiting, "running": running, "capacity": capacity },
        }),
    )
}
