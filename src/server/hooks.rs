//! `POST {path}` and `POST {path}/<entry>`: a webhook, top to bottom: `allow_from`, receive
//! (size and time limits), then [`super::identify`], match, `skip_deployed`, record, answer.

use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::{debug, debug_span, field, info, warn, Instrument};

use crate::app::{blocking, off_thread, App, EnqueueError, Enqueued};
use crate::connections::Conn;
use crate::event::{EventKind, Provider};
use crate::forwarded;
use crate::providers::{self, AuthError};
use crate::settings::{Entry, Settings};
use crate::store::NewJob;
use crate::tally::{self, Outcome};
use crate::throttle::Throttle;

use super::answers::{answer, ignored, not_run, summary, Answer, HookError};
use super::identify::{detect, identify, match_entries, Matched, Received, OFF_REACTOR};

/// `POST {path}` and `POST {path}/<entry>`.
pub(super) async fn hooks(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    conn: &Conn,
) -> Answer {
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
pub(super) struct Counted {
    pub(super) provider: Option<Provider>,
    pub(super) result: &'static str,
}

impl Counted {
    pub(super) fn provider(&self) -> &'static str {
        self.provider.map_or("unknown", Provider::as_str)
    }
}

/// Refused signatures are warned about at most once a minute per entry or repository: a wrong
/// secret is the most common set-up mistake, and a flood of forged requests must not flood the
/// log.
pub(super) static REFUSALS: Throttle = Throttle::new(Duration::from_secs(60));

/// Warns that a request was not authentic (the headers involved, never a secret), at most once
/// a minute for the same `key` (entries); the ones held back are counted.
pub(super) fn refused_signature(key: &str, whom: &str, error: &AuthError, client: std::net::IpAddr) {
    if let Some(held_back) = REFUSALS.admit(key) {
        warn!(
            status = 401,
            %client,
            held_back,
            "request refused for {whom}: {error}; check that the secret set on the host's webhook is the entry's"
        );
    }
}

/// A webhook, top to bottom.
pub(super) async fn hook(
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
pub(super) fn allowed(
    settings: &Settings,
    target: Option<&str>,
    client: std::net::IpAddr,
) -> Result<(), HookError> {
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
pub(super) fn allowed_entries(
    entries: &mut Vec<Arc<Entry>>,
    client: std::net::IpAddr,
) -> Vec<(String, String)> {
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
pub(super) async fn skip_deployed(
    app: &Arc<App>,
    settings: &Settings,
    matched: &mut Matched,
) -> Result<(), HookError> {
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

/// Receives the body within `max_body` (refused from `Content-Length` before reading past it)
/// and the body timeout.
pub(super) async fn receive(
    req: Request<Incoming>,
    max: u64,
    timeout: Duration,
) -> Result<Received, HookError> {
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

/// Records the jobs durably and queues them (off the async threads).
pub(super) async fn record(
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
