//! The HTTP front: hyper 1, HTTP/1 only (a reverse proxy in front does TLS).
//!
//! Routes: `POST {path}/{entry}` (one entry), `POST {path}` (every entry whose matcher fits and
//! whose secret authenticates), `GET /health`, `GET /metrics`, `GET /jobs/<id>`. A webhook
//! reads top to bottom in [`hook`]: receive (size limit) → detect provider → authenticate (raw
//! bytes) → normalise → match → record and queue → answer. A routed request is normalised
//! first, to authenticate it only against the entries for its repository: its cost does not
//! grow with the number of entries.
//! The answer never waits for actions. Limits: body size (refused before reading past it),
//! header read timeout, body read timeout, a cap on connections.
//! [`HookError::answer`] is the one place that maps errors to statuses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::{debug, debug_span, field, info, warn, Instrument};

use crate::tally::{self, Outcome};

use crate::app::{blocking, off_thread, App, EnqueueError, Enqueued};
use crate::connections::{Admission, Conn, Connections, Place};
use crate::event::{Event, EventKind, Provider, Trigger};
use crate::forwarded;
use crate::job_page::{LogStream, PageError};
use crate::providers::{self, AuthError, PayloadError};
use crate::settings::{Entry, Settings};
use crate::store::NewJob;
use crate::throttle::Throttle;

/// How long open connections get to finish when the daemon stops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Suggested wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 10;

/// Serves until `shutdown` resolves, then lets open connections finish (briefly).
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let settings = app.settings();
    let table =
        Connections::new(settings.server.max_connections, settings.server.max_connections_per_address);
    let header_timeout = settings.server.header_timeout;
    drop(settings);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let proxy = app.settings().server.trusted_proxies.contains(peer.ip());
        let Some(place) = place_for(&table, peer.ip(), proxy).await else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        let conn = place.conn.clone();
        let service = service_fn(move |req| {
            let (app, conn) = (app.clone(), conn.clone());
            async move {
                conn.receiving();
                let answer = route(app, req, peer, &conn).await;
                conn.idle();
                Ok::<_, Infallible>(answer)
            }
        });
        let served = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let served = graceful.watch(served);
        tokio::spawn(async move {
            // Dropping the connection closes it: when the table wants its place back.
            tokio::select! {
                _ = served => {}
                _ = place.conn.evicted() => {}
            }
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown()).await.is_err() {
        warn!("connections still open after the close grace period; dropping them");
    }
}

/// A place for a new connection from `ip`: `None` when its address has its share (a trusted
/// `proxy` has none: the clients behind it share its address), or when
/// every place is taken by requests being handled for longer than a second. Otherwise the
/// oldest connection that has not delivered a request gives its place.
async fn place_for(table: &Arc<Connections>, ip: IpAddr, proxy: bool) -> Option<Place> {
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match table.admit(ip, proxy) {
            Admission::Admitted(place) => return Some(place),
            Admission::AddressFull => return None,
            Admission::Full => {
                table.evict_slowest();
                if tokio::time::timeout_at(until, table.freed()).await.is_err() {
                    return None;
                }
            }
        }
    }
}

type Answer = Response<Full<Bytes>>;

