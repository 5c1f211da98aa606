//! `POST {path}` and `POST {path}/<entry>`: a webhook, top to bottom: admitted
//! ([`intake::admit`]), received within the size and time limits, decided ([`intake::decide`]),
//! recorded and queued, answered.

use std::sync::Arc;
use std::time::Duration;

use http::{header, Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::{debug, debug_span, field, info, warn, Instrument};

use crate::admission::Conn;
use crate::app::{blocking, off_thread, App, EnqueueError, Enqueued};
use crate::event::Provider;
use crate::forwarded;
use crate::intake::{self, Decision, Delivery, Refusal, Signatures};
use crate::providers::AuthError;
use crate::refusal_log::{self, Kind};
use crate::warn_limit::WarnLimit;

use super::answers::{answer, ignored, not_run, summary, Answer, HookError};

/// A request as received: within the limits, its body whole.
#[derive(Clone)]
pub(super) struct Received {
    pub(super) headers: http::HeaderMap,
    pub(super) body: bytes::Bytes,
}

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
    // are counted, see `refusal_log`); the lines that stay carry their own context.
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
            refusal_log::count(Kind::Refused(status));
            span.in_scope(|| match &e {
                HookError::Refused(Refusal::Unauthentic { error, whom, key }) => {
                    refused_signature(key, whom, error, client)
                }
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
pub(super) static REFUSALS: WarnLimit = WarnLimit::new(Duration::from_secs(60));

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

/// A webhook, top to bottom: admitted, received, handed to the intake once, recorded.
pub(super) async fn hook(
    app: Arc<App>,
    req: Request<Incoming>,
    target: Option<String>,
    client: std::net::IpAddr,
    conn: &Conn,
    counted: &mut Counted,
) -> Result<Answer, HookError> {
    let settings = app.settings();
    intake::admit(&settings, target.as_deref(), client)?;
    let request = receive(req, settings.server.max_body, settings.server.body_timeout).await?;
    conn.handling();
    let decide = move |request: &Received| {
        let delivery = Delivery {
            headers: &request.headers,
            body: &request.body,
            target: target.as_deref(),
            client: Some(client),
            signatures: Signatures::Check,
        };
        intake::decide(&settings, &delivery)
    };
    let decided = if request.body.len() > intake::LARGE {
        // Hashing and parsing a large body takes milliseconds: not on the threads that serve
        // every other connection.
        let request = request.clone();
        off_thread(move || decide(&request)).await.map_err(|p| HookError::Internal(p.to_string()))?
    } else {
        decide(&request)
    };
    let span = tracing::Span::current();
    let decision = match decided {
        Ok(decision) => decision,
        Err(refused) => {
            counted.provider = refused.provider;
            if let Some(provider) = refused.provider {
                span.record("provider", provider.as_str());
            }
            return Err(refused.why.into());
        }
    };
    counted.provider = Some(decision.provider);
    span.record("provider", decision.provider.as_str());
    if let Some(d) = &decision.delivery_id {
        span.record("delivery", d.as_str());
    }
    if let Some(e) = decision.events.first() {
        span.record("repo", e.repo.as_str());
    }
    if decision.jobs.is_empty() {
        counted.result = if decision.is_ping() { "pong" } else { "ignored" };
        return Ok(not_run(&decision.events, &decision.reasons));
    }
    let (decision, recorded) = record(&app, decision, request.body).await?;
    let enqueued = match recorded {
        Recorded::Skipped => {
            counted.result = "ignored";
            return Ok(not_run(&decision.events, &decision.reasons));
        }
        Recorded::Enqueued(enqueued) => enqueued,
    };
    if enqueued.queued.is_empty() && enqueued.seen.is_empty() && enqueued.held.is_empty() {
        // Replays only: authentic, and not run, with why.
        counted.result = "ignored";
        let mut reasons = decision.reasons;
        reasons.extend(enqueued.replays);
        return Ok(ignored(&decision.events, &reasons));
    }
    counted.result = match (enqueued.queued.is_empty(), enqueued.held.is_empty()) {
        (false, _) => "queued",
        (true, false) => "held",
        (true, true) => "duplicate",
    };
    let repo = decision.jobs.first().map_or("", |j| j.event.repo.as_str());
    let provider = decision.provider;
    let delivery = decision.delivery_id.as_deref().unwrap_or("-");
    info!(%client, %provider, delivery, %repo, "{}", summary(&enqueued));
    Ok(answer(enqueued))
}

/// What became of a decision's jobs.
enum Recorded {
    /// `skip_deployed` left none.
    Skipped,
    Enqueued(Enqueued),
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

/// Asks the store what `skip_deployed` needs, then records the jobs durably and queues them,
/// in one trip off the async threads.
async fn record(
    app: &Arc<App>,
    decision: Decision,
    body: bytes::Bytes,
) -> Result<(Decision, Recorded), HookError> {
    let app2 = app.clone();
    let recorded = blocking(move || {
        let mut decision = decision;
        decision.skip_deployed(|entry| app2.store.last_deployed(entry)).map_err(EnqueueError::Store)?;
        if decision.jobs.is_empty() {
            return Ok((decision, Recorded::Skipped));
        }
        let key = decision.delivery_key();
        let enqueued = app2.enqueue(key.as_deref(), body, decision.jobs.clone());
        enqueued.map(|e| (decision, Recorded::Enqueued(e)))
    })
    .await;
    match recorded {
        Ok(recorded) => {
            app.store_works();
            Ok(recorded)
        }
        Err(EnqueueError::Store(e)) => {
            app.store_failed("cannot record a delivery's jobs (answered 500)", &e);
            Err(EnqueueError::Store(e).into())
        }
        Err(e) => Err(e.into()),
    }
}