/// An answer with a JSON body, serialised straight from `body` (no intermediate `Value` on the
/// paths of refused and ignored requests).
fn json_answer(status: StatusCode, body: &impl serde::Serialize) -> Answer {
    let text =
        serde_json::to_vec(body).unwrap_or_else(|_| br#"{"error":"cannot write the answer"}"#.to_vec());
    let mut res = Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

/// What the server answers with: JSON (and short text), or a job's page streamed.
pub type Body = Either<Full<Bytes>, LogStream>;

/// Who may read what, settled once for every path: `/hooks` for `server.allow_from` (and the
/// signatures), `/health` and `/metrics` for `server.observe_from`, `/jobs/<id>` for the link
/// that carries the job's key.
async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> Response<Body> {
    let path = req.uri().path();
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/health" || path == "/metrics" {
        if !reading {
            return HookError::Method.refuse(&app).map(Either::Left);
        }
        let client = forwarded::client(peer.ip(), req.headers(), &app.settings().server.trusted_proxies);
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        return crate::observe::answer(app, path, client, accept).await.map(Either::Left);
    }
    if let (true, Some(id)) = (reading, path.strip_prefix("/jobs/")) {
        return match crate::job_page::page(&app, id, req.uri().query()).await {
            Ok(stream) => {
                let mut res = Response::new(Either::Right(stream));
                let headers = res.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                headers.insert("x-content-type-options", header::HeaderValue::from_static("nosniff"));
                headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
                headers.insert("referrer-policy", header::HeaderValue::from_static("no-referrer"));
                res
            }
            Err(PageError::NotFound) => {
                HookError::NoRoute(PageError::NotFound.to_string()).answer().map(Either::Left)
            }
            Err(PageError::Store(e)) => HookError::Internal(e.to_string()).answer().map(Either::Left),
        };
    }
    hooks(app, req, peer, conn).await.map(Either::Left)
}

/// `POST {path}` and `POST {path}/<entry>`.
async fn hooks(app: Arc<App>, req: Request<Incoming>, peer: std::net::SocketAddr, conn: &Conn) -> Answer {
    let settings = app.settings();
    let path = req.uri().path();
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
                .refuse(&app)
            }
        }
    };
    if req.method() != Method::POST {
        return HookError::Method.refuse(&app);
    }
    let client = forwarded::client(peer.ip(), req.headers(), &settings.server.trusted_proxies);
    drop(settings);
    // At DEBUG only: at the default level a refused or ignored request costs no log work (they
    // are counted, see `tally`); the lines that stay carry their own context.
    let span = debug_span!(
        "delivery",
        %peer,
        %client,
        delivery = field::Empty,
        provider = field::Empty,
        repo = field::Empty
    );
    let mut counted = Counted::default();
    let metrics = app.metrics.clone();
    match hook(app, req, target, client, conn, &mut counted).instrument(span.clone()).await {
        Ok(answer) => {
            metrics.delivery(counted.provider(), counted.result);
            answer
        }
        Err(e) => {
            metrics.delivery(counted.provider(), e.result());
            let status = e.status().as_u16();
            tally::count(Outcome::Refused(status));
            span.in_scope(|| match &e {
                HookError::Unauthentic { error, whom, key } => refused_signature(key, whom, error, client),
                _ => debug!(status, reason = %e, "refused"),
            });
            e.answer()
        }
    }
}

/// What `/metrics` counts of a delivery: its provider once detected, and its result.
#[derive(Default)]
struct Counted {
    provider: Option<Provider>,
    result: &'static str,
}

impl Counted {
    fn provider(&self) -> &'static str {
        self.provider.map_or("unknown", Provider::as_str)
    }
}

/// Refused signatures are warned about at most once a minute per entry or repository: a wrong
/// secret is the most common set-up mistake, and a flood of forged requests must not flood the
/// log.
static REFUSALS: Throttle = Throttle::new(Duration::from_secs(60));

/// Warns that a request was not authentic (the headers involved, never a secret), at most once
/// a minute for the same `key` (entries); the ones held back are counted.
fn refused_signature(key: &str, whom: &str, error: &AuthError, client: std::net::IpAddr) {
    if let Some(held_back) = REFUSALS.admit(key) {
        warn!(
            status = 401,
            %client,
            held_back,
            "request refused for {whom}: {error}; check that the secret set on the host's webhook is the entry's"
        );
    }
}

/// Why a webhook was not queued, as an answer.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("{0}")]
    NoRoute(String),
    #[error("method not allowed: webhooks are POST; /health, /metrics and /jobs/<id> are GET")]
    Method,
    #[error("body larger than max_body ({0} bytes)")]
    TooLarge(u64),
    #[error("the body took too long to arrive")]
    SlowBody,
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Not authentic, with whom it was checked against: that part is for the log, never the
    /// answer (a stranger learns nothing about the settings). `key` groups the warnings: the
    /// entries involved, never a name the sender chose, so a flood cannot flood the log.
    #[error("{error}")]
    Unauthentic { error: AuthError, whom: String, key: String },
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error("nothing to route by: the payload names no repository; send it to {0}/<entry>")]
    NothingToRoute(String),
    #[error("requests from {0} are not allowed here (allow_from)")]
    Forbidden(std::net::IpAddr),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HookError {
    fn status(&self) -> StatusCode {
        match self {
            HookError::NoRoute(_) => StatusCode::NOT_FOUND,
            HookError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HookError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            HookError::Body(_) | HookError::Payload(_) => StatusCode::BAD_REQUEST,
            HookError::Unauthentic { .. } => StatusCode::UNAUTHORIZED,
            HookError::Enqueue(EnqueueError::Full) => StatusCode::SERVICE_UNAVAILABLE,
            HookError::Enqueue(EnqueueError::Store(_)) | HookError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HookError::NothingToRoute(_) => StatusCode::BAD_REQUEST,
            HookError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The `result` label of `/metrics` for this refusal.
    fn result(&self) -> &'static str {
        match self {
            HookError::NoRoute(_) => "not_found",
            HookError::Method => "method_not_allowed",
            HookError::TooLarge(_) => "too_large",
            HookError::SlowBody => "too_slow",
            HookError::Body(_) | HookError::Payload(_) | HookError::NothingToRoute(_) => "bad_request",
            HookError::Unauthentic { .. } => "unauthentic",
            HookError::Enqueue(EnqueueError::Full) => "queue_full",
            HookError::Enqueue(EnqueueError::Store(_)) | HookError::Internal(_) => "error",
            HookError::Forbidden(_) => "forbidden",
        }
    }

    /// The answer of a request refused before it reached [`hook`], counted (its provider is
    /// not known yet).
    fn refuse(&self, app: &App) -> Answer {
        tally::count(Outcome::Refused(self.status().as_u16()));
        app.metrics.delivery("unknown", self.result());
        self.answer()
    }

    fn answer(&self) -> Answer {
        #[derive(serde::Serialize)]
        struct Refused {
            error: String,
        }
        let mut res = json_answer(self.status(), &Refused { error: self.to_string() });
        if let HookError::Enqueue(EnqueueError::Full) = self {
            res.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
        }
        if let HookError::TooLarge(_) | HookError::SlowBody | HookError::Forbidden(_) = self {
            // The rest of the body is not read: this connection cannot be reused.
            res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        res
    }
}

/// A request as received: within the limits, its body whole.
#[derive(Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// Which entries authenticated a request, and its events.
struct Authentic {
    entries: Vec<Arc<Entry>>,
    events: Vec<Event>,
}

/// The jobs an event makes, and why each other entry was not one of them.
struct Matched {
    jobs: Vec<NewJob>,
    reasons: Vec<(String, String)>,
}

/// A webhook, top to bottom.
async fn hook(
    app: Arc<App>,
    req: Request<Incoming>,
    target: Option<String>,
    client: std::net::IpAddr,
    conn: &Conn,
    counted: &mut Counted,
) -> Result<Answer, HookError> {
    let settings = app.settings();
    allowed(&settings, target.as_deref(), client)?;
    let request = receive(req, settings.server.max_body, settings.server.body_timeout).await?;
    conn.handling();
    let provider = detect(&request)?;
    counted.provider = Some(provider);
    let authentic = if request.body.len() > OFF_REACTOR {
        // Hashing and parsing a large body takes milliseconds: not on the threads that serve
        // every other connection.
        let (settings, request) = (settings.clone(), request.clone());
        off_thread(move || identify(&settings, target.as_deref(), provider, &request))
            .await
            .map_err(|p| HookError::Internal(p.to_string()))??
    } else {
        identify(&settings, target.as_deref(), provider, &request)?
    };
    if let Some(e) = authentic.events.first() {
        tracing::Span::current().record("repo", e.repo.as_str());
    }
    let mut authentic = authentic;
    let forbidden = allowed_entries(&mut authentic.entries, client);
    if authentic.entries.is_empty() && !forbidden.is_empty() {
        return Err(HookError::Forbidden(client));
    }
    let mut matched = match_entries(&authentic);
    matched.reasons.extend(forbidden);
    skip_deployed(&app, &settings, &mut matched).await?;
    if matched.jobs.is_empty() {
        let ping = authentic.events.iter().any(|e| e.kind == EventKind::Ping);
        counted.result = if ping { "pong" } else { "ignored" };
        return Ok(not_run(&authentic.events, &matched.reasons));
    }
    let delivery = providers::delivery_id(provider, &request.headers);
    let repo = matched.jobs[0].event.repo.clone();
    let mut enqueued = record(&app, provider, request, matched.jobs).await?;
    if enqueued.queued.is_empty() && enqueued.seen.is_empty() {
        // Replays only: authentic, and not run, with why.
        counted.result = "ignored";
        matched.reasons.append(&mut enqueued.replays);
        return Ok(ignored(&authentic.events, &matched.reasons));
    }
    counted.result = if enqueued.queued.is_empty() { "duplicate" } else { "queued" };
    info!(%client, %provider, delivery = delivery.as_deref().unwrap_or("-"), %repo, "{}", summary(&enqueued));
    Ok(answer(enqueued))
}

/// `allow_from`, before the body is read: the server's list, then the entry's in the path, or,
/// for a routed request, whether any entry allows the client at all.
fn allowed(settings: &Settings, target: Option<&str>, client: std::net::IpAddr) -> Result<(), HookError> {
    let fits = |list: &Option<crate::allow::Nets>| list.as_ref().is_none_or(|nets| nets.contains(client));
    if !fits(&settings.server.allow_from) {
        return Err(HookError::Forbidden(client));
    }
    let entry_fits = match target {
        Some(name) => settings.entry(name).is_none_or(|e| fits(&e.allow_from)),
        None => settings.entries.is_empty() || settings.entries.iter().any(|e| fits(&e.allow_from)),
    };
    if entry_fits {
        Ok(())
    } else {
        Err(HookError::Forbidden(client))
    }
}

/// Drops the authentic entries whose `allow_from` does not hold `client`; returns why each was.
fn allowed_entries(entries: &mut Vec<Arc<Entry>>, client: std::net::IpAddr) -> Vec<(String, String)> {
    let mut dropped = Vec::new();
    entries.retain(|e| {
        let ok = e.allow_from.as_ref().is_none_or(|nets| nets.contains(client));
        if !ok {
            dropped.push((e.name.clone(), format!("the client {client} is not in the entry's allow_from")));
        }
        ok
    });
    dropped
}

/// `skip_deployed: true`: a job for the commit its entry last deployed successfully is not
/// queued; it is answered as ignored, with the job that deployed it.
async fn skip_deployed(app: &Arc<App>, settings: &Settings, matched: &mut Matched) -> Result<(), HookError> {
    let wanted: Vec<String> = matched
        .jobs
        .iter()
        .filter(|j| settings.entry(&j.entry).is_some_and(|e| e.skip_deployed))
        .filter(|j| !j.event.after.is_empty() && j.event.after != crate::event::ZERO_SHA)
        .map(|j| j.entry.clone())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let store = app.store.clone();
    let deployed = blocking(move || {
        wanted.into_iter().map(|e| store.last_deployed(&e).map(|d| (e, d))).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| HookError::Enqueue(EnqueueError::Store(e)))?;
    matched.jobs.retain(|job| {
        let last = deployed.iter().find(|(e, _)| *e == job.entry).and_then(|(_, d)| d.as_ref());
        match last {
            Some((id, commit)) if *commit == job.event.after => {
                let short = &commit[..commit.len().min(7)];
                matched
                    .reasons
                    .push((job.entry.clone(), format!("commit {short} already deployed by job {id}")));
                false
            }
            _ => true,
        }
    });
    Ok(())
}

/// Bodies larger than this are authenticated and parsed off the async threads.
const OFF_REACTOR: usize = 64 * 1024;

/// Authenticates and normalises a request, for the entry in its path or routed by its payload.
fn identify(
    settings: &Settings,
    target: Option<&str>,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    match target {
        Some(name) => authenticate_then_normalise(settings, name, provider, request),
        None => normalise_then_authenticate(settings, provider, request),
    }
}

/// Receives the body within `max_body` (refused from `Content-Length` before reading past it)
/// and the body timeout.
async fn receive(req: Request<Incoming>, max: u64, timeout: Duration) -> Result<Received, HookError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(HookError::TooLarge(max));
    }
    let limited = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    let body = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => return Err(HookError::SlowBody),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(HookError::TooLarge(max)),
        Ok(Err(e)) => return Err(HookError::Body(e.to_string())),
    };
    Ok(Received { headers: parts.headers, body })
}

/// The git host, from the headers; recorded in the delivery's span with the delivery id.
fn detect(request: &Received) -> Result<Provider, HookError> {
    let provider = providers::detect(&request.headers).ok_or(PayloadError::UnknownProvider)?;
    let span = tracing::Span::current();
    span.record("provider", provider.as_str());
    // The delivery span exists at DEBUG only: no delivery id is copied out for nothing.
    if span.is_disabled() {
        return Ok(provider);
    }
    if let Some(d) = providers::delivery_id(provider, &request.headers) {
        span.record("delivery", d.as_str());
    }
    Ok(provider)
}

/// One entry named in the path: authenticate over the raw bytes before any parsing.
fn authenticate_then_normalise(
    settings: &Settings,
    name: &str,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    let Some(entry) = settings.entry(name) else {
        // Answered as a wrong signature would be, after the same work: which names are entries
        // is not for a stranger to learn.
        let error = match providers::authenticate(provider, &request.headers, &request.body, decoy(), false) {
            Err(e) => e,
            Ok(()) => AuthError::NoEntry,
        };
        let whom = format!("entry {:?} (no entry has that name)", name.chars().take(64).collect::<String>());
        return Err(HookError::Unauthentic { error, whom, key: "an entry not in the settings".into() });
    };
    let entries = authenticate(&[entry], provider, &request.headers, &request.body).map_err(|error| {
        let whom = format!("entry \"{name}\"");
        HookError::Unauthentic { error, key: whom.clone(), whom }
    })?;
    let quick = providers::quick::push(provider, &request.headers, &request.body);
    let events = events_of(entries.iter(), quick, provider, request)?;
    Ok(Authentic { entries, events })
}

/// A secret no request is signed with: what a request for an entry that does not exist is
/// checked against, so that its answer is the one of a wrong secret.
fn decoy() -> &'static crate::settings::Secret {
    static DECOY: std::sync::OnceLock<crate::settings::Secret> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        if read.is_err() {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..16].copy_from_slice(&nanos.as_nanos().to_le_bytes());
        }
        crate::settings::Secret::new(hex::encode(bytes))
    })
}

/// Routed: the repository in the payload says which entries to authenticate against, so the
/// work per request does not grow with the number of entries. An entry for another repository
/// never sees the request, and the answer is the same 401 whether no entry is for this
/// repository or none of their secrets fits (nothing about the settings leaks). A request that
/// names no repository has nothing to route by: it is refused before any secret is tried, but
/// a ping (a new organisation webhook's) is answered, since it runs nothing.
fn normalise_then_authenticate(
    settings: &Settings,
    provider: Provider,
    request: &Received,
) -> Result<Authentic, HookError> {
    // A push is first read for its ref and repository alone, and its repository's entries
    // found once: they decide whether the whole payload is needed, then are authenticated.
    let quick = providers::quick::push(provider, &request.headers, &request.body);
    let quick_source = quick.as_ref().map(|q| (q.repo.clone(), for_repo(settings, provider, &q.repo)));
    let asked = quick_source.iter().flat_map(|(_, entries)| entries.iter().copied());
    let events = events_of(asked, quick, provider, request)?;
    let repo = events.first().map(|e| e.repo.as_str()).unwrap_or_default();
    if repo.is_empty() {
        if events.iter().any(|e| e.kind == EventKind::Ping) {
            return Ok(Authentic { entries: Vec::new(), events });
        }
        return Err(HookError::NothingToRoute(settings.server.path.clone()));
    }
    let candidates = match quick_source {
        Some((quick_repo, entries)) if quick_repo == repo => entries,
        _ => for_repo(settings, provider, repo),
    };
    if candidates.is_empty() {
        let whom = format!("repository \"{repo}\" (no entry is for it)");
        let key = "a repository no entry is for".to_string();
        return Err(HookError::Unauthentic { error: AuthError::NoEntry, whom, key });
    }
    let entries = authenticate(&candidates, provider, &request.headers, &request.body).map_err(|error| {
        let names: Vec<&str> = candidates.iter().take(5).map(|e| e.name.as_str()).collect();
        let more = if candidates.len() > 5 { ", ..." } else { "" };
        let key = format!("entries {}{more}", names.join(", "));
        HookError::Unauthentic { error, whom: format!("repository \"{repo}\" ({key})"), key }
    })?;
    Ok(Authentic { entries, events })
}

/// The entries that may be for a request from `provider` about `repo`.
fn for_repo<'a>(settings: &'a Settings, provider: Provider, repo: &str) -> Vec<&'a Arc<Entry>> {
    settings.entries_for_repo(repo).into_iter().filter(|e| e.matcher.fits_source(provider, repo)).collect()
}

/// The events of a request: the push read quickly when none of `entries` would run for it
/// (the answer needs nothing more: they are asked again and give the reasons), else the
/// whole payload.
fn events_of<'a>(
    entries: impl IntoIterator<Item = &'a Arc<Entry>>,
    quick: Option<Event>,
    provider: Provider,
    request: &Received,
) -> Result<Vec<Event>, HookError> {
    match quick {
        Some(q) if entries.into_iter().all(|e| e.check(&q).is_err()) => Ok(vec![q]),
        _ => Ok(providers::parse(provider, &request.headers, &request.body)?),
    }
}

/// Authenticates against each entry's secret, computing each distinct secret only once.
fn authenticate(
    candidates: &[&Arc<Entry>],
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Arc<Entry>>, AuthError> {
    let mut cache: HashMap<(&[u8], bool), Result<(), AuthError>> = HashMap::new();
    let mut authentic = Vec::new();
    let mut first_error = None;
    let mut same_error = true;
    for entry in candidates {
        let result = match &entry.secret {
            None => Ok(()),
            // One entry (named in the path, the usual case): nothing to share, no cache to build.
            Some(secret) if candidates.len() == 1 => {
                providers::authenticate(provider, headers, body, secret, entry.allow_sha1)
            }
            Some(secret) => cache
                .entry((secret.expose(), entry.allow_sha1))
                .or_insert_with(|| providers::authenticate(provider, headers, body, secret, entry.allow_sha1))
                .clone(),
        };
        match result {
            Ok(()) => authentic.push(Arc::clone(entry)),
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

/// Each authentic entry against each event.
fn match_entries(authentic: &Authentic) -> Matched {
    let mut matched = Matched { jobs: Vec::new(), reasons: Vec::new() };
    for event in &authentic.events {
        for entry in &authentic.entries {
            match entry.check(event) {
                Ok(()) => matched.jobs.push(NewJob {
                    entry: entry.name.clone(),
                    trigger: Trigger::Webhook,
                    event: event.clone(),
                }),
                Err(reason) => matched.reasons.push((entry.name.clone(), reason)),
            }
        }
    }
    matched
}

/// Records the jobs durably and queues them (off the async threads).
async fn record(
    app: &Arc<App>,
    provider: Provider,
    request: Received,
    jobs: Vec<NewJob>,
) -> Result<Enqueued, HookError> {
    let key = providers::delivery_id(provider, &request.headers).map(|d| format!("{provider}:{d}"));
    let app2 = app.clone();
    match blocking(move || app2.enqueue(key.as_deref(), request.body, jobs)).await {
        Ok(enqueued) => {
            app.store_works();
            Ok(enqueued)
        }
        Err(EnqueueError::Store(e)) => {
            app.store_failed("cannot record a delivery's jobs (answered 500)", &e);
            Err(EnqueueError::Store(e).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `queued` (202) with the new jobs, or `duplicate` (200) when the delivery was seen before
/// and no entry needs to run again; the earlier jobs are listed with their states.
fn answer(enqueued: Enqueued) -> Answer {
    let seen: Vec<Value> = enqueued
        .seen
        .iter()
        .map(|s| {
            let mut seen = json!({ "id": s.id, "entry": s.entry, "state": s.state.as_str() });
            if let Some(newer) = s.newer {
                seen["newer_job"] = newer.into();
            }
            seen
        })
        .collect();
    if enqueued.queued.is_empty() {
        return json_answer(StatusCode::OK, &json!({ "status": "duplicate", "jobs": seen }));
    }
    let jobs: Vec<Value> =
        enqueued.queued.iter().map(|(id, entry)| json!({ "id": id, "entry": entry })).collect();
    let mut body = json!({ "status": "queued", "jobs": jobs });
    if !seen.is_empty() {
        body["duplicate"] = Value::Array(seen);
    }
    if !enqueued.replays.is_empty() {
        body["ignored"] =
            enqueued.replays.iter().map(|(e, why)| (e.clone(), Value::from(why.as_str()))).collect();
    }
    json_answer(StatusCode::ACCEPTED, &body)
}

/// The log line of an answered delivery: the jobs queued, and those seen before.
fn summary(enqueued: &Enqueued) -> String {
    let list = |jobs: &mut dyn Iterator<Item = String>| jobs.collect::<Vec<_>>().join(", ");
    let queued = list(&mut enqueued.queued.iter().map(|(id, entry)| format!("job {id} ({entry})")));
    let seen =
        list(&mut enqueued.seen.iter().map(|s| format!("job {} ({}, {})", s.id, s.entry, s.state.as_str())));
    match (queued.is_empty(), seen.is_empty()) {
        (false, true) => format!("queued {queued}"),
        (false, false) => format!("queued {queued}; seen before: {seen}"),
        _ => format!("duplicate delivery: {seen}"),
    }
}

/// Nothing to run: a ping's `pong`, or `ignored` with the reasons.
fn not_run(events: &[Event], reasons: &[(String, String)]) -> Answer {
    if events.iter().any(|e| e.kind == EventKind::Ping) {
        tally::count(Outcome::Ping);
        debug!("ping answered");
        return json_answer(StatusCode::OK, &json!({ "status": "pong" }));
    }
    ignored(events, reasons)
}

fn ignored(events: &[Event], reasons: &[(String, String)]) -> Answer {
    tally::count(Outcome::Ignored);
    let reason = Why { event: events.first(), reasons };
    debug!(reason = %reason, "ignored");
    json_answer(StatusCode::OK, &Ignored { status: "ignored", reason, entries: Reasons(reasons) })
}

/// The `ignored` answer.
#[derive(serde::Serialize)]
struct Ignored<'a> {
    status: &'static str,
    reason: Why<'a>,
    entries: Reasons<'a>,
}

/// Why a delivery is ignored, in one line: the event, then each entry's reason. Written
/// straight into the answer (no string built for it).
struct Why<'a> {
    event: Option<&'a Event>,
    reasons: &'a [(String, String)],
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.event {
            write!(f, "{} {}", e.provider_name(), e.name())?;
            if !e.git_ref.is_empty() {
                write!(f, " {}", e.git_ref)?;
            }
        }
        if let [(entry, reason)] = self.reasons {
            return write!(f, ": entry \"{entry}\": {reason}");
        }
        f.write_str(": no entry matches (")?;
        for (i, (entry, reason)) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}entry \"{entry}\": {reason}")?;
        }
        f.write_str(")")
    }
}

impl serde::Serialize for Why<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why each entry did not match, as a JSON object (entry: reason; an entry met by several
/// events of one delivery keeps its last reason).
struct Reasons<'a>(&'a [(String, String)]);

impl serde::Serialize for Reasons<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.len() <= 1 {
            return serializer.collect_map(self.0.iter().map(|(entry, reason)| (entry, reason)));
        }
        let mut seen = std::collections::HashSet::new();
        let mut last: Vec<&(String, String)> = self.0.iter().rev().filter(|(e, _)| seen.insert(e)).collect();
        last.reverse();
        serializer.collect_map(last.into_iter().map(|(entry, reason)| (entry, reason)))
    }
}
